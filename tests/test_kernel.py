"""The kMC kernel against the exact results of MODEL.md.

Every statistical test names the exact value and accepts |z| < 4, with the standard error
taken from independent replicas (independent runs, or independent groups of walkers when a
single landscape realization is tested).
"""

import dataclasses

import numpy as np
import pytest
from scipy import stats

from kmc import _sites, analysis, config, experiment, kernel, landscape, lattice
from kmc.distributions import Distribution

T = 300.0
KT = landscape.BOLTZMANN_EV * T
NU = 1e13
Z_MAX = 4.0


def uniform_landscape(lat, saddle=0.3):
    phase = landscape.Phase(Distribution.constant(0.0), Distribution.constant(saddle))
    mask = np.zeros(lat.n_sites, dtype=bool)
    return landscape.generate(lat, crystal=phase, amorphous=phase, amorphous_mask=mask, rng=rng(0))


def disordered_landscape(lat, seed, site_energy, saddle_energy):
    phase = landscape.Phase(Distribution.parse(site_energy), Distribution.parse(saddle_energy))
    mask = np.ones(lat.n_sites, dtype=bool)
    crystal = landscape.Phase(Distribution.constant(0.0), Distribution.constant(0.3))
    return landscape.generate(
        lat, crystal=crystal, amorphous=phase, amorphous_mask=mask, rng=rng(seed)
    )


def rng(seed):
    return np.random.default_rng(seed)


def tracer_d(traj, **kwargs):
    return analysis.diffusion_coefficient(
        traj.times, traj.positions, hop_distance=traj.hop_distance, **kwargs
    )


def group_estimates(traj, groups=8, **kwargs):
    """D of independent groups of walkers of one run: replicas on one landscape."""
    return [
        analysis.diffusion_coefficient(traj.times, part, hop_distance=traj.hop_distance, **kwargs)
        for part in np.array_split(traj.positions, groups, axis=1)
    ]


def z_score(values, exact, exact_error=0.0):
    mean, sem = analysis.replica_mean(np.asarray(values))
    return (mean - exact) / np.hypot(sem, exact_error)


@pytest.mark.parametrize("kind", lattice.KINDS)
def test_free_walker(kind):
    """D = z Γ a² / (2d) with a = 2 Å, from 8 replicas of 300 walkers."""
    lat = lattice.build(kind, (12,) * lattice.DIMENSION[kind], hop_distance=2.0)
    land = uniform_landscape(lat)
    gamma = NU * np.exp(-0.3 / KT)
    exact = lat.coordination * gamma * 2.0**2 / (2 * lat.dim)
    values = []
    for seed in range(8):
        traj = kernel.simulate(
            land, T, rng(seed), count=300, exclusion=False, hops_per_ion=300, frames=40
        )
        values.append(tracer_d(traj))
    assert abs(z_score(values, exact)) < Z_MAX


def test_lattice_gas_square_half_filled():
    """Square lattice, uniform rates, c = 0.5: D*/(D0 (1 − c)) = f(0.5) = 0.7128 ± 0.003
    (the literature value's own error is added in quadrature to the replica error); 16
    replicas of 512 ions."""
    lat = lattice.build("square", (32, 32))
    land = uniform_landscape(lat)
    d0 = NU * np.exp(-0.3 / KT)  # z Γ a²/(2d) = Γ a² on the square lattice, a = 1
    tracer = []
    for seed in range(16):
        traj = kernel.simulate(land, T, rng(seed), concentration=0.5, hops_per_ion=600, frames=60)
        tracer.append(tracer_d(traj) / (0.5 * d0))
    assert abs(z_score(tracer, 0.7128, exact_error=0.003)) < Z_MAX


@pytest.mark.parametrize("concentration", [0.2, 0.5, 0.8])
def test_collective_diffusion_at_any_filling(concentration):
    """Uniform rates: the centre of mass jumps by a at rate Γ per ion–vacancy pair, so
    D_σ = D0 (N_s − N)/(N_s − 1) exactly on N_s sites ((1 − c) D0 for a large lattice), on
    both sides of half filling (above it the kernel drives the vacancies). One replica's
    D_σ rests on a single centre of mass, so the test takes 512 small replicas (error ≈ 3 %)."""
    lat = lattice.build("square", (8, 8))
    land = uniform_landscape(lat)
    n_ions = round(concentration * lat.n_sites)
    exact = (lat.n_sites - n_ions) / (lat.n_sites - 1)
    d0 = NU * np.exp(-0.3 / KT)
    collective = []
    for seed in range(512):
        traj = kernel.simulate(
            land, T, rng(seed), count=n_ions, hops_per_ion=500, equilibration_hops_per_ion=0
        )
        collective.append(tracer_d(traj, collective=True) / d0)
    assert abs(z_score(collective, exact)) < Z_MAX


@pytest.mark.parametrize(
    ("cells", "replicas", "hops_per_ion"),
    [(8, 12, 800), pytest.param(10, 32, 2000, marks=pytest.mark.slow)],
)
def test_single_vacancy_correlation_factor(cells, replicas, hops_per_ion):
    """One vacancy on simple cubic: every vacancy jump (rate 6Γ) moves one of the N−1 ions,
    so D* = f Γ a² / (N − 1) with the tracer correlation factor f = 0.6531. The kernel
    drives the one vacancy, so every attempt near it can succeed. The fit window needs a
    few hundred jumps per ion to be past the correlated regime; the 8³ box shifts f by less
    than the error (≈ 0.005), the slow 10³ run resolves it to ≈ 0.002. A random placement is
    already in equilibrium."""
    lat = lattice.build("cubic", (cells,) * 3)
    land = uniform_landscape(lat)
    gamma = NU * np.exp(-0.3 / KT)
    n_ions = lat.n_sites - 1
    f = []
    for seed in range(replicas):
        traj = kernel.simulate(
            land, T, rng(seed), count=n_ions, hops_per_ion=hops_per_ion,
            equilibration_hops_per_ion=0, frames=50,
        )  # fmt: skip
        f.append(tracer_d(traj) * n_ions / gamma)
    assert abs(z_score(f, 0.6531)) < Z_MAX


