"""``kmc validate``: the exact results of docs/physics.md, checked through the real code paths.

Every case is a config dict that goes exactly where a user's TOML file goes when they type
``kmc run``: :func:`kmc.config.parse_config` → :func:`kmc.config.expand_tasks` →
:func:`kmc.experiment.run_task` (landscape → kernel → estimators), one task per replica.
Each replica gives one number (a diffusion coefficient, or a ratio of it to a reference);
their mean is compared with the exact value,

    z = (mean − exact) / sqrt(SEM² + exact_err²),     PASS if |z| < 4,

with SEM the standard error over the independent replicas (:func:`kmc.analysis.replica_mean`)
and ``exact_err`` the uncertainty of a literature value (0 for closed forms). Where the exact
value belongs to one landscape realization (random barriers on a ring, a crystal/amorphous
mixture) each replica is divided by the exact value of its own realization and the mean ratio
is compared with 1:

- ring: the landscape is rebuilt from the task's landscape seed with
  :func:`kmc.experiment.build_landscape` (exactly as run_task builds it) and the harmonic
  mean of its bond rates gives D = a² / ⟨1/Γ_b⟩;
- mixture: the same config with ``run.method = "network"`` (the same landscape seeds, so the
  same landscapes) gives the exact dilute-limit D of each realization by the sparse solve.

Every replica must pass the diffusive test of :func:`kmc.analysis.diffusive_test` (else its
D is nan and the case fails): each case's run is long enough for the tracer MSD to grow by
well over 100 a² over [T/4, T/2], and has enough ions (several hundred) for the slope ratio
to be resolved, whatever the run length.

``--quick`` uses fewer replicas and shorter runs, still with every relative error below
2.5 % (a 10 % bias fails by more than 4 errors). Everything is seeded: a given build of the
code gives the same table every time. Under an MPI launcher (``mpiexec -n N kmc validate``)
the replicas of all cases are shared among the ranks (mpi4py, imported only then); rank 0
prints.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kmc.analysis import replica_mean
from kmc.lattice import COORDINATION, DIMENSION
from kmc.texttable import text_table
from kmc.units import A2_TO_CM2, BOLTZMANN_EV

__all__ = [
    "CASES",
    "Z_MAX",
    "Case",
    "format_table",
    "free_walker_case",
    "run_validation",
    "to_json",
]

Z_MAX = 4.0
"""A case passes if |z| < Z_MAX."""

NU = 1e13  # Hz, the attempt frequency of every case
SADDLE = 0.3  # eV, the uniform saddle of the crystalline cases
T = 300.0  # K
F_HALF_FILLED_SQUARE = (0.7128, 0.003)  # tracer correlation factor, square lattice, c = 0.5
F_SINGLE_VACANCY_CUBIC = 0.6531  # tracer correlation factor, simple cubic, one vacancy


# --------------------------------------------------------------------------------------------
# Cases


@dataclass(frozen=True)
class Case:
    """One check: a config, what to measure in each replica, and the exact value.

    ``value(task, observables)`` is the per-replica number (``observables`` are the task
    observables of :func:`kmc.experiment.run_task`, D in cm²/s). If ``exact`` is given it is
    the exact value of that replica's own realization (a function of the task, or
    ``"network"`` for the ``run.method = "network"`` task with the same landscape seed) and the
    per-replica number is ``value / exact``. ``quick`` maps dotted config keys to the values
    ``--quick`` uses instead.
    """

    name: str
    lattice: str
    quantity: str
    expected: float
    config: Mapping[str, Any]
    value: Callable[[Any, Mapping[str, float]], float]
    quick: Mapping[str, Any] = field(default_factory=dict)
    exact: Callable[[Any], float] | str | None = None
    expected_error: float = 0.0

    def resolved_config(self, quick: bool) -> dict:
        """The config dict this case runs (``quick`` overrides applied)."""
        data = copy.deepcopy(dict(self.config))
        if quick:
            for key, value in self.quick.items():
                _set_dotted(data, key, value)
        return data


def _set_dotted(data: dict, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def _config(
    name: str,
    kind: str,
    cells: Sequence[int],
    *,
    hop_distance: float = 1.0,
    ions: Mapping[str, Any],
    amorphous: Mapping[str, Any] | None = None,
    crystal_saddle: Any = SADDLE,
    interface: Mapping[str, Any] | None = None,
    microstructure: Mapping[str, Any] | None = None,
    run: Mapping[str, Any],
) -> dict:
    data = {
        "name": f"validate-{name}",
        "lattice": {"kind": kind, "cells": list(cells), "hop_distance": hop_distance},
        "ions": {"species": "Li", **ions},
        "crystal": {"attempt_frequency": NU, "site_energy": 0.0, "saddle_energy": crystal_saddle},
        "amorphous": dict(amorphous or {"site_energy": 0.0, "saddle_energy": SADDLE}),
        "microstructure": dict(microstructure or {"kind": "random", "amorphous_fraction": 0.0}),
        "run": {"temperature": T, **run},
    }
    if interface is not None:
        data["interface"] = dict(interface)
    return data


def _free_walker_d(kind: str, hop_distance: float, saddle: float, temperature: float) -> float:
    """z Γ a² / (2d) in cm²/s, Γ = ν exp(−S/kT)."""
    gamma = NU * math.exp(-saddle / (BOLTZMANN_EV * temperature))
    return COORDINATION[kind] * gamma * hop_distance**2 / (2 * DIMENSION[kind]) * A2_TO_CM2


def _tracer(_task, observables: Mapping[str, float]) -> float:
    return observables["D_tracer"]


def _scaled(key: str, scale: float) -> Callable[[Any, Mapping[str, float]], float]:
    def value(_task, observables: Mapping[str, float]) -> float:
        return observables[key] / scale

    return value


# Free walker: the box size does not matter for D (independent walkers may outnumber the
# sites, but these boxes hold the 400 walkers anyway).
_FREE_WALKER_CELLS = {
    "chain": (512,),
    "square": (24, 24),
    "triangular": (16, 16),
    "honeycomb": (12, 12),
    "cubic": (8, 8, 8),
    "bcc": (6, 6, 6),
    "fcc": (5, 5, 5),
}


def free_walker_case(kind: str, *, expected: float | None = None, seed: int = 101) -> Case:
    """Independent walkers on a uniform ``kind`` lattice (a = 2 Å, S = 0.3 eV, 300 K):
    D = z Γ a² / (2d). ``expected`` replaces the exact value (to show that a wrong one
    fails). A free walker's MSD is H a² after H hops, so the MSD grows by H/4 a² over
    [T/4, T/2]: 1000 (quick 800) hops give 250 (200) a², past the diffusive test's 100."""
    hop = 2.0
    exact = _free_walker_d(kind, hop, SADDLE, T)
    return Case(
        name="free walker",
        lattice=kind,
        quantity="D* cm2/s",
        expected=exact if expected is None else expected,
        config=_config(
            f"free-walker-{kind}",
            kind,
            _FREE_WALKER_CELLS[kind],
            hop_distance=hop,
            ions={"count": 400, "exclusion": False},
            run={
                "hops_per_ion": 1000,
                "equilibration_hops_per_ion": 0,
                "frames": 50,
                "replicas": 40,
                "seed": seed + list(_FREE_WALKER_CELLS).index(kind),
            },
        ),
        value=_tracer,
        quick={"run.replicas": 12, "run.hops_per_ion": 800},
    )


