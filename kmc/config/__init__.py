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

from kmc.config.loader import load_config, parse_config
from kmc.config.memory import (
    PROCESS_BASELINE,
    available_memory,
    estimate_memory,
    format_bytes,
    process_memory,
    ranks_per_node,
    task_disk,
    task_memory,
)
from kmc.config.schema import (
    ALL_KEYS,
    STRUCTURE,
    AmorphousConfig,
    Config,
    ConfigError,
    CrystalConfig,
    InteractionsConfig,
    InterfaceConfig,
    IonsConfig,
    LatticeConfig,
    MicrostructureConfig,
    RunConfig,
    comparable_dict,
    config_digest,
    free_site_count,
    ion_count,
    plain,
    resolved_dict,
    site_count,
)
from kmc.config.sweep import Task, expand_tasks, landscape_keys

__all__ = [
    "ALL_KEYS",
    "PROCESS_BASELINE",
    "STRUCTURE",
    "AmorphousConfig",
    "Config",
    "ConfigError",
    "CrystalConfig",
    "InteractionsConfig",
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
