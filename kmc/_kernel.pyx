"""Compiled continuous-time kMC kernels (private: call them through kmc.kernel).

They take typed, C-contiguous arrays that the caller has validated and owns, run without the
GIL, and write the ions' final state and the recorded frames back into those arrays.
Positions are kept exact as (site, unwrapped conventional-cell coordinates).

Memory layout: everything a hop from site s needs sits in one record of ``site_records``
(its rates and a code for its neighbours, see :func:`pack_sites`; 64 bytes and one cache line
on simple cubic), so a hop costs one cache miss, not three; and the kernels fetch records
ahead of time (independent walkers in an interleaved batch, the lattice gas several attempts
ahead, see the notes above :func:`run_lattice_gas`), so the misses overlap instead of
queueing. Prefetches are hints to the memory system only: every event is still decided on
the state at its own turn, so the process sampled is exactly the plain algorithm's.
"""

from libc.math cimport INFINITY, frexp, log
from libc.string cimport memcpy
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint64_t

import numpy as np


cdef extern from *:
    """
    #define KMC_PREFETCH(p) __builtin_prefetch((const void*)(p), 0, 3)
    """
    void KMC_PREFETCH(const void* p) noexcept nogil


def record_width(int z):
    """Doubles per site record: z rates and one 64-bit neighbour code, padded to 4 or 8
    doubles when that fits, so that a 64-byte aligned record never spans two cache lines
    (simple cubic: 64 bytes, one line)."""
    if z + 1 <= 4:
        return 4
    if z + 1 <= 8:
        return 8
    return z + 1


def pack_sites(const double[:, ::1] rates, const int32_t[:, ::1] neighbours,
               Py_ssize_t first_site, int n_basis, const int64_t[:, :, ::1] deltas,
               double[:, ::1] records):
    """Fill the records of sites first_site, first_site + 1, ... (rows of ``records``, of
    width record_width(z)) with their rates and a neighbour code.

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


cdef struct Sites:
    const double* records
    Py_ssize_t width      # doubles per record
    Py_ssize_t z
    Py_ssize_t dim
    const int64_t* deltas  # (n_basis, z, 2^delta_bits): neighbour index minus site index
    int delta_bits
    uint64_t delta_mask
    int basis_shift
    const int32_t* hop_cells


cdef inline const double* _record(const Sites* sites, int32_t s) noexcept nogil:
    return sites.records + <Py_ssize_t>s * sites.width


cdef inline uint64_t _code(const Sites* sites, const double* record) noexcept nogil:
    cdef uint64_t code
    memcpy(&code, record + sites.z, 8)
    return code


cdef inline int32_t _target(const Sites* sites, int32_t s, const double* record,
                            int k) noexcept nogil:
    """Neighbour k of site s, decoded from s's record."""
    cdef uint64_t code = _code(sites, record)
    cdef Py_ssize_t b = <Py_ssize_t>(code >> sites.basis_shift)
    return s + <int32_t>sites.deltas[
        ((b * sites.z + k) << sites.delta_bits) + ((code >> (sites.delta_bits * k)) & sites.delta_mask)]


cdef inline double _total(const Sites* sites, const double* record) noexcept nogil:
    """Total rate of a record, always summed in the same order (so always the same value)."""
    cdef double total = 0.0
    cdef Py_ssize_t k
    for k in range(sites.z):
        total += record[k]
    return total


cdef inline void _prefetch_record(const Sites* sites, int32_t s) noexcept nogil:
    """Prefetch the cache lines of a record (one when it is 64 bytes and aligned)."""
    cdef const double* record = _record(sites, s)
    KMC_PREFETCH(record)
    if sites.width > 8:
        KMC_PREFETCH(record + sites.width - 1)


cdef inline Py_ssize_t _shift_cell(const Sites* sites, const double* record, int k,
                                   int32_t* cell, int sign=1) noexcept nogil:
    """Add (sign = 1) or subtract the conventional-cell offset of hop k from the site of
    ``record`` to an unwrapped cell; return that site's basis index."""
    cdef Py_ssize_t b = <Py_ssize_t>(_code(sites, record) >> sites.basis_shift)
    cdef const int32_t* offset = sites.hop_cells + (b * sites.z + k) * sites.dim
    cdef Py_ssize_t a
    for a in range(sites.dim):
        cell[a] += sign * offset[a]
    return b


