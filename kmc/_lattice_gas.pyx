# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The lattice gas with site exclusion, compiled (private: call it through kmc.kernel).

One global clock; events chosen by composition–rejection with uniformization over the
carriers (kmc._selection). Uniformization makes the clock exact and cheap: the time to the
next hop is a sum of K Exp(1)/R over its K attempts, and -log(u_1 ... u_K) is exactly such a
sum, so one logarithm per hop suffices.

Memory latency: the map from an attempt's uniform to a pool slot changes rarely, so
attempts are drawn RING attempts ahead and what they will touch (pool entry, site record,
target state, the moving ion, the state words a hop writes) is prefetched in stages while
earlier attempts run, which hides the latency of a lattice larger than the caches.
Prefetches and predictions are hints: each attempt is still decided on the state at its own
turn (a prediction made under another epoch of the map is redone, a stale site is re-read),
so the trajectory is the plain algorithm's given the same stream of uniforms
(kmc.reference.run_lattice_gas, which the tests hold it to): attempt i's uniform is drawn
RING attempts ahead of it, its clock uniform at its turn. With ion–ion interactions a hop
changes the totals of the ions around both its ends (see the comment above
coupling_layout), regions change size often and every change retires the predictions in
flight, so there each attempt drawn ahead advances one step at a time (_advance),
re-predicting when the map changed, and the last step prefetches the centres its hop would
update.
"""

from libc.math cimport log
from libc.stdint cimport INT64_MAX, int32_t, int64_t, uint8_t, uint16_t, uint64_t
from libc.string cimport memcpy

from kmc._rng cimport Rng, rng_load, rng_store, rng_uniform
from kmc._selection cimport (CENTRE, LISTED, OCCUPIED, Attempt, Groups, Selection, live, predict,
                             selection_move, selection_save_sites,
                             selection_update_sites)
from kmc._sites cimport (KMC_PREFETCH, KMC_PREFETCH_WRITE, Sites, direction_below, shift_cell,
                         site_basis, site_prefetch, site_record, site_target, sites_view)

import numpy as np


cdef enum:
    RING = 16        # attempts drawn ahead; the pool entry of the newest is prefetched
    LEAD_SITE = 10   # attempts ahead: read the pool entry, prefetch the site record
    LEAD_MOVE = 5    # attempts ahead: find the target, prefetch what a hop would touch
    LEAD_ION = 2     # attempts ahead, vacancies only: prefetch the ion that would move
    N_STEPS = 4      # interacting ions: the attempts ADVANCE_AT ahead advance a step each
    SLACK = 8        # interacting ions: a regrouped ion stays in its group down to 2 octaves
                     # below its bound (most of the ~18 regroups a hop then keep their group)


cdef int ADVANCE_AT[N_STEPS]
ADVANCE_AT[:] = [12, 8, 5, 2]


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
            KMC_PREFETCH_WRITE(&gr.site_state[ahead.site])  # the hop writes it
            if holes:
                KMC_PREFETCH(&occupant[ahead.j])
                KMC_PREFETCH_WRITE(&occupant[ahead.site])
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
# energy (see docs/physics.md), and 0 towards an occupied m (so that an ion's total is its
# exact escape rate: a bound counting blocked hops would waste most attempts on a crowded
# ion, whose blocked rates the repulsion raises most).
#
# The rates are never stored: a site's record holds its c_km (static), its code and the
# total of the ion on it (the one number the event selection groups by, total_column), and
# the fields are a table of their own: φ per site, or, with one weight w on every direction,
# a byte per site counting its occupied neighbours (φ = power[n], see _count). An attempt
# whose x falls under its ion's total computes that ion's rates (from its record and the
# fields and states of its neighbours, small tables that stay in cache) to pick the
# direction. After a hop s → j the fields of the centres s, nn(s), nn(j) change, and with
# them the totals of the ions on the centres and of the ions next to an empty centre; each
# is summed anew from its rates, the same values in the same order as a stored rate table
# updated rate by rate (kmc.reference), so the trajectory is the same. A hop then reads the
# records of those ~18 ions, one cache line each on simple cubic, and writes nothing but
# their totals.


def coupling_layout(int z):
    """(width, offset of c) in doubles of a site's coupling block: its z weights w_km, then
    its z values c_km, each part padded to a whole 64-byte line."""
    cdef Py_ssize_t part = _lines(z)
    return 2 * part, part


cdef inline Py_ssize_t _lines(Py_ssize_t n) noexcept nogil:
    """n doubles rounded up to whole 64-byte lines."""
    return (n + 7) & ~7


cdef struct Couplings:
    const double* block     # (n_sites, width): w, then c at c_out (copied into the records)
    Py_ssize_t width
    Py_ssize_t c_out
    Py_ssize_t total        # the record column holding the total of the ion on the site
    bint uniform            # one weight w on every direction: fields from counts (below)
    uint8_t* count          # uniform: per site, its occupied neighbours (by direction)
    const double* power     # uniform: power[n] = w^n (multiplied up from 1.0) = φ of a
                            # site with n occupied neighbours, bit for bit
    const double* inverse   # uniform: 1.0 / power[n]
    double* field           # otherwise: per site, its φ
    int32_t* near           # room for z neighbours and z rates (scratch)
    double* rates


cdef inline const double* _block(const Couplings* cp, int32_t s) noexcept nogil:
    return cp.block + <Py_ssize_t>s * cp.width


cdef inline double _phi(const Couplings* cp, int32_t s) noexcept nogil:
    return cp.power[cp.count[s]] if cp.uniform else cp.field[s]


cdef inline double _inverse(const Couplings* cp, int32_t s) noexcept nogil:
    """1 / φ_s, rounded once."""
    return cp.inverse[cp.count[s]] if cp.uniform else 1.0 / cp.field[s]


cdef inline double _select(bint c, double a, double b) noexcept nogil:
    """c ? a : b without a branch (occupations are coin flips the predictor would miss); c is
    0 or 1."""
    cdef double pair[2]
    pair[0], pair[1] = b, a
    return pair[c]


cdef inline void _neighbours(const Sites* sites, int32_t a, int32_t* nb) noexcept nogil:
    cdef const double* rec = site_record(sites, a)
    cdef Py_ssize_t k
    for k in range(sites.z):
        nb[k] = site_target(sites, a, rec, k)


# One weight w on every direction (one pair energy on every bond, no padded directions, or w
# = 1.0 on those too): φ_s = w^n_s, n_s the occupied neighbours of s counted by direction,
# and the product of _refresh_field, w or 1.0 per direction, is power[n_s] bit for bit (a
# factor 1.0 is exact). The loop then keeps the counts, one byte per site, and reads no w.


cdef inline uint8_t _count(const Sites* sites, const uint16_t* state,
                           const int32_t* nb) noexcept nogil:
    """Occupied neighbours ``nb`` of a site (by direction), from the OCCUPIED bits."""
    cdef uint8_t n = 0
    cdef Py_ssize_t k
    for k in range(sites.z):
        n += (state[nb[k]] & OCCUPIED) != 0
    return n


cdef inline void _refresh_field(const Sites* sites, const Couplings* cp, const uint16_t* state,
                                const int32_t* nb, int32_t a) noexcept nogil:
    """φ_a (or a's count) of the current occupation, ``nb`` a's neighbours."""
    cdef const double* w
    cdef double phi = 1.0
    cdef Py_ssize_t k
    if cp.uniform:
        cp.count[a] = _count(sites, state, nb)
        return
    w = _block(cp, a)
    for k in range(sites.z):
        phi *= _select((state[nb[k]] & OCCUPIED) != 0, w[k], 1.0)
    cp.field[a] = phi


cdef inline double _rates(const Sites* sites, const Couplings* cp, const uint16_t* state,
                          const int32_t* nb, int32_t a, double* out) noexcept nogil:
    """The current rates of an ion on a into ``out``, c_ak φ_m (1 / φ_a) towards each
    neighbour m (``nb``), 0 towards an occupied one, and their total summed in direction
    order (as site_total sums a record)."""
    cdef const double* c = site_record(sites, a)
    cdef double inverse = _inverse(cp, a), total = 0.0
    cdef Py_ssize_t k
    for k in range(sites.z):
        out[k] = c[k] * _select((state[nb[k]] & OCCUPIED) != 0, 0.0, _phi(cp, nb[k])) * inverse
        total += out[k]
    return total


cdef inline int _direction(const Sites* sites, const Couplings* cp, const uint16_t* state,
                           int32_t s, double x) noexcept nogil:
    """direction_below over the current rates of the ion on s (-1 when x is not below its
    total, read from its record first); its neighbours are left in cp.near."""
    if not x < site_record(sites, s)[cp.total]:
        return -1
    _neighbours(sites, s, cp.near)
    _rates(sites, cp, state, cp.near, s, cp.rates)
    return direction_below(cp.rates, sites.z, x)


cdef inline void _advance(Groups* gr, const Sites* sites, const Couplings* cp, Attempt* at,
                          const int32_t* ions, Py_ssize_t ion_width) noexcept nogil:
    """One prefetch step of an attempt drawn ahead, ions interacting: (re)predict under the
    current map and fetch the pool entry; then the site record; then the target's state and
    record and the moving ion; then the centres of the hop. Regions change size often here,
    and a changed map would otherwise leave the attempt unfetched until its turn."""
    cdef Py_ssize_t i
    cdef int32_t c, s = at.site, j = at.j
    if at.epoch != gr.epoch:
        predict(gr, at)
        if live(gr, at):
            KMC_PREFETCH(&gr.pool[at.pos])
    elif not live(gr, at):
        return
    elif at.site < 0:
        at.site, at.step = gr.pool[at.pos].site, 1
        site_prefetch(sites, at.site)
    elif at.step == 1:
        if gr.pool[at.pos].site != at.site:
            at.site = -1
            return
        at.k = _direction(sites, cp, gr.site_state, at.site, at.x)
        at.moved, at.step = True, 2
        if at.k >= 0:
            at.j = cp.near[at.k]
            site_prefetch(sites, at.j)
            KMC_PREFETCH(ions + gr.pool[at.pos].ion * ion_width)
    elif at.step == 2 and at.k >= 0 and not (gr.site_state[j] & OCCUPIED):
        # here, not in a function of its own: GCC finds a function that only prefetches
        # free of effects and deletes the calls to it
        for i in range(2 * sites.z):  # each centre's record (and w, for its field)
            c = site_target(sites, s if i < sites.z else j,
                            site_record(sites, s if i < sites.z else j), i % sites.z)
            site_prefetch(sites, c)
            if not cp.uniform:
                KMC_PREFETCH(_block(cp, c))
        at.step = 3


cdef inline Py_ssize_t _add_centre(const Sites* sites, uint16_t* state, int32_t* centres,
                                   int32_t* nbs, Py_ssize_t n, int32_t a) noexcept nogil:
    """Append a to the centres unless it is one and decode its neighbours; for an empty
    centre, prefetch the records of the ions next to it (their totals are summed anew).
    Returns the number of centres."""
    cdef int32_t* nb = nbs + n * sites.z
    cdef Py_ssize_t k
    if state[a] & CENTRE:
        return n
    centres[n] = a
    state[a] |= CENTRE
    _neighbours(sites, a, nb)
    if not (state[a] & OCCUPIED):
        for k in range(sites.z):  # a's own record (cached) in place of a branch
            KMC_PREFETCH(site_record(sites, nb[k] if state[nb[k]] & OCCUPIED else a))
    return n + 1


cdef int _interact(Groups* gr, const Sites* sites, const Couplings* cp,
                   const int32_t* occupant, int32_t* centres, int32_t* nbs, int32_t* listed,
                   int32_t s, int32_t j) noexcept nogil:
    """After a hop s → j (occupation already updated). The centres s, nn(s), nn(j) (first
    occurrences; ``nbs`` receives their neighbours) are the sites whose field φ changed:
    refresh those; then list, centre by centre, the ion on it, or, for an empty centre, each
    ion next to it that is not on a centre; sum the totals of the listed ions anew and
    regroup them, in the order listed."""
    cdef Py_ssize_t z = sites.z, n = 0, n_centres, i, k, of_j = 0
    cdef uint16_t* state = gr.site_state
    cdef const int32_t* nb
    cdef int32_t a, l
    n_centres = _add_centre(sites, state, centres, nbs, 0, s)
    for k in range(z):
        if nbs[k] == j and not (state[j] & CENTRE):
            of_j = n_centres
        n_centres = _add_centre(sites, state, centres, nbs, n_centres, nbs[k])
    for k in range(z):
        n_centres = _add_centre(sites, state, centres, nbs, n_centres, nbs[of_j * z + k])
    for i in range(n_centres):
        _refresh_field(sites, cp, state, nbs + i * z, centres[i])
    for i in range(n_centres):
        a, nb = centres[i], nbs + i * z
        if state[a] & OCCUPIED:
            (<double*>site_record(sites, a))[cp.total] = _rates(sites, cp, state, nb, a,
                                                                 cp.rates)
            listed[n] = a
            n += 1
            continue
        for k in range(z):
            l = nb[k]
            if (state[l] & (OCCUPIED | CENTRE | LISTED)) == OCCUPIED:
                state[l] |= LISTED
                listed[n] = l
                n += 1
    for i in range(n):
        l = listed[i]
        if state[l] & LISTED:  # an ion next to an empty centre
            state[l] &= ~LISTED
            _neighbours(sites, l, cp.near)
            (<double*>site_record(sites, l))[cp.total] = _rates(sites, cp, state, cp.near, l,
                                                                 cp.rates)
    for i in range(n_centres):
        state[centres[i]] &= ~CENTRE
    return selection_update_sites(gr, sites, listed, n, occupant, False)


cdef bint _one_weight(const double* block, Py_ssize_t n_sites, Py_ssize_t width,
                      Py_ssize_t z) noexcept nogil:
    """Every w_km of the coupling blocks is the same number."""
    cdef Py_ssize_t i, k
    for i in range(n_sites):
        for k in range(z):
            if block[i * width + k] != block[0]:
                return False
    return True


cdef void _interaction_start(const Sites* sites, const Couplings* cp, const uint16_t* state,
                             Py_ssize_t n_sites) noexcept nogil:
    """Put each site's c in its record's rate columns, refresh every field, and write the
    total of an ion on each site (the group table's range is built from all of them)."""
    cdef Py_ssize_t i
    cdef double* rec
    for i in range(n_sites):
        rec = <double*>site_record(sites, <int32_t>i)
        memcpy(rec, _block(cp, <int32_t>i) + cp.c_out, sites.z * sizeof(double))
        _neighbours(sites, <int32_t>i, cp.near)
        _refresh_field(sites, cp, state, cp.near, <int32_t>i)
    for i in range(n_sites):
        _neighbours(sites, <int32_t>i, cp.near)
        rec = <double*>site_record(sites, <int32_t>i)
        rec[cp.total] = _rates(sites, cp, state, cp.near, <int32_t>i, cp.rates)


cdef void _interaction_end(const Sites* sites, const Couplings* cp, const uint16_t* state,
                           Py_ssize_t n_sites) noexcept nogil:
    """Leave in every record the current rates of an ion on its site and, after the code,
    the site's field (see run_lattice_gas)."""
    cdef Py_ssize_t i
    cdef double* rec
    for i in range(n_sites):
        _neighbours(sites, <int32_t>i, cp.near)
        _rates(sites, cp, state, cp.near, <int32_t>i, cp.rates)
        rec = <double*>site_record(sites, <int32_t>i)
        memcpy(rec, cp.rates, sites.z * sizeof(double))
        rec[cp.total] = _phi(cp, <int32_t>i)


def run_lattice_gas(const double[:, ::1] records, const int64_t[:, :, ::1] deltas,
                    const int32_t[:, :, ::1] hop_cells,
                    int32_t[:, ::1] ions, uint8_t[::1] occupied, int32_t[::1] occupant,
                    int32_t[::1] carriers, bint holes, int64_t max_hops,
                    const double[::1] frame_times,
                    int32_t[:, ::1] out_sites, int32_t[:, :, ::1] out_cells,
                    const double[::1] fine_times, int64_t[:, ::1] out_moves,
                    uint64_t[::1] rng_state, int64_t pool_size=0, dict counters=None,
                    const double[:, ::1] couplings=None, double span=1.0,
                    int64_t max_attempts=0, int64_t[::1] work=None, bint one_weight=True):
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

    Pair interactions: ``couplings`` (n_sites, coupling_layout(z)[0]), each site's w_km
    and c_km (see the comment above coupling_layout); ions only (``holes`` false),
    ``records`` with room for one double after the code (_sites.record_width(z, 1)),
    ``occupant`` the ion on every site (-1: none), ``span`` the factor by which a total may
    leave the range of the initial ones. The records' rates are not read: on return their
    rate columns hold the current rates of the ion on each site (of an ion put there, for
    the empty ones) and the column after the code the site's field. When every w is the same
    number (one pair energy on every bond) the loop keeps counts of occupied neighbours in
    place of the fields (the comment above _count): the same trajectory, cheaper;
    ``one_weight`` false keeps the general path (tests).
    """
    cdef bint interacting = couplings is not None
    cdef Couplings cp
    cdef int32_t* listed = NULL
    cdef int32_t* centres = NULL
    cdef int32_t* nbs = NULL
    cdef int update_code = 0
    cdef int32_t[::1] listed_v, centres_v, nbs_v, near_v
    cdef uint16_t[::1] state_v
    cdef uint8_t[::1] count_v
    cdef double[::1] power_v, inverse_v, field_v, rates_v
    cdef Py_ssize_t n_on
    cdef Sites start_view
    cp.uniform, cp.total = False, -1
    if interacting:
        z_max = hop_cells.shape[1]
        width, c_out = coupling_layout(z_max)
        if (holes or occupant.shape[0] != records.shape[0] or records.shape[1] < z_max + 2
                or couplings.shape[0] != records.shape[0] or couplings.shape[1] != width):
            raise ValueError("interactions drive ions, with room for a total in the records, "
                             "couplings and a full occupant table")
        arrays = {
            "listed": np.empty((1 + 2 * z_max) * (1 + z_max), dtype=np.int32),
            "centres": np.empty(1 + 2 * z_max, dtype=np.int32),
            "nbs": np.empty((1 + 2 * z_max) * z_max, dtype=np.int32),
            "near": np.empty(z_max, dtype=np.int32),
            "rates": np.empty(z_max),
            "state": np.where(np.asarray(occupied) != 0, OCCUPIED, 0).astype(np.uint16),
        }
        listed_v, centres_v, nbs_v = arrays["listed"], arrays["centres"], arrays["nbs"]
        near_v, rates_v, state_v = arrays["near"], arrays["rates"], arrays["state"]
        listed, centres, nbs = &listed_v[0], &centres_v[0], &nbs_v[0]
        cp.block, cp.width, cp.c_out = &couplings[0, 0], width, c_out
        cp.total, cp.near, cp.rates = z_max + 1, &near_v[0], &rates_v[0]
        cp.uniform = one_weight and _one_weight(cp.block, records.shape[0], width, z_max)
        if cp.uniform:
            arrays["count"] = np.zeros(records.shape[0], dtype=np.uint8)
            arrays["power"] = np.empty(z_max + 1)
            arrays["inverse"] = np.empty(z_max + 1)
            count_v, power_v, inverse_v = arrays["count"], arrays["power"], arrays["inverse"]
            power_v[0] = 1.0
            for n_on in range(1, z_max + 1):
                power_v[n_on] = power_v[n_on - 1] * cp.block[0]
            for n_on in range(z_max + 1):
                inverse_v[n_on] = 1.0 / power_v[n_on]
            cp.count, cp.power, cp.inverse = &count_v[0], &power_v[0], &inverse_v[0]
        else:
            arrays["field"] = np.empty(records.shape[0])
            field_v = arrays["field"]
            cp.field = &field_v[0]
        start_view = sites_view(records, deltas, hop_cells)
        with nogil:
            _interaction_start(&start_view, &cp, &state_v[0], records.shape[0])
    cdef Py_ssize_t n_frames = frame_times.shape[0]
    cdef Selection selection = Selection(records, deltas, hop_cells, occupied, carriers, holes,
                                         interacting, pool_size, span,
                                         SLACK if interacting else 0, cp.total)
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
            if interacting:
                for i in range(N_STEPS):
                    _advance(gr, sites, &cp, &ring[(a + ADVANCE_AT[i]) % RING], &ions[0, 0],
                             ions.shape[1])
            else:
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
                if interacting:
                    k = _direction(sites, &cp, gr.site_state, s, x)
                    if k >= 0:
                        j = cp.near[k]
                else:
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
                update_code = _interact(gr, sites, &cp, occupant_p, centres, nbs, listed, s, j)
                if update_code != 0:
                    break
            hops += 1
        if tally != NULL:
            tally[0] = tally_start + attempts
        selection_save_sites(gr)
        for i in range(records.shape[0]):
            occupied[i] = (gr.site_state[i] & OCCUPIED) != 0
        if interacting:
            _interaction_end(sites, &cp, gr.site_state, records.shape[0])
    rng_store(&rng, &rng_state[0])
    if update_code != 0:
        raise RuntimeError("an interacting total rate left the group table (span too small)")
    if counters is not None:
        counters.update(selection.counters)
    return hops, attempts, t, f
