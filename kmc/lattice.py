"""Periodic site graphs: sites, hop tables, hop vectors, bonds and their types.

A lattice is a cell of ``n_basis`` sites (any cell: orthogonal or triclinic) repeated
``cells`` times per axis, each site joined by hops to sites of its own or a neighbouring
cell. Sites are numbered ``cell * n_basis + basis`` with the cell index running x fastest.
The seven ideal lattices (:func:`build`) have an orthorhombic conventional cell and one hop
length ``a``; :func:`periodic_graph` builds any other, such as the mobile-ion sublattice of a
crystal structure (:mod:`kmc.structure`), with hop types and site types for per-type
energies and a coordination that may differ between basis sites.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

KINDS = ("chain", "square", "triangular", "honeycomb", "cubic", "bcc", "fcc")

_S3 = np.sqrt(3.0)
# Conventional cell edges and basis positions in units of the hop (nearest-neighbour) length.
_CELLS: dict[str, tuple[tuple[float, ...], tuple[tuple[float, ...], ...]]] = {
    "chain": ((1.0,), ((0.0,),)),
    "square": ((1.0, 1.0), ((0.0, 0.0),)),
    "triangular": ((1.0, _S3), ((0.0, 0.0), (0.5, _S3 / 2))),
    "honeycomb": ((_S3, 3.0), ((0.0, 0.0), (0.0, 1.0), (_S3 / 2, 1.5), (_S3 / 2, 2.5))),
    "cubic": ((1.0, 1.0, 1.0), ((0.0, 0.0, 0.0),)),
    "bcc": ((2 / _S3,) * 3, ((0.0, 0.0, 0.0), (1 / _S3,) * 3)),
    "fcc": (
        (np.sqrt(2.0),) * 3,
        (
            (0.0, 0.0, 0.0),
            (0.0, 0.5**0.5, 0.5**0.5),
            (0.5**0.5, 0.0, 0.5**0.5),
            (0.5**0.5,) * 2 + (0.0,),
        ),
    ),
}
DIMENSION = {kind: len(edges) for kind, (edges, _) in _CELLS.items()}
BASIS_SITES = {kind: len(basis) for kind, (_, basis) in _CELLS.items()}
COORDINATION = {
    "chain": 2,
    "square": 4,
    "triangular": 6,
    "honeycomb": 3,
    "cubic": 6,
    "bcc": 8,
    "fcc": 12,
}


@dataclass(frozen=True, eq=False)
class Lattice:
    """A periodic graph of sites: a cell of ``n_basis`` sites repeated ``cells`` times per
    axis, each site joined to its hop targets. Build it with :func:`build` (the seven ideal
    lattices) or :func:`periodic_graph` (any cell, e.g. the mobile-ion sublattice of a
    crystal structure, see :mod:`kmc.structure`).

    Sites of one basis type may have fewer hops than the coordination ``z``: their rows are
    padded with dummy directions (``hop_valid`` False, target the site itself, vector and
    cell offset 0) whose rate is always zero, so every table stays rectangular.

    Attributes
    ----------
    kind, cells
        Lattice kind (one of :data:`KINDS` or ``"structure"``) and cells per axis.
    hop_distance : float
        The shortest hop length, Å (the one hop length of the ideal lattices).
    cell_vectors : (d, d) float64
        Cell vectors as rows, Å (diagonal for the ideal lattices).
    basis : (n_basis, d) float64
        Cartesian site positions inside the cell, Å.
    neighbours : (n_sites, z) int32
        Site index reached by hop direction k from each site.
    hop_vectors : (n_basis, z, d) float64
        Displacement (Å) of hop direction k from a site of each basis type.
    hop_cells : (n_basis, z, d) int32
        Cell offset of that hop, used to keep exact unwrapped positions.
    hop_valid : (n_basis, z) bool
        False for padding directions.
    hop_types : (n_basis, z) int32
        Index into ``hop_type_labels`` of each direction's hop type (-1 for padding).
    site_types : (n_basis,) int32
        Index into ``site_type_labels`` of each basis site's type.
    """

    kind: str
    cells: tuple[int, ...]
    hop_distance: float
    cell_vectors: np.ndarray
    basis: np.ndarray
    neighbours: np.ndarray
    hop_vectors: np.ndarray
    hop_cells: np.ndarray
    hop_valid: np.ndarray
    hop_types: np.ndarray
    hop_type_labels: tuple[str, ...]
    site_types: np.ndarray
    site_type_labels: tuple[str, ...]

    @property
    def dim(self) -> int:
        return len(self.cells)

    @property
    def n_basis(self) -> int:
        return len(self.basis)

    @property
    def n_sites(self) -> int:
        return self.neighbours.shape[0]

    @property
    def coordination(self) -> int:
        """Hop directions per site (the largest coordination, with padding)."""
        return self.neighbours.shape[1]

    @cached_property
    def orthogonal(self) -> bool:
        """True when the cell vectors lie along the Cartesian axes."""
        off = self.cell_vectors - np.diag(np.diag(self.cell_vectors))
        return bool(np.all(off == 0.0))

    @cached_property
    def padded(self) -> bool:
        """True when some basis site has fewer hops than ``coordination``."""
        return not bool(self.hop_valid.all())

    @property
    def box_vectors(self) -> np.ndarray:
        """(d, d) periodic box vectors as rows, Å."""
        return np.asarray(self.cells, dtype=float)[:, None] * self.cell_vectors

    @property
    def box(self) -> np.ndarray:
        """The periodic box: its (d,) edges in Å when it is orthogonal, else its (d, d)
        vectors as rows (the two H5MD forms of a box)."""
        return np.diag(self.box_vectors).copy() if self.orthogonal else self.box_vectors

    @property
    def volume(self) -> float:
        """Volume in Å³ (see :func:`volume`)."""
        return volume(self.box, self.hop_distance)

    def cell_coordinates(self, sites: np.ndarray) -> np.ndarray:
        """Integer cell coordinates (..., d) of the given site indices."""
        cell = np.asarray(sites) // self.n_basis
        coords = []
        for n in self.cells:
            coords.append(cell % n)
            cell = cell // n
        return np.stack(coords, axis=-1).astype(np.int32)

    def positions_of(self, sites: np.ndarray, cell_coordinates: np.ndarray) -> np.ndarray:
        """Cartesian positions (Å) from site indices and (possibly unwrapped) cell coordinates."""
        if self.orthogonal:  # no matrix product: this runs on every recorded frame
            positions = cell_coordinates * np.diag(self.cell_vectors)
        else:
            positions = cell_coordinates @ self.cell_vectors
        if self.n_basis == 1:  # no per-site gather either
            positions += self.basis[0]
        else:
            positions += self.basis[np.asarray(sites) % self.n_basis]
        return positions

    def fractional(self, positions: np.ndarray) -> np.ndarray:
        """Fractional coordinates (in units of the box vectors) of Cartesian positions."""
        return np.asarray(positions) @ np.linalg.inv(self.box_vectors)

    @cached_property
    def positions(self) -> np.ndarray:
        """(n_sites, d) site positions inside the box, Å."""
        sites = np.arange(self.n_sites)
        return self.positions_of(sites, self.cell_coordinates(sites))

    @cached_property
    def reverse_direction(self) -> np.ndarray:
        """(n_basis, z): the direction at the target site that hops straight back (-1 for
        padding)."""
        target_basis = self._target_basis
        reverse = np.full(self.hop_valid.shape, -1, dtype=np.int64)
        for b, k in zip(*np.nonzero(self.hop_valid), strict=True):
            t = target_basis[b, k]
            back = self.hop_valid[t] & np.all(self.hop_cells[t] == -self.hop_cells[b, k], axis=1)
            back &= self._target_basis[t] == b
            reverse[b, k] = np.flatnonzero(back)[0]
        return reverse

    @cached_property
    def _target_basis(self) -> np.ndarray:
        return self.neighbours[: self.n_basis] % self.n_basis

    @cached_property
    def bond_index(self) -> np.ndarray:
        """(n_sites, z) int64: the undirected bond each directed hop belongs to (-1 for
        padding).

        A hop i→j and its reverse j→i share one bond, so a per-bond saddle is symmetric by
        construction. Bonds are paired by direction, not by site pair, so that two distinct
        periodic bonds joining the same two sites (small supercells) stay distinct.
        """
        n, z = self.neighbours.shape
        directed = np.arange(n * z).reshape(n, z)
        basis = np.arange(n) % self.n_basis
        partner = self.neighbours * z + self.reverse_direction[basis]
        canonical = np.minimum(directed, partner)
        if not self.padded:
            _, index = np.unique(canonical, return_inverse=True)
            return index.reshape(n, z)
        valid = self.hop_valid[basis]
        index = np.full((n, z), -1, dtype=np.int64)
        index[valid] = np.unique(canonical[valid], return_inverse=True)[1]
        return index

    @cached_property
    def _bond_first(self) -> tuple[np.ndarray, np.ndarray]:
        """(site, direction) of the first directed hop of each bond."""
        flat = self.bond_index.ravel()
        bonds, first = np.unique(flat, return_index=True)
        first = first[bonds >= 0]
        return np.divmod(first, self.coordination)

    @cached_property
    def bond_ends(self) -> np.ndarray:
        """(n_bonds, 2) int64 site indices (i, j) of each bond, with the hop direction from i."""
        i, k = self._bond_first
        return np.stack([i, self.neighbours[i, k]], axis=1)

    @cached_property
    def bond_vectors(self) -> np.ndarray:
        """(n_bonds, d) hop vector (Å) from bond_ends[:, 0] to bond_ends[:, 1]."""
        i, k = self._bond_first
        return self.hop_vectors[i % self.n_basis, k]

    @cached_property
    def bond_types(self) -> np.ndarray:
        """(n_bonds,) int32 hop type of each bond (index into ``hop_type_labels``)."""
        i, k = self._bond_first
        return self.hop_types[i % self.n_basis, k]

    @cached_property
    def bond_images(self) -> np.ndarray:
        """(n_bonds, d) int64 periodic image each bond crosses: x_i + d_b = x_j + image · box
        vectors (0 for a bond inside the box, ±1 across a face)."""
        i, j = self.bond_ends[:, 0], self.bond_ends[:, 1]
        shifted = self.positions[i] + self.bond_vectors - self.positions[j]
        return np.rint(self.fractional(shifted)).astype(np.int64)

    @property
    def n_bonds(self) -> int:
        return len(self.bond_ends)

    @cached_property
    def sublattice(self) -> np.ndarray | None:
        """(n_sites,) int8 0/1 colouring of a bipartite lattice, every hop joining the two
        colours (chain, square, honeycomb, simple cubic, bcc with even cells), or None when
        the hop graph has an odd cycle (triangular, fcc, odd periodic boxes)."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components, shortest_path

        ends = self.bond_ends
        graph = coo_matrix(
            (np.ones(len(ends)), (ends[:, 0], ends[:, 1])), shape=(self.n_sites,) * 2
        ).tocsr()
        colour = np.zeros(self.n_sites, dtype=np.int8)
        _, component = connected_components(graph, directed=False)
        starts = np.unique(component, return_index=True)[1]
        # the parity of each site's hop distance from the first site of its component
        depth = shortest_path(graph, directed=False, unweighted=True, indices=starts)
        for row, start in zip(depth, starts, strict=True):
            members = component == component[start]
            colour[members] = (row[members].astype(np.int64) % 2).astype(np.int8)
        if np.any(colour[ends[:, 0]] == colour[ends[:, 1]]):
            return None
        return colour

    @property
    def site_type_of(self) -> np.ndarray:
        """(n_sites,) int32 site type of every site."""
        return np.tile(self.site_types, self.n_sites // self.n_basis)


def volume(box: np.ndarray, hop_distance: float) -> float:
    """Volume in Å³ of a periodic box, given as (d,) orthogonal edges or (d, d) vectors; a
    1D or 2D lattice is given a thickness of one hop distance per missing dimension, so
    number densities and conductivities stay 3D."""
    box = np.atleast_1d(np.asarray(box, dtype=float))
    if box.ndim == 2:
        return float(abs(np.linalg.det(box)) * hop_distance ** (3 - len(box)))
    return float(np.prod(box) * hop_distance ** (3 - len(box)))


def site_count(kind: str, cells: tuple[int, ...] | list[int]) -> int:
    """Number of sites of a supercell of an ideal lattice, without building it (exact,
    never overflows)."""
    return math.prod(int(n) for n in cells) * BASIS_SITES[kind]


#: One hop of a cell's site: (target basis site, cell offset of the target, hop type).
Hop = tuple[int, tuple[int, ...], int]


def periodic_graph(
    kind: str,
    cell_vectors: np.ndarray,
    basis: np.ndarray,
    cells: tuple[int, ...] | list[int],
    hops: list[list[Hop]],
    *,
    hop_type_labels: tuple[str, ...] = ("all",),
    site_types: np.ndarray | None = None,
    site_type_labels: tuple[str, ...] = ("all",),
) -> Lattice:
    """The supercell of ``cells`` cells per axis of a periodic site graph.

    ``cell_vectors`` (d, d) rows and ``basis`` (n_basis, d) Cartesian positions are in Å;
    ``hops[b]`` lists the hops out of basis site b as (target basis site, integer cell offset,
    hop type index). Every hop needs its reverse (target → b with the opposite offset). The
    hop vector is basis[t] + offset · cell_vectors − basis[b], exact by construction.

    Raises ``ValueError`` for cells of the wrong length or < 1, a basis site without hops,
    a hop without its reverse, or a supercell so small that a hop joins a site to itself.
    """
    cell_vectors = np.asarray(cell_vectors, dtype=float)
    basis = np.asarray(basis, dtype=float)
    dim = len(cell_vectors)
    cells = tuple(int(n) for n in np.atleast_1d(cells))
    if len(cells) != dim:
        raise ValueError(f"cells must have {dim} entries for a {kind} lattice, not {len(cells)}")
    if min(cells) < 1:
        raise ValueError(f"cells must be at least 1 along every axis, got {list(cells)}")
    n_basis = len(basis)
    if len(hops) != n_basis or any(not h for h in hops):
        raise ValueError("every basis site needs at least one hop")
    present = {(b, t, tuple(o)) for b, out in enumerate(hops) for t, o, _ in out}
    for b, t, o in present:
        if (t, b, tuple(-x for x in o)) not in present:
            raise ValueError(f"hop {b} -> {t} by cell offset {list(o)} has no reverse")
        if t == b and all(x % n == 0 for x, n in zip(o, cells, strict=True)):
            raise ValueError(
                f"cells {list(cells)} too small: a hop of length "
                f"{np.linalg.norm(np.asarray(o) @ cell_vectors):.3g} Å joins a site to itself"
            )
    z = max(len(out) for out in hops)
    hop_cells = np.zeros((n_basis, z, dim), dtype=np.int32)
    target_basis = np.tile(np.arange(n_basis)[:, None], (1, z))  # padding: the site itself
    hop_types = np.full((n_basis, z), -1, dtype=np.int32)
    valid = np.zeros((n_basis, z), dtype=bool)
    for b, out in enumerate(hops):
        for k, (t, offset, hop_type) in enumerate(out):
            hop_cells[b, k], target_basis[b, k], hop_types[b, k] = offset, t, hop_type
            valid[b, k] = True
    hop_vectors = basis[target_basis] + hop_cells @ cell_vectors - basis[:, None, :]
    hop_vectors[~valid] = 0.0

    n_cells = math.prod(cells)
    cell = np.arange(n_cells)
    coords = np.stack([(cell // math.prod(cells[:axis])) % cells[axis] for axis in range(dim)], 1)
    strides = np.cumprod((1, *cells[:-1]))
    # neighbours[cell, b, k] = linear index of (coords + hop_cells[b, k]) mod cells, basis target
    target_cell = (coords[:, None, None, :] + hop_cells[None]) % np.asarray(cells)
    neighbours = (target_cell @ strides) * n_basis + target_basis[None]
    return Lattice(
        kind=kind,
        cells=cells,
        hop_distance=float(np.linalg.norm(hop_vectors[valid], axis=1).min()),
        cell_vectors=cell_vectors,
        basis=basis,
        neighbours=np.ascontiguousarray(neighbours.reshape(n_cells * n_basis, z), dtype=np.int32),
        hop_vectors=hop_vectors,
        hop_cells=hop_cells,
        hop_valid=valid,
        hop_types=hop_types,
        hop_type_labels=tuple(hop_type_labels),
        site_types=(
            np.zeros(n_basis, dtype=np.int32)
            if site_types is None
            else np.asarray(site_types, dtype=np.int32)
        ),
        site_type_labels=tuple(site_type_labels),
    )


def build(kind: str, cells: tuple[int, ...] | list[int], hop_distance: float = 1.0) -> Lattice:
    """A periodic supercell of ``cells`` conventional cells per axis of one of the ideal
    lattices, with hop length in Å: a :func:`periodic_graph` of one hop type.

    Raises ``ValueError`` naming the argument for an unknown kind, a ``cells`` of the wrong
    length or with fewer than 2 cells along an axis (a site would neighbour itself), or a
    non-positive hop distance.
    """
    if kind not in _CELLS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    dim = DIMENSION[kind]
    cells = tuple(int(n) for n in np.atleast_1d(cells))
    if len(cells) != dim:
        raise ValueError(f"cells must have {dim} entries for a {kind} lattice, not {len(cells)}")
    if min(cells) < 2:
        raise ValueError(f"cells must be at least 2 along every axis, got {list(cells)}")
    if not hop_distance > 0:
        raise ValueError(f"hop_distance must be > 0, not {hop_distance}")

    edges_unit, basis_unit = (np.asarray(x, dtype=float) for x in _CELLS[kind])
    hops: list[list[Hop]] = []
    for origin in basis_unit:
        found = []
        for offset in itertools.product((-1, 0, 1), repeat=dim):
            for b, site in enumerate(basis_unit):
                vector = site + np.asarray(offset) * edges_unit - origin
                if abs(np.linalg.norm(vector) - 1.0) < 1e-9:
                    found.append((b, offset, 0))
        hops.append(found)
    assert all(len(h) == COORDINATION[kind] for h in hops)
    lattice = periodic_graph(
        kind, np.diag(edges_unit) * hop_distance, basis_unit * hop_distance, cells, hops
    )
    # the hop length exactly as given, and the hop vectors scaled from the unit cell's (the
    # product with the scaled cell rounds differently in the last bit)
    unit = basis_unit[lattice._target_basis] + lattice.hop_cells * edges_unit - basis_unit[:, None]
    return replace(lattice, hop_distance=float(hop_distance), hop_vectors=unit * hop_distance)
