"""Microstructures, energies and rates of disordered landscapes."""

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from kmc import landscape, lattice
from kmc.distributions import Distribution

KT300 = landscape.BOLTZMANN_EV * 300.0
CRYSTAL = landscape.Phase(Distribution.constant(0.0), Distribution.constant(0.6))
GLASS = landscape.Phase(
    Distribution.parse({"dist": "normal", "mean": 0.0, "sigma": 0.05}),
    Distribution.parse({"dist": "uniform", "low": 0.3, "high": 0.4}),
)


def rng(seed=0):
    return np.random.default_rng(seed)


def mean_cluster_size(lat, mask):
    """Weighted mean size Σs²/Σs of the clusters of sites in ``mask`` joined by bonds."""
    i, j = lat.bond_ends.T
    keep = mask[i] & mask[j]
    graph = coo_matrix((np.ones(keep.sum()), (i[keep], j[keep])), shape=(lat.n_sites,) * 2)
    _, labels = connected_components(graph, directed=False)
    sizes = np.bincount(labels[mask])
    return (sizes**2).sum() / sizes.sum()


@pytest.mark.parametrize("kind", ["random", "correlated", "grains"])
@pytest.mark.parametrize("fraction", [0.0, 0.013, 0.37, 0.5, 1.0])
def test_amorphous_fraction_is_exact(kind, fraction):
    lat = lattice.build("cubic", (9, 9, 9), 3.0)
    blocked = landscape.blocked_sites(lat, 0.1, rng(1))
    amorphous = landscape.microstructure(
        lat, kind, fraction, rng(2), blocked=blocked, correlation_length=6.0, grain_diameter=12.0
    )
    n_free = lat.n_sites - blocked.sum()
    assert blocked.sum() == round(0.1 * lat.n_sites)
    assert amorphous.sum() == round(fraction * n_free)
    assert not np.any(amorphous & blocked)


@pytest.mark.parametrize(
    ("kind", "parameter", "phase"),
    [("correlated", "correlation_length", True), ("grains", "grain_diameter", False)],
)
def test_domains_grow_with_their_length(kind, parameter, phase):
    """Mean cluster size of the amorphous domains (correlated) or of the crystalline
    nanocrystals (grains) grows with the length parameter, averaged over 3 realizations;
    random sites at the same fraction give the small-cluster baseline."""
    lat = lattice.build("square", (64, 64), 1.0)

    phi = 0.3 if phase else 0.7  # the phase measured occupies 30 %, below percolation

    def size(length, seed):
        mask = landscape.microstructure(lat, kind, phi, rng(seed), **{parameter: length})
        return mean_cluster_size(lat, mask if phase else ~mask)

    random_mask = landscape.microstructure(lat, "random", phi, rng(9))
    baseline = mean_cluster_size(lat, random_mask if phase else ~random_mask)
    sizes = [np.mean([size(length, s) for s in range(3)]) for length in (1.5, 3.0, 6.0)]
    assert baseline < sizes[0] < sizes[1] < sizes[2]
    assert sizes[2] > 3 * sizes[0]


def test_random_microstructure_has_random_interfaces():
    """Independent sites: the fraction of crystal–amorphous bonds is 2φ(1−φ) in expectation;
    with B bonds its binomial-like error is below sqrt(2φ(1−φ)/B)·2 (bonds share sites)."""
    lat = lattice.build("cubic", (20, 20, 20))
    mask = landscape.microstructure(lat, "random", 0.3, rng(3))
    mixed = np.mean(mask[lat.bond_ends[:, 0]] != mask[lat.bond_ends[:, 1]])
    exact = 2 * 0.3 * 0.7
    assert abs(mixed - exact) < 4 * 2 * np.sqrt(exact * (1 - exact) / lat.n_bonds)


def make(lat, fraction=0.5, seed=0, **kwargs):
    r = rng(seed)
    blocked = kwargs.pop("blocked", None)
    mask = landscape.microstructure(lat, "random", fraction, r, blocked=blocked)
    return landscape.generate(lat, amorphous_mask=mask, rng=r, blocked=blocked, **kwargs)


@pytest.mark.parametrize("kind", lattice.KINDS)
def test_rates_obey_detailed_balance(kind):
    """Γ_ij e^(−ε_i/kT) = Γ_ji e^(−ε_j/kT) on every bond, to rounding, even where site
    energies rise above saddles (the max() rule)."""
    lat = lattice.build(kind, (6,) * lattice.DIMENSION[kind], 2.0)
    hot = landscape.Phase(
        Distribution.parse({"dist": "normal", "mean": 0.2, "sigma": 0.2}),
        Distribution.parse({"dist": "normal", "mean": 0.25, "sigma": 0.1}),
    )
    land = make(lat, crystal=CRYSTAL, amorphous=hot)
    rates = land.rates(300.0)
    flux = rates * np.exp(-land.site_energy / KT300)[:, None]
    rev = lat.reverse_direction[np.arange(lat.n_sites) % lat.n_basis]
    assert np.allclose(flux, flux[lat.neighbours, rev], rtol=1e-12, atol=0)
    assert np.any(land.site_energy[lat.bond_ends].max(1) > land.saddle_energy)


