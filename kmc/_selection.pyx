# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Event selection of the lattice gas (private; see _selection.pxd for the design).

The hot pieces (predict, live, the common case of a move) are inline in _selection.pxd; the
rarer ones (a carrier changing group, a region changing size class and the weights' sums
with it, a repack) are here. :class:`Selection` owns the structure's memory and also has
slow Python methods (select, member, move, update_sites, groups) through which the tests
drive it against kmc.reference.Groups.
"""

from cpython.mem cimport PyMem_RawFree, PyMem_RawMalloc
from libc.math cimport INFINITY, frexp
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t
from libc.stdlib cimport abort
from libc.string cimport memcpy

from kmc._sites cimport KMC_PREFETCH, Sites, sites_view

import numpy as np


cdef extern from *:
    """
    #include <stdint.h>
    #include <sys/mman.h>
    /* Ask for transparent huge pages on the page-aligned part of a large allocation (as
       numpy does for its arrays): the pool is read at random, and with 4 KiB pages nearly
       every access to a pool of several MB would also miss the TLB. */
    static void kmc_advise_huge(void* p, size_t bytes) {
    #ifdef MADV_HUGEPAGE
        uintptr_t start = ((uintptr_t)p + 4095) & ~(uintptr_t)4095;
        uintptr_t end = ((uintptr_t)p + bytes) & ~(uintptr_t)4095;
        if (bytes >= ((size_t)4 << 20) && end > start)
            madvise((void*)start, end - start, MADV_HUGEPAGE);
    #endif
    }
    """
    void kmc_advise_huge(void* p, size_t bytes) noexcept nogil


cdef enum:
    STALE_GUIDE = 64  # weight changes after which the guide is rebuilt (a stale one costs steps)


cdef Member* _new_pool(int64_t size) noexcept nogil:
    """Room for ``size`` members (traced by tracemalloc, huge pages when large)."""
    cdef Member* pool = <Member*>PyMem_RawMalloc(size * sizeof(Member))
    if pool != NULL:
        kmc_advise_huge(pool, size * sizeof(Member))
    return pool


cdef int64_t _allocate(Groups* gr, int size_class) noexcept nogil:
    """A region of a size class, or -1 if the pool has no room."""
    cdef int64_t at = gr.free_head[size_class]
    if at >= 0:
        gr.free_head[size_class] = (<int64_t*>&gr.pool[at])[0]
        return at
    if gr.top + gr.class_capacity[size_class] > gr.pool_size:
        return -1
    at = gr.top
    gr.top += gr.class_capacity[size_class]
    return at


cdef void _repack(Groups* gr, int64_t extra) noexcept nogil:
    """Pack every region into a fresh pool, keeping each group's capacity and the order of
    its members (so the map from a uniform to a carrier does not change), with room for
    ``extra`` more members; the pool is enlarged when the regions would fill half of it."""
    cdef int64_t total = 0, at = 0, size = gr.pool_size
    cdef int g
    cdef Member* pool
    for g in range(1, gr.n_groups):
        total += gr.capacity[g]
    if 2 * (total + extra) > size:
        size = 2 * (total + extra)
    pool = _new_pool(size)
    if pool == NULL:
        abort()  # out of memory in a nogil loop; nothing sensible is left to do
    for g in range(1, gr.n_groups):
        if gr.capacity[g] > 0:
            memcpy(&pool[at], &gr.pool[gr.start[g]], gr.count[g] * sizeof(Member))
            gr.start[g] = at
            at += gr.capacity[g]
    PyMem_RawFree(gr.pool)
    gr.pool, gr.pool_size, gr.top = pool, size, at
    for g in range(N_SIZE_CLASSES):
        gr.free_head[g] = -1
    gr.repacks += 1
    gr.epoch += 1


cdef void selection_resize(Groups* gr, int g, int size_class) noexcept nogil:
    """Move group g into a region of a size class (none if size_class < 0), repacking the
    pool first if it has no room."""
    cdef int64_t at = 0, capacity
    if size_class >= 0:
        at = _allocate(gr, size_class)
        if at < 0:
            _repack(gr, gr.class_capacity[size_class])
            at = _allocate(gr, size_class)
        memcpy(&gr.pool[at], &gr.pool[gr.start[g]], gr.count[g] * sizeof(Member))
    if gr.size_class[g] >= 0:  # a free region's first member holds the next free region
        (<int64_t*>&gr.pool[gr.start[g]])[0] = gr.free_head[gr.size_class[g]]
        gr.free_head[gr.size_class[g]] = gr.start[g]
    gr.start[g], gr.size_class[g] = at, size_class
    gr.capacity[g] = gr.class_capacity[size_class] if size_class >= 0 else 0
    _weight_change(gr, g)
    gr.resizes += 1


cdef void _sum_block(Groups* gr, int b) noexcept nogil:
    """inner[b], the running sums of block b's weights in group order."""
    cdef double* row = gr.inner + b * (BLOCK + 1)
    cdef int k, g
    row[0] = 0.0
    for k in range(BLOCK):
        g = b * BLOCK + k + 1
        row[k + 1] = row[k] + (gr.capacity[g] * gr.bound[g] if g < gr.n_groups else 0.0)


