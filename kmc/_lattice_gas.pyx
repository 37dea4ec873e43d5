# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The lattice gas with site exclusion, compiled (private: call it through kmc.kernel).

One global clock; events chosen by composition–rejection with uniformization over the
carriers (kmc._selection). Uniformization makes the clock exact and cheap: the time to the
next hop is a sum of K Exp(1)/R over its K attempts, and -log(u_1 ... u_K) is exactly such a
sum, so one logarithm per hop suffices.

Memory latency: the map from an attempt's uniform to a pool slot changes rarely, so
attempts are drawn RING attempts ahead and what they will touch (pool entry, site record,
target state, the moving ion) is prefetched in stages while earlier attempts run, which
hides the latency of a lattice larger than the caches. Prefetches and predictions are hints:
each attempt is still decided on the state at its own turn (a prediction made under another
epoch of the map is redone, a stale site is re-read), so the trajectory is the plain
algorithm's given the same stream of uniforms (kmc.reference.run_lattice_gas, which the
tests hold it to): attempt i's uniform is drawn RING attempts ahead of it, its clock
uniform at its turn.
"""

from libc.math cimport log
from libc.stdint cimport INT64_MAX, int32_t, int64_t, uint8_t, uint16_t, uint64_t
from libc.string cimport memcpy

from kmc._rng cimport Rng, rng_load, rng_store, rng_uniform
from kmc._selection cimport (OCCUPIED, Attempt, Groups, Selection, live, predict,
                             selection_move, selection_rebuild, selection_save_sites,
                             selection_update_sites)
from kmc._sites cimport (KMC_PREFETCH, Sites, direction_below, shift_cell, site_prefetch,
                         site_record, site_target, sites_view)

import numpy as np


cdef enum:
    RING = 16        # attempts drawn ahead; the pool entry of the newest is prefetched
    LEAD_SITE = 10   # attempts ahead: read the pool entry, prefetch the site record
    LEAD_MOVE = 5    # attempts ahead: find the target, prefetch what a hop would touch
    LEAD_ION = 2     # attempts ahead, vacancies only: prefetch the ion that would move
    REBUILD_EVERY = 4096  # hops between exact rebuilds of the weight tree (rounding drift)


cdef void _record_frame(Py_ssize_t f, const int32_t[:, ::1] ions, int32_t[:, ::1] out_sites,
                        int32_t[:, :, ::1] out_cells) noexcept nogil:
    cdef Py_ssize_t a, b
    for a in range(ions.shape[0]):
        out_sites[f, a] = ions[a, 0]
        for b in range(out_cells.shape[2]):
            out_cells[f, a, b] = ions[a, 1 + b]


cdef inline void _look_ahead(Groups* gr, const Sites* sites, Attempt* ring, Py_ssize_t a,
                             bint holes, const int32_t* occupant, const int32_t* ions,
                             Py_ssize_t ion_width) noexcept nogil:
    """The prefetch stages of the attempts after attempt a."""
    cdef Attempt* ahead
    cdef const double* rec
    cdef int32_t ion
    # stage 2 of a later attempt: its pool entry has arrived; fetch its site record
    ahead = &ring[(a + LEAD_SITE) % RING]
    if live(gr, ahead):
        ahead.site = gr.pool[ahead.pos].site
        site_prefetch(sites, ahead.site)
    # stage 3 of a nearer one: its record has arrived; fetch what its hop touches
    ahead = &ring[(a + LEAD_MOVE) % RING]
    if ahead.site >= 0 and live(gr, ahead) and gr.pool[ahead.pos].site == ahead.site:
        rec = site_record(sites, ahead.site)
        ahead.k = direction_below(rec, sites.z, ahead.x)
        ahead.moved = True
        if ahead.k >= 0:
            ahead.j = site_target(sites, ahead.site, rec, ahead.k)
            KMC_PREFETCH(&gr.site_state[ahead.j])
            if holes:
                KMC_PREFETCH(&occupant[ahead.j])
            else:
                KMC_PREFETCH(ions + gr.pool[ahead.pos].ion * ion_width)
    if holes:  # stage 4: the target's occupant has arrived; fetch that ion's state
        ahead = &ring[(a + LEAD_ION) % RING]
        if ahead.moved and ahead.k >= 0 and ahead.epoch == gr.epoch:
            ion = occupant[ahead.j]
            if ion >= 0:
                KMC_PREFETCH(ions + ion * ion_width)


# Ion–ion pair interactions (ions driven, never vacancies). With w_kl = exp(−V_kl / 2kT) per
# directed hop (1.0 on padded directions) and φ_s = Π w_sl over the occupied neighbours l of
# s (multiplied in direction order), the rate of the ion on k to its neighbour m is
#     Γ_km = c_km · φ_m · (1 / φ_k),   c_km = Γ0_km / w_km,
# Γ0 the interaction-free rate: Γ0 · exp(−ΔE_int / 2kT) with ΔE_int the change of the pair
# energy (see docs/physics.md). The record of an occupied site holds the current rates of its
# ion, 0 towards occupied neighbours (its total is the exact escape rate); after a hop s → j the fields φ of s, nn(s) and nn(j) change, so the records of the
# ions on those sites and on their neighbours are recomputed and regrouped (update_sites).

cdef inline double _field(const int32_t* nb, Py_ssize_t z, const double* weight,
                          const uint16_t* state, int32_t s) noexcept nogil:
    """φ_s of the current occupation (``state``: OCCUPIED bits), ``nb`` the neighbour table."""
    cdef const int32_t* row = nb + <Py_ssize_t>s * z
    cdef const double* w = weight + <Py_ssize_t>s * z
    cdef double phi = 1.0
    cdef Py_ssize_t k
    for k in range(z):
        if state[row[k]] & OCCUPIED:
            phi *= w[k]
    return phi


cdef inline double _rate(const double* scaled, const double* phi, const uint16_t* state,
                         Py_ssize_t z, int32_t s, Py_ssize_t k, int32_t m,
                         double inverse) noexcept nogil:
    """Rate of the ion on s along k to m: 0 if m is occupied (so that a record's total is its
    ion's escape rate: a bound counting blocked hops would waste most attempts on a crowded
    ion, whose blocked rates the repulsion raises most), else c_sk φ_m (1 / φ_s)."""
    return 0.0 if state[m] & OCCUPIED else scaled[<Py_ssize_t>s * z + k] * phi[m] * inverse


cdef inline void _rates_of(const Sites* sites, const int32_t* nb, const double* scaled,
                           const double* phi, const uint16_t* state, int32_t s) noexcept nogil:
    """Write the current rates of an ion on s into s's record."""
    cdef double* rec = <double*>site_record(sites, s)
    cdef const int32_t* row = nb + <Py_ssize_t>s * sites.z
    cdef double inverse = 1.0 / phi[s]
    cdef Py_ssize_t k
    for k in range(sites.z):
        rec[k] = _rate(scaled, phi, state, sites.z, s, k, row[k], inverse)