def test_random_traps():
    """Common saddle, Gaussian site energies with σ = kT on simple cubic (D = Γ a²):
    per realization D = a² / ⟨1/Γ_i⟩ over its sites (error from 8 groups of walkers);
    over 8 realizations D / D_clean = exp(−σ²/2(kT)²) = exp(−1/2)."""
    lat = lattice.build("cubic", (12, 12, 12))
    saddle = 0.3
    d_clean = NU * np.exp(-saddle / KT)
    ratios = []
    for seed in range(8):
        land = disordered_landscape(lat, seed, {"dist": "normal", "mean": 0.0, "sigma": KT}, saddle)
        gamma_i = NU * np.exp(-(saddle - land.site_energy) / KT)
        exact = 1.0 / np.mean(1.0 / gamma_i)
        traj = kernel.simulate(
            land, T, rng(100 + seed), count=800, exclusion=False, hops_per_ion=400, frames=40
        )
        assert abs(z_score(group_estimates(traj), exact)) < Z_MAX
        ratios.append(tracer_d(traj) / d_clean)
    assert abs(z_score(ratios, np.exp(-0.5))) < Z_MAX


def test_random_barriers_on_a_ring():
    """1D ring of 24 sites with random bond saddles: D = a² / ⟨1/Γ_b⟩ (harmonic mean of the
    bond rates) per realization, error from 8 groups of walkers; 3 realizations."""
    lat = lattice.build("chain", (24,), hop_distance=1.5)
    for seed in range(3):
        land = disordered_landscape(lat, seed, 0.0, {"dist": "uniform", "low": 0.25, "high": 0.35})
        gamma_b = NU * np.exp(-land.saddle_energy / KT)
        exact = 1.5**2 / np.mean(1.0 / gamma_b)
        traj = kernel.simulate(
            land, T, rng(seed), count=400, exclusion=False, hops_per_ion=5000, frames=50
        )
        assert abs(z_score(group_estimates(traj), exact)) < Z_MAX


def test_detailed_balance_gives_boltzmann_occupation():
    """Independent walkers all started on site 0 of a 4×4 landscape with random energies and
    saddles: after equilibration the occupation is p_i ∝ exp(−ε_i/kT). Each of the 20 000
    walkers is an independent sample at the last frame, so the site counts are multinomial:
    a chi-square test at significance 1e-4."""
    lat = lattice.build("square", (4, 4))
    land = disordered_landscape(
        lat,
        3,
        {"dist": "normal", "mean": 0.0, "sigma": 0.05},
        {"dist": "uniform", "low": 0.1, "high": 0.3},
    )
    n = 20_000
    traj = kernel.simulate(
        land, T, rng(4), count=n, exclusion=False, hops_per_ion=100, equilibration_hops_per_ion=100,
        frames=10, initial_sites=np.zeros(n, dtype=np.int64),
    )  # fmt: skip
    p = np.exp(-land.site_energy / KT)
    expected = n * p / p.sum()
    observed = np.bincount(traj.sites[-1], minlength=lat.n_sites)
    assert stats.chisquare(observed, expected).pvalue > 1e-4
    # the test has the power to tell: the site counts of a uniform occupation fail it
    assert stats.chisquare(np.full(lat.n_sites, n / lat.n_sites), expected).pvalue < 1e-4


@pytest.mark.parametrize("exclusion", [False, True])
def test_equilibration_keeps_boltzmann_occupation(exclusion):
    """Equilibration must end at a time, not after a number of hops: the state after a fixed
    number of hops is weighted by the escape rates (jump-chain distribution), here strongly,
    as the saddles span 0.1–0.4 eV. The first production frame must hold the Boltzmann
    occupation p_i ∝ exp(−ε_i/kT): 20 000 independent walkers (which start from it), or one
    ion on its own (the lattice gas, 4 000 replicas, started anywhere and given time to
    relax), each one independent sample; chi-square at 1e-4."""
    lat = lattice.build("square", (4, 4))
    land = disordered_landscape(
        lat,
        5,
        {"dist": "normal", "mean": 0.0, "sigma": 0.05},
        {"dist": "uniform", "low": 0.1, "high": 0.4},
    )
    p = np.exp(-land.site_energy / KT)
    if exclusion:
        first = [
            kernel.simulate(land, T, rng(seed), count=1, hops_per_ion=1, frames=2,
                            equilibration_hops_per_ion=2001).sites[0, 0]
            for seed in range(4000)
        ]  # fmt: skip
    else:
        traj = kernel.simulate(
            land, T, rng(6), count=20_000, exclusion=False, hops_per_ion=1, frames=2,
            equilibration_hops_per_ion=51,
        )  # fmt: skip
        first = traj.sites[0]
    observed = np.bincount(first, minlength=lat.n_sites)
    assert stats.chisquare(observed, len(first) * p / p.sum()).pvalue > 1e-4


