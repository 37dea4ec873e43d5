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

from kmc.results.columns import OBSERVABLES, TEMPERATURE_KEY, UNITS, unit_of
from kmc.results.file import read_results, write_results
from kmc.results.tables import RunResults, analyze_run
from kmc.results.text import index_ranges, show_value

__all__ = [
    "OBSERVABLES",
    "TEMPERATURE_KEY",
    "UNITS",
    "RunResults",
    "analyze_run",
    "index_ranges",
    "read_results",
    "show_value",
    "unit_of",
    "write_results",
]
