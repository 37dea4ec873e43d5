"""Disordered energy landscapes: phases, site energies, per-bond saddles and hop rates.

Every site is crystalline or amorphous (or blocked). Site energies are drawn per site and
saddle energies per *undirected* bond, so the rate of a hop i→j,

    Γ_ij = ν exp(−(max(S_ij, ε_i, ε_j) − ε_i) / kT),

obeys Γ_ij / Γ_ji = exp(−(ε_j − ε_i)/kT): detailed balance holds by construction (docs/physics.md).
All randomness comes from the numpy ``Generator`` the caller passes in.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from kmc.distributions import Distribution
from kmc.lattice import KINDS, Lattice
from kmc.units import BOLTZMANN_EV, VOLT_PER_CM_TO_EV_PER_ANGSTROM

MICROSTRUCTURES = ("random", "correlated", "grains")


#: An energy setting: one distribution for every site or hop, or one per site type / hop
#: type label of the lattice (:attr:`kmc.lattice.Lattice.site_type_labels`,
#: :attr:`~kmc.lattice.Lattice.hop_type_labels`).
PerType = Distribution | dict[str, Distribution]


@dataclass(frozen=True)
class Phase:
    """Energy settings of one phase (eV).

    ``saddle_energy`` may be a tuple with one distribution per lattice axis (crystal only): a
    bond then gets Σ_α cos²θ_α · S_α, with θ_α the angle between the hop and axis α, so a
    hop along axis α gets exactly S_α on the cubic lattice. Either energy may be a dict keyed
    by site-type (hop-type) label, one distribution per type (crystal only): the per-type
    energies of a real structure, e.g. from NEB calculations.
    """

    site_energy: PerType
    saddle_energy: PerType | tuple[Distribution, ...]


def blocked_sites(lattice: Lattice, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of exactly round(fraction · n_sites) randomly chosen blocked sites."""
    if not 0 <= fraction < 1:
        raise ValueError(f"blocked_fraction must be in [0, 1), not {fraction}")
    mask = np.zeros(lattice.n_sites, dtype=bool)
    mask[rng.permutation(lattice.n_sites)[: round(fraction * lattice.n_sites)]] = True
    return mask


def microstructure(
    lattice: Lattice,
    kind: str,
    amorphous_fraction: float,
    rng: np.random.Generator,
    *,
    blocked: np.ndarray | None = None,
    correlation_length: float | None = None,
    grain_diameter: float | None = None,
) -> np.ndarray:
    """Boolean mask of amorphous sites; exactly round(φ · n_free) of the free sites.

    kind
        ``random``: independent sites. ``correlated``: a Gaussian random field with a
        Gaussian covariance of width ``correlation_length`` (Å), thresholded at its
        φ-quantile. ``grains``: crystalline spheres of ``grain_diameter`` (Å) at random
        centres in an amorphous matrix; the crystalline sites are the ones closest to a
        centre, so the fraction is exact and overlapping grains merge.
    """
    if not 0 <= amorphous_fraction <= 1:
        raise ValueError(f"amorphous_fraction must be in [0, 1], not {amorphous_fraction}")
    free = np.flatnonzero(~blocked) if blocked is not None else np.arange(lattice.n_sites)
    n_amorphous = round(amorphous_fraction * len(free))
    if kind == "random":
        score = rng.random(len(free))
    elif kind == "correlated":
        if correlation_length is None or not correlation_length > 0:
            raise ValueError("correlation_length must be > 0 for a correlated microstructure")
        score = _gaussian_field(lattice, correlation_length, rng)[free]
    elif kind == "grains":
        if grain_diameter is None or not grain_diameter > 0:
            raise ValueError("grain_diameter must be > 0 for a grains microstructure")
        score = -_distance_to_grain_centre(lattice, free, amorphous_fraction, grain_diameter, rng)
    else:
        raise ValueError(f"microstructure kind must be one of {', '.join(MICROSTRUCTURES)}")
    # Sites with the highest score become amorphous: this hits the fraction exactly.
    amorphous = np.zeros(lattice.n_sites, dtype=bool)
    amorphous[free[np.argsort(score, kind="stable")[len(free) - n_amorphous :]]] = True
    return amorphous