def test_per_axis_saddle_makes_diffusion_one_dimensional():
    """Crystal saddles (0.25, 0.45, 0.45) eV on simple cubic: D_xx = Γ_x a² and the
    transverse D are smaller by exp(−0.2 eV/kT) ≈ 4e-4 (bounded here by 1e-2)."""
    lat = lattice.build("cubic", (10, 10, 10), hop_distance=3.0)
    axes = tuple(Distribution.constant(s) for s in (0.25, 0.45, 0.45))
    crystal = landscape.Phase(Distribution.constant(0.0), axes)
    glass = landscape.Phase(Distribution.constant(0.0), Distribution.constant(0.3))
    land = landscape.generate(
        lat,
        crystal=crystal,
        amorphous=glass,
        amorphous_mask=np.zeros(lat.n_sites, bool),
        rng=rng(0),
    )
    traj = kernel.simulate(land, T, rng(1), count=800, exclusion=False, hops_per_ion=400, frames=40)
    tensor = np.array(group_estimates(traj, per_axis=True))
    exact_xx = NU * np.exp(-0.25 / KT) * 3.0**2
    assert abs(z_score(tensor[:, 0], exact_xx)) < Z_MAX
    assert np.all(tensor.mean(0)[1:] < 1e-2 * exact_xx)


def test_same_generator_same_trajectory():
    lat = lattice.build("honeycomb", (6, 6))
    land = disordered_landscape(lat, 1, {"dist": "normal", "mean": 0, "sigma": 0.03}, 0.3)
    for exclusion in (True, False):
        a, b, c = (
            kernel.simulate(
                land, T, rng(s), concentration=0.3, exclusion=exclusion, hops_per_ion=50, frames=10
            )
            for s in (7, 7, 8)
        )
        assert np.array_equal(a.positions, b.positions) and a.hops == b.hops
        assert not np.array_equal(a.positions, c.positions)


# Bounded work (run.work_budget): a chain of 8 sites whose sites 0 and 1 form a pair joined
# by a low saddle, entered over the bonds 1-2 and 7-0; every other saddle at 1.2 eV.


def trap_chain(pair_energy, pair_saddle, entry_saddle):
    lat = lattice.build("chain", (8,))
    site = np.zeros(lat.n_sites)
    site[[0, 1]] = pair_energy
    saddle = np.full(lat.n_bonds, 1.2)
    saddle[1], saddle[[0, 2]] = pair_saddle, entry_saddle  # bond b joins sites b - 1 and b
    return dataclasses.replace(uniform_landscape(lat), site_energy=site, saddle_energy=saddle)


def test_an_ion_trapped_late_in_the_equilibration_stops_at_the_budget():
    """A deep pair (−0.3 eV, rattling over 0.6 eV) entered over 0.9 eV and left over 1.2 eV,
    like every other hop: one ion starting outside it falls in during the first half of
    the equilibration, which is timed by ~1.2 eV hops; the second half, as long again, would
    rattle ~e^(0.6 eV / kT) ≈ 10^10 times per hop of the first. It stops after
    work_budget × its 100 planned hops instead, says so, and the run stays within budget."""
    land = trap_chain(-0.3, 0.3, 0.9)
    for seed in range(3):
        traj = kernel.simulate(
            land, T, rng(seed), count=1, initial_sites=np.array([4]), hops_per_ion=2000,
            equilibration_hops_per_ion=200, frames=10, work_budget=100,
        )  # fmt: skip
        assert traj.budget_exceeded.startswith("budget exceeded in the equilibration")
        assert "ions found faster sites" in traj.budget_exceeded
        assert traj.planned_work == 2200
        assert traj.work <= 100 * traj.planned_work
        # the production is timed by the rate the capped half measured: it runs in full
        assert traj.times.size == 10


def test_walkers_started_in_a_rarely_visited_fast_pair_stop_at_the_budget():
    """A pair 0.3 eV above the host (Boltzmann weight ~1e-5 per site) joined by a 0.5 eV
    saddle and left over 1.5 eV: the planned hop rate, exact for walkers from the Boltzmann
    start, is dominated by the pair's ~4e9 Hz rattling times its small weight, ~1e4 Hz;
    walkers started inside the pair rattle ~1e5 times more than planned. The whole run may
    make work_budget × ions × (200 + 2000) hops: it stops there with no frame kept."""
    land = trap_chain(0.3, 0.5, 1.5)
    traj = kernel.simulate(
        land, T, rng(0), count=4, exclusion=False, initial_sites=np.array([0, 1, 0, 1]),
        hops_per_ion=2000, equilibration_hops_per_ion=200, frames=10, work_budget=50,
    )  # fmt: skip
    assert traj.budget_exceeded.startswith("budget exceeded in the run")
    assert traj.work == 50 * 4 * 2200
    assert traj.times.size == 0 and traj.positions.shape == (0, 4, 1)


@pytest.mark.parametrize("exclusion", [True, False])
def test_a_run_within_its_budget_is_unchanged_by_it(exclusion):
    """The default budget, an unlimited one and the progress counter change no hop of a run
    that stays within its plan, and the counter ends at the attempts made."""
    lat = lattice.build("square", (8, 8))
    land = disordered_landscape(lat, 3, {"dist": "normal", "mean": 0, "sigma": 0.03}, 0.3)
    progress = np.zeros(1, dtype=np.int64)
    runs = [
        kernel.simulate(
            land, T, rng(5), concentration=0.4, exclusion=exclusion, hops_per_ion=100,
            frames=10, **kwargs,
        )
        for kwargs in ({}, {"work_budget": np.inf}, {"progress": progress})
    ]  # fmt: skip
    for traj in runs:
        assert traj.budget_exceeded == ""
        np.testing.assert_array_equal(traj.positions, runs[0].positions)
        assert traj.hops == runs[0].hops and traj.work == runs[0].work
    assert progress[0] == runs[2].work >= runs[2].hops


def test_exclusion_is_respected_and_hops_are_nearest_neighbour():
    lat = lattice.build("fcc", (4, 4, 4), hop_distance=2.0)
    land = disordered_landscape(lat, 2, {"dist": "normal", "mean": 0, "sigma": 0.05}, 0.3)
    traj = kernel.simulate(land, T, rng(3), concentration=0.6, hops_per_ion=100, frames=400)
    assert all(len(np.unique(frame)) == traj.n_ions for frame in traj.sites)
    # positions and sites agree, and the hop count is about 100 per ion
    wrapped = np.mod(traj.positions, traj.box)
    assert np.allclose(
        np.mod(lat.positions[traj.sites] - wrapped + 1e-9, traj.box), 1e-9, atol=1e-6
    )
    assert 0.5 < traj.hops / (100 * traj.n_ions) < 2.0


