"""Percolation of a landscape: does the amorphous phase span the periodic box, and at which
barrier does a connected fast path first appear?

A cluster of a periodic network *spans* (wraps around) the box along axis a when it holds
a closed path that winds around the box along a. Winding is detected without walking the
clusters site by site (:func:`cluster_images`): a spanning forest of the bonds
(``scipy.sparse.csgraph.breadth_first_order`` from a virtual root joined to one site per
component) gives every site its periodic image relative to its cluster's root, summed along
the tree by pointer jumping (⌈log₂ depth⌉ vectorized steps); a bond whose two ends then
disagree by a nonzero image closes a loop that winds around the box, along the axes where
the image is nonzero. This is exact (every winding number, not only odd ones), vectorized
and O(m log n) for m bonds on n sites; the same function gives the exact network solver
(:mod:`kmc.network`) its percolation conductances and strong clusters.

Observables (docs/physics.md, "Percolation"):

- ``percolating_axes``: whether the amorphous sites (joined by amorphous–amorphous bonds,
  blocked sites excluded) span the box along each axis; ``percolating`` if along any;
- ``spanning_fraction``: the fraction of amorphous sites in clusters that span along any
  axis;
- ``critical_barrier`` (eV): the lowest E_c such that the bonds whose barrier top
  max(S_ij, ε_i, ε_j), measured from the lowest free-site energy, is at most E_c span the
  box along some axis -- the critical-path estimate of the activation energy (nan if
  even all bonds do not span, e.g. a chain cut by a blocked site).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import breadth_first_order, connected_components

from kmc.landscape import Landscape
from kmc.lattice import Lattice

__all__ = ["cluster_images", "critical_barrier", "observables", "spanning", "wrapping"]


def cluster_images(
    n_sites: int, i: np.ndarray, j: np.ndarray, images: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clusters of the periodic network of bonds i → j, whose (m, d) integer ``images`` obey
    x_i + d_b = x_j + image_b · box vectors.

    Returns ``labels`` (n_sites,) (component of each site, 0..c-1, isolated sites included),
    ``offsets`` (n_sites, d) int64 (the periodic image of each site's copy that is joined to
    its component's root along a spanning tree: site k sits at x_k + offsets_k · box vectors
    in the root's frame) and ``winds`` (c, d) bool (whether the component holds a loop that
    winds around the box along each axis: a bond whose ends' offsets differ from its own
    image).
    """
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    images = np.asarray(images, dtype=np.int64)
    if images.ndim == 1:
        images = images[:, None]
    dim = images.shape[1]
    n = int(n_sites)
    offsets = np.zeros((n, dim), dtype=np.int64)
    if len(i) == 0:
        return np.arange(n), offsets, np.zeros((n, dim), dtype=bool)
    # both directions of every bond, the entry holding ±(bond + 1): the sign tells the
    # direction, so that the tree below can look up its bonds' images
    # (a bond from a site to its own image joins nothing: left out of the graph, it is
    # still checked for winding at the end)
    bond = np.flatnonzero(i != j) + 1.0
    rows = np.concatenate([i[i != j], j[i != j]])
    cols = np.concatenate([j[i != j], i[i != j]])
    graph = sp.csr_matrix((np.concatenate([bond, -bond]), (rows, cols)), shape=(n, n))
    count, labels = connected_components(graph, directed=True, connection="weak")
    winds = np.zeros((count, dim), dtype=bool)
    # spanning forest: breadth-first from a virtual root n joined to one site per component
    roots = _first_of_each(labels, count)
    tree_graph = sp.csr_matrix(
        (
            np.ones(len(rows) + len(roots), dtype=np.int8),
            (np.concatenate([rows, np.full(len(roots), n)]), np.concatenate([cols, roots])),
        ),
        shape=(n + 1, n + 1),
    )
    _, predecessor = breadth_first_order(tree_graph, n, directed=True, return_predecessors=True)
    parent = predecessor[:n].astype(np.int64)
    parent[roots] = roots
    child = np.flatnonzero(parent != np.arange(n))
    # the image of each child relative to its parent, from a bond joining the two
    if graph.nnz == len(rows):  # one bond per joined pair (none summed): look it up
        entry = graph[parent[child], child]
        entry = (entry.toarray() if sp.issparse(entry) else np.asarray(entry)).ravel()
        index = np.abs(entry).astype(np.int64) - 1
        offsets[child] = np.where(entry[:, None] > 0, images[index], -images[index])
    else:  # parallel bonds (a box two cells wide): any one of them, by sorted pair keys
        keys = np.concatenate([i * n + j, j * n + i])
        signed = np.concatenate([images, -images])
        order = np.argsort(keys, kind="stable")
        found = np.searchsorted(keys[order], parent[child] * n + child)
        offsets[child] = signed[order][found]
    # pointer jumping: offsets relative to the parent become offsets relative to the root
    while True:
        grand = parent[parent]
        if np.array_equal(grand, parent):
            break
        offsets += offsets[parent]
        parent = grand
    mismatch = (offsets[i] + images - offsets[j]) != 0
    for axis in range(dim):
        winds[:, axis] = np.bincount(labels[i], mismatch[:, axis], count) > 0
    return labels, offsets, winds


