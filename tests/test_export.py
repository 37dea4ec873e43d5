"""Tests of kmc.export: extended XYZ that ASE reads back exactly."""

from __future__ import annotations

import numpy as np
import pytest

from kmc.export import export_extxyz
from kmc.store import TaskData, read_task, write_task


def make_task_file(tmp_path, dim: int, n_frames: int = 6, n_ions: int = 5, box=None):
    rng = np.random.default_rng(dim)
    box = np.array([13.6, 10.2, 6.8][:dim]) if box is None else box
    steps = rng.choice([-3.4, 0.0, 3.4], size=(n_frames - 1, n_ions, dim))
    start = rng.uniform(0, 6.8, size=(1, n_ions, dim))
    data = TaskData(
        times=np.linspace(0.0, 5.0e-9, n_frames),
        positions=np.concatenate([start, start + np.cumsum(steps, axis=0)]),
        sites=rng.integers(0, 1000, size=(n_frames, n_ions)).astype(np.int32),
        box=box,
        species="Li",
        parameters={"config": {}, "point": {}, "replica": 0},
        task=3,
        seed_entropy=1,
        spawn_key=(3,),
        observables={"D_tracer": 1e-9},
    )
    path = tmp_path / "task-000003.h5md"
    write_task(path, data)
    return path


@pytest.mark.parametrize("dim", [3, 2, 1])
def test_extxyz_read_by_ase(tmp_path, dim):
    ase_io = pytest.importorskip("ase.io")
    task_file = make_task_file(tmp_path, dim)
    stored = read_task(task_file)
    out = tmp_path / "traj.extxyz"
    assert export_extxyz(task_file, out) == 6
    frames = ase_io.read(out, index=":", format="extxyz")
    assert len(frames) == 6
    expected_cell = np.diag(np.r_[stored.box, [stored.box.max()] * (3 - dim)])
    for k, atoms in enumerate(frames):
        assert len(atoms) == 5
        assert atoms.get_chemical_symbols() == ["Li"] * 5
        padded = np.zeros((5, 3))
        padded[:, :dim] = stored.positions[k]
        np.testing.assert_allclose(atoms.positions, padded, rtol=1e-11, atol=1e-11)
        np.testing.assert_array_equal(atoms.arrays["site"], stored.sites[k])
        np.testing.assert_allclose(atoms.cell.array, expected_cell)
        assert list(atoms.pbc) == [axis < dim for axis in range(3)]
        assert atoms.info["Time"] == pytest.approx(stored.times[k], rel=1e-11, abs=0)


def test_extxyz_text_layout(tmp_path):
    out = tmp_path / "traj.xyz"
    export_extxyz(make_task_file(tmp_path, 2, n_frames=2, n_ions=1), out)
    lines = out.read_text().splitlines()
    assert len(lines) == 2 * (2 + 1)
    assert lines[0] == "1"
    assert 'Lattice="13.6 0.0 0.0 0.0 10.2 0.0 0.0 0.0 13.6"' in lines[1]
    assert "Properties=species:S:1:pos:R:3:site:I:1" in lines[1]
    assert "Time=0.0" in lines[1] and 'pbc="T T F"' in lines[1]
    fields = lines[2].split()
    assert fields[0] == "Li" and len(fields) == 5 and fields[3] == "0.0"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_export_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        export_extxyz(tmp_path / "task-000000.h5md", tmp_path / "out.xyz")
    assert not (tmp_path / "out.xyz").exists()


def test_triclinic_box_and_framework(tmp_path):
    """A triclinic box comes back as its three vectors, and framework atoms follow the ions
    in every frame, unchanged, with site -1."""
    ase_io = pytest.importorskip("ase.io")
    box = np.array([[13.6, 0.0, 0.0], [2.0, 10.2, 0.0], [1.0, 1.5, 6.8]])
    task_file = make_task_file(tmp_path, 3, box=box)
    framework = (["Fe", "O"], np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    out = tmp_path / "traj.extxyz"
    assert export_extxyz(task_file, out, framework=framework) == 6
    stored = read_task(task_file)
    for k, atoms in enumerate(ase_io.read(out, index=":", format="extxyz")):
        np.testing.assert_allclose(atoms.cell.array, box, rtol=1e-12)
        assert atoms.get_chemical_symbols() == ["Li"] * 5 + ["Fe", "O"]
        np.testing.assert_allclose(atoms.positions[:5], stored.positions[k], atol=1e-9)
        np.testing.assert_allclose(atoms.positions[5:], framework[1], atol=1e-12)
        assert list(atoms.arrays["site"][5:]) == [-1, -1]
