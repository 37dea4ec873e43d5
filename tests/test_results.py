"""Tests of kmc.results: analysis of a run directory, JSON, text table, results.h5.

Most run directories are built synthetically: a config.toml with a sweep, expanded with
kmc.config, and task files written with kmc.store. Their trajectories are Brownian motion with
a known diffusion coefficient D = D0 exp(-Ea/kT) (1 + φ) per parameter point, FRAME_HOPS hops
per axis per frame, so that the tracer MSD grows by d · FRAME_HOPS · (T/2 - T/4)/dt a² =
300 a² over [T/4, T/2] (the diffusive test needs 100 a²), with N_IONS = 192 ions, so that the
slope ratio of the diffusive test scatters by about sqrt(2/3 / N) ≈ 0.06 about 1 (its
tolerance is 0.2). Independent Brownian ions have D_jump = D_tracer = D. Some tasks can be
"caged": their ions rattle uniformly within ±a of their start in every frame, like ions in
an isolated cluster, D = 0, certainly not diffusive. Statistical checks accept |z| < 4 with
the standard error from the replicas; all randomness is seeded.

At the end, real runs (kmc.runner.run) on NaFePO4-like landscapes: the exact network solver
at its thresholds, and (slow) kMC against the network solver on shared landscapes.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import math
import re
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.constants
import scipy.stats

import kmc.results.tables
from kmc.analysis import (
    BOLTZMANN_EV,
    MIN_GROWTH_HOPS2,
    diffusion_coefficient,
    tensor_keys,
    tensor_observables,
)
from kmc.config import config_digest, expand_tasks, load_config, resolved_dict
from kmc.results import RunResults, analyze_run, read_results, write_results
from kmc.runner import run as kmc_run
from kmc.store import TaskData, read_task, task_filename, write_task

Z_MAX = 4.0
D0 = 1e-3  # cm²/s
EA = 0.30  # eV
#: the synthetic landscapes' "physically possible" activation energies (they contain EA)
EA_RANGE = (0.2, 0.5)
HOP = 2.0  # Å
N_IONS = 192
#: 41 frames: T = 40 dt, so T/8, T/4, T/2 are the lags 5, 10, 20 dt exactly
N_FRAMES = 41
FRAME_HOPS = 10.0  # hops per axis per frame: dt = FRAME_HOPS a² / (2 D)
#: samples of the summed displacement per frame interval, as the lattice-gas kernel records
FINE = 16
#: lattice cells per dimension (room for N_IONS ions); the box is cells · HOP
CELLS = {1: [256], 2: [16, 16], 3: [8, 8, 8]}
OBS = ("D_tracer", "D_jump", "haven_ratio", "conductivity")
BOUNDED = ("D_tracer", "D_jump", "conductivity")
UPPER = tuple(f"{key}_upper" for key in BOUNDED)
#: The diffusion-tensor components of a 3D run, in record order
TENSOR = (
    "D_tracer_xx", "D_tracer_yy", "D_tracer_zz", "D_tracer_xy", "D_tracer_xz", "D_tracer_yz",
    "D_jump_xx", "D_jump_yy", "D_jump_zz",
)  # fmt: skip
#: An anisotropic shape of the synthetic diffusion tensor, D_ab = true_d(T, φ) · SHAPE_ab:
#: trace / 3 = 1 (so D_tracer is true_d as for the isotropic runs), D_xx ≠ D_yy ≠ D_zz and
#: off-diagonal elements of both signs (positive definite: eigenvalues ≈ 1.73, 0.94, 0.33).
SHAPE = np.array([[1.6, 0.3, 0.0], [0.3, 1.0, -0.2], [0.0, -0.2, 0.4]])

CONFIG = """\
name = "synthetic"

[lattice]
kind = "{kind}"
cells = {cells}
hop_distance = {hop}

[ions]
species = "Na"
count = {ions}

[crystal]
saddle_energy = 0.5

[amorphous]
saddle_energy = 0.3

[microstructure]
amorphous_fraction = 0.25

[run]
temperature = 320.0
frames = {frames}
replicas = {replicas}
seed = 11

[sweep]
{sweep}
"""

DEFAULT_SWEEP = {
    "microstructure.amorphous_fraction": [0.0, 0.5, 1.0],
    "run.temperature": [300.0, 350.0, 400.0],
}


#: Relative standard error of one task's D_tracer (the MSD slope over [T/4, T/2]), about
#: that of one independent |Δr|² ~ χ²₃ increment per ion: sqrt(2/3 / N).
SIGMA_LN_D = math.sqrt(2 / 3 / N_IONS)


def sigma_ea(temperatures: list[float], landscapes: int = 1) -> float:
    """Standard error of a least-squares Ea (eV) over ``temperatures`` with SIGMA_LN_D per
    point, averaged over ``landscapes``: SIGMA_LN_D / sqrt(Σ (β − β̄)²) / sqrt(landscapes)."""
    beta = 1.0 / (BOLTZMANN_EV * np.asarray(temperatures))
    return SIGMA_LN_D / math.sqrt(np.sum((beta - beta.mean()) ** 2)) / math.sqrt(landscapes)


def t_max(replicas: int) -> float:
    """|z| bound for a standard error estimated from ``replicas`` values: the Student-t
    quantile with replicas − 1 degrees of freedom at the two-sided probability of 4σ."""
    return float(scipy.stats.t.isf(scipy.stats.norm.sf(Z_MAX), replicas - 1))


def true_d(temperature: float, fraction: float) -> float:
    """The known diffusion coefficient of the synthetic trajectories, cm²/s."""
    return D0 * math.exp(-EA / (BOLTZMANN_EV * temperature)) * (1.0 + fraction)


def frame_spacing(task) -> float:
    """dt in s: FRAME_HOPS hops of length HOP per axis per frame at the task's true D."""
    d_a2 = true_d(task.config.run.temperature, task.config.microstructure.amorphous_fraction)
    return FRAME_HOPS * HOP**2 / (2.0 * d_a2 * 1e16)


