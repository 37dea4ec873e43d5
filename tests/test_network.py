"""The exact dilute-limit solver (kmc.network) against MODEL.md's exact results and kMC.

Precision tests compare with closed forms at rtol 1e-9 (the solve itself is exact to
rounding). Statistical tests compare one landscape realization with independent kMC walkers
on it and accept |z| < 4, the standard error coming from 8 independent groups of walkers
(as in tests/test_kernel.py).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from kmc import analysis, config, experiment, kernel, landscape, lattice, network
from kmc.distributions import Distribution
from kmc.store import read_task, write_task

NU = 1e13
RTOL = 1e-9
Z_MAX = 4.0


def kt(temperature):
    return landscape.BOLTZMANN_EV * temperature


def rng(seed):
    return np.random.default_rng(seed)


def make_landscape(lat, site_energy, saddle_energy, blocked=None, nu=NU):
    """A landscape with the given per-site energies and per-bond saddles (eV)."""
    n = lat.n_sites
    blocked = np.zeros(n, dtype=bool) if blocked is None else np.asarray(blocked, dtype=bool)
    return landscape.Landscape(
        lattice=lat,
        blocked=blocked,
        amorphous=np.ones(n, dtype=bool),
        site_energy=np.broadcast_to(np.asarray(site_energy, dtype=float), (n,)).copy(),
        saddle_energy=np.broadcast_to(
            np.asarray(saddle_energy, dtype=float), (lat.n_bonds,)
        ).copy(),
        attempt_frequency=nu,
    )


def drawn_landscape(lat, seed, site_energy, saddle_energy):
    """Every site amorphous, energies drawn from the given distributions."""
    phase = landscape.Phase(Distribution.parse(site_energy), Distribution.parse(saddle_energy))
    return landscape.generate(
        lat,
        crystal=phase,
        amorphous=phase,
        amorphous_mask=np.ones(lat.n_sites, bool),
        rng=rng(seed),
    )


# --------------------------------------------------------------------------- exact results


@pytest.mark.parametrize("kind", lattice.KINDS)
def test_free_walker_on_every_lattice(kind):
    """D = z Γ a² / (2d) times the identity tensor, a = 2 Å, Γ = ν exp(−0.3 eV/kT) at 300 K."""
    lat = lattice.build(kind, (6,) * lattice.DIMENSION[kind], hop_distance=2.0)
    gamma = NU * math.exp(-0.3 / kt(300.0))
    exact = lat.coordination * gamma * 2.0**2 / (2 * lat.dim)
    tensor = network.diffusion_tensor(make_landscape(lat, 0.0, 0.3), 300.0)
    np.testing.assert_allclose(np.diag(tensor), exact, rtol=RTOL)
    assert np.abs(tensor - np.diag(np.diag(tensor))).max() < RTOL * exact
    coefficient = network.diffusion_coefficient(make_landscape(lat, 0.0, 0.3), 300.0)
    assert coefficient == pytest.approx(exact, rel=RTOL)


@pytest.mark.parametrize("kind", ["cubic", "bcc", "honeycomb"])
def test_random_traps(kind):
    """Common saddle 0.4 eV, Gaussian site energies (σ = 0.05 eV, all below the saddle),
    300 K: D = a² (z/2d) / ⟨1/Γ_i⟩ with Γ_i = ν exp(−(S − ε_i)/kT). The geometric prefactor
    z/2d is 1 on simple cubic, 4/3 on bcc and 3/4 on honeycomb."""
    lat = lattice.build(kind, (5,) * lattice.DIMENSION[kind], hop_distance=2.5)
    land = drawn_landscape(lat, 3, {"dist": "normal", "mean": 0.0, "sigma": 0.05}, 0.4)
    assert land.site_energy.max() < 0.4
    gamma_i = NU * np.exp(-(0.4 - land.site_energy) / kt(300.0))
    exact = 2.5**2 * lat.coordination / (2 * lat.dim) / np.mean(1.0 / gamma_i)
    assert network.diffusion_coefficient(land, 300.0) == pytest.approx(exact, rel=RTOL)


def test_ring_with_random_saddles_is_the_harmonic_mean():
    """Chain of 40 sites, saddles uniform in 0.2–0.6 eV (rates spanning 5e6 at 300 K):
    D = a² / ⟨1/Γ_b⟩ over bonds."""
    lat = lattice.build("chain", (40,), hop_distance=1.5)
    land = drawn_landscape(lat, 5, 0.0, {"dist": "uniform", "low": 0.2, "high": 0.6})
    gamma_b = NU * np.exp(-land.saddle_energy / kt(300.0))
    exact = 1.5**2 / np.mean(1.0 / gamma_b)
    assert network.diffusion_coefficient(land, 300.0) == pytest.approx(exact, rel=RTOL)


def test_ring_with_site_and_saddle_disorder_is_a_series_resistance():
    """Chain of 30 sites with random site energies and saddles (max rule): D is the series
    resistance a² / (⟨1/g_b⟩ ⟨w_i⟩), g_b = ν exp(−max(S_b, ε_i, ε_j)/kT), w_i = exp(−ε_i/kT);
    energies are shifted by +3 eV (far from 0) to check the energy shift cancels."""
    lat = lattice.build("chain", (30,), hop_distance=2.0)
    land = drawn_landscape(
        lat,
        6,
        {"dist": "normal", "mean": 3.0, "sigma": 0.08},
        {"dist": "uniform", "low": 3.1, "high": 3.4},
    )
    i, j = lat.bond_ends.T
    top = np.maximum(land.saddle_energy, np.maximum(land.site_energy[i], land.site_energy[j]))
    g = NU * np.exp(-top / kt(300.0))
    w = np.exp(-land.site_energy / kt(300.0))
    exact = 2.0**2 / (np.mean(1.0 / g) * np.mean(w))
    assert network.diffusion_coefficient(land, 300.0) == pytest.approx(exact, rel=RTOL)


@pytest.mark.parametrize("kind", ["cubic", "square"])
def test_per_axis_crystal_is_anisotropic(kind):
    """Crystal saddles (0.25, 0.35, 0.45) eV along x, y, z on the cubic lattice (the first
    two on the square one), 300 K: D = diag(Γ_x a², Γ_y a², ...) and 0 off the diagonal."""
    lat = lattice.build(kind, (5,) * lattice.DIMENSION[kind], hop_distance=3.0)
    saddles = (0.25, 0.35, 0.45)[: lat.dim]
    crystal = landscape.Phase(
        Distribution.constant(0.0), tuple(Distribution.constant(s) for s in saddles)
    )
    land = landscape.generate(
        lat,
        crystal=crystal,
        amorphous=landscape.Phase(Distribution.constant(0.0), Distribution.constant(0.3)),
        amorphous_mask=np.zeros(lat.n_sites, bool),
        rng=rng(0),
    )
    tensor = network.diffusion_tensor(land, 300.0)
    exact = NU * np.exp(-np.asarray(saddles) / kt(300.0)) * 3.0**2
    np.testing.assert_allclose(np.diag(tensor), exact, rtol=RTOL)
    assert np.abs(tensor - np.diag(np.diag(tensor))).max() < RTOL * exact.min()


def test_a_blocked_site_cuts_a_ring():
    """One blocked site on a ring of 20: no ion can pass it, D = 0 (to 1e-12 of the free
    ring's Γ a²); the same with random energies spanning 1e20 in rates (reduction path),
    where D = 0 exactly."""
    lat = lattice.build("chain", (20,), hop_distance=1.0)
    blocked = np.zeros(20, dtype=bool)
    blocked[7] = True
    free_d = NU * math.exp(-0.3 / kt(300.0))
    assert abs(network.diffusion_coefficient(make_landscape(lat, 0.0, 0.3, blocked), 300.0)) < (
        1e-12 * free_d
    )
    saddles = np.linspace(0.2, 1.4, lat.n_bonds)
    land = make_landscape(lat, 0.0, saddles, blocked)
    assert network.diffusion_coefficient(land, 300.0) == 0.0
    assert network.diffusion_coefficient(make_landscape(lat, 0.0, saddles), 300.0) > 0


def test_blocked_plane_cuts_one_axis_only():
    """Square 8×8, uniform rates, the column x = 0 blocked: D_xx = 0 and D_yy = Γ a² exactly
    (every free site keeps its two vertical bonds), so D = Γ a² / 2."""
    lat = lattice.build("square", (8, 8), hop_distance=1.0)
    blocked = lat.positions[:, 0] == 0.0
    land = make_landscape(lat, 0.0, 0.3, blocked)
    gamma = NU * math.exp(-0.3 / kt(300.0))
    tensor = network.diffusion_tensor(land, 300.0)
    assert abs(tensor[0, 0]) < 1e-12 * gamma and abs(tensor[0, 1]) < 1e-12 * gamma
    assert tensor[1, 1] == pytest.approx(gamma, rel=RTOL)
    assert network.diffusion_coefficient(land, 300.0) == pytest.approx(gamma / 2, rel=RTOL)


def test_layers_with_extreme_contrast():
    """Simple cubic 4×4×8 cut into 8 layers normal to z, 300 K. Layer k has site energy ε_k,
    in-plane saddle S_k and saddle T_k to layer k+1; saddles span 0.25–1.85 eV, rates 1e27.
    Exact: D_xx = D_yy = a² Σ_k g_k / Σ_k w_k (each layer conducts in parallel) and
    D_zz = a² / (⟨1/h_k⟩ ⟨w_k⟩) (the layers in series), with g_k = ν exp(−max(S_k, ε_k)/kT),
    h_k = ν exp(−max(T_k, ε_k, ε_k+1)/kT), w_k = exp(−ε_k/kT). Checked at rtol 1e-9. The
    contrast exceeds CONTRACTION_RATIO τ = 1e8, so the reduction is at work: for D_xx the
    slow layers (below g_max/τ) are cut, 9e-13 of D_xx; for D_zz the links faster than
    τ h_min become perfect conductors, which drops their share of the series resistance,
    5.7e-10 here (the 1.3 eV link alone); D_zz then equals that reduced series exactly."""
    lat = lattice.build("cubic", (4, 4, 8), hop_distance=2.0)
    layer_energy = np.array([0.0, -0.05, 0.02, 0.1, -0.02, 0.05, 0.0, 0.03])
    in_plane = np.array([0.25, 1.6, 0.3, 1.85, 0.28, 1.2, 0.95, 0.27])
    across = np.array([1.5, 0.4, 1.85, 0.6, 0.9, 1.3, 0.5, 1.7])
    layer = np.rint(lat.positions[:, 2] / 2.0).astype(int)
    i, j = lat.bond_ends.T
    vertical = lat.bond_vectors[:, 2] != 0
    lower = np.where(layer[j] == (layer[i] + 1) % 8, layer[i], layer[j])
    saddle = np.where(vertical, across[lower], in_plane[layer[i]])
    land = make_landscape(lat, layer_energy[layer], saddle)
    beta = 1 / kt(300.0)
    g = NU * np.exp(-np.maximum(in_plane, layer_energy) * beta)
    top = np.maximum(across, np.maximum(layer_energy, np.roll(layer_energy, -1)))
    h = NU * np.exp(-top * beta)
    w = np.exp(-layer_energy * beta)
    tensor = network.diffusion_tensor(land, 300.0)
    exact = [4.0 * g.sum() / w.sum()] * 2 + [4.0 / (np.mean(1 / h) * np.mean(w))]
    np.testing.assert_allclose(np.diag(tensor), exact, rtol=RTOL)
    assert np.abs(tensor - np.diag(np.diag(tensor))).max() < RTOL * min(exact)
    contracted = h > network.CONTRACTION_RATIO * h.min()
    assert contracted.sum() == 5  # the 0.4, 0.5, 0.6, 0.9 and 1.3 eV links
    reduced = 4.0 / (np.mean(np.where(contracted, 0.0, 1 / h)) * np.mean(w))
    assert tensor[2, 2] == pytest.approx(reduced, rel=1e-12)


def random_clusters(contrast, seed=4):
    """Simple cubic 8³, 300 K: 20 % of the sites (below the 31 % site-percolation threshold)
    joined by bonds `contrast` times faster than all others (saddles 2.5 eV elsewhere, so the
    fast saddles stay above the site energies 0 up to a contrast of 1e40)."""
    lat = lattice.build("cubic", (8, 8, 8), hop_distance=1.0)
    fast = landscape.microstructure(lat, "random", 0.2, rng(seed))
    i, j = lat.bond_ends.T
    saddle = np.where(fast[i] & fast[j], 2.5 - kt(300.0) * math.log(contrast), 2.5)
    return make_landscape(lat, 0.0, saddle)


def test_finite_fast_clusters_reach_the_infinite_contrast_limit():
    """Finite clusters of fast bonds in a slow matrix: D / (Γ_slow a²) = D∞ − A/c + O(1/c²)
    in the contrast c. Below CONTRACTION_RATIO (1e8) the solve is exact: c = 1e6 and 1e7
    give D∞ by Richardson extrapolation, D7 + (D7 − D6)/9. Above it the fast clusters are
    contracted into perfect conductors, which must give that same D∞ (to 1e-9) for
    c = 1e12, 1e20 and 1e40 -- contrasts at which the plain solve is wrong (measured: by a
    factor 3000 at 1e20). Both solvers agree to 1e-9 at every c."""
    gamma = NU * math.exp(-2.5 / kt(300.0))
    ratio = {}
    for contrast in (1e6, 1e7, 1e12, 1e20, 1e40):
        land = random_clusters(contrast)
        ratio[contrast] = network.diffusion_coefficient(land, 300.0) / gamma
        cg = network.diffusion_coefficient(land, 300.0, solver="cg") / gamma
        assert cg == pytest.approx(ratio[contrast], rel=RTOL)
    limit = ratio[1e7] + (ratio[1e7] - ratio[1e6]) / 9
    assert 1.2 < limit < 10  # the shortcuts speed diffusion up, but not unboundedly
    assert ratio[1e6] < ratio[1e7] < limit  # Rayleigh monotonicity: faster bonds, larger D
    for contrast in (1e12, 1e20, 1e40):
        assert ratio[contrast] == pytest.approx(limit, rel=RTOL)


def high_precision_tensor(land, temperature, digits=60):
    """The same formula solved densely in ``digits``-digit arithmetic (mpmath): a reference
    free of rounding and of the reduction."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = digits
    lat = land.lattice
    kT = mpmath.mpf(landscape.BOLTZMANN_EV) * temperature
    i, j = lat.bond_ends.T
    vectors = lat.bond_vectors
    n, d = lat.n_sites, lat.dim
    energy = [mpmath.mpf(float(e)) for e in land.site_energy]
    g = [
        mpmath.exp(-max(mpmath.mpf(float(s)), energy[a], energy[c]) / kT)
        for s, a, c in zip(land.saddle_energy, i, j, strict=True)
    ]
    laplacian, rhs = mpmath.zeros(n, n), mpmath.zeros(n, d)
    for b, (a, c) in enumerate(zip(i, j, strict=True)):
        laplacian[a, a] += g[b]
        laplacian[c, c] += g[b]
        laplacian[a, c] -= g[b]
        laplacian[c, a] -= g[b]
        for k in range(d):
            rhs[a, k] += g[b] * vectors[b, k]
            rhs[c, k] -= g[b] * vectors[b, k]
    # one node pinned (these landscapes are connected)
    columns = [mpmath.lu_solve(laplacian[1:, 1:], rhs[1:, k]) for k in range(d)]
    u = [[mpmath.mpf(0)] * d] + [[columns[k][r] for k in range(d)] for r in range(n - 1)]
    flux = [
        [vectors[b, k] + u[c][k] - u[a][k] for k in range(d)]
        for b, (a, c) in enumerate(zip(i, j, strict=True))
    ]
    weights = sum(mpmath.exp(-e / kT) for e in energy)
    return (
        np.array(
            [
                [
                    float(sum(g[b] * flux[b][p] * flux[b][q] for b in range(len(g))) / weights)
                    for q in range(d)
                ]
                for p in range(d)
            ]
        )
        * land.attempt_frequency
    )


@pytest.mark.parametrize(
    ("kind", "cells"), [("square", (3, 3)), ("honeycomb", (3, 3)), ("bcc", (2, 2, 2))]
)
def test_extreme_disorder_against_high_precision(kind, cells):
    """Site energies normal(0, 0.05) eV and saddles uniform in 0.3–2.0 eV at 300 K (rates
    spanning 1e28: the reduction is at work) against a 60-digit dense solve: diagonal within
    1e-6 (measured ≤ 3e-8 on such landscapes), off-diagonal within 1e-5 of √(D_aa D_bb)
    (measured ≤ 4e-6: bonds cut for one axis still matter for the cross term)."""
    lat = lattice.build(kind, cells, hop_distance=1.0)
    generator = rng(1)
    land = make_landscape(
        lat, generator.normal(0, 0.05, lat.n_sites), generator.uniform(0.3, 2.0, lat.n_bonds)
    )
    reference = high_precision_tensor(land, 300.0)
    tensor = network.diffusion_tensor(land, 300.0)
    np.testing.assert_allclose(np.diag(tensor), np.diag(reference), rtol=1e-6)
    scale = np.sqrt(np.outer(np.diag(reference), np.diag(reference)))
    assert np.all(np.abs(tensor - reference) <= 1e-5 * scale)


def test_energy_shift_frequency_and_solver_invariance():
    """A random mixed landscape (bcc 5³): shifting every energy by 1 eV leaves D unchanged,
    D scales with ν, the tensor is symmetric positive definite, and the direct and CG
    solvers agree, all to 1e-9."""
    lat = lattice.build("bcc", (5, 5, 5), hop_distance=2.0)
    land = drawn_landscape(
        lat,
        8,
        {"dist": "normal", "mean": 0.0, "sigma": 0.05},
        {"dist": "uniform", "low": 0.2, "high": 0.5},
    )
    tensor = network.diffusion_tensor(land, 350.0)
    shifted = make_landscape(lat, land.site_energy + 1.0, land.saddle_energy + 1.0)
    np.testing.assert_allclose(
        network.diffusion_tensor(shifted, 350.0), tensor, rtol=RTOL, atol=RTOL * tensor.max()
    )
    slower = make_landscape(lat, land.site_energy, land.saddle_energy, nu=NU / 7)
    np.testing.assert_allclose(
        7 * network.diffusion_tensor(slower, 350.0), tensor, rtol=RTOL, atol=RTOL * tensor.max()
    )
    for solver in ("direct", "cg"):
        np.testing.assert_allclose(
            network.diffusion_tensor(land, 350.0, solver=solver),
            tensor,
            rtol=RTOL,
            atol=RTOL * tensor.max(),
        )
    np.testing.assert_array_equal(tensor, tensor.T)
    assert np.linalg.eigvalsh(tensor).min() > 0


@pytest.mark.parametrize(
    ("change", "word"),
    [
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -300.0}, "temperature"),
        ({"temperature": math.nan}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"solver": "lu"}, "solver"),
        ({"landscape": "not a landscape"}, "Landscape"),
        ({"blocked": np.ones(16, bool)}, "blocked"),
        ({"saddle_energy": np.zeros(5)}, "saddle_energy"),
        ({"site_energy": np.full(16, np.nan)}, "site_energy"),
        ({"nu": 0.0}, "attempt_frequency"),
    ],
)
def test_bad_arguments_are_named(change, word):
    lat = lattice.build("square", (4, 4))
    fields = {"site_energy": 0.0, "saddle_energy": 0.3, "blocked": None, "nu": NU}
    fields.update({k: v for k, v in change.items() if k in fields})
    land = change.get("landscape")
    if land is None:
        if np.shape(fields["saddle_energy"]) not in ((), (lat.n_bonds,)):
            land = make_landscape(lat, 0.0, 0.3)
            land = landscape.Landscape(
                lat, land.blocked, land.amorphous, land.site_energy, fields["saddle_energy"], NU
            )
        else:
            land = make_landscape(
                lat, fields["site_energy"], fields["saddle_energy"], fields["blocked"], fields["nu"]
            )
    kwargs = {"solver": change["solver"]} if "solver" in change else {}
    with pytest.raises(ValueError, match=word):
        network.diffusion_tensor(land, change.get("temperature", 300.0), **kwargs)