def _lattice_gas_cases() -> list[Case]:
    """Uniform rates on the square lattice at c = 0.5, 32² (N_s = 1024 sites, N = 512 ions),
    both from the same runs: D* = (1 − c) f D0 with f = 0.7128 ± 0.003 (the box shifts f by far
    less than that), and D_σ.

    D_σ: with uniform rates the summed displacement is a martingale (no drift in any
    configuration), and an ion sees an empty neighbour with probability (N_s − N)/(N_s − 1)
    at fixed N, so exactly D_σ / (D0 (1 − c)) = N_s / (N_s − 1) = 1024/1023 at every lag —
    the (1 − c) D0 of docs/physics.md for N_s → ∞. It is read from the fine summed
    displacement at the first lag (:func:`kmc.analysis.collective_window`), which makes one
    replica's estimate about as precise as its D* (a few %), so the same 32² runs serve both.
    (Earlier, read from the frames over [T/4, T/2], it scattered by ≈ 100 % per replica and
    needed thousands of 8² replicas; 32 ions per replica cannot resolve the diffusive test's
    slope ratio.) 1000 hops per ion: the tracer MSD grows by ≈ f · 250 ≈ 180 a² over
    [T/4, T/2]."""
    c = 0.5
    scale = (1 - c) * _free_walker_d("square", 1.0, SADDLE, T)
    side = 32
    n_sites = side * side
    runs = _config(
        "lattice-gas",
        "square",
        (side, side),
        ions={"concentration": c, "exclusion": True},
        run={
            "hops_per_ion": 1000,
            "equilibration_hops_per_ion": 200,
            "frames": 60,
            "replicas": 32,
            "seed": 211,
        },
    )
    quick = {"run.replicas": 12}
    return [
        Case(
            name="lattice gas c=0.5 D_sigma",
            lattice="square",
            quantity="Ds/D0(1-c)",
            expected=n_sites / (n_sites - 1),
            config=runs,
            value=_scaled("D_jump", scale),
            quick=quick,
        ),
        Case(
            name="lattice gas c=0.5 D* = f",
            lattice="square",
            quantity="D*/D0(1-c)",
            expected=F_HALF_FILLED_SQUARE[0],
            expected_error=F_HALF_FILLED_SQUARE[1],
            config=runs,
            value=_scaled("D_tracer", scale),
            quick=quick,
        ),
    ]