def synthetic_task(
    task,
    n_ions: int,
    n_frames: int,
    dim: int,
    *,
    caged: bool = False,
    exact: bool = False,
    ea_range: tuple[float, float] = EA_RANGE,
    shape: np.ndarray | None = None,
) -> TaskData:
    """Brownian trajectory with D = true_d(T, φ), FRAME_HOPS hops per axis per frame, and
    (like the lattice-gas kernel's) its summed displacement FINE times finer than the frames;
    with ``caged`` the ions instead sit anywhere within ±HOP of their start (per axis,
    uniform and independently at every sample); with ``exact`` no trajectory at all, only
    the exact D (and tensor) stored (what run.method = "network" writes). ``shape`` (d × d,
    trace d) makes the tensor anisotropic: D_ab = true_d · shape_ab, increments of
    covariance 2 D dt (default: the identity)."""
    temperature = task.config.run.temperature
    fraction = task.config.microstructure.amorphous_fraction
    d_a2 = true_d(temperature, fraction) * 1e16  # Å²/s
    dt = frame_spacing(task)
    rng = np.random.default_rng([11, task.index])
    start = rng.uniform(0.0, 8.0, size=(1, n_ions, dim))
    n_fine = FINE * (n_frames - 1) + 1
    shape = np.eye(dim) if shape is None else np.asarray(shape)
    fine_times = collective = None
    if exact:
        n_frames = 0
        positions = np.empty((0, n_ions, dim))
    else:
        if caged:
            fine = start + rng.uniform(-HOP, HOP, size=(n_fine, n_ions, dim))
        else:
            chol = np.linalg.cholesky(2.0 * d_a2 * dt / FINE * shape)
            steps = rng.normal(size=(n_fine - 1, n_ions, dim)) @ chol.T
            fine = np.concatenate([start, start + np.cumsum(steps, axis=0)])
        positions = fine[::FINE]
        fine_times = dt / FINE * np.arange(n_fine)
        collective = (fine - fine[0]).sum(axis=1)
    observables = {
        # deliberately wrong D values: analyze_run must recompute them from a trajectory
        "D_tracer": -1.0,
        "D_jump": -1.0,
        "haven_ratio": -1.0,
        "conductivity": -1.0,
        "D_tracer_upper": -1.0,
        "D_jump_upper": -1.0,
        "conductivity_upper": -1.0,
        "diffusive": 1,
        "diffusive_reason": "",
        # independent Brownian ions: the summed displacement has uncorrelated increments (a
        # martingale, as on a landscape with uniform rates); caged ones: not
        "uniform_rates": int(not caged),
        "msd_growth": -1.0,
        "slope_ratio": -1.0,
        "hops": 1000 + task.index,
        "simulated_time": dt * max(n_frames - 1, 0),
        "kernel_seconds": 0.25,
        "fit_start": 0.0,
        "fit_stop": 0.0,
        "Ea_lower": ea_range[0],
        "Ea_upper": ea_range[1],
    }
    if exact:
        d_cm2 = true_d(temperature, fraction)
        observables.update(D_tracer=d_cm2, D_jump=d_cm2, haven_ratio=1.0, conductivity=1e-3)
        observables.update(tensor_observables(d_cm2 * shape, d_cm2 * shape))
        for key in (*UPPER, "msd_growth", "slope_ratio"):
            observables[key] = math.nan
        observables["hops"] = 0
    return TaskData(
        times=dt * np.arange(n_frames),
        positions=positions,
        sites=rng.integers(0, 64, size=(n_frames, n_ions)).astype(np.int32),
        box=np.array(CELLS[dim], dtype=float) * HOP,
        species="Na",
        parameters={
            "config": resolved_dict(task.config),
            "point": task.plain_point,
            "replica": task.replica,
            "landscape": task.landscape,
            "landscape_spawn_key": list(task.landscape_seed.spawn_key),
            "landscape_digest": f"synthetic-{task.landscape}",
        },
        task=task.index,
        seed_entropy=11,
        spawn_key=(task.index,),
        observables=observables,
        collective_times=fine_times,
        collective=collective,
    )


def make_run(
    root: Path,
    sweep: dict | None = None,
    *,
    replicas: int = 2,
    n_ions: int = N_IONS,
    n_frames: int = N_FRAMES,
    dim: int = 3,
    caged: Callable | None = None,
    exact: bool = False,
    ea_range: tuple[float, float] = EA_RANGE,
    shape: np.ndarray | None = None,
) -> Path:
    """A complete synthetic run directory under ``root``; ``caged(task)`` picks the tasks
    whose ions only rattle."""
    sweep = DEFAULT_SWEEP if sweep is None else sweep
    kind, cells = {1: "chain", 2: "square", 3: "cubic"}[dim], CELLS[dim]
    run = root / "run"
    (run / "tasks").mkdir(parents=True)
    text = CONFIG.format(
        kind=kind,
        cells=cells,
        hop=HOP,
        ions=n_ions,
        frames=n_frames,
        replicas=replicas,
        sweep="\n".join(f'"{k}" = {json.dumps(v)}' for k, v in sweep.items()),
    )
    (run / "config.toml").write_text(text)
    config = load_config(run / "config.toml")
    digest = config_digest(config)
    for task in expand_tasks(config):
        data = synthetic_task(
            task,
            n_ions,
            n_frames,
            dim,
            caged=caged is not None and caged(task),
            exact=exact,
            ea_range=ea_range,
            shape=shape,
        )
        # the identity of this task of this run (analyze refuses a file without it)
        data = dataclasses.replace(
            data,
            seed_entropy=task.seed.entropy,
            spawn_key=tuple(task.seed.spawn_key),
            run_digest=digest,
        )
        write_task(run / "tasks" / task_filename(task.index), data, compression=None)
    return run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def results(run_dir) -> RunResults:
    return analyze_run(run_dir)


# --------------------------------------------------------------------------- layout

TASK_KEYS = [
    "task", "replica", "landscape", *DEFAULT_SWEEP, "hops", "simulated_time", "kernel_seconds",
    "work", "status",
    *OBS, *UPPER, "diffusive", "diffusive_reason", "msd_growth", "slope_ratio", *TENSOR,
    "Ea_lower", "Ea_upper",
]  # fmt: skip
SUMMARY_KEYS = [
    *DEFAULT_SWEEP, "replicas", "diffusive_replicas", "diffusive", "note",
    *(c for k in OBS for c in (k, f"{k}_err")), *UPPER,
    *(c for k in TENSOR for c in (k, f"{k}_err")),
]  # fmt: skip
LANDSCAPE_FIT_KEYS = [
    "microstructure.amorphous_fraction", "replica", "landscape", "temperatures", "Ea_lower",
    "Ea_upper", "Ea_tracer", "Ea_tracer_err", "Ea_jump", "Ea_jump_err", "note",
]  # fmt: skip
ARRHENIUS_KEYS = [
    "microstructure.amorphous_fraction", "landscapes", "Ea_lower", "Ea_upper", "Ea_tracer",
    "Ea_tracer_err", "Ea_jump", "Ea_jump_err", "note",
]  # fmt: skip


def test_record_keys(results):
    swept = list(DEFAULT_SWEEP)
    assert results.swept == swept
    assert results.missing == []
    assert len(results.tasks) == 18 and len(results.summary) == 9
    for i, rec in enumerate(results.tasks):
        assert list(rec) == TASK_KEYS
        assert rec["task"] == i and rec["replica"] == i % 2
        # kmc.config.expand_tasks: landscape = (index of the point's φ) · replicas + replica;
        # the temperature does not shape the landscape
        assert rec["landscape"] == (i // 6) * 2 + i % 2
        assert isinstance(rec["diffusive"], bool) and isinstance(rec["diffusive_reason"], str)
        assert (rec["Ea_lower"], rec["Ea_upper"]) == EA_RANGE  # stored, passed through
    for rec in results.summary:
        assert list(rec) == SUMMARY_KEYS
        assert rec["replicas"] == 2
    # sweep order: the first key varies slowest
    assert [r["microstructure.amorphous_fraction"] for r in results.summary[:4]] == [0, 0, 0, 0.5]
    assert [r["run.temperature"] for r in results.summary[:3]] == [300.0, 350.0, 400.0]
    assert [list(r) for r in results.arrhenius_landscapes] == [LANDSCAPE_FIT_KEYS] * 6
    assert [r["landscape"] for r in results.arrhenius_landscapes] == list(range(6))
    assert [list(r) for r in results.arrhenius] == [ARRHENIUS_KEYS] * 3


def test_observables_recomputed_and_stored_ones_kept(results):
    for rec in results.tasks:
        # the stored D values (and bounds, growth, ratio) were -1: these are recomputed
        assert rec["D_tracer"] > 0 and rec["conductivity"] != -1.0
        assert rec["msd_growth"] != -1.0 and rec["slope_ratio"] != -1.0
        assert rec["hops"] == 1000 + rec["task"] and isinstance(rec["hops"], int)
        assert rec["kernel_seconds"] == 0.25 and rec["simulated_time"] > 0


def test_brownian_tasks_are_diffusive(results):
    """Every synthetic Brownian task passes the diffusive test: its MSD grows by exactly
    d · FRAME_HOPS · 10 = 300 a² over [T/4, T/2] in expectation, with a relative standard
    error of about sqrt(2/3 / N_IONS) = 0.06 (one independent quarter-run increment per ion,
    |Δr|² ~ χ²₃): tolerance 4σ = 0.24. Its slope ratio is exactly 1 in expectation."""
    expected_growth = 3 * FRAME_HOPS * 10
    tolerance = 4 * math.sqrt(2 / 3 / N_IONS)
    for rec in results.tasks:
        assert rec["diffusive"] and rec["diffusive_reason"] == "", rec
        assert rec["msd_growth"] == pytest.approx(expected_growth, rel=tolerance)
        assert abs(rec["slope_ratio"] - 1) < 4 * 0.06, rec
        assert all(math.isnan(rec[key]) for key in UPPER), rec


def test_summary_from_stored_observables(run_dir):
    """recompute=False (the end of kmc run) takes the stored D values (-1 here) as they are."""
    quick = analyze_run(run_dir, recompute=False)
    assert [rec["task"] for rec in quick.tasks] == list(range(len(quick.tasks)))
    assert all(rec["D_tracer"] == -1.0 and rec["D_jump"] == -1.0 for rec in quick.tasks)
    assert all(rec["D_tracer_upper"] == -1.0 and rec["msd_growth"] == -1.0 for rec in quick.tasks)
    assert all(rec["hops"] == 1000 + rec["task"] for rec in quick.tasks)
    assert all(rec["diffusive"] is True for rec in quick.tasks)


def test_not_a_run_directory(tmp_path):
    with pytest.raises(ValueError, match="not a run directory") as info:
        analyze_run(tmp_path / "nowhere")
    assert "nowhere" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"config\.toml"):
        analyze_run(tmp_path)


