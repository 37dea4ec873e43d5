# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# The random number generator of the compiled kernels: xoshiro256** (Blackman & Vigna; fast,
# 256-bit state, passes BigCrush), with uniforms of 53 bits and unit exponentials. Inline in
# this header so that every hot loop gets it without a call. kmc.reference has the same
# generator in pure Python, bit for bit.
from libc.math cimport log
from libc.stdint cimport uint64_t


cdef struct Rng:
    uint64_t s0, s1, s2, s3


cdef inline uint64_t _rotl(uint64_t x, int k) noexcept nogil:
    return (x << k) | (x >> (64 - k))


cdef inline uint64_t rng_next(Rng* r) noexcept nogil:
    cdef uint64_t result = _rotl(r.s1 * 5, 7) * 9
    cdef uint64_t t = r.s1 << 17
    r.s2 ^= r.s0
    r.s3 ^= r.s1
    r.s1 ^= r.s2
    r.s0 ^= r.s3
    r.s2 ^= t
    r.s3 = _rotl(r.s3, 45)
    return result


cdef inline double rng_uniform(Rng* r) noexcept nogil:
    """Uniform in [0, 1) with 53 random bits."""
    return (rng_next(r) >> 11) * (1.0 / 9007199254740992.0)


cdef inline double rng_exponential(Rng* r) noexcept nogil:
    """Exponential with unit mean."""
    return -log(1.0 - rng_uniform(r))


cdef inline void rng_jump(Rng* r) noexcept nogil:
    """Advance by 2^128 draws: successive jumps give non-overlapping streams (one per
    independent walker, so that a walker's trajectory does not depend on the others)."""
    cdef uint64_t JUMP[4]
    JUMP[0], JUMP[1] = 0x180ec6d33cfd0aba, 0xd5a61266f0c9392c
    JUMP[2], JUMP[3] = 0xa9582618e03fc9aa, 0x39abdc4529b1661c
    cdef uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0
    cdef int i, b
    for i in range(4):
        for b in range(64):
            if JUMP[i] & ((<uint64_t>1) << b):
                s0 ^= r.s0
                s1 ^= r.s1
                s2 ^= r.s2
                s3 ^= r.s3
            rng_next(r)
    r.s0, r.s1, r.s2, r.s3 = s0, s1, s2, s3


cdef inline Rng rng_load(const uint64_t* state) noexcept nogil:
    cdef Rng r
    r.s0, r.s1, r.s2, r.s3 = state[0], state[1], state[2], state[3]
    return r


cdef inline void rng_store(const Rng* r, uint64_t* state) noexcept nogil:
    state[0], state[1], state[2], state[3] = r.s0, r.s1, r.s2, r.s3