cdef inline Rng _load_rng(uint64_t[::1] state) noexcept:
    cdef Rng r
    r.s0, r.s1, r.s2, r.s3 = state[0], state[1], state[2], state[3]
    return r


cdef inline void _store_rng(Rng* r, uint64_t[::1] state) noexcept:
    state[0], state[1], state[2], state[3] = r.s0, r.s1, r.s2, r.s3


cdef inline double _waiting_time(Rng* rng, double total) noexcept nogil:
    if total > 0.0:
        return rng_exponential(rng) / total
    return INFINITY


cdef Sites _sites(const double[:, ::1] records, const int64_t[:, :, ::1] deltas,
                 const int32_t[:, :, ::1] hop_cells):
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


cdef enum:
    BATCH = 16  # independent walkers advanced together, interleaved


def run_walkers(const double[:, ::1] records, const int64_t[:, :, ::1] deltas,
                const int32_t[:, :, ::1] hop_cells,
                int32_t[::1] site, int32_t[:, ::1] cell, double equilibration_time,
                const double[::1] frame_times, int32_t[:, ::1] out_sites,
                int32_t[:, :, ::1] out_cells, uint64_t[::1] rng_state):
    """Independent walkers on one landscape (no exclusion).

    Walkers do not interact, so each runs its own exact Gillespie chain on its own clock:
    no event queue is needed. A batch of walkers is advanced round robin, one hop each per
    turn, and each walker's next site record is prefetched while the others hop. Each walker
    is first run for ``equilibration_time`` (a time, not a number of hops: stopping after a
    fixed number of hops would leave walkers distributed like the jump chain, weighted to
    fast sites); its production clock then starts at 0 (exact: waiting times are
    memoryless). Returns the number of production hops.
    """
    cdef Py_ssize_t n = site.shape[0], n_frames = frame_times.shape[0]
    cdef Sites sites = _sites(records, deltas, hop_cells)
    cdef Py_ssize_t z = sites.z, dim = sites.dim
    cdef Rng rng = _load_rng(rng_state)
    cdef int64_t hops = 0
    cdef double t_next
    cdef Py_ssize_t first, w, b, a, size, active
    cdef int32_t s
    cdef int k
    cdef const double* rec
    cdef int32_t batch_site[BATCH]
    cdef double batch_next[BATCH]
    cdef Py_ssize_t batch_frame[BATCH]
    cdef bint batch_hopped[BATCH]
    with nogil:
        for w in range(n):  # equilibration, to a common time
            s = site[w]
            t_next = _waiting_time(&rng, _total(&sites, _record(&sites, s)))
            while t_next <= equilibration_time:
                rec = _record(&sites, s)
                k = choose_direction(rec, z, rng_uniform(&rng) * _total(&sites, rec))
                _shift_cell(&sites, rec, k, &cell[w, 0])
                s = _target(&sites, s, rec, k)
                t_next += _waiting_time(&rng, _total(&sites, _record(&sites, s)))
            site[w] = s
        first = 0
        while first < n:
            size = n - first if n - first < BATCH else BATCH
            for b in range(size):
                batch_site[b] = site[first + b]
                batch_next[b] = _waiting_time(&rng, _total(&sites, _record(&sites, batch_site[b])))
                batch_frame[b] = 0
                batch_hopped[b] = False
            active = size
            while active > 0:
                for b in range(size):
                    if batch_frame[b] == n_frames:
                        continue
                    w = first + b
                    s = batch_site[b]
                    # record every frame this walker passes before its next hop
                    while batch_frame[b] < n_frames and batch_next[b] > frame_times[batch_frame[b]]:
                        out_sites[batch_frame[b], w] = s
                        for a in range(dim):
                            out_cells[batch_frame[b], w, a] = cell[w, a]
                        batch_frame[b] += 1
                    if batch_frame[b] == n_frames:
                        active -= 1
                        site[w] = s
                        continue
                    rec = _record(&sites, s)
                    k = choose_direction(rec, z, rng_uniform(&rng) * _total(&sites, rec))
                    _shift_cell(&sites, rec, k, &cell[w, 0])
                    s = _target(&sites, s, rec, k)
                    _prefetch_record(&sites, s)
                    batch_site[b] = s
                    hops += 1
                    batch_hopped[b] = True
                # the waiting times need the new records, fetched while the batch hopped
                for b in range(size):
                    if batch_hopped[b]:
                        batch_hopped[b] = False
                        batch_next[b] += _waiting_time(&rng, _total(&sites, _record(&sites, batch_site[b])))
            first += size
    _store_rng(&rng, rng_state)
    return hops


