"""``results.h5``: the tables of :class:`RunResults` in one HDF5 file, written atomically."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from kmc.results.columns import unit_of
from kmc.results.tables import RunResults
from kmc.store import (
    atomic_write,
)

_FORMAT = "kmc-results"
_FORMAT_VERSION = 1
_GROUPS = ("tasks", "summary", "arrhenius", "arrhenius_landscapes")

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
