"""Tests of kmc.runner's progress report: work is counted in estimated hops, not tasks.

(Running, resuming and refusing runs are tested end to end through the command in
tests/test_cli.py.)
"""

from __future__ import annotations

import io
import re
import time
import tomllib

import pytest

from kmc import runner, store
from kmc.config import expand_tasks, parse_config, site_count
from kmc.store import task_filename

BASE = {
    "lattice": {"kind": "cubic", "cells": [4, 4, 4], "hop_distance": 1.0},
    "ions": {"count": 3, "exclusion": False},
    "crystal": {"saddle_energy": 0.3},
    "amorphous": {"saddle_energy": 0.5},
    "run": {"replicas": 1, "hops_per_ion": 100, "equilibration_hops_per_ion": 0, "frames": 8},
}

SMALL = """\
[lattice]
kind = "cubic"
cells = [4, 4, 4]
hop_distance = 3.0

[ions]
concentration = 0.1

[crystal]
saddle_energy = 0.5

[amorphous]
saddle_energy = 0.4

[run]
temperature = 600.0
hops_per_ion = 100
equilibration_hops_per_ion = 10
frames = 10
replicas = 2

[sweep]
"microstructure.amorphous_fraction" = [0.0, 1.0]
"""


def tasks_of(data: dict) -> list:
    return expand_tasks(parse_config(data))


def test_task_work_is_hops_for_kmc_and_per_site_for_network():
    data = {**BASE, "run": {**BASE["run"], "equilibration_hops_per_ion": 20}}
    kmc_task, network_task = tasks_of(data | {"sweep": {"run.method": ["kmc", "network"]}})
    assert runner.task_work(kmc_task.config) == 3 * (100 + 20)
    sites = site_count(network_task.config.lattice)
    assert runner.task_work(network_task.config) == runner.NETWORK_HOPS_PER_SITE * sites


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _progress_after_big_task(tmp_path, log, *, watch_files: bool = False) -> None:
    """Two tasks of 100 and 900 estimated hops; only the big one has finished (its hops
    unknown: reported without them, or an unreadable file when watching the directory)."""
    tasks = tasks_of(BASE | {"sweep": {"run.hops_per_ion": [100, 900]}})
    assert [runner.task_work(t.config) for t in tasks] == [300, 2700]
    (tmp_path / "tasks").mkdir()
    progress = runner._Progress(tmp_path, tasks, [0, 1], log, watch_files=watch_files)
    if watch_files:
        (tmp_path / "tasks" / task_filename(1)).write_bytes(b"")  # unreadable: hops unknown
        (tmp_path / "tasks" / f".{task_filename(0)}.tmp.123").write_bytes(b"")  # not a task
    else:
        progress.finished(1, None)
    progress.stop()


def test_progress_does_not_look_at_files_unless_asked(tmp_path, monkeypatch):
    """Completions are reported in memory: the watcher never lists the tasks directory
    (a 10^5-task run would list 10^5 names every half second)."""
    tasks = tasks_of(BASE | {"sweep": {"run.hops_per_ion": [100, 900]}})
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / task_filename(0)).write_bytes(b"")
    listed = []
    monkeypatch.setattr(runner.os, "scandir", lambda *a: listed.append(a) or iter(()))
    progress = runner._Progress(tmp_path, tasks, [0, 1], io.StringIO())
    progress.finished(1, 2700)
    progress.stop()
    assert listed == []
    assert progress.counts(2) == (1, 2)


@pytest.mark.parametrize("watch_files", [False, True])
def test_progress_log_line_counts_work_not_tasks(tmp_path, watch_files):
    log = io.StringIO()
    _progress_after_big_task(tmp_path, log, watch_files=watch_files)
    lines = log.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert re.fullmatch(
        r"kmc: 1/2 tasks done, 90 % of the work, elapsed \d+ s, ETA \d+ s", lines[0]
    ), lines  # no hop counted yet (the finished file is unreadable): no "0 hops/s"


def test_progress_bar_counts_hops_with_tasks_in_the_postfix(tmp_path):
    terminal = _Terminal()
    _progress_after_big_task(tmp_path, terminal)
    shown = terminal.getvalue()
    assert re.search(r"90%.*\| 2\.70k/3\.00k hops \[", shown), shown
    assert "1/2 tasks]" in shown and "hops/s" not in shown, shown