# Event selection for the lattice gas: composition–rejection over carriers (the ions, or
# the vacancies of a more than half-full lattice), with uniformization.
#
# Carriers are grouped by their site's total rate in quarter octaves: group g >= 1 holds
# totals in (bound[g] / 2^(1/4), bound[g]]; group 0 holds carriers that cannot move and is
# not stored. Each group owns a region of the member pool with room for some members (its
# capacity, one of the size classes 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, ...: four per octave).
# An attempt picks a group with probability proportional to capacity · bound (a Fenwick
# tree over the groups' weights: O(log groups) to search and to update), a capacity slot
# uniformly, and x uniform in [0, bound): it is a hop if the slot holds a carrier, x
# falls under the partial sum of one of its site's rates (that direction) and the target is
# free; otherwise a null event. That is uniformization of the exact process with the rate
# R = sum of capacity · bound, so the clock is exact: the time to the next hop is a sum of
# K Exp(1)/R over its K attempts, and -log(u_1 ... u_K) is exactly such a sum, so one
# logarithm per hop suffices.
#
# Why capacities and not member counts: the map from an attempt's uniform to a pool slot
# then depends only on the capacities, which change rarely (a region grows by a size class
# when full and shrinks when its members would fit two classes down), not on every hop. So
# attempts are drawn RING attempts ahead and what they will touch (pool entry, site record,
# target state, the moving ion) is prefetched in stages while earlier attempts run, which
# hides the memory latency of a lattice larger than the caches. Each attempt is still
# decided on the state at its own turn; ``epoch`` counts the changes of the map, and a
# prediction made under another epoch is simply redone. A full pool (freed regions sit in
# per-class free lists) is repacked from scratch; it holds 2 (carriers + groups) members,
# which the repacked regions never exceed.
cdef enum:
    STEPS_PER_OCTAVE = 4
    N_SIZE_CLASSES = 160  # 1, 2, 3, then 4 per octave from 4 up to 7 · 2^38
    RING = 16        # attempts drawn ahead; the pool entry of the newest is prefetched
    LEAD_SITE = 10   # attempts ahead: read the pool entry, prefetch the site record
    LEAD_MOVE = 5    # attempts ahead: find the target, prefetch what a hop would touch
    LEAD_ION = 2     # attempts ahead, vacancies only: prefetch the ion that would move
    REBUILD_EVERY = 4096  # hops between exact rebuilds of the weight tree (rounding drift)


cdef struct Member:
    int32_t ion   # carrier index
    int32_t site


cdef enum:
    OCCUPIED = 0x8000  # bit of a site's state; the low 15 bits hold the site's group


cdef struct Groups:
    Member* pool
    int64_t pool_size
    int64_t top             # pool[top:] is unused
    const int64_t* class_capacity  # members a region of each size class holds
    int64_t* free_head      # per size class: a free region of that class, or -1
    int64_t* start          # members of group g: pool[start[g]:start[g] + count[g]]
    int64_t* count
    int64_t* capacity       # of group g's region, 0 if it has none
    int32_t* size_class     # of group g's region, -1 if it has none
    double* bound           # upper bound of the totals in group g, 0 for group 0
    double* tree            # Fenwick tree over groups 1.. of the weights capacity · bound
    int tree_top            # the largest power of two below n_groups
    uint16_t* site_state    # per site: its group | OCCUPIED, so a hop's target costs one access
    int n_groups
    int e_min
    double rate_bound       # R = sum over groups of capacity · bound
    int64_t epoch           # changes of the map from a uniform to a pool slot


