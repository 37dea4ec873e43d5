"""Transport estimators on plain numpy arrays: MSD, diffusion coefficients, conductivity, Ea.

This module is the end of the data flow: it reads trajectories as arrays (times in s,
unwrapped positions in Å) and never imports the rest of ``kmc``, so it can be used on any
trajectory (a task file, an MD run, a synthetic test).

Definitions follow docs/physics.md ("Observables"), with d the dimension and N the number of ions:

- tracer      D*  = lim <|Δr_i(t)|²> / (2 d t)        (average over ions and time origins)
- collective  D_σ = lim <|Σ_i Δr_i(t)|²> / (2 d N t)  (centre-of-mass / jump diffusion)
- Haven ratio H_R = D* / D_σ
- Nernst–Einstein conductivity σ = n q² D_σ / (k_B T), n = N / V

Slopes are fitted only past the crossover to a linear MSD (see :func:`fit_window`); error
bars belong to independent replicas (:func:`replica_mean`), not to a single fit.
"""

from __future__ import annotations

import numpy as np
import scipy.constants
import scipy.fft
from numpy.typing import ArrayLike

__all__ = [
    "BOLTZMANN_EV",
    "MIN_FRAMES",
    "arrhenius",
    "diffusion_coefficient",
    "fit_window",
    "msd",
    "nernst_einstein",
    "replica_mean",
    "transport",
]

BOLTZMANN_EV = 8.617333262e-5
"""Boltzmann constant in eV/K."""

MIN_FRAMES = 8
"""Fewest trajectory frames a diffusion fit accepts (gives at least 3 lags in the window)."""

# Unit conversions, spelled out once.
_A2_PER_S_TO_CM2_PER_S = 1e-16  # 1 Å² = 1e-16 cm²
_CM2_TO_M2 = 1e-4
_PER_A3_TO_PER_M3 = 1e30
_S_PER_M_TO_S_PER_CM = 1e-2

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


