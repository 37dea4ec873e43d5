"""Tests of kmc.analysis: MSD, diffusion fits, conductivity, replica statistics, Arrhenius.

Statistical tests state the exact value and accept |z| < 4, with the standard error taken
from independent replicas (or repeated synthetic datasets), never from a fit residual.
All randomness comes from seeded numpy Generators, so the outcomes are reproducible.
"""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
import scipy.constants

from kmc.analysis import (
    BOLTZMANN_EV,
    DiffusiveTest,
    arrhenius,
    collective_window,
    diffusion_coefficient,
    diffusive_test,
    fit_window,
    msd,
    nernst_einstein,
    replica_mean,
    staggered_order,
    tensor_keys,
    thermodynamic_factor,
    transport,
    widom_chemical_potential,
)

Z_MAX = 4.0


# --------------------------------------------------------------------------- helpers


def brownian(rng, diffusion, n_frames, n_ions, dt, box=50.0):
    """Brownian trajectories: Gaussian increments of variance 2 D_k dt per component k."""
    diffusion = np.atleast_1d(np.asarray(diffusion, dtype=float))
    steps = rng.normal(size=(n_frames - 1, n_ions, diffusion.size)) * np.sqrt(2 * diffusion * dt)
    start = rng.uniform(0, box, size=(1, n_ions, diffusion.size))
    positions = np.concatenate([start, start + np.cumsum(steps, axis=0)])
    return dt * np.arange(n_frames), positions


def lattice_walk(rng, rate, a, n_frames, n_ions, dt):
    """Exact continuous-time random walk on a simple cubic lattice, sampled every dt.

    Each of the 6 neighbours is reached at rate Γ; by Poisson splitting, the numbers of
    hops along +x, -x, ... in one interval are independent Poisson(Γ dt) variables.
    """
    shape = (n_frames - 1, n_ions, 3)
    steps = a * (rng.poisson(rate * dt, size=shape) - rng.poisson(rate * dt, size=shape))
    start = a * rng.integers(0, 10, size=(1, n_ions, 3))
    positions = np.concatenate([start, start + np.cumsum(steps, axis=0)]).astype(float)
    return dt * np.arange(n_frames), positions


def brute_force_msd(positions, collective):
    """Direct O(F² N) MSD per component for lags 1..F-1 (reference implementation)."""
    n_frames, n_ions, _ = positions.shape
    rows = []
    for lag in range(1, n_frames):
        disp = positions[lag:] - positions[:-lag]  # every time origin
        if collective:
            total = disp.sum(axis=1)
            rows.append((total**2).mean(axis=0) / n_ions)
        else:
            rows.append((disp**2).mean(axis=(0, 1)))
    return np.array(rows)


def assert_z(measured, error, exact, label=""):
    z = (measured - exact) / error
    assert abs(z) < Z_MAX, f"{label}: {measured:.6g} ± {error:.3g} vs exact {exact:.6g}, z={z:.2f}"


# --------------------------------------------------------------------------- 1. msd


@pytest.mark.parametrize("collective", [False, True])
@pytest.mark.parametrize("chunk_bytes", [10**9, 2_000])  # one chunk / many chunks of ions
def test_msd_fft_matches_brute_force(collective, chunk_bytes):
    rng = np.random.default_rng(101)
    n_frames, n_ions, dim = 37, 13, 3
    times = 0.25 + 0.5 * np.arange(n_frames)
    # Large absolute coordinates check that the FFT algorithm does not lose precision.
    positions = 1000.0 + np.cumsum(rng.normal(size=(n_frames, n_ions, dim)), axis=0)
    exact = brute_force_msd(positions, collective)

    lags, per_axis = msd(
        times, positions, collective=collective, per_axis=True, chunk_bytes=chunk_bytes
    )
    np.testing.assert_allclose(lags, 0.5 * np.arange(1, n_frames), rtol=1e-12)
    assert per_axis.shape == (n_frames - 1, dim)
    np.testing.assert_allclose(per_axis, exact, rtol=1e-9)

    lags, summed = msd(times, positions, collective=collective, chunk_bytes=chunk_bytes)
    assert summed.shape == (n_frames - 1,)
    np.testing.assert_allclose(summed, exact.sum(axis=1), rtol=1e-9)


def test_msd_float32_and_stationary_ions():
    rng = np.random.default_rng(102)
    positions = np.cumsum(rng.normal(size=(20, 5, 2)), axis=0).astype(np.float32)
    _, got = msd(np.arange(20.0), positions)
    exact = brute_force_msd(positions.astype(np.float64), collective=False).sum(axis=1)
    np.testing.assert_allclose(got, exact, rtol=1e-9)
    # Ions that never move have an MSD of exactly zero (round-off is clipped, never < 0).
    still = np.broadcast_to(rng.uniform(0, 100, size=(1, 4, 3)), (30, 4, 3))
    _, zero = msd(np.arange(30.0), still, collective=True)
    assert np.all(zero >= 0) and np.all(zero < 1e-9)


def test_msd_memory_is_bounded_by_chunk_size():
    rng = np.random.default_rng(103)
    n_frames, n_ions = 200, 5000  # 24 MB of positions; unchunked temporaries ~240 MB
    positions = rng.normal(size=(n_frames, n_ions, 3))
    budget = 4 * 2**20
    tracemalloc.start()
    try:
        msd(np.arange(float(n_frames)), positions, chunk_bytes=budget)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * budget, f"peak extra memory {peak / 2**20:.1f} MiB"


# --------------------------------------------------------------------------- 2. Brownian


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_brownian_diffusion_coefficient(dim):
    # Exact: D = 0.7 Å²/s. 16 independent replicas; error = their standard error.
    rng = np.random.default_rng(200 + dim)
    exact = 0.7
    estimates = []
    for _ in range(16):
        times, positions = brownian(rng, [exact] * dim, n_frames=200, n_ions=100, dt=1.0)
        estimates.append(diffusion_coefficient(times, positions, hop_distance=1.0))
    mean, error = replica_mean(estimates)
    assert error < 0.05 * exact  # the test has power: 5 % resolution at most
    assert_z(mean, error, exact, f"D* in {dim}D")


# --------------------------------------------------------------------------- 3. Haven


