"""``kmc export``: a task's trajectory as extended XYZ for OVITO and ASE.

Each frame is written as::

    N
    Lattice="Lx 0 0 0 Ly 0 0 0 Lz" Properties=species:S:1:pos:R:3:site:I:1 Time=<s> pbc="T T T"
    Na x y z site
    ...

Positions are the unwrapped ion positions in Å (so they may lie outside the box; OVITO and
ASE keep them as given), with zero components for the axes a 1D or 2D lattice lacks; numbers
have 12 significant digits. The box is the periodic orthorhombic cell in Å; a missing axis
gets the placeholder edge the task file uses (the largest real edge) and ``F`` in ``pbc``.
``site`` is the lattice site index of the ion, ``Time`` the frame time in seconds. A
triclinic box (a structure supercell) is written as its three box vectors. For a run on a
crystal structure the framework atoms (the structure's other atoms, repeated over the
supercell, fixed) can follow the ions in every frame, with ``site`` −1, so that OVITO shows the
electrode with its framework. The text is written directly (ASE is not needed).
"""

from __future__ import annotations

import os

import numpy as np

from kmc.store import TaskIdentity, atomic_write, read_task

__all__ = ["export_extxyz"]


def export_extxyz(
    task_file: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    framework: tuple[list[str], np.ndarray] | None = None,
    expect: TaskIdentity | None = None,
) -> int:
    """Write the trajectory of ``task_file`` to the extended-XYZ file ``out``.

    ``framework`` (symbols, (M, 3) positions in Å) adds fixed atoms to every frame; with
    ``expect`` the file must belong to that task of that run.

    Returns the number of frames written (0 for a task without a trajectory, such as one
    computed with ``run.method = "network"``; the file is then empty). The output is written
    to a temporary name and renamed into place. Raises ``FileNotFoundError`` or
    :class:`kmc.store.IncompleteTaskFileError` (a ``ValueError``) for a missing, incomplete or
    (:class:`kmc.store.ForeignTaskFileError`) foreign task file.
    """
    data = read_task(task_file, expect=expect)
    positions = np.asarray(data.positions, dtype=np.float64)
    n_frames, n_ions, dim = positions.shape
    box = np.asarray(data.box, dtype=np.float64)
    if box.ndim == 2:  # triclinic box vectors
        lattice = " ".join(_number(x) for x in box.ravel())
    else:
        edges = np.full(3, float(box.max()))
        edges[:dim] = box
        lattice = " ".join(
            _number(edges[i]) if i == j else "0.0" for i in range(3) for j in range(3)
        )
    pbc = " ".join("T" if axis < dim else "F" for axis in range(3))
    head = f'Lattice="{lattice}" Properties=species:S:1:pos:R:3:site:I:1 Time='
    tail = f' pbc="{pbc}"\n'
    row = f"{data.species} {{}} {{}} {{}} {{}}\n"
    zeros = ["0.0"] * (3 - dim)
    fixed = ""
    if framework is not None:
        symbols, where = framework
        fixed = "".join(
            f"{symbol} {' '.join(_number(c) for c in xyz)} -1\n"
            for symbol, xyz in zip(symbols, np.asarray(where).tolist(), strict=True)
        )
    n_atoms = n_ions + (len(framework[0]) if framework is not None else 0)

    with atomic_write(out) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as handle:
        for frame in range(n_frames):
            handle.write(f"{n_atoms}\n{head}{_number(data.times[frame])}{tail}")
            coords = positions[frame].tolist()
            sites = data.sites[frame].tolist()
            handle.write(
                "".join(
                    row.format(*[_number(c) for c in xyz], *zeros, site)
                    for xyz, site in zip(coords, sites, strict=True)
                )
                + fixed
            )
    return n_frames


def _number(x: float) -> str:
    """12 significant digits: far below the precision of any trajectory, and the Å <-> nm
    conversion of the task file does not show up as 13.599999999999998."""
    text = f"{float(x):.12g}"
    return text if any(c in text for c in ".eEn") else text + ".0"