def _origin_averaged_msd(power: np.ndarray, squares: np.ndarray, nfft: int) -> np.ndarray:
    """MSD for lags 0..F-1, per component, from the FFT sums of :func:`_msd_sums`.

    Parameters
    ----------
    power : (nfft//2 + 1, d) array
        Σ over trajectories of |FFT(x)|², x zero-padded to ``nfft`` >= 2F - 1.
    squares : (F, d) array
        Σ over trajectories of x(k)².
    nfft : int
        FFT length.

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
    return np.maximum(result, 0.0)


def _msd_sums(
    positions: np.ndarray, chunk_bytes: int = _DEFAULT_CHUNK_BYTES
) -> tuple[np.ndarray, np.ndarray]:
    """Tracer and collective MSD per component for lags 0..F-1, both shape (F, d).

    Tracer: averaged over ions and time origins. Collective: |Σ_i Δr_i|² averaged over time
    origins, divided by N. One pass over the ions, in chunks, so both cost one read.
    """
    n_frames, n_ions, dim = positions.shape
    nfft = scipy.fft.next_fast_len(2 * n_frames - 1, real=True)
    n_freq = nfft // 2 + 1
    # Bytes of temporaries per ion: the float64 block, its centred and transposed copies
    # (3 x 8F), the zero-padded FFT input and complex output (8 nfft + 16 n_freq), the
    # power and the squares of its parts (3 x 8 n_freq).
    per_ion = dim * (24 * n_frames + 8 * nfft + 40 * n_freq)
    chunk = int(max(1, min(n_ions, chunk_bytes // per_ion)))

    power = np.zeros((dim, n_freq))
    squares = np.zeros((n_frames, dim))
    total = np.zeros((n_frames, dim))  # Σ_i x_i(t): the collective coordinate
    for start in range(0, n_ions, chunk):
        block = np.asarray(positions[:, start : start + chunk, :], dtype=np.float64)
        if not np.all(np.isfinite(block)):
            raise ValueError("positions must be finite (found nan or inf)")
        # Subtract each ion's time average: the MSD is unchanged, but S1 and 2 S2 no longer
        # carry the large absolute coordinates whose cancellation would cost precision.
        centred = block - block.mean(axis=0)
        n_block = centred.shape[1]
        total += centred.sum(axis=1)
        squares += np.einsum("fnd,fnd->fd", centred, centred)
        # Time as the contiguous last axis: pocketfft is ~3x faster than along a strided one.
        series = np.ascontiguousarray(centred.reshape(n_frames, n_block * dim).T)
        spectrum = scipy.fft.rfft(series, n=nfft, axis=-1)
        block_power = spectrum.real**2 + spectrum.imag**2
        # Σ_i irfft(|X_i|²) = irfft(Σ_i |X_i|²): sum spectra now, transform back once.
        power += block_power.reshape(n_block, dim, n_freq).sum(axis=0)
        del block, centred, series, spectrum, block_power

    tracer = _origin_averaged_msd(power.T, squares, nfft) / n_ions
    spectrum = scipy.fft.rfft(total, n=nfft, axis=0)
    collective = _origin_averaged_msd(spectrum.real**2 + spectrum.imag**2, total**2, nfft) / n_ions
    return tracer, collective


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
    tracer, coll = _msd_sums(p, chunk_bytes)
    result = coll if collective else tracer
    result = result[1:]  # lag 0 is identically zero
    if not per_axis:
        result = result.sum(axis=1)
    lag_times = dt * np.arange(1, t.size)
    return lag_times, result


# --------------------------------------------------------------------------- fits


def fit_window(
    lag_times: ArrayLike, tracer_msd: ArrayLike, hop_distance: float
) -> tuple[slice, bool]:
    """Choose the lags over which the MSD is fitted by a straight line.

    The rule (a documented contract):

    - the window ends at half the run, t <= T/2 with T = ``lag_times[-1]``: longer lags
      rest on too few independent time origins;
    - it starts at the later of 10 % of the run and the crossover time, the first lag at
      which the tracer MSD reaches 10 a² (a = ``hop_distance``): by then an ion has made
      several hops beyond its initial cage and its correlated back-hops, so the MSD is
      linear;
    - if the tracer MSD never reaches 10 a² within the first half of the run, the window is
      [25 %, 50 %] of the run and ``diffusive`` is False: the run is too short to be sure
      of the long-time limit, and the slope is a lower-quality estimate;
    - the window always holds at least 3 lags; if fewer remain (crossover just before T/2,
      or very short runs) its start is moved earlier.

    Parameters
    ----------
    lag_times : (L,) array_like
        Lag times in s, uniformly spaced from one frame (as returned by :func:`msd`).
    tracer_msd : (L,) array_like
        Tracer MSD in Å², summed over components.
    hop_distance : float
        Nearest-neighbour hop length a in Å.

    Returns
    -------
    window : slice
        Indices into ``lag_times`` / ``tracer_msd``.
    diffusive : bool
        True if the crossover to linear MSD was reached within the first half of the run.

    Raises
    ------
    ValueError
        If the arrays are not 1-D of equal length, there are fewer than MIN_FRAMES - 1 lags,
        or ``hop_distance`` is not positive.
    """
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
    hop_distance = _check_positive("hop_distance", hop_distance)

    run = lags[-1]
    slack = 1e-9 * run  # lag times are multiples of dt up to round-off
    # The window ends at half the run: past it, too few independent time origins.
    stop = int(np.searchsorted(lags, 0.5 * run + slack, side="right"))
    earliest = int(np.searchsorted(lags, 0.1 * run - slack, side="left"))
    # Crossover: the first lag with MSD >= 10 a² (several hops past the cage and its
    # correlated back-hops), searched within the first half of the run only.
    reached = np.flatnonzero(values[:stop] >= 10.0 * hop_distance**2)
    if reached.size:
        start, diffusive = max(earliest, int(reached[0])), True
    else:
        # Never diffusive within half the run: fall back to [25 %, 50 %] and flag it.
        start = int(np.searchsorted(lags, 0.25 * run - slack, side="left"))
        diffusive = False
    start = max(0, min(start, stop - 3))  # keep at least 3 lags in the fit
    return slice(start, stop), diffusive


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
        Hop length in Å, used by :func:`fit_window` for the crossover.
    collective : bool, optional
        If True, the collective (jump) coefficient D_σ from |Σ_i Δr_i|² / N; else tracer D*.
    per_axis : bool, optional
        If True, return the d diagonal elements of the diffusion tensor (slope of each
        component / 2); else the scalar slope of the summed MSD / (2 d).
    window : slice, optional
        Lag indices to fit. Default: :func:`fit_window` of the *tracer* MSD, also for the
        collective estimate, so D* and D_σ are fitted over the same lags.

    Returns
    -------
    float or (d,) ndarray
        D in Å²/s. The slope is fitted with a free intercept, which absorbs the short-time
        (cage, back-hop) offset of the MSD.
    """
    t, dt = _check_times(times)
    if t.size < MIN_FRAMES:
        raise ValueError(f"times must hold at least {MIN_FRAMES} frames, got {t.size}")
    p = _check_positions(positions, t.size)
    tracer, coll = _msd_sums(p)
    lags = dt * np.arange(1, t.size)
    if window is None:
        window, _ = fit_window(lags, tracer[1:].sum(axis=1), hop_distance)
    else:
        window = _check_window(window, lags.size)
    components = (coll if collective else tracer)[1:]
    dim = p.shape[2]
    if per_axis:
        return _slope(lags[window], components[window]) / 2.0
    return float(_slope(lags[window], components[window].sum(axis=1)) / (2.0 * dim))


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
    q = charge * scipy.constants.e
    n_si = number_density_per_A3 * _PER_A3_TO_PER_M3
    d_si = D_jump_cm2_s * _CM2_TO_M2
    sigma_si = n_si * q**2 * d_si / (scipy.constants.k * temperature)  # S/m
    return float(sigma_si * _S_PER_M_TO_S_PER_CM)


