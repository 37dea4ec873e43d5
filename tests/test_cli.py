"""End-to-end tests of the ``kmc`` command: the user contract of SPEC.md and README.md.

Every test runs the real command in a subprocess (``python -m kmc.cli`` with the interpreter
running the tests, or ``mpiexec -n 2 python -m kmc.cli``) on small configs written into a
temporary directory, and checks what a user sees: exit status, stdout/stderr, and the files
of the run directory.

Runs are shared between tests by module-scope fixtures. The longer independent runs (the
temperature sweep, the MDAnalysis walkers, the uninterrupted reference of the kill test and
the quick start) are started at once in one background thread, so that they use a second
core while the quick checks run; a test that needs one waits for it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import importlib.util
import itertools
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import kmc.runner  # before any capsys: see below
from kmc.analysis import TENSOR_KEYS, THERMODYNAMIC_KEYS, fit_window
from kmc.store import is_complete, read_task, task_filename

# kmc.runner is imported here, before any test's capsys: its run(..., log=sys.stderr) binds
# the stream at import, and a capsys stream is closed after its test, so a kmc.cli.main run in
# a later test would write its progress to a closed file.

KMC = [sys.executable, "-m", "kmc.cli"]
TIMEOUT = 300  # s, for any one command (they take seconds; the quick start ~30 s)

# A small sweep (3 points x 2 replicas = 6 tasks) that runs in ~1 s. Every task is diffusive
# (homogeneous lattices at φ = 0 and 1, φ = 0.5 far above percolation): 154 ions, 2000 hops
# each, so the MSD grows by ~300 a² over [T/4, T/2] (the test needs 100 a²) and its slope
# ratio scatters by ~0.06 about 1 (the test allows 0.2).
SMALL = """\
name = "small"

[lattice]
kind = "cubic"
cells = [8, 8, 8]
hop_distance = 3.0

[ions]
species = "Na"
concentration = 0.3

[crystal]
saddle_energy = 0.9

[amorphous]
saddle_energy = { dist = "normal", mean = 0.5, sigma = 0.03 }

[run]
temperature = 600.0
hops_per_ion = 2000
equilibration_hops_per_ion = 20
frames = 20
replicas = 2
seed = 7

[sweep]
"microstructure.amorphous_fraction" = [0.0, 0.5, 1.0]
"""
N_SMALL_TASKS = 6
PHI = [0.0, 0.5, 1.0]
SWEEP_PHI = '"microstructure.amorphous_fraction" = [0.0, 0.5, 1.0]'
AMORPHOUS_TABLE = '[amorphous]\nsaddle_energy = { dist = "normal", mean = 0.5, sigma = 0.03 }\n'

# The same with a temperature sweep (3 x 2 points x 2 replicas = 12 tasks): Arrhenius fits.
TEMPS = SMALL.replace('name = "small"', 'name = "temps"') + '"run.temperature" = [500.0, 600.0]\n'

# Independent walkers on one fully amorphous landscape: many ions, one task, for MDAnalysis.
WALKERS = """\
name = "walkers"

[lattice]
kind = "cubic"
cells = [8, 8, 8]
hop_distance = 3.0

[ions]
species = "Na"
count = 400
exclusion = false

[crystal]
saddle_energy = 0.9

[amorphous]
saddle_energy = { dist = "normal", mean = 0.5, sigma = 0.03 }

[microstructure]
amorphous_fraction = 1.0

[run]
temperature = 600.0
hops_per_ion = 2000
equilibration_hops_per_ion = 20
frames = 100
replicas = 1
seed = 11
"""
WALKER_COUNT, WALKER_GROUPS, WALKER_FRAMES, WALKER_HOP = 400, 8, 100, 3.0

# Long enough (24 tasks, ~3 s) to be killed partway.
LONG = (
    SMALL.replace('name = "small"', 'name = "long"')
    .replace("hops_per_ion = 2000", "hops_per_ion = 3000")
    .replace("replicas = 2", "replicas = 8")
)
N_LONG_TASKS = 24

OBSERVABLES = ("D_tracer", "D_jump", "haven_ratio", "conductivity")
UPPER = ("D_tracer_upper", "D_jump_upper", "conductivity_upper")
TASK_KEYS = {
    "task",
    "replica",
    "landscape",
    "microstructure.amorphous_fraction",
    "hops",
    "simulated_time",
    "kernel_seconds",
    "work",
    "status",
    *OBSERVABLES,
    *UPPER,
    "diffusive",
    "diffusive_reason",
    "msd_growth",
    "slope_ratio",
    "Ea_lower",
    "Ea_upper",
    "percolating",
    "percolating_x",
    "percolating_y",
    "percolating_z",
    "spanning_fraction",
    "critical_barrier",
    *TENSOR_KEYS,  # the test configs are cubic: every component applies
    *THERMODYNAMIC_KEYS,  # and lattice gases in equilibrium
    "thermodynamic_reason",
    "order_parameter",  # on a bipartite lattice (8³ simple cubic)
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- helpers


def _environment() -> dict[str, str]:
    """os.environ without the variables by which an MPI launcher marks its ranks, so that a
    plain ``kmc`` subprocess is serial even if pytest itself was started under mpiexec."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PMI_", "PMIX_", "OMPI_COMM_WORLD_"))
    }


