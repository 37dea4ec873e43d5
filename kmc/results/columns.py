"""The columns of the results tables: which observables, their units (see kmc.results)."""

from __future__ import annotations

from kmc import analysis

#: The four transport observables that are recomputed and averaged over replicas.
OBSERVABLES = ("D_tracer", "D_jump", "haven_ratio", "conductivity")
#: Observables that a non-diffusive task reports only as an upper bound (``X_upper``).
BOUNDED = ("D_tracer", "D_jump", "conductivity")
#: Properties of a task's landscape (kmc.percolation), averaged over replicas as they are:
#: the mean of ``percolating`` is the spanning probability.
PERCOLATION = ("percolating", "spanning_fraction", "critical_barrier")
_AXES = ("percolating_x", "percolating_y", "percolating_z")
#: The swept key that makes an Arrhenius fit possible.
TEMPERATURE_KEY = "run.temperature"

#: Units of the record columns (also written as ``unit`` attributes in results.h5).
UNITS: dict[str, str] = {
    "simulated_time": "s",
    "kernel_seconds": "s",
    "hops": "1",
    "D_tracer": "cm^2/s",
    "D_tracer_err": "cm^2/s",
    "D_jump": "cm^2/s",
    "D_jump_err": "cm^2/s",
    "haven_ratio": "1",
    "haven_ratio_err": "1",
    "conductivity": "S/cm",
    "conductivity_err": "S/cm",
    "Ea_tracer": "eV",
    "Ea_tracer_err": "eV",
    "Ea_jump": "eV",
    "Ea_jump_err": "eV",
    "Ea_lower": "eV",
    "Ea_upper": "eV",
    "critical_barrier": "eV",
    "critical_barrier_err": "eV",
    "D_tracer_upper": "cm^2/s",
    "D_jump_upper": "cm^2/s",
    "conductivity_upper": "S/cm",
    "msd_growth": "hop_distance^2",
    "run.temperature": "K",
    "lattice.hop_distance": "angstrom",
    "crystal.attempt_frequency": "Hz",
    "microstructure.correlation_length": "angstrom",
    "microstructure.grain_diameter": "angstrom",
    **{key: "cm^2/s" for name in analysis.TENSOR_KEYS for key in (name, f"{name}_err")},
    "drift_velocity": "cm/s",
    "drift_velocity_err": "cm/s",
    "mobility": "cm^2/(V s)",
    "mobility_err": "cm^2/(V s)",
    "conductivity_field": "S/cm",
    "conductivity_field_err": "S/cm",
    "run.field": "V/cm",
    "thermodynamic_factor": "1",
    "thermodynamic_factor_err": "1",
    "D_chem": "cm^2/s",
    "D_chem_err": "cm^2/s",
    "chemical_potential": "eV",
    "chemical_potential_err": "eV",
    "order_parameter": "1",
    "order_parameter_err": "1",
    "relaxation_times": "1",
    "relaxation_times_err": "1",
}
#: Observables of a task driven by a field, averaged over replicas (mean and ``_err``).
FIELD_OBSERVABLES = ("drift_velocity", "mobility", "conductivity_field")
_ENERGY_KEYS = ("site_energy", "saddle_energy")

#: Observables of a task recomputed from its trajectory (or kept as stored).
_RECOMPUTED = (
    *OBSERVABLES,
    *(f"{key}_upper" for key in BOUNDED),
    "diffusive",
    "diffusive_reason",
    "msd_growth",
    "slope_ratio",
)


def unit_of(column: str) -> str | None:
    """Unit of a record column or swept key, or None if it has none worth stating."""
    if column in UNITS:
        return UNITS[column]
    parts = column.split(".")
    if len(parts) >= 2 and parts[1] in _ENERGY_KEYS and parts[-1] not in ("weights", "dist"):
        return "eV"  # a site/saddle energy or one of its distribution's parameters
    return None
