"""Run the tasks of a config in a run directory, serially or shared among MPI ranks.

Without an MPI launcher the run is serial and mpi4py is never imported. Under ``mpiexec``
every rank takes the next unfinished task from a dispatcher on rank 0 (a thread that
answers requests, so rank 0 works too), so cheap and expensive tasks balance themselves.
Task k's result depends only on its seeds (see :func:`kmc.config.expand_tasks`), never on
which rank ran it. Each task file is written atomically, so a crash loses only the tasks
that were running; rerunning finishes the rest.

What a run survives (each mechanism lives here, not in the commands):

* **Damaged and foreign task files.** At start-up every task file present is verified
  whole (:func:`kmc.store.verify_task`: checksums, and the identity of this run, task and
  seed). One that fails is named in one line, set aside in ``tasks/damaged/`` (kept, never
  deleted) and its task is run again.
* **One job per run directory.** Start-up first gives a new directory its identity
  (``config.toml``, created without ever replacing one), then takes the lock file
  ``kmc.lock`` (created with ``O_EXCL``; it holds the pid, host and start time of rank 0).
  A second ``kmc run`` on a directory whose lock is held refuses with one line naming the
  holder (:class:`RunBusyError`). A lock whose holder is dead (same host, no such process,
  or a different process under a reused pid) is broken safely — under a second
  ``O_EXCL`` file, so two starters never both break it — and the run goes on. A lock held
  on another host cannot be checked: the message says to remove it if that job is gone.
* **Signals.** SIGINT and SIGTERM stop the run cleanly (:class:`Interrupted`): the task
  being computed is dropped, one being written has its temporary file removed, finished
  tasks stay; ``kmc`` then prints one line saying how to resume and exits with 128 +
  the signal number (130, 143). A task runs in a worker thread while the main thread
  waits, so a signal is honoured within a fraction of a second even while the kernel
  runs. Under ``mpiexec`` (which forwards the signal to every rank) no rank ever blocks
  in MPI: requests and the final barrier are polled, so every rank stops, meets the
  others at a barrier and finalizes; a rank that does not come within
  :data:`STOP_GRACE` seconds (it never got the signal) is ended by ``MPI_Abort``.
* **Disk space.** Before a task file is written the free space is compared with the
  file's uncompressed bound (:func:`kmc.config.task_disk`); too little stops the run with
  :class:`DiskFullError` (one line, exit status 1) before HDF5 ever meets a full disk.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import math
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np

from kmc import store
from kmc.config import (
    Config,
    ConfigError,
    Task,
    comparable_dict,
    config_digest,
    expand_tasks,
    format_bytes,
    ion_count,
    load_config,
    site_count,
    task_disk,
)

# Environment variables that MPI launchers set: MPICH/Hydra and Slurm's PMI, Open MPI, PMIx.
_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")
#: The lock file of a run directory (held by rank 0 of the run that owns it).
LOCK_NAME = "kmc.lock"
#: Seconds an interrupted rank waits for the others at the stop barrier before MPI_Abort.
STOP_GRACE = 3.0
#: Seconds between two looks while waiting (for a task, an MPI request, a barrier).
_POLL = 0.05
#: A running task that has made this many times its planned hops in kernel attempts says so
#: (once; it stops at run.work_budget times them).
OVER_PLAN = 10.0


class RunError(Exception):
    """A run that cannot start as asked (exit status 2); nothing has been changed on disk."""


class RunBusyError(RunError):
    """The run directory is locked by a run that is still alive (exit status 2)."""


class UncomputableTaskError(RunError):
    """A task whose physics cannot be computed on its landscape (every rate underflows, no
    ion can move): the simulation refused its input (exit status 2); finished tasks stay."""


class DiskFullError(OSError):
    """Too little free disk for the next task file (exit status 1); finished tasks stay."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM stopped the run. ``signum`` is the signal, ``done`` and ``total``
    count this run's tasks, ``run_dir`` is where to resume (None on ranks other than 0).
    A BaseException so that no ``except Exception`` swallows it."""

    def __init__(self, signum: int, done: int = 0, total: int = 0, run_dir=None) -> None:
        super().__init__(signum)
        self.signum, self.done, self.total, self.run_dir = signum, done, total, run_dir

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


class _Signals:
    """SIGINT and SIGTERM as :class:`Interrupted`, raised in the main thread; while
    ``deferred()`` (a task file is being written) a signal is only noted and raised after
    it."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.pending: int | None = None
        self._defer = 0
        self._previous: dict[int, object] = {}

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame) -> None:
        if self.pending is None:
            self.pending = signum
        if not self._defer:
            raise Interrupted(signum)

    @contextlib.contextmanager
    def deferred(self):
        self._defer += 1
        try:
            yield
        finally:
            self._defer -= 1
        self.check()

    def check(self) -> None:
        if self.pending is not None and not self._defer:
            raise Interrupted(self.pending)


