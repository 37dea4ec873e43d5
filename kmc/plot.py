"""``kmc plot``: D* and D_σ against a swept key in small multiples, and Arrhenius plots.

The figure is a grid of panels that share one logarithmic D axis (constrained layout):

- **Rows.** D* (filled markers, solid lines) in the first row and D_σ (open markers, dashed
  lines) in the second, against the x key: one row each rather than both in one panel, so
  that 30 and more curves stay readable. When the summary records carry ``percolating``
  (results written since kmc.percolation; older ones give the figure without this row) and
  some landscape has amorphous sites (a ``spanning_fraction`` that is not nan), a third
  row holds the percolation of the amorphous phase against x on a linear 0–1 axis:
  the spanning probability (mean of ``percolating``; filled markers, solid lines) and the
  spanning fraction (``spanning_fraction``; open markers, dashed lines), in black. These are
  properties of the landscape, which does not depend on the temperature, so one curve is
  drawn per combination of the other keys (at each x the first record with a value). When
  the temperature was swept over at least two values, two more rows hold the Arrhenius
  plots of D* and D_σ against 1000/T.
- **Columns.** One per value of the ``by`` key (``kmc plot RUN --by microstructure.kind``:
  random | correlated), else one.
- **x axis.** The ``x`` key: by default the amorphous fraction, else the first numeric swept
  key other than the temperature (and ``by``), else a single point at the config's fraction.
- **Colour.** The temperature, on a continuous colormap with a colour bar "T [K]", in the
  rows against x; the x value, on a second colormap with its own colour bar, in the
  Arrhenius rows (one curve per combination of the swept keys other than the temperature).
- **Marker shape.** The combination of the remaining swept keys (not x, by or temperature),
  explained, with the line styles, in one compact legend below the panels.
- **Non-diffusive points** (a summary record with ``diffusive`` false) are upper bounds: a
  downward triangle at ``X_upper`` in the curve's colour, without an error bar, never a
  value. A line joins only consecutive diffusive points; it breaks at a non-diffusive point
  and at a point without a value. Points with nothing to draw (no complete replica, a nan or
  non-positive mean on the log axis, a non-diffusive point without a finite bound) are counted
  in a note on their panel ("3 points without data"). A record without a ``diffusive`` column
  (results written before it existed) counts as diffusive.
- **Arrhenius rows.** The points of each combination and, where its activation energy was
  not withheld (a finite ``Ea_tracer`` / ``Ea_jump``), the fit line D₀ exp(−Ea/kT) through the
  weighted centroid of its diffusive points, dotted when Ea lies outside the physical range
  [``Ea_lower``, ``Ea_upper``]. A withheld Ea has no line and "Ea withheld" in the panel's
  legend, which lists each curve with its Ea when there are at most six, else only the
  withheld and out-of-range ones and the range of fitted Ea.

The file type comes from the extension: ``.png`` (raster, 120 dpi), ``.pdf`` and ``.svg``
(vector). :func:`make_figure` builds the Figure (for inspection), :func:`plot_run` writes it;
:func:`choose_keys`, :func:`figure_format`, :func:`check_output` and
:func:`check_run_options` are the argument checks ``kmc plot`` makes before any work.

matplotlib is imported inside the functions that draw (object-oriented API, no pyplot
state), so importing this module is cheap.
"""

from __future__ import annotations

import json
import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kmc.results import TEMPERATURE_KEY, RunResults, show_value, unit_of
from kmc.store import atomic_write
from kmc.units import BOLTZMANN_EV

__all__ = [
    "FORMATS",
    "FRACTION_KEY",
    "check_output",
    "check_run_options",
    "choose_keys",
    "figure_format",
    "make_figure",
    "plot_run",
]

FRACTION_KEY = "microstructure.amorphous_fraction"
FIELD_KEY = "run.field"
#: Figure file extensions and the matplotlib format each is written in.
FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}

_DPI = 120
# marker shapes of the combinations of the remaining swept keys; no triangles, since a
# downward triangle is the upper-bound marker
_MARKERS = ("o", "s", "D", "P", "X", "h", "p", "*", "<", ">")
# (column, its label, filled markers, line style) of the two rows of each kind
_OBSERVABLES = (("D_tracer", "D*", True, "-"), ("D_jump", "D_σ", False, "--"))
# the σ row of a field-driven run: σ_E = n q v / |E| and the Nernst–Einstein σ from D_σ
# the chemical diffusion row of a lattice gas in equilibrium: D_chem = Θ D_σ
_CHEMICAL = ("D_chem", "D_chem", True, "-.")
_CONDUCTIVITIES = (
    ("conductivity_field", "σ_E", True, "-"),
    ("conductivity", "σ_NE", False, ":"),
)
# (column, filled markers, line style, colour) of the two series of the percolation row
_PERCOLATION = (("percolating", True, "-", "black"), ("spanning_fraction", False, "--", "0.45"))
_PERCOLATION_LABEL = (
    "spanning probability (solid) and fraction of amorphous sites in spanning clusters (dashed)"
)
_EA_KEYS = {"D_tracer": "Ea_tracer", "D_jump": "Ea_jump"}
_UPPER_MARKER = "v"
#: gid of the Line2D artists that draw upper bounds (non-diffusive points).
UPPER_BOUND_GID = "upper_bound"
_UNIT_TEXT = {"K": "K", "eV": "eV", "angstrom": "Å", "Hz": "Hz"}  # units shown after values
_FEW_RECORDS = 6  # Arrhenius legends list every curve up to this many
_LEGEND_WIDTH = 48  # characters per line of a legend entry (long ones wrap)
_PERCOLATION_HEIGHT = 0.8  # height of the percolation row relative to a D row


