"""Crystal structures as hop networks: the mobile-ion sublattice of a structure file.

:func:`read` takes any file ASE reads (CIF, POSCAR, extxyz, ...), keeps the sites of the
mobile species (and vacancy sites, symbol ``X``) as the sites of the hop network, joins every
two of them closer than ``cutoff`` by a hop, and groups sites and hops into types:

* with spglib, by the space group: site types are the orbits of the mobile sites (their
  Wyckoff positions), hop types the orbits of the bonds under every operation of the group,
  so two hops have one type exactly when the crystal's symmetry maps one onto the other;
* without spglib, or when no symmetry is found, by the structure file's own site labels
  (ASE's asymmetric-unit kinds of a CIF) and distance shells: hops of one pair of site types
  whose lengths agree to :data:`SHELL_TOLERANCE` share a type.

Site types are labelled ``Na1``, ``Na2``, ... in order of first appearance in the file, hop
types ``H1``, ``H2``, ... by increasing length; ``kmc inspect`` prints both so that energies
can be assigned per type. :meth:`Structure.lattice` repeats the cell into a supercell
(:func:`kmc.lattice.periodic_graph`). The framework atoms take no part in hopping; they are
kept (:attr:`Structure.framework_symbols`, :attr:`Structure.framework_positions`) for export.

ASE (and optionally spglib) are the ``structure`` extra: ``pip install -e ".[structure]"``.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kmc.lattice import Hop, Lattice, periodic_graph

#: Symmetry tolerance (Å) handed to spglib.
SYMPREC = 1e-3
#: Hops of one pair of site types whose lengths differ by less than this (Å) share a type
#: when the types come from distance shells.
SHELL_TOLERANCE = 1e-3
INSTALL_HINT = 'pip install -e ".[structure]"'


class StructureError(ValueError):
    """Bad structure input; ``key`` names the ``[lattice]`` key at fault."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class SiteType:
    label: str
    symbol: str
    wyckoff: str  # Wyckoff letter with multiplicity (e.g. "4a"), "" without symmetry
    count: int  # sites of this type per cell


@dataclass(frozen=True)
class HopType:
    label: str
    length: float  # Å
    ends: tuple[str, str]  # site type labels of the two ends
    per_site: dict[str, float]  # hops of this type out of one site (mean), per site type
    direction: tuple[float, float, float]  # unit vector of one representative hop
    count: int  # bonds of this type per cell


@dataclass(frozen=True, eq=False)
class Structure:
    """The hop network of one structure file (one cell); see the module docs."""

    path: str
    mobile: str
    cutoff: float
    cell: np.ndarray  # (3, 3) cell vectors as rows, Å
    positions: np.ndarray  # (m, 3) Cartesian positions of the mobile sites, Å
    site_types: np.ndarray  # (m,) int32 index into site_type_info
    site_type_info: tuple[SiteType, ...]
    hops: tuple[tuple[Hop, ...], ...]  # per site: (target site, cell offset, hop type)
    hop_type_info: tuple[HopType, ...]
    spacegroup: str  # e.g. "Pnma (62)", or why no symmetry was used
    symmetry: bool  # types from the space group (True) or from labels and shells
    framework_symbols: tuple[str, ...]
    framework_positions: np.ndarray  # (k, 3) Cartesian, Å

    @property
    def site_type_labels(self) -> tuple[str, ...]:
        return tuple(t.label for t in self.site_type_info)

    @property
    def hop_type_labels(self) -> tuple[str, ...]:
        return tuple(t.label for t in self.hop_type_info)

    @property
    def n_sites(self) -> int:
        """Mobile-ion sites per cell."""
        return len(self.positions)

    def lattice(self, supercell: tuple[int, ...] | list[int]) -> Lattice:
        """The periodic supercell ``supercell`` (cells along each cell vector).

        Raises :class:`StructureError` on ``supercell`` when it is so small that a hop would
        join a site to its own periodic image."""
        try:
            return periodic_graph(
                "structure",
                self.cell,
                self.positions,
                supercell,
                [list(h) for h in self.hops],
                hop_type_labels=self.hop_type_labels,
                site_types=self.site_types,
                site_type_labels=self.site_type_labels,
            )
        except ValueError as exc:
            raise StructureError("supercell", str(exc)) from None

    def framework(self, supercell: tuple[int, ...] | list[int]) -> tuple[list[str], np.ndarray]:
        """The framework atoms (symbols, (M, 3) Cartesian Å) repeated over a supercell, for
        export next to the ions."""
        shifts = np.array(list(np.ndindex(*supercell)), dtype=float) @ self.cell
        positions = (shifts[:, None, :] + self.framework_positions[None]).reshape(-1, 3)
        return list(self.framework_symbols) * len(shifts), positions

    def describe(self) -> str:
        """The sites and hop types found, as text tables (what ``kmc inspect`` prints)."""
        from kmc.texttable import text_table

        lines = [
            f"structure {self.path}: {self.spacegroup}; cell "
            + " × ".join(f"{x:.4g}" for x in np.linalg.norm(self.cell, axis=1))
            + " Å",
            f"mobile species {self.mobile}: {self.n_sites} sites per cell; hops up to "
            f"{self.cutoff:g} Å; types from "
            + ("the space group" if self.symmetry else "site labels and distance shells"),
            "",
            "site types (crystal.site_energy keys)",
        ]
        rows = [[t.label, t.symbol, t.wyckoff or "-", str(t.count)] for t in self.site_type_info]
        lines += text_table(["label", "species", "Wyckoff", "per cell"], rows, right={3})
        lines += ["", "hop types (crystal.saddle_energy keys)"]
        rows = []
        for t in self.hop_type_info:
            per_site = ", ".join(f"{n:.3g} from {label}" for label, n in t.per_site.items())
            direction = "(" + ", ".join(f"{x + 0.0:+.3f}" for x in t.direction) + ")"
            rows.append(
                [t.label, f"{t.length:.4f}", f"{t.ends[0]}-{t.ends[1]}", per_site,
                 str(t.count), direction, _axis_name(self.cell, t.direction)]
            )  # fmt: skip
        lines += text_table(
            ["label", "length/Å", "sites", "per site", "per cell", "direction", "along"],
            rows,
            right={1, 4},
        )
        return "\n".join(lines)