# --------------------------------------------------------------------------- statistics


@pytest.fixture(scope="module")
def precise(tmp_path_factory) -> RunResults:
    """More replicas, so the replica standard error is itself a usable estimate."""
    run = make_run(tmp_path_factory.mktemp("precise"), replicas=PRECISE_REPLICAS)
    return analyze_run(run)


PRECISE_REPLICAS = 12


def test_recovers_known_d(precise):
    """D_tracer = D_jump = true_d, H_R = 1, within t_max(12) = 6.2 replica standard errors."""
    bound = t_max(PRECISE_REPLICAS)
    for rec in precise.summary:
        assert rec["diffusive"] and rec["diffusive_replicas"] == PRECISE_REPLICAS, rec
        expected = true_d(rec["run.temperature"], rec["microstructure.amorphous_fraction"])
        for key in ("D_tracer", "D_jump"):
            z = (rec[key] - expected) / rec[f"{key}_err"]
            assert abs(z) < bound, (key, rec, expected, z)
        z = (rec["haven_ratio"] - 1.0) / rec["haven_ratio_err"]
        assert abs(z) < bound, rec
        # and the tracer's error bar is what the estimator promises (a factor 2 either way)
        relative = rec["D_tracer_err"] / rec["D_tracer"] * math.sqrt(PRECISE_REPLICAS)
        assert SIGMA_LN_D / 2 < relative < 2 * SIGMA_LN_D, rec


def test_conductivity_is_nernst_einstein(precise):
    n = N_IONS / (8 * HOP) ** 3 * 1e30  # ions per m³
    e, k = scipy.constants.e, scipy.constants.k
    for rec in precise.tasks:
        expected = n * e**2 * rec["D_jump"] * 1e-4 / (k * rec["run.temperature"]) * 1e-2
        assert rec["conductivity"] == pytest.approx(expected, rel=1e-9)


def test_haven_ratio_is_ratio_of_means(precise):
    for rec in precise.summary:
        assert rec["haven_ratio"] == pytest.approx(rec["D_tracer"] / rec["D_jump"], rel=1e-12)


def test_recovers_activation_energy(precise):
    """Ea = 0.30 eV: the mean over 12 landscapes within t_max(12) of its standard error, and
    Ea(D_tracer) within 4σ of the estimator's own error sigma_ea (σ ≈ 0.0025 eV)."""
    assert len(precise.arrhenius) == 3
    assert len(precise.arrhenius_landscapes) == 3 * PRECISE_REPLICAS
    temperatures = DEFAULT_SWEEP["run.temperature"]
    for rec in precise.arrhenius:
        assert rec["landscapes"] == PRECISE_REPLICAS and rec["note"] == ""
        assert (rec["Ea_lower"], rec["Ea_upper"]) == pytest.approx(EA_RANGE, rel=1e-12)
        for key in ("Ea_tracer", "Ea_jump"):
            assert rec[f"{key}_err"] > 0
            z = (rec[key] - EA) / rec[f"{key}_err"]
            assert abs(z) < t_max(PRECISE_REPLICAS), (key, rec)
        tolerance = Z_MAX * sigma_ea(temperatures, PRECISE_REPLICAS)
        assert abs(rec["Ea_tracer"] - EA) < tolerance, rec


def _least_squares_ea(rows: list[dict], column: str) -> float:
    """−slope of ln D against 1/kT: the definition of the fitted activation energy."""
    beta = [1.0 / (BOLTZMANN_EV * r["run.temperature"]) for r in rows]
    return -float(np.polyfit(beta, np.log([r[column] for r in rows]), 1)[0])


def test_arrhenius_is_fitted_per_landscape_then_averaged(precise):
    """Each per-landscape Ea is the least-squares fit over the tasks of that landscape (the
    same replica, all temperatures); the point's Ea is their mean ± standard error."""
    for fit in precise.arrhenius_landscapes:
        phi = fit["microstructure.amorphous_fraction"]
        rows = [r for r in precise.tasks if r["landscape"] == fit["landscape"]]
        assert {r["replica"] for r in rows} == {fit["replica"]}
        assert {r["microstructure.amorphous_fraction"] for r in rows} == {phi}
        assert sorted(r["run.temperature"] for r in rows) == DEFAULT_SWEEP["run.temperature"]
        assert fit["temperatures"] == 3 and fit["note"] == ""
        for key, column in (("Ea_tracer", "D_tracer"), ("Ea_jump", "D_jump")):
            assert fit[key] == pytest.approx(_least_squares_ea(rows, column), rel=1e-9)
            assert fit[f"{key}_err"] > 0  # three temperatures: an error from the residuals
    # one landscape's Ea(D_tracer): within 4σ of the estimator's error (σ ≈ 0.0086 eV)
    for fit in precise.arrhenius_landscapes:
        tolerance = Z_MAX * sigma_ea(DEFAULT_SWEEP["run.temperature"])
        assert abs(fit["Ea_tracer"] - EA) < tolerance, fit
    for rec in precise.arrhenius:
        phi = rec["microstructure.amorphous_fraction"]
        fits = [
            f for f in precise.arrhenius_landscapes if f["microstructure.amorphous_fraction"] == phi
        ]
        for key in ("Ea_tracer", "Ea_jump"):
            values = [f[key] for f in fits]
            assert rec[key] == pytest.approx(np.mean(values), rel=1e-12)
            error = np.std(values, ddof=1) / math.sqrt(PRECISE_REPLICAS)
            assert rec[f"{key}_err"] == pytest.approx(error, rel=1e-9)


def test_no_arrhenius_without_temperature_sweep(tmp_path):
    run = make_run(tmp_path, {"microstructure.amorphous_fraction": [0.0, 1.0]})
    res = analyze_run(run)
    assert res.arrhenius == [] and res.arrhenius_landscapes == []
    assert "Arrhenius" not in res.table()
    assert len(res.summary) == 2
    assert list(res.tasks[0])[:4] == [
        "task", "replica", "landscape", "microstructure.amorphous_fraction",
    ]  # fmt: skip


# --------------------------------------------------------------------------- physical range


