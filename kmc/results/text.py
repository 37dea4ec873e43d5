"""What ``kmc analyze`` prints: the JSON document and the text tables of :class:`RunResults`."""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from kmc import analysis, store
from kmc.results.columns import FIELD_OBSERVABLES, OBSERVABLES, TEMPERATURE_KEY, UNITS
from kmc.texttable import text_table

if TYPE_CHECKING:
    from kmc.results.tables import RunResults

# --------------------------------------------------------------------------- JSON and text


def _jsonable(value: Any) -> Any:
    """Plain JSON data: numpy → python, NaN/inf → None, tuples → lists, paths → str."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def show_value(value: Any) -> str:
    """A swept value, compactly: ``0.5``, ``grains``, ``[2.5,0.3,2.5]``, ``normal(mean=0.7,
    sigma=0.11)``; a constant distribution is shown as its value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int | str):
        return str(value)
    if isinstance(value, Mapping) and "dist" in value:
        params = {k: v for k, v in value.items() if k != "dist"}
        if value["dist"] == "constant" and list(params) == ["value"]:
            return show_value(params["value"])
        inner = ", ".join(f"{k}={show_value(v)}" for k, v in params.items())
        return f"{value['dist']}({inner})"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(show_value(v) for v in value) + "]"
    return json.dumps(value, separators=(",", ":"))


def _mean_err(mean: float, err: float, scientific: bool) -> str:
    if not math.isfinite(mean):
        return "n/a"
    if scientific:
        text = f"{mean:.3e}"
        return text + (f" ± {err:.1e}" if math.isfinite(err) else "")
    text = f"{mean:.3f}"
    return text + (f" ± {err:.3f}" if math.isfinite(err) else "")


def _cell(rec: Mapping[str, Any], key: str, scientific: bool) -> str:
    """mean ± error, or ``< bound`` where a replica was not diffusive."""
    if not rec.get("diffusive", True):
        bound = rec.get(f"{key}_upper", math.nan)
        return f"< {bound:.3e}" if math.isfinite(bound) else "n/a"
    return _mean_err(rec[key], rec[f"{key}_err"], scientific)


def _table(results: RunResults) -> str:
    headers = [*results.swept, "replicas", "diffusive"]
    scientific = {"D_tracer": True, "D_jump": True, "haven_ratio": False, "conductivity": True}
    for key in OBSERVABLES:
        unit = UNITS.get(key, "1")
        headers.append(key if unit == "1" else f"{key} [{unit}]")
    rows = []
    for rec in results.summary:
        row = [show_value(rec[key]) for key in results.swept]
        row.append(str(rec["replicas"]))
        row.append(f"{rec.get('diffusive_replicas', rec['replicas'])}/{rec['replicas']}")
        for key in OBSERVABLES:
            row.append(_cell(rec, key, scientific[key]))
        rows.append(row)
    n_tasks = len(results.tasks) + len(results.missing)
    head = f"run {results.run_dir}: {len(results.tasks)} of {n_tasks} tasks complete"
    if results.missing:
        head += f" (missing: {index_ranges(results.missing)})"
    lines = [head, *text_table(headers, rows)]
    if any(
        rec.get("diffusive_replicas", rec["replicas"]) < rec["replicas"] for rec in results.summary
    ):
        lines.append(
            "< x: an upper bound: some replicas did not reach the diffusive regime (their "
            "diffusive_reason is in the task records); run longer, or use run.method = "
            '"network" for the exact dilute-limit D'
        )
    stopped = [rec["task"] for rec in results.tasks if rec.get("status") == store.BUDGET_EXCEEDED]
    if stopped:
        lines.append(
            f"budget exceeded: {len(stopped)} of {n_tasks} tasks ({index_ranges(stopped)}) were "
            "stopped at run.work_budget times their planned hops, most often because ions "
            "found a fast cluster only after the run length was set; each one's reason is "
            "its diffusive_reason (kmc analyze --json)"
        )
    lines.extend(_diagonal_block(results))
    lines.extend(_field_block(results))
    lines.extend(_thermodynamic_block(results))
    if results.arrhenius:
        temps = sorted({rec[TEMPERATURE_KEY] for rec in results.summary})
        lines.append("")
        lines.append(
            "Arrhenius fits of ln D vs 1/kT over T = "
            + ", ".join(f"{t:g}" for t in temps)
            + " K, one per landscape, mean ± standard error over landscapes:"
        )
        for rec in results.arrhenius:
            where = ", ".join(
                f"{key} = {show_value(rec[key])}" for key in results.swept if key in rec
            )
            line = (
                f"  {where or 'all'}: Ea(D_tracer) = {_ea(rec, 'Ea_tracer')}, "
                f"Ea(D_jump) = {_ea(rec, 'Ea_jump')}"
            )
            if rec.get("note"):
                line += f"  [{rec['note']}]"
            lines.append(line)
    return "\n".join(lines)