def test_unconverged_solve_raises(monkeypatch):
    """A solve that misses the relative residual 1e-8 is refused, not returned."""
    lat = lattice.build("cubic", (5, 5, 5))
    land = drawn_landscape(lat, 2, 0.0, {"dist": "uniform", "low": 0.2, "high": 0.5})
    monkeypatch.setattr(network, "CG_MAX_ITERATIONS", 2)
    with pytest.raises(RuntimeError, match="did not converge"):
        network.diffusion_tensor(land, 300.0, solver="cg")
    assert network.diffusion_coefficient(land, 300.0, solver="direct") > 0


# --------------------------------------------------------------------------- solvers


def nafepo4(kind, cells, phi, microstructure="random", seed=0, blocked_fraction=0.0):
    """The NaFePO4 family of docs/results.md: crystal site 0 eV, saddle 1.6 eV; amorphous
    sites normal(0.05, 0.03) eV, saddles normal(0.76, 0.10) eV; interface 1.15 eV; a = 3.4 Å
    (correlation length 8 Å for correlated domains)."""
    lat = lattice.build(kind, cells, hop_distance=3.4)
    generator = rng(seed)
    blocked = landscape.blocked_sites(lat, blocked_fraction, generator)
    mask = landscape.microstructure(
        lat, microstructure, phi, generator, blocked=blocked, correlation_length=8.0
    )
    return landscape.generate(
        lat,
        crystal=landscape.Phase(Distribution.constant(0.0), Distribution.constant(1.6)),
        amorphous=landscape.Phase(
            Distribution.parse({"dist": "normal", "mean": 0.05, "sigma": 0.03}),
            Distribution.parse({"dist": "normal", "mean": 0.76, "sigma": 0.10}),
        ),
        amorphous_mask=mask,
        rng=generator,
        interface_saddle=Distribution.constant(1.15),
        blocked=blocked,
    )