def transport(
    times: ArrayLike,
    positions: ArrayLike,
    *,
    temperature: float,
    volume: float,
    hop_distance: float,
    charge: int = 1,
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
        Hop length in Å (for the fit window).
    charge : int, optional
        Ion charge in units of e.

    Returns
    -------
    dict
        ``D_tracer``, ``D_jump`` (cm²/s), ``haven_ratio`` (D_tracer / D_jump, nan if
        D_jump <= 0), ``conductivity`` (S/cm, Nernst–Einstein from D_jump), ``diffusive``
        (bool, see :func:`fit_window`), ``fit_start``, ``fit_stop`` (s, the first and last
        lag of the fit window, both included). Numbers are python floats. D_tracer and
        D_jump are fitted over the same window (that of the tracer MSD).
    """
    t, dt = _check_times(times)
    if t.size < MIN_FRAMES:
        raise ValueError(f"times must hold at least {MIN_FRAMES} frames, got {t.size}")
    p = _check_positions(positions, t.size)
    temperature = _check_positive("temperature", temperature)
    volume = _check_positive("volume", volume)
    n_ions, dim = p.shape[1], p.shape[2]

    tracer, coll = _msd_sums(p)
    lags = dt * np.arange(1, t.size)
    tracer_sum, coll_sum = tracer[1:].sum(axis=1), coll[1:].sum(axis=1)
    window, diffusive = fit_window(lags, tracer_sum, hop_distance)
    d_tracer = float(_slope(lags[window], tracer_sum[window])) / (2 * dim)
    d_jump = float(_slope(lags[window], coll_sum[window])) / (2 * dim)
    d_tracer *= _A2_PER_S_TO_CM2_PER_S
    d_jump *= _A2_PER_S_TO_CM2_PER_S
    fitted = lags[window]
    return {
        "D_tracer": d_tracer,
        "D_jump": d_jump,
        # A noisy collective slope can be <= 0 in a short run; H_R is undefined then.
        "haven_ratio": d_tracer / d_jump if d_jump > 0 else float("nan"),
        "conductivity": nernst_einstein(d_jump, n_ions / volume, temperature, charge),
        "diffusive": bool(diffusive),
        "fit_start": float(fitted[0]),
        "fit_stop": float(fitted[-1]),
    }


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