cdef void _sum_blocks(Groups* gr, int b) noexcept nogil:
    """cum and R from block b on (the sums below are unchanged)."""
    for b in range(b, gr.n_blocks):
        gr.cum[b + 1] = gr.cum[b] + gr.inner[b * (BLOCK + 1) + BLOCK]
    gr.rate_bound = gr.cum[gr.n_blocks]


cdef void _build_guide(Groups* gr) noexcept nogil:
    """guide[i] = the block of r = (i / n_guide) R, the least u R of a uniform in the slot
    (both roundings are monotone in u)."""
    cdef int b = 0
    cdef int64_t i
    cdef double r
    for i in range(gr.n_guide):
        r = (<double>i / gr.n_guide) * gr.rate_bound
        while gr.cum[b + 1] <= r:  # stops at n_blocks (cum[n_blocks + 1] = +inf)
            b += 1
        gr.guide[i] = b
    gr.stale = 0


cdef void _weight_change(Groups* gr, int g) noexcept nogil:
    """Group g's weight changed: its block's sums, the sums of the blocks from it on (a few
    dozen additions), the guide now and then; retire the predictions in flight."""
    cdef int b = (g - 1) // BLOCK
    _sum_block(gr, b)
    _sum_blocks(gr, b)
    gr.stale += 1
    if gr.stale == STALE_GUIDE:
        _build_guide(gr)
    gr.epoch += 1


cdef void _rebuild(Groups* gr) noexcept nogil:
    """Every running sum of the weights and the guide, from the capacities; retire the
    predictions in flight."""
    cdef int b
    for b in range(gr.n_blocks):
        _sum_block(gr, b)
    gr.cum[0] = 0.0
    _sum_blocks(gr, 0)
    _build_guide(gr)
    gr.epoch += 1


cdef void selection_save_sites(const Groups* gr) noexcept nogil:
    """carrier_site[a] = site of every stored carrier (the others were written on the way)."""
    cdef int g
    cdef int64_t i
    for g in range(1, gr.n_groups):
        for i in range(gr.start[g], gr.start[g] + gr.count[g]):
            gr.carrier_site[gr.pool[i].ion] = gr.pool[i].site


cdef int _group_in_table(const Groups* gr, double total) noexcept nogil:
    """group_of, or -1 if the total lies outside the table's bounds."""
    cdef int e
    if total <= 0.0:
        return 0
    e = exponent_of(total)
    if e < gr.e_min or (e - gr.e_min + 1) * STEPS_PER_OCTAVE >= gr.n_groups:
        return -1
    return group_of(gr, total)


