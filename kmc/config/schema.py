"""The config schema: typed config tables, value parsers, the key table, and building one
sweep-free :class:`Config` from a plain dict; its resolved form and digest (see kmc.config)."""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from kmc import structure as structure_module
from kmc.distributions import _PARAMETERS as _DIST_PARAMETERS
from kmc.distributions import Distribution
from kmc.lattice import COORDINATION, DIMENSION, Lattice
from kmc.lattice import KINDS as LATTICE_KINDS
from kmc.lattice import build as build_lattice
from kmc.lattice import site_count as lattice_site_count
from kmc.structure import Structure, StructureError
from kmc.units import BOLTZMANN_EV, VOLT_PER_CM_TO_EV_PER_ANGSTROM

SPECIES = ("Li", "Na")
#: ``lattice.kind`` of a lattice read from a crystal structure file.
STRUCTURE = "structure"
_STRUCTURE_KEYS = ("structure", "mobile", "cutoff", "supercell")
MICROSTRUCTURE_KINDS = ("random", "correlated", "grains")
METHODS = ("kmc", "network")
#: Longest run name in bytes (it names the run directory; file systems allow 255).
MAX_NAME_BYTES = 255
#: Accepted lattice.hop_distance (Å) and crystal.attempt_frequency (Hz): wide around the
#: physical values, narrow enough that no estimator over- or underflows.
HOP_DISTANCE_RANGE = (1e-3, 1e3)
ATTEMPT_FREQUENCY_RANGE = (1e3, 1e20)
#: Most hops per ion (hop counters and run lengths stay exact 64-bit integers).
MAX_HOPS_PER_ION = 10**12
_HOPS_WHY = " (hop counts must stay exact 64-bit integers)"
MAX_FRAMES = 10**6
#: Largest (lowest barrier) / kT for which a hop still happens: exp(-690) ≈ 1e-300, just
#: above the smallest double; beyond it every rate underflows to 0.
MAX_BARRIER_OVER_KT = 690.0


# --------------------------------------------------------------------------------------------
# Errors


class ConfigError(Exception):
    """A bad config. ``str(e)`` is one line: ``"<file>: <dotted.key>: <what is wrong>"``.

    ``key`` is None only for errors that concern the file as a whole (unreadable file, TOML
    syntax error — whose message gives the line and column).
    """

    def __init__(self, file: str, key: str | None, message: str) -> None:
        super().__init__(str(file), key, _one_line(message))
        self.file: str = str(file)
        self.key: str | None = key
        self.message: str = _one_line(message)

    def __str__(self) -> str:
        parts = [self.file, *([self.key] if self.key else []), self.message]
        return ": ".join(parts)


class _Problem(Exception):
    """Internal: a problem at a dotted key, turned into a ConfigError by the public entry."""

    def __init__(self, key: str | None, message: str) -> None:
        super().__init__(key, message)
        self.key = key
        self.message = message


def _one_line(text: str) -> str:
    return " ".join(str(text).splitlines()).strip()


# --------------------------------------------------------------------------------------------
# Typed config


@dataclass(frozen=True)
class LatticeConfig:
    kind: str
    cells: tuple[int, ...] | None = None  # ideal lattices
    hop_distance: float | None = None  # ideal lattices
    blocked_fraction: float = 0.0
    structure: str | None = None  # kind = "structure": the path as written in the config
    mobile: str | None = None
    cutoff: float | None = None
    supercell: tuple[int, ...] | None = None
    # the structure file found for ``structure`` (absolute; not part of the config's identity)
    structure_file: str | None = field(default=None, compare=False)

    def read_structure(self) -> Structure:
        """The hop network of ``structure`` (kind = "structure" only; cached)."""
        assert self.structure_file is not None, "not a structure lattice"
        return structure_module.read(self.structure_file, self.mobile, self.cutoff)

    def build(self) -> Lattice:
        """The periodic lattice this table describes."""
        if self.kind == STRUCTURE:
            return self.read_structure().lattice(self.supercell)
        return build_lattice(self.kind, self.cells, self.hop_distance)

    @property
    def dim(self) -> int:
        return 3 if self.kind == STRUCTURE else DIMENSION[self.kind]


@dataclass(frozen=True)
class IonsConfig:
    species: str
    concentration: float | None
    count: int | None
    exclusion: bool = True


@dataclass(frozen=True, kw_only=True)
class CrystalConfig:
    attempt_frequency: float = 1e13
    # a dict: one distribution per site type / hop type label of a structure
    site_energy: Distribution | dict[str, Distribution]
    saddle_energy: Distribution | tuple[Distribution, ...] | dict[str, Distribution]


@dataclass(frozen=True)
class AmorphousConfig:
    site_energy: Distribution
    saddle_energy: Distribution


