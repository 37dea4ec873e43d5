"""One task of a sweep, end to end: config → landscape → kernel → estimators → task data
(or, for ``run.method = "network"``, config → landscape → exact network solve → task data).

The landscape (blocked sites, microstructure, energies, drawn in that order) comes from the
task's ``landscape_seed``, which every task differing only in ``run.*`` and ``ions.*`` keys
shares; the ions and the kernel's stream from the task's own ``seed``. A task's result
depends on nothing but its config and those two seeds.
"""

from __future__ import annotations

import math
import time

import numpy as np

from kmc import analysis, kernel, landscape, network, percolation, store, units
from kmc.config import Config, Task, resolved_dict
from kmc.store import TaskData


def build_landscape(config: Config, rng: np.random.Generator) -> landscape.Landscape:
    """The landscape realization a (sweep-free) config describes."""
    lat_cfg, micro = config.lattice, config.microstructure
    lat = lat_cfg.build()
    blocked = landscape.blocked_sites(lat, lat_cfg.blocked_fraction, rng)
    amorphous = landscape.microstructure(
        lat,
        micro.kind,
        micro.amorphous_fraction,
        rng,
        blocked=blocked,
        correlation_length=micro.correlation_length,
        grain_diameter=micro.grain_diameter,
    )
    return landscape.generate(
        lat,
        crystal=landscape.Phase(config.crystal.site_energy, config.crystal.saddle_energy),
        amorphous=landscape.Phase(config.amorphous.site_energy, config.amorphous.saddle_energy),
        amorphous_mask=amorphous,
        rng=rng,
        interface_saddle=config.interface.saddle_energy,
        blocked=blocked,
        attempt_frequency=config.crystal.attempt_frequency,
    )


def run_task(task: Task, progress: np.ndarray | None = None) -> TaskData:
    """Simulate one task and compute its observables; nothing is written to disk here.

    With ``run.method = "network"`` the landscape is built exactly as for kMC (the same
    landscape seed) and :func:`network_task` solves for its dilute-limit D instead.
    ``progress`` (a (1,) int64 array) has the kernel's attempts added as it goes.
    A task stopped at its work budget (``run.work_budget``) keeps ``status`` "budget
    exceeded" and ``status_reason``; it is analysed as far as it got, and not diffusive.
    """
    config = task.config
    landscape_rng = np.random.default_rng(task.landscape_seed)
    land = build_landscape(config, landscape_rng)
    rng = np.random.default_rng(task.seed)
    run = config.run
    if run.method == "network":
        return network_task(task, land)
    inter = config.interactions
    pair = None
    if inter.active:  # drawn after the landscape, from its stream: the landscape is unchanged
        pair = landscape.pair_energies(
            land.lattice,
            inter.nearest_neighbour,
            hop_type=inter.hop_type,
            amorphous=land.amorphous,
            amorphous_sigma=inter.amorphous_sigma,
            rng=landscape_rng,
        )
    field = run.field_vector(land.lattice.dim)
    driven = bool(np.any(field))
    traj = kernel.simulate(
        land,
        run.temperature,
        rng,
        concentration=config.ions.concentration,
        count=config.ions.count,
        exclusion=config.ions.exclusion,
        hops_per_ion=run.hops_per_ion,
        equilibration_hops_per_ion=run.equilibration_hops_per_ion,
        frames=run.frames,
        progress=progress,
        **({} if run.work_budget is None else {"work_budget": run.work_budget}),
        **({"field": field} if driven else {}),
        **({"interactions": pair} if pair is not None else {}),
    )
    # uniform rates and no field: D_σ may be read at the shortest lag
    uniform = land.uniform_rates and not driven
    collective = None
    if traj.collective is not None:
        collective = (traj.collective_times, traj.collective)
    capped = traj.budget_exceeded
    if traj.times.size >= analysis.MIN_FRAMES:
        observables = analysis.transport(
            traj.times,
            traj.positions,
            temperature=run.temperature,
            volume=traj.volume,
            hop_distance=traj.hop_distance,
            collective=collective,
            martingale=uniform,
            field=field if driven else None,
            verdict=capped,
        )
    else:  # stopped at its budget before it had frames enough for a fit
        observables = analysis.no_transport(land.lattice.dim, capped, driven=driven)
    if capped and config.ions.exclusion and not driven:  # not an equilibrium sample
        observables.update(dict.fromkeys(analysis.THERMODYNAMIC_KEYS, math.nan))
        observables["thermodynamic_reason"] = "stopped at its work budget: not in equilibrium"
        if land.lattice.sublattice is not None:
            observables["order_parameter"] = math.nan
    elif config.ions.exclusion and not driven:  # an equilibrium lattice gas: its thermodynamics
        observables.update(analysis.lattice_gas_thermodynamics(
            traj.times, traj.positions, traj.box, len(land.free_sites), observables["D_jump"]
        ))  # fmt: skip
        lat = land.lattice
        observables["chemical_potential"] = analysis.widom_chemical_potential(
            traj.sites, land.site_energy, ~land.blocked, run.temperature,
            pair=None if pair is None else (lat.neighbours, lat.bond_index, pair),
        )  # fmt: skip
        if land.lattice.sublattice is not None:  # bipartite: is there checkerboard order?
            observables["order_parameter"] = analysis.staggered_order(
                traj.sites, land.lattice.sublattice
            )
    observables.update(
        uniform_rates=int(uniform),
        hops=traj.hops,
        simulated_time=float(traj.times[-1]),
        kernel_seconds=traj.kernel_seconds,
        diffusive=int(observables["diffusive"]),
        status=store.BUDGET_EXCEEDED if capped else store.COMPLETE,
        status_reason=capped,
        work=traj.work,
        planned_work=traj.planned_work,
    )
    return _task_data(
        task, land, traj.times, traj.positions, traj.sites, observables, collective, pair
    )