def _gaussian_field(lattice: Lattice, length: float, rng: np.random.Generator) -> np.ndarray:
    """White noise on a fine periodic grid (spacing about half the shortest hop along each
    box vector), smoothed by FFT with a Gaussian kernel of width ``length``, read at the
    sites (nearest grid point). The kernel is exp(−|k|² ℓ²/2) with k the Cartesian wave
    vector of each grid mode, so the correlation is isotropic in space on a triclinic box
    too."""
    vectors = lattice.box_vectors
    edges = np.linalg.norm(vectors, axis=1)
    shape = tuple(int(n) for n in np.maximum(np.ceil(2 * edges / lattice.hop_distance), 4))
    noise = rng.standard_normal(shape)
    if lattice.orthogonal:  # per axis (as before triclinic boxes: same landscapes)
        box = np.diag(vectors)
        kernel = np.ones(1)
        for axis, n in enumerate(shape):
            k = 2 * np.pi * np.fft.fftfreq(n, d=box[axis] / n)
            kernel = np.multiply.outer(kernel, np.exp(-0.5 * (k * length) ** 2))
        field = np.fft.ifftn(np.fft.fftn(noise) * kernel.reshape(shape)).real
        index = np.floor(lattice.positions / box * shape).astype(int) % shape
        return field[tuple(index.T)]
    modes = np.meshgrid(*(np.fft.fftfreq(n, d=1.0 / n) for n in shape), indexing="ij")
    # k = 2π · B m with B the reciprocal basis (columns of inv(vectors)): m_a / L_a if orthogonal
    k = 2 * np.pi * np.tensordot(np.linalg.inv(vectors), np.stack(modes), axes=(1, 0))
    kernel = np.exp(-0.5 * np.sum(k**2, axis=0) * length**2)
    field = np.fft.ifftn(np.fft.fftn(noise) * kernel).real
    index = np.floor(lattice.fractional(lattice.positions) * shape).astype(int) % shape
    return field[tuple(index.T)]


def _distance_to_grain_centre(
    lattice: Lattice, free: np.ndarray, amorphous_fraction: float, diameter: float, rng
) -> np.ndarray:
    dim = lattice.dim
    vectors = lattice.box_vectors
    box_volume = abs(np.linalg.det(vectors))
    grain_volume = {1: diameter, 2: np.pi * diameter**2 / 4, 3: np.pi * diameter**3 / 6}[dim]
    n_grains = max(1, round((1 - amorphous_fraction) * box_volume / grain_volume))
    if lattice.orthogonal:
        box = np.diag(vectors)
        centres = rng.random((n_grains, dim)) * box
        tree = cKDTree(centres, boxsize=box)
        distance, _ = tree.query(np.mod(lattice.positions[free], box))
        return distance
    # a triclinic box: the periodic images of the centres in the 3^d neighbouring boxes
    # stand in for the periodic distance (exact while a grain is smaller than the box)
    centres = rng.random((n_grains, dim)) @ vectors
    shifts = np.array(list(itertools.product((-1, 0, 1), repeat=dim))) @ vectors
    tree = cKDTree((centres[None] + shifts[:, None]).reshape(-1, dim))
    distance, _ = tree.query(lattice.positions[free])
    return distance


