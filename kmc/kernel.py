"""Run kinetic Monte Carlo on a landscape and return the recorded trajectory.

This is the checked Python face of the compiled kernel: it validates arguments, places the
ions, allocates every array the kernel writes into, and turns the kernel's exact (site,
unwrapped cell) state into Cartesian positions. The compiled units: ``kmc._sites`` (the site
records), ``kmc._walkers`` (independent walkers), ``kmc._lattice_gas`` (site exclusion) with
its event selection ``kmc._selection``; ``kmc.reference`` is the same two processes written
plainly, which the tests hold the compiled loops to.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kmc import _lattice_gas, _sites, _walkers
from kmc.landscape import Landscape
from kmc.lattice import Lattice
from kmc.units import BOLTZMANN_EV

_RECORD_BLOCK = 1 << 16  # sites per block when building the kernel's site records
#: Work budget of a kernel phase: at most this many times its planned hops, in attempts.
DEFAULT_WORK_BUDGET = 100.0
#: Samples of the lattice gas's summed displacement per frame interval (for D_σ).
COLLECTIVE_PER_FRAME = 16


@dataclass(frozen=True, eq=False)
class Trajectory:
    """Frames of a production run.

    Attributes
    ----------
    times : (F,) float64
        Frame times in s, uniformly spaced from 0.
    positions : (F, N, d) float64
        Unwrapped ion positions in Å (exact: lattice site plus periodic images).
    sites : (F, N) int32
        Lattice site of each ion in each frame.
    box : (d,) float64
        Periodic box edges in Å.
    volume : float
        Volume in Å³ (see :attr:`kmc.lattice.Lattice.volume`).
    temperature : float
        K.
    hop_distance : float
        Å.
    hops : int
        Successful hops in the production run.
    kernel_seconds : float
        Wall time spent in the compiled kernel (equilibration and production).
    collective_times : (M,) float64 or None
        For the lattice gas: ``COLLECTIVE_PER_FRAME`` times finer than ``times``, same span.
    collective : (M, d) float64 or None
        Σ_i (r_i(t) − r_i(0)) in Å at ``collective_times`` (exact, from the hops counted per
        basis site and direction); None for independent walkers.
    work : int
        Attempts the kernel made in all phases (hops and, for the lattice gas, null events).
    planned_work : int
        Hops planned: ions × (equilibration + production hops per ion).
    budget_exceeded : str
        Empty, or why the run was stopped at its work budget (then the frames end early:
        the state is known only up to the last of them; possibly none at all).
    """

    times: np.ndarray
    positions: np.ndarray
    sites: np.ndarray
    box: np.ndarray
    volume: float
    temperature: float
    hop_distance: float
    hops: int
    kernel_seconds: float
    collective_times: np.ndarray | None = None
    collective: np.ndarray | None = None
    work: int = 0
    planned_work: int = 0
    budget_exceeded: str = ""

    @property
    def n_ions(self) -> int:
        return self.positions.shape[1]

    @property
    def dim(self) -> int:
        return self.positions.shape[2]


def ion_count(
    landscape: Landscape, *, concentration: float | None, count: int | None, exclusion: bool
) -> int:
    """Number of ions for a concentration (fraction of free sites) or an exact count.

    Independent walkers (no exclusion) may outnumber the sites."""
    n_free = len(landscape.free_sites)
    if (concentration is None) == (count is None):
        raise ValueError("give exactly one of concentration and count")
    if count is not None:
        if not 1 <= count <= (n_free if exclusion else np.iinfo(np.int32).max):
            raise ValueError(f"count must be between 1 and the {n_free} free sites, not {count}")
        return int(count)
    if not 0 < concentration < 1:
        raise ValueError(f"concentration must be in (0, 1), not {concentration}")
    return max(1, round(concentration * n_free))


def mean_hop_rate(
    landscape: Landscape, escape: np.ndarray, temperature: float, filled: float
) -> float:
    """Equilibrium hop rate per ion (Hz) of the dilute limit, Σ_i w_i Γ_i / Σ_i w_i with
    Boltzmann weights w_i and escape rates Γ_i, times the free fraction (1 − filled) of
    target sites. Exact for independent walkers and for the uniform lattice gas; sets the
    production run length."""
    weights = landscape.boltzmann_weights(temperature)
    return float(weights @ escape / weights.sum()) * (1.0 - filled)


def _neighbour_deltas(lattice: Lattice) -> np.ndarray:
    """(n_basis, z, 2^bits) table of the values neighbour index minus site index takes for
    each basis site and direction (at most 3^d: no wrap, or a wrap either way along each
    axis), padded with zeros, for the kernel's neighbour codes (see _sites.pack_sites)."""
    z, n_basis = lattice.coordination, lattice.n_basis
    seen: list[list[set[int]]] = [[set() for _ in range(z)] for _ in range(n_basis)]
    for start in range(0, lattice.n_sites, _RECORD_BLOCK):
        sites = np.arange(start, min(start + _RECORD_BLOCK, lattice.n_sites))
        deltas = lattice.neighbours[sites].astype(np.int64) - sites[:, None]
        for b in range(n_basis):
            of_basis = deltas[(b - start) % n_basis :: n_basis]
            for k in range(z):
                seen[b][k].update(np.unique(of_basis[:, k]).tolist())
    widest = max(len(values) for row in seen for values in row)
    bits = max(1, (widest - 1).bit_length())
    if bits * z + (n_basis - 1).bit_length() >= 64:
        raise ValueError(f"{lattice.kind}: neighbour codes do not fit in 64 bits")
    table = np.zeros((n_basis, z, 1 << bits), dtype=np.int64)
    for b, k in np.ndindex(n_basis, z):
        values = sorted(seen[b][k])
        table[b, k, : len(values)] = values
    return table