@dataclass(frozen=True)
class InterfaceConfig:
    saddle_energy: Distribution | None = None  # None: the amorphous saddle setting


@dataclass(frozen=True)
class MicrostructureConfig:
    kind: str = "random"
    amorphous_fraction: float = 0.0
    correlation_length: float | None = None
    grain_diameter: float | None = None


@dataclass(frozen=True)
class RunConfig:
    method: str = "kmc"
    temperature: float = 300.0
    hops_per_ion: int = 2000
    equilibration_hops_per_ion: int = 200
    frames: int = 100
    replicas: int = 4
    seed: int = 0
    # V/cm: a magnitude along field_direction, or one component per lattice axis
    field: float | tuple[float, ...] = 0.0
    field_direction: tuple[float, ...] | None = None  # default: along the first axis
    # × the planned hops of each kernel phase; None: kmc.kernel.DEFAULT_WORK_BUDGET (left
    # out of the resolved config, so that runs made before the key existed keep their identity)
    work_budget: float | None = None

    def field_vector(self, dim: int) -> np.ndarray:
        """The applied field (V/cm) as a vector of ``dim`` components."""
        if isinstance(self.field, tuple):
            return np.asarray(self.field, dtype=float)
        direction = np.zeros(dim)
        direction[0] = 1.0
        if self.field_direction is not None:
            direction = np.asarray(self.field_direction, dtype=float)
            direction /= np.linalg.norm(direction)
        return self.field * direction


@dataclass(frozen=True)
class InteractionsConfig:
    """Pair energies (eV, > 0 repulsive) of two ions on neighbouring sites (the hop
    neighbours): ``nearest_neighbour`` for every hop type, ``hop_type`` overriding it per hop
    type of a structure, ``amorphous_sigma`` a Gaussian spread per bond touching the
    amorphous phase (see kmc.landscape.pair_energies)."""

    nearest_neighbour: float = 0.0
    hop_type: dict[str, float] | None = None
    amorphous_sigma: float = 0.0

    @property
    def active(self) -> bool:
        values = [self.nearest_neighbour, *(self.hop_type or {}).values()]
        return any(v != 0 for v in values) or self.amorphous_sigma > 0


@dataclass(frozen=True)
class Config:
    """A validated run configuration.

    ``sweep`` holds (dotted key, typed values) pairs in file order; ``source`` (the file path)
    and ``raw`` (the parsed TOML, for provenance) do not take part in ``==`` or ``hash``.
    """

    name: str
    lattice: LatticeConfig
    ions: IonsConfig
    crystal: CrystalConfig
    amorphous: AmorphousConfig
    interface: InterfaceConfig
    microstructure: MicrostructureConfig
    run: RunConfig
    interactions: InteractionsConfig = InteractionsConfig()
    sweep: tuple[tuple[str, tuple], ...] = ()
    source: str = field(default="<config>", compare=False)
    raw: dict = field(default_factory=dict, compare=False, repr=False)


# --------------------------------------------------------------------------------------------
# Value parsers: each takes a TOML value and returns the typed value or raises ValueError


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "a list"
    return repr(value)