@dataclass(frozen=True, eq=False)
class Landscape:
    """One realization: the lattice, blocked and amorphous masks, energies (eV) and ν (Hz)."""

    lattice: Lattice
    blocked: np.ndarray
    amorphous: np.ndarray
    site_energy: np.ndarray
    saddle_energy: np.ndarray
    attempt_frequency: float

    @property
    def free_sites(self) -> np.ndarray:
        return np.flatnonzero(~self.blocked)

    def rates(
        self,
        temperature: float,
        sites: slice = slice(None),
        *,
        incoming: bool = False,
        field: np.ndarray | None = None,
    ) -> np.ndarray:
        """Hop rates in Hz by the max() rule, one row per site of ``sites`` (all by default)
        and one column per hop direction; zero into and out of blocked sites.

        Row i holds the rates of the hops i → j out of it, or with ``incoming`` those of the
        reverse hops j → i into it (what drives a vacancy on i). ``field`` (V/cm, one
        component per axis) multiplies the rate of a hop of vector d by exp(q E·d / 2kT),
        q = +1 e: symmetric in the hop and its reverse, so with E = 0 nothing changes and
        Γ_ij Γ_jk Γ_ki / (Γ_ik Γ_kj Γ_ji) = 1 around every loop that does not wind."""
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0 K, not {temperature}")
        lat = self.lattice
        neighbours = lat.neighbours[sites]
        bonds = lat.bond_index[sites]
        here = self.site_energy[sites][:, None]
        there = self.site_energy[neighbours]
        barrier_top = np.maximum(np.maximum(self.saddle_energy[bonds], there), here)
        start = there if incoming else here
        rates = self.attempt_frequency * np.exp(
            -(barrier_top - start) / (BOLTZMANN_EV * temperature)
        )
        rates[self.blocked[sites]] = 0.0
        rates[self.blocked[neighbours]] = 0.0
        if lat.padded:  # padding directions (index -1 above) never hop
            rates[bonds < 0] = 0.0
        if field is not None and np.any(field):
            energy = VOLT_PER_CM_TO_EV_PER_ANGSTROM * (lat.hop_vectors @ np.asarray(field, float))
            # (n_basis, z) work q E·d of each hop; a hop into i runs against its vector
            sign = -1.0 if incoming else 1.0
            basis = np.arange(lat.n_sites)[sites] % lat.n_basis
            rates *= np.exp(sign * energy[basis] / (2 * BOLTZMANN_EV * temperature))
        return rates

    def digest(self, pair_energy: np.ndarray | None = None) -> str:
        """SHA-256 (hex) of the realization: lattice shape, masks, energies and ν, and the
        ions' pair energies per bond (:func:`pair_energies`) if given (None, no interactions:
        the digest is the landscape's alone, as before interactions existed). Two tasks ran
        on the same landscape exactly when their digests agree."""
        h = hashlib.sha256()
        h.update(self.lattice.kind.encode())
        extra = ()
        if self.lattice.kind not in KINDS:  # a structure: its cell and sites shape it too
            extra = (self.lattice.cell_vectors, self.lattice.basis)
        for array in (
            np.asarray(self.lattice.cells, dtype=np.int64),
            *(np.ascontiguousarray(a, dtype=np.float64) for a in extra),
            self.blocked.astype(np.uint8),
            self.amorphous.astype(np.uint8),
            np.ascontiguousarray(self.site_energy, dtype=np.float64),
            np.ascontiguousarray(self.saddle_energy, dtype=np.float64),
            np.array([self.attempt_frequency, self.lattice.hop_distance]),
        ):
            h.update(array.tobytes())
        if pair_energy is not None:
            h.update(b"pair_energy")
            h.update(np.ascontiguousarray(pair_energy, dtype=np.float64).tobytes())
        return h.hexdigest()

    @property
    def uniform_rates(self) -> bool:
        """True if every hop has the same rate and no site is blocked: then every hop of
        the lattice gas is as likely as its reverse in every configuration, and the summed
        ion displacement has uncorrelated increments (its MSD is linear from t = 0)."""
        if self.blocked.any() or np.ptp(self.site_energy) != 0:
            return False
        ends = self.lattice.bond_ends
        top = np.maximum(self.saddle_energy, self.site_energy[ends].max(axis=1))
        return bool(np.ptp(top) == 0)

    def activation_range(self) -> tuple[float, float]:
        """The range (eV) any Arrhenius activation energy of the dilute-limit D must lie in:
        [min B − max ε, max B − min ε] over the bonds between free sites, with
        B_ij = max(S_ij, ε_i, ε_j) the barrier top and ε over free sites.

        Why: D = a² G / ⟨e^(−ε/kT)⟩ (the resistor network), and d ln/d(−1/kT) of the
        conductance G is a positive average of the B of its bonds, that of ⟨e^(−ε/kT)⟩ a
        Boltzmann average of ε; a least-squares slope over several temperatures is again a
        positive average of those local slopes. (nan, nan) if no bond joins two free sites.
        """
        ends = self.lattice.bond_ends
        free_bonds = ~self.blocked[ends].any(axis=1)
        if not free_bonds.any():
            return math.nan, math.nan
        ends = ends[free_bonds]
        top = np.maximum(
            self.saddle_energy[free_bonds],
            np.maximum(self.site_energy[ends[:, 0]], self.site_energy[ends[:, 1]]),
        )
        free_energy = self.site_energy[~self.blocked]
        return float(top.min() - free_energy.max()), float(top.max() - free_energy.min())

    def boltzmann_weights(self, temperature: float) -> np.ndarray:
        """exp(−(ε_i − min ε)/kT) on free sites, 0 on blocked ones (unnormalized)."""
        energy = np.where(self.blocked, np.inf, self.site_energy)
        return np.exp(-(energy - energy[~self.blocked].min()) / (BOLTZMANN_EV * temperature))


