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
* Reduction bookkeeping without per-bond Python loops: g_c^a and the strong clusters with
  their unwrapped offsets come from :func:`kmc.percolation.cluster_images` (a spanning
  forest by ``scipy.sparse.csgraph.breadth_first_order``, image offsets summed along it by
  pointer jumping, a winding loop = a bond whose ends' offsets disagree with its image);
  g_c^a is found by bisection over the bonds in decreasing order (:func:`_first_winding`:
  the bonds below the window are contracted, so each step works on its window only). It
  gives exactly the levels of the bond-by-bond union–find it replaces (tests). Measured on
  the NaFePO4 landscapes below (φ = 0.3, 300 K, on a busy machine): g_c took 0.7, 2.2 and
  6.4 s at 32³, 48³ and 64³ against 0.17, 0.62 and 1.7 s for the union–find's Python loop,
  which stops as soon as every axis winds (here after the amorphous and interface bonds);
  the strong clusters 0.04 and 0.09 s against 0.08 and 0.19 s at 48³ and 64³. The
  vectorized g_c is the slower one on these landscapes, at most ~1/3 of a solve.
* The reduced Laplacian is assembled in *edge form*: bonds between free nodes, plus a
  "grounding" of each node by its bonds to the pinned node; every diagonal entry is a sum of
  positive terms, never a difference.
* Solvers (``solver=``):

  - ``"direct"``: SuperLU (``scipy.sparse.linalg.splu``, symmetric mode, minimum-degree
    ordering on A + Aᵀ, no pivoting on the SPD matrix), factorized once for all right-hand
    sides, plus :data:`REFINEMENT_STEPS` steps of iterative refinement. Exact to rounding,
    but its fill-in on periodic 3D lattices grows steeply: on the NaFePO4 landscapes of
    docs/results.md at φ = 0.3, 300 K (about 0.95 N unknowns per axis after the
    reduction) one factorization took 0.09 s at 16³, 1.4 s at 24³ and 23–27 s at 32³. Of
    SuperLU's orderings MMD_AT_PLUS_A in symmetric mode is the best measured (COLAMD and
    MMD_ATA: 3–4× slower and 2.5× the fill at 16³ and 24³).
  - ``"amg"``: conjugate gradients preconditioned by one V-cycle of unsmoothed aggregation
    AMG (:func:`_amg_hierarchy`: pyamg's symmetric strength of connection with
    θ = :data:`AMG_STRENGTH` and its standard aggregation; a node without a strong
    neighbour joins its strongest neighbour's aggregate; one symmetric Gauss–Seidel sweep
    before and after; the coarsest level, ≤ :data:`AMG_COARSEST` unknowns, factorized).
    Near-linear in the number of sites: 21–48 iterations from 16³ to 64³ on the
    landscapes above, 8 s for a 64³ landscape (3 axes) in 0.5 GB. Two details make it
    work through conductance contrasts of 10¹⁵ and more, where pyamg's own solvers
    (smoothed aggregation with default, θ = 0.25 or evolution strength; Ruge–Stüben with
    θ = 0.25 and 0.5; pairwise aggregation, all as CG preconditioners; and ILUT from
    ``spilu`` with drop tolerances 1e-3 to 1e-5) stalled at relative residuals of 5e-9 to
    2e-3 after 500 (AMG, 16³) or 1000 (ILUT) iterations, with D off by 3e-6 to 0.16 (AMG)
    and up to 24 (ILUT); the best, ILUT at 1e-5, was still 7e-7 off in D at 24³ after
    1000 iterations and 10 s:

    1. the coarse operators are built in edge form (summed bonds between aggregates,
       summed groundings), not by the triple product PᵀLP, whose diagonal cancels an
       aggregate's strong inner bonds against its off-diagonal entries and loses every
       digit of a weak outer bond;
    2. CG multiplies by L in edge form, Σ_b w_b (u_i − u_j), not by the CSR matrix, whose
       d_i u_i − Σ_j w_ij u_j loses ε d_i |u_i| at a node of strong bonds (64³: residual
       stalled at 7e-11 after 100 iterations in CSR form, 8e-14 after 51 in edge form).

    CG stops when the residual of the scaled system is ≤ :data:`AMG_RTOL` *and* the
    dissipation (whose minimum is D) has converged to :data:`AMG_ENERGY_RTOL` (the
    Hestenes–Stiefel estimate from its decrease over the last :data:`AMG_ENERGY_WINDOW`
    steps): with contrasts of 10¹⁶ the residual alone does not bound the error of D.
    Measured against ``"direct"`` on 32 NaFePO4 landscapes (16³, random φ = 0–1 and
    correlated φ = 0.05–0.5, 300 and 600 K) the largest difference was 3e-9 of the largest
    diagonal entry, and there the direct solve was the less accurate one (with 10
    refinement steps it moved onto the AMG value).
  - ``"cg"``: scipy's conjugate gradients with the diagonal scaling as Jacobi
    preconditioner, down to :data:`CG_RTOL` or :data:`CG_MAX_ITERATIONS` iterations: a
    check only; on the landscapes above it needed 16 000 iterations at 16³ and did not
    converge in 50 000 at 24³ (the previous "auto" policy sent 24³ there first: 300–500 s).
  - ``"auto"`` (default): direct up to :data:`DIRECT_MAX_UNKNOWNS` unknowns (where it is
    as fast: 3D 2 000, 2D 50 000; on square 256², 59 000 unknowns, AMG 1.05 s vs direct
    1.33 s), else AMG, falling back on the direct solver up to
    :data:`DIRECT_FALLBACK_MAX_UNKNOWNS` if AMG fails.

  Not used: CHOLMOD (scikit-sparse) needs SuiteSparse from the system (not pip-installable
  alone) and, as any exact factorization of a 3D lattice, grows as N²: measured 20 s at
  32³ with nested dissection, ≈ 20 min extrapolated to 64³.
