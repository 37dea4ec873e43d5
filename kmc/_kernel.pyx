"""Compiled continuous-time kMC kernels (private: call them through kmc.kernel).

They take typed, C-contiguous arrays that the caller has validated and owns, run without the
GIL, and write the ions' final state and the recorded frames back into those arrays.
Positions are kept exact as (site, unwrapped conventional-cell coordinates).
"""

from libc.math cimport INFINITY, frexp, ldexp
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t

import numpy as np


cdef inline Rng _load_rng(uint64_t[::1] state) noexcept:
    cdef Rng r
    r.s0, r.s1, r.s2, r.s3 = state[0], state[1], state[2], state[3]
    return r


cdef inline void _store_rng(Rng* r, uint64_t[::1] state) noexcept:
    state[0], state[1], state[2], state[3] = r.s0, r.s1, r.s2, r.s3


cdef inline int32_t _hop(int32_t s, int k, const int32_t* neighbours, const int32_t* hop_cells,
                         Py_ssize_t z, Py_ssize_t dim, int n_basis, int32_t* cell) noexcept nogil:
    """Move from site s along direction k: shift the unwrapped cell, return the target."""
    cdef const int32_t* offset = hop_cells + ((s % n_basis) * z + k) * dim
    cdef Py_ssize_t a
    for a in range(dim):
        cell[a] += offset[a]
    return neighbours[<Py_ssize_t>s * z + k]


cdef inline double _waiting_time(Rng* rng, double total) noexcept nogil:
    if total > 0.0:
        return rng_exponential(rng) / total
    return INFINITY


def run_walkers(const double[:, ::1] rates, const double[::1] total,
                const int32_t[:, ::1] neighbours, const int32_t[:, :, ::1] hop_cells,
                int32_t[::1] site, int32_t[:, ::1] cell, int64_t equilibration_hops,
                const double[::1] frame_times, int32_t[:, ::1] out_sites,
                int32_t[:, :, ::1] out_cells, uint64_t[::1] rng_state):
    """Independent walkers on one landscape (no exclusion).

    Walkers do not interact, so each one runs its own exact Gillespie chain on its own clock
    to the last frame time before the next walker starts: no event queue is needed, and a
    walker's neighbourhood stays in cache. Each walker first makes ``equilibration_hops``
    hops; its production clock then starts at 0 (exact, since waiting times are memoryless).
    Returns the number of production hops.
    """
    cdef Py_ssize_t n = site.shape[0], z = rates.shape[1], dim = cell.shape[1]
    cdef Py_ssize_t n_frames = frame_times.shape[0]
    cdef int n_basis = hop_cells.shape[0]
    cdef Rng rng = _load_rng(rng_state)
    cdef const double* rate_rows = &rates[0, 0]
    cdef const int32_t* nb = &neighbours[0, 0]
    cdef const int32_t* hc = &hop_cells[0, 0, 0]
    cdef int64_t hops = 0, h
    cdef Py_ssize_t w, f, a
    cdef int32_t s
    cdef int k
    cdef double t_next
    cdef int32_t* cw
    with nogil:
        for w in range(n):
            s = site[w]
            cw = &cell[w, 0]
            for h in range(equilibration_hops):
                if total[s] <= 0.0:
                    break
                k = choose_direction(rate_rows + s * z, z, rng_uniform(&rng) * total[s])
                s = _hop(s, k, nb, hc, z, dim, n_basis, cw)
            t_next = _waiting_time(&rng, total[s])
            for f in range(n_frames):
                while t_next <= frame_times[f]:
                    k = choose_direction(rate_rows + s * z, z, rng_uniform(&rng) * total[s])
                    s = _hop(s, k, nb, hc, z, dim, n_basis, cw)
                    hops += 1
                    t_next += _waiting_time(&rng, total[s])
                out_sites[f, w] = s
                for a in range(dim):
                    out_cells[f, w, a] = cw[a]
            site[w] = s
    _store_rng(&rng, rng_state)
    return hops


