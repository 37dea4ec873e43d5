"""Redraw every figure in docs/ from runs this script makes, and print docs/results.md's tables.

    python docs/make_figures.py                 # every study: run, plot, check, tables
    python docs/make_figures.py --only NAME     # one study (NAME as in STUDIES below)
    python docs/make_figures.py --tables        # only print the tables from existing runs

For each study it runs ``kmc run CONFIG -o runs/<run>`` (resumable: a rerun reuses the
completed tasks, so a second call only redraws), then ``kmc plot runs/<run> [--x ..] [--by ..]
-o docs/<study>.png``. The figures in docs/ are exactly that ``kmc plot`` output. It then
checks that the same plot, drawn by :func:`kmc.plot.plot_run` from the run's ``results.h5``,
also writes as PDF and SVG (to a temporary directory) without any warning -- issue 9's
must-show 5 -- and prints the markdown tables of docs/results.md, computed from the data
``kmc analyze RUN --json`` prints (read back from the ``results.h5`` that ``kmc plot`` has just
written; :meth:`kmc.results.RunResults.to_json` is what ``kmc analyze --json`` prints), and
the effective-medium comparisons quoted in the text. Run it from the repository root.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from math import comb
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FRACTION = "microstructure.amorphous_fraction"
KIND = "microstructure.kind"
TEMP = "run.temperature"
METHOD = "run.method"
CELLS = "lattice.cells"
SUPERCELL = "lattice.supercell"
BLOCKED = "lattice.blocked_fraction"
INTERFACE = "interface.saddle_energy"
CONCENTRATION = "ions.concentration"
K_B = 8.617333262e-5  # eV/K
FAILURES: list[str] = []  # plots that did not write cleanly as PNG, PDF and SVG


@dataclass(frozen=True)
class Study:
    name: str  # docs/<name>.png
    config: str  # configs/<config>
    run: str  # runs/<run>
    x: str | None = None
    by: str | None = None

    @property
    def run_dir(self) -> Path:
        return ROOT / "runs" / self.run

    @property
    def figure(self) -> Path:
        return ROOT / "docs" / f"{self.name}.png"


STUDIES = [
    Study(
        "nafepo4_amorphization",
        "configs/nafepo4_amorphization.toml",
        "nafepo4-amorphization",
        by=KIND,
    ),
    Study(
        "nafepo4_kmc_check",
        "configs/nafepo4_kmc_check.toml",
        "nafepo4-kmc-check",
        by=KIND,
    ),
    Study(
        "lifepo4_antisite",
        "configs/lifepo4_antisite.toml",
        "lifepo4-antisite",
        x=BLOCKED,
        by=CELLS,
    ),
    Study(
        "nafepo4_amorphization_structure",
        "configs/nafepo4_amorphization_structure.toml",
        "nafepo4-amorphization-structure",
        by=KIND,
    ),
    Study(
        "lifepo4_antisite_structure",
        "configs/lifepo4_antisite_structure.toml",
        "lifepo4-antisite-structure",
        x=BLOCKED,
        by=SUPERCELL,
    ),
    Study(
        "nafepo4_field",
        "configs/nafepo4_field.toml",
        "nafepo4-field",
        x="run.field",
    ),
    Study(
        "nafepo4_state_of_charge",
        "configs/nafepo4_state_of_charge.toml",
        "nafepo4-state-of-charge",
        x=CONCENTRATION,
        by=KIND,
    ),
    Study(
        "v2o5_teo2_glass_ceramic",
        "configs/v2o5_teo2_glass_ceramic.toml",
        "v2o5-teo2-glass-ceramic",
        by=INTERFACE,
    ),
]


# --------------------------------------------------------------------------- run and plot


def _kmc(*args: str) -> None:
    """Run ``kmc ARGS`` in the repository root; its progress (stderr) is shown as it comes,
    of its stdout (the summary table of ``kmc run``) only the last lines."""
    exe = shutil.which("kmc")
    if exe is None:
        sys.exit("make_figures: the kmc command is not on PATH (pip install -e .)")
    print("$ kmc", " ".join(args), flush=True)
    done = subprocess.run([exe, *args], cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True)
    for line in done.stdout.splitlines()[-3:]:
        print("  " + line, flush=True)


def run_and_plot(study: Study) -> None:
    start = time.perf_counter()
    _kmc("run", study.config, "-o", f"runs/{study.run}")
    options = []
    for flag, key in (("--x", study.x), ("--by", study.by)):
        if key is not None:
            options += [flag, key]
    _kmc("plot", f"runs/{study.run}", *options, "-o", f"docs/{study.name}.png")
    print(f"{study.name}: run and plot took {time.perf_counter() - start:.0f} s", flush=True)


def check_vector_formats(study: Study) -> None:
    """The plot of ``study`` written as PNG, PDF and SVG to a temporary directory: each file
    must be of its type and no warning (e.g. a matplotlib layout warning) may be raised."""
    from kmc.plot import plot_run
    from kmc.results import read_results

    results = read_results(study.run_dir / "results.h5")
    magic = {".png": b"\x89PNG", ".pdf": b"%PDF", ".svg": b"<?xml"}
    with tempfile.TemporaryDirectory() as tmp:
        for suffix, head in magic.items():
            path = Path(tmp) / f"{study.name}{suffix}"
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                plot_run(results, path, x=study.x, by=study.by)
            ok = path.read_bytes().startswith(head)
            size = path.stat().st_size / 1024
            kind = suffix[1:].upper() if ok else f"NOT a {suffix[1:].upper()} file"
            state = "no warning" if not caught else f"FAILED: {len(caught)} warning(s)"
            print(f"  {study.name}{suffix}: {size:.0f} KiB, {kind}, {state}")
            for w in caught:
                print(f"    {w.category.__name__}: {w.message}")
            if caught or not ok:
                FAILURES.append(f"{study.name}{suffix}")


# --------------------------------------------------------------------------- data helpers


def load(study: Study) -> dict:
    """What ``kmc analyze runs/<run> --json`` prints, from the run's results.h5."""
    from kmc.results import read_results

    return json.loads(read_results(study.run_dir / "results.h5").to_json())


