"""Compiled continuous-time kMC kernels (private: call them through kmc.kernel).

They take typed, C-contiguous arrays that the caller has validated and owns, run without the
GIL, and write the ions' final state and the recorded frames back into those arrays.
Positions are kept exact as (site, unwrapped conventional-cell coordinates).

Memory layout: everything a hop from site s needs sits in one record of ``site_records``
(see :func:`pack_sites`), so a hop costs one cache miss, not three; and the kernels fetch the
next record ahead of time (independent walkers in an interleaved batch, the lattice gas one
attempt ahead), so the misses overlap instead of queueing. Both are hints to the memory
system only: the random numbers and the events are exactly those of the plain algorithm.
"""

from libc.math cimport INFINITY, frexp, log
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t

import numpy as np


cdef extern from *:
    """
    #define KMC_PREFETCH(p) __builtin_prefetch((const void*)(p), 0, 3)
    """
    void KMC_PREFETCH(const void* p) noexcept nogil


def record_width(int z):
    """Doubles per site record: the total rate, z rates, z int32 neighbours (padded)."""
    return 1 + z + (z + 1) // 2


def pack_sites(const double[:, ::1] rates, const int32_t[:, ::1] neighbours,
               double[:, ::1] records):
    """Fill site records [total, rate_0..rate_{z-1}, neighbours as int32] (rows of
    ``records``, of width record_width(z)) from rates and neighbours of the same sites."""
    cdef Py_ssize_t n = rates.shape[0], z = rates.shape[1], s, k
    cdef double total
    cdef int32_t* nb
    with nogil:
        for s in range(n):
            total = 0.0
            for k in range(z):
                records[s, 1 + k] = rates[s, k]
                total += rates[s, k]
            records[s, 0] = total
            nb = <int32_t*>&records[s, 1 + z]
            for k in range(z):
                nb[k] = neighbours[s, k]


cdef struct Sites:
    const double* records
    Py_ssize_t width      # doubles per record
    Py_ssize_t z
    Py_ssize_t dim
    int n_basis
    const int32_t* hop_cells


cdef inline const double* _record(const Sites* sites, int32_t s) noexcept nogil:
    return sites.records + <Py_ssize_t>s * sites.width


cdef inline int32_t _target(const Sites* sites, const double* record, int k) noexcept nogil:
    return (<const int32_t*>(record + 1 + sites.z))[k]


cdef inline void _shift_cell(const Sites* sites, int32_t s, int k, int32_t* cell,
                             int sign=1) noexcept nogil:
    """Add (sign = 1) or subtract the conventional-cell offset of hop k from site s to an
    unwrapped cell."""
    cdef const int32_t* offset = sites.hop_cells + ((s % sites.n_basis) * sites.z + k) * sites.dim
    cdef Py_ssize_t a
    for a in range(sites.dim):
        cell[a] += sign * offset[a]


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


cdef Sites _sites(const double[:, ::1] records, Py_ssize_t z, const int32_t[:, :, ::1] hop_cells):
    cdef Sites sites
    sites.records = &records[0, 0]
    sites.width = records.shape[1]
    sites.z = z
    sites.dim = hop_cells.shape[2]
    sites.n_basis = hop_cells.shape[0]
    sites.hop_cells = &hop_cells[0, 0, 0]
    return sites


cdef enum:
    BATCH = 16  # independent walkers advanced together, interleaved


