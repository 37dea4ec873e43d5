"""Tests of ``kmc validate`` (kmc.validate and the CLI subcommand).

The default tests run only cheap cases (a few seconds); the whole ``kmc validate --quick``
runs as a subprocess in the slow test.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import time

import numpy as np
import pytest

from kmc import cli, config, experiment, validate

KMC = [sys.executable, "-m", "kmc.cli"]
COLUMNS = ("case", "lattice", "quantity", "expected", "measured ± error", "z", "result")
KEYS = {
    "case",
    "lattice",
    "quantity",
    "expected",
    "expected_error",
    "measured",
    "error",
    "z",
    "passed",
    "status",
    "replicas",
    "seconds",
}


def case_named(text: str) -> validate.Case:
    (case,) = [c for c in validate.CASES if text in c.name]
    return case


def test_cases_cover_model_md_and_every_config_is_valid():
    """Seven free-walker lattices plus the lattice gas, vacancy, traps, ring and mixtures;
    every config (full and quick) is a valid kmc config."""
    free = {c.lattice for c in validate.CASES if c.name == "free walker"}
    assert free == {"chain", "square", "triangular", "honeycomb", "cubic", "bcc", "fcc"}
    for word in ("D_sigma", "D* = f", "vacancy", "traps", "ring", "network"):
        assert any(word in c.name for c in validate.CASES), word
    assert len({(c.name, c.lattice) for c in validate.CASES}) == len(validate.CASES)
    for case in validate.CASES:
        for quick in (False, True):
            data = case.resolved_config(quick)
            cfg = config.parse_config(data, f"<{case.name}>")
            assert cfg.lattice.kind == case.lattice
            assert cfg.run.replicas >= 6
            if quick:
                assert cfg.run.replicas <= case.config["run"]["replicas"]
    # applying the quick overrides leaves the case's own config untouched
    assert case_named("vacancy").config["lattice"]["cells"] == [8, 8, 8]


def test_cheap_cases_pass_through_the_real_code_path():
    """A free walker (closed form) and a crystal/amorphous mixture (against the network task of
    the same seed) pass; the records and the table have every field and column."""
    cases = [validate.free_walker_case("cubic"), case_named("random phi")]
    records = validate.run_validation(True, cases=cases, progress=False)
    assert [r["case"] for r in records] == [c.name for c in cases]
    for record in records:
        assert set(record) == KEYS
        assert record["passed"] and record["status"] == "PASS"
        assert abs(record["z"]) < validate.Z_MAX
        assert record["error"] < 0.025 * record["expected"]  # a 10 % bias would fail
    table = validate.format_table(records)
    header = table.splitlines()[0]
    positions = [header.index(column) for column in COLUMNS]
    assert positions == sorted(positions)
    assert table.count("PASS") == 2 and "2 of 2 checks passed" in table
    # fixed width: the columns line up in every row
    rows = table.splitlines()[2:-1]
    result_column = header.index("result")
    assert all(row[result_column:].startswith("PASS") for row in rows)


def test_a_wrong_expected_value_fails():
    """The same runs (shared by the two cases) against the exact D and against 1.1 × it:
    the first passes, the second fails by far more than 4 errors."""
    exact = validate.free_walker_case("square").expected
    right = validate.free_walker_case("square")
    wrong = validate.free_walker_case("square", expected=1.1 * exact)
    start = time.perf_counter()
    records = validate.run_validation(True, cases=[right, wrong], progress=False)
    assert time.perf_counter() - start < 20
    assert records[0]["measured"] == records[1]["measured"]  # one set of runs
    assert records[0]["status"] == "PASS"
    assert records[1]["status"] == "FAIL" and records[1]["z"] < -validate.Z_MAX
    table = validate.format_table(records)
    assert "FAIL" in table and "1 of 2 checks passed (|z| < 4); 1 FAILED" in table


def test_z_adds_the_error_of_the_expected_value():
    case = dataclasses.replace(case_named("D* = f"), expected=1.0, expected_error=0.3)
    values = np.array([1.1, 1.3, 1.2, 1.2])
    record = validate._record(case, values, 0.0)
    sem = np.std(values, ddof=1) / 2
    assert record["z"] == pytest.approx(0.2 / math.hypot(sem, 0.3))
    single = validate._record(case, np.array([1.0]), 0.0)  # no replica error: cannot pass
    assert math.isnan(single["error"]) and not single["passed"]


def test_ring_exact_value_is_the_task_landscape():
    """The harmonic mean rebuilt from the task's landscape seed is the landscape run_task
    used: it equals the exact network solve of the same task (run.method = "network"), and
    the kMC and network tasks report the same landscape digest."""
    case = case_named("ring")
    data = case.resolved_config(True)
    data["run"]["replicas"] = 2
    tasks = config.expand_tasks(config.parse_config(data))
    data["run"]["method"] = "network"
    network_tasks = config.expand_tasks(config.parse_config(data))
    for task, network_task in zip(tasks, network_tasks, strict=True):
        network_data = experiment.run_task(network_task)
        exact = network_data.observables["D_tracer"]
        assert validate._ring_exact(task) == pytest.approx(exact, rel=1e-9)
        kmc_digest = experiment.run_task(task).parameters["landscape_digest"]
        assert kmc_digest == network_data.parameters["landscape_digest"]
    assert validate._ring_exact(tasks[0]) != validate._ring_exact(tasks[1])


def test_json_is_one_list_with_null_for_nan():
    case = validate.free_walker_case("chain")
    records = [validate._record(case, np.array([1.0, 2.0]), 0.1)]
    records.append(validate._record(case, np.array([1.0]), 0.1))
    parsed = json.loads(validate.to_json(records))
    assert isinstance(parsed, list) and len(parsed) == 2
    assert set(parsed[0]) == KEYS
    assert parsed[1]["error"] is None and parsed[1]["z"] is None and not parsed[1]["passed"]


def test_cli_exit_status(monkeypatch, capsys):
    """`kmc validate` exits 0 when every case passes (here: one cheap case) and 1 when one
    fails; --json prints one JSON list; progress goes to stderr, one line per case."""
    good = validate.free_walker_case("honeycomb")
    bad = validate.free_walker_case("honeycomb", expected=0.9 * good.expected)
    monkeypatch.setattr(validate, "CASES", (good,))
    assert cli.main(["validate", "--quick", "--json"]) == 0
    out, err = capsys.readouterr()
    (record,) = json.loads(out)
    assert record["case"] == "free walker" and record["status"] == "PASS"
    assert len(err.strip().splitlines()) == 1 and "free walker [honeycomb]" in err

    monkeypatch.setattr(validate, "CASES", (good, bad))
    assert cli.main(["validate", "--quick"]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[0].split()[:2] == ["case", "lattice"]
    assert "FAIL" in out and len(err.strip().splitlines()) == 2


def test_cli_rejects_unknown_options(capsys):
    assert cli.main(["validate", "--fast"]) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--fast" in err


@pytest.mark.slow
def test_quick_validation_passes_in_under_two_minutes():
    """The whole `kmc validate --quick --json` as a user runs it: every case passes, each
    with an error below 2.5 % of its expected value (a 10 % bias fails), in < 2 minutes."""
    start = time.perf_counter()
    done = subprocess.run(
        [*KMC, "validate", "--quick", "--json"], capture_output=True, text=True, timeout=600
    )
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stdout + done.stderr
    records = json.loads(done.stdout)
    assert len(records) == len(validate.CASES)
    assert len(done.stderr.strip().splitlines()) == len(validate.CASES)
    for record in records:
        assert record["passed"], record
        assert record["error"] < 0.025 * record["expected"], record
    assert seconds < 120
