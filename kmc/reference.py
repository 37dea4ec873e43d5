"""Plain reference implementations of the two kMC loops, in pure Python (readable, slow).

The compiled loops (``kmc._walkers``, ``kmc._lattice_gas``) pack the site data into cache
lines, advance walkers interleaved, draw attempts ahead and prefetch what they will touch.
None of that may change the process they sample, and these functions are the process
written plainly: the tests run both from the same random state and require identical
trajectories (sites, unwrapped cells, hop counts, times). They take the compiled loops'
arguments, with plain tables instead of the packed site records: ``rates`` (n_sites, z),
``neighbours`` (n_sites, z) and ``hop_cells`` (n_basis, z, d), a site's basis being
site % n_basis. A padded direction (a site of lower coordination than z) has rate 0.0.

The random stream is the compiled one, bit for bit: :class:`Xoshiro256` is xoshiro256**
with 64-bit masks, with the same uniforms (53 bits), exponentials and jump.
"""

from __future__ import annotations

import math

import numpy as np

MASK = (1 << 64) - 1
STEPS_PER_OCTAVE = 4
RING = 16  # the lattice gas draws each attempt's uniform this many attempts ahead
BLOCK = 8  # groups per block of the selection's running sums
SLACK = 8  # with interactions, a regrouped ion keeps its group down to 2 octaves below it
_JUMP = (0x180EC6D33CFD0ABA, 0xD5A61266F0C9392C, 0xA9582618E03FC9AA, 0x39ABDC4529B1661C)


class Xoshiro256:
    """xoshiro256** (Blackman & Vigna), the compiled kernels' generator, in Python."""

    def __init__(self, state) -> None:
        self.s = [int(v) & MASK for v in state]

    @staticmethod
    def _rotl(x: int, k: int) -> int:
        return ((x << k) | (x >> (64 - k))) & MASK

    def next(self) -> int:
        s = self.s
        result = (self._rotl((s[1] * 5) & MASK, 7) * 9) & MASK
        t = (s[1] << 17) & MASK
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = self._rotl(s[3], 45)
        return result

    def uniform(self) -> float:
        """Uniform in [0, 1) with 53 random bits."""
        return (self.next() >> 11) * (1.0 / 9007199254740992.0)

    def exponential(self) -> float:
        """Exponential with unit mean."""
        return -math.log(1.0 - self.uniform())

    def jump(self) -> None:
        """Advance by 2^128 draws (the start of the next independent stream)."""
        acc = [0, 0, 0, 0]
        for word in _JUMP:
            for bit in range(64):
                if word >> bit & 1:
                    acc = [a ^ v for a, v in zip(acc, self.s, strict=True)]
                self.next()
        self.s = acc

    def state(self) -> np.ndarray:
        return np.array(self.s, dtype=np.uint64)


def total_rate(rates) -> float:
    """Sum of a site's rates in direction order (the order the compiled loops sum in)."""
    total = 0.0
    for rate in rates:
        total += float(rate)
    return total


def choose_direction(rates, x: float) -> int:
    """Direction k whose partial sums bracket x: rates[:k] sum <= x < rates[:k+1] sum; past
    the last sum (rounding), the last direction with a non-zero rate."""
    k, acc = 0, float(rates[0])
    while acc <= x and k < len(rates) - 1:
        k += 1
        acc += float(rates[k])
    while rates[k] == 0.0 and k > 0:
        k -= 1
    return k


def direction_below(rates, x: float) -> int:
    """Direction k whose partial sums bracket x, or -1 if x is not below the total."""
    acc = 0.0
    for k, rate in enumerate(rates):
        acc += float(rate)
        if x < acc:
            return k
    return -1