def _num(v) -> float:
    return math.nan if v is None else float(v)


def sci(v, digits: int = 2) -> str:
    v = _num(v)
    if not math.isfinite(v):
        return "—"
    mant, exp = f"{v:.{digits}e}".split("e")
    return f"{mant}e{int(exp)}"


def val(rec: dict, key: str) -> str:
    """``mean ± err`` of a summary record, or ``< bound`` where it is non-diffusive."""
    if not rec.get("diffusive", True):
        return f"< {sci(rec.get(key + '_upper'))}"
    mean, err = _num(rec.get(key)), _num(rec.get(key + "_err"))
    if not math.isfinite(mean):
        return "—"
    if not math.isfinite(err) or err == 0:
        return sci(mean)
    return f"{sci(mean)} ± {sci(err, 1)}"


def ea(rec: dict | None, key: str = "Ea_tracer") -> str:
    if rec is None:
        return "—"
    v, e = _num(rec.get(key)), _num(rec.get(key + "_err"))
    if not math.isfinite(v):
        return "withheld" if "withheld" in rec.get("note", "") else "—"
    text = f"{v:.3f} ± {e:.3f}" if math.isfinite(e) else f"{v:.3f}"
    # kmc analyze's range flag: "<key> outside the physical range on k of n landscapes"
    # (k may be 0 when only the mean is flagged)
    flag = re.search(key + r" outside the physical range on (\d+) of (\d+)", rec.get("note", ""))
    return text + (f" ⚑{flag[1]}/{flag[2]}" if flag else "")


def find(records: list[dict], **keys) -> list[dict]:
    out = []
    for rec in records:
        if all(
            json.dumps(rec.get(k), sort_keys=True) == json.dumps(v, sort_keys=True)
            for k, v in keys.items()
        ):
            out.append(rec)
    return out


def one(records: list[dict], **keys) -> dict | None:
    found = find(records, **keys)
    return found[0] if found else None


def values_of(records: list[dict], key: str) -> list:
    seen = []
    for rec in records:
        if rec[key] not in seen:
            seen.append(rec[key])
    return seen


def landscape_eas(data: dict, **keys) -> list[float]:
    return [_num(r["Ea_tracer"]) for r in find(data["arrhenius_landscapes"], **keys)]


def ea_range(data: dict, **keys) -> str:
    eas = [e for e in landscape_eas(data, **keys) if math.isfinite(e)]
    return f"{min(eas):.2f}–{max(eas):.2f}" if eas else "—"


def physical_range(data: dict, **keys) -> str:
    rec = one(data["arrhenius"], **keys)
    return "—" if rec is None else f"{_num(rec['Ea_lower']):.2f}–{_num(rec['Ea_upper']):.2f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def g(x: float) -> str:
    return f"{x:g}"


def ratios(data: dict, temperature: float, **keys) -> list[tuple[float, bool]]:
    """kMC D* / network D per landscape at ``temperature``: (ratio or bound, kMC diffusive)."""
    tasks = find(data["tasks"], **keys, **{TEMP: temperature})
    exact = {t["landscape"]: _num(t["D_tracer"]) for t in tasks if t[METHOD] == "network"}
    out = []
    for t in tasks:
        if t[METHOD] != "kmc" or t["landscape"] not in exact:
            continue
        d = _num(t["D_tracer"]) if t["diffusive"] else _num(t["D_tracer_upper"])
        out.append((d / exact[t["landscape"]], bool(t["diffusive"])))
    return out


def ratio_text(pairs: list[tuple[float, bool]]) -> str:
    """Mean and range of the per-landscape ratios of diffusive tasks; non-diffusive ones as
    bounds."""
    good = [r for r, ok in pairs if ok]
    bad = [r for r, ok in pairs if not ok]
    parts = []
    if good:
        rng = f" ({min(good):.2f}–{max(good):.2f})" if len(good) > 1 else ""
        parts.append(f"{np.mean(good):.2f}{rng}")
    if bad:
        parts.append(f"{len(bad)} non-diff. (< {min(bad):.2g}–{max(bad):.2g})")
    return "; ".join(parts) if parts else "—"