# Event selection for the lattice gas: composition–rejection over ions, with uniformization.
# Ion a is in group g when its site's total escape rate lies in [2^(e-1), 2^e), e = g-1+e_min;
# group 0 holds ions that cannot move. A candidate is drawn with probability proportional to
# its group's bound 2^e and accepted with probability total/2^e (>= 1/2); rejections and hops
# onto occupied sites are null events that still advance the clock by Exp(1)/R, R the sum of
# bounds. That is uniformization of the exact process, so the clock is exact. Ions are kept
# in one array sorted by group, so moving an ion between groups costs one swap per group.
cdef struct Groups:
    int32_t* members      # ions, ordered by group
    int32_t* slot         # position of each ion in members
    int64_t* start        # members[start[g]:start[g+1]] are the ions of group g
    double* bound         # 2^e of each group, 0 for group 0
    int n_groups
    int e_min
    double rate_bound     # R = sum over ions of their group's bound


cdef inline int _group_of(const Groups* gr, double total) noexcept nogil:
    cdef int e
    if total <= 0.0:
        return 0
    frexp(total, &e)
    return e - gr.e_min + 1


cdef double _sum_bounds(const Groups* gr) noexcept nogil:
    cdef double r = 0.0
    cdef int g
    for g in range(1, gr.n_groups):
        r += (gr.start[g + 1] - gr.start[g]) * gr.bound[g]
    return r


cdef void _groups_move(Groups* gr, int32_t ion, int g, int h) noexcept nogil:
    """Move an ion from group g to group h by walking it across the group boundaries."""
    cdef int64_t edge
    cdef int32_t other
    gr.rate_bound += gr.bound[h] - gr.bound[g]
    while g < h:
        edge = gr.start[g + 1] - 1  # swap to the end of group g, then move the boundary
        other = gr.members[edge]
        gr.members[gr.slot[ion]] = other
        gr.slot[other] = gr.slot[ion]
        gr.members[edge] = ion
        gr.slot[ion] = edge
        gr.start[g + 1] -= 1
        g += 1
    while g > h:
        edge = gr.start[g]  # swap to the front of group g, then move the boundary
        other = gr.members[edge]
        gr.members[gr.slot[ion]] = other
        gr.slot[other] = gr.slot[ion]
        gr.members[edge] = ion
        gr.slot[ion] = edge
        gr.start[g] += 1
        g -= 1


cdef inline int32_t _groups_select(const Groups* gr, Rng* rng, const double* total,
                                   const int32_t* site, double* x) noexcept nogil:
    """A candidate ion, or -1 for a rejection. On success ``x`` is uniform in [0, its total
    rate), ready to pick the hop direction: one uniform serves group, member, acceptance and
    direction."""
    cdef double r = rng_uniform(rng) * gr.rate_bound, weight, y
    cdef int g
    cdef int64_t count, index
    cdef int32_t ion
    for g in range(gr.n_groups - 1, 0, -1):
        count = gr.start[g + 1] - gr.start[g]
        weight = count * gr.bound[g]
        if r < weight:
            y = r / gr.bound[g]
            index = <int64_t>y
            if index >= count:
                index = count - 1
            ion = gr.members[gr.start[g] + index]
            x[0] = (y - index) * gr.bound[g]
            if x[0] < total[site[ion]]:
                return ion
            return -1
        r -= weight
    return -1  # rounding pushed r past the last group: a null event


