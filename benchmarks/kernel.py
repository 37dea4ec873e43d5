"""Kernel benchmark: kmc against the plain-C reference kernel, side by side on this machine.

    python benchmarks/kernel.py [--quick] [--only ITEM ...] [--json FILE] [--reference PATH]

Measures the "must show" items of the performance issues in one run:

1. dilute limit (independent walkers) hops/s, kmc versus ``ref_kmc 0``;
2. lattice gas with exclusion at c = 0.5 hops/s, kmc versus ``ref_kmc 1``;
3. per-hop cost of the lattice gas from 16³ to 128³ sites;
4. kernel memory per site (simple cubic 64³, c = 0.5);
5. cost of trajectory recording (100 frames) plus writing the H5MD task file;
6. ``kmc run`` wall time under ``mpiexec -n 1`` versus ``-n 2``;
7. the lattice gas on structure supercells against the built-in lattice;
8. the lattice gas with ion–ion interactions against the same gas without.

``--only`` runs some of them (and the items they build on: 3 reuses the runs of 2, 6 is
calibrated by 3).

The reference (by default the repository's own ``benchmarks/baseline_kmc.c``; any other C
kernel with the same command line by ``--reference PATH``) is compiled here with gcc and
timed in the same run, interleaved with kmc, so the ratios do not depend on the machine. See
benchmarks/README.md for what each number means.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kmc import __version__ as kmc_version
from kmc import kernel, landscape, lattice, store
from kmc.distributions import Distribution

TEMPERATURE = 300.0  # K
ATTEMPT_FREQUENCY = 1e13  # Hz
SITE_LOW, SITE_HIGH = -0.025, 0.025  # eV
SADDLE_LOW, SADDLE_HIGH = 0.30, 0.40  # eV
CONCENTRATION = 0.5
LANDSCAPE_SEED = 20261127
DEFAULT_REFERENCE = Path(__file__).resolve().parent / "baseline_kmc.c"  # plain-C baseline
SUBPROCESS_TIMEOUT = 3600.0  # s
# Goals of items 1-3 (issue 10: a general kernel must lose no speed against these)
DILUTE_GOAL, GAS_GOAL, GROWTH_GOAL = 2.0, 5.0, 1.6
MEMORY_FRAMES = (2, 12)  # two frame counts; memory is extrapolated linearly to zero frames


@dataclass(frozen=True)
class Settings:
    """Problem sizes of one benchmark run (full or --quick)."""

    repeats: int
    dilute_size: int
    dilute_walkers: int
    dilute_hops: int
    gas_size: int
    gas_hops: int
    scan_sizes: tuple[int, ...]
    scan_hops: int
    pairs: int
    memory_size: int
    record_size: int
    record_hops_per_ion: int
    record_equilibration: int
    record_frames: int
    record_pairs: int
    record_pair_hops_per_ion: int
    mpi_size: int
    mpi_tasks: int
    mpi_task_seconds: float


FULL = Settings(
    repeats=3,
    dilute_size=64,
    dilute_walkers=4096,
    dilute_hops=20_000_000,
    gas_size=64,
    gas_hops=5_000_000,
    scan_sizes=(16, 32, 64, 128),
    scan_hops=5_000_000,
    pairs=5,
    memory_size=64,
    record_size=32,
    record_hops_per_ion=2000,
    record_equilibration=200,
    record_frames=100,
    record_pairs=7,
    record_pair_hops_per_ion=100,
    mpi_size=32,
    mpi_tasks=8,
    mpi_task_seconds=3.0,
)
QUICK = Settings(
    repeats=2,
    dilute_size=64,
    dilute_walkers=4096,
    dilute_hops=2_000_000,
    gas_size=64,
    gas_hops=500_000,
    scan_sizes=(16, 32, 64),
    scan_hops=500_000,
    pairs=2,
    memory_size=64,
    record_size=16,
    record_hops_per_ion=500,
    record_equilibration=50,
    record_frames=100,
    record_pairs=3,
    record_pair_hops_per_ion=20,
    mpi_size=16,
    mpi_tasks=8,
    mpi_task_seconds=0.3,
)


def say(text: str = "") -> None:
    print(text, flush=True)


def cube(size: int) -> str:
    return f"{size}³"


def best(values: list[float]) -> float:
    return max(values)


# Share of a core that each timed piece of work got (CPU seconds / wall seconds), by label.
CPU_SHARES: dict[str, list[float]] = {}
BUSY_SHARE = 0.9  # below this a single-threaded timing was slowed by other programs


def _cpu_seconds() -> float:
    """CPU seconds of this process (all threads) and of its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Stopwatch:
    """Wall and CPU time of a piece of work; ``share`` near 1 for single-threaded work
    means it had a core to itself, well below 1 that other programs competed for the cores."""

    def __init__(self) -> None:
        self.wall0, self.cpu0 = time.perf_counter(), _cpu_seconds()
        self.wall = self.cpu = 0.0

    def stop(self, label: str | None = None) -> Stopwatch:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = _cpu_seconds() - self.cpu0
        if label is not None:
            CPU_SHARES.setdefault(label, []).append(self.share)
        return self

    @property
    def share(self) -> float:
        return self.cpu / self.wall if self.wall > 0 else float("nan")


def contention_report() -> list[str]:
    """Lines naming the measurements that did not get a whole core."""
    lines = []
    for label, shares in CPU_SHARES.items():
        if min(shares) < BUSY_SHARE:
            lines.append(
                f"{label}: at worst {min(shares):.0%} of a core "
                f"({sum(x < BUSY_SHARE for x in shares)} of {len(shares)} runs below "
                f"{BUSY_SHARE:.0%})"
            )
    return lines


# --------------------------------------------------------------------------- landscape


def build_landscape(size: int) -> landscape.Landscape:
    """The benchmark landscape of ref_kmc.c: simple cubic size³, hop length 1, site energies
    uniform in [-0.025, 0.025] eV and per-bond saddles uniform in [0.30, 0.40] eV (one phase:
    both phases get the same distributions and every site is amorphous)."""
    lat = lattice.build("cubic", (size, size, size), hop_distance=1.0)
    phase = landscape.Phase(
        Distribution("uniform", low=SITE_LOW, high=SITE_HIGH),
        Distribution("uniform", low=SADDLE_LOW, high=SADDLE_HIGH),
    )
    return landscape.generate(
        lat,
        crystal=phase,
        amorphous=phase,
        amorphous_mask=np.ones(lat.n_sites, dtype=bool),
        rng=np.random.default_rng(LANDSCAPE_SEED),
        attempt_frequency=ATTEMPT_FREQUENCY,
    )


class Landscapes:
    """Builds each benchmark landscape once."""

    def __init__(self) -> None:
        self._cache: dict[int, landscape.Landscape] = {}

    def __call__(self, size: int) -> landscape.Landscape:
        if size not in self._cache:
            start = time.perf_counter()
            self._cache[size] = build_landscape(size)
            say(f"  (built the {cube(size)} landscape in {time.perf_counter() - start:.1f} s)")
        return self._cache[size]


