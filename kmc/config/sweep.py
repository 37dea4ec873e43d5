"""Sweeps: the [sweep] table, its points, and the tasks they expand to with their seeds."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from kmc.config.schema import (
    _DISTRIBUTION_KEYS,
    ALL_KEYS,
    Config,
    _build,
    _describe,
    _distribution,
    _key_spec,
    _Problem,
    _show,
    _suggest,
    plain,
    resolved_dict,
)
from kmc.distributions import _PARAMETERS as _DIST_PARAMETERS

#: First spawn-key entry of the landscape seeds and of the task (ions, kernel) seeds.
LANDSCAPE_STREAM, TASK_STREAM = 0, 1
_TASK_ONLY_PREFIXES = ("run.", "ions.", "interactions.")
UNSWEEPABLE = {
    "name": "the run name cannot be swept",
    "run.replicas": "cannot be swept: every sweep point gets run.replicas replicas",
    "run.seed": "cannot be swept: every task already draws its own seeds from run.seed",
}


@dataclass(frozen=True)
class Task:
    """One parameter point × one replica.

    ``point`` maps each swept dotted key to its value here (typed, as in ``Config.sweep``;
    :func:`plain` makes it JSON-friendly), ``config`` is the config with those values
    substituted and no sweep, ``seed`` is the task's own ``SeedSequence`` (ion placement and
    the kernel), ``landscape`` the index of the landscape it runs on and ``landscape_seed``
    that landscape's ``SeedSequence`` (blocked sites, microstructure, energies), shared by
    every task that differs from this one only in ``run.*`` and ``ions.*`` keys.
    """

    index: int
    replica: int
    point: dict[str, object]
    config: Config
    seed: np.random.SeedSequence
    landscape: int
    landscape_seed: np.random.SeedSequence

    @property
    def plain_point(self) -> dict[str, Any]:
        """``point`` with JSON-friendly values (lists, ``{"dist": ...}`` dicts)."""
        return {key: plain(value) for key, value in self.point.items()}


# --------------------------------------------------------------------------------------------
# Sweeps


def _sweep_key_error(key: str, data: Mapping) -> str | None:
    """Why ``key`` cannot be swept (None if it can)."""
    if key in UNSWEEPABLE:
        return UNSWEEPABLE[key]
    if key in ALL_KEYS:
        return None
    parent, _, param = key.rpartition(".")
    if parent in _DISTRIBUTION_KEYS:
        table, name = parent.split(".")
        written = data.get(table, {}).get(name) if isinstance(data.get(table), Mapping) else None
        if isinstance(written, Mapping) and param in _DIST_PARAMETERS.get(written.get("dist"), ()):
            return None
        if isinstance(written, Mapping) and "dist" not in written and param in written:
            return None  # one type's energy in a per-type table
        return (
            f"unknown key: {parent} is not written as a {{dist = ...}} table with a "
            f"parameter {param!r}"
        )
    sweepable = [k for k in ALL_KEYS if k not in UNSWEEPABLE]
    hint = _suggest(key, sweepable)
    if not hint:
        same_leaf = [k for k in sweepable if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]]
        hint = f" (did you mean {same_leaf[0]!r}?)" if same_leaf else ""
    return "unknown key, not a sweepable config key" + hint


def _flatten_sweep(table: Mapping, prefix: str = "") -> Iterator[tuple[str, object]]:
    """Quoted dotted keys as given; unquoted ones (nested tables in TOML) flattened back."""
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and not (dotted in ALL_KEYS and "dist" in value):
            yield from _flatten_sweep(value, dotted + ".")
        else:
            yield dotted, value


def _parse_sweep_value(key: str, value: object, data: Mapping) -> object:
    """A swept value validated and typed like the scalar it replaces."""
    if key in ALL_KEYS:
        return _key_spec(key).parse(value)
    parent, _, param = key.rpartition(".")  # a distribution parameter
    table, name = parent.split(".")
    spec = dict(data[table][name])
    if "dist" not in spec:  # one type's entry of a per-type table
        return _distribution(value)
    spec[param] = value
    _key_spec(parent).parse(spec)  # the whole distribution must stay valid
    if param in ("values", "weights"):
        return tuple(float(v) for v in value)
    return float(value)


def _parse_sweep(data: Mapping) -> tuple[tuple[str, tuple], ...]:
    table = data.get("sweep", {})
    if not isinstance(table, Mapping):
        raise _Problem("sweep", f"must be a table [sweep], not {_describe(table)}")
    sweep: list[tuple[str, tuple]] = []
    for key, values in _flatten_sweep(table):
        where = f"sweep.{key}"
        reason = _sweep_key_error(key, data)
        if reason:
            raise _Problem(where, reason)
        for other, _ in sweep:
            if key.startswith(other + ".") or other.startswith(key + "."):
                raise _Problem(where, f"overlaps the swept key {other!r}; sweep only one")
        if not isinstance(values, list):
            raise _Problem(where, f"must be a list of values, not {_describe(values)}")
        if not values:
            raise _Problem(where, "is an empty list; give at least one value")
        typed: list = []
        seen: set[str] = set()
        for i, value in enumerate(values):
            try:
                parsed = _parse_sweep_value(key, value, data)
            except ValueError as exc:
                raise _Problem(where, f"entry {i + 1} ({_show(value)}): {exc}") from None
            ident = repr(plain(parsed))  # a set, not a list scan: sweeps of 10⁵ values
            if ident in seen:
                raise _Problem(where, f"entry {i + 1} ({_show(value)}) is listed twice")
            seen.add(ident)
            typed.append(parsed)
        sweep.append((key, tuple(typed)))
    return tuple(sweep)


def _set_dotted(data: dict, key: str, value: object) -> None:
    *parents, last = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def _with_dotted(data: dict, key: str, value: object) -> dict:
    """A copy of ``data`` with ``key`` set, copying only the tables along the key's path
    (the rest is shared, never mutated): a deep copy per sweep point cost 0.1 ms."""
    head, _, rest = key.partition(".")
    out = dict(data)
    if rest:
        inner = data.get(head)
        out[head] = _with_dotted(inner if isinstance(inner, dict) else {}, rest, value)
    else:
        out[head] = value
    return out


def _has_dotted(data: Mapping, key: str) -> bool:
    node: object = data
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def _points(config: Config) -> Iterator[tuple[dict[str, object], Config]]:
    """(point, sweep-free config) for every sweep point, in task order (no replicas)."""
    cached = config.__dict__.get("_points")
    if cached is not None:  # parse_config built them while validating
        yield from cached
        return
    base = resolved_dict(config)
    base.pop("sweep")
    keys = [key for key, _ in config.sweep]
    shared: dict = {}  # the tables no sweep key touches, parsed once
    for combo in itertools.product(*(values for _, values in config.sweep)):
        point = dict(zip(keys, combo, strict=True))
        data = base
        for key, value in point.items():
            data = _with_dotted(data, key, plain(value))
        try:
            built = _build(data, config.name, config.source, shared)
        except _Problem as problem:
            raise _point_problem(problem, point) from None
        yield point, replace(built, source=config.source, raw=config.raw)


def _point_problem(problem: _Problem, point: dict[str, object]) -> _Problem:
    """Name the sweep key behind a problem found at one sweep point."""
    key = problem.key
    for swept in point:
        if key == swept or (key and swept.startswith(key + ".")) or swept in problem.message:
            key = f"sweep.{swept}"
            break
    where = ", ".join(f"{k} = {_show(plain(v))}" for k, v in point.items())
    return _Problem(key, f"{problem.message} (at the sweep point {where})")


def landscape_keys(point: Mapping[str, object]) -> dict[str, object]:
    """The swept values of ``point`` that shape the landscape: every key outside ``run.*``
    and ``ions.*`` (temperature, method, run length and the ions run on a landscape, they do
    not change it)."""
    return {k: v for k, v in point.items() if not k.startswith(_TASK_ONLY_PREFIXES)}


def expand_tasks(config: Config) -> list[Task]:
    """Every task: the sweep's Cartesian product in file order, replicas innermost.

    Seeds (all from ``run.seed``, independent of ranks and order): task k draws its ions and
    kernel stream from ``SeedSequence(seed, spawn_key=(1, k))``; landscape L from
    ``SeedSequence(seed, spawn_key=(0, L))``, with L = (index of the point's landscape keys,
    see :func:`landscape_keys`, in order of first appearance) · replicas + replica.
    """
    replicas = config.run.replicas
    landscape_points: dict[str, int] = {}
    tasks = []
    for p, (point, point_config) in enumerate(_points(config)):
        ident = repr(sorted((k, plain(v)) for k, v in landscape_keys(point).items()))
        lp = landscape_points.setdefault(ident, len(landscape_points))
        for replica in range(replicas):
            index = p * replicas + replica
            landscape = lp * replicas + replica
            tasks.append(
                Task(
                    index,
                    replica,
                    point,
                    point_config,
                    np.random.SeedSequence(config.run.seed, spawn_key=(TASK_STREAM, index)),
                    landscape,
                    np.random.SeedSequence(
                        config.run.seed, spawn_key=(LANDSCAPE_STREAM, landscape)
                    ),
                )
            )
    return tasks