cdef int _interact(Groups* gr, const Sites* sites, const int32_t* nb, const int32_t* rev,
                   const double* scaled, const double* weight, double* phi,
                   const int32_t* occupant, uint8_t* mark, int32_t* centres, int32_t* list_s,
                   int32_t* list_c, int32_t s, int32_t j) noexcept nogil:
    """After a hop s → j (occupation already updated). The centres s, nn(s), nn(j) are the
    sites whose field φ changed: refresh those fields; rewrite the whole record of every ion
    on a centre (centre order); then, visiting the neighbours l of each centre a in order,
    the one rate of the ion on l towards a when l is not a centre (its φ did not change, nor
    did any other of its targets). Regroup the ions touched, in the order first touched."""
    cdef Py_ssize_t z = sites.z, n = 0, n_centres = 1 + 2 * z, i, k
    cdef const uint16_t* state = gr.site_state
    cdef int32_t a, l
    cdef double* rec
    centres[0] = s
    for k in range(z):
        centres[1 + k] = nb[<Py_ssize_t>s * z + k]
        centres[1 + z + k] = nb[<Py_ssize_t>j * z + k]
    for i in range(n_centres):
        a = centres[i]
        phi[a] = _field(nb, z, weight, state, a)
    for i in range(n_centres):
        a = centres[i]
        if (state[a] & OCCUPIED) and mark[a] == 0:
            mark[a] = 1
            _rates_of(sites, nb, scaled, phi, state, a)
            list_s[n], list_c[n] = a, occupant[a]
            n += 1
        elif mark[a] == 0:
            mark[a] = 3  # an empty centre: its neighbours' rates towards it change
    for i in range(n_centres):
        a = centres[i]
        if mark[a] == 4:
            continue  # a centre listed twice: its neighbours are done
        for k in range(z):
            l = nb[<Py_ssize_t>a * z + k]
            if not (state[l] & OCCUPIED) or mark[l] == 1 or mark[l] == 4:
                continue  # no ion, or a centre's ion (rewritten whole)
            rec = <double*>site_record(sites, l)
            rec[rev[<Py_ssize_t>a * z + k]] = _rate(scaled, phi, state, z, l,
                                                     rev[<Py_ssize_t>a * z + k], a, 1.0 / phi[l])
            if mark[l] == 0:
                mark[l] = 2
                list_s[n], list_c[n] = l, occupant[l]
                n += 1
        if mark[a] == 1:
            mark[a] = 4  # done as a centre (still whole-rewritten)
        elif mark[a] == 3:
            mark[a] = 4
    for i in range(n):
        mark[list_s[i]] = 0
    for i in range(n_centres):
        mark[centres[i]] = 0
    return selection_update_sites(gr, sites, list_s, list_c, n, False)


