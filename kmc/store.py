"""Task files: one H5MD 1.1 file per task, written atomically, read back, checked for completeness.

A task file is a valid H5MD 1.1 file that ``MDAnalysis.Universe(path)`` opens directly (the
reader is chosen by the ``.h5md`` extension). Layout (``F`` frames, ``N`` ions, lattice
dimension ``d``; the H5MD box is always 3-dimensional, missing axes are padded)::

    /h5md                              +version [1, 1], +kmc_sha256_meta, +kmc_sha256_frames,
                                       +kmc_complete 1 (the three written last)
        author                         +name
        creator                        +name "kmc", +version
    /particles/trajectory
        position
            step     int64 (F,)        frame index 0..F-1
            time     float64 (F,)      +unit "s"
            value    float64 (F, N, 3) +unit "nm"; unwrapped; padded components are 0
        box                            +dimension 3, +boundary ["periodic"]*d + ["none"]*(3-d)
                                       +kmc_lattice_dimension d
            edges
                step, time             hard links to position/step and position/time
                value    float64 (F, 3) +unit "nm"; padded axes hold a placeholder (see below);
                         (F, 3, 3) box vectors as rows for a triclinic structure supercell
        lattice_site
            step, time                 hard links to position/step and position/time
            value    int32 (F, N)      lattice site index of each ion in each frame
        species  enum{Li: 3, Na: 11} (N,)  +name "Li" | "Na"
    /parameters                        +config_json (the whole resolved config, exact)
                                       +task, +seed_entropy (decimal string), +spawn_key
                                       +species, +run_digest (the identity of the run: see
                                       below); the config mirrored as groups/attributes
    /observables                       one float64, int64 or string attribute per per-task
                                       observable
    /collective_displacement           lattice gas only: Σ_i (r_i(t) − r_i(0)) on a grid 16
        time     float64 (M,)          times finer than the frames, +unit "s"
        value    float64 (M, d)        +unit "nm" (read back in Å); D_σ is estimated from it

A task without a trajectory (``run.method = "network"`` solves for D directly) has F = 0:
empty position/time/step/lattice_site datasets (unchunked, unfiltered) and, since there is
no frame to hang a time-dependent box on, H5MD's time-independent form of the box,
``box/edges  float64 (3,) +unit "nm"``. Its results are the stored ``/observables``.
MDAnalysis need not open such a file.

Notes on choices forced by MDAnalysis (checked against MDAnalysis 2.11):

* H5MD allows time-independent observables as scalar datasets (``/observables/X: Float[]``),
  but MDAnalysis's H5MDReader reads every child of ``/observables`` as a time-dependent
  element on every frame and fails on a scalar dataset ("Can't iterate over a scalar
  dataset"; MDAnalysis issue #4598). The per-task observables are therefore attributes of
  the ``/observables`` group, which H5MD permits and MDAnalysis ignores.
* MDAnalysis only accepts ``box/dimension == 3`` and ignores ``boundary``. For ``d < 3`` the
  padded axes are marked ``"none"`` as H5MD prescribes; their ``edges`` entries are mere
  placeholders (H5MD) set to the largest real edge, so that MDAnalysis sees a positive,
  well-formed box (a zero edge breaks distance calculations under periodic boundaries).
  All padded position components are 0, so the placeholder never affects any distance.
* The time unit ``"s"`` is understood by MDAnalysis (``ts.time`` comes out in ps), and
  ``"nm"`` positions are converted to Å.

Position and lattice-site datasets are chunked along frames (several frames per chunk, up
to ~256 KiB; a single frame is split along ions above ~4 MiB), gzip-compressed (level 1)
and checksummed (Fletcher-32). Lattice sites go through the shuffle filter first, positions
do not: lattice positions repeat the same 8-byte values, which deflate matches directly and
shuffling would scatter (measured on a 32³ lattice gas, 100 frames: positions 1.8× smaller
and 3× faster to write than with shuffle at level 4; writing is then a few per cent of a
typical task's run time).

Integrity. Two SHA-256 digests, stored as attributes of ``/h5md``, cover every byte a result
is read from: ``kmc_sha256_meta`` the parameters (``config_json``, task, seeds, species,
``run_digest``), the observables, the frame times and steps, the box and the lattice
dimension, the species; ``kmc_sha256_frames`` the positions, the lattice sites and the
collective series. They are computed over a canonical form of the content as read back
through h5py (each array's dtype, shape and bytes; scalars and strings as sorted JSON), so
they catch damage anywhere — data, chunk index, object headers, attributes — that changes
what a reader gets. Every read verifies them: :func:`read_task` checks ``kmc_sha256_meta``
(and ``kmc_sha256_frames`` when it reads the frames); :func:`verify_task` and
:func:`is_complete` check both, so a file is complete only if its whole content verifies
(not just its last frame). A file without digests (an older kmc) is not complete.

Identity. ``run_digest`` is the SHA-256 of the run's config as the run directory compares
it (:func:`kmc.config.config_digest`); with the task index, the seed entropy and the spawn
key it is a :class:`TaskIdentity`. Given ``expect=``, a reader refuses a file whose identity
differs (:class:`ForeignTaskFileError`): a file copied in from another run or seed is never
read as data. :func:`set_aside` moves a damaged or foreign file to ``tasks/damaged/`` (it is
kept, never deleted) so that the next run redoes the task.

A file is written to ``.<name>.tmp.<pid>`` in the destination directory, the completion
marker ``/h5md.attrs["kmc_complete"] = 1`` is written last, the file is closed and fsynced
and then renamed onto its final name with :func:`os.replace`. A failed write removes the
temporary file and leaves any previous file at ``path`` untouched.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import itertools
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from kmc.units import ANGSTROM_PER_NM

__all__ = [
    "ForeignTaskFileError",
    "IncompleteTaskFileError",
    "TaskData",
    "TaskIdentity",
    "atomic_write",
    "is_complete",
    "read_task",
    "set_aside",
    "task_filename",
    "verify_task",
    "write_task",
]

H5MD_VERSION = (1, 1)
COMPLETE_ATTR = "kmc_complete"
META_DIGEST_ATTR, FRAMES_DIGEST_ATTR = "kmc_sha256_meta", "kmc_sha256_frames"
#: The ``status`` observable of a task: it ran its plan, or was stopped at run.work_budget.
COMPLETE, BUDGET_EXCEEDED = "complete", "budget exceeded"
#: Subdirectory of ``tasks/`` where damaged or foreign task files are set aside.
DAMAGED_DIR = "damaged"
DISTRIBUTION = "kmc-amorph"

#: Species that a task file can hold, with the HDF5 enumeration value (atomic number).
SPECIES = {"Li": 3, "Na": 11}

_GZIP_LEVEL = 1
_CHUNK_TARGET_BYTES = 256 * 1024  # frames per chunk: as many as fit (>= 1)
_CHUNK_MAX_BYTES = 4 * 1024 * 1024  # above this a single frame is split along ions
_RESERVED_PARAMETER_ATTRS = frozenset(
    {"config_json", "task", "seed_entropy", "spawn_key", "species", "run_digest"}
)
_TRAJ = "particles/trajectory"
#: Root group of the lattice gas's summed ion displacement on a fine time grid (kept out of
#: /observables, whose children MDAnalysis reads frame by frame).
COLLECTIVE = "collective_displacement"


@dataclass(frozen=True, eq=False)
class TaskData:
    """Everything stored for one task (one parameter point x one replica).

    ``eq=False``: instances hold numpy arrays, so compare fields explicitly.
    """

    times: np.ndarray  # (F,) s, frame times of the production run, times[0] == 0
    positions: np.ndarray  # (F, N, d) float64 unwrapped ion positions, Å, d in {1, 2, 3}
    sites: np.ndarray  # (F, N) int32 lattice site index of each ion in each frame
    box: np.ndarray  # (d,) float64 orthorhombic box edges, or (3, 3) triclinic box vectors, Å
    species: str  # "Li" or "Na"
    parameters: dict  # fully resolved config: nested str -> (str|int|float|bool|list|dict)
    task: int  # task index
    seed_entropy: int  # SeedSequence entropy (may exceed 64 bits)
    spawn_key: tuple[int, ...]
    observables: dict[str, float | int | str]  # per-task results (D_tracer, hops, ...)
    # the lattice gas's summed displacement Σ_i (r_i(t) - r_i(0)), finer than the frames
    collective_times: np.ndarray | None = None  # (M,) s
    collective: np.ndarray | None = None  # (M, d) Å
    # the identity of the run the task belongs to (kmc.config.config_digest); "" if unknown
    run_digest: str = ""

    @property
    def identity(self) -> TaskIdentity:
        return TaskIdentity(self.run_digest, self.task, self.seed_entropy, self.spawn_key)


@dataclass(frozen=True)
class TaskIdentity:
    """What makes a task file belong to one task of one run: the run's config digest, the
    task index and the task's seed (entropy and spawn key)."""

    run_digest: str
    task: int
    seed_entropy: int
    spawn_key: tuple[int, ...]

    @classmethod
    def of_task(cls, task, run_digest: str) -> TaskIdentity:
        """The identity of a file of ``task`` (a :class:`kmc.config.Task`: its ``index`` and
        ``seed``, a SeedSequence) in the run whose config digest is ``run_digest``."""
        return cls(run_digest, task.index, task.seed.entropy, tuple(task.seed.spawn_key))

    def differences(self, other: TaskIdentity) -> list[str]:
        """The fields in which ``other`` differs from this identity."""
        names = ("run_digest", "task", "seed_entropy", "spawn_key")
        return [
            {"run_digest": "run (config digest)"}.get(name, name.replace("_", " "))
            for name in names
            if getattr(self, name) != getattr(other, name)
        ]