#: The tracer diagonal, shown in its own block when some point resolves an anisotropy.
_DIAGONAL = ("D_tracer_xx", "D_tracer_yy", "D_tracer_zz")


def _diagonal_block(results: RunResults) -> list[str]:
    """Lines of the block of D_tracer_xx, _yy, _zz per point, or none when no point
    resolves an anisotropy (:func:`_anisotropic`): an isotropic run's table stays as it
    was. The off-diagonal and D_jump components are in --json and results.h5 only."""
    exact = _exact_points(results)
    shown = [key for key in _DIAGONAL if any(key in rec for rec in results.summary)]
    if len(shown) < 2 or not any(
        _anisotropic(rec, shown, _point_id(rec, results.swept) in exact) for rec in results.summary
    ):
        return []
    headers = [*results.swept, *(f"{key} [cm^2/s]" for key in shown)]
    rows = []
    for rec in results.summary:
        row = [show_value(rec[key]) for key in results.swept]
        row.extend(
            _mean_err(rec.get(k, math.nan), rec.get(f"{k}_err", math.nan), True) for k in shown
        )
        rows.append(row)
    return [
        "",
        "Diffusion tensor, diagonal (mean ± standard error over replicas), shown since some",
        "point is anisotropic beyond 4 standard errors (all components: --json, results.h5):",
        *text_table(headers, rows),
    ]


def _field_block(results: RunResults) -> list[str]:
    """Lines of the block of a field-driven run: drift velocity, mobility and σ_E per point
    next to the Nernst–Einstein σ from D_σ about the drift; none without a field."""
    if not any("conductivity_field" in rec for rec in results.summary):
        return []
    columns = (*FIELD_OBSERVABLES, "conductivity")
    headers = [*results.swept, *(f"{key} [{UNITS[key]}]" for key in columns)]
    rows = []
    for rec in results.summary:
        row = [show_value(rec[key]) for key in results.swept]
        row.extend(
            _mean_err(rec[k], rec[f"{k}_err"], True) if k in rec else "no field" for k in columns
        )
        rows.append(row)
    return [
        "",
        "Applied field: drift along the field, mobility, σ_E = n q v / |E| and the",
        "Nernst–Einstein σ from D_σ about the drift (mean ± standard error over replicas):",
        *text_table(headers, rows),
    ]


#: The columns of the lattice-gas block: (key, header, scientific).
_THERMODYNAMIC_COLUMNS = (
    ("thermodynamic_factor", "Θ", False),
    ("D_chem", "D_chem [cm^2/s]", True),
    ("chemical_potential", "μ [eV]", False),
    ("relaxation_times", "T/τ", False),
    ("order_parameter", "order", False),
)