def test_independent_particles_have_haven_ratio_one():
    # Exact: for independent walkers D_jump = D_tracer = D (H_R = 1). The collective slope
    # of one replica is noisy (one summed trajectory), so the per-replica ratio D*/D_σ is
    # biased (E[1/X] > 1/E[X]); we test the unbiased paired difference D_σ - D* instead,
    # and H_R as the ratio of replica means with its delta-method error.
    rng = np.random.default_rng(300)
    exact = 1.5  # Å²/s
    tracer, jump = [], []
    for _ in range(32):
        times, positions = brownian(rng, [exact] * 3, n_frames=400, n_ions=64, dt=1.0)
        result = transport(times, positions, temperature=300.0, volume=1e5, hop_distance=1.0)
        assert result["diffusive"]
        tracer.append(result["D_tracer"])
        jump.append(result["D_jump"])
    tracer, jump = np.array(tracer), np.array(jump)

    mean_jump, err_jump = replica_mean(jump)
    assert_z(mean_jump, err_jump, exact * 1e-16, "D_jump")
    mean_diff, err_diff = replica_mean(jump - tracer)
    assert_z(mean_diff, err_diff, 0.0, "D_jump - D_tracer")

    n = tracer.size
    haven = tracer.mean() / jump.mean()
    cov = np.cov(tracer, jump) / n  # covariance of the two replica means
    rel_var = (
        cov[0, 0] / tracer.mean() ** 2
        + cov[1, 1] / jump.mean() ** 2
        - 2 * cov[0, 1] / (tracer.mean() * jump.mean())
    )
    assert_z(haven, haven * np.sqrt(rel_var), 1.0, "Haven ratio")


# --------------------------------------------------------------------------- 4. lattice


def test_lattice_random_walk_simple_cubic():
    # Exact: free walker on simple cubic, D = z Γ a² / (2d) = Γ a² (MODEL.md).
    rng = np.random.default_rng(400)
    rate, a, dt = 2e9, 2.5, 0.5e-9  # Γ dt = 1: one hop per neighbour per frame on average
    exact = rate * a**2  # Å²/s
    estimates = []
    for _ in range(16):
        times, positions = lattice_walk(rng, rate, a, n_frames=200, n_ions=50, dt=dt)
        estimates.append(diffusion_coefficient(times, positions, hop_distance=a))
    mean, error = replica_mean(estimates)
    assert error < 0.05 * exact
    assert_z(mean, error, exact, "lattice walk D")


# --------------------------------------------------------------------------- 5. per axis


def test_anisotropic_diffusion_per_axis():
    # Exact: D = (1.0, 0.2, 0.0) Å²/s; the frozen z axis must give exactly 0.
    rng = np.random.default_rng(500)
    exact = np.array([1.0, 0.2, 0.0])
    estimates = []
    for _ in range(16):
        times, positions = brownian(rng, exact, n_frames=200, n_ions=100, dt=1.0)
        tensor = diffusion_coefficient(times, positions, hop_distance=1.0, per_axis=True)
        assert tensor.shape == (3,)
        estimates.append(tensor)
        # The scalar D is the trace / d of the per-axis one, fitted over the same window.
        scalar = diffusion_coefficient(times, positions, hop_distance=1.0)
        assert scalar == pytest.approx(tensor.sum() / 3, rel=1e-10)
    estimates = np.array(estimates)
    for axis in range(2):
        mean, error = replica_mean(estimates[:, axis])
        assert error < 0.05 * exact[axis]
        assert_z(mean, error, exact[axis], f"D axis {axis}")
    assert np.all(np.abs(estimates[:, 2]) < 1e-12)


# --------------------------------------------------------------------------- 5b. tensor

#: A full anisotropic diffusion tensor, Å²/s (positive definite: eigenvalues ≈ 1.17, 0.46,
#: 0.07), with D_xx ≠ D_yy ≠ D_zz and off-diagonal elements of both signs.
TENSOR = np.array([[1.0, 0.3, -0.2], [0.3, 0.5, 0.1], [-0.2, 0.1, 0.2]])


def correlated_brownian(rng, tensor, n_frames, n_ions, dt):
    """Brownian trajectories with increments of covariance 2 D dt (D a d×d tensor)."""
    chol = np.linalg.cholesky(2.0 * np.asarray(tensor) * dt)
    steps = rng.normal(size=(n_frames - 1, n_ions, chol.shape[0])) @ chol.T
    start = rng.uniform(0, 50, size=(1, n_ions, chol.shape[0]))
    return dt * np.arange(n_frames), np.concatenate([start, start + np.cumsum(steps, axis=0)])


def test_transport_recovers_an_anisotropic_tensor():
    """Exact: D*_ab = TENSOR (Å²/s) for independent Brownian ions with increments of
    covariance 2 D dt, and D_σ,aa = D*_aa (independent ions). 16 replicas of 200 ions, 60
    frames (dt = 0.1 s); each component's mean over the replicas must lie within 4 standard
    errors (from the replicas' scatter) of the exact value. The scalars are the trace / 3 of
    the same fits to rounding (rel 1e-12). a = 0.05 Å: growth over [T/4, T/2] ≈ 2·1.7·1.5 Å²
    ≈ 2000 a²."""
    rng = np.random.default_rng(610)
    keys = tensor_keys(3)
    samples = {key: [] for key in keys}
    for _ in range(16):
        times, positions = correlated_brownian(rng, TENSOR, n_frames=60, n_ions=200, dt=0.1)
        result = transport(times, positions, temperature=300.0, volume=1e4, hop_distance=0.05)
        assert result["diffusive"], result["diffusive_reason"]
        diagonal = [result[f"D_tracer_{c}{c}"] for c in "xyz"]
        assert result["D_tracer"] == pytest.approx(sum(diagonal) / 3, rel=1e-12)
        jump = [result[f"D_jump_{c}{c}"] for c in "xyz"]
        assert result["D_jump"] == pytest.approx(sum(jump) / 3, rel=1e-12)
        for key in keys:
            samples[key].append(result[key] * 1e16)  # Å²/s
    axes = {"x": 0, "y": 1, "z": 2}
    for key in keys:
        kind, pair = key.rsplit("_", 1)
        exact = TENSOR[axes[pair[0]], axes[pair[1]]]
        mean, error = replica_mean(samples[key])
        assert_z(mean, error, exact, key)
        if kind == "D_tracer":  # ≈ 15 % of D_xx per replica, so ≈ 4 % over 16
            assert error < 0.08 * TENSOR[0, 0], key


@pytest.mark.parametrize("martingale", [False, True])
def test_tensor_trace_is_the_scalar_with_a_fine_collective_series(martingale):
    """With a fine summed-displacement series, secant (martingale) or slope alike, the
    D_jump diagonal sums to d · D_jump, and the tracer diagonal to d · D_tracer (rel 1e-12);
    a 2D lattice reports xx, yy and xy only, the off-diagonal symmetric by construction."""
    rng = np.random.default_rng(611)
    fine_t, fine = correlated_brownian(rng, TENSOR[:2, :2], n_frames=641, n_ions=40, dt=1 / 32)
    result = transport(
        fine_t[::16],
        fine[::16],
        temperature=300.0,
        volume=1e3,
        hop_distance=0.01,
        collective=(fine_t, (fine - fine[0]).sum(axis=1)),
        martingale=martingale,
    )
    assert result["diffusive"], result["diffusive_reason"]
    assert set(tensor_keys(2)) == {"D_tracer_xx", "D_tracer_yy", "D_tracer_xy"} | {
        "D_jump_xx",
        "D_jump_yy",
    }
    assert set(tensor_keys(2)) <= set(result)
    assert not any(key.endswith(("_zz", "_xz", "_yz")) for key in result)
    trace = result["D_tracer_xx"] + result["D_tracer_yy"]
    assert result["D_tracer"] == pytest.approx(trace / 2, rel=1e-12)
    jump_trace = result["D_jump_xx"] + result["D_jump_yy"]
    assert result["D_jump"] == pytest.approx(jump_trace / 2, rel=1e-12)