def _axis_name(cell: np.ndarray, direction: tuple[float, ...]) -> str:
    """``a``, ``b`` or ``c`` when the hop lies within 10° of a cell vector, else ``-``."""
    unit = cell / np.linalg.norm(cell, axis=1, keepdims=True)
    cosine = np.abs(unit @ np.asarray(direction))
    best = int(np.argmax(cosine))
    return "abc"[best] if cosine[best] > math.cos(math.radians(10)) else "-"


def read(
    path: str | os.PathLike, mobile: str, cutoff: float, *, symprec: float = SYMPREC
) -> Structure:
    """The hop network of the ``mobile`` species in a structure file (see the module docs).

    Raises :class:`StructureError` naming the key at fault: ``structure`` (missing file, a
    format ASE cannot read, no periodic 3D cell, ASE not installed), ``mobile`` (no site of
    that species) or ``cutoff`` (not positive, no hop, or a site left without a hop).
    """
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as exc:
        raise StructureError("structure", f"{path}: {exc.strerror or 'cannot be read'}") from None
    if not path.is_file():
        raise StructureError("structure", f"{path}: not a file")
    if not (isinstance(cutoff, int | float) and math.isfinite(cutoff) and cutoff > 0):
        raise StructureError("cutoff", f"must be a positive length in Å, not {cutoff!r}")
    return _read(str(path.resolve()), stat.st_mtime_ns, stat.st_size, mobile, float(cutoff),
                 float(symprec))  # fmt: skip