def test_saddles_follow_the_phases_of_the_bond_ends():
    lat = lattice.build("cubic", (8, 8, 8))
    interface = Distribution.constant(0.123)
    land = make(lat, crystal=CRYSTAL, amorphous=GLASS, interface_saddle=interface)
    ends = land.amorphous[lat.bond_ends].sum(1)
    assert np.all(land.saddle_energy[ends == 0] == 0.6)
    assert np.all(land.saddle_energy[ends == 1] == 0.123)
    glass = land.saddle_energy[ends == 2]
    assert 0.3 <= glass.min() and glass.max() <= 0.4 and glass.std() > 0.02
    assert np.all(land.site_energy[~land.amorphous] == 0.0)
    # no interface setting: interface bonds take the amorphous distribution
    land = make(lat, crystal=CRYSTAL, amorphous=GLASS)
    mixed = land.saddle_energy[land.amorphous[lat.bond_ends].sum(1) == 1]
    assert 0.3 <= mixed.min() and mixed.max() <= 0.4


def test_per_axis_crystal_saddles():
    lat = lattice.build("cubic", (5, 5, 5))
    axes = tuple(Distribution.constant(s) for s in (0.2, 0.5, 0.9))
    land = make(
        lat,
        fraction=0.0,
        crystal=landscape.Phase(Distribution.constant(0.0), axes),
        amorphous=GLASS,
    )
    axis = np.argmax(np.abs(lat.bond_vectors), axis=1)
    assert np.allclose(land.saddle_energy, np.array([0.2, 0.5, 0.9])[axis])
    # a bcc hop along (1,1,1)/√3 weights every axis by cos² = 1/3
    lat = lattice.build("bcc", (4, 4, 4))
    land = make(
        lat,
        fraction=0.0,
        crystal=landscape.Phase(Distribution.constant(0.0), axes),
        amorphous=GLASS,
    )
    assert np.allclose(land.saddle_energy, (0.2 + 0.5 + 0.9) / 3)


def test_blocked_sites_are_never_entered_nor_left():
    lat = lattice.build("square", (10, 10))
    blocked = landscape.blocked_sites(lat, 0.2, rng(4))
    land = make(lat, crystal=CRYSTAL, amorphous=GLASS, blocked=blocked)
    rates = land.rates(400.0)
    assert np.all(rates[blocked] == 0)
    assert np.all(rates[blocked[lat.neighbours]] == 0)
    assert np.all(rates[~blocked[lat.neighbours] & ~blocked[:, None]] > 0)


def test_one_generator_makes_it_reproducible():
    lat = lattice.build("triangular", (6, 6))
    a, b = (make(lat, seed=5, crystal=CRYSTAL, amorphous=GLASS) for _ in range(2))
    assert np.array_equal(a.site_energy, b.site_energy)
    assert np.array_equal(a.saddle_energy, b.saddle_energy)
    c = make(lat, seed=6, crystal=CRYSTAL, amorphous=GLASS)
    assert not np.array_equal(a.saddle_energy, c.saddle_energy)


@pytest.mark.parametrize(
    ("call", "word"),
    [
        (lambda lat: landscape.microstructure(lat, "random", 1.5, rng()), "amorphous_fraction"),
        (lambda lat: landscape.microstructure(lat, "sponge", 0.5, rng()), "kind"),
        (lambda lat: landscape.microstructure(lat, "correlated", 0.5, rng()), "correlation_length"),
        (lambda lat: landscape.microstructure(lat, "grains", 0.5, rng()), "grain_diameter"),
        (lambda lat: landscape.blocked_sites(lat, 1.0, rng()), "blocked_fraction"),
        (lambda lat: make(lat, crystal=CRYSTAL, amorphous=GLASS).rates(-1.0), "temperature"),
        (lambda lat: make(lat, crystal=CRYSTAL, amorphous=GLASS, attempt_frequency=0), "attempt"),
    ],
)
def test_bad_arguments_name_the_argument(call, word):
    with pytest.raises(ValueError, match=word):
        call(lattice.build("square", (4, 4)))


def test_digest_identifies_the_realization():
    """Equal digests exactly for equal realizations: the same generator seed gives the same
    digest, another seed, one changed energy (by one ulp), a changed mask or ν another."""
    lat = lattice.build("cubic", (4, 4, 4), 2.0)
    blocked = landscape.blocked_sites(lat, 0.1, rng(3))
    a = make(lat, seed=5, crystal=CRYSTAL, amorphous=GLASS, blocked=blocked)
    b = make(lat, seed=5, crystal=CRYSTAL, amorphous=GLASS, blocked=blocked)
    digest = a.digest()
    assert isinstance(digest, str) and len(digest) == 64 and int(digest, 16) >= 0
    assert b.digest() == digest and a.digest() == digest  # deterministic
    assert make(lat, seed=6, crystal=CRYSTAL, amorphous=GLASS, blocked=blocked).digest() != digest

    def changed(**fields):
        return landscape.Landscape(**{**a.__dict__, **fields}).digest()

    assert changed() == digest
    energy = a.site_energy.copy()
    energy[7] = np.nextafter(energy[7], np.inf)
    assert changed(site_energy=energy) != digest
    saddle = a.saddle_energy.copy()
    saddle[0] = np.nextafter(saddle[0], -np.inf)
    assert changed(saddle_energy=saddle) != digest
    assert changed(amorphous=~a.amorphous & ~a.blocked) != digest
    assert changed(blocked=np.zeros_like(a.blocked)) != digest
    assert changed(attempt_frequency=2e13) != digest
    other_lattice = lattice.build("cubic", (4, 4, 4), 2.5)
    assert changed(lattice=other_lattice) != digest