@pytest.mark.parametrize("kind", lattice.KINDS)
@pytest.mark.parametrize("concentration", [None, 0.3, 0.7])
def test_every_hop_goes_to_a_lattice_neighbour_along_its_hop_vector(kind, concentration):
    """Frames far denser than hops, so most frame-to-frame changes are single hops: each must
    land on a neighbour of the lattice's table and move the unwrapped position by that
    direction's hop vector (walkers, ions, and vacancies driving the ions at 0.7)."""
    cells = (12,) if lattice.DIMENSION[kind] == 1 else (3,) * lattice.DIMENSION[kind]
    lat = lattice.build(kind, cells, hop_distance=1.5)
    land = disordered_landscape(lat, 4, {"dist": "normal", "mean": 0, "sigma": 0.05}, 0.3)
    amount = {"count": 3, "exclusion": False} if concentration is None else {}
    traj = kernel.simulate(
        land, T, rng(5), concentration=concentration, **amount, hops_per_ion=20, frames=2000
    )
    before, after = traj.sites[:-1].ravel(), traj.sites[1:].ravel()
    step = (traj.positions[1:] - traj.positions[:-1]).reshape(-1, lat.dim)
    moved = before != after
    direction = lat.neighbours[before[moved]] == after[moved, None]
    single = direction.any(axis=1) & np.isclose(np.linalg.norm(step[moved], axis=1), 1.5)
    assert single.mean() > 0.8  # most changes are single hops: the check below is not empty
    k = direction[single].argmax(axis=1)
    basis = before[moved][single] % lat.n_basis
    assert np.allclose(step[moved][single], lat.hop_vectors[basis, k], atol=1e-9)
    wrapped = np.mod(traj.positions, traj.box)
    assert np.allclose(
        np.mod(lat.positions[traj.sites] - wrapped + 1e-9, traj.box), 1e-9, atol=1e-6
    )


@pytest.mark.parametrize("kind", ["square", "honeycomb", "fcc"])
@pytest.mark.parametrize("concentration", [0.3, 0.8])  # ions driven / vacancies driven
def test_collective_displacement_is_the_exact_sum_of_the_ion_displacements(kind, concentration):
    """Trajectory.collective (from hops counted per basis site and direction) is
    Σ_i (r_i(t) − r_i(0)) exactly: at every 16th sample it equals the sum over the frames'
    unwrapped positions (to 1e-9 Å), on a grid whose every 16th time is a frame time. The
    samples in between are checked against a second run from the same generator with a frame
    at every fine time (the hop sequence does not depend on the frame times: the same hops
    and the same run length)."""
    cells = {"square": (8, 8), "honeycomb": (6, 6), "fcc": (4, 4, 4)}[kind]
    lat = lattice.build(kind, cells, hop_distance=1.5)
    land = disordered_landscape(lat, 4, {"dist": "normal", "mean": 0, "sigma": 0.05}, 0.3)
    frames = 30
    traj = kernel.simulate(
        land, T, rng(5), concentration=concentration, hops_per_ion=50, frames=frames
    )
    per = kernel.COLLECTIVE_PER_FRAME
    assert per == 16
    assert traj.collective_times.shape == (per * (frames - 1) + 1,)
    assert traj.collective.shape == (per * (frames - 1) + 1, lat.dim)
    assert traj.collective_times[0] == 0.0
    np.testing.assert_array_equal(traj.collective_times[::per], traj.times)
    summed = (traj.positions - traj.positions[0]).sum(axis=1)
    np.testing.assert_allclose(traj.collective[::per], summed, rtol=0, atol=1e-9)
    assert np.abs(summed).max() > 5 * lat.hop_distance  # the ions did move
    fine = kernel.simulate(
        land, T, rng(5), concentration=concentration, hops_per_ion=50, frames=per * (frames - 1) + 1
    )
    assert fine.hops == traj.hops
    np.testing.assert_array_equal(fine.times, traj.collective_times)
    fine_summed = (fine.positions - fine.positions[0]).sum(axis=1)
    np.testing.assert_allclose(traj.collective, fine_summed, rtol=0, atol=1e-9)


def test_walkers_have_no_collective_series():
    land = uniform_landscape(lattice.build("square", (6, 6)))
    traj = kernel.simulate(land, T, rng(1), count=5, exclusion=False, hops_per_ion=20, frames=10)
    assert traj.collective is None and traj.collective_times is None


