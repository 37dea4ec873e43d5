"""One task of a sweep, end to end: config → landscape → kernel → estimators → task data.

Everything random in a task comes from one generator seeded by the task's own
``SeedSequence``, drawn in a fixed order (blocked sites, microstructure, energies, ions,
kernel), so a task's result depends on nothing but its config and seed.
"""

from __future__ import annotations

import numpy as np

from kmc import analysis, kernel, landscape, lattice
from kmc.config import Config, Task, resolved_dict
from kmc.store import TaskData


def build_landscape(config: Config, rng: np.random.Generator) -> landscape.Landscape:
    """The landscape realization a (sweep-free) config describes."""
    lat_cfg, micro = config.lattice, config.microstructure
    lat = lattice.build(lat_cfg.kind, lat_cfg.cells, lat_cfg.hop_distance)
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


def run_task(task: Task) -> TaskData:
    """Simulate one task and compute its observables; nothing is written to disk here."""
    config = task.config
    rng = np.random.default_rng(task.seed)
    land = build_landscape(config, rng)
    run = config.run
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
    )
    observables = analysis.transport(
        traj.times,
        traj.positions,
        temperature=run.temperature,
        volume=traj.volume,
        hop_distance=traj.hop_distance,
    )
    observables.update(
        hops=traj.hops,
        simulated_time=float(traj.times[-1]),
        kernel_seconds=traj.kernel_seconds,
        diffusive=int(observables["diffusive"]),
    )
    return TaskData(
        times=traj.times,
        positions=traj.positions,
        sites=traj.sites,
        box=traj.box,
        species=config.ions.species,
        parameters={
            "config": resolved_dict(config),
            "point": task.plain_point,
            "replica": task.replica,
        },
        task=task.index,
        seed_entropy=task.seed.entropy,
        spawn_key=tuple(task.seed.spawn_key),
        observables=observables,
    )
