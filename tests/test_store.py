"""Task files (kmc.store): H5MD layout, exact round trip, MDAnalysis, atomic writes,
checksums and identity (byte flips, foreign files), setting damaged files aside."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import warnings

import h5py
import numpy as np
import pytest

from kmc.store import (
    ForeignTaskFileError,
    IncompleteTaskFileError,
    TaskData,
    TaskIdentity,
    atomic_write,
    is_complete,
    read_task,
    set_aside,
    task_filename,
    verify_task,
    write_task,
)

TRAJ = "particles/trajectory"
PARAMETERS = {
    "name": "nafepo4-amorphization",
    "lattice": {"kind": "cubic", "cells": [4, 3, 2], "hop_distance": 3.4, "blocked_fraction": 0.0},
    "ions": {"species": "Na", "concentration": 0.1, "exclusion": True},
    "crystal": {"attempt_frequency": 1e13, "site_energy": 0.0, "saddle_energy": [2.5, 0.3, 2.5]},
    "amorphous": {
        "site_energy": {"dist": "normal", "mean": 0.0, "sigma": 0.05},
        "saddle_energy": {"dist": "discrete", "values": [0.30, 0.45], "weights": [0.5, 0.5]},
    },
    "run": {"temperature": 300.0, "frames": 7, "seed": 20261123, "note": "ångström ✓"},
    "sweep": {"microstructure.amorphous_fraction": [0.0, 0.5], "tags": [], "mixed": [1, "a"]},
    "per_axis": [{"dist": "uniform", "low": 0.3, "high": 0.4}, 0.5],
}


def make_task(dim: int = 3, n_frames: int = 7, n_ions: int = 5, seed: int = 0) -> TaskData:
    rng = np.random.default_rng(seed)
    steps = rng.choice([-3.4, 0.0, 3.4], size=(n_frames, n_ions, dim))
    return TaskData(
        times=np.linspace(0.0, 6.0e-9, n_frames),
        positions=rng.uniform(0, 20, size=(1, n_ions, dim)) + np.cumsum(steps, axis=0),
        sites=rng.integers(0, 24**3, size=(n_frames, n_ions)).astype(np.int32),
        box=np.array([13.6, 10.2, 6.8][:dim]),
        species="Na",
        parameters=PARAMETERS,
        task=17,
        seed_entropy=2**70 + 12345,
        spawn_key=(17, 3),
        observables={"D_tracer": 1.25e-9, "D_jump": 3.0e-9, "haven_ratio": 0.41, "hops": 1234},
    )


def assert_same(a: TaskData, b: TaskData, *, positions: bool = True) -> None:
    np.testing.assert_array_equal(a.times, b.times)
    np.testing.assert_allclose(a.box, b.box, rtol=1e-12)
    if positions:
        assert a.positions.dtype == np.float64 and a.sites.dtype == np.int32
        np.testing.assert_allclose(a.positions, b.positions, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(a.sites, b.sites)
    assert a.species == b.species
    assert a.parameters == b.parameters
    assert (a.task, a.seed_entropy, a.spawn_key) == (b.task, b.seed_entropy, b.spawn_key)
    assert a.observables == b.observables
    assert all(type(a.observables[k]) is type(b.observables[k]) for k in a.observables)


def test_task_filename():
    assert task_filename(17) == "task-000017.h5md"
    assert task_filename(0) == "task-000000.h5md"
    with pytest.raises(ValueError):
        task_filename(-1)


@pytest.mark.parametrize("dim", [3, 2, 1])
def test_round_trip(tmp_path, dim):
    data = make_task(dim)
    path = tmp_path / task_filename(data.task)
    write_task(path, data)
    assert is_complete(path)
    back = read_task(path)
    assert back.positions.shape == data.positions.shape
    assert_same(back, data)
    assert back.seed_entropy > 2**64


def test_metadata_only_read(tmp_path):
    data = make_task(2, n_frames=4, n_ions=3)
    path = tmp_path / task_filename(3)
    write_task(str(path), data, compression=None)
    meta = read_task(path, positions=False)
    assert meta.positions.shape == (0, 3, 2) and meta.sites.shape == (0, 3)
    assert_same(meta, data, positions=False)


@pytest.mark.parametrize("dim", [3, 2])
def test_mdanalysis_opens_task_file(tmp_path, dim):
    mda = pytest.importorskip("MDAnalysis")
    data = make_task(dim)
    path = tmp_path / task_filename(data.task)
    write_task(path, data)
    with warnings.catch_warnings():  # topology guessing: no names/types in a bare trajectory
        warnings.simplefilter("ignore", UserWarning)
        u = mda.Universe(str(path))
    assert u.trajectory.n_frames == len(data.times)
    assert u.atoms.n_atoms == data.positions.shape[1]
    for ts in u.trajectory:
        k = ts.frame
        np.testing.assert_allclose(ts.positions[:, :dim], data.positions[k], rtol=1e-5, atol=1e-4)
        np.testing.assert_array_equal(ts.positions[:, dim:], 0.0)
        assert ts.time == pytest.approx(data.times[k] * 1e12, rel=1e-9, abs=1e-9)  # s -> ps
        np.testing.assert_allclose(ts.dimensions[:dim], data.box, rtol=1e-6)
        np.testing.assert_allclose(ts.dimensions[dim:3], data.box.max(), rtol=1e-6)
        np.testing.assert_allclose(ts.dimensions[3:], 90.0)
    u.trajectory.close()


def test_h5md_layout(tmp_path):
    data = make_task(2)
    path = tmp_path / task_filename(data.task)
    write_task(path, data)
    with h5py.File(path, "r") as f:
        h5md = f["h5md"]
        np.testing.assert_array_equal(h5md.attrs["version"], [1, 1])
        assert h5md.attrs["kmc_complete"] == 1
        assert "name" in h5md["author"].attrs
        assert h5md["creator"].attrs["name"] == b"kmc"
        assert "version" in h5md["creator"].attrs
        traj = f[TRAJ]
        pos = traj["position"]
        assert pos["time"].attrs["unit"] == "s" and pos["value"].attrs["unit"] == "nm"
        assert pos["value"].shape == (7, 5, 3)
        np.testing.assert_array_equal(pos["step"][()], np.arange(7))
        np.testing.assert_allclose(pos["value"][:, :, :2], data.positions / 10.0, rtol=1e-15)
        box = traj["box"]
        assert box.attrs["dimension"] == 3
        assert [b.decode() for b in box.attrs["boundary"]] == ["periodic", "periodic", "none"]
        edges = box["edges"]
        assert edges["value"].shape == (7, 3) and edges["value"].attrs["unit"] == "nm"
        for element in (edges, traj["lattice_site"]):  # hard links, not copies
            assert element["step"].id == pos["step"].id
            assert element["time"].id == pos["time"].id
        species = traj["species"]
        assert h5py.check_enum_dtype(species.dtype) == {"Li": 3, "Na": 11}
        np.testing.assert_array_equal(species[()], 11)
        params = f["parameters"]
        assert params.attrs["seed_entropy"] == str(2**70 + 12345)
        np.testing.assert_array_equal(params.attrs["spawn_key"], [17, 3])
        assert params.attrs["task"] == 17
        assert params["lattice"].attrs["kind"] == "cubic"
        np.testing.assert_array_equal(params["lattice"].attrs["cells"], [4, 3, 2])
        assert params["amorphous/site_energy"].attrs["sigma"] == 0.05
        assert f["observables"].attrs["D_tracer"] == 1.25e-9
        for name in ("position/value", "lattice_site/value"):
            dset = traj[name]
            assert dset.compression == "gzip" and dset.chunks is not None
            assert dset.chunks[1:] == dset.shape[1:]  # chunked along frames


def test_no_temporary_file_left(tmp_path):
    data = make_task()
    write_task(tmp_path / task_filename(17), data)
    write_task(tmp_path / task_filename(17), data)  # overwriting is fine too
    assert sorted(os.listdir(tmp_path)) == [task_filename(17)]


def test_truncated_file_is_incomplete(tmp_path):
    path = tmp_path / task_filename(17)
    write_task(path, make_task(n_frames=50, n_ions=40))
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size // 2)
    assert not is_complete(path)
    with pytest.raises(ValueError, match=re.escape(task_filename(17))):
        read_task(path)


def test_incomplete_and_foreign_files(tmp_path):
    assert not is_complete(tmp_path / "missing.h5md")
    with pytest.raises(FileNotFoundError):
        read_task(tmp_path / "missing.h5md")
    junk = tmp_path / "junk.h5md"
    junk.write_bytes(b"not an HDF5 file at all")
    assert not is_complete(junk)
    with pytest.raises(ValueError, match=re.escape("junk.h5md")):
        read_task(junk)
    path = tmp_path / task_filename(1)
    write_task(path, make_task())
    with h5py.File(path, "r+") as f:  # a file whose writer died before the marker
        del f["h5md"].attrs["kmc_complete"]
    assert not is_complete(path)
    with pytest.raises(ValueError, match="completion marker"):
        read_task(path)
    empty = tmp_path / "empty.h5md"
    empty.touch()
    assert not is_complete(empty)


def test_failure_midway_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / task_filename(17)
    original = h5py.Group.create_dataset

    def failing(self, name, *args, **kwargs):
        if self.name.endswith("lattice_site"):
            raise OSError("disk full (simulated)")
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", failing)
    with pytest.raises(OSError, match="simulated"):
        write_task(path, make_task())
    assert os.listdir(tmp_path) == []


def test_failed_rewrite_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / task_filename(17)
    first = make_task(seed=1)
    write_task(path, first)

    def failing_replace(src, dst):
        raise OSError("rename failed (simulated)")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        write_task(path, make_task(seed=2))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == [task_filename(17)]
    assert_same(read_task(path), first)


def test_atomic_write_replaces_on_success_and_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "results.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="midway"), atomic_write(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("midway")
    assert os.listdir(tmp_path) == ["results.txt"] and path.read_text() == "old"
    with atomic_write(path, durable=True) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".results.txt.tmp.")
        tmp.write_text("new")
    assert os.listdir(tmp_path) == ["results.txt"] and path.read_text() == "new"


def test_invalid_data_rejected_before_writing(tmp_path):
    good = make_task()
    bad = [
        {"positions": good.positions[:, :, :2]},  # box has 3 edges
        {"sites": good.sites[:, :3]},
        {"species": "K"},
        {"box": np.array([1.0, -1.0, 1.0])},
        {"times": good.times[::-1]},
        {"parameters": {"x": object()}},
        {"observables": {"D": [1.0, 2.0]}},  # numbers and strings only
        {"observables": {"D": None}},
        # the summed displacement needs one row of d components per fine time
        {"collective_times": np.linspace(0.0, 6.0e-9, 13), "collective": np.zeros((13, 2))},
        {"collective_times": np.linspace(0.0, 6.0e-9, 13), "collective": np.zeros((12, 3))},
    ]
    for change in bad:
        fields = {**good.__dict__, **change}
        with pytest.raises(ValueError):
            write_task(tmp_path / "bad.h5md", TaskData(**fields))
    with pytest.raises(ValueError):
        write_task(tmp_path / "bad.h5md", good, compression="zstd")
    assert os.listdir(tmp_path) == []


def test_float_observables_are_exact(tmp_path):
    data = make_task()
    obs = {"D_tracer": math.pi * 1e-9, "conductivity": 1 / 3, "kernel_seconds": 0.0}
    data = TaskData(**{**data.__dict__, "observables": obs})
    write_task(tmp_path / "t.h5md", data)
    assert read_task(tmp_path / "t.h5md").observables == obs


@pytest.mark.parametrize("dim", [3, 2, 1])
def test_string_observables_and_collective_displacement_round_trip(tmp_path, dim):
    """String observables (e.g. diffusive_reason, also empty or non-ASCII) come back as str;
    the lattice gas's fine summed displacement comes back (in Å, times in s) in
    /collective_displacement, and only when positions are read."""
    full = make_task(dim)
    fine_times = np.linspace(0.0, 6.0e-9, 16 * 6 + 1)
    rng = np.random.default_rng(5)
    collective = np.cumsum(rng.choice([-3.4, 0.0, 3.4], size=(fine_times.size, dim)), axis=0)
    collective -= collective[0]
    obs = {
        **full.observables,
        "diffusive_reason": "MSD grew only 3.2 a² over [T/4, T/2] — rattling",
        "empty": "",
        "D_tracer_upper": math.pi * 1e-9,
    }
    data = TaskData(
        **{
            **full.__dict__,
            "observables": obs,
            "collective_times": fine_times,
            "collective": collective,
        }
    )
    path = tmp_path / task_filename(data.task)
    write_task(path, data)
    back = read_task(path)
    assert_same(back, data)
    assert back.observables["diffusive_reason"] == obs["diffusive_reason"]
    assert type(back.observables["empty"]) is str and back.observables["empty"] == ""
    np.testing.assert_array_equal(back.collective_times, fine_times)
    assert back.collective.dtype == np.float64 and back.collective.shape == (97, dim)
    np.testing.assert_allclose(back.collective, collective, rtol=1e-12, atol=1e-12)
    with h5py.File(path, "r") as f:
        assert f["collective_displacement/time"].attrs["unit"] == "s"
        assert f["collective_displacement/value"].attrs["unit"] == "nm"
        np.testing.assert_allclose(f["collective_displacement/value"][()], collective / 10)
    meta = read_task(path, positions=False)
    assert meta.collective is None and meta.collective_times is None
    assert meta.observables == obs
    # a task without one (independent walkers) has none on reading back either
    plain = tmp_path / "plain.h5md"
    write_task(plain, full)
    assert read_task(plain).collective is None and read_task(plain).collective_times is None
    with h5py.File(plain, "r") as f:
        assert "collective_displacement" not in f


@pytest.mark.parametrize("dim", [3, 2, 1])
def test_zero_frame_round_trip(tmp_path, dim):
    """A task without trajectory (run.method = "network"): F = 0 frames, observables only."""
    full = make_task(dim, n_ions=4)
    data = TaskData(
        **{
            **full.__dict__,
            "times": np.empty(0),
            "positions": np.empty((0, 4, dim)),
            "sites": np.empty((0, 4), dtype=np.int32),
            "observables": {"D_tracer": 2.5e-7, "D_jump": 2.5e-7, "hops": 0, "fit_start": math.nan},
        }
    )
    path = tmp_path / task_filename(data.task)
    write_task(path, data)
    assert is_complete(path)
    for positions in (True, False):
        back = read_task(path, positions=positions)
        assert back.times.shape == (0,)
        assert back.positions.shape == (0, 4, dim) and back.sites.shape == (0, 4)
        np.testing.assert_allclose(back.box, data.box, rtol=1e-12)
        assert math.isnan(back.observables.pop("fit_start"))
        assert back.observables == {"D_tracer": 2.5e-7, "D_jump": 2.5e-7, "hops": 0}
        assert (back.parameters, back.task, back.species) == (PARAMETERS, 17, "Na")
    with h5py.File(path, "r+") as f:  # the completion marker still decides
        del f["h5md"].attrs["kmc_complete"]
    assert not is_complete(path)


# --------------------------------------------------------------------------- integrity

DIGEST = "d" * 64  # a run's config digest (kmc.config.config_digest)
FLIPS = 2000  # byte positions flipped, drawn across the whole file


def identity_of(data: TaskData) -> TaskIdentity:
    return TaskIdentity(data.run_digest, data.task, data.seed_entropy, data.spawn_key)


def flip_task() -> TaskData:
    """A small task file with everything a result is read from: frames, a collective
    series, numeric and string observables, the run's identity."""
    data = make_task(n_frames=12, n_ions=6)
    rng = np.random.default_rng(5)
    return dataclasses.replace(
        data,
        observables={**data.observables, "diffusive_reason": "", "fit_start": 1e-9},
        collective_times=np.linspace(0.0, 6.0e-9, 48),
        collective=np.cumsum(rng.normal(size=(48, 3)), axis=0),
        run_digest=DIGEST,
    )