class IncompleteTaskFileError(ValueError):
    """A task file that is missing its completion marker, truncated, corrupt (its checksum
    does not verify) or malformed."""


class ForeignTaskFileError(IncompleteTaskFileError):
    """A complete task file that belongs to another run, task or seed."""


def task_filename(task: int) -> str:
    """File name of task ``task`` inside a run's ``tasks/`` directory: ``task-000017.h5md``."""
    task = int(task)
    if task < 0:
        raise ValueError(f"task index must be >= 0, got {task}")
    return f"task-{task:06d}.h5md"


# --------------------------------------------------------------------------- writing


def write_task(
    path: str | os.PathLike[str], data: TaskData, *, compression: str | None = "gzip"
) -> None:
    """Write ``data`` to the H5MD file ``path`` atomically (temporary file + rename).

    ``compression`` is ``"gzip"`` (level 1, the default), ``"lzf"`` or ``None``.
    Raises ``ValueError`` for inconsistent data; on any failure the temporary file is
    removed and an existing file at ``path`` is left as it was.
    """
    if compression not in ("gzip", "lzf", None):
        raise ValueError(f"compression must be 'gzip', 'lzf' or None, got {compression!r}")
    checked = _validate(data)
    with atomic_write(path, durable=True) as tmp, h5py.File(tmp, "w", libver=("v108", "v108")) as f:
        _write_file(f, checked, compression)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], *, durable: bool = False) -> Iterator[Path]:
    """Write a file atomically: yield a temporary path ``.<name>.tmp.<pid>`` beside
    ``path`` to write, then rename it onto ``path``, so a reader never sees a half-written
    file. If the body raises, the temporary file is removed and an existing file at ``path``
    is left as it was. ``durable`` also fsyncs the file before the rename and the directory
    after it (task files: a completed task must survive a crash of the machine)."""
    target = Path(path)
    directory = target.resolve().parent
    tmp = directory / f".{target.name}.tmp.{os.getpid()}"
    try:
        yield tmp
        if durable:
            _fsync_path(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    if durable:
        _fsync_directory(directory)


def _validate(data: TaskData) -> dict[str, Any]:
    """Check shapes and types; return normalized arrays and values for writing."""
    times = np.asarray(data.times, dtype=np.float64)
    positions = np.asarray(data.positions, dtype=np.float64)
    sites = np.asarray(data.sites)
    box = np.asarray(data.box, dtype=np.float64)
    if times.ndim != 1:
        raise ValueError(f"times must be a 1-d array, got shape {times.shape}")
    n_frames = times.size
    if not np.all(np.isfinite(times)) or np.any(np.diff(times) < 0):
        raise ValueError("times must be finite and non-decreasing")
    if positions.ndim != 3 or positions.shape[0] != n_frames or positions.shape[2] not in (1, 2, 3):
        raise ValueError(
            f"positions must have shape (F={n_frames}, N, d) with d in 1..3, got {positions.shape}"
        )
    n_ions, dim = positions.shape[1], positions.shape[2]
    if n_ions == 0:
        raise ValueError("positions hold no ions (N == 0)")
    if sites.shape != (n_frames, n_ions):
        raise ValueError(f"sites must have shape {(n_frames, n_ions)}, got {sites.shape}")
    if not np.issubdtype(sites.dtype, np.integer):
        raise ValueError(f"sites must be integers, got dtype {sites.dtype}")
    info = np.iinfo(np.int32)
    if sites.size and (sites.min() < info.min or sites.max() > info.max):
        raise ValueError("sites do not fit in int32")
    if box.shape == (dim, dim) and dim == 3:  # a triclinic box: its vectors as rows
        if not np.all(np.isfinite(box)) or not np.linalg.det(box) > 0:
            raise ValueError(f"box vectors must be finite and right-handed, got {data.box!r}")
    elif box.shape != (dim,) or not np.all(np.isfinite(box)) or np.any(box <= 0):
        raise ValueError(f"box must hold {dim} positive edge lengths, got {data.box!r}")
    if data.species not in SPECIES:
        raise ValueError(f"species must be one of {sorted(SPECIES)}, got {data.species!r}")
    if not isinstance(data.parameters, Mapping):
        raise ValueError("parameters must be a dict")
    try:
        config_json = json.dumps(data.parameters, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"parameters are not JSON-serializable: {exc}") from exc
    seed_entropy = int(data.seed_entropy)
    if seed_entropy < 0:
        raise ValueError("seed_entropy must be >= 0")
    spawn_key = tuple(int(k) for k in data.spawn_key)
    if any(k < 0 or k >= 2**63 for k in spawn_key):
        raise ValueError(f"spawn_key entries must be in [0, 2**63), got {spawn_key}")
    observables: dict[str, int | float] = {}
    for key, value in data.observables.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"observable names must be non-empty strings, got {key!r}")
        if isinstance(value, bool | np.bool_):
            observables[key] = int(value)
        elif isinstance(value, int | np.integer) and -(2**63) <= int(value) < 2**63:
            observables[key] = int(value)
        elif isinstance(value, float | int | np.floating | np.integer):
            observables[key] = float(value)
        elif isinstance(value, str):
            observables[key] = value
        else:
            raise ValueError(f"observable {key!r} must be a number or a string, got {value!r}")
    collective = None
    if data.collective is not None:
        c_times = np.asarray(data.collective_times, dtype=np.float64)
        c_value = np.asarray(data.collective, dtype=np.float64)
        if c_times.ndim != 1 or c_value.shape != (c_times.size, dim):
            raise ValueError(
                f"collective must have shape ({c_times.size}, {dim}), got {c_value.shape}"
            )
        collective = (c_times, c_value)
    return {
        "times": times,
        "positions": positions,
        "sites": sites.astype(np.int32, copy=False),
        "box": box,
        "species": data.species,
        "parameters": data.parameters,
        "config_json": config_json,
        "task": int(data.task),
        "seed_entropy": seed_entropy,
        "spawn_key": spawn_key,
        "observables": observables,
        "collective": collective,
        "run_digest": str(data.run_digest),
    }


