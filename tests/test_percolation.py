"""kmc.percolation: spanning of the amorphous phase and the critical barrier, against exact
statements about periodic percolation (thresholds far from the tested concentrations, so
the finite box gives the infinite-lattice answer except with exponentially small
probability) and hand-built networks."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from kmc import config, experiment, landscape, lattice, percolation, store
from kmc.distributions import Distribution


def make(kind, cells, *, phi=0.0, saddle=None, blocked=None, seed=1):
    lat = lattice.build(kind, cells, hop_distance=1.0)
    rng = np.random.default_rng(seed)
    amorphous = landscape.microstructure(lat, "random", phi, rng, blocked=blocked)
    phase = landscape.Phase(Distribution.constant(0.0), saddle or Distribution.constant(0.5))
    return landscape.generate(
        lat, crystal=phase, amorphous=phase, amorphous_mask=amorphous, rng=rng, blocked=blocked
    )


def test_wrapping_of_hand_built_networks():
    """On a 4×4 square box: the bonds of one row (a loop around x) wrap along x only, its
    sites only; all bonds wrap along both; a row missing one bond wraps nowhere."""
    lat = lattice.build("square", (4, 4), hop_distance=1.0)
    i, j = lat.bond_ends.T
    y = lat.positions[:, 1]
    row = (np.abs(y[i]) < 1e-9) & (np.abs(y[j]) < 1e-9)  # bonds within the row y = 0
    assert row.sum() == 4
    wraps = percolation.wrapping(lat, row)
    on_row = np.abs(y) < 1e-9
    assert wraps[on_row, 0].all() and not wraps[~on_row].any() and not wraps[:, 1].any()
    assert percolation.wrapping(lat, np.ones(lat.n_bonds, dtype=bool)).all()
    broken = row.copy()
    broken[np.flatnonzero(row)[0]] = False
    assert not percolation.wrapping(lat, broken).any()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_spanning_fraction_on_simple_cubic(seed):
    """Site percolation on simple cubic has p_c = 0.3116. On 32³: at φ = 0.20 no amorphous
    cluster spans (spanning fraction exactly 0); at φ = 0.45 the amorphous phase spans along
    every axis and holds nearly all amorphous sites: at most 1 − (1 − φ)⁶ ≈ 0.972 of them
    (an amorphous site without amorphous neighbours cannot belong to it), and P∞(0.45)/0.45
    ≈ 0.95 in the infinite lattice."""
    low = percolation.observables(make("cubic", (32, 32, 32), phi=0.20, seed=seed))
    assert low["percolating"] == 0 and low["spanning_fraction"] == 0.0
    high = percolation.observables(make("cubic", (32, 32, 32), phi=0.45, seed=seed))
    assert high["percolating"] == 1
    assert (high["percolating_x"], high["percolating_y"], high["percolating_z"]) == (1, 1, 1)
    assert 0.9 < high["spanning_fraction"] < 1 - (1 - 0.45) ** 6 + 0.005


@pytest.mark.parametrize(
    ("kind", "cells", "p_c"),
    [("square", (64, 64), 0.5), ("cubic", (32, 32, 32), 0.2488)],
)
def test_critical_barrier_of_bimodal_bonds(kind, cells, p_c):
    """Bonds draw saddle 0.3 eV with probability p, else 0.6 eV (site energies 0): the
    critical barrier is 0.3 eV when the fast bonds percolate (p above the bond threshold
    p_c: 1/2 on the square lattice, 0.2488 on simple cubic), else 0.6 eV."""
    for p, expected in ((p_c - 0.15, 0.6), (p_c + 0.15, 0.3)):
        saddle = Distribution.parse(
            {"dist": "discrete", "values": [0.3, 0.6], "weights": [p, 1 - p]}
        )
        value = percolation.critical_barrier(make(kind, cells, saddle=saddle))
        assert value == pytest.approx(expected, abs=1e-12), (kind, p)


def test_critical_barrier_measured_from_the_lowest_site_energy():
    """All sites at 0.2 eV, all saddles 0.7 eV: barrier tops 0.7 − 0.2 = 0.5 eV above the
    lowest site, a constant that spans at once."""
    lat = lattice.build("square", (8, 8), hop_distance=1.0)
    rng = np.random.default_rng(0)
    phase = landscape.Phase(Distribution.constant(0.2), Distribution.constant(0.7))
    land = landscape.generate(
        lat, crystal=phase, amorphous=phase, amorphous_mask=np.zeros(lat.n_sites, bool), rng=rng
    )
    assert percolation.critical_barrier(land) == pytest.approx(0.5)


def test_one_blocked_site_cuts_a_chain():
    """A fully amorphous ring of 20 sites spans; one blocked site cuts it: nothing spans and
    no barrier makes a path across (critical barrier nan)."""
    assert percolation.observables(make("chain", (20,), phi=1.0))["percolating"] == 1
    blocked = np.zeros(20, dtype=bool)
    blocked[5] = True
    cut = percolation.observables(make("chain", (20,), phi=1.0, blocked=blocked))
    assert cut["percolating"] == 0 and cut["spanning_fraction"] == 0.0
    assert math.isnan(cut["critical_barrier"])


def test_task_files_carry_the_percolation_observables(tmp_path):
    """run_task stores the landscape's percolation observables (network and kMC alike),
    equal to those of the landscape it ran on."""
    data = {
        "lattice": {"kind": "cubic", "cells": [8, 8, 8], "hop_distance": 3.4},
        "ions": {"concentration": 0.05, "exclusion": False},
        "crystal": {"saddle_energy": 1.6},
        "amorphous": {"saddle_energy": {"dist": "normal", "mean": 0.7, "sigma": 0.05}},
        "microstructure": {"amorphous_fraction": 0.5},
        "run": {"method": "network", "replicas": 1, "seed": 3},
    }
    task = config.expand_tasks(config.parse_config(data))[0]
    path = tmp_path / "task.h5md"
    store.write_task(path, experiment.run_task(task))
    stored = store.read_task(path, positions=False).observables
    land = experiment.build_landscape(task.config, np.random.default_rng(task.landscape_seed))
    for key, value in percolation.observables(land).items():
        assert stored[key] == pytest.approx(value), key
    assert stored["percolating"] == 1  # φ = 0.5 > p_c = 0.3116 on 8³


def test_a_loop_that_winds_twice_is_found():
    """A simple closed loop of 12 sites on simple cubic 4³ that goes twice around the box
    along x (net displacement 8 a along x, 0 along y and z), with no loop that winds once:
    exact winding detection (every winding number, not only odd ones) finds it along x
    only, and only on its sites."""
    lat = lattice.build("cubic", (4, 4, 4), hop_distance=1.0)
    path = [(1, 0, 0), (2, 0, 0), (3, 0, 0), (0, 0, 0), (0, 1, 0), (1, 1, 0), (2, 1, 0)]
    path += [(3, 1, 0), (3, 1, 1), (0, 1, 1), (1, 1, 1), (1, 0, 1)]
    site = {tuple(np.rint(p).astype(int)): k for k, p in enumerate(lat.positions)}
    loop = [site[p] for p in path]
    pairs = {frozenset((a, b)) for a, b in zip(loop, loop[1:] + loop[:1], strict=True)}
    mask = np.array([frozenset(ends) in pairs for ends in lat.bond_ends.tolist()])
    assert mask.sum() == 12
    wraps = percolation.wrapping(lat, mask)
    on_loop = np.zeros(lat.n_sites, dtype=bool)
    on_loop[loop] = True
    assert wraps[on_loop, 0].all() and not wraps[~on_loop].any()
    assert not wraps[:, 1:].any()
    labels, offsets, winds = percolation.cluster_images(
        lat.n_sites, *lat.bond_ends[mask].T, lat.bond_images[mask]
    )
    assert winds[labels[loop[0]]].tolist() == [True, False, False]
    # offsets: unwrapped positions along the spanning tree stay within one cluster frame
    assert np.all(np.abs(offsets) <= 2)


def test_cluster_images_unwrap_a_cluster():
    """An L-shaped cluster that crosses the x face of a 6×6 square box (sites x = 4, 5, 0, 1
    at y = 0, then up to y = 1 at x = 1): no winding, and unwrapped positions
    x + offset · 6 are contiguous (4, 5, 6, 7 and 7 again) in the root's frame."""
    lat = lattice.build("square", (6, 6), hop_distance=1.0)
    path = [(4, 0), (5, 0), (0, 0), (1, 0), (1, 1)]
    site = {tuple(np.rint(p).astype(int)): k for k, p in enumerate(lat.positions)}
    chain = [site[p] for p in path]
    pairs = {frozenset(pair) for pair in itertools.pairwise(chain)}
    mask = np.array([frozenset(ends) in pairs for ends in lat.bond_ends.tolist()])
    labels, offsets, winds = percolation.cluster_images(
        lat.n_sites, *lat.bond_ends[mask].T, lat.bond_images[mask]
    )
    assert not winds.any()
    x = lat.positions[chain, 0] + offsets[chain, 0] * 6
    assert np.allclose(np.sort(x - x.min()), [0, 1, 2, 3, 3])
    assert len(set(labels[chain].tolist())) == 1
