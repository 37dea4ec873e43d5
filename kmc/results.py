"""Analysis of a whole run directory: per-task observables, per-point summary, Arrhenius fits.

:func:`analyze_run` reads every complete task file of a run directory, recomputes the
transport observables from the stored trajectories (:func:`kmc.analysis.transport`), averages
them over the replicas of each parameter point and, when ``run.temperature`` was swept over
at least two values, fits activation energies. :func:`write_results` / :func:`read_results`
store the result in ``RUN/results.h5``; :meth:`RunResults.to_json` and
:meth:`RunResults.table` are what ``kmc analyze RUN [--json]`` prints.

Record layout (units: D in cm²/s, conductivity in S/cm, time in s, temperature in K,
activation energies in eV):

- ``tasks``: ``task``, ``replica``, ``landscape`` (its index: tasks that share it ran on the
  same realization), every swept key by its dotted name, ``hops``, ``simulated_time``,
  ``kernel_seconds``, ``work`` (kernel attempts), ``status`` ("complete", or "budget
  exceeded" for a task stopped at ``run.work_budget``: kept as stored, not diffusive),
  ``D_tracer``, ``D_jump``, ``haven_ratio``, ``conductivity`` (nan when the
  task is not diffusive), ``D_tracer_upper``, ``D_jump_upper``, ``conductivity_upper`` (upper
  bounds for a non-diffusive task, else nan), ``diffusive`` (bool), ``diffusive_reason`` (empty
  when diffusive), ``msd_growth`` (a²), ``slope_ratio`` (see :func:`kmc.analysis.diffusive_test`)
  then the diffusion tensor (:data:`kmc.analysis.TENSOR_KEYS`, the axes the lattice has:
  ``D_tracer_xx``, ``_yy``, ``_zz``, ``D_tracer_xy``, ``_xz``, ``_yz``, ``D_jump_xx``, ``_yy``,
  ``_zz``; nan when the task is not diffusive; exact for the network method), and
  ``Ea_lower``, ``Ea_upper`` (the landscape's physically possible activation energies),
  ``percolating``, ``percolating_x`` (``_y``, ``_z``), ``spanning_fraction`` and
  ``critical_barrier`` (eV; :mod:`kmc.percolation`);
- ``summary`` (one per parameter point, in sweep order): every swept key, ``replicas`` (number
  of complete replicas), ``diffusive_replicas``, ``diffusive`` (all of them), ``note``, and
  ``X``, ``X_err`` (mean and standard error over replicas; nan unless every replica is
  diffusive) for X in ``D_tracer``, ``D_jump``, ``haven_ratio``, ``conductivity``, and
  ``X_upper`` (an upper bound of the mean when some replica is not diffusive, else nan) for
  X in ``D_tracer``, ``D_jump``, ``conductivity``; ``percolating`` (its mean is the
  spanning probability), ``spanning_fraction`` and ``critical_barrier`` with ``_err``; and
  the tensor components of the tasks with ``_err`` (as D_tracer: nan unless every replica is
  diffusive; no bounds);
- ``arrhenius_landscapes`` (empty unless the temperature was swept over at least two values):
  one fit per landscape over its temperatures: the other swept keys, ``replica``,
  ``landscape``, ``temperatures``, ``Ea_tracer``, ``Ea_tracer_err``, ``Ea_jump``,
  ``Ea_jump_err``, ``Ea_lower``, ``Ea_upper``, ``note`` (why withheld, or a range flag);
- ``arrhenius``: one record per point of the other swept keys, with those keys,
  ``landscapes``, ``Ea_tracer``, ``Ea_tracer_err``, ``Ea_jump``, ``Ea_jump_err`` (mean ±
  standard error over the landscapes' fits), ``Ea_lower``, ``Ea_upper`` and ``note``.

``results.h5`` layout: groups ``/tasks``, ``/summary``, ``/arrhenius``,
``/arrhenius_landscapes``, each with one 1-D
dataset per column (attribute ``kind``: bool | int | float | str | json, and ``unit`` where
one applies; a column of lists or tables is stored as JSON text) and the column order in the
group attribute ``columns`` (JSON); the root holds ``swept``, ``missing``, ``run_dir`` and the
run's resolved ``config_json``.
"""

from __future__ import annotations

import itertools
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
import scipy.stats

from kmc import analysis, store
from kmc.config import Task, config_digest, expand_tasks, load_config, resolved_dict
from kmc.lattice import volume
from kmc.store import (
    ForeignTaskFileError,
    IncompleteTaskFileError,
    TaskData,
    TaskIdentity,
    atomic_write,
    read_task,
    task_filename,
)
from kmc.texttable import text_table

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
#: Observables that a non-diffusive task reports only as an upper bound (``X_upper``).
BOUNDED = ("D_tracer", "D_jump", "conductivity")
#: Properties of a task's landscape (kmc.percolation), averaged over replicas as they are:
#: the mean of ``percolating`` is the spanning probability.
PERCOLATION = ("percolating", "spanning_fraction", "critical_barrier")
_AXES = ("percolating_x", "percolating_y", "percolating_z")
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
    "Ea_lower": "eV",
    "Ea_upper": "eV",
    "critical_barrier": "eV",
    "critical_barrier_err": "eV",
    "D_tracer_upper": "cm^2/s",
    "D_jump_upper": "cm^2/s",
    "conductivity_upper": "S/cm",
    "msd_growth": "hop_distance^2",
    "run.temperature": "K",
    "lattice.hop_distance": "angstrom",
    "crystal.attempt_frequency": "Hz",
    "microstructure.correlation_length": "angstrom",
    "microstructure.grain_diameter": "angstrom",
    **{key: "cm^2/s" for name in analysis.TENSOR_KEYS for key in (name, f"{name}_err")},
    "drift_velocity": "cm/s",
    "drift_velocity_err": "cm/s",
    "mobility": "cm^2/(V s)",
    "mobility_err": "cm^2/(V s)",
    "conductivity_field": "S/cm",
    "conductivity_field_err": "S/cm",
    "run.field": "V/cm",
    "thermodynamic_factor": "1",
    "thermodynamic_factor_err": "1",
    "D_chem": "cm^2/s",
    "D_chem_err": "cm^2/s",
    "chemical_potential": "eV",
    "chemical_potential_err": "eV",
    "order_parameter": "1",
    "order_parameter_err": "1",
    "relaxation_times": "1",
    "relaxation_times_err": "1",
}
#: Observables of a task driven by a field, averaged over replicas (mean and ``_err``).
FIELD_OBSERVABLES = ("drift_velocity", "mobility", "conductivity_field")
_ENERGY_KEYS = ("site_energy", "saddle_energy")

_FORMAT = "kmc-results"
_FORMAT_VERSION = 1
_GROUPS = ("tasks", "summary", "arrhenius", "arrhenius_landscapes")
#: Observables of a task recomputed from its trajectory (or kept as stored).
_RECOMPUTED = (
    *OBSERVABLES,
    *(f"{key}_upper" for key in BOUNDED),
    "diffusive",
    "diffusive_reason",
    "msd_growth",
    "slope_ratio",
)


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
        head += f" (missing: {_ranges(results.missing)})"
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
            f"budget exceeded: {len(stopped)} of {n_tasks} tasks ({_ranges(stopped)}) were "
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
            tables = {g: _read_table(f[g]) if g in f else [] for g in _GROUPS}
            return RunResults(
                tasks=tables["tasks"],
                summary=tables["summary"],
                arrhenius=tables["arrhenius"],
                arrhenius_landscapes=tables["arrhenius_landscapes"],
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