def _raise_interrupted(signum, frame) -> None:
    raise Interrupted(signum)


def install() -> dict:
    """SIGINT and SIGTERM as :class:`Interrupted` (main thread only; the ``kmc`` command
    installs this for all its work). Returns the previous handlers for :func:`restore`."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, _raise_interrupted) for signum in _Signals.SIGNALS}


def restore(previous: dict) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def _wait(request, signals: _Signals | None, deadline: float | None = None) -> tuple[bool, object]:
    """Poll an MPI request until it completes, sleeping in between so that signals are
    honoured (a blocking wait would not return): (True, its message), or (False, None) once
    the deadline has passed."""
    while True:
        done, message = request.test()  # mpi4py: (flag, the unpickled message or None)
        if done:
            return True, message
        if signals is not None:
            signals.check()
        if deadline is not None and time.monotonic() > deadline:
            return False, None
        time.sleep(0.002)


class _Serial:
    rank, size = 0, 1
    tracks_completions = True

    def __init__(self) -> None:
        self._next = 0

    def start(self, n_tasks: int, on_done=None) -> None:
        self._on_done = on_done

    def next_index(self, signals: _Signals, finished=None) -> int:
        if finished is not None and self._on_done is not None:
            self._on_done(*finished)
        self._next += 1
        return self._next - 1

    def bcast(self, value):
        return value

    def barrier(self, signals: _Signals) -> None:
        pass

    def stop(self, status: int) -> None:
        pass

    def close(self) -> None:
        pass


class _Mpi:
    """COMM_WORLD with a task dispatcher: a thread on rank 0 hands the next task index to
    whichever rank asks, and rank 0's own loop draws from the same counter directly. A
    request carries the rank's last finished task (index and hops), which the dispatcher
    reports to rank 0's progress monitor: completions are known without looking at files.

    A one-sided fetch-and-add counter would be simpler, but MPICH services it only while
    rank 0 is inside an MPI call, so a rank 0 busy in the kernel stalled everyone else. The
    dispatcher polls with Iprobe and sleeps in between, so it costs no core. Without
    MPI_THREAD_MULTIPLE the tasks are dealt round robin instead (still rank-independent
    results, only less balanced; the monitor then watches the task directory)."""

    _ASK, _ANSWER = 11, 12

    def __init__(self) -> None:
        from mpi4py import MPI

        self._mpi = MPI
        self.comm = MPI.COMM_WORLD
        self.rank, self.size = self.comm.rank, self.comm.size
        self._dynamic = self.size > 1 and MPI.Query_thread() >= MPI.THREAD_MULTIPLE
        self.tracks_completions = self._dynamic or self.size == 1
        self._channel = self.comm.Dup()  # dispatcher messages apart from the collectives
        self._stopping = self.comm.Dup()  # the barrier of an interrupted run
        self._lock = threading.Lock()
        self._next = 0 if self._dynamic else self.rank
        self._limit = None
        self._server = None
        self._halt = threading.Event()
        self._request = None  # a rank's pending receive of its next index
        self._on_done = None

    def start(self, n_tasks: int, on_done=None) -> None:
        """Begin handing out the indices 0 .. n_tasks - 1; ``on_done(index, hops)`` (rank 0)
        learns of every finished task."""
        self._limit = n_tasks
        self._on_done = on_done
        if self._dynamic and self.rank == 0:
            self._server = threading.Thread(target=self._serve, daemon=True)
            self._server.start()

    def _take(self) -> int:
        with self._lock:
            self._next += 1
            return self._next - 1

    def _serve(self) -> None:
        status = self._mpi.Status()
        waiting = self.size - 1  # ranks that have not yet been told there is no more work
        while waiting and not self._halt.is_set():
            if self._channel.Iprobe(source=self._mpi.ANY_SOURCE, tag=self._ASK, status=status):
                source = status.Get_source()
                finished = self._channel.recv(source=source, tag=self._ASK)
                if finished is not None and self._on_done is not None:
                    self._on_done(*finished)
                index = self._take()
                self._channel.send(index, dest=source, tag=self._ANSWER)
                waiting -= index >= self._limit
            else:
                time.sleep(0.002)

    def next_index(self, signals: _Signals, finished=None) -> int:
        if not self._dynamic:
            if finished is not None and self._on_done is not None:
                self._on_done(*finished)
            self._next += self.size
            return self._next - self.size
        if self.rank == 0:
            if finished is not None and self._on_done is not None:
                self._on_done(*finished)
            return self._take()
        self._channel.send(finished, dest=0, tag=self._ASK)
        self._request = self._channel.irecv(source=0, tag=self._ANSWER)
        _, index = _wait(self._request, signals)
        self._request = None
        return index

    def bcast(self, value):
        return self.comm.bcast(value, root=0)

    def barrier(self, signals: _Signals) -> None:
        _wait(self.comm.Ibarrier(), signals)

    def abort(self, status: int) -> None:
        self.comm.Abort(status)

    def stop(self, status: int) -> None:
        """After an interrupt: stop the dispatcher, drop a pending request, and meet the
        other ranks at a barrier; if they do not all come within STOP_GRACE seconds, end
        every rank with MPI_Abort(status)."""
        self._halt.set()
        if self._server is not None:
            self._server.join()
            self._server = None
        if self._request is not None:
            with contextlib.suppress(Exception):
                self._request.Cancel()
            self._request = None
        deadline = time.monotonic() + STOP_GRACE
        if not _wait(self._stopping.Ibarrier(), None, deadline)[0]:
            sys.stderr.flush()
            self.comm.Abort(status)

    def close(self) -> None:
        if self._halt.is_set():  # stopped by a signal: no more calls on these communicators
            return
        if self._server is not None:
            self._server.join()
        self._channel.Free()
        self._stopping.Free()


def launcher_rank() -> int | None:
    """This process's rank if an MPI launcher started it, else None (known without MPI)."""
    for variable in _RANK_VARIABLES:
        if variable in os.environ:
            return int(os.environ[variable])
    return None