SOLVER_CASES = {
    # NaFePO4 mixtures through the threshold: conductance contrasts of 1e15 and more, the
    # critical-path reduction at work on every one
    "cubic 12³ random φ=0.1 300 K": (lambda: nafepo4("cubic", (12,) * 3, 0.1), 300.0),
    "cubic 12³ random φ=0.3 300 K": (lambda: nafepo4("cubic", (12,) * 3, 0.3), 300.0),
    "cubic 12³ random φ=0.3 600 K": (lambda: nafepo4("cubic", (12,) * 3, 0.3), 600.0),
    "cubic 12³ random φ=0.5 300 K": (lambda: nafepo4("cubic", (12,) * 3, 0.5), 300.0),
    "cubic 16³ random φ=0.3 300 K": (lambda: nafepo4("cubic", (16,) * 3, 0.3, seed=1), 300.0),
    "cubic 12³ correlated φ=0.1": (lambda: nafepo4("cubic", (12,) * 3, 0.1, "correlated"), 300.0),
    "cubic 12³ correlated φ=0.2": (lambda: nafepo4("cubic", (12,) * 3, 0.2, "correlated"), 300.0),
    "cubic 10³ random φ=0.4, 20 % blocked": (
        lambda: nafepo4("cubic", (10,) * 3, 0.4, blocked_fraction=0.2),
        300.0,
    ),
    "bcc 6³ random φ=0.3": (lambda: nafepo4("bcc", (6,) * 3, 0.3), 300.0),
    "fcc 5³ random φ=0.2": (lambda: nafepo4("fcc", (5,) * 3, 0.2), 300.0),
    "square 40² random φ=0.5": (lambda: nafepo4("square", (40, 40), 0.5), 300.0),
    "triangular 24² random φ=0.4": (lambda: nafepo4("triangular", (24, 24), 0.4), 300.0),
    "honeycomb 20² random φ=0.6": (lambda: nafepo4("honeycomb", (20, 20), 0.6), 300.0),
    "chain 200 all amorphous": (lambda: nafepo4("chain", (200,), 1.0), 300.0),
    # fast finite clusters at contrast 1e20 (contracted) and moderate disorder (not)
    "cubic 8³ fast clusters 1e20": (lambda: random_clusters(1e20), 300.0),
    "bcc 5³ moderate disorder": (
        lambda: drawn_landscape(
            lattice.build("bcc", (5, 5, 5), hop_distance=2.0),
            8,
            {"dist": "normal", "mean": 0.0, "sigma": 0.05},
            {"dist": "uniform", "low": 0.2, "high": 0.5},
        ),
        350.0,
    ),
}