@pytest.mark.parametrize(("kind", "z", "n_sites"), [("square", 4, 1024), ("triangular", 6, 2048)])
def test_d_jump_of_the_half_filled_lattice_gas_through_the_config(kind, z, n_sites):
    """Issue 9, must-show 4: uniform lattice gas, c = 0.5 on 32×32 conventional cells (square:
    N_s = 1024 sites; triangular, two sites per conventional cell: N_s = 2048), N = c N_s
    ions, the default run (2000 hops per ion, 200 equilibration, 100 frames), 8 replicas,
    config → tasks → run_task.

    Exact: with uniform rates Γ = ν exp(−S/kT) every ion hops to each empty neighbour at rate
    Γ, so the summed displacement X = Σ_i Δr_i has no drift (the vectors to the z neighbours
    sum to zero, and ion–ion pairs cancel): X is a martingale whose squared increments
    accumulate at a² Γ × (number of occupied–empty neighbour pairs). In equilibrium a given
    ordered neighbour pair is occupied–empty with probability (N/N_s)(N_s − N)/(N_s − 1), so
    d⟨|X|²⟩/dt = a² Γ z N (N_s − N)/(N_s − 1), and at every lag
    D_σ = ⟨|X|²⟩/(2 d N t) = D0 (1 − c) N_s/(N_s − 1), D0 = z Γ a²/(2d).

    D_jump must be within 4 standard errors (from the 8 replicas) of it, with a relative
    error ≤ 6 %, and at most twice D_tracer's relative error (the build target)."""
    data = {
        "name": f"d-sigma-{kind}",
        "lattice": {"kind": kind, "cells": [32, 32], "hop_distance": 1.0},
        "ions": {"species": "Li", "concentration": 0.5, "exclusion": True},
        "crystal": {"attempt_frequency": NU, "site_energy": 0.0, "saddle_energy": 0.3},
        "amorphous": {"site_energy": 0.0, "saddle_energy": 0.3},
        "microstructure": {"kind": "random", "amorphous_fraction": 0.0},
        "run": {"temperature": T, "replicas": 8},
    }
    cfg = config.parse_config(data)
    assert (cfg.run.hops_per_ion, cfg.run.equilibration_hops_per_ion, cfg.run.frames) == (
        2000,
        200,
        100,
    )
    tasks = config.expand_tasks(cfg)
    assert len(tasks) == 8
    observables = [experiment.run_task(task).observables for task in tasks]
    assert all(obs["diffusive"] == 1 for obs in observables)
    assert experiment.build_landscape(cfg, rng(0)).lattice.n_sites == n_sites
    d0 = z * NU * np.exp(-0.3 / KT) * 1.0**2 / (2 * 2) * 1e-16  # cm²/s
    exact = d0 * 0.5 * n_sites / (n_sites - 1)
    jump, jump_err = analysis.replica_mean([obs["D_jump"] for obs in observables])
    tracer, tracer_err = analysis.replica_mean([obs["D_tracer"] for obs in observables])
    rel_jump, rel_tracer = jump_err / jump, tracer_err / tracer
    assert abs(jump - exact) < Z_MAX * jump_err, (jump, jump_err, exact)
    assert rel_jump <= 0.06, rel_jump
    assert rel_jump <= 2 * rel_tracer, (rel_jump, rel_tracer)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"concentration": 1.0}, "concentration"),
        ({"concentration": 0.5, "count": 3}, "exactly one"),
        ({"count": 10_000}, "count"),
        ({"count": 2, "frames": 1}, "frames"),
        ({"count": 2, "hops_per_ion": 0}, "hops_per_ion"),
        ({"count": 2, "initial_sites": np.array([0, 0])}, "distinct"),
        ({"count": 2, "work_budget": 0.5}, "work_budget"),
        ({"count": 2, "progress": np.zeros(1)}, "progress"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, word):
    land = uniform_landscape(lattice.build("square", (4, 4)))
    with pytest.raises(ValueError, match=word):
        kernel.simulate(land, T, rng(0), **kwargs)


# Variable coordination: a general site graph pads every site to the largest coordination z
# with directions of rate exactly 0.0 (neighbour the site itself, hop vector and cell 0).


def padded_lattice(lat, columns):
    """The lattice with padded directions inserted before the given direction columns of
    the result (dataclasses.replace: any fields the Lattice grows are carried along)."""
    z = lat.coordination + len(columns)
    real = [k for k in range(z) if k not in columns]

    def spread(table, fill):
        out = np.empty((*table.shape[:1], z, *table.shape[2:]), dtype=table.dtype)
        out[:, real] = table
        out[:, columns] = fill
        return out

    sites = np.arange(lat.n_sites, dtype=lat.neighbours.dtype)
    neighbours = spread(lat.neighbours, 0)
    neighbours[:, columns] = sites[:, None]
    return dataclasses.replace(
        lat,
        neighbours=neighbours,
        hop_vectors=spread(lat.hop_vectors, 0.0),
        hop_cells=spread(lat.hop_cells, 0),
    ), real


class PaddedLandscape:
    """A landscape seen through a padded lattice: the same rates, 0.0 in the padded
    directions (what kmc.kernel needs of a landscape, and nothing else)."""

    def __init__(self, land, columns):
        self.land = land
        self.lattice, self.real = padded_lattice(land.lattice, columns)
        self.blocked, self.free_sites = land.blocked, land.free_sites

    def boltzmann_weights(self, temperature):
        return self.land.boltzmann_weights(temperature)

    def rates(self, temperature, sites=slice(None), *, incoming=False, field=None):
        rates = self.land.rates(temperature, sites, incoming=incoming, field=field)
        out = np.zeros((rates.shape[0], self.lattice.coordination))
        out[:, self.real] = rates
        return out


@pytest.mark.parametrize(("kind", "columns"), [("cubic", [0, 3, 8]), ("honeycomb", [1, 4])])
@pytest.mark.parametrize("amount", [{"count": 40, "exclusion": False}, {"concentration": 0.3},
                                    {"concentration": 0.7}])  # fmt: skip
def test_padded_directions_change_nothing(kind, columns, amount):
    """Zero-rate padding (first, middle and last columns) leaves every partial sum of the
    rates and every total unchanged (adding 0.0 is exact), so both loops must make exactly
    the same hops on the padded lattice as on the original, from the same generator: the
    same sites, positions, hop count and summed displacement, and no hop is ever made along
    a padded direction (walkers, ions, and vacancies at 0.7). The summed displacement is
    the same sum of hop vectors taken in another order (to 1e-9 Å)."""
    cells = (4, 4, 4) if kind == "cubic" else (4, 4)
    lat = lattice.build(kind, cells, hop_distance=1.5)
    land = disordered_landscape(lat, 4, {"dist": "normal", "mean": 0, "sigma": 0.05},
                                {"dist": "uniform", "low": 0.2, "high": 0.4})  # fmt: skip
    padded = PaddedLandscape(land, columns)
    assert padded.lattice.coordination == lat.coordination + len(columns)
    plain, other = (
        kernel.simulate(use, T, rng(9), **amount, hops_per_ion=40, frames=300)
        for use in (land, padded)
    )
    assert plain.hops == other.hops > 0
    np.testing.assert_array_equal(plain.sites, other.sites)
    np.testing.assert_array_equal(plain.positions, other.positions)
    if plain.collective is not None:  # the same hops, summed in another order
        np.testing.assert_allclose(plain.collective, other.collective, rtol=0, atol=1e-9)