def _communicator() -> _Serial | _Mpi:
    if launcher_rank() is None:
        return _Serial()
    try:
        import mpi4py  # noqa: F401
    except ImportError as err:
        raise RunError(
            "started by an MPI launcher but mpi4py is not installed: pip install -e '.[mpi]'"
        ) from err
    return _Mpi()


def run_directory(config: Config, output: str | os.PathLike | None = None) -> Path:
    """``output`` if given, else ``runs/<name>``."""
    return Path(output) if output is not None else Path("runs") / config.name


def _comparable(config: Config) -> dict:
    return comparable_dict(config)


def _starting_files(config: Config) -> set[str]:
    """Names a run puts into a new directory before its config.toml is there."""
    names = {LOCK_NAME}
    if config.lattice.structure_file is not None:
        names.add(Path(config.lattice.structure_file).name)
    return names


def check_run_directory(config: Config, run_dir: Path) -> bool:
    """Whether ``run_dir`` already holds this run; raise RunError if it holds anything else."""
    if not run_dir.exists():
        return False
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: exists and is not a directory")
    given = run_dir / "config.toml"
    if not given.exists():
        starting = _starting_files(config)
        if any(
            not entry.name.startswith(".") and entry.name not in starting
            for entry in run_dir.iterdir()
        ):
            raise RunError(f"{run_dir}: exists, is not empty and holds no kmc run (no config.toml)")
        return False  # empty, or a run being set up (its identity comes next)
    try:
        existing = load_config(given, check_memory=False)
    except ConfigError as err:
        raise RunError(f"{run_dir}: holds a run whose config.toml cannot be read ({err})") from err
    old, new = _comparable(existing), _comparable(config)
    if old != new:
        differ = next(k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))
        reordered = differ == "sweep" and sorted(old["sweep"]) == sorted(new["sweep"])
        why = (
            "its sweep has the same keys in another order, which numbers the tasks differently"
            if reordered
            else f"its config differs in [{differ}]"
        )
        raise RunError(
            f"{run_dir}: holds a different run ({why}); give another --output or remove that "
            "directory"
        )
    return True


