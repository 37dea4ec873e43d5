"""Tests of kmc.plot: readable figures for the common kinds of run and for a sweep the size
of configs/nafepo4_amorphization.toml (2 kinds × 13 fractions × 4 temperatures), in PNG,
PDF and SVG, without matplotlib warnings; non-diffusive points as upper bounds, withheld
activation energies without fit lines, small multiples with --by, and the argument checks
of ``kmc plot`` (one line, exit status 2, before results.h5 is rewritten)."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from test_results import make_run  # synthetic run directories (tests/ is on sys.path)

from kmc import cli
from kmc.analysis import BOLTZMANN_EV
from kmc.plot import UPPER_BOUND_GID, make_figure, plot_run
from kmc.results import RunResults, analyze_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
KIND = "microstructure.kind"
PHI = "microstructure.amorphous_fraction"
TEMP = "run.temperature"
KINDS = ["random", "correlated"]
FRACTIONS = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.8, 1.0]
TEMPS = [300.0, 400.0, 500.0, 600.0]
# the synthetic NaFePO4-shaped results: random kind, φ in 0.2-0.3, T <= 400 K is not
# diffusive (so its Ea is withheld); correlated φ = 0.5 at 300 K has no complete replica
STUCK_PHI = (0.2, 0.25, 0.3)


def check_png(path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def true_ea(kind: str, phi: float) -> float:
    w = phi if kind == "random" else math.sqrt(phi)
    return 0.6 * (1 - w) + 0.25 * w


def is_stuck(kind: str, phi: float, temperature: float) -> bool:
    return kind == "random" and phi in STUCK_PHI and temperature <= 400.0


def is_missing(kind: str, phi: float, temperature: float) -> bool:
    return kind == "correlated" and phi == 0.5 and temperature == 300.0


def spanning(kind: str, phi: float) -> tuple[float, float]:
    """Synthetic spanning probability and spanning fraction (threshold lower when correlated)."""
    threshold = 0.31 if kind == "random" else 0.2
    probability = 1.0 / (1.0 + math.exp(-(phi - threshold) / 0.03))
    return probability, probability * phi**0.5


def synthetic_results(
    kinds=KINDS, fractions=FRACTIONS, temps=TEMPS, *, schema: str = "new", percolation=False
) -> RunResults:
    """RunResults in the record layout of kmc.results (``schema="old"``: without the
    diffusive, upper-bound and note columns, as results written before them; ``percolation``:
    with the columns of kmc.percolation, absent where no replica is complete, as there)."""
    summary, arrhenius = [], []
    for kind in kinds:
        for phi in fractions:
            for t in temps:
                d = 1e-3 * math.exp(-true_ea(kind, phi) / (BOLTZMANN_EV * t))
                stuck, missing = is_stuck(kind, phi, t), is_missing(kind, phi, t)
                row = {KIND: kind, PHI: phi, TEMP: t, "replicas": 0 if missing else 2}
                row |= {"diffusive_replicas": 0 if stuck or missing else 2}
                row |= {"diffusive": not (stuck or missing), "note": ""}
                for key in ("D_tracer", "D_jump", "haven_ratio", "conductivity"):
                    value = 1.0 if key == "haven_ratio" else d
                    ok = not (missing or (stuck and schema == "new"))
                    row[key] = value if ok else math.nan
                    row[f"{key}_err"] = 0.1 * value if ok else math.nan
                    if key != "haven_ratio":
                        row[f"{key}_upper"] = 3 * value if stuck else math.nan
                if percolation and not missing:
                    probability, fraction = spanning(kind, phi)
                    row |= {"percolating": probability, "percolating_err": 0.05,
                            "spanning_fraction": fraction, "spanning_fraction_err": 0.02,
                            "critical_barrier": 0.4, "critical_barrier_err": 0.01}  # fmt: skip
                summary.append(row)
            withheld = kind == "random" and phi in STUCK_PHI
            ea = math.nan if withheld else true_ea(kind, phi)
            err = math.nan if withheld else 0.01
            arrhenius.append(
                {KIND: kind, PHI: phi, "Ea_tracer": ea, "Ea_tracer_err": err,
                 "Ea_jump": ea, "Ea_jump_err": 2 * err, "landscapes": 2,
                 "Ea_lower": 0.25, "Ea_upper": 0.6,
                 "note": "withheld: not diffusive at T = 300, 400 K" if withheld else ""}
            )  # fmt: skip
    if schema == "old":
        drop = {"diffusive", "diffusive_replicas", "note", "landscapes", "Ea_lower", "Ea_upper"}
        summary = [{k: v for k, v in r.items() if k not in drop and "_upper" not in k}
                   for r in summary if r["replicas"] > 0]  # fmt: skip
        arrhenius = [{k: v for k, v in r.items() if k not in drop} for r in arrhenius]
        for rec in arrhenius:
            if math.isnan(rec["Ea_tracer"]):
                rec["Ea_tracer"] = rec["Ea_jump"] = 0.4
                rec["Ea_tracer_err"] = rec["Ea_jump_err"] = 0.01
    swept = [k for k, values in ((KIND, kinds), (PHI, fractions), (TEMP, temps)) if values]
    n_tasks = sum(r["replicas"] for r in summary)
    return RunResults(
        tasks=[{} for _ in range(n_tasks)],
        summary=summary,
        arrhenius=arrhenius,
        swept=swept,
        missing=[],
        run_dir=Path("runs/nafepo4"),
        config={"name": "nafepo4_amorphization", "run": {"temperature": 300.0}},
    )


@pytest.fixture(scope="module")
def nafepo4() -> RunResults:
    return synthetic_results()


@pytest.fixture(scope="module")
def nafepo4_percolation() -> RunResults:
    return synthetic_results(percolation=True)


def panels(fig, prefix: str) -> list:
    return [ax for ax in fig.axes if ax.get_label().startswith(prefix) and ax.get_visible()]


def panel(fig, label: str):
    (ax,) = [ax for ax in fig.axes if ax.get_label() == label]
    return ax


def legend_texts(ax) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


def no_warnings(func, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = func(*args, **kwargs)
    assert not caught, [f"{w.category.__name__}: {w.message}" for w in caught]
    return out


# --------------------------------------------------------------------------- real analyses


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
    out = no_warnings(plot_run, results, tmp_path / "plot.png")
    assert out == tmp_path / "plot.png"
    check_png(out)


def test_plot_skips_non_positive_values(tmp_path):
    results = synthetic_results(kinds=["random"], fractions=[0.0, 0.5, 1.0], temps=[300.0, 400.0])
    results.summary[0]["D_jump"] = -1e-8  # a noisy collective mean can be negative
    results.summary[1]["D_tracer"] = math.nan
    results.summary[2]["D_jump_err"] = 10.0  # error bar larger than the value
    results.arrhenius[0]["Ea_jump"] = math.nan
    for rec in results.summary[3:]:
        rec["D_tracer"] = rec["D_jump"] = 0.0
    fig = no_warnings(make_figure, results)
    # 1 nan + 3 zeros of D*; 1 negative + 3 zeros of D_σ: counted, not dropped silently
    assert "4 points without data" in legend_texts(panel(fig, "x:D_tracer:0"))
    assert "4 points without data" in legend_texts(panel(fig, "x:D_jump:0"))
    check_png(no_warnings(plot_run, results, tmp_path / "plot.png"))


def test_nothing_to_show_still_plots(tmp_path):
    results = synthetic_results(kinds=["random"], fractions=[0.0, 0.5], temps=[300.0, 400.0])
    for rec in results.summary:
        rec["replicas"], rec["diffusive"] = 0, False
        for key in ("D_tracer", "D_jump"):
            rec[key] = rec[f"{key}_upper"] = math.nan
    for rec in results.arrhenius:
        rec["Ea_tracer"] = rec["Ea_jump"] = math.nan
    check_png(no_warnings(plot_run, results, tmp_path / "plot.png"))


def test_import_is_cheap():
    code = "import sys, kmc.plot; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- NaFePO4 shape


@pytest.mark.parametrize(
    ("suffix", "magic"),
    [(".png", (PNG_MAGIC,)), (".pdf", (b"%PDF",)), (".svg", (b"<?xml", b"<svg"))],
)
@pytest.mark.parametrize("by", [None, KIND])
@pytest.mark.parametrize("percolation", [False, True], ids=["", "percolation"])
def test_nafepo4_sweep_writes_every_format_without_warnings(
    tmp_path, nafepo4, nafepo4_percolation, suffix, magic, by, percolation
):
    results = nafepo4_percolation if percolation else nafepo4
    out = no_warnings(plot_run, results, tmp_path / f"figure{suffix}", by=by)
    assert out == tmp_path / f"figure{suffix}"
    data = out.read_bytes()
    assert data.startswith(magic) and len(data) > 10_000
    if suffix == ".svg":
        assert b"<svg" in data[:1000]
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left


def test_by_makes_one_column_of_panels_per_value(nafepo4):
    fig = no_warnings(make_figure, nafepo4, by=KIND)
    assert len(panels(fig, "x:")) == 4  # D* and D_σ × random, correlated
    assert len(panels(fig, "arrhenius:")) == 4
    assert panel(fig, "x:D_tracer:0").get_title() == "kind = random"
    assert panel(fig, "x:D_tracer:1").get_title() == "kind = correlated"
    # one shared log D axis
    ys = {panel(fig, f"{kind}:{col}:{j}").get_ylim() for kind in ("x", "arrhenius")
          for col in ("D_tracer", "D_jump") for j in (0, 1)}  # fmt: skip
    assert len(ys) == 1

    fig = no_warnings(make_figure, nafepo4)
    assert len(panels(fig, "x:")) == 2 and len(panels(fig, "arrhenius:")) == 2

    # one column per temperature; the Arrhenius plot needs them all, so one column of it
    fig = no_warnings(make_figure, nafepo4, by=TEMP)
    assert len(panels(fig, "x:")) == 8 and len(panels(fig, "arrhenius:")) == 2

    # x = temperature, columns by kind: no colour bar for T (it is the axis)
    fig = no_warnings(make_figure, nafepo4, x=TEMP, by=KIND)
    assert panel(fig, "x:D_jump:0").get_xlabel() == "T [K]"
    assert "T [K]" not in [ax.get_ylabel() for ax in fig.axes]


def test_temperature_is_a_colour_bar_not_legend_entries():
    temps = [float(t) for t in range(300, 700, 25)]  # 16 temperatures × 2 kinds: 32 curves
    results = synthetic_results(fractions=FRACTIONS[:6], temps=temps)
    fig = no_warnings(make_figure, results)
    bars = [ax for ax in fig.axes if ax.get_ylabel() == "T [K]"]
    assert len(bars) == 1
    (legend,) = fig.legends
    labels = [t.get_text() for t in legend.get_texts()]
    assert "kind = random" in labels and "kind = correlated" in labels
    assert "D* (tracer)" in labels and "D_σ (collective)" in labels
    assert not any(label.endswith(" K") for label in labels), labels
    assert len(labels) <= 8
    line_count = sum(
        1 for line in panel(fig, "x:D_tracer:0").get_lines() if line.get_linestyle() == "-"
    )
    assert line_count == 32


def test_non_diffusive_points_are_upper_bounds(nafepo4):
    fig = no_warnings(make_figure, nafepo4, by=KIND)
    ax = panel(fig, "x:D_tracer:0")  # kind = random
    bounds = {(x, y) for line in ax.get_lines() if line.get_gid() == UPPER_BOUND_GID
              for x, y in zip(line.get_xdata(), line.get_ydata(), strict=True)}  # fmt: skip
    expected = {
        (r[PHI], r["D_tracer_upper"]) for r in nafepo4.summary
        if r[KIND] == "random" and not r["diffusive"]
    }  # fmt: skip
    assert bounds == expected and len(bounds) == 6
    for line in ax.get_lines():
        if line.get_gid() == UPPER_BOUND_GID:
            assert line.get_marker() == "v" and line.get_linestyle() == "None"
    # the 300 K random curve is broken at the non-diffusive fractions, never bridged
    d0 = next(r["D_tracer"] for r in nafepo4.summary
              if (r[KIND], r[PHI], r[TEMP]) == ("random", 0.0, 300.0))  # fmt: skip
    (curve,) = [line for line in ax.get_lines() if d0 in list(line.get_ydata())]
    x, y = np.asarray(curve.get_xdata()), np.asarray(curve.get_ydata(), dtype=float)
    assert curve.get_linestyle() == "-"
    assert np.all(np.isnan(y[np.isin(x, STUCK_PHI)])) and np.isnan(y).sum() == 3
    assert np.all(np.isfinite(y[~np.isin(x, STUCK_PHI)]))
    # the point without a complete replica is counted on its panel
    assert "1 point without data" in legend_texts(panel(fig, "x:D_tracer:1"))
    assert not legend_texts(ax)


def test_withheld_activation_energy_has_no_fit_line(nafepo4):
    fig = no_warnings(make_figure, nafepo4, by=KIND)
    for j, withheld in ((0, 3), (1, 0)):
        ax = panel(fig, f"arrhenius:D_tracer:{j}")
        fits = [line for line in ax.get_lines() if len(line.get_xdata()) == 50]
        assert len(fits) == len(FRACTIONS) - withheld
        texts = legend_texts(ax)
        assert any("Ea withheld" in t for t in texts) == bool(withheld), texts
    assert "Ea withheld: φ = 0.2, 0.25, 0.3" in legend_texts(panel(fig, "arrhenius:D_jump:0"))

    # few curves: one legend entry each, with its Ea or "Ea withheld"
    results = synthetic_results(kinds=["random"], fractions=[0.0, 0.25])
    fig = no_warnings(make_figure, results)
    texts = legend_texts(panel(fig, "arrhenius:D_tracer:0"))
    assert texts[0].startswith("kind = random, φ = 0: Ea = 0.600 ± 0.010 eV")
    assert texts[1] == "kind = random, φ = 0.25: Ea withheld"


def test_results_without_diffusive_column_count_as_diffusive():
    results = synthetic_results(schema="old")
    fig = no_warnings(make_figure, results, by=KIND)
    ax = panel(fig, "x:D_tracer:0")
    assert not [line for line in ax.get_lines() if line.get_gid() == UPPER_BOUND_GID]
    assert not legend_texts(ax)


def test_bad_keys_and_extension_are_refused(tmp_path, nafepo4):
    with pytest.raises(ValueError, match=r"--x nope: not a swept key .*run\.temperature"):
        make_figure(nafepo4, x="nope")
    with pytest.raises(ValueError, match=r"--x microstructure\.kind: not a numeric"):
        make_figure(nafepo4, x=KIND)
    with pytest.raises(ValueError, match=r"--by run\.seed: not a swept key"):
        make_figure(nafepo4, by="run.seed")
    with pytest.raises(ValueError, match=r"unknown figure type.*'\.jpg'"):
        plot_run(nafepo4, tmp_path / "figure.jpg")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- kmc plot


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    sweep = {
        "microstructure.amorphous_fraction": [0.0, 0.5, 1.0],
        "amorphous.saddle_energy": [0.3, 0.4],
        "run.temperature": [300.0, 400.0],
    }
    return make_run(tmp_path_factory.mktemp("plot"), sweep, n_ions=8, n_frames=24)


def refused(capsys, argv: list[str], *names: str) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for name in names:
        assert name in lines[0], (name, lines[0])


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["-o", "{tmp}/figure.jpg"], ["figure.jpg", ".jpg", ".png, .pdf or .svg"]),
        (["-o", "{tmp}/figure"], ["unknown figure type"]),
        (["-o", "{tmp}/no/such/dir/x.png"], ["{tmp}/no/such/dir"]),
        (["-o", "{tmp}/adir.png"], ["adir.png", "is a directory"]),
        (["--x", "nope"], ["nope", PHI, "amorphous.saddle_energy", TEMP]),
        (["--by", "lattice.kind"], ["lattice.kind", PHI, TEMP]),
        (["--x", PHI, "--by", PHI], [PHI]),
    ],
    ids=["jpg", "no-extension", "missing-directory", "directory", "bad-x", "bad-by", "x-is-by"],
)
def test_plot_command_refuses_bad_arguments_before_analyzing(
    capsys, tmp_path, run_dir, args, names
):
    (tmp_path / "adir.png").mkdir()
    results = run_dir / "results.h5"
    results.unlink(missing_ok=True)
    argv = ["plot", str(run_dir), *(a.replace("{tmp}", str(tmp_path)) for a in args)]
    refused(capsys, argv, *(n.replace("{tmp}", str(tmp_path)) for n in names))
    assert not results.exists()  # refused before _analyze rewrote results.h5


def test_plot_command_x_by_and_vector_output(capsys, tmp_path, run_dir):
    out = tmp_path / "figure.svg"
    argv = ["plot", str(run_dir), "-o", str(out), "--x", "amorphous.saddle_energy"]
    assert cli.main([*argv, "--by", PHI]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.read_bytes().lstrip().startswith((b"<?xml", b"<svg"))
    assert (run_dir / "results.h5").is_file()
    pdf = tmp_path / "figure.pdf"
    assert cli.main(["plot", str(run_dir), "-o", str(pdf)]) == 0
    assert pdf.read_bytes().startswith(b"%PDF")


def test_activation_energy_outside_physical_range_is_dotted():
    results = synthetic_results(kinds=["correlated"], fractions=[0.0, 0.5])
    results.arrhenius[0]["Ea_lower"] = 0.7  # the fitted 0.6 eV lies below the range
    # the flag is kmc.results' (it allows for the fit's error); the plot reads it
    results.arrhenius[0]["note"] = "Ea_tracer outside the physical range on 0 of 4 landscapes"
    fig = no_warnings(make_figure, results)
    ax = panel(fig, "arrhenius:D_tracer:0")
    fits = [line for line in ax.get_lines() if len(line.get_xdata()) == 50]
    assert sorted(line.get_linestyle() for line in fits) == ["-", ":"]
    assert "(outside physical range)" in legend_texts(ax)[0]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "fit, Ea outside physical range" in labels


# --------------------------------------------------------------------------- percolation


def series(ax) -> list:
    """The drawn curves of a panel (not error bars, not legend handles)."""
    return [line for line in ax.get_lines() if line.get_linestyle() != "None"]


@pytest.mark.parametrize("by", [None, KIND])
def test_percolation_row_under_the_d_rows(nafepo4_percolation, by):
    fig = no_warnings(make_figure, nafepo4_percolation, by=by)
    n_cols = 2 if by else 1
    assert len(panels(fig, "percolation:")) == n_cols
    assert len(panels(fig, "x:")) == 2 * n_cols and len(panels(fig, "arrhenius:")) == 2 * n_cols
    for j in range(n_cols):
        ax = panel(fig, f"percolation:{j}")
        assert ax.get_yscale() == "linear" and ax.get_ylim() == (-0.05, 1.05)
        assert ax.get_xlabel() == "amorphous fraction φ"
        # under the D rows, which now leave the x label to it
        d_sigma = panel(fig, f"x:D_jump:{j}")
        assert ax.get_position().y1 < d_sigma.get_position().y0
        assert d_sigma.get_xlabel() == ""
        assert ax.get_position().y0 > panel(fig, f"arrhenius:D_tracer:{j}").get_position().y1
        assert ax.get_shared_x_axes().joined(ax, panel(fig, f"x:D_tracer:{j}"))
        assert not ax.get_shared_y_axes().joined(ax, panel(fig, f"x:D_tracer:{j}"))
    assert panel(fig, "percolation:0").get_ylabel() == "spanning probability"
    assert panel(fig, "arrhenius:D_jump:0").get_xlabel() == "1000 / T [1/K]"
    labels = [t.get_text().replace("\n", " ") for t in fig.legends[0].get_texts()]
    assert any("spanning probability (solid)" in t and "spanning clusters (dashed)" in t
               for t in labels), labels  # fmt: skip


def test_percolation_is_one_black_set_per_combination(nafepo4_percolation):
    """Four temperatures, identical points: one solid and one dashed curve per kind (not per
    temperature), in black and grey, with the values of the records."""
    fig = no_warnings(make_figure, nafepo4_percolation)
    ax = panel(fig, "percolation:0")
    curves = series(ax)
    assert sorted(line.get_linestyle() for line in curves) == ["-", "-", "--", "--"]
    colours = {line.get_color() for line in curves}
    assert colours == {"black", "0.45"}
    for line in curves:
        x = list(line.get_xdata())
        assert x == sorted(FRACTIONS)
    solid = {tuple(np.round(line.get_ydata(), 12)) for line in curves
             if line.get_linestyle() == "-"}  # fmt: skip
    expected = {tuple(round(spanning(kind, phi)[0], 12) for phi in FRACTIONS) for kind in KINDS}
    # correlated φ = 0.5 has no record at 300 K: the other temperatures give its point
    assert solid == expected
    assert not legend_texts(ax)  # no point without data
    dashed = [line for line in curves if line.get_linestyle() == "--"]
    assert all(line.get_markerfacecolor() == "white" for line in dashed)
    # the D rows are unchanged: one curve per kind and temperature
    assert len([line for line in panel(fig, "x:D_tracer:0").get_lines()
                if line.get_linestyle() == "-"]) == 2 * len(TEMPS)  # fmt: skip


def test_percolation_points_without_data_are_counted(nafepo4_percolation):
    results = synthetic_results(kinds=["random"], fractions=[0.0, 0.5, 1.0], temps=[300.0],
                                percolation=True)  # fmt: skip
    del results.summary[1]["percolating"]
    results.summary[2]["percolating"] = math.nan
    fig = no_warnings(make_figure, results)
    ax = panel(fig, "percolation:0")
    assert "2 points without data" in legend_texts(ax)
    (solid,) = [line for line in series(ax) if line.get_linestyle() == "-"]
    assert np.isnan(solid.get_ydata()[1:]).all()


def test_no_percolation_row_without_amorphous_sites():
    """A run without amorphous sites (olivine antisites: spanning_fraction nan everywhere,
    percolating 0) gets no percolation row: there is no amorphous phase to span."""
    results = synthetic_results(percolation=True)
    for row in results.summary:
        row["percolating"], row["spanning_fraction"] = 0.0, math.nan
    fig = no_warnings(make_figure, results)
    assert panels(fig, "percolation:") == []
    assert panels(fig, "x:D_tracer:")


def test_results_without_percolation_give_todays_figure(nafepo4, nafepo4_percolation):
    for by in (None, KIND):
        for results in (nafepo4, synthetic_results(schema="old")):
            fig = no_warnings(make_figure, results, by=by)
            n_cols = 2 if by else 1
            # D*, D_σ, two Arrhenius rows, the T and φ colour bars
            assert len(fig.axes) == 4 * n_cols + 2
            assert not panels(fig, "percolation:")
            labels = [t.get_text() for t in fig.legends[0].get_texts()]
            assert not any("spanning" in label for label in labels)
            assert panel(fig, "x:D_jump:0").get_xlabel() == "amorphous fraction φ"
        with_row = no_warnings(make_figure, nafepo4_percolation, by=by)
        assert len(with_row.axes) == len(fig.axes) + n_cols


def test_percolation_row_with_temperature_columns_and_x(tmp_path, nafepo4_percolation):
    fig = no_warnings(make_figure, nafepo4_percolation, by=TEMP)
    assert len(panels(fig, "percolation:")) == len(TEMPS)
    fig = no_warnings(make_figure, nafepo4_percolation, x=TEMP, by=KIND)
    ax = panel(fig, "percolation:0")
    assert ax.get_xlabel() == "T [K]"
    assert len(series(ax)) == 2 * len(FRACTIONS)  # one pair per fraction, flat in T
    check_png(no_warnings(plot_run, nafepo4_percolation, tmp_path / "t.png", by=TEMP))


# --------------------------------------------------------------------------- applied field


def field_results() -> RunResults:
    """A field sweep at two temperatures: σ_E = σ0 / (1 + (E/E0)²) (a made-up saturation)
    next to σ_NE = σ0 at every field, σ_E undefined at E = 0."""
    fields = [0.0, 1e4, 3e4, 1e5, 3e5]
    summary = []
    for t in (300.0, 400.0):
        sigma0 = 1e-4 * t / 300.0
        for e in fields:
            row = {"run.field": e, TEMP: t, "replicas": 2, "diffusive_replicas": 2,
                   "diffusive": True, "note": ""}  # fmt: skip
            for key in ("D_tracer", "D_jump"):
                row |= {key: 1e-8, f"{key}_err": 1e-10, f"{key}_upper": math.nan}
            row |= {"conductivity": sigma0, "conductivity_err": 0.05 * sigma0}
            driven = sigma0 / (1 + (e / 1e5) ** 2) if e else math.nan
            row |= {"conductivity_field": driven, "conductivity_field_err": 0.03 * driven}
            summary.append(row)
    return RunResults(
        tasks=[{} for _ in range(2 * len(summary))], summary=summary, arrhenius=[],
        swept=["run.field", TEMP], missing=[], run_dir=Path("runs/field"),
        config={"name": "field", "run": {"temperature": 300.0}},
    )  # fmt: skip


def test_conductivity_row_of_a_field_sweep():
    """A field sweep gets a σ row under the D rows: σ_E (filled, solid) and σ_NE (open,
    dotted), one curve each per temperature, σ_E starting at the first non-zero field and
    σ_NE at E = 0, its zero-field limit."""
    fig = no_warnings(make_figure, field_results(), x="run.field")
    ax = panel(fig, "conductivity:0")
    assert ax.get_ylabel() == "σ [S/cm]" and ax.get_yscale() == "log"
    solid = [line for line in series(ax) if line.get_linestyle() == "-"]
    dotted = [line for line in series(ax) if line.get_linestyle() == ":"]
    assert len(solid) == len(dotted) == 2
    for line in solid:
        assert np.isnan(line.get_ydata()[0]) and np.all(np.isfinite(line.get_ydata()[1:]))
    for line in dotted:
        assert line.get_xdata()[0] == 0.0 and np.all(np.isfinite(line.get_ydata()))
    assert panel(fig, "conductivity:0").get_xlabel()  # the bottom row of the x block
    assert "σ_E = n q v / |E| (driven)" in [t.get_text() for t in fig.legends[0].get_texts()]


# --------------------------------------------------------------------------- thermodynamics


def concentration_sweep(summary: list[dict]) -> RunResults:
    """Results of a 300 K sweep over ions.concentration with these summary records."""
    return RunResults(
        tasks=[{} for _ in range(10)], summary=summary, arrhenius=[],
        swept=["ions.concentration"], missing=[], run_dir=Path("runs/soc"),
        config={"name": "soc", "run": {"temperature": 300.0}},
    )  # fmt: skip


def test_chemical_diffusion_and_voltage_rows_of_a_concentration_sweep():
    """A lattice-gas concentration sweep gets a D_chem row (dash-dotted) under D* and D_σ,
    sharing their log axis, and a row of −μ/e (linear, its own axis) against c: the
    equilibrium voltage profile, μ = kT ln(c/(1 − c)) here, so −μ/e falls through 0 at 0.5."""
    kt = BOLTZMANN_EV * 300.0
    summary = []
    for c in (0.1, 0.3, 0.5, 0.7, 0.9):
        row = {"ions.concentration": c, "replicas": 2, "diffusive_replicas": 2,
               "diffusive": True, "note": ""}  # fmt: skip
        for key, value in (("D_tracer", 1e-8 * (1 - c)), ("D_jump", 1e-8 * (1 - c)),
                           ("D_chem", 1e-8)):  # fmt: skip
            row |= {key: value, f"{key}_err": 0.05 * value, f"{key}_upper": math.nan}
        mu = kt * math.log(c / (1 - c))
        row |= {"chemical_potential": mu, "chemical_potential_err": 1e-4,
                "thermodynamic_factor": 1 / (1 - c), "thermodynamic_factor_err": 0.01}  # fmt: skip
        summary.append(row)
    fig = no_warnings(make_figure, concentration_sweep(summary), x="ions.concentration")
    chem = panel(fig, "x:D_chem:0")
    assert chem.get_yscale() == "log" and chem.get_ylabel() == "D_chem [cm²/s]"
    (line,) = [ln for ln in series(chem) if ln.get_linestyle() == "-."]
    np.testing.assert_allclose(line.get_ydata(), 1e-8)
    volt = panel(fig, "voltage:0")
    assert volt.get_yscale() == "linear" and volt.get_ylabel() == "−μ/e [V]"
    (curve,) = series(volt)
    expected = [-kt * math.log(c / (1 - c)) for c in (0.1, 0.3, 0.5, 0.7, 0.9)]
    np.testing.assert_allclose(curve.get_ydata(), expected)
    assert volt.get_xlabel() == "ions.concentration" or volt.get_xlabel()
    assert not panels(fig, "order")  # no order parameter: no second axis


def test_order_parameter_on_the_voltage_row():
    """Records with an order parameter (bipartite lattice) draw it on a 0–1 axis at the
    right of the voltage panel, one dotted curve of open markers per temperature, the
    stored values at each x in order of x."""
    orders = {0.1: 0.05, 0.3: 0.2, 0.5: 0.85, 0.7: 0.15, 0.9: 0.02}
    summary = []
    for c in (0.9, 0.1, 0.5, 0.3, 0.7):  # out of order on purpose
        row = {"ions.concentration": c, "replicas": 2, "diffusive_replicas": 2,
               "diffusive": True, "note": "", "chemical_potential": -0.01 * c,
               "chemical_potential_err": 1e-4, "order_parameter": orders[c],
               "order_parameter_err": 0.01}  # fmt: skip
        for key in ("D_tracer", "D_jump", "D_chem"):
            row |= {key: 1e-8, f"{key}_err": 1e-9, f"{key}_upper": math.nan}
        summary.append(row)
    fig = no_warnings(make_figure, concentration_sweep(summary), x="ions.concentration")
    order = panel(fig, "order:0")
    assert order.get_ylabel() == "order" and order.get_ylim() == (0.0, 1.05)
    (curve,) = series(order)
    (voltage,) = series(panel(fig, "voltage:0"))
    assert curve.get_linestyle() == ":" and curve.get_marker() == voltage.get_marker()
    assert curve.get_markerfacecolor() == "white"
    np.testing.assert_array_equal(curve.get_xdata(), sorted(orders))
    np.testing.assert_array_equal(curve.get_ydata(), [orders[c] for c in sorted(orders)])
    assert "order parameter (right axis)" in [t.get_text() for t in fig.legends[0].get_texts()]
