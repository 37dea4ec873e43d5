# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Independent walkers (no exclusion), compiled (private: call them through kmc.kernel).

Walkers do not interact, so each runs its own exact Gillespie chain on its own clock and
with its own random stream (walker w draws from the generator jumped w times, 2^128 draws
apart): no event queue is needed, and a walker's trajectory does not depend on the others or
on the order in which they are advanced. A batch of walkers is advanced round robin, one hop
each per turn, and each walker's next site record is prefetched while the others hop.
kmc.reference.run_walkers is the same process written plainly, one walker after another.
"""

from libc.math cimport INFINITY
from libc.stdint cimport INT64_MAX, int32_t, int64_t, uint64_t

from kmc._rng cimport Rng, rng_exponential, rng_jump, rng_load, rng_store, rng_uniform
from kmc._sites cimport (Sites, choose_direction, shift_cell, site_prefetch, site_record,
                         site_target, site_total, sites_view)


cdef enum:
    BATCH = 16  # independent walkers advanced together, interleaved


cdef inline double _waiting_time(Rng* rng, double total) noexcept nogil:
    if total > 0.0:
        return rng_exponential(rng) / total
    return INFINITY  # a site no hop leaves (every rate 0): the walker stays for good


cdef inline int32_t _hop(const Sites* sites, Rng* rng, int32_t s, int32_t* cell) noexcept nogil:
    """One hop from s (total rate > 0): a direction by its rate, the cell shifted exactly."""
    cdef const double* rec = site_record(sites, s)
    cdef int k = choose_direction(rec, sites.z, rng_uniform(rng) * site_total(sites, rec))
    shift_cell(sites, rec, k, cell, 1)
    return site_target(sites, s, rec, k)


def run_walkers(const double[:, ::1] records, const int64_t[:, :, ::1] deltas,
                const int32_t[:, :, ::1] hop_cells,
                int32_t[::1] site, int32_t[:, ::1] cell, double equilibration_time,
                const double[::1] frame_times, int32_t[:, ::1] out_sites,
                int32_t[:, :, ::1] out_cells, uint64_t[::1] rng_state, int64_t max_hops=0,
                int64_t[::1] work=None):
    """Advance independent walkers from (site, unwrapped cell) and record the frames.

    Each walker is first run for ``equilibration_time`` (a time, not a number of hops:
    stopping after a fixed number of hops would leave walkers distributed like the jump
    chain, weighted to fast sites); its production clock then starts at 0 (exact: waiting
    times are memoryless), and frame f holds its state at frame_times[f]. Walker w draws from
    ``rng_state`` jumped w times; ``rng_state`` is left jumped once per walker (the next
    unused stream). ``max_hops`` > 0 caps the hops of all walkers together, equilibration
    included (the work of the call); ``work``, if given, has the hops added to work[0] as the
    run goes. Returns (production hops, frames recorded): every frame, or none when the cap
    stopped the run (the walkers after the one it stopped were never run).
    """
    cdef Py_ssize_t n = site.shape[0], n_frames = frame_times.shape[0]
    cdef Sites sites = sites_view(records, deltas, hop_cells)
    cdef Py_ssize_t dim = sites.dim
    cdef Rng stream = rng_load(&rng_state[0])
    cdef int64_t hops = 0, done = 0  # production hops; all hops
    cdef int64_t cap = max_hops if max_hops > 0 else INT64_MAX
    cdef int64_t* tally = &work[0] if work is not None else NULL
    cdef int64_t tally_start = tally[0] if tally != NULL else 0
    cdef double t_next
    cdef Py_ssize_t first, w, b, a, size, active, f
    cdef int32_t s
    cdef Rng rng[BATCH]
    cdef int32_t batch_site[BATCH]
    cdef double batch_next[BATCH]
    cdef Py_ssize_t batch_frame[BATCH]
    with nogil:
        first = 0
        while first < n:
            size = n - first if n - first < BATCH else BATCH
            for b in range(size):  # equilibration, to a common time, one walker at a time
                w = first + b
                rng[b] = stream
                rng_jump(&stream)
                s = site[w]
                t_next = _waiting_time(&rng[b], site_total(&sites, site_record(&sites, s)))
                while t_next <= equilibration_time and done < cap:
                    s = _hop(&sites, &rng[b], s, &cell[w, 0])
                    done += 1
                    if tally != NULL and (done & 4095) == 0:
                        tally[0] = tally_start + done
                    t_next += _waiting_time(&rng[b], site_total(&sites, site_record(&sites, s)))
                batch_site[b] = s
                batch_next[b] = _waiting_time(&rng[b], site_total(&sites, site_record(&sites, s)))
                batch_frame[b] = 0
            active = size
            while active > 0 and done < cap:
                for b in range(size):
                    f = batch_frame[b]
                    if f == n_frames:
                        continue
                    w = first + b
                    s = batch_site[b]
                    # record every frame this walker passes before its next hop
                    while f < n_frames and batch_next[b] > frame_times[f]:
                        out_sites[f, w] = s
                        for a in range(dim):
                            out_cells[f, w, a] = cell[w, a]
                        f += 1
                    batch_frame[b] = f
                    if f == n_frames:
                        active -= 1
                        site[w] = s
                        continue
                    if done == cap:
                        break  # out of work
                    s = _hop(&sites, &rng[b], s, &cell[w, 0])
                    site_prefetch(&sites, s)
                    batch_site[b] = s
                    hops += 1
                    done += 1
                if tally != NULL:
                    tally[0] = tally_start + done
                # the waiting times need the new records, fetched while the batch hopped
                for b in range(size):
                    if batch_frame[b] < n_frames:
                        batch_next[b] += _waiting_time(
                            &rng[b], site_total(&sites, site_record(&sites, batch_site[b])))
            if done >= cap and active > 0:
                break
            first += size
        if tally != NULL:
            tally[0] = tally_start + done
    rng_store(&stream, &rng_state[0])
    return hops, (n_frames if first >= n else 0)