cdef int selection_update_sites(Groups* gr, const Sites* sites, const int32_t* site_list,
                                Py_ssize_t n, const int32_t* occupant,
                                bint bump_epoch=True) noexcept nogil:
    """The totals of these sites changed (their rates, or the total_column): move each into
    the group of its new total and its carrier with it, in the order given, unless it is in
    a group g >= 1 and its total in (bound[g - 1 - slack], bound[g]] (bound[0] = 0 below
    the first groups). ``occupant[s]`` is the carrier on site s (-1: none), read only for a
    carrier not stored (group 0). The entry point for rates that depend on the occupation
    (ion–ion interactions: after a hop, the sites around both ends). Needs slot tracking
    (returns -2 without it) and totals inside the table (returns -1 at the first outside
    it). ``bump_epoch`` retires the predictions in flight (which read records); a loop that
    re-reads every total at its attempt's turn (the interacting gas) does without."""
    cdef Py_ssize_t i
    cdef int64_t pos
    cdef int32_t s, c
    cdef int g, h
    cdef double total
    if gr.slot == NULL:
        return -2
    for i in range(n):  # a carrier that moves needs its slot: fetch them all at once
        KMC_PREFETCH(&gr.slot[site_list[i]])
    for i in range(n):
        s = site_list[i]
        total = carrier_total(gr, sites, s)
        g = gr.site_state[s] & ~OCCUPIED
        if g > 0 and gr.bound[g - 1 - gr.slack if g > 1 + gr.slack else 0] < total <= gr.bound[g]:
            continue  # still under its group's bound and not too far below it
        h = _group_in_table(gr, total)
        if h < 0:
            return -1
        gr.site_state[s] = <uint16_t>(h | (gr.site_state[s] & OCCUPIED))
        if h == g:
            continue
        if g > 0 and gr.slot[s] >= 0:
            pos = gr.start[g] + gr.slot[s]
            c = gr.pool[pos].ion
            selection_remove(gr, g, pos)
        else:
            c = occupant[s]
            if c < 0:
                continue
        if h > 0:
            selection_insert(gr, h, c, s)
        else:
            gr.carrier_site[c] = s
    if bump_epoch:
        gr.epoch += 1  # the loops' predictions read records
    return 0


def group_bounds(int e_lo, int e_hi):
    """Upper bounds of the groups for totals with binary exponents e_lo..e_hi (frexp's):
    0 for group 0, then 2^(e-1) 2^((step+1)/4) for group 1 + 4 (e - e_lo) + step."""
    octave, step = np.divmod(np.arange((e_hi - e_lo + 1) * STEPS_PER_OCTAVE), STEPS_PER_OCTAVE)
    return np.concatenate(
        [[0.0], np.ldexp(2.0 ** ((step + 1) / STEPS_PER_OCTAVE), e_lo - 1 + octave)])