def test_tensor_of_a_one_dimensional_channel():
    """Exact: ions diffuse along x (D_xx = 1.0 Å²/s) and rattle along y, uniformly and
    independently in every frame within ±1 Å of their row (like ions in 1D channels): the
    long-time D_yy = 0 and D_xy = 0 exactly. The trace passes the diffusive test, and the
    y components are reported as numbers (not nan, not a verdict) that are 0 within 4
    standard errors over 16 replicas, while D_xx is recovered within 4 of them."""
    rng = np.random.default_rng(620)
    samples = {key: [] for key in tensor_keys(2)}
    for _ in range(16):
        times, positions = brownian(rng, [1.0, 0.0], n_frames=60, n_ions=200, dt=0.1)
        positions[:, :, 1] += rng.uniform(-1.0, 1.0, size=positions.shape[:2])
        result = transport(times, positions, temperature=300.0, volume=1e4, hop_distance=0.05)
        assert result["diffusive"], result["diffusive_reason"]
        for key in samples:
            assert np.isfinite(result[key]), key
            samples[key].append(result[key] * 1e16)
    exact = {"D_tracer_xx": 1.0, "D_jump_xx": 1.0}
    for key, values in samples.items():
        mean, error = replica_mean(values)
        assert_z(mean, error, exact.get(key, 0.0), key)
    # the rattling adds only an offset (2·var = 2/3 Å²), absorbed by the intercept
    assert replica_mean(samples["D_tracer_yy"])[1] < 0.02


def test_tensor_components_are_nan_when_not_diffusive():
    """A rattler (as in the upper-bound test): every tensor component of its 2 axes is nan,
    and only those of its axes are reported; a 1D run reports xx only."""
    rng = np.random.default_rng(613)
    positions = np.zeros((101, 40, 2))
    positions[:, :, 0] = 2.0 * rng.integers(0, 3, size=(101, 40))
    times = 1e-12 * np.arange(101)
    result = transport(times, positions, temperature=400.0, volume=5e3, hop_distance=2.0)
    assert result["diffusive"] is False
    for key in tensor_keys(2):
        assert np.isnan(result[key]), key
    times, line = brownian(rng, [1.0], n_frames=60, n_ions=100, dt=0.1)
    one = transport(times, line, temperature=300.0, volume=1e3, hop_distance=0.05)
    assert one["diffusive"]
    assert [key for key in one if key in ("D_tracer_xx", "D_jump_xx", "D_tracer_yy")] == [
        "D_tracer_xx",
        "D_jump_xx",
    ]
    assert one["D_tracer_xx"] == pytest.approx(one["D_tracer"], rel=1e-12)
    assert one["D_jump_xx"] == pytest.approx(one["D_jump"], rel=1e-12)


# --------------------------------------------------------------------------- 6. conductivity


def test_nernst_einstein_by_hand():
    # σ = n q² D / (k_B T) in SI, then S/m → S/cm.
    d_cm2 = 3e-8  # cm²/s
    n_per_a3 = 0.012  # Å⁻³
    temperature = 350.0
    e, k = scipy.constants.e, scipy.constants.k
    expected = (n_per_a3 * 1e30) * e**2 * (d_cm2 * 1e-4) / (k * temperature) / 100.0
    assert nernst_einstein(d_cm2, n_per_a3, temperature) == pytest.approx(expected, rel=1e-12)
    assert nernst_einstein(d_cm2, n_per_a3, temperature, charge=2) == pytest.approx(
        4 * expected, rel=1e-12
    )
    # Order of magnitude sanity: ≈ 1.9e-3 S/cm for these numbers.
    assert expected == pytest.approx(1.912e-3, rel=1e-3)


def test_transport_on_exactly_linear_msd():
    # Each ion steps by s along a new orthogonal axis every frame (d = F - 1), so
    # |r(k+m) - r(k)|² = m s² for every origin: the MSD is exactly linear and the tracer D
    # is s² / (2 d dt). All N ions move identically, so |Σ Δr|² / N = N m s²: D_jump is
    # N times larger and H_R = 1/N exactly. D_jump is the collective slope over
    # collective_window(9, False) = lags 1..3, exact for an exactly linear MSD.
    n_frames, n_ions, s, dt = 10, 4, 1.5, 2e-12
    dim = n_frames - 1
    steps = np.zeros((n_frames, dim))
    steps[1:] = s * np.eye(dim)
    path = np.cumsum(steps, axis=0)
    offsets = np.arange(n_ions)[None, :, None] * 7.0
    positions = path[:, None, :] + offsets
    times = 1e-9 + dt * np.arange(n_frames)
    temperature, volume = 450.0, 2000.0

    result = transport(times, positions, temperature=temperature, volume=volume, hop_distance=0.1)
    d_tracer = s**2 / (2 * dim * dt) * 1e-16  # cm²/s
    d_jump = n_ions * d_tracer
    assert result["D_tracer"] == pytest.approx(d_tracer, rel=1e-10)
    assert result["D_jump"] == pytest.approx(d_jump, rel=1e-10)
    assert result["haven_ratio"] == pytest.approx(1 / n_ions, rel=1e-10)
    e, k = scipy.constants.e, scipy.constants.k
    sigma = (n_ions / volume * 1e30) * e**2 * (d_jump * 1e-4) / (k * temperature) / 100
    assert result["conductivity"] == pytest.approx(sigma, rel=1e-10)
    # T = 9 dt: window [T/4, T/2] = from the first lag >= 2.25 dt to the first >= 4.5 dt,
    # lags 3..5 dt. Diffusive test: growth MSD(5 dt) - MSD(3 dt) = 2 s² = 450 a² (a = 0.1);
    # slopes over [T/8, T/4] (lags 2..3) and [T/4, T/2] (3..5) are both s²/dt: ratio 1, and
    # the 4 identical one-ion groups give a jackknife error of exactly 0.
    assert result["diffusive"] is True and result["diffusive_reason"] == ""
    assert result["fit_start"] == pytest.approx(3 * dt, rel=1e-9)
    assert result["fit_stop"] == pytest.approx(5 * dt, rel=1e-9)
    assert result["msd_growth"] == pytest.approx(2 * s**2 / 0.1**2, rel=1e-10)
    assert result["slope_ratio"] == pytest.approx(1.0, rel=1e-10)
    assert result["slope_ratio_err"] == pytest.approx(0.0, abs=1e-10)
    assert (result["jump_fit_start"], result["jump_fit_stop"]) == pytest.approx((dt, 3 * dt))
    for key in ("D_tracer_upper", "D_jump_upper", "conductivity_upper"):
        assert np.isnan(result[key]), key  # bounds only for non-diffusive runs
    for key in (
        "D_tracer",
        "D_jump",
        "haven_ratio",
        "conductivity",
        "fit_start",
        "fit_stop",
        "msd_growth",
        "slope_ratio",
        "jump_fit_start",
        "jump_fit_stop",
        "D_tracer_upper",
    ):
        assert type(result[key]) is float, key
    assert type(result["diffusive_reason"]) is str

    charged = transport(
        times, positions, temperature=temperature, volume=volume, hop_distance=0.1, charge=2
    )
    assert charged["conductivity"] == pytest.approx(4 * sigma, rel=1e-10)


