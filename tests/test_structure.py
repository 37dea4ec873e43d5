"""kmc.structure: hop networks read from structure files, checked against the ideal lattices,
the exact network solver and the symmetry of olivine LiFePO4."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kmc import kernel, landscape, lattice, network, structure
from kmc.distributions import Distribution
from kmc.units import BOLTZMANN_EV

pytest.importorskip("ase")
import ase
import ase.build
import ase.io

STRUCTURES = Path(__file__).resolve().parent.parent / "structures"
OLIVINE = STRUCTURES / "LiFePO4_olivine.cif"
MARICITE = STRUCTURES / "NaFePO4_maricite.cif"


def _phase(site, saddle) -> landscape.Phase:
    return landscape.Phase(Distribution.parse(site), Distribution.parse(saddle))


def _landscape(lat, site, saddle, seed=1, blocked=None) -> landscape.Landscape:
    return landscape.generate(
        lat,
        crystal=_phase(site, saddle),
        amorphous=_phase(site, saddle),
        amorphous_mask=np.zeros(lat.n_sites, dtype=bool),
        rng=np.random.default_rng(seed),
        blocked=blocked,
    )


def _bond_keys(lat) -> list[tuple]:
    """Each bond as (sorted end sites, its vector rounded, oriented from the lower end)."""
    keys = []
    for (i, j), v in zip(lat.bond_ends, lat.bond_vectors, strict=True):
        if i > j or (i == j and tuple(v) < tuple(-v)):
            i, j, v = j, i, -v
        keys.append((int(i), int(j), *np.round(v, 6).tolist()))
    return keys


def _walker_tensor(land, temperature, n=4000, hops=2000, seed=2):
    """Diffusion tensor of independent walkers from their total displacements, Å²/s, and
    its standard error: walkers are independent, so the error of the mean over walkers of
    Δr_a Δr_b / 2T is their scatter / √n (the bounded corrector adds a bias ~ a²/(hops a²)
    = 5e-4 relative, far below it)."""
    traj = kernel.simulate(
        land, temperature, np.random.default_rng(seed), count=n, exclusion=False,
        hops_per_ion=hops, frames=2,
    )  # fmt: skip
    d = traj.positions[-1] - traj.positions[0]
    samples = np.einsum("na,nb->nab", d, d) / (2 * traj.times[-1])
    return samples.mean(axis=0), samples.std(axis=0, ddof=1) / np.sqrt(n)


@pytest.mark.parametrize(
    ("kind", "atoms"),
    [
        ("cubic", lambda a: ase.Atoms("Na", cell=np.eye(3) * a, pbc=True)),
        ("bcc", lambda a: ase.build.bulk("Na", "bcc", a=a * 2 / np.sqrt(3), cubic=True)),
        ("fcc", lambda a: ase.build.bulk("Na", "fcc", a=a * np.sqrt(2), cubic=True)),
    ],
)
def test_ideal_lattices_as_structure_files(tmp_path, kind, atoms):
    """sc, bcc and fcc written as CIF files give the built-in hop network and, on one
    landscape, the built-in network D to solver precision (1e-9 relative)."""
    a = 2.7
    path = tmp_path / f"{kind}.cif"
    ase.io.write(path, atoms(a))
    read = structure.read(path, "Na", cutoff=1.05 * a)
    assert read.symmetry and len(read.hop_type_labels) == 1  # one orbit of nearest hops
    ideal = lattice.build(kind, (4, 4, 4), a)
    found = read.lattice((4, 4, 4))
    assert (found.n_sites, found.n_bonds, found.coordination) == (
        ideal.n_sites, ideal.n_bonds, ideal.coordination
    )  # fmt: skip
    np.testing.assert_allclose(found.positions, ideal.positions, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(found.bond_vectors, axis=1), a, rtol=1e-9)
    assert sorted(_bond_keys(found)) == sorted(_bond_keys(ideal))

    # the same random landscape on both: site energies by site, saddles moved bond by bond
    land = _landscape(ideal, {"dist": "normal", "mean": 0, "sigma": 0.05},
                      {"dist": "uniform", "low": 0.2, "high": 0.4})  # fmt: skip
    saddle_of = dict(zip(_bond_keys(ideal), land.saddle_energy, strict=True))
    moved = landscape.Landscape(
        found, land.blocked, land.amorphous, land.site_energy,
        np.array([saddle_of[k] for k in _bond_keys(found)]), land.attempt_frequency,
    )  # fmt: skip
    d_ideal = network.diffusion_tensor(land, 500)
    d_found = network.diffusion_tensor(moved, 500)
    np.testing.assert_allclose(d_found, d_ideal, rtol=1e-9, atol=1e-9 * np.abs(d_ideal).max())


def test_kmc_on_a_structure_file_matches_the_ideal_lattice(tmp_path):
    """kMC on bcc read from a file: the walkers' D equals the exact D = z Γ a²/6 of bcc
    (z = 8) within 4 standard errors."""
    a, saddle, temperature = 2.5, 0.25, 400.0
    path = tmp_path / "bcc.cif"
    ase.io.write(path, ase.build.bulk("Na", "bcc", a=a * 2 / np.sqrt(3), cubic=True))
    land = _landscape(structure.read(path, "Na", 1.05 * a).lattice((4, 4, 4)), 0.0, saddle)
    gamma = 1e13 * np.exp(-saddle / (BOLTZMANN_EV * temperature))
    exact = 8 * gamma * a**2 / 6
    tensor, error = _walker_tensor(land, temperature)
    z = (np.trace(tensor) / 3 - exact) / (np.sqrt(np.sum(np.diag(error) ** 2)) / 3)
    assert abs(z) < 4, (np.trace(tensor) / 3, exact, z)


def _triclinic(tmp_path):
    """Three Li sites in a triclinic P1 cell: different coordinations (5, 4, 5 hops)."""
    cell = np.array([[5.0, 0.0, 0.0], [1.2, 4.6, 0.0], [0.7, 0.9, 4.8]])
    frac = [[0.1, 0.2, 0.3], [0.55, 0.45, 0.6], [0.3, 0.8, 0.85], [0.8, 0.1, 0.1]]
    path = tmp_path / "triclinic.extxyz"
    ase.io.write(path, ase.Atoms("Li3O", scaled_positions=frac, cell=cell, pbc=True))
    return structure.read(path, "Li", 3.6).lattice((4, 4, 4))


@pytest.mark.parametrize(
    ("site", "saddle"),
    [(0.0, 0.3), ({"dist": "normal", "mean": 0, "sigma": 0.04},
                  {"dist": "uniform", "low": 0.25, "high": 0.4})],
    ids=["uniform", "disordered"],
)  # fmt: skip
def test_triclinic_walker_tensor_matches_the_network(tmp_path, site, saddle):
    """On a triclinic cell with three basis sites of different coordination, the kMC tensor
    of independent walkers equals the exact network tensor component by component, |z| < 4
    with the error from the scatter over 4000 independent walkers."""
    lat = _triclinic(tmp_path)
    assert not lat.orthogonal and lat.padded
    land = _landscape(lat, site, saddle)
    exact = network.diffusion_tensor(land, 600)
    tensor, error = _walker_tensor(land, 600)
    z = (tensor - exact) / error
    assert np.all(np.abs(z) < 4), z


def test_triclinic_contraction_matches_the_plain_solve(tmp_path):
    """The critical-path contraction (conductance contrast > 1e12) works along the box
    vectors of a triclinic box: it agrees with the plain solve of a contrast just below."""
    lat = _triclinic(tmp_path)
    low = {"dist": "discrete", "values": [0.3, 1.5], "weights": [0.8, 0.2]}
    land = _landscape(lat, 0.0, low)
    contrast = np.ptp(land.saddle_energy) / (BOLTZMANN_EV * 300)
    assert np.exp(contrast) > network.CONTRACTION_RATIO  # the contracted path at 300 K
    hot = network.diffusion_tensor(land, 2000)  # contrast 1e3: the plain solve
    # D(T) from one solve each: the contracted one at 300 K must be finite and positive
    cold = network.diffusion_tensor(land, 300)
    assert np.all(np.isfinite(cold)) and np.all(np.linalg.eigvalsh(cold) >= 0)
    assert np.all(np.linalg.eigvalsh(hot) > 0)


def test_olivine_hop_types():
    """Olivine LiFePO4 (Pnma, Li on 4a): one site type, and hop types H1 (b channel,
    3.00 Å, 2 per site), H2 (along c, 4.69 Å, 2 per site), as the Li–Li shells of the
    structure give them."""
    read = structure.read(OLIVINE, "Li", 6.0)
    assert read.spacegroup.startswith("Pnma")
    assert read.site_type_labels == ("Li1",) and read.site_type_info[0].wyckoff == "4a"
    h1, h2 = read.hop_type_info[:2]
    assert h1.length == pytest.approx(6.0064 / 2, abs=1e-3) and h1.per_site == {"Li1": 2}
    assert abs(h1.direction[1]) == pytest.approx(1.0, abs=1e-6)
    assert h2.length == pytest.approx(4.6901, abs=1e-3) and abs(h2.direction[2]) > 0.999


def test_olivine_anisotropy_and_antisite_blocking():
    """With a low channel barrier and high barriers elsewhere, the network tensor of olivine
    equals ½ Σ_k Γ_k d_k d_kᵀ per site (exact: every Li site is an inversion centre, so the
    corrector vanishes), D_bb/D_cc is the factor the barriers predict, and one blocked
    (antisite) site in every channel collapses D_bb by more than 100× at 300 K."""
    read = structure.read(OLIVINE, "Li", 6.0)
    lat = read.lattice((2, 12, 3))
    barriers = {"H1": 0.30, "H2": 0.65, "H3": 0.80, "H4": 0.80}
    saddle = {k: Distribution.parse(v) for k, v in barriers.items()}
    phase = landscape.Phase(Distribution.parse(0.0), saddle)
    clean = landscape.generate(
        lat, crystal=phase, amorphous=_phase(0.0, 0.5),
        amorphous_mask=np.zeros(lat.n_sites, dtype=bool), rng=np.random.default_rng(0),
    )  # fmt: skip
    temperature = 300.0
    d = network.diffusion_tensor(clean, temperature)
    rates = 1e13 * np.exp(-np.array(list(barriers.values())) / (BOLTZMANN_EV * temperature))
    expected = np.zeros((3, 3))
    for k in np.flatnonzero(lat.hop_valid[0]):
        v = lat.hop_vectors[0, k]
        expected += 0.5 * rates[lat.hop_types[0, k]] * np.outer(v, v)
    np.testing.assert_allclose(d, expected, rtol=1e-8, atol=1e-8 * d.max())
    b_channel = rates[0] * (6.0064 / 2) ** 2  # ½ · 2 hops · Γ_H1 b²/4
    assert d[1, 1] == pytest.approx(b_channel, rel=1e-3)  # H3 adds ~1e-2.5 of it
    assert d[1, 1] / d[2, 2] > 1e4

    # an antisite Fe in every b channel (one blocked site per channel of H1 bonds): Li must
    # leave its channel through the slow H2–H4 hops, D_bb collapses to their scale
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    h1 = lat.bond_types == 0
    ends = lat.bond_ends[h1]
    graph = coo_matrix((np.ones(len(ends)), (ends[:, 0], ends[:, 1])), shape=(lat.n_sites,) * 2)
    n_channels, channel = connected_components(graph, directed=False)
    assert n_channels == 2 * 3 * 2  # two b channels per cell
    blocked = np.zeros(lat.n_sites, dtype=bool)
    rng = np.random.default_rng(5)  # at random along each channel (all at one b: a wall)
    blocked[[rng.choice(np.flatnonzero(channel == c)) for c in range(n_channels)]] = True
    cut = landscape.generate(
        lat, crystal=phase, amorphous=_phase(0.0, 0.5), amorphous_mask=np.zeros_like(blocked),
        rng=np.random.default_rng(0), blocked=blocked,
    )  # fmt: skip
    d_cut = network.diffusion_tensor(cut, temperature)
    assert 0 < d_cut[1, 1] < 0.01 * d[1, 1]
    assert d_cut[2, 2] == pytest.approx(d[2, 2], rel=0.2)  # across channels: barely touched


def test_framework_repeats_over_the_supercell():
    """Olivine's framework (Fe4 P4 O16 per cell) repeated over 2 x 3 x 1 cells: 6 copies,
    shifted by whole cell vectors."""
    read = structure.read(OLIVINE, "Li", 6.0)
    symbols, positions = read.framework((2, 3, 1))
    assert len(symbols) == 6 * 24 and symbols.count("Fe") == 24
    shift = positions[24:48] - positions[:24]
    np.testing.assert_allclose(shift, np.tile(read.cell[1], (24, 1)), atol=1e-12)


def test_maricite_has_no_short_na_hop():
    """Maricite NaFePO4: Na on one 4c orbit, no Na–Na distance below 4.3 Å (no channels)."""
    read = structure.read(MARICITE, "Na", 5.1)
    assert read.site_type_labels == ("Na1",) and read.site_type_info[0].wyckoff == "4c"
    assert min(t.length for t in read.hop_type_info) > 4.3


def test_bad_structure_input(tmp_path):
    with pytest.raises(structure.StructureError) as err:
        structure.read(tmp_path / "missing.cif", "Na", 4.0)
    assert err.value.key == "structure"
    garbage = tmp_path / "garbage.cif"
    garbage.write_text("this is not a crystal\n")
    with pytest.raises(structure.StructureError) as err:
        structure.read(garbage, "Na", 4.0)
    assert err.value.key == "structure" and "ASE cannot read" in str(err.value)
    with pytest.raises(structure.StructureError) as err:
        structure.read(OLIVINE, "Na", 4.0)
    assert err.value.key == "mobile" and "no Na site" in str(err.value)
    with pytest.raises(structure.StructureError) as err:
        structure.read(OLIVINE, "Li", 2.5)
    assert err.value.key == "cutoff" and "3.003" in str(err.value)
    two = tmp_path / "two.extxyz"  # a pair of close Li and one far away: an isolated site
    ase.io.write(two, ase.Atoms("Li3", positions=[[0, 0, 0], [2, 0, 0], [5, 5, 5]],
                                cell=np.eye(3) * 10, pbc=True))  # fmt: skip
    with pytest.raises(structure.StructureError) as err:
        structure.read(two, "Li", 3.0)
    assert err.value.key == "cutoff" and "1 of 3" in str(err.value)
    with pytest.raises(structure.StructureError) as err:
        structure.read(OLIVINE, "Li", 6.0).lattice((1, 1, 1))  # 4.69 Å hop onto its image
    assert err.value.key == "supercell"
