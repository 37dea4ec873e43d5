"""Tests of kmc.config: TOML → validated frozen dataclasses, sweeps → tasks."""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

import kmc.config as config_module
import kmc.config.memory as memory_module
from kmc.config import (
    PROCESS_BASELINE,
    Config,
    ConfigError,
    Task,
    estimate_memory,
    expand_tasks,
    ion_count,
    load_config,
    parse_config,
    process_memory,
    ranks_per_node,
    resolved_dict,
    task_memory,
)
from kmc.distributions import Distribution

SPEC_EXAMPLE = """\
name = "nafepo4-amorphization"       # run directory is runs/<name>/ unless --output is given

[lattice]
kind = "cubic"                       # chain | square | triangular | honeycomb | cubic | bcc | fcc
cells = [24, 24, 24]                 # periodic supercell, conventional cells per axis
hop_distance = 3.4                   # Å, nearest-neighbour hop length
blocked_fraction = 0.0               # optional: fraction of sites that are blocked

[ions]
species = "Na"                       # Li or Na (charge +1)
concentration = 0.1                  # fraction of free sites occupied, 0 < c < 1 ... or
# count = 1                          # an exact number of ions instead
exclusion = true                     # false: independent walkers on one landscape

[crystal]
attempt_frequency = 1e13             # Hz (one value for the whole landscape)
site_energy = 0.0                    # eV, distribution
saddle_energy = 1.6                  # eV, distribution, or one per lattice axis

[amorphous]
site_energy = { dist = "normal", mean = 0.0, sigma = 0.05 }
saddle_energy = { dist = "normal", mean = 0.70, sigma = 0.11 }

[interface]                          # crystal–amorphous bonds; defaults to the amorphous saddle
saddle_energy = 0.55

[microstructure]
kind = "random"                      # random | correlated | grains
amorphous_fraction = 0.5             # 0 ≤ φ ≤ 1
correlation_length = 10.0            # Å, for correlated
grain_diameter = 20.0                # Å, for grains

[run]
method = "kmc"                       # kmc | network
temperature = 300.0                  # K
hops_per_ion = 2000                  # production run, successful hops per ion
equilibration_hops_per_ion = 200     # discarded before recording starts (0 allowed)
frames = 100                         # trajectory frames recorded per task
replicas = 4                         # independent landscapes + ion placements per point
seed = 20261123                      # the whole run is reproducible from this one number

[sweep]                              # dotted keys → lists; the Cartesian product, in file order
"microstructure.amorphous_fraction" = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
"run.temperature" = [300.0, 350.0, 400.0]
"""

MINIMAL = """\
[lattice]
kind = "square"
cells = [8, 8]
hop_distance = 2.0

[ions]
count = 1

[crystal]
saddle_energy = 0.3

[amorphous]
saddle_energy = 0.5
"""