def network_task(task: Task, land: landscape.Landscape) -> TaskData:
    """The exact dilute-limit result of one landscape (:mod:`kmc.network`): no trajectory.

    D = tr(D)/d of a single ion is both the tracer and the jump coefficient (Haven ratio 1);
    the exact tensor fills ``D_tracer_ab`` (and its diagonal ``D_jump_aa``) in cm²/s
    (:func:`kmc.analysis.tensor_observables`).
    The conductivity is the Nernst–Einstein value of N independent ions, n = N / V, with N
    the task's ion count (``ions.count``, or round(c · free sites)): the dilute limit, exact
    only while ions rarely meet (no site exclusion, no correlations). The task data hold
    zero frames (positions shaped (0, N, d)), 0 hops and 0 s simulated; ``kernel_seconds``
    is the solver's wall time; there is no fit window (nan). ``solver`` names the linear
    solver that ran and ``solver_residual`` is its largest relative residual
    (:class:`kmc.network.Solution`).
    """
    config = task.config
    run = config.run
    n_ions = kernel.ion_count(
        land,
        concentration=config.ions.concentration,
        count=config.ions.count,
        exclusion=config.ions.exclusion,
    )
    start = time.perf_counter()
    solution = network.solve(land, run.temperature)
    seconds = time.perf_counter() - start
    tensor_a2_s = solution.tensor
    # tr(D)/d, as network.diffusion_coefficient defines it, from the same single solve
    d_a2_s = float(np.trace(tensor_a2_s) / tensor_a2_s.shape[0])
    d_cm2_s = d_a2_s * units.A2_TO_CM2
    tensor_cm2_s = tensor_a2_s * units.A2_TO_CM2
    lat = land.lattice
    observables = {
        "D_tracer": d_cm2_s,
        "D_jump": d_cm2_s,
        "haven_ratio": 1.0,
        "conductivity": analysis.nernst_einstein(d_cm2_s, n_ions / lat.volume, run.temperature),
        "diffusive": 1,
        "diffusive_reason": "",
        "fit_start": math.nan,
        "fit_stop": math.nan,
        "hops": 0,
        "simulated_time": 0.0,
        "kernel_seconds": seconds,
        "status": store.COMPLETE,
        "status_reason": "",
        "work": 0,
        "planned_work": 0,
        "solver": solution.solver,
        "solver_residual": solution.residual,
        **analysis.tensor_observables(tensor_cm2_s, tensor_cm2_s),
    }
    no_frames = np.empty((0, n_ions), dtype=np.int32)
    return _task_data(
        task, land, np.empty(0), np.empty((0, n_ions, lat.dim)), no_frames, observables
    )


def _task_data(
    task: Task,
    land: landscape.Landscape,
    times,
    positions,
    sites,
    observables: dict,
    collective: tuple[np.ndarray, np.ndarray] | None = None,
    pair: np.ndarray | None = None,
) -> TaskData:
    """What a task file stores: the frames, the task's provenance (with the identity of its
    landscape, which covers the pair energies ``pair`` of an interacting run), the
    landscape's activation-energy range and percolation, and the observables."""
    ea_lower, ea_upper = land.activation_range()
    return TaskData(
        times=times,
        positions=positions,
        sites=sites,
        box=land.lattice.box,
        species=task.config.ions.species,
        parameters={
            "config": resolved_dict(task.config),
            "point": task.plain_point,
            "replica": task.replica,
            "landscape": task.landscape,
            "landscape_spawn_key": list(task.landscape_seed.spawn_key),
            "landscape_digest": land.digest(pair),
            # what the estimators need, typed, so that analysis never reads the config schema
            "temperature": float(task.config.run.temperature),
            "hop_distance": float(land.lattice.hop_distance),
            "volume": float(land.lattice.volume),
            "field": [float(x) for x in task.config.run.field_vector(land.lattice.dim)],
            "free_sites": len(land.free_sites),
        },
        task=task.index,
        seed_entropy=task.seed.entropy,
        spawn_key=tuple(task.seed.spawn_key),
        observables={
            **observables,
            "Ea_lower": ea_lower,
            "Ea_upper": ea_upper,
            **percolation.observables(land),
        },
        collective_times=None if collective is None else collective[0],
        collective=None if collective is None else collective[1],
    )