def _show(value: object) -> str:
    """A value as the user wrote it (TOML-ish)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_show(v)}" for k, v in value.items()) + " }"
    return repr(value)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _float(value: object) -> float:
    if not _is_number(value):
        raise ValueError(f"must be a number, not {_describe(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"must be a finite number, not {value}") from None
    if not math.isfinite(number):
        raise ValueError(f"must be a finite number, not {value}")
    return number


def _float_in(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    why: str = "",
) -> Callable[[object], float]:
    def parse(value: object) -> float:
        number = _float(value)
        too_low = low is not None and (number <= low if low_open else number < low)
        too_high = high is not None and (number >= high if high_open else number > high)
        if too_low or too_high:
            bounds = _range_text(low, high, low_open, high_open)
            raise ValueError(f"must be {bounds}{why}, not {value}")
        return number

    return parse


def _work_budget(value: object) -> float:
    if _is_number(value) and value == math.inf:
        return math.inf
    return _float_in(1, why=" (a factor of the planned hops; inf lifts the cap)")(value)


def _range_text(low, high, low_open, high_open) -> str:
    if low is not None and high is not None:
        left = "<" if low_open else "≤"
        right = "<" if high_open else "≤"
        return f"{low:g} {left} x {right} {high:g}"
    if low is not None:
        return f"{'>' if low_open else '≥'} {low:g}"
    return f"{'<' if high_open else '≤'} {high:g}"


def _int(
    minimum: int, *, exact: bool = False, maximum: int | None = None, why: str = ""
) -> Callable[[object], int]:
    """An integer ≥ minimum (and ≤ maximum, ``why`` saying why); integral floats (``2e3``)
    are accepted unless ``exact``."""

    def parse(value: object) -> int:
        if isinstance(value, float) and not exact and math.isfinite(value) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be an integer, not {_describe(value)}")
        if value < minimum:
            raise ValueError(f"must be ≥ {minimum}, not {value}")
        if maximum is not None and value > maximum:
            raise ValueError(f"must be ≤ {maximum:.0e}{why}, not {value:.3g}")
        return value

    return parse


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {_describe(value)}")
    return value


def _choice(choices: tuple[str, ...]) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if not isinstance(value, str):
            raise ValueError(f"must be one of {_choices_text(choices)}, not {_describe(value)}")
        if value not in choices:
            hint = _suggest(value, choices)
            raise ValueError(f"must be one of {_choices_text(choices)}, not {value!r}{hint}")
        return value

    return parse


def _choices_text(choices: tuple[str, ...]) -> str:
    return " | ".join(choices)


def _name(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {_describe(value)}")
    if (
        not value.strip()
        or value in (".", "..")
        or any(c in value for c in "/\\")
        or not value.isprintable()
    ):
        raise ValueError(
            f"must be a usable directory name (no '/', '\\' or control characters), not {value!r}"
        )
    if len(value.encode("utf-8")) > MAX_NAME_BYTES:
        raise ValueError(
            f"is {len(value.encode('utf-8'))} bytes long; a directory name may have at most "
            f"{MAX_NAME_BYTES}"
        )
    return value


def _cells(value: object) -> tuple[int, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise ValueError(f"must be a non-empty list of integers, not {_describe(value)}")
    if len(value) > 3:
        raise ValueError(f"must have at most 3 entries (one per axis), not {len(value)}")
    for n in value:
        if isinstance(n, bool) or not isinstance(n, int):
            raise ValueError(f"must be a list of integers, but has {_describe(n)}")
        if n < 2:
            raise ValueError(f"every entry must be ≥ 2 (cells per axis), not {n}")
    return tuple(value)


def _field(value: object) -> float | tuple[float, ...]:
    if isinstance(value, list | tuple):
        if not 1 <= len(value) <= 3:
            raise ValueError(
                f"a field vector needs one component per lattice axis, not {len(value)}"
            )
        return tuple(_float(v) for v in value)
    return _float(value)


def _direction(value: object) -> tuple[float, ...]:
    if not isinstance(value, list | tuple) or not 1 <= len(value) <= 3:
        raise ValueError(f"must be a list of one number per lattice axis, not {_describe(value)}")
    direction = tuple(_float(v) for v in value)
    if not any(direction):
        raise ValueError("must not be the zero vector")
    return direction


def _supercell(value: object) -> tuple[int, ...]:
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise ValueError(
            f"must be a list of 3 integers (cells along a, b, c), not {_describe(value)}"
        )
    for n in value:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"every entry must be an integer ≥ 1, not {_describe(n)}")
    return tuple(value)


def _element(value: object) -> str:
    if not isinstance(value, str) or not value.isalpha() or not 1 <= len(value) <= 3:
        raise ValueError(f'must be an element symbol such as "Na", not {_describe(value)}')
    return value


def _path_text(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise ValueError(f"must be a file path (a string), not {_describe(value)}")
    return value


def _pair_table(value: object) -> dict[str, float]:
    """interactions.hop_type: {label = energy (eV)}, each a finite number."""
    if not isinstance(value, Mapping):
        raise ValueError(f"must be a table {{label = energy}}, not {_describe(value)}")
    table = {}
    for label, energy in value.items():
        try:
            table[str(label)] = _float(energy)
        except ValueError as exc:
            raise _Problem(f"interactions.hop_type.{label}", str(exc)) from None
    return table


def _distribution(value: object) -> Distribution:
    if isinstance(value, list | tuple):
        raise ValueError(
            "must be a number or a {dist = ...} table (one value per axis is allowed only for "
            "crystal.saddle_energy)"
        )
    if isinstance(value, Mapping) and not isinstance(value.get("dist"), str | None):
        raise ValueError(f"dist must be a string, not {_describe(value['dist'])}")
    dist = Distribution.parse(value)
    for name in ("value", "mean", "sigma", "low", "high"):
        if not math.isfinite(getattr(dist, name)):
            raise ValueError(f"{name!r} must be finite")
    if not all(math.isfinite(v) for v in (*dist.values, *dist.weights)):
        raise ValueError("'values' and 'weights' must be finite")
    return dist


def _per_type(value: Mapping) -> dict[str, Distribution]:
    """A table keyed by site-type or hop-type label, one distribution each."""
    if not value:
        raise ValueError("a per-type table needs at least one label")
    out = {}
    for label, item in value.items():
        try:
            out[str(label)] = _distribution(item)
        except ValueError as exc:
            raise ValueError(f"{label}: {exc}") from None
    return out


def _site_energy(value: object) -> Distribution | dict[str, Distribution]:
    if isinstance(value, Mapping) and "dist" not in value:
        return _per_type(value)
    return _distribution(value)


def _saddle(value: object) -> Distribution | tuple[Distribution, ...] | dict[str, Distribution]:
    if isinstance(value, Mapping) and "dist" not in value:
        return _per_type(value)
    if isinstance(value, list | tuple):
        if not 1 <= len(value) <= 3:
            raise ValueError(
                f"a per-axis list must have one entry per lattice axis, not {len(value)}"
            )
        parsed = []
        for axis, item in enumerate(value):
            try:
                parsed.append(_distribution(item))
            except ValueError as exc:
                raise ValueError(f"axis {axis}: {exc}") from None
        return tuple(parsed)
    return _distribution(value)


# --------------------------------------------------------------------------------------------
# The schema: table → key → (parser, default). _REQUIRED marks required keys.

_REQUIRED = object()


@dataclass(frozen=True)
class _Key:
    parse: Callable[[object], object]
    default: object = _REQUIRED


_TOP_KEYS = {"name": _Key(_name)}
_SCHEMA: dict[str, dict[str, _Key]] = {
    "lattice": {
        "kind": _Key(_choice((*LATTICE_KINDS, STRUCTURE))),
        "cells": _Key(_cells, None),
        "hop_distance": _Key(
            _float_in(*HOP_DISTANCE_RANGE, why=" Å (an ionic hop is 1-10 Å)"), None
        ),
        "blocked_fraction": _Key(_float_in(0, 1, high_open=True), 0.0),
        "structure": _Key(_path_text, None),
        "mobile": _Key(_element, None),
        "cutoff": _Key(_float_in(0, low_open=True), None),
        "supercell": _Key(_supercell, None),
    },
    "ions": {
        "species": _Key(_choice(SPECIES), "Li"),
        "concentration": _Key(_float_in(0, 1, low_open=True, high_open=True), None),
        "count": _Key(_int(1), None),
        "exclusion": _Key(_bool, True),
    },
    "crystal": {
        "attempt_frequency": _Key(
            _float_in(*ATTEMPT_FREQUENCY_RANGE, why=" Hz (a lattice vibration: 1e12-1e14 Hz)"), 1e13
        ),
        "site_energy": _Key(_site_energy, 0.0),
        "saddle_energy": _Key(_saddle),
    },
    "amorphous": {
        "site_energy": _Key(_distribution, 0.0),
        "saddle_energy": _Key(_distribution),
    },
    "interface": {
        "saddle_energy": _Key(_distribution, None),
    },
    "microstructure": {
        "kind": _Key(_choice(MICROSTRUCTURE_KINDS), "random"),
        "amorphous_fraction": _Key(_float_in(0, 1), 0.0),
        "correlation_length": _Key(_float_in(0, low_open=True), None),
        "grain_diameter": _Key(_float_in(0, low_open=True), None),
    },
    "run": {
        "method": _Key(_choice(METHODS), "kmc"),
        "temperature": _Key(_float_in(0, low_open=True), 300.0),
        "hops_per_ion": _Key(_int(1, maximum=MAX_HOPS_PER_ION, why=_HOPS_WHY), 2000),
        "equilibration_hops_per_ion": _Key(_int(0, maximum=MAX_HOPS_PER_ION, why=_HOPS_WHY), 200),
        "frames": _Key(_int(8, maximum=MAX_FRAMES, why=" (frames are stored)"), 100),
        "replicas": _Key(_int(1), 4),
        "seed": _Key(_int(0, exact=True), 0),
        "field": _Key(_field, 0.0),
        "field_direction": _Key(_direction, None),
        "work_budget": _Key(_work_budget, None),
    },
    "interactions": {
        "nearest_neighbour": _Key(_float, 0.0),
        "hop_type": _Key(_pair_table, None),
        "amorphous_sigma": _Key(_float_in(0), 0.0),
    },
}
_REQUIRED_TABLES = ("lattice", "ions", "crystal", "amorphous")
_TABLES = (*_SCHEMA, "sweep")
_DISTRIBUTION_KEYS = {
    "crystal.site_energy",
    "crystal.saddle_energy",
    "amorphous.site_energy",
    "amorphous.saddle_energy",
    "interface.saddle_energy",
}
#: every dotted key of the schema (the top-level ``name`` included), in schema order
ALL_KEYS: tuple[str, ...] = (
    *_TOP_KEYS,
    *(f"{table}.{key}" for table, keys in _SCHEMA.items() for key in keys),
)


def _key_spec(dotted: str) -> _Key:
    if dotted in _TOP_KEYS:
        return _TOP_KEYS[dotted]
    table, key = dotted.split(".", 1)
    return _SCHEMA[table][key]


def _suggest(word: str, candidates) -> str:
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _unknown_key_hint(table: str | None, key: str) -> str:
    """Closest valid key in the same table, else the same key where it does belong."""
    here = list(_SCHEMA[table]) if table else [*_TOP_KEYS, *_TABLES]
    hint = _suggest(key, here)
    if hint:
        return hint
    elsewhere = [k for k in ALL_KEYS if k.rsplit(".", 1)[-1] == key and k != f"{table}.{key}"]
    if elsewhere == ["name"]:
        return " (did you mean the top-level 'name'? it must come before the first [table])"
    if elsewhere:
        return f" (did you mean {elsewhere[0]!r}?)"
    if table is None:
        tables = _suggest(key, _TABLES)
        if tables:
            return tables
    return ""


# --------------------------------------------------------------------------------------------
# Counting sites and ions


def site_count(lattice: LatticeConfig) -> int:
    """Number of lattice sites (exact Python int, never overflows)."""
    if lattice.kind == STRUCTURE:
        return lattice.read_structure().n_sites * math.prod(lattice.supercell)
    return lattice_site_count(lattice.kind, lattice.cells)


def coordination(lattice: LatticeConfig) -> int:
    """Hop directions per site (the largest, for a structure)."""
    if lattice.kind == STRUCTURE:
        return max(len(hops) for hops in lattice.read_structure().hops)
    return COORDINATION[lattice.kind]


def free_site_count(lattice: LatticeConfig) -> int:
    """Sites that are not blocked: N − round(blocked_fraction · N), as kmc.landscape blocks."""
    n = site_count(lattice)
    return n - round(lattice.blocked_fraction * n)


def ion_count(config: Config) -> int:
    """Number of mobile ions: ``count``, or round(concentration · free sites)."""
    if config.ions.count is not None:
        return config.ions.count
    return round(config.ions.concentration * free_site_count(config.lattice))


# --------------------------------------------------------------------------------------------
# Building one (sweep-free) Config from a plain dict


def _table(data: Mapping, table: str) -> Mapping:
    value = data.get(table, {})
    if not isinstance(value, Mapping):
        raise _Problem(table, f"must be a table [{table}], not {_describe(value)}")
    for key in value:
        if key not in _SCHEMA[table]:
            raise _Problem(f"{table}.{key}", "unknown key" + _unknown_key_hint(table, key))
    return value


def _value(table: str, values: Mapping, key: str) -> Any:
    spec = _SCHEMA[table][key]
    if key not in values:
        if spec.default is _REQUIRED:
            raise _Problem(f"{table}.{key}", "missing (required)")
        return None if spec.default is None else spec.parse(spec.default)
    try:
        return spec.parse(values[key])
    except ValueError as exc:
        raise _Problem(f"{table}.{key}", str(exc)) from None


def _check_unknown_top_level(data: Mapping) -> None:
    for key in data:
        if key not in _TOP_KEYS and key not in _TABLES:
            raise _Problem(key, "unknown key" + _unknown_key_hint(None, key))


def _check_top_level(data: Mapping) -> None:
    _check_unknown_top_level(data)
    for table in _REQUIRED_TABLES:
        if table not in data:
            raise _Problem(table, f"missing required table [{table}]")


def _section(data: Mapping, table: str, kind: type, shared: dict | None = None):
    """One table's dataclass, every key of the table's schema parsed and checked.

    ``shared`` (sweep points) maps a table name to (table dict, its dataclass) as first
    parsed: a point whose table is that very dict (not swept: see :func:`_with_dotted`)
    reuses the dataclass instead of parsing the table again."""
    if shared is not None:
        hit = shared.get(table)
        if hit is not None and hit[0] is data.get(table):
            return hit[1]
    values = _table(data, table)
    section = kind(**{key: _value(table, values, key) for key in _SCHEMA[table]})
    if shared is not None and table not in shared and table in data:
        shared[table] = (data[table], section)
    return section


def _lattice_section(data: Mapping, source: str, shared: dict | None = None) -> LatticeConfig:
    """The [lattice] table: an ideal lattice (kind, cells, hop_distance) or a structure
    (structure, mobile, cutoff, supercell), whose file is read here so that every later check
    (site counts, per-type energy tables) sees its sites and hop types."""
    if shared is not None and "lattice" in shared and shared["lattice"][0] is data.get("lattice"):
        return shared["lattice"][1]  # checked, its structure read, as first parsed
    lattice = _parse_lattice_section(data, source)
    if shared is not None and "lattice" not in shared and "lattice" in data:
        shared["lattice"] = (data["lattice"], lattice)
    return lattice


def _parse_lattice_section(data: Mapping, source: str) -> LatticeConfig:
    lattice = _section(data, "lattice", LatticeConfig)
    given = data.get("lattice", {})
    if lattice.kind != STRUCTURE:
        for key in ("cells", "hop_distance"):
            if key not in given:
                raise _Problem(f"lattice.{key}", "missing (required)")
        for key in _STRUCTURE_KEYS:
            if key in given:
                raise _Problem(f"lattice.{key}", 'only used with kind = "structure"')
        dim = DIMENSION[lattice.kind]
        if len(lattice.cells) != dim:
            raise _Problem(
                "lattice.cells",
                f"needs {dim} entr{'y' if dim == 1 else 'ies'} for a {lattice.kind} lattice "
                f"(one per axis), not {len(lattice.cells)}",
            )
        return lattice
    for key in ("cells", "hop_distance"):
        if key in given:
            raise _Problem(
                f"lattice.{key}",
                'not used with kind = "structure" (the structure gives the cell and hops; '
                "repeat it with lattice.supercell)",
            )
    for key in _STRUCTURE_KEYS:
        if key not in given:
            raise _Problem(f"lattice.{key}", 'missing (required with kind = "structure")')
    found = _find_structure(lattice.structure, source)
    lattice = replace(lattice, structure_file=found)
    try:
        crystal = lattice.read_structure()
        crystal.lattice(lattice.supercell)  # a supercell too small to hold every hop
    except StructureError as exc:
        raise _Problem(f"lattice.{exc.key}", str(exc)) from None
    return lattice


def _find_structure(path: str, source: str) -> str:
    """The structure file a config names: an absolute path, or one relative to the config
    file's directory; failing that, a file of the same name beside the config (where a run
    directory keeps its copy)."""
    written = Path(path).expanduser()
    base = Path(source).parent if not source.startswith("<") else Path.cwd()
    candidate = written if written.is_absolute() else base / written
    if not candidate.exists() and (base / written.name).is_file():
        candidate = base / written.name
    if not candidate.is_file():
        raise _Problem(
            "lattice.structure",
            f"{path}: no such file" + ("" if written.is_absolute() else f" (looked in {base})"),
        )
    return str(candidate.resolve())


def _check_per_type(key: str, setting: object, labels: tuple[str, ...], what: str) -> None:
    """A per-type energy table must name every type of the lattice, and only those."""
    if not isinstance(setting, dict):
        return
    if labels == ("all",):
        raise _Problem(key, f'a table per {what} needs lattice.kind = "structure"')
    for label in setting:
        if label not in labels:
            raise _Problem(
                f"{key}.{label}",
                f"unknown {what}" + _suggest(label, labels) + f" (the structure has "
                f"{', '.join(labels)}; see kmc inspect)",
            )
    missing = [label for label in labels if label not in setting]
    if missing:
        raise _Problem(key, f"missing {what}s {', '.join(missing)} (give one value per {what})")


#: Largest q E a / kT accepted (a the longest hop): beyond it one hop's bias exceeds e^20,
#: far outside any experiment, and the usual cause is a unit mistake (V/m or V/Å for V/cm).
MAX_FIELD_BIAS = 20.0


def _check_field(run: RunConfig, lattice: LatticeConfig, dim: int) -> None:
    if run.field == 0.0 and run.field_direction is None:
        return  # no field (the common case, and cheap for sweeps of 10^5 points)
    if isinstance(run.field, tuple) and len(run.field) != dim:
        raise _Problem(
            "run.field", f"a field vector needs {dim} components (one per lattice axis), "
            f"not {len(run.field)}"
        )  # fmt: skip
    if run.field_direction is not None and len(run.field_direction) != dim:
        raise _Problem(
            "run.field_direction",
            f"needs {dim} components (one per lattice axis), not {len(run.field_direction)}",
        )
    field = run.field_vector(dim)
    if not field.any():
        return
    if run.method == "network":
        raise _Problem(
            "run.field",
            'run.method = "network" solves for equilibrium diffusion; a field drives the ions '
            'out of equilibrium: use run.method = "kmc"',
        )
    longest = lattice.build().hop_vectors if lattice.kind == STRUCTURE else None
    hop = (
        float(np.linalg.norm(longest, axis=-1).max()) if longest is not None
        else lattice.hop_distance
    )  # fmt: skip
    bias = (
        float(np.linalg.norm(field))
        * VOLT_PER_CM_TO_EV_PER_ANGSTROM
        * hop
        / (BOLTZMANN_EV * run.temperature)
    )
    if bias > MAX_FIELD_BIAS:
        raise _Problem(
            "run.field",
            f"q E a / kT = {bias:.3g} > {MAX_FIELD_BIAS:g} for the longest hop ({hop:.3g} Å) at "
            f"{run.temperature:g} K: a unit mistake? (the field is in V/cm)",
        )


def _energy_bounds(setting) -> tuple[float, float]:
    """The lowest and highest energy a setting (a distribution, a per-axis list or a
    per-type table) gives, eV; a normal distribution's ±8 σ."""
    if isinstance(setting, dict):
        setting = tuple(setting.values())
    if isinstance(setting, tuple):
        bounds = [_energy_bounds(item) for item in setting]
        return min(b[0] for b in bounds), max(b[1] for b in bounds)
    kind = setting.kind
    if kind == "constant":
        return setting.value, setting.value
    if kind == "normal":
        return setting.mean - 8 * setting.sigma, setting.mean + 8 * setting.sigma
    if kind == "uniform":
        return setting.low, setting.high
    return min(setting.values), max(setting.values)