def _thermodynamic_block(results: RunResults) -> list[str]:
    """Lines of the block of an equilibrium lattice gas: Θ, D_chem, μ, the run's length in
    relaxation times of a half box and (bipartite lattices) the staggered order, per point;
    ``unresolved`` where some replica's Θ was not (its ``thermodynamic_reason``)."""
    if not any("thermodynamic_factor" in rec for rec in results.summary):
        return []
    columns = [c for c in _THERMODYNAMIC_COLUMNS if any(c[0] in r for r in results.summary)]
    unresolved = {
        _point_id(rec, results.swept) for rec in results.tasks if rec.get("thermodynamic_reason")
    }
    headers = [*results.swept, *(header for _, header, _ in columns)]
    rows = []
    for rec in results.summary:
        row = [show_value(rec[key]) for key in results.swept]
        thin = _point_id(rec, results.swept) in unresolved
        for key, _, scientific in columns:
            if key not in rec:
                row.append("-")
            elif thin and key in ("thermodynamic_factor", "D_chem"):
                row.append("unresolved")
            else:
                row.append(_mean_err(rec[key], rec[f"{key}_err"], scientific))
        rows.append(row)
    lines = [
        "",
        "Lattice gas in equilibrium (mean ± standard error over replicas): Θ from subvolume",
        "fluctuations, D_chem = Θ D_σ, μ by Widom insertion, T/τ the run's length in",
        "relaxation times τ = (L/2)²/D_chem of a half box:",
        *text_table(headers, rows),
    ]
    if unresolved:
        lines.append(
            "unresolved: some replicas' runs were not diffusive or spanned fewer than "
            f"{analysis.MIN_RELAXATION_TIMES:g} relaxation times (their thermodynamic_reason "
            "is in the task records); run longer"
        )
    return lines


def _point_id(rec: Mapping[str, Any], swept: list[str]) -> str:
    return json.dumps([rec.get(key) for key in swept], sort_keys=True)


def _exact_points(results: RunResults) -> set[str]:
    """The points whose every task was solved exactly (network: no MSD, msd_growth nan)."""
    statistical = {
        _point_id(rec, results.swept)
        for rec in results.tasks
        if math.isfinite(rec.get("msd_growth", math.nan))
    }
    return {_point_id(rec, results.swept) for rec in results.tasks} - statistical


def _anisotropic(rec: Mapping[str, Any], keys: list[str], exact: bool) -> bool:
    """Whether two diagonal components of a summary point differ by more than 4 standard
    errors of their difference (errors over replicas, taken as independent; never less
    than 1e-9 relative), or, without errors, at an exact point (one network replica) by more
    than 1e-9 relative; a point without errors otherwise (one kMC replica) or without values
    (not diffusive) cannot tell."""
    for a, b in itertools.combinations(keys, 2):
        va, vb = rec.get(a, math.nan), rec.get(b, math.nan)
        if not (math.isfinite(va) and math.isfinite(vb)):
            continue
        ea, eb = rec.get(f"{a}_err", math.nan), rec.get(f"{b}_err", math.nan)
        slack = 1e-9 * max(abs(va), abs(vb))
        if math.isfinite(ea) and math.isfinite(eb):
            slack = max(slack, 4.0 * math.hypot(ea, eb))
        elif not exact:
            continue
        if abs(va - vb) > slack:
            return True
    return False


def _ea(rec: Mapping[str, Any], key: str) -> str:
    value, err = rec[key], rec[f"{key}_err"]
    if not math.isfinite(value):
        return "withheld" if str(rec.get("note", "")).startswith("withheld") else "n/a"
    return f"{value:.3f}" + (f" ± {err:.3f}" if math.isfinite(err) else "") + " eV"


def index_ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7'."""
    parts: list[str] = []
    start = prev = None
    for n in sorted(numbers):
        if start is None:
            start = prev = n
        elif n == prev + 1:
            prev = n
        else:
            parts.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = n
    if start is not None:
        parts.append(f"{start}" if start == prev else f"{start}-{prev}")
    return ", ".join(parts)