def _single_vacancy_case() -> Case:
    """One vacancy on simple cubic: every vacancy jump (rate zΓ) moves one of the N − 1 ions,
    so D* = f Γ a² / (N − 1) with f = 0.6531. The fit window needs a few hundred jumps per
    ion to be past the correlated regime, and the diffusive test an MSD growth of 100 a² over
    [T/4, T/2], ≈ f H/4 a² after H hops per ion: 1000 hops give ≈ 160 a². A random placement
    is already in equilibrium. The full run (8³, 24 replicas) resolves f better than the
    quick one (6³, 12 replicas, whose box shifts f by less than the quick error)."""
    d_vacancy = _free_walker_d("cubic", 1.0, SADDLE, T)  # Γ a²

    def f(task, observables: Mapping[str, float]) -> float:
        return observables["D_tracer"] * task.config.ions.count / d_vacancy

    return Case(
        name="single vacancy f",
        lattice="cubic",
        quantity="f",
        expected=F_SINGLE_VACANCY_CUBIC,
        config=_config(
            "single-vacancy",
            "cubic",
            (8, 8, 8),
            ions={"count": 8**3 - 1, "exclusion": True},
            run={
                "hops_per_ion": 1000,
                "equilibration_hops_per_ion": 0,
                "frames": 50,
                "replicas": 24,
                "seed": 301,
            },
        ),
        value=f,
        quick={"lattice.cells": [6, 6, 6], "ions.count": 6**3 - 1, "run.replicas": 12},
    )


def _random_traps_case() -> Case:
    """Common saddle 0.3 eV, Gaussian site energies of width σ = kT on simple cubic 12³:
    over realizations D / D_clean = exp(−σ²/2(kT)²) = exp(−1/2). (A realization's own value
    1/⟨1/Γ_i⟩ over its 1728 sites scatters by ≈ 3 % and is biased by ≈ 0.1 %; the scatter is
    in the replica error.) An MSD of ≈ H a² after H hops: 1000 (quick 800) hops per walker
    grow it by ≈ 250 (200) a² over [T/4, T/2], past the diffusive test's 100."""
    sigma = BOLTZMANN_EV * T
    return Case(
        name="random traps sigma=kT D/D_clean",
        lattice="cubic",
        quantity="D ratio",
        expected=math.exp(-0.5),
        config=_config(
            "random-traps",
            "cubic",
            (12, 12, 12),
            hop_distance=2.0,
            ions={"count": 800, "exclusion": False},
            amorphous={
                "site_energy": {"dist": "normal", "mean": 0.0, "sigma": sigma},
                "saddle_energy": SADDLE,
            },
            microstructure={"kind": "random", "amorphous_fraction": 1.0},
            run={
                "hops_per_ion": 1000,
                "equilibration_hops_per_ion": 0,
                "frames": 50,
                "replicas": 48,
                "seed": 401,
            },
        ),
        value=_scaled("D_tracer", _free_walker_d("cubic", 2.0, SADDLE, T)),
        quick={"run.replicas": 12, "run.hops_per_ion": 800},
    )


