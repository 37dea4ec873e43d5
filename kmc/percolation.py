"""Percolation of a landscape: does the amorphous phase span the periodic box, and at which
barrier does a connected fast path first appear?

A cluster of a periodic network *spans* (wraps around) the box along axis a when it holds
a closed path that winds around the box along a. Winding is detected without walking the
clusters: in the network doubled along a (two copies of every site, a bond crossing the
box face along a joins the two copies), a cluster winds an odd number of times along a
exactly when a site and its copy fall into the same component. (A cluster whose every loop
winds an even number of times along a, never once, is not detected; on the lattices here
such clusters need a finely tuned geometry and are not seen in practice.) Each test is one
``scipy.sparse.csgraph.connected_components`` call on 2 N nodes, so everything here is
vectorized and near-linear in the number of sites.

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
from scipy.sparse.csgraph import connected_components

from kmc.landscape import Landscape
from kmc.lattice import Lattice

__all__ = ["critical_barrier", "observables", "spanning", "wrapping"]


def wrapping(lattice: Lattice, bonds: np.ndarray) -> np.ndarray:
    """(n_sites, d) bool: whether the cluster of each site, through the bonds selected by
    the (n_bonds,) bool mask ``bonds``, spans the box along each axis."""
    n = lattice.n_sites
    i, j = lattice.bond_ends[bonds, 0], lattice.bond_ends[bonds, 1]
    images = lattice.bond_images[bonds]
    out = np.zeros((n, lattice.dim), dtype=bool)
    for axis in range(lattice.dim):
        crossing = (images[:, axis] % 2).astype(np.int64)  # an odd image swaps the copies
        rows = np.concatenate([i, i + n])
        cols = np.concatenate([j + n * crossing, j + n * (1 - crossing)])
        graph = sp.coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), (2 * n, 2 * n))
        _, labels = connected_components(graph, directed=False)
        out[:, axis] = labels[:n] == labels[n:]
    return out


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
