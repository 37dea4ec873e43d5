# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Site records of the compiled kernels (private: built through kmc.kernel).

Everything a hop from site s needs sits in one record of ``records``: its z rates and a
64-bit code for its neighbours, padded to 64 bytes on simple cubic, so a hop costs one cache
miss, not three (rates, neighbour table, basis). The inline accessors are in _sites.pxd.
"""

from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.string cimport memcpy


def record_width(int z, int extra=0):
    """Doubles per site record: z rates, one 64-bit neighbour code and ``extra`` doubles of
    the loop's own, padded to 4 or 8 doubles when that fits, so that a 64-byte aligned record
    never spans two cache lines (simple cubic: 64 bytes, one line, room for one extra)."""
    cdef int n = z + 1 + extra
    if n <= 4:
        return 4
    if n <= 8:
        return 8
    return n


def pack_sites(const double[:, ::1] rates, const int32_t[:, ::1] neighbours,
               Py_ssize_t first_site, int n_basis, const int64_t[:, :, ::1] deltas,
               double[:, ::1] records):
    """Fill the records of sites first_site, first_site + 1, ... (rows of ``records``, of
    width record_width(z, extra)) with their rates and a neighbour code, the rest 0.

    Neighbour k of site s is s + deltas[b, k, c] with b = s % n_basis: on a periodic
    lattice j - s takes at most 3^d values for a given basis site and direction (no wrap,
    or a wrap either way along each axis), so c fits in a few bits. The code holds c for
    every direction (log2(deltas.shape[2]) bits each) and b above them; the caller checks
    that every neighbour is in the table and that the code fits in 64 bits."""
    cdef Py_ssize_t n = rates.shape[0], z = rates.shape[1], i, k, s
    cdef int n_codes = deltas.shape[2], bits = 0, c, b
    cdef uint64_t code
    while (1 << bits) < n_codes:
        bits += 1
    with nogil:
        for i in range(n):
            s = first_site + i
            b = s % n_basis
            code = (<uint64_t>b) << (bits * z)
            for k in range(z):
                records[i, k] = rates[i, k]
                c = 0
                while deltas[b, k, c] != neighbours[i, k] - s:
                    c += 1
                code |= (<uint64_t>c) << (bits * k)
            memcpy(&records[i, z], &code, 8)
            for k in range(z + 1, records.shape[1]):
                records[i, k] = 0.0


cdef Sites sites_view(const double[:, ::1] records, const int64_t[:, :, ::1] deltas,
                      const int32_t[:, :, ::1] hop_cells):
    """The kernels' view of validated site records (pointers into the caller's arrays)."""
    cdef Sites sites
    sites.records = &records[0, 0]
    sites.width = records.shape[1]
    sites.z = hop_cells.shape[1]
    sites.dim = hop_cells.shape[2]
    sites.deltas = &deltas[0, 0, 0]
    sites.delta_bits = 0
    while (1 << sites.delta_bits) < deltas.shape[2]:
        sites.delta_bits += 1
    sites.delta_mask = (1 << sites.delta_bits) - 1
    sites.basis_shift = sites.delta_bits * sites.z
    sites.hop_cells = &hop_cells[0, 0, 0]
    return sites


def _choose_direction(const double[::1] rates, double x):
    """choose_direction, callable from the tests (the loops use the inline one)."""
    return choose_direction(&rates[0], rates.shape[0], x)


def _direction_below(const double[::1] rates, double x):
    """direction_below, callable from the tests (the loops use the inline one)."""
    return direction_below(&rates[0], rates.shape[0], x)