# --------------------------------------------------------------------------- tables


def table_nafepo4(data: dict) -> str:
    s, a = data["summary"], data["arrhenius"]
    rows = []
    for phi in values_of(s, FRACTION):
        r300 = one(s, **{KIND: "random", FRACTION: phi, TEMP: 300.0})
        c300 = one(s, **{KIND: "correlated", FRACTION: phi, TEMP: 300.0})
        r600 = one(s, **{KIND: "random", FRACTION: phi, TEMP: 600.0})
        ar = {KIND: "random", FRACTION: phi}
        ac = {KIND: "correlated", FRACTION: phi}
        rows.append(
            [
                g(phi),
                val(r300, "D_tracer"),
                val(c300, "D_tracer"),
                val(r600, "D_tracer"),
                val(r300, "conductivity"),
                ea(one(a, **ar)),
                ea_range(data, **ar),
                ea(one(a, **ac)),
                ea_range(data, **ac),
                physical_range(data, **ar),
            ]
        )
    header = [
        "φ",
        "D 300 K, random [cm²/s]",
        "D 300 K, correlated",
        "D 600 K, random",
        "σ 300 K, random [S/cm]",
        "Ea random [eV]",
        "per landscape (min–max)",
        "Ea correlated",
        "per landscape (min–max)",
        "physical range, random",
    ]
    return table(header, rows)


def monotonic_report(data: dict) -> str:
    """Whether D rises with T on every landscape and every per-landscape Ea lies in range."""
    tasks = data["tasks"]
    by_land: dict[int, list[dict]] = {}
    for t in tasks:
        by_land.setdefault(t["landscape"], []).append(t)
    falling = 0
    for rows in by_land.values():
        rows = sorted(rows, key=lambda r: r[TEMP])
        d = [_num(r["D_tracer"]) for r in rows]
        falling += any(b <= a for a, b in itertools.pairwise(d))
    lands = data["arrhenius_landscapes"]
    outside = [r for r in lands if "outside" in r["note"]]
    withheld = [r for r in lands if r["note"].startswith("withheld")]
    return (
        f"{len(by_land)} landscapes: D rises with T on {len(by_land) - falling}; "
        f"per-landscape Ea outside the physical range on {len(outside)}, withheld on "
        f"{len(withheld)} of {len(lands)} fits"
    )


def table_kmc_check(data: dict) -> str:
    s, a = data["summary"], data["arrhenius"]
    rows = []
    for kind in values_of(s, KIND):
        for phi in values_of(s, FRACTION):
            row = [g(phi), kind]
            diff = []
            for temp in (500.0, 600.0):
                k = one(s, **{METHOD: "kmc", KIND: kind, FRACTION: phi, TEMP: temp})
                n = one(s, **{METHOD: "network", KIND: kind, FRACTION: phi, TEMP: temp})
                row += [
                    val(k, "D_tracer"),
                    val(n, "D_tracer"),
                    ratio_text(ratios(data, temp, **{KIND: kind, FRACTION: phi})),
                ]
                diff.append(f"{k['diffusive_replicas']}/{k['replicas']}")
            key = {KIND: kind, FRACTION: phi}
            row += [
                " · ".join(diff),
                ea(one(a, **{METHOD: "kmc"}, **key)),
                ea(one(a, **{METHOD: "network"}, **key)),
            ]
            rows.append(row)
    header = [
        "φ",
        "kind",
        "kMC D* 500 K [cm²/s]",
        "network 500 K",
        "kMC / network per landscape 500 K",
        "kMC D* 600 K",
        "network 600 K",
        "kMC / network 600 K",
        "kMC diffusive 500 · 600 K",
        "Ea kMC (500–600 K) [eV]",
        "Ea network (500–600 K)",
    ]
    return table(header, rows)


def kmc_check_summary(data: dict) -> str:
    """Counts of non-diffusive kMC tasks and of per-landscape agreement within 20 %."""
    tasks = [t for t in data["tasks"] if t[METHOD] == "kmc"]
    bad = [t for t in tasks if not t["diffusive"]]
    where: dict[str, int] = {}
    for t in bad:
        label = f"{t[KIND]} φ = {g(t[FRACTION])}, {g(t[TEMP])} K"
        where[label] = where.get(label, 0) + 1
    pairs = []
    for kind in values_of(tasks, KIND):
        for phi in values_of(tasks, FRACTION):
            for temp in (500.0, 600.0):
                pairs += ratios(data, temp, **{KIND: kind, FRACTION: phi})
    close = [ok for r, ok in pairs if abs(r - 1) <= 0.2]
    far_diff = [r for r, ok in pairs if ok and abs(r - 1) > 0.2]
    lines = [
        f"kMC tasks: {len(tasks)}, non-diffusive: {len(bad)}",
        "  " + "; ".join(f"{k}: {v}" for k, v in where.items()),
        f"landscapes with kMC within 20 % of network: {len(close)}, "
        f"of which flagged diffusive: {sum(close)}",
        f"diffusive kMC tasks off by more than 20 %: {len(far_diff)} "
        f"({', '.join(f'{r:.2f}' for r in sorted(far_diff))})",
    ]
    return "\n".join(lines)