def test_run_logs_share_of_work_and_eta(tmp_path):
    config = tmp_path / "small.toml"
    config.write_text(SMALL, encoding="utf-8")
    log = io.StringIO()
    run_dir = runner.run(config, tmp_path / "run", log=log)
    assert run_dir == tmp_path / "run"
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("kmc: small: 4 tasks, 0 already done, 4 to run on 1 rank(s)")
    progress = [line for line in lines[1:] if re.fullmatch(
        r"kmc: \d/4 tasks done, \d+ % of the work, \S+ hops/s, elapsed \d+ s, ETA \d+ s", line
    )]  # fmt: skip
    assert progress and progress == lines[1:], lines
    assert progress[-1].startswith("kmc: 4/4 tasks done, 100 % of the work, ")
    assert progress[-1].endswith(", ETA 0 s")
    assert float(progress[-1].split(", ")[2].split()[0]) > 0  # hops/s, from the task files


# Bounded work: the sweep of issue 14 (amorphizing maricite on 8³, c = 0.05): at φ ≤ 0.05 the
# few amorphous pairs are 10^10-10^13 times faster than the crystal, so an ion that finds one
# after the run length was set would rattle in it for hours.
RUNAWAY = """\
name = "runaway"
[lattice]
kind = "cubic"
cells = [8, 8, 8]
hop_distance = 3.4
[ions]
species = "Na"
concentration = 0.05
[crystal]
saddle_energy = 1.6
[amorphous]
site_energy = { dist = "normal", mean = 0.05, sigma = 0.03 }
saddle_energy = { dist = "normal", mean = 0.76, sigma = 0.10 }
[interface]
saddle_energy = 1.15
[run]
hops_per_ion = 200
replicas = 8
seed = 20261201
[sweep]
"microstructure.amorphous_fraction" = [0.01, 0.02, 0.05]
"run.temperature" = [305.0, 350.0, 400.0]
"""


def test_runaway_tasks_stop_at_their_work_budget_and_are_marked(tmp_path):
    """Every task's kernel work stays within run.work_budget (100) × its planned hops; the
    tasks stopped there are stored complete, not diffusive, with status "budget exceeded"
    and the reason, and the analysis names them."""
    from kmc import results

    config = tmp_path / "runaway.toml"
    config.write_text(RUNAWAY, encoding="utf-8")
    run_dir = runner.run(config, tmp_path / "run", log=io.StringIO())
    analysed = results.analyze_run(run_dir)
    assert len(analysed.tasks) == 72 and not analysed.missing
    planned = runner.task_work(parse_config(tomllib.loads(RUNAWAY)))
    assert planned == 26 * (200 + 200)
    stopped = [rec for rec in analysed.tasks if rec["status"] == store.BUDGET_EXCEEDED]
    assert stopped  # this seed has runaways (13 of 72 when written)
    for rec in analysed.tasks:
        assert rec["status"] in (store.COMPLETE, store.BUDGET_EXCEEDED)
        assert 0 < rec["work"] <= 100 * planned
    for rec in stopped:
        assert not rec["diffusive"]
        assert rec["diffusive_reason"].startswith("budget exceeded in the ")
    assert "budget exceeded: " in analysed.table()
    noted = [row for row in analysed.summary if "work budget" in row["note"]]
    assert sum(int(row["note"].split("; ")[1].split()[0]) for row in noted) == len(stopped)


def test_a_task_far_over_its_plan_says_so_while_it_runs(tmp_path, monkeypatch):
    """The kernel's attempts are watched while a task runs: past 10× its planned hops the
    run names the task once."""
    from kmc import experiment

    real = experiment.run_task

    def slow(task, progress=None):
        progress[0] = 11 * runner.task_work(task.config)
        time.sleep(0.3)
        return real(task, progress=progress)

    monkeypatch.setattr(experiment, "run_task", slow)
    config = tmp_path / "small.toml"
    config.write_text(SMALL.replace("replicas = 2", "replicas = 1"), encoding="utf-8")
    log = io.StringIO()
    runner.run(config, tmp_path / "run", log=log)
    warnings = [line for line in log.getvalue().splitlines() if "planned hops" in line]
    assert len(warnings) == 2, log.getvalue()
    assert re.fullmatch(
        r"kmc: task \d has made \S+ kernel attempts, over 10 times its \S+ planned hops; it "
        r"stops at run.work_budget = 100 times them",
        warnings[0],
    )
