"""Tests of kmc.analysis: MSD, diffusion fits, conductivity, replica statistics, Arrhenius.

Statistical tests state the exact value and accept |z| < 4, with the standard error taken
from independent replicas (or repeated synthetic datasets), never from a fit residual.
All randomness comes from seeded numpy Generators, so the outcomes are reproducible.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.constants

from kmc.analysis import (
    BOLTZMANN_EV,
    arrhenius,
    diffusion_coefficient,
    fit_window,
    msd,
    nernst_einstein,
    replica_mean,
    transport,
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
    # N times larger and H_R = 1/N exactly.
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
    # MSD reaches 10 a² = 0.1 Å² at once; window = [10 %, 50 %] of T = 9 dt → lags 1..4.
    assert result["diffusive"] is True
    assert result["fit_start"] == pytest.approx(dt, rel=1e-9)
    assert result["fit_stop"] == pytest.approx(4 * dt, rel=1e-9)
    for key in ("D_tracer", "D_jump", "haven_ratio", "conductivity", "fit_start", "fit_stop"):
        assert type(result[key]) is float, key

    charged = transport(
        times, positions, temperature=temperature, volume=volume, hop_distance=0.1, charge=2
    )
    assert charged["conductivity"] == pytest.approx(4 * sigma, rel=1e-10)


def test_transport_matches_diffusion_coefficient():
    rng = np.random.default_rng(600)
    times, positions = brownian(rng, [0.3, 0.3], n_frames=60, n_ions=20, dt=0.1)
    result = transport(times, positions, temperature=300.0, volume=1e4, hop_distance=0.5)
    tracer = diffusion_coefficient(times, positions, hop_distance=0.5)
    jump = diffusion_coefficient(times, positions, hop_distance=0.5, collective=True)
    assert result["D_tracer"] == pytest.approx(tracer * 1e-16, rel=1e-12)
    assert result["D_jump"] == pytest.approx(jump * 1e-16, rel=1e-12)
    # The collective fit uses the tracer window (same lags), not its own.
    lags, tracer_msd = msd(times, positions)
    window, _ = fit_window(lags, tracer_msd, 0.5)
    explicit = diffusion_coefficient(
        times, positions, hop_distance=0.5, collective=True, window=window
    )
    assert explicit == pytest.approx(jump, rel=1e-12)
    assert result["fit_start"] == pytest.approx(lags[window][0])
    assert result["fit_stop"] == pytest.approx(lags[window][-1])


def test_transport_haven_ratio_nan_when_jump_not_positive():
    # Two ions moving in exactly opposite directions: the summed displacement is zero.
    n_frames = 20
    path = np.cumsum(np.ones((n_frames, 1)), axis=0)
    positions = np.stack([path, -path], axis=1)
    result = transport(
        np.arange(float(n_frames)), positions, temperature=300, volume=100, hop_distance=1
    )
    assert result["D_jump"] == pytest.approx(0.0, abs=1e-25)
    assert np.isnan(result["haven_ratio"])


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
    """F = 101 frames, dt = 1: lags 1..100 s, run T = 100 s, half-run lag 50 (index 49)."""
    lags = np.arange(1, 101, dtype=float)
    return lags, shape(lags)


def test_fit_window_starts_at_crossover():
    a = 2.0
    # Sub-linear (caged) until the MSD reaches 10 a² at t = 30, linear afterwards.
    lags, values = window_case(
        lambda t: np.where(t <= 30, 10 * a**2 * np.sqrt(t / 30), 10 * a**2 * (1 + (t - 30) / 60))
    )
    window, diffusive = fit_window(lags, values, a)
    assert diffusive is True
    assert lags[window][0] == 30.0  # crossover
    assert lags[window][-1] == 50.0  # half the run


def test_fit_window_never_before_ten_percent():
    lags, values = window_case(lambda t: 10 * 2.0**2 * t / 5)  # crossover at t = 5
    window, diffusive = fit_window(lags, values, 2.0)
    assert diffusive is True
    assert (lags[window][0], lags[window][-1]) == (10.0, 50.0)


@pytest.mark.parametrize("crossover", [70.0, np.inf])  # after the half-run / never
def test_fit_window_non_diffusive_fallback(crossover):
    lags, values = window_case(lambda t: 10 * t / crossover)  # a = 1: 10 a² at the crossover
    window, diffusive = fit_window(lags, values, 1.0)
    assert diffusive is False
    assert (lags[window][0], lags[window][-1]) == (25.0, 50.0)


def test_fit_window_keeps_three_lags():
    lags, values = window_case(lambda t: 10 * t / 49)  # crossover at 49, 2 lags before 50
    window, diffusive = fit_window(lags, values, 1.0)
    assert diffusive is True
    assert list(lags[window]) == [48.0, 49.0, 50.0]
    # The shortest accepted run (8 frames, 7 lags) still gets a 3-lag window.
    window, _ = fit_window(np.arange(1.0, 8.0), np.zeros(7), 1.0)
    assert len(range(*window.indices(7))) >= 3


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
    with pytest.raises(ValueError, match="temperatures"):
        arrhenius([300.0, 300.0], [1.0, 2.0], [0.1, 0.1])
    with pytest.raises(ValueError, match="values"):
        arrhenius([300.0, 400.0], [1.0], None)
    with pytest.raises(ValueError, match="values"):
        replica_mean([])