def open_channel_fraction(n_sites: int, length: int, p: float) -> float:
    """Expected fraction of free sites in channels (of ``length`` sites) without a blocked
    site when exactly round(p n) of ``n_sites`` are blocked (hypergeometric)."""
    blocked = round(p * n_sites)
    if blocked == 0:
        return 1.0
    open_prob = comb(n_sites - length, blocked) / comb(n_sites, blocked)
    return n_sites * open_prob / (n_sites - blocked)


@dataclass(frozen=True)
class Point:
    """A row of a kMC-against-network table: the study's data, the row's swept keys, and
    the kMC and network summary records there at 300 K."""

    data: dict
    key: dict
    kmc: dict | None
    network: dict | None


def kmc_network_table(data: dict, outer: str, inner: str, columns: list[tuple]) -> str:
    """kMC next to the exact network at 300 K, a row per (``outer``, ``inner``) point of the
    study (``outer`` slowest); ``columns`` are (header, cell) pairs, ``cell(point)`` the text
    of the column at a :class:`Point`."""
    s = data["summary"]
    rows = []
    for o in values_of(s, outer):
        for i in values_of(s, inner):
            key = {outer: o, inner: i}
            k = one(s, **{METHOD: "kmc", TEMP: 300.0}, **key)
            n = one(s, **{METHOD: "network", TEMP: 300.0}, **key)
            point = Point(data, key, k, n)
            rows.append([cell(point) for _, cell in columns])
    return table([header for header, _ in columns], rows)


def _clean_network(pt: Point) -> dict | None:
    """The network record at the same point without antisites (p = 0)."""
    return one(pt.data["summary"], **{**pt.key, METHOD: "network", BLOCKED: 0.0, TEMP: 300.0})


# the columns kmc_network_table's tables share
KMC_D = ("kMC D* 300 K [cm²/s]", lambda pt: val(pt.kmc, "D_tracer"))
NETWORK_D = ("network D 300 K [cm²/s]", lambda pt: val(pt.network, "D_tracer"))
PER_LANDSCAPE = (
    "kMC / network per landscape",
    lambda pt: ratio_text(ratios(pt.data, 300.0, **pt.key)),
)
NETWORK_SIGMA = ("σ 300 K, network [S/cm]", lambda pt: val(pt.network, "conductivity"))
EA_KMC = ("Ea kMC [eV]", lambda pt: ea(one(pt.data["arrhenius"], **{METHOD: "kmc"}, **pt.key)))
EA_NETWORK = (
    "Ea network [eV]",
    lambda pt: ea(one(pt.data["arrhenius"], **{METHOD: "network"}, **pt.key)),
)
BLOCKED_PERCENT = ("p", lambda pt: f"{100 * pt.key[BLOCKED]:g} %")
NETWORK_D_OVER_CLEAN = (
    "network D/D(0)",
    lambda pt: f"{_num(pt.network['D_tracer']) / _num(_clean_network(pt)['D_tracer']):.3f}",
)


def table_lifepo4(data: dict) -> str:
    def open_channel(pt: Point) -> str:
        cells = pt.key[CELLS]
        return f"{open_channel_fraction(int(np.prod(cells)), cells[1], pt.key[BLOCKED]):.3f}"

    columns = [
        ("channel (sites)", lambda pt: str(pt.key[CELLS][1])),
        BLOCKED_PERCENT,
        KMC_D,
        NETWORK_D,
        PER_LANDSCAPE,
        NETWORK_D_OVER_CLEAN,
        ("open-channel estimate", open_channel),
        NETWORK_SIGMA,
        EA_KMC,
        EA_NETWORK,
    ]
    return kmc_network_table(data, CELLS, BLOCKED, columns)


def table_nafepo4_structure(data: dict, cubic: dict | None) -> str:
    """The real maricite sublattice next to the cubic model (same energies, 300 K)."""
    s, a = data["summary"], data["arrhenius"]
    rows = []
    for phi in values_of(s, FRACTION):
        row = [g(phi)]
        for kind in ("random", "correlated"):
            rec = one(s, **{KIND: kind, FRACTION: phi, TEMP: 300.0})
            cub = (
                one(cubic["summary"], **{KIND: kind, FRACTION: phi, TEMP: 300.0}) if cubic else None
            )
            row += [
                val(rec, "D_tracer"),
                val(cub, "D_tracer") if cub else "-",
                f"{_num(rec['percolating']):.2f}",
                f"{_num(rec['D_tracer_yy']) / _num(rec['D_tracer_xx']):.2g}",
                ea(one(a, **{KIND: kind, FRACTION: phi})),
                ea(one(cubic["arrhenius"], **{KIND: kind, FRACTION: phi})) if cubic else "-",
            ]
        rows.append(row)
    header = ["φ"]
    for kind in ("random", "correlated"):
        header += [
            f"D 300 K {kind}, maricite [cm²/s]",
            "cubic model",
            "spanning prob.",
            "D_bb/D_aa",
            "Ea maricite [eV]",
            "Ea cubic",
        ]
    return table(header, rows)


