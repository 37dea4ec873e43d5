"""Tests of kmc.results: analysis of a run directory, JSON, text table, results.h5.

Run directories are built synthetically: a config.toml with a sweep, expanded with kmc.config,
and task files written with kmc.store whose trajectories are Brownian motion with a known
diffusion coefficient D = D0 exp(-Ea/kT) (1 + φ) per parameter point. Independent Brownian
ions have D_jump = D_tracer = D. Statistical checks accept |z| < 4 with the standard error
from the replicas; all randomness is seeded.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.constants

import kmc.results
from kmc.analysis import BOLTZMANN_EV
from kmc.config import expand_tasks, load_config, resolved_dict
from kmc.results import RunResults, analyze_run, read_results, write_results
from kmc.store import TaskData, read_task, task_filename, write_task

Z_MAX = 4.0
D0 = 1e-3  # cm²/s
EA = 0.30  # eV
HOP = 2.0  # Å
OBS = ("D_tracer", "D_jump", "haven_ratio", "conductivity")

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


def true_d(temperature: float, fraction: float) -> float:
    """The known diffusion coefficient of the synthetic trajectories, cm²/s."""
    return D0 * math.exp(-EA / (BOLTZMANN_EV * temperature)) * (1.0 + fraction)


def synthetic_task(task, n_ions: int, n_frames: int, dim: int) -> TaskData:
    """Brownian trajectory with D = true_d(T, φ), sampled so that one frame is about one
    hop per axis (like a kmc run of fixed length in hops)."""
    temperature = task.config.run.temperature
    fraction = task.config.microstructure.amorphous_fraction
    d_a2 = true_d(temperature, fraction) * 1e16  # Å²/s
    dt = HOP**2 / (2.0 * d_a2)
    rng = np.random.default_rng([11, task.index])
    steps = rng.normal(size=(n_frames - 1, n_ions, dim)) * math.sqrt(2.0 * d_a2 * dt)
    start = rng.uniform(0.0, 8.0, size=(1, n_ions, dim))
    positions = np.concatenate([start, start + np.cumsum(steps, axis=0)])
    return TaskData(
        times=dt * np.arange(n_frames),
        positions=positions,
        sites=rng.integers(0, 64, size=(n_frames, n_ions)).astype(np.int32),
        box=np.full(dim, 4 * HOP),
        species="Na",
        parameters={
            "config": resolved_dict(task.config),
            "point": task.plain_point,
            "replica": task.replica,
        },
        task=task.index,
        seed_entropy=11,
        spawn_key=(task.index,),
        observables={
            # deliberately wrong D values: analyze_run must recompute them
            "D_tracer": -1.0,
            "D_jump": -1.0,
            "haven_ratio": -1.0,
            "conductivity": -1.0,
            "hops": 1000 + task.index,
            "simulated_time": dt * (n_frames - 1),
            "kernel_seconds": 0.25,
            "diffusive": 1,
            "fit_start": 0.0,
            "fit_stop": 0.0,
        },
    )


def make_run(
    root: Path,
    sweep: dict | None = None,
    *,
    replicas: int = 2,
    n_ions: int = 24,
    n_frames: int = 40,
    dim: int = 3,
) -> Path:
    """A complete synthetic run directory under ``root``."""
    sweep = DEFAULT_SWEEP if sweep is None else sweep
    kind, cells = {1: ("chain", [64]), 2: ("square", [8, 8]), 3: ("cubic", [4, 4, 4])}[dim]
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
    for task in expand_tasks(load_config(run / "config.toml")):
        data = synthetic_task(task, n_ions, n_frames, dim)
        write_task(run / "tasks" / task_filename(task.index), data, compression=None)
    return run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def results(run_dir) -> RunResults:
    return analyze_run(run_dir)


# --------------------------------------------------------------------------- layout


def test_record_keys(results):
    swept = list(DEFAULT_SWEEP)
    assert results.swept == swept
    assert results.missing == []
    assert len(results.tasks) == 18 and len(results.summary) == 9
    task_keys = [
        "task", "replica", *swept, "hops", "simulated_time", "kernel_seconds", *OBS,
    ]  # fmt: skip
    for i, rec in enumerate(results.tasks):
        assert list(rec) == task_keys
        assert rec["task"] == i and rec["replica"] == i % 2
    summary_keys = [*swept, "replicas", *(c for k in OBS for c in (k, f"{k}_err"))]
    for rec in results.summary:
        assert list(rec) == summary_keys
        assert rec["replicas"] == 2
    # sweep order: the first key varies slowest
    assert [r["microstructure.amorphous_fraction"] for r in results.summary[:4]] == [0, 0, 0, 0.5]
    assert [r["run.temperature"] for r in results.summary[:3]] == [300.0, 350.0, 400.0]
    arrhenius_keys = [
        "microstructure.amorphous_fraction", "Ea_tracer", "Ea_tracer_err", "Ea_jump",
        "Ea_jump_err",
    ]  # fmt: skip
    assert [list(r) for r in results.arrhenius] == [arrhenius_keys] * 3


def test_observables_recomputed_and_stored_ones_kept(results):
    for rec in results.tasks:
        # the stored D values were -1: these are recomputed from the trajectories
        assert rec["D_tracer"] > 0 and rec["conductivity"] != -1.0
        assert rec["hops"] == 1000 + rec["task"] and isinstance(rec["hops"], int)
        assert rec["kernel_seconds"] == 0.25 and rec["simulated_time"] > 0


def test_summary_from_stored_observables(run_dir):
    """recompute=False (the end of kmc run) takes the stored D values (-1 here) as they are."""
    quick = analyze_run(run_dir, recompute=False)
    assert [rec["task"] for rec in quick.tasks] == list(range(len(quick.tasks)))
    assert all(rec["D_tracer"] == -1.0 and rec["D_jump"] == -1.0 for rec in quick.tasks)
    assert all(rec["hops"] == 1000 + rec["task"] for rec in quick.tasks)


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
    run = make_run(tmp_path_factory.mktemp("precise"), replicas=6, n_ions=40, n_frames=80)
    return analyze_run(run)


def test_recovers_known_d(precise):
    for rec in precise.summary:
        expected = true_d(rec["run.temperature"], rec["microstructure.amorphous_fraction"])
        for key in ("D_tracer", "D_jump"):
            z = (rec[key] - expected) / rec[f"{key}_err"]
            assert abs(z) < Z_MAX, (key, rec, expected, z)
        z = (rec["haven_ratio"] - 1.0) / rec["haven_ratio_err"]
        assert abs(z) < Z_MAX, rec


def test_conductivity_is_nernst_einstein(precise):
    n = 40 / (4 * HOP) ** 3 * 1e30  # ions per m³
    e, k = scipy.constants.e, scipy.constants.k
    for rec in precise.tasks:
        expected = n * e**2 * rec["D_jump"] * 1e-4 / (k * rec["run.temperature"]) * 1e-2
        assert rec["conductivity"] == pytest.approx(expected, rel=1e-9)


def test_haven_ratio_is_ratio_of_means(precise):
    for rec in precise.summary:
        assert rec["haven_ratio"] == pytest.approx(rec["D_tracer"] / rec["D_jump"], rel=1e-12)


def test_recovers_activation_energy(precise):
    assert len(precise.arrhenius) == 3
    for rec in precise.arrhenius:
        for key in ("Ea_tracer", "Ea_jump"):
            assert rec[f"{key}_err"] > 0
            z = (rec[key] - EA) / rec[f"{key}_err"]
            assert abs(z) < Z_MAX, (key, rec)
        assert rec["Ea_tracer_err"] < 0.05


def test_no_arrhenius_without_temperature_sweep(tmp_path):
    run = make_run(tmp_path, {"microstructure.amorphous_fraction": [0.0, 1.0]})
    res = analyze_run(run)
    assert res.arrhenius == []
    assert "Arrhenius" not in res.table()
    assert len(res.summary) == 2 and list(res.tasks[0])[2] == "microstructure.amorphous_fraction"


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
    # φ = 1.0 lost T = 400 K entirely: its Ea is fitted from 300 and 350 K alone
    assert math.isfinite(res.arrhenius[2]["Ea_tracer"])
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
    with pytest.raises(ValueError, match="does not belong to task 0"):
        analyze_run(run)


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

    monkeypatch.setattr(kmc.results, "read_task", fake)
    res = analyze_run(run)
    rec = res.tasks[1]
    assert (rec["D_tracer"], rec["D_jump"], rec["haven_ratio"]) == (2e-7, 2e-7, 1.0)
    assert rec["conductivity"] == 1e-3 and rec["hops"] == 1001
    assert res.tasks[0]["D_tracer"] > 0 and res.tasks[0]["D_tracer"] != 2e-7


# --------------------------------------------------------------------------- output


def test_json_is_one_object(results):
    text = results.to_json()
    payload = json.loads(text)
    assert list(payload) == ["summary", "tasks", "arrhenius"]
    assert payload["tasks"] == json.loads(json.dumps(results.tasks))
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
    assert payload["arrhenius"][0] == {
        k: v for k, v in payload["arrhenius"][0].items() if k.startswith("Ea_")
    }


def test_table(results):
    text = results.table()
    lines = text.splitlines()
    assert "microstructure.amorphous_fraction" in lines[1] and "D_tracer [cm^2/s]" in lines[1]
    assert len([line for line in lines if "±" in line and "e-" in line]) >= 9
    assert "Arrhenius" in text and "eV" in text


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def test_results_h5_round_trip(tmp_path, results):
    path = write_results(results, tmp_path / "results.h5")
    assert path == tmp_path / "results.h5"
    assert [p.name for p in tmp_path.iterdir()] == ["results.h5"]  # no temporary left
    back = read_results(path)
    for name in ("tasks", "summary", "arrhenius"):
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