# --------------------------------------------------------------------------- argument checks


def figure_format(path: str | os.PathLike[str]) -> str:
    """The matplotlib format of a figure file, from its extension (``ValueError`` if unknown)."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        shown = repr(suffix) if suffix else "none"
        raise ValueError(
            f"-o {os.fspath(path)}: unknown figure type (extension {shown}; use .png, .pdf or .svg)"
        )
    return FORMATS[suffix]


def check_output(path: str | os.PathLike[str]) -> Path:
    """A figure path with a known extension, in an existing directory, not a directory
    itself; ``ValueError`` (one line) otherwise."""
    target = Path(path)
    figure_format(target)
    if not target.parent.is_dir():
        raise ValueError(f"-o {target}: directory {target.parent} does not exist")
    if target.is_dir():
        raise ValueError(f"-o {target}: is a directory")
    return target


def choose_keys(
    swept: Sequence[str],
    values: Mapping[str, Sequence[Any]],
    x: str | None = None,
    by: str | None = None,
) -> tuple[str | None, str | None]:
    """The x key and the ``by`` key of the plot, checked: both must be swept keys, x numeric
    (``values`` maps each swept key to its values) and different from ``by``. Without ``x``
    the default (see the module docstring; None: a single point). ``ValueError`` (one line
    naming the key and listing the swept keys) otherwise."""
    listing = "swept keys: " + (", ".join(swept) if swept else "none")
    for option, key in (("--x", x), ("--by", by)):
        if key is not None and key not in swept:
            raise ValueError(f"{option} {key}: not a swept key of this run ({listing})")
    if x is not None:
        if not all(_numeric(v) is not None for v in values.get(x, ())):
            raise ValueError(f"--x {x}: not a numeric swept key ({listing})")
        if x == by:
            raise ValueError(f"--x and --by {x}: must be different keys ({listing})")
        return x, by
    candidates = [k for k in swept if k not in (by, TEMPERATURE_KEY)]
    if FRACTION_KEY in candidates:
        return FRACTION_KEY, by
    for key in candidates:
        if values.get(key) and all(_numeric(v) is not None for v in values[key]):
            return key, by
    return None, by


def check_run_options(
    run_dir: str | os.PathLike[str], *, x: str | None = None, by: str | None = None
) -> tuple[str | None, str | None]:
    """:func:`choose_keys` for a run directory, from its config.toml alone (nothing is
    analyzed or written). Raises ``ValueError``, or :class:`kmc.config.ConfigError`."""
    from kmc.config import load_config, plain

    config = load_config(Path(run_dir) / "config.toml", check_memory=False)
    swept = [key for key, _ in config.sweep]
    values = {key: [plain(v) for v in vals] for key, vals in config.sweep}
    return choose_keys(swept, values, x, by)


# --------------------------------------------------------------------------- entry points


def plot_run(
    results: RunResults,
    path: str | os.PathLike[str],
    *,
    x: str | None = None,
    by: str | None = None,
) -> Path:
    """Plot ``results`` to ``path`` (.png at 120 dpi, .pdf or .svg) and return the path.

    ``x`` and ``by`` are swept keys (see :func:`make_figure`). The file is written
    atomically. Raises ``ValueError`` (one line) for an unknown extension or a bad key,
    before anything is drawn.
    """
    target = Path(path)
    fmt = figure_format(target)
    fig = make_figure(results, x=x, by=by)
    with atomic_write(target) as tmp:
        fig.savefig(tmp, dpi=_DPI, format=fmt)
    return target


def make_figure(results: RunResults, *, x: str | None = None, by: str | None = None):
    """The matplotlib Figure of :func:`plot_run` (layout in the module docstring).

    Panel axes carry labels ``"x:<column>:<j>"`` and ``"arrhenius:<column>:<j>"`` (column
    ``D_tracer`` or ``D_jump``, j the panel's column), and ``"percolation:<j>"`` for the
    percolation row; upper-bound markers are Line2D artists with gid
    :data:`UPPER_BOUND_GID`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    summary = list(results.summary)
    swept = list(results.swept)
    values = {key: [row[key] for row in summary if key in row] for key in swept}
    x_key, by_key = choose_keys(swept, values, x, by)
    plan = _Plan(results, x_key, by_key)

    d_rows = _OBSERVABLES + ((_CHEMICAL,) if plan.thermo else ())  # log D rows
    n_d = len(d_rows)
    sigma_row = n_d if plan.field else None  # σ_E and σ_NE of a field-driven run, if any
    volt_row = n_d + plan.field if plan.thermo else None  # −μ/e of a lattice gas, if any
    perc_row = n_d + plan.field + plan.thermo if plan.percolation else None
    arr_row = n_d + plan.field + plan.thermo + plan.percolation  # the first Arrhenius row
    n_rows = arr_row + (2 if plan.arrhenius else 0)
    n_cols = len(plan.columns)
    legend_rows = math.ceil(len(plan.legend_handles()) / _legend_columns(n_cols))
    ratios = [1.0 if r != perc_row else _PERCOLATION_HEIGHT for r in range(n_rows)]
    width = 2.2 + max(3.3 * n_cols, 5.0) + (1.0 if plan.colour_temps else 0.0)
    height = 0.8 + 2.45 * sum(ratios) + 0.22 * legend_rows
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(n_rows, n_cols, height_ratios=ratios)
    axes = np.empty((n_rows, n_cols), dtype=object)  # None where a spanning panel sits
    first = None
    for r in range(n_rows):
        # one Arrhenius panel per row spans the figure when the columns are temperatures
        spans = r >= arr_row and len(plan.arrhenius_columns) == 1 and n_cols > 1
        for j in range(1 if spans else n_cols):
            if r in (perc_row, sigma_row, volt_row):  # own y axis, shared along the row
                ax = fig.add_subplot(grid[r, j], sharey=axes[r, 0] if j > 0 else None)
            else:
                ax = fig.add_subplot(grid[r, :] if spans else grid[r, j], sharey=first)
                first = ax if first is None else first
            if 0 < r < arr_row:
                ax.sharex(axes[0, j])
            elif r == arr_row + 1:
                ax.sharex(axes[arr_row, j])
            elif j > 0:
                ax.sharex(axes[r, 0])
            if j > 0:
                ax.tick_params(labelleft=False)
            axes[r, j] = ax

    for j, column_value in enumerate(plan.columns):
        rows = plan.rows_of_column(column_value)
        for i, (column, name, filled, style) in enumerate(d_rows):
            ax = axes[i, j]
            ax.set_label(f"x:{column}:{j}")
            _x_panel(ax, plan, rows, column, filled, style)
            _decorate(ax, plan, j, name, x_panel=True, top=i == 0,
                      bottom=i == n_d - 1 and arr_row == n_d)  # fmt: skip
        if sigma_row is not None:
            ax = axes[sigma_row, j]
            ax.set_label(f"conductivity:{j}")
            for column, _, filled, style in _CONDUCTIVITIES:
                _x_panel(ax, plan, rows, column, filled, style)
            _decorate(ax, plan, j, "σ", x_panel=True, top=False,
                      bottom=arr_row == sigma_row + 1, unit="S/cm")  # fmt: skip
        if volt_row is not None:
            ax = axes[volt_row, j]
            ax.set_label(f"voltage:{j}")
            _voltage_panel(ax, plan, rows, last_column=j == n_cols - 1)
            ax.grid(True, which="major", alpha=0.3)
            if j == 0:
                ax.set_ylabel("−μ/e [V]")
            if arr_row == volt_row + 1:
                ax.set_xlabel(_axis_label(plan.x_key))
            else:
                ax.tick_params(labelbottom=False)
        if perc_row is not None:
            ax = axes[perc_row, j]
            ax.set_label(f"percolation:{j}")
            _percolation_panel(ax, plan, rows)
            _decorate_percolation(ax, plan, j)
    if plan.arrhenius:
        for j, column_value in enumerate(plan.arrhenius_columns):
            groups = plan.arrhenius_groups(column_value)
            for i, (column, name, filled, style) in enumerate(_OBSERVABLES):
                ax = axes[arr_row + i, j]
                ax.set_label(f"arrhenius:{column}:{j}")
                _arrhenius_panel(ax, plan, groups, column, filled, style)
                _decorate(ax, plan, j, name, x_panel=False, top=i == 0, bottom=i == 1)

    _colour_bars(fig, axes, plan, arr_row)
    from matplotlib.legend_handler import HandlerTuple

    fig.legend(
        handles=plan.legend_handles(),
        handler_map={_LabelledTuple: HandlerTuple(ndivide=None, pad=0.3)},
        loc="outside lower center",
        ncol=_legend_columns(n_cols),
        fontsize="small",
        frameon=False,
    )
    title = plan.title()
    if title:
        fig.suptitle(title)
    return fig


def _legend_columns(n_cols: int) -> int:
    return 3 if n_cols == 1 else 4


# --------------------------------------------------------------------------- the plan


def _numeric(value: Any) -> float | None:
    """A swept value as a number: ints and floats, and a constant distribution
    ``{"dist": "constant", "value": v}`` (how a swept energy is stored); else None."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict) and value.get("dist") == "constant" and "value" in value:
        return _numeric(value["value"])
    return None


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _ident(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _config_value(results: RunResults, dotted: str, default: Any) -> Any:
    node: Any = results.config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _is_diffusive(row: Mapping[str, Any]) -> bool:
    """A record without a ``diffusive`` column (older results) counts as diffusive."""
    return bool(row.get("diffusive", True))


def _point(row: Mapping[str, Any], column: str) -> tuple[str, float, float] | None:
    """What to draw of ``column`` in a summary record: ``("value", mean, error)`` for a
    diffusive point with a positive mean, ``("upper", bound, nan)`` for a non-diffusive point
    with a positive bound, None for nothing (no replica, nan, non-positive)."""
    if int(row.get("replicas", 1) or 0) <= 0:
        return None
    if _is_diffusive(row):
        y = _float(row.get(column))
        if math.isfinite(y) and y > 0:
            return ("value", y, _float(row.get(f"{column}_err")))
        return None
    bound = _float(row.get(f"{column}_upper"))
    if math.isfinite(bound) and bound > 0:
        return ("upper", bound, math.nan)
    return None


class _Plan:
    """What goes where: keys, columns, curves, colours and markers, shared by all panels."""

    def __init__(self, results: RunResults, x_key: str | None, by_key: str | None) -> None:
        from matplotlib import colormaps
        from matplotlib.colors import ListedColormap, Normalize

        self.results = results
        self.summary = list(results.summary)
        self.swept = list(results.swept)
        self.x_key = x_key
        self.by_key = by_key
        self.default_x = _float(_config_value(results, FRACTION_KEY, math.nan))
        self.remaining = [k for k in self.swept if k not in (x_key, by_key, TEMPERATURE_KEY)]
        self.short = _short_names(self.swept)

        self.columns: list[Any] = [None]
        if by_key is not None:
            self.columns = _unique([row[by_key] for row in self.summary])

        temps = sorted({self.temperature(row) for row in self.summary})
        temps = [t for t in temps if math.isfinite(t)]
        self.temps = temps
        t_swept = TEMPERATURE_KEY in self.swept
        self.colour_temps = t_swept and len(temps) >= 2 and TEMPERATURE_KEY not in (x_key, by_key)
        self.arrhenius = t_swept and len(temps) >= 2
        self.arrhenius_columns: list[Any] = [None]
        if by_key is not None and by_key != TEMPERATURE_KEY:
            self.arrhenius_columns = self.columns
        # the swept keys other than the temperature that tell Arrhenius curves apart
        self.arrhenius_keys = [k for k in self.swept if k != TEMPERATURE_KEY]

        self.t_cmap = ListedColormap(colormaps["plasma"](np.linspace(0.0, 0.85, 256)))
        self.t_norm = Normalize(min(temps), max(temps)) if self.colour_temps else None
        self.x_colour = x_key is not None and x_key != TEMPERATURE_KEY and self.arrhenius
        self.x_cmap = ListedColormap(colormaps["viridis"](np.linspace(0.0, 0.9, 256)))
        self.x_norm = None
        if self.x_colour:
            xs = [_numeric(row[x_key]) for row in self.summary]
            xs = [v for v in xs if v is not None]
            if xs and max(xs) > min(xs):
                self.x_norm = Normalize(min(xs), max(xs))
            else:
                self.x_colour = False

        self.combos = _unique([{k: row[k] for k in self.remaining} for row in self.summary])
        self.has_upper = any(
            (p := _point(row, column)) is not None and p[0] == "upper"
            for row in self.summary
            for column, *_ in _OBSERVABLES
        )
        # results written since kmc.percolation carry it (older ones: no percolation row);
        # a run without amorphous sites (spanning_fraction nan everywhere) has nothing to show
        self.percolation = any(
            "percolating" in row and _finite(row.get("spanning_fraction")) for row in self.summary
        )
        # a run driven by a field: some point has a field-driven conductivity
        self.field = any("conductivity_field" in row for row in self.summary)
        # a lattice gas in equilibrium: Θ, D_chem and μ (the voltage profile)
        self.thermo = any("D_chem" in row for row in self.summary)
        self.ordering = self.thermo and any(
            math.isfinite(_float(row.get("order_parameter"))) for row in self.summary
        )
        self.has_outside = self.arrhenius and any(
            math.isfinite(_float(rec.get(key))) and _outside(rec, key)
            for rec in results.arrhenius
            for key in _EA_KEYS.values()
        )

    # ------------------------------------------------------------------ records

    def temperature(self, row: Mapping[str, Any]) -> float:
        if TEMPERATURE_KEY in row:
            return _float(row[TEMPERATURE_KEY])
        return _float(_config_value(self.results, TEMPERATURE_KEY, math.nan))

    def x_of(self, row: Mapping[str, Any]) -> float:
        if self.x_key is None:
            return self.default_x
        value = _numeric(row[self.x_key])
        return math.nan if value is None else value

    def rows_of_column(self, column_value: Any) -> list[dict[str, Any]]:
        if self.by_key is None:
            return self.summary
        wanted = _ident(column_value)
        return [row for row in self.summary if _ident(row[self.by_key]) == wanted]

    def marker(self, row: Mapping[str, Any]) -> str:
        combo = {k: row[k] for k in self.remaining}
        index = next((i for i, c in enumerate(self.combos) if c == combo), 0)
        return _MARKERS[index % len(_MARKERS)]

    def t_colour(self, temperature: float):
        if self.t_norm is None or not math.isfinite(temperature):
            return "tab:blue"
        return self.t_cmap(self.t_norm(temperature))

    def arrhenius_groups(self, column_value: Any) -> list[tuple[dict[str, Any], list]]:
        """(record, summary rows) per combination of the non-temperature keys; the record is
        the matching Arrhenius record, or one with nan Ea if there is none."""
        if column_value is None or self.by_key is None or self.by_key == TEMPERATURE_KEY:
            rows = self.summary
        else:
            rows = self.rows_of_column(column_value)
        keys = self.arrhenius_keys
        groups: dict[str, tuple[dict[str, Any], list]] = {}
        for row in rows:
            ident = _ident({k: row[k] for k in keys})
            if ident not in groups:
                groups[ident] = (self._arrhenius_record(row, keys), [])
            groups[ident][1].append(row)
        return list(groups.values())

    def _arrhenius_record(self, row: Mapping[str, Any], keys: list[str]) -> dict[str, Any]:
        for rec in self.results.arrhenius:
            if all(k in rec and _ident(rec[k]) == _ident(row[k]) for k in keys):
                return rec
        return {k: row[k] for k in keys}  # no record: nothing fitted

    # ------------------------------------------------------------------ text

    def label(self, key: str, value: Any) -> str:
        unit = _UNIT_TEXT.get(unit_of(key) or "", "")
        suffix = f" {unit}" if unit and _numeric(value) is not None else ""
        return f"{self.short[key]} = {show_value(value)}{suffix}"

    def combo_label(self, row: Mapping[str, Any], keys: Sequence[str]) -> str:
        return ", ".join(self.label(k, row[k]) for k in keys)

    def title(self) -> str:
        results = self.results
        name = results.config.get("name") if isinstance(results.config, dict) else None
        parts = []
        if name:
            parts.append(f"{name}: {len(results.tasks)} tasks")
            if results.missing:
                parts[-1] += f", {len(results.missing)} missing"
        if self.x_key is None and math.isfinite(self.default_x):
            parts.append(f"at the config's φ = {self.default_x:g}")
        t_on_axis = TEMPERATURE_KEY in (self.x_key, self.by_key)
        if self.temps and not self.colour_temps and not t_on_axis:
            parts.append("T = " + ", ".join(f"{t:g}" for t in self.temps) + " K")
        return "; ".join(parts)

    def legend_handles(self) -> list:
        from matplotlib.lines import Line2D

        handles = []
        if self.remaining:
            handles += [
                Line2D([], [], color="0.35", marker=_MARKERS[i % len(_MARKERS)],
                       linestyle="none", label=self.combo_label(combo, self.remaining))
                for i, combo in enumerate(self.combos)
            ]  # fmt: skip
        handles += [
            Line2D([], [], color="black", marker="o", linestyle="-", label="D* (tracer)"),
            Line2D([], [], color="black", marker="o", markerfacecolor="white", linestyle="--",
                   label="D_σ (collective)"),
        ]  # fmt: skip
        if self.thermo:
            handles.append(
                Line2D([], [], color="black", marker="o", linestyle="-.",
                       label="D_chem = Θ D_σ (chemical)"),
            )  # fmt: skip
        if self.ordering:
            handles.append(
                Line2D([], [], color="black", marker="o", markersize=4,
                       markerfacecolor="white", linestyle=":",
                       label="order parameter (right axis)"),
            )  # fmt: skip
        if self.field:
            handles += [
                Line2D([], [], color="black", marker="o", linestyle="-",
                       label="σ_E = n q v / |E| (driven)"),
                Line2D([], [], color="black", marker="o", markerfacecolor="white",
                       linestyle=":", label="σ_NE (Nernst–Einstein from D_σ)"),
            ]  # fmt: skip
        if self.percolation:
            handles.append(_percolation_handle())
        if self.has_upper:
            handles.append(
                Line2D([], [], color="black", marker=_UPPER_MARKER, linestyle="none",
                       label="upper bound (not diffusive)")
            )  # fmt: skip
        if self.arrhenius:
            handles.append(Line2D([], [], color="black", linestyle="-", label="Arrhenius fit"))
        if self.has_outside:
            handles.append(
                Line2D([], [], color="black", linestyle=":", label="fit, Ea outside physical range")
            )
        return handles


def _unique(values: list[Any]) -> list[Any]:
    seen: set[str] = set()
    out = []
    for value in values:
        ident = _ident(value)
        if ident not in seen:
            seen.add(ident)
            out.append(value)
    return out


def _short_names(keys: Sequence[str]) -> dict[str, str]:
    """Legend-friendly names: φ, T, else the key without its section when that is unique
    (``microstructure.kind`` → ``kind``), else the whole key."""
    tails = [k.split(".", 1)[-1] for k in keys]
    out = {}
    for key, tail in zip(keys, tails, strict=True):
        if key == FRACTION_KEY:
            out[key] = "φ"
        elif key == TEMPERATURE_KEY:
            out[key] = "T"
        else:
            out[key] = tail if tails.count(tail) == 1 else key
    return out


def _axis_label(key: str | None) -> str:
    if key in (None, FRACTION_KEY):
        return "amorphous fraction φ"
    if key == TEMPERATURE_KEY:
        return "T [K]"
    unit = unit_of(key)
    return f"{key} [{unit}]" if unit and unit != "1" else key


# --------------------------------------------------------------------------- drawing


def _draw_points(ax, xs, points, *, colour, marker, filled, linestyle, connect) -> int:
    """Draw one curve: values with error bars (joined by a line, if ``connect``, only between
    consecutive values), upper bounds as downward triangles. Returns how many points had
    nothing to draw."""
    xs = np.asarray(xs, dtype=float)
    order = np.argsort(xs, kind="stable")
    xs = xs[order]
    points = [points[k] for k in order]
    face = colour if filled else "white"
    value_y = np.array([p[1] if p and p[0] == "value" else np.nan for p in points])
    value_e = np.array([p[2] if p and p[0] == "value" else np.nan for p in points])
    upper = [(xv, p[1]) for xv, p in zip(xs, points, strict=True) if p and p[0] == "upper"]
    empty = sum(p is None or not math.isfinite(xv) for xv, p in zip(xs, points, strict=True))

    has_value = np.isfinite(value_y) & np.isfinite(xs)
    if np.any(has_value):
        ax.plot(
            xs,
            np.where(has_value, value_y, np.nan),  # nan breaks the line: no bridging
            color=colour,
            marker=marker,
            markersize=5,
            markerfacecolor=face,
            markeredgecolor=colour,
            linestyle=linestyle if connect else "none",
            linewidth=1.2,
        )
        err = np.where(np.isfinite(value_e) & (value_e > 0), value_e, 0.0)[has_value]
        y = value_y[has_value]
        if np.any(err > 0):
            ax.errorbar(
                xs[has_value],
                y,
                yerr=np.vstack([np.minimum(err, 0.95 * y), err]),  # stay above 0 on a log axis
                fmt="none",
                ecolor=colour,
                elinewidth=0.9,
                capsize=2,
            )
    if upper:
        ux, uy = zip(*upper, strict=True)
        ax.plot(
            ux,
            uy,
            linestyle="none",
            marker=_UPPER_MARKER,
            markersize=6,
            color=colour,
            markerfacecolor=face,
            markeredgecolor=colour,
            gid=UPPER_BOUND_GID,
        )
    return int(empty)


def _missing_text(missing: int) -> str:
    return f"{missing} point{'s' if missing != 1 else ''} without data"


def _note_handle(missing: int):
    """A legend entry without a symbol that says how many points had nothing to draw."""
    from matplotlib.lines import Line2D

    return Line2D([], [], linestyle="none", marker="none", label=_missing_text(missing))


def _legend(ax, handles, *, symbols: bool = True) -> None:
    """A small legend inside the panel where it hides the fewest points (``loc="best"``)."""
    ax.legend(
        handles=handles,
        fontsize="x-small",
        loc="best",
        framealpha=0.85,
        borderpad=0.3,
        labelspacing=0.25,
        handlelength=1.6 if symbols else 0.0,
        handletextpad=0.5 if symbols else 0.0,
    )


def _no_data(ax, drawn: int) -> None:
    if not drawn:
        ax.text(0.5, 0.5, "no positive D to show", transform=ax.transAxes, ha="center",
                va="center", fontsize="small", color="0.3")  # fmt: skip


def _curves(plan: _Plan, rows) -> dict[str, list[dict[str, Any]]]:
    """The records of a panel, one list per curve: per temperature (when coloured by it)
    and combination of the other keys."""
    curves: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        key = _ident(
            [plan.temperature(row) if plan.colour_temps else None]
            + [row[k] for k in plan.remaining]
        )
        curves.setdefault(key, []).append(row)
    return curves


def _x_panel(ax, plan: _Plan, rows, column: str, filled: bool, style: str) -> None:
    curves = _curves(plan, rows)
    missing = drawn = 0
    for curve in curves.values():
        points = [_point(row, column) for row in curve]
        drawn += sum(p is not None for p in points)
        missing += _draw_points(
            ax,
            [plan.x_of(row) for row in curve],
            points,
            colour=plan.t_colour(plan.temperature(curve[0])),
            marker=plan.marker(curve[0]),
            filled=filled,
            linestyle=style,
            connect=plan.x_key is not None,
        )
    _no_data(ax, drawn)
    if missing:
        _legend(ax, [_note_handle(missing)], symbols=False)


def _fit_line(temps, values, errors, ea):
    """ln D = ln A − Ea/kT through the (weighted) centroid of the points, as in the fit."""
    t = np.asarray(temps, dtype=float)
    y = np.asarray(values, dtype=float)
    e = np.asarray(errors, dtype=float)
    if not math.isfinite(ea) or np.unique(t).size < 2:
        return None
    inv_kt = 1.0 / (BOLTZMANN_EV * t)
    w = (y / e) ** 2 if np.all(np.isfinite(e) & (e > 0)) else np.ones_like(y)
    ln_a = np.sum(w * (np.log(y) + ea * inv_kt)) / np.sum(w)
    grid = np.linspace(t.min(), t.max(), 50)
    return 1000.0 / grid, np.exp(ln_a - ea / (BOLTZMANN_EV * grid))


def _ea_text(ea: float, err: float) -> str:
    return f"Ea = {ea:.3f}" + (f" ± {err:.3f}" if math.isfinite(err) else "") + " eV"


def _outside(rec: Mapping[str, Any], ea_key: str) -> bool:
    """Whether kmc.results flagged this Ea as outside the landscapes' physical range (the
    flag allows for the fit's error; it is read, not recomputed)."""
    return f"{ea_key} outside" in str(rec.get("note", ""))


def _arrhenius_panel(ax, plan: _Plan, groups, column: str, filled: bool, style: str) -> None:
    from matplotlib import colormaps
    from matplotlib.lines import Line2D

    ea_key = _EA_KEYS[column]
    label_keys = [k for k in plan.arrhenius_keys if k != plan.by_key]
    categorical = colormaps["tab10"]
    missing = drawn = 0
    entries: list[tuple[str, Any, str, str, dict]] = []  # kind, colour, marker, label, row
    fitted: list[float] = []
    for index, (rec, rows) in enumerate(groups):
        if plan.x_colour and plan.x_norm is not None:
            colour = plan.x_cmap(plan.x_norm(plan.x_of(rows[0])))
        else:
            colour = categorical(index % 10)
        marker = plan.marker(rows[0])
        temps = [plan.temperature(row) for row in rows]
        points = [_point(row, column) for row in rows]
        drawn += sum(p is not None for p in points)
        missing += _draw_points(
            ax,
            [1000.0 / t if t > 0 else math.nan for t in temps],
            points,
            colour=colour,
            marker=marker,
            filled=filled,
            linestyle="none",
            connect=False,
        )
        name = plan.combo_label(rows[0], label_keys) if label_keys else "fit"
        ea, err = _float(rec.get(ea_key)), _float(rec.get(f"{ea_key}_err"))
        if not math.isfinite(ea):
            entries.append(("withheld", colour, marker, f"{name}: Ea withheld", rows[0]))
            continue
        values = [(t, p[1], p[2]) for t, p in zip(temps, points, strict=True)
                  if p is not None and p[0] == "value"]  # fmt: skip
        outside = _outside(rec, ea_key)
        line_style = ":" if outside else style
        if len(values) >= 2:
            line = _fit_line(*zip(*values, strict=True), ea)
            if line is not None:
                ax.plot(*line, color=colour, linestyle=line_style, linewidth=1.1)
        fitted.append(ea)
        text = f"{name}: {_ea_text(ea, err)}" + (" (outside physical range)" if outside else "")
        entries.append(("outside" if outside else "fit", colour, marker, text, rows[0]))
    _no_data(ax, drawn)

    if len(entries) <= _FEW_RECORDS:
        handles = [
            Line2D([], [], color=colour, marker=marker, markersize=4,
                   markerfacecolor=colour if filled else "white",
                   linestyle={"withheld": "none", "outside": ":"}.get(kind, style), label=label)
            for kind, colour, marker, label, _ in entries
        ]  # fmt: skip
    else:
        handles = []
        if fitted:
            handles.append(
                Line2D([], [], color="0.3", linestyle=style,
                       label=f"fits: Ea = {min(fitted):.2f} … {max(fitted):.2f} eV")
            )  # fmt: skip
        for kind, text in (("withheld", "Ea withheld"), ("outside", "Ea outside range")):
            which = [row for k, _, _, _, row in entries if k == kind]
            if which:
                handles.append(
                    Line2D([], [], color="0.3", marker="o", markersize=4,
                           linestyle="none" if kind == "withheld" else ":",
                           label=textwrap.fill(f"{text}: {_compact(plan, which, label_keys)}",
                                               _LEGEND_WIDTH, subsequent_indent="  "))
                )  # fmt: skip
    if missing:
        handles.append(_note_handle(missing))
    if handles:
        _legend(ax, handles)


def _compact(plan: _Plan, rows: list[Mapping[str, Any]], keys: list[str], most: int = 6) -> str:
    """The points of ``rows`` in few words: ``kind = random, φ = 0.2, 0.25, 0.3``."""
    if not keys:
        return "all"
    groups: dict[str, list[str]] = {}
    for row in rows:
        prefix = plan.combo_label(row, keys[:-1])
        groups.setdefault(prefix, []).append(show_value(row[keys[-1]]))
    parts, shown = [], 0
    for prefix, values in groups.items():
        if shown >= most:
            break
        take = values[: most - shown]
        shown += len(take)
        last = f"{plan.short[keys[-1]]} = {', '.join(take)}"
        parts.append(f"{prefix}, {last}" if prefix else last)
    text = "; ".join(parts)
    return text + (f" (+{len(rows) - shown} more)" if shown < len(rows) else "")


def _decorate(
    ax,
    plan: _Plan,
    col: int,
    name: str,
    *,
    x_panel: bool,
    top: bool,
    bottom: bool,
    unit: str = "cm²/s",
) -> None:
    """A D panel: log axis, grid, y label in the first column; the first row of its block
    (x or Arrhenius) has the headings, the last the x label."""
    ax.set_yscale("log")
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.08)
    if col == 0:
        ax.set_ylabel(f"{name} [{unit}]")
    if not bottom:
        ax.tick_params(labelbottom=False)
    if top:
        heading = "" if x_panel else "Arrhenius"
        column_value = plan.columns[col] if x_panel else plan.arrhenius_columns[col]
        if plan.by_key is not None and column_value is not None:
            where = plan.label(plan.by_key, column_value)
            heading = f"{heading}: {where}" if heading else where
        if heading:
            ax.set_title(heading, fontsize="medium")
    if bottom:
        ax.set_xlabel(_axis_label(plan.x_key) if x_panel else "1000 / T [1/K]")
    if x_panel and plan.x_key in (None, FRACTION_KEY):
        ax.set_xlim(-0.05, 1.05)
    if x_panel and plan.x_key == FIELD_KEY:
        _field_axis(ax, plan)