def test_choose_direction_never_takes_a_zero_rate():
    """Walkers: x at and past the total (rounding), at 0, and on every partial sum never
    picks a zero-rate direction, whether it is first, in the middle or last."""
    rates = np.array([0.0, 1.0, 0.0, 0.0, 2.5, 0.0, 0.0])
    total = rates.sum()
    nonzero = set(np.flatnonzero(rates))
    for x in [0.0, 0.5, 1.0, np.nextafter(1.0, 0), 3.5, np.nextafter(3.5, 0), 1e300, total]:
        assert _sites._choose_direction(rates, x) in nonzero
    assert _sites._choose_direction(rates, 0.999) == 1
    assert _sites._choose_direction(rates, 1.0) == 4
    assert _sites._choose_direction(rates, total) == 4  # past the last sum: last non-zero


def test_direction_below_never_takes_a_zero_rate():
    """Lattice gas: x in [0, bound) with bound above the total; a zero-rate direction is
    never returned, and x at or above the total is a null event (-1)."""
    rates = np.array([0.0, 1.0, 0.0, 2.5, 0.0])
    assert _sites._direction_below(rates, 0.0) == 1
    assert _sites._direction_below(rates, np.nextafter(1.0, 0)) == 1
    assert _sites._direction_below(rates, 1.0) == 3
    assert _sites._direction_below(rates, np.nextafter(3.5, 0)) == 3
    assert _sites._direction_below(rates, 3.5) == -1
    assert _sites._direction_below(np.zeros(4), 0.0) == -1


def test_sites_whose_every_rate_is_zero_hold_their_carriers():
    """A site with no way out or in (every rate 0, real or padded): a walker there never hops and
    is recorded there in every frame; a lattice-gas ion there is never selected, and when
    no carrier can move the state is frozen and every frame recorded."""
    lat = lattice.build("square", (4, 4))
    land = PaddedLandscape(uniform_landscape(lat), [2])
    stuck = 5
    rates = land.rates

    def isolated(temperature, sites=slice(None), *, incoming=False, field=None):
        """No hop into or out of the stuck site (the others would all end up there)."""
        out = rates(temperature, sites, incoming=incoming, field=field)
        out[np.arange(lat.n_sites)[sites] == stuck] = 0.0
        out[land.lattice.neighbours[sites] == stuck] = 0.0
        return out

    land.rates = isolated
    start = np.array([stuck, 0, 9])
    walkers = kernel.simulate(land, T, rng(1), count=3, exclusion=False, hops_per_ion=50,
                              frames=20, initial_sites=start)  # fmt: skip
    assert np.all(walkers.sites[:, 0] == stuck) and walkers.hops > 0
    assert np.all(walkers.positions[:, 0] == walkers.positions[0, 0])
    gas = kernel.simulate(land, T, rng(2), count=3, hops_per_ion=50, frames=20,
                          initial_sites=start)  # fmt: skip
    assert np.all(gas.sites[:, 0] == stuck) and gas.hops > 0

    def frozen(temperature, sites=slice(None), *, incoming=False, field=None):
        return np.zeros_like(rates(temperature, sites, incoming=incoming))

    records, deltas, _ = kernel.pack_records(land.lattice, lambda block: (
        frozen(T, block), np.zeros(len(range(lat.n_sites)[block]))))  # fmt: skip
    ions = np.array([[stuck, 1, 1]], dtype=np.int32)
    occupied = np.zeros(lat.n_sites, dtype=np.uint8)
    occupied[stuck] = 1
    out_sites, out_cells = np.empty((3, 1), np.int32), np.empty((3, 1, 2), np.int32)
    hops, attempts, elapsed, recorded = kernel._lattice_gas.run_lattice_gas(
        records, deltas, land.lattice.hop_cells, ions, occupied, np.empty(0, np.int32),
        np.array([stuck], np.int32), False, 0, np.array([0.0, 1.0, 2.0]), out_sites, out_cells,
        np.empty(0), np.empty((0, 1), np.int64), np.ones(4, np.uint64),
    )  # fmt: skip
    assert (hops, attempts, elapsed, recorded) == (0, 0, 0.0, 3)
    assert np.all(out_sites == stuck) and np.all(out_cells == 1)


def lieb_lattice(cells):
    """A general periodic site graph of variable coordination in a triclinic cell: the Lieb
    lattice (corner sites with 4 neighbours, edge sites with 2, padded to 4) on a sheared
    cell."""
    hops = [
        [(1, (0, 0), 0), (1, (-1, 0), 0), (2, (0, 0), 0), (2, (0, -1), 0)],
        [(0, (0, 0), 0), (0, (1, 0), 0)],
        [(0, (0, 0), 0), (0, (0, 1), 0)],
    ]
    cell_vectors = np.array([[2.0, 0.0], [0.7, 2.0]])
    basis = np.array([[0.0, 0.0], [1.0, 0.0], [0.35, 1.0]])
    return lattice.periodic_graph("lieb", cell_vectors, basis, cells, hops)