def interaction_records(const double[:, ::1] records, const int64_t[:, :, ::1] deltas,
                        const int32_t[:, :, ::1] hop_cells, const uint8_t[::1] occupied,
                        const double[:, ::1] scaled, const double[:, ::1] weight,
                        const int32_t[:, ::1] neighbours, double[::1] phi):
    """Fill ``phi`` with every site's field and the rate columns of ``records`` with the
    current rates of an ion on each site, for the occupation ``occupied``."""
    cdef Sites view = sites_view(records, deltas, hop_cells)
    cdef Py_ssize_t n = records.shape[0], i
    state = np.where(np.asarray(occupied) != 0, OCCUPIED, 0).astype(np.uint16)
    cdef uint16_t[::1] state_v = state
    with nogil:
        for i in range(n):
            phi[i] = _field(&neighbours[0, 0], view.z, &weight[0, 0], &state_v[0], <int32_t>i)
        for i in range(n):
            _rates_of(&view, &neighbours[0, 0], &scaled[0, 0], &phi[0], &state_v[0],
                      <int32_t>i)


def run_lattice_gas(const double[:, ::1] records, const int64_t[:, :, ::1] deltas,
                    const int32_t[:, :, ::1] hop_cells,
                    int32_t[:, ::1] ions, uint8_t[::1] occupied, int32_t[::1] occupant,
                    int32_t[::1] carriers, bint holes, int64_t max_hops,
                    const double[::1] frame_times,
                    int32_t[:, ::1] out_sites, int32_t[:, :, ::1] out_cells,
                    const double[::1] fine_times, int64_t[:, ::1] out_moves,
                    uint64_t[::1] rng_state, int64_t pool_size=0, dict counters=None,
                    const double[:, ::1] scaled=None, const double[:, ::1] weight=None,
                    const int32_t[:, ::1] neighbour_table=None, const int32_t[:, ::1] reverse=None,
                    double span=1.0, int64_t max_attempts=0, int64_t[::1] work=None):
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
    by the last frame time). ``carriers`` is updated to the carriers' final sites.
    ``pool_size`` overrides the selection's initial pool (tests) and ``counters``, if given,
    receives its repack and resize counts. ``max_attempts`` > 0 caps the attempts (null events
    included: the work of the call); ``work``, if given, has the attempts added to work[0]
    as the run goes (every 4096 attempts, for a watcher in another thread). Returns (hops,
    attempts, elapsed simulated time, frames recorded): fewer frames than asked only when
    the cap stopped the run, the state then known up to the elapsed time.

    Pair interactions: ``scaled`` (c_km = Γ0_km / w_km) and ``weight`` (w_km), both
    (n_sites, z), see the comment above _field, ``neighbour_table`` (m of each hop k → m) and
    ``reverse`` (the direction of m → k on the same bond); ions only (``holes`` false), ``occupant``
    the ion on every site (-1: none), ``span`` the factor by which a total may leave the
    range of the initial ones. The rate columns of ``records`` are then overwritten with the
    current rates of the ion on each site (of an ion put there, for the empty ones).
    """
    cdef bint interacting = scaled is not None
    cdef double* phi = NULL
    cdef uint8_t* mark = NULL
    cdef int32_t* list_s = NULL
    cdef int32_t* list_c = NULL
    cdef int update_code = 0
    cdef double[::1] phi_v
    cdef uint8_t[::1] mark_v
    cdef int32_t[::1] list_s_v, list_c_v, centres_v
    cdef int32_t* centres = NULL
    cdef const int32_t* nb = NULL
    cdef const int32_t* rev = NULL
    if interacting:
        if (holes or weight is None or neighbour_table is None or reverse is None
                or occupant.shape[0] != records.shape[0]):
            raise ValueError("interactions drive ions, with weight and a full occupant table")
        z_max = hop_cells.shape[1]
        arrays = {
            "phi": np.empty(records.shape[0]), "mark": np.zeros(records.shape[0], np.uint8),
            "list_s": np.empty((1 + 2 * z_max) * (1 + z_max), dtype=np.int32),
            "list_c": np.empty((1 + 2 * z_max) * (1 + z_max), dtype=np.int32),
            "centres": np.empty(1 + 2 * z_max, dtype=np.int32),
        }
        phi_v, mark_v = arrays["phi"], arrays["mark"]
        list_s_v, list_c_v, centres_v = arrays["list_s"], arrays["list_c"], arrays["centres"]
        phi, mark, list_s, list_c = &phi_v[0], &mark_v[0], &list_s_v[0], &list_c_v[0]
        centres, nb, rev = &centres_v[0], &neighbour_table[0, 0], &reverse[0, 0]
        interaction_records(records, deltas, hop_cells, occupied, scaled, weight, neighbour_table,
                            phi_v)
    cdef Py_ssize_t n_frames = frame_times.shape[0]
    cdef Selection selection = Selection(records, deltas, hop_cells, occupied, carriers, holes,
                                         interacting, pool_size, span)
    cdef Groups* gr = &selection.gr
    cdef Sites site_view = selection.sites  # a local copy: its fields stay in registers
    cdef Sites* sites = &site_view
    cdef Py_ssize_t z = sites.z
    cdef Rng rng = rng_load(&rng_state[0])
    cdef int64_t[::1] moves = np.zeros(out_moves.shape[1], dtype=np.int64)
    cdef int32_t* occupant_p = &occupant[0] if occupant.shape[0] else NULL
    cdef Py_ssize_t n_fine = fine_times.shape[0], n_moves = out_moves.shape[1], fm = 0
    cdef Py_ssize_t a = 0, f = 0, i
    cdef int g, h, k
    cdef int32_t ion, carrier, s, j
    cdef int64_t hops = 0, attempts = 0, pos
    cdef double t = 0.0, t_new, x, waited = 0.0, product = 1.0
    cdef const double* rec
    cdef Attempt ring[RING]
    cdef Attempt* this
    cdef bint alive, found = False
    cdef int64_t cap = max_attempts if max_attempts > 0 else INT64_MAX
    cdef int64_t* tally = &work[0] if work is not None else NULL
    cdef int64_t tally_start = tally[0] if tally != NULL else 0
    with nogil:
        for i in range(RING):
            ring[i].u = rng_uniform(&rng)
            predict(gr, &ring[i])
        while (f < n_frames) if n_frames > 0 else (hops < max_hops):
            if gr.rate_bound <= 0.0:  # no carrier can move: the state is frozen
                while fm < n_fine:
                    memcpy(&out_moves[fm, 0], &moves[0], n_moves * sizeof(int64_t))
                    fm += 1
                while f < n_frames:
                    _record_frame(f, ions, out_sites, out_cells)
                    f += 1
                break
            if attempts == cap:
                break  # out of work: the caller reads the cap from the frames recorded
            attempts += 1
            if tally != NULL and (attempts & 4095) == 0:
                tally[0] = tally_start + attempts
            product *= 1.0 - rng_uniform(&rng)  # in (0, 1]: this attempt's Exp(1) factor
            if product < 1e-280:  # keep the running product of uniforms from underflowing
                waited -= log(product) / gr.rate_bound
                product = 1.0
            _look_ahead(gr, sites, ring, a, holes, occupant_p, &ions[0, 0], ions.shape[1])
            # this attempt: redo the prediction if the map changed; then draw a new one
            this = &ring[a]
            if this.epoch != gr.epoch:
                predict(gr, this)
            alive = live(gr, this)
            g, pos, x = this.g, this.pos, this.x
            if alive:
                carrier, s = gr.pool[pos].ion, gr.pool[pos].site
                # records change without a new epoch under interactions: re-read them
                found = this.moved and this.site == s and not interacting
                k, j = this.k, this.j
            this.u = rng_uniform(&rng)
            predict(gr, this)
            if live(gr, this):
                KMC_PREFETCH(&gr.pool[this.pos])
            a = (a + 1) % RING
            if not alive:
                continue  # an empty capacity slot: a null event
            if not found:
                rec = site_record(sites, s)
                k = direction_below(rec, z, x)
                if k >= 0:
                    j = site_target(sites, s, rec, k)
            if k < 0:
                continue  # x above the carrier's total: a null event
            if ((gr.site_state[j] & OCCUPIED) != 0) != holes:
                continue  # an ion onto an ion, or a vacancy onto a vacancy: a null event
            # a hop: the state so far held from t until now
            t_new = t + waited - log(product) / gr.rate_bound
            waited, product = 0.0, 1.0
            while fm < n_fine and fine_times[fm] < t_new:
                memcpy(&out_moves[fm, 0], &moves[0], n_moves * sizeof(int64_t))
                fm += 1
            while f < n_frames and frame_times[f] < t_new:
                _record_frame(f, ions, out_sites, out_cells)
                f += 1
            if n_frames > 0 and f == n_frames:
                break
            t = t_new
            # s ends up empty and j occupied (ions), or the other way round (vacancies); s's
            # state is written, not updated, as its cache line was never fetched
            h = g if interacting else gr.site_state[j] & ~OCCUPIED
            gr.site_state[s] = g | (OCCUPIED if holes else 0)
            gr.site_state[j] = h | (0 if holes else OCCUPIED)
            if holes:  # the ion on j hops into the vacancy on s
                ion = occupant[j]
                occupant[s], occupant[j] = ion, -1
                ions[ion, 0] = s
                moves[shift_cell(sites, site_record(sites, s), k, &ions[ion, 1], -1) * z + k] -= 1
            else:
                ions[carrier, 0] = j
                moves[shift_cell(sites, site_record(sites, s), k, &ions[carrier, 1], 1) * z + k] += 1
            selection_move(gr, g, pos, h, j)
            if interacting:  # the carrier moved within its group: now regroup everything
                occupant_p[s], occupant_p[j] = -1, carrier
                update_code = _interact(gr, sites, nb, rev, &scaled[0, 0], &weight[0, 0], phi,
                                        occupant_p, mark, centres, list_s, list_c, s, j)
                if update_code != 0:
                    break
            hops += 1
            if hops % REBUILD_EVERY == 0:
                selection_rebuild(gr)
        if tally != NULL:
            tally[0] = tally_start + attempts
        selection_save_sites(gr)
        for i in range(records.shape[0]):
            occupied[i] = (gr.site_state[i] & OCCUPIED) != 0
    rng_store(&rng, &rng_state[0])
    if update_code != 0:
        raise RuntimeError("an interacting total rate left the group table (span too small)")
    if counters is not None:
        counters.update(selection.counters)
    return hops, attempts, t, f
