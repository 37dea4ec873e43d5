"""Tests of kmc.experiment: what one task's data hold, here the diffusion tensor per axis.

The network method's tensor is checked against a closed form: on a crystal with one saddle
per axis and equal site energies, an ion hops along axis a at rate ν exp(−E_a / kT) each way,
independently of the other axes, so D_aa = a² ν exp(−E_a / kT) and D_ab = 0 exactly. The kMC
path is checked for its keys and the trace identity (its statistics are kmc.analysis's).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from kmc import analysis, config, experiment, network
from kmc.analysis import BOLTZMANN_EV
from kmc.store import read_task, write_task

HOP = 2.0  # Å
NU = 1e13  # Hz
SADDLES = (0.20, 0.25, 0.30)  # eV, along x, y, z
TEMPERATURE = 300.0


def _config(kind: str, cells: list[int], saddles, method: str, **run) -> config.Config:
    data = {
        "name": "tensor",
        "lattice": {"kind": kind, "cells": cells, "hop_distance": HOP},
        "ions": {"species": "Li", "count": 64, "exclusion": False},
        "crystal": {"attempt_frequency": NU, "site_energy": 0.0, "saddle_energy": list(saddles)},
        "amorphous": {
            "site_energy": {"dist": "normal", "mean": 0.0, "sigma": 0.05},
            "saddle_energy": {"dist": "normal", "mean": 0.22, "sigma": 0.05},
        },
        "microstructure": {"kind": "random", "amorphous_fraction": run.pop("phi", 0.0)},
        "run": {"method": method, "temperature": TEMPERATURE, "replicas": 1, "seed": 5, **run},
    }
    return config.parse_config(data)


def test_network_task_records_the_exact_tensor(tmp_path):
    """Exact: D_aa = a² ν exp(−E_a/kT) with E = (0.20, 0.25, 0.30) eV at 300 K, i.e.
    (1.747e-6, 2.525e-7, 3.650e-8) cm²/s, off-diagonal 0. The record holds all nine components
    in cm²/s (to 1e-9 relative; off-diagonals below 1e-12 D_xx), D_jump_aa = D_tracer_aa
    (dilute limit), D_tracer = D_jump = trace / 3, and the components survive the task file."""
    task = config.expand_tasks(_config("cubic", [4, 4, 4], SADDLES, "network"))[0]
    data = experiment.run_task(task)
    obs = data.observables
    exact = [HOP**2 * NU * math.exp(-e / (BOLTZMANN_EV * TEMPERATURE)) * 1e-16 for e in SADDLES]
    for axis, value in zip("xyz", exact, strict=True):
        assert obs[f"D_tracer_{axis}{axis}"] == pytest.approx(value, rel=1e-9)
        assert obs[f"D_jump_{axis}{axis}"] == obs[f"D_tracer_{axis}{axis}"]
    for pair in ("xy", "xz", "yz"):
        assert abs(obs[f"D_tracer_{pair}"]) < 1e-12 * exact[0]
    trace = sum(obs[f"D_tracer_{c}{c}"] for c in "xyz")
    assert (
        obs["D_tracer"] == pytest.approx(trace / 3, rel=1e-12) and obs["D_jump"] == obs["D_tracer"]
    )

    path = tmp_path / "task-000000.h5md"
    write_task(path, data)
    back = read_task(path, positions=False).observables
    assert {k: back[k] for k in analysis.TENSOR_KEYS} == {k: obs[k] for k in analysis.TENSOR_KEYS}


def test_network_task_tensor_is_the_solvers_on_a_disordered_landscape():
    """On a 2D landscape with half its sites amorphous (random energies), the record's
    components are the solver's tensor (kmc.network.diffusion_tensor of the same landscape,
    converted by kmc.units) to rounding, off-diagonal included; D_tracer is its trace / 2;
    a 2D task has no z components."""
    task = config.expand_tasks(_config("square", [12, 12], SADDLES[:2], "network", phi=0.5))[0]
    obs = experiment.run_task(task).observables
    land = experiment.build_landscape(task.config, np.random.default_rng(task.landscape_seed))
    tensor = network.diffusion_tensor(land, TEMPERATURE) * 1e-16
    assert abs(tensor[0, 1]) > 1e-6 * tensor[0, 0]  # disorder: a non-zero D_xy
    expected = {"D_tracer_xx": tensor[0, 0], "D_tracer_yy": tensor[1, 1]}
    expected |= {"D_tracer_xy": tensor[0, 1], "D_jump_xx": tensor[0, 0]}
    expected |= {"D_jump_yy": tensor[1, 1]}
    for key, value in expected.items():
        assert obs[key] == pytest.approx(value, rel=1e-12), key
    assert not any(key.endswith(("zz", "xz", "yz")) for key in obs)
    assert obs["D_tracer"] == pytest.approx(np.trace(tensor) / 2, rel=1e-12)


def test_kmc_task_records_the_tensor_of_its_axes():
    """A kMC task (64 independent walkers on the 2D per-axis crystal, seeded: diffusive)
    stores the five 2D components from its trajectory, with D_tracer and D_jump their
    traces / 2 (rel 1e-12)."""
    cfg = _config("square", [16, 16], SADDLES[:2], "kmc", hops_per_ion=2000, frames=40)
    obs = experiment.run_task(config.expand_tasks(cfg)[0]).observables
    keys = analysis.tensor_keys(2)
    assert set(keys) <= set(obs) and not any(key.endswith(("zz", "xz", "yz")) for key in obs)
    assert obs["diffusive"] == 1, obs["diffusive_reason"]
    assert obs["D_tracer"] == pytest.approx(
        (obs["D_tracer_xx"] + obs["D_tracer_yy"]) / 2, rel=1e-12
    )
    assert obs["D_jump"] == pytest.approx((obs["D_jump_xx"] + obs["D_jump_yy"]) / 2, rel=1e-12)