# --------------------------------------------------------------------------- the lock


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, Linux), to tell a live
    holder from another process that reuses its pid; None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _holder_alive(holder: dict) -> bool | None:
    """True/False for a holder on this host, None if it cannot be told (another host)."""
    if holder.get("host") != socket.gethostname():
        return None
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    started = holder.get("start")
    return not (started and _process_start(pid) not in (None, started))


def _read_lock(path: Path) -> dict | None:
    """The holder recorded in a lock file ({} if unreadable or half-written), None if the
    file does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        holder = json.loads(text)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _holder_text(holder: dict) -> str:
    if not holder:
        return "an unknown process (unreadable lock file)"
    since = holder.get("since")
    when = f" since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))}" if since else ""
    return f"pid {holder.get('pid')} on {holder.get('host')}{when}"


class RunLock:
    """The lock file of a run directory (see the module docstring). ``acquire`` returns a
    held lock or raises :class:`RunBusyError`; ``release`` removes the file if it is still
    this process's."""

    def __init__(self, path: Path, holder: dict) -> None:
        self.path, self.holder = path, holder

    @classmethod
    def acquire(cls, run_dir: Path) -> RunLock:
        path = run_dir / LOCK_NAME
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "start": _process_start(os.getpid()),
            "since": time.time(),
        }
        for _ in range(20):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = _read_lock(path)
                if holder is None:
                    continue  # released meanwhile: try again
                if holder == {} and time.time() - _mtime(path) < 5.0:
                    time.sleep(0.05)  # being written by its holder right now
                    continue
                alive = _holder_alive(holder) if holder else False
                if alive is None:
                    raise RunBusyError(
                        f"{run_dir}: another kmc run holds it ({_holder_text(holder)}); if that "
                        f"job is gone, remove {path}"
                    ) from None
                if alive:
                    raise RunBusyError(
                        f"{run_dir}: another kmc run is using it ({_holder_text(holder)}); wait "
                        "for it to finish, or give another --output"
                    ) from None
                cls._break(path, holder)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(me, handle)
                handle.flush()
                os.fsync(handle.fileno())
            return cls(path, me)
        raise RunBusyError(f"{run_dir}: could not take its lock {path} (contended)")

    @staticmethod
    def _break(path: Path, stale: dict) -> None:
        """Remove a dead holder's lock, under a second O_EXCL file so that of two runs that
        both found it dead only one removes it (and never a live run's lock taken since)."""
        breaker = path.with_name(path.name + ".break")
        try:
            fd = os.open(breaker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            if time.time() - _mtime(breaker) > 10.0:  # a breaker that died in between
                breaker.unlink(missing_ok=True)
            time.sleep(0.05)
            return
        os.close(fd)
        try:
            if _read_lock(path) == stale:  # still the dead holder's lock
                path.unlink(missing_ok=True)
        finally:
            breaker.unlink(missing_ok=True)

    def release(self) -> None:
        if _read_lock(self.path) == self.holder:
            self.path.unlink(missing_ok=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()


# --------------------------------------------------------------------------- start-up


def _create_identity(config: Config, run_dir: Path) -> None:
    """A new run directory's identity: the structure file (which config.toml may refer to),
    then config.toml, each created without ever replacing a file another run put there."""
    structure = config.lattice.structure_file
    files = [(Path(structure), run_dir / Path(structure).name)] if structure else []
    files.append((Path(config.source), run_dir / "config.toml"))
    for source, target in files:
        if target.exists():
            continue
        with store.atomic_write(target.with_name(f".{target.name}.new")) as temporary:
            shutil.copyfile(source, temporary)
        staged = target.with_name(f".{target.name}.new")
        try:
            os.link(staged, target)  # never replaces: a racing run's file stays
        except FileExistsError:
            pass
        finally:
            staged.unlink(missing_ok=True)


def _prepare(config: Config, run_dir: Path) -> RunLock:
    """Check the directory, give a new one its identity, take its lock, clear what a crashed
    run left. Returns the held lock."""
    exists = check_run_directory(config, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not exists:
        _create_identity(config, run_dir)
    lock = RunLock.acquire(run_dir)
    try:
        check_run_directory(config, run_dir)  # again, now that no one else can change it
        (run_dir / "tasks").mkdir(exist_ok=True)
        for stale in (run_dir / "tasks").glob(".task-*.tmp.*"):
            stale.unlink(missing_ok=True)  # left by a crashed run; the task is redone
    except BaseException:
        lock.release()
        raise
    return lock


def _task_path(run_dir: Path, task: Task) -> Path:
    return run_dir / "tasks" / store.task_filename(task.index)


def survey(run_dir: Path, tasks: list[Task], digest: str) -> tuple[list[int], dict[int, str]]:
    """The tasks whose files verify (complete, intact, this run's), and why each other file
    present does not (damaged or foreign; task index → reason). Reads nothing but the files
    that exist (one directory listing)."""
    try:
        with os.scandir(run_dir / "tasks") as entries:
            present = {entry.name for entry in entries}
    except OSError:
        present = set()
    done, bad = [], {}
    for task in tasks:
        name = store.task_filename(task.index)
        if name not in present:
            continue
        identity = store.TaskIdentity.of_task(task, digest)
        reason = store.verify_task(run_dir / "tasks" / name, identity)
        if reason is None:
            done.append(task.index)
        else:
            bad[task.index] = reason
    return done, bad


def _check_disk(run_dir: Path, config: Config) -> None:
    need = task_disk(config)
    try:
        stat = os.statvfs(run_dir)
    except (AttributeError, OSError):
        return
    free = stat.f_bavail * stat.f_frsize
    if free < need:
        raise DiskFullError(
            errno.ENOSPC,
            f"{run_dir}: disk full: {format_bytes(free)} free, a task file needs up to "
            f"{format_bytes(need)}; the finished tasks are kept: free some space and rerun",
        )


def _uncomputable(config: Config, task: Task, err: ValueError) -> str:
    point = ", ".join(f"{key} = {value}" for key, value in task.plain_point.items())
    where = f" (the sweep point {point})" if point else ""
    return (
        f"{config.source}: task {task.index}{where} cannot be computed: {err} (check the "
        "temperature, barriers and blocking)"
    )


def _compute(task: Task, signals: _Signals, log=None):
    """experiment.run_task in a worker thread while this (main) thread waits, so that a
    signal is honoured at once even while the kernel runs (its thread is left behind), and
    a task far over its planned work (:data:`OVER_PLAN`) is named in ``log`` as it runs."""
    from kmc import experiment, kernel  # the simulation stack, only when there is work to do

    if threading.current_thread() is not threading.main_thread():
        return experiment.run_task(task)
    outcome: dict = {}
    progress = np.zeros(1, dtype=np.int64)  # the kernel's attempts so far, written as it goes

    def work() -> None:
        try:
            outcome["data"] = experiment.run_task(task, progress=progress)
        except BaseException as exc:  # handed to the main thread
            outcome["error"] = exc

    run = task.config.run
    planned = task_work(task.config) if run.method == "kmc" else 0
    budget = kernel.DEFAULT_WORK_BUDGET if run.work_budget is None else run.work_budget
    warned = not planned or log is None
    worker = threading.Thread(target=work, name=f"kmc-task-{task.index}", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(_POLL)
        signals.check()
        if not warned and progress[0] > OVER_PLAN * planned:
            warned = True
            print(
                f"kmc: task {task.index} has made {progress[0]:.3g} kernel attempts, over "
                f"{OVER_PLAN:g} times its {planned:.3g} planned hops; it stops at "
                f"run.work_budget = {budget:g} times them",
                file=log,
                flush=True,
            )
    if "error" in outcome:
        raise outcome["error"]
    return outcome["data"]


def run(
    config_path: str | os.PathLike, output: str | os.PathLike | None = None, *, log=None
) -> Path | None:
    """Run every task not yet complete; return the run directory on rank 0, else None.

    Progress goes to ``log`` (default: ``sys.stderr`` as it is at the call).

    Raises ConfigError or RunError (on every rank) before anything is written if the config
    or the run directory is not acceptable; :class:`Interrupted` on SIGINT or SIGTERM (after
    stopping cleanly); :class:`DiskFullError` or another OSError when the disk fails.
    """
    log = sys.stderr if log is None else log

    comm = _communicator()
    lock = None
    monitor = None
    tasks: list[Task] = []
    run_dir = None
    with _Signals() as signals:
        try:
            config = load_config(config_path)
            run_dir = run_directory(config, output)
            tasks = expand_tasks(config)
            digest = config_digest(config)
            problem = pending = None
            if comm.rank == 0:
                try:
                    lock = _prepare(config, run_dir)
                    done, bad = survey(run_dir, tasks, digest)
                    for index, reason in bad.items():
                        moved = store.set_aside(_task_path(run_dir, tasks[index]))
                        print(
                            f"kmc: {_task_path(run_dir, tasks[index])}: {reason}; set aside "
                            f"as {moved}, the task is run again",
                            file=log,
                        )
                    finished = set(done)
                    pending = [t.index for t in tasks if t.index not in finished]
                except (RunError, OSError) as err:
                    problem = err
            problem, pending = comm.bcast((problem, pending))
            if problem is not None:
                raise problem
            if comm.rank == 0:
                print(
                    f"kmc: {config.name}: {len(tasks)} tasks, {len(tasks) - len(pending)} "
                    f"already done, {len(pending)} to run on {comm.size} rank(s) → {run_dir}",
                    file=log,
                )
                monitor = _Progress(
                    run_dir, tasks, pending, log, watch_files=not comm.tracks_completions
                )
            comm.start(len(pending), on_done=None if monitor is None else monitor.finished)
            finished_task = None
            while (k := comm.next_index(signals, finished_task)) < len(pending):
                task = tasks[pending[k]]
                try:
                    try:
                        computed = _compute(task, signals, log)
                    except ValueError as err:  # the kernel's and solver's input checks
                        raise UncomputableTaskError(_uncomputable(config, task, err)) from err
                    data = dataclasses.replace(computed, run_digest=digest)
                    _check_disk(run_dir, task.config)
                    with signals.deferred():
                        store.write_task(_task_path(run_dir, task), data)
                except (Interrupted, OSError):
                    raise
                except UncomputableTaskError as err:
                    if comm.size > 1:  # one line, then end every rank
                        print(f"kmc: error: {err}", file=sys.stderr, flush=True)
                        comm.abort(2)
                    raise
                except Exception:
                    if comm.size > 1:
                        print(f"kmc: rank {comm.rank}: task {task.index} failed:", file=sys.stderr)
                        traceback.print_exc()
                        comm.abort(1)  # the other ranks would wait for this one forever
                    raise
                finished_task = (task.index, int(data.observables.get("hops", 0)))
            comm.barrier(signals)  # every rank's tasks are on disk
            if monitor is not None:
                monitor.stop()
                monitor = None
            return run_dir if comm.rank == 0 else None
        except Interrupted as stop:
            if monitor is not None:
                monitor.stop(quiet=True)
                stop.done, stop.total = monitor.counts(len(tasks))
                stop.run_dir = run_dir
                monitor = None
            comm.stop(stop.exit_status)
            raise
        except OSError as err:
            if comm.size > 1:  # the others would wait for this rank forever
                print(f"kmc: error: {os_error_text(err)}", file=sys.stderr)
                sys.stderr.flush()
                comm.abort(1)
            raise
        finally:
            if monitor is not None:
                monitor.stop(quiet=True)
            if lock is not None:
                lock.release()
            with contextlib.suppress(Exception):
                comm.close()


def os_error_text(err: OSError) -> str:
    """One line for an environment failure (disk full, read-only directory, ...): the file
    and the cause ("No space left on device"), also from HDF5's long multi-line messages."""
    text = " ".join(str(err).split())
    if (
        err.filename is None
        and err.strerror
        and (err.errno is None or isinstance(err, DiskFullError))
    ):
        return " ".join(err.strerror.split())  # a message of kmc's own
    number = err.errno
    found = re.search(r"errno = (\d+)", text)
    if number is None and found:
        number = int(found.group(1))
    cause = os.strerror(number) if number else " ".join((err.strerror or text).split())
    filename = err.filename
    named = re.search(r"(?:filename|name) = '([^']*)'", text)
    if filename is None and named:
        filename = named.group(1)
    return f"{filename}: {cause}" if filename else cause


#: The network solver's cost per lattice site in kMC-hop equivalents, for the ETA only. On
#: the 2-core test machine a solve of the configs/ experiments (2304-9216 sites) took
#: 10-110 µs per site and an independent-walker hop about 30 ns (a lattice-gas hop ~300 ns):
#: some 300-3500 hops a site; 1000 is the middle on a log scale.
NETWORK_HOPS_PER_SITE = 1000


def task_work(config: Config) -> int:
    """A task's expected work in hops, known before it runs: ions × (hops_per_ion +
    equilibration_hops_per_ion) for kMC, :data:`NETWORK_HOPS_PER_SITE` × sites for the
    network solver."""
    if config.run.method == "network":
        return NETWORK_HOPS_PER_SITE * site_count(config.lattice)
    return ion_count(config) * (config.run.hops_per_ion + config.run.equilibration_hops_per_ion)


class _Progress:
    """Rank 0's view of the run, from a background thread that keeps ticking while rank 0
    computes. Completions are reported in memory (:meth:`finished`: rank 0's own tasks,
    and the other ranks' through the dispatcher), so the thread never looks at the task
    files; only without a dispatcher (MPI without MPI_THREAD_MULTIPLE, ``watch_files``) it
    lists the tasks directory instead. Progress counts estimated work (:func:`task_work`,
    in hops), so the ETA — elapsed × remaining work / done work — holds when tasks differ
    in size; the hop rate is measured, from the hops each finished task reports. A tqdm bar
    on a terminal, plain log lines otherwise (at the first finished task, then every 10 s
    and at the end)."""

    TICK = 0.5  # s, the shortest wait between two looks
    LOG_EVERY = 10.0  # s between log lines

    def __init__(
        self, run_dir: Path, tasks: list[Task], pending: list[int], log, *, watch_files=False
    ) -> None:
        self._tasks_dir = run_dir / "tasks"
        # task index → estimated work, for every task not finished yet
        self._remaining = {k: task_work(tasks[k].config) for k in pending}
        self._names = {store.task_filename(k): k for k in pending} if watch_files else None
        self._n_tasks, self._total_work = len(pending), sum(self._remaining.values())
        self._done_tasks = self._done_work = self._hops = 0
        self._reported: list[tuple[int, int | None]] = []
        self._reported_lock = threading.Lock()
        self._log = log
        self._start = time.monotonic()
        self._stop = threading.Event()
        self._quiet = False
        self._bar = None
        if log.isatty() and pending:
            from tqdm import tqdm

            self._bar = tqdm(
                total=self._total_work,
                unit="hop",
                unit_scale=True,
                smoothing=0,  # remaining time from the average rate: elapsed × left / done
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} hops "
                "[{elapsed}<{remaining}{postfix}]",
                file=log,
                dynamic_ncols=True,
            )
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def finished(self, index: int, hops: int | None = None) -> None:
        """Task ``index`` is on disk, after ``hops`` hops (None: unknown). Thread-safe."""
        with self._reported_lock:
            self._reported.append((index, hops))

    def counts(self, n_tasks: int) -> tuple[int, int]:
        """(tasks complete in the run directory, all tasks), as far as this run knows."""
        self._drain()
        return n_tasks - self._n_tasks + self._done_tasks, n_tasks

    def _from_files(self) -> list[tuple[int, int | None]]:
        """Finished tasks seen in one listing of the directory (watch_files only)."""
        try:
            with os.scandir(self._tasks_dir) as entries:
                names = [entry.name for entry in entries if entry.name in self._names]
        except OSError:
            return []
        found = []
        for name in names:
            index = self._names.pop(name)
            try:
                task = store.read_task(self._tasks_dir / name, positions=False)
                found.append((index, int(task.observables["hops"])))
            except (OSError, ValueError, KeyError):
                found.append((index, None))
        return found

    def _drain(self) -> None:
        with self._reported_lock:
            reported, self._reported = self._reported, []
        if self._names is not None and self._remaining:
            reported += self._from_files()
        for index, hops in reported:
            if index not in self._remaining:
                continue
            self._done_work += self._remaining.pop(index)
            self._done_tasks += 1
            self._hops += hops or 0

    def _rate_text(self, elapsed: float) -> str:
        """ ", 1.2e+07 hops/s", or nothing while no finished task has hopped (network)."""
        if not self._hops:
            return ""
        return f", {self._hops / max(elapsed, 1e-9):.2g} hops/s"

    def line(self) -> str:
        """The log line: tasks, share of the work, measured hop rate, elapsed time, ETA."""
        elapsed = time.monotonic() - self._start
        share = self._done_work / self._total_work if self._total_work else 1.0
        left = self._total_work - self._done_work
        eta = f"{elapsed * left / self._done_work:.0f} s" if self._done_work else "unknown"
        return (
            f"kmc: {self._done_tasks}/{self._n_tasks} tasks done, {100 * share:.0f} % of the "
            f"work{self._rate_text(elapsed)}, elapsed {elapsed:.0f} s, ETA {eta}"
        )

    def _watch(self) -> None:
        last_line, logged, wait = -math.inf, 0, self.TICK
        while True:
            stopping = self._stop.wait(wait)
            began = time.monotonic()
            before = self._done_work
            self._drain()
            now = time.monotonic()
            wait = max(self.TICK, 20 * (now - began))  # the watcher takes ≤ 5 % of a core
            if self._quiet:
                return
            if self._bar is not None:
                self._bar.update(self._done_work - before)
                rate = self._rate_text(now - self._start)
                self._bar.set_postfix_str(
                    f"{self._done_tasks}/{self._n_tasks} tasks{rate}", refresh=True
                )
            elif self._done_tasks > logged and (stopping or now - last_line > self.LOG_EVERY):
                last_line, logged = now, self._done_tasks
                print(self.line(), file=self._log, flush=True)
            if stopping:
                return

    def stop(self, quiet: bool = False) -> None:
        """End the thread: a last line (or the bar's last update), none if ``quiet``."""
        self._quiet = quiet
        self._stop.set()
        self._thread.join()
        if self._bar is not None:
            self._bar.close()