* Whatever the solver, the relative residual ‖A y − S b‖ / ‖S b‖ of each direction is
  checked after the solve; above :data:`RESIDUAL_TOL` a ``RuntimeError`` is raised.
  :func:`solve` reports the solver that ran and the largest residual
  (:class:`Solution`); run.method = "network" tasks store them as the observables
  ``solver`` and ``solver_residual``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp
from pyamg.aggregation import standard_aggregation
from pyamg.relaxation.relaxation import gauss_seidel
from pyamg.strength import symmetric_strength_of_connection
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import cg, splu

from kmc.landscape import Landscape
from kmc.percolation import cluster_images
from kmc.units import BOLTZMANN_EV

__all__ = [
    "AMG_ENERGY_RTOL",
    "AMG_ENERGY_WINDOW",
    "AMG_MAX_ITERATIONS",
    "AMG_RTOL",
    "AMG_STRENGTH",
    "CG_MAX_ITERATIONS",
    "CG_RTOL",
    "CONTRACTION_RATIO",
    "DIRECT_FALLBACK_MAX_UNKNOWNS",
    "DIRECT_MAX_UNKNOWNS",
    "RESIDUAL_TOL",
    "Solution",
    "diffusion_coefficient",
    "diffusion_tensor",
    "solve",
]

#: Largest reduced system (unknowns) solved by the direct factorization, per lattice
#: dimension; above it the AMG-preconditioned conjugate-gradient solver is used ("auto").
DIRECT_MAX_UNKNOWNS = {1: 10**7, 2: 50_000, 3: 2_000}
#: Largest system the direct solver takes on when the AMG solve has failed ("auto").
DIRECT_FALLBACK_MAX_UNKNOWNS = {1: 10**7, 2: 10**6, 3: 40_000}
#: Relative residual of the scaled system above which a solve is refused.
RESIDUAL_TOL = 1e-8
#: Relative residual (of the scaled system) the AMG-preconditioned CG iterates down to.
AMG_RTOL = 1e-12
#: Relative error of the dissipation (of D) the AMG-preconditioned CG iterates down to,
#: estimated from the decrease of the dissipation over its last AMG_ENERGY_WINDOW steps.
AMG_ENERGY_RTOL = 1e-13
AMG_ENERGY_WINDOW = 4
#: Most AMG-preconditioned CG iterations per solve.
AMG_MAX_ITERATIONS = 1000
#: Strength threshold θ of the aggregation: a bond is strong when
#: g_ij ≥ θ √(L_ii L_jj) (pyamg's symmetric strength of connection).
AMG_STRENGTH = 0.15
#: Coarsening stops at this many unknowns; the coarsest level is factorized (SuperLU).
AMG_COARSEST = 400
#: Relative residual the Jacobi-preconditioned conjugate-gradient solver iterates down to.
CG_RTOL = 1e-12
#: Most Jacobi-preconditioned conjugate-gradient iterations per solve.
CG_MAX_ITERATIONS = 50_000
#: Iterative-refinement steps after a direct solve (each reuses the factorization).
REFINEMENT_STEPS = 2
#: Bonds more than this factor above the percolation conductance are perfect conductors.
CONTRACTION_RATIO = 1e8

