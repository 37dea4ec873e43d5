"""Reading a config: a TOML file or a plain dict → a checked :class:`Config`, every sweep
point and the memory included."""

from __future__ import annotations

import copy
import os
import tomllib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from kmc.config.memory import _check_memory, task_memory
from kmc.config.schema import (
    Config,
    ConfigError,
    _build,
    _check_unknown_top_level,
    _describe,
    _Problem,
    plain,
)
from kmc.config.sweep import _has_dotted, _parse_sweep, _points, _set_dotted

# --------------------------------------------------------------------------------------------
# Public entry points


def parse_config(data: Mapping, source: str = "<config>", *, check_memory: bool = True) -> Config:
    """Validate a parsed TOML document (a plain nested dict) into a :class:`Config`.

    Every sweep point is validated too. With ``check_memory`` (the default) a config whose
    largest task would need more than 80 % of the physical memory is refused on
    ``lattice.cells``. Raises :class:`ConfigError`.
    """
    source = str(source)
    default_name = Path(source).stem if not source.startswith("<") else "run"
    try:
        return _parse_config(data, source, default_name, check_memory)
    except RecursionError:
        raise ConfigError(source, None, "nested too deeply (tables or lists)") from None


def _parse_config(data: Mapping, source: str, default_name: str, check_memory: bool) -> Config:
    try:
        if not isinstance(data, Mapping):
            raise _Problem(None, f"a config must be a table of keys, not {_describe(data)}")
        raw = copy.deepcopy(dict(data))
        _check_unknown_top_level(raw)
        sweep = _parse_sweep(raw)
        # the file's own values; a swept key the file leaves out takes its first value
        base = copy.deepcopy(raw)
        base.pop("sweep", None)
        missing = [(key, values[0]) for key, values in sweep if not _has_dotted(base, key)]
        for key, value in missing:
            _set_dotted(base, key, plain(value))
        try:
            built = _build(base, default_name, source)
        except _Problem as problem:
            for key, _ in missing:  # a problem with a value taken from [sweep]
                if problem.key == key or key in problem.message:
                    problem = _Problem(f"sweep.{key}", problem.message)
                    break
            raise problem from None
        config = replace(built, sweep=sweep, source=source, raw=raw)
        points = list(_points(config))  # validates every point
        # kept for expand_tasks (built once, not twice: sweeps of 10^5 points); an instance
        # attribute, not a field, so that a replace()d copy never inherits it
        object.__setattr__(config, "_points", points)
        need = max(task_memory(point_config) for _, point_config in points)
        if check_memory:
            _check_memory(config, need)
    except _Problem as problem:
        raise ConfigError(source, problem.key, problem.message) from None
    return config


def load_config(path: str | os.PathLike, *, check_memory: bool = True) -> Config:
    """Read and validate a TOML config file. Raises :class:`ConfigError`.

    ``check_memory=False`` skips the memory check, for reading back a run's config on a
    machine smaller than the one that ran it."""
    source = str(path)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, None, f"TOML syntax error: {exc}") from None
    except RecursionError:
        raise ConfigError(source, None, "TOML nested too deeply to read") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(source, None, f"not a UTF-8 text file: {exc}") from None
    except FileNotFoundError:
        raise ConfigError(source, None, "no such file") from None
    except OSError as exc:
        raise ConfigError(source, None, f"cannot read: {exc.strerror or exc}") from None
    return parse_config(data, source, check_memory=check_memory)