def size_class_capacities():
    """Members a region of each size class holds: 1, 2, 3, then 4 per octave from 4."""
    quarter = np.arange(N_SIZE_CLASSES - 3)
    return np.concatenate([[1, 2, 3], (4 + quarter % 4) << (quarter // 4)]).astype(np.int64)


cdef class Selection:
    """The group structure over the carriers of a lattice gas.

    ``occupied`` marks the occupied sites and ``carriers`` holds the carriers' sites (the
    array is kept and written back by save_sites); ``holes``: the carriers are vacancies
    (records then hold the rates into each site). ``track``: keep the slot of each site's
    carrier, which update_sites needs (and costs a little on every change of group; fewer
    groups then fit, see LISTED). ``pool_size`` overrides the initial pool (default
    2 (carriers + groups) members), which the tests make tiny to force repacks. ``span``
    (>= 1) widens the group table to totals from the least one / span to the largest · span:
    room for totals that change with the occupation. ``slack``: see update_sites.
    ``total_column`` >= 0: each site's total is that column of its record, not the sum of its
    rates (the interacting loop keeps the rates of its ions implicit)."""

    def __cinit__(self):
        self.gr.pool = NULL

    def __dealloc__(self):
        PyMem_RawFree(self.gr.pool)

    def __init__(self, const double[:, ::1] records, const int64_t[:, :, ::1] deltas,
                 const int32_t[:, :, ::1] hop_cells, const uint8_t[::1] occupied,
                 int32_t[::1] carriers, bint holes, bint track=False, int64_t pool_size=0,
                 double span=1.0, int slack=0, int total_column=-1):
        cdef Py_ssize_t n_sites = records.shape[0], n = carriers.shape[0], i
        self.sites = sites_view(records, deltas, hop_cells)
        cdef Groups* gr = &self.gr
        cdef double low = INFINITY, high = 0.0, total
        cdef int e_lo = 0, e_hi = 0
        gr.total_column = total_column
        with nogil:
            for i in range(n_sites):
                total = carrier_total(gr, &self.sites, <int32_t>i)
                if total > 0.0:
                    low = total if total < low else low
                    high = total if total > high else high
        if high > 0.0:  # the bounds span every total, so a carrier never leaves the table
            frexp(low / span, &e_lo)
            frexp(high * span, &e_hi)
        bounds = group_bounds(e_lo, e_hi)
        capacities = size_class_capacities()
        gr.e_min, gr.n_groups = e_lo, len(bounds)
        gr.n_blocks = (gr.n_groups - 1 + BLOCK - 1) // BLOCK
        n_guide = 1
        while n_guide < 4 * gr.n_blocks:
            n_guide *= 2
        if gr.n_groups >= (LISTED if track else OCCUPIED):
            raise ValueError(f"rates span too many groups ({gr.n_groups})")
        arrays = {
            "bound": bounds, "class_capacity": capacities,
            "free_head": np.full(N_SIZE_CLASSES, -1, dtype=np.int64),
            "start": np.zeros(gr.n_groups, dtype=np.int64),
            "count": np.zeros(gr.n_groups, dtype=np.int64),
            "capacity": np.zeros(gr.n_groups, dtype=np.int64),
            "size_class": np.full(gr.n_groups, -1, dtype=np.int32),
            "inner": np.zeros(max(gr.n_blocks, 1) * (BLOCK + 1)),
            "cum": np.concatenate([np.zeros(gr.n_blocks + 1), [np.inf]]),
            "guide": np.zeros(n_guide, dtype=np.int32),
            "site_state": np.empty(n_sites, dtype=np.uint16),
            "slot": np.full(n_sites if track else 0, -1, dtype=np.int32),
            "records": records, "deltas": deltas, "hop_cells": hop_cells, "carriers": carriers,
        }
        self._arrays = arrays
        cdef double[::1] bound_v = arrays["bound"], cum_v = arrays["cum"]
        cdef double[::1] inner_v = arrays["inner"]
        cdef int32_t[::1] guide_v = arrays["guide"]
        cdef const int64_t[::1] class_v = arrays["class_capacity"]
        cdef int64_t[::1] free_v = arrays["free_head"], start_v = arrays["start"]
        cdef int64_t[::1] count_v = arrays["count"], capacity_v = arrays["capacity"]
        cdef int32_t[::1] size_class_v = arrays["size_class"], slot_v = arrays["slot"]
        cdef uint16_t[::1] state_v = arrays["site_state"]
        gr.bound, gr.cum, gr.guide = &bound_v[0], &cum_v[0], &guide_v[0]
        gr.inner = &inner_v[0]
        gr.class_capacity = &class_v[0]
        gr.free_head, gr.start, gr.count = &free_v[0], &start_v[0], &count_v[0]
        gr.capacity, gr.size_class = &capacity_v[0], &size_class_v[0]
        gr.site_state = &state_v[0]
        gr.carrier_site = &carriers[0] if n > 0 else NULL
        gr.slot = &slot_v[0] if track and n_sites > 0 else NULL
        gr.n_guide = n_guide
        gr.slack = slack
        gr.epoch = gr.repacks = gr.resizes = 0
        cdef int g
        cdef int64_t at = 0
        cdef int k
        with nogil:
            for i in range(n_sites):
                gr.site_state[i] = <uint16_t>group_of(gr, carrier_total(
                    gr, &self.sites, <int32_t>i))
                if occupied[i]:
                    gr.site_state[i] |= OCCUPIED
            # every group's region has room for one more member; members in carrier order
            for i in range(n):
                gr.count[gr.site_state[carriers[i]] & ~OCCUPIED] += 1
            for g in range(1, gr.n_groups):
                if gr.count[g] > 0:
                    k = 0
                    while gr.class_capacity[k] < gr.count[g] + 1:
                        k += 1
                    gr.size_class[g], gr.capacity[g] = k, gr.class_capacity[k]
                gr.start[g] = at
                at += gr.capacity[g]
                gr.count[g] = 0
            gr.count[0] = 0
        gr.top = at
        gr.pool_size = max(pool_size if pool_size > 0 else 2 * (n + gr.n_groups), at, 1)
        gr.pool = _new_pool(gr.pool_size)
        if gr.pool == NULL:
            raise MemoryError("event selection pool")
        with nogil:
            for i in range(n):
                g = gr.site_state[carriers[i]] & ~OCCUPIED
                if g > 0:
                    at = gr.start[g] + gr.count[g]
                    gr.pool[at].ion = <int32_t>i
                    gr.pool[at].site = carriers[i]
                    if gr.slot != NULL:
                        gr.slot[carriers[i]] = <int32_t>gr.count[g]
                    gr.count[g] += 1
            _rebuild(gr)

    # Slow Python face, for the tests (the loops use the struct directly).

    @property
    def rate_bound(self) -> float:
        return self.gr.rate_bound

    @property
    def counters(self) -> dict:
        return {"repacks": self.gr.repacks, "resizes": self.gr.resizes,
                "pool_size": self.gr.pool_size}

    def select(self, double u):
        """(group, capacity slot, x) for an attempt's uniform u; group -1: a null event."""
        cdef Attempt at
        at.u = u
        predict(&self.gr, &at)
        if at.g <= 0:
            return -1, -1, 0.0
        return int(at.g), int(at.m), float(at.x)

    def member(self, int g, int64_t m):
        """(carrier, site) in slot m of group g, or None for an empty slot."""
        if m >= self.gr.count[g]:
            return None
        cdef Member member = self.gr.pool[self.gr.start[g] + m]
        return member.ion, member.site

    def group(self, int32_t site) -> int:
        return self.gr.site_state[site] & ~OCCUPIED

    def move(self, int g, int64_t m, int32_t site):
        """Apply a hop of the carrier in slot m of group g to ``site``."""
        selection_move(&self.gr, g, self.gr.start[g] + m, self.group(site), site)

    def update_sites(self, const int32_t[::1] sites, const int32_t[::1] carriers):
        """selection_update_sites, ``carriers`` the carrier on each site (-1: none); raises
        if it refuses."""
        occupant = np.full(len(self._arrays["site_state"]), -1, dtype=np.int32)
        occupant[np.asarray(sites)] = carriers
        cdef int32_t[::1] occupant_v = occupant
        code = selection_update_sites(&self.gr, &self.sites, &sites[0], sites.shape[0],
                                      &occupant_v[0]) if sites.shape[0] else 0
        if code == -2:
            raise ValueError("update_sites needs a Selection built with track=True")
        if code == -1:
            raise ValueError("a total rate outside the group table")

    def groups(self):
        """[(capacity, [(carrier, site), ...]), ...] for groups 1, 2, ..., slot order."""
        cdef Groups* gr = &self.gr
        return [
            (gr.capacity[g], [(gr.pool[i].ion, gr.pool[i].site)
                              for i in range(gr.start[g], gr.start[g] + gr.count[g])])
            for g in range(1, gr.n_groups)
        ]

    def check_slots(self) -> bool:
        """The slot of every stored carrier's site holds it, every other site's is -1."""
        cdef Groups* gr = &self.gr
        cdef int g
        cdef int64_t i
        seen = set()
        for g in range(1, gr.n_groups):
            for i in range(gr.start[g], gr.start[g] + gr.count[g]):
                if gr.slot[gr.pool[i].site] != i - gr.start[g]:
                    return False
                seen.add(gr.pool[i].site)
        slots = self._arrays["slot"]
        return all(slots[s] == -1 for s in range(len(slots)) if s not in seen)
