"""Tests of kmc.plot: a readable PNG for the common kinds of run, without crashing on
non-positive or missing values (log axes)."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from test_results import make_run  # synthetic run directories (tests/ is on sys.path)

from kmc.plot import plot_run
from kmc.results import analyze_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def check_png(path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000


@pytest.mark.parametrize(
    "sweep",
    [
        {"microstructure.amorphous_fraction": [0.0, 0.5, 1.0], "run.temperature": [300.0, 400.0]},
        {"microstructure.amorphous_fraction": [0.0, 0.5, 1.0]},
        # no amorphous fraction: x is the first numeric key (a swept constant energy) ...
        {"run.temperature": [300.0, 400.0], "amorphous.saddle_energy": [0.3, 0.4]},
        # ... or a single point at the config's fraction when no numeric key is swept
        {"ions.exclusion": [True, False], "run.temperature": [300.0, 400.0]},
        {},
    ],
    ids=["fraction-temperature", "fraction", "energy-temperature", "bool-temperature",
         "no-sweep"],
)  # fmt: skip
def test_plot_run_writes_png(tmp_path, sweep):
    results = analyze_run(make_run(tmp_path, sweep, n_ions=8, n_frames=24))
    out = plot_run(results, tmp_path / "plot.png")
    assert out == tmp_path / "plot.png"
    check_png(out)


def test_plot_skips_non_positive_values(tmp_path):
    sweep = {
        "microstructure.amorphous_fraction": [0.0, 0.5, 1.0],
        "run.temperature": [300.0, 400.0],
    }
    results = analyze_run(make_run(tmp_path, sweep, n_ions=8, n_frames=24))
    results.summary[0]["D_jump"] = -1e-8  # a noisy collective mean can be negative
    results.summary[1]["D_tracer"] = math.nan
    results.summary[2]["D_jump_err"] = 10.0  # error bar larger than the value
    results.arrhenius[0]["Ea_jump"] = math.nan
    for rec in results.summary[3:]:
        rec["D_tracer"] = rec["D_jump"] = 0.0
    check_png(plot_run(results, tmp_path / "plot.png"))


def test_import_is_cheap():
    code = "import sys, kmc.plot; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
