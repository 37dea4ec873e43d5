# Shared low-level pieces of the compiled kernels: the random number generator and the
# choice of a hop direction. Everything here assumes valid input (checked in kmc.kernel).
from libc.math cimport log
from libc.stdint cimport uint64_t


cdef struct Rng:
    uint64_t s0, s1, s2, s3


cdef inline uint64_t _rotl(uint64_t x, int k) noexcept nogil:
    return (x << k) | (x >> (64 - k))


cdef inline uint64_t rng_next(Rng* r) noexcept nogil:
    # xoshiro256** (Blackman & Vigna): fast, 256-bit state, passes BigCrush.
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


cdef inline int choose_direction(const double* rates, int z, double x) noexcept nogil:
    """Direction k with rates[0] + ... + rates[k-1] <= x < ... + rates[k], for x uniform in
    [0, sum(rates)). Rounding can push x past the last partial sum; the last direction with a
    non-zero rate is then taken, never a zero-rate (blocked) one."""
    cdef int k = 0
    cdef double acc = rates[0]
    while acc <= x and k < z - 1:
        k += 1
        acc += rates[k]
    while rates[k] == 0.0 and k > 0:
        k -= 1
    return k