def _field_axis(ax, plan: _Plan) -> None:
    """Field strengths of a sweep span decades, from zero: symmetric-log x, linear below
    the weakest non-zero field, so that E = 0 (the Nernst–Einstein limit) stays on the axis."""
    fields = [abs(_float(row.get(FIELD_KEY))) for row in plan.summary]
    positive = [f for f in fields if f > 0 and math.isfinite(f)]
    if positive and max(positive) > 100 * min(positive):
        ax.set_xscale("symlog", linthresh=min(positive), linscale=0.5)


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _decorate_percolation(ax, plan: _Plan, col: int) -> None:
    ax.set_ylim(-0.05, 1.05)
    ax.set_yticks([0.0, 0.25, 0.5, 0.75, 1.0])
    ax.grid(True, which="major", alpha=0.3)
    if col == 0:
        ax.set_ylabel("spanning probability")
    ax.set_xlabel(_axis_label(plan.x_key))
    if plan.x_key in (None, FRACTION_KEY):
        ax.set_xlim(-0.05, 1.05)


def _percolation_handle():
    """One figure-legend entry for both series of the percolation row."""
    from matplotlib.lines import Line2D

    series = tuple(
        Line2D([], [], color=colour, marker="o", markersize=5,
               markerfacecolor=colour if filled else "white", linestyle=style)
        for _, filled, style, colour in _PERCOLATION
    )  # fmt: skip
    label = textwrap.fill(_PERCOLATION_LABEL, _LEGEND_WIDTH, subsequent_indent="  ")
    return _LabelledTuple(series, label)