def test_variable_coordination_walkers_reach_boltzmann_occupation():
    """Walkers on the padded, triclinic Lieb lattice (random energies and saddles), all
    started on site 0: after equilibration the occupation is p_i ∝ exp(−ε_i/kT) whatever
    a site's coordination; 10 000 independent samples, chi-square at significance 1e-4.
    The slowest relaxation of this landscape takes ≈ 230 mean hop times, so the walkers are
    equilibrated for 2000; 100 leave them visibly out of equilibrium (the test's power)."""
    lat = lieb_lattice((3, 3))
    assert lat.padded
    land = disordered_landscape(lat, 3, {"dist": "normal", "mean": 0.0, "sigma": 0.05},
                                {"dist": "uniform", "low": 0.1, "high": 0.3})  # fmt: skip
    n = 10_000
    p = np.exp(-land.site_energy / KT)
    pvalues = []
    for equilibration in (2000, 100):
        traj = kernel.simulate(
            land, T, rng(4), count=n, exclusion=False, hops_per_ion=1, frames=2,
            equilibration_hops_per_ion=equilibration, initial_sites=np.zeros(n, dtype=np.int64),
        )  # fmt: skip
        observed = np.bincount(traj.sites[0], minlength=lat.n_sites)
        pvalues.append(stats.chisquare(observed, n * p / p.sum()).pvalue)
    assert pvalues[0] > 1e-4 and pvalues[1] < 1e-4


# --------------------------------------------------------------------------------------------
# Ion–ion pair interactions (issue 11): detailed balance with respect to the total energy


def _configurations(n_sites: int, n_ions: int) -> list[tuple[int, ...]]:
    import itertools

    return list(itertools.combinations(range(n_sites), n_ions))


def _total_energy(land, pair, occupied_sites) -> float:
    """Σ ε_i n_i + Σ_bonds V_b n_i n_j of a configuration (eV)."""
    n = np.zeros(land.lattice.n_sites, dtype=bool)
    n[list(occupied_sites)] = True
    ends = land.lattice.bond_ends
    return float(land.site_energy[n].sum() + pair[n[ends[:, 0]] & n[ends[:, 1]]].sum())


def _small_interacting(kind: str, cells: tuple[int, ...], seed: int):
    """A lattice small enough to enumerate, with disordered site energies (σ = 0.03 eV),
    saddles 0.25-0.35 eV and per-bond pair energies 0.02-0.08 eV (repulsive)."""
    lat = lattice.build(kind, cells)
    land = disordered_landscape(
        lat, seed, {"dist": "normal", "mean": 0.0, "sigma": 0.03},
        {"dist": "uniform", "low": 0.25, "high": 0.35},
    )  # fmt: skip
    pair = rng(seed + 100).uniform(0.02, 0.08, lat.n_bonds)
    return land, pair


INTERACTING_CASES = {
    "square 3x3, 4 ions": ("square", (3, 3), 4),
    "ring of 6, 3 ions": ("chain", (6,), 3),
}


@pytest.mark.parametrize("case", list(INTERACTING_CASES))
def test_interacting_rate_rule_has_the_boltzmann_stationary_state(case):
    """Exact, no sampling: the master equation over every configuration, built from the
    kernel's own rate tables (kmc.kernel.interaction_tables, the rates of
    kmc.reference.interaction_rates), has the stationary state exp(−E/kT) / Z with E the total
    site + pair energy (|π Q| < 1e-9 of the largest flux), and every hop's rate ratio is
    exp(−ΔE/kT) to 1e-12."""
    from kmc import reference

    kind, cells, n_ions = INTERACTING_CASES[case]
    land, pair = _small_interacting(kind, cells, 1)
    lat = land.lattice
    records, _, _ = kernel._site_records(land, T, incoming=False)
    tables = kernel.interaction_tables(lat, records, pair, T)
    scaled, weight = tables["scaled"], tables["weight"]
    states = _configurations(lat.n_sites, n_ions)
    index = {s: i for i, s in enumerate(states)}
    energy = np.array([_total_energy(land, pair, s) for s in states])
    generator = np.zeros((len(states), len(states)))
    for a, state in enumerate(states):
        occupied = np.zeros(lat.n_sites, dtype=bool)
        occupied[list(state)] = True
        phi = [
            reference.interaction_field(weight, lat.neighbours, occupied, s)
            for s in range(lat.n_sites)
        ]
        for k_site in state:
            rates = reference.interaction_rates(scaled, lat.neighbours, phi, occupied, k_site)
            for d, m in enumerate(lat.neighbours[k_site]):
                if occupied[m]:
                    continue
                after = tuple(sorted((set(state) - {k_site}) | {int(m)}))
                generator[a, index[after]] += rates[d]
    np.fill_diagonal(generator, -generator.sum(axis=1))
    weights = np.exp(-(energy - energy.min()) / KT)
    pi = weights / weights.sum()
    flux = np.abs(pi[:, None] * generator).max()
    assert np.abs(pi @ generator).max() < 1e-9 * flux
    # pairwise: π_a Q_ab = π_b Q_ba for every pair of configurations
    off = pi[:, None] * generator
    np.fill_diagonal(off, 0.0)
    np.testing.assert_allclose(off, off.T, rtol=1e-12, atol=1e-15 * flux)