def test_transport_matches_diffusion_coefficient():
    # Frames only: D_tracer is the slope over fit_window's [T/4, T/2]; D_jump the slope of
    # the collective MSD over collective_window(59, False) = lags 1..7 (by brute force here).
    # Growth over the window ≈ 2·2·0.3·1.5 Å² = 1.8 Å² = 720 a² with a = 0.05 Å; 200 ions
    # resolve the slope ratio (jackknife error ≈ 0.07).
    rng = np.random.default_rng(600)
    times, positions = brownian(rng, [0.3, 0.3], n_frames=60, n_ions=200, dt=0.1)
    a = 0.05
    result = transport(times, positions, temperature=300.0, volume=1e4, hop_distance=a)
    assert result["diffusive"], result["diffusive_reason"]
    tracer = diffusion_coefficient(times, positions, hop_distance=a)
    assert result["D_tracer"] == pytest.approx(tracer * 1e-16, rel=1e-12)
    window = collective_window(59, martingale=False)
    assert (window.start, window.stop) == (0, 7)
    summed = positions.sum(axis=1)
    lag_numbers = np.arange(1, 8)
    brute = [
        np.mean(np.sum((summed[m:] - summed[:-m]) ** 2, axis=1)) / positions.shape[1]
        for m in lag_numbers
    ]
    slope = np.polyfit(0.1 * lag_numbers, brute, 1)[0]
    assert result["D_jump"] == pytest.approx(slope / 4 * 1e-16, rel=1e-9)
    assert (result["jump_fit_start"], result["jump_fit_stop"]) == pytest.approx((0.1, 0.7))
    lags, tracer_msd = msd(times, positions)
    window, diffusive = fit_window(lags, tracer_msd, a)
    assert diffusive is True
    assert result["fit_start"] == pytest.approx(lags[window][0])
    assert result["fit_stop"] == pytest.approx(lags[window][-1])
    # T = 5.9 s: the window runs from the first lag >= T/4 = 1.475 s to the first >= T/2
    assert (result["fit_start"], result["fit_stop"]) == pytest.approx((1.5, 3.0))


def test_transport_haven_ratio_nan_when_jump_not_positive():
    # Ions in mirrored pairs (r and -r, interleaved): each ion is a diffusive Brownian walker,
    # but the summed displacement, given as the fine series, is identically zero: D_jump = 0
    # exactly and H_R = D*/D_jump is undefined (nan), not infinite.
    rng = np.random.default_rng(601)
    times, half = brownian(rng, [1.0, 1.0], n_frames=101, n_ions=100, dt=1.0)
    positions = np.empty((101, 200, 2))
    positions[:, 0::2], positions[:, 1::2] = half, -half
    fine_times = np.linspace(0.0, times[-1], 16 * 100 + 1)
    result = transport(
        times,
        positions,
        temperature=300,
        volume=1e4,
        hop_distance=0.1,
        collective=(fine_times, np.zeros((fine_times.size, 2))),
    )
    assert result["diffusive"], result["diffusive_reason"]
    assert result["D_tracer"] > 0
    assert result["D_jump"] == 0.0
    assert np.isnan(result["haven_ratio"])
    assert result["conductivity"] == 0.0


@pytest.mark.parametrize("martingale", [False, True])
def test_transport_reads_d_jump_over_the_collective_window(martingale):
    """With a fine summed-displacement series (641 samples, lags 1..640), D_jump is the
    secant MSD_X(δ)/(2 d N δ) for uniform rates, else the least-squares slope of MSD_X over
    lags 20..80 ([T/32, T/8]), MSD_X averaged over every time origin of the series (computed
    here by brute force)."""
    rng = np.random.default_rng(602)
    n_ions, dim, frames, dt = 30, 2, 41, 0.5
    fine = np.cumsum(rng.normal(size=(16 * (frames - 1) + 1, n_ions, dim)), axis=0) * 0.2
    fine_times = dt / 16 * np.arange(fine.shape[0])
    series = (fine - fine[0]).sum(axis=1)
    window = collective_window(series.shape[0] - 1, martingale)
    lag_numbers = np.arange(window.start + 1, window.stop + 1)
    assert (lag_numbers[0], lag_numbers[-1]) == ((1, 1) if martingale else (20, 80))
    result = transport(
        fine_times[::16],
        fine[::16],
        temperature=300.0,
        volume=1e3,
        hop_distance=0.01,
        collective=(fine_times, series),
        martingale=martingale,
    )
    delta = dt / 16
    brute = np.array(
        [np.mean(np.sum((series[m:] - series[:-m]) ** 2, axis=1)) / n_ions for m in lag_numbers]
    )
    if martingale:
        expected = brute[0] / delta
    else:
        expected = np.polyfit(delta * lag_numbers, brute, 1)[0]
    assert result["D_jump"] == pytest.approx(expected / (2 * dim) * 1e-16, rel=1e-9)
    assert result["jump_fit_start"] == pytest.approx(lag_numbers[0] * delta, rel=1e-12)
    assert result["jump_fit_stop"] == pytest.approx(lag_numbers[-1] * delta, rel=1e-12)


def test_fine_collective_series_gives_d_jump_as_precise_as_d_tracer():
    # Exact: independent Brownian walkers, D_jump = D_tracer = D = 1.5 Å²/s. Their summed
    # displacement has uncorrelated increments (martingale=True). Sampled 16x finer than the
    # 101 frames, the secant at the shortest lag δ averages ~1600 independent increments:
    # its replica scatter is ≈ sqrt(2 / (3·1600)) ≈ 2 % (3 components), far below the
    # ≈ 50 % of a collective slope over [T/4, T/2] of the frames. 16 replicas; errors from
    # their scatter.
    rng = np.random.default_rng(603)
    exact, n_ions, frames = 1.5, 64, 101
    tracer, jump, lags = [], [], []
    for _ in range(16):
        fine_t, fine = brownian(
            rng, [exact] * 3, n_frames=16 * (frames - 1) + 1, n_ions=n_ions, dt=1 / 16
        )
        result = transport(
            fine_t[::16],
            fine[::16],
            temperature=300.0,
            volume=1e5,
            hop_distance=0.1,
            collective=(fine_t, (fine - fine[0]).sum(axis=1)),
            martingale=True,
        )
        assert result["diffusive"], result["diffusive_reason"]
        tracer.append(result["D_tracer"] * 1e16)
        jump.append(result["D_jump"] * 1e16)
        lags.append(result["jump_fit_stop"])
    mean_jump, err_jump = replica_mean(jump)
    mean_tracer, err_tracer = replica_mean(tracer)
    assert_z(mean_jump, err_jump, exact, "D_jump")
    assert_z(mean_tracer, err_tracer, exact, "D_tracer")
    assert err_jump < 0.02 * exact  # expected ≈ 0.5 % (2 % / sqrt 16); frames alone: ≈ 12 %
    assert err_jump <= 2 * err_tracer
    assert np.all(np.isclose(lags, 1 / 16))  # the shortest lag