@pytest.mark.parametrize("case", list(SOLVER_CASES))
def test_amg_agrees_with_the_direct_solve(case):
    """The AMG-preconditioned CG solver and SuperLU give the same tensor to 1e-8 relative:
    every entry within 1e-8 of the largest diagonal entry, and every nonzero diagonal entry
    within 1e-8 of itself (measured: ≤ 4e-9, where the direct solve with two refinement
    steps is the less accurate one). Both report a residual below RESIDUAL_TOL."""
    make, temperature = SOLVER_CASES[case]
    land = make()
    direct = network.solve(land, temperature, solver="direct")
    amg = network.solve(land, temperature, solver="amg")
    assert direct.solver in ("direct", "none") and amg.solver in ("amg", "none")
    reference = direct.tensor
    largest = np.abs(np.diag(reference)).max()
    assert largest > 0
    assert np.abs(amg.tensor - reference).max() <= 1e-8 * largest
    diagonal = np.diag(reference)
    nonzero = diagonal > 0
    np.testing.assert_allclose(np.diag(amg.tensor)[nonzero], diagonal[nonzero], rtol=1e-8)
    assert amg.residual < network.RESIDUAL_TOL and direct.residual < network.RESIDUAL_TOL
    if amg.solver == "amg":
        assert amg.iterations > 0 and direct.iterations == 0