def run_lattice_gas(const double[:, ::1] rates, const double[::1] total,
                    const int32_t[:, ::1] neighbours, const int32_t[:, :, ::1] hop_cells,
                    int32_t[::1] site, int32_t[:, ::1] cell, uint8_t[::1] occupied,
                    int64_t max_hops, const double[::1] frame_times, int32_t[:, ::1] out_sites,
                    int32_t[:, :, ::1] out_cells, uint64_t[::1] rng_state):
    """Lattice gas with site exclusion on one global clock starting at 0.

    With no frame times, runs until ``max_hops`` successful hops (equilibration); otherwise
    until every frame is recorded, frame f holding the state at time frame_times[f].
    Returns (hops, attempts, elapsed simulated time).
    """
    cdef Py_ssize_t n = site.shape[0], z = rates.shape[1], dim = cell.shape[1]
    cdef Py_ssize_t n_frames = frame_times.shape[0]
    cdef int n_basis = hop_cells.shape[0]
    cdef Rng rng = _load_rng(rng_state)
    cdef const double* rate_rows = &rates[0, 0]
    cdef const double* tot = &total[0]
    cdef const int32_t* nb = &neighbours[0, 0]
    cdef const int32_t* hc = &hop_cells[0, 0, 0]
    cdef int32_t* ion_site = &site[0]

    # Group bounds span every site's total rate, so an ion never leaves the table.
    positive = np.asarray(total)[np.asarray(total) > 0]
    e_lo = int(np.frexp(positive.min())[1]) if positive.size else 0
    e_hi = int(np.frexp(positive.max())[1]) if positive.size else 0
    cdef Groups gr
    gr.e_min = e_lo
    gr.n_groups = e_hi - e_lo + 2
    members = np.empty(n, dtype=np.int32)
    slots = np.empty(n, dtype=np.int32)
    starts = np.zeros(gr.n_groups + 1, dtype=np.int64)
    bounds = np.array([0.0] + [ldexp(1.0, e) for e in range(e_lo, e_hi + 1)])
    cdef int32_t[::1] members_v = members, slots_v = slots
    cdef int64_t[::1] starts_v = starts
    cdef double[::1] bounds_v = bounds
    gr.members, gr.slot = &members_v[0], &slots_v[0]
    gr.start, gr.bound = &starts_v[0], &bounds_v[0]

    cdef Py_ssize_t a, f = 0, b
    cdef int g, h, k
    cdef int32_t ion, s, j
    cdef int64_t hops = 0, attempts = 0
    cdef double t = 0.0, t_new, x
    with nogil:
        for a in range(n):  # counting sort of the ions into their groups
            gr.start[_group_of(&gr, tot[ion_site[a]]) + 1] += 1
        for g in range(gr.n_groups):
            gr.start[g + 1] += gr.start[g]
        for a in range(n):
            g = _group_of(&gr, tot[ion_site[a]])
            gr.members[gr.start[g]] = <int32_t>a
            gr.slot[a] = <int32_t>gr.start[g]
            gr.start[g] += 1
        for g in range(gr.n_groups, 0, -1):
            gr.start[g] = gr.start[g - 1]
        gr.start[0] = 0
        gr.rate_bound = _sum_bounds(&gr)

        while (f < n_frames) if n_frames > 0 else (hops < max_hops):
            if gr.rate_bound <= 0.0:  # no ion can move: the state is frozen
                t_new = INFINITY
            else:
                t_new = t + rng_exponential(&rng) / gr.rate_bound
            while f < n_frames and frame_times[f] < t_new:
                for a in range(n):
                    out_sites[f, a] = ion_site[a]
                    for b in range(dim):
                        out_cells[f, a, b] = cell[a, b]
                f += 1
            if t_new == INFINITY or (n_frames > 0 and f == n_frames):
                break
            t = t_new
            attempts += 1
            ion = _groups_select(&gr, &rng, tot, ion_site, &x)
            if ion < 0:
                continue
            s = ion_site[ion]
            k = choose_direction(rate_rows + s * z, z, x)
            j = nb[<Py_ssize_t>s * z + k]
            if occupied[j]:
                continue
            occupied[s] = 0
            occupied[j] = 1
            ion_site[ion] = _hop(s, k, nb, hc, z, dim, n_basis, &cell[ion, 0])
            g = _group_of(&gr, tot[s])
            h = _group_of(&gr, tot[j])
            if g != h:
                _groups_move(&gr, ion, g, h)
            hops += 1
            if hops & 0xFFFF == 0:  # wash out rounding drift of the running sum
                gr.rate_bound = _sum_bounds(&gr)
    _store_rng(&rng, rng_state)
    return hops, attempts, t