class _LabelledTuple(tuple):
    """A tuple of handles (drawn side by side by matplotlib's HandlerTuple) with a label."""

    def __new__(cls, handles, label: str):
        out = super().__new__(cls, handles)
        out._label = label
        return out

    def get_label(self) -> str:
        return self._label


def _percolation_points(rows, column: str, x_of) -> tuple[list[float], list, int]:
    """One point per x value: the first record with a finite value of ``column`` (the
    temperatures of a landscape coincide). Returns xs, points (``("value", mean, err)`` or
    None) and how many x values had none."""
    by_x: dict[float, tuple[str, float, float] | None] = {}
    for row in rows:
        xv = x_of(row)
        y = _float(row.get(column)) if int(row.get("replicas", 1) or 0) > 0 else math.nan
        point = ("value", y, _float(row.get(f"{column}_err"))) if math.isfinite(y) else None
        if by_x.get(xv) is None:
            by_x[xv] = point
    xs = list(by_x)
    points = [by_x[xv] for xv in xs]
    return xs, points, sum(p is None or not math.isfinite(xv) for xv, p in by_x.items())


def _linear_curve(ax, plan: _Plan, curve, column: str, sign: float, line: dict, bars: dict) -> int:
    """Draw sign · ``column`` (with its ``_err`` bars) of one curve against x, in order of
    x, in the curve's temperature colour; return the number of points drawn."""
    xs = np.array([plan.x_of(row) for row in curve], dtype=float)
    y = sign * np.array([_float(row.get(column)) for row in curve])
    e = np.array([_float(row.get(f"{column}_err")) for row in curve])
    keep = np.argsort(xs, kind="stable")
    xs, y, e = xs[keep], y[keep], e[keep]
    good = np.isfinite(xs) & np.isfinite(y)
    if not good.any():
        return 0
    colour = plan.t_colour(plan.temperature(curve[0]))
    ax.plot(xs[good], y[good], color=colour, **line)
    has_err = good & np.isfinite(e) & (e > 0)
    if has_err.any():
        ax.errorbar(xs[has_err], y[has_err], yerr=e[has_err], fmt="none", ecolor=colour, **bars)
    return int(good.sum())