cdef struct Attempt:
    double u        # the uniform that decides the attempt
    double x        # uniform in [0, bound[g]): picks the direction, or rejects
    int64_t epoch   # the map the prediction below was made with
    int64_t m       # capacity slot in group g
    int64_t pos     # pool index of that slot
    int32_t g       # group, or -1 when rounding pushed u · R past the last group
    int32_t site    # the slot's site as read LEAD_SITE attempts ahead, or -1
    int32_t k       # direction found LEAD_MOVE attempts ahead (-1: x above the total)
    int32_t j       # its target site
    bint moved      # k and j were found


cdef inline int _group_of(const Groups* gr, double total) noexcept nogil:
    cdef int e, step, first
    cdef uint64_t bits
    if total <= 0.0:
        return 0
    memcpy(&bits, &total, 8)
    if bits >> 52 == 0:  # subnormal
        frexp(total, &e)
    else:  # frexp's exponent (total = mantissa 2^e, mantissa in [1/2, 1)) from the bits
        e = <int>(bits >> 52) - 1022
    first = (e - gr.e_min) * STEPS_PER_OCTAVE
    step = 0
    while step < STEPS_PER_OCTAVE - 1 and total > gr.bound[first + step + 1]:
        step += 1
    return first + step + 1


cdef inline int _direction_below(const double* rates, Py_ssize_t z, double x) noexcept nogil:
    """Direction k with rates[0] + ... + rates[k-1] <= x < ... + rates[k], or -1 if x is not
    below the total (summed in the same order as _total)."""
    cdef double acc = 0.0
    cdef int k
    for k in range(z):
        acc += rates[k]
        if x < acc:
            return k
    return -1


cdef void _weights_rebuild(Groups* gr) noexcept nogil:
    """Rebuild the weight tree and R exactly from the capacities (also washes out the
    rounding drift of its updates), and retire the predictions in flight."""
    cdef int g, parent
    gr.rate_bound = 0.0
    for g in range(1, gr.n_groups):
        gr.tree[g] = gr.capacity[g] * gr.bound[g]
        gr.rate_bound += gr.tree[g]
    for g in range(1, gr.n_groups):
        parent = g + (g & -g)
        if parent < gr.n_groups:
            gr.tree[parent] += gr.tree[g]
    gr.epoch += 1


cdef void _weight_change(Groups* gr, int g, double delta) noexcept nogil:
    """Add delta to group g's weight: O(log groups), so that a carrier moving into an empty
    group of a landscape with hundreds of groups stays cheap."""
    gr.rate_bound += delta
    while g < gr.n_groups:
        gr.tree[g] += delta
        g += g & -g
    gr.epoch += 1


cdef inline void _predict(const Groups* gr, Attempt* at) noexcept nogil:
    """Group, capacity slot and pool index that the attempt's uniform points at under the
    current map; x is then uniform in [0, bound[g]): one uniform serves all of them."""
    cdef double r = at.u * gr.rate_bound, y
    cdef int g = 0, step = gr.tree_top
    at.epoch, at.site, at.moved, at.g = gr.epoch, -1, False, -1
    while step > 0:  # the group whose interval of the weights' partition of [0, R) holds r
        if g + step < gr.n_groups and r >= gr.tree[g + step]:
            g += step
            r -= gr.tree[g]
        step >>= 1
    g += 1
    if g >= gr.n_groups or gr.capacity[g] == 0:
        return  # rounding pushed r past the last weight: a null event
    y = r / gr.bound[g]
    at.m = <int64_t>y
    if at.m >= gr.capacity[g]:  # rounding
        at.m = gr.capacity[g] - 1
    at.x = (y - at.m) * gr.bound[g]
    at.g = g
    at.pos = gr.start[g] + at.m


cdef inline bint _live(const Groups* gr, const Attempt* at) noexcept nogil:
    """The attempt's slot holds a carrier under the prediction's map."""
    return at.epoch == gr.epoch and at.g > 0 and at.m < gr.count[at.g]


cdef inline int64_t* _next_free(Groups* gr, int64_t at) noexcept nogil:
    # a free region's first member holds the next free region of its size class
    return <int64_t*>&gr.pool[at]