def test_auto_picks_the_solver_by_size(monkeypatch):
    """ "auto" factorizes a small system and hands a large one to AMG (3D: above
    DIRECT_MAX_UNKNOWNS unknowns); the Solution says which ran, how large the system was,
    whether the reduction was made, and the tensor equals diffusion_tensor's."""
    land = nafepo4("cubic", (12,) * 3, 0.3)
    small = network.solve(land, 300.0)
    assert small.unknowns > 1000 and small.contracted
    monkeypatch.setitem(network.DIRECT_MAX_UNKNOWNS, 3, small.unknowns + 1)
    assert network.solve(land, 300.0).solver == "direct"
    monkeypatch.setitem(network.DIRECT_MAX_UNKNOWNS, 3, small.unknowns - 1)
    large = network.solve(land, 300.0)
    assert large.solver == "amg" and large.iterations > 0
    np.testing.assert_array_equal(large.tensor, network.diffusion_tensor(land, 300.0))


def test_nothing_to_solve():
    """Every other site of a ring blocked: no bond conducts, D = 0 and no solver ran."""
    lat = lattice.build("chain", (10,), hop_distance=1.0)
    solution = network.solve(make_landscape(lat, 0.0, 0.3, np.arange(10) % 2 == 0), 300.0)
    assert solution.solver == "none" and solution.residual == 0.0
    assert not solution.tensor.any()