def write(tmp_path, text: str, name: str = "study.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


# ------------------------------------------------------------------------------------------
# Valid configs


def test_spec_example_parses_with_types(tmp_path):
    config = load_config(write(tmp_path, SPEC_EXAMPLE))
    assert isinstance(config, Config)
    assert config.name == "nafepo4-amorphization"
    assert config.lattice.kind == "cubic"
    assert config.lattice.cells == (24, 24, 24)
    assert isinstance(config.lattice.hop_distance, float) and config.lattice.hop_distance == 3.4
    assert config.ions.species == "Na"
    assert config.ions.concentration == 0.1 and config.ions.count is None
    assert config.ions.exclusion is True
    assert config.crystal.attempt_frequency == 1e13
    assert config.crystal.saddle_energy == Distribution.constant(1.6)
    assert config.amorphous.saddle_energy == Distribution("normal", mean=0.70, sigma=0.11)
    assert config.interface.saddle_energy == Distribution.constant(0.55)
    assert config.microstructure.kind == "random"
    assert config.microstructure.correlation_length == 10.0
    assert config.run.seed == 20261123
    assert isinstance(config.run.temperature, float)
    assert isinstance(config.run.hops_per_ion, int)
    assert config.sweep == (
        ("microstructure.amorphous_fraction", (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)),
        ("run.temperature", (300.0, 350.0, 400.0)),
    )
    assert config.source.endswith("study.toml")
    assert config.raw["lattice"]["cells"] == [24, 24, 24]
    assert ion_count(config) == round(0.1 * 24**3)
    with pytest.raises(AttributeError):
        config.name = "other"  # frozen
    hash(config)


def test_defaults(tmp_path):
    config = load_config(write(tmp_path, MINIMAL, "my-run.toml"))
    assert config.name == "my-run"  # the file stem
    assert config.lattice.blocked_fraction == 0.0
    assert config.ions.species == "Li" and config.ions.exclusion is True
    assert config.ions.concentration is None and config.ions.count == 1
    assert config.crystal.attempt_frequency == 1e13
    assert config.crystal.site_energy == Distribution.constant(0.0)
    assert config.amorphous.site_energy == Distribution.constant(0.0)
    assert config.interface.saddle_energy is None
    assert config.microstructure.kind == "random"
    assert config.microstructure.amorphous_fraction == 0.0
    assert config.microstructure.correlation_length is None
    assert config.run == config_module.RunConfig(
        method="kmc",
        temperature=300.0,
        hops_per_ion=2000,
        equilibration_hops_per_ion=200,
        frames=100,
        replicas=4,
        seed=0,
    )
    assert config.sweep == ()
    tasks = expand_tasks(config)
    assert [t.replica for t in tasks] == [0, 1, 2, 3]
    assert all(t.point == {} for t in tasks)


def test_ints_accepted_as_floats_and_per_axis_saddle():
    data = {
        "lattice": {"kind": "cubic", "cells": [4, 4, 4], "hop_distance": 3},
        "ions": {"concentration": 0.5},
        "crystal": {"saddle_energy": [2.5, {"dist": "uniform", "low": 0.2, "high": 0.4}, 2]},
        "amorphous": {"saddle_energy": 1},
        "run": {"temperature": 400, "hops_per_ion": 1e3},
    }
    config = parse_config(data)
    assert config.name == "run"
    assert config.lattice.hop_distance == 3.0 and isinstance(config.lattice.hop_distance, float)
    assert config.run.temperature == 400.0 and isinstance(config.run.temperature, float)
    assert config.run.hops_per_ion == 1000 and isinstance(config.run.hops_per_ion, int)
    saddle = config.crystal.saddle_energy
    assert isinstance(saddle, tuple) and len(saddle) == 3
    assert saddle[1] == Distribution("uniform", low=0.2, high=0.4)


# ------------------------------------------------------------------------------------------
# Tasks


def test_task_order_count_and_seeds(tmp_path):
    config = load_config(write(tmp_path, SPEC_EXAMPLE))
    tasks = expand_tasks(config)
    assert len(tasks) == 6 * 3 * 4
    assert all(isinstance(t, Task) for t in tasks)
    assert [t.index for t in tasks] == list(range(72))
    assert [t.replica for t in tasks[:8]] == [0, 1, 2, 3, 0, 1, 2, 3]
    # the first sweep key varies slowest, replicas innermost
    expected = [
        {"microstructure.amorphous_fraction": phi, "run.temperature": temp}
        for phi in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
        for temp in (300.0, 350.0, 400.0)
        for _ in range(4)
    ]
    assert [t.point for t in tasks] == expected
    assert list(tasks[0].point) == ["microstructure.amorphous_fraction", "run.temperature"]
    task = tasks[4 * 5 + 2]  # point 5: phi = 0.2, T = 400
    assert task.config.microstructure.amorphous_fraction == 0.2
    assert task.config.run.temperature == 400.0
    assert task.config.sweep == ()
    assert task.config.lattice == config.lattice
    # Seeds (documented in kmc.config.expand_tasks): task k's ions and kernel stream come
    # from SeedSequence(run.seed, spawn_key=(1, k)); its landscape L from
    # SeedSequence(run.seed, spawn_key=(0, L)), L = (index of the point's non-run/non-ions
    # values in order of first appearance) * replicas + replica. Here the only such key is
    # the amorphous fraction (point order: phi slowest), so L = phi_index * 4 + replica.
    phis = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    for t in tasks:
        own = np.random.SeedSequence(20261123, spawn_key=(1, t.index))
        assert t.seed.entropy == 20261123 and t.seed.spawn_key == (1, t.index)
        assert np.array_equal(t.seed.generate_state(4), own.generate_state(4))
        phi_index = phis.index(t.point["microstructure.amorphous_fraction"])
        landscape = phi_index * 4 + t.replica
        assert t.landscape == landscape
        assert t.landscape_seed.entropy == 20261123
        assert t.landscape_seed.spawn_key == (0, landscape)
        shared = np.random.SeedSequence(20261123, spawn_key=(0, landscape))
        assert np.array_equal(t.landscape_seed.generate_state(4), shared.generate_state(4))
    # every task has its own ion/kernel stream, distinct from every landscape stream
    states = {tuple(t.seed.generate_state(2)) for t in tasks}
    states |= {tuple(t.landscape_seed.generate_state(2)) for t in tasks}
    assert len(states) == 72 + 6 * 4
    # tasks differing only in run.temperature share landscape index and seed ...
    by_point = {(t.point["microstructure.amorphous_fraction"], t.replica): [] for t in tasks}
    for t in tasks:
        by_point[t.point["microstructure.amorphous_fraction"], t.replica].append(t)
    for group in by_point.values():
        assert [t.point["run.temperature"] for t in group] == [300.0, 350.0, 400.0]
        assert len({t.landscape for t in group}) == 1
        assert len({tuple(t.landscape_seed.generate_state(4)) for t in group}) == 1
        assert len({t.index for t in group}) == 3  # ... but not the ion/kernel seed
    # ... while a different phi or a different replica gives a different landscape
    assert len({t.landscape for t in tasks}) == len(by_point) == 6 * 4
    assert len({tuple(t.landscape_seed.generate_state(4)) for t in tasks}) == 6 * 4


def test_landscapes_shared_across_run_and_ions_keys_only():
    """ions.* and run.* sweeps reuse the landscape; any other swept key gets a new one, in
    order of first appearance (not of position in the product)."""
    data = {
        "lattice": {"kind": "square", "cells": [4, 4], "hop_distance": 1.0},
        "ions": {"concentration": 0.25},
        "crystal": {"saddle_energy": 0.3},
        "amorphous": {"saddle_energy": 0.5},
        "run": {"replicas": 2, "seed": 7},
        "sweep": {
            "ions.concentration": [0.25, 0.5],
            "crystal.saddle_energy": [0.3, 0.4, 0.5],
            "run.hops_per_ion": [10, 20],
        },
    }
    tasks = expand_tasks(parse_config(data))
    assert len(tasks) == 2 * 3 * 2 * 2
    for t in tasks:
        saddle_index = (0.3, 0.4, 0.5).index(t.config.crystal.saddle_energy.value)
        assert t.landscape == saddle_index * 2 + t.replica
        assert t.landscape_seed.spawn_key == (0, t.landscape)
        assert t.seed.spawn_key == (1, t.index)
    # the first task of the second concentration reuses landscape 0, not a new one
    second = [t for t in tasks if t.point["ions.concentration"] == 0.5]
    assert [t.landscape for t in second[:2]] == [0, 1]
    assert config_module.landscape_keys(tasks[0].plain_point) == {
        "crystal.saddle_energy": {"dist": "constant", "value": 0.3}
    }
    # run.seed changes every stream
    other = expand_tasks(parse_config({**data, "run": {"replicas": 2, "seed": 8}}))
    assert not np.array_equal(
        other[0].landscape_seed.generate_state(4), tasks[0].landscape_seed.generate_state(4)
    )


def test_sweep_lattice_cells_kind_and_distribution_parameter():
    data = parse_config(
        {
            "lattice": {"kind": "square", "hop_distance": 1.0},
            "ions": {"concentration": 0.25},
            "crystal": {"saddle_energy": 0.3},
            "amorphous": {"saddle_energy": {"dist": "normal", "mean": 0.7, "sigma": 0.1}},
            "run": {"replicas": 1},
            "sweep": {
                "lattice.cells": [[4, 4], [8, 8]],
                "amorphous": {"saddle_energy": {"sigma": [0.0, 0.05]}},  # unquoted dotted key
            },
        }
    )
    assert data.lattice.cells == (4, 4)  # left out of [lattice]: the first swept value
    assert data.sweep[0] == ("lattice.cells", ((4, 4), (8, 8)))
    assert data.sweep[1] == ("amorphous.saddle_energy.sigma", (0.0, 0.05))
    tasks = expand_tasks(data)
    assert [t.config.lattice.cells for t in tasks] == [(4, 4), (4, 4), (8, 8), (8, 8)]
    assert [t.config.amorphous.saddle_energy.sigma for t in tasks] == [0.0, 0.05, 0.0, 0.05]
    assert tasks[3].plain_point == {"lattice.cells": [8, 8], "amorphous.saddle_energy.sigma": 0.05}
    # memory is the maximum over the points
    small = parse_config(resolved_dict(tasks[0].config))
    assert estimate_memory(data) > estimate_memory(small) > 0


def test_memory_estimate_formula():
    config = parse_config(
        {
            "lattice": {"kind": "fcc", "cells": [3, 3, 3], "hop_distance": 1.0},
            "ions": {"count": 10},
            "crystal": {"saddle_energy": 0.3},
            "amorphous": {"saddle_energy": 0.5},
            "run": {"frames": 50},
        }
    )
    sites = 27 * 4
    assert estimate_memory(config) == sites * (300 + 100 * 12) + 10 * (96 * 50 + 200)
    assert config_module.task_memory(config) == estimate_memory(config)
    network = parse_config(
        {
            "lattice": {"kind": "fcc", "cells": [3, 3, 3], "hop_distance": 1.0},
            "ions": {"count": 10, "exclusion": False},
            "crystal": {"saddle_energy": 0.3},
            "amorphous": {"saddle_energy": 0.5},
            "run": {"method": "network"},
        }
    )  # small enough to go to the direct solver first: its fill-in is counted
    assert task_memory(network) == sites * (600 + 180 * 12) + sites * 16 * 1024


def test_task_disk_formula_and_network_stores_no_frames():
    data = {
        "lattice": {"kind": "square", "cells": [8, 8], "hop_distance": 1.0},
        "ions": {"count": 10, "exclusion": False},
        "crystal": {"saddle_energy": 0.3},
        "amorphous": {"saddle_energy": 0.5},
        "run": {"frames": 50},
        "sweep": {"run.method": ["kmc", "network"]},
    }
    kmc_task, network_task = (t.config for t in expand_tasks(parse_config(data))[::4])
    assert kmc_task.run.method == "kmc" and network_task.run.method == "network"
    # three stored coordinates even on a 2D lattice, an int32 site; step, time, box per frame
    per_frame = 10 * (3 * 8 + 4) + 8 + 8 + 3 * 8
    assert config_module.task_disk(kmc_task) == 50 * per_frame + 10 + 64 * 1024
    assert config_module.task_disk(network_task) == 10 + 64 * 1024


def test_network_without_exclusion_is_accepted():
    data = {
        "lattice": {"kind": "cubic", "cells": [4, 4, 4], "hop_distance": 1.0},
        "ions": {"concentration": 0.1, "exclusion": False},
        "crystal": {"saddle_energy": 0.3},
        "amorphous": {"saddle_energy": 0.5},
        "run": {"replicas": 1},
        "sweep": {"run.method": ["kmc", "network"]},
    }
    tasks = expand_tasks(parse_config(data))
    assert [t.config.run.method for t in tasks] == ["kmc", "network"]
    assert not any(t.config.ions.exclusion for t in tasks)
    data["run"]["method"] = "network"
    del data["sweep"]
    assert parse_config(data).run.method == "network"


# ------------------------------------------------------------------------------------------
# resolved_dict


@pytest.mark.parametrize("text", [SPEC_EXAMPLE, MINIMAL], ids=["spec-example", "minimal"])
def test_resolved_dict_round_trips(tmp_path, text):
    config = load_config(write(tmp_path, text))
    resolved = resolved_dict(config)
    again = parse_config(json.loads(json.dumps(resolved)), "elsewhere.toml")
    assert again == config
    assert resolved_dict(again) == resolved
    assert resolved["run"]["seed"] == config.run.seed
    assert resolved["amorphous"]["site_energy"]["dist"] in ("constant", "normal")
    for task in expand_tasks(config)[:3]:
        task_dict = json.loads(json.dumps(resolved_dict(task.config)))
        assert task_dict["sweep"] == {}
        assert parse_config(task_dict) == task.config


def test_work_budget_is_left_out_of_the_resolved_config_until_given(tmp_path):
    """Runs made before run.work_budget existed keep their identity: the default (100) is
    not written out; a value given, also inf (no cap), round-trips."""
    config = load_config(write(tmp_path, MINIMAL))
    assert config.run.work_budget is None and "work_budget" not in resolved_dict(config)["run"]
    for text, value in (("1e3", 1e3), ("inf", math.inf)):
        config = load_config(write(tmp_path, MINIMAL + f"[run]\nwork_budget = {text}\n"))
        assert config.run.work_budget == value
        resolved = json.loads(json.dumps(resolved_dict(config)))
        assert resolved["run"]["work_budget"] == value
        assert parse_config(resolved) == config


# ------------------------------------------------------------------------------------------
# Bad configs: each names its dotted key on one line

BAD = [
    # id, text, key (None: the file as a whole), fragment of the message
    ("toml-syntax", edit(MINIMAL, "kind = ", "kind "), None, "line 2"),
    ("unknown-key", edit(MINIMAL, "[ions]\n", "[ions]\ncolour = 1\n"), "ions.colour", "unknown"),
    (
        "misspelt-key",
        edit(MINIMAL, "hop_distance", "hop_distnace"),
        "lattice.hop_distnace",
        "did you mean 'hop_distance'?",
    ),
    (
        "key-in-wrong-table",
        edit(MINIMAL, "[ions]\n", "[ions]\ntemperature = 300\n"),
        "ions.temperature",
        "did you mean 'run.temperature'?",
    ),
    ("unknown-table", MINIMAL + "[runn]\nseed = 1\n", "runn", "did you mean 'run'?"),
    ("wrong-type", MINIMAL + '[run]\ntemperature = "300"\n', "run.temperature", "number"),
    ("bool-not-number", edit(MINIMAL, "2.0", "true"), "lattice.hop_distance", "boolean"),
    ("cells-not-ints", edit(MINIMAL, "[8, 8]", "[8.0, 8]"), "lattice.cells", "integer"),
    ("cells-too-small", edit(MINIMAL, "[8, 8]", "[1, 8]"), "lattice.cells", "≥ 2"),
    ("cells-wrong-length", edit(MINIMAL, "[8, 8]", "[8, 8, 8]"), "lattice.cells", "2 entries"),
    ("bad-lattice-kind", edit(MINIMAL, '"square"', '"sqaure"'), "lattice.kind", "'square'"),
    ("negative-temperature", MINIMAL + "[run]\ntemperature = -5.0\n", "run.temperature", "> 0"),
    (
        "zero-hop-distance",
        edit(MINIMAL, "2.0", "0.0"),
        "lattice.hop_distance",
        "0.001 ≤ x ≤ 1000 Å",
    ),
    (
        "blocked-fraction-one",
        edit(MINIMAL, "hop_distance = 2.0", "hop_distance = 2.0\nblocked_fraction = 1.0"),
        "lattice.blocked_fraction",
        "< 1",
    ),
    (
        "concentration-one",
        edit(MINIMAL, "count = 1", "concentration = 1.0"),
        "ions.concentration",
        "0 < x < 1",
    ),
    (
        "concentration-and-count",
        edit(MINIMAL, "count = 1", "count = 1\nconcentration = 0.2"),
        "ions.count",
        "not both",
    ),
    ("no-ions", edit(MINIMAL, "count = 1", ""), "ions.concentration", "missing"),
    ("count-too-large", edit(MINIMAL, "count = 1", "count = 65"), "ions.count", "64 free"),
    ("species", edit(MINIMAL, "[ions]\n", '[ions]\nspecies = "K"\n'), "ions.species", "Li | Na"),
    (
        "amorphous-fraction",
        MINIMAL + "[microstructure]\namorphous_fraction = 1.2\n",
        "microstructure.amorphous_fraction",
        "0 ≤ x ≤ 1",
    ),
    (
        "correlated-without-length",
        MINIMAL + '[microstructure]\nkind = "correlated"\n',
        "microstructure.correlation_length",
        "correlated",
    ),
    (
        "grains-without-diameter",
        MINIMAL + '[microstructure]\nkind = "grains"\n',
        "microstructure.grain_diameter",
        "grains",
    ),
    ("frames-too-few", MINIMAL + "[run]\nframes = 4\n", "run.frames", "≥ 8"),
    ("work-budget-low", MINIMAL + "[run]\nwork_budget = 0.5\n", "run.work_budget", "≥ 1"),
    ("work-budget-nan", MINIMAL + "[run]\nwork_budget = nan\n", "run.work_budget", "finite"),
    ("seed-negative", MINIMAL + "[run]\nseed = -1\n", "run.seed", "≥ 0"),
    ("seed-float", MINIMAL + "[run]\nseed = 1.0\n", "run.seed", "integer"),
    ("method", MINIMAL + '[run]\nmethod = "mc"\n', "run.method", "kmc | network"),
    ("replicas-zero", MINIMAL + "[run]\nreplicas = 0\n", "run.replicas", "≥ 1"),
    ("missing-table", MINIMAL.split("[crystal]")[0], "crystal", "missing required table"),
    ("missing-key", edit(MINIMAL, "hop_distance = 2.0\n", ""), "lattice.hop_distance", "missing"),
    (
        "per-axis-saddle-length",
        edit(MINIMAL, "saddle_energy = 0.3", "saddle_energy = [0.3, 0.4, 0.5]"),
        "crystal.saddle_energy",
        "2 entries",
    ),
    (
        "bad-distribution",
        edit(MINIMAL, "saddle_energy = 0.5", 'saddle_energy = {dist = "normal", mean = 0.5}'),
        "amorphous.saddle_energy",
        "'sigma'",
    ),
    (
        "negative-sigma",
        edit(MINIMAL, "saddle_energy = 0.5", 'saddle_energy = {dist="normal",mean=0.5,sigma=-1}'),
        "amorphous.saddle_energy",
        "sigma must be >= 0",
    ),
    (
        "dist-not-a-string",
        edit(MINIMAL, "saddle_energy = 0.5", "saddle_energy = {dist = [1], mean = 0.5}"),
        "amorphous.saddle_energy",
        "dist must be a string",
    ),
    (
        "sweep-conflicts-with-file",
        MINIMAL + '[sweep]\n"ions.concentration" = [0.1, 0.2]\n',
        "sweep.ions.concentration",
        "not both",
    ),
    ("nan", MINIMAL + "[run]\ntemperature = nan\n", "run.temperature", "finite"),
    (
        "empty-sweep",
        MINIMAL + '[sweep]\n"run.temperature" = []\n',
        "sweep.run.temperature",
        "empty",
    ),
    (
        "sweep-unknown-key",
        MINIMAL + '[sweep]\n"run.temprature" = [300]\n',
        "sweep.run.temprature",
        "did you mean 'run.temperature'?",
    ),
    (
        "sweep-out-of-range",
        MINIMAL + '[sweep]\n"microstructure.amorphous_fraction" = [0.5, 1.2]\n',
        "sweep.microstructure.amorphous_fraction",
        "entry 2 (1.2)",
    ),
    ("sweep-not-a-list", MINIMAL + '[sweep]\n"run.frames" = 10\n', "sweep.run.frames", "list"),
    ("sweep-seed", MINIMAL + '[sweep]\n"run.seed" = [1, 2]\n', "sweep.run.seed", "cannot"),
    (
        "sweep-duplicate",
        MINIMAL + '[sweep]\n"run.temperature" = [300, 350, 300.0]\n',
        "sweep.run.temperature",
        "entry 3 (300.0) is listed twice",
    ),
    (
        "sweep-duplicate-dist",
        MINIMAL
        + '[sweep]\n"amorphous.saddle_energy" = [0.5, { dist = "normal", mean = 0.5, sigma = 0.1 },'
        + ' { dist = "normal", mean = 0.5, sigma = 0.1 }]\n',
        "sweep.amorphous.saddle_energy",
        "listed twice",
    ),
    ("sweep-replicas", MINIMAL + '[sweep]\n"run.replicas" = [1]\n', "sweep.run.replicas", "cannot"),
    ("sweep-name", MINIMAL + '[sweep]\nname = ["a", "b"]\n', "sweep.name", "cannot"),
    (
        "sweep-duplicate",
        MINIMAL + '[sweep]\n"run.frames" = [10, 10]\n',
        "sweep.run.frames",
        "twice",
    ),
    (
        "sweep-point-invalid",
        MINIMAL + '[sweep]\n"lattice.kind" = ["square", "cubic"]\n',
        "lattice.cells",
        'lattice.kind = "cubic"',
    ),
    (
        "sweep-point-count",
        MINIMAL + '[sweep]\n"ions.count" = [1, 100]\n',
        "sweep.ions.count",
        "sweep point",
    ),
    (
        "sweep-dist-parameter-of-number",
        MINIMAL + '[sweep]\n"amorphous.saddle_energy.sigma" = [0.1]\n',
        "sweep.amorphous.saddle_energy.sigma",
        "not written as a {dist",
    ),
    (
        "too-large-for-memory",
        edit(edit(MINIMAL, '"square"', '"cubic"'), "[8, 8]", "[100000, 100000, 100000]"),
        "lattice.cells",
        "too large",
    ),
    (
        "network-with-exclusion",
        MINIMAL + '[run]\nmethod = "network"\n',
        "ions.exclusion",
        'run.method = "network" gives the dilute-limit (single-ion) D; it cannot model site '
        "exclusion: set ions.exclusion = false",
    ),
    (
        "network-swept-with-exclusion",
        MINIMAL + '[sweep]\n"run.method" = ["kmc", "network"]\n',
        "sweep.run.method",
        'set ions.exclusion = false (at the sweep point run.method = "network")',
    ),
    (
        "network-only-in-sweep-with-exclusion",
        MINIMAL + '[sweep]\n"run.method" = ["network"]\n',
        "sweep.run.method",
        "cannot model site exclusion",
    ),
    (
        "exclusion-swept-with-network",
        edit(MINIMAL, "count = 1", "count = 1\nexclusion = false")
        + '[run]\nmethod = "network"\n[sweep]\n"ions.exclusion" = [false, true]\n',
        "sweep.ions.exclusion",
        "(at the sweep point ions.exclusion = true)",
    ),
    (
        "field-wrong-shape",
        MINIMAL + "[run]\nfield = [1e4, 0, 0]\n",
        "run.field",
        "a field vector needs 2 components",
    ),
    ("field-nan", MINIMAL + "[run]\nfield = nan\n", "run.field", "finite"),
    ("field-not-a-number", MINIMAL + '[run]\nfield = "strong"\n', "run.field", "number"),
    # 1e9 V/cm (a V/m value taken for V/cm, times 1e7): q E a / kT = 1e9 1e-8 2 / 0.0259
    (
        "field-unit-mistake",
        MINIMAL + "[run]\nfield = 1e9\n",
        "run.field",
        "q E a / kT = 774 > 20 for the longest hop (2 Å) at 300 K: a unit mistake?",
    ),
    (
        "field-swept-unit-mistake",
        MINIMAL + '[sweep]\n"run.field" = [0, 1e5, 1e9]\n',
        "sweep.run.field",
        "a unit mistake?",
    ),
    (
        "field-direction-zero",
        MINIMAL + "[run]\nfield = 1e4\nfield_direction = [0, 0]\n",
        "run.field_direction",
        "zero vector",
    ),
    (
        "field-direction-shape",
        MINIMAL + "[run]\nfield = 1e4\nfield_direction = [1, 0, 0]\n",
        "run.field_direction",
        "needs 2 components",
    ),
    (
        "field-with-network",
        edit(MINIMAL, "count = 1", "count = 1\nexclusion = false")
        + '[run]\nmethod = "network"\nfield = 1e4\n',
        "run.field",
        "out of equilibrium",
    ),
    (
        "interaction-unknown-shell",
        MINIMAL + "[interactions]\nnext_nearest = 0.02\n",
        "interactions.next_nearest",
        "unknown key",
    ),
    (
        "interaction-not-a-number",
        MINIMAL + '[interactions]\nnearest_neighbour = "big"\n',
        "interactions.nearest_neighbour",
        "must be a number",
    ),
    (
        "interaction-nan",
        MINIMAL + "[interactions]\nnearest_neighbour = nan\n",
        "interactions.nearest_neighbour",
        "finite",
    ),
    (
        "interaction-hop-type-on-ideal-lattice",
        MINIMAL + "[interactions]\nhop_type = {H1 = 0.05}\n",
        "interactions.hop_type.H1",
        "unknown hop type",
    ),
    (
        "interaction-hop-type-nan",
        MINIMAL + "[interactions]\nhop_type = {H1 = nan}\n",
        "interactions.hop_type.H1",
        "finite",
    ),
    (
        "interaction-without-exclusion",
        edit(MINIMAL, "count = 1", "count = 1\nexclusion = false")
        + "[interactions]\nnearest_neighbour = 0.05\n",
        "interactions",
        "interactions need ions.exclusion = true",
    ),
    ("bad-name", 'name = "a/b"\n' + MINIMAL, "name", "directory name"),
    # issue 14: inputs that were accepted and then crashed or gave nonsense
    ("name-300-characters", f'name = "{"n" * 300}"\n' + MINIMAL, "name", "at most 255"),
    ("toml-nested-3000-deep", "x = " + "[" * 3000 + "]" * 3000 + "\n" + MINIMAL, None, "nested"),
    ("temperature-5-K", MINIMAL + "[run]\ntemperature = 5.0\n", "run.temperature", "underflows"),
    ("count-fills-every-site", edit(MINIMAL, "count = 1", "count = 64"), "ions.count", "no ion"),
    (
        "blocked-fraction-0.999",
        edit(edit(MINIMAL, "[8, 8]", "[32, 32]"), "2.0\n", "2.0\nblocked_fraction = 0.999\n"),
        "lattice.blocked_fraction",
        "no hop is possible",
    ),
    ("hop-distance-1e-308", edit(MINIMAL, "2.0", "1e-308"), "lattice.hop_distance", "1-10 Å"),
    ("hop-distance-1e308", edit(MINIMAL, "2.0", "1e308"), "lattice.hop_distance", "1-10 Å"),
    (
        "attempt-frequency-1e290",
        edit(MINIMAL, "[crystal]\n", "[crystal]\nattempt_frequency = 1e290\n"),
        "crystal.attempt_frequency",
        "1e12-1e14 Hz",
    ),
    (
        "attempt-frequency-1e-200",
        edit(MINIMAL, "[crystal]\n", "[crystal]\nattempt_frequency = 1e-200\n"),
        "crystal.attempt_frequency",
        "1e12-1e14 Hz",
    ),
    ("hops-per-ion-1e300", MINIMAL + "[run]\nhops_per_ion = 1e300\n", "run.hops_per_ion", "64-bit"),
    (
        "swept-temperature-underflows",
        MINIMAL + '[sweep]\n"run.temperature" = [300.0, 4.0]\n',
        "sweep.run.temperature",
        "no ion can move",
    ),
    ("table-not-table", "lattice = 3\n" + MINIMAL[MINIMAL.index("[ions]") :], "lattice", "table"),
]


@pytest.mark.parametrize(("text", "key", "fragment"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config_names_the_key(tmp_path, text, key, fragment):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    error = info.value
    message = str(error)
    assert "\n" not in message
    assert error.file == str(path)
    assert message.startswith(f"{path}: ")
    assert error.key == key
    if key is not None:
        assert message.startswith(f"{path}: {key}: ")
    assert fragment in message


def test_missing_file_and_directory(tmp_path):
    for path in (tmp_path / "nope.toml", tmp_path):
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert str(info.value).startswith(str(path) + ": ")
        assert "\n" not in str(info.value)


def test_parse_config_errors_use_source_and_pickle():
    with pytest.raises(ConfigError) as info:
        parse_config({"lattice": {}}, "inline.toml")
    assert str(info.value).startswith("inline.toml: ")
    again = pickle.loads(pickle.dumps(info.value))
    assert str(again) == str(info.value) and again.key == info.value.key


def test_field_magnitude_direction_and_vector():
    """A magnitude along field_direction (normalized), the first axis by default, or a
    vector; a field sweep is a task-only sweep (the landscape is shared)."""
    config = parse_config(tomllib.loads(MINIMAL + "[run]\nfield = 2e4\n"))
    np.testing.assert_array_equal(config.run.field_vector(2), [2e4, 0.0])
    config = parse_config(tomllib.loads(MINIMAL + "[run]\nfield = 5e4\nfield_direction = [3, 4]\n"))
    np.testing.assert_allclose(config.run.field_vector(2), [3e4, 4e4])
    config = parse_config(tomllib.loads(MINIMAL + "[run]\nfield = [1e3, -2e3]\n"))
    np.testing.assert_array_equal(config.run.field_vector(2), [1e3, -2e3])
    tasks = expand_tasks(parse_config(tomllib.loads(MINIMAL + '[sweep]\n"run.field" = [0, 1e4]\n')))
    assert tasks[0].landscape == tasks[len(tasks) // 2].landscape


def test_docstring_documents_every_key():
    doc = config_module.__doc__
    for key in config_module.ALL_KEYS:
        assert f"``{key}``" in doc, key


# --------------------------------------------------------------------------------------------
# Memory: the estimate against the measured peak

_MEASURE = """
import json, sys, tomllib
from kmc import config as cfg, experiment, store
import h5py, numpy, scipy.sparse.linalg  # noqa: F401 -- the interpreter's own, as in a run

def resident(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

config = cfg.parse_config(tomllib.loads(sys.argv[1]))
[task] = cfg.expand_tasks(config)
before = resident("VmRSS")
store.write_task(sys.argv[2], experiment.run_task(task))
print(json.dumps({"estimate": cfg.task_memory(task.config), "peak": resident("VmHWM") - before}))
"""


def _memory_config(method: str, cells: int) -> str:
    return f"""
[lattice]
kind = "cubic"
cells = [{cells}, {cells}, {cells}]
hop_distance = 3.0
[ions]
concentration = 0.05
exclusion = {str(method == "kmc").lower()}
[crystal]
saddle_energy = 0.5
[amorphous]
saddle_energy = {{ dist = "normal", mean = 0.4, sigma = 0.05 }}
[microstructure]
amorphous_fraction = 0.3
[run]
method = "{method}"
temperature = 600.0
hops_per_ion = 20
equilibration_hops_per_ion = 2
frames = 100
replicas = 1
"""


@pytest.mark.parametrize(
    ("method", "cells"),
    [
        ("kmc", 32),
        ("kmc", 64),
        ("network", 32),
        pytest.param("network", 64, marks=pytest.mark.slow),  # ~10 s of AMG-preconditioned CG
    ],
)
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
def test_memory_estimate_is_within_1_5x_of_the_measured_peak(tmp_path, method, cells):
    """One task in a fresh process: the growth of its peak resident set (VmHWM) over the
    interpreter's own is what task_memory estimates, within a factor 1.5 either way."""
    process = subprocess.run(
        [sys.executable, "-c", _MEASURE, _memory_config(method, cells), str(tmp_path / "t.h5md")],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert process.returncode == 0, process.stderr
    measured = json.loads(process.stdout)
    ratio = measured["estimate"] / measured["peak"]
    assert 1 / 1.5 <= ratio <= 1.5, measured


def test_memory_check_counts_the_ranks_on_a_node(monkeypatch):
    config = parse_config(tomllib.loads(MINIMAL))
    one = process_memory(task_memory(config), 1)
    assert one == PROCESS_BASELINE + task_memory(config)
    monkeypatch.setenv("MPI_LOCALNRANKS", "16")
    assert ranks_per_node() == 16
    assert process_memory(task_memory(config)) == 16 * one
    monkeypatch.setattr(memory_module, "available_memory", lambda: 10 * one)  # 8 usable ranks
    with pytest.raises(ConfigError, match="for the 16 ranks on this node"):
        parse_config(tomllib.loads(MINIMAL))
    monkeypatch.setenv("MPI_LOCALNRANKS", "4")
    parse_config(tomllib.loads(MINIMAL))


READY_CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.toml"))


@pytest.mark.parametrize("path", READY_CONFIGS, ids=lambda p: p.stem)
def test_every_ready_config_loads_and_expands(path):
    """Each config in configs/ loads and expands into (product of its sweep lists) ×
    replicas tasks."""
    config = load_config(path)
    sweep = tomllib.loads(path.read_text(encoding="utf-8")).get("sweep", {})
    points = int(np.prod([len(values) for values in sweep.values()]))
    assert len(expand_tasks(config)) == points * config.run.replicas


def test_state_of_charge_config_is_an_interacting_lattice_gas_above_percolation():
    """configs/nafepo4_state_of_charge.toml: a kMC lattice gas (exclusion) with a repulsive
    nearest-neighbour interaction on an even simple cubic box (bipartite: the order
    parameter applies), both microstructures at amorphous fractions above the random-site
    threshold 0.3116 of simple cubic, x swept over 0.1–0.9, and the tasks of one kind,
    fraction and replica on one landscape at every x."""
    path = next(p for p in READY_CONFIGS if p.stem == "nafepo4_state_of_charge")
    config = load_config(path)
    assert config.ions.exclusion and config.run.method == "kmc"
    assert config.interactions.active and config.interactions.nearest_neighbour > 0
    assert config.lattice.kind == "cubic" and all(n % 2 == 0 for n in config.lattice.cells)
    sweep = dict(config.sweep)
    assert set(sweep["microstructure.kind"]) == {"random", "correlated"}
    assert min(sweep["microstructure.amorphous_fraction"]) > 0.3116
    assert min(sweep["ions.concentration"]) == 0.1 and max(sweep["ions.concentration"]) == 0.9
    landscapes = {}
    for task in expand_tasks(config):
        point = task.plain_point
        key = (point["microstructure.kind"], point["microstructure.amorphous_fraction"])
        landscapes.setdefault((*key, task.replica), set()).add(task.landscape)
    assert all(len(indices) == 1 for indices in landscapes.values())
    assert len({i for indices in landscapes.values() for i in indices}) == len(landscapes)