def test_transport_of_a_rattler_is_not_diffusive_and_gives_upper_bounds():
    """Ions confined to three sites each (x in {0, a, 2a} at random every frame, y fixed):
    the MSD saturates at once (2·var = 4a²/3), so it never grows by 100 a² over [T/4, T/2]:
    not diffusive ("rattling"), D*, D_σ, H_R, σ are nan, and the upper bounds are
    (MSD(T/2) + 2 SE) / (2 d T/2), MSD averaged over origins and ions (by brute force here),
    SE from the 8 groups of 5 ions for the tracer and the relative sqrt(2/(3d)) of a single
    trajectory's MSD for the collective one."""
    rng = np.random.default_rng(604)
    n_frames, n_ions, a, dt = 101, 40, 2.0, 1e-12
    positions = np.zeros((n_frames, n_ions, 2))
    positions[:, :, 0] = a * rng.integers(0, 3, size=(n_frames, n_ions))
    positions[:, :, 1] = 3 * a * np.arange(n_ions)
    times = dt * np.arange(n_frames)
    temperature, volume = 400.0, 5e3
    result = transport(times, positions, temperature=temperature, volume=volume, hop_distance=a)
    assert result["diffusive"] is False
    assert "rattling" in result["diffusive_reason"]
    assert abs(result["msd_growth"]) < 1.0
    for key in ("D_tracer", "D_jump", "haven_ratio", "conductivity"):
        assert np.isnan(result[key]), key
    half = 50  # T = 100 dt: T/2 is the lag 50 dt (row 49 of lags 1..100)
    tracer_half = brute_force_msd(positions, collective=False).sum(axis=1)[half - 1]
    coll_half = brute_force_msd(positions, collective=True).sum(axis=1)[half - 1]
    groups = [
        brute_force_msd(positions[:, 5 * g : 5 * g + 5], collective=False).sum(axis=1)[half - 1]
        for g in range(8)
    ]
    tracer_se = np.std(groups, ddof=1) / np.sqrt(8)
    d_upper = (tracer_half + 2 * tracer_se) / (2 * 2 * half * dt) * 1e-16
    jump_upper = coll_half * (1 + 2 * np.sqrt(2 / 6)) / (2 * 2 * half * dt) * 1e-16
    assert result["D_tracer_upper"] == pytest.approx(d_upper, rel=1e-9)
    assert result["D_jump_upper"] == pytest.approx(jump_upper, rel=1e-9)
    e, k = scipy.constants.e, scipy.constants.k
    sigma_upper = (n_ions / volume * 1e30) * e**2 * (jump_upper * 1e-4) / (k * temperature) / 100
    assert result["conductivity_upper"] == pytest.approx(sigma_upper, rel=1e-9)


# --------------------------------------------------------------------------- 7. Arrhenius


TEMPS = np.array([300.0, 350.0, 400.0, 450.0, 500.0])
EA, D0 = 0.45, 1e-3


def test_arrhenius_exact_data():
    values = D0 * np.exp(-EA / (BOLTZMANN_EV * TEMPS))
    ea, err = arrhenius(TEMPS, values, 0.05 * values)
    assert ea == pytest.approx(EA, abs=1e-10)
    assert err > 0
    ea, err = arrhenius(TEMPS, values)  # unweighted: residuals are zero
    assert ea == pytest.approx(EA, abs=1e-10)
    assert err == pytest.approx(0.0, abs=1e-8)


def test_arrhenius_noisy_data_error_matches_scatter():
    # D_i = D0 exp(-Ea/kT_i) (1 + ε_i), ε ~ N(0, 5 %), given errors 5 % of the value.
    rng = np.random.default_rng(700)
    rel = 0.05
    exact = D0 * np.exp(-EA / (BOLTZMANN_EV * TEMPS))
    fits = []
    for _ in range(400):
        values = exact * (1 + rel * rng.normal(size=TEMPS.size))
        fits.append(arrhenius(TEMPS, values, rel * values))
    fits = np.array(fits)
    estimates, errors = fits[:, 0], fits[:, 1]
    assert_z(estimates[0], errors[0], EA, "one dataset")
    spread = estimates.std(ddof=1)
    assert_z(estimates.mean(), spread / np.sqrt(len(estimates)), EA, "mean over datasets")
    # The returned (propagated) error describes the actual scatter of Ea.
    ratio = spread / np.median(errors)
    assert 0.5 < ratio < 2.0, f"scatter / returned error = {ratio:.3f}"


def test_arrhenius_two_points_and_fallbacks():
    temps = np.array([300.0, 400.0])
    values = D0 * np.exp(-EA / (BOLTZMANN_EV * temps))
    errors = np.array([0.1, 0.2]) * values
    ea, err = arrhenius(temps, values, errors)
    assert ea == pytest.approx(EA, abs=1e-10)
    # Propagation: Ea = -Δln D / Δ(1/kT), so σ = sqrt(σ1² + σ2²) / |Δ(1/kT)|.
    dx = abs(1 / (BOLTZMANN_EV * temps[1]) - 1 / (BOLTZMANN_EV * temps[0]))
    assert err == pytest.approx(np.hypot(0.1, 0.2) / dx, rel=1e-10)
    # Unweighted with 2 points: no residual degrees of freedom, error nan.
    assert np.isnan(arrhenius(temps, values, [0.0, 0.0])[1])
    assert np.isnan(arrhenius(temps, values, [np.nan, 1.0])[1])
    # Equal relative errors: weighted and unweighted slopes coincide.
    rng = np.random.default_rng(701)
    noisy = D0 * np.exp(-EA / (BOLTZMANN_EV * TEMPS)) * (1 + 0.05 * rng.normal(size=5))
    weighted, _ = arrhenius(TEMPS, noisy, 0.05 * noisy)
    unweighted, err_unweighted = arrhenius(TEMPS, noisy, None)
    assert weighted == pytest.approx(unweighted, rel=1e-12)
    assert np.isfinite(err_unweighted) and err_unweighted > 0
    # A non-positive value has no logarithm: nan, not an exception.
    assert all(np.isnan(arrhenius(temps, [1e-8, -1e-9], None)))


