"""Analysis of a whole run directory: per-task observables, per-point summary, Arrhenius fits.

:func:`analyze_run` reads every complete task file of a run directory, recomputes the
transport observables from the stored trajectories (:func:`kmc.analysis.transport`), averages
them over the replicas of each parameter point and, when ``run.temperature`` was swept over
at least two values, fits activation energies. :func:`write_results` / :func:`read_results`
store the result in ``RUN/results.h5``; :meth:`RunResults.to_json` and
:meth:`RunResults.table` are what ``kmc analyze RUN [--json]`` prints.

Record layout (SPEC, "``kmc analyze RUN --json``"; units: D in cm²/s, conductivity in S/cm,
time in s, temperature in K, activation energies in eV):

- ``tasks``: ``task``, ``replica``, every swept key by its dotted name, ``hops``,
  ``simulated_time``, ``kernel_seconds``, ``D_tracer``, ``D_jump``, ``haven_ratio``,
  ``conductivity``;
- ``summary`` (one per parameter point, in sweep order): every swept key, ``replicas`` (number
  of complete replicas), and ``X``, ``X_err`` (mean and standard error over replicas) for X in
  ``D_tracer``, ``D_jump``, ``haven_ratio``, ``conductivity``;
- ``arrhenius`` (empty unless the temperature was swept over at least two values): one record
  per point of the other swept keys, with those keys, ``Ea_tracer``, ``Ea_tracer_err``,
  ``Ea_jump``, ``Ea_jump_err``.

The summary Haven ratio is the ratio of the replica means, mean(D_tracer) / mean(D_jump),
with the error propagated from both (and their covariance), not the mean of per-replica
ratios: one replica's collective D_jump is noisy, and averaging ratios with a noisy
denominator is biased (see :func:`_replica_statistics`).

``results.h5`` layout: groups ``/tasks``, ``/summary``, ``/arrhenius``, each with one 1-D
dataset per column (attribute ``kind``: bool | int | float | str | json, and ``unit`` where
one applies; a column of lists or tables is stored as JSON text) and the column order in the
group attribute ``columns`` (JSON); the root holds ``swept``, ``missing``, ``run_dir`` and the
run's resolved ``config_json``.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from kmc import analysis
from kmc.config import Task, expand_tasks, load_config, resolved_dict
from kmc.lattice import volume
from kmc.store import IncompleteTaskFileError, TaskData, atomic_write, read_task, task_filename

__all__ = [
    "OBSERVABLES",
    "TEMPERATURE_KEY",
    "UNITS",
    "RunResults",
    "analyze_run",
    "read_results",
    "show_value",
    "unit_of",
    "write_results",
]

#: The four transport observables that are recomputed and averaged over replicas.
OBSERVABLES = ("D_tracer", "D_jump", "haven_ratio", "conductivity")
#: The swept key that makes an Arrhenius fit possible.
TEMPERATURE_KEY = "run.temperature"

#: Units of the record columns (also written as ``unit`` attributes in results.h5).
UNITS: dict[str, str] = {
    "simulated_time": "s",
    "kernel_seconds": "s",
    "hops": "1",
    "D_tracer": "cm^2/s",
    "D_tracer_err": "cm^2/s",
    "D_jump": "cm^2/s",
    "D_jump_err": "cm^2/s",
    "haven_ratio": "1",
    "haven_ratio_err": "1",
    "conductivity": "S/cm",
    "conductivity_err": "S/cm",
    "Ea_tracer": "eV",
    "Ea_tracer_err": "eV",
    "Ea_jump": "eV",
    "Ea_jump_err": "eV",
    "run.temperature": "K",
    "lattice.hop_distance": "angstrom",
    "crystal.attempt_frequency": "Hz",
    "microstructure.correlation_length": "angstrom",
    "microstructure.grain_diameter": "angstrom",
}
_ENERGY_KEYS = ("site_energy", "saddle_energy")

_FORMAT = "kmc-results"
_FORMAT_VERSION = 1
_GROUPS = ("tasks", "summary", "arrhenius")
_TASK_COLUMNS_AFTER = ("hops", "simulated_time", "kernel_seconds", *OBSERVABLES)


def unit_of(column: str) -> str | None:
    """Unit of a record column or swept key, or None if it has none worth stating."""
    if column in UNITS:
        return UNITS[column]
    parts = column.split(".")
    if len(parts) >= 2 and parts[1] in _ENERGY_KEYS and parts[-1] not in ("weights", "dist"):
        return "eV"  # a site/saddle energy or one of its distribution's parameters
    return None


# --------------------------------------------------------------------------- the result


@dataclass
class RunResults:
    """Everything ``kmc analyze`` reports about one run directory.

    ``tasks``, ``summary`` and ``arrhenius`` are lists of flat records (see the module
    docstring); ``swept`` lists the swept dotted keys in file order; ``missing`` the indices
    of tasks without a complete task file; ``config`` is the run's resolved config (a plain
    dict, as :func:`kmc.config.resolved_dict` gives it; empty if unknown).
    """

    tasks: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    arrhenius: list[dict[str, Any]]
    swept: list[str]
    missing: list[int]
    run_dir: Path
    config: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """One JSON object ``{"summary": [...], "tasks": [...], "arrhenius": [...]}``.

        NaN and ±inf become ``null``; numpy scalars become python numbers.
        """
        payload = {"summary": self.summary, "tasks": self.tasks, "arrhenius": self.arrhenius}
        return json.dumps(_jsonable(payload), allow_nan=False)

    def table(self) -> str:
        """A fixed-width text table of the summary (mean ± standard error), then the
        Arrhenius activation energies when the temperature was swept."""
        return _table(self)


# --------------------------------------------------------------------------- analysis


def analyze_run(
    run_dir: str | os.PathLike[str], *, progress: bool = False, recompute: bool = True
) -> RunResults:
    """Analyze the run directory ``run_dir`` (it is not modified).

    Reads ``run_dir/config.toml``, expands its tasks and reads every complete task file
    ``run_dir/tasks/task-NNNNNN.h5md``; missing or incomplete files are skipped and listed in
    :attr:`RunResults.missing`. D_tracer, D_jump, haven_ratio and conductivity are recomputed
    from each stored trajectory with :func:`kmc.analysis.transport` (a task without a
    trajectory -- ``run.method = "network"`` stores zero frames -- keeps its stored values);
    hops, simulated_time and kernel_seconds are taken from the stored observables.

    With ``recompute=False`` the observables stored at run time (by the same estimators) are
    used and the trajectories are not read: the quick summary at the end of ``kmc run``.
    With ``progress`` a tqdm bar over the task files is shown on stderr if it is a terminal.

    Raises ``ValueError`` (one line naming the path) if ``run_dir`` is not a run directory or
    a task file belongs to a different task than its name says, and
    :class:`kmc.config.ConfigError` if ``config.toml`` is not a valid config.
    """
    run = Path(run_dir)
    config_path = run / "config.toml"
    if not run.is_dir():
        raise ValueError(f"{run}: not a run directory (no such directory)")
    if not config_path.is_file():
        raise ValueError(f"{run}: not a run directory (no config.toml)")
    config = load_config(config_path, check_memory=False)
    tasks = expand_tasks(config)
    swept = [key for key, _ in config.sweep]
    task_dir = run / "tasks"

    records: list[dict[str, Any] | None] = []
    missing: list[int] = []
    for task in _progress(tasks, progress, desc="analyze"):
        path = task_dir / task_filename(task.index)
        try:
            data = read_task(path, positions=recompute)
        except (FileNotFoundError, IncompleteTaskFileError):
            missing.append(task.index)
            records.append(None)
            continue
        _check_task_file(path, data, task)
        records.append(_task_record(task, data, swept, recompute))

    summary = _summarize(tasks, records, swept)
    base = resolved_dict(config)
    return RunResults(
        tasks=[r for r in records if r is not None],
        summary=summary,
        arrhenius=_arrhenius(summary, swept),
        swept=swept,
        missing=missing,
        run_dir=run,
        config=base,
    )


def _progress(items: Sequence, enabled: bool, desc: str) -> Iterable:
    if not enabled or not sys.stderr.isatty():
        return items
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a dependency, but a bar is never worth a crash
        return items
    return tqdm(items, desc=desc, unit="task", file=sys.stderr, leave=False)


def _check_task_file(path: Path, data: TaskData, task: Task) -> None:
    """Refuse a task file written for another task (a stale or misplaced file)."""
    params = data.parameters if isinstance(data.parameters, Mapping) else {}
    point = params.get("point", task.plain_point)
    replica = params.get("replica", task.replica)
    if data.task != task.index or point != task.plain_point or replica != task.replica:
        raise ValueError(
            f"{path}: task file does not belong to task {task.index} of this run's config "
            f"(it holds task {data.task}, point {json.dumps(point)}, replica {replica})"
        )


def _task_observables(data: TaskData, recompute: bool) -> dict[str, float]:
    """D_tracer, D_jump, haven_ratio, conductivity of one task, recomputed from its trajectory.

    Without ``recompute``, and for a file with too few frames for a fit (zero for
    ``run.method = "network"``, which solves for D without a trajectory), the observables
    stored at run time are kept.
    """
    stored = data.observables
    if not recompute or data.positions.shape[0] < analysis.MIN_FRAMES:
        return {key: _number(stored.get(key, math.nan), float) for key in OBSERVABLES}
    config = data.parameters["config"]
    hop_distance = float(config["lattice"]["hop_distance"])
    result = analysis.transport(
        data.times,
        data.positions,
        temperature=float(config["run"]["temperature"]),
        volume=volume(data.box, hop_distance),
        hop_distance=hop_distance,
        charge=1,  # Li+ and Na+
    )
    return {key: float(result[key]) for key in OBSERVABLES}


def _task_record(task: Task, data: TaskData, swept: list[str], recompute: bool) -> dict[str, Any]:
    point = task.plain_point
    record: dict[str, Any] = {"task": task.index, "replica": task.replica}
    for key in swept:
        record[key] = point[key]
    stored = data.observables
    record["hops"] = _number(stored.get("hops", math.nan))
    record["simulated_time"] = _number(stored.get("simulated_time", math.nan), float)
    record["kernel_seconds"] = _number(stored.get("kernel_seconds", math.nan), float)
    record.update(_task_observables(data, recompute))
    return record


def _number(value: Any, kind: type | None = None) -> int | float:
    """A python int or float (``kind`` forces float); anything unusable becomes nan."""
    if isinstance(value, bool | np.bool_):
        value = int(value)
    if kind is not float and isinstance(value, int | np.integer):
        return int(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _summarize(
    tasks: list[Task], records: list[dict[str, Any] | None], swept: list[str]
) -> list[dict[str, Any]]:
    """One record per parameter point (tasks come in point order, replicas innermost)."""
    points: dict[int, tuple[Task, list[dict[str, Any]]]] = {}
    order: list[int] = []
    for task, record in zip(tasks, records, strict=True):
        p = task.index - task.replica  # index of the point's first replica
        if p not in points:
            points[p] = (task, [])
            order.append(p)
        if record is not None:
            points[p][1].append(record)
    summary = []
    for p in order:
        first, done = points[p]
        point = first.plain_point
        row: dict[str, Any] = {key: point[key] for key in swept}
        row["replicas"] = len(done)
        row.update(_replica_statistics(done))
        summary.append(row)
    return summary


def _replica_statistics(records: list[dict[str, Any]]) -> dict[str, float]:
    """Means and standard errors over replicas.

    The Haven ratio is the ratio of the replica means, D_tracer / D_jump, not the mean of the
    per-replica ratios: the collective D_jump of one replica is a noisy estimate (one
    centre-of-mass trajectory), and the mean of ratios with a noisy denominator is biased
    (by Jensen's inequality, upwards; it diverges when a replica's D_jump comes near 0). Its
    error is propagated from the two standard errors including their covariance (both come
    from the same trajectories): (δH/H)² = (δD*/D*)² + (δD_σ/D_σ)² − 2 cov(D*, D_σ)/(D* D_σ).
    """
    out: dict[str, float] = {}
    if not records:
        for key in OBSERVABLES:
            out[key] = out[f"{key}_err"] = math.nan
        return out
    values = {key: np.array([r[key] for r in records], dtype=float) for key in OBSERVABLES}
    for key in ("D_tracer", "D_jump", "conductivity"):
        out[key], out[f"{key}_err"] = analysis.replica_mean(values[key])
    tracer, jump = values["D_tracer"], values["D_jump"]
    t_mean, j_mean = out["D_tracer"], out["D_jump"]
    if not (np.isfinite(t_mean) and np.isfinite(j_mean) and j_mean > 0):
        out["haven_ratio"] = out["haven_ratio_err"] = math.nan
    else:
        ratio = t_mean / j_mean
        n = tracer.size
        if n < 2:
            error = math.nan
        else:
            cov = np.cov(tracer, jump, ddof=1) / n  # covariance matrix of the two means
            rel_var = (
                cov[0, 0] / t_mean**2 + cov[1, 1] / j_mean**2 - 2 * cov[0, 1] / (t_mean * j_mean)
            )
            error = abs(ratio) * math.sqrt(max(float(rel_var), 0.0))
        out["haven_ratio"], out["haven_ratio_err"] = float(ratio), float(error)
    return {key: out[key] for key in _summary_observable_columns()}


def _summary_observable_columns() -> list[str]:
    return [c for key in OBSERVABLES for c in (key, f"{key}_err")]


def _arrhenius(summary: list[dict[str, Any]], swept: list[str]) -> list[dict[str, Any]]:
    """Activation energies per point of the swept keys other than the temperature.

    Weighted fits of ln D against 1/kT on the replica means and standard errors
    (:func:`kmc.analysis.arrhenius`); points without a complete replica are left out, and
    fewer than two temperatures left give nan.
    """
    if TEMPERATURE_KEY not in swept:
        return []
    if len({row[TEMPERATURE_KEY] for row in summary}) < 2:
        return []
    others = [key for key in swept if key != TEMPERATURE_KEY]
    groups: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    for row in summary:
        key_values = {key: row[key] for key in others}
        ident = json.dumps(key_values, sort_keys=True)
        groups.setdefault(ident, (key_values, []))[1].append(row)
    out = []
    for key_values, rows in groups.values():
        record: dict[str, Any] = dict(key_values)
        done = [r for r in rows if r["replicas"] > 0]
        temps = np.array([r[TEMPERATURE_KEY] for r in done], dtype=float)
        for name, column in (("Ea_tracer", "D_tracer"), ("Ea_jump", "D_jump")):
            if np.unique(temps).size < 2:
                ea, err = math.nan, math.nan
            else:
                ea, err = analysis.arrhenius(
                    temps,
                    [r[column] for r in done],
                    [r[f"{column}_err"] for r in done],
                )
            record[name], record[f"{name}_err"] = float(ea), float(err)
        out.append(record)
    return out


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


def _table(results: RunResults) -> str:
    headers = [*results.swept, "replicas"]
    scientific = {"D_tracer": True, "D_jump": True, "haven_ratio": False, "conductivity": True}
    for key in OBSERVABLES:
        unit = UNITS.get(key, "1")
        headers.append(key if unit == "1" else f"{key} [{unit}]")
    rows = []
    for rec in results.summary:
        row = [show_value(rec[key]) for key in results.swept]
        row.append(str(rec["replicas"]))
        for key in OBSERVABLES:
            row.append(_mean_err(rec[key], rec[f"{key}_err"], scientific[key]))
        rows.append(row)
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    lines = []
    n_tasks = len(results.tasks) + len(results.missing)
    head = f"run {results.run_dir}: {len(results.tasks)} of {n_tasks} tasks complete"
    if results.missing:
        head += f" (missing: {_ranges(results.missing)})"
    lines.append(head)
    lines.append("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    if results.arrhenius:
        temps = sorted({rec[TEMPERATURE_KEY] for rec in results.summary})
        lines.append("")
        lines.append(
            "Arrhenius fits of ln D vs 1/kT over T = "
            + ", ".join(f"{t:g}" for t in temps)
            + " K (activation energies in eV):"
        )
        for rec in results.arrhenius:
            where = ", ".join(
                f"{key} = {show_value(rec[key])}" for key in results.swept if key in rec
            )
            lines.append(
                f"  {where or 'all'}: Ea(D_tracer) = {_ea(rec, 'Ea_tracer')}, "
                f"Ea(D_jump) = {_ea(rec, 'Ea_jump')}"
            )
    return "\n".join(lines)


def _ea(rec: Mapping[str, Any], key: str) -> str:
    value, err = rec[key], rec[f"{key}_err"]
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.3f}" + (f" ± {err:.3f}" if math.isfinite(err) else "") + " eV"


def _ranges(numbers: list[int]) -> str:
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


# --------------------------------------------------------------------------- results.h5


def write_results(results: RunResults, path: str | os.PathLike[str] | None = None) -> Path:
    """Write ``results`` to an HDF5 file (default ``RUN/results.h5``) atomically.

    The file is written to a temporary name in the destination directory and renamed onto
    ``path`` with :func:`os.replace`, so a reader never sees a half-written file. Returns
    the path written.
    """
    target = Path(path) if path is not None else Path(results.run_dir) / "results.h5"
    with atomic_write(target) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = _FORMAT
        f.attrs["format_version"] = np.int64(_FORMAT_VERSION)
        f.attrs["run_dir"] = os.fspath(results.run_dir)
        f.attrs["swept"] = json.dumps(list(results.swept))
        f.attrs["missing"] = np.asarray(results.missing, dtype=np.int64)
        f.attrs["config_json"] = json.dumps(results.config, allow_nan=True)
        for name in _GROUPS:
            _write_table(f.create_group(name, track_order=True), getattr(results, name))
    return target


def _column_kind(values: list[Any]) -> str:
    if all(isinstance(v, bool | np.bool_) for v in values):
        return "bool"
    if all(isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_) for v in values):
        if all(-(2**63) <= int(v) < 2**63 for v in values):
            return "int"
        return "json"
    if all(isinstance(v, float | np.floating) for v in values):
        return "float"
    if all(isinstance(v, str) for v in values):
        return "str"
    return "json"


def _write_table(group: h5py.Group, records: list[dict[str, Any]]) -> None:
    columns: list[str] = []
    for rec in records:
        columns.extend(key for key in rec if key not in columns)
    group.attrs["columns"] = json.dumps(columns)
    group.attrs["rows"] = np.int64(len(records))
    for column in columns:
        values = [rec.get(column, math.nan) for rec in records]
        kind = _column_kind(values)
        if kind == "bool":
            data = np.array(values, dtype=np.bool_)
        elif kind == "int":
            data = np.array(values, dtype=np.int64)
        elif kind == "float":
            data = np.array(values, dtype=np.float64)
        elif kind == "str":
            data = np.array(values, dtype=h5py.string_dtype("utf-8"))
        else:
            texts = [json.dumps(_jsonable_exact(v), allow_nan=True) for v in values]
            data = np.array(texts, dtype=h5py.string_dtype("utf-8"))
        dataset = group.create_dataset(column, data=data)
        dataset.attrs["kind"] = kind
        unit = unit_of(column)
        if unit is not None:
            dataset.attrs["unit"] = unit


def _jsonable_exact(value: Any) -> Any:
    """Like :func:`_jsonable` but keeping NaN/inf (JSON columns must round-trip exactly)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable_exact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable_exact(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_results(path: str | os.PathLike[str]) -> RunResults:
    """Read a file written by :func:`write_results`. Raises ``ValueError`` naming the path
    if it is missing or not a kmc results file."""
    name = os.fspath(path)
    try:
        with h5py.File(name, "r") as f:
            if f.attrs.get("format") != _FORMAT:
                raise ValueError(f"{name}: not a kmc results file (no format attribute)")
            tables = {g: _read_table(f[g]) for g in _GROUPS}
            return RunResults(
                tasks=tables["tasks"],
                summary=tables["summary"],
                arrhenius=tables["arrhenius"],
                swept=list(json.loads(_as_str(f.attrs["swept"]))),
                missing=[int(k) for k in np.atleast_1d(f.attrs["missing"])],
                run_dir=Path(_as_str(f.attrs["run_dir"])),
                config=json.loads(_as_str(f.attrs.get("config_json", "{}"))),
            )
    except FileNotFoundError:
        raise ValueError(f"{name}: no such results file") from None
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(f"{name}: not a readable kmc results file ({exc})") from exc


def _read_table(group: h5py.Group) -> list[dict[str, Any]]:
    columns = json.loads(_as_str(group.attrs["columns"]))
    n_rows = int(group.attrs["rows"])
    data: dict[str, list[Any]] = {}
    for column in columns:
        dataset = group[column]
        kind = _as_str(dataset.attrs["kind"])
        if kind in ("str", "json"):
            values = [str(v) for v in dataset.asstr()[()]]
            if kind == "json":
                values = [json.loads(v) for v in values]
        elif kind == "bool":
            values = [bool(v) for v in dataset[()]]
        elif kind == "int":
            values = [int(v) for v in dataset[()]]
        else:
            values = [float(v) for v in dataset[()]]
        data[column] = values
    return [{column: data[column][i] for column in columns} for i in range(n_rows)]


def _as_str(value: Any) -> str:
    if isinstance(value, bytes | np.bytes_):
        return value.decode("utf-8")
    return str(value)