def _check_rates(crystal, amorphous, interface, micro, run) -> None:
    """Refuse a landscape on which no hop can happen in double precision: its lowest
    possible barrier, max(saddle, site) − site ≥ max(0, lowest saddle − highest site energy),
    over kT beyond :data:`MAX_BARRIER_OVER_KT` (every rate ν exp(−barrier/kT) underflows)."""
    phases = []
    if micro.amorphous_fraction < 1:
        phases.append((crystal.saddle_energy, crystal.site_energy))
    if micro.amorphous_fraction > 0:
        phases.append((amorphous.saddle_energy, amorphous.site_energy))
    if 0 < micro.amorphous_fraction < 1:
        phases.append((interface.saddle_energy or amorphous.saddle_energy, amorphous.site_energy))
    site_top = max(_energy_bounds(site)[1] for _, site in phases)
    lowest = max(0.0, min(_energy_bounds(saddle)[0] for saddle, _ in phases) - site_top)
    exponent = lowest / (BOLTZMANN_EV * run.temperature)
    if exponent > MAX_BARRIER_OVER_KT:
        raise _Problem(
            "run.temperature",
            f"at {run.temperature:g} K even the lowest barrier ({lowest:.3g} eV) gives a hop rate "
            f"ν·exp(−{exponent:.3g}), which underflows to 0: no ion can move (raise the "
            "temperature or lower the barriers)",
        )