def table_lifepo4_structure(data: dict, cubic: dict | None) -> str:
    """The real olivine sublattice next to the cubic model (channel D, 300 K)."""

    def length(pt: Point) -> int:
        return 2 * pt.key[SUPERCELL][1]  # two Li per cell along each b channel

    def open_channel(pt: Point) -> str:
        n_sites = 4 * int(np.prod(pt.key[SUPERCELL]))
        return f"{open_channel_fraction(n_sites, length(pt), pt.key[BLOCKED]):.3f}"

    def cubic_over_clean(pt: Point) -> str:
        """The cubic model's network D/D(0) in a 12 × length × 12 box at the same p."""
        if not cubic:
            return "-"
        box = {METHOD: "network", CELLS: [12, length(pt), 12], TEMP: 300.0}
        c = one(cubic["summary"], **box, **{BLOCKED: pt.key[BLOCKED]})
        if not c:
            return "-"
        clean = one(cubic["summary"], **box, **{BLOCKED: 0.0})
        return f"{_num(c['D_tracer']) / _num(clean['D_tracer']):.3f}"

    columns = [
        ("channel (sites)", lambda pt: str(length(pt))),
        BLOCKED_PERCENT,
        KMC_D,
        ("network D_bb 300 K [cm²/s]", lambda pt: val(pt.network, "D_tracer_yy")),
        (
            "D_bb/D_cc",
            lambda pt: f"{_num(pt.network['D_tracer_yy']) / _num(pt.network['D_tracer_zz']):.2g}",
        ),
        NETWORK_D_OVER_CLEAN,
        ("cubic model D/D(0)", cubic_over_clean),
        ("open-channel estimate", open_channel),
        EA_KMC,
        EA_NETWORK,
    ]
    return kmc_network_table(data, SUPERCELL, BLOCKED, columns)