def test_digest_covers_the_pair_energies():
    """Without pair energies the digest is the landscape's alone (``digest()`` and
    ``digest(None)`` agree, so run directories written before interactions stay valid);
    with them it changes, with any pair energy (one ulp) and with the amorphous spread's
    draw."""
    lat = lattice.build("cubic", (4, 4, 4), 2.0)
    land = make(lat, seed=5, crystal=CRYSTAL, amorphous=GLASS)
    plain = land.digest()
    assert land.digest(None) == plain
    pair = landscape.pair_energies(lat, 0.05)
    with_pair = land.digest(pair)
    assert with_pair != plain and land.digest(pair.copy()) == with_pair
    nudged = pair.copy()
    nudged[3] = np.nextafter(nudged[3], np.inf)
    assert land.digest(nudged) != with_pair
    spreads = [
        landscape.pair_energies(
            lat, 0.05, amorphous=land.amorphous, amorphous_sigma=0.02, rng=rng(seed)
        )
        for seed in (1, 1, 2)
    ]
    digests = [land.digest(p) for p in spreads]
    assert digests[0] == digests[1] != digests[2] and with_pair not in digests


def test_activation_range_by_hand():
    """Ring of 4 sites (bonds 0-1, 1-2, 2-3, 3-0), site 3 blocked: the free bonds are 0-1 and
    1-2 with barrier tops B = max(S, ε_i, ε_j) = max(0.3, 0.0, 0.1) = 0.3 and
    max(0.2, 0.1, 0.25) = 0.25; free ε in {0.0, 0.1, 0.25}. Range = [min B − max ε,
    max B − min ε] = [0.25 − 0.25, 0.3 − 0.0] = [0.0, 0.3]; the blocked site's energy (−1)
    and its bonds' saddles (5) do not count."""
    lat = lattice.build("chain", (4,), 1.0)
    ends = [tuple(sorted(e)) for e in lat.bond_ends.tolist()]
    saddles = {(0, 1): 0.3, (1, 2): 0.2, (2, 3): 5.0, (0, 3): 5.0}
    land = landscape.Landscape(
        lat,
        blocked=np.array([False, False, False, True]),
        amorphous=np.zeros(4, dtype=bool),
        site_energy=np.array([0.0, 0.1, 0.25, -1.0]),
        saddle_energy=np.array([saddles[e] for e in ends]),
        attempt_frequency=1e13,
    )
    lower, upper = land.activation_range()
    assert lower == pytest.approx(0.0, abs=1e-15) and upper == pytest.approx(0.3, abs=1e-15)
    assert type(lower) is float and type(upper) is float
    # no bond between two free sites: no range
    lonely = landscape.Landscape(
        **{**land.__dict__, "blocked": np.array([False, True, False, True])}
    )
    assert all(np.isnan(lonely.activation_range()))


def test_arrhenius_energy_of_the_exact_d_lies_in_the_activation_range():
    """A theorem (kmc.landscape.Landscape.activation_range): the dilute-limit D = a² G / Z,
    G the network conductance with bond conductances ν e^(−B/kT), homogeneous of degree 1
    and monotone in them, so −d ln G/d(1/kT) is a positive-weight average of the B; −d ln Z /
    d(1/kT) a Boltzmann average of ε. The least-squares Arrhenius slope of the exact D over
    300–700 K must therefore lie in [min B − max ε, max B − min ε]. A strongly disordered
    landscape (σ_ε = 0.1 eV, saddles spread over 0.2–0.6 eV) makes the range informative."""
    from kmc import analysis, network

    lat = lattice.build("cubic", (6, 6, 6), 2.0)
    glass = landscape.Phase(
        Distribution.parse({"dist": "normal", "mean": 0.0, "sigma": 0.1}),
        Distribution.parse({"dist": "uniform", "low": 0.2, "high": 0.6}),
    )
    blocked = landscape.blocked_sites(lat, 0.1, rng(8))
    land = make(lat, fraction=0.7, seed=9, crystal=CRYSTAL, amorphous=glass, blocked=blocked)
    lower, upper = land.activation_range()
    temperatures = np.array([300.0, 400.0, 500.0, 600.0, 700.0])
    values = [network.diffusion_coefficient(land, t) for t in temperatures]
    ea, _ = analysis.arrhenius(temperatures, values)
    assert lower < ea < upper, (lower, ea, upper)
    assert upper - lower < 2.0  # the bounds are finite and not vacuous
