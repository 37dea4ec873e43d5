"""Geometry of the seven periodic lattices."""

import numpy as np
import pytest

from kmc import lattice

CELLS = {1: (7,), 2: (5, 4), 3: (4, 3, 5)}


@pytest.fixture(params=lattice.KINDS)
def lat(request):
    kind = request.param
    return lattice.build(kind, CELLS[lattice.DIMENSION[kind]], hop_distance=2.5)


def minimum_image(vectors, box):
    return vectors - np.round(vectors / box) * box


def test_neighbours_sit_at_the_hop_distance(lat):
    p = lat.positions
    d = minimum_image(p[lat.neighbours] - p[:, None, :], lat.box)
    assert np.allclose(np.linalg.norm(d, axis=-1), 2.5)
    assert np.allclose(d, lat.hop_vectors[np.arange(lat.n_sites) % lat.n_basis])
    # every site's neighbours are distinct sites, none of them itself
    assert all(len(set(row)) == lat.coordination for row in lat.neighbours)
    assert not np.any(lat.neighbours == np.arange(lat.n_sites)[:, None])


def test_no_nearer_or_missing_neighbours(lat):
    """The neighbour table holds every site at distance a, and no site is nearer."""
    p = lat.positions
    d = np.linalg.norm(minimum_image(p[None, :, :] - p[:, None, :], lat.box), axis=-1)
    np.fill_diagonal(d, np.inf)
    assert d.min() == pytest.approx(2.5)
    at_a = np.isclose(d, 2.5)
    for i in range(lat.n_sites):
        assert set(np.flatnonzero(at_a[i])) == set(lat.neighbours[i])


def test_coordination_and_density(lat):
    assert lat.coordination == lattice.COORDINATION[lat.kind]
    assert lat.n_sites == lattice.site_count(lat.kind, lat.cells)
    assert lat.positions.min() >= -1e-12
    assert np.all(lat.positions < lat.box + 1e-12)
    assert lat.volume == pytest.approx(np.prod(lat.box) * 2.5 ** (3 - lat.dim))


def test_bonds_pair_each_hop_with_its_reverse(lat):
    rev = lat.reverse_direction[np.arange(lat.n_sites) % lat.n_basis]
    assert np.array_equal(lat.bond_index[lat.neighbours, rev], lat.bond_index)
    assert lat.n_bonds * 2 == lat.n_sites * lat.coordination
    assert np.bincount(lat.bond_index.ravel()).tolist() == [2] * lat.n_bonds
    i, j = lat.bond_ends.T
    assert np.allclose(
        minimum_image(lat.positions[j] - lat.positions[i], lat.box), lat.bond_vectors
    )


def test_unwrapped_positions_follow_the_hop_cells(lat):
    """Walking along hop k from every site changes the unwrapped position by hop_vectors."""
    sites = np.arange(lat.n_sites)
    cells = lat.cell_coordinates(sites)
    for k in range(lat.coordination):
        b = sites % lat.n_basis
        moved = lat.positions_of(lat.neighbours[:, k], cells + lat.hop_cells[b, k])
        assert np.allclose(moved - lat.positions, lat.hop_vectors[b, k])


def test_two_cells_keep_periodic_bonds_distinct():
    lat = lattice.build("cubic", (2, 2, 2))
    assert lat.n_bonds == 3 * 8  # each site bonds twice to its x neighbour, once per side


@pytest.mark.parametrize(
    ("kind", "cells", "hop", "word"),
    [
        ("hexagonal", (4, 4), 1.0, "kind"),
        ("square", (4, 4, 4), 1.0, "cells"),
        ("cubic", (4, 1, 4), 1.0, "cells"),
        ("cubic", (4, 4, 4), 0.0, "hop_distance"),
    ],
)
def test_bad_arguments_name_the_argument(kind, cells, hop, word):
    with pytest.raises(ValueError, match=word):
        lattice.build(kind, cells, hop)


@pytest.mark.parametrize(
    ("kind", "cells", "bipartite"),
    [("chain", (10,), True), ("square", (4, 4), True), ("honeycomb", (3, 3), True),
     ("cubic", (4, 4, 4), True), ("bcc", (3, 3, 3), True), ("triangular", (4, 4), False),
     ("fcc", (3, 3, 3), False), ("cubic", (3, 3, 3), False), ("chain", (7,), False)],
)  # fmt: skip
def test_sublattice_colours_every_bond_across(kind, cells, bipartite):
    """A bipartite lattice gets two equal sublattices with every hop between them; an odd
    cycle (triangles, fcc, an odd periodic box) gives None."""
    lat = lattice.build(kind, cells)
    colour = lat.sublattice
    assert (colour is not None) == bipartite
    if bipartite:
        ends = lat.bond_ends
        assert np.all(colour[ends[:, 0]] != colour[ends[:, 1]])
        assert colour.sum() * 2 == lat.n_sites