def _ring_exact(task) -> float:
    """a² / ⟨1/Γ_b⟩ over the bonds of the task's own ring (cm²/s), from its landscape."""
    from kmc.experiment import build_landscape

    land = build_landscape(task.config, np.random.default_rng(task.landscape_seed))
    if np.ptp(land.site_energy) != 0 or land.blocked.any():
        raise ValueError("the ring check needs equal site energies and no blocked sites")
    kt = BOLTZMANN_EV * task.config.run.temperature
    barrier = np.maximum(land.saddle_energy, land.site_energy[0]) - land.site_energy[0]
    gamma_b = land.attempt_frequency * np.exp(-barrier / kt)
    return land.lattice.hop_distance**2 / np.mean(1.0 / gamma_b) * A2_TO_CM2


def _ring_case() -> Case:
    """Random bond saddles uniform in 0.25–0.35 eV on a ring of 16 sites (a = 1.5 Å): per
    realization D = a² / ⟨1/Γ_b⟩ (the harmonic mean of the bond rates). The MSD is linear
    only after the ring's slowest mode has relaxed (τ ≈ L²/(4π² D), ≈ 7 mean hop times
    here; with 24 sites and 2000 hops the fit window opened at 1.5 τ and D came out 5 %
    high), so the window [T/4, T/2] opens far past it. One walker's D, and its MSD slope
    ratio, scatter by ≈ 100 % whatever the run length, so each replica runs 640 independent
    walkers on its ring (they may outnumber the sites): the diffusive test's slope ratio is
    then resolved (error ≈ 0.04) and one replica's D scatters by ≈ 6 %."""
    return Case(
        name="ring random barriers D/D_exact",
        lattice="chain",
        quantity="D ratio",
        expected=1.0,
        config=_config(
            "ring",
            "chain",
            (16,),
            hop_distance=1.5,
            ions={"count": 640, "exclusion": False},
            amorphous={
                "site_energy": 0.0,
                "saddle_energy": {"dist": "uniform", "low": 0.25, "high": 0.35},
            },
            microstructure={"kind": "random", "amorphous_fraction": 1.0},
            run={
                "hops_per_ion": 4000,
                "equilibration_hops_per_ion": 0,
                "frames": 40,
                "replicas": 48,
                "seed": 501,
            },
        ),
        value=_tracer,
        exact=_ring_exact,
        quick={"run.replicas": 16},
    )


