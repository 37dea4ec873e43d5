"""A run directory's task files → the tables of :class:`RunResults`: per-task records,
per-point summaries over replicas, Arrhenius fits (see kmc.results)."""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats

from kmc import analysis, store
from kmc.config import Task, config_digest, expand_tasks, load_config, resolved_dict
from kmc.lattice import volume
from kmc.results.columns import (
    _AXES,
    _RECOMPUTED,
    BOUNDED,
    FIELD_OBSERVABLES,
    OBSERVABLES,
    PERCOLATION,
    TEMPERATURE_KEY,
)
from kmc.results.text import _jsonable, _table
from kmc.store import (
    ForeignTaskFileError,
    IncompleteTaskFileError,
    TaskData,
    TaskIdentity,
    read_task,
    task_filename,
)

# --------------------------------------------------------------------------- the result


@dataclass
class RunResults:
    """Everything ``kmc analyze`` reports about one run directory.

    ``tasks``, ``summary`` and ``arrhenius`` are lists of flat records (see the docstring
    of kmc.results); ``swept`` lists the swept dotted keys in file order; ``missing`` the
    indices of tasks without a complete task file; ``config`` is the run's resolved config (a plain
    dict, as :func:`kmc.config.resolved_dict` gives it; empty if unknown).
    """

    tasks: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    arrhenius: list[dict[str, Any]]
    swept: list[str]
    missing: list[int]
    run_dir: Path
    config: dict[str, Any] = field(default_factory=dict)
    arrhenius_landscapes: list[dict[str, Any]] = field(default_factory=list)
    #: one line per task file that is there but was not read: damaged or not this run's
    damaged: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        """One JSON object ``{"summary": [...], "tasks": [...], "arrhenius": [...],
        "arrhenius_landscapes": [...]}``.

        NaN and ±inf become ``null``; numpy scalars become python numbers.
        """
        payload = {
            "summary": self.summary,
            "tasks": self.tasks,
            "arrhenius": self.arrhenius,
            "arrhenius_landscapes": self.arrhenius_landscapes,
        }
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
    ``run_dir/tasks/task-NNNNNN.h5md``, each verified against its checksums and the identity
    of this run, task and seed; missing, incomplete, damaged or foreign files are skipped and
    listed in :attr:`RunResults.missing` (and each file that is there but unusable, with
    the reason, in :attr:`RunResults.damaged`). D_tracer, D_jump, haven_ratio and
    conductivity are recomputed from each stored trajectory with
    :func:`kmc.analysis.transport` (a task without a trajectory -- ``run.method =
    "network"`` stores zero frames -- keeps its stored values);
    hops, simulated_time and kernel_seconds are taken from the stored observables.

    With ``recompute=False`` the observables stored at run time (by the same estimators) are
    used and the trajectories are not read: the quick summary at the end of ``kmc run``.
    With ``progress`` a tqdm bar over the task files is shown on stderr if it is a terminal.

    Raises ``ValueError`` (one line naming the path) if ``run_dir`` is not a run directory,
    and
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

    digest = config_digest(config)
    records: list[dict[str, Any] | None] = []
    missing: list[int] = []
    damaged: list[str] = []
    for task in _progress(tasks, progress, desc="analyze"):
        path = task_dir / task_filename(task.index)
        identity = TaskIdentity.of_task(task, digest)
        try:
            data = read_task(path, positions=recompute, expect=identity)
            _check_task_file(path, data, task)
        except FileNotFoundError:
            missing.append(task.index)
            records.append(None)
            continue
        except IncompleteTaskFileError as err:
            missing.append(task.index)
            records.append(None)
            damaged.append(str(err))
            continue
        records.append(_task_record(task, data, swept, recompute))

    summary = _summarize(tasks, records, swept)
    done = [r for r in records if r is not None]
    per_landscape = _landscape_arrhenius(done, swept)
    return RunResults(
        tasks=done,
        summary=summary,
        arrhenius=_arrhenius(per_landscape, swept),
        swept=swept,
        missing=missing,
        run_dir=run,
        config=resolved_dict(config),
        arrhenius_landscapes=per_landscape,
        damaged=damaged,
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
        raise ForeignTaskFileError(
            f"{path}: task file does not belong to task {task.index} of this run's config "
            f"(it holds task {data.task}, point {json.dumps(point)}, replica {replica})"
        )


def _task_observables(data: TaskData, recompute: bool) -> dict[str, Any]:
    """The transport observables of one task (see ``_RECOMPUTED``) and its diffusion tensor
    (:func:`kmc.analysis.tensor_keys` of its axes), recomputed from its trajectory (and, for
    the lattice gas, its fine summed-displacement series).

    Without ``recompute``, and for a file with too few frames for a fit (zero for
    ``run.method = "network"``, which solves for D without a trajectory), the observables
    stored at run time are kept (a file written before the tensor was recorded gives nan
    components).
    """
    stored = data.observables
    dim = data.positions.shape[2]
    tensor = analysis.tensor_keys(dim) if 1 <= dim <= 3 else ()
    stopped = stored.get("status", store.COMPLETE) == store.BUDGET_EXCEEDED  # cut short: as stored
    if not recompute or stopped or data.positions.shape[0] < analysis.MIN_FRAMES:
        driven = analysis.FIELD_KEYS if "drift_velocity" in stored else ()
        thermo = analysis.THERMODYNAMIC_KEYS if "thermodynamic_factor" in stored else ()
        order = ("order_parameter",) if "order_parameter" in stored else ()
        out: dict[str, Any] = {
            key: _number(stored.get(key, math.nan), float)
            for key in (*_RECOMPUTED, *tensor, *driven, *thermo, *order)
        }
        out["diffusive"] = bool(stored.get("diffusive", 1))
        out["diffusive_reason"] = str(stored.get("diffusive_reason", ""))
        if thermo:
            out["thermodynamic_reason"] = str(stored.get("thermodynamic_reason", ""))
        return out
    params = data.parameters
    if "hop_distance" in params:  # the task's own metadata
        temperature, hop_distance = float(params["temperature"]), float(params["hop_distance"])
        box_volume = float(params["volume"])
        field = np.asarray(params.get("field", []), dtype=float)
    else:  # a file of an earlier version (an ideal lattice): from its stored config
        config = params["config"]
        temperature = float(config["run"]["temperature"])
        hop_distance = float(config["lattice"]["hop_distance"])
        box_volume = volume(data.box, hop_distance)
        field = np.zeros(0)
    collective = None
    if data.collective is not None:
        collective = (data.collective_times, data.collective)
    result = analysis.transport(
        data.times,
        data.positions,
        temperature=temperature,
        volume=box_volume,
        hop_distance=hop_distance,
        charge=1,  # Li+ and Na+
        collective=collective,
        martingale=bool(stored.get("uniform_rates", 0)),
        field=field if field.size and np.any(field) else None,
    )
    driven = analysis.FIELD_KEYS if field.size and np.any(field) else ()
    out = {key: _number(result[key], float) for key in (*_RECOMPUTED, *tensor, *driven)}
    if "thermodynamic_factor" in stored:  # an equilibrium lattice gas: Θ from the frames
        out.update(analysis.lattice_gas_thermodynamics(
            data.times, data.positions, data.box, int(params["free_sites"]), out["D_jump"]
        ))  # fmt: skip
        out["chemical_potential"] = _number(stored.get("chemical_potential", math.nan), float)
    if "order_parameter" in stored:  # needs the lattice's sublattices: as stored
        out["order_parameter"] = _number(stored["order_parameter"], float)
    out["diffusive"] = bool(result["diffusive"])
    out["diffusive_reason"] = str(result["diffusive_reason"])
    return out


def _task_record(task: Task, data: TaskData, swept: list[str], recompute: bool) -> dict[str, Any]:
    point = task.plain_point
    record: dict[str, Any] = {
        "task": task.index,
        "replica": task.replica,
        "landscape": task.landscape,
    }
    for key in swept:
        record[key] = point[key]
    stored = data.observables
    record["hops"] = _number(stored.get("hops", math.nan))
    record["simulated_time"] = _number(stored.get("simulated_time", math.nan), float)
    record["kernel_seconds"] = _number(stored.get("kernel_seconds", math.nan), float)
    record["work"] = _number(stored.get("work", math.nan))
    record["status"] = str(stored.get("status", store.COMPLETE))
    record.update(_task_observables(data, recompute))
    record["Ea_lower"] = _number(stored.get("Ea_lower", math.nan), float)
    record["Ea_upper"] = _number(stored.get("Ea_upper", math.nan), float)
    for key in (*PERCOLATION, *_AXES):
        if key in stored:
            record[key] = _number(stored[key], float if key != "percolating" else None)
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


def _replica_statistics(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Means and standard errors over replicas, or upper bounds where a replica is not
    diffusive.

    If every replica is diffusive: ``X``, ``X_err`` for each observable and ``X_upper`` nan.
    The tensor components the records carry get ``X``, ``X_err`` the same way (nan, and no
    bound, when a replica is not diffusive); a component near 0 is a value like any other.
    Otherwise ``X`` and ``X_err`` are nan (a mean over values some of which are only bounds
    is not a value), and ``X_upper`` is the mean over replicas of the value or, for a
    non-diffusive replica, its upper bound: an upper bound of the mean.

    The Haven ratio is the ratio of the replica means, D_tracer / D_jump, not the mean of the
    per-replica ratios: the collective D_jump of one replica is the noisier estimate, and the
    mean of ratios with a noisy denominator is biased (by Jensen's inequality, upwards; it
    diverges when a replica's D_jump comes near 0). Its error is propagated from the two
    standard errors including their covariance (both come from the same trajectories):
    (δH/H)² = (δD*/D*)² + (δD_σ/D_σ)² − 2 cov(D*, D_σ)/(D* D_σ).
    """
    out: dict[str, Any] = {}
    diffusive = sum(bool(r.get("diffusive", True)) for r in records)
    out["diffusive_replicas"] = diffusive
    out["diffusive"] = bool(records) and diffusive == len(records)
    out["note"] = (
        ""
        if out["diffusive"] or not records
        else f"{len(records) - diffusive} of {len(records)} replicas not diffusive: "
        "D and σ are upper bounds"
    )
    stopped = sum(r.get("status") == store.BUDGET_EXCEEDED for r in records)
    if stopped:
        out["note"] += (
            f"; {stopped} of them stopped at their work budget (run.work_budget; status "
            f'"{store.BUDGET_EXCEEDED}"): their bounds cover only the part they ran, if any'
        )
    for key in OBSERVABLES:
        out[key] = out[f"{key}_err"] = math.nan
    for key in BOUNDED:
        out[f"{key}_upper"] = math.nan
    for key in PERCOLATION:
        values = [float(r[key]) for r in records if key in r]
        if len(values) == len(records) and values:
            out[key], out[f"{key}_err"] = analysis.replica_mean(values)
    tensor = [k for k in analysis.TENSOR_KEYS if records and all(k in r for r in records)]
    for key in tensor:
        out[key] = out[f"{key}_err"] = math.nan
        if out["diffusive"]:
            out[key], out[f"{key}_err"] = analysis.replica_mean([r[key] for r in records])
    if records and all("thermodynamic_factor" in r for r in records):  # a lattice gas
        order = ("order_parameter",) if all("order_parameter" in r for r in records) else ()
        for key in (*analysis.THERMODYNAMIC_KEYS, *order):
            values = [float(r[key]) for r in records]
            out[key] = out[f"{key}_err"] = math.nan
            if all(math.isfinite(v) for v in values):
                out[key], out[f"{key}_err"] = analysis.replica_mean(values)
        unresolved = sum(bool(r.get("thermodynamic_reason")) for r in records)
        if unresolved:
            note = (
                f"Θ and D_chem unresolved in {unresolved} of {len(records)} replicas "
                "(thermodynamic_reason in the task records)"
            )
            out["note"] = f"{out['note']}; {note}" if out["note"] else note
    if records and all("drift_velocity" in r for r in records):  # driven by a field
        for key in FIELD_OBSERVABLES:
            out[key] = out[f"{key}_err"] = math.nan
            if out["diffusive"]:
                out[key], out[f"{key}_err"] = analysis.replica_mean([r[key] for r in records])
    if not records:
        return out
    if not out["diffusive"]:
        for key in BOUNDED:
            bounds = [r[key] if r.get("diffusive", True) else r[f"{key}_upper"] for r in records]
            out[f"{key}_upper"] = float(np.mean(bounds))
        return out
    values = {key: np.array([r[key] for r in records], dtype=float) for key in OBSERVABLES}
    for key in ("D_tracer", "D_jump", "conductivity"):
        out[key], out[f"{key}_err"] = analysis.replica_mean(values[key])
    tracer, jump = values["D_tracer"], values["D_jump"]
    t_mean, j_mean = out["D_tracer"], out["D_jump"]
    if np.isfinite(t_mean) and np.isfinite(j_mean) and j_mean > 0:
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
    return out


def _landscape_arrhenius(records: list[dict[str, Any]], swept: list[str]) -> list[dict[str, Any]]:
    """One Arrhenius fit per landscape: the tasks that share the other swept keys and the
    replica (so the same landscape, see :func:`kmc.config.expand_tasks`), over their
    temperatures. Unweighted least squares of ln D against 1/kT (its error from the
    residuals needs three temperatures). Withheld (nan, with a note) if a task is not
    diffusive; a value outside the landscape's physical range [Ea_lower, Ea_upper] is kept
    and flagged in ``note`` (see :func:`_outside`). Empty unless the temperature was swept
    over two values."""
    if TEMPERATURE_KEY not in swept:
        return []
    others = [key for key in swept if key != TEMPERATURE_KEY]
    groups: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        ident = json.dumps([[rec[k] for k in others], rec["replica"]], sort_keys=True)
        groups.setdefault(ident, []).append(rec)
    out = []
    for rows in groups.values():
        temps = np.array([r[TEMPERATURE_KEY] for r in rows], dtype=float)
        if np.unique(temps).size < 2:
            continue
        first = rows[0]
        record: dict[str, Any] = {key: first[key] for key in others}
        record["replica"], record["landscape"] = first["replica"], first["landscape"]
        record["temperatures"] = int(np.unique(temps).size)
        lower = _extreme(max, [r["Ea_lower"] for r in rows])
        upper = _extreme(min, [r["Ea_upper"] for r in rows])
        record["Ea_lower"], record["Ea_upper"] = lower, upper
        stuck = sorted(r[TEMPERATURE_KEY] for r in rows if not r.get("diffusive", True))
        # D from an MSD (kMC) scatters; D of a task without one (network) is exact
        statistical = any(math.isfinite(r.get("msd_growth", math.nan)) for r in rows)
        notes = []
        for name, column in (("Ea_tracer", "D_tracer"), ("Ea_jump", "D_jump")):
            ea = err = math.nan
            if not stuck:
                ea, err = analysis.arrhenius(temps, [r[column] for r in rows])
                dof = record["temperatures"] - 2  # of the residual error
                if _outside(ea, err, lower, upper, statistical, dof):
                    notes.append(f"{name} outside the physical range")
            record[name], record[f"{name}_err"] = float(ea), float(err)
        if stuck:
            listed = ", ".join(f"{t:g}" for t in stuck)
            notes.insert(0, f"withheld: not diffusive at T = {listed} K")
        record["note"] = "; ".join(notes)
        out.append(record)
    return out


def _extreme(pick, values: list[float]) -> float:
    """``pick`` (max or min) of the finite ``values``; nan if there are none."""
    finite = [float(v) for v in values if math.isfinite(v)]
    return pick(finite) if finite else math.nan


def _outside(
    ea: float,
    err: float,
    lower: float,
    upper: float,
    statistical: bool = True,
    dof: int | None = None,
) -> bool:
    """Whether ``ea`` lies outside [lower, upper] by more than its error allows: the
    two-sided 99.73 % quantile (three standard errors of a normal) of Student's t with
    ``dof`` degrees of freedom times ``err`` (a residual error from three temperatures has
    one: 212 standard errors; None: normal). An exact fit (not ``statistical``: network D)
    without an error is judged to round-off; a statistical one without an error (two
    temperatures) is not judged here, since its scatter is unknown -- the mean over
    landscapes is, with the error from their scatter (:func:`_arrhenius`). The slack is
    never below round-off (1e-9 eV)."""
    if not math.isfinite(ea):
        return False
    if math.isfinite(err):
        factor = 3.0 if dof is None else float(scipy.stats.t.ppf(0.99865, max(dof, 1)))
        slack = max(factor * err, 1e-9)
    elif statistical:
        return False
    else:
        slack = 1e-9
    return ea < lower - slack or ea > upper + slack


def _arrhenius(per_landscape: list[dict[str, Any]], swept: list[str]) -> list[dict[str, Any]]:
    """Activation energies per point of the swept keys other than the temperature: the mean
    ± standard error over landscapes of the per-landscape fits (:func:`_landscape_arrhenius`).

    Withheld (nan, with the reason in ``note``) if any landscape's fit was; ``Ea_lower`` and
    ``Ea_upper`` are the means of the landscapes' physical ranges, and a mean outside them,
    or any landscape outside its own, is flagged in ``note``.
    """
    others = [key for key in swept if key != TEMPERATURE_KEY]
    groups: dict[str, list[dict[str, Any]]] = {}
    for rec in per_landscape:
        ident = json.dumps([rec[k] for k in others], sort_keys=True)
        groups.setdefault(ident, []).append(rec)
    out = []
    for rows in groups.values():
        record: dict[str, Any] = {key: rows[0][key] for key in others}
        record["landscapes"] = len(rows)
        record["Ea_lower"] = float(np.mean([r["Ea_lower"] for r in rows]))
        record["Ea_upper"] = float(np.mean([r["Ea_upper"] for r in rows]))
        withheld = [r for r in rows if r["note"].startswith("withheld")]
        notes = []
        if withheld:
            notes.append(
                f"withheld: {len(withheld)} of {len(rows)} landscapes have non-diffusive tasks"
            )
        for name in ("Ea_tracer", "Ea_jump"):
            if withheld:
                ea = err = math.nan
            else:
                ea, err = analysis.replica_mean([r[name] for r in rows])
                outside = sum(f"{name} outside" in r["note"] for r in rows)
                bounds = record["Ea_lower"], record["Ea_upper"]
                if outside:
                    notes.append(
                        f"{name} outside the physical range on {outside} of {len(rows)} landscapes"
                    )
                elif _outside(ea, err, *bounds, dof=len(rows) - 1):
                    notes.append(
                        f"{name} outside the physical range (the mean over {len(rows)} landscapes)"
                    )
            record[name], record[f"{name}_err"] = float(ea), float(err)
        record["note"] = "; ".join(notes)
        out.append(record)
    return out