def reference_percolation_conductances(n, i, j, images, conductance):
    """The critical-path levels by the plain union–find of the previous version: bonds in
    decreasing conductance, each site carrying its image relative to its root."""
    parent, offset = list(range(n)), [np.zeros(images.shape[1], dtype=int) for _ in range(n)]

    def find(k):
        total = np.zeros(images.shape[1], dtype=int)
        while parent[k] != k:
            total = total + offset[k]
            k = parent[k]
        return k, total

    g_c = np.zeros(images.shape[1])
    found = np.zeros(images.shape[1], dtype=bool)
    for b in np.argsort(-conductance, kind="stable"):
        if conductance[b] <= 0:
            break
        (ri, oi), (rj, oj) = find(i[b]), find(j[b])
        if ri == rj:
            winds = (oi + images[b] - oj) != 0
            g_c[winds & ~found] = conductance[b]
            found |= winds
        else:
            parent[rj], offset[rj] = ri, oi + images[b] - oj
    return g_c


@pytest.mark.parametrize(
    ("kind", "cells", "phi"),
    [
        ("cubic", (6, 6, 6), 0.3),
        ("cubic", (2, 3, 4), 0.5),  # two bonds join the same sites across a 2-cell box
        ("square", (8, 8), 0.5),
        ("honeycomb", (5, 4), 0.7),
        ("triangular", (6, 6), 0.3),
        ("bcc", (3, 3, 3), 0.4),
        ("chain", (12,), 1.0),
    ],
)
def test_vectorized_critical_path_equals_the_union_find(kind, cells, phi):
    """The percolation conductance per axis found by bisection over vectorized winding
    tests equals the one of a bond-by-bond union–find with image offsets, exactly."""
    for seed in range(3):
        land = nafepo4(kind, cells, phi, seed=seed)
        conductance, _ = network._conductances_and_weights(land, 300.0)
        lat = land.lattice
        i, j = lat.bond_ends.T
        expected = reference_percolation_conductances(
            lat.n_sites, i, j, lat.bond_images, conductance
        )
        got = network._percolation_conductances(lat.n_sites, i, j, lat.bond_images, conductance)
        np.testing.assert_array_equal(got, expected)


