"""Run the tasks of a config in a run directory, serially or shared among MPI ranks.

Without an MPI launcher the run is serial and mpi4py is never imported. Under ``mpiexec``
every rank takes the next unfinished task from a dispatcher on rank 0 (a thread that
answers requests, so rank 0 works too), so cheap and expensive tasks balance themselves.
Task k's result depends only on its seeds (see :func:`kmc.config.expand_tasks`), never on
which rank ran it. Each task file is written atomically, so a crash loses only the tasks
that were running; rerunning finishes the rest.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import sys
import threading
import time
import traceback
from pathlib import Path

from kmc import store
from kmc.config import (
    Config,
    ConfigError,
    Task,
    expand_tasks,
    ion_count,
    load_config,
    resolved_dict,
    site_count,
)

# Environment variables that MPI launchers set: MPICH/Hydra and Slurm's PMI, Open MPI, PMIx.
_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")


class RunError(Exception):
    """A run that cannot start as asked (exit status 2); nothing has been changed on disk."""


class _Serial:
    rank, size = 0, 1

    def __init__(self) -> None:
        self._next = 0

    def start(self, n_tasks: int) -> None:
        pass

    def next_index(self) -> int:
        self._next += 1
        return self._next - 1

    def bcast(self, value):
        return value

    def barrier(self) -> None:
        pass

    def close(self) -> None:
        pass


class _Mpi:
    """COMM_WORLD with a task dispatcher: a thread on rank 0 hands the next task index to
    whichever rank asks, and rank 0's own loop draws from the same counter directly.

    A one-sided fetch-and-add counter would be simpler, but MPICH services it only while
    rank 0 is inside an MPI call, so a rank 0 busy in the kernel stalled everyone else. The
    dispatcher polls with Iprobe and sleeps in between, so it costs no core. Without
    MPI_THREAD_MULTIPLE the tasks are dealt round robin instead (still rank-independent
    results, only less balanced)."""

    _ASK, _ANSWER = 11, 12

    def __init__(self) -> None:
        from mpi4py import MPI

        self._mpi = MPI
        self.comm = MPI.COMM_WORLD
        self.rank, self.size = self.comm.rank, self.comm.size
        self._dynamic = self.size > 1 and MPI.Query_thread() >= MPI.THREAD_MULTIPLE
        self._channel = self.comm.Dup()  # dispatcher messages apart from the collectives
        self._lock = threading.Lock()
        self._next = 0 if self._dynamic else self.rank
        self._limit = None
        self._server = None

    def start(self, n_tasks: int) -> None:
        """Begin handing out the indices 0 .. n_tasks - 1."""
        self._limit = n_tasks
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
        while waiting:
            if self._channel.Iprobe(source=self._mpi.ANY_SOURCE, tag=self._ASK, status=status):
                source = status.Get_source()
                self._channel.recv(source=source, tag=self._ASK)
                index = self._take()
                self._channel.send(index, dest=source, tag=self._ANSWER)
                waiting -= index >= self._limit
            else:
                time.sleep(0.002)

    def next_index(self) -> int:
        if not self._dynamic:
            self._next += self.size
            return self._next - self.size
        if self.rank == 0:
            return self._take()
        self._channel.send(None, dest=0, tag=self._ASK)
        return self._channel.recv(source=0, tag=self._ANSWER)

    def bcast(self, value):
        return self.comm.bcast(value, root=0)

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, status: int) -> None:
        self.comm.Abort(status)

    def close(self) -> None:
        if self._server is not None:
            self._server.join()
        self._channel.Free()


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
    described = resolved_dict(config)
    described.pop("name", None)  # the name only picks the default directory
    if config.lattice.structure_file is not None:  # the file's content, not its path
        described["lattice"]["structure"] = _file_digest(config.lattice.structure_file)
    return described


def _file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_run_directory(config: Config, run_dir: Path) -> bool:
    """Whether ``run_dir`` already holds this run; raise RunError if it holds anything else."""
    if not run_dir.exists():
        return False
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: exists and is not a directory")
    given = run_dir / "config.toml"
    if not given.exists():
        if any(run_dir.iterdir()):
            raise RunError(f"{run_dir}: exists, is not empty and holds no kmc run (no config.toml)")
        return False
    try:
        existing = load_config(given, check_memory=False)
    except ConfigError as err:
        raise RunError(f"{run_dir}: holds a run whose config.toml cannot be read ({err})") from err
    if _comparable(existing) != _comparable(config):
        old, new = _comparable(existing), _comparable(config)
        differ = next(k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))
        raise RunError(
            f"{run_dir}: holds a different run (its config differs in [{differ}]); "
            "give another --output or remove that directory"
        )
    return True


def _prepare(config: Config, run_dir: Path) -> None:
    exists = check_run_directory(config, run_dir)
    (run_dir / "tasks").mkdir(parents=True, exist_ok=True)
    if not exists:
        structure = config.lattice.structure_file
        if structure is not None:  # the run directory stays complete without its source
            with store.atomic_write(run_dir / Path(structure).name) as temporary:
                shutil.copyfile(structure, temporary)
        with store.atomic_write(run_dir / "config.toml") as temporary:
            shutil.copyfile(config.source, temporary)
    for stale in (run_dir / "tasks").glob(".task-*.tmp.*"):
        stale.unlink(missing_ok=True)  # left by a crashed run; the task is redone


def _task_path(run_dir: Path, task: Task) -> Path:
    return run_dir / "tasks" / store.task_filename(task.index)


def run(
    config_path: str | os.PathLike, output: str | os.PathLike | None = None, *, log=None
) -> Path | None:
    """Run every task not yet complete; return the run directory on rank 0, else None.

    Progress goes to ``log`` (default: ``sys.stderr`` as it is at the call).

    Raises ConfigError or RunError (on every rank) before anything is written if the config
    or the run directory is not acceptable.
    """
    from kmc import experiment  # the simulation stack, only when there is work to do

    log = sys.stderr if log is None else log

    comm = _communicator()
    try:
        config = load_config(config_path)
        run_dir = run_directory(config, output)
        tasks = expand_tasks(config)
        problem = None
        if comm.rank == 0:
            try:
                _prepare(config, run_dir)
            except RunError as err:
                problem = err
        problem = comm.bcast(problem)
        if problem is not None:
            raise problem
        pending = None
        if comm.rank == 0:
            pending = [t.index for t in tasks if not store.is_complete(_task_path(run_dir, t))]
        pending = comm.bcast(pending)
        if comm.rank == 0:
            print(
                f"kmc: {config.name}: {len(tasks)} tasks, {len(tasks) - len(pending)} already "
                f"done, {len(pending)} to run on {comm.size} rank(s) → {run_dir}",
                file=log,
            )
        comm.start(len(pending))
        monitor = _Progress(run_dir, tasks, pending, log) if comm.rank == 0 else None
        try:
            while (k := comm.next_index()) < len(pending):
                task = tasks[pending[k]]
                try:
                    store.write_task(_task_path(run_dir, task), experiment.run_task(task))
                except Exception:
                    if comm.size > 1:
                        print(f"kmc: rank {comm.rank}: task {task.index} failed:", file=sys.stderr)
                        traceback.print_exc()
                    if comm.size > 1:
                        comm.abort(1)  # the other ranks would wait for this one forever
                    raise
            comm.barrier()  # every rank's tasks are on disk
        finally:
            if monitor is not None:
                monitor.stop()
        return run_dir if comm.rank == 0 else None
    finally:
        comm.close()


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
    """Rank 0's view of the run: watches for finished task files (written atomically by any
    rank) from a background thread, so it needs no MPI calls and keeps ticking while rank 0
    computes. Progress counts estimated work (:func:`task_work`, in hops), so the ETA —
    elapsed × remaining work / done work — holds when tasks differ in size; the hop rate is
    measured, from the hops each finished task stored. A tqdm bar on a terminal, plain log
    lines otherwise (at the first finished task, then every 10 s and at the end)."""

    TICK = 0.5  # s, the shortest wait between two looks at the tasks directory
    LOG_EVERY = 10.0  # s between log lines

    def __init__(self, run_dir: Path, tasks: list[Task], pending: list[int], log) -> None:
        self._tasks_dir = run_dir / "tasks"
        # file name → estimated work, for every task not finished yet
        self._remaining = {
            _task_path(run_dir, tasks[k]).name: task_work(tasks[k].config) for k in pending
        }
        self._n_tasks, self._total_work = len(pending), sum(self._remaining.values())
        self._done_tasks = self._done_work = self._hops = 0
        self._log = log
        self._start = time.monotonic()
        self._stop = threading.Event()
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

    def _finished(self) -> list[str]:
        """Names of unfinished tasks whose files now exist: one listing of the directory,
        not a stat per task (the files of a run with 10^5 tasks are listed in ~0.05 s)."""
        try:
            with os.scandir(self._tasks_dir) as entries:
                return [entry.name for entry in entries if entry.name in self._remaining]
        except OSError:
            return []

    def _account(self, name: str) -> None:
        self._done_work += self._remaining.pop(name)
        self._done_tasks += 1
        try:
            task = store.read_task(self._tasks_dir / name, positions=False)
            self._hops += int(task.observables["hops"])
        except (OSError, ValueError, KeyError):
            pass

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
            for name in self._finished() if self._remaining else ():
                self._account(name)
            now = time.monotonic()
            wait = max(self.TICK, 20 * (now - began))  # the watcher takes ≤ 5 % of a core
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

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        if self._bar is not None:
            self._bar.close()
