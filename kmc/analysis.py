"""Transport estimators on plain numpy arrays: MSD, diffusion coefficients, conductivity, Ea.

This module is the end of the data flow: it reads trajectories as arrays (times in s,
unwrapped positions in Å) and imports nothing of ``kmc`` but :mod:`kmc.units`, so it can be
used on any trajectory (a task file, an MD run, a synthetic test).

Definitions follow docs/physics.md ("Observables"), with d the dimension and N the number of ions:

- tracer      D*  = lim <|Δr_i(t)|²> / (2 d t)        (average over ions and time origins)
- collective  D_σ = lim <|Σ_i Δr_i(t)|²> / (2 d N t)  (centre-of-mass / jump diffusion)
- tensor      D*_ab = lim <Δx_a Δx_b> / (2 t), D_σ,aa likewise (trace / d = D*, D_σ)
- Haven ratio H_R = D* / D_σ
- Nernst–Einstein conductivity σ = n q² D_σ / (k_B T), n = N / V

A run counts only once its tracer MSD is diffusive (:func:`diffusive_test`); D* is the
slope over [T/4, T/2] (:func:`fit_window`), D_σ comes from the collective MSD over the lags
of :func:`collective_window` (the secant at the first lag when the rates are uniform);
error bars belong to independent replicas (:func:`replica_mean`), not to a single fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.fft
from numpy.typing import ArrayLike

from kmc import units
from kmc.units import BOLTZMANN_EV

__all__ = [
    "BOLTZMANN_EV",
    "FIELD_KEYS",
    "MIN_FRAMES",
    "MIN_RELAXATION_TIMES",
    "TENSOR_KEYS",
    "THERMODYNAMIC_KEYS",
    "DiffusiveTest",
    "arrhenius",
    "collective_window",
    "diffusion_coefficient",
    "diffusive_test",
    "fit_window",
    "lattice_gas_thermodynamics",
    "msd",
    "nernst_einstein",
    "no_transport",
    "replica_mean",
    "staggered_order",
    "tensor_keys",
    "tensor_observables",
    "thermodynamic_factor",
    "transport",
    "widom_chemical_potential",
]


MIN_FRAMES = 8
"""Fewest trajectory frames a diffusion fit accepts (gives at least 3 lags in the window)."""


# Relative tolerance on the spacing of frame times.
_TIME_RTOL = 1e-6
# Default memory budget for the temporary arrays of one chunk of ions in :func:`msd`.
_DEFAULT_CHUNK_BYTES = 128 * 2**20


# --------------------------------------------------------------------------- validation


def _check_times(times: ArrayLike) -> tuple[np.ndarray, float]:
    """Validate frame times; return them as float64 and the frame spacing."""
    t = np.asarray(times, dtype=np.float64)
    if t.ndim != 1:
        raise ValueError(f"times must be a 1-D array of frame times, got shape {t.shape}")
    if t.size < 2:
        raise ValueError(f"times must hold at least 2 frames, got {t.size}")
    if not np.all(np.isfinite(t)):
        raise ValueError("times must be finite")
    dt = (t[-1] - t[0]) / (t.size - 1)
    if not dt > 0:
        raise ValueError("times must be strictly increasing")
    # The time-origin average and the FFT both assume one constant spacing.
    worst = np.max(np.abs(np.diff(t) - dt))
    if worst > _TIME_RTOL * dt:
        raise ValueError(
            f"times must be uniformly spaced (relative tolerance {_TIME_RTOL:g}): spacing "
            f"{dt:.6g} s on average, but one interval deviates by {worst:.3g} s"
        )
    return t, float(dt)


def _check_positions(positions: ArrayLike, n_frames: int) -> np.ndarray:
    """Validate the shape (F, N, d) of positions without copying them."""
    # No dtype here: a float32 or memory-mapped array is converted chunk by chunk later,
    # so a large trajectory is never copied whole.
    p = np.asarray(positions)
    if p.ndim != 3:
        raise ValueError(
            f"positions must have shape (frames, ions, dimensions), got shape {p.shape}"
        )
    if p.shape[0] != n_frames:
        raise ValueError(
            f"positions has {p.shape[0]} frames but times has {n_frames}: they must match"
        )
    if p.shape[1] < 1 or p.shape[2] < 1:
        raise ValueError(f"positions must hold at least one ion and one axis, got {p.shape}")
    if not (np.issubdtype(p.dtype, np.floating) or np.issubdtype(p.dtype, np.integer)):
        raise ValueError(f"positions must be a real numeric array, got dtype {p.dtype}")
    return p


def _check_positive(name: str, value: float) -> float:
    value = float(value)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


# --------------------------------------------------------------------------- MSD


def _origin_averaged_msd(
    power: np.ndarray, squares: np.ndarray, nfft: int, clip: bool = True
) -> np.ndarray:
    """MSD for lags 0..F-1, per component, from the FFT sums of :func:`_msd_sums`.

    The same formula gives the mean product of two components' displacements,
    <Δx_a Δx_b>, from the cross power Re(X_a conj(X_b)) and the products x_a(k) x_b(k) in
    place of |X|² and x(k)²; such a product can be negative, so pass ``clip=False``.

    Parameters
    ----------
    power : (nfft//2 + 1, d) array
        Σ over trajectories of |FFT(x)|², x zero-padded to ``nfft`` >= 2F - 1.
    squares : (F, d) array
        Σ over trajectories of x(k)².
    nfft : int
        FFT length.

    clip : bool, optional
        Set round-off negatives to 0 (right for squares, wrong for cross products).

    Returns
    -------
    (F, d) array
        Σ over trajectories of the time-origin-averaged squared displacement per component.
    """
    n_frames = squares.shape[0]
    lags = np.arange(n_frames)
    n_origins = (n_frames - lags)[:, None]
    # MSD(m) = S1(m) - 2 S2(m) (Calandrini et al., nMoldyn):
    #   S1(m) = Σ_{k=0}^{F-1-m} [x(k)² + x(k+m)²] / (F - m)  -- from prefix/suffix sums,
    #   S2(m) = Σ_{k=0}^{F-1-m} x(k) x(k+m) / (F - m)        -- autocorrelation by FFT
    # (zero padding to >= 2F - 1 makes the circular correlation a linear one).
    cumulative = np.concatenate([np.zeros((1, squares.shape[1])), np.cumsum(squares, axis=0)])
    s1 = cumulative[n_frames - lags] + (cumulative[n_frames] - cumulative[lags])
    autocorrelation = scipy.fft.irfft(power, n=nfft, axis=0)[:n_frames]
    result = (s1 - 2.0 * autocorrelation) / n_origins
    # Round-off can leave tiny negative values where the true MSD is zero.
    return np.maximum(result, 0.0) if clip else result


def _msd_sums(
    positions: np.ndarray,
    chunk_bytes: int = _DEFAULT_CHUNK_BYTES,
    groups: int = 1,
    cross: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Tracer and collective MSD per component for lags 0..F-1, both shape (F, d), the
    tracer MSD of ``groups`` disjoint groups of ions (contiguous in ion order), summed over
    components, shape (groups, F), and with ``cross`` the tracer's mean products
    <Δx_a Δx_b> of the component pairs of :func:`_pairs` (a < b), shape (F, pairs), else None.

    Tracer: averaged over ions and time origins. Collective: |Σ_i Δr_i|² averaged over time
    origins, divided by N. One pass over the ions, in chunks, so all of them cost one read.
    """
    n_frames, n_ions, dim = positions.shape
    nfft = scipy.fft.next_fast_len(2 * n_frames - 1, real=True)
    n_freq = nfft // 2 + 1
    # Bytes of temporaries per ion: the float64 block, its centred and transposed copies
    # (3 x 8F), the zero-padded FFT input and complex output (8 nfft + 16 n_freq), the
    # power and the squares of its parts (3 x 8 n_freq).
    per_ion = dim * (24 * n_frames + 8 * nfft + 40 * n_freq)
    chunk = int(max(1, min(n_ions, chunk_bytes // per_ion)))
    group_of = np.arange(n_ions) * groups // n_ions

    power = np.zeros((groups, dim, n_freq))
    squares = np.zeros((groups, n_frames, dim))
    pairs = _pairs(dim) if cross else []
    cross_power = np.zeros((len(pairs), n_freq))
    cross_squares = np.zeros((n_frames, len(pairs)))
    total = np.zeros((n_frames, dim))  # Σ_i x_i(t): the collective coordinate
    for start in range(0, n_ions, chunk):
        block = np.asarray(positions[:, start : start + chunk, :], dtype=np.float64)
        if not np.all(np.isfinite(block)):
            raise ValueError("positions must be finite (found nan or inf)")
        # Subtract each ion's time average: the MSD is unchanged, but S1 and 2 S2 no longer
        # carry the large absolute coordinates whose cancellation would cost precision.
        centred = block - block.mean(axis=0)
        n_block = centred.shape[1]
        member = group_of[start : start + n_block]
        total += centred.sum(axis=1)
        for g in np.unique(member):
            part = centred[:, member == g, :]
            squares[g] += np.einsum("fnd,fnd->fd", part, part)
        # Time as the contiguous last axis: pocketfft is ~3x faster than along a strided one.
        series = np.ascontiguousarray(centred.reshape(n_frames, n_block * dim).T)
        spectrum = scipy.fft.rfft(series, n=nfft, axis=-1)
        block_power = (spectrum.real**2 + spectrum.imag**2).reshape(n_block, dim, n_freq)
        # Σ_i irfft(|X_i|²) = irfft(Σ_i |X_i|²): sum spectra now, transform back once.
        np.add.at(power, member, block_power)
        if pairs:
            parts = spectrum.reshape(n_block, dim, n_freq)
            for k, (a, b) in enumerate(pairs):
                # Re(X_a conj X_b), summed over the block's ions
                cross_power[k] += np.einsum("if,if->f", parts.real[:, a], parts.real[:, b])
                cross_power[k] += np.einsum("if,if->f", parts.imag[:, a], parts.imag[:, b])
                cross_squares[:, k] += np.einsum("fi,fi->f", centred[:, :, a], centred[:, :, b])
            del parts
        del block, centred, series, spectrum, block_power

    sizes = np.bincount(group_of, minlength=groups)
    per_group = (
        np.stack(
            [_origin_averaged_msd(power[g].T, squares[g], nfft).sum(axis=1) for g in range(groups)]
        )
        / sizes[:, None]
    )
    tracer = _origin_averaged_msd(power.sum(axis=0).T, squares.sum(axis=0), nfft) / n_ions
    products = None
    if cross:
        products = _origin_averaged_msd(cross_power.T, cross_squares, nfft, clip=False) / n_ions
    return tracer, _series_msd(total) / n_ions, per_group, products


def _pairs(dim: int) -> list[tuple[int, int]]:
    """The off-diagonal component pairs (a, b), a < b, in the order xy, xz, yz."""
    return [(a, b) for a in range(dim) for b in range(a + 1, dim)]


def _series_msd(series: np.ndarray) -> np.ndarray:
    """Time-origin-averaged squared displacement of one (M, d) series, lags 0..M-1, (M, d)."""
    m = series.shape[0]
    nfft = scipy.fft.next_fast_len(2 * m - 1, real=True)
    centred = series - series.mean(axis=0)
    spectrum = scipy.fft.rfft(centred, n=nfft, axis=0)
    return _origin_averaged_msd(spectrum.real**2 + spectrum.imag**2, centred**2, nfft)


def msd(
    times: ArrayLike,
    positions: ArrayLike,
    *,
    collective: bool = False,
    per_axis: bool = False,
    chunk_bytes: int = _DEFAULT_CHUNK_BYTES,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean squared displacement averaged over all time origins.

    Parameters
    ----------
    times : (F,) array_like
        Frame times in s, uniformly spaced (relative tolerance 1e-6).
    positions : (F, N, d) array_like
        Unwrapped positions in Å. Read in chunks of ions and converted to float64 chunk by
        chunk, so a large (or memory-mapped) array is never copied whole.
    collective : bool, optional
        If True, the MSD of the summed displacement, ``|Σ_i Δr_i(t)|² / N`` (centre-of-mass
        or jump diffusion); otherwise the tracer MSD ``<|Δr_i(t)|²>`` averaged over ions.
    per_axis : bool, optional
        If True, return one column per Cartesian component; otherwise their sum.
    chunk_bytes : int, optional
        Memory budget for the temporary arrays of one chunk of ions (default 128 MiB).

    Returns
    -------
    lag_times : (F-1,) ndarray
        Lags of 1..F-1 frames, in s.
    msd : (F-1,) or (F-1, d) ndarray
        MSD in Å² at each lag.

    Raises
    ------
    ValueError
        If ``times`` is not 1-D, increasing and uniformly spaced, or ``positions`` does not
        have shape (F, N, d) with F = len(times), or contains non-finite values.

    Notes
    -----
    Uses the FFT algorithm MSD(m) = S1(m) - 2 S2(m), O(F log F) per ion, with S2 the
    autocorrelation of the positions. Every lag m is averaged over all F - m origins, so
    the longest lags rest on few origins and are noisy.
    """
    t, dt = _check_times(times)
    p = _check_positions(positions, t.size)
    chunk_bytes = int(chunk_bytes)
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be a positive integer, got {chunk_bytes}")
    tracer, coll, _, _ = _msd_sums(p, chunk_bytes)
    result = coll if collective else tracer
    result = result[1:]  # lag 0 is identically zero
    if not per_axis:
        result = result.sum(axis=1)
    lag_times = dt * np.arange(1, t.size)
    return lag_times, result


# --------------------------------------------------------------------------- fits

#: Least MSD growth over the last quarter of the run, [T/4, T/2], in units of a² (ten hop
#: lengths rms) for a task to count as diffusive.
MIN_GROWTH_HOPS2 = 100.0
#: Largest change of the MSD slope between [T/8, T/4] and [T/4, T/2] that still counts as
#: converged (a ratio late/early in [0.8, 1.25]).
MAX_SLOPE_CHANGE = 0.2
#: The slope ratio is judged only if its standard error (from groups of ions) is below this.
MAX_RATIO_ERROR = 0.2
#: Groups of ions whose scatter gives the error of the slope ratio.
ERROR_GROUPS = 8
#: Non-martingale D_σ is fitted over [T / (2 F), T / (F / 2)] with F = COLLECTIVE_FRACTION,
#: i.e. [T/32, T/8] (see :func:`collective_window`).
COLLECTIVE_FRACTION = 16


@dataclass(frozen=True)
class DiffusiveTest:
    """Whether a tracer MSD has reached its long-time, linear regime, and why not.

    ``growth`` is MSD(T/2) − MSD(T/4) in units of a², ``slope_ratio`` the MSD slope over
    [T/4, T/2] divided by that over [T/8, T/4], with ``slope_ratio_err`` its standard error
    from groups of ions (nan with fewer than 4 ions); ``reason`` is empty when diffusive.
    """

    diffusive: bool
    reason: str
    growth: float
    slope_ratio: float
    slope_ratio_err: float


def _lag_index(lags: np.ndarray, time: float) -> int:
    return int(np.clip(np.searchsorted(lags, time * (1 - 1e-9), side="left"), 0, lags.size - 1))


def diffusive_test(
    lag_times: ArrayLike,
    tracer_msd: ArrayLike,
    hop_distance: float,
    group_msds: ArrayLike | None = None,
) -> DiffusiveTest:
    """Decide whether a run reached the diffusive regime (documented in docs/physics.md).

    Two conditions, both on the tracer MSD of a run of length T:

    1. the ions travelled: the MSD grew by at least ``MIN_GROWTH_HOPS2`` a² between T/4 and
       T/2. Rattling inside a finite fast cluster, or on a closed fast shell, adds nothing
       once the cluster is explored, so this counts only long-range motion;
    2. the slope converged: the MSD slope over [T/4, T/2] is within ``MAX_SLOPE_CHANGE`` of
       that over [T/8, T/4] -- an ion still exploring a large cluster near a percolation
       threshold shows a falling slope. The ratio must be resolved (standard error below
       ``MAX_RATIO_ERROR``, from the scatter of ``group_msds``, (G, L) tracer MSDs of G
       disjoint groups of ions); a change within two standard errors is noise.

    Parameters are as for :func:`fit_window`; ``group_msds`` is optional (no error: the
    ratio is judged as it is).
    """
    lags = np.asarray(lag_times, dtype=np.float64)
    values = np.asarray(tracer_msd, dtype=np.float64)
    a2 = _check_positive("hop_distance", hop_distance) ** 2
    run = lags[-1]
    q8, q4, q2 = (_lag_index(lags, run * f) for f in (0.125, 0.25, 0.5))

    def ratio(msd_values: np.ndarray) -> float:
        early = (msd_values[..., q4] - msd_values[..., q8]) / (lags[q4] - lags[q8])
        late = (msd_values[..., q2] - msd_values[..., q4]) / (lags[q2] - lags[q4])
        return late.mean() / early.mean() if early.mean() > 0 else math.nan

    growth = float((values[q2] - values[q4]) / a2)
    r = ratio(values)
    err = math.nan
    if group_msds is not None:
        groups = np.asarray(group_msds, dtype=np.float64)
        if groups.shape[0] >= 4:  # jackknife over the groups
            g = groups.shape[0]
            leave_out = np.array([ratio(np.delete(groups, i, axis=0)) for i in range(g)])
            err = float(np.sqrt((g - 1) / g * np.sum((leave_out - leave_out.mean()) ** 2)))
    reason = ""
    if not growth >= MIN_GROWTH_HOPS2:
        reason = (
            f"MSD grew only {growth:.3g} a² over [T/4, T/2] (needs {MIN_GROWTH_HOPS2:g} a²): "
            "ions still rattling in fast clusters or the run too short"
        )
    elif not math.isfinite(r):
        reason = "MSD not growing over [T/8, T/4]"
    elif math.isfinite(err) and err > MAX_RATIO_ERROR:
        reason = f"MSD slope not resolved (late/early = {r:.2f} ± {err:.2f})"
    elif abs(r - 1) > MAX_SLOPE_CHANGE and not (math.isfinite(err) and abs(r - 1) <= 2 * err):
        trend = "falling" if r < 1 else "rising"
        reason = (
            f"MSD slope still {trend}: late/early = {r:.2f}"
            + (f" ± {err:.2f}" if math.isfinite(err) else "")
            + f" (converged: within {MAX_SLOPE_CHANGE:g} of 1)"
        )
    return DiffusiveTest(not reason, reason, growth, float(r), err)


def fit_window(
    lag_times: ArrayLike, tracer_msd: ArrayLike, hop_distance: float
) -> tuple[slice, bool]:
    """The lags over which the tracer MSD is fitted by a straight line, and whether the run
    is diffusive (:func:`diffusive_test`, without group errors).

    The window is [T/4, T/2] with T = ``lag_times[-1]``: the latest half of the lags that
    still rest on at least half the run's time origins, i.e. the part of the MSD that
    :func:`diffusive_test` checks for convergence. It always holds at least 3 lags.

    Parameters
    ----------
    lag_times : (L,) array_like
        Lag times in s, uniformly spaced from one frame (as returned by :func:`msd`).
    tracer_msd : (L,) array_like
        Tracer MSD in Å², summed over components.
    hop_distance : float
        Nearest-neighbour hop length a in Å.

    Raises
    ------
    ValueError
        If the arrays are not 1-D of equal length, there are fewer than MIN_FRAMES - 1 lags,
        or ``hop_distance`` is not positive.
    """
    lags, values = _check_lags(lag_times, tracer_msd)
    test = diffusive_test(lags, values, hop_distance)
    return _tracer_window(lags), test.diffusive


def _check_lags(lag_times: ArrayLike, tracer_msd: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    lags = np.asarray(lag_times, dtype=np.float64)
    values = np.asarray(tracer_msd, dtype=np.float64)
    if lags.ndim != 1:
        raise ValueError(f"lag_times must be 1-D, got shape {lags.shape}")
    if values.shape != lags.shape:
        raise ValueError(
            f"tracer_msd must be 1-D with the shape of lag_times {lags.shape}, got {values.shape}"
        )
    if lags.size < MIN_FRAMES - 1:
        raise ValueError(
            f"need at least {MIN_FRAMES} frames ({MIN_FRAMES - 1} lags) to fit a diffusion "
            f"coefficient, got {lags.size} lags"
        )
    return lags, values


def _tracer_window(lags: np.ndarray) -> slice:
    run = lags[-1]
    start, stop = _lag_index(lags, 0.25 * run), _lag_index(lags, 0.5 * run) + 1
    start = max(0, min(start, stop - 3))  # keep at least 3 lags in the fit
    return slice(start, stop)


def collective_window(n_lags: int, martingale: bool) -> slice:
    """The lags (indices into lags 1..n_lags of the summed-displacement series) over which
    D_σ is read from the collective (centre-of-mass) MSD (docs/physics.md, "Estimators and
    error bars"): one lag means the secant MSD(τ)/(2 d τ), more a least-squares slope with an
    intercept.

    Unlike the tracer's, the collective MSD is one trajectory's: its precision falls as
    sqrt(τ / T) with the lag τ. With ``martingale`` (uniform rates, no blocked site: every
    hop is as likely as its reverse in every configuration, so the summed displacement has
    uncorrelated increments and its MSD is exactly linear from τ = 0) the first lag alone
    is unbiased and the most precise. Otherwise ions rattling over low barriers, or
    confined to closed segments, add a short-time excess that saturates into an offset;
    the slope with an intercept over [T/32, T/8] removes it, at about 1.5 times the scatter
    of a secant at T/16 and a third of that of a fit over [T/4, T/2].
    """
    if martingale:
        return slice(0, 1)
    start = max(0, n_lags // (2 * COLLECTIVE_FRACTION) - 1)
    stop = max(start + 3, n_lags // (COLLECTIVE_FRACTION // 2))
    return slice(start, min(stop, n_lags))


def _slope(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares slope of y (L,) or (L, k) against x (L,), with an intercept."""
    dx = x - x.mean()
    dy = y - y.mean(axis=0)
    return np.tensordot(dx, dy, axes=(0, 0)) / np.dot(dx, dx)


def _check_window(window: slice, n_lags: int) -> slice:
    if not isinstance(window, slice):
        raise ValueError(f"window must be a slice of lag indices, got {type(window).__name__}")
    if len(range(*window.indices(n_lags))) < 2:
        raise ValueError(f"window {window} selects fewer than 2 of the {n_lags} lags")
    return window


def diffusion_coefficient(
    times: ArrayLike,
    positions: ArrayLike,
    *,
    hop_distance: float,
    collective: bool = False,
    per_axis: bool = False,
    window: slice | None = None,
) -> float | np.ndarray:
    """Diffusion coefficient in Å²/s from the slope of the MSD.

    Parameters
    ----------
    times : (F,) array_like
        Frame times in s, uniformly spaced; F >= MIN_FRAMES.
    positions : (F, N, d) array_like
        Unwrapped positions in Å.
    hop_distance : float
        Hop length in Å (kept for the call signature of the fit-window rule).
    collective : bool, optional
        If True, the collective (jump) coefficient D_σ from |Σ_i Δr_i|² / N; else tracer D*.
    per_axis : bool, optional
        If True, return the d diagonal elements of the diffusion tensor (slope of each
        component / 2); else the scalar slope of the summed MSD / (2 d).
    window : slice, optional
        Lag indices to fit. Default: :func:`fit_window`'s [T/4, T/2], for both estimates
        (:func:`transport` reads D_σ over :func:`collective_window` instead).

    Returns
    -------
    float or (d,) ndarray
        D in Å²/s. The slope is fitted with a free intercept, which absorbs the short-time
        (cage, back-hop) offset of the MSD. Whether the run was diffusive is not checked
        here: :func:`transport` does that.
    """
    t, dt = _check_times(times)
    if t.size < MIN_FRAMES:
        raise ValueError(f"times must hold at least {MIN_FRAMES} frames, got {t.size}")
    p = _check_positions(positions, t.size)
    _check_positive("hop_distance", hop_distance)
    tracer, coll, _, _ = _msd_sums(p)
    lags = dt * np.arange(1, t.size)
    window = _tracer_window(lags) if window is None else _check_window(window, lags.size)
    components = (coll if collective else tracer)[1:]
    dim = p.shape[2]
    if per_axis:
        return _slope(lags[window], components[window]) / 2.0
    return float(_slope(lags[window], components[window].sum(axis=1)) / (2.0 * dim))


# --------------------------------------------------------------------------- tensor

_AXIS_NAMES = "xyz"
#: Every diffusion-tensor component a task can report (cm²/s), in record order: the tracer
#: diagonal, the tracer off-diagonal, the collective (D_σ) diagonal. A lattice of d axes
#: reports those of its axes only (:func:`tensor_keys`).
TENSOR_KEYS = (
    "D_tracer_xx",
    "D_tracer_yy",
    "D_tracer_zz",
    "D_tracer_xy",
    "D_tracer_xz",
    "D_tracer_yz",
    "D_jump_xx",
    "D_jump_yy",
    "D_jump_zz",
)


#: What a task driven by an applied field reports besides D (see :func:`transport`): the drift
#: velocity along the field (cm/s) with its error from the ion groups, the mobility
#: (cm²/V/s) and the field-driven conductivity σ_E = n q v / |E| (S/cm).
FIELD_KEYS = ("drift_velocity", "drift_velocity_err", "mobility", "conductivity_field")


def tensor_keys(dim: int) -> tuple[str, ...]:
    """The tensor components a lattice of ``dim`` (1, 2 or 3) Cartesian axes reports, in
    :data:`TENSOR_KEYS` order: 1D ``D_tracer_xx``, ``D_jump_xx``; 2D adds ``_yy`` and
    ``D_tracer_xy``; 3D has all nine."""
    if dim not in (1, 2, 3):
        raise ValueError(f"dim must be 1, 2 or 3, got {dim!r}")
    axes = _AXIS_NAMES[:dim]
    return tuple(key for key in TENSOR_KEYS if set(key.rsplit("_", 1)[1]) <= set(axes))


def tensor_observables(tracer: ArrayLike, jump: ArrayLike) -> dict[str, float]:
    """The records' names for a tracer diffusion tensor and a collective one.

    Parameters
    ----------
    tracer : (d, d) array_like
        Tracer tensor D*_ab (any unit; kmc records cm²/s). Symmetric: the upper triangle
        is read.
    jump : (d,) or (d, d) array_like
        Collective (D_σ) tensor, or its diagonal.

    Returns
    -------
    dict
        ``D_tracer_xx`` ... ``D_jump_zz`` as :func:`tensor_keys` names them for d axes.
    """
    t = np.asarray(tracer, dtype=np.float64)
    j = np.asarray(jump, dtype=np.float64)
    dim = t.shape[0] if t.ndim == 2 else -1
    if t.shape != (dim, dim) or dim not in (1, 2, 3):
        raise ValueError(f"tracer must be a (d, d) array with d in 1..3, got shape {t.shape}")
    if j.shape == (dim, dim):
        j = np.diag(j)
    if j.shape != (dim,):
        raise ValueError(f"jump must have shape ({dim},) or ({dim}, {dim}), got {j.shape}")
    out: dict[str, float] = {}
    for key in tensor_keys(dim):
        name, axes = key.rsplit("_", 1)
        a, b = (_AXIS_NAMES.index(c) for c in axes)
        out[key] = float(t[a, b] if name == "D_tracer" else j[a])
    return out


# --------------------------------------------------------------------------- conductivity


def nernst_einstein(
    D_jump_cm2_s: float, number_density_per_A3: float, temperature: float, charge: int = 1
) -> float:
    """Nernst–Einstein ionic conductivity σ = n q² D_σ / (k_B T), in S/cm.

    Parameters
    ----------
    D_jump_cm2_s : float
        Collective (jump) diffusion coefficient D_σ in cm²/s.
    number_density_per_A3 : float
        Number density n of mobile ions in Å⁻³.
    temperature : float
        Temperature in K (> 0).
    charge : int, optional
        Ion charge in units of e (+1 for Li+ and Na+).

    Returns
    -------
    float
        Conductivity in S/cm.
    """
    temperature = _check_positive("temperature", temperature)
    q = charge * units.ELEMENTARY_CHARGE
    n_si = number_density_per_A3 * units.PER_A3_TO_PER_M3
    d_si = D_jump_cm2_s * units.CM2_TO_M2
    sigma_si = n_si * q**2 * d_si / (units.BOLTZMANN_J * temperature)  # S/m
    return float(sigma_si * units.S_PER_M_TO_S_PER_CM)


def transport(
    times: ArrayLike,
    positions: ArrayLike,
    *,
    temperature: float,
    volume: float,
    hop_distance: float,
    charge: int = 1,
    collective: tuple[ArrayLike, ArrayLike] | None = None,
    martingale: bool = False,
    field: ArrayLike | None = None,
    verdict: str = "",
) -> dict:
    """All transport observables of one trajectory (one task).

    Parameters
    ----------
    times : (F,) array_like
        Frame times in s, uniformly spaced; F >= MIN_FRAMES.
    positions : (F, N, d) array_like
        Unwrapped positions in Å.
    temperature : float
        Temperature in K.
    volume : float
        Volume of the simulation cell in Å³ (n = N / volume).
    hop_distance : float
        Hop length in Å (for the diffusive test).
    charge : int, optional
        Ion charge in units of e.
    collective : ((M,), (M, d)) array_like pair, optional
        Times (s, uniform from 0, ending at ``times[-1]``) and the summed displacement
        Σ_i Δr_i (Å) of all ions, sampled more finely than the frames (the kernel records it
        for the lattice gas). Default: the sum of ``positions`` at the frames.
    martingale : bool, optional
        True if the landscape has uniform rates and no blocked site, so that D_σ may be read
        from the first lag alone (:func:`collective_window`).
    field : (d,) array_like, optional
        The applied field in V/cm the run was driven by (None or zero: none). The drift
        velocity v is then the mean ion displacement over the run divided by its length,
        and every MSD is taken about the drift, of Δr − v τ, divided by 1 − τ/(N T) (tracer)
        or 1 − τ/T (collective): the variance that subtracting an estimated v removes, exact
        for increments without memory. The :data:`FIELD_KEYS` are added.
    verdict : str, optional
        Why the run cannot count as diffusive whatever its MSD shows (e.g. it was stopped at
        its work budget, so it ends before its planned length): the result is then the
        non-diffusive one, with this reason first.

    Returns
    -------
    dict
        ``D_tracer``, ``D_jump`` (cm²/s), ``haven_ratio`` (D_tracer / D_jump),
        ``conductivity`` (S/cm, Nernst–Einstein from D_jump), ``diffusive`` (bool, see
        :func:`diffusive_test`) and ``diffusive_reason`` (empty if diffusive),
        ``msd_growth`` (a²), ``slope_ratio`` and ``slope_ratio_err``, ``fit_start``,
        ``fit_stop`` (s, the tracer's fit window [T/4, T/2], both ends included) and
        ``jump_fit_start``, ``jump_fit_stop`` (s, the lags D_jump is read from,
        :func:`collective_window`; equal for a secant).
        For a non-diffusive run D_tracer, D_jump, haven_ratio and conductivity are nan and
        ``D_tracer_upper``, ``D_jump_upper``, ``conductivity_upper`` hold upper bounds,
        (MSD(T/2) + 2 standard errors) / (2 d T/2) (an MSD that is still bending over lies
        above its long-time line through the origin); for a diffusive run the ``_upper``
        values are nan.
        The diffusion tensor (cm²/s; :func:`tensor_keys` of the d axes, none for d > 3):
        ``D_tracer_ab`` = slope of <Δx_a Δx_b> / 2 over the tracer's window, ``D_jump_aa`` =
        the same of the collective MSD's component a over D_jump's lags (secant or slope), so that
        D_tracer = (D_tracer_xx + ...) / d and D_jump = (D_jump_xx + ...) / d to rounding.
        The components share the run's diffusive verdict (nan, without bounds, when it is
        not diffusive) and are not tested one by one: an axis without long-range transport
        gives a component near 0 (either sign), to be judged by its error over replicas.
        With a field: ``drift_velocity`` (cm/s, v·Ê), ``drift_velocity_err`` (its standard
        error over the ion groups), ``mobility`` (v·Ê/|E|, cm²/V/s) and
        ``conductivity_field`` (n q v·Ê / |E|, S/cm); nan when the run is not diffusive
        about the drift (ions stuck in finite clusters polarize, and a drift measured
        before they have done so is not the steady state's).
    """
    t, dt = _check_times(times)
    if t.size < MIN_FRAMES:
        raise ValueError(f"times must hold at least {MIN_FRAMES} frames, got {t.size}")
    p = _check_positions(positions, t.size)
    temperature = _check_positive("temperature", temperature)
    volume = _check_positive("volume", volume)
    n_ions, dim = p.shape[1], p.shape[2]
    groups = ERROR_GROUPS if n_ions >= 2 * ERROR_GROUPS else (n_ions if n_ions >= 4 else 1)
    e_field = _check_field(field, dim)
    if e_field is not None:
        drift, drift_err = _drift(t, p, e_field, groups)
        p = p - drift * (t - t[0])[:, None, None]  # positions about the drift

    tracer, coll, per_group, products = _msd_sums(p, groups=groups, cross=1 < dim <= 3)
    lags = dt * np.arange(1, t.size)
    if e_field is not None:  # restore the variance the estimated drift removed
        # (at the last lag, T, nothing is left for one ion or the collective: nan there)
        with np.errstate(divide="ignore", invalid="ignore"):
            kept = 1.0 - lags / (n_ions * (t[-1] - t[0]))
            tracer[1:] /= kept[:, None]
            per_group[:, 1:] /= kept
            if products is not None:
                products[1:] /= kept[:, None]
            coll[1:] /= (1.0 - lags / (t[-1] - t[0]))[:, None]
    tracer_sum = tracer[1:].sum(axis=1)
    test = diffusive_test(lags, tracer_sum, hop_distance, per_group[:, 1:] if groups >= 4 else None)
    window = _tracer_window(lags)
    d_tracer = float(_slope(lags[window], tracer_sum[window])) / (2 * dim)
    # The tensor D_ab = slope of <Δx_a Δx_b> / 2 over the same window: its trace / d is
    # d_tracer (the slope is linear in the MSD).
    tracer_tensor = np.diag(_slope(lags[window], tracer[1:][window]) / 2.0)
    if products is not None:
        off_diagonal = _slope(lags[window], products[1:][window]) / 2.0
        for (a, b), value in zip(_pairs(dim), off_diagonal, strict=True):
            tracer_tensor[a, b] = tracer_tensor[b, a] = value

    if collective is None:
        c_lags, c_axes = lags, coll[1:]  # (L, d): per axis
    else:
        c_lags, c_axes = _collective_series(
            collective, t, dim, n_ions, None if e_field is None else drift
        )
    c_msd = c_axes.sum(axis=1)
    c_window = collective_window(c_lags.size, martingale)
    if c_window.stop - c_window.start == 1:
        d_jump = float(c_msd[c_window.start] / c_lags[c_window.start]) / (2 * dim)
        jump_diagonal = c_axes[c_window.start] / c_lags[c_window.start] / 2.0
    else:
        d_jump = float(_slope(c_lags[c_window], c_msd[c_window])) / (2 * dim)
        jump_diagonal = _slope(c_lags[c_window], c_axes[c_window]) / 2.0
    c_fitted = c_lags[c_window]

    # Upper bounds MSD(T/2) / (2 d T/2), raised by two standard errors of that MSD: from the
    # scatter of the ion groups for the tracer (else, like the collective one, from the
    # variance of a Gaussian process's MSD at lag T/2, relative sqrt(2 / (3 d)) per
    # trajectory), so that noise in one run does not put the bound below the truth.
    half = _lag_index(lags, 0.5 * lags[-1])
    c_half = _lag_index(c_lags, 0.5 * c_lags[-1])
    single = math.sqrt(2.0 / (3.0 * dim))
    if groups >= 4:
        at_half = per_group[:, 1 + half]
        tracer_error = float(np.std(at_half, ddof=1) / math.sqrt(groups))
    else:
        tracer_error = float(tracer_sum[half]) * single / math.sqrt(n_ions)
    bounds = {
        "D_tracer": float(tracer_sum[half] + 2 * tracer_error) / lags[half] / (2 * dim),
        "D_jump": float(c_msd[c_half] * (1 + 2 * single)) / c_lags[c_half] / (2 * dim),
    }
    diffusive = test.diffusive and not verdict
    density = n_ions / volume
    result: dict = {}
    for key, value in (("D_tracer", d_tracer), ("D_jump", d_jump)):
        value *= units.A2_TO_CM2
        bound = float(bounds[key] * units.A2_TO_CM2)
        result[key] = value if diffusive else math.nan
        result[f"{key}_upper"] = math.nan if diffusive else bound
    d_jump_cm2 = result["D_jump"]
    result["haven_ratio"] = (
        result["D_tracer"] / d_jump_cm2 if diffusive and d_jump_cm2 > 0 else math.nan
    )
    result["conductivity"] = (
        nernst_einstein(d_jump_cm2, density, temperature, charge) if diffusive else math.nan
    )
    result["conductivity_upper"] = (
        math.nan
        if diffusive
        else nernst_einstein(result["D_jump_upper"], density, temperature, charge)
    )
    if dim > 3:  # not a lattice's trajectory: no Cartesian names for the components
        pass
    elif diffusive:
        result.update(
            tensor_observables(tracer_tensor * units.A2_TO_CM2, jump_diagonal * units.A2_TO_CM2)
        )
    else:
        result.update(dict.fromkeys(tensor_keys(dim), math.nan))
    if e_field is not None:
        magnitude = float(np.linalg.norm(e_field))
        along = float(drift @ e_field) / magnitude * units.ANGSTROM_TO_CM  # cm/s
        ok = diffusive
        result["drift_velocity"] = along if ok else math.nan
        result["drift_velocity_err"] = drift_err * units.ANGSTROM_TO_CM if ok else math.nan
        result["mobility"] = along / magnitude if ok else math.nan
        result["conductivity_field"] = (
            density * units.PER_A3_TO_PER_CM3 * charge * units.ELEMENTARY_CHARGE * along
            / magnitude if ok else math.nan
        )  # fmt: skip
    fitted = lags[window]
    result.update(
        diffusive=diffusive,
        diffusive_reason="; ".join(text for text in (verdict, test.reason) if text),
        msd_growth=test.growth,
        slope_ratio=test.slope_ratio,
        slope_ratio_err=test.slope_ratio_err,
        fit_start=float(fitted[0]),
        fit_stop=float(fitted[-1]),
        jump_fit_start=float(c_fitted[0]),
        jump_fit_stop=float(c_fitted[-1]),
    )
    return result


def no_transport(dim: int, reason: str, *, driven: bool = False) -> dict:
    """The keys of :func:`transport` for a run with too few frames to analyse (one stopped at
    its work budget early): every value nan, not diffusive, ``reason`` saying why."""
    keys = (
        "D_tracer", "D_jump", "haven_ratio", "conductivity", "D_tracer_upper", "D_jump_upper",
        "conductivity_upper", "msd_growth", "slope_ratio", "slope_ratio_err", "fit_start",
        "fit_stop", "jump_fit_start", "jump_fit_stop",
        *(tensor_keys(dim) if dim <= 3 else ()), *(FIELD_KEYS if driven else ()),
    )  # fmt: skip
    return {**dict.fromkeys(keys, math.nan), "diffusive": False, "diffusive_reason": reason}


def _check_field(field: ArrayLike | None, dim: int) -> np.ndarray | None:
    """The field as a (d,) float array in V/cm, or None for no (or a zero) field."""
    if field is None:
        return None
    try:
        e = np.asarray(field, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"field must be {dim} numbers in V/cm, got {field!r}") from None
    if e.shape != (dim,) or not np.all(np.isfinite(e)):
        raise ValueError(f"field must be {dim} finite components in V/cm, got {field!r}")
    return e if np.any(e) else None


def _drift(
    t: np.ndarray, p: np.ndarray, field: np.ndarray, groups: int
) -> tuple[np.ndarray, float]:
    """Drift velocity (Å/s, (d,)): the mean displacement over the run / its length (for a
    steady state the increments are stationary, so this is unbiased); and the standard
    error of its component along the field from the scatter of the ion groups (nan with
    fewer than 4 groups)."""
    span = t[-1] - t[0]
    moved = (np.asarray(p[-1], dtype=np.float64) - p[0]) / span  # (N, d)
    unit = field / np.linalg.norm(field)
    if groups < 4:
        return moved.mean(axis=0), math.nan
    member = np.arange(moved.shape[0]) * groups // moved.shape[0]
    along = moved @ unit
    means = np.bincount(member, weights=along) / np.bincount(member)
    return moved.mean(axis=0), float(np.std(means, ddof=1) / math.sqrt(groups))


def _collective_series(
    collective: tuple[ArrayLike, ArrayLike],
    frame_times: np.ndarray,
    dim: int,
    n_ions: int,
    drift: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a fine (times, Σ_i Δr_i) series; return its lags and its MSD / N per axis
    (with a drift (Å/s): of Σ_i Δr_i − N v t, divided by 1 − τ/T, as in :func:`transport`)."""
    c_t, _ = _check_times(collective[0])
    series = np.asarray(collective[1], dtype=np.float64)
    if series.shape != (c_t.size, dim):
        raise ValueError(
            f"collective displacement must have shape ({c_t.size}, {dim}), got {series.shape}"
        )
    if not np.all(np.isfinite(series)):
        raise ValueError("collective displacement must be finite")
    if abs(c_t[-1] - frame_times[-1]) > _TIME_RTOL * frame_times[-1]:
        raise ValueError("collective displacement must span the same run as the frames")
    lags_c = (c_t[1] - c_t[0]) * np.arange(1, c_t.size)
    if drift is not None:
        series = series - n_ions * drift * (c_t - c_t[0])[:, None]
    msd_c = _series_msd(series)[1:] / n_ions  # (M - 1, d): per axis
    if drift is not None:
        with np.errstate(divide="ignore", invalid="ignore"):  # the last lag: nan
            msd_c /= (1.0 - lags_c / (c_t[-1] - c_t[0]))[:, None]
    return lags_c, msd_c


# --------------------------------------------------------------------------- thermodynamics


def _block_counts(frac: np.ndarray, splits: int) -> np.ndarray:
    """(F, splits^d) ion counts per block of a grid of ``splits`` blocks per box vector."""
    n_frames, _, dim = frac.shape
    index = np.minimum((frac * splits).astype(np.int64), splits - 1)
    flat = np.zeros(index.shape[:2], dtype=np.int64)
    for axis in range(dim):
        flat = flat * splits + index[..., axis]
    n_blocks = splits**dim
    offsets = (np.arange(n_frames) * n_blocks)[:, None]
    counts = np.bincount((flat + offsets).ravel(), minlength=n_frames * n_blocks)
    return counts.reshape(n_frames, n_blocks)


def thermodynamic_factor(positions: ArrayLike, box: ArrayLike, n_sites: int) -> float:
    """The thermodynamic factor Θ = ∂ln a/∂ln c of a lattice-gas trajectory, from the
    particle-number fluctuations of subvolumes (docs/physics.md).

    Θ = ⟨N⟩ / (k T ∂⟨N⟩/∂μ) and, grand-canonically, k T ∂⟨N⟩/∂μ = ⟨δN²⟩. The box is cut into
    2^d blocks (halves along each box vector) and 4^d (quarters); the variance in time of the
    ion count of each block, summed over the blocks, is turned into its grand-canonical value
    by the exact factor (V − 1)/(V − v) of a block of v = V/n of the V sites of a closed box
    (the hypergeometric variance of independent sites), giving T_2 and T_4. A block's
    variance also misses a term proportional to its surface (correlations cut at its faces),
    and the quarters' blocks have twice the halves' total surface, so V S = 2 T_2 − T_4 is the
    bulk variance with that term removed, and Θ = ⟨N⟩ / (2 T_2 − T_4). Exact (in expectation)
    for non-interacting ions with or without site disorder: Θ = Σf/Σf(1 − f), f the
    Fermi–Dirac occupations.

    Parameters
    ----------
    positions : (F, N, d) array_like
        Ion positions in Å (unwrapped or not), F ≥ 2 frames of a run in equilibrium.
    box : (d,) or (d, d) array_like
        The periodic box: orthogonal edges or vectors as rows, Å.
    n_sites : int
        Free sites V of the lattice (the ions' N ≤ V).

    Returns nan when 2 T_2 − T_4 ≤ 0: the blocks' counts do not fluctuate (a frozen or full
    lattice), or the bulk variance ⟨N⟩/Θ of a nearly incompressible (ordered) gas is lost in
    the noise of the two sums.
    """
    p = np.asarray(positions, dtype=np.float64)
    if p.ndim != 3 or p.shape[0] < 2:
        raise ValueError(f"positions must be (F ≥ 2, N, d), got shape {p.shape}")
    dim = p.shape[2]
    b = np.asarray(box, dtype=np.float64)
    vectors = np.diag(b) if b.ndim == 1 else b
    if vectors.shape != (dim, dim):
        raise ValueError(f"box must be ({dim},) or ({dim}, {dim}), got shape {b.shape}")
    if not n_sites >= p.shape[1]:
        raise ValueError(f"n_sites must be at least the {p.shape[1]} ions, not {n_sites}")
    frac = (p @ np.linalg.inv(vectors)) % 1.0
    totals = []
    for splits in (2, 4):
        counts = _block_counts(frac, splits)
        blocks = splits**dim
        v = n_sites / blocks
        canonical = counts.var(axis=0, ddof=1).sum()
        totals.append(canonical * (n_sites - 1) / (n_sites - v))
    bulk = 2 * totals[0] - totals[1]
    return float(p.shape[1] / bulk) if bulk > 0 else math.nan


#: What an equilibrium lattice gas reports besides D: Θ, D_chem = Θ D_σ (cm²/s), μ (eV) and
#: the run's length in relaxation times of a half box (:func:`lattice_gas_thermodynamics`).
THERMODYNAMIC_KEYS = ("thermodynamic_factor", "D_chem", "chemical_potential", "relaxation_times")

#: Θ is reported only from a run lasting at least this many relaxation times
#: τ = (L/2)²/D_chem of a half box (L its longest edge): the variance of a block's count about
#: the run's own mean is low by its correlation time over T, which biases Θ high by about
#: 0.25 τ/T (docs/physics.md), i.e. by ≈ 2.5 % at T = 10 τ.
MIN_RELAXATION_TIMES = 10.0


def lattice_gas_thermodynamics(
    times: ArrayLike, positions: ArrayLike, box: ArrayLike, n_sites: int, d_jump: float
) -> dict[str, float | str]:
    """Θ (:func:`thermodynamic_factor`) and the chemical diffusion coefficient
    ``D_chem`` = Θ D_σ (cm²/s, from ``d_jump`` in cm²/s) of a lattice-gas trajectory in
    equilibrium (frame ``times`` in s, ``positions`` and ``box`` in Å), if the run is long
    enough to trust them; ``relaxation_times`` = T/τ, the run's length T in relaxation
    times τ = (L/2)²/D_chem of a half box, L the longest box edge (nan without a D_chem).

    Θ and D_chem are nan, with ``thermodynamic_reason`` saying why (else ""), when
    :func:`thermodynamic_factor` is (no positive bulk variance), when D_σ is not resolved
    (nan: the run is not diffusive; or not positive), so that τ is unknown, or when
    T < :data:`MIN_RELAXATION_TIMES` τ. τ comes from this D_chem, so an overestimated Θ
    also shortens τ: the check is of the relaxation, not of Θ's precision.
    """
    t = np.asarray(times, dtype=np.float64)
    theta = thermodynamic_factor(positions, box, n_sites)
    d_chem = theta * d_jump
    b = np.asarray(box, dtype=np.float64)
    edge = float(np.max(b) if b.ndim == 1 else np.max(np.linalg.norm(b, axis=1)))
    spans = math.nan
    if not math.isfinite(theta):
        reason = (
            "no positive bulk variance 2T₂ − T₄ of the subvolume counts: Θ beyond what "
            "the blocks resolve, or the counts do not fluctuate"
        )
    elif not (math.isfinite(d_chem) and d_chem > 0):
        reason = "D_chem not resolved (run not diffusive): relaxation time (L/2)²/D_chem unknown"
    else:
        tau = (edge / 2) ** 2 / (d_chem / units.A2_TO_CM2)
        spans = float((t[-1] - t[0]) / tau)
        reason = (
            ""
            if spans >= MIN_RELAXATION_TIMES
            else f"run spans {spans:.3g} relaxation times (L/2)²/D_chem of a half box "
            f"(needs {MIN_RELAXATION_TIMES:g}): subvolume fluctuations not converged"
        )
    ok = not reason
    return {
        "thermodynamic_factor": theta if ok else math.nan,
        "D_chem": d_chem if ok else math.nan,
        "relaxation_times": spans,
        "thermodynamic_reason": reason,
    }


def staggered_order(sites: ArrayLike, sublattice: ArrayLike) -> float:
    """The staggered order parameter of a bipartite lattice, ⟨|N_A − N_B|⟩ / N over the
    frames: 0 for ions spread over both sublattices, 1 when they all sit on one (the
    ordered, checkerboard state at half filling with nearest-neighbour repulsion).
    ``sites`` (F, N), ``sublattice`` (V,) 0/1 (:attr:`kmc.lattice.Lattice.sublattice`)."""
    s = np.asarray(sites)
    on_b = np.asarray(sublattice, dtype=np.int64)[s].sum(axis=1)
    n = s.shape[1]
    return float(np.mean(np.abs(n - 2 * on_b)) / n)


def widom_chemical_potential(
    sites: ArrayLike,
    site_energy: ArrayLike,
    free: ArrayLike,
    temperature: float,
    pair: tuple[ArrayLike, ArrayLike, ArrayLike] | None = None,
) -> float:
    """The chemical potential μ (eV) of N ions with exclusion on sites of energies ε, by
    Widom's test-particle insertion: e^(−μ/kT) = ⟨Σ_(empty free j) e^(−ΔE_j/kT)⟩ / (N + 1),
    the average over the frames of the Boltzmann factors of adding one more ion (canonically
    μ = F(N + 1) − F(N)). ΔE_j = ε_j, plus with ``pair`` = (neighbours (V, z), bond index
    (V, z), pair energy per bond) the pair energy Σ_k V_jk n_k with the ions on j's
    neighbours (a bond index < 0 is a padding direction).

    ``sites`` (F, N) the ions' sites per frame, ``site_energy`` (V,) eV, ``free`` (V,) bool.
    """
    s = np.asarray(sites)
    energy = np.asarray(site_energy, dtype=np.float64)
    mask = np.asarray(free, dtype=bool)
    kt = BOLTZMANN_EV * _check_positive("temperature", temperature)
    lowest = float(energy[mask].min())
    weight = np.where(mask, np.exp(-(energy - lowest) / kt), 0.0)
    if pair is None:
        total = weight.sum()
        empty = np.maximum(total - weight[s].sum(axis=1), 0.0)  # the weights of empty sites
    else:
        neighbours, bonds, pair_energy = (np.asarray(x) for x in pair)
        v = np.where(bonds >= 0, np.asarray(pair_energy, dtype=np.float64)[bonds], 0.0)
        empty = np.empty(s.shape[0])
        for f, frame in enumerate(s):
            occupied = np.zeros(energy.size)
            occupied[frame] = 1.0
            field = (v * occupied[neighbours]).sum(axis=1)  # pair energy of an ion added on j
            factor = weight * np.exp(-field / kt)
            empty[f] = factor.sum() - factor[frame].sum()
    mean = float(empty.mean())
    if not mean > 0:
        return math.nan
    return lowest - kt * math.log(mean / (s.shape[1] + 1))


# --------------------------------------------------------------------------- statistics


def replica_mean(values: ArrayLike) -> tuple[float, float]:
    """Mean over independent replicas and its standard error.

    Parameters
    ----------
    values : (R,) array_like
        One estimate per replica.

    Returns
    -------
    mean : float
    error : float
        Standard error of the mean, std(ddof=1) / sqrt(R); nan for a single replica.

    Notes
    -----
    nan entries are *not* dropped: if any value is nan, both results are nan, so a failed
    replica is visible downstream instead of silently shrinking the sample.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("values must hold at least one replica")
    mean = float(np.mean(v))
    if v.size == 1:
        return mean, float("nan")
    return mean, float(np.std(v, ddof=1) / np.sqrt(v.size))


def arrhenius(
    temperatures: ArrayLike, values: ArrayLike, errors: ArrayLike | None = None
) -> tuple[float, float]:
    """Activation energy from a fit of ln(value) = ln(prefactor) - Ea / (k_B T).

    Parameters
    ----------
    temperatures : (M,) array_like
        Temperatures in K; at least 2 distinct ones.
    values : (M,) array_like
        Positive values (e.g. D in cm²/s) at those temperatures.
    errors : (M,) array_like, optional
        Standard errors of ``values``. If given, all finite and > 0, the fit is weighted
        least squares with σ_ln = error / value and the returned error is the propagated
        one (``absolute_sigma``: not rescaled by the residuals). Otherwise (None, or any
        error zero, negative or nan) the fit is unweighted and its error is scaled by the
        residual scatter, which needs at least 3 points (nan with 2).

    Returns
    -------
    Ea : float
        Activation energy in eV.
    Ea_err : float
        Its standard error in eV.

    Notes
    -----
    If any value is <= 0 or nan (a noisy collective mean can be), ln is undefined and
    (nan, nan) is returned rather than raising, so a sweep summary still gets written.
    """
    temps = np.asarray(temperatures, dtype=np.float64).ravel()
    vals = np.asarray(values, dtype=np.float64).ravel()
    if vals.shape != temps.shape:
        raise ValueError(
            f"values must have one entry per temperature ({temps.size}), got {vals.size}"
        )
    if not np.all(np.isfinite(temps) & (temps > 0)):
        raise ValueError("temperatures must be positive and finite")
    if np.unique(temps).size < 2:
        raise ValueError("temperatures must hold at least 2 distinct values for an Arrhenius fit")
    weighted = errors is not None
    if weighted:
        errs = np.asarray(errors, dtype=np.float64).ravel()
        if errs.shape != temps.shape:
            raise ValueError(
                f"errors must have one entry per temperature ({temps.size}), got {errs.size}"
            )
        # One unusable error makes the weights meaningless: fall back to unweighted.
        weighted = bool(np.all(np.isfinite(errs) & (errs > 0)))
    if not np.all(np.isfinite(vals) & (vals > 0)):
        return float("nan"), float("nan")

    x = 1.0 / (BOLTZMANN_EV * temps)  # 1/kT in 1/eV
    y = np.log(vals)
    w = (vals / errs) ** 2 if weighted else np.ones_like(x)  # 1 / σ_ln²
    # Closed-form weighted least squares on centred x (well conditioned: 1/kT spans little).
    x_mean = np.sum(w * x) / np.sum(w)
    y_mean = np.sum(w * y) / np.sum(w)
    sxx = np.sum(w * (x - x_mean) ** 2)
    slope = np.sum(w * (x - x_mean) * (y - y_mean)) / sxx
    if weighted:
        variance = 1.0 / sxx
    else:
        dof = x.size - 2
        residuals = y - (y_mean + slope * (x - x_mean))
        variance = np.sum(residuals**2) / dof / sxx if dof > 0 else np.nan
    return float(-slope), float(np.sqrt(variance))