# --------------------------------------------------------------------------- against kMC


def kmc_versus_network(land, temperature, seed):
    """z of 8 groups of 2000 independent walkers (2000 hops each) against the exact D."""
    exact = network.diffusion_coefficient(land, temperature)
    traj = kernel.simulate(
        land, temperature, rng(seed), count=2000, exclusion=False, hops_per_ion=2000, frames=40
    )
    observables = analysis.transport(
        traj.times,
        traj.positions,
        temperature=temperature,
        volume=traj.volume,
        hop_distance=traj.hop_distance,
    )
    assert observables["diffusive"]  # the MSD is linear over the fit window
    groups = [
        analysis.diffusion_coefficient(traj.times, part, hop_distance=traj.hop_distance)
        for part in np.array_split(traj.positions, 8, axis=1)
    ]
    mean, sem = analysis.replica_mean(np.asarray(groups))
    assert sem < 0.03 * exact  # the test can tell a 12 % error from chance
    return (mean - exact) / sem


def test_kmc_agrees_on_random_barriers():
    """Cubic 10³, a = 2.5 Å, saddles uniform in 0.25–0.40 eV, 400 K: kMC D per realization
    equals the network D (≈ 6.5e9 Å²/s) within |z| < 4."""
    lat = lattice.build("cubic", (10, 10, 10), hop_distance=2.5)
    land = drawn_landscape(lat, 1, 0.0, {"dist": "uniform", "low": 0.25, "high": 0.40})
    assert abs(kmc_versus_network(land, 400.0, 11)) < Z_MAX


def test_kmc_agrees_on_random_traps():
    """Cubic 10³, a = 2.5 Å, site energies normal(0, 0.04) eV, common saddle 0.3 eV, 300 K:
    kMC D equals the network D (≈ 1.8e8 Å²/s) within |z| < 4."""
    lat = lattice.build("cubic", (10, 10, 10), hop_distance=2.5)
    land = drawn_landscape(lat, 2, {"dist": "normal", "mean": 0.0, "sigma": 0.04}, 0.3)
    assert abs(kmc_versus_network(land, 300.0, 12)) < Z_MAX