cdef int64_t _allocate(Groups* gr, int size_class) noexcept nogil:
    """A region of a size class, or -1 if the pool is full."""
    cdef int64_t at = gr.free_head[size_class]
    if at >= 0:
        gr.free_head[size_class] = _next_free(gr, at)[0]
        return at
    if gr.top + gr.class_capacity[size_class] > gr.pool_size:
        return -1
    at = gr.top
    gr.top += gr.class_capacity[size_class]
    return at


cdef bint _resize(Groups* gr, int g, int size_class) noexcept nogil:
    """Move group g into a region of a size class (none if size_class < 0); False if the
    pool has no room."""
    cdef int64_t at = 0, capacity
    if size_class >= 0:
        at = _allocate(gr, size_class)
        if at < 0:
            return False
        memcpy(&gr.pool[at], &gr.pool[gr.start[g]], gr.count[g] * sizeof(Member))
    if gr.size_class[g] >= 0:
        _next_free(gr, gr.start[g])[0] = gr.free_head[gr.size_class[g]]
        gr.free_head[gr.size_class[g]] = gr.start[g]
    gr.start[g], gr.size_class[g] = at, size_class
    capacity = gr.class_capacity[size_class] if size_class >= 0 else 0
    _weight_change(gr, g, (capacity - gr.capacity[g]) * gr.bound[g])
    gr.capacity[g] = capacity
    return True


cdef inline int _size_class_for(const Groups* gr, int64_t members) noexcept nogil:
    """Smallest size class with room for ``members`` members."""
    cdef int k = 0
    while gr.class_capacity[k] < members:
        k += 1
    return k


cdef void _layout(Groups* gr, const int32_t[::1] carriers) noexcept nogil:
    """Pack every group into the pool from scratch, from the carriers' sites, each with room
    for one more member (within 2 (n + n_groups) members in all)."""
    cdef Py_ssize_t n = carriers.shape[0], a
    cdef int g
    cdef int64_t at = 0
    for g in range(gr.n_groups):
        gr.count[g] = 0
    for a in range(n):
        gr.count[gr.site_state[carriers[a]] & ~OCCUPIED] += 1
    for g in range(1, gr.n_groups):
        gr.size_class[g] = _size_class_for(gr, gr.count[g] + 1) if gr.count[g] > 0 else -1
        gr.capacity[g] = gr.class_capacity[gr.size_class[g]] if gr.count[g] > 0 else 0
        gr.start[g] = at
        at += gr.capacity[g]
        gr.count[g] = 0
    gr.top = at
    for g in range(N_SIZE_CLASSES):
        gr.free_head[g] = -1
    for a in range(n):
        g = gr.site_state[carriers[a]] & ~OCCUPIED
        if g > 0:
            gr.pool[gr.start[g] + gr.count[g]].ion = <int32_t>a
            gr.pool[gr.start[g] + gr.count[g]].site = carriers[a]
            gr.count[g] += 1
    _weights_rebuild(gr)


cdef void _save_sites(const Groups* gr, int32_t[::1] carriers) noexcept nogil:
    """carriers[a] = site of every stored carrier (the immobile ones never move)."""
    cdef int g
    cdef int64_t i
    for g in range(1, gr.n_groups):
        for i in range(gr.start[g], gr.start[g] + gr.count[g]):
            carriers[gr.pool[i].ion] = gr.pool[i].site


cdef void _remove(Groups* gr, int g, int64_t pos) noexcept nogil:
    """Take the member at pool[pos] out of group g (the group's last member fills the gap);
    shrink the region by a size class when its members would fit two classes down."""
    cdef int64_t last = gr.start[g] + gr.count[g] - 1
    cdef int k = gr.size_class[g]
    gr.pool[pos] = gr.pool[last]
    gr.count[g] -= 1
    if gr.count[g] == 0:
        _resize(gr, g, -1)
    elif k >= 2 and gr.count[g] < gr.class_capacity[k - 2]:
        _resize(gr, g, k - 1)  # no room: keep the larger region