def gas_ions(land: landscape.Landscape) -> int:
    return kernel.ion_count(land, concentration=CONCENTRATION, count=None, exclusion=True)


# --------------------------------------------------------------------------- timed runs


@dataclass
class Timing:
    """Hops and kernel seconds of one run."""

    hops: int
    seconds: float
    cpu_share: float

    @property
    def rate(self) -> float:
        return self.hops / self.seconds if self.seconds > 0 else float("nan")

    @property
    def cpu_rate(self) -> float:
        """Hops per CPU second: the wall rate divided by the share of a core the run got,
        an estimate of the rate on a quiet machine."""
        return self.rate / min(self.cpu_share, 1.0)


def kmc_dilute(land: landscape.Landscape, walkers: int, hops: int, seed: int) -> Timing:
    watch = Stopwatch()
    traj = kernel.simulate(
        land,
        TEMPERATURE,
        np.random.default_rng(seed),
        count=walkers,
        exclusion=False,
        hops_per_ion=hops / walkers,
        equilibration_hops_per_ion=0,
        frames=2,
    )
    return Timing(traj.hops, traj.kernel_seconds, watch.stop("kmc throughput runs").share)


def kmc_gas(
    land: landscape.Landscape, hops: int, seed: int, interactions: np.ndarray | None = None
) -> Timing:
    watch = Stopwatch()
    traj = kernel.simulate(
        land,
        TEMPERATURE,
        np.random.default_rng(seed),
        concentration=CONCENTRATION,
        exclusion=True,
        hops_per_ion=hops / gas_ions(land),
        equilibration_hops_per_ion=0,
        frames=2,
        interactions=interactions,
    )
    return Timing(traj.hops, traj.kernel_seconds, watch.stop("kmc throughput runs").share)


class Reference:
    """The plain-C reference kernel, compiled here; ``available`` is False (with ``reason``)
    when the source or gcc is missing or the build fails."""

    def __init__(self, source: Path, workdir: Path) -> None:
        self.source = source
        self.executable: Path | None = None
        self.reason = ""
        gcc = shutil.which("gcc")
        if not source.is_file():
            self.reason = f"reference source {source} not found"
        elif gcc is None:
            self.reason = "gcc not found on PATH"
        else:
            exe = workdir / "ref_kmc"
            command = [gcc, "-O3", "-march=native", "-o", str(exe), str(source), "-lm"]
            built = subprocess.run(command, capture_output=True, text=True, check=False)
            if built.returncode == 0:
                self.executable = exe
                self.command = " ".join(command)
            else:
                self.reason = f"gcc failed: {built.stderr.strip()[-500:]}"

    @property
    def available(self) -> bool:
        return self.executable is not None

    def run(self, mode: int, size: int, hops: int, concentration: float | None = None) -> Timing:
        """Hops per second printed by ``ref_kmc MODE L HOPS [C]``."""
        assert self.executable is not None
        args = [str(self.executable), str(mode), str(size), str(hops)]
        if concentration is not None:
            args.append(str(concentration))
        watch = Stopwatch()
        done = subprocess.run(
            args, capture_output=True, text=True, check=True, timeout=SUBPROCESS_TIMEOUT
        )
        watch.stop("reference runs")
        match = re.search(r"([0-9.eE+-]+) Mhops/s", done.stdout)
        if match is None:
            raise RuntimeError(f"cannot parse the reference output: {done.stdout!r}")
        rate = float(match.group(1)) * 1e6
        return Timing(hops, hops / rate, watch.share)


@dataclass
class Comparison:
    """Repeated, interleaved runs of the reference and of kmc for one case."""

    case: str
    ref: list[Timing] = field(default_factory=list)
    kmc: list[Timing] = field(default_factory=list)

    @property
    def busy(self) -> bool:
        """Some run did not get a whole core: judge on hops per CPU second instead."""
        return any(t.cpu_share < BUSY_SHARE for t in self.ref + self.kmc)

    def best(self, runs: list[Timing], cpu: bool = False) -> float | None:
        return max(t.cpu_rate if cpu else t.rate for t in runs) if runs else None

    def median(self, runs: list[Timing], cpu: bool = False) -> float | None:
        return statistics.median(t.cpu_rate if cpu else t.rate for t in runs) if runs else None

    def ratio(self, cpu: bool = False) -> float | None:
        ref, kmc = self.best(self.ref, cpu), self.best(self.kmc, cpu)
        return kmc / ref if ref and kmc else None

    @property
    def judged_ratio(self) -> float | None:
        return self.ratio(cpu=self.busy)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ref_hops_per_s": [t.rate for t in self.ref],
            "ref_cpu_share": [t.cpu_share for t in self.ref],
            "kmc_hops_per_s": [t.rate for t in self.kmc],
            "kmc_cpu_share": [t.cpu_share for t in self.kmc],
            "kmc_hops": [t.hops for t in self.kmc],
            "ref_best": self.best(self.ref),
            "ref_median": self.median(self.ref),
            "kmc_best": self.best(self.kmc),
            "kmc_median": self.median(self.kmc),
            "ratio_best": self.ratio(),
            "ref_best_per_cpu_s": self.best(self.ref, cpu=True),
            "kmc_best_per_cpu_s": self.best(self.kmc, cpu=True),
            "ratio_best_per_cpu_s": self.ratio(cpu=True),
            "busy": self.busy,
            "judged_ratio": self.judged_ratio,
        }


def mhops(rate: float | None) -> str:
    return "—" if rate is None else f"{rate / 1e6:7.2f} Mhops/s"


def ratio_text(ratio: float | None) -> str:
    return "—" if ratio is None else f"{ratio:.2f}×"


