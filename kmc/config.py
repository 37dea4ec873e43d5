"""Run configuration: one TOML file → validated, typed, frozen dataclasses; sweeps → tasks.

A value marked *dist* is a distribution (eV): a number (a constant) or an inline table
``{dist = "normal", mean, sigma}``, ``{dist = "uniform", low, high}``,
``{dist = "discrete", values, weights}`` (see :mod:`kmc.distributions`). Unknown tables and
keys are errors; integers are accepted where a float is expected, booleans never count as
numbers, and every float must be finite.

=========================================  ==============  =========  ================  ==========
key                                        type            unit       default           required
=========================================  ==============  =========  ================  ==========
``name``                                   string          —          file stem         no
``lattice.kind``                           string          —          —                 yes
``lattice.cells``                          list of int     cells      —                 ideal
``lattice.hop_distance``                   float           Å          —                 ideal
``lattice.structure``                      string (path)   —          —                 structure
``lattice.mobile``                         string          —          —                 structure
``lattice.cutoff``                         float           Å          —                 structure
``lattice.supercell``                      list of 3 int   cells      —                 structure
``lattice.blocked_fraction``               float           —          0.0               no
``ions.species``                           string          —          "Li"              no
``ions.concentration``                     float           —          —                 one of
``ions.count``                             int             ions       —                 one of
``ions.exclusion``                         bool            —          true              no
``crystal.attempt_frequency``              float           Hz         1e13              no
``crystal.site_energy``                    dist or table   eV         0.0               no
``crystal.saddle_energy``                  dist/list/table eV         —                 yes
``amorphous.site_energy``                  dist            eV         0.0               no
``amorphous.saddle_energy``                dist            eV         —                 yes
``interface.saddle_energy``                dist            eV         amorphous saddle  no
``microstructure.kind``                    string          —          "random"          no
``microstructure.amorphous_fraction``      float           —          0.0               no
``microstructure.correlation_length``      float           Å          —                 correlated
``microstructure.grain_diameter``          float           Å          —                 grains
``run.method``                             string          —          "kmc"             no
``run.temperature``                        float           K          300.0             no
``run.hops_per_ion``                       int             hops       2000              no
``run.equilibration_hops_per_ion``         int             hops       200               no
``run.frames``                             int             frames     100               no
``run.replicas``                           int             —          4                 no
``run.seed``                               int             —          0                 no
``run.field``                              float or list   V/cm       0.0               no
``run.field_direction``                    list            —          first axis        no
``run.work_budget``                        float ≥ 1       —          100               no
``interactions.nearest_neighbour``         float           eV         0.0               yes
``interactions.hop_type``                  table           eV         (none)            no
``interactions.amorphous_sigma``           float ≥ 0       eV         0.0               yes
``sweep."<dotted key>"``                   list            —          (no sweep)        no
=========================================  ==============  =========  ================  ==========

The tables ``[lattice]``, ``[ions]``, ``[crystal]`` and ``[amorphous]`` are required;
``[interface]``, ``[microstructure]``, ``[run]``, ``[interactions]`` and ``[sweep]`` may be
left out.

Allowed values:

- ``lattice.kind``: chain | square | triangular | honeycomb | cubic | bcc | fcc (the ideal
  lattices, which need ``cells`` and ``hop_distance``) | structure (which needs the four
  structure keys and refuses the other two).
- ``lattice.cells``: one integer ≥ 2 per lattice axis (1 for chain, 2 for square, triangular
  and honeycomb, 3 for cubic, bcc and fcc), counted in conventional cells.
- ``lattice.hop_distance`` > 0; ``0 ≤ lattice.blocked_fraction < 1`` (round(f·N) of the N
  sites are blocked).
- ``lattice.structure``: a file ASE reads (CIF, POSCAR, extxyz, ...), absolute or relative to
  the config file's directory (else a file of that name beside the config: a run directory
  keeps its copy there); ``lattice.mobile``: the element whose sites (with vacancy sites ``X``
  and sites partly occupied by it) form the hop network; ``lattice.cutoff`` > 0: the longest
  hop, Å; ``lattice.supercell``: cells along a, b, c (≥ 1 each; a hop may not join a site to
  its own image). See :mod:`kmc.structure`.
- ``ions.species``: Li | Na (charge +1 e). Exactly one of ``ions.concentration``
  (``0 < c < 1``, a fraction of the free sites: round(c·N_free) ions, which must be ≥ 1) and
  ``ions.count`` (``1 ≤ n ≤ N_free``; any n ≥ 1 for independent walkers) is given.
- ``crystal.saddle_energy`` may be a list of one dist per lattice axis (its length must equal
  the lattice dimension); ``crystal.attempt_frequency`` > 0 is the one ν of the landscape.
- On a structure, ``crystal.saddle_energy`` may be a table with one dist per hop type
  (``{H1 = 0.27, H2 = 2.9, ...}``) and ``crystal.site_energy`` one with a dist per site type
  (``{Na1 = 0.0}``), labels as ``kmc inspect`` prints them; a table must name every type.
- ``microstructure.kind``: random | correlated | grains; ``0 ≤ amorphous_fraction ≤ 1``;
  ``correlation_length`` > 0 is required for correlated, ``grain_diameter`` > 0 for grains
  (each may be given, and is then checked, for the other kinds too).
- ``run.method``: kmc | network (network solves for a single ion, so it requires
  ``ions.exclusion = false``); ``temperature`` > 0; ``hops_per_ion`` ≥ 1;
  ``equilibration_hops_per_ion`` ≥ 0; ``frames`` ≥ 8; ``replicas`` ≥ 1; ``seed`` ≥ 0 (an
  integer written exactly; the default 0 keeps runs reproducible but makes two configs that
  leave it out share their random numbers — give each study its own seed). Integer keys other
  than ``seed`` and ``cells`` also accept integral floats such as ``2e3``.
- ``run.field``: an applied electric field in V/cm, a magnitude along
  ``run.field_direction`` (any non-zero vector, one component per lattice axis; default the
  first axis) or a vector of one component per axis. A hop of vector d then has its rate
  multiplied by exp(q E·d / 2kT). Refused for ``run.method = "network"`` and when
  q |E| a / kT > 20 for the longest hop a (a unit mistake).
- ``run.work_budget``: each kernel phase of a task (the two halves of the equilibration and
  the production; for independent walkers the whole run) may make at most this many times
  its planned hops (ions × hops per ion of the phase) in attempts, null events included;
  ``inf`` lifts the cap. A task that runs out is stored with ``status = "budget exceeded"``,
  its reason, and its trajectory up to where it stopped, and is not diffusive
  (:func:`kmc.kernel.simulate`).
- ``interactions.nearest_neighbour``: pair energy (eV, > 0 repulsion) of two ions on
  neighbouring (hop-neighbour) sites, on every bond; ``interactions.hop_type`` a table
  {hop type label = eV} overriding it per hop type of a structure;
  ``interactions.amorphous_sigma`` a Gaussian spread per bond with an end in the amorphous
  phase. Rates Γ⁰ exp(−ΔE_int / 2kT) (docs/physics.md). Need ``ions.exclusion = true`` and
  ``run.method = "kmc"``.

``[sweep]`` maps quoted dotted keys to non-empty lists, e.g.
``"microstructure.amorphous_fraction" = [0.0, 0.5, 1.0]``. Any key of the table above may be
swept except ``name``, ``run.replicas`` and ``run.seed``; so may one parameter of a
distribution written as a table (``"amorphous.saddle_energy.sigma" = [0.05, 0.1]``), or one
type's entry of a per-type table (``"crystal.saddle_energy.H1" = [0.3, 0.5]``). Every
swept value is validated like the scalar it replaces, and every point of the sweep is checked
as a whole (e.g. ``cells`` against ``kind``). The fields of :class:`Config` hold the file's own
values; a swept key the file leaves out takes its first swept value there.

Tasks are the Cartesian product of the sweep lists in file order (the first key varies
slowest) with replicas innermost. Tasks that differ only in ``run.*`` or ``ions.*`` keys share
the landscape of their replica; ions and kernel stream are each task's own (see
:func:`expand_tasks`).

Memory: :func:`task_memory` estimates the peak memory of one task above the interpreter's
own (bytes)::

    kmc:      N_sites · (300 + 100 z)  +  N_ions · (96 · frames + 200)
    network:  N_sites · (600 + 180 z)  [+ 16 KiB per site when a 3D system is small enough
              to go to the direct solver first, 2 KiB in 2D: SuperLU's fill-in, from the
              0.5 GB measured at 32³; not measured by the test]

measured (a test checks within 1.5×) as the growth of the peak resident set of a process
running one task, building its landscape, percolation observables, kernel run, estimators
and task file: on cubic lattices (z = 6) at 32³ and 64³ a site cost ~900 B (kMC) and
~1.6 KiB (the network solve: the conductance matrix, its scaled copy, the AMG hierarchy
and conjugate gradients), an ion and frame ~94 B (the trajectory, its padded copy for the
file, the estimators' work arrays). A network solve whose iterative solver fails and that
falls back to the direct one (3D systems up to 40 000 unknowns) can need more than this.
:func:`estimate_memory` is the largest over the sweep points. The check
(:func:`process_memory`) adds :data:`PROCESS_BASELINE` for the interpreter and its
libraries and multiplies by the ranks sharing a node under MPI (:func:`ranks_per_node`,
from the launcher's environment); a config needing more than 80 % of the physical memory is
refused on ``lattice.cells`` before anything is allocated.

Disk: :func:`task_disk` bounds one task file, uncompressed, by (bytes)::

    F · N_ions · (3·8 + 4)  +  F · (8 + 8 + 3·8)  +  N_ions  +  64 KiB

(per frame and ion three float64 coordinates — H5MD positions always have three — and an
int32 site; per frame a step, a time and a box; per ion a species byte; 64 KiB of metadata,
parameters and observables), with F = ``run.frames``, or 0 for ``run.method = "network"``.
The files are gzip-compressed, so they are usually smaller.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import itertools
import json
import math
import os
import tomllib
from collections.abc import Callable, Iterator, Mapping
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

__all__ = [
    "AmorphousConfig",
    "Config",
    "ConfigError",
    "CrystalConfig",
    "InterfaceConfig",
    "IonsConfig",
    "LatticeConfig",
    "MicrostructureConfig",
    "RunConfig",
    "Task",
    "available_memory",
    "comparable_dict",
    "config_digest",
    "estimate_memory",
    "expand_tasks",
    "format_bytes",
    "free_site_count",
    "ion_count",
    "landscape_keys",
    "load_config",
    "parse_config",
    "plain",
    "process_memory",
    "ranks_per_node",
    "resolved_dict",
    "site_count",
    "task_disk",
    "task_memory",
]

SPECIES = ("Li", "Na")
#: ``lattice.kind`` of a lattice read from a crystal structure file.
STRUCTURE = "structure"
_STRUCTURE_KEYS = ("structure", "mobile", "cutoff", "supercell")
MICROSTRUCTURE_KINDS = ("random", "correlated", "grains")
METHODS = ("kmc", "network")
MEMORY_FRACTION = 0.8
#: Longest run name in bytes (it names the run directory; file systems allow 255).
MAX_NAME_BYTES = 255
#: Accepted lattice.hop_distance (Å) and crystal.attempt_frequency (Hz): wide around the
#: physical values, narrow enough that no estimator over- or underflows.
HOP_DISTANCE_RANGE = (1e-3, 1e3)
ATTEMPT_FREQUENCY_RANGE = (1e3, 1e20)
#: Most hops per ion (hop counters and run lengths stay exact 64-bit integers).
MAX_HOPS_PER_ION = 10**12
#: ``run.work_budget`` when not given: a kernel phase may make 100 × its planned hops.
DEFAULT_WORK_BUDGET = 100.0
_HOPS_WHY = " (hop counts must stay exact 64-bit integers)"
MAX_FRAMES = 10**6
#: Largest (lowest barrier) / kT for which a hop still happens: exp(-690) ≈ 1e-300, just
#: above the smallest double; beyond it every rate underflows to 0.
MAX_BARRIER_OVER_KT = 690.0
#: First spawn-key entry of the landscape seeds and of the task (ions, kernel) seeds.
LANDSCAPE_STREAM, TASK_STREAM = 0, 1
_TASK_ONLY_PREFIXES = ("run.", "ions.", "interactions.")
UNSWEEPABLE = {
    "name": "the run name cannot be swept",
    "run.replicas": "cannot be swept: every sweep point gets run.replicas replicas",
    "run.seed": "cannot be swept: every task already draws its own seeds from run.seed",
}


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
    # × the planned hops of each kernel phase; None: DEFAULT_WORK_BUDGET (left out of the
    # resolved config, so that runs made before the key existed keep their identity)
    work_budget: float | None = None

    @property
    def budget(self) -> float:
        """The work budget in force (``work_budget``, or :data:`DEFAULT_WORK_BUDGET`)."""
        return DEFAULT_WORK_BUDGET if self.work_budget is None else self.work_budget

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


# --------------------------------------------------------------------------------------------
# Memory


#: Resident memory of a kmc process before its first task (python, numpy, scipy, h5py):
#: measured 84 MiB; an allowance.
PROCESS_BASELINE = 100 * 1024**2
_LAUNCHER_LOCAL_SIZE = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCAL_NRANKS")


def task_memory(config: Config) -> int:
    """Peak bytes one task of a sweep-free config needs above the interpreter's own
    (formula and measurements in the module docs)."""
    sites = site_count(config.lattice)
    z = coordination(config.lattice)
    if config.run.method == "network":
        need = sites * (600 + 180 * z)
        dim = config.lattice.dim
        if dim >= 2 and sites <= _direct_max_unknowns(dim):
            need += sites * (16 if dim == 3 else 2) * 1024
        return need
    ions = ion_count(config)
    return sites * (300 + 100 * z) + ions * (96 * config.run.frames + 200)


def _direct_max_unknowns(dim: int) -> int:
    from kmc import network  # the solver's own limits (imported late: scipy)

    return network.DIRECT_MAX_UNKNOWNS[dim]


def ranks_per_node() -> int:
    """MPI ranks on this node, from the launcher's environment (MPICH/Hydra, Open MPI,
    Slurm); 1 without a launcher."""
    for variable in _LAUNCHER_LOCAL_SIZE:
        if os.environ.get(variable, "").isdigit():
            return max(1, int(os.environ[variable]))
    tasks = os.environ.get("SLURM_NTASKS_PER_NODE", "")
    if tasks.isdigit():
        return max(1, int(tasks))
    if any(v in os.environ for v in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")):
        size = os.environ.get("PMI_SIZE") or os.environ.get("OMPI_COMM_WORLD_SIZE") or "1"
        return max(1, int(size)) if size.isdigit() else 1  # all on this node, at worst
    return 1


def process_memory(task_bytes: int, ranks: int | None = None) -> int:
    """What a node needs for tasks of ``task_bytes``: (interpreter + task) × ranks."""
    ranks = ranks_per_node() if ranks is None else ranks
    return ranks * (PROCESS_BASELINE + task_bytes)


#: Bytes of a task file besides its per-frame and per-ion arrays (HDF5 and H5MD metadata,
#: the parameters, the observables); an allowance, larger than any file measured so far.
TASK_FILE_OVERHEAD = 64 * 1024


def task_disk(config: Config) -> int:
    """Bytes of one task file of a sweep-free config, uncompressed (an upper bound: the
    files are gzip-compressed) — formula in the module docs. ``run.method = "network"``
    stores no frames."""
    frames = 0 if config.run.method == "network" else config.run.frames
    ions = ion_count(config)
    # positions are stored with 3 coordinates whatever the lattice dimension (H5MD)
    return frames * ions * (3 * 8 + 4) + frames * (8 + 8 + 3 * 8) + ions + TASK_FILE_OVERHEAD


def estimate_memory(config: Config) -> int:
    """Bytes one task needs at most, over all sweep points (formula in the module docs)."""
    return max(task_memory(point_config) for _, point_config in _points(config))


def available_memory() -> int | None:
    """Physical memory in bytes, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _check_memory(config: Config, need: int) -> None:
    total = available_memory()
    ranks = ranks_per_node()
    node = process_memory(need, ranks)
    if total is None or total <= 0 or node <= MEMORY_FRACTION * total:
        return
    swept = any(key == "lattice.cells" for key, _ in config.sweep)
    per_node = (
        f" each, {format_bytes(node)} for the {ranks} ranks on this node" if ranks > 1 else ""
    )
    raise _Problem(
        "sweep.lattice.cells" if swept else "lattice.cells",
        f"too large: a task would need about {format_bytes(need + PROCESS_BASELINE)}{per_node} "
        f"but only {format_bytes(MEMORY_FRACTION * total)} is usable "
        f"(80 % of {format_bytes(total)} physical memory)",
    )


def format_bytes(n: float) -> str:
    """A byte count for people: ``512 B``, ``1.5 KiB``, ``3.2 GiB`` (three digits)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable")
