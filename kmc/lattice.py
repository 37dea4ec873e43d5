"""Periodic lattices: sites, nearest-neighbour tables, hop vectors and bonds.

Every lattice is built from an orthorhombic conventional cell (so the periodic box is
orthorhombic, as H5MD and MDAnalysis like it) repeated ``cells`` times per axis. Sites are
numbered ``cell * n_basis + basis`` with the cell index running x fastest; each site has the
same number ``z`` of nearest neighbours at exactly the hop distance ``a``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
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
    """A periodic supercell of one lattice kind. Build it with :func:`build`.

    Attributes
    ----------
    kind, cells, hop_distance
        As given to :func:`build` (hop distance in Å).
    cell_edges : (d,) float64
        Conventional cell edges in Å.
    basis : (n_basis, d) float64
        Site positions inside the conventional cell, Å.
    neighbours : (n_sites, z) int32
        Site index reached by hop direction k from each site.
    hop_vectors : (n_basis, z, d) float64
        Displacement (Å) of hop direction k from a site of each basis type.
    hop_cells : (n_basis, z, d) int32
        Conventional-cell offset of that hop, used to keep exact unwrapped positions.
    """

    kind: str
    cells: tuple[int, ...]
    hop_distance: float
    cell_edges: np.ndarray
    basis: np.ndarray
    neighbours: np.ndarray
    hop_vectors: np.ndarray
    hop_cells: np.ndarray

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
        return self.neighbours.shape[1]

    @property
    def box(self) -> np.ndarray:
        """Periodic box edges in Å."""
        return np.asarray(self.cells) * self.cell_edges

    @property
    def volume(self) -> float:
        """Volume in Å³ (see :func:`volume`)."""
        return volume(self.box, self.hop_distance)

    def cell_coordinates(self, sites: np.ndarray) -> np.ndarray:
        """Integer conventional-cell coordinates (..., d) of the given site indices."""
        cell = np.asarray(sites) // self.n_basis
        coords = []
        for n in self.cells:
            coords.append(cell % n)
            cell = cell // n
        return np.stack(coords, axis=-1).astype(np.int32)

    def positions_of(self, sites: np.ndarray, cell_coordinates: np.ndarray) -> np.ndarray:
        """Cartesian positions (Å) from site indices and (possibly unwrapped) cell coordinates."""
        positions = cell_coordinates * self.cell_edges
        if self.n_basis == 1:  # no per-site gather: this runs on every recorded frame
            positions += self.basis[0]
        else:
            positions += self.basis[np.asarray(sites) % self.n_basis]
        return positions

    @cached_property
    def positions(self) -> np.ndarray:
        """(n_sites, d) site positions inside the box, Å."""
        sites = np.arange(self.n_sites)
        return self.positions_of(sites, self.cell_coordinates(sites))

    @cached_property
    def reverse_direction(self) -> np.ndarray:
        """(n_basis, z): the direction at the target site that hops straight back."""
        hops, target_basis = self.hop_vectors, self._target_basis
        reverse = np.empty(hops.shape[:2], dtype=np.int64)
        for b, k in np.ndindex(*reverse.shape):
            back = np.all(np.isclose(hops[target_basis[b, k]], -hops[b, k], atol=1e-9), axis=1)
            reverse[b, k] = np.flatnonzero(back)[0]
        return reverse

    @cached_property
    def _target_basis(self) -> np.ndarray:
        return self.neighbours[: self.n_basis] % self.n_basis

    @cached_property
    def bond_index(self) -> np.ndarray:
        """(n_sites, z) int64: the undirected bond each directed hop belongs to.

        A hop i→j and its reverse j→i share one bond, so a per-bond saddle is symmetric by
        construction. Bonds are paired by direction, not by site pair, so that two distinct
        periodic bonds joining the same two sites (small supercells) stay distinct.
        """
        n, z = self.neighbours.shape
        directed = np.arange(n * z).reshape(n, z)
        basis = np.arange(n) % self.n_basis
        partner = self.neighbours * z + self.reverse_direction[basis]
        canonical = np.minimum(directed, partner)
        _, index = np.unique(canonical, return_inverse=True)
        return index.reshape(n, z)

    @cached_property
    def bond_ends(self) -> np.ndarray:
        """(n_bonds, 2) int64 site indices (i, j) of each bond, with the hop direction from i."""
        first = np.unique(self.bond_index.ravel(), return_index=True)[1]
        i, k = np.divmod(first, self.coordination)
        return np.stack([i, self.neighbours[i, k]], axis=1)

    @cached_property
    def bond_vectors(self) -> np.ndarray:
        """(n_bonds, d) hop vector (Å) from bond_ends[:, 0] to bond_ends[:, 1]."""
        first = np.unique(self.bond_index.ravel(), return_index=True)[1]
        i, k = np.divmod(first, self.coordination)
        return self.hop_vectors[i % self.n_basis, k]

    @cached_property
    def bond_images(self) -> np.ndarray:
        """(n_bonds, d) int64 periodic image each bond crosses: x_i + d_b = x_j + image · box
        (0 for a bond inside the box, ±1 across a face)."""
        i, j = self.bond_ends[:, 0], self.bond_ends[:, 1]
        shifted = self.positions[i] + self.bond_vectors - self.positions[j]
        return np.rint(shifted / self.box).astype(np.int64)

    @property
    def n_bonds(self) -> int:
        return len(self.bond_ends)


def volume(box: np.ndarray, hop_distance: float) -> float:
    """Volume in Å³ of a periodic box; a 1D or 2D lattice is given a thickness of one hop
    distance per missing dimension, so number densities and conductivities stay 3D."""
    box = np.atleast_1d(box)
    return float(np.prod(box) * hop_distance ** (3 - len(box)))


def site_count(kind: str, cells: tuple[int, ...] | list[int]) -> int:
    """Number of sites of a supercell, without building it (exact, never overflows)."""
    return math.prod(int(n) for n in cells) * BASIS_SITES[kind]


def build(kind: str, cells: tuple[int, ...] | list[int], hop_distance: float = 1.0) -> Lattice:
    """A periodic supercell of ``cells`` conventional cells per axis with hop length in Å.

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
    hop_vectors, hop_cells, target_basis = [], [], []
    for origin in basis_unit:
        found = []
        for offset in itertools.product((-1, 0, 1), repeat=dim):
            for b, site in enumerate(basis_unit):
                vector = site + np.asarray(offset) * edges_unit - origin
                if abs(np.linalg.norm(vector) - 1.0) < 1e-9:
                    found.append((b, offset, vector))
        hop_vectors.append([v for _, _, v in found])
        hop_cells.append([o for _, o, _ in found])
        target_basis.append([b for b, _, _ in found])
    hop_vectors = np.asarray(hop_vectors) * hop_distance
    hop_cells = np.asarray(hop_cells, dtype=np.int32)
    target_basis = np.asarray(target_basis)
    assert hop_vectors.shape[1] == COORDINATION[kind]

    n_basis = len(basis_unit)
    n_cells = int(np.prod(cells))
    cell = np.arange(n_cells)
    coords = np.stack(
        [(cell // int(np.prod(cells[:axis]))) % cells[axis] for axis in range(dim)], 1
    )
    strides = np.cumprod((1, *cells[:-1]))
    # neighbours[cell, b, k] = linear index of (coords + hop_cells[b, k]) mod cells, basis target
    target_cell = (coords[:, None, None, :] + hop_cells[None]) % np.asarray(cells)
    neighbours = (target_cell @ strides) * n_basis + target_basis[None]
    return Lattice(
        kind=kind,
        cells=cells,
        hop_distance=float(hop_distance),
        cell_edges=edges_unit * hop_distance,
        basis=basis_unit * hop_distance,
        neighbours=np.ascontiguousarray(neighbours.reshape(n_cells * n_basis, -1), dtype=np.int32),
        hop_vectors=hop_vectors,
        hop_cells=hop_cells,
    )