def compare_cases(s: Settings, ref: Reference, lands: Landscapes) -> dict[str, Comparison]:
    """Items 1 and 2: interleaved reference and kmc runs of both cases."""
    dilute_land = lands(s.dilute_size)
    gas_land = lands(s.gas_size)
    n_gas = gas_ions(gas_land)
    say(
        f"  (a) dilute: ref_kmc 0 {s.dilute_size} {s.dilute_hops} (one tracer)  vs  kmc "
        f"{s.dilute_walkers} independent walkers, {s.dilute_hops / s.dilute_walkers:.0f} "
        "hops each"
    )
    say(
        f"  (b) lattice gas: ref_kmc 1 {s.gas_size} {s.gas_hops} {CONCENTRATION}  vs  kmc "
        f"{n_gas} ions with exclusion, {s.gas_hops / n_gas:.1f} hops each, no equilibration"
    )
    dilute, gas = Comparison("dilute"), Comparison("lattice gas")
    for r in range(s.repeats):
        if ref.available:
            dilute.ref.append(ref.run(0, s.dilute_size, s.dilute_hops))
        dilute.kmc.append(kmc_dilute(dilute_land, s.dilute_walkers, s.dilute_hops, 100 + r))
        if ref.available:
            gas.ref.append(ref.run(1, s.gas_size, s.gas_hops, CONCENTRATION))
        gas.kmc.append(kmc_gas(gas_land, s.gas_hops, seed=200 + r))
        say(
            f"  run {r + 1}/{s.repeats}:  (a) ref {run_text(_last(dilute.ref))}  kmc "
            f"{run_text(dilute.kmc[-1])}   (b) ref {run_text(_last(gas.ref))}  kmc "
            f"{run_text(gas.kmc[-1])}"
        )
    say("  (the share of a core each run got in brackets; 100 % on a quiet machine)")
    say()
    say(f"  {'case':<38}{'reference':>16}{'kmc':>16}{'kmc/ref':>9}")
    for label, c in (
        (f"(a) dilute, {cube(s.dilute_size)}", dilute),
        (f"(b) lattice gas c = {CONCENTRATION}, {cube(s.gas_size)}", gas),
    ):
        say(f"  {label}")
        for text, value, cpu in (
            ("best, hops per wall s", c.best, False),
            ("median, hops per wall s", c.median, False),
            ("best, hops per CPU s", c.best, True),
        ):
            ref_value, kmc_value = value(c.ref, cpu), value(c.kmc, cpu)
            ratio = kmc_value / ref_value if ref_value and kmc_value else None
            say(
                f"  {'  ' + text:<38}{mhops(ref_value):>16}{mhops(kmc_value):>16}"
                f"{ratio_text(ratio):>9}"
            )
    return {"dilute": dilute, "gas": gas}


def run_text(t: Timing | None) -> str:
    return "—" if t is None else f"{t.rate / 1e6:6.2f} M/s ({min(t.cpu_share, 9.99):4.0%})"


def _last(values: list[Timing]) -> Timing | None:
    return values[-1] if values else None


# --------------------------------------------------------------------------- item 3


def size_scan(s: Settings, ref: Reference, lands: Landscapes, gas: Comparison) -> dict[str, Any]:
    """Item 3: ns per successful hop of the c = 0.5 lattice gas versus lattice size.

    The growth judged is the median, over s.pairs back-to-back pairs of runs on the
    smallest and the largest lattice, of the ratio of their ns per hop: the largest lattice
    lives in the L3 cache that the whole machine shares, so its cost follows whatever else
    runs, and only runs made seconds apart see the same machine (as item 5 pairs its runs).
    """
    say(
        f"  {s.scan_hops} successful hops per run, c = {CONCENTRATION}; kmc best of "
        f"{s.repeats}, reference once (the {cube(s.gas_size)} row reuses the runs of (b))"
    )
    say(f"  {'size':>5} {'sites':>9}   {'kmc ns/hop':>12} {'per CPU s':>10}   {'reference':>12}")
    runs: dict[int, Comparison] = {}
    for size in s.scan_sizes:
        if size == s.gas_size and s.scan_hops == s.gas_hops:
            c = gas  # the same runs as case (b)
        else:
            land = lands(size)
            c = Comparison(f"lattice gas {cube(size)}")
            for r in range(s.repeats):
                if ref.available and r == 0:
                    c.ref.append(ref.run(1, size, s.scan_hops, CONCENTRATION))
                c.kmc.append(kmc_gas(land, s.scan_hops, seed=300 + r))
        runs[size] = c
        ref_best = c.best(c.ref)
        ref_text = f"{1e9 / ref_best:9.1f} ns" if ref_best else "—"
        say(
            f"  {cube(size):>5} {size**3:>9}   {1e9 / c.best(c.kmc):9.1f} ns "
            f"{1e9 / c.best(c.kmc, cpu=True):7.1f} ns   {ref_text:>12}"
        )
    small, large = s.scan_sizes[0], s.scan_sizes[-1]
    span = f"{cube(large)}/{cube(small)}"
    say(f"  {s.pairs} interleaved pairs {cube(small)}, {cube(large)} (ns per hop):")
    pairs: list[tuple[Timing, Timing]] = []
    for r in range(s.pairs):
        pair = (
            kmc_gas(lands(small), s.scan_hops, seed=500 + r),
            kmc_gas(lands(large), s.scan_hops, seed=500 + r),
        )
        pairs.append(pair)
        shares = f"{pair[0].cpu_share:.0%}, {pair[1].cpu_share:.0%} of a core"
        say(
            f"    pair {r + 1}: {1e9 / pair[0].rate:6.1f} → {1e9 / pair[1].rate:6.1f} ns"
            f" = {pair[0].rate / pair[1].rate:.2f}×  ({shares})"
        )
    busy = any(t.cpu_share < BUSY_SHARE for pair in pairs for t in pair)
    growth = {
        cpu: statistics.median(
            (a.cpu_rate if cpu else a.rate) / (b.cpu_rate if cpu else b.rate) for a, b in pairs
        )
        for cpu in (False, True)
    }
    line = f"  growth {span}, median of the pairs: kmc {growth[False]:.2f}×"
    line += f" (per CPU s: {growth[True]:.2f}×)"
    first, last = runs[small], runs[large]
    ref_first, ref_last = first.best(first.ref), last.best(last.ref)
    if ref_first and ref_last:
        line += f", reference {ref_first / ref_last:.2f}×"
    say(line)
    return {
        "sizes": [
            {
                "size": size,
                "sites": size**3,
                "kmc_ns_per_hop": 1e9 / c.best(c.kmc),
                "kmc_ns_per_cpu_hop": 1e9 / c.best(c.kmc, cpu=True),
                "ref_ns_per_hop": 1e9 / c.best(c.ref) if c.ref else None,
                "kmc_hops_per_s": [t.rate for t in c.kmc],
                "kmc_cpu_share": [t.cpu_share for t in c.kmc],
                "ref_hops_per_s": [t.rate for t in c.ref],
                "ref_cpu_share": [t.cpu_share for t in c.ref],
            }
            for size, c in runs.items()
        ],
        "pairs": [
            {"ns_per_hop": [1e9 / a.rate, 1e9 / b.rate], "cpu_share": [a.cpu_share, b.cpu_share]}
            for a, b in pairs
        ],
        "pair_ns_per_hop": [
            statistics.median(1e9 / pair[k].rate for pair in pairs) for k in (0, 1)
        ],
        "growth": growth[False],
        "growth_per_cpu_s": growth[True],
        "busy": busy,
        "judged_growth": growth[busy],
    }


# --------------------------------------------------------------------------- item 4