def _voltage_panel(ax, plan: _Plan, rows, last_column: bool) -> None:
    """−μ/e against x (the equilibrium voltage profile V(x) = −(μ − μ_ref)/e with μ_ref the
    site-energy zero), one curve per temperature and combination, with error bars; and,
    where the records carry one, the staggered order parameter on a second, 0–1 axis at the
    right (open markers, dotted), so that the ordering at half filling shows next to the
    voltage step it causes."""
    curves = _curves(plan, rows)
    if any(math.isfinite(_float(row.get("order_parameter"))) for row in rows):
        order_ax = ax.twinx()
        order_ax.set_label(ax.get_label().replace("voltage", "order"))
        order_ax.set_ylim(0.0, 1.05)
        if last_column:
            order_ax.set_ylabel("order")
        else:
            order_ax.tick_params(labelright=False)
        for curve in curves.values():
            _linear_curve(order_ax, plan, curve, "order_parameter", 1.0,
                          {"marker": plan.marker(curve[0]), "markersize": 4,
                           "markerfacecolor": "white",
                           "linestyle": ":", "linewidth": 1.0},
                          {"elinewidth": 0.7, "capsize": 1.5})  # fmt: skip
    drawn = 0
    for curve in curves.values():
        drawn += _linear_curve(ax, plan, curve, "chemical_potential", -1.0,
                               {"marker": plan.marker(curve[0]), "markersize": 5,
                                "linestyle": "-" if plan.x_key is not None else "none",
                                "linewidth": 1.2},
                               {"elinewidth": 0.9, "capsize": 2})  # fmt: skip
    _no_data(ax, drawn)


