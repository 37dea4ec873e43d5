"""``kmc plot``: D* and D_σ versus amorphous fraction, and an Arrhenius plot.

Panel 1 shows the replica means of D* (filled markers, solid lines) and D_σ (open markers,
dashed lines) on a log axis against the amorphous fraction (or, if that was not swept, the
first numeric swept key other than the temperature; with neither, a single point at the
config's fraction), one colour per temperature and one marker/line style per combination of
the remaining swept keys, with standard-error bars. Panel 2, drawn when the temperature was
swept over at least two values, plots D against 1000/T on a log axis with the Arrhenius fit
of every curve and its activation energy in the legend.

matplotlib is imported inside :func:`plot_run` (object-oriented API, Agg canvas, no pyplot
state), so importing this module is cheap.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from kmc.analysis import BOLTZMANN_EV
from kmc.results import TEMPERATURE_KEY, RunResults, show_value, unit_of
from kmc.store import atomic_write

__all__ = ["FRACTION_KEY", "plot_run"]

FRACTION_KEY = "microstructure.amorphous_fraction"

_DPI = 120
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
_LINESTYLES = ("-", "--", ":", "-.")


def plot_run(results: RunResults, path: str | os.PathLike[str]) -> Path:
    """Plot ``results`` to the PNG file ``path`` (about 120 dpi) and return its path.

    Non-positive or missing means are left out of the log-scale plots (a noisy collective
    D can average to <= 0); lower error bars are clipped to stay positive.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    target = Path(path)
    temps = _temperatures(results)
    arrhenius_panel = bool(results.arrhenius) and len(temps) >= 2

    fig = Figure(figsize=(13.0 if arrhenius_panel else 7.0, 5.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if arrhenius_panel else 1, squeeze=False)[0]

    x_key = _x_key(results)
    others = [k for k in results.swept if k not in (x_key, TEMPERATURE_KEY)]
    _fraction_panel(axes[0], results, x_key, others, temps, Line2D)
    if arrhenius_panel:
        _arrhenius_panel(axes[1], results, Line2D)
    name = results.config.get("name") if isinstance(results.config, dict) else None
    if name:
        fig.suptitle(f"{name}: {len(results.tasks)} tasks" + _missing_note(results))
    with atomic_write(target) as tmp:
        fig.savefig(tmp, dpi=_DPI, format="png")
    return target


def _missing_note(results: RunResults) -> str:
    return f", {len(results.missing)} missing" if results.missing else ""


# --------------------------------------------------------------------------- helpers


def _numeric(value: Any) -> float | None:
    """A swept value as a number: ints and floats, and a constant distribution
    ``{"dist": "constant", "value": v}`` (how a swept energy is stored); else None."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict) and value.get("dist") == "constant" and "value" in value:
        return _numeric(value["value"])
    return None


def _x_key(results: RunResults) -> str | None:
    """The swept key for the x axis: the amorphous fraction, else the first numeric one
    other than the temperature, else None (a single point at the config's fraction)."""
    if FRACTION_KEY in results.swept:
        return FRACTION_KEY
    for key in results.swept:
        if key == TEMPERATURE_KEY:
            continue
        if results.summary and all(_numeric(row[key]) is not None for row in results.summary):
            return key
    return None


def _config_value(results: RunResults, dotted: str, default: Any) -> Any:
    node: Any = results.config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _temperatures(results: RunResults) -> list[float]:
    if TEMPERATURE_KEY in results.swept:
        return sorted({float(row[TEMPERATURE_KEY]) for row in results.summary})
    return [float(_config_value(results, TEMPERATURE_KEY, math.nan))]


def _row_temperature(results: RunResults, row: dict[str, Any]) -> float:
    if TEMPERATURE_KEY in row:
        return float(row[TEMPERATURE_KEY])
    return float(_config_value(results, TEMPERATURE_KEY, math.nan))


def _short(key: str) -> str:
    """A legend-friendly name of a swept key."""
    if key == FRACTION_KEY:
        return "φ"
    if key == TEMPERATURE_KEY:
        return "T"
    return key


def _axis_label(key: str | None) -> str:
    if key in (None, FRACTION_KEY):
        return "amorphous fraction φ"
    unit = unit_of(key)
    return f"{key} [{unit}]" if unit and unit != "1" else key


def _combo_id(row: dict[str, Any], keys: list[str]) -> str:
    return json.dumps({k: row[k] for k in keys}, sort_keys=True)


def _combo_label(row: dict[str, Any], keys: list[str]) -> str:
    return ", ".join(f"{_short(k)} = {show_value(row[k])}" for k in keys)


def _positive(x, y, err):
    """Arrays restricted to finite positive y, with asymmetric error bars kept above 0."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    err = np.asarray(err, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y) & (y > 0)
    x, y, err = x[keep], y[keep], err[keep]
    err = np.where(np.isfinite(err) & (err > 0), err, 0.0)
    lower = np.minimum(err, 0.95 * y)
    return x, y, np.vstack([lower, err])


def _errorbar(ax, x, y, err, *, color, marker, linestyle, filled, label=None):
    x, y, yerr = _positive(x, y, err)
    if x.size == 0:
        return
    order = np.argsort(x)
    ax.errorbar(
        x[order],
        y[order],
        yerr=yerr[:, order],
        color=color,
        marker=marker,
        linestyle=linestyle,
        markerfacecolor=color if filled else "white",
        markeredgecolor=color,
        markersize=6,
        linewidth=1.3,
        capsize=3,
        label=label,
    )


# --------------------------------------------------------------------------- panels


def _legend(ax, handles, n_inside: int = 7, width_inside: int = 40) -> None:
    """Inside the axes if short, else below them (constrained layout makes room)."""
    labels = [h.get_label() for h in handles]
    if len(handles) <= n_inside and max((len(t) for t in labels), default=0) <= width_inside:
        ax.legend(handles=handles, fontsize="small", loc="best")
    else:
        ax.legend(
            handles=handles,
            fontsize="small",
            loc="upper center",
            bbox_to_anchor=(0.5, -0.13),
            ncol=2 if len(handles) > 8 else 1,
            frameon=False,
        )


def _temperature_colours(temps: list[float]) -> dict[float, Any]:
    from matplotlib import colormaps

    if len(temps) == 1:
        return {temps[0]: "tab:blue"}
    cmap = colormaps["plasma"]  # dark blue (cold) to orange (hot); no pale middle
    return {t: cmap(0.85 * i / (len(temps) - 1)) for i, t in enumerate(temps)}


def _fraction_panel(ax, results, x_key, others, temps, Line2D) -> None:
    colours = _temperature_colours(temps)
    combos: list[str] = []
    combo_rows: list[dict[str, Any]] = []
    for row in results.summary:
        cid = _combo_id(row, others)
        if cid not in combos:
            combos.append(cid)
            combo_rows.append(row)

    default_x = float(_config_value(results, FRACTION_KEY, math.nan))
    curves: dict[tuple[float, str], list[dict[str, Any]]] = {}
    for row in results.summary:
        key = (_row_temperature(results, row), _combo_id(row, others))
        curves.setdefault(key, []).append(row)

    plotted = 0
    for (temp, cid), rows in curves.items():
        marker = _MARKERS[combos.index(cid) % len(_MARKERS)]
        colour = colours.get(temp, "tab:gray")
        xs = [_numeric(r[x_key]) if x_key else default_x for r in rows]
        for column, filled, style in (("D_tracer", True, "-"), ("D_jump", False, "--")):
            ys = np.array([r[column] for r in rows], dtype=float)
            errs = [r[f"{column}_err"] for r in rows]
            _errorbar(ax, xs, ys, errs, color=colour, marker=marker, linestyle=style, filled=filled)
            plotted += int(np.sum(np.isfinite(ys) & (ys > 0)))

    handles = [
        Line2D([], [], color=colours[t], linestyle="-", linewidth=2.5,
               label=f"T = {t:g} K" if math.isfinite(t) else "T = ?")
        for t in temps
    ]  # fmt: skip
    if others:
        handles += [
            Line2D([], [], color="0.35", marker=_MARKERS[i % len(_MARKERS)], linestyle="none",
                   label=_combo_label(row, others))
            for i, row in enumerate(combo_rows)
        ]  # fmt: skip
    handles += [
        Line2D([], [], color="black", marker="o", linestyle="-", label="D* (tracer)"),
        Line2D([], [], color="black", marker="o", markerfacecolor="white", linestyle="--",
               label="D_σ (collective)"),
    ]  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel(_axis_label(x_key))
    ax.set_ylabel("D [cm²/s]")
    if x_key in (None, FRACTION_KEY):
        ax.set_xlim(-0.05, 1.05)
    title = "Diffusion coefficients"
    if x_key is None:
        title += f" at the config's φ = {default_x:g}"
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.1)
    if not plotted:
        ax.text(0.5, 0.5, "no positive D to show", transform=ax.transAxes, ha="center")
    _legend(ax, handles)


def _fit_line(temps, values, errors, ea):
    """ln D = ln A − Ea/kT through the (weighted) centroid, as the fit in kmc.analysis."""
    t = np.asarray(temps, dtype=float)
    y = np.asarray(values, dtype=float)
    e = np.asarray(errors, dtype=float)
    if not math.isfinite(ea) or t.size < 2 or not np.all(np.isfinite(y) & (y > 0)):
        return None
    x = 1.0 / (BOLTZMANN_EV * t)
    w = (y / e) ** 2 if np.all(np.isfinite(e) & (e > 0)) else np.ones_like(y)
    ln_a = np.sum(w * (np.log(y) + ea * x)) / np.sum(w)
    grid = np.linspace(t.min(), t.max(), 50)
    return 1000.0 / grid, np.exp(ln_a - ea / (BOLTZMANN_EV * grid))


def _ea_text(rec: dict[str, Any], key: str) -> str:
    ea, err = rec[key], rec[f"{key}_err"]
    if not math.isfinite(ea):
        return "n/a"
    return f"{ea:.3f}" + (f" ± {err:.3f}" if math.isfinite(err) else "") + " eV"


def _arrhenius_panel(ax, results, Line2D) -> None:
    from matplotlib import colormaps

    others = [k for k in results.swept if k != TEMPERATURE_KEY]
    records = results.arrhenius
    cmap = colormaps["viridis"]
    n = len(records)
    handles = []
    for i, rec in enumerate(records):
        colour = cmap(0.0 if n == 1 else 0.9 * i / (n - 1))
        rows = [
            row
            for row in results.summary
            if all(row[k] == rec[k] for k in others) and row["replicas"] > 0
        ]
        temps = np.array([float(r[TEMPERATURE_KEY]) for r in rows])
        for column, ea_key, filled, style in (
            ("D_tracer", "Ea_tracer", True, "-"),
            ("D_jump", "Ea_jump", False, "--"),
        ):
            ys = [r[column] for r in rows]
            errs = [r[f"{column}_err"] for r in rows]
            inverse = 1000.0 / temps if temps.size else np.empty(0)
            _errorbar(
                ax, inverse, ys, errs, color=colour, marker="o", linestyle="none", filled=filled
            )
            line = _fit_line(temps, ys, errs, rec[ea_key])
            if line is not None:
                ax.plot(*line, color=colour, linestyle=style, linewidth=1.2)
        name = _combo_label(rec, others) + ": " if others else ""
        label = f"{name}Ea* = {_ea_text(rec, 'Ea_tracer')}, Ea_σ = {_ea_text(rec, 'Ea_jump')}"
        handles.append(Line2D([], [], color=colour, marker="o", linestyle="-", label=label))
    handles += [
        Line2D([], [], color="black", marker="o", linestyle="-", label="D* and its fit"),
        Line2D([], [], color="black", marker="o", markerfacecolor="white", linestyle="--",
               label="D_σ and its fit"),
    ]  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel("1000 / T [1/K]")
    ax.set_ylabel("D [cm²/s]")
    ax.set_title("Arrhenius plot, D = D₀ exp(−Ea / kT)")
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.1)
    _legend(ax, handles, width_inside=60)