# --------------------------------------------------------------------------- replicas


def test_replica_mean():
    mean, error = replica_mean([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert error == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2, rel=1e-14)
    mean, error = replica_mean([3.0])
    assert mean == 3.0 and np.isnan(error)
    assert all(np.isnan(replica_mean([1.0, np.nan, 2.0])))  # nan propagates, not dropped
    assert type(mean) is float and type(error) is float


# --------------------------------------------------------------------------- 8. fit window


def window_case(shape):
    """F = 101 frames, dt = 1: lags 1..100 s, run T = 100 s. The diffusive test reads the MSD
    at T/8, T/4, T/2 = the first lags >= 12.5, 25, 50: 13, 25, 50 s."""
    lags = np.arange(1, 101, dtype=float)
    return lags, shape(lags)


def test_fit_window_is_the_last_quarter_before_half_the_run():
    """Linear MSD 8 a² per unit time (a = 2): growth over [T/4, T/2] = 8·25 = 200 a² ≥ 100,
    slope ratio exactly 1: diffusive, window [25, 50] (both ends included)."""
    a = 2.0
    lags, values = window_case(lambda t: 8 * a**2 * t)
    window, diffusive = fit_window(lags, values, a)
    assert diffusive is True
    assert (lags[window][0], lags[window][-1]) == (25.0, 50.0)
    assert len(lags[window]) == 26


def test_fit_window_too_little_growth_is_not_diffusive():
    """A perfectly linear MSD that grows by only 3.96 a² per unit time · 25 = 99 a² over
    [T/4, T/2] (< 100 a²): not diffusive, same window; 101 a² is diffusive."""
    lags, values = window_case(lambda t: 3.96 * t)
    window, diffusive = fit_window(lags, values, 1.0)
    assert diffusive is False
    assert (lags[window][0], lags[window][-1]) == (25.0, 50.0)
    _, diffusive = fit_window(lags, 4.04 * lags, 1.0)
    assert diffusive is True


def test_fit_window_falling_slope_is_not_diffusive():
    """MSD = 100 a² sqrt(t) (a cluster being explored): growth 100 (sqrt 50 − 5) = 207 a²,
    but the slope ratio (sqrt 50 − sqrt 25)/25 ÷ (sqrt 25 − sqrt 13)/12 = 0.713 is more than
    0.2 below 1: not diffusive."""
    lags, values = window_case(lambda t: 100 * np.sqrt(t))
    window, diffusive = fit_window(lags, values, 1.0)
    assert diffusive is False
    assert (lags[window][0], lags[window][-1]) == (25.0, 50.0)


def test_fit_window_keeps_three_lags():
    # The shortest accepted run (8 frames, 7 lags, T = 7): [T/4, T/2] runs from the first lag
    # >= 1.75 to the first >= 3.5, lags 2, 3, 4: the window always holds at least 3 lags.
    window, _ = fit_window(np.arange(1.0, 8.0), 500 * np.arange(1.0, 8.0), 1.0)
    assert list(np.arange(1.0, 8.0)[window]) == [2.0, 3.0, 4.0]
    for n_lags in range(7, 40):
        lags = np.arange(1.0, n_lags + 1)
        window, _ = fit_window(lags, 500 * lags, 1.0)
        assert len(lags[window]) >= 3
        assert lags[window][0] >= n_lags / 4 and lags[window][-1] < n_lags / 2 + 1


# --------------------------------------------------------------------------- diffusive test


def kinked_groups(late_slopes, early_slope=10.0):
    """One MSD per group on window_case's lags: slope ``early_slope`` up to t = 25, then
    early_slope · r_g. Each group's early slope over [13, 25] is early_slope and its late
    slope over [25, 50] early_slope · r_g, so the slope ratio of the mean MSD is mean(r_g),
    and its jackknife error over the G groups is that of a mean: std(r_g, ddof=1)/sqrt(G)."""
    lags = np.arange(1, 101, dtype=float)
    r = np.asarray(late_slopes, dtype=float)[:, None]
    groups = early_slope * np.where(lags <= 25, lags, 25 + r * (lags - 25))
    return lags, groups


def test_diffusive_test_clean_linear():
    """Linear MSD 10 a²/s (a = 0.5 Å): growth exactly 250 a², ratio exactly 1, no error."""
    lags, values = window_case(lambda t: 10 * 0.25 * t)
    test = diffusive_test(lags, values, 0.5)
    assert isinstance(test, DiffusiveTest)
    assert test.diffusive is True and test.reason == ""
    assert test.growth == pytest.approx(250.0, rel=1e-12)
    assert test.slope_ratio == pytest.approx(1.0, rel=1e-12)
    assert np.isnan(test.slope_ratio_err)  # no groups given
    # with 8 identical groups the jackknife error is exactly zero
    test = diffusive_test(lags, values, 0.5, np.tile(values, (8, 1)))
    assert test.diffusive and test.slope_ratio_err == pytest.approx(0.0, abs=1e-12)


def test_diffusive_test_rattling():
    """MSD saturating at 3 a² (rattling in a cage): growth 0 < 100 a²."""
    lags, values = window_case(lambda t: 3.0 * (1 - np.exp(-t)))
    test = diffusive_test(lags, values, 1.0)
    assert test.diffusive is False
    assert "rattling" in test.reason and "100" in test.reason
    assert test.growth == pytest.approx(3.0 * (np.exp(-25) - np.exp(-50)), abs=1e-12)


def test_diffusive_test_falling_slope():
    """MSD = 100 sqrt(t) a²: growth 207 a², ratio (sqrt 50 − 5)/25 ÷ (5 − sqrt 13)/12."""
    lags, values = window_case(lambda t: 100 * np.sqrt(t))
    test = diffusive_test(lags, values, 1.0)
    exact_ratio = (np.sqrt(50) - 5) / 25 / ((5 - np.sqrt(13)) / 12)
    assert test.diffusive is False
    assert "falling" in test.reason
    assert test.slope_ratio == pytest.approx(exact_ratio, rel=1e-12)
    assert test.growth == pytest.approx(100 * (np.sqrt(50) - 5), rel=1e-12)


def test_diffusive_test_rising_slope_resolved():
    """Late slopes 1.4 and 1.6 times the early one in alternate groups: ratio 1.5 ± 0.038
    (std(ddof=1)/sqrt(8) = 0.1069/2.83): more than 0.2 and 2 errors above 1: "rising"."""
    lags, groups = kinked_groups([1.4, 1.6] * 4)
    test = diffusive_test(lags, groups.mean(axis=0), 1.0, groups)
    assert test.diffusive is False and "rising" in test.reason
    assert test.slope_ratio == pytest.approx(1.5, rel=1e-12)
    exact_err = np.std([1.4, 1.6] * 4, ddof=1) / np.sqrt(8)
    assert test.slope_ratio_err == pytest.approx(exact_err, rel=1e-9)


def test_diffusive_test_not_resolved():
    """Group ratios 0.2 and 1.8 alternating: mean exactly 1, but the jackknife error
    0.8·sqrt(8/7)/sqrt(8) = 0.302 > 0.2: "not resolved" (a noisy run is not diffusive even
    if its ratio happens to be 1)."""
    lags, groups = kinked_groups([0.2, 1.8] * 4)
    test = diffusive_test(lags, groups.mean(axis=0), 1.0, groups)
    assert test.diffusive is False and "not resolved" in test.reason
    assert test.slope_ratio == pytest.approx(1.0, rel=1e-12)
    assert test.slope_ratio_err == pytest.approx(0.8 * np.sqrt(8 / 7) / np.sqrt(8), rel=1e-9)


def test_diffusive_test_change_within_two_errors_is_noise():
    """Group ratios 0.85 and 1.75: ratio 1.3, 0.3 above 1 (more than 0.2), but its error
    0.45·sqrt(8/7)/sqrt(8) = 0.170 (< 0.2, resolved) puts it within 2 errors: diffusive.
    Without the groups the same mean MSD is "rising"."""
    lags, groups = kinked_groups([0.85, 1.75] * 4)
    values = groups.mean(axis=0)
    test = diffusive_test(lags, values, 1.0, groups)
    assert test.slope_ratio == pytest.approx(1.3, rel=1e-12)
    assert test.slope_ratio_err == pytest.approx(0.45 * np.sqrt(8 / 7) / np.sqrt(8), rel=1e-9)
    assert test.diffusive is True and test.reason == ""
    alone = diffusive_test(lags, values, 1.0)
    assert alone.diffusive is False and "rising" in alone.reason


def test_diffusive_test_not_growing_early():
    """Flat over [T/8, T/4] then a jump of 200 a²: no early slope, so no ratio."""
    lags, values = window_case(lambda t: np.where(t > 25, 200.0 * (t - 25) / 25, 0.0))
    test = diffusive_test(lags, values, 1.0)
    assert test.diffusive is False and "not growing" in test.reason


# --------------------------------------------------------------------------- collective lag


def test_collective_window():
    """Uniform rates (a martingale): the first lag alone; otherwise lags T/32 .. T/8 (at
    least three), as 0-based indices into lags 1..n."""
    assert collective_window(1600, martingale=True) == slice(0, 1)
    assert collective_window(1600, martingale=False) == slice(49, 200)  # lags 50 .. 200
    assert collective_window(99, martingale=False) == slice(2, 12)  # lags 3 .. 12
    assert collective_window(7, martingale=False) == slice(0, 3)


# --------------------------------------------------------------------------- 9. validation


def test_input_validation():
    rng = np.random.default_rng(900)
    positions = rng.normal(size=(10, 3, 2))
    times = np.arange(10.0)

    bad_times = times.copy()
    bad_times[4] += 0.01
    with pytest.raises(ValueError, match="times must be uniformly spaced"):
        msd(bad_times, positions)
    with pytest.raises(ValueError, match="times"):
        msd(times[::-1], positions)
    with pytest.raises(ValueError, match="times"):
        msd(times[:, None], positions)
    with pytest.raises(ValueError, match="positions"):
        msd(times, positions[:, :, 0])  # (F, N) instead of (F, N, d)
    with pytest.raises(ValueError, match="positions"):
        msd(times[:9], positions)  # frame counts differ
    nan_positions = positions.copy()
    nan_positions[3, 1, 0] = np.nan
    with pytest.raises(ValueError, match="positions must be finite"):
        msd(times, nan_positions)
    with pytest.raises(ValueError, match="frames"):
        diffusion_coefficient(times[:7], positions[:7], hop_distance=1.0)
    with pytest.raises(ValueError, match="hop_distance"):
        diffusion_coefficient(times, positions, hop_distance=0.0)
    with pytest.raises(ValueError, match="window"):
        diffusion_coefficient(times, positions, hop_distance=1.0, window=slice(3, 4))
    with pytest.raises(ValueError, match="temperature"):
        transport(times, positions, temperature=-5, volume=10, hop_distance=1)
    with pytest.raises(ValueError, match="volume"):
        transport(times, positions, temperature=300, volume=0, hop_distance=1)
    with pytest.raises(ValueError, match="tracer_msd"):
        fit_window(np.arange(1.0, 10.0), np.zeros(8), 1.0)
    fine_times = np.linspace(0.0, 9.0, 145)
    fine = np.cumsum(rng.normal(size=(145, 2)), axis=0)
    for bad, word in (
        ((fine_times, fine[:, :1]), "shape"),  # d components per sample
        ((fine_times, fine[:-1]), "shape"),
        ((fine_times, np.where(np.arange(145)[:, None] == 7, np.inf, fine)), "finite"),
        ((np.linspace(0.0, 8.0, 145), fine), "same run"),
    ):
        with pytest.raises(ValueError, match=word):
            transport(times, positions, temperature=300, volume=10, hop_distance=1, collective=bad)
    with pytest.raises(ValueError, match="temperatures"):
        arrhenius([300.0, 300.0], [1.0, 2.0], [0.1, 0.1])
    with pytest.raises(ValueError, match="values"):
        arrhenius([300.0, 400.0], [1.0], None)
    with pytest.raises(ValueError, match="values"):
        replica_mean([])


# --------------------------------------------------------------------------- applied field


def test_drift_and_diffusion_about_the_drift():
    """Brownian ions (D = 1.5 Å²/s per axis) with a drift v = (3, 0, 0) Å/s under a field
    E = (1e4, 0, 0) V/cm: over 16 replicas of 200 ions the drift velocity is v (cm/s), the
    mobility v/|E| and σ_E = n e v/|E|, and D*, D_σ taken about the drift are 1.5 Å²/s — each
    within 4 standard errors from the replicas. The per-task error of the drift from the ion
    groups agrees with the replicas' scatter (ratio within 0.6-1.6)."""
    rng = np.random.default_rng(612)
    v, d, field = np.array([3.0, 0.0, 0.0]), 1.5, np.array([1e4, 0.0, 0.0])
    keys = ("drift_velocity", "mobility", "conductivity_field", "D_tracer", "D_jump")
    samples = {key: [] for key in keys}
    errors = []
    for _ in range(16):
        times, positions = correlated_brownian(rng, d * np.eye(3), n_frames=60, n_ions=200,
                                               dt=0.1)  # fmt: skip
        positions = positions + v * times[:, None, None]
        result = transport(times, positions, temperature=300.0, volume=1e4,
                           hop_distance=0.05, field=field)  # fmt: skip
        assert result["diffusive"], result["diffusive_reason"]
        for key in keys:
            samples[key].append(result[key])
        errors.append(result["drift_velocity_err"])
    n_e = 200 / 1e4 * 1e24 * 1.602176634e-19  # n q in C/cm³
    exact = {
        "drift_velocity": 3e-8, "mobility": 3e-12, "conductivity_field": n_e * 3e-8 / 1e4,
        "D_tracer": d * 1e-16, "D_jump": d * 1e-16,
    }  # fmt: skip
    for key in keys:
        mean, error = replica_mean(samples[key])
        assert_z(mean, error, exact[key], key)
    spread = np.std(samples["drift_velocity"], ddof=1)
    assert 0.6 < np.mean(errors) / spread < 1.6


def test_no_field_changes_nothing():
    """A zero field is no field: the same numbers, bit for bit, and no field keys."""
    rng = np.random.default_rng(613)
    times, positions = correlated_brownian(rng, np.eye(2), n_frames=40, n_ions=64, dt=0.1)
    plain = transport(times, positions, temperature=300.0, volume=1e3, hop_distance=0.05)
    zero = transport(times, positions, temperature=300.0, volume=1e3, hop_distance=0.05,
                     field=[0.0, 0.0])  # fmt: skip
    assert "drift_velocity" not in plain and "drift_velocity" not in zero
    assert plain.keys() == zero.keys()
    for key, value in plain.items():
        assert value == zero[key] or (value != value and zero[key] != zero[key]), key


@pytest.mark.parametrize("field", [[1.0], [1.0, float("nan")], "x"])
def test_bad_field(field):
    rng = np.random.default_rng(614)
    times, positions = correlated_brownian(rng, np.eye(2), n_frames=20, n_ions=8, dt=0.1)
    with pytest.raises(ValueError, match="field"):
        transport(times, positions, temperature=300.0, volume=1e3, hop_distance=0.05,
                  field=field)  # fmt: skip


# --------------------------------------------------------------------------- thermodynamics


def _lattice_gas(site_energy, concentration, seed, hops=4000, frames=400, cells=12):
    """A lattice-gas trajectory on a simple cubic cells³ landscape (saddle 0.30 eV, 300 K)."""
    from kmc import kernel, landscape, lattice
    from kmc.distributions import Distribution

    lat = lattice.build("cubic", (cells,) * 3, 1.0)
    phase = landscape.Phase(Distribution.parse(site_energy), Distribution.parse(0.30))
    land = landscape.generate(lat, crystal=phase, amorphous=phase,
                              amorphous_mask=np.zeros(lat.n_sites, dtype=bool),
                              rng=np.random.default_rng(1))  # fmt: skip
    traj = kernel.simulate(
        land, 300.0, np.random.default_rng(seed), concentration=concentration,
        hops_per_ion=hops, frames=frames,
    )  # fmt: skip
    return land, traj


@pytest.mark.parametrize("c", [0.2, 0.5, 0.8])
def test_thermodynamic_factor_of_the_uniform_lattice_gas(c):
    """Exact: ions that interact only by exclusion on equal sites have Θ = 1/(1 − c)
    (1.25, 2, 5) and μ = kT ln(c/(1 − c)) (canonically kT ln((N + 1)/(V − N))); 6 runs on
    12³, |z| < 4 with the error from the runs' scatter."""
    thetas, mus = [], []
    for seed in range(6):
        land, traj = _lattice_gas(0.0, c, seed)
        thetas.append(thermodynamic_factor(traj.positions, traj.box, land.lattice.n_sites))
        mus.append(widom_chemical_potential(traj.sites, land.site_energy, ~land.blocked, 300.0))
    assert_z(*replica_mean(thetas), 1 / (1 - c), "Θ")
    n, v = traj.n_ions, land.lattice.n_sites
    exact_mu = BOLTZMANN_EV * 300.0 * math.log((n + 1) / (v - n))
    assert np.allclose(mus, exact_mu, rtol=0, atol=1e-12)  # every frame: V − N empty sites


def _fermi_dirac(energy: np.ndarray, n_ions: int, kt: float) -> tuple[float, np.ndarray]:
    """μ with Σ f_i(μ) = N and the occupations f_i = 1 / (1 + e^((ε_i − μ)/kT))."""
    from scipy.optimize import brentq
    from scipy.special import expit

    def excess(mu: float) -> float:
        return float(expit(-(energy - mu) / kt).sum() - n_ions)

    mu = brentq(excess, energy.min() - 50 * kt, energy.max() + 50 * kt, xtol=1e-14)
    return mu, expit(-(energy - mu) / kt)


@pytest.mark.parametrize("c", [0.2, 0.5])
def test_thermodynamic_factor_with_site_disorder(c):
    """Exact, per landscape: non-interacting ions on sites with normal energies (σ = 0.03 eV,
    300 K) have Θ = Σf / Σf(1 − f) with f the Fermi–Dirac occupations at the μ that puts N
    ions on the lattice. 6 runs on one 12³ landscape, |z| < 4 from their scatter. Widom's
    canonical μ = F(N + 1) − F(N) lies between the grand-canonical μ at N and at N + 1 ions
    (to within 4 errors)."""
    kt = BOLTZMANN_EV * 300.0
    thetas, mus = [], []
    for seed in range(6):
        land, traj = _lattice_gas({"dist": "normal", "mean": 0.0, "sigma": 0.03}, c, seed)
        thetas.append(thermodynamic_factor(traj.positions, traj.box, land.lattice.n_sites))
        mus.append(widom_chemical_potential(traj.sites, land.site_energy, ~land.blocked, 300.0))
    mu, f = _fermi_dirac(land.site_energy, traj.n_ions, kt)
    assert_z(*replica_mean(thetas), f.sum() / (f * (1 - f)).sum(), "Θ")
    mean, error = replica_mean(mus)
    mu_next, _ = _fermi_dirac(land.site_energy, traj.n_ions + 1, kt)
    assert mu - 4 * error < mean < mu_next + 4 * error, (mean, error, mu, mu_next)


def test_staggered_order():
    """|N_A − N_B| / N: 1 with every ion on one sublattice, 0 with them split evenly, and
    for N ions placed at random on V = 2 M sites its mean is the exact hypergeometric
    E|N_A − N_B| / N (computed by summing the distribution), within 4 standard errors."""
    from scipy.stats import hypergeom

    sublattice = np.tile([0, 1], 50)  # a chain of 100 sites
    assert staggered_order(np.array([[0, 2, 4, 6]]), sublattice) == 1.0
    assert staggered_order(np.array([[0, 1, 2, 3]]), sublattice) == 0.0
    rng = np.random.default_rng(615)
    n, frames = 20, 4000
    sites = np.array([rng.choice(100, size=n, replace=False) for _ in range(frames)])
    values = np.abs(n - 2 * sublattice[sites].sum(axis=1)) / n
    k = np.arange(n + 1)
    exact = float(np.sum(hypergeom(100, 50, n).pmf(k) * np.abs(n - 2 * k)) / n)
    assert abs(staggered_order(sites, sublattice) - exact) < 4 * values.std() / np.sqrt(frames)