def same_result(a: TaskData, b: TaskData) -> bool:
    """Bit-for-bit the same data (NaN equal to NaN)."""
    arrays = ("times", "positions", "sites", "box", "collective_times", "collective")
    return (
        all(
            np.array_equal(getattr(a, k), getattr(b, k), equal_nan=True)
            if getattr(a, k) is not None and getattr(b, k) is not None
            else getattr(a, k) is getattr(b, k)
            for k in arrays
        )
        and json.dumps(a.observables, sort_keys=True) == json.dumps(b.observables, sort_keys=True)
        and (a.species, a.parameters, a.identity) == (b.species, b.parameters, b.identity)
    )


def _regions(path) -> list[tuple[int, int, str]]:
    """(start, stop, kind) of every raw-data block of the file: chunks and contiguous
    datasets; everything else is HDF5 metadata (superblock, object headers, chunk index
    B-trees, heaps, attributes)."""
    regions = []

    def visit(name, obj):
        if not isinstance(obj, h5py.Dataset) or obj.id.get_storage_size() == 0:
            return
        if obj.chunks is None:
            start = obj.id.get_offset()
            regions.append((start, start + obj.id.get_storage_size(), "contiguous data"))
            return
        for i in range(obj.id.get_num_chunks()):
            info = obj.id.get_chunk_info(i)
            regions.append((info.byte_offset, info.byte_offset + info.size, "chunk data"))

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return regions


