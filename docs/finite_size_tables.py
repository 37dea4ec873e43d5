"""Tables of docs/results.md section 6 from runs/nafepo4-finite-size/results.h5 (written by
``kmc run`` / ``kmc analyze``): spanning probability, spanning fraction, critical barrier and
D per size, microstructure and φ; threshold estimates per size; solver statistics.

    python docs/finite_size_tables.py [RUN]
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from kmc import results
from kmc.store import read_task


def crossing(phis: list[float], probability: list[float], level: float = 0.5) -> float:
    """φ where the spanning probability first reaches ``level`` (linear interpolation)."""
    for k in range(1, len(phis)):
        low, high = probability[k - 1], probability[k]
        if low < level <= high:
            return phis[k - 1] + (level - low) / (high - low) * (phis[k] - phis[k - 1])
    return math.nan


def main() -> None:
    run = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/nafepo4-finite-size")
    res = results.read_results(run / "results.h5")
    table: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for rec in res.summary:
        cells = rec["lattice.cells"]
        size = int(
            cells[0] if isinstance(cells, list | tuple) else str(cells).strip("[]").split(",")[0]
        )
        table[(rec["microstructure.kind"], size)].append(rec)
    for kind in ("random", "correlated"):
        print(f"\n{kind}: spanning probability P / spanning fraction / E_c (eV) / D (cm²/s)")
        sizes = sorted(size for k, size in table if k == kind)
        header = "| φ | " + " | ".join(f"{s}³ P | {s}³ frac | {s}³ E_c | {s}³ D" for s in sizes)
        print(header + " |")
        print("|---" * (1 + 4 * len(sizes)) + "|")
        rows = {
            s: sorted(table[(kind, s)], key=lambda r: r["microstructure.amorphous_fraction"])
            for s in sizes
        }
        for k, rec in enumerate(rows[sizes[0]]):
            cells = [f"{rec['microstructure.amorphous_fraction']:.2f}"]
            for s in sizes:
                r = rows[s][k]
                d = r["D_tracer"]
                cells += [
                    f"{r['percolating']:.2f}",
                    f"{r['spanning_fraction']:.3f}",
                    f"{r['critical_barrier']:.3f}",
                    f"{d:.2e} ± {r['D_tracer_err']:.0e}",
                ]
            print("| " + " | ".join(cells) + " |")
        for s in sizes:
            phis = [r["microstructure.amorphous_fraction"] for r in rows[s]]
            p = [r["percolating"] for r in rows[s]]
            last_zero = max((f for f, q in zip(phis, p, strict=True) if q == 0), default=math.nan)
            first_one = min((f for f, q in zip(phis, p, strict=True) if q == 1), default=math.nan)
            print(
                f"{kind} {s}³: P = 0.5 at φ ≈ {crossing(phis, p):.3f}; "
                f"P = 0 up to φ = {last_zero}, P = 1 from φ = {first_one}"
            )
    solvers: dict[str, int] = defaultdict(int)
    worst, seconds = 0.0, defaultdict(list)
    for path in sorted((run / "tasks").glob("*.h5md")):
        obs = read_task(path, positions=False).observables
        solvers[str(obs.get("solver"))] += 1
        worst = max(worst, float(obs.get("solver_residual", 0.0)))
        seconds[round(read_task(path, positions=False).box[0] / 3.4)].append(
            float(obs["kernel_seconds"])
        )
    print("\nsolvers:", dict(solvers), f"largest residual {worst:.1e}")
    for size, values in sorted(seconds.items()):
        print(
            f"{size}³: solve {np.median(values):.2f} s median, {np.max(values):.2f} s max"
            f" over {len(values)} tasks"
        )


if __name__ == "__main__":
    main()