def _write_file(f: h5py.File, d: dict[str, Any], compression: str | None) -> None:
    n_frames, n_ions, dim = d["positions"].shape

    h5md = f.create_group("h5md")
    h5md.attrs["version"] = np.array(H5MD_VERSION, dtype=np.int32)
    _set_fixed_string(h5md.create_group("author").attrs, "name", _author())
    creator = h5md.create_group("creator")
    _set_fixed_string(creator.attrs, "name", "kmc")
    _set_fixed_string(creator.attrs, "version", _kmc_version())

    traj = f.create_group(_TRAJ)
    position = traj.create_group("position")
    step = position.create_dataset("step", data=np.arange(n_frames, dtype=np.int64))
    time = position.create_dataset("time", data=d["times"])
    time.attrs["unit"] = "s"  # MDAnalysis needs a str-valued (variable-length) unit
    padded = np.zeros((n_frames, n_ions, 3), dtype=np.float64)
    padded[:, :, :dim] = d["positions"] / ANGSTROM_PER_NM
    value = position.create_dataset(
        "value", data=padded, **_storage(padded.shape, 8, compression, shuffle=False)
    )
    del padded
    value.attrs["unit"] = "nm"

    box = traj.create_group("box")
    box.attrs["dimension"] = np.int32(3)
    _set_fixed_string_array(box.attrs, "boundary", ["periodic"] * dim + ["none"] * (3 - dim))
    box.attrs["kmc_lattice_dimension"] = np.int32(dim)
    if d["box"].ndim == 2:  # triclinic: H5MD's (3, 3) box vectors
        edges_nm = d["box"] / ANGSTROM_PER_NM
    else:
        edges_nm = np.full(3, d["box"].max() / ANGSTROM_PER_NM)
        edges_nm[:dim] = d["box"] / ANGSTROM_PER_NM
    if n_frames:
        edges = box.create_group("edges")
        edges["step"] = step
        edges["time"] = time
        edge_value = edges.create_dataset(
            "value", data=np.tile(edges_nm, (n_frames,) + (1,) * edges_nm.ndim)
        )
    else:  # no frames (run.method = "network"): H5MD's time-independent box
        edge_value = box.create_dataset("edges", data=edges_nm)
    edge_value.attrs["unit"] = "nm"

    site = traj.create_group("lattice_site")
    site["step"] = step
    site["time"] = time
    site.create_dataset(
        "value", data=d["sites"], **_storage(d["sites"].shape, 4, compression, shuffle=True)
    )

    species_dtype = h5py.enum_dtype(SPECIES, basetype=np.int8)
    species = traj.create_dataset(
        "species",
        data=np.full(n_ions, SPECIES[d["species"]], dtype=np.int8),
        dtype=species_dtype,
    )
    species.attrs["name"] = d["species"]

    params = f.create_group("parameters", track_order=True)
    params.attrs["config_json"] = d["config_json"]
    params.attrs["task"] = np.int64(d["task"])
    params.attrs["seed_entropy"] = str(d["seed_entropy"])
    params.attrs["spawn_key"] = np.array(d["spawn_key"], dtype=np.int64)
    params.attrs["species"] = d["species"]
    params.attrs["run_digest"] = d["run_digest"]
    _mirror_parameters(params, d["parameters"], reserved=_RESERVED_PARAMETER_ATTRS)

    observables = f.create_group("observables", track_order=True)
    for key, val in d["observables"].items():
        if isinstance(val, str):
            observables.attrs[key] = val
        else:
            observables.attrs[key] = np.int64(val) if isinstance(val, int) else np.float64(val)

    if d["collective"] is not None:
        c_times, c_value = d["collective"]
        group = f.create_group(COLLECTIVE)
        group.create_dataset("time", data=c_times).attrs["unit"] = "s"
        group.create_dataset("value", data=c_value / ANGSTROM_PER_NM).attrs["unit"] = "nm"

    f.flush()
    # the digests of the content as a reader gets it back, then the completion marker
    meta, frames = _digests(_load(f, frames=True))
    h5md.attrs[META_DIGEST_ATTR] = meta
    h5md.attrs[FRAMES_DIGEST_ATTR] = frames
    h5md.attrs[COMPLETE_ATTR] = np.int32(1)  # the completion marker: always last