def test_no_byte_flip_is_ever_read_as_a_different_result(tmp_path):
    """Flip 2000 bytes of a task file, one at a time, at positions drawn across all of it
    (metadata: superblock, object headers, the chunk index, heaps, attributes; chunked and
    contiguous raw data): each flip is either harmless (the file reads back bit-for-bit
    equal) or detected with the path named; never a different result."""
    clean_path = tmp_path / task_filename(17)
    write_task(clean_path, flip_task())
    clean = read_task(clean_path, expect=identity_of(flip_task()))
    raw = clean_path.read_bytes()
    regions = _regions(clean_path)
    rng = np.random.default_rng(2026)
    positions = rng.choice(len(raw), size=min(FLIPS, len(raw)), replace=False)
    flipped = tmp_path / "flipped" / task_filename(17)
    flipped.parent.mkdir()
    outcome: dict[str, dict[str, int]] = {}
    for pos in positions:
        kind = next((k for a, b, k in regions if a <= pos < b), "metadata")
        damaged = bytearray(raw)
        damaged[pos] ^= 1 << int(rng.integers(8))
        flipped.write_bytes(damaged)
        try:
            data = read_task(flipped, expect=clean.identity)
        except IncompleteTaskFileError as exc:
            assert str(exc).startswith(f"{flipped}: "), exc  # named
            assert not is_complete(flipped, clean.identity)  # not complete: redone
            result = "detected"
        else:
            assert same_result(data, clean), f"flip at byte {pos} ({kind}) read as data"
            result = "harmless"
        counts = outcome.setdefault(kind, {"detected": 0, "harmless": 0})
        counts[result] += 1
    assert {"metadata", "chunk data", "contiguous data"} <= set(outcome), outcome
    assert outcome["metadata"]["detected"] + outcome["metadata"]["harmless"] > 1000, outcome
    assert outcome["chunk data"]["detected"] > 50, outcome  # raw frames are covered