Solver = Literal["auto", "direct", "amg", "cg"]
_SOLVERS = ("auto", "direct", "amg", "cg")


@dataclass(frozen=True)
class Solution:
    """The network solve of one landscape: the tensor and how it was obtained.

    ``tensor`` (d, d) in Å²/s; ``solver``: the linear solver(s) that produced the accepted
    solutions (``"direct"``, ``"amg"``, ``"cg"``, several joined by ``+`` when the axes of a
    contracted landscape were solved differently, ``"none"`` when nothing had to be solved);
    ``residual``: the largest relative residual ‖A y − S b‖ / ‖S b‖ of the scaled system
    over all right-hand sides (0.0 when nothing was solved); ``unknowns``: the largest
    reduced system; ``iterations``: the most CG iterations of one right-hand side (0 for
    the direct solver); ``contracted``: whether the critical-path reduction was made.
    """

    tensor: np.ndarray
    solver: str
    residual: float
    unknowns: int
    iterations: int
    contracted: bool


def diffusion_tensor(
    landscape: Landscape, temperature: float, *, solver: Solver = "auto"
) -> np.ndarray:
    """The exact long-time diffusion tensor (d, d), in Å²/s, of one ion on ``landscape``
    (:func:`solve`'s ``tensor``)."""
    return solve(landscape, temperature, solver=solver).tensor