def _first_of_each(labels: np.ndarray, count: int) -> np.ndarray:
    """The first site of each of the ``count`` labels (connected_components numbers its
    components in the order of their first site; checked, else found by sorting)."""
    running = np.maximum.accumulate(labels)
    first = np.flatnonzero(np.concatenate([[True], running[1:] > running[:-1]]))
    if len(first) == count and np.array_equal(labels[first], np.arange(count)):
        return first
    return np.unique(labels, return_index=True)[1]


def wrapping(lattice: Lattice, bonds: np.ndarray) -> np.ndarray:
    """(n_sites, d) bool: whether the cluster of each site, through the bonds selected by
    the (n_bonds,) bool mask ``bonds``, spans the box along each axis."""
    ends = lattice.bond_ends[bonds]
    labels, _, winds = cluster_images(
        lattice.n_sites, ends[:, 0], ends[:, 1], lattice.bond_images[bonds]
    )
    return winds[labels]


def spanning(landscape: Landscape) -> tuple[np.ndarray, float]:
    """The amorphous phase's spanning: (d,) bool per axis, and the fraction of amorphous
    (free) sites in spanning clusters (nan without amorphous sites)."""
    lat = landscape.lattice
    amorphous = landscape.amorphous & ~landscape.blocked
    both = amorphous[lat.bond_ends].all(axis=1)
    wraps = wrapping(lat, both)
    axes = np.array([bool(wraps[amorphous, a].any()) for a in range(lat.dim)])
    if not amorphous.any():
        return axes, math.nan
    return axes, float(wraps[amorphous].any(axis=1).mean())


def critical_barrier(landscape: Landscape) -> float:
    """The lowest barrier top E_c (eV, from the lowest free-site energy) at which the bonds
    with a top ≤ E_c first span the box along some axis; nan if all free bonds do not."""
    lat = landscape.lattice
    ends = lat.bond_ends
    free = ~landscape.blocked[ends].any(axis=1)
    if not free.any():
        return math.nan
    top = (
        np.maximum(landscape.saddle_energy, np.maximum(*landscape.site_energy[ends].T))
        - landscape.site_energy[~landscape.blocked].min()
    )
    levels = np.unique(top[free])

    def spans(level: float) -> bool:
        return bool(wrapping(lat, free & (top <= level)).any())

    if not spans(levels[-1]):
        return math.nan
    low, high = -1, len(levels) - 1  # spans(levels[high]) holds, levels[low] (if any) not
    while high - low > 1:  # bisection: spanning only grows with the level
        middle = (low + high) // 2
        if spans(levels[middle]):
            high = middle
        else:
            low = middle
    return float(levels[high])


def observables(landscape: Landscape) -> dict[str, float | int]:
    """The per-task percolation observables: ``percolating`` (0/1), ``percolating_x``,
    ``percolating_y``, ``percolating_z`` (one per lattice axis), ``spanning_fraction`` and
    ``critical_barrier`` (eV)."""
    axes, fraction = spanning(landscape)
    out: dict[str, float | int] = {"percolating": int(axes.any())}
    for axis, name in zip(range(landscape.lattice.dim), "xyz", strict=False):
        out[f"percolating_{name}"] = int(axes[axis])
    out["spanning_fraction"] = fraction
    out["critical_barrier"] = critical_barrier(landscape)
    return out