@functools.lru_cache(maxsize=16)
def _read(path: str, _mtime: int, _size: int, mobile: str, cutoff: float, symprec: float):
    # cached per file version: a sweep validates every point against the same structure
    atoms = _load_atoms(path)
    cell = np.asarray(atoms.cell.array, dtype=float)
    symbols = atoms.get_chemical_symbols()
    is_mobile = np.array([s == mobile or s == "X" for s in symbols])
    occupancy = atoms.info.get("occupancy")
    kinds = atoms.arrays.get("spacegroup_kinds")
    if occupancy is not None and kinds is not None:  # partially occupied by the mobile ion
        is_mobile |= np.array([mobile in occupancy.get(str(k), {}) for k in kinds])
    if not is_mobile.any():
        found = ", ".join(sorted(set(symbols)))
        raise StructureError("mobile", f"no {mobile} site in {path} (it holds {found})")
    index = np.flatnonzero(is_mobile)
    positions = atoms.positions[index]
    scaled = atoms.get_scaled_positions()[index] % 1.0
    pairs = _bonds(cell, positions, cutoff, path, mobile)

    dataset, why = _symmetry(atoms, symprec)
    if dataset is not None:
        orbits = np.asarray(dataset.equivalent_atoms)[index]
        wyckoffs = [str(dataset.wyckoffs[a]) for a in index]
        spacegroup = f"{dataset.international} ({dataset.number})"
    else:
        labels = kinds[index] if kinds is not None else np.zeros(len(index), dtype=int)
        orbits, wyckoffs, spacegroup = labels, [""] * len(index), why
    # site types: orbits in order of first appearance
    _, first, site_types = np.unique(orbits, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first))
    site_types = rank[site_types].astype(np.int32)
    n_types = len(first)
    site_symbols = [symbols[index[np.flatnonzero(site_types == t)[0]]] for t in range(n_types)]
    counters: dict[str, int] = {}
    site_info = []
    for t in range(n_types):
        counters[site_symbols[t]] = counters.get(site_symbols[t], 0) + 1
        members = np.flatnonzero(site_types == t)
        letter = wyckoffs[members[0]]
        site_info.append(
            SiteType(
                f"{site_symbols[t]}{counters[site_symbols[t]]}",
                site_symbols[t],
                f"{_multiplicity(dataset, index[members[0]])}{letter}" if letter else "",
                len(members),
            )
        )

    if dataset is not None:
        bond_orbit = _bond_orbits(pairs, scaled, dataset, symprec / min(atoms.cell.lengths()))
    else:
        bond_orbit = _bond_shells(pairs, positions, cell, site_types)
    hop_types, hop_info = _hop_types(pairs, bond_orbit, positions, cell, site_types, site_info)
    hops: list[list[Hop]] = [[] for _ in range(len(index))]
    for (i, j, shift), t in zip(pairs, hop_types, strict=True):
        hops[i].append((j, shift, t))

    framework = np.flatnonzero(~is_mobile)
    return Structure(
        path=path,
        mobile=mobile,
        cutoff=cutoff,
        cell=cell,
        positions=positions,
        site_types=site_types,
        site_type_info=tuple(site_info),
        hops=tuple(tuple(h) for h in hops),
        hop_type_info=hop_info,
        spacegroup=spacegroup,
        symmetry=dataset is not None,
        framework_symbols=tuple(symbols[a] for a in framework),
        framework_positions=atoms.positions[framework],
    )


def _load_atoms(path: str):
    try:
        import ase.io
    except ImportError:
        raise StructureError(
            "structure", f"reading a structure needs ASE: {INSTALL_HINT}"
        ) from None
    try:
        atoms = ase.io.read(path)
    except Exception as exc:  # ASE's readers raise many types; any of them means unreadable
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise StructureError("structure", f"{path}: ASE cannot read it ({detail[:200]})") from None
    if isinstance(atoms, list):
        atoms = atoms[-1]
    if not atoms.pbc.all() or atoms.cell.rank < 3:
        raise StructureError("structure", f"{path}: needs a periodic 3D cell")
    return atoms


def _bonds(cell, positions, cutoff, path, mobile) -> list[tuple[int, int, tuple[int, ...]]]:
    """Directed pairs (i, j, cell shift of j) of mobile sites closer than the cutoff."""
    from ase.neighborlist import primitive_neighbor_list

    i, j, shifts, d = primitive_neighbor_list("ijSd", (True, True, True), cell, positions, cutoff)
    if len(i) == 0:
        shortest = _shortest_distance(cell, positions)
        raise StructureError(
            "cutoff",
            f"{cutoff:g} Å gives no hop between {mobile} sites of {Path(path).name} "
            f"(the shortest {mobile}-{mobile} distance is {shortest:.3f} Å)",
        )
    lonely = np.setdiff1d(np.arange(len(positions)), i)
    if len(lonely):
        raise StructureError(
            "cutoff",
            f"{cutoff:g} Å leaves {len(lonely)} of {len(positions)} {mobile} sites of "
            f"{Path(path).name} without a hop: raise it",
        )
    order = np.lexsort((shifts[:, 2], shifts[:, 1], shifts[:, 0], j, d, i))
    return [(int(i[k]), int(j[k]), tuple(int(x) for x in shifts[k])) for k in order]


def _shortest_distance(cell, positions) -> float:
    from ase.neighborlist import primitive_neighbor_list

    reach = float(np.linalg.norm(cell, axis=1).max())
    d = primitive_neighbor_list("d", (True, True, True), cell, positions, reach)
    return float(d.min()) if len(d) else math.inf