def _proc_status(key: str) -> int | None:
    """A memory line of /proc/self/status (VmRSS, VmHWM) in bytes, or None."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _release_freed_memory() -> None:
    """Hand freed heap memory back to the OS (glibc malloc_trim), so that the resident set
    holds only live memory and a peak-RSS reading measures what is really in use."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    """Release freed memory, then reset VmHWM to the current RSS (Linux); False where not
    possible."""
    gc.collect()
    _release_freed_memory()
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        return False
    return True


@dataclass
class KernelCall:
    """Memory seen around one call into the compiled kernel."""

    name: str
    traced_entry: int  # bytes traced at entry (tracemalloc current)
    traced_peak: int  # peak bytes traced during the call
    rss_peak: int | None  # VmHWM during the call (peak reset at entry)
    arrays: list[tuple[str, str, tuple[int, ...], int, bool]]  # name, dtype, shape, bytes, pre


KERNEL_MODULES = ("_sites", "_walkers", "_lattice_gas")  # the compiled units kmc.kernel calls


class KernelProbe:
    """Stands in for the compiled modules inside ``kmc.kernel`` (``KERNEL_MODULES``) and
    forwards every call, recording the arrays each call receives and the memory in use while
    it runs."""

    def __init__(self, modules: dict[str, Any], preexisting: list[np.ndarray]) -> None:
        self.modules = modules
        self.preexisting = preexisting
        self.calls: list[KernelCall] = []
        self.peak_before_calls = 0

    def install(self) -> None:
        for name, module in self.modules.items():
            setattr(kernel, name, _ModuleProbe(self, module))

    def uninstall(self) -> None:
        for name, module in self.modules.items():
            setattr(kernel, name, module)

    def wrap(self, name: str, target: Any) -> Any:
        if not callable(target):
            return target

        def probe(*args: Any, **kwargs: Any) -> Any:
            current, peak = tracemalloc.get_traced_memory()
            self.peak_before_calls = max(self.peak_before_calls, peak)
            rss_ok = _reset_peak_rss()
            tracemalloc.reset_peak()
            result = target(*args, **kwargs)
            _, peak = tracemalloc.get_traced_memory()
            rss_peak = _proc_status("VmHWM") if rss_ok else None
            arrays = self._arrays(target, args, kwargs)
            self.calls.append(KernelCall(name, current, peak, rss_peak, arrays))
            return result

        return probe

    def _arrays(self, target: Callable, args: tuple, kwargs: dict) -> list:
        code = getattr(target, "__code__", None)
        names = list(code.co_varnames[: code.co_argcount]) if code is not None else []
        named = [(names[i] if i < len(names) else f"arg{i}", a) for i, a in enumerate(args)]
        named += list(kwargs.items())
        out = []
        for name, value in named:
            if isinstance(value, np.ndarray):
                pre = any(np.may_share_memory(value, p) for p in self.preexisting)
                out.append((name, str(value.dtype), value.shape, value.nbytes, pre))
        return out


class _ModuleProbe:
    """One compiled module seen through a KernelProbe."""

    def __init__(self, probe: KernelProbe, module: Any) -> None:
        self._probe, self._module = probe, module

    def __getattr__(self, name: str) -> Any:
        return self._probe.wrap(name, getattr(self._module, name))


@dataclass
class MemoryRun:
    frames: int
    calls: list[KernelCall]
    base: int
    rss_base: int | None
    window_peak: int  # tracemalloc peak from simulate() start to the last kernel return
    preexisting_bytes: int  # lattice/landscape arrays passed to the kernel (not traced)


def _memory_run(land: landscape.Landscape, frames: int) -> MemoryRun:
    preexisting = [v for obj in (land, land.lattice) for v in vars(obj).values()]
    preexisting = [v for v in preexisting if isinstance(v, np.ndarray)]
    probe = KernelProbe({name: getattr(kernel, name) for name in KERNEL_MODULES}, preexisting)
    gc.collect()
    _release_freed_memory()
    tracemalloc.start()
    probe.install()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        rss_base = _proc_status("VmRSS")
        traj = kernel.simulate(
            land,
            TEMPERATURE,
            np.random.default_rng(7),
            concentration=CONCENTRATION,
            exclusion=True,
            hops_per_ion=2,
            equilibration_hops_per_ion=0,
            frames=frames,
        )
    finally:
        probe.uninstall()
        tracemalloc.stop()
    del traj
    window_peak = max([probe.peak_before_calls] + [c.traced_peak for c in probe.calls])
    seen: dict[tuple[str, int], int] = {}
    for call in probe.calls:
        for name, _, _, nbytes, pre in call.arrays:
            if pre:
                seen[(name, nbytes)] = nbytes
    return MemoryRun(frames, probe.calls, base, rss_base, window_peak, sum(seen.values()))


def _zero_frames(lo: float, hi: float) -> float:
    """Linear extrapolation of a memory figure from MEMORY_FRAMES to zero frames: whatever
    grows with the frame count is trajectory output and is not counted."""
    f_lo, f_hi = MEMORY_FRAMES
    return lo - f_lo * (hi - lo) / (f_hi - f_lo)


def _received(lo_call: KernelCall, hi_call: KernelCall, preexisting: bool) -> int:
    """Bytes of the arrays a call received, trajectory outputs (which grow with the frame
    count) excluded; arrays allocated before simulate() only if ``preexisting``."""
    return sum(
        a[3]
        for a, b in zip(lo_call.arrays, hi_call.arrays, strict=True)
        if a[2] == b[2] and (preexisting or not a[4])
    )


def kernel_memory(s: Settings, lands: Landscapes) -> dict[str, Any]:
    """Item 4: bytes per site while the kernel runs (trajectory outputs excluded)."""
    land = lands(s.memory_size)
    n_sites = land.lattice.n_sites
    lo, hi = (_memory_run(land, f) for f in MEMORY_FRAMES)
    if [c.name for c in lo.calls] != [c.name for c in hi.calls]:
        raise RuntimeError("the kernel calls differ between the two memory runs")

    in_kernel = []  # per call: traced bytes in use during the call, zero frames
    scratch = []
    rss = []
    for a, b in zip(lo.calls, hi.calls, strict=True):
        in_kernel.append(_zero_frames(a.traced_peak - lo.base, b.traced_peak - hi.base))
        scratch.append(_zero_frames(a.traced_peak - a.traced_entry, b.traced_peak - b.traced_entry))
        if a.rss_peak is not None and b.rss_peak is not None and lo.rss_base and hi.rss_base:
            rss.append(_zero_frames(a.rss_peak - lo.rss_base, b.rss_peak - hi.rss_base))
    kernel_bytes = max(in_kernel) + lo.preexisting_bytes
    window_bytes = _zero_frames(lo.window_peak - lo.base, hi.window_peak - hi.base)
    window_bytes += lo.preexisting_bytes
    rss_bytes = max(rss) + lo.preexisting_bytes if rss else None

    say(f"  simple cubic {cube(s.memory_size)}: {n_sites} sites, {gas_ions(land)} ions")
    say("  arrays the kernel receives (B/site):")
    shown: set[tuple[str, str]] = set()
    for call_lo, call_hi in zip(lo.calls, hi.calls, strict=True):
        for arr_lo, arr_hi in zip(call_lo.arrays, call_hi.arrays, strict=True):
            name, dtype, shape, nbytes, pre = arr_lo
            if (call_lo.name, name) in shown:
                continue
            shown.add((call_lo.name, name))
            note = ""
            if arr_hi[2] != shape:
                note = "trajectory output: not counted"
            elif pre:
                note = "lattice/landscape array (allocated before simulate)"
            say(
                f"    {call_lo.name + '.' + name:<32}{dtype:>8} {shape!s:<18}"
                f"{nbytes / n_sites:8.2f}  {note}"
            )
    for call, extra in zip(lo.calls, scratch, strict=True):
        say(f"  allocated inside {call.name}: {max(extra, 0.0) / n_sites:.2f} B/site")
    peak = int(np.argmax(in_kernel))
    received = _received(lo.calls[peak], hi.calls[peak], preexisting=False)
    # The judged figure: the hop loop's working set, i.e. every array run_lattice_gas works
    # on (ion state, occupancy, site records; not the trajectory outputs) plus what it
    # allocates. Setting up the records briefly needs more; that peak is reported below.
    loop = [
        _received(a, b, preexisting=True) + max(extra, 0.0)
        for a, b, extra in zip(lo.calls, hi.calls, scratch, strict=True)
        if a.name == "run_lattice_gas"
    ]
    working_bytes = max(loop)
    held = in_kernel[peak] - received - scratch[peak]
    say(
        f"  kernel memory (working set of the hop loop: arrays run_lattice_gas works on + its "
        f"scratch; trajectory outputs excluded): {working_bytes / n_sites:.1f} B/site"
    )
    say(
        f"  peak while any compiled kernel call runs (setting up the records included, "
        f"in {lo.calls[peak].name}): {kernel_bytes / n_sites:.1f} B/site"
    )
    say(
        f"    = arrays passed in {(received + lo.preexisting_bytes) / n_sites:.1f} "
        f"(of which lattice arrays allocated before simulate() "
        f"{lo.preexisting_bytes / n_sites:.1f}) + allocated inside the kernel "
        f"{scratch[peak] / n_sites:.1f} + other arrays simulate() holds meanwhile "
        f"{held / n_sites:.1f}"
    )
    say(
        f"  whole simulate() peak up to the kernel's return (incl. the Python-side temporaries "
        f"of landscape.rates()): {window_bytes / n_sites:.1f} B/site"
    )
    if rss_bytes is not None:
        say(
            f"  cross-check, peak RSS growth while the kernel runs (+ lattice arrays): "
            f"{rss_bytes / n_sites:.1f} B/site (also sees C mallocs that tracemalloc misses)"
        )
    return {
        "size": s.memory_size,
        "sites": n_sites,
        "bytes_per_site": working_bytes / n_sites,
        "setup_peak_bytes_per_site": kernel_bytes / n_sites,
        "simulate_peak_bytes_per_site": window_bytes / n_sites,
        "rss_bytes_per_site": rss_bytes / n_sites if rss_bytes is not None else None,
        "preexisting_bytes_per_site": lo.preexisting_bytes / n_sites,
        "peak_call": lo.calls[peak].name,
        "received_bytes_per_site": (received + lo.preexisting_bytes) / n_sites,
        "allocated_inside_bytes_per_site": scratch[peak] / n_sites,
        "held_by_simulate_bytes_per_site": held / n_sites,
        "calls": [
            {
                "name": c.name,
                "in_use_bytes_per_site": used / n_sites,
                "allocated_inside_bytes_per_site": extra / n_sites,
                "arrays": [
                    {"name": a[0], "dtype": a[1], "shape": list(a[2]), "bytes": a[3], "pre": a[4]}
                    for a in c.arrays
                ],
            }
            for c, used, extra in zip(lo.calls, in_kernel, scratch, strict=True)
        ],
    }


# --------------------------------------------------------------------------- item 5


def _record_run(s: Settings, land: landscape.Landscape, seed: int, frames: int, hops: int):
    watch = Stopwatch()
    traj = kernel.simulate(
        land,
        TEMPERATURE,
        np.random.default_rng(seed),
        concentration=CONCENTRATION,
        exclusion=True,
        hops_per_ion=hops,
        equilibration_hops_per_ion=s.record_equilibration,
        frames=frames,
    )
    return traj, watch.stop("recording-cost simulate() runs")


def recording_cost(s: Settings, lands: Landscapes, workdir: Path) -> dict[str, Any]:
    """Item 5: the time that recording the default number of frames adds to simulate(), plus
    store.write_task of the trajectory, as a share of a representative run (simulate() with
    those frames, then write_task).

    Recording costs a fixed time per frame (copying the ions' state, then turning sites into
    positions), whatever the number of hops. The difference of two long runs would bury it
    under their run-to-run noise (several per cent), so it is measured on short runs instead:
    pairs of runs with the same seed (hence the same hops) with the default frames and with
    2 frames, interleaved; the median of the pair differences. simulate() is timed in CPU
    seconds, which other programs on the machine do not inflate (it is single-threaded: on a
    quiet machine CPU and wall time agree); write_task in wall seconds, as it includes the
    fsync."""
    land = lands(s.record_size)
    n_ions = gas_ions(land)
    frames = s.record_frames
    say(
        f"  {cube(s.record_size)}, c = {CONCENTRATION} ({n_ions} ions), {s.record_hops_per_ion} "
        f"hops per ion after {s.record_equilibration} of equilibration, {frames} frames; "
        f"best of {s.repeats}"
    )
    outdir = workdir / "record"
    outdir.mkdir()
    runs: list[Stopwatch] = []
    writes: list[Stopwatch] = []
    file_bytes = 0
    for r in range(s.repeats):
        traj, watch = _record_run(s, land, 400 + r, frames, s.record_hops_per_ion)
        runs.append(watch)
        data = store.TaskData(
            times=traj.times,
            positions=traj.positions,
            sites=traj.sites,
            box=traj.box,
            species="Li",
            parameters={"benchmark": "recording", "size": s.record_size, "replica": r},
            task=r,
            seed_entropy=400 + r,
            spawn_key=(r,),
            observables={
                "hops": traj.hops,
                "simulated_time": float(traj.times[-1]),
                "kernel_seconds": traj.kernel_seconds,
            },
        )
        path = outdir / store.task_filename(r)
        write = Stopwatch()
        store.write_task(path, data)
        writes.append(write.stop())
        file_bytes = path.stat().st_size
        say(
            f"  run {r + 1}/{s.repeats}: simulate {watch.cpu:.3f} s CPU ({watch.wall:.3f} s "
            f"wall), write_task {writes[-1].wall:.3f} s wall ({file_bytes / 1e6:.1f} MB)"
        )
    say(
        f"  recording: {s.record_pairs} pairs of {s.record_pair_hops_per_ion}-hop-per-ion runs "
        f"with {frames} and with 2 frames (same seed, same hops)"
    )
    differences = []
    for r in range(s.record_pairs):
        cpu = {}
        for n_frames in (frames, 2):
            _, watch = _record_run(s, land, 500 + r, n_frames, s.record_pair_hops_per_ion)
            cpu[n_frames] = watch.cpu
        differences.append(cpu[frames] - cpu[2])
        say(
            f"  pair {r + 1}/{s.record_pairs}: {cpu[frames]:.3f} s - {cpu[2]:.3f} s CPU = "
            f"{differences[-1] * 1e3:+.1f} ms"
        )
    recording = float(np.median(differences))
    run = min(w.cpu for w in runs)
    write = min(w.wall for w in writes)
    percent = 100.0 * (max(recording, 0.0) + write) / (run + write)
    say(
        f"  recording {frames} frames: {recording * 1e3:+.1f} ms CPU (median of the pairs); "
        f"write_task ({file_bytes / 1e6:.1f} MB, gzip + fsync, under {workdir.parent}): "
        f"{write * 1e3:.1f} ms; run time {run + write:.3f} s"
    )
    say(f"  recording + HDF5 = {percent:.2f} % of the run's time")
    return {
        "size": s.record_size,
        "ions": n_ions,
        "frames": frames,
        "simulate_cpu_seconds": [w.cpu for w in runs],
        "simulate_wall_seconds": [w.wall for w in runs],
        "write_wall_seconds": [w.wall for w in writes],
        "recording_pair_differences_cpu_seconds": differences,
        "file_bytes": file_bytes,
        "recording_seconds": recording,
        "write_seconds": write,
        "percent": percent,
    }


# --------------------------------------------------------------------------- item 6

MPI_CONFIG = """\
name = "benchmark-mpi"