def _mixture_cases() -> list[Case]:
    """Crystal/amorphous mixtures, kMC (independent walkers) against the exact network solve
    of the same realization (the ``run.method = "network"`` task with the same landscape
    seed):

    - simple cubic 10³, φ = 0.6 random amorphous sites, crystal saddle 0.5 eV, amorphous
      normal(0.3, 0.03) eV, interface 0.4 eV, 500 K (the setup of tests/test_network.py);
    - bcc 8³ with 5 % blocked sites, 10 Å crystalline grains in a glass (φ = 0.5) with site
      energies normal(0, 0.04) eV (σ ≈ kT) and saddles normal(0.35, 0.04) eV, interface
      0.3 eV, 450 K. Its full run uses 4000 hops per walker: the fit window then opens well
      past the transient (a 96-replica check gave 0.9988 ± 0.0024)."""
    random_mixture = _config(
        "mixture-random",
        "cubic",
        (10, 10, 10),
        hop_distance=2.5,
        ions={"count": 1000, "exclusion": False},
        crystal_saddle=0.5,
        amorphous={
            "site_energy": 0.0,
            "saddle_energy": {"dist": "normal", "mean": 0.3, "sigma": 0.03},
        },
        interface={"saddle_energy": 0.4},
        microstructure={"kind": "random", "amorphous_fraction": 0.6},
        run={
            "temperature": 500.0,
            "hops_per_ion": 2000,
            "equilibration_hops_per_ion": 0,
            "frames": 50,
            "replicas": 24,
            "seed": 601,
        },
    )
    grains = _config(
        "mixture-grains",
        "bcc",
        (8, 8, 8),
        hop_distance=3.0,
        ions={"count": 900, "exclusion": False},
        crystal_saddle=0.45,
        amorphous={
            "site_energy": {"dist": "normal", "mean": 0.0, "sigma": 0.04},
            "saddle_energy": {"dist": "normal", "mean": 0.35, "sigma": 0.04},
        },
        interface={"saddle_energy": 0.3},
        microstructure={"kind": "grains", "amorphous_fraction": 0.5, "grain_diameter": 10.0},
        run={
            "temperature": 450.0,
            "hops_per_ion": 4000,
            "equilibration_hops_per_ion": 0,
            "frames": 50,
            "replicas": 24,
            "seed": 701,
        },
    )
    grains["lattice"]["blocked_fraction"] = 0.05
    quick = {"run.replicas": 6, "run.hops_per_ion": 1000}
    return [
        Case(
            name="kMC vs network, random phi=0.6",
            lattice="cubic",
            quantity="D ratio",
            expected=1.0,
            config=random_mixture,
            value=_tracer,
            exact="network",
            quick=quick,
        ),
        Case(
            name="kMC vs network, grains+traps+blocked",
            lattice="bcc",
            quantity="D ratio",
            expected=1.0,
            config=grains,
            value=_tracer,
            exact="network",
            quick=quick,
        ),
    ]


CASES: tuple[Case, ...] = (
    *(free_walker_case(kind) for kind in _FREE_WALKER_CELLS),
    *_lattice_gas_cases(),
    _single_vacancy_case(),
    _random_traps_case(),
    _ring_case(),
    *_mixture_cases(),
)
"""Every check of ``kmc validate``, in the order of the table."""


# --------------------------------------------------------------------------------------------
# Running


class _Runs:
    """Task observables per config, computed once (cases may share a config) and shared
    among MPI ranks when a launcher started this process."""

    def __init__(self, comm=None) -> None:
        self._cache: dict[str, list[tuple[Any, dict]]] = {}
        self._comm = comm

    def observables(self, data: Mapping[str, Any]) -> list[tuple[Any, dict]]:
        from kmc.config import expand_tasks, parse_config
        from kmc.experiment import run_task

        key = json.dumps(data, sort_keys=True)
        if key not in self._cache:
            tasks = expand_tasks(parse_config(data, f"<validate:{data['name']}>"))
            if self._comm is None:
                results = [run_task(task).observables for task in tasks]
            else:  # replicas shared round-robin among the ranks
                rank, size = self._comm.rank, self._comm.size
                mine = {t.index: run_task(t).observables for t in tasks[rank::size]}
                results = [None] * len(tasks)
                for part in self._comm.allgather(mine):
                    for index, obs in part.items():
                        results[index] = obs
            self._cache[key] = list(zip(tasks, results, strict=True))
        return self._cache[key]


def _replica_values(case: Case, runs: _Runs, quick: bool) -> np.ndarray:
    data = case.resolved_config(quick)
    measured = runs.observables(data)
    values = np.array([case.value(task, obs) for task, obs in measured], dtype=float)
    if case.exact is None:
        return values
    if case.exact == "network":
        reference = copy.deepcopy(data)
        reference["run"]["method"] = "network"
        exact_runs = runs.observables(reference)
        for (task, _), (ref_task, _) in zip(measured, exact_runs, strict=True):
            # the same landscape seed, so the same landscape realization
            assert task.landscape_seed.spawn_key == ref_task.landscape_seed.spawn_key
            assert task.landscape_seed.entropy == ref_task.landscape_seed.entropy
        exact = np.array([case.value(t, obs) for t, obs in exact_runs], dtype=float)
    elif callable(case.exact):
        exact = np.array([case.exact(task) for task, _ in measured], dtype=float)
    else:
        raise ValueError(f"case {case.name!r}: unknown exact reference {case.exact!r}")
    return values / exact


