"""Memory and disk policy: what a task needs, what the machine has, and the refusal."""

from __future__ import annotations

import os

from kmc.config.schema import Config, _Problem, coordination, ion_count, site_count
from kmc.config.sweep import _points

# --------------------------------------------------------------------------------------------
# Memory


#: Share of the physical memory the tasks of one node may take together.
MEMORY_FRACTION = 0.8
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