[lattice]
kind = "cubic"
cells = [{size}, {size}, {size}]
hop_distance = 1.0

[ions]
species = "Li"
concentration = {concentration}
exclusion = true

[crystal]
attempt_frequency = {nu}
site_energy = {{ dist = "uniform", low = {site_low}, high = {site_high} }}
saddle_energy = {{ dist = "uniform", low = {saddle_low}, high = {saddle_high} }}

[amorphous]
site_energy = {{ dist = "uniform", low = {site_low}, high = {site_high} }}
saddle_energy = {{ dist = "uniform", low = {saddle_low}, high = {saddle_high} }}

[microstructure]
kind = "random"
amorphous_fraction = 1.0

[run]
temperature = {temperature}
hops_per_ion = {hops}
equilibration_hops_per_ion = {equilibration}
frames = 100
replicas = {tasks}
seed = 1
"""


def mpi_scaling(
    s: Settings, lands: Landscapes, workdir: Path, scan: dict[str, Any]
) -> dict[str, Any] | None:
    """Item 6: wall time of ``kmc run`` on ``mpi_tasks`` equal tasks, 1 versus 2 ranks."""
    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        say("  SKIPPED: mpiexec not found on PATH")
        return None
    rows = [row for row in scan["sizes"] if row["size"] == s.mpi_size]
    if rows:
        rate = 1e9 / rows[0]["kmc_ns_per_cpu_hop"]  # hops per CPU second: a quiet machine
    else:
        land = lands(s.mpi_size)
        rate = best([kmc_gas(land, s.scan_hops, seed=500 + r).cpu_rate for r in range(2)])
    n_ions = round(CONCENTRATION * s.mpi_size**3)
    per_ion = max(2, round(s.mpi_task_seconds * rate / n_ions))
    equilibration = max(1, per_ion // 10)
    hops = max(1, per_ion - equilibration)
    config = workdir / "mpi.toml"
    config.write_text(
        MPI_CONFIG.format(
            size=s.mpi_size,
            concentration=CONCENTRATION,
            nu=ATTEMPT_FREQUENCY,
            site_low=SITE_LOW,
            site_high=SITE_HIGH,
            saddle_low=SADDLE_LOW,
            saddle_high=SADDLE_HIGH,
            temperature=TEMPERATURE,
            hops=hops,
            equilibration=equilibration,
            tasks=s.mpi_tasks,
        )
    )
    say(
        f"  {s.mpi_tasks} replicas of {cube(s.mpi_size)}, c = {CONCENTRATION} ({n_ions} ions), "
        f"{hops} hops per ion after {equilibration}: about {s.mpi_task_seconds:g} s of kernel "
        "time per task (calibrated from item 3)"
    )
    walls: dict[int, float] = {}
    cores: dict[int, float] = {}
    for ranks in (1, 2):
        out = workdir / f"mpi-n{ranks}"
        command = [mpiexec, "-n", str(ranks), sys.executable, "-m", "kmc.cli", "run", str(config)]
        command += ["--output", str(out)]
        env = dict(os.environ, MPLBACKEND="Agg")
        watch = Stopwatch()
        done = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=SUBPROCESS_TIMEOUT
        )
        watch.stop()
        walls[ranks], cores[ranks] = watch.wall, watch.share
        if done.returncode != 0:
            say(f"  FAILED: {' '.join(command)} exited with {done.returncode}:")
            say("    " + "\n    ".join(done.stderr.strip().splitlines()[-10:]))
            return None
        n_files = len(list((out / "tasks").glob("task-*.h5md")))
        say(
            f"  mpiexec -n {ranks} kmc run: {walls[ranks]:.2f} s wall, {n_files} task files, "
            f"{cores[ranks]:.2f} cores busy on average (CPU s / wall s)"
        )
    speedup = walls[1] / walls[2]
    say(f"  speedup -n 2 over -n 1: {speedup:.2f}×   (this machine has {os.cpu_count()} CPUs)")
    return {
        "size": s.mpi_size,
        "tasks": s.mpi_tasks,
        "hops_per_ion": hops,
        "equilibration_hops_per_ion": equilibration,
        "wall_seconds_n1": walls[1],
        "wall_seconds_n2": walls[2],
        "cores_busy_n1": cores[1],
        "cores_busy_n2": cores[2],
        "speedup": speedup,
    }


# --------------------------------------------------------------------------- item 7

#: Largest structure / built-in cost per hop of the same size accepted (issue 10).
STRUCTURE_GOAL = 1.5
OLIVINE = Path(__file__).resolve().parent.parent / "structures" / "LiFePO4_olivine.cif"


def _structure_landscape(lat: lattice.Lattice) -> landscape.Landscape:
    phase = landscape.Phase(
        Distribution("uniform", low=SITE_LOW, high=SITE_HIGH),
        Distribution("uniform", low=SADDLE_LOW, high=SADDLE_HIGH),
    )
    return landscape.generate(
        lat, crystal=phase, amorphous=phase, amorphous_mask=np.ones(lat.n_sites, dtype=bool),
        rng=np.random.default_rng(LANDSCAPE_SEED), attempt_frequency=ATTEMPT_FREQUENCY,
    )  # fmt: skip


def structure_cost(s: Settings, lands: Landscapes) -> dict[str, Any] | None:
    """Item 7: ns per hop of the c = 0.5 lattice gas on structure supercells of about as many
    sites as the built-in case (b): simple cubic read from a structure file (the same graph
    through the general path) and olivine LiFePO4 (4 Li per cell, 12 hops per site up to
    6 Å: records of two cache lines), same energy distributions. Judged like item 3: in
    s.pairs rounds of back-to-back runs (built-in, then each structure), as the median over
    the rounds of each structure's cost over the built-in's of the same round."""
    try:
        import ase
        import ase.io

        from kmc import structure
    except ImportError:
        say('  skipped: needs the structure extra (pip install -e ".[structure]")')
        return None
    size = s.gas_size
    with tempfile.TemporaryDirectory(prefix="kmc-bench-structure-") as tmp:
        path = Path(tmp) / "cubic.cif"
        ase.io.write(path, ase.Atoms("Na", cell=np.eye(3), pbc=True))
        cubic = structure.read(path, "Na", 1.05).lattice((size, size, size))
    cells = round((size**3 / 4) ** (1 / 3))
    olivine = structure.read(OLIVINE, "Li", 6.0).lattice((cells, cells, cells))
    cases = [("simple cubic as a structure", cubic), ("olivine LiFePO4", olivine)]
    built_in_land = lands(size)
    structure_lands = [_structure_landscape(lat) for _, lat in cases]
    built_in: list[Timing] = []
    runs: list[list[Timing]] = [[] for _ in cases]
    for r in range(s.pairs):
        built_in.append(kmc_gas(built_in_land, s.gas_hops, seed=700 + r))
        for k, land in enumerate(structure_lands):
            runs[k].append(kmc_gas(land, s.gas_hops, seed=700 + r))
    busy = any(t.cpu_share < BUSY_SHARE for t in built_in + [t for c in runs for t in c])

    def ns(t: Timing) -> float:
        return 1e9 / (t.cpu_rate if busy else t.rate)

    base = statistics.median(ns(t) for t in built_in)
    say(
        f"  {s.pairs} rounds of back-to-back runs; built-in simple cubic {cube(size)}: "
        f"{base:7.1f} ns/hop (median)"
    )
    out: dict[str, Any] = {"built_in_ns_per_hop": base, "busy": busy, "cases": []}
    for (name, lat), timings in zip(cases, runs, strict=True):
        ratios = [ns(t) / ns(b) for t, b in zip(timings, built_in, strict=True)]
        ratio = statistics.median(ratios)
        cost = statistics.median(ns(t) for t in timings)
        say(
            f"  {name}: {lat.n_sites} sites, {lat.coordination} hops per site, "
            f"{cost:7.1f} ns/hop; per round "
            + ", ".join(f"{x:.2f}" for x in ratios)
            + f" → median {ratio:.2f}× the built-in"
        )
        out["cases"].append(
            {"name": name, "sites": lat.n_sites, "coordination": lat.coordination,
             "ns_per_hop": cost, "ratios": ratios, "ratio": ratio}
        )  # fmt: skip
    out["ratio"] = max(case["ratio"] for case in out["cases"])
    return out


# --------------------------------------------------------------------------- item 8

#: Largest per-hop cost of the interacting gas over the non-interacting one (issue 11).
INTERACTION_GOAL = 2.5
PAIR_ENERGY = 0.05  # eV, nearest-neighbour repulsion


def interaction_cost(s: Settings, lands: Landscapes) -> dict[str, Any]:
    """Item 8: ns per hop of the c = 0.5 lattice gas on the benchmark landscape with a
    nearest-neighbour repulsion of PAIR_ENERGY on every bond, against the same gas without
    it, interleaved in this run (best of s.repeats each). Both start from the same random
    placement with no equilibration, as in item 2; the interacting gas drives its ions.
    Judged on s.gas_size; the same pair on the smallest scan size (whose data fits in the
    L2 cache) is printed beside it, to show how much of the cost is memory."""

    def pair(size: int, hops: int, note: str = "") -> dict[str, Any]:
        land = lands(size)
        energies = landscape.pair_energies(land.lattice, PAIR_ENERGY)
        plain, inter = Comparison("no interactions"), Comparison("interactions")
        for r in range(s.repeats):
            plain.kmc.append(kmc_gas(land, hops, seed=800 + r))
            inter.kmc.append(kmc_gas(land, hops, seed=800 + r, interactions=energies))
        busy = plain.busy or inter.busy
        ns_plain = 1e9 / plain.best(plain.kmc, cpu=busy)
        ns_inter = 1e9 / inter.best(inter.kmc, cpu=busy)
        say(
            f"  {cube(size)}, c = {CONCENTRATION}: no interactions {ns_plain:7.1f} ns/hop, "
            f"V = {PAIR_ENERGY} eV repulsion {ns_inter:7.1f} ns/hop = "
            f"{ns_inter / ns_plain:.2f}×{note}"
        )
        return {
            "size": size, "ns_per_hop_plain": ns_plain, "ns_per_hop_interacting": ns_inter,
            "ratio": ns_inter / ns_plain, "busy": busy,
        }  # fmt: skip

    judged = pair(s.gas_size, s.gas_hops)
    cached = pair(s.scan_sizes[0], s.scan_hops, " (cache-resident)")
    return {"pair_energy": PAIR_ENERGY, **judged, "cached": cached}


# --------------------------------------------------------------------------- summary


def summary_rows(
    results: dict[str, Any], s: Settings
) -> list[tuple[int, str, str, str, str, float | None]]:
    """(item number, item, measured, goal, status, value) for the must-show items that were
    run, in the order of the report."""

    def status(value: float | None, ok: bool | None) -> str:
        return "SKIP" if value is None or ok is None else ("PASS" if ok else "FAIL")

    rows = []
    cases = results.get("cases", {})
    for number, label, key, goal in (
        (1, "(a) dilute walkers vs reference", "dilute", DILUTE_GOAL),
        (2, f"(b) lattice gas c = {CONCENTRATION} vs reference", "gas", GAS_GOAL),
    ):
        if key not in cases:
            continue
        ratio = cases[key]["judged_ratio"]
        if ratio is None:
            measured = "no reference"
        else:
            measured = f"{ratio:.2f}× ref" + (" (CPU time)" if cases[key]["busy"] else "")
        ok = None if ratio is None else ratio >= goal
        rows.append((number, label, measured, f"≥ {goal:.1f}× ref", status(ratio, ok), ratio))
    if "scan" in results:
        scan = results["scan"]
        first, last = scan["sizes"][0], scan["sizes"][-1]
        growth = scan["judged_growth"]
        ns_first, ns_last = scan["pair_ns_per_hop"]
        rows.append(
            (
                3,
                f"per-hop cost growth {cube(first['size'])}→{cube(last['size'])}",
                f"{growth:.2f}× ({ns_first:.0f}→{ns_last:.0f} ns"
                + (", CPU time)" if scan["busy"] else ")"),
                f"≤ {GROWTH_GOAL:g}× (16³→128³)",
                status(growth, growth <= GROWTH_GOAL),
                growth,
            )
        )
    if "memory" in results:
        per_site = results["memory"]["bytes_per_site"]
        rows.append(
            (
                4,
                f"kernel memory, {cube(s.memory_size)} c = {CONCENTRATION}",
                f"{per_site:.1f} B/site",
                "≤ 100 B/site",
                status(per_site, per_site <= 100.0),
                per_site,
            )
        )
    if "recording" in results:
        percent = results["recording"]["percent"]
        rows.append(
            (
                5,
                f"recording ({s.record_frames} frames) + HDF5 write",
                f"{percent:.2f} % of run",
                "≤ 10 %",
                status(percent, percent <= 10.0),
                percent,
            )
        )
    if "structure" in results:
        structures = results["structure"]
        worst = None if structures is None else structures["ratio"]
        rows.append(
            (
                7,
                f"structure vs built-in lattice, {cube(s.gas_size)}",
                "skipped" if worst is None else f"{worst:.2f}× the built-in (worst)",
                f"≤ {STRUCTURE_GOAL:g}×",
                status(worst, None if worst is None else worst <= STRUCTURE_GOAL),
                worst,
            )
        )
    if "interactions" in results:
        inter = results["interactions"]["ratio"]
        rows.append(
            (
                8,
                f"interacting gas vs plain, {cube(s.gas_size)} c = {CONCENTRATION}",
                f"{inter:.2f}× the plain gas"
                + (" (CPU time)" if results["interactions"]["busy"] else ""),
                f"≤ {INTERACTION_GOAL:g}×",
                status(inter, inter <= INTERACTION_GOAL),
                inter,
            )
        )
    if "mpi" in results:
        mpi = results["mpi"]
        speedup = None if mpi is None else mpi["speedup"]
        rows.append(
            (
                6,
                f"MPI -n 2 vs -n 1 ({s.mpi_tasks} tasks)",
                "skipped" if speedup is None else f"{speedup:.2f}× faster",
                "≥ 1.7×",
                status(speedup, None if speedup is None else speedup >= 1.7),
                speedup,
            )
        )
    return rows


def print_summary(rows: list[tuple[int, str, str, str, str, float | None]], quick: bool) -> None:
    say()
    title = "SUMMARY — the must-show items of the performance issues"
    say(title + ("  (--quick: smoke-test sizes, not the real numbers)" if quick else ""))
    say(f"  {'#':<3}{'item':<42}{'measured':<32}{'goal':<18}status")
    say("  " + "-" * 101)
    for number, item, measured, goal, state, _ in rows:
        say(f"  {number:<3}{item:<42}{measured:<32}{goal:<18}{state}")


# --------------------------------------------------------------------------- main


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    compiled = Path(kernel._lattice_gas.__file__)
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "kmc": kmc_version,
        "kernel_module": str(compiled),
        "kernel_module_mtime": time.strftime(
            "%Y-%m-%d %H:%M:%S", time.localtime(compiled.stat().st_mtime)
        ),
    }


def section(title: str) -> None:
    say()
    say(title)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (< 1 min): smoke test")
    parser.add_argument(
        "--only",
        metavar="ITEM",
        type=int,
        nargs="+",
        choices=range(1, 9),
        help="run only these items, 1-8 (and those they build on: 3 needs 1-2, 6 needs 3)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write every number to FILE")
    parser.add_argument(
        "--reference",
        metavar="PATH",
        type=Path,
        default=DEFAULT_REFERENCE,
        help="C source of the reference kernel, any with the command line MODE L HOPS [C] "
        "(default: benchmarks/baseline_kmc.c)",
    )
    args = parser.parse_args(argv)
    s = QUICK if args.quick else FULL
    items = set(args.only or range(1, 9))
    if 6 in items:
        items.add(3)
    if 3 in items:
        items |= {1, 2}
    started = time.perf_counter()
    machine = machine_info()
    say(f"kmc kernel benchmark{' (--quick)' if args.quick else ''}")
    say(f"  machine: {machine['cpu']}, {machine['cpus']} CPUs, {machine['platform']}")
    say(
        f"  python {machine['python']}, numpy {machine['numpy']}, kmc {machine['kmc']}, "
        f"compiled kernel built {machine['kernel_module_mtime']}"
    )
    load = os.getloadavg()
    say(f"  load average before starting: {load[0]:.2f} (1 min), {load[1]:.2f} (5 min)")
    say(
        f"  landscape: simple cubic, hop 1, T = {TEMPERATURE:g} K, ν = {ATTEMPT_FREQUENCY:g} Hz, "
        f"site energies U[{SITE_LOW}, {SITE_HIGH}] eV, saddles U[{SADDLE_LOW}, {SADDLE_HIGH}] eV"
    )
    results: dict[str, Any] = {"quick": args.quick, "settings": asdict(s), "machine": machine}
    results["items"] = sorted(items)
    results["load_average_start"] = load
    with tempfile.TemporaryDirectory(prefix="kmc-bench-") as tmp:
        workdir = Path(tmp)
        if items & {1, 2}:  # only items 1-3 time the reference
            ref = Reference(args.reference, workdir)
            if ref.available:
                say(f"  reference: {ref.command}")
            else:
                say(f"  reference: NOT AVAILABLE ({ref.reason}); the reference columns are skipped")
            results["reference"] = {
                "source": str(args.reference),
                "available": ref.available,
                "reason": ref.reason,
            }
        else:
            say("  reference: not built (these items do not time it)")
        lands = Landscapes()

        if items & {1, 2}:
            section(f"1-2. Throughput against the reference (interleaved, {s.repeats} runs)")
            cases = compare_cases(s, ref, lands)
            results["cases"] = {key: c.as_dict() for key, c in cases.items()}
        if 3 in items:
            section("3. Per-hop cost of the lattice gas versus lattice size")
            results["scan"] = size_scan(s, ref, lands, cases["gas"])
        if 4 in items:
            section(f"4. Kernel memory per site (c = {CONCENTRATION})")
            results["memory"] = kernel_memory(s, lands)
        if 5 in items:
            section("5. Cost of trajectory recording and HDF5 writing")
            results["recording"] = recording_cost(s, lands, workdir)
        if 6 in items:
            section("6. MPI scaling of kmc run")
            results["mpi"] = mpi_scaling(s, lands, workdir, results["scan"])
        if 7 in items:
            section("7. Structure supercells against the built-in lattice (c = 0.5)")
            results["structure"] = structure_cost(s, lands)
        if 8 in items:
            section(f"8. Ion–ion interactions: the c = {CONCENTRATION} gas with and without")
            results["interactions"] = interaction_cost(s, lands)

    rows = summary_rows(results, s)
    print_summary(rows, args.quick)
    busy = contention_report()
    results["cpu_shares"] = CPU_SHARES
    results["load_average_end"] = os.getloadavg()
    if busy:
        say()
        say(
            "WARNING: other programs competed for the CPUs (load average now "
            f"{results['load_average_end'][0]:.1f} on {os.cpu_count()} CPUs); these timings "
            "did not get a whole core and the wall-time numbers above are pessimistic:"
        )
        for line in busy:
            say(f"  {line}")
    results["summary"] = [
        {
            "number": number,
            "item": item,
            "measured": measured,
            "goal": goal,
            "status": state,
            "value": value,
        }
        for number, item, measured, goal, state, value in rows
    ]
    results["seconds"] = time.perf_counter() - started
    say(f"\n(benchmark took {results['seconds']:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=_json_default) + "\n")
        say(f"numbers written to {args.json}")
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


if __name__ == "__main__":
    sys.exit(main())