def solve(landscape: Landscape, temperature: float, *, solver: Solver = "auto") -> Solution:
    """The exact long-time diffusion tensor of one ion on ``landscape``, with the solver
    that ran and its residual (:class:`Solution`).

    This is what independent walkers (kMC without exclusion) measure on the same landscape,
    without noise; see the module docstring for the formula and the numerics. ``solver``
    picks the linear solver: ``"direct"`` (SuperLU), ``"amg"`` (conjugate gradients
    preconditioned by aggregation AMG), ``"cg"`` (Jacobi-preconditioned conjugate gradients,
    slow on high-contrast landscapes; kept as a check) or ``"auto"`` (direct up to
    :data:`DIRECT_MAX_UNKNOWNS` unknowns, else AMG, falling back on the direct solver up to
    :data:`DIRECT_FALLBACK_MAX_UNKNOWNS` when the AMG solve fails).

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
        return Solution(np.zeros((dim, dim)), "none", 0.0, 0, 0, False)
    reports: list[_Report] = []

    flux = np.zeros((lat.n_bonds, dim))  # d_b·e + u^e_j − u^e_i, per axis e
    g_active = conductance[active]
    if g_active.max() <= CONTRACTION_RATIO * g_active.min():
        # one network, all axes at once: exact to rounding
        bonds = np.flatnonzero(active)
        potential = _corrector(
            lat.n_sites,
            i[bonds],
            j[bonds],
            conductance[bonds],
            vectors[bonds],
            solver,
            dim,
            reports,
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
        g_c = _percolation_conductances(lat.n_sites, i, j, images, conductance)
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
                reports,
            )[:, 0]
            flux[bonds, axis] = component[bonds] + potential[cj[bonds]] - potential[ci[bonds]]
    # Σ_b g_b F^e_b F^f_b / Σ w (einsum, not a BLAS product: see the solver notes)
    tensor = np.einsum("be,bf->ef", flux * conductance[:, None], flux) / weight.sum()
    contracted = bool(g_active.max() > CONTRACTION_RATIO * g_active.min())
    if not lat.orthogonal and contracted:
        tensor = lat.box_vectors.T @ tensor @ lat.box_vectors  # x = s · box vectors
    tensor = 0.5 * (tensor + tensor.T) * landscape.attempt_frequency
    methods = list(dict.fromkeys(report.method for report in reports))
    return Solution(
        tensor=tensor,
        solver="+".join(methods) if methods else "none",
        residual=max((report.residual for report in reports), default=0.0),
        unknowns=max((report.unknowns for report in reports), default=0),
        iterations=max((report.iterations for report in reports), default=0),
        contracted=contracted,
    )


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


def _percolation_conductances(n_sites, i, j, images, conductance) -> np.ndarray:
    """Per axis a, the conductance of the bond whose addition (in decreasing order of
    conductance) first closes a loop with a nonzero image along a, i.e. makes a cluster wind
    around the periodic box along a; 0.0 for an axis along which nothing winds."""
    active = np.flatnonzero(conductance > 0)
    order = active[np.argsort(-conductance[active], kind="stable")]
    g_c = np.zeros(images.shape[1])
    for axis in range(images.shape[1]):
        count = _first_winding(n_sites, i[order], j[order], images[order, axis])
        if count:
            g_c[axis] = conductance[order[count - 1]]
    return g_c


def _first_winding(n: int, i: np.ndarray, j: np.ndarray, image: np.ndarray) -> int:
    """The smallest k such that the first k bonds (i → j, image along one axis) hold a loop
    that winds around the box along that axis; 0 if all of them do not.

    Bisection over k, with every step one vectorized :func:`kmc.percolation.cluster_images`
    on the bonds of the current window only: the bonds below the window are known not to
    wind, so their clusters are contracted into single nodes (each site keeping its image in
    its cluster's frame) and the window's bonds join those nodes. The windows halve, so the
    whole search costs about two passes over the bonds plus one relabelling of the sites per
    step."""
    if not cluster_images(n, i, j, image)[2].any():
        return 0
    node = np.arange(n)  # the contracted node of each site (a site of its cluster)
    shift = np.zeros(n, dtype=np.int64)  # the site's image in that node's frame
    low, high = 0, len(i)  # the first `low` bonds do not wind, the first `high` do
    while high - low > 1:
        middle = (low + high) // 2
        window = slice(low, middle)
        a, c = node[i[window]], node[j[window]]
        crossing = shift[i[window]] + image[window] - shift[j[window]]
        mark = np.zeros(n, dtype=bool)
        mark[a] = True
        mark[c] = True
        touched = np.flatnonzero(mark)  # sorted, without a sort
        local = np.zeros(n, dtype=np.int64)
        local[touched] = np.arange(len(touched))
        labels, offsets, winds = cluster_images(len(touched), local[a], local[c], crossing)
        if winds.any():
            high = middle
            continue
        # contract: each touched node joins its component's root (its first touched node)
        first = np.full(labels.max() + 1, len(touched))
        np.minimum.at(first, labels, np.arange(len(touched)))
        root = touched[first][labels]  # each touched node's component root, as a node
        moved = mark[node]
        position = local[node[moved]]
        shift[moved] += offsets[position, 0]
        node[moved] = root[position]
        low = middle
    return high


def _strong_clusters(x, period, i, j, images, strong, axis) -> tuple[np.ndarray, np.ndarray]:
    """Clusters of sites joined by strong bonds, labelled 0..m-1, and each site's unwrapped
    coordinate ``x`` along ``axis`` (its box period ``period``) relative to its cluster root.
    ``images`` holds each bond's periodic image along that axis; the strong bonds must not
    wind along it."""
    bonds = np.flatnonzero(strong)
    cluster, image, winds = cluster_images(len(x), i[bonds], j[bonds], images[bonds])
    if winds.any():  # cannot happen for g > g_c of this axis
        raise AssertionError(f"strong bonds wind around the box along axis {axis}")
    roots = np.unique(cluster, return_index=True)[1]
    offset = x + image[:, 0] * period - x[roots][cluster]
    return cluster, offset


@dataclass(frozen=True)
class _Report:
    method: str
    residual: float
    unknowns: int
    iterations: int


def _corrector(
    n_nodes: int,
    i: np.ndarray,
    j: np.ndarray,
    conductance: np.ndarray,
    vectors: np.ndarray,
    solver: str,
    dim: int,
    reports: list[_Report],
) -> np.ndarray:
    """(n_nodes, k) potentials for the k columns of ``vectors`` (hop vectors or one
    component of them): L u = −Bᵀ G X, one node pinned per connected component, solved by
    the solver(s) :func:`_solver_order` names for a lattice of dimension ``dim``; what was
    solved and how well is appended to ``reports``."""
    columns = vectors.shape[1]
    potential = np.zeros((n_nodes, columns))
    if len(i) == 0:
        return potential
    current = conductance[:, None] * vectors  # g_b d_b per bond
    rhs = np.zeros((n_nodes, columns))
    for axis in range(columns):  # −Bᵀ G X: outflow at i minus inflow at j
        rhs[:, axis] = np.bincount(i, current[:, axis], n_nodes) - np.bincount(
            j, current[:, axis], n_nodes
        )
    loop = i == j  # a bond from a node to itself carries no current between nodes
    i, j, conductance, vectors = i[~loop], j[~loop], conductance[~loop], vectors[~loop]

    adjacency = sp.csr_matrix((np.ones(len(i)), (i, j)), shape=(n_nodes, n_nodes))
    _, labels = connected_components(adjacency, directed=False)
    keep = np.ones(n_nodes, dtype=bool)
    keep[np.unique(labels, return_index=True)[1]] = False  # pin one node per component
    index = np.flatnonzero(keep)
    if len(index) == 0:
        return potential
    # The reduced Laplacian in edge form: bonds between free nodes, and the "grounding" of
    # a free node by its bonds to the pinned node. Its diagonal is a sum of positive terms
    # (no cancellation), and so are the coarse operators built from it (see _amg_hierarchy).
    position = np.full(n_nodes, -1, dtype=np.int64)
    position[index] = np.arange(len(index))
    pi, pj = position[i], position[j]
    inner = (pi >= 0) & (pj >= 0)
    free = len(index)
    to_pin = (pi >= 0) & (pj < 0), (pj >= 0) & (pi < 0)
    unit = conductance.max()
    w = conductance / unit
    ground = np.bincount(pi[to_pin[0]], w[to_pin[0]], free) + np.bincount(
        pj[to_pin[1]], w[to_pin[1]], free
    )
    edges = (pi[inner], pj[inner], w[inner])
    diagonal = np.bincount(edges[0], edges[2], free) + np.bincount(edges[1], edges[2], free)
    reduced = _laplacian(free, *edges, diagonal + ground)
    scale = 1.0 / np.sqrt(reduced.diagonal())
    matrix = sp.csr_matrix(sp.diags(scale) @ reduced @ sp.diags(scale))
    b = rhs[index] * scale[:, None] / unit
    norms = np.sqrt(np.sum(b * b, axis=0))
    todo = np.flatnonzero(norms > 0)
    y = np.zeros_like(b)
    if len(todo):
        failures = []
        for method in _solver_order(solver, dim, len(index)):
            try:
                if method == "direct":
                    y[:, todo], iterations = _solve_direct(matrix, b[:, todo]), 0
                elif method == "amg":
                    # dissipation at u = 0, Σ_b w_b X_b²: CG lowers it towards the minimum
                    start = np.einsum("b,bk->k", w, vectors[:, todo] ** 2)
                    y[:, todo], iterations = _solve_amg(
                        reduced, edges, ground, scale, b[:, todo], start
                    )
                else:
                    y[:, todo], iterations = _solve_cg(matrix, b[:, todo])
            except RuntimeError as exc:  # SuperLU: "factor is exactly singular"
                failures.append(f"{method}: {exc}")
                continue
            r = matrix @ y[:, todo] - b[:, todo]
            residual = np.sqrt(np.sum(r * r, axis=0)) / norms[todo]
            if np.all(residual < RESIDUAL_TOL):
                reports.append(_Report(method, float(residual.max()), len(index), iterations))
                break
            failures.append(f"{method}: relative residual {residual.max():.3g}")
        else:
            raise RuntimeError(
                f"network solve did not converge on {len(index)} unknowns (tolerance "
                f"{RESIDUAL_TOL:g}; {'; '.join(failures)})"
            )
    potential[index] = y * scale[:, None]
    return potential


def _laplacian(n: int, i: np.ndarray, j: np.ndarray, w: np.ndarray, diagonal: np.ndarray):
    """The symmetric (n, n) CSR matrix with −w_b at (i_b, j_b) and (j_b, i_b) (summed over
    parallel bonds) and the given diagonal."""
    nodes = np.arange(n)
    rows = np.concatenate([i, j, nodes])
    cols = np.concatenate([j, i, nodes])
    return sp.csr_matrix((np.concatenate([-w, -w, diagonal]), (rows, cols)), shape=(n, n))


def _solver_order(solver: str, dim: int, unknowns: int) -> list[str]:
    """Solvers to try in turn: the chosen one, or for "auto" the one suited to the size,
    then the direct one if it is affordable."""
    if solver != "auto":
        return [solver]
    if unknowns <= DIRECT_MAX_UNKNOWNS[dim]:
        return ["direct", "amg"]
    if unknowns <= DIRECT_FALLBACK_MAX_UNKNOWNS[dim]:
        return ["amg", "direct"]
    return ["amg"]


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


@dataclass
class _Level:
    """One level of the AMG hierarchy: its matrix, and (except on the coarsest level) the
    aggregate of each node (the piecewise-constant prolongation)."""

    matrix: sp.csr_matrix
    aggregate: np.ndarray | None = None
    coarse: int = 0


def _amg_hierarchy(n, i, j, w, ground) -> tuple[list[_Level], object]:
    """Unsmoothed aggregation AMG for the Laplacian of bonds (i, j, w) plus a grounding
    ``ground`` on the diagonal, with every coarse operator built in edge form.

    Per level: pyamg's symmetric strength (g_ij ≥ θ √(L_ii L_jj), θ = :data:`AMG_STRENGTH`)
    and standard aggregation; a node left without a strong neighbour joins the aggregate of
    its strongest neighbour. The coarse operator P^T L P of the piecewise-constant
    prolongation is again a Laplacian: its bonds are the sums of the fine bonds between two
    aggregates and its grounding the sum of the aggregate's groundings. It is assembled
    from those sums, not by the sparse triple product, whose diagonal (a sum of an
    aggregate's internal bonds cancelled by its off-diagonal entries) would lose every
    digit of a weak outer bond next to strong inner ones."""
    levels = []
    while True:
        diagonal = np.bincount(i, w, n) + np.bincount(j, w, n) + ground
        level = _Level(_laplacian(n, i, j, w, diagonal))
        levels.append(level)
        if n <= AMG_COARSEST:
            break
        strength = symmetric_strength_of_connection(level.matrix, AMG_STRENGTH)
        aggregates = standard_aggregation(strength)[0].tocsr()
        label = np.full(n, -1, dtype=np.int64)
        label[np.repeat(np.arange(n), np.diff(aggregates.indptr))] = aggregates.indices
        count = aggregates.shape[1]
        lonely = label < 0
        if lonely.any():  # join the strongest neighbour's aggregate
            source, target = np.concatenate([i, j]), np.concatenate([j, i])
            mine = lonely[source]
            source, target, weight = source[mine], target[mine], np.concatenate([w, w])[mine]
            order = np.lexsort((-weight, source))  # per node, the strongest bond first
            nodes, first = np.unique(source[order], return_index=True)
            label[nodes] = label[target[order][first]]  # stays -1 if that one is lonely too
            lonely = label < 0
            label[lonely] = count + np.arange(lonely.sum())
            count += int(lonely.sum())
        if count > 0.9 * n:  # coarsening has stalled: factorize this level
            break
        a, c = label[i], label[j]
        between = a != c
        coarse = sp.coo_matrix(
            (w[between], (np.minimum(a, c)[between], np.maximum(a, c)[between])),
            shape=(count, count),
        ).tocsr()
        coarse.sum_duplicates()
        coarse = coarse.tocoo()
        level.aggregate, level.coarse = label, count
        n, i, j, w = count, coarse.row.astype(np.int64), coarse.col.astype(np.int64), coarse.data
        ground = np.bincount(label, ground, count)
    coarsest = splu(sp.csc_matrix(levels[-1].matrix), permc_spec="MMD_AT_PLUS_A")
    return levels, coarsest


def _v_cycle(levels: list[_Level], coarsest, b: np.ndarray, k: int = 0) -> np.ndarray:
    """One V-cycle from level k for the right-hand side b: a symmetric Gauss–Seidel sweep
    (forward then backward, pyamg's compiled kernel) before and after the coarse
    correction, and the factorized coarsest level. Symmetric, so a valid CG
    preconditioner."""
    level = levels[k]
    if level.aggregate is None:
        return coarsest.solve(b)
    matrix = level.matrix
    x = np.zeros_like(b)
    gauss_seidel(matrix, x, b, iterations=1, sweep="symmetric")
    residual = b - matrix @ x
    restricted = np.bincount(level.aggregate, residual, level.coarse)
    x += _v_cycle(levels, coarsest, restricted, k + 1)[level.aggregate]
    gauss_seidel(matrix, x, b, iterations=1, sweep="symmetric")
    return x


def _solve_amg(reduced, edges, ground, scale, b, start) -> tuple[np.ndarray, int]:
    """Conjugate gradients on the reduced Laplacian, preconditioned by one V-cycle of
    :func:`_amg_hierarchy`, for each column of the scaled right-hand side b (``start``: the
    dissipation Σ w X² of each column at u = 0), until :func:`_pcg` stops (or at most
    :data:`AMG_MAX_ITERATIONS` iterations; the caller checks the residual). Returns the
    scaled solutions and the most iterations one column took."""
    n = reduced.shape[0]
    levels, coarsest = _amg_hierarchy(n, *edges, ground)
    first, second, weight = edges

    def apply(u: np.ndarray) -> np.ndarray:
        # L u in edge form, Σ_b w_b (u_i − u_j) per end plus the grounding: the CSR product
        # d_i u_i − Σ_j w_ij u_j loses ε d_i |u_i| to cancellation at a node of strong bonds,
        # noise that CG then chases through the weakly coupled modes (measured on 64³: a
        # residual stalled at 7e-11 after 100 iterations, against 8e-14 after 51 in edge form)
        current = weight * (u[first] - u[second])
        return np.bincount(first, current, n) - np.bincount(second, current, n) + ground * u

    def precondition(r: np.ndarray) -> np.ndarray:
        return _v_cycle(levels, coarsest, r)

    out = np.zeros_like(b)
    most = 0
    for column in range(b.shape[1]):
        rhs = b[:, column] / scale  # unscaled: L u = rhs with u = S y
        u, iterations = _pcg(apply, rhs, precondition, scale, start[column])
        out[:, column] = u / scale
        most = max(most, iterations)
    return out, most


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """a · b by einsum: numpy's BLAS dot may hand a vector of 10⁵ entries to threads, which
    on a busy two-core machine was measured 60× slower than this single-threaded loop."""
    return float(np.einsum("i,i->", a, b))


def _pcg(apply, rhs, precondition, scale, start) -> tuple[np.ndarray, int]:
    """Preconditioned conjugate gradients for apply(u) = rhs, or L u = −Bᵀ W X, stopped after
    AMG_MAX_ITERATIONS iterations or when both

    - the residual of the scaled system is down to ‖S r‖ ≤ AMG_RTOL ‖S rhs‖ (S the
      diagonal scaling), and
    - the dissipation, whose minimum is D, has converged: CG lowers it from ``start``
      (u = 0) by α_k r_kᵀz_k in step k, and the error left after step k is the sum of the
      later steps' decreases (Hestenes–Stiefel), estimated by the last
      :data:`AMG_ENERGY_WINDOW` of them, which must be ≤ AMG_ENERGY_RTOL times the
      current dissipation. This is the relative error of D itself: with conductance
      contrasts of 10¹⁶ a residual of 10⁻¹² still allowed D errors of 3e-9 (measured).
    """
    energy = start
    recent: list[float] = []
    scaled = scale * rhs
    target = AMG_RTOL**2 * _dot(scaled, scaled)
    u = np.zeros_like(rhs)
    r = rhs.copy()
    z = precondition(r)
    p = z.copy()
    rz = _dot(r, z)
    iterations = 0
    scaled = scale * r
    while iterations < AMG_MAX_ITERATIONS:
        if _dot(scaled, scaled) <= target and (
            len(recent) == AMG_ENERGY_WINDOW and sum(recent) <= AMG_ENERGY_RTOL * energy
        ):
            break
        q = apply(p)
        alpha = rz / _dot(p, q)
        u += alpha * p
        r -= alpha * q
        iterations += 1
        energy -= alpha * rz
        recent = [*recent[1 - AMG_ENERGY_WINDOW :], alpha * rz]
        z = precondition(r)
        rz, previous = _dot(r, z), rz
        p = z + (rz / previous) * p
        np.multiply(scale, r, out=scaled)
    return u, iterations


def _solve_cg(matrix: sp.csr_matrix, b: np.ndarray) -> tuple[np.ndarray, int]:
    """Conjugate gradients (scipy) per column on the unit-diagonal SPD system, down to a
    residual of CG_RTOL relative to the right-hand side, or at most
    min(10 n + 1000, CG_MAX_ITERATIONS) iterations; the caller checks the residual."""
    max_iterations = min(10 * matrix.shape[0] + 1000, CG_MAX_ITERATIONS)
    columns, most = [], 0
    for column in b.T:
        count = [0]

        def step(_x, count=count):
            count[0] += 1

        columns.append(cg(matrix, column, rtol=CG_RTOL, maxiter=max_iterations, callback=step)[0])
        most = max(most, count[0])
    return np.stack(columns, axis=1), most