def cross_channel_report() -> str:
    """Where the olivine geometry matters: D_bb/D_bb(clean) at 5 % antisites, 64-site
    channels, 300 K, as the cross-channel barrier falls, on the real sublattice (H2-H4) and on
    the cubic model (per-axis saddles); mean ± SE over 4 landscapes (exact network D)."""
    from kmc import landscape, lattice, network, structure
    from kmc.distributions import Distribution

    const = Distribution.constant
    olivine = structure.read(ROOT / "structures" / "LiFePO4_olivine.cif", "Li", 6.0)
    cases = {
        "olivine": olivine.lattice((6, 32, 12)),
        "cubic": lattice.build("cubic", (12, 64, 12), 3.0),
    }
    glass = landscape.Phase(const(0.0), const(0.5))
    lines = ["| cross-channel barrier [eV] | olivine D_bb/D_bb(0) | cubic model D_bb/D_bb(0) |",
             "|---|---|---|"]  # fmt: skip
    for cross in (1.5, 0.9, 0.7, 0.6, 0.5):
        saddles = {
            "olivine": {"H1": const(0.3), **{h: const(cross) for h in ("H2", "H3", "H4")}},
            "cubic": (const(cross), const(0.3), const(cross)),
        }
        row = [f"{cross:g}"]
        for name, lat in cases.items():
            phase = landscape.Phase(const(0.0), saddles[name])
            none = np.zeros(lat.n_sites, dtype=bool)
            clean = landscape.generate(lat, crystal=phase, amorphous=glass, amorphous_mask=none,
                                       rng=np.random.default_rng(0))  # fmt: skip
            d0 = network.diffusion_tensor(clean, 300.0)[1, 1]
            ratios = []
            for seed in range(4):
                rng = np.random.default_rng(seed)
                blocked = landscape.blocked_sites(lat, 0.05, rng)
                land = landscape.generate(
                    lat, crystal=phase, amorphous=glass, amorphous_mask=none, rng=rng,
                    blocked=blocked,
                )  # fmt: skip
                ratios.append(network.diffusion_tensor(land, 300.0)[1, 1] / d0)
            row.append(f"{np.mean(ratios):.3f} ± {np.std(ratios, ddof=1) / 2:.3f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def table_field(data: dict) -> str:
    """σ_E against σ_NE per field strength (fully amorphized NaFePO4, c = 0.3, 600 K)."""
    s = data["summary"]
    kt = K_B * 600.0
    rows = []
    zero = one(s, **{"run.field": 0.0})
    for rec in s:
        e = float(rec["run.field"])
        u = e * 1e-8 * 3.4 / (2 * kt)
        ratio = (
            f"{_num(rec['conductivity_field']) / _num(zero['conductivity']):.2f}"
            if "conductivity_field" in rec else "-"
        )  # fmt: skip
        rows.append(
            [
                f"{e:g}",
                f"{u:.3g}",
                val(rec, "drift_velocity") if "drift_velocity" in rec else "-",
                val(rec, "mobility") if "mobility" in rec else "-",
                val(rec, "conductivity_field") if "conductivity_field" in rec else "-",
                ratio,
                val(rec, "conductivity"),
                val(rec, "D_tracer_xx"),
                val(rec, "D_tracer_yy"),
            ]
        )
    header = [
        "E [V/cm]",
        "u = qEa/2kT",
        "drift v [cm/s]",
        "mobility [cm²/V/s]",
        "σ_E [S/cm]",
        "σ_E/σ_NE(0)",
        "σ_NE about the drift [S/cm]",
        "D*_xx (along E) [cm²/s]",
        "D*_yy",
    ]
    return table(header, rows)


def _soc_value(rec: dict | None, key: str, tasks: list[dict], digits: int = 2) -> str:
    """Θ or μ-like ``mean ± err`` of a state-of-charge point, or why there is none."""
    if rec is None:
        return "—"
    mean, err = _num(rec.get(key)), _num(rec.get(key + "_err"))
    if math.isfinite(mean):
        return f"{mean:.{digits}f} ± {err:.{digits}f}"
    unresolved = sum(bool(t.get("thermodynamic_reason")) for t in tasks)
    return f"unresolved {unresolved}/{len(tasks)}" if unresolved else "—"


def fermi_dirac_reference(study: Study) -> dict:
    """Θ = Σf/Σf(1 − f) and −μ (eV) of non-interacting ions with exclusion in full
    equilibrium on the φ = 1 landscapes of the study (the same site energies), mean over
    the replicas, per (kind, x)."""
    from scipy.optimize import brentq
    from scipy.special import expit

    from kmc import experiment, kernel
    from kmc.config import expand_tasks, load_config

    config = load_config(ROOT / study.config)
    kt = K_B * config.run.temperature
    out: dict = {}
    for task in expand_tasks(config):
        point = task.plain_point
        if point[FRACTION] != 1.0:
            continue
        land = experiment.build_landscape(task.config, np.random.default_rng(task.landscape_seed))
        x = point[CONCENTRATION]
        n = kernel.ion_count(land, concentration=x, count=None, exclusion=True)
        eps = land.site_energy[~land.blocked]

        def excess(mu, eps=eps, n=n):
            return float(expit((mu - eps) / kt).sum() - n)

        mu = brentq(excess, eps.min() - 50 * kt, eps.max() + 50 * kt, xtol=1e-12)
        f = expit((mu - eps) / kt)
        out.setdefault((point[KIND], x), []).append((f.sum() / (f * (1 - f)).sum(), -mu))
    return {key: tuple(np.mean(v, axis=0)) for key, v in out.items()}


def widom_theta(data: dict, temperature: float) -> dict:
    """Θ = (x/kT) dμ/dx from the Widom μ of the tasks of each landscape (every x ran on the
    same ones), by central differences (one-sided at the ends); mean ± standard error over
    the landscapes, per (kind, φ, x)."""
    kt = K_B * temperature
    by_land: dict = {}
    for t in data["tasks"]:
        by_land.setdefault(t["landscape"], []).append(t)
    per_point: dict = {}
    for rows in by_land.values():
        rows = sorted(rows, key=lambda t: t[CONCENTRATION])
        x = np.array([t[CONCENTRATION] for t in rows])
        mu = np.array([_num(t["chemical_potential"]) for t in rows])
        slope = np.gradient(mu, x)
        for t, xi, si in zip(rows, x, slope, strict=True):
            key = (t[KIND], t[FRACTION], float(xi))
            per_point.setdefault(key, []).append(xi * si / kt)
    return {
        k: (float(np.mean(v)), float(np.std(v, ddof=1) / math.sqrt(len(v))))
        for k, v in per_point.items()
    }


def table_state_of_charge(data: dict, reference: dict, temperature: float) -> str:
    """Θ (fluctuations, and from Widom's μ(x)), V = −μ/e and the staggered order across x,
    random and correlated, per φ; with the non-interacting expectations 1/(1 − x) and, at
    φ = 1, Fermi–Dirac on the same site energies."""
    s, tasks = data["summary"], data["tasks"]
    from_mu = widom_theta(data, temperature)
    rows = []
    for phi in values_of(s, FRACTION):
        for x in values_of(s, CONCENTRATION):
            key = {FRACTION: phi, CONCENTRATION: x}
            fd = reference.get(("random", x)) if phi == 1.0 else None
            row = [g(phi), g(x), f"{1 / (1 - x):.2f}"]
            row.append(f"{fd[0]:.2f} · {fd[1]:.3f}" if fd else "—")
            for kind in ("random", "correlated"):
                rec = one(s, **{KIND: kind}, **key)
                mine = find(tasks, **{KIND: kind}, **key)
                volt = None
                if rec is not None:
                    volt = {"v": -_num(rec["chemical_potential"]),
                            "v_err": rec["chemical_potential_err"]}  # fmt: skip
                widom = from_mu.get((kind, phi, float(x)))
                row += [
                    _soc_value(rec, "thermodynamic_factor", mine),
                    f"{widom[0]:.2f} ± {widom[1]:.2f}" if widom else "—",
                    _soc_value(volt, "v", mine, 3),
                    _soc_value(rec, "order_parameter", mine),
                ]
            rows.append(row)
    header = ["φ", "x", "1/(1−x)", "FD Θ · −μ [eV]"]
    for kind in ("random", "correlated"):
        header += [f"Θ {kind}", "Θ from μ(x)", f"V = −μ/e {kind} [V]", f"order {kind}"]
    return table(header, rows)


def table_state_of_charge_transport(data: dict) -> str:
    """D*, D_σ, D_chem and T/τ across x, random and correlated, per φ."""
    s, tasks = data["summary"], data["tasks"]
    rows = []
    for phi in values_of(s, FRACTION):
        for x in values_of(s, CONCENTRATION):
            row = [g(phi), g(x)]
            for kind in ("random", "correlated"):
                key = {KIND: kind, FRACTION: phi, CONCENTRATION: x}
                rec = one(s, **key)
                mine = find(tasks, **key)
                chem = val(rec, "D_chem") if rec["diffusive"] else "n.d."
                if chem == "—" and any(t.get("thermodynamic_reason") for t in mine):
                    chem = "unresolved"
                spans = [_num(t["relaxation_times"]) for t in mine]
                spans = [v for v in spans if math.isfinite(v)]
                row += [
                    val(rec, "D_tracer"),
                    val(rec, "D_jump"),
                    chem,
                    f"{rec['diffusive_replicas']}/{rec['replicas']}",
                    f"{min(spans):.0f}–{max(spans):.0f}" if spans else "—",
                ]
            rows.append(row)
    header = ["φ", "x"]
    for kind in ("random", "correlated"):
        header += [f"D* {kind} [cm²/s]", "D_σ", "D_chem", "diffusive", "T/τ"]
    return table(header, rows)


def _interface_name(dist: dict) -> str:
    return "= glass" if abs(dist["mean"] - 0.50) < 1e-9 else f"{0.50 - dist['mean']:.2f} eV lower"


def table_v2o5(data: dict) -> str:
    columns = [
        ("crystalline 1−φ", lambda pt: f"{1 - pt.key[FRACTION]:.1f}"),
        ("interface", lambda pt: _interface_name(pt.key[INTERFACE])),
        KMC_D,
        NETWORK_D,
        PER_LANDSCAPE,
        NETWORK_SIGMA,
        EA_KMC,
        EA_NETWORK,
    ]
    return kmc_network_table(data, INTERFACE, FRACTION, columns)


def kmc_flags(data: dict, label: str) -> str:
    """Non-diffusive kMC tasks and diffusive ones more than 20 % off the exact D, per point."""
    tasks = [t for t in data["tasks"] if t[METHOD] == "kmc"]
    bad = [t for t in tasks if not t["diffusive"]]
    lines = [f"{label}: {len(tasks)} kMC tasks, {len(bad)} non-diffusive"]
    swept = [k for k in tasks[0] if k in (CELLS, BLOCKED, INTERFACE, FRACTION, KIND)]
    seen = set()
    for t in tasks:
        key = {k: t[k] for k in swept}
        ident = json.dumps([key, t[TEMP]], sort_keys=True)
        if ident in seen:
            continue
        seen.add(ident)
        pairs = ratios(data, t[TEMP], **key)
        off = [r for r, ok in pairs if ok and abs(r - 1) > 0.2]
        nd = [r for r, ok in pairs if not ok]
        if off or nd:
            shown = ", ".join(f"{k.split('.')[-1]}={json.dumps(v)}" for k, v in key.items())
            lines.append(f"  {shown}, {g(t[TEMP])} K: {ratio_text(pairs)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- effective medium


def ema_amorphous(temperature: float) -> float:
    """Kirkpatrick EMA (z = 6) D of the fully amorphous NaFePO4 phase: Gaussian saddles
    N(0.76, 0.10) eV, site energies N(0.05, 0.03) eV, a = 3.4 Å, ν = 1e13 Hz (the config)."""
    from scipy.optimize import brentq

    mu, s, em, se, a, nu = 0.76, 0.10, 0.05, 0.03, 3.4e-8, 1e13
    b = 1 / (K_B * temperature)
    x, w = np.polynomial.hermite_e.hermegauss(200)
    w = w / w.sum()
    cond = np.exp(-(s * x) * b)  # bond conductances relative to exp(-mu/kT)

    def f(lg):
        return np.sum(w * (np.exp(lg) - cond) / (cond + 2 * np.exp(lg)))

    lg = brentq(f, -60, 60)
    # D = a² ν g_m / <exp(-ε/kT)>, with <exp(-ε b)> = exp(-em b + (se b)²/2)
    return a**2 * nu * math.exp(lg - mu * b) / math.exp(-em * b + (se * b) ** 2 / 2)


def ema_report(nafepo4: dict | None, v2o5: dict | None) -> str:
    from kmc import analysis

    lines = []
    if nafepo4 is not None:
        s = nafepo4["summary"]
        temps = [300.0, 400.0, 500.0, 600.0]
        ema = [ema_amorphous(t) for t in temps]
        for t, d in zip(temps, ema, strict=True):
            n = one(s, **{KIND: "random", FRACTION: 1.0, TEMP: t})
            lines.append(f"NaFePO4 φ = 1, {g(t)} K: EMA D = {d:.3g}, network {val(n, 'D_tracer')}")
        e, _ = analysis.arrhenius(temps, ema)
        lines.append(f"NaFePO4 φ = 1: EMA Ea (300–600 K) = {e:.3f} eV")
    if v2o5 is not None:
        s = v2o5["summary"]
        a, nu, t = 2.8e-8, 1e13, 300.0
        iface = {"dist": "normal", "mean": 0.50, "sigma": 0.06}
        glass = _num(
            one(s, **{METHOD: "network", INTERFACE: iface, FRACTION: 1.0, TEMP: t})["D_tracer"]
        )
        crystal = a**2 * nu * math.exp(-0.65 / (K_B * t))
        for phi in (0.7, 0.5, 0.3):
            f = 1 - phi  # crystal fraction
            # Bruggeman (symmetric, 3D): (1-f)(g1-g)/(g1+2g) + f(g2-g)/(g2+2g) = 0
            bb = (3 * phi - 1) * glass + (3 * f - 1) * crystal
            brug = (bb + math.sqrt(bb**2 + 8 * glass * crystal)) / 4
            beta = (crystal - glass) / (crystal + 2 * glass)
            mg = glass * (1 + 2 * f * beta) / (1 - f * beta)  # glass matrix, crystal inclusions
            n = one(s, **{METHOD: "network", INTERFACE: iface, FRACTION: phi, TEMP: t})
            lines.append(
                f"V2O5–TeO2 {100 * f:.0f} % crystals, no speed-up, 300 K: Bruggeman {brug:.3g}, "
                f"Maxwell-Garnett {mg:.3g}, network {val(n, 'D_tracer')} "
                f"(glass {glass:.3g}, crystal {crystal:.3g})"
            )
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def _counterpart(data: dict, name: str) -> dict | None:
    """The cubic-model study a structure study is compared with, loaded if it was run."""
    if name not in data:
        study = next(s for s in STUDIES if s.name == name)
        if (study.run_dir / "results.h5").exists():
            data[name] = load(study)
    return data.get(name)


def print_tables(studies: list[Study]) -> None:
    data = {s.name: load(s) for s in studies if (s.run_dir / "results.h5").exists()}
    if "nafepo4_amorphization" in data:
        d = data["nafepo4_amorphization"]
        print("\n## NaFePO4 amorphization (network)\n")
        print(table_nafepo4(d))
        print("\n" + monotonic_report(d))
    if "nafepo4_kmc_check" in data:
        d = data["nafepo4_kmc_check"]
        print("\n## NaFePO4 kMC cross-check (kMC and network on the same landscapes)\n")
        print(table_kmc_check(d))
        print("\n" + kmc_check_summary(d))
    if "lifepo4_antisite" in data:
        d = data["lifepo4_antisite"]
        print("\n## LiFePO4 antisites\n")
        print(table_lifepo4(d))
        print("\n" + kmc_flags(d, "LiFePO4"))
    if "nafepo4_amorphization_structure" in data:
        d = data["nafepo4_amorphization_structure"]
        print("\n## NaFePO4 amorphization on the maricite Na sublattice (network)\n")
        print(table_nafepo4_structure(d, _counterpart(data, "nafepo4_amorphization")))
        print("\n" + monotonic_report(d))
    if "lifepo4_antisite_structure" in data:
        d = data["lifepo4_antisite_structure"]
        print("\n## LiFePO4 antisites on the olivine Li sublattice\n")
        print(table_lifepo4_structure(d, _counterpart(data, "lifepo4_antisite")))
        print("\n" + kmc_flags(d, "LiFePO4 (structure)"))
        print("\n" + cross_channel_report())
    if "nafepo4_field" in data:
        print("\n## NaFePO4 (amorphized) in an applied field\n")
        print(table_field(data["nafepo4_field"]))
    if "nafepo4_state_of_charge" in data:
        d = data["nafepo4_state_of_charge"]
        study = next(s for s in STUDIES if s.name == "nafepo4_state_of_charge")
        print("\n## NaFePO4 across the state of charge (interacting lattice gas, 600 K)\n")
        from kmc.config import load_config

        temperature = load_config(ROOT / study.config).run.temperature
        print(table_state_of_charge(d, fermi_dirac_reference(study), temperature))
        print()
        print(table_state_of_charge_transport(d))
    if "v2o5_teo2_glass_ceramic" in data:
        d = data["v2o5_teo2_glass_ceramic"]
        print("\n## V2O5-TeO2 glass ceramic\n")
        print(table_v2o5(d))
        print("\n" + kmc_flags(d, "V2O5-TeO2"))
    print("\n## Effective-medium comparisons\n")
    print(ema_report(data.get("nafepo4_amorphization"), data.get("v2o5_teo2_glass_ceramic")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = [s.name for s in STUDIES]
    parser.add_argument("--only", choices=names, help="one study only")
    parser.add_argument("--tables", action="store_true", help="only print the tables")
    args = parser.parse_args(argv)
    studies = [s for s in STUDIES if args.only in (None, s.name)]
    start = time.perf_counter()
    if not args.tables:
        for study in studies:
            run_and_plot(study)
            check_vector_formats(study)
    print_tables(studies)
    print(f"\nmake_figures: total {time.perf_counter() - start:.0f} s", flush=True)
    if FAILURES:
        print("make_figures: plots with warnings or a wrong file type: " + ", ".join(FAILURES))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