cdef void _insert(Groups* gr, int h, int32_t carrier, int32_t site,
                  int32_t[::1] carriers) noexcept nogil:
    """Add a carrier on ``site`` to group h, growing its region by a size class when full;
    repack the whole pool if it has no room for that."""
    if gr.count[h] == gr.capacity[h]:
        if not _resize(gr, h, gr.size_class[h] + 1):
            _save_sites(gr, carriers)
            carriers[carrier] = site
            _layout(gr, carriers)
            return
    gr.pool[gr.start[h] + gr.count[h]].ion = carrier
    gr.pool[gr.start[h] + gr.count[h]].site = site
    gr.count[h] += 1


cdef (int, int) _exponent_range(const Sites* sites, Py_ssize_t n) noexcept nogil:
    """Binary exponents of the smallest and largest positive total rate (0, 0 if none)."""
    cdef double low = INFINITY, high = 0.0, total
    cdef Py_ssize_t s
    cdef int e_lo = 0, e_hi = 0
    for s in range(n):
        total = _total(sites, _record(sites, <int32_t>s))
        if total > 0.0:
            low = total if total < low else low
            high = total if total > high else high
    if high > 0.0:
        frexp(low, &e_lo)
        frexp(high, &e_hi)
    return e_lo, e_hi


def run_lattice_gas(const double[:, ::1] records, const int64_t[:, :, ::1] deltas,
                    const int32_t[:, :, ::1] hop_cells,
                    int32_t[:, ::1] ions, uint8_t[::1] occupied, int32_t[::1] occupant,
                    int32_t[::1] carriers, bint holes, int64_t max_hops,
                    const double[::1] frame_times,
                    int32_t[:, ::1] out_sites, int32_t[:, :, ::1] out_cells,
                    const double[::1] fine_times, int64_t[:, ::1] out_moves,
                    uint64_t[::1] rng_state):
    """Lattice gas with site exclusion on one global clock starting at 0.

    ``ions[a]`` is (site, unwrapped cell) of ion a and ``occupied`` marks the occupied sites.
    Events are drawn over ``carriers``: the ions' sites in ion order, with ``records`` of
    outgoing rates; or, when ``holes`` is set, the empty sites, with ``records`` of the rates
    INTO each site (a vacancy at i "hops" to j when the ion at j hops to i) and
    ``occupant[s]``, the ion on site s or -1, to find the ion that moves. Driving the vacancies
    of a nearly full lattice wastes as few attempts as driving the ions of a nearly empty one.
    With no frame times, runs until ``max_hops`` successful hops (equilibration); otherwise
    until every frame is recorded, frame f holding the state at time frame_times[f].
    ``out_moves[m, b * z + k]`` counts the ion hops along direction k from a basis-b site
    made before ``fine_times[m]`` (net: minus the reverse ones), which gives the summed
    displacement of all ions on a finer time grid than the frames (``fine_times`` must end
    by the last frame time). ``carriers`` is updated to the carriers' final sites. Returns (hops, attempts, elapsed
    simulated time).
    """
    cdef Py_ssize_t n = carriers.shape[0], n_frames = frame_times.shape[0]
    cdef Sites sites = _sites(records, deltas, hop_cells)
    cdef Py_ssize_t z = sites.z
    cdef Rng rng = _load_rng(rng_state)

    # Group bounds span every site's total rate, so a carrier never leaves the table.
    e_lo, e_hi = _exponent_range(&sites, records.shape[0])
    # bound of group g >= 1: 2^(e-1) 2^((step+1)/4) with e = e_lo + (g-1)//4, step = (g-1)%4
    octave, step = np.divmod(np.arange((e_hi - e_lo + 1) * STEPS_PER_OCTAVE), STEPS_PER_OCTAVE)
    bounds = np.concatenate(
        [[0.0], np.ldexp(2.0 ** ((step + 1) / STEPS_PER_OCTAVE), e_lo - 1 + octave)])
    cdef Groups gr
    gr.e_min = e_lo
    gr.n_groups = len(bounds)
    gr.pool_size = 2 * (n + gr.n_groups)
    pool = np.empty((gr.pool_size, 2), dtype=np.int32)  # Member pairs
    quarter = np.arange(N_SIZE_CLASSES - 3)
    class_capacities = np.concatenate(
        [[1, 2, 3], (4 + quarter % 4) << (quarter // 4)]).astype(np.int64)
    free_heads = np.empty(N_SIZE_CLASSES, dtype=np.int64)
    starts = np.zeros(gr.n_groups, dtype=np.int64)
    counts = np.zeros(gr.n_groups, dtype=np.int64)
    capacities = np.zeros(gr.n_groups, dtype=np.int64)
    size_classes = np.full(gr.n_groups, -1, dtype=np.int32)
    tree = np.zeros(gr.n_groups)
    cdef int32_t[:, ::1] pool_v = pool
    cdef int32_t[::1] classes_v = size_classes
    cdef const int64_t[::1] class_capacities_v = class_capacities
    cdef int64_t[::1] free_v = free_heads, starts_v = starts, counts_v = counts
    cdef int64_t[::1] capacities_v = capacities
    cdef double[::1] bounds_v = bounds, tree_v = tree
    gr.pool = <Member*>&pool_v[0, 0]
    gr.class_capacity = &class_capacities_v[0]
    gr.free_head, gr.start, gr.count = &free_v[0], &starts_v[0], &counts_v[0]
    gr.capacity, gr.size_class = &capacities_v[0], &classes_v[0]
    gr.bound, gr.tree = &bounds_v[0], &tree_v[0]
    gr.tree_top = 1
    while 2 * gr.tree_top < gr.n_groups:
        gr.tree_top *= 2
    gr.epoch = 0
    states = np.empty(records.shape[0], dtype=np.uint16)
    cdef uint16_t[::1] states_v = states
    gr.site_state = &states_v[0]

    moves = np.zeros(out_moves.shape[1], dtype=np.int64)
    cdef int64_t[::1] moves_v = moves
    cdef Py_ssize_t n_fine = fine_times.shape[0], n_moves = out_moves.shape[1], fm = 0
    cdef Py_ssize_t a = 0, f = 0, i
    cdef int g, h, k
    cdef int32_t ion, carrier, s, j
    cdef int64_t hops = 0, attempts = 0, pos, m
    cdef double t = 0.0, t_new, x, waited = 0.0, product = 1.0
    cdef const double* rec
    cdef Attempt ring[RING]
    cdef Attempt* ahead
    cdef Attempt* this
    cdef bint live, found = False
    with nogil:
        for i in range(records.shape[0]):
            gr.site_state[i] = _group_of(&gr, _total(&sites, _record(&sites, <int32_t>i)))
            if occupied[i]:
                gr.site_state[i] |= OCCUPIED
        _layout(&gr, carriers)
        for i in range(RING):
            ring[i].u = rng_uniform(&rng)
            _predict(&gr, &ring[i])
        while (f < n_frames) if n_frames > 0 else (hops < max_hops):
            if gr.rate_bound <= 0.0:  # no carrier can move: the state is frozen
                while fm < n_fine:
                    memcpy(&out_moves[fm, 0], &moves_v[0], n_moves * sizeof(int64_t))
                    fm += 1
                while f < n_frames:
                    _record_frame(f, ions, out_sites, out_cells)
                    f += 1
                break
            attempts += 1
            product *= 1.0 - rng_uniform(&rng)  # in (0, 1]: this attempt's Exp(1) factor
            if product < 1e-280:  # keep the running product of uniforms from underflowing
                waited -= log(product) / gr.rate_bound
                product = 1.0
            # stage 2 of a later attempt: its pool entry has arrived; fetch its site record
            ahead = &ring[(a + LEAD_SITE) % RING]
            if _live(&gr, ahead):
                ahead.site = gr.pool[ahead.pos].site
                _prefetch_record(&sites, ahead.site)
            # stage 3 of a nearer one: its record has arrived; fetch what its hop touches
            ahead = &ring[(a + LEAD_MOVE) % RING]
            if ahead.site >= 0 and _live(&gr, ahead) and gr.pool[ahead.pos].site == ahead.site:
                rec = _record(&sites, ahead.site)
                ahead.k = _direction_below(rec, z, ahead.x)
                ahead.moved = True
                if ahead.k >= 0:
                    ahead.j = _target(&sites, ahead.site, rec, ahead.k)
                    KMC_PREFETCH(&gr.site_state[ahead.j])
                    if holes:
                        KMC_PREFETCH(&occupant[ahead.j])
                    else:
                        KMC_PREFETCH(&ions[gr.pool[ahead.pos].ion, 0])
            if holes:  # stage 4: the target's occupant has arrived; fetch that ion's state
                ahead = &ring[(a + LEAD_ION) % RING]
                if ahead.moved and ahead.k >= 0 and ahead.epoch == gr.epoch:
                    ion = occupant[ahead.j]
                    if ion >= 0:
                        KMC_PREFETCH(&ions[ion, 0])
            # this attempt: redo the prediction if the map changed; then draw a new one
            this = &ring[a]
            if this.epoch != gr.epoch:
                _predict(&gr, this)
            live = _live(&gr, this)
            g, pos, x = this.g, this.pos, this.x
            if live:
                carrier, s = gr.pool[pos].ion, gr.pool[pos].site
                found = this.moved and this.site == s
                k, j = this.k, this.j
            this.u = rng_uniform(&rng)
            _predict(&gr, this)
            if _live(&gr, this):
                KMC_PREFETCH(&gr.pool[this.pos])
            a = (a + 1) % RING
            if not live:
                continue  # an empty capacity slot: a null event
            if not found:
                rec = _record(&sites, s)
                k = _direction_below(rec, z, x)
                if k >= 0:
                    j = _target(&sites, s, rec, k)
            if k < 0:
                continue  # x above the carrier's total: a null event
            if ((gr.site_state[j] & OCCUPIED) != 0) != holes:
                continue  # an ion onto an ion, or a vacancy onto a vacancy: a null event
            # a hop: the state so far held from t until now
            t_new = t + waited - log(product) / gr.rate_bound
            waited, product = 0.0, 1.0
            while fm < n_fine and fine_times[fm] < t_new:
                memcpy(&out_moves[fm, 0], &moves_v[0], n_moves * sizeof(int64_t))
                fm += 1
            while f < n_frames and frame_times[f] < t_new:
                _record_frame(f, ions, out_sites, out_cells)
                f += 1
            if n_frames > 0 and f == n_frames:
                break
            t = t_new
            # s ends up empty and j occupied (ions), or the other way round (vacancies); s's
            # state is written, not updated, as its cache line was never fetched
            h = gr.site_state[j] & ~OCCUPIED
            gr.site_state[s] = g | (OCCUPIED if holes else 0)
            gr.site_state[j] = h | (0 if holes else OCCUPIED)
            if holes:  # the ion on j hops into the vacancy on s
                ion = occupant[j]
                occupant[s], occupant[j] = ion, -1
                ions[ion, 0] = s
                moves_v[_shift_cell(&sites, _record(&sites, s), k, &ions[ion, 1], -1) * z + k] -= 1
            else:
                ions[carrier, 0] = j
                moves_v[_shift_cell(&sites, _record(&sites, s), k, &ions[carrier, 1]) * z + k] += 1
            if h == g:
                gr.pool[pos].site = j
            else:
                _remove(&gr, g, pos)
                if h == 0:  # it can never move again: not stored
                    carriers[carrier] = j
                else:
                    _insert(&gr, h, carrier, j, carriers)
            hops += 1
            if hops % REBUILD_EVERY == 0:
                _weights_rebuild(&gr)
        _save_sites(&gr, carriers)
        for i in range(records.shape[0]):
            occupied[i] = (gr.site_state[i] & OCCUPIED) != 0
    _store_rng(&rng, rng_state)
    return hops, attempts, t


cdef void _record_frame(Py_ssize_t f, const int32_t[:, ::1] ions, int32_t[:, ::1] out_sites,
                        int32_t[:, :, ::1] out_cells) noexcept nogil:
    cdef Py_ssize_t a, b
    for a in range(ions.shape[0]):
        out_sites[f, a] = ions[a, 0]
        for b in range(out_cells.shape[2]):
            out_cells[f, a, b] = ions[a, 1 + b]
