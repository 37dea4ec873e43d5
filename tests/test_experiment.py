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

from kmc import analysis, config, experiment, landscape, network
from kmc.analysis import BOLTZMANN_EV
from kmc.store import read_task, write_task

HOP = 2.0  # Å
NU = 1e13  # Hz
SADDLES = (0.20, 0.25, 0.30)  # eV, along x, y, z
TEMPERATURE = 300.0


def _config(
    kind: str, cells: list[int], saddles, method: str, count: int = 64, **run
) -> config.Config:
    data = {
        "name": "tensor",
        "lattice": {"kind": kind, "cells": cells, "hop_distance": HOP},
        "ions": {"species": "Li", "count": count, "exclusion": False},
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
    """A kMC task (256 independent walkers on the 2D per-axis crystal: enough that the
    diffusive test passes whatever the seed — 12 of 12 seeds, where 64 walkers failed 2)
    stores the five 2D components from its trajectory, with D_tracer and D_jump their
    traces / 2 (rel 1e-12)."""
    cfg = _config("square", [16, 16], SADDLES[:2], "kmc", count=256, hops_per_ion=2000,
                  frames=40)  # fmt: skip
    obs = experiment.run_task(config.expand_tasks(cfg)[0]).observables
    keys = analysis.tensor_keys(2)
    assert set(keys) <= set(obs) and not any(key.endswith(("zz", "xz", "yz")) for key in obs)
    assert obs["diffusive"] == 1, obs["diffusive_reason"]
    assert obs["D_tracer"] == pytest.approx(
        (obs["D_tracer_xx"] + obs["D_tracer_yy"]) / 2, rel=1e-12
    )
    assert obs["D_jump"] == pytest.approx((obs["D_jump_xx"] + obs["D_jump_yy"]) / 2, rel=1e-12)


# --------------------------------------------------------------------------- applied field


def _field_tasks(kind, cells, field, *, sigma=0.0, count=None, concentration=None,
                 exclusion=False, replicas=4, hops=2000, temperature=300.0, seed=11,
                 equilibration=200):  # fmt: skip
    """Tasks of a crystal with saddle 0.30 eV (uniform, or normal with ``sigma`` in the
    amorphous phase filling the lattice) under ``run.field`` (V/cm along x)."""
    disordered = sigma > 0
    saddle = {"dist": "normal", "mean": 0.30, "sigma": sigma} if disordered else 0.30
    site = {"dist": "normal", "mean": 0.0, "sigma": sigma} if disordered else 0.0
    ions = {"species": "Li", "exclusion": exclusion}
    ions |= {"count": count} if count is not None else {"concentration": concentration}
    data = {
        "name": "field",
        "lattice": {"kind": kind, "cells": cells, "hop_distance": HOP},
        "ions": ions,
        "crystal": {"attempt_frequency": NU, "saddle_energy": 0.30},
        "amorphous": {"site_energy": site, "saddle_energy": saddle},
        "microstructure": {"amorphous_fraction": 1.0 if disordered else 0.0},
        "run": {"temperature": temperature, "replicas": replicas, "seed": seed,
                "hops_per_ion": hops, "equilibration_hops_per_ion": equilibration,
                "field": field},
    }  # fmt: skip
    return config.expand_tasks(config.parse_config(data))


def _bias(u: float, temperature: float = 300.0) -> float:
    """The field (V/cm) along a hop of length HOP that makes u = q E a / 2kT."""
    return u * 2 * BOLTZMANN_EV * temperature / HOP / 1e-8


@pytest.mark.parametrize("kind,cells", [("chain", [64]), ("cubic", [8, 8, 8])])
@pytest.mark.parametrize("u", [0.05, 2.0], ids=["weak", "strong"])
def test_drift_of_walkers_on_a_uniform_lattice(kind, cells, u):
    """Exact: with uniform rates Γ = ν e^(−0.30 eV/kT) and a field along x, an ion drifts at
    v = a Γ (e^u − e^−u) = 2 a Γ sinh(u), u = q E a / 2kT, at any field (the ±y, ±z hops are
    unbiased). 4 replicas of 500 independent walkers, 2000 hops each; |z| < 4 with the
    error from the replicas; μ = v/|E| and the per-task error agree with it."""
    tasks = _field_tasks(kind, cells, _bias(u), count=500)
    records = [experiment.run_task(t).observables for t in tasks]
    gamma = NU * math.exp(-0.30 / (BOLTZMANN_EV * 300.0))
    exact = 2 * HOP * gamma * math.sinh(u) * 1e-8  # cm/s
    values = [r["drift_velocity"] for r in records]
    mean, error = analysis.replica_mean(values)
    assert abs(mean - exact) < 4 * error, (mean, error, exact)
    assert error < 0.05 * exact
    mobility, _ = analysis.replica_mean([r["mobility"] for r in records])
    assert mobility == pytest.approx(mean / _bias(u), rel=1e-12)
    per_task = np.mean([r["drift_velocity_err"] for r in records])
    assert 0.4 < per_task / (error * 2) < 2.5  # the groups' error ≈ one replica's scatter


def test_linear_response_on_a_disordered_landscape():
    """Einstein relation, exact in linear response: on disordered landscapes (site energies
    and saddles normal, σ = 0.04 eV; lattice gas at c = 0.3 on 10³, 600 K) σ_E at a weak
    field (u = 0.1) equals σ_NE = n q² D_σ/kT of the zero-field runs on the same landscapes
    within 4 combined standard errors (16 landscapes; σ_NE's ≈ 7 % error dominates, σ_E's
    is ≈ 1 %; with 64 landscapes they agree to 0.90 ± 0.03 against 0.930 ± 0.005). At a
    strong field (u = 3) they diverge: σ_E beyond 4 combined errors above σ_NE (for the
    uniform lattice gas it would be sinh(u)/u = 3.3 times)."""
    common = dict(sigma=0.04, concentration=0.3, exclusion=True, replicas=16, hops=3000,
                  temperature=600.0, equilibration=1000)  # fmt: skip
    results = {}
    for name, u in (("zero", 0.0), ("weak", 0.1), ("strong", 3.0)):
        tasks = _field_tasks("cubic", [10, 10, 10], _bias(u, 600.0), **common)
        results[name] = [experiment.run_task(t) for t in tasks]
    digests = {name: [d.parameters["landscape_digest"] for d in runs]
               for name, runs in results.items()}  # fmt: skip
    assert digests["zero"] == digests["weak"] == digests["strong"]  # the same landscapes
    sigma_ne = analysis.replica_mean([d.observables["conductivity"] for d in results["zero"]])
    weak = analysis.replica_mean([d.observables["conductivity_field"] for d in results["weak"]])
    strong = analysis.replica_mean([d.observables["conductivity_field"] for d in results["strong"]])
    combined = math.hypot(sigma_ne[1], weak[1])
    assert abs(weak[0] - sigma_ne[0]) < 4 * combined, (weak, sigma_ne)
    assert strong[0] - sigma_ne[0] > 4 * math.hypot(sigma_ne[1], strong[1]), (strong, sigma_ne)


def test_zero_field_is_no_field():
    """run.field = 0 (or a zero vector) gives the trajectory of a config without the key,
    bit for bit."""
    base = _field_tasks("cubic", [6, 6, 6], 0.0, concentration=0.3, exclusion=True,
                        replicas=1)[0]  # fmt: skip
    plain = config.parse_config({**config.resolved_dict(base.config), "sweep": {}})
    data = config.resolved_dict(plain)
    del data["run"]["field"]
    reference = experiment.run_task(config.expand_tasks(config.parse_config(data))[0])
    data["run"]["field"] = [0.0, 0.0, 0.0]
    zero_vector = experiment.run_task(config.expand_tasks(config.parse_config(data))[0])
    zero = experiment.run_task(base)
    for other in (zero, zero_vector):
        np.testing.assert_array_equal(other.positions, reference.positions)
        np.testing.assert_array_equal(other.sites, reference.sites)
        assert "drift_velocity" not in other.observables


@pytest.mark.parametrize("c", [0.3, 0.7], ids=["ions", "vacancies"])
def test_drift_of_the_uniform_lattice_gas(c):
    """Exact: the uniform asymmetric exclusion process of N ions on a torus of L sites keeps
    the uniform stationary state over its configurations, where the site next to an ion is
    empty with probability (L − N)/(L − 1); so an ion drifts at
    v = 2 a Γ sinh(u) (L − N)/(L − 1) along the field ((1 − c) up to the finite size).
    c = 0.3 drives the ions, c = 0.7 the vacancies (whose rates are those INTO each site,
    the field's sign reversed). u = 0.5 on 8³, 4 replicas, |z| < 4."""
    u = 0.5
    tasks = _field_tasks("cubic", [8, 8, 8], _bias(u), concentration=c, exclusion=True,
                         hops=1000)  # fmt: skip
    values = [experiment.run_task(t).observables["drift_velocity"] for t in tasks]
    mean, error = analysis.replica_mean(values)
    gamma = NU * math.exp(-0.30 / (BOLTZMANN_EV * 300.0))
    n_sites = 8**3
    ions = round(c * n_sites)
    exact = 2 * HOP * gamma * math.sinh(u) * (n_sites - ions) / (n_sites - 1) * 1e-8
    assert abs(mean - exact) < 4 * error, (mean, error, exact)
    assert error < 0.05 * exact


# --------------------------------------------------------------------------- thermodynamics


@pytest.mark.parametrize("c", [0.2, 0.5, 0.8])
def test_chemical_diffusion_of_the_uniform_lattice_gas(c):
    """Exact: on equal sites with one saddle, D_σ = D0 (1 − c) and Θ = 1/(1 − c), so the
    chemical diffusion coefficient D_chem = Θ D_σ is the single-ion D0 = Γ a² (simple
    cubic: z Γ a² / 2d) at every c. 6 replicas of 10³ at 300 K; |z| < 4 with the error from
    the replicas; Θ and μ = kT ln((N + 1)/(V − N)) are recorded too. The runs last
    T = 3000 / (6Γ(1 − c)) = 20/(1 − c) relaxation times τ = (L/2)²/D0 of a half box, more
    than the 10 Θ needs."""
    tasks = _field_tasks("cubic", [10, 10, 10], 0.0, concentration=c, exclusion=True,
                         replicas=6, hops=3000)  # fmt: skip
    data = config.resolved_dict(tasks[0].config)
    data["run"]["frames"] = 300
    data["run"]["replicas"] = 6
    tasks = config.expand_tasks(config.parse_config(data))
    records = [experiment.run_task(t).observables for t in tasks]
    gamma = NU * math.exp(-0.30 / (BOLTZMANN_EV * 300.0))
    d0 = gamma * HOP**2 * 1e-16
    mean, error = analysis.replica_mean([r["D_chem"] for r in records])
    assert abs(mean - d0) < 4 * error and error < 0.1 * d0, (mean, error, d0)
    theta, theta_err = analysis.replica_mean([r["thermodynamic_factor"] for r in records])
    assert abs(theta - 1 / (1 - c)) < 4 * theta_err
    assert all(r["thermodynamic_reason"] == "" for r in records)
    spans = [r["simulated_time"] * d0 * 1e16 / (5 * HOP) ** 2 for r in records]  # T/τ, exact τ
    for r, exact in zip(records, spans, strict=True):
        assert exact > 10 and r["relaxation_times"] == pytest.approx(exact, rel=0.3)
    n = round(c * 1000)
    mu = BOLTZMANN_EV * 300.0 * math.log((n + 1) / (1000 - n))
    assert all(r["chemical_potential"] == pytest.approx(mu, abs=1e-12) for r in records)


def test_thermodynamic_factor_of_a_short_run_is_unresolved():
    """A diffusive run too short for Θ: the uniform lattice gas at c = 0.5 on a 32² square
    lattice, 1000 hops per ion, lasts T = 1000 / (4Γ · 0.5) ≈ 2 relaxation times
    τ = (L/2)²/D0 of a half box (D0 = Γa², L = 32a), fewer than the 10 Θ needs: Θ and D_chem
    are nan, the record says why, and T/τ is the exact one within the noise of D_chem."""
    data = {
        "name": "short",
        "lattice": {"kind": "square", "cells": [32, 32], "hop_distance": HOP},
        "ions": {"species": "Li", "concentration": 0.5},
        "crystal": {"attempt_frequency": NU, "saddle_energy": 0.30},
        "amorphous": {"saddle_energy": 0.30},
        "run": {"temperature": 300.0, "replicas": 2, "seed": 4, "hops_per_ion": 1000},
    }
    d0 = NU * math.exp(-0.30 / (BOLTZMANN_EV * 300.0)) * HOP**2  # Å²/s
    for task in config.expand_tasks(config.parse_config(data)):
        obs = experiment.run_task(task).observables
        assert obs["diffusive"] and obs["D_jump"] > 0
        assert math.isnan(obs["thermodynamic_factor"]) and math.isnan(obs["D_chem"])
        exact = obs["simulated_time"] * d0 / (16 * HOP) ** 2
        assert 1.5 < exact < 2.5 and obs["relaxation_times"] == pytest.approx(exact, rel=0.5)
        reason = obs["thermodynamic_reason"]
        assert reason.startswith(f"run spans {obs['relaxation_times']:.3g} relaxation times")
        assert "needs 10" in reason


def _chain_transfer_matrix(c: float, beta_v: float) -> tuple[float, float]:
    """Exact Θ and βμ of the 1D lattice gas with nearest-neighbour pair energy V (βV =
    ``beta_v``) at density c, from the largest eigenvalue λ(z) of its transfer matrix
    [[1, √z], [√z, z e^(−βV)]] (z = e^(βμ)): c = ∂ln λ/∂ln z and Θ = c / (∂c/∂ln z)."""
    from scipy.optimize import brentq

    def ln_lambda(t: float) -> float:
        z, w = math.exp(t), math.exp(-beta_v)
        return math.log((1 + z * w) / 2 + math.sqrt(((1 - z * w) / 2) ** 2 + z))

    def density(t: float, h: float = 1e-5) -> float:
        return (ln_lambda(t + h) - ln_lambda(t - h)) / (2 * h)

    t = brentq(lambda t: density(t) - c, -40.0, 40.0, xtol=1e-13)
    h = 1e-4
    return c / ((density(t + h) - density(t - h)) / (2 * h)), t


@pytest.mark.parametrize("c", [0.3, 0.5])
def test_thermodynamics_of_the_interacting_chain(c):
    """Exact (transfer matrix): a chain with nearest-neighbour repulsion V = 0.05 eV at
    300 K has Θ(0.3) = 2.693 and Θ(0.5) = 5.260 (1.43 and 2 without V). 6 replicas of 100
    sites, 20 000 hops per ion (many relaxation times of a half chain, (L/2)²/D_chem): Θ
    of the stored frames is within 4 standard errors, and Widom's canonical μ lies between
    the grand-canonical μ at N and at N + 1 ions (within 4 errors). The tracer is not
    diffusive here (single-file motion), so D_chem and with it the relaxation time are not
    measured: the task records report Θ as unresolved, with the reason."""
    kt = BOLTZMANN_EV * 300.0
    data = {
        "name": "chain",
        "lattice": {"kind": "chain", "cells": [100], "hop_distance": HOP},
        "ions": {"species": "Li", "concentration": c},
        "crystal": {"attempt_frequency": NU, "saddle_energy": 0.30},
        "amorphous": {"saddle_energy": 0.30},
        "interactions": {"nearest_neighbour": 0.05},
        "run": {"temperature": 300.0, "replicas": 6, "seed": 3, "hops_per_ion": 20000,
                "equilibration_hops_per_ion": 2000, "frames": 1000},
    }  # fmt: skip
    runs = [experiment.run_task(t) for t in config.expand_tasks(config.parse_config(data))]
    records = [run.observables for run in runs]
    for r in records:
        assert not r["diffusive"] and math.isnan(r["thermodynamic_factor"])
        assert r["thermodynamic_reason"].startswith("D_chem not resolved (run not diffusive)")
    theta, mu_exact = _chain_transfer_matrix(c, 0.05 / kt)
    thetas = [analysis.thermodynamic_factor(run.positions, run.box, 100) for run in runs]
    mean, error = analysis.replica_mean(thetas)
    assert abs(mean - theta) < 4 * error, (mean, error, theta)
    n = round(c * 100)
    low = kt * _chain_transfer_matrix(n / 100, 0.05 / kt)[1]
    high = kt * _chain_transfer_matrix((n + 1) / 100, 0.05 / kt)[1]
    mu, mu_err = analysis.replica_mean([r["chemical_potential"] for r in records])
    assert low - 4 * mu_err < mu < high + 4 * mu_err, (mu, mu_err, low, high, mu_exact * kt)


# --------------------------------------------------------------------------- landscape identity


def test_landscape_digest_covers_the_pair_energies():
    """The stored landscape digest of an interacting run is that of the landscape with the
    pair energies drawn from its stream (amorphous_sigma: one draw per landscape), shared by
    tasks that differ only in run.* keys, different between landscapes and from the same
    landscape without interactions, whose digest stays the landscape's alone."""
    data = {
        "name": "identity",
        "lattice": {"kind": "cubic", "cells": [4, 4, 4], "hop_distance": HOP},
        "ions": {"species": "Li", "concentration": 0.3},
        "crystal": {"attempt_frequency": NU, "saddle_energy": 0.30},
        "amorphous": {"saddle_energy": 0.30},
        "microstructure": {"amorphous_fraction": 0.5},
        "interactions": {"nearest_neighbour": 0.03, "amorphous_sigma": 0.01},
        "run": {"temperature": 600.0, "replicas": 2, "seed": 9, "hops_per_ion": 20,
                "equilibration_hops_per_ion": 0, "frames": 8},
        "sweep": {"run.temperature": [500.0, 600.0]},
    }  # fmt: skip
    tasks = config.expand_tasks(config.parse_config(data))
    stored = [experiment.run_task(t).parameters["landscape_digest"] for t in tasks]
    assert stored[0] == stored[2] != stored[1] == stored[3]  # replicas innermost
    plain = {**data, "interactions": {}}
    plain_tasks = config.expand_tasks(config.parse_config(plain))
    for task, plain_task, digest in zip(tasks[:2], plain_tasks, stored, strict=False):
        stream = np.random.default_rng(task.landscape_seed)
        land = experiment.build_landscape(task.config, stream)
        pair = landscape.pair_energies(land.lattice, 0.03, amorphous=land.amorphous,
                                       amorphous_sigma=0.01, rng=stream)  # fmt: skip
        assert digest == land.digest(pair) != land.digest()
        assert experiment.run_task(plain_task).parameters["landscape_digest"] == land.digest()