def run_walkers(const double[:, ::1] records, const int32_t[:, :, ::1] hop_cells,
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
    cdef Sites sites = _sites(records, hop_cells.shape[1], hop_cells)
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
            t_next = _waiting_time(&rng, _record(&sites, s)[0])
            while t_next <= equilibration_time:
                rec = _record(&sites, s)
                k = choose_direction(rec + 1, z, rng_uniform(&rng) * rec[0])
                _shift_cell(&sites, s, k, &cell[w, 0])
                s = _target(&sites, rec, k)
                t_next += _waiting_time(&rng, _record(&sites, s)[0])
            site[w] = s
        first = 0
        while first < n:
            size = n - first if n - first < BATCH else BATCH
            for b in range(size):
                batch_site[b] = site[first + b]
                batch_next[b] = _waiting_time(&rng, _record(&sites, batch_site[b])[0])
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
                    k = choose_direction(rec + 1, z, rng_uniform(&rng) * rec[0])
                    _shift_cell(&sites, s, k, &cell[w, 0])
                    s = _target(&sites, rec, k)
                    KMC_PREFETCH(_record(&sites, s))
                    batch_site[b] = s
                    hops += 1
                    batch_hopped[b] = True
                # the waiting times need the new records, fetched while the batch hopped
                for b in range(size):
                    if batch_hopped[b]:
                        batch_hopped[b] = False
                        batch_next[b] += _waiting_time(&rng, _record(&sites, batch_site[b])[0])
            first += size
    _store_rng(&rng, rng_state)
    return hops


# Event selection for the lattice gas: composition–rejection over ions, with uniformization.
# Ions are grouped by their site's total escape rate in quarter octaves: group g >= 1 holds
# totals in (bound[g] / 2^(1/4), bound[g]]; group 0 holds ions that cannot move. A candidate
# is drawn with probability proportional to its group's bound and accepted with probability
# total / bound (>= 0.84); rejections and hops onto occupied sites are null events. That is
# uniformization of the exact process with the rate R = sum of the ions' bounds, so the
# clock is exact: the time to the next hop is a sum of K Exp(1)/R over its K attempts, and
# -log(u_1 ... u_K) is exactly such a sum, so one logarithm per hop suffices.
# Carriers (ions, or vacancies) are kept in one array sorted by group, so moving one between
# groups costs one swap per group crossed; each entry carries the carrier's site, so a
# candidate costs one memory access before its site record.
cdef enum:
    STEPS_PER_OCTAVE = 4


cdef struct Member:
    int32_t ion
    int32_t site


cdef struct Groups:
    Member* members       # carriers with their sites, ordered by group
    int32_t* slot         # position of each carrier in members
    int64_t* start        # members[start[g]:start[g+1]] are the carriers of group g
    double* bound         # upper bound of the totals in group g, 0 for group 0
    int32_t* order        # groups 1.. by falling weight, so that a draw finds its group soon
    int n_groups
    int e_min
    double rate_bound     # R = sum over carriers of their group's bound


cdef inline int _group_of(const Groups* gr, double total) noexcept nogil:
    cdef int e, step
    cdef double mantissa
    if total <= 0.0:
        return 0
    mantissa = frexp(total, &e)  # total = mantissa 2^e, mantissa in [1/2, 1)
    step = 0
    while step < STEPS_PER_OCTAVE - 1 and total > gr.bound[(e - gr.e_min) * STEPS_PER_OCTAVE + step + 1]:
        step += 1
    return (e - gr.e_min) * STEPS_PER_OCTAVE + step + 1


cdef double _sum_bounds(const Groups* gr) noexcept nogil:
    cdef double r = 0.0
    cdef int g
    for g in range(1, gr.n_groups):
        r += (gr.start[g + 1] - gr.start[g]) * gr.bound[g]
    return r


cdef inline void _swap_into(Groups* gr, int32_t ion, int64_t edge) noexcept nogil:
    cdef Member other = gr.members[edge], moving = gr.members[gr.slot[ion]]
    gr.members[gr.slot[ion]] = other
    gr.slot[other.ion] = gr.slot[ion]
    gr.members[edge] = moving
    gr.slot[ion] = <int32_t>edge


cdef void _groups_move(Groups* gr, int32_t ion, int g, int h) noexcept nogil:
    """Move an ion from group g to group h by walking it across the group boundaries."""
    gr.rate_bound += gr.bound[h] - gr.bound[g]
    while g < h:  # to the end of group g, then move the boundary below it
        _swap_into(gr, ion, gr.start[g + 1] - 1)
        gr.start[g + 1] -= 1
        g += 1
    while g > h:  # to the front of group g, then move the boundary above it
        _swap_into(gr, ion, gr.start[g])
        gr.start[g] += 1
        g -= 1


cdef void _groups_sort(Groups* gr) noexcept nogil:
    """Order the groups by falling weight (count · bound); any fixed order partitions
    [0, R) exactly, this one makes the search short."""
    cdef int i, j, g
    cdef double weight
    for i in range(1, gr.n_groups):
        g = gr.order[i - 1]
        weight = (gr.start[g + 1] - gr.start[g]) * gr.bound[g]
        j = i - 1
        while j > 0 and (gr.start[gr.order[j - 1] + 1] - gr.start[gr.order[j - 1]]) * gr.bound[gr.order[j - 1]] < weight:
            gr.order[j] = gr.order[j - 1]
            j -= 1
        gr.order[j] = g


cdef inline int64_t _groups_slot(const Groups* gr, double u, double* x) noexcept nogil:
    """The members slot a uniform u in [0, 1) points at, or -1 if rounding pushed it past
    the last group; ``x`` is then uniform in [0, that group's bound): one uniform serves
    group, member, acceptance and direction."""
    cdef double r = u * gr.rate_bound, weight, y
    cdef int i, g
    cdef int64_t count, index
    for i in range(gr.n_groups - 1):
        g = gr.order[i]
        count = gr.start[g + 1] - gr.start[g]
        weight = count * gr.bound[g]
        if r < weight:
            y = r / gr.bound[g]
            index = <int64_t>y
            if index >= count:
                index = count - 1
            x[0] = (y - index) * gr.bound[g]
            return gr.start[g] + index
        r -= weight
    return -1


cdef (int, int) _exponent_range(const double[:, ::1] records):
    """Binary exponents of the smallest and largest positive total rate (0, 0 if none)."""
    cdef double low = INFINITY, high = 0.0, total
    cdef Py_ssize_t s
    cdef int e_lo = 0, e_hi = 0
    for s in range(records.shape[0]):
        total = records[s, 0]
        if total > 0.0:
            low = total if total < low else low
            high = total if total > high else high
    if high > 0.0:
        frexp(low, &e_lo)
        frexp(high, &e_hi)
    return e_lo, e_hi


cdef enum:
    AHEAD = 2  # attempts whose uniforms are drawn ahead, to prefetch what they will touch


cdef inline void _prefetch_ahead(const Groups* gr, const Sites* sites, const int64_t* ahead_slot,
                                 Py_ssize_t a) noexcept nogil:
    """Prefetch the site record of the attempt AHEAD/2 attempts ahead (its group entry was
    fetched AHEAD/2 attempts ago). Slots drawn ahead may be stale by the time their attempt
    comes: they only steer the prefetches, never the events."""
    cdef int64_t slot = ahead_slot[(a + AHEAD // 2) % AHEAD]
    if slot >= 0:
        KMC_PREFETCH(_record(sites, gr.members[slot].site))


def run_lattice_gas(const double[:, ::1] records, const int32_t[:, :, ::1] hop_cells,
                    int32_t[:, ::1] ions, uint8_t[::1] occupied, int32_t[::1] occupant,
                    int32_t[::1] carriers, bint holes, int64_t max_hops,
                    const double[::1] frame_times,
                    int32_t[:, ::1] out_sites, int32_t[:, :, ::1] out_cells,
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
    Uniforms are drawn AHEAD attempts early so that the candidate's group entry and then its
    site record can be prefetched. Returns (hops, attempts,
    elapsed simulated time).
    """
    cdef Py_ssize_t n = carriers.shape[0], n_frames = frame_times.shape[0]
    cdef Sites sites = _sites(records, hop_cells.shape[1], hop_cells)
    cdef Py_ssize_t z = sites.z, dim = sites.dim
    cdef Rng rng = _load_rng(rng_state)

    # Group bounds span every site's total rate, so an ion never leaves the table.
    e_lo, e_hi = _exponent_range(records)
    # bound of group g >= 1: 2^(e-1) 2^((step+1)/4) with e = e_lo + (g-1)//4, step = (g-1)%4
    octave, step = np.divmod(np.arange((e_hi - e_lo + 1) * STEPS_PER_OCTAVE), STEPS_PER_OCTAVE)
    bounds = np.concatenate(
        [[0.0], np.ldexp(2.0 ** ((step + 1) / STEPS_PER_OCTAVE), e_lo - 1 + octave)])
    cdef Groups gr
    gr.e_min = e_lo
    gr.n_groups = len(bounds)
    members = np.empty(2 * n, dtype=np.int32)  # Member pairs
    slots = np.empty(n, dtype=np.int32)
    starts = np.zeros(gr.n_groups + 1, dtype=np.int64)
    order = np.arange(1, gr.n_groups, dtype=np.int32)
    cdef int32_t[::1] members_v = members, slots_v = slots, order_v = order
    cdef int64_t[::1] starts_v = starts
    cdef double[::1] bounds_v = bounds
    gr.members = <Member*>&members_v[0]
    gr.slot, gr.start, gr.bound = &slots_v[0], &starts_v[0], &bounds_v[0]
    gr.order = &order_v[0]

    cdef Py_ssize_t a, f = 0, b
    cdef int g, h, k
    cdef int32_t ion, s, j
    cdef int64_t hops = 0, attempts = 0, slot
    cdef double t = 0.0, t_new, x, u, waited = 0.0, product = 1.0
    cdef const double* rec
    cdef double ahead_u[AHEAD]
    cdef double ahead_x[AHEAD]
    cdef int64_t ahead_slot[AHEAD]
    with nogil:
        for a in range(n):  # counting sort of the carriers into their groups
            gr.start[_group_of(&gr, _record(&sites, carriers[a])[0]) + 1] += 1
        for g in range(gr.n_groups):
            gr.start[g + 1] += gr.start[g]
        for a in range(n):
            g = _group_of(&gr, _record(&sites, carriers[a])[0])
            gr.members[gr.start[g]].ion = <int32_t>a
            gr.members[gr.start[g]].site = carriers[a]
            gr.slot[a] = <int32_t>gr.start[g]
            gr.start[g] += 1
        for g in range(gr.n_groups, 0, -1):
            gr.start[g] = gr.start[g - 1]
        gr.start[0] = 0
        gr.rate_bound = _sum_bounds(&gr)
        _groups_sort(&gr)

        for a in range(AHEAD):
            ahead_u[a] = rng_uniform(&rng)
            ahead_slot[a] = _groups_slot(&gr, ahead_u[a], &ahead_x[a])
        a = 0  # ring position of this attempt; the ring holds the next AHEAD attempts
        while (f < n_frames) if n_frames > 0 else (hops < max_hops):
            if gr.rate_bound <= 0.0:  # no ion can move: the state is frozen
                while f < n_frames:
                    _record_frame(f, ions, out_sites, out_cells)
                    f += 1
                break
            attempts += 1
            product *= 1.0 - rng_uniform(&rng)  # in (0, 1]: this attempt's Exp(1) factor
            if product < 1e-280:  # keep the running product of uniforms from underflowing
                waited -= log(product) / gr.rate_bound
                product = 1.0
            _prefetch_ahead(&gr, &sites, ahead_slot, a)
            u = ahead_u[a]  # this attempt's uniform; refill its ring place for a later one
            ahead_u[a] = rng_uniform(&rng)
            ahead_slot[a] = _groups_slot(&gr, ahead_u[a], &ahead_x[a])
            if ahead_slot[a] >= 0:
                KMC_PREFETCH(&gr.members[ahead_slot[a]])
            a = (a + 1) % AHEAD
            slot = _groups_slot(&gr, u, &x)  # again: the groups may have changed since
            if slot < 0:
                continue
            s = gr.members[slot].site
            rec = _record(&sites, s)
            if x >= rec[0]:
                continue  # rejected: a null event
            k = choose_direction(rec + 1, z, x)
            j = _target(&sites, rec, k)
            if occupied[j] != holes:
                continue  # an ion onto an ion, or a vacancy onto a vacancy: a null event
            # a hop: the state so far held from t until now
            t_new = t + waited - log(product) / gr.rate_bound
            waited, product = 0.0, 1.0
            while f < n_frames and frame_times[f] < t_new:
                _record_frame(f, ions, out_sites, out_cells)
                f += 1
            if n_frames > 0 and f == n_frames:
                break
            t = t_new
            occupied[s], occupied[j] = holes, not holes
            if holes:  # the ion on j hops into the vacancy on s
                ion = occupant[j]
                occupant[s], occupant[j] = ion, -1
                ions[ion, 0] = s
                _shift_cell(&sites, s, k, &ions[ion, 1], -1)
            else:
                ion = gr.members[slot].ion
                ions[ion, 0] = j
                _shift_cell(&sites, s, k, &ions[ion, 1])
            gr.members[slot].site = j  # the carrier moved from s to j
            g = _group_of(&gr, rec[0])
            h = _group_of(&gr, _record(&sites, j)[0])
            if g != h:
                _groups_move(&gr, gr.members[slot].ion, g, h)
            hops += 1
            if hops & 0xFFF == 0:
                _groups_sort(&gr)
            if hops & 0xFFFF == 0:  # wash out rounding drift of the running sum
                gr.rate_bound = _sum_bounds(&gr)
        for a in range(n):
            carriers[a] = gr.members[gr.slot[a]].site
    _store_rng(&rng, rng_state)
    return hops, attempts, t


cdef void _record_frame(Py_ssize_t f, const int32_t[:, ::1] ions, int32_t[:, ::1] out_sites,
                        int32_t[:, :, ::1] out_cells) noexcept nogil:
    cdef Py_ssize_t a, b
    for a in range(ions.shape[0]):
        out_sites[f, a] = ions[a, 0]
        for b in range(out_cells.shape[2]):
            out_cells[f, a, b] = ions[a, 1 + b]
