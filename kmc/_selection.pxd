# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# Event selection of the lattice gas: composition–rejection over carriers (the ions, or the
# vacancies of a more than half-full lattice), with uniformization. The interface of
# _selection.pyx:
#
#   Selection(...)              build the groups from the site records and the carriers
#   predict(gr, attempt)        map an attempt's uniform to (group, capacity slot, x)  [inline]
#   live(gr, attempt)           the slot holds a carrier under that map                 [inline]
#   selection_move(gr, ...)     apply a hop: move the carrier between groups    [inline fast path]
#   selection_update_sites(...) the totals of these sites changed: regroup them (and their carriers)
#
# Carriers are grouped by their site's total rate in quarter octaves: group g >= 1 holds
# totals in (bound[g] / 2^(1/4), bound[g]]; group 0 holds carriers that cannot move and is
# not stored. Each group owns a region of the member pool with room for some members (its
# capacity, one of the size classes 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, ...: four per octave).
# An attempt picks a group with probability proportional to capacity · bound (running sums
# of the weights within blocks of BLOCK groups and over the blocks: a guide table finds the
# block in a step or two and a branch-free count the group in it; a change of one weight
# re-sums its block and the block sums from it on, exactly, so R is always the exact sum
# and the sums never drift), a capacity slot uniformly, and x uniform in [0, bound): it is
# a hop if the slot holds a carrier, x falls under the partial sum of one of its site's
# rates (that direction) and the target is free; otherwise a null event. That is
# uniformization of the exact process with the rate R = sum of capacity · bound. A carrier
# regrouped because its total changed (update_sites) may keep its group while its total
# stays under the bound and at most ``slack`` groups below the group's own range: a looser
# bound costs null events, a move costs cache misses.
#
# Why capacities and not member counts: the map from an attempt's uniform to a slot then
# depends only on the capacities, which change rarely (a region grows by a size class when
# full and shrinks when its members would fit two classes down), not on every hop, so the
# loop can draw attempts ahead and prefetch what they will touch. ``epoch`` counts the
# changes of the map (and of the site records); a prediction made under another epoch is
# redone. The capacities and the order of the members in each group follow from the hops
# alone, never from where the regions sit in the pool: a full pool is repacked (enlarged if
# need be) keeping both, so kmc.reference reproduces every selection without modelling it.
from libc.stdint cimport int32_t, int64_t, uint16_t, uint64_t
from libc.string cimport memcpy
from libc.math cimport frexp

from kmc._sites cimport Sites, site_record, site_total


cdef enum:
    STEPS_PER_OCTAVE = 4
    N_SIZE_CLASSES = 160  # 1, 2, 3, then 4 per octave from 4 up to 7 · 2^38
    OCCUPIED = 0x8000     # bit of a site's state; the low 15 bits hold the site's group
    BLOCK = 8             # groups per block of the weights' running sums
    CENTRE = 0x4000       # marks the interacting loop sets while it updates a site's
    LISTED = 0x2000       # neighbourhood (then every group is below LISTED)


cdef struct Member:
    int32_t ion   # carrier index
    int32_t site


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
    double* inner           # (n_blocks, BLOCK + 1): inner[b, k] = the weights capacity · bound
                            # of block b's first k groups (groups 1 + BLOCK b, ...) summed in
                            # that order; inner[b, BLOCK] = the block's weight
    double* cum             # cum[b] = the weights of blocks 0 .. b - 1 summed in order
                            # (cum[n_blocks] = R), cum[n_blocks + 1] = +inf
    int n_blocks
    int32_t* guide          # guide[i] ~ the block of r = (i / n_guide) R: where the search for a
                            # uniform in [i / n_guide, (i + 1) / n_guide) starts (a hint: the
                            # search finds the one block whatever the start)
    int64_t n_guide         # a power of two >= n_blocks
    int stale               # weight changes since the guide was built
    uint16_t* site_state    # per site: its group | OCCUPIED, so a hop's target costs one access
    int32_t* carrier_site   # per carrier: its site (written for stored carriers on save)
    int32_t* slot           # per site: the index of its carrier in its group's region (so
                            # that moving a region moves no slot; by site, so that a site's
                            # neighbourhood finds its carriers without looking them up), -1
                            # if none is stored there; NULL: not tracked
    int n_groups
    int e_min
    int slack               # update_sites keeps a carrier in group g while its total lies in
                            # (bound[g - 1 - slack], bound[g]] (0: its own group's range)
    int total_column        # >= 0: a site's total is that column of its record (kept there by
                            # the loop), not the sum of its rate columns
    double rate_bound       # R = sum over groups of capacity · bound
    int64_t epoch           # changes of the map from a uniform to a pool slot
    int64_t repacks         # full repacks of the pool (counted for the tests)
    int64_t resizes         # regions moved to another size class


cdef struct Attempt:
    double u        # the uniform that decides the attempt
    double x        # uniform in [0, bound[g]): picks the direction, or rejects
    int64_t epoch   # the map the prediction below was made with
    int64_t m       # capacity slot in group g
    int64_t pos     # pool index of that slot
    int32_t g       # group, or -1 when rounding pushed u · R past the last group
    int32_t site    # the slot's site as read some attempts ahead, or -1
    int32_t k       # direction found some attempts ahead (-1: x above the total)
    int32_t j       # its target site
    bint moved      # k and j were found
    int32_t step    # prefetch steps done, while site >= 0 (the interacting look-ahead)


cdef class Selection:
    cdef Groups gr
    cdef Sites sites
    cdef object _arrays  # the numpy arrays that gr and sites point into