def test_ea_outside_the_physical_range_is_flagged(tmp_path):
    """The synthetic D has Ea = 0.30 eV; a stated range [0.40, 0.60] excludes it by 0.10 eV.
    A seven-temperature fit's residual error has 5 degrees of freedom, so a landscape is
    flagged beyond t(0.99865, 5) = 6.0 standard errors: 0.10 eV is more than that (its error
    is < 0.01 eV for 192 ions, 4000 hops each): every landscape's fit and the mean are
    flagged, the values kept."""
    temperatures = [300.0, 350.0, 400.0, 450.0, 500.0, 550.0, 600.0]
    sweep = {**DEFAULT_SWEEP, "run.temperature": temperatures}
    res = analyze_run(make_run(tmp_path, sweep, ea_range=(0.4, 0.6)))
    for fit in res.arrhenius_landscapes:
        assert fit["Ea_tracer_err"] < 0.1 / 6.1
        assert "Ea_tracer outside the physical range" in fit["note"], fit
        assert "Ea_jump outside the physical range" in fit["note"], fit
        assert abs(fit["Ea_tracer"] - EA) < Z_MAX * sigma_ea(temperatures)
    for rec in res.arrhenius:
        assert "Ea_tracer outside the physical range on 2 of 2 landscapes" in rec["note"], rec
        assert math.isfinite(rec["Ea_tracer"]) and math.isfinite(rec["Ea_jump"])
    assert "outside the physical range" in res.table()


def test_ea_inside_the_physical_range_is_not_flagged(results):
    """Ea = 0.30 eV inside [0.2, 0.5]: no flag anywhere (by more than 10 standard errors)."""
    assert all(fit["note"] == "" for fit in results.arrhenius_landscapes)
    assert all(rec["note"] == "" for rec in results.arrhenius)
    assert "outside" not in results.table()


def test_two_temperature_kmc_fit_without_an_error_is_not_flagged_alone(tmp_path):
    """A homogeneous landscape has Ea_lower = Ea_upper = its one barrier (a crystal). Fits
    of noisy D over two temperatures scatter about it (σ = sigma_ea ≈ 0.009 eV) with no
    error of their own: none is flagged by itself, whatever its range; the mean over the
    four landscapes has an error from their scatter and is flagged when it misses its
    range by 0.10 eV (more than 10σ)."""
    sweep = {"run.temperature": [300.0, 400.0]}
    edge = analyze_run(make_run(tmp_path / "edge", sweep, replicas=4, ea_range=(EA, EA)))
    off = analyze_run(make_run(tmp_path / "off", sweep, replicas=4, ea_range=(EA + 0.1,) * 2))
    for res in (edge, off):
        assert len(res.arrhenius_landscapes) == 4
        for fit in res.arrhenius_landscapes:
            assert math.isnan(fit["Ea_tracer_err"]) and fit["note"] == "", fit
        [rec] = res.arrhenius
        assert abs(rec["Ea_tracer"] - EA) < Z_MAX * sigma_ea(sweep["run.temperature"], 4)
        assert rec["Ea_tracer_err"] < 0.1 / 3 / 2
    assert "Ea_tracer outside the physical range (the mean over 4" in off.arrhenius[0]["note"]


def test_exact_fit_outside_its_range_is_flagged_without_an_error(tmp_path):
    """Tasks without a trajectory (network) store exact D: a two-temperature fit has no error
    and is judged to round-off: Ea = 0.30 eV exactly, flagged against [0.4, 0.6], not against
    [0.2, 0.5]."""
    sweep = {"run.temperature": [300.0, 400.0]}
    inside = analyze_run(make_run(tmp_path / "in", sweep, exact=True))
    outside = analyze_run(make_run(tmp_path / "out", sweep, exact=True, ea_range=(0.4, 0.6)))
    for res in (inside, outside):
        assert len(res.arrhenius_landscapes) == 2
        for fit in res.arrhenius_landscapes:
            assert fit["Ea_tracer"] == pytest.approx(EA, rel=1e-9)
            assert math.isnan(fit["Ea_tracer_err"])
    assert all(fit["note"] == "" for fit in inside.arrhenius_landscapes)
    assert all("Ea_tracer outside" in fit["note"] for fit in outside.arrhenius_landscapes)
    assert "on 2 of 2 landscapes" in outside.arrhenius[0]["note"]


# --------------------------------------------------------------------------- not diffusive


def _caged(task) -> bool:
    """φ = 0 everywhere, and replica 0 of (φ = 0.5, 300 K)."""
    phi, temperature = task.config.microstructure.amorphous_fraction, task.config.run.temperature
    return phi == 0.0 or (phi == 0.5 and temperature == 300.0 and task.replica == 0)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> RunResults:
    return analyze_run(make_run(tmp_path_factory.mktemp("mixed"), caged=_caged))


def _frame_spacing(rec: dict) -> float:
    return (
        FRAME_HOPS
        * HOP**2
        / (2e16 * true_d(rec["run.temperature"], rec["microstructure.amorphous_fraction"]))
    )


def test_non_diffusive_tasks_report_only_upper_bounds(mixed):
    """Caged ions: E|Δr|² = d · 2a²/3 = 2a² at every lag (uniform within ±a, independent
    frames), so MSD(T/2)/(2d · T/2) = a²/(3 · 20 dt) exactly in expectation; its relative
    standard error is sqrt(28/15 / (N · 21 origins)) / 2 = 1.1 % (Var of the squared
    displacement 28/15 a⁴): tolerance 4σ. The MSD growth over [T/4, T/2] is 0 ± 0.03 a²
    (two MSDs of standard error 0.02 a² each): tolerance 0.12 a²."""
    caged = [r for r in mixed.tasks if not r["diffusive"]]
    assert [r["task"] for r in caged] == [0, 1, 2, 3, 4, 5, 6]  # φ = 0, and (0.5, 300 K) #0
    tolerance = 4 * math.sqrt(28 / 15 / (N_IONS * 21)) / 2
    n = N_IONS / (8 * HOP) ** 3 * 1e30  # ions per m³
    e, k = scipy.constants.e, scipy.constants.k
    for rec in mixed.tasks:
        if rec["diffusive"]:
            assert rec["diffusive_reason"] == "" and rec["D_tracer"] > 0 and rec["D_jump"] > 0
            assert all(math.isnan(rec[key]) for key in UPPER), rec
            continue
        assert rec["diffusive_reason"], rec
        assert all(math.isnan(rec[key]) for key in OBS), rec
        assert abs(rec["msd_growth"]) < 0.12 < MIN_GROWTH_HOPS2, rec
        half = 20 * _frame_spacing(rec)
        expected = HOP**2 / (3 * half) * 1e-16  # cm²/s
        assert rec["D_tracer_upper"] == pytest.approx(expected, rel=tolerance)
        assert rec["D_jump_upper"] > 0
        bound = n * e**2 * rec["D_jump_upper"] * 1e-4 / (k * rec["run.temperature"]) * 1e-2
        assert rec["conductivity_upper"] == pytest.approx(bound, rel=1e-9)


def test_summary_of_points_with_non_diffusive_replicas(mixed):
    by_point = {
        (r["microstructure.amorphous_fraction"], r["run.temperature"]): r for r in mixed.summary
    }
    tasks = {(r["task"]): r for r in mixed.tasks}
    for (phi, temperature), rec in by_point.items():
        first = [
            r
            for r in mixed.tasks
            if (r["microstructure.amorphous_fraction"], r["run.temperature"]) == (phi, temperature)
        ]
        n_diffusive = sum(r["diffusive"] for r in first)
        assert rec["replicas"] == 2 and rec["diffusive_replicas"] == n_diffusive
        assert rec["diffusive"] is (n_diffusive == 2)
        if rec["diffusive"]:
            assert rec["note"] == "" and all(math.isnan(rec[key]) for key in UPPER)
            assert all(math.isfinite(rec[key]) for key in OBS)
            continue
        assert rec["note"], rec
        assert all(math.isnan(rec[key]) and math.isnan(rec[f"{key}_err"]) for key in OBS)
        for key in BOUNDED:
            # the mean over replicas of the value, or the bound where not diffusive
            parts = [r[key] if r["diffusive"] else r[f"{key}_upper"] for r in first]
            assert rec[f"{key}_upper"] == pytest.approx(np.mean(parts), rel=1e-12)
    assert by_point[(0.0, 300.0)]["diffusive_replicas"] == 0
    assert by_point[(0.5, 300.0)]["diffusive_replicas"] == 1
    assert tasks[6]["D_tracer"] != tasks[6]["D_tracer"]  # task 6 is (0.5, 300 K) replica 0