def _storage(
    shape: tuple[int, ...], itemsize: int, compression: str | None, shuffle: bool
) -> dict[str, Any]:
    """Chunking/filters for a (F, N, ...) per-frame dataset (none for F = 0)."""
    if shape[0] == 0:  # an empty dataset cannot be chunked; there is nothing to filter
        return {}
    frame_items = int(np.prod(shape[1:]))
    frame_bytes = frame_items * itemsize
    if frame_bytes <= _CHUNK_MAX_BYTES:
        frames = max(1, min(shape[0], _CHUNK_TARGET_BYTES // max(frame_bytes, 1)))
        chunks = (frames, *shape[1:])
    else:
        per_ion = frame_bytes // shape[1]
        chunks = (1, max(1, _CHUNK_MAX_BYTES // per_ion), *shape[2:])
    opts: dict[str, Any] = {"chunks": chunks, "fletcher32": True}
    if compression == "gzip":
        opts.update(compression="gzip", compression_opts=_GZIP_LEVEL, shuffle=shuffle)
    elif compression == "lzf":
        opts.update(compression="lzf", shuffle=shuffle)
    return opts


def _mirror_parameters(group: h5py.Group, mapping: Mapping, reserved=frozenset()) -> None:
    """Store a nested dict as H5MD parameters: dicts -> groups, leaves -> attributes.

    This mirror is for browsing (h5ls, HDFView); ``config_json`` is the exact record.
    """
    for key, value in mapping.items():
        key = str(key)
        if key in reserved:
            continue
        if isinstance(value, Mapping) and key not in (".", "") and "/" not in key:
            _mirror_parameters(group.create_group(key, track_order=True), value)
        else:
            group.attrs[key] = _attribute_value(value)


def _attribute_value(value: Any) -> Any:
    """An HDF5-storable form of a config leaf; anything irregular becomes a JSON string."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return np.bool_(value)
    if isinstance(value, int):
        return np.int64(value) if -(2**63) <= value < 2**63 else str(value)
    if isinstance(value, float):
        return np.float64(value)
    if isinstance(value, list | tuple) and value:
        if all(isinstance(v, str) for v in value):
            return np.array(value, dtype=h5py.string_dtype())
        if all(isinstance(v, bool) for v in value):
            return np.array(value, dtype=np.bool_)
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            if all(-(2**63) <= v < 2**63 for v in value):
                return np.array(value, dtype=np.int64)
        elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            return np.array(value, dtype=np.float64)
    return json.dumps(value, allow_nan=True)


def _set_fixed_string(attrs: h5py.AttributeManager, name: str, text: str) -> None:
    """A scalar fixed-length UTF-8 string attribute (as H5MD prescribes for metadata)."""
    raw = text.encode("utf-8")
    n = max(len(raw), 1)
    attrs.create(name, np.array(raw, dtype=f"S{n}"), dtype=h5py.string_dtype("utf-8", n))


def _set_fixed_string_array(attrs: h5py.AttributeManager, name: str, texts: list[str]) -> None:
    raw = [t.encode("utf-8") for t in texts]
    n = max(1, *(len(r) for r in raw))
    attrs.create(name, np.array(raw, dtype=f"S{n}"), dtype=h5py.string_dtype("utf-8", n))


def _author() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (containers, some batch systems)
        return "unknown"


def _kmc_version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


def _fsync_path(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Make the rename durable (best effort: not every platform can fsync a directory)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --------------------------------------------------------------------------- reading


def verify_task(path: str | os.PathLike[str], expect: TaskIdentity | None = None) -> str | None:
    """None if ``path`` is a complete task file whose whole content verifies against its
    checksums (and, with ``expect``, belongs to that task of that run); otherwise why not,
    in a few words ("no such file", "checksum mismatch (...)", "belongs to another run ...").
    Never raises."""
    name = os.fspath(path)
    if not os.path.exists(name):
        return "no such file"
    try:
        _read_verified(name, frames=True, expect=expect)
    except ForeignTaskFileError as exc:
        return exc.reason
    except IncompleteTaskFileError as exc:
        return exc.reason
    except Exception as exc:  # anything else a damaged file provokes
        return f"unreadable ({_short(exc)})"
    return None


def is_complete(path: str | os.PathLike[str], expect: TaskIdentity | None = None) -> bool:
    """True if ``path`` is a complete task file whose whole content verifies (see
    :func:`verify_task`); False (never raises) if it is missing, truncated, corrupt, not a
    task file, lacks the completion marker or, with ``expect``, belongs elsewhere."""
    return verify_task(path, expect) is None


def read_task(
    path: str | os.PathLike[str],
    *,
    positions: bool = True,
    expect: TaskIdentity | None = None,
) -> TaskData:
    """Read a task file written by :func:`write_task`, verifying its checksums.

    With ``positions=False`` the big per-frame arrays are not read (nor verified):
    ``positions`` is returned with shape ``(0, N, d)`` and ``sites`` with shape ``(0, N)``
    (``times`` and everything else is read and verified). With ``expect`` the file must
    belong to that task of that run. Raises ``FileNotFoundError`` for a missing file,
    :class:`ForeignTaskFileError` for a file of another run, task or seed, and
    :class:`IncompleteTaskFileError` (a ``ValueError``; both name the path) for an
    incomplete, truncated or corrupt one.
    """
    name = os.fspath(path)
    if not os.path.exists(name):
        raise FileNotFoundError(f"{name}: no such task file")
    try:
        return _read_verified(name, frames=positions, expect=expect)
    except IncompleteTaskFileError:
        raise
    except Exception as exc:
        raise _incomplete(name, f"unreadable ({_short(exc)})") from exc


def set_aside(path: str | os.PathLike[str]) -> Path:
    """Move a damaged or foreign task file into ``damaged/`` beside it (never deleting it):
    ``tasks/damaged/task-000003.h5md``, or ``task-000003.1.h5md`` and so on if that exists.
    Returns the new path."""
    source = Path(path)
    target_dir = source.parent / DAMAGED_DIR
    target_dir.mkdir(exist_ok=True)
    stem, suffix = source.name.split(".", 1) if "." in source.name else (source.name, "")
    for n in itertools.count():
        target = target_dir / (f"{stem}.{n}.{suffix}" if n else source.name)
        try:  # a hard link never replaces an existing file, then the name is dropped
            os.link(source, target)
        except FileExistsError:
            continue
        os.unlink(source)
        return target
    raise AssertionError("unreachable")


def _incomplete(name: str, reason: str, kind: type = IncompleteTaskFileError):
    error = kind(f"{name}: not a complete kmc task file ({reason})")
    error.reason = reason
    return error


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _read_verified(name: str, *, frames: bool, expect: TaskIdentity | None) -> TaskData:
    with h5py.File(name, "r") as f:
        reason = _incomplete_reason(f)
        if reason is not None:
            raise _incomplete(name, reason)
        raw = _load(f, frames=frames)
        stored_meta = _as_str(f["h5md"].attrs[META_DIGEST_ATTR])
        stored_frames = _as_str(f["h5md"].attrs[FRAMES_DIGEST_ATTR])
    meta, frames_digest = _digests(raw)
    if meta != stored_meta:
        raise _incomplete(name, "checksum mismatch in its parameters, observables or times")
    if frames and frames_digest != stored_frames:
        raise _incomplete(name, "checksum mismatch in its frames")
    data = _to_task(raw, frames)
    if expect is not None and data.identity != expect:
        what = ", ".join(expect.differences(data.identity))
        raise _incomplete(
            name,
            f"belongs to another run or task: its {what} differ(s) (task {data.task}, spawn key "
            f"{list(data.spawn_key)})",
            ForeignTaskFileError,
        )
    return data


def _incomplete_reason(f: h5py.File) -> str | None:
    """None if the structure of a task file is all there, otherwise why it is not."""
    if "h5md" not in f or f["h5md"].attrs.get(COMPLETE_ATTR, 0) != 1:
        return "no completion marker"
    for attr in (META_DIGEST_ATTR, FRAMES_DIGEST_ATTR):
        if attr not in f["h5md"].attrs:
            return "no checksum (written by an older kmc)"
    for item in ("position/value", "position/time", "position/step", "box/edges"):
        if f"{_TRAJ}/{item}" not in f:
            return f"missing /{_TRAJ}/{item}"
    if f"{_TRAJ}/lattice_site/value" not in f:
        return f"missing /{_TRAJ}/lattice_site/value"
    edges = f[f"{_TRAJ}/box/edges"]
    if not isinstance(edges, h5py.Dataset) and "value" not in edges:
        return f"missing /{_TRAJ}/box/edges/value"
    for group in ("parameters", "observables", f"{_TRAJ}/species"):
        if group not in f:
            return f"missing /{group}"
    for attr in ("config_json", "task", "seed_entropy", "spawn_key", "species", "run_digest"):
        if attr not in f["parameters"].attrs:
            return f"missing /parameters attribute {attr}"
    value = f[f"{_TRAJ}/position/value"]
    n_frames = value.shape[0] if value.ndim == 3 else -1
    if (
        n_frames < 0
        or value.shape[2] != 3
        or f[f"{_TRAJ}/position/time"].shape != (n_frames,)
        or f[f"{_TRAJ}/lattice_site/value"].shape != value.shape[:2]
        or isinstance(edges, h5py.Dataset) != (n_frames == 0)
    ):
        return "inconsistent dataset shapes"
    return None


def _attr(attrs: h5py.AttributeManager, key: str) -> Any:
    """An attribute as plain python data: str, int, float or a list of them."""
    value = attrs[key]
    if isinstance(value, str | bytes | np.bytes_):
        return _as_str(value)
    array = np.asarray(value)
    if array.dtype.kind in "SUO":
        return [_as_str(v) for v in array.ravel()] if array.ndim else _as_str(array[()])
    if array.ndim:
        return array.tolist()
    return array.item()


def _load(f: h5py.File, *, frames: bool) -> dict[str, Any]:
    """Everything a :class:`TaskData` is made of, as stored (nm, padded to 3 axes), in the
    form both digests are computed over. Without ``frames`` the big arrays are left out."""
    traj = f[_TRAJ]
    box_group = traj["box"]
    value = traj["position/value"]
    edges = box_group["edges"]
    edges = edges if isinstance(edges, h5py.Dataset) else edges["value"]
    species = traj["species"]
    params = f["parameters"].attrs
    observables: dict[str, Any] = {}
    for key in f["observables"].attrs:
        val = f["observables"].attrs[key]
        if isinstance(val, str | bytes):
            observables[key] = _as_str(val)
        elif np.issubdtype(np.asarray(val).dtype, np.integer):
            observables[key] = int(val)
        else:
            observables[key] = float(val)
    raw: dict[str, Any] = {
        "meta": {
            "config_json": _attr(params, "config_json"),
            "task": _attr(params, "task"),
            "seed_entropy": _attr(params, "seed_entropy"),
            "spawn_key": np.atleast_1d(params["spawn_key"]).astype(np.int64).tolist(),
            "species": _attr(params, "species"),
            "run_digest": _attr(params, "run_digest"),
            "species_name": _attr(species.attrs, "name") if "name" in species.attrs else None,
            "dimension": (
                _attr(box_group.attrs, "kmc_lattice_dimension")
                if "kmc_lattice_dimension" in box_group.attrs
                else None
            ),
            "boundary": _attr(box_group.attrs, "boundary")
            if "boundary" in box_group.attrs
            else None,
            "shape": list(value.shape),
            "collective": COLLECTIVE in f,
            "observables": observables,
        },
        "times": np.asarray(traj["position/time"][()], dtype=np.float64),
        "step": np.asarray(traj["position/step"][()], dtype=np.int64),
        "edges": np.asarray(edges[()], dtype=np.float64),
        "species": np.asarray(species[()], dtype=np.int8),
    }
    if frames:
        raw["value"] = np.asarray(value[()], dtype=np.float64)
        raw["sites"] = np.asarray(traj["lattice_site/value"][()], dtype=np.int32)
        if COLLECTIVE in f:
            raw["collective_time"] = np.asarray(f[COLLECTIVE]["time"][()], dtype=np.float64)
            raw["collective_value"] = np.asarray(f[COLLECTIVE]["value"][()], dtype=np.float64)
    return raw


def _digests(raw: dict[str, Any]) -> tuple[str, str]:
    """The SHA-256 digests (hex) of the metadata and of the frames of :func:`_load`'s
    content (the frames' digest is "" when they were not loaded)."""
    meta = hashlib.sha256(json.dumps(raw["meta"], sort_keys=True, allow_nan=True).encode())
    for key in ("times", "step", "edges", "species"):
        _hash_array(meta, key, raw[key])
    if "value" not in raw:
        return meta.hexdigest(), ""
    frames = hashlib.sha256()
    for key in ("value", "sites", "collective_time", "collective_value"):
        if key in raw:
            _hash_array(frames, key, raw[key])
    return meta.hexdigest(), frames.hexdigest()


def _hash_array(h: Any, name: str, array: np.ndarray) -> None:
    h.update(f"|{name}|{array.dtype.str}|{array.shape}|".encode())
    h.update(np.ascontiguousarray(array).tobytes())


def _to_task(raw: dict[str, Any], with_frames: bool) -> TaskData:
    meta = raw["meta"]
    if meta["dimension"] is not None:
        dim = int(meta["dimension"])
    else:
        dim = sum(b == "periodic" for b in meta["boundary"] or [])
    if dim not in (1, 2, 3):
        raise ValueError(f"lattice dimension {dim} is not 1, 2 or 3")
    n_ions = meta["shape"][1]
    edges = raw["edges"]
    edges = edges if meta["shape"][0] == 0 else edges[0]  # time-independent if no frames
    box = np.asarray(edges[:dim], dtype=np.float64) * ANGSTROM_PER_NM  # (d,) or (3, 3)
    if with_frames:
        positions = raw["value"][:, :, :dim] * ANGSTROM_PER_NM
        sites = raw["sites"]
    else:
        positions = np.empty((0, n_ions, dim), dtype=np.float64)
        sites = np.empty((0, n_ions), dtype=np.int32)
    c_times = c_value = None
    if "collective_time" in raw:
        c_times = raw["collective_time"]
        c_value = raw["collective_value"] * ANGSTROM_PER_NM
    species = meta["species_name"] if meta["species_name"] is not None else meta["species"]
    return TaskData(
        times=raw["times"],
        positions=positions,
        sites=sites,
        box=box,
        species=species,
        parameters=json.loads(meta["config_json"]),
        task=int(meta["task"]),
        seed_entropy=int(meta["seed_entropy"]),
        spawn_key=tuple(int(k) for k in meta["spawn_key"]),
        observables=dict(meta["observables"]),
        collective_times=c_times,
        collective=c_value,
        run_digest=str(meta["run_digest"]),
    )


def _as_str(value: Any) -> str:
    if isinstance(value, bytes | np.bytes_):
        return value.decode("utf-8")
    return str(value)