def kmc(*args, cwd: Path | None = None, mpi: int = 0) -> subprocess.CompletedProcess:
    """Run ``kmc ARGS`` (under ``mpiexec -n MPI`` if ``mpi``) and return the finished process."""
    command = [*KMC, *map(str, args)]
    if mpi:
        command = [shutil.which("mpiexec"), "-n", str(mpi), *command]
    return subprocess.run(
        command,
        cwd=cwd,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def ok(process: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """Assert that a command succeeded, showing its output if not."""
    assert process.returncode == 0, (
        f"{process.args} exited {process.returncode}\n"
        f"stdout:\n{process.stdout}\nstderr:\n{process.stderr}"
    )
    return process


def analyze_json(run_dir: Path) -> dict:
    """``kmc analyze RUN --json`` parsed; stdout must be exactly one JSON object."""
    out = ok(kmc("analyze", run_dir, "--json")).stdout
    decoded = json.loads(out)  # raises on anything but exactly one JSON document
    assert isinstance(decoded, dict)
    return decoded


def without_wall_time(value):
    """The analyze output with every ``kernel_seconds`` (wall time, not reproducible) dropped."""
    if isinstance(value, dict):
        return {k: without_wall_time(v) for k, v in value.items() if k != "kernel_seconds"}
    if isinstance(value, list):
        return [without_wall_time(v) for v in value]
    return value


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def edit(text: str, *edits: tuple[str, str]) -> str:
    for old, new in edits:
        assert old in text, f"test bug: {old!r} not in the config"
        text = text.replace(old, new)
    return text


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root``: (sha256, size, mtime_ns) for a file, ("dir",) for a dir."""
    state: dict[str, tuple] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_dir():
            state[rel] = ("dir",)
        else:
            info = path.stat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            state[rel] = (digest, info.st_size, info.st_mtime_ns)
    return state


def temporary_files(root: Path) -> list[str]:
    """Leftovers of atomic writes (``.task-*.tmp.*``, ``*.tmp``, ``.x.tmp.PID``) under root."""
    pattern = re.compile(r"\.tmp$|\.tmp\.")
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if pattern.search(p.name))


def complete_tasks(run_dir: Path, n_tasks: int) -> list[int]:
    return [k for k in range(n_tasks) if is_complete(run_dir / "tasks" / task_filename(k))]


def mpi_or_skip() -> None:
    if shutil.which("mpiexec") is None:
        pytest.skip("mpiexec is not on PATH (pip install -e '.[mpi]' brings the mpich wheel)")
    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip("mpi4py is not installed (pip install -e '.[mpi]')")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


def _run_config(work: Path, name: str, text: str) -> tuple[Path, subprocess.CompletedProcess]:
    run_dir = work / name
    return run_dir, kmc("run", write(work / "configs" / f"{name}.toml", text), "--output", run_dir)


def _run_quickstart(work: Path, repo_root: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """The README's main job, in a fresh directory holding a copy of configs/."""
    home = work / "quickstart-home"
    shutil.copytree(repo_root / "configs", home / "configs")
    return home, kmc("run", "configs/quickstart.toml", cwd=home)


class Background:
    """Long runs in one worker thread (a second core); ``result(name)`` waits for one."""

    def __init__(self, jobs: dict[str, Callable[[], tuple]], wanted: list[str]) -> None:
        self._jobs = jobs
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self._futures = {name: self._pool.submit(jobs[name]) for name in wanted}

    def result(self, name: str) -> tuple[Path, subprocess.CompletedProcess]:
        if name not in self._futures:  # a test not foreseen below asked for it
            self._futures[name] = self._pool.submit(self._jobs[name])
        run_dir, process = self._futures[name].result()
        ok(process)
        return run_dir, process

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# which tests consume each background job, in the order the jobs are started
_CONSUMERS = {
    "temps": {
        "test_analyze_of_temperature_sweep_gives_arrhenius",
        "test_plot_command_writes_png",
        "test_reordered_sweep_is_another_run",
    },
    "walkers": {"test_mdanalysis_reads_task_file_and_agrees_on_tracer_d"},
    "long": {
        "test_killed_run_resumes_to_the_same_result",
        "test_signal_stops_cleanly_and_the_rerun_is_identical",
    },
    "quickstart": {"test_quickstart_as_the_readme_says"},
}


@pytest.fixture(scope="module", autouse=True)
def background(request, work, repo_root):
    """Start the long runs that the selected tests of this module need, right away."""
    jobs = {
        "temps": lambda: _run_config(work, "temps", TEMPS),
        "walkers": lambda: _run_config(work, "walkers", WALKERS),
        "long": lambda: _run_config(work, "long-reference", LONG),
        "quickstart": lambda: _run_quickstart(work, repo_root),
    }
    selected = {
        getattr(item, "originalname", item.name)
        for item in request.session.items
        if getattr(item, "module", None) is request.module
    }
    wanted = [name for name, consumers in _CONSUMERS.items() if consumers & selected]
    runner = Background(jobs, wanted)
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def long_json(background) -> dict:
    """The analysis of the LONG config's uninterrupted run, without wall times."""
    reference, _ = background.result("long")
    return without_wall_time(analyze_json(reference))


@pytest.fixture(scope="module")
def small_config(work) -> Path:
    return write(work / "configs" / "small.toml", SMALL)


@pytest.fixture(scope="module")
def serial_run(work, small_config) -> tuple[Path, subprocess.CompletedProcess]:
    run_dir = work / "serial"
    return run_dir, ok(kmc("run", small_config, "--output", run_dir))


@pytest.fixture(scope="module")
def serial_json(serial_run) -> dict:
    return analyze_json(serial_run[0])


@pytest.fixture
def existing_run(serial_run, tmp_path) -> tuple[Path, dict, Path]:
    """A completed run directory of this test's own (a copy), its snapshot, and an empty
    scratch directory."""
    run_dir = tmp_path / "existing"
    shutil.copytree(serial_run[0], run_dir)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    return run_dir, snapshot(run_dir), scratch


# --------------------------------------------------------------------------- kmc run


def test_run_writes_run_directory_and_says_where(serial_run):
    run_dir, process = serial_run
    assert (run_dir / "config.toml").read_text(encoding="utf-8") == SMALL  # as given
    assert sorted(p.name for p in (run_dir / "tasks").iterdir()) == [
        task_filename(k) for k in range(N_SMALL_TASKS)
    ]
    assert complete_tasks(run_dir, N_SMALL_TASKS) == list(range(N_SMALL_TASKS))
    assert (run_dir / "results.h5").is_file()
    assert (run_dir / "plot.png").read_bytes()[:8] == PNG_SIGNATURE
    results = re.escape(str(run_dir / "results.h5"))
    plot = re.escape(str(run_dir / "plot.png"))
    assert re.search(rf"^results:\s+{results}$", process.stdout, re.M), process.stdout
    assert re.search(rf"^plot:\s+{plot}$", process.stdout, re.M), process.stdout
    assert "Traceback" not in process.stderr
    assert temporary_files(run_dir) == []


def test_mpi_run_is_identical_to_serial_run(work, small_config, serial_json):
    mpi_or_skip()
    run_dir = work / "mpi"
    process = ok(kmc("run", small_config, "--output", run_dir, mpi=2))
    assert "on 2 rank(s)" in process.stderr, f"mpiexec did not give kmc 2 ranks:\n{process.stderr}"
    assert process.stdout.count("results:") == 1, "only rank 0 should summarize"
    assert complete_tasks(run_dir, N_SMALL_TASKS) == list(range(N_SMALL_TASKS))
    mpi_json = analyze_json(run_dir)
    assert len(mpi_json["tasks"]) == N_SMALL_TASKS
    assert without_wall_time(mpi_json) == without_wall_time(serial_json)


def test_rerun_of_a_completed_run_does_nothing(serial_run, small_config, serial_json):
    run_dir = serial_run[0]
    tasks_before = snapshot(run_dir / "tasks")
    config_before = snapshot(run_dir)["config.toml"]
    process = ok(kmc("run", small_config, "--output", run_dir))
    assert snapshot(run_dir / "tasks") == tasks_before  # no task recomputed or rewritten
    assert snapshot(run_dir)["config.toml"] == config_before
    assert f"{N_SMALL_TASKS} already done, 0 to run" in process.stderr, process.stderr
    assert "Traceback" not in process.stderr
    assert analyze_json(run_dir) == serial_json


def dry_run(capsys, *args) -> tuple[int, str, str]:
    """``kmc run --dry-run ARGS`` in this process: (exit status, stdout, stderr)."""
    from kmc.cli import main

    status = main(["run", "--dry-run", *map(str, args)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_dry_run_lists_the_quickstart_tasks_and_writes_nothing(
    repo_root, tmp_path, capsys, monkeypatch
):
    from kmc.config import estimate_memory, format_bytes, load_config

    monkeypatch.chdir(tmp_path)  # where a default runs/<name> would appear
    path = repo_root / "configs" / "quickstart.toml"
    status, out, err = dry_run(capsys, path, "--output", tmp_path / "out")
    assert status == 0, err
    assert err == ""
    assert list(tmp_path.iterdir()) == [], "a dry run wrote something"
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    n_points = math.prod(len(values) for values in data["sweep"].values())
    n_tasks = n_points * data["run"]["replicas"]
    assert n_tasks == 108  # README, Quick start
    rows = [line for line in out.splitlines() if re.match(r"\d+ ", line)]
    assert [int(row.split()[0]) for row in rows] == list(range(n_points))  # one per point
    assert f"tasks:  {n_tasks} ({n_points} sweep point(s)" in out, out
    assert f"0 already complete in {tmp_path / 'out'} (does not exist yet), {n_tasks} to run" in out
    peak = format_bytes(estimate_memory(load_config(path)))
    assert re.search(rf"^memory: at most {re.escape(peak)} per task", out, re.M), out
    assert re.search(r"^disk: .* per task, .* uncompressed upper bound", out, re.M), out


def test_dry_run_on_an_existing_run_counts_complete_tasks(existing_run, small_config, capsys):
    run_dir, _, _ = existing_run
    (run_dir / "tasks" / task_filename(4)).unlink()
    before = snapshot(run_dir)
    status, out, err = dry_run(capsys, small_config, "-o", run_dir)
    assert status == 0, err
    assert f"{N_SMALL_TASKS - 1} already complete in {run_dir}, 1 to run" in out, out
    assert snapshot(run_dir) == before


def test_dry_run_of_a_bad_config_is_one_error_line(tmp_path, capsys):
    config = write(tmp_path / "cold.toml", edit(SMALL, ("600.0", "-300.0")))
    status, out, err = dry_run(capsys, config, "--output", tmp_path / "out")
    assert status == 2 and out == ""
    assert err.splitlines() == [f"kmc: error: {config}: run.temperature: must be > 0, not -300.0"]
    assert list(tmp_path.iterdir()) == [config]


# --------------------------------------------------------------------------- kmc analyze


def test_analyze_json_records(serial_run, serial_json):
    run_dir = serial_run[0]
    assert set(serial_json) == {"summary", "tasks", "arrhenius", "arrhenius_landscapes"}
    assert serial_json["arrhenius"] == [] == serial_json["arrhenius_landscapes"]  # no T sweep

    tasks = serial_json["tasks"]
    assert [t["task"] for t in tasks] == list(range(N_SMALL_TASKS))
    assert [t["replica"] for t in tasks] == [0, 1] * 3  # replicas innermost
    assert [t["microstructure.amorphous_fraction"] for t in tasks] == [p for p in PHI for _ in "ab"]
    # one landscape per (φ, replica): kmc.config.expand_tasks
    assert [t["landscape"] for t in tasks] == list(range(N_SMALL_TASKS))
    for record in tasks:
        assert set(record) == TASK_KEYS
        assert isinstance(record["hops"], int) and record["hops"] > 0
        assert record["simulated_time"] > 0 and record["D_tracer"] > 0
        assert record["diffusive"] is True and record["diffusive_reason"] == "", record
        assert all(record[key] is None for key in UPPER)
        assert record["msd_growth"] >= 100  # a² over [T/4, T/2]: the diffusive test's bar
        assert 0 < record["Ea_lower"] <= record["Ea_upper"]
        stored = read_task(run_dir / "tasks" / task_filename(record["task"]))
        assert record["simulated_time"] == pytest.approx(stored.times[-1], rel=1e-12)
        assert record["hops"] == stored.observables["hops"]
        # analyze recomputes from the stored trajectory what the run computed in memory
        for key in ("D_tracer", "D_jump", "conductivity", "msd_growth", "slope_ratio"):
            assert record[key] == pytest.approx(stored.observables[key], rel=1e-9), key
        assert record["diffusive"] == bool(stored.observables["diffusive"])
        assert record["landscape"] == stored.parameters["landscape"]
        assert record["Ea_lower"] == stored.observables["Ea_lower"]
        fraction = stored.observables["spanning_fraction"]  # nan (null) without amorphous sites
        assert record["spanning_fraction"] == (None if math.isnan(fraction) else fraction)

    summary = serial_json["summary"]
    assert [s["microstructure.amorphous_fraction"] for s in summary] == PHI
    expected = {"microstructure.amorphous_fraction", "replicas", "diffusive_replicas"}
    expected |= {"diffusive", "note", *UPPER}
    expected |= {f"{key}{suffix}" for key in OBSERVABLES for suffix in ("", "_err")}
    expected |= {f"{key}{suffix}" for key in TENSOR_KEYS for suffix in ("", "_err")}
    expected |= {
        f"{key}{suffix}"
        for key in (*THERMODYNAMIC_KEYS, "order_parameter")
        for suffix in ("", "_err")
    }
    percolation_keys = ("percolating", "spanning_fraction", "critical_barrier")
    expected |= {f"{key}{suffix}" for key in percolation_keys for suffix in ("", "_err")}
    for point, record in zip(PHI, summary, strict=True):
        assert set(record) == expected
        assert record["replicas"] == 2 == record["diffusive_replicas"]
        assert record["diffusive"] is True and record["note"] == ""
        assert all(record[key] is None for key in UPPER)
        values = [t["D_tracer"] for t in tasks if t["microstructure.amorphous_fraction"] == point]
        assert record["D_tracer"] == pytest.approx(np.mean(values), rel=1e-12)
        assert record["D_tracer_err"] == pytest.approx(np.std(values, ddof=1) / math.sqrt(2))
    # amorphization speeds diffusion up by orders of magnitude (0.9 eV vs 0.5 eV saddles)
    assert summary[2]["D_tracer"] > 100 * summary[0]["D_tracer"]
    # the physically possible activation energies: the crystal has one barrier, 0.9 eV
    for record in tasks[:2]:
        assert record["Ea_lower"] == pytest.approx(0.9) == record["Ea_upper"]


# --------------------------------------------------------------------------- bad input

# id -> edits (old, new) of SMALL, and what the one error line must name besides the file
BAD_CONFIGS = {
    "toml-syntax": ([('kind = "cubic"', 'kind = "cubic')], ["line"]),
    "unknown-key": ([("seed = 7", "seed = 7\nwalltime = 10")], ["run.walltime"]),
    "misspelt-key": ([("temperature = 600.0", "temperatur = 600.0")], ["run.temperatur"]),
    "wrong-type": ([("temperature = 600.0", 'temperature = "hot"')], ["run.temperature"]),
    "negative-temperature": ([("600.0", "-300.0")], ["run.temperature"]),
    "concentration-1": ([("concentration = 0.3", "concentration = 1.0")], ["ions.concentration"]),
    "fraction-above-1": (
        [
            (SWEEP_PHI, '"run.temperature" = [600.0]'),
            ("[run]", "[microstructure]\namorphous_fraction = 1.5\n\n[run]"),
        ],
        ["microstructure.amorphous_fraction"],
    ),
    "swept-fraction-above-1": ([("1.0]", "1.2]")], ["microstructure.amorphous_fraction"]),
    "empty-sweep": ([("[0.0, 0.5, 1.0]", "[]")], ["sweep.microstructure.amorphous_fraction"]),
    "sweep-unknown-key": ([(SWEEP_PHI, '"run.temprature" = [1.0]')], ["sweep.run.temprature"]),
    "missing-table": ([(AMORPHOUS_TABLE, "")], ["amorphous"]),
    "bad-distribution": ([("sigma = 0.03", "sigma = -0.03")], ["amorphous.saddle_energy"]),
    "too-large-for-memory": (
        [("cells = [8, 8, 8]", "cells = [100000, 100000, 100000]")],
        ["lattice.cells"],
    ),
    # the network solver is single-ion: with site exclusion it would silently mean another model
    "network-with-exclusion": ([("[run]\n", '[run]\nmethod = "network"\n')], ["ions.exclusion"]),
    # a valid config, but the output directory holds a different run: name the directory
    "different-run-in-output": ([("seed = 7", "seed = 8")], ["{run}"]),
    # an applied field: one component per axis, finite, not a V/m value typed as V/cm
    "field-wrong-shape": ([("[run]\n", "[run]\nfield = [1e4, 0]\n")], ["run.field"]),
    "field-nan": ([("[run]\n", "[run]\nfield = nan\n")], ["run.field"]),
    "field-unit-mistake": ([("[run]\n", "[run]\nfield = 1e9\n")], ["run.field", "unit"]),
    # issue 14: accepted before, then a traceback or nonsense
    "name-300-characters": ([('name = "small"', f'name = "{"s" * 300}"')], ["name", "255"]),
    "toml-nested-3000-deep": (
        [("[lattice]", "x = " + "[" * 3000 + "]" * 3000 + "\n[lattice]")],
        ["nested"],
    ),
    "temperature-2-K": ([("600.0", "2.0")], ["run.temperature", "no ion can move"]),
    "count-fills-every-site": ([("concentration = 0.3", "count = 512")], ["ions.count"]),
    "hop-distance-1e308": (
        [("hop_distance = 3.0", "hop_distance = 1e308")],
        ["lattice.hop_distance"],
    ),
    "attempt-frequency-1e290": (
        [("[crystal]\n", "[crystal]\nattempt_frequency = 1e290\n")],
        ["crystal.attempt_frequency"],
    ),
    "hops-per-ion-1e300": (
        [("hops_per_ion = 2000", "hops_per_ion = 1e300")],
        ["run.hops_per_ion"],
    ),
}

# id -> argv ({run}: the existing run, {tmp}: an empty scratch directory), what it must name
BAD_ARGUMENTS = {
    "unknown-subcommand": (["frobnicate", "{run}"], ["frobnicate"]),
    "missing-config-file": (["run", "{tmp}/nowhere.toml", "--output", "{run}"], ["nowhere.toml"]),
    "analyze-non-run-directory": (["analyze", "{tmp}", "--json"], ["{tmp}"]),
    "export-missing-task": (["export", "{run}", "--task", "999", "-o", "{tmp}/x.xyz"], ["999"]),
    "export-task-not-a-number": (["export", "{run}", "--task", "one"], ["--task"]),
    "export-negative-task": (["export", "{run}", "--task", "-1", "-o", "{tmp}/x.xyz"], ["-1"]),
    "export-into-missing-directory": (
        ["export", "{run}", "--task", "0", "-o", "{tmp}/no/such/dir/x.extxyz"],
        ["{tmp}/no/such/dir"],
    ),
    "plot-into-missing-directory": (
        ["plot", "{run}", "-o", "{tmp}/no/such/dir/x.png"],
        ["{tmp}/no/such/dir"],
    ),
    "plot-into-a-directory": (["plot", "{run}", "-o", "{tmp}"], ["{tmp}", "is a directory"]),
    "export-into-a-directory": (
        ["export", "{run}", "--task", "0", "-o", "{tmp}"],
        ["{tmp}", "is a directory"],
    ),
}


def check_refused(process: subprocess.CompletedProcess, names: list[str]) -> None:
    """Exit status 2, exactly one line on stderr naming everything in ``names``, no traceback."""
    shown = f"stdout:\n{process.stdout}\nstderr:\n{process.stderr}"
    assert process.returncode == 2, f"exit status {process.returncode}\n{shown}"
    assert "Traceback" not in process.stderr + process.stdout, shown
    lines = process.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr\n{shown}"
    for name in names:
        assert name in lines[0], f"{name!r} not named in {lines[0]!r}"


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_is_refused_and_touches_nothing(case, existing_run):
    run_dir, before, scratch = existing_run
    edits, names = BAD_CONFIGS[case]
    config = write(scratch / f"{case}.toml", edit(SMALL, *edits))
    names = [n.format(run=run_dir) for n in names]
    if case != "different-run-in-output":  # otherwise the run directory is what is wrong
        names.append(config.name)
    check_refused(kmc("run", config, "--output", run_dir), names)
    assert snapshot(run_dir) == before, "the existing run directory was changed"
    assert list(scratch.iterdir()) == [config], "something was written next to the config"


@pytest.mark.parametrize("case", list(BAD_ARGUMENTS))
def test_bad_argument_is_refused_and_touches_nothing(case, existing_run):
    run_dir, before, scratch = existing_run
    argv, names = BAD_ARGUMENTS[case]
    fill = {"run": run_dir, "tmp": scratch}
    check_refused(kmc(*(a.format(**fill) for a in argv)), [n.format(**fill) for n in names])
    assert snapshot(run_dir) == before, "the existing run directory was changed"
    assert list(scratch.iterdir()) == [], "an output file was (partly) written"


def test_bad_config_under_mpi_is_one_line(existing_run):
    mpi_or_skip()
    run_dir, before, scratch = existing_run
    config = write(scratch / "cold.toml", edit(SMALL, ("600.0", "-300.0")))
    process = kmc("run", config, "--output", run_dir, mpi=2)
    check_refused(process, ["cold.toml", "run.temperature"])
    assert snapshot(run_dir) == before


def test_network_method_is_not_silently_run_as_kmc(tmp_path):
    """README: ``run.method``: kmc (network: not yet available). A config asking for the
    network solver must be refused naming run.method, or really solved without a trajectory
    (SPEC: "no trajectory"); it must not be run as kMC under another name."""
    text = edit(
        SMALL,
        ("[run]\n", '[run]\nmethod = "network"\n'),
        ("concentration = 0.3", "concentration = 0.3\nexclusion = false"),  # single-ion model
        ("replicas = 2", "replicas = 1"),
        (SWEEP_PHI, '"run.temperature" = [600.0]'),
    )
    config = write(tmp_path / "network.toml", text)
    run_dir = tmp_path / "network-run"
    process = kmc("run", config, "--output", run_dir)
    if process.returncode == 2:
        check_refused(process, ["network.toml", "run.method"])
        assert not run_dir.exists()
    else:
        ok(process)
        stored = read_task(run_dir / "tasks" / task_filename(0))
        assert stored.parameters["config"]["run"]["method"] == "network"
        assert stored.positions.shape[0] == 0, "run.method = 'network' ran a kMC trajectory"


# --------------------------------------------------------------------------- non-diffusive tasks

# A quick-start-like electrode (8³, 1.6 eV crystal, amorphous saddles N(0.70, 0.05), interface
# 1.15 eV) at 400 and 450 K. φ = 0.2 is far below the site-percolation threshold (0.31): the
# ions rattle in isolated amorphous clusters of a few sites (crystal hops 1.6 eV: ~1e-7 /s,
# escapes over the interface 1.15 eV: ~0.03 /s in a run of ~1 s), so every such task is
# certainly not diffusive, however long. φ = 1.0 is diffusive: 154 ions, 3000 hops each, the
# MSD grows by ~400 a² over [T/4, T/2] (the test needs 100 a²).
STUCK = """\
name = "stuck"

[lattice]
kind = "cubic"
cells = [8, 8, 8]
hop_distance = 3.4

[ions]
species = "Na"
concentration = 0.3

[crystal]
attempt_frequency = 1e13
saddle_energy = 1.6

[amorphous]
site_energy = { dist = "normal", mean = 0.0, sigma = 0.03 }
saddle_energy = { dist = "normal", mean = 0.70, sigma = 0.05 }

[interface]
saddle_energy = 1.15

[microstructure]
kind = "random"

[run]
temperature = 400.0
hops_per_ion = 3000
equilibration_hops_per_ion = 200
frames = 50
replicas = 2
seed = 3

[sweep]
"microstructure.amorphous_fraction" = [0.2, 1.0]
"run.temperature" = [400.0, 450.0]
"""
BOUNDED = ("D_tracer", "D_jump", "conductivity")
#: a minus sign before a digit that is not an exponent's
NEGATIVE = re.compile(r"(?<![eE\d])-\d")


def table_rows(text: str) -> list[dict[str, str]]:
    """The summary table of ``kmc run`` / ``kmc analyze``: one dict per row, header -> cell."""
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if "D_tracer [cm^2/s]" in line)
    header = lines[at]
    names = re.split(r"\s{2,}", header.strip())
    starts = [header.index(name) for name in names]
    rows = []
    for line in lines[at + 2 :]:
        if not line.strip() or line.startswith("< x:"):
            break
        cells = [line[start:].split("  ")[0].strip() for start in starts]
        rows.append(dict(zip(names, cells, strict=True)))
    return rows


def check_table(text: str, summary: list[dict]) -> None:
    """Non-diffusive points print "< bound" in the D and σ columns, diffusive ones mean ±
    error, and no D column ever shows a negative number."""
    rows = table_rows(text)
    assert len(rows) == len(summary), text
    for row, point in zip(rows, summary, strict=True):
        assert row["diffusive"] == f"{point['diffusive_replicas']}/{point['replicas']}"
        for key in BOUNDED:
            cell = next(v for k, v in row.items() if k.startswith(f"{key} ["))
            assert not NEGATIVE.search(cell), (key, row)
            if point["diffusive"]:
                assert "±" in cell and not cell.startswith("<"), (key, row)
            else:
                assert re.fullmatch(r"< \d\.\d{3}e[+-]\d+", cell), (key, row)
                assert float(cell[2:]) == pytest.approx(point[f"{key}_upper"], rel=1e-3)
    assert "< x: an upper bound" in text


def test_no_signed_d_of_a_non_diffusive_task_in_any_output(tmp_path, capsys):
    """Issue 9, must show 3: a task that is not diffusive reports D, D_σ and σ nowhere as
    values -- not in the JSON, not in results.h5, not in the tables, not in its task file --
    only as positive upper bounds, with the reason."""
    from kmc.cli import main

    h5py = pytest.importorskip("h5py")
    config = write(tmp_path / "stuck.toml", STUCK)
    run_dir = tmp_path / "stuck-run"
    assert main(["run", str(config), "-o", str(run_dir)]) == 0
    run_out = capsys.readouterr().out
    assert main(["analyze", str(run_dir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert main(["analyze", str(run_dir)]) == 0
    analyze_out = capsys.readouterr().out

    tasks = result["tasks"]
    assert len(tasks) == 8
    stuck = [t for t in tasks if t["microstructure.amorphous_fraction"] == 0.2]
    free = [t for t in tasks if t["microstructure.amorphous_fraction"] == 1.0]
    assert not any(t["diffusive"] for t in stuck), "isolated clusters passed as diffusive"
    assert all(t["diffusive"] for t in free), [t["diffusive_reason"] for t in free]
    for task in stuck:
        assert all(task[key] is None for key in OBSERVABLES), task
        assert all(task[f"{key}_upper"] > 0 for key in BOUNDED), task
        assert isinstance(task["diffusive_reason"], str) and task["diffusive_reason"], task
        assert task["msd_growth"] < 100  # a²: rattling, far below the diffusive test's bar
        stored = read_task(run_dir / "tasks" / task_filename(task["task"]), positions=False)
        assert all(math.isnan(stored.observables[key]) for key in OBSERVABLES)
        assert stored.observables["diffusive"] == 0
    for task in free:
        assert all(task[key] > 0 for key in OBSERVABLES) and task["diffusive_reason"] == ""
        assert all(task[f"{key}_upper"] is None for key in BOUNDED), task

    summary = result["summary"]
    assert [s["diffusive"] for s in summary] == [False, False, True, True]
    for point in summary:
        if point["diffusive"]:
            assert all(point[f"{key}_upper"] is None for key in BOUNDED), point
            continue
        assert point["diffusive_replicas"] == 0 and point["note"], point
        assert all(point[key] is None and point[f"{key}_err"] is None for key in OBSERVABLES)
        assert all(point[f"{key}_upper"] > 0 for key in BOUNDED), point
    # no activation energy over non-diffusive tasks, neither per landscape nor averaged
    stuck_fit, free_fit = result["arrhenius"]
    assert stuck_fit["Ea_tracer"] is None and stuck_fit["Ea_jump"] is None
    assert stuck_fit["note"].startswith("withheld"), stuck_fit
    assert free_fit["Ea_tracer"] > 0 and free_fit["Ea_jump"] > 0
    for fit in result["arrhenius_landscapes"]:
        if fit["microstructure.amorphous_fraction"] == 0.2:
            assert fit["Ea_tracer"] is None and fit["note"].startswith("withheld"), fit

    with h5py.File(run_dir / "results.h5") as f:
        for group in ("tasks", "summary"):
            diffusive = f[f"{group}/diffusive"][:]
            assert diffusive.dtype == np.bool_
            for key in BOUNDED:
                np.testing.assert_array_equal(np.isnan(f[f"{group}/{key}"][:]), ~diffusive)
                bound = f[f"{group}/{key}_upper"][:]
                assert np.all(bound[~diffusive] > 0), (group, key)
                assert np.all(f[f"{group}/{key}"][:][diffusive] > 0), (group, key)
        np.testing.assert_array_equal(f["tasks/diffusive"][:], [t["diffusive"] for t in tasks])

    check_table(run_out, summary)  # the end of kmc run: from the stored observables
    check_table(analyze_out, summary)  # kmc analyze: recomputed from the trajectories


# --------------------------------------------------------------------------- kmc export


def test_export_extxyz_reads_back_with_ase(serial_run, tmp_path):
    ase_io = pytest.importorskip("ase.io")
    run_dir, task = serial_run[0], 3
    out = tmp_path / "out.extxyz"
    process = ok(kmc("export", run_dir, "--task", task, "--format", "extxyz", "-o", out))
    stored = read_task(run_dir / "tasks" / task_filename(task))
    n_frames, n_ions, _ = stored.positions.shape
    assert f"{n_frames} frames" in process.stdout
    frames = ase_io.read(out, index=":")
    assert len(frames) == n_frames == 20
    for k, atoms in enumerate(frames):
        assert len(atoms) == n_ions
        assert set(atoms.get_chemical_symbols()) == {"Na"}
        np.testing.assert_allclose(atoms.positions, stored.positions[k], rtol=1e-10, atol=1e-9)
        np.testing.assert_array_equal(atoms.arrays["site"], stored.sites[k])
        np.testing.assert_allclose(atoms.cell.array, np.diag(stored.box))
        assert list(atoms.pbc) == [True] * 3
        assert atoms.info["Time"] == pytest.approx(stored.times[k], rel=1e-11, abs=0)
    assert [p.name for p in tmp_path.iterdir()] == ["out.extxyz"]  # no temporary left


# --------------------------------------------------------------------------- temperature sweep


def test_analyze_of_temperature_sweep_gives_arrhenius(background):
    run_dir, _ = background.result("temps")
    result = analyze_json(run_dir)
    points = [
        (s["microstructure.amorphous_fraction"], s["run.temperature"]) for s in result["summary"]
    ]
    assert points == [(p, t) for p in PHI for t in (500.0, 600.0)]  # file order, first slowest
    assert all(set(t) == TASK_KEYS | {"run.temperature"} for t in result["tasks"])
    assert all(t["diffusive"] for t in result["tasks"])
    # the temperature does not shape the landscape: (φ, replica) does
    landscapes = [2 * p + r for p in range(len(PHI)) for _ in (500.0, 600.0) for r in (0, 1)]
    assert [t["landscape"] for t in result["tasks"]] == landscapes
    arrhenius = result["arrhenius"]
    assert [a["microstructure.amorphous_fraction"] for a in arrhenius] == PHI
    for record in arrhenius:
        assert {"Ea_tracer", "Ea_tracer_err", "Ea_jump", "Ea_jump_err"} <= set(record)
        assert "run.temperature" not in record and record["landscapes"] == 2
        for key in ("Ea_tracer", "Ea_tracer_err", "Ea_jump", "Ea_jump_err"):
            assert isinstance(record[key], float) and math.isfinite(record[key]), (key, record)
    fits = result["arrhenius_landscapes"]
    assert [(f["microstructure.amorphous_fraction"], f["replica"]) for f in fits] == [
        (p, r) for p in PHI for r in (0, 1)
    ]
    assert all(f["temperatures"] == 2 and f["Ea_tracer_err"] is None for f in fits)
    # crystal: 0.9 eV barriers everywhere; amorphous: 0.5 eV saddles (loose: 2 replicas)
    assert 0.7 < arrhenius[0]["Ea_tracer"] < 1.1
    assert 0.3 < arrhenius[2]["Ea_tracer"] < 0.7
    # the crystal's one barrier is its whole physical range
    assert arrhenius[0]["Ea_lower"] == pytest.approx(0.9) == arrhenius[0]["Ea_upper"]


def test_plot_command_writes_png(background, tmp_path):
    run_dir, _ = background.result("temps")
    out = tmp_path / "arrhenius.png"
    process = ok(kmc("plot", run_dir, "-o", out))
    assert str(out) in process.stdout
    data = out.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 1000


# --------------------------------------------------------------------------- MDAnalysis


def test_mdanalysis_reads_task_file_and_agrees_on_tracer_d(background):
    """MDAnalysis opens a task file and its EinsteinMSD gives kmc's D_tracer within 4
    standard errors; the error comes from splitting the independent walkers into groups."""
    mda = pytest.importorskip("MDAnalysis")
    msd_module = pytest.importorskip("MDAnalysis.analysis.msd")
    run_dir, _ = background.result("walkers")
    task_file = run_dir / "tasks" / task_filename(0)
    stored = read_task(task_file)
    d_kmc = analyze_json(run_dir)["tasks"][0]["D_tracer"]  # cm²/s

    with warnings.catch_warnings():  # no masses/types to guess, no dt in H5MD: expected
        warnings.simplefilter("ignore", UserWarning)
        universe = mda.Universe(str(task_file))
        assert universe.trajectory.n_frames == WALKER_FRAMES
        assert universe.atoms.n_atoms == WALKER_COUNT
        times = []
        for ts in universe.trajectory:  # positions in Å, time in ps
            np.testing.assert_allclose(ts.positions, stored.positions[ts.frame], atol=2e-3)
            times.append(ts.time)
        times = np.array(times)
        np.testing.assert_allclose(times, stored.times * 1e12, rtol=1e-9)  # s -> ps

        def einstein(select: str):
            run = msd_module.EinsteinMSD(universe, select=select, msd_type="xyz", fft=False)
            return run.run().results

        everything = einstein("all")
        size = WALKER_COUNT // WALKER_GROUPS
        # MDAnalysis's per-particle MSDs, grouped by index ranges; check one group by select
        one_group = einstein(f"index {size}:{2 * size - 1}").timeseries
    per_particle = everything.msds_by_particle  # (frames, atoms), Å², lag 0 first
    np.testing.assert_allclose(per_particle[:, size : 2 * size].mean(axis=1), one_group)

    lags = times[1:] - times[0]
    whole = everything.timeseries[1:]
    # kmc's own rule on MDA's MSD: the window [T/4, T/2] and the diffusive verdict
    window, diffusive = fit_window(lags, whole, WALKER_HOP)
    assert diffusive, "the walkers' MSD is not diffusive by kmc's test: make the run longer"
    fitted = lags[window]
    assert fitted[0] == pytest.approx(lags[-1] / 4, rel=0.05)
    assert fitted[-1] == pytest.approx(lags[-1] / 2, rel=0.05)

    def d_cm2_per_s(msd: np.ndarray) -> float:
        slope = np.polyfit(lags[window], msd[window], 1)[0]  # Å²/ps
        return slope / 6 * 1e-4  # xyz: MSD = 6 D t; Å²/ps = 1e-16 cm² / 1e-12 s

    groups = [
        d_cm2_per_s(per_particle[1:, g * size : (g + 1) * size].mean(axis=1))
        for g in range(WALKER_GROUPS)
    ]
    d_mda = d_cm2_per_s(whole)
    assert d_mda == pytest.approx(np.mean(groups), rel=1e-9)  # equal groups: D is linear
    se = np.std(groups, ddof=1) / math.sqrt(WALKER_GROUPS)
    assert 0 < se < 0.2 * d_mda, "too noisy for a meaningful comparison"
    assert abs(d_mda - d_kmc) < 4 * se, (d_mda, d_kmc, se)


# --------------------------------------------------------------------------- crash and resume


def test_killed_run_resumes_to_the_same_result(work, background):
    config = write(work / "configs" / "long.toml", LONG)
    run_dir = work / "long-killed"
    with (work / "long-killed.log").open("w") as log:
        process = subprocess.Popen(
            [*KMC, "run", str(config), "--output", str(run_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_environment(),
        )
        try:
            deadline = time.monotonic() + TIMEOUT
            while len(list((run_dir / "tasks").glob("task-*.h5md"))) < 3:
                assert process.poll() is None, "kmc run ended before it could be killed"
                assert time.monotonic() < deadline, "no task files appeared"
                time.sleep(0.02)
            os.kill(process.pid, signal.SIGKILL)
            assert process.wait(timeout=60) == -signal.SIGKILL
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    done = complete_tasks(run_dir, N_LONG_TASKS)
    assert 3 <= len(done) < N_LONG_TASKS, f"the kill came too late to test anything: {done}"

    # A task file that is there but incomplete (a disk-full or non-atomic copy) is not done:
    # it must be redone, never read as data.
    missing = max(set(range(N_LONG_TASKS)) - set(done))
    first = (run_dir / "tasks" / task_filename(done[0])).read_bytes()
    (run_dir / "tasks" / task_filename(missing)).write_bytes(first[: len(first) // 2])
    # The temporary file of a writer killed mid-write, in case the SIGKILL missed that moment.
    stale = run_dir / "tasks" / f".{task_filename(missing - 1)}.tmp.99999999"
    stale.write_bytes(first[: len(first) // 3])

    resumed = ok(kmc("run", config, "--output", run_dir))
    assert f"{len(done)} already done" in resumed.stderr, resumed.stderr
    assert complete_tasks(run_dir, N_LONG_TASKS) == list(range(N_LONG_TASKS))
    assert temporary_files(run_dir) == []
    reference, _ = background.result("long")  # the same config, never interrupted
    assert without_wall_time(analyze_json(run_dir)) == without_wall_time(analyze_json(reference))


def _kmc_processes(marker: str) -> list[int]:
    """Pids of live processes whose command line contains ``marker`` (a run directory)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


@pytest.mark.parametrize(
    ("signum", "mpi"),
    [(signal.SIGINT, 0), (signal.SIGTERM, 0), (signal.SIGINT, 2), (signal.SIGTERM, 2)],
    ids=["SIGINT", "SIGTERM", "SIGINT-mpi", "SIGTERM-mpi"],
)
def test_signal_stops_cleanly_and_the_rerun_is_identical(work, long_json, signum, mpi):
    """Ctrl-C (SIGINT) or a batch system's SIGTERM, serial and under mpiexec -n 2: kmc exits
    within 5 s with status 128 + signum, one line saying how to resume and no traceback,
    leaves no temporary file, no lock and no process; the rerun equals an uninterrupted run."""
    if mpi:
        mpi_or_skip()
    config = write(work / "configs" / "long.toml", LONG)
    run_dir = work / f"long-{signal.Signals(signum).name}-{mpi}"
    command = [*KMC, "run", str(config), "--output", str(run_dir)]
    if mpi:
        command = [shutil.which("mpiexec"), "-n", str(mpi), *command]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_environment()
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while len(list((run_dir / "tasks").glob("task-*.h5md"))) < 3:
            assert process.poll() is None, "kmc run ended before it could be signalled"
            assert time.monotonic() < deadline, "no task files appeared"
            time.sleep(0.02)
        sent = time.monotonic()
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    shown = f"stdout:\n{stdout}\nstderr:\n{stderr}"
    assert took < 5, f"took {took:.1f} s to stop\n{shown}"
    assert process.returncode == 128 + signum, shown
    assert "Traceback" not in stdout + stderr, shown
    name = signal.Signals(signum).name
    stops = [line for line in stderr.splitlines() if line.startswith("kmc: stopped")]
    assert len(stops) == 1, shown
    assert re.fullmatch(
        rf"kmc: stopped by {name} \(\d+ of {N_LONG_TASKS} tasks complete\); resume with: "
        rf"kmc run {re.escape(str(config))} --output {re.escape(str(run_dir))}",
        stops[0],
    ), stops
    assert temporary_files(run_dir) == [], "a temporary file was left"
    assert not (run_dir / "kmc.lock").exists(), "the lock was left"
    assert _kmc_processes(str(run_dir)) == [], "a rank is still running"
    done = complete_tasks(run_dir, N_LONG_TASKS)
    assert 3 <= len(done) < N_LONG_TASKS, f"the signal came too late to test anything: {done}"

    resumed = ok(kmc("run", config, "--output", run_dir))
    assert f"{len(done)} already done" in resumed.stderr, resumed.stderr
    assert without_wall_time(analyze_json(run_dir)) == long_json  # as if never interrupted


def test_concurrent_runs_on_one_directory_never_duplicate_work(work, small_config, serial_json):
    """Two kmc run started at once on one (new) directory: one runs, the other refuses with
    one line naming the holder of the lock (or, if it came after the first had finished,
    finds nothing to do): no task run twice, no traceback, the results of a single run."""
    for attempt in range(2):
        run_dir = work / f"concurrent-{attempt}"
        command = [*KMC, "run", str(small_config), "--output", str(run_dir)]
        both = [
            subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                env=_environment(),
            )
            for _ in range(2)
        ]  # fmt: skip
        outputs = [p.communicate(timeout=TIMEOUT) for p in both]
        shown = "\n".join(
            f"exit {p.returncode}:\n{o}\n{e}" for p, (o, e) in zip(both, outputs, strict=True)
        )
        assert "Traceback" not in shown, shown
        ran = 0
        for process, (_, stderr) in zip(both, outputs, strict=True):
            if process.returncode == 2:
                [line] = stderr.splitlines()
                assert re.fullmatch(
                    rf"kmc: error: {re.escape(str(run_dir))}: another kmc run is using it \(pid "
                    rf"\d+ on \S+ since [-\d: ]+\); wait for it to finish, or give another "
                    r"--output",
                    line,
                ), line
            else:
                assert process.returncode == 0, shown
                ran += int(re.search(r"(\d+) to run on", stderr).group(1))
        assert ran == N_SMALL_TASKS, f"tasks run {ran} times in all\n{shown}"
        assert sorted(p.name for p in (run_dir / "tasks").iterdir()) == [
            task_filename(k) for k in range(N_SMALL_TASKS)
        ]
        assert not (run_dir / "kmc.lock").exists()
        assert without_wall_time(analyze_json(run_dir)) == without_wall_time(serial_json)


def test_lock_of_a_dead_run_is_broken(existing_run, small_config):
    """A run killed with SIGKILL leaves its lock; the next run breaks it (its holder is
    dead) and goes on."""
    run_dir, _, _ = existing_run
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = {"pid": dead.pid, "host": os.uname().nodename, "start": "1", "since": 0}
    (run_dir / "kmc.lock").write_text(json.dumps(lock))
    process = ok(kmc("run", small_config, "--output", run_dir))
    assert f"{N_SMALL_TASKS} already done" in process.stderr
    assert not (run_dir / "kmc.lock").exists()


def test_damaged_and_foreign_task_files_are_named_set_aside_and_redone(
    work, existing_run, small_config, serial_json
):
    """Bytes flipped in one task file, another one from a run with another seed: analyze
    names both and reports the rest; kmc run sets them aside (kept in tasks/damaged/) and
    redoes them; the results are then those of the clean run."""
    run_dir, _, _ = existing_run
    tasks = run_dir / "tasks"
    damaged = bytearray((tasks / task_filename(1)).read_bytes())
    damaged[len(damaged) // 2] ^= 0x10  # in the frames
    (tasks / task_filename(1)).write_bytes(damaged)
    other_seed = write(work / "configs" / "seed8.toml", edit(SMALL, ("seed = 7", "seed = 8")))
    other = work / "seed8"
    if not other.exists():
        ok(kmc("run", other_seed, "--output", other))
    shutil.copyfile(other / "tasks" / task_filename(4), tasks / task_filename(4))

    analyzed = ok(kmc("analyze", run_dir))
    named = [line for line in analyzed.stderr.splitlines() if "skipped" in line]
    assert len(named) == 2, analyzed.stderr
    assert str(tasks / task_filename(1)) in named[0] and "checksum mismatch" in named[0]
    assert str(tasks / task_filename(4)) in named[1] and "belongs to another run" in named[1]
    assert "2 task(s) not complete yet (1, 4)" in analyzed.stderr
    assert "missing: 1, 4" in analyzed.stdout
    for task, reason in ((1, "checksum mismatch"), (4, "belongs to another run")):
        exported = kmc("export", run_dir, "--task", task, "-o", work / "refused.extxyz")
        check_refused(exported, [str(tasks / task_filename(task)), reason, "not exported"])
    assert not (work / "refused.extxyz").exists()

    rerun = ok(kmc("run", small_config, "--output", run_dir))
    assert "4 already done, 2 to run" in rerun.stderr, rerun.stderr
    assert f"{tasks / task_filename(1)}: checksum mismatch" in rerun.stderr
    assert sorted(p.name for p in (tasks / "damaged").iterdir()) == [
        task_filename(1),
        task_filename(4),
    ]
    assert (tasks / "damaged" / task_filename(1)).read_bytes() == damaged  # kept as it was
    assert without_wall_time(analyze_json(run_dir)) == without_wall_time(serial_json)


def test_reordered_sweep_is_another_run(background, tmp_path):
    """The order of the sweep keys numbers the tasks: the same keys in another order on an
    existing run directory are refused (by kmc run and by its dry run), nothing written."""
    run_dir, _ = background.result("temps")
    before = snapshot(run_dir)
    reordered = edit(
        TEMPS,
        (SWEEP_PHI + "\n", ""),
        (
            '"run.temperature" = [500.0, 600.0]\n',
            f'"run.temperature" = [500.0, 600.0]\n{SWEEP_PHI}\n',
        ),
    )
    config = write(tmp_path / "temps.toml", reordered)
    for argv in (["run", config, "--output", run_dir], ["run", "--dry-run", config, "-o", run_dir]):
        check_refused(kmc(*argv), [str(run_dir), "another order"])
    assert snapshot(run_dir) == before


@contextlib.contextmanager
def mounted(where: Path, kind: str, size: str = ""):
    """A file system at ``where`` for the test: a tmpfs of ``size`` (kind "tmpfs") or the
    directory itself bound read-only (kind "ro"; ``remount(where, "rw")`` to fill it).
    Skips where mounting is not allowed (not root, no CAP_SYS_ADMIN)."""
    where.mkdir(parents=True, exist_ok=True)
    if kind == "tmpfs":
        command = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)]
    else:
        command = ["mount", "--bind", str(where), str(where)]
    if shutil.which("mount") is None or subprocess.run(command, capture_output=True).returncode:
        pytest.skip("cannot mount a file system here (needs root with CAP_SYS_ADMIN)")
    try:
        if kind == "ro" and remount(where, "ro").returncode:
            pytest.skip("cannot remount read-only here")
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def remount(where: Path, mode: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", "-o", f"remount,bind,{mode}", str(where)], capture_output=True)


def test_disk_full_stops_with_one_line_and_loses_nothing(tmp_path, small_config, serial_json):
    """A real full disk (a 330 KiB tmpfs): kmc run stops with one line and exit status 1,
    the finished tasks stay intact, analyze shows its results and says why results.h5 is
    not saved; moved to a disk with room, the rerun finishes to the clean run's results."""
    with mounted(tmp_path / "small-disk", "tmpfs", "330k") as disk:
        run_dir = disk / "run"
        process = kmc("run", small_config, "--output", run_dir)
        shown = f"stdout:\n{process.stdout}\nstderr:\n{process.stderr}"
        assert process.returncode == 1, shown
        assert "Traceback" not in shown, shown
        [error] = [line for line in process.stderr.splitlines() if "error" in line]
        assert error.startswith(f"kmc: error: {run_dir}: disk full: "), error
        done = complete_tasks(run_dir, N_SMALL_TASKS)
        assert 1 <= len(done) < N_SMALL_TASKS, done
        assert temporary_files(run_dir) == []
        with contextlib.suppress(OSError):  # fill it to the last byte
            (disk / "filler").write_bytes(b"\0" * 1024 * 1024)
        analyzed = kmc("analyze", run_dir)
        shown = f"stdout:\n{analyzed.stdout}\nstderr:\n{analyzed.stderr}"
        assert analyzed.returncode == 1 and "Traceback" not in shown, shown
        last = analyzed.stderr.splitlines()[-1]
        assert last.startswith(f"kmc: error: {run_dir}/results.h5: not saved ("), shown
        assert last.endswith("No space left on device)"), shown
        assert f"of {N_SMALL_TASKS} tasks complete" in analyzed.stdout  # still shown
        moved = tmp_path / "run"
        shutil.copytree(run_dir, moved)
    assert complete_tasks(moved, N_SMALL_TASKS) == done  # nothing finished was lost
    ok(kmc("run", small_config, "--output", moved))
    assert without_wall_time(analyze_json(moved)) == without_wall_time(serial_json)


def test_read_only_run_directory_is_one_line(tmp_path, serial_run, small_config):
    """A run directory on a read-only file system: run, analyze, plot and export each end
    with one line naming the cause and exit status 1 (analyze after showing its results);
    nothing changes."""
    with mounted(tmp_path / "ro", "ro") as root:
        assert remount(root, "rw").returncode == 0
        shutil.copytree(serial_run[0], root / "run")
        assert remount(root, "ro").returncode == 0
        run_dir = root / "run"
        before = snapshot(run_dir)
        for argv in (
            ["run", small_config, "--output", run_dir],
            ["analyze", run_dir],
            ["plot", run_dir],
            ["export", run_dir, "--task", "0"],
            ["run", small_config, "--output", root / "new"],
        ):
            process = kmc(*argv)
            shown = f"{argv}\nstdout:\n{process.stdout}\nstderr:\n{process.stderr}"
            assert process.returncode == 1, shown
            assert "Traceback" not in shown, shown
            [line] = process.stderr.splitlines()
            assert line.startswith("kmc: error: ") and "Read-only file system" in line, shown
        assert snapshot(run_dir) == before


def test_a_big_sweep_says_where_it_runs_before_it_expands_the_tasks(tmp_path, capsys, monkeypatch):
    """kmc run --dry-run of a 10^4-task sweep prints its first line before it expands the
    tasks (the expansion of 10^5 tasks takes seconds; how many is a benchmark question, not a
    timed test), then lists every point."""
    import kmc.config

    temperatures = ", ".join(f"{300 + 0.01 * i:.2f}" for i in range(100))
    fractions = ", ".join(f"{0.01 * i:.2f}" for i in range(100))
    swept = f'"microstructure.amorphous_fraction" = [{fractions}]\n'
    text = edit(
        SMALL,
        (SWEEP_PHI, swept + f'"run.temperature" = [{temperatures}]'),
        ("replicas = 2", "replicas = 1"),
    )
    config = write(tmp_path / "huge.toml", text)
    printed_before: list[str] = []
    expand = kmc.config.expand_tasks

    def watched(cfg):
        printed_before.append(capsys.readouterr().out)
        return expand(cfg)

    monkeypatch.setattr(kmc.config, "expand_tasks", watched)
    status, out, err = dry_run(capsys, config, "-o", tmp_path / "huge")
    assert status == 0, err
    [before] = printed_before
    assert before.startswith(f"kmc run --dry-run: {config}"), before
    assert len(before.splitlines()) == 1, before
    assert "tasks:  10000 (10000 sweep point(s)" in out, out[-500:]


# --------------------------------------------------------------------------- quick start


def test_quickstart_as_the_readme_says(background):
    """``kmc run configs/quickstart.toml`` in a fresh directory (README, Quick start)."""
    home, process = background.result("quickstart")
    # the summary table and the two lines the README shows
    assert re.search(r"(\d+) of \1 tasks complete", process.stdout), process.stdout
    assert re.search(r"^results:\s+runs/quickstart/results\.h5$", process.stdout, re.M)
    assert re.search(r"^plot:\s+runs/quickstart/plot\.png$", process.stdout, re.M)
    run_dir = home / "runs" / "quickstart"
    png = (run_dir / "plot.png").read_bytes()
    assert png[:8] == PNG_SIGNATURE and len(png) > 1000
    assert temporary_files(run_dir) == []

    # the README's post-processing snippet
    h5py = pytest.importorskip("h5py")
    with h5py.File(run_dir / "results.h5") as f:
        phi = f["summary/microstructure.amorphous_fraction"][:]
        d_tracer = f["summary/D_tracer"][:]
    sweep = tomllib.loads((home / "configs" / "quickstart.toml").read_text())["sweep"]
    points = list(itertools.product(*sweep.values()))  # file order, the first key slowest
    column = list(sweep).index("microstructure.amorphous_fraction")
    np.testing.assert_array_equal(phi, [point[column] for point in points])
    with h5py.File(run_dir / "results.h5") as f:
        diffusive = f["summary/diffusive"][:]
        bound = f["summary/D_tracer_upper"][:]
    # a D where every replica is diffusive, else only an upper bound
    np.testing.assert_array_equal(np.isfinite(d_tracer), diffusive)
    assert np.all(bound[~diffusive] > 0) and np.all(np.isnan(bound[diffusive]))
    # homogeneous lattices (φ = 0, 1) are diffusive; below the threshold ions only rattle
    assert np.all(diffusive[(phi == 0.0) | (phi == 1.0)])
    assert not np.any(diffusive[phi == 0.1])
    # the amorphous phase conducts, the crystal (1.6 eV barriers) does not
    assert np.all(d_tracer[phi == 1.0] > 1e3 * d_tracer[phi == 0.0])


# --------------------------------------------------------------------------- structures

_STRUCTURE_CONFIG = """\
name = "olivine"
[lattice]
kind = "structure"
structure = "LiFePO4_olivine.cif"
mobile = "Li"
cutoff = 6.0
supercell = [1, 3, 2]
[ions]
count = 64
exclusion = false
[crystal]
saddle_energy = {H1 = 0.3, H2 = 0.65, H3 = 0.8, H4 = 0.8}
[amorphous]
saddle_energy = 0.5
[run]
method = "network"
replicas = 1
hops_per_ion = 20000
[sweep]
"run.method" = ["network", "kmc"]
"""


@pytest.fixture(scope="module")
def structure_run(work, repo_root) -> tuple[Path, Path]:
    """A finished network run on olivine LiFePO4 (its CIF copied beside the config)."""
    pytest.importorskip("ase")
    folder = work / "structure"
    folder.mkdir()
    shutil.copy(repo_root / "structures" / "LiFePO4_olivine.cif", folder)
    config = write(folder / "olivine.toml", _STRUCTURE_CONFIG)
    run_dir = folder / "run"
    ok(kmc("run", config, "-o", run_dir))
    return config, run_dir


def test_structure_run_is_complete_without_its_source(structure_run, tmp_path):
    """The run directory keeps a copy of the structure: moved away from the config and the
    CIF, it still analyzes and resumes (nothing to redo), and its D tensor is the olivine
    one (b fastest)."""
    _, run_dir = structure_run
    assert (run_dir / "LiFePO4_olivine.cif").is_file()
    moved = tmp_path / "moved"
    shutil.copytree(run_dir, moved)
    out = analyze_json(moved)  # recomputes the kMC task from its trajectory
    exact, walkers = out["tasks"]
    assert exact["D_tracer_yy"] > 1e4 * max(exact["D_tracer_xx"], exact["D_tracer_zz"])
    assert walkers["diffusive"], walkers
    # 64 walkers x 20000 hops along b: within 30 % of the exact channel D (loose on purpose,
    # the statistics are tested in test_structure.py)
    assert walkers["D_tracer_yy"] == pytest.approx(exact["D_tracer_yy"], rel=0.3)
    again = ok(kmc("run", moved / "config.toml", "-o", moved))
    assert "2 already" in again.stdout + again.stderr


def test_inspect_prints_sites_and_hop_types(structure_run):
    config, _ = structure_run
    out = ok(kmc("inspect", config)).stdout
    assert "Pnma (62)" in out and "Li1" in out and "4a" in out
    assert re.search(r"H1\s+3\.003\d\s+Li1-Li1\s+2 from Li1", out)
    assert "crystal.saddle_energy = {H1 = 0.3" in out


@pytest.mark.parametrize(
    ("edits", "key"),
    [
        ((('structure = "LiFePO4_olivine.cif"', 'structure = "nowhere.cif"'),),
         "lattice.structure"),
        ((('structure = "LiFePO4_olivine.cif"', 'structure = "garbage.cif"'),),
         "lattice.structure"),
        ((('mobile = "Li"', 'mobile = "Na"'),), "lattice.mobile"),
        ((("cutoff = 6.0", "cutoff = 2.0"),), "lattice.cutoff"),
        ((("supercell = [1, 3, 2]", "supercell = [1, 3, 1]"),), "lattice.supercell"),
        ((("H4 = 0.8}", "H4 = 0.8, H9 = 1.0}"),), "crystal.saddle_energy.H9"),
        (((", H4 = 0.8}", "}"),), "crystal.saddle_energy"),
        ((('kind = "structure"', 'kind = "structure"\ncells = [2, 2, 2]'),), "lattice.cells"),
        ((('mobile = "Li"\n', ""),), "lattice.mobile"),
    ],
    ids=["missing-file", "unreadable", "no-mobile-site", "no-hops", "small-supercell",
         "unknown-hop-type", "missing-hop-type", "cells-with-structure", "no-mobile-key"],
)  # fmt: skip
def test_bad_structure_input_exits_2_and_touches_nothing(structure_run, edits, key):
    config, run_dir = structure_run
    (config.parent / "garbage.cif").write_text("data_x\nnot a crystal at all\n")
    before = snapshot(run_dir)
    bad = write(config.parent / "bad.toml", edit(_STRUCTURE_CONFIG, *edits))
    for command in (("run", bad, "-o", run_dir), ("inspect", bad)):
        process = kmc(*command)
        assert process.returncode == 2, process.stderr
        lines = process.stderr.strip().splitlines()
        assert len(lines) == 1 and f": {key}: " in lines[0], lines
        assert "Traceback" not in process.stderr
    assert snapshot(run_dir) == before