def generate(
    lattice: Lattice,
    *,
    crystal: Phase,
    amorphous: Phase,
    amorphous_mask: np.ndarray,
    rng: np.random.Generator,
    interface_saddle: Distribution | None = None,
    blocked: np.ndarray | None = None,
    attempt_frequency: float = 1e13,
) -> Landscape:
    """Draw site energies and bond saddles for the given phases.

    Crystal–crystal bonds take the crystal saddle (per axis if a tuple is given),
    amorphous–amorphous bonds the amorphous one, crystal–amorphous bonds the interface saddle
    (default: the amorphous saddle).
    """
    n = lattice.n_sites
    blocked = np.zeros(n, dtype=bool) if blocked is None else np.asarray(blocked, dtype=bool)
    amorphous_mask = np.asarray(amorphous_mask, dtype=bool)
    if blocked.shape != (n,) or amorphous_mask.shape != (n,):
        raise ValueError(f"blocked and amorphous_mask must have shape ({n},)")
    if not attempt_frequency > 0:
        raise ValueError(f"attempt_frequency must be > 0 Hz, not {attempt_frequency}")
    if isinstance(amorphous.saddle_energy, tuple | dict) or isinstance(amorphous.site_energy, dict):
        raise ValueError("only the crystal energies can be given per axis or per type")

    site_energy = np.empty(n)
    crystal_sites = np.flatnonzero(~amorphous_mask)
    site_energy[crystal_sites] = _per_type(
        crystal.site_energy, lattice.site_type_of[crystal_sites], lattice.site_type_labels, rng
    )
    site_energy[amorphous_mask] = amorphous.site_energy.sample(rng, amorphous_mask.sum())

    ends = lattice.bond_ends
    n_amorphous_ends = amorphous_mask[ends].sum(axis=1)
    saddle = np.empty(lattice.n_bonds)
    crystal_bonds = n_amorphous_ends == 0
    saddle[crystal_bonds] = _crystal_saddles(lattice, crystal.saddle_energy, crystal_bonds, rng)
    glass_bonds = n_amorphous_ends == 2
    saddle[glass_bonds] = amorphous.saddle_energy.sample(rng, glass_bonds.sum())
    interface_bonds = n_amorphous_ends == 1
    interface = amorphous.saddle_energy if interface_saddle is None else interface_saddle
    saddle[interface_bonds] = interface.sample(rng, interface_bonds.sum())
    return Landscape(
        lattice, blocked, amorphous_mask, site_energy, saddle, float(attempt_frequency)
    )


def _per_type(setting: PerType, types: np.ndarray, labels: tuple[str, ...], rng) -> np.ndarray:
    """Energies of items of the given types: one draw per item from its type's distribution
    (types in label order), or from the one distribution."""
    if isinstance(setting, Distribution):
        return setting.sample(rng, len(types))
    missing = [label for label in labels if label not in setting]
    unknown = [label for label in setting if label not in labels]
    if missing or unknown:
        raise ValueError(
            f"per-type energies need exactly the labels {', '.join(labels)}"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unknown {', '.join(unknown)}" if unknown else "")
        )
    out = np.empty(len(types))
    for t, label in enumerate(labels):
        chosen = types == t
        out[chosen] = setting[label].sample(rng, int(chosen.sum()))
    return out


def _crystal_saddles(lattice, saddle, selected, rng) -> np.ndarray:
    if isinstance(saddle, Distribution | dict):
        return _per_type(saddle, lattice.bond_types[selected], lattice.hop_type_labels, rng)
    if len(saddle) != lattice.dim:
        raise ValueError(f"per-axis saddle_energy needs {lattice.dim} values, not {len(saddle)}")
    vectors = lattice.bond_vectors[selected]
    cos2 = vectors**2 / np.sum(vectors**2, axis=1, keepdims=True)
    per_axis = np.stack([d.sample(rng, len(vectors)) for d in saddle], axis=1)
    return np.sum(cos2 * per_axis, axis=1)


def pair_energies(
    lattice: Lattice,
    nearest_neighbour: float = 0.0,
    *,
    hop_type: dict[str, float] | None = None,
    amorphous: np.ndarray | None = None,
    amorphous_sigma: float = 0.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """(n_bonds,) pair energy V (eV, > 0 repulsive) of two ions on the ends of each bond: the
    first shell is the hop neighbours. ``nearest_neighbour`` on every bond, or per hop type
    (``hop_type``: label → eV, unlisted types keep nearest_neighbour); bonds with an end in
    the ``amorphous`` phase get an independent Gaussian of spread ``amorphous_sigma`` added
    (drawn from ``rng``, only then). One value per undirected bond: symmetric by
    construction."""
    energy = np.full(lattice.n_bonds, float(nearest_neighbour))
    if hop_type:
        types = lattice.bond_types
        for label, value in hop_type.items():
            energy[types == lattice.hop_type_labels.index(label)] = float(value)
    if amorphous_sigma > 0:
        if amorphous is None or rng is None:
            raise ValueError("amorphous_sigma needs the amorphous mask and a generator")
        touched = np.asarray(amorphous, dtype=bool)[lattice.bond_ends].any(axis=1)
        energy[touched] += rng.normal(0.0, amorphous_sigma, int(touched.sum()))
    return energy
