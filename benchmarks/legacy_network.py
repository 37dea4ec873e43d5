"""Exact dilute-limit diffusion of one ion on one landscape, by a sparse linear solve.

Formula
-------
One ion hopping on a landscape of this model (docs/physics.md) is a reversible Markov jump process
on the periodic lattice. Its rates obey detailed balance with the Boltzmann distribution
π_i = w_i / Σ_k w_k, w_i = exp(−ε_i/kT) (w_i = 0 on blocked sites), and the equilibrium
flux across a bond b = {i, j} is the same in both directions,

    π_i Γ_ij = π_j Γ_ji = g_b / Σ_k w_k,   g_b = ν exp(−max(S_b, ε_i, ε_j)/kT),

with g_b = 0 for a bond touching a blocked site. The g_b are the conductances of a periodic
resistor network. Homogenization of a reversible random walk on a periodic graph (the
corrector, or Kipnis–Varadhan, argument) gives the long-time diffusion tensor

    D_ef = Σ_b g_b (d_b·e + u^e_j − u^e_i)(d_b·f + u^f_j − u^f_i) / Σ_i w_i,

summed over undirected bonds b = (i → j) with hop vector d_b (the ½ of the MSD definition
cancels the two directions of each bond). The corrector u^e is the periodic potential that
minimizes the dissipation Σ_b g_b (d_b·e + u_j − u_i)², i.e. solves

    L u^e = −Bᵀ G (X e),   L = Bᵀ G B,

with B the (bond × site) incidence matrix ((B u)_b = u_j − u_i), G = diag(g_b) and X the
(bond × d) matrix of hop vectors. D_ee is the minimum of a quadratic form, so an error δu in
the corrector changes it only at second order (by ‖δu‖²_L / Σ w). The scalar coefficient
that a tracer MSD measures is D = tr(D)/d. Checks (docs/physics.md, "Exact results"): a free walker
has u = 0 and D = z Γ a²/(2d); random traps (common saddle; u = 0 wherever the hop vectors
of a site sum to zero) give D = a² (z/2d) / ⟨1/Γ_i⟩; a 1D ring gives the series resistance
D = a² / (⟨1/g_b⟩ ⟨w_i⟩), the harmonic mean a²/⟨1/Γ_b⟩ for equal site energies; a blocked
site cuts a ring and D = 0.

Numerics
--------
* Energies are measured from the lowest free-site energy ε_min before exponentiating. This
  multiplies every g_b and every w_i by the same exp(ε_min/kT), which cancels in D, and keeps
  w_i ≤ 1 = max w and g_b ≤ 1 (ν is applied at the end): no overflow, and the dominant
  weights never underflow.
* L is singular on every connected component of the network of bonds with g_b > 0 (isolated
  clusters, sites cut off by blocked sites, blocked sites themselves). One node per
  component (``scipy.sparse.csgraph.connected_components``) is pinned to u = 0 and the rest
  is solved; the reduced matrix is symmetric positive definite and the right-hand side sums
  to zero on each component, so this is the exact corrector. A site without a conductive
  bond keeps u = 0 and adds only its weight to Σ w (a trapped ion does not diffuse).
* The reduced system is scaled symmetrically by its diagonal, A = S L S with
  S = diag(L_ii)^(−1/2) (unit diagonal), against the many orders of magnitude the
  conductances span.
* Beyond about 1/√ε_machine in conductance contrast the scaling is not enough: at a site
  joined by bonds of 1 and 1e-20 the weak bonds are lost to rounding, yet across a cluster
  of strong bonds that does not percolate it is exactly the weak bonds that carry the
  current (left alone, such landscapes gave D wrong by many orders of magnitude). So when
  the active conductances span more than :data:`CONTRACTION_RATIO` (= τ), a critical-path
  reduction is made, separately for each axis a:

  - g_c^a, the percolation conductance along a, is the conductance of the bond whose
    addition (bonds in decreasing order; union–find that carries periodic image offsets)
    first closes a loop winding around the box along a. If none does, nothing crosses the
    box along a and D_aa = D_ab = 0 exactly.
  - Bonds with g_b > τ g_c^a form clusters that do not wind along a; they become perfect
    conductors: each cluster is one node with potential u_k = U − x_k·e_a (x unwrapped
    within the cluster), its bonds carry no drop, and every other bond keeps its
    conductance with its hop vector corrected by the offsets of its two ends.
  - Bonds with g_b < g_c^a / τ are open circuits for axis a.

  Both are the τ → ∞ limits of the bonds they touch; the relative error in D is of order
  1/τ per contracted or cut bond on a current path (a contracted link in series drops its
  share of the resistance, < 1/τ), and the remaining contrast (≤ τ²) is within reach of
  double precision. Measured: on 3D crystal/amorphous mixtures with contrasts up to 1e40
  the error is ≈ 1e-9 at τ = 1e8 (≈ 1e-7 at 1e6, ≈ 1e-4 at 1e4); against 60–80-digit
  dense solves of landscapes with rates spanning 1e28 (saddles 0.3–2 eV at 300 K, seven
  lattice kinds), diagonal entries are within 3e-8, while an off-diagonal entry of a very
  anisotropic tensor can be off by up to 4e-6 of √(D_aa D_bb) (a bond cut for axis a
  still counts in the cross term). Without the reduction the same landscapes came out
  wrong by up to nine orders of magnitude. Below the ratio τ nothing is reduced and the
  solve is exact to rounding.
* Solver: SuperLU (``scipy.sparse.linalg.splu``, symmetric mode, minimum-degree ordering on
  A + Aᵀ, no pivoting on the SPD matrix), factorized once for all right-hand sides, plus
  :data:`REFINEMENT_STEPS` steps of iterative refinement. Its fill-in on periodic 3D
  lattices is severe (measured: 32³ = 32 768 sites took 25–30 s and 0.5 GB), so in 3D
  it is used only up to :data:`DIRECT_MAX_UNKNOWNS` unknowns; larger systems go to scipy's
  conjugate gradients on the scaled system (the diagonal scaling is its Jacobi
  preconditioner), down to a relative residual of :data:`CG_RTOL`, or at most
  :data:`CG_MAX_ITERATIONS` iterations. ``"auto"`` tries the other solver when the first
  fails (the direct one only up to :data:`DIRECT_FALLBACK_MAX_UNKNOWNS`).
* Whatever the solver, the relative residual ‖A y − S b‖ / ‖S b‖ of each direction is
  checked after the solve; above :data:`RESIDUAL_TOL` a ``RuntimeError`` is raised.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import cg, splu

from kmc.landscape import Landscape
from kmc.units import BOLTZMANN_EV

__all__ = [
    "CG_MAX_ITERATIONS",
    "CG_RTOL",
    "CONTRACTION_RATIO",
    "DIRECT_FALLBACK_MAX_UNKNOWNS",
    "DIRECT_MAX_UNKNOWNS",
    "RESIDUAL_TOL",
    "diffusion_coefficient",
    "diffusion_tensor",
]

#: Largest reduced system (unknowns) solved by the direct factorization, per lattice
#: dimension; above it the conjugate-gradient solver is used ("auto").
DIRECT_MAX_UNKNOWNS = {1: 10**7, 2: 200_000, 3: 12_000}
#: Largest system the direct solver takes on when CG has failed ("auto").
DIRECT_FALLBACK_MAX_UNKNOWNS = {1: 10**7, 2: 10**6, 3: 40_000}
#: Relative residual of the scaled system above which a solve is refused.
RESIDUAL_TOL = 1e-8
#: Relative residual the conjugate-gradient solver iterates down to.
CG_RTOL = 1e-12
#: Most conjugate-gradient iterations per solve.
CG_MAX_ITERATIONS = 50_000
#: Iterative-refinement steps after a direct solve (each reuses the factorization).
REFINEMENT_STEPS = 2
#: Bonds more than this factor above the percolation conductance are perfect conductors.
CONTRACTION_RATIO = 1e8

Solver = Literal["auto", "direct", "cg"]
_SOLVERS = ("auto", "direct", "cg")


def diffusion_tensor(
    landscape: Landscape, temperature: float, *, solver: Solver = "auto"
) -> np.ndarray:
    """The exact long-time diffusion tensor (d, d), in Å²/s, of one ion on ``landscape``.

    This is what independent walkers (kMC without exclusion) measure on the same landscape,
    without noise; see the module docstring for the formula and the numerics. ``solver``
    picks the linear solver: ``"direct"`` (SuperLU), ``"cg"`` (conjugate gradients) or
    ``"auto"`` (direct up to :data:`DIRECT_MAX_UNKNOWNS` unknowns, else CG, each falling
    back on the other when it fails).

    Raises ``ValueError`` for a non-positive temperature, an unknown solver, a landscape whose
    arrays do not match its lattice or hold non-finite energies, or one with every site
    blocked; ``RuntimeError`` if the linear solve does not reach a relative residual of
    :data:`RESIDUAL_TOL`.
    """
    temperature = _check(landscape, temperature)
    if solver not in _SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(_SOLVERS)}, not {solver!r}")
    lat = landscape.lattice
    dim = lat.dim
    conductance, weight = _conductances_and_weights(landscape, temperature)
    i, j = lat.bond_ends[:, 0], lat.bond_ends[:, 1]
    vectors = np.asarray(lat.bond_vectors, dtype=np.float64)
    active = conductance > 0
    if not active.any():
        return np.zeros((dim, dim))

    flux = np.zeros((lat.n_bonds, dim))  # d_b·e + u^e_j − u^e_i, per axis e
    g_active = conductance[active]
    if g_active.max() <= CONTRACTION_RATIO * g_active.min():
        # one network, all axes at once: exact to rounding
        bonds = np.flatnonzero(active)
        potential = _corrector(
            lat.n_sites, i[bonds], j[bonds], conductance[bonds], vectors[bonds], solver, dim
        )
        flux[bonds] = vectors[bonds] + potential[j[bonds]] - potential[i[bonds]]
    else:
        images = lat.bond_images
        # The contraction works along the box vectors, as the winding of a cluster does; on
        # a triclinic box it is done in fractional coordinates (period 1) and the tensor of
        # fractional displacements is turned back into Cartesian form at the end.
        if lat.orthogonal:
            coordinates, periods = lat.positions, lat.box
        else:
            vectors = lat.fractional(vectors)
            coordinates, periods = lat.fractional(lat.positions), np.ones(dim)
        order = np.flatnonzero(active)[np.argsort(-g_active, kind="stable")]
        g_c = _percolation_conductances(lat.n_sites, i, j, images, order, conductance)
        for axis in range(dim):
            if g_c[axis] == 0.0:  # nothing winds along this axis: displacement bounded
                continue
            strong = conductance > CONTRACTION_RATIO * g_c[axis]
            cluster, offset = _strong_clusters(
                coordinates[:, axis], periods[axis], i, j, images[:, axis], strong, axis
            )
            # hop vector component between cluster frames
            component = vectors[:, axis] + offset[i] - offset[j]
            ci, cj = cluster[i], cluster[j]
            # a weak bond inside a cluster is a self-loop of the contracted network: its
            # component is a whole number of box lengths (0 unless it closes a winding loop)
            inside = ci == cj
            period = periods[axis]
            component[inside] = np.rint(component[inside] / period) * period
            # bonds far below g_c are open circuits for this axis (see the module notes)
            bonds = np.flatnonzero((conductance >= g_c[axis] / CONTRACTION_RATIO) & ~strong)
            between = bonds[~inside[bonds]]
            potential = _corrector(
                int(cluster.max()) + 1,
                ci[between],
                cj[between],
                conductance[between],
                component[between, None],
                solver,
                dim,
            )[:, 0]
            flux[bonds, axis] = component[bonds] + potential[cj[bonds]] - potential[ci[bonds]]
    # Σ_b g_b F^e_b F^f_b / Σ w (einsum, not a BLAS product: see the solver notes)
    tensor = np.einsum("be,bf->ef", flux * conductance[:, None], flux) / weight.sum()
    if not lat.orthogonal and g_active.max() > CONTRACTION_RATIO * g_active.min():
        tensor = lat.box_vectors.T @ tensor @ lat.box_vectors  # x = s · box vectors
    return 0.5 * (tensor + tensor.T) * landscape.attempt_frequency


def diffusion_coefficient(
    landscape: Landscape, temperature: float, *, solver: Solver = "auto"
) -> float:
    """The exact dilute-limit diffusion coefficient tr(D)/d in Å²/s (see
    :func:`diffusion_tensor`)."""
    tensor = diffusion_tensor(landscape, temperature, solver=solver)
    return float(np.trace(tensor) / tensor.shape[0])


# --------------------------------------------------------------------------- internals


def _check(landscape: Landscape, temperature: float) -> float:
    if not isinstance(landscape, Landscape):
        raise ValueError(
            f"landscape must be a kmc.landscape.Landscape, not {type(landscape).__name__}"
        )
    try:
        temperature = float(temperature)
    except (TypeError, ValueError):
        raise ValueError(f"temperature must be a number in K, not {temperature!r}") from None
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be > 0 K and finite, not {temperature}")
    lat = landscape.lattice
    for name, shape in (
        ("site_energy", (lat.n_sites,)),
        ("blocked", (lat.n_sites,)),
        ("saddle_energy", (lat.n_bonds,)),
    ):
        if np.shape(getattr(landscape, name)) != shape:
            raise ValueError(
                f"landscape.{name} must have shape {shape} for its lattice, "
                f"not {np.shape(getattr(landscape, name))}"
            )
    blocked = np.asarray(landscape.blocked, dtype=bool)
    if blocked.all():
        raise ValueError("every site of the landscape is blocked: there is no ion to move")
    if not np.all(np.isfinite(np.asarray(landscape.site_energy, dtype=float)[~blocked])):
        raise ValueError("landscape.site_energy must be finite on free sites")
    if not np.all(np.isfinite(np.asarray(landscape.saddle_energy, dtype=float))):
        raise ValueError("landscape.saddle_energy must be finite")
    nu = landscape.attempt_frequency
    if not (np.isfinite(nu) and nu > 0):
        raise ValueError(f"landscape.attempt_frequency must be > 0 Hz, not {nu}")
    return temperature


def _conductances_and_weights(
    landscape: Landscape, temperature: float
) -> tuple[np.ndarray, np.ndarray]:
    """Bond conductances g_b / ν and site weights w_i, both times exp(ε_min/kT)."""
    kT = BOLTZMANN_EV * temperature
    lat = landscape.lattice
    free = ~np.asarray(landscape.blocked, dtype=bool)
    energy = np.where(free, np.asarray(landscape.site_energy, dtype=np.float64), -np.inf)
    lowest = energy[free].min()
    i, j = lat.bond_ends[:, 0], lat.bond_ends[:, 1]
    top = np.maximum(np.asarray(landscape.saddle_energy, dtype=np.float64), energy[i])
    top = np.maximum(top, energy[j])
    open_bond = free[i] & free[j]
    conductance = np.zeros(lat.n_bonds)
    conductance[open_bond] = np.exp(-(top[open_bond] - lowest) / kT)
    weight = np.zeros(lat.n_sites)
    weight[free] = np.exp(-(energy[free] - lowest) / kT)
    return conductance, weight


_CODE_BITS = 32


def _encode(images: np.ndarray) -> list[int]:
    """Integer image vectors (n, d) as python ints Σ_a n_a 2^(32 a): a linear map, so sums of
    codes are codes of sums, injective while every |n_a| < 2³¹."""
    code = np.zeros(len(images), dtype=object)
    for axis in range(images.shape[1]):
        code = code + images[:, axis].astype(object) * (1 << (_CODE_BITS * axis))
    return code.tolist()


def _decode(code: int, dim: int) -> np.ndarray:
    """The image vector (d,) of a code made by :func:`_encode`."""
    half, mask = 1 << (_CODE_BITS - 1), (1 << _CODE_BITS) - 1
    out = np.zeros(dim, dtype=np.int64)
    for axis in range(dim):
        value = ((code + half) & mask) - half
        out[axis] = value
        code = (code - value) >> _CODE_BITS
    return out


class _OffsetUnionFind:
    """Union–find whose nodes carry their periodic image relative to their root."""

    def __init__(self, n: int):
        self.parent = list(range(n))
        self.offset = [0] * n  # image of the node minus image of its parent (encoded)
        self.size = [1] * n

    def find(self, k: int) -> tuple[int, int]:
        parent, offset = self.parent, self.offset
        path = []
        while parent[k] != k:
            path.append(k)
            k = parent[k]
        total = 0
        for node in reversed(path):  # compress: point every node of the path at the root
            total += offset[node]
            offset[node] = total
            parent[node] = k
        return k, (offset[path[0]] if path else 0)

    def union(self, i: int, j: int, image: int) -> int:
        """Join i and j with the constraint image(j) − image(i) = image. Returns 0, or the
        (encoded) image mismatch of the loop this bond closes inside one cluster: nonzero
        when the loop winds around the periodic box."""
        ri, oi = self.find(i)
        rj, oj = self.find(j)
        if ri == rj:
            return oi + image - oj
        if self.size[ri] < self.size[rj]:
            ri, rj, oi, oj, image = rj, ri, oj, oi, -image
        self.parent[rj] = ri
        self.offset[rj] = oi + image - oj
        self.size[ri] += self.size[rj]
        return 0


def _percolation_conductances(n_sites, i, j, images, order, conductance) -> np.ndarray:
    """Per axis a, the conductance of the bond whose addition (in decreasing order) first
    closes a loop with a nonzero image along a, i.e. makes a cluster wind around the
    periodic box along a; 0.0 for an axis along which nothing winds."""
    dim = images.shape[1]
    g_c = np.zeros(dim)
    found = np.zeros(dim, dtype=bool)
    uf = _OffsetUnionFind(n_sites)
    codes = _encode(images[order])
    for b, a, c, code in zip(
        order.tolist(), i[order].tolist(), j[order].tolist(), codes, strict=True
    ):
        mismatch = uf.union(a, c, code)
        if mismatch:
            winds = _decode(mismatch, dim) != 0
            g_c[winds & ~found] = conductance[b]
            found |= winds
            if found.all():
                break
    return g_c


def _strong_clusters(x, period, i, j, images, strong, axis) -> tuple[np.ndarray, np.ndarray]:
    """Clusters of sites joined by strong bonds, labelled 0..m-1, and each site's unwrapped
    coordinate ``x`` along ``axis`` (its box period ``period``) relative to its cluster root.
    ``images`` holds each bond's periodic image along that axis; the strong bonds must not
    wind along it."""
    n = len(x)
    uf = _OffsetUnionFind(n)
    bonds = np.flatnonzero(strong)
    for a, c, image in zip(
        i[bonds].tolist(), j[bonds].tolist(), images[bonds].tolist(), strict=True
    ):
        if uf.union(a, c, image):  # cannot happen for g > g_c of this axis
            raise AssertionError(f"strong bonds wind around the box along axis {axis}")
    roots = np.arange(n)
    image = np.zeros(n, dtype=np.int64)
    for k in np.unique(np.concatenate([i[bonds], j[bonds]])).tolist():
        roots[k], image[k] = uf.find(k)
    offset = x + image * period - x[roots]
    _, cluster = np.unique(roots, return_inverse=True)
    return cluster, offset


def _corrector(
    n_nodes: int,
    i: np.ndarray,
    j: np.ndarray,
    conductance: np.ndarray,
    vectors: np.ndarray,
    solver: str,
    dim: int,
) -> np.ndarray:
    """(n_nodes, k) potentials for the k columns of ``vectors`` (hop vectors or one
    component of them): L u = −Bᵀ G X, one node pinned per connected component, solved by
    the solver(s) :func:`_solver_order` names for a lattice of dimension ``dim``."""
    columns = vectors.shape[1]
    potential = np.zeros((n_nodes, columns))
    if len(i) == 0:
        return potential
    rows = np.concatenate([i, j, i, j])
    cols = np.concatenate([i, j, j, i])
    values = np.concatenate([conductance, conductance, -conductance, -conductance])
    laplacian = sp.csr_matrix((values, (rows, cols)), shape=(n_nodes, n_nodes))
    current = conductance[:, None] * vectors  # g_b d_b per bond
    rhs = np.zeros((n_nodes, columns))
    for axis in range(columns):  # −Bᵀ G X: outflow at i minus inflow at j
        rhs[:, axis] = np.bincount(i, current[:, axis], n_nodes) - np.bincount(
            j, current[:, axis], n_nodes
        )

    adjacency = sp.csr_matrix((np.ones(len(i)), (i, j)), shape=(n_nodes, n_nodes))
    _, labels = connected_components(adjacency, directed=False)
    keep = np.ones(n_nodes, dtype=bool)
    keep[np.unique(labels, return_index=True)[1]] = False  # pin one node per component
    index = np.flatnonzero(keep)
    if len(index) == 0:
        return potential
    reduced = laplacian[index][:, index]
    scale = 1.0 / np.sqrt(reduced.diagonal())
    matrix = sp.csr_matrix(sp.diags(scale) @ reduced @ sp.diags(scale))
    b = rhs[index] * scale[:, None]
    norms = np.sqrt(np.sum(b * b, axis=0))
    todo = np.flatnonzero(norms > 0)
    y = np.zeros_like(b)
    if len(todo):
        failures = []
        for method in _solver_order(solver, dim, len(index)):
            try:
                y[:, todo] = (_solve_direct if method == "direct" else _solve_cg)(
                    matrix, b[:, todo]
                )
            except RuntimeError as exc:  # SuperLU: "factor is exactly singular"
                failures.append(f"{method}: {exc}")
                continue
            r = matrix @ y[:, todo] - b[:, todo]
            residual = np.sqrt(np.sum(r * r, axis=0)) / norms[todo]
            if np.all(residual < RESIDUAL_TOL):
                break
            failures.append(f"{method}: relative residual {residual.max():.3g}")
        else:
            raise RuntimeError(
                f"network solve did not converge on {len(index)} unknowns (tolerance "
                f"{RESIDUAL_TOL:g}; {'; '.join(failures)})"
            )
    potential[index] = y * scale[:, None]
    return potential


def _solver_order(solver: str, dim: int, unknowns: int) -> list[str]:
    """Solvers to try in turn: the chosen one, or for "auto" the one suited to the size,
    then the other one if it is affordable."""
    if solver != "auto":
        return [solver]
    if unknowns <= DIRECT_MAX_UNKNOWNS[dim]:
        return ["direct", "cg"]
    if unknowns <= DIRECT_FALLBACK_MAX_UNKNOWNS[dim]:
        return ["cg", "direct"]
    return ["cg"]


def _solve_direct(matrix: sp.csr_matrix, b: np.ndarray) -> np.ndarray:
    """One SuperLU factorization for all columns of b, then iterative refinement."""
    lu = splu(
        sp.csc_matrix(matrix),
        permc_spec="MMD_AT_PLUS_A",
        diag_pivot_thresh=0.0,
        options={"SymmetricMode": True},
    )
    y = lu.solve(b)
    for _ in range(REFINEMENT_STEPS):
        y += lu.solve(b - matrix @ y)
    return y


def _solve_cg(matrix: sp.csr_matrix, b: np.ndarray) -> np.ndarray:
    """Conjugate gradients (scipy) per column on the unit-diagonal SPD system, down to a
    residual of CG_RTOL relative to the right-hand side, or at most
    min(10 n + 1000, CG_MAX_ITERATIONS) iterations; the caller checks the residual."""
    max_iterations = min(10 * matrix.shape[0] + 1000, CG_MAX_ITERATIONS)
    columns = [cg(matrix, column, rtol=CG_RTOL, maxiter=max_iterations)[0] for column in b.T]
    return np.stack(columns, axis=1)