def test_foreign_task_file_is_refused(tmp_path):
    """A complete, intact file of another run, task or seed never passes as this task's."""
    data = flip_task()
    path = tmp_path / task_filename(17)
    write_task(path, data)
    mine = identity_of(data)
    assert is_complete(path, mine) and read_task(path, expect=mine).task == 17
    others = {
        "run (config digest)": dataclasses.replace(mine, run_digest="e" * 64),
        "seed entropy": dataclasses.replace(mine, seed_entropy=mine.seed_entropy + 1),
        "spawn key": dataclasses.replace(mine, spawn_key=(17, 4)),
        "task": dataclasses.replace(mine, task=16),
    }
    for what, other in others.items():
        assert not is_complete(path, other)
        with pytest.raises(ForeignTaskFileError, match=re.escape(what)):
            read_task(path, expect=other)
        assert "belongs to another run" in verify_task(path, other)


def test_file_without_checksum_or_with_edited_config_is_not_complete(tmp_path):
    path = tmp_path / task_filename(17)
    write_task(path, flip_task())
    with h5py.File(path, "r+") as f:  # the config analyze takes T and the hop from
        text = f["parameters"].attrs["config_json"].replace("3.4", "4.4")
        f["parameters"].attrs["config_json"] = text
    assert "checksum mismatch" in verify_task(path)
    with pytest.raises(IncompleteTaskFileError, match="checksum mismatch"):
        read_task(path, positions=False)
    write_task(path, flip_task())
    with h5py.File(path, "r+") as f:  # as an older kmc wrote it
        del f["h5md"].attrs["kmc_sha256_meta"]
    assert verify_task(path) == "no checksum (written by an older kmc)"


def test_set_aside_keeps_every_damaged_file(tmp_path):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    for n in range(3):
        (tasks / task_filename(4)).write_bytes(b"damaged %d" % n)
        moved = set_aside(tasks / task_filename(4))
        assert moved.parent == tasks / "damaged" and moved.read_bytes() == b"damaged %d" % n
    assert not (tasks / task_filename(4)).exists()
    assert sorted(p.name for p in (tasks / "damaged").iterdir()) == [
        "task-000004.1.h5md",
        "task-000004.2.h5md",
        "task-000004.h5md",
    ]
