"""Sanity checks for the CIF files in this folder (run: python check_structures.py).

For each structure: composition, space group (spglib, if installed),
P-O / Fe-O / mobile-ion-O bond lengths, and mobile-ion--mobile-ion distance
shells up to 6 A (distance, number of neighbours per site).
"""

import sys
from collections import Counter
from pathlib import Path

import ase.io
import numpy as np
from ase.neighborlist import neighbor_list

HERE = Path(__file__).resolve().parent
FILES = {  # file -> mobile species
    "LiFePO4_olivine.cif": "Li",
    "NaFePO4_maricite.cif": "Na",
}


def bonds(atoms, center, other, rmax):
    i, j, d = neighbor_list("ijd", atoms, rmax)
    sym = np.array(atoms.get_chemical_symbols())
    out = {}
    for k in np.where(sym == center)[0]:
        m = (i == k) & (sym[j] == other)
        out[k] = np.sort(d[m])
    return out


def shells(atoms, ion, rmax=6.0, tol=0.001):
    i, j, d = neighbor_list("ijd", atoms, rmax)
    sym = np.array(atoms.get_chemical_symbols())
    sites = np.where(sym == ion)[0]
    per_site = []
    for k in sites:
        m = (i == k) & (sym[j] == ion)
        per_site.append(Counter(np.round(d[m] / tol) * tol))
    # all sites of one Wyckoff orbit must give identical shells
    ref = per_site[0]
    same = all(
        sorted(np.round(list(p.elements()), 3)) == sorted(np.round(list(ref.elements()), 3))
        for p in per_site
    )
    return sorted(ref.items()), same, len(sites)


def main():
    try:
        import spglib
    except ImportError:  # optional
        spglib = None
    for name, ion in FILES.items():
        path = HERE / name
        if not path.exists():
            continue
        at = ase.io.read(path)
        print(f"== {name}: {at.get_chemical_formula()}  cell {np.round(at.cell.cellpar()[:3], 4)}")
        if spglib is not None:
            cell = (at.cell[:], at.get_scaled_positions(), at.numbers)
            print("   spglib:", spglib.get_spacegroup(cell, symprec=1e-3))
        for c, o, r in (("P", "O", 2.0), ("Fe", "O", 2.6), (ion, "O", 3.0)):
            b = bonds(at, c, o, r)
            vals = np.concatenate(list(b.values()))
            first = next(iter(b.values()))
            spread = f"{vals.min():.3f}-{vals.max():.3f}"
            print(f"   {c}-O per site: {np.round(first, 3)}  (range {spread})")
        sh, same, n = shells(at, ion)
        print(f"   {ion}-{ion} shells up to 6 A ({n} {ion} sites; all sites identical: {same}):")
        for dist, cnt in sh:
            print(f"      {dist:6.3f} A  x{cnt}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