def test_arrhenius_withheld_over_non_diffusive_tasks(mixed):
    temperatures = DEFAULT_SWEEP["run.temperature"]
    fits = {f["landscape"]: f for f in mixed.arrhenius_landscapes}
    assert sorted(fits) == list(range(6))
    for landscape in (0, 1):  # φ = 0: caged at every temperature
        assert fits[landscape]["note"].startswith("withheld"), fits[landscape]
        assert "300, 350, 400 K" in fits[landscape]["note"]
    assert fits[2]["note"].startswith("withheld") and "300 K" in fits[2]["note"]
    assert "350" not in fits[2]["note"]
    for landscape in (0, 1, 2):
        assert all(math.isnan(fits[landscape][k]) for k in ("Ea_tracer", "Ea_jump"))
    for landscape in (3, 4, 5):  # φ = 0.5 replica 1, φ = 1: every task diffusive
        assert fits[landscape]["note"] == ""
        assert abs(fits[landscape]["Ea_tracer"] - EA) < Z_MAX * sigma_ea(temperatures)
    zero, half, one = mixed.arrhenius
    assert zero["note"].startswith("withheld") and "2 of 2 landscapes" in zero["note"]
    assert half["note"].startswith("withheld") and "1 of 2 landscapes" in half["note"]
    for rec in (zero, half):
        assert all(math.isnan(rec[k]) for k in ("Ea_tracer", "Ea_tracer_err", "Ea_jump"))
    assert one["note"] == "" and abs(one["Ea_tracer"] - EA) < Z_MAX * sigma_ea(temperatures, 2)


#: A number in a table cell with a minus sign that is not an exponent's.
_NEGATIVE = re.compile(r"(?<![eE\d])-\d")


def test_table_shows_bounds_for_non_diffusive_points(mixed):
    lines = mixed.table().splitlines()
    header = lines[1]
    assert "diffusive" in header
    starts = [header.index(f"{key} [") for key in BOUNDED]
    rows = lines[3 : 3 + 9]
    for row, rec in zip(rows, mixed.summary, strict=True):
        assert f"{rec['diffusive_replicas']}/2" in row.split()
        cells = [row[s:].split("  ")[0] for s in starts]
        for cell in cells:
            assert not _NEGATIVE.search(cell), row
            if rec["diffusive"]:
                assert "±" in cell and not cell.startswith("<"), row
            else:
                assert cell.startswith("< "), row
    text = "\n".join(lines)
    assert "upper bound" in text  # the footnote
    assert "Ea(D_tracer) = withheld" in text


def test_json_non_diffusive_values_are_null(mixed):
    payload = json.loads(mixed.to_json())
    assert list(payload) == ["summary", "tasks", "arrhenius", "arrhenius_landscapes"]
    for task in payload["tasks"]:
        if task["diffusive"]:
            assert all(task[key] is None for key in UPPER)
            continue
        assert all(task[key] is None for key in OBS), task
        assert all(task[key] > 0 for key in UPPER), task
    for point in payload["summary"]:
        if not point["diffusive"]:
            assert all(point[key] is None for key in OBS), point
            assert all(point[key] > 0 for key in UPPER), point
    assert payload["arrhenius"][0]["Ea_tracer"] is None


def test_no_false_footnote_for_points_without_replicas(tmp_path):
    """A point whose task files are all missing has no values, but no bounds either."""
    run = make_run(tmp_path, {"microstructure.amorphous_fraction": [0.0, 1.0]})
    for k in (2, 3):
        (run / "tasks" / task_filename(k)).unlink()
    res = analyze_run(run)
    assert res.summary[1]["replicas"] == 0 and res.summary[0]["diffusive"]
    text = res.table()
    assert "n/a" in text and "< " not in text and "upper bound" not in text


# --------------------------------------------------------------------------- missing files


def test_missing_and_incomplete_files_are_skipped(tmp_path):
    run = make_run(tmp_path)
    (run / "tasks" / task_filename(3)).unlink()
    with h5py.File(run / "tasks" / task_filename(5), "r+") as f:
        f["h5md"].attrs["kmc_complete"] = 0  # as if the run died while writing
    (run / "tasks" / task_filename(16)).write_bytes(b"not an HDF5 file")
    (run / "tasks" / task_filename(17)).unlink()
    res = analyze_run(run)
    assert res.missing == [3, 5, 16, 17]
    assert [r["task"] for r in res.tasks] == [t for t in range(18) if t not in (3, 5, 16, 17)]
    assert [r["replicas"] for r in res.summary] == [2, 1, 1, 2, 2, 2, 2, 2, 0]
    one = res.summary[1]
    assert math.isfinite(one["D_tracer"]) and math.isnan(one["D_tracer_err"])
    assert all(math.isnan(res.summary[8][k]) for k in OBS)
    # landscape 1 (φ = 0, replica 1) kept only 300 K: no fit; φ = 1.0 lost T = 400 K
    # entirely: its two landscapes are fitted from 300 and 350 K alone
    fits = {f["landscape"]: f for f in res.arrhenius_landscapes}
    assert sorted(fits) == [0, 2, 3, 4, 5]
    assert [fits[k]["temperatures"] for k in (0, 2, 3, 4, 5)] == [3, 3, 3, 2, 2]
    assert [r["landscapes"] for r in res.arrhenius] == [1, 2, 2]
    assert math.isfinite(res.arrhenius[2]["Ea_tracer"])
    assert math.isnan(res.arrhenius[0]["Ea_tracer_err"])  # one landscape: no scatter
    text = res.table()
    assert "missing: 3, 5, 16-17" in text and "n/a" in text

    payload = json.loads(res.to_json())
    assert payload["summary"][1]["D_tracer_err"] is None
    assert payload["summary"][8]["D_tracer"] is None
    assert "NaN" not in res.to_json()


def test_task_file_of_another_task_is_refused(tmp_path):
    run = make_run(tmp_path, {"microstructure.amorphous_fraction": [0.0, 1.0]})
    tasks = run / "tasks"
    (tasks / task_filename(0)).unlink()
    (tasks / task_filename(2)).rename(tasks / task_filename(0))
    res = analyze_run(run)  # named and skipped: the rest is analyzed
    assert res.missing == [0, 2]
    assert [r["task"] for r in res.tasks] == [1, 3]
    [line] = res.damaged
    assert line.startswith(f"{tasks / task_filename(0)}: ") and "belongs to another" in line