def test_kmc_agrees_on_a_crystal_amorphous_mixture():
    """Cubic 10³, a = 2.5 Å, φ = 0.6 random amorphous sites; crystal saddle 0.5 eV,
    amorphous saddles normal(0.3, 0.03) eV, interface 0.4 eV, site energies 0; 500 K: kMC D
    equals the network D (≈ 1.8e10 Å²/s) within |z| < 4."""
    lat = lattice.build("cubic", (10, 10, 10), hop_distance=2.5)
    generator = rng(3)
    mask = landscape.microstructure(lat, "random", 0.6, generator)
    land = landscape.generate(
        lat,
        crystal=landscape.Phase(Distribution.constant(0.0), Distribution.constant(0.5)),
        amorphous=landscape.Phase(
            Distribution.constant(0.0),
            Distribution.parse({"dist": "normal", "mean": 0.3, "sigma": 0.03}),
        ),
        amorphous_mask=mask,
        rng=generator,
        interface_saddle=Distribution.constant(0.4),
    )
    assert abs(kmc_versus_network(land, 500.0, 13)) < Z_MAX


# --------------------------------------------------------------------------- config path

CONFIG = {
    "name": "network-check",
    "lattice": {"kind": "bcc", "cells": [5, 5, 5], "hop_distance": 3.0, "blocked_fraction": 0.05},
    "ions": {"species": "Li", "concentration": 0.1, "exclusion": False},
    "crystal": {"attempt_frequency": 2e13, "site_energy": 0.0, "saddle_energy": 0.6},
    "amorphous": {
        "site_energy": {"dist": "normal", "mean": 0.0, "sigma": 0.04},
        "saddle_energy": {"dist": "normal", "mean": 0.4, "sigma": 0.05},
    },
    "interface": {"saddle_energy": 0.45},
    "microstructure": {"kind": "random", "amorphous_fraction": 0.5},
    "run": {"method": "network", "temperature": 450.0, "replicas": 2, "seed": 7},
}


def test_network_task_through_the_config(tmp_path):
    """run_task with run.method = "network": observables equal a direct solve of the same
    landscape (built from the task's landscape seed exactly as for kMC), zero frames, the
    landscape's identity and activation range, and the task data round-trip through the task
    file. (The network solve is the dilute limit: the config refuses it with exclusion.)"""
    cfg = config.parse_config(CONFIG)
    task = config.expand_tasks(cfg)[0]
    data = experiment.run_task(task)

    land = experiment.build_landscape(task.config, rng(task.landscape_seed))
    exact = network.diffusion_coefficient(land, 450.0) * 1e-16  # cm²/s
    n_ions = round(0.1 * len(land.free_sites))
    obs = data.observables
    assert obs["D_tracer"] == pytest.approx(exact, rel=1e-12)
    assert obs["D_jump"] == obs["D_tracer"] and obs["haven_ratio"] == 1.0
    sigma = analysis.nernst_einstein(exact, n_ions / land.lattice.volume, 450.0)
    assert obs["conductivity"] == pytest.approx(sigma, rel=1e-12)
    assert (obs["hops"], obs["simulated_time"], obs["diffusive"]) == (0, 0.0, 1)
    assert obs["diffusive_reason"] == ""
    assert (obs["Ea_lower"], obs["Ea_upper"]) == land.activation_range()
    assert data.parameters["landscape"] == task.landscape == 0
    assert data.parameters["landscape_spawn_key"] == [0, 0]
    assert data.parameters["landscape_digest"] == land.digest()
    assert math.isnan(obs["fit_start"]) and math.isnan(obs["fit_stop"])
    assert obs["kernel_seconds"] > 0
    assert obs["solver"] in ("direct", "amg") and 0 <= obs["solver_residual"] < 1e-8
    assert data.times.shape == (0,)
    assert data.positions.shape == (0, n_ions, 3) and data.sites.shape == (0, n_ions)
    np.testing.assert_allclose(data.box, land.lattice.box)

    # a second replica is a different landscape
    other = experiment.run_task(config.expand_tasks(cfg)[1]).observables["D_tracer"]
    assert other != obs["D_tracer"]

    path = tmp_path / "task-000000.h5md"
    write_task(path, data)
    back = read_task(path)
    assert back.positions.shape == (0, n_ions, 3)
    assert back.observables.keys() == obs.keys()
    for key, value in obs.items():
        if isinstance(value, str):
            assert back.observables[key] == value
        else:
            assert back.observables[key] == pytest.approx(value, nan_ok=True)
    assert back.parameters == data.parameters