def _build(
    data: Mapping, default_name: str, source: str = "<config>", shared: dict | None = None
) -> Config:
    """A sweep-free Config from a plain nested dict (the ``sweep`` table is ignored here);
    ``shared`` reuses the tables a sweep point shares with the others (see :func:`_section`)."""
    _check_top_level(data)
    if "name" in data:
        try:
            name = _name(data["name"])
        except ValueError as exc:
            raise _Problem("name", str(exc)) from None
    else:
        name = default_name

    lattice = _lattice_section(data, source, shared)
    dim = lattice.dim

    ions = _section(data, "ions", IonsConfig, shared)
    free = free_site_count(lattice)
    if ions.concentration is not None and ions.count is not None:
        raise _Problem("ions.count", "give either ions.concentration or ions.count, not both")
    if ions.concentration is None and ions.count is None:
        raise _Problem("ions.concentration", "missing: give ions.concentration or ions.count")
    if ions.count is not None and ions.exclusion and ions.count > free:
        # independent walkers (exclusion = false) may outnumber the sites
        raise _Problem("ions.count", f"{ions.count} ions do not fit on {free} free sites")
    if ions.concentration is not None and round(ions.concentration * free) < 1:
        raise _Problem(
            "ions.concentration",
            f"{ions.concentration} of {free} free sites rounds to no ion at all",
        )
    if free < 2:
        raise _Problem(
            "lattice.blocked_fraction",
            f"leaves {free} free site(s) of {site_count(lattice)}: no hop is possible",
        )
    if ions.exclusion:
        n_ions = ions.count if ions.count is not None else round(ions.concentration * free)
        if n_ions >= free:
            raise _Problem(
                "ions.count" if ions.count is not None else "ions.concentration",
                f"{n_ions} ions fill all {free} free sites: with site exclusion no ion can move "
                "(leave at least one site free)",
            )

    crystal = _section(data, "crystal", CrystalConfig, shared)
    if lattice.kind == STRUCTURE:
        found = lattice.read_structure()
        site_labels, hop_labels = found.site_type_labels, found.hop_type_labels
    else:
        site_labels = hop_labels = ("all",)
    _check_per_type("crystal.site_energy", crystal.site_energy, site_labels, "site type")
    _check_per_type("crystal.saddle_energy", crystal.saddle_energy, hop_labels, "hop type")
    if isinstance(crystal.saddle_energy, tuple) and len(crystal.saddle_energy) != dim:
        raise _Problem(
            "crystal.saddle_energy",
            f"a per-axis list needs {dim} entries for a {lattice.kind} lattice, "
            f"not {len(crystal.saddle_energy)}",
        )

    amorphous = _section(data, "amorphous", AmorphousConfig, shared)
    interface = _section(data, "interface", InterfaceConfig, shared)

    micro = _section(data, "microstructure", MicrostructureConfig, shared)
    if micro.kind == "correlated" and micro.correlation_length is None:
        raise _Problem(
            "microstructure.correlation_length", "missing: required when kind = 'correlated'"
        )
    if micro.kind == "grains" and micro.grain_diameter is None:
        raise _Problem("microstructure.grain_diameter", "missing: required when kind = 'grains'")

    run = _section(data, "run", RunConfig, shared)
    _check_field(run, lattice, dim)
    _check_rates(crystal, amorphous, interface, micro, run)
    if run.method == "network" and ions.exclusion:
        # the resistor network solves for one ion alone: it would silently drop the blocking
        raise _Problem(
            "ions.exclusion",
            'run.method = "network" gives the dilute-limit (single-ion) D; it cannot model '
            "site exclusion: set ions.exclusion = false",
        )

    interactions = _section(data, "interactions", InteractionsConfig)
    if interactions.hop_type:
        for label in interactions.hop_type:
            if label not in hop_labels or hop_labels == ("all",):
                hint = f" (the structure has {', '.join(hop_labels)})"
                if hop_labels == ("all",):
                    hint = " (a table per hop type needs a structure; use nearest_neighbour)"
                raise _Problem(
                    f"interactions.hop_type.{label}",
                    "unknown hop type" + _suggest(label, hop_labels) + hint,
                )
    if interactions.active and not ions.exclusion:
        raise _Problem("interactions", "interactions need ions.exclusion = true")
    if interactions.active and run.method == "network":
        raise _Problem("interactions", 'interactions need run.method = "kmc"')

    return Config(
        name=name,
        lattice=lattice,
        ions=ions,
        crystal=crystal,
        amorphous=amorphous,
        interface=interface,
        microstructure=micro,
        run=run,
        interactions=interactions,
    )