def test_task_without_trajectory_keeps_stored_values(tmp_path, monkeypatch):
    """run.method = "network" tasks store zero frames and their D in the observables."""
    run = make_run(tmp_path, {"microstructure.amorphous_fraction": [0.0, 1.0]})
    real = read_task

    def fake(path, **kwargs):
        data = real(path, **kwargs)
        if data.task != 1:
            return data
        n, d = data.positions.shape[1:]
        observables = dict(data.observables, D_tracer=2e-7, D_jump=2e-7, haven_ratio=1.0)
        observables["conductivity"] = 1e-3
        for key in (*UPPER, "msd_growth", "slope_ratio"):
            observables[key] = math.nan  # what a network task stores
        return TaskData(
            times=np.empty(0),
            positions=np.empty((0, n, d)),
            sites=np.empty((0, n), dtype=np.int32),
            box=data.box,
            species=data.species,
            parameters=data.parameters,
            task=data.task,
            seed_entropy=data.seed_entropy,
            spawn_key=data.spawn_key,
            observables=observables,
        )

    monkeypatch.setattr(kmc.results.tables, "read_task", fake)
    res = analyze_run(run)
    rec = res.tasks[1]
    assert (rec["D_tracer"], rec["D_jump"], rec["haven_ratio"]) == (2e-7, 2e-7, 1.0)
    assert rec["conductivity"] == 1e-3 and rec["hops"] == 1001
    assert rec["diffusive"] is True and rec["diffusive_reason"] == ""
    assert all(math.isnan(rec[key]) for key in (*UPPER, "msd_growth", "slope_ratio"))
    assert (rec["Ea_lower"], rec["Ea_upper"]) == EA_RANGE
    assert res.tasks[0]["D_tracer"] > 0 and res.tasks[0]["D_tracer"] != 2e-7


# --------------------------------------------------------------------------- diffusion tensor

#: Replicas of the anisotropic run: enough that |z| < 4 is a fair test with the standard
#: error estimated from them (Student t, 15 degrees of freedom: P(|t| > 4) ≈ 1e-3).
ANISO_REPLICAS = 16
ANISO_SWEEP = {"run.temperature": [300.0, 400.0]}


@pytest.fixture(scope="module")
def anisotropic(tmp_path_factory) -> RunResults:
    root = tmp_path_factory.mktemp("anisotropic")
    return analyze_run(make_run(root, ANISO_SWEEP, replicas=ANISO_REPLICAS, shape=SHAPE))


def test_task_records_carry_the_tensor_and_its_trace(anisotropic):
    """Every task record holds the nine components of its 3D tensor, recomputed from the
    trajectory; D_tracer and D_jump are the traces / 3 of the same fits (rel 1e-12)."""
    for rec in anisotropic.tasks:
        assert rec["diffusive"], rec
        assert [key for key in rec if key.startswith(("D_tracer_", "D_jump_"))] == [
            *UPPER[:2],
            *TENSOR,
        ]
        assert all(isinstance(rec[key], float) for key in TENSOR)
        diagonal = rec["D_tracer_xx"] + rec["D_tracer_yy"] + rec["D_tracer_zz"]
        assert rec["D_tracer"] == pytest.approx(diagonal / 3, rel=1e-12)
        jump = rec["D_jump_xx"] + rec["D_jump_yy"] + rec["D_jump_zz"]
        assert rec["D_jump"] == pytest.approx(jump / 3, rel=1e-12)


def test_summary_recovers_an_anisotropic_tensor(anisotropic):
    """Exact: D*_ab = true_d(T, φ = 0.25) · SHAPE_ab (D_xx : D_yy : D_zz = 1.6 : 1.0 : 0.4,
    D_xy = 0.3, D_xz = 0, D_yz = -0.2 in units of true_d), D_σ,aa = D*_aa (independent
    ions). At both temperatures every component's mean over the 16 replicas lies within 4
    standard errors (from the replicas' scatter, ``X_err``) of the exact value; the
    diagonal's errors are below 6 % of the component."""
    axes = {"x": 0, "y": 1, "z": 2}
    for point in anisotropic.summary:
        assert point["diffusive"] and point["replicas"] == ANISO_REPLICAS
        d = true_d(point["run.temperature"], 0.25)
        for key in TENSOR:
            pair = key.rsplit("_", 1)[1]
            exact = d * SHAPE[axes[pair[0]], axes[pair[1]]]
            mean, error = point[key], point[f"{key}_err"]
            z = (mean - exact) / error
            assert abs(z) < Z_MAX, (key, point["run.temperature"], mean, error, exact, z)
            if pair[0] == pair[1]:  # measured 2.4-3.3 %
                assert error < 0.06 * abs(exact), (key, error / exact)


def test_table_shows_the_diagonal_only_for_a_resolved_anisotropy(anisotropic, results, mixed):
    """The summary table keeps its columns; a block of D_tracer_xx, _yy, _zz per point
    follows when some point's diagonal differs by more than 4 standard errors (the
    anisotropic run: D_xx - D_zz ≈ 1.2 true_d, its error ≈ 3 %), and not for isotropic
    runs."""
    text = anisotropic.table()
    head = text.splitlines()[1].split()
    assert head == [
        "run.temperature", "replicas", "diffusive", "D_tracer", "[cm^2/s]", "D_jump",
        "[cm^2/s]", "haven_ratio", "conductivity", "[S/cm]",
    ]  # fmt: skip
    assert "Diffusion tensor, diagonal" in text
    block = text.split("Diffusion tensor, diagonal")[1].splitlines()
    assert block[2].replace(" [cm^2/s]", "").split() == [
        "run.temperature",
        *(f"D_tracer_{c}{c}" for c in "xyz"),
    ]
    assert "D_tracer_xy" not in text and "D_jump_xx" not in text
    assert [line.count("±") for line in block[4:6]] == [3, 3]  # one row per point
    for isotropic in (results, mixed):
        assert "Diffusion tensor" not in isotropic.table()


def test_json_and_results_h5_carry_the_tensor(anisotropic, tmp_path):
    payload = json.loads(anisotropic.to_json())
    for rec in payload["tasks"]:
        assert all(isinstance(rec[key], float) for key in TENSOR)
    for rec, ours in zip(payload["summary"], anisotropic.summary, strict=True):
        for key in TENSOR:
            assert rec[key] == ours[key] and rec[f"{key}_err"] == ours[f"{key}_err"]
    back = read_results(write_results(anisotropic, tmp_path / "results.h5"))
    for name in ("tasks", "summary"):
        for a, b in zip(getattr(anisotropic, name), getattr(back, name), strict=True):
            assert list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    with h5py.File(tmp_path / "results.h5") as f:
        for key in TENSOR:
            assert f[f"tasks/{key}"].attrs["unit"] == "cm^2/s"
            assert f[f"summary/{key}_err"].attrs["unit"] == "cm^2/s"
            assert f[f"summary/{key}"].dtype == np.float64


def test_non_diffusive_points_have_no_tensor(mixed):
    """A caged task's components are nan, and so are the mean and error of every point with
    a caged replica (no bound: the scalar D_tracer_upper bounds the trace)."""
    for rec in mixed.tasks:
        assert all(math.isnan(rec[key]) for key in TENSOR) == (not rec["diffusive"]), rec
    for point in mixed.summary:
        for key in TENSOR:
            assert math.isnan(point[key]) == (not point["diffusive"])
            assert f"{key}_upper" not in point


@pytest.mark.parametrize("dim", [2, 3])
def test_exact_tensor_is_kept_and_shown(tmp_path, dim):
    """Tasks without a trajectory (run.method = "network") keep the exact tensor they
    stored, to the bit; one replica gives no error, and the table's diagonal block is shown
    for an exact anisotropy (> 1e-9 relative), not for an exact isotropic tensor. A 2D run
    has the components of its two axes only."""
    shape = np.diag([1.5, 0.5]) if dim == 2 else SHAPE
    for name, tensor in (("aniso", shape), ("iso", np.eye(dim))):
        res = analyze_run(
            make_run(tmp_path / name, ANISO_SWEEP, replicas=1, dim=dim, exact=True, shape=tensor)
        )
        keys = tensor_keys(dim)
        for rec in res.tasks:
            d = true_d(rec["run.temperature"], 0.25)
            expected = tensor_observables(d * tensor, d * tensor)
            assert {k: rec[k] for k in keys} == expected
            assert not any(k in rec for k in TENSOR if k not in keys)
        for point in res.summary:
            assert all(math.isnan(point[f"{k}_err"]) for k in keys)
            assert not any(k in point for k in TENSOR if k not in keys)
        assert ("Diffusion tensor, diagonal" in res.table()) == (name == "aniso")