@pytest.mark.parametrize("case", list(INTERACTING_CASES))
def test_interacting_gas_spends_boltzmann_time_in_each_configuration(case):
    """Sampled by the compiled kernel: the configuration at 40 000 frames spaced by ~10 hops
    per ion (far beyond the chain's mixing time, so frames are independent draws of the
    time-weighted occupation) against exp(−E/kT)/Z over every configuration, E the total
    site + pair energy: χ² (all configurations; expected counts >= 5 for the test to hold,
    rarer configurations pooled into one bin) with p > 1e-3. Power: the same counts against
    the weights without the pair energies are rejected with p < 1e-12, and so is the exact
    distribution against counts from the same lattice with the pair energies off."""
    kind, cells, n_ions = INTERACTING_CASES[case]
    land, pair = _small_interacting(kind, cells, 1)
    lat = land.lattice
    states = _configurations(lat.n_sites, n_ions)
    index = {s: i for i, s in enumerate(states)}
    energy = np.array([_total_energy(land, pair, s) for s in states])
    site_only = np.array([_total_energy(land, 0 * pair, s) for s in states])
    frames = 40_000

    def counts(interactions):
        traj = kernel.simulate(
            land, T, rng(7), count=n_ions, hops_per_ion=10 * frames, frames=frames,
            interactions=interactions,
        )  # fmt: skip
        observed = np.zeros(len(states))
        for row in np.sort(traj.sites, axis=1):
            observed[index[tuple(int(s) for s in row)]] += 1
        return observed

    def chi2(observed, energies):
        expected = np.exp(-(energies - energies.min()) / KT)
        expected *= observed.sum() / expected.sum()
        rare = expected < 5  # pooled into one bin, so that every bin expects >= 5
        o = np.append(observed[~rare], observed[rare].sum())
        e = np.append(expected[~rare], expected[rare].sum())
        o, e = (o, e) if e[-1] >= 5 else (o[:-1], e[:-1])
        value = float(((o - e) ** 2 / e).sum())
        return value, float(stats.chi2.sf(value, len(e) - 1)), len(e) - 1

    observed = counts(pair)
    value, p, dof = chi2(observed, energy)
    print(f"{case}: chi2 = {value:.1f} with {dof} dof, p = {p:.3g}")
    assert p > 1e-3
    wrong, p_wrong, dof = chi2(observed, site_only)
    print(f"{case}: against site energies only: chi2 = {wrong:.1f} ({dof} dof), p = {p_wrong:.3g}")
    assert p_wrong < 1e-12
    _, p_free, _ = chi2(counts(None), energy)
    print(f"{case}: pair energies off, against the interacting weights: p = {p_free:.3g}")
    assert p_free < 1e-12


def test_interactions_zero_are_no_interactions_and_need_exclusion():
    """All pair energies 0: the same trajectory as no interactions, bit for bit (the
    non-interacting kernel runs, ions or vacancies driven as before); pair energies with
    independent walkers, of the wrong shape or NaN are refused."""
    land, pair = _small_interacting("square", (4, 4), 2)
    lat = land.lattice
    for c in (0.3, 0.7):
        runs = [
            kernel.simulate(land, T, rng(3), concentration=c, hops_per_ion=50, frames=9, **kw)
            for kw in ({}, {"interactions": np.zeros(lat.n_bonds)})
        ]
        np.testing.assert_array_equal(runs[0].positions, runs[1].positions)
        np.testing.assert_array_equal(runs[0].collective, runs[1].collective)
    with pytest.raises(ValueError, match=r"interactions need ions\.exclusion = true"):
        kernel.simulate(land, T, rng(3), count=3, exclusion=False, interactions=pair)
    for bad in (pair[:-1], np.full(lat.n_bonds, np.nan)):
        with pytest.raises(ValueError, match="finite pair energies"):
            kernel.simulate(land, T, rng(3), count=3, interactions=bad)


def test_interacting_chain_runs_with_its_ions_driven():
    """The 1D chain with nearest-neighbour repulsion (the lead's transfer-matrix case) at
    c = 0.2 and 0.8 (ions driven also above half filling): the ions move, stay on distinct
    sites, and hops are counted."""
    lat = lattice.build("chain", (200,))
    land = uniform_landscape(lat)
    pair = landscape.pair_energies(lat, 0.05)
    for c in (0.2, 0.8):
        traj = kernel.simulate(
            land, T, rng(4), concentration=c, hops_per_ion=100, frames=5, interactions=pair
        )
        assert traj.hops > 0
        assert all(len(np.unique(row)) == traj.n_ions for row in traj.sites)
        assert np.ptp(traj.positions[:, :, 0], axis=0).max() > 0


def test_interacting_total_with_only_a_slow_hop_left_stays_in_the_table():
    """A ring of 8 with one slow bond (3–4: saddle 0.80 eV, the others 0.30 eV, 300 K) and
    two repelling ions that start on 4 and 6, where each has a fast hop: as soon as an ion
    sits on 4 with the other on 5, its total is the slow rate alone, e^(−0.5 eV/kT) ≈ 4e-9
    of every total at the start. The selection's group table must hold it (it used to span
    the initial totals widened only by the interaction factors, and the run stopped). The
    8 adjacent pairs, 3–4 included, have one Boltzmann weight: each is visited, and within
    a factor 2 as often as any other."""
    lat = lattice.build("chain", (8,))
    saddle = np.full(lat.n_bonds, 0.30)
    slow = [b for b, ends in enumerate(lat.bond_ends.tolist()) if sorted(ends) == [3, 4]]
    saddle[slow] = 0.80
    land = landscape.Landscape(lat, np.zeros(8, bool), np.zeros(8, bool), np.zeros(8), saddle,
                               1e13)  # fmt: skip
    pair = landscape.pair_energies(lat, 0.02)
    traj = kernel.simulate(land, T, rng(5), count=2, hops_per_ion=20_000, frames=4000,
                           equilibration_hops_per_ion=0, initial_sites=np.array([4, 6]),
                           interactions=pair)  # fmt: skip
    pairs = np.sort(traj.sites, axis=1)
    adjacent = {(i, (i + 1) % 8) for i in range(8)}
    share = {p: np.mean(np.all(pairs == sorted(p), axis=1)) for p in adjacent}
    assert share[(4, 5)] > 0 and max(share.values()) < 2 * min(share.values()), share