def _site_records(
    landscape: Landscape,
    temperature: float,
    incoming: bool,
    field: np.ndarray | None = None,
    extra: int = 0,
):
    """The kernel's site records for a landscape at a temperature (rates out of each site,
    or into it, biased by an applied ``field`` if given), their neighbour table and the
    escape rate of every site; see :func:`pack_records`."""

    def rates(block: slice) -> tuple[np.ndarray, np.ndarray]:
        out = landscape.rates(temperature, block, field=field)
        if incoming:
            return landscape.rates(temperature, block, incoming=True, field=field), out.sum(1)
        return out, out.sum(axis=1)

    return pack_records(landscape.lattice, rates, extra)


def pack_records(
    lattice: Lattice, rates: Callable[[slice], tuple[np.ndarray, np.ndarray]], extra: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Site records (64-byte aligned, so that no record spans two cache lines), their
    neighbour table (see :func:`_neighbour_deltas`) and one number per site, from
    ``rates(block)`` = ((sites of the block, z) rates to pack, (sites,) numbers), built a
    block of sites at a time so that no full rate table is ever held beside the records.

    Works on any lattice whose neighbour table is (n_sites, z): a site of lower coordination
    is padded to z with directions of rate exactly 0.0 (neighbour the site itself, hop cell
    0), which neither loop ever chooses. ``extra``: doubles of room per record for the loop
    (1 for the interacting gas, which keeps there the total of an ion on the site)."""
    deltas = _neighbour_deltas(lattice)
    width = _sites.record_width(lattice.coordination, extra)
    buffer = np.empty(lattice.n_sites * width + 8)
    skip = (-buffer.ctypes.data % 64) // buffer.itemsize
    records = buffer[skip : skip + lattice.n_sites * width].reshape(lattice.n_sites, width)
    escape = np.empty(lattice.n_sites)
    for start in range(0, lattice.n_sites, _RECORD_BLOCK):
        block = slice(start, start + _RECORD_BLOCK)
        packed, escape[block] = rates(block)
        _sites.pack_sites(
            np.ascontiguousarray(packed, dtype=np.float64),
            np.ascontiguousarray(lattice.neighbours[block], dtype=np.int32),
            start, lattice.n_basis, deltas, records[block],
        )  # fmt: skip
    return records, deltas, escape


def interaction_tables(
    lattice: Lattice, records: np.ndarray, pair: np.ndarray, temperature: float
) -> dict[str, np.ndarray | float]:
    """The compiled kernel's tables for per-bond pair energies ``pair`` (eV), as keywords of
    run_lattice_gas: ``couplings``, each site's block (64-byte aligned, see
    _lattice_gas.coupling_layout) of w_km = exp(−V_km / 2kT) per directed hop (1.0 on padded
    directions) and c_km = Γ0_km / w_km from the interaction-free rates in ``records``, and
    ``span``, the factor by which a total may leave the interaction-free range. Also, for
    kmc.reference, ``weight`` and ``scaled`` (the (n_sites, z) views of w and c in the
    blocks) and ``reverse`` ((n_basis, z): the direction at the target of the hop straight
    back; a padded direction's own).

    The rate of the ion on k to an empty neighbour m is then c_km φ_m / φ_k with
    φ_s = Π w_sl over the occupied neighbours of s, that is
    Γ_km = Γ0_km exp(−ΔE_int / 2kT), ΔE_int = Σ_{l∈nn(m), l≠k} V_ml n_l − Σ_{l∈nn(k)} V_kl n_l,
    so Γ_km / Γ_mk = exp(−ΔE / kT) with ΔE the change of the total (site + pair) energy. Each
    factor lies within exp(±a) of 1, a = z max|V| / 2kT, and occupied neighbours take hops
    away, so a total lies between the least nonzero rate r and the largest total R of the
    interaction-free records, widened by exp(±a); the group table, built around the totals
    of the start, must reach both ends from any of them: span = 2 (R / r) exp(2a) (1 if
    V = 0)."""
    n, z = lattice.n_sites, lattice.coordination
    width, c_out = _lattice_gas.coupling_layout(z)
    buffer = np.zeros(n * width + 8)
    skip = (-buffer.ctypes.data % 64) // buffer.itemsize
    couplings = buffer[skip : skip + n * width].reshape(n, width)
    weight, scaled = couplings[:, :z], couplings[:, c_out : c_out + z]
    bonds = lattice.bond_index
    weight[:] = np.where(bonds >= 0, pair[np.maximum(bonds, 0)], 0.0)
    np.exp(weight / (-2 * BOLTZMANN_EV * temperature), out=weight)
    np.divide(records[:, :z], weight, out=scaled)
    reverse = lattice.reverse_direction
    reverse = np.where(reverse >= 0, reverse, np.arange(z)).astype(np.int32)
    largest = float(np.abs(pair).max()) if pair.size else 0.0
    span = 1.0
    if largest > 0:
        rates = records[:, :z]
        positive = rates[rates > 0]
        ratio = rates.sum(axis=1).max() / positive.min() if positive.size else 1.0
        span = 2.0 * ratio * math.exp(z * largest / (BOLTZMANN_EV * temperature))
    return {
        "couplings": couplings, "reverse": reverse, "span": span,
        "weight": weight, "scaled": scaled,
    }  # fmt: skip


def simulate(
    landscape: Landscape,
    temperature: float,
    rng: np.random.Generator,
    *,
    concentration: float | None = None,
    count: int | None = None,
    exclusion: bool = True,
    hops_per_ion: float = 2000,
    equilibration_hops_per_ion: float = 200,
    frames: int = 100,
    initial_sites: np.ndarray | None = None,
    field: np.ndarray | None = None,
    interactions: np.ndarray | None = None,
    work_budget: float = DEFAULT_WORK_BUDGET,
    progress: np.ndarray | None = None,
) -> Trajectory:
    """Equilibrate, then record ``frames`` uniformly spaced frames of a production run.

    The production run lasts ``hops_per_ion`` divided by the equilibrium hop rate per ion,
    so an ion makes about that many hops: :func:`mean_hop_rate` for independent walkers
    (exact), and for the lattice gas the rate measured over the second half of the
    equilibration (or :func:`mean_hop_rate` without equilibration). Independent walkers
    (``exclusion=False``) start from the Boltzmann distribution, so they are in equilibrium
    from the start; the lattice gas starts from a random placement and is equilibrated by
    ``equilibration_hops_per_ion`` hops per ion.
    ``initial_sites`` (one free site per ion, distinct under exclusion) replaces either start.
    ``field`` (V/cm) biases the rate of every directed hop (see Landscape.rates); the
    kernel needs nothing else for it.
    ``interactions``: pair energy (eV, > 0 repulsive) of two ions on the ends of each bond,
    one per bond of the lattice (see :func:`kmc.landscape.pair_energies`); hops then follow
    the rule of :func:`interaction_tables` (docs/physics.md) and the ions, never the
    vacancies, are driven. All zero (or None) is exactly the non-interacting gas.
    ``work_budget``: each kernel phase (the two halves of the equilibration and the
    production; for independent walkers the whole run) may make at most this factor times
    its planned hops in attempts (inf: no cap); a phase that runs out stops there and the
    trajectory says so in ``budget_exceeded``. ``progress``, a (1,) int64 array, has the
    attempts added as the kernel goes, for a watcher in another thread.
    """
    n_ions = ion_count(landscape, concentration=concentration, count=count, exclusion=exclusion)
    if not hops_per_ion > 0:
        raise ValueError(f"hops_per_ion must be > 0, not {hops_per_ion}")
    if not equilibration_hops_per_ion >= 0:
        raise ValueError(
            f"equilibration_hops_per_ion must be >= 0, not {equilibration_hops_per_ion}"
        )
    if frames < 2:
        raise ValueError(f"frames must be at least 2, not {frames}")
    if not work_budget >= 1:
        raise ValueError(f"work_budget must be >= 1, not {work_budget}")
    if progress is not None and (progress.shape != (1,) or progress.dtype != np.int64):
        raise ValueError("progress must be a (1,) int64 array")
    lattice = landscape.lattice
    free = landscape.free_sites
    filled = n_ions / len(free) if exclusion else 0.0
    pair = None
    if interactions is not None:
        pair = np.asarray(interactions, dtype=float)
        if pair.shape != (lattice.n_bonds,) or not np.isfinite(pair).all():
            raise ValueError(f"interactions must be {lattice.n_bonds} finite pair energies (eV)")
        if not pair.any():
            pair = None
        elif not exclusion:
            raise ValueError("interactions need ions.exclusion = true")
    # Drive the vacancies of a more than half-full lattice (see _lattice_gas.run_lattice_gas),
    # except under interactions (the kernel updates the ions' rates).
    holes = exclusion and n_ions > len(free) / 2 and pair is None
    records, deltas, escape = _site_records(
        landscape, temperature, incoming=holes, field=field, extra=int(pair is not None)
    )
    extra = {}
    if pair is not None:
        tables = interaction_tables(lattice, records, pair, temperature)
        extra = {key: tables[key] for key in ("couplings", "span")}
        del tables
    hop_rate = mean_hop_rate(landscape, escape, temperature, filled)
    if not hop_rate > 0:
        raise ValueError("no ion can hop on this landscape (all escape rates are zero)")

    if initial_sites is not None:
        site = _check_initial_sites(initial_sites, landscape, n_ions, exclusion)
    elif exclusion:
        site = rng.choice(free, size=n_ions, replace=False)
    else:
        weights = landscape.boltzmann_weights(temperature)[free]
        site = rng.choice(free, size=n_ions, p=weights / weights.sum())
    site = site.astype(np.int32)
    del free, escape  # only the records and the ions' state stay for the kernel
    cell = lattice.cell_coordinates(site)
    state = rng.integers(1, 2**63, size=4, dtype=np.uint64)
    out_sites = np.empty((frames, n_ions), dtype=np.int32)
    out_cells = np.empty((frames, n_ions, lattice.dim), dtype=np.int32)

    planned = round(n_ions * (equilibration_hops_per_ion + hops_per_ion))
    work = np.zeros(1, dtype=np.int64) if progress is None else progress
    work_start = int(work[0])
    cap = _Budget(work_budget)
    overrun = ""
    start = time.perf_counter()
    if exclusion:
        ions = np.ascontiguousarray(np.column_stack([site, cell]), dtype=np.int32)
        occupied = np.zeros(lattice.n_sites, dtype=np.uint8)
        occupied[site] = 1
        occupant = np.empty(0, dtype=np.int32)
        carriers = site.copy()
        if holes or pair is not None:
            occupant = np.full(lattice.n_sites, -1, dtype=np.int32)
            occupant[site] = np.arange(n_ions, dtype=np.int32)
        if holes:
            carriers = np.flatnonzero(~occupied.astype(bool) & ~landscape.blocked).astype(np.int32)
        args = (records, deltas, lattice.hop_cells, ions, occupied, occupant, carriers, holes)
        no_frames = np.empty(0)
        n_moves = lattice.n_basis * lattice.coordination
        no_moves = np.empty((0, n_moves), dtype=np.int64)
        extra["work"] = work
        # Equilibrate in two halves: the first relaxes by a number of hops and gives a
        # first rate; the second runs for a fixed time (ending after a fixed number of hops
        # would favour states with fast ions) and measures the equilibrium hop rate, which
        # the dilute estimate misses when a filled disordered lattice puts ions on
        # high-energy sites. Each phase may make at most work_budget × its planned hops in
        # attempts: an ion that finds a fast cluster later in a phase timed by a slow rate
        # would otherwise rattle in it without end.
        half = round(equilibration_hops_per_ion * n_ions / 2)
        if half:
            hops, attempts, elapsed, _ = _lattice_gas.run_lattice_gas(
                *args, half, no_frames, out_sites, out_cells, no_frames, no_moves, state,
                max_attempts=cap.attempts(half), **extra,
            )  # fmt: skip
            if hops < half and attempts == cap.attempts(half):
                overrun = cap.text("equilibration", attempts, half, "the first half")
            elif hops == half and elapsed > 0:
                settle = np.array([elapsed])  # as long again: about as many hops
                hops, attempts, reached, recorded = _lattice_gas.run_lattice_gas(
                    *args, 0, settle, out_sites[:1], out_cells[:1], no_frames, no_moves,
                    state, max_attempts=cap.attempts(half), **extra,
                )  # fmt: skip
                if recorded:
                    hop_rate = max(hops, 1) / settle[0] / n_ions
                else:  # the rate rose within the phase: measured over the time it reached
                    overrun = cap.text(
                        "equilibration", attempts, half,
                        f"its second half, {hops / max(half, 1):.3g}x as many hops as the "
                        "first in a fraction of its time: ions found faster sites",
                    )  # fmt: skip
                    hop_rate = max(hops, 1) / reached / n_ions
        frame_times = np.linspace(0.0, hops_per_ion / hop_rate, frames)
        collective_times = np.linspace(
            0.0, frame_times[-1], COLLECTIVE_PER_FRAME * (frames - 1) + 1
        )
        moves = np.empty((collective_times.size, n_moves), dtype=np.int64)
        production = round(hops_per_ion * n_ions)
        hops, attempts, reached, recorded = _lattice_gas.run_lattice_gas(
            *args, 0, frame_times, out_sites, out_cells, collective_times, moves, state,
            max_attempts=cap.attempts(production), **extra,
        )  # fmt: skip
        if recorded < frames:
            overrun = cap.text(
                "production", attempts, production,
                f"stopped at {reached:.3g} s of {frame_times[-1]:.3g} s, {recorded} of "
                f"{frames} frames",
            )  # fmt: skip
            kept = COLLECTIVE_PER_FRAME * (recorded - 1) + 1 if recorded else 0
            frame_times, collective_times = frame_times[:recorded], collective_times[:kept]
            out_sites, out_cells, moves = out_sites[:recorded], out_cells[:recorded], moves[:kept]
        # Σ over hops of their vectors; the hop vector of (basis b, direction k) is exact
        collective = (moves - moves[:1]) @ lattice.hop_vectors.reshape(n_moves, lattice.dim)
    else:
        collective_times = collective = None
        frame_times = np.linspace(0.0, hops_per_ion / hop_rate, frames)
        hops, recorded = _walkers.run_walkers(
            records, deltas, lattice.hop_cells, site, cell, equilibration_hops_per_ion / hop_rate,
            frame_times, out_sites, out_cells, state, max_hops=cap.attempts(planned), work=work,
        )  # fmt: skip
        if recorded < frames:
            overrun = cap.text("run", int(work[0]) - work_start, planned, "no frame kept")
            frame_times, out_sites, out_cells = frame_times[:0], out_sites[:0], out_cells[:0]
    seconds = time.perf_counter() - start

    return Trajectory(
        times=frame_times,
        positions=lattice.positions_of(out_sites, out_cells),
        sites=out_sites,
        box=lattice.box,
        volume=lattice.volume,
        temperature=float(temperature),
        hop_distance=lattice.hop_distance,
        hops=int(hops),
        kernel_seconds=seconds,
        collective_times=collective_times,
        collective=collective,
        work=int(work[0]) - work_start,
        planned_work=planned,
        budget_exceeded=overrun,
    )


@dataclass(frozen=True)
class _Budget:
    """The cap of a kernel phase: ``factor`` × its planned hops, in attempts (inf: none)."""

    factor: float

    def attempts(self, planned: int) -> int:
        """max_attempts of a phase of ``planned`` hops (0: no cap)."""
        if math.isinf(self.factor):
            return 0
        return max(1, math.ceil(self.factor * max(planned, 1)))

    def text(self, phase: str, attempts: int, planned: int, detail: str) -> str:
        return (
            f"budget exceeded in the {phase}: {attempts:.3g} attempts, run.work_budget = "
            f"{self.factor:g} times the {max(planned, 1):.3g} hops planned ({detail})"
        )


def _check_initial_sites(sites, landscape: Landscape, n_ions: int, exclusion: bool) -> np.ndarray:
    sites = np.asarray(sites)
    if sites.shape != (n_ions,) or not np.issubdtype(sites.dtype, np.integer):
        raise ValueError(f"initial_sites must be {n_ions} integer site indices")
    if (
        sites.min() < 0
        or sites.max() >= landscape.lattice.n_sites
        or landscape.blocked[sites].any()
    ):
        raise ValueError("initial_sites must be free sites of the lattice")
    if exclusion and len(np.unique(sites)) != n_ions:
        raise ValueError("initial_sites must be distinct when ions exclude each other")
    return sites