# --------------------------------------------------------------------------- output


def _nan_to_none(value):
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def test_json_is_one_object(results):
    text = results.to_json()
    payload = json.loads(text)
    assert list(payload) == ["summary", "tasks", "arrhenius", "arrhenius_landscapes"]
    for name in ("summary", "tasks", "arrhenius", "arrhenius_landscapes"):
        assert payload[name] == _nan_to_none(getattr(results, name)), name
    assert payload["summary"][0]["replicas"] == 2
    assert "\n" not in text


def test_json_nan_becomes_null(tmp_path):
    run = make_run(tmp_path, {"run.temperature": [300.0, 400.0]}, replicas=1)
    res = analyze_run(run)
    payload = json.loads(res.to_json())
    assert all(rec["D_tracer_err"] is None for rec in payload["summary"])
    assert isinstance(payload["summary"][0]["D_tracer"], float)
    # with one replica the weights are unusable: unweighted fit, no error from 2 points
    assert payload["arrhenius"][0]["Ea_tracer"] is not None
    assert payload["arrhenius"][0]["Ea_tracer_err"] is None
    assert list(payload["arrhenius"][0]) == ARRHENIUS_KEYS[1:]  # no other swept key
    assert payload["arrhenius"][0]["landscapes"] == 1
    for fit in payload["arrhenius_landscapes"]:
        assert fit["temperatures"] == 2 and fit["Ea_tracer_err"] is None


def test_table(results):
    text = results.table()
    lines = text.splitlines()
    assert "microstructure.amorphous_fraction" in lines[1] and "D_tracer [cm^2/s]" in lines[1]
    assert len([line for line in lines if "±" in line and "e-" in line]) >= 9
    assert "diffusive" in lines[1].split()
    assert all("2/2" in line.split() for line in lines[3:12])  # every replica diffusive
    assert "< " not in text and "upper bound" not in text
    assert "Arrhenius" in text and "eV" in text and "one per landscape" in text


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("which", ["results", "mixed", "anisotropic"])
def test_results_h5_round_trip(tmp_path, request, which):
    results = request.getfixturevalue(which)
    path = write_results(results, tmp_path / "results.h5")
    assert path == tmp_path / "results.h5"
    assert [p.name for p in tmp_path.iterdir()] == ["results.h5"]  # no temporary left
    back = read_results(path)
    for name in ("tasks", "summary", "arrhenius", "arrhenius_landscapes"):
        ours, theirs = getattr(results, name), getattr(back, name)
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs, strict=True):
            assert list(a) == list(b)
            assert all(_same(a[k], b[k]) for k in a), (a, b)
    assert back.swept == results.swept and back.missing == results.missing
    assert back.run_dir == results.run_dir and back.config == results.config
    assert back.to_json() == results.to_json()
    with h5py.File(path) as f:
        assert f["summary/D_tracer"].attrs["unit"] == "cm^2/s"
        assert f["summary/conductivity_err"].attrs["unit"] == "S/cm"
        assert f["tasks/simulated_time"].attrs["unit"] == "s"
        assert f["summary/run.temperature"].attrs["unit"] == "K"
        assert f["arrhenius/Ea_jump"].attrs["unit"] == "eV"
        assert f["tasks/hops"].dtype == np.int64
        assert f["tasks/diffusive"].dtype == np.bool_
        assert f["tasks/D_tracer_upper"].attrs["unit"] == "cm^2/s"
        assert f["summary/conductivity_upper"].attrs["unit"] == "S/cm"
        assert f["tasks/msd_growth"].attrs["unit"] == "hop_distance^2"
        assert f["arrhenius_landscapes/Ea_upper"].attrs["unit"] == "eV"
        diffusive = f["tasks/diffusive"][:]
        np.testing.assert_array_equal(np.isnan(f["tasks/D_tracer"][:]), ~diffusive)
        np.testing.assert_array_equal(np.isnan(f["tasks/D_tracer_upper"][:]), diffusive)


def test_results_h5_round_trip_odd_columns(tmp_path):
    """Strings, booleans, lists, NaN, missing tasks and an empty table survive exactly."""
    res = RunResults(
        tasks=[
            {
                "task": 0,
                "replica": 0,
                "lattice.kind": "square",
                "ions.exclusion": True,
                "crystal.saddle_energy": [0.3, {"dist": "normal", "mean": 1.0, "sigma": 0.1}],
                "hops": 5,
                "D_tracer": math.nan,
            },
            {
                "task": 2,
                "replica": 0,
                "lattice.kind": "ångström ✓",
                "ions.exclusion": False,
                "crystal.saddle_energy": [0.5, 0.6],
                "hops": 7,
                "D_tracer": 1.5e-9,
            },
        ],
        summary=[],
        arrhenius=[],
        swept=["lattice.kind", "ions.exclusion", "crystal.saddle_energy"],
        missing=[1],
        run_dir=tmp_path,
    )
    back = read_results(write_results(res))
    assert (tmp_path / "results.h5").is_file()
    assert back.summary == [] and back.arrhenius == [] and back.missing == [1]
    for a, b in zip(res.tasks, back.tasks, strict=True):
        assert list(a) == list(b) and all(_same(a[k], b[k]) for k in a), (a, b)


def test_read_results_errors(tmp_path):
    with pytest.raises(ValueError, match="no such results file"):
        read_results(tmp_path / "results.h5")
    (tmp_path / "junk.h5").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"junk\.h5"):
        read_results(tmp_path / "junk.h5")


# --------------------------------------------------------------------------- NaFePO4-like runs

#: A maricite-NaFePO4-like electrode (configs/quickstart.toml, with the amorphous phase of
#: issue 9): simple cubic Na sublattice, insulating crystal (1.6 eV), amorphous sites
#: N(0.05, 0.03) and saddles N(0.76, 0.10), interface saddles 1.15 eV; dilute independent ions.
NAFEPO4 = """\
name = "{name}"

[lattice]
kind = "cubic"
cells = [16, 16, 16]
hop_distance = 3.4

[ions]
species = "Na"
concentration = 0.05
exclusion = false

[crystal]
attempt_frequency = 1e13
site_energy = 0.0
saddle_energy = 1.6

[amorphous]
site_energy = {{ dist = "normal", mean = 0.05, sigma = 0.03 }}
saddle_energy = {{ dist = "normal", mean = 0.76, sigma = 0.10 }}

[interface]
saddle_energy = 1.15

[microstructure]
{microstructure}

[run]
{run}
replicas = {replicas}
seed = {seed}

[sweep]
{sweep}
"""
#: Near their thresholds: random φ = 0.1 (isolated amorphous clusters), correlated (8 Å)
#: φ = 0.05; the network method solves each landscape exactly.
THRESHOLD_MICROSTRUCTURES = {
    "random": 'kind = "random"\namorphous_fraction = 0.1',
    "correlated": 'kind = "correlated"\ncorrelation_length = 8.0\namorphous_fraction = 0.05',
}
NETWORK_TEMPERATURES = [300.0, 400.0, 500.0, 600.0]


def _run_config(tmp_path: Path, name: str, text: str) -> RunResults:
    config = tmp_path / f"{name}.toml"
    config.write_text(text)
    run_dir = kmc_run(config, tmp_path / name, log=io.StringIO())
    assert run_dir == tmp_path / name
    return analyze_run(run_dir)