def run_walkers(
    rates, neighbours, hop_cells, site, cell, equilibration_time, frame_times,
    out_sites, out_cells, rng_state, max_hops: int = 0, work=None,
) -> tuple[int, int]:  # fmt: skip
    """Independent walkers, one plain Gillespie chain after another (kmc._walkers).

    Walker w draws from ``rng_state`` jumped w times: a waiting time, then per hop a
    direction and a waiting time; equilibration for ``equilibration_time``, then production
    from clock 0, frame f holding the state at frame_times[f]. Updates ``site``, ``cell``,
    ``out_sites``, ``out_cells`` and ``rng_state`` in place. ``max_hops`` > 0 caps the hops
    of all walkers together (``work[0]``, if given, gets the hops added); returns
    (production hops, frames recorded: all, or 0 when the cap stopped the run)."""
    n_basis = hop_cells.shape[0]
    stream = Xoshiro256(rng_state)
    cap = max_hops if max_hops > 0 else math.inf
    hops = done = 0

    def wait(rng: Xoshiro256, s: int) -> float:
        total = total_rate(rates[s])
        return rng.exponential() / total if total > 0.0 else math.inf

    def hop(rng: Xoshiro256, s: int, w: int) -> int:
        k = choose_direction(rates[s], rng.uniform() * total_rate(rates[s]))
        cell[w] += hop_cells[s % n_basis, k]
        return int(neighbours[s, k])

    def walk() -> bool:
        nonlocal hops, done
        for w in range(len(site)):
            rng = Xoshiro256(stream.s)
            stream.jump()
            s = int(site[w])
            t_next = wait(rng, s)
            while t_next <= equilibration_time:
                if done == cap:
                    return False
                s = hop(rng, s, w)
                done += 1
                t_next += wait(rng, s)
            t_next = wait(rng, s)  # production clock from 0 (memoryless)
            for f, frame_time in enumerate(frame_times):
                while t_next <= frame_time:
                    if done == cap:
                        return False
                    s = hop(rng, s, w)
                    hops += 1
                    done += 1
                    t_next += wait(rng, s)
                out_sites[f, w] = s
                out_cells[f, w] = cell[w]
            site[w] = s
        return True

    complete = walk()
    if work is not None:
        work[0] += done
    rng_state[:] = stream.state()
    return hops, len(frame_times) if complete else 0