def _record(case: Case, values: np.ndarray, seconds: float) -> dict:
    mean, sem = replica_mean(values)
    scale = math.hypot(sem, case.expected_error)
    z = (mean - case.expected) / scale if scale > 0 else math.nan
    passed = bool(math.isfinite(z) and abs(z) < Z_MAX)
    return {
        "case": case.name,
        "lattice": case.lattice,
        "quantity": case.quantity,
        "expected": case.expected,
        "expected_error": case.expected_error,
        "measured": mean,
        "error": sem,
        "z": z,
        "passed": passed,
        "status": "PASS" if passed else "FAIL",
        "replicas": int(values.size),
        "seconds": seconds,
    }


def _communicator():
    """COMM_WORLD if an MPI launcher started this process and it has more than one rank."""
    from kmc.runner import RunError, launcher_rank

    if launcher_rank() is None:
        return None
    try:
        from mpi4py import MPI
    except ImportError as err:
        raise RunError(
            "started by an MPI launcher but mpi4py is not installed: pip install -e '.[mpi]'"
        ) from err

    comm = MPI.COMM_WORLD
    return comm if comm.size > 1 else None


def run_validation(
    quick: bool = False, *, cases: Iterable[Case] | None = None, progress: bool = True
) -> list[dict]:
    """Run ``cases`` (default :data:`CASES`) and return one record per case.

    A record holds ``case``, ``lattice``, ``quantity``, ``expected``, ``expected_error``,
    ``measured`` (the replica mean), ``error`` (its standard error), ``z``, ``passed`` (|z| <
    :data:`Z_MAX`), ``status`` (PASS/FAIL), ``replicas`` and ``seconds`` (wall time of the
    case; 0 for a case that reuses the runs of an earlier one). ``progress`` prints one line
    per case on stderr. Under an MPI launcher every rank must call this; the replicas are
    shared and every rank returns the same records.
    """
    comm = _communicator()
    speak = progress and (comm is None or comm.rank == 0)
    runs = _Runs(comm)
    records = []
    for case in CASES if cases is None else cases:
        start = time.perf_counter()
        values = _replica_values(case, runs, quick)
        seconds = time.perf_counter() - start
        record = _record(case, values, seconds)
        records.append(record)
        if speak:
            print(
                f"kmc validate: {case.name} [{case.lattice}] {record['status']} {seconds:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    return records


# --------------------------------------------------------------------------------------------
# Output

_HEADERS = ("case", "lattice", "quantity", "expected", "measured ± error", "z", "result")
_RIGHT = (3, 4, 5)  # the numeric columns


def _number(value: float) -> str:
    if not math.isfinite(value):
        return "nan"
    return f"{value:.4g}" if 1e-3 <= abs(value) < 1e4 else f"{value:.4e}"


def _cells(record: Mapping[str, Any]) -> tuple[str, ...]:
    expected = _number(record["expected"])
    if record.get("expected_error"):
        expected += f" ± {_number(record['expected_error'])}"
    z = record["z"]
    return (
        record["case"],
        record["lattice"],
        record["quantity"],
        expected,
        f"{_number(record['measured'])} ± {_number(record['error'])}",
        f"{z:+.2f}" if math.isfinite(z) else "nan",
        record["status"],
    )


def format_table(records: Sequence[Mapping[str, Any]]) -> str:
    """A fixed-width table: case, lattice, quantity, expected, measured ± error, z, result;
    then a summary line."""
    lines = text_table(_HEADERS, [_cells(r) for r in records], right=_RIGHT)
    failed = sum(not r["passed"] for r in records)
    lines.append(
        f"{len(records) - failed} of {len(records)} checks passed (|z| < {Z_MAX:g})"
        + (f"; {failed} FAILED" if failed else "")
    )
    return "\n".join(lines)


def to_json(records: Sequence[Mapping[str, Any]]) -> str:
    """One JSON list of the records (nan → null)."""

    def clean(value):
        return None if isinstance(value, float) and not math.isfinite(value) else value

    return json.dumps([{k: clean(v) for k, v in r.items()} for r in records], indent=1)