def _symmetry(atoms, symprec: float):
    """spglib's symmetry dataset of the whole structure, or (None, why not)."""
    try:
        import spglib
    except ImportError:
        return None, f"no symmetry used (spglib not installed: {INSTALL_HINT})"
    numbers = np.where(atoms.numbers > 0, atoms.numbers, 200)  # vacancy sites: their own kind
    cell = (atoms.cell.array, atoms.get_scaled_positions(), numbers)
    dataset = spglib.get_symmetry_dataset(cell, symprec=symprec)
    if dataset is None or dataset.number == 1:
        return None, "no symmetry found (P1)"
    return dataset, ""


def _multiplicity(dataset, atom: int) -> int:
    if dataset is None:
        return 0
    return int(np.sum(np.asarray(dataset.equivalent_atoms) == dataset.equivalent_atoms[atom]))


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


def _bond_orbits(pairs, scaled, dataset, tolerance) -> np.ndarray:
    """Orbit index of every directed pair under the space group (a pair and its reverse
    share one orbit)."""
    key = {pair: n for n, pair in enumerate(pairs)}
    uf = _UnionFind(len(pairs))
    for n, (i, j, shift) in enumerate(pairs):
        uf.union(n, key[(j, i, tuple(-x for x in shift))])

    def image(point):
        """Site index and cell shift of a fractional point that is a mobile site."""
        diff = point[None, :] - scaled
        nearest = np.rint(diff)
        site = int(np.argmin(np.abs(diff - nearest).max(axis=1)))
        if np.abs(diff[site] - nearest[site]).max() > 10 * tolerance + 1e-6:
            raise AssertionError("a symmetry operation maps a mobile site off the sublattice")
        return site, nearest[site].astype(int)

    for rotation, translation in zip(dataset.rotations, dataset.translations, strict=True):
        for n, (i, j, shift) in enumerate(pairs):
            a, shift_a = image(rotation @ scaled[i] + translation)
            b, shift_b = image(rotation @ (scaled[j] + shift) + translation)
            uf.union(n, key[(a, b, tuple(int(x) for x in shift_b - shift_a))])
    return np.array([uf.find(n) for n in range(len(pairs))])


def _bond_shells(pairs, positions, cell, site_types) -> np.ndarray:
    """Orbit stand-ins without symmetry: the pair of site types and the length shell."""
    keys = []
    for i, j, shift in pairs:
        length = np.linalg.norm(positions[j] + np.asarray(shift) @ cell - positions[i])
        ends = tuple(sorted((int(site_types[i]), int(site_types[j]))))
        keys.append((ends, length))
    orbit = np.empty(len(pairs), dtype=int)
    shells: list[tuple[tuple[int, int], float]] = []
    for n, (ends, length) in enumerate(keys):
        for s, (shell_ends, shell_length) in enumerate(shells):
            if shell_ends == ends and abs(shell_length - length) < SHELL_TOLERANCE:
                orbit[n] = s
                break
        else:
            orbit[n] = len(shells)
            shells.append((ends, length))
    return orbit


def _hop_types(pairs, orbit, positions, cell, site_types, site_info):
    """Hop type of every directed pair (labels H1, H2, ... by increasing length) and the
    description of every type."""
    vectors = np.array([positions[j] + np.asarray(s) @ cell - positions[i] for i, j, s in pairs])
    lengths = np.linalg.norm(vectors, axis=1)
    orbits = np.unique(orbit)
    first_label = {
        o: min(site_types[pairs[n][0]] for n in np.flatnonzero(orbit == o)) for o in orbits
    }
    order = sorted(orbits, key=lambda o: (round(lengths[orbit == o].mean(), 6), first_label[o]))
    rank = {o: r for r, o in enumerate(order)}
    types = np.array([rank[o] for o in orbit], dtype=np.int32)
    info = []
    labels = [t.label for t in site_info]
    for r, o in enumerate(order):
        members = np.flatnonzero(orbit == o)
        starts = site_types[[pairs[n][0] for n in members]]
        per_site = {}
        for t in np.unique(starts):  # a whole number when the types are symmetry orbits
            per_site[labels[t]] = float(np.sum(starts == t)) / site_info[t].count
        n0 = members[0]
        ends = sorted((labels[site_types[pairs[n0][0]]], labels[site_types[pairs[n0][1]]]))
        rep = vectors[n0] / lengths[n0]
        if rep[np.flatnonzero(np.abs(rep) > 1e-9)[0]] < 0:  # print +b, not -b
            rep = -rep
        info.append(
            HopType(
                label=f"H{r + 1}",
                length=float(lengths[members].mean()),
                ends=(ends[0], ends[1]),
                per_site=per_site,
                direction=tuple(float(x) for x in rep),
                count=len(members) // 2,
            )
        )
    return types, tuple(info)
