"""Tests of kmc.runner's progress report: work is counted in estimated hops, not tasks.

(Running, resuming and refusing runs are tested end to end through the command in
tests/test_cli.py.)
"""

from __future__ import annotations

import io
import re

import pytest

from kmc import runner
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