def _percolation_panel(ax, plan: _Plan, rows) -> None:
    curves: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        curves.setdefault(_ident([row[k] for k in plan.remaining]), []).append(row)
    missing = drawn = 0
    for curve in curves.values():
        for column, filled, style, colour in _PERCOLATION:
            xs, points, empty = _percolation_points(curve, column, plan.x_of)
            drawn += sum(p is not None for p in points)
            if column == "percolating":
                missing += empty
            xs_a = np.asarray(xs, dtype=float)
            order = np.argsort(xs_a, kind="stable")
            xs_a = xs_a[order]
            y = np.array([points[k][1] if points[k] else np.nan for k in order])
            e = np.array([points[k][2] if points[k] else np.nan for k in order])
            if not np.any(np.isfinite(y) & np.isfinite(xs_a)):
                continue
            ax.plot(xs_a, y, color=colour, marker=plan.marker(curve[0]), markersize=5,
                    markerfacecolor=colour if filled else "white", markeredgecolor=colour,
                    linestyle=style if plan.x_key is not None else "none",
                    linewidth=1.2)  # fmt: skip
            has_err = np.isfinite(y) & np.isfinite(e) & (e > 0)
            if np.any(has_err):
                ax.errorbar(xs_a[has_err], y[has_err], yerr=e[has_err], fmt="none",
                            ecolor=colour, elinewidth=0.9, capsize=2)  # fmt: skip
    if not drawn:
        ax.text(0.5, 0.5, "no percolation data", transform=ax.transAxes, ha="center",
                va="center", fontsize="small", color="0.3")  # fmt: skip
    if missing:
        _legend(ax, [_note_handle(missing)], symbols=False)


def _colour_bars(fig, axes, plan: _Plan, arr_row: int) -> None:
    from matplotlib.cm import ScalarMappable

    if plan.colour_temps:
        bar = fig.colorbar(
            ScalarMappable(norm=plan.t_norm, cmap=plan.t_cmap),
            ax=[ax for ax in axes[:2, :].ravel() if ax is not None],
            label="T [K]",
            aspect=30,
            pad=0.01,
        )
        if len(plan.temps) <= 12:
            bar.set_ticks(plan.temps)
            bar.set_ticklabels([f"{t:g}" for t in plan.temps])
    if plan.arrhenius and plan.x_colour and plan.x_norm is not None:
        fig.colorbar(
            ScalarMappable(norm=plan.x_norm, cmap=plan.x_cmap),
            ax=[ax for ax in axes[arr_row:, :].ravel() if ax is not None],
            label=_axis_label(plan.x_key),
            aspect=30,
            pad=0.01,
        )