def plain(value: object) -> Any:
    """A typed config value as plain JSON/TOML data (tuples → lists, distributions → dicts)."""
    if isinstance(value, Distribution):
        params = _DIST_PARAMETERS[value.kind]
        return {"dist": value.kind} | {p: plain(getattr(value, p)) for p in params}
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    if isinstance(value, dict):  # a per-type energy table
        return {k: plain(v) for k, v in value.items()}
    return value


def resolved_dict(config: Config) -> dict:
    """The fully resolved config as a plain, JSON-serializable nested dict.

    Defaults are filled in; distributions are ``{"dist": kind, <params>}``; keys whose value
    is None (the unused one of concentration/count, an absent interface saddle or microstructure
    length) are left out. ``parse_config(resolved_dict(c)) == c``.
    """

    def table(obj) -> dict:
        return {
            key: plain(getattr(obj, key))
            for key, spec in obj.__dataclass_fields__.items()
            if getattr(obj, key) is not None and spec.compare
        }

    return {
        "name": config.name,
        "lattice": table(config.lattice),
        "ions": table(config.ions),
        "crystal": table(config.crystal),
        "amorphous": table(config.amorphous),
        "interface": table(config.interface),
        "microstructure": table(config.microstructure),
        "run": table(config.run),
        # only when set, so that the resolved configs of earlier runs stay as they were
        **({"interactions": table(config.interactions)} if config.interactions.active else {}),
        "sweep": {key: [plain(v) for v in values] for key, values in config.sweep},
    }


def comparable_dict(config: Config) -> dict:
    """What makes two configs the same run: :func:`resolved_dict` without the name (it only
    picks the default directory), with the sweep as an ordered list of ``[key, values]``
    (the order of the keys numbers the tasks, so a reordered sweep is another run) and a
    structure file by the SHA-256 of its content, not its path."""
    described = resolved_dict(config)
    described.pop("name", None)
    described["sweep"] = [[key, [plain(v) for v in values]] for key, values in config.sweep]
    if config.lattice.structure_file is not None:
        content = Path(config.lattice.structure_file).read_bytes()
        described["lattice"]["structure"] = hashlib.sha256(content).hexdigest()
    return described


def config_digest(config: Config) -> str:
    """The SHA-256 (hex) of :func:`comparable_dict`: the identity of a run, which every
    task file of the run carries (``run_digest``)."""
    text = json.dumps(comparable_dict(config), sort_keys=True, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()