class Groups:
    """The lattice gas's event selection (kmc._selection), plainly: carriers grouped by their
    site's total rate in quarter octaves, each group with a capacity (a size class) and its
    members in slot order; an attempt's uniform picks a group by capacity · bound (running
    sums of the weights within blocks of BLOCK groups and over the blocks, summed in the
    compiled order, so that they agree bit for bit; the compiled guide only speeds up the
    search), a slot and x uniform in [0, bound). No pool: where the compiled regions sit
    never changes a selection. ``slack``: see :meth:`update_sites`."""

    def __init__(
        self, totals, occupied, carriers, holes: bool, span: float = 1.0, slack: int = 0
    ) -> None:
        self.slack = slack
        positive = [t for t in totals if t > 0.0]
        e_lo = math.frexp(min(positive) / span)[1] if positive else 0
        e_hi = math.frexp(max(positive) * span)[1] if positive else 0
        octave, step = np.divmod(np.arange((e_hi - e_lo + 1) * STEPS_PER_OCTAVE), STEPS_PER_OCTAVE)
        bounds = np.ldexp(2.0 ** ((step + 1) / STEPS_PER_OCTAVE), e_lo - 1 + octave)
        self.bound = [0.0, *(float(b) for b in bounds)]
        self.e_min, self.n_groups = e_lo, len(self.bound)
        quarter = np.arange(160 - 3)
        self.class_capacity = [1, 2, 3, *((4 + quarter % 4) << (quarter // 4)).tolist()]
        self.group = [self.group_of(float(t)) for t in totals]
        self.occupied = [bool(o) for o in occupied]
        self.holes = holes
        self.carrier_site = carriers  # written for carriers of group 0, and by save_sites
        self.members: list[list[list[int]]] = [[] for _ in range(self.n_groups)]
        for a, s in enumerate(carriers):
            if self.group[s] > 0:
                self.members[self.group[s]].append([a, int(s)])
        self.size_class = [-1] * self.n_groups
        self.capacity = [0] * self.n_groups
        for g in range(1, self.n_groups):
            if self.members[g]:
                self.size_class[g] = self._class_for(len(self.members[g]) + 1)
                self.capacity[g] = self.class_capacity[self.size_class[g]]
        self.rebuild()

    def _class_for(self, members: int) -> int:
        return next(k for k, c in enumerate(self.class_capacity) if c >= members)

    def group_of(self, total: float) -> int:
        if total <= 0.0:
            return 0
        first = (math.frexp(total)[1] - self.e_min) * STEPS_PER_OCTAVE
        step = 0
        while step < STEPS_PER_OCTAVE - 1 and total > self.bound[first + step + 1]:
            step += 1
        return first + step + 1

    def rebuild(self) -> None:
        """The weights' running sums: within each block of BLOCK groups (inner) and over the
        blocks (cum, cum[-1] = R), each summed in order from 0.0."""
        n_blocks = (self.n_groups - 1 + BLOCK - 1) // BLOCK
        self.inner, self.cum = [], [0.0]
        for b in range(n_blocks):
            row = [0.0]
            for g in range(b * BLOCK + 1, (b + 1) * BLOCK + 1):
                row.append(
                    row[-1] + (self.capacity[g] * self.bound[g] if g < self.n_groups else 0.0)
                )
            self.inner.append(row)
            self.cum.append(self.cum[-1] + row[BLOCK])
        self.rate_bound = self.cum[-1]

    def select(self, u: float) -> tuple[int, int, float]:
        """(group, capacity slot, x) of an attempt's uniform; group -1: a null event."""
        r, b = u * self.rate_bound, 0
        while b < len(self.inner) and self.cum[b + 1] <= r:
            b += 1
        if b == len(self.inner):
            return -1, -1, 0.0
        r -= self.cum[b]
        k = sum(1 for w in self.inner[b][1:] if w <= r)
        g = b * BLOCK + k + 1
        if k == BLOCK or g >= self.n_groups or self.capacity[g] == 0:
            return -1, -1, 0.0
        y = (r - self.inner[b][k]) / self.bound[g]
        m = min(int(y), self.capacity[g] - 1)
        return g, m, (y - m) * self.bound[g]

    def member(self, g: int, m: int) -> tuple[int, int] | None:
        return tuple(self.members[g][m]) if m < len(self.members[g]) else None

    def _resize(self, g: int, size_class: int) -> None:
        capacity = self.class_capacity[size_class] if size_class >= 0 else 0
        self.size_class[g], self.capacity[g] = size_class, capacity
        self.rebuild()

    def _remove(self, g: int, m: int) -> None:
        members = self.members[g]
        members[m] = members[-1]
        members.pop()
        k = self.size_class[g]
        if not members:
            self._resize(g, -1)
        elif k >= 2 and len(members) < self.class_capacity[k - 2]:
            self._resize(g, k - 1)

    def _insert(self, h: int, carrier: int, site: int) -> None:
        if len(self.members[h]) == self.capacity[h]:
            self._resize(h, self.size_class[h] + 1)
        self.members[h].append([carrier, site])

    def move(self, g: int, m: int, site: int) -> None:
        """Apply a hop: the carrier in slot m of group g moves to ``site``."""
        h = self.group[site]
        if h == g:
            self.members[g][m][1] = site
            return
        carrier = self.members[g][m][0]
        self._remove(g, m)
        if h == 0:
            self.carrier_site[carrier] = site
        else:
            self._insert(h, carrier, site)

    def update_sites(self, sites, carriers, totals) -> None:
        """The totals of these sites changed: regroup them and their carriers (-1: none),
        except a site of a group g >= 1 whose total lies in (bound[g - 1 - slack], bound[g]]
        (0 below the first groups): it keeps its group."""
        for s, c, total in zip(sites, carriers, totals, strict=True):
            g = self.group[s]
            low = self.bound[g - 1 - self.slack] if g > 1 + self.slack else 0.0
            if g > 0 and low < total <= self.bound[g]:
                continue
            h = self.group_of(float(total)) if total > 0.0 else 0
            if total > 0.0 and not 0 < h < self.n_groups:
                raise ValueError("a total rate outside the group table")
            self.group[s] = h
            if c >= 0 and h != g:
                if g > 0:
                    self._remove(g, [a for a, _ in self.members[g]].index(c))
                if h > 0:
                    self._insert(h, int(c), int(s))
                else:
                    self.carrier_site[c] = s

    def groups(self) -> list[tuple[int, list[tuple[int, int]]]]:
        """[(capacity, [(carrier, site), ...]), ...] for groups 1, 2, ..., slot order."""
        return [
            (self.capacity[g], [tuple(m) for m in self.members[g]]) for g in range(1, self.n_groups)
        ]

    def save_sites(self) -> None:
        for members in self.members:
            for carrier, site in members:
                self.carrier_site[carrier] = site


def interaction_field(weight, neighbours, occupied, s: int) -> float:
    """φ_s = Π w_sl over the occupied neighbours l of s, in direction order."""
    phi = 1.0
    for k, m in enumerate(neighbours[s]):
        if occupied[m]:
            phi *= float(weight[s, k])
    return phi


def interaction_rates(scaled, neighbours, phi, occupied, s: int) -> list[float]:
    """The current rates of an ion on s: c_sk · φ_m · (1 / φ_s) towards each empty
    neighbour m, 0 towards an occupied one."""
    inverse = 1.0 / phi[s]
    return [
        0.0 if occupied[m] else float(scaled[s, k]) * phi[m] * inverse
        for k, m in enumerate(neighbours[s])
    ]


def run_lattice_gas(
    rates, neighbours, hop_cells, ions, occupied, occupant, carriers, holes, max_hops,
    frame_times, out_sites, out_cells, fine_times, out_moves, rng_state,
    scaled=None, weight=None, reverse=None, span: float = 1.0,
    max_attempts: int = 0, work=None,
) -> tuple[int, int, float, int]:  # fmt: skip
    """The lattice gas with site exclusion (kmc._lattice_gas), attempt by attempt.

    Composition–rejection with uniformization over the carriers (the ions, or with
    ``holes`` the vacancies, ``rates`` then being the rates into each site and ``occupant``
    the ion on each site): each attempt draws its clock uniform (the running product of
    1 − u gives the time to the next hop, one logarithm per hop) and uses the uniform drawn
    RING attempts before it, which picks a group, a slot and x; a hop if the slot holds a
    carrier, x lies under one of its rates and the target is free, else a null event. Same
    arguments, in-place updates, cap on the attempts (``max_attempts``, ``work``) and result
    (hops, attempts, elapsed time, frames recorded) as the compiled loop.

    Pair interactions (``scaled`` c = Γ0 / w, ``weight`` w and ``reverse``, see
    kmc.kernel.interaction_tables): ions only, ``occupant`` the ion on every site; ``rates``
    is overwritten with the current rates of an ion on each site, and after each hop s → j
    the fields of the centres s, nn(s), nn(j) are recomputed, then centre by centre the
    rates of the ion on it, or of an empty centre the rate towards it of each ion next to it
    not on a centre, and those ions are regrouped in the order first touched."""
    n_basis, z = hop_cells.shape[0], hop_cells.shape[1]
    rng = Xoshiro256(rng_state)
    interacting = scaled is not None
    if interacting:
        phi = [interaction_field(weight, neighbours, occupied, s) for s in range(len(rates))]
        for s in range(len(rates)):
            rates[s] = interaction_rates(scaled, neighbours, phi, occupied, s)
    groups = Groups(
        [total_rate(r) for r in rates], occupied, carriers, holes, span, SLACK if interacting else 0
    )
    ring = [rng.uniform() for _ in range(RING)]
    moves = np.zeros(out_moves.shape[1], dtype=np.int64)
    hops = attempts = a = f = fm = 0
    t = waited = 0.0
    product = 1.0

    def record_frame(f: int) -> None:
        out_sites[f] = ions[:, 0]
        out_cells[f] = ions[:, 1:]

    while (f < len(frame_times)) if len(frame_times) else (hops < max_hops):
        if groups.rate_bound <= 0.0:  # frozen
            out_moves[fm:] = moves
            for frame in range(f, len(frame_times)):
                record_frame(frame)
            f = len(frame_times)
            break
        if attempts == max_attempts > 0:
            break
        attempts += 1
        product *= 1.0 - rng.uniform()
        if product < 1e-280:
            waited -= math.log(product) / groups.rate_bound
            product = 1.0
        u, ring[a] = ring[a], rng.uniform()
        a = (a + 1) % RING
        g, m, x = groups.select(u)
        member = groups.member(g, m) if g > 0 else None
        if member is None:
            continue
        carrier, s = member
        k = direction_below(rates[s], x)
        if k < 0:
            continue
        j = int(neighbours[s, k])
        if groups.occupied[j] != holes:
            continue
        t_new = t + waited - math.log(product) / groups.rate_bound
        waited, product = 0.0, 1.0
        while fm < len(fine_times) and fine_times[fm] < t_new:
            out_moves[fm] = moves
            fm += 1
        while f < len(frame_times) and frame_times[f] < t_new:
            record_frame(f)
            f += 1
        if len(frame_times) and f == len(frame_times):
            break
        t = t_new
        groups.occupied[s], groups.occupied[j] = holes, not holes
        b = s % n_basis
        if holes:  # the ion on j hops into the vacancy on s
            ion = occupant[j]
            occupant[s], occupant[j] = ion, -1
            ions[ion, 0] = s
            ions[ion, 1:] -= hop_cells[b, k]
            moves[b * z + k] -= 1
        else:
            ions[carrier, 0] = j
            ions[carrier, 1:] += hop_cells[b, k]
            moves[b * z + k] += 1
        if interacting:
            groups.members[g][m][1] = j  # moves within its group, then everything regroups
            groups.group[j] = g
            occupant[s], occupant[j] = -1, carrier
            centres = list(dict.fromkeys([s, *map(int, neighbours[s]), *map(int, neighbours[j])]))
            for centre in centres:
                phi[centre] = interaction_field(weight, neighbours, groups.occupied, centre)
            touched: list[int] = []
            for centre in centres:
                if groups.occupied[centre]:
                    rates[centre] = interaction_rates(
                        scaled, neighbours, phi, groups.occupied, centre
                    )
                    touched.append(centre)
                    continue
                for k, site in enumerate(map(int, neighbours[centre])):
                    if not groups.occupied[site] or site in centres:
                        continue
                    back = reverse[centre % n_basis, k]
                    rates[site][back] = float(scaled[site, back]) * phi[centre] * (1.0 / phi[site])
                    if site not in touched:
                        touched.append(site)
            groups.update_sites(
                touched,
                [int(occupant[q]) for q in touched],
                [total_rate(rates[q]) for q in touched],
            )
        else:
            groups.move(g, m, j)
        hops += 1
    groups.save_sites()
    occupied[:] = groups.occupied
    rng_state[:] = rng.state()
    if work is not None:
        work[0] += attempts
    return hops, attempts, t, f