cdef void selection_resize(Groups* gr, int g, int size_class) noexcept nogil
cdef int selection_update_sites(Groups* gr, const Sites* sites, const int32_t* site_list,
                                Py_ssize_t n, const int32_t* occupant,
                                bint bump_epoch=*) noexcept nogil
cdef void selection_save_sites(const Groups* gr) noexcept nogil


cdef inline double carrier_total(const Groups* gr, const Sites* sites, int32_t s) noexcept nogil:
    """The total rate that groups site s: its record's rates summed in order, or the column the
    loop keeps it in (total_column)."""
    cdef const double* record = site_record(sites, s)
    if gr.total_column >= 0:
        return record[gr.total_column]
    return site_total(sites, record)


cdef inline int exponent_of(double total) noexcept nogil:
    """frexp's exponent of a positive total (total = mantissa 2^e, mantissa in [1/2, 1))."""
    cdef int e
    cdef uint64_t bits
    memcpy(&bits, &total, 8)
    if bits >> 52 == 0:  # subnormal
        frexp(total, &e)
        return e
    return <int>(bits >> 52) - 1022


cdef inline int group_of(const Groups* gr, double total) noexcept nogil:
    """The group of a site with this total rate (0: it cannot move). The step within the
    octave counts the bounds below the total, without a branch (the bounds rise)."""
    cdef int first, g, step
    if total <= 0.0:
        return 0
    first = (exponent_of(total) - gr.e_min) * STEPS_PER_OCTAVE
    g = first + 1
    for step in range(1, STEPS_PER_OCTAVE):
        g += total > gr.bound[first + step]
    return g


cdef inline void predict(const Groups* gr, Attempt* at) noexcept nogil:
    """Group, capacity slot and pool index that the attempt's uniform points at under the
    current map; x is then uniform in [0, bound[g]): one uniform serves all of them. With
    r = u R: the one block b with cum[b] <= r < cum[b + 1], searched from the guide (a step
    or two: cum[0] = 0 and cum[n_blocks + 1] = +inf end the search either way), then the
    one group of the block whose interval of inner[b] holds r - cum[b], counted without a
    branch."""
    cdef double r = at.u * gr.rate_bound, y
    cdef int b = gr.guide[<int64_t>(at.u * gr.n_guide)], k = 0, i, g
    cdef const double* row
    at.epoch, at.site, at.moved, at.g = gr.epoch, -1, False, -1
    while gr.cum[b] > r:
        b -= 1
    while gr.cum[b + 1] <= r:
        b += 1
    if b >= gr.n_blocks:
        return  # rounding pushed r past the last weight: a null event
    r -= gr.cum[b]
    row = gr.inner + b * (BLOCK + 1)
    for i in range(1, BLOCK + 1):
        k += row[i] <= r
    g = b * BLOCK + k + 1
    if k == BLOCK or g >= gr.n_groups or gr.capacity[g] == 0:
        return  # rounding again
    y = (r - row[k]) / gr.bound[g]
    at.m = <int64_t>y
    if at.m >= gr.capacity[g]:  # rounding
        at.m = gr.capacity[g] - 1
    at.x = (y - at.m) * gr.bound[g]
    at.g = g
    at.pos = gr.start[g] + at.m


cdef inline bint live(const Groups* gr, const Attempt* at) noexcept nogil:
    """The attempt's slot holds a carrier under the prediction's map."""
    return at.epoch == gr.epoch and at.g > 0 and at.m < gr.count[at.g]


cdef inline void selection_remove(Groups* gr, int g, int64_t pos) noexcept nogil:
    """Take the member at pool[pos] out of group g (the group's last member fills the gap);
    shrink the region by a size class when its members would fit two classes down."""
    cdef int64_t last = gr.start[g] + gr.count[g] - 1
    cdef int k = gr.size_class[g]
    if gr.slot != NULL:
        gr.slot[gr.pool[pos].site] = -1
        if pos != last:
            gr.slot[gr.pool[last].site] = <int32_t>(pos - gr.start[g])
    gr.pool[pos] = gr.pool[last]
    gr.count[g] -= 1
    if gr.count[g] == 0:
        selection_resize(gr, g, -1)
    elif k >= 2 and gr.count[g] < gr.class_capacity[k - 2]:
        selection_resize(gr, g, k - 1)


cdef inline void selection_insert(Groups* gr, int h, int32_t carrier,
                                  int32_t site) noexcept nogil:
    """Add a carrier on ``site`` to group h, growing its region by a size class when full."""
    cdef int64_t at
    if gr.count[h] == gr.capacity[h]:
        selection_resize(gr, h, gr.size_class[h] + 1)
    at = gr.start[h] + gr.count[h]
    gr.pool[at].ion = carrier
    gr.pool[at].site = site
    if gr.slot != NULL:
        gr.slot[site] = <int32_t>gr.count[h]
    gr.count[h] += 1


cdef inline void selection_move(Groups* gr, int g, int64_t pos, int h,
                                int32_t site) noexcept nogil:
    """Apply a hop: the carrier at pool[pos] (group g) moves to ``site``, of group h."""
    cdef int32_t carrier
    if h == g:  # the common case on a mildly disordered landscape: no change of the map
        if gr.slot != NULL:
            gr.slot[site], gr.slot[gr.pool[pos].site] = gr.slot[gr.pool[pos].site], -1
        gr.pool[pos].site = site
        return
    carrier = gr.pool[pos].ion
    selection_remove(gr, g, pos)
    if h == 0:  # it can never move again: not stored
        gr.carrier_site[carrier] = site
    else:
        selection_insert(gr, h, carrier, site)