@pytest.mark.parametrize("kind", list(THRESHOLD_MICROSTRUCTURES))
def test_network_d_and_ea_at_the_threshold(tmp_path, kind):
    """Issue 9, must show 1. On every landscape (8³ and 16³ cells, 3 replicas), the exact
    dilute-limit D rises strictly with T; its Arrhenius Ea lies in the landscape's physical
    range [Ea_lower, Ea_upper] (a least-squares slope of ln D over 1/kT is a positive average
    of local slopes that each lie in it: exact, so no tolerance beyond round-off); the tasks
    that differ only in temperature ran on one landscape (equal digests), replicas on
    different ones."""
    text = NAFEPO4.format(
        name=f"network-{kind}",
        microstructure=THRESHOLD_MICROSTRUCTURES[kind],
        run='method = "network"\ntemperature = 300.0',
        replicas=3,
        seed=9,
        sweep='"lattice.cells" = [[8, 8, 8], [16, 16, 16]]\n'
        f'"run.temperature" = {json.dumps(NETWORK_TEMPERATURES)}',
    )
    res = _run_config(tmp_path, "run", text)
    assert res.missing == [] and len(res.tasks) == 2 * 4 * 3

    landscapes: dict[int, list[dict]] = {}
    for rec in res.tasks:
        landscapes.setdefault(rec["landscape"], []).append(rec)
    assert len(landscapes) == 6  # 2 cell sizes x 3 replicas
    owner = {(json.dumps(r[0]["lattice.cells"]), r[0]["replica"]) for r in landscapes.values()}
    assert len(owner) == 6  # one landscape per (cells, replica), none shared between them
    digests = {}
    for index, rows in landscapes.items():
        assert len({json.dumps(r["lattice.cells"]) for r in rows}) == 1
        assert len({r["replica"] for r in rows}) == 1
        rows = sorted(rows, key=lambda r: r["run.temperature"])
        assert [r["run.temperature"] for r in rows] == NETWORK_TEMPERATURES
        d = [r["D_tracer"] for r in rows]
        assert all(r["diffusive"] for r in rows)
        assert all(0 < a < b for a, b in itertools.pairwise(d)), (index, d)
        stored = [
            read_task(res.run_dir / "tasks" / task_filename(r["task"]), positions=False)
            for r in rows
        ]
        assert all(t.parameters["landscape"] == index for t in stored)
        found = {t.parameters["landscape_digest"] for t in stored}
        assert len(found) == 1, (index, found)  # one realization across the temperatures
        digests[index] = found.pop()
    assert len(set(digests.values())) == 6, digests  # replicas and cell sizes differ

    fits = res.arrhenius_landscapes
    assert sorted(f["landscape"] for f in fits) == sorted(landscapes)
    for fit in fits:
        assert fit["temperatures"] == 4 and fit["note"] == "", fit
        assert fit["Ea_lower"] - 1e-9 <= fit["Ea_tracer"] <= fit["Ea_upper"] + 1e-9, fit
        assert fit["Ea_jump"] == pytest.approx(fit["Ea_tracer"], rel=1e-12)  # network: D_σ = D*
        rows = landscapes[fit["landscape"]]
        assert fit["Ea_lower"] == rows[0]["Ea_lower"] and fit["Ea_upper"] == rows[0]["Ea_upper"]
    assert len(res.arrhenius) == 2
    assert all(math.isfinite(r["Ea_tracer"]) and r["landscapes"] == 3 for r in res.arrhenius)


#: Issue 9, must show 2: kMC (independent walkers, 50 000 hops per ion) against the exact
#: network D on the same 16³ landscapes.
KMC_VS_NETWORK = {
    "random": ('kind = "random"', [0.2, 0.3, 0.5, 0.6, 0.8, 1.0]),
    "correlated": ('kind = "correlated"\ncorrelation_length = 8.0', [0.3, 0.5, 0.8]),
}
#: below and at the random site-percolation threshold (0.31): kMC does not get there
STUCK = {("random", 0.2), ("random", 0.3)}
AGREEMENT = 0.2  # |D_kmc / D_network - 1|


@pytest.mark.slow
def test_diffusive_flag_against_the_exact_network_d(tmp_path):
    """Issue 9, must show 2 (about 60 s on one core). 205 independent ions, 50 000 hops each,
    on 16³ landscapes that the network solver shares (4 replicas, T = 500 and 600 K).

    (a) random φ = 0.2, 0.3 (at and below the site-percolation threshold 0.31): kMC does not
    reach the diffusive regime (ions rattle in finite clusters): every kMC task is flagged,
    and its upper bound is not below the exact D by more than 3σ, with σ the relative
    scatter of a diffusive kMC D_tracer about the exact D (measured here over the diffusive
    tasks: about 11 %);
    (b) among the tasks whose kMC D_tracer (the slope over [T/4, T/2], reported or not) lies
    within 20 % of the exact D, on at least 20 landscapes, at least 90 % are flagged
    diffusive.
    """
    pairs = []  # (kind, φ, T, landscape, kmc record, D from the kMC slope, network D)
    for kind, (micro, fractions) in KMC_VS_NETWORK.items():
        text = NAFEPO4.format(
            name=f"kmc-vs-network-{kind}",
            microstructure=micro,
            run="temperature = 500.0\nhops_per_ion = 50000\nequilibration_hops_per_ion = 0\n"
            "frames = 100",
            replicas=4,
            seed=17,
            sweep=f'"microstructure.amorphous_fraction" = {json.dumps(fractions)}\n'
            '"run.temperature" = [500.0, 600.0]\n"run.method" = ["kmc", "network"]',
        )
        res = _run_config(tmp_path, kind, text)
        assert res.missing == []
        exact = {
            (r["landscape"], r["run.temperature"]): r["D_tracer"]
            for r in res.tasks
            if r["run.method"] == "network"
        }
        for rec in res.tasks:
            if rec["run.method"] != "kmc":
                continue
            data = read_task(res.run_dir / "tasks" / task_filename(rec["task"]))
            slope = 1e-16 * diffusion_coefficient(data.times, data.positions, hop_distance=3.4)
            if rec["diffusive"]:
                assert slope == pytest.approx(rec["D_tracer"], rel=1e-9)
            phi, temperature = rec["microstructure.amorphous_fraction"], rec["run.temperature"]
            d_exact = exact[(rec["landscape"], temperature)]
            pairs.append((kind, phi, temperature, rec["landscape"], rec, slope, d_exact))

    def show(p):
        kind, phi, temperature, landscape, rec, slope, d_exact = p
        return (
            f"{kind} φ={phi} T={temperature:g} L{landscape}: diffusive={rec['diffusive']} "
            f"msd_growth={rec['msd_growth']:.3g} slope_ratio={rec['slope_ratio']:.3f} "
            f"kmc/network={slope / d_exact:.3f}"
        )

    stuck = [p for p in pairs if (p[0], p[1]) in STUCK]
    assert len(stuck) == 2 * 2 * 4
    flagged_wrongly = [show(p) for p in stuck if p[4]["diffusive"]]
    assert not flagged_wrongly, "\n".join(flagged_wrongly)
    scatter = np.std([p[5] / p[6] for p in pairs if p[4]["diffusive"]], ddof=1)
    assert 0 < scatter < 0.2, scatter
    low = [show(p) for p in stuck if p[4]["D_tracer_upper"] < (1 - 3 * scatter) * p[6]]
    assert not low, "\n".join(low)

    agreeing = [p for p in pairs if abs(p[5] / p[6] - 1) <= AGREEMENT]
    landscapes = {(p[0], p[3]) for p in agreeing}
    diffusive = sum(p[4]["diffusive"] for p in agreeing)
    report = "\n".join(show(p) for p in pairs)
    assert len(landscapes) >= 20, report
    assert diffusive >= 0.9 * len(agreeing), f"{diffusive} of {len(agreeing)}\n{report}"
