# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# The site data layout of the compiled kernels: one record per site holding everything a hop
# from it needs (its z rates and a 64-bit code for its neighbours; see _sites.pyx), and the
# inline accessors the hot loops use. Everything here assumes valid input (checked in
# kmc.kernel). Padded directions (a site of lower coordination than the lattice's z) have rate
# exactly 0.0 and are never chosen by choose_direction or direction_below.
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.string cimport memcpy


cdef extern from *:
    """
    #define KMC_PREFETCH(p) __builtin_prefetch((const void*)(p), 0, 3)
    #define KMC_PREFETCH_WRITE(p) __builtin_prefetch((const void*)(p), 1, 3)
    """
    void KMC_PREFETCH(const void* p) noexcept nogil
    void KMC_PREFETCH_WRITE(const void* p) noexcept nogil  # a line about to be written


cdef struct Sites:
    const double* records
    Py_ssize_t width       # doubles per record
    Py_ssize_t z
    Py_ssize_t dim
    const int64_t* deltas  # (n_basis, z, 2^delta_bits): neighbour index minus site index
    int delta_bits
    uint64_t delta_mask
    int basis_shift
    const int32_t* hop_cells  # (n_basis, z, dim): conventional-cell offset of each hop


cdef Sites sites_view(const double[:, ::1] records, const int64_t[:, :, ::1] deltas,
                      const int32_t[:, :, ::1] hop_cells)


cdef inline const double* site_record(const Sites* sites, int32_t s) noexcept nogil:
    return sites.records + <Py_ssize_t>s * sites.width


cdef inline uint64_t _code(const Sites* sites, const double* record) noexcept nogil:
    cdef uint64_t code
    memcpy(&code, record + sites.z, 8)
    return code


cdef inline int32_t site_target(const Sites* sites, int32_t s, const double* record,
                                int k) noexcept nogil:
    """Neighbour k of site s, decoded from s's record."""
    cdef uint64_t code = _code(sites, record)
    cdef Py_ssize_t b = <Py_ssize_t>(code >> sites.basis_shift)
    return s + <int32_t>sites.deltas[((b * sites.z + k) << sites.delta_bits)
                                     + ((code >> (sites.delta_bits * k)) & sites.delta_mask)]


cdef inline Py_ssize_t site_basis(const Sites* sites, const double* record) noexcept nogil:
    """Basis index of the site of ``record``."""
    return <Py_ssize_t>(_code(sites, record) >> sites.basis_shift)


cdef inline double site_total(const Sites* sites, const double* record) noexcept nogil:
    """Total rate of a record, always summed in the same order (so always the same value)."""
    cdef double total = 0.0
    cdef Py_ssize_t k
    for k in range(sites.z):
        total += record[k]
    return total


cdef inline void site_prefetch(const Sites* sites, int32_t s) noexcept nogil:
    """Prefetch the cache lines of a record (one when it is 64 bytes and aligned)."""
    cdef const double* record = site_record(sites, s)
    KMC_PREFETCH(record)
    if sites.width > 8:
        KMC_PREFETCH(record + sites.width - 1)


cdef inline Py_ssize_t shift_cell(const Sites* sites, const double* record, int k,
                                  int32_t* cell, int sign) noexcept nogil:
    """Add (sign = 1) or subtract the conventional-cell offset of hop k from the site of
    ``record`` to an unwrapped cell (exact, as integers); return that site's basis index."""
    cdef Py_ssize_t b = site_basis(sites, record)
    cdef const int32_t* offset = sites.hop_cells + (b * sites.z + k) * sites.dim
    cdef Py_ssize_t a
    for a in range(sites.dim):
        cell[a] += sign * offset[a]
    return b


cdef inline int choose_direction(const double* rates, Py_ssize_t z, double x) noexcept nogil:
    """Direction k with rates[0] + ... + rates[k-1] <= x < ... + rates[k], for x uniform in
    [0, sum(rates)) and sum(rates) > 0. A zero-rate direction never satisfies that (the sum
    does not grow across it); rounding can push x past the last partial sum, and the last
    direction with a non-zero rate is then taken, never a zero-rate (padded or blocked) one.
    The partial sums do not fall, so k is the number of them (but the last) that are <= x:
    counted without a data-dependent branch (the direction is a coin toss the branch
    predictor would miss on nearly every hop)."""
    cdef int k = 0
    cdef Py_ssize_t j
    cdef double acc = 0.0
    for j in range(z - 1):
        acc += rates[j]
        k += acc <= x
    while rates[k] == 0.0 and k > 0:
        k -= 1
    return k


cdef inline int direction_below(const double* rates, Py_ssize_t z, double x) noexcept nogil:
    """Direction k with rates[0] + ... + rates[k-1] <= x < ... + rates[k], or -1 if x is not
    below the total (summed in the same order as site_total). For x >= 0 a zero-rate
    direction is never returned: x below the sum after it was already below it before.
    Counted like choose_direction, without a data-dependent branch."""
    cdef int k = 0
    cdef Py_ssize_t j
    cdef double acc = 0.0
    for j in range(z):
        acc += rates[j]
        k += acc <= x
    return k if k < z else -1
