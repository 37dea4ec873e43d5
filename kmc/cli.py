"""The ``kmc`` command: run, inspect, analyze, plot, export and validate (``kmc --help``).

Bad input (a config, an argument, a run directory) ends with one line on stderr and exit
status 2, before anything on disk is changed. The environment failing (disk full, a
read-only or missing directory, permissions) ends with one line naming the cause and exit
status 1, and so do an internal failure and ``kmc validate`` when a check fails. SIGINT and
SIGTERM stop ``kmc run`` cleanly with one line saying how to resume and exit status 128 +
the signal number (130, 143).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from kmc import __version__

EXIT_BAD_INPUT = 2
EXIT_ENVIRONMENT = 1

_EXAMPLES = """\
examples:
  kmc run configs/quickstart.toml            run a sweep (run directory runs/quickstart)
  mpiexec -n 4 kmc run configs/quickstart.toml   the same, its tasks shared among 4 ranks
  kmc run --dry-run configs/quickstart.toml  check the config and list its tasks, write nothing
  kmc inspect configs/lifepo4_antisite_structure.toml   sites and hop types of its lattice
  kmc analyze runs/quickstart --json         observables with error bars as one JSON object
  kmc plot runs/quickstart -o fig.pdf        D*, D_σ versus amorphous fraction (PNG/PDF/SVG)
  kmc plot runs/x --x run.temperature --by microstructure.kind -o x.svg   small multiples
  kmc export runs/quickstart --task 0        task 0's trajectory as extended XYZ (OVITO/ASE)
  kmc validate --quick                       the physics self-checks (docs/physics.md)
"""


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage block
        raise _UsageError(f"{self.prog}: {message}")


def _task_index(text: str) -> int:
    index = int(text)
    if index < 0:
        raise ValueError(text)
    return index


def _output_file(path: str | Path, option: str) -> Path:
    """An output file whose directory exists, checked before any work is done."""
    path = Path(path)
    if path.is_dir():
        raise _UsageError(f"{option} {path}: is a directory; give a file name")
    if not path.parent.is_dir():
        raise _UsageError(f"{option} {path}: directory {path.parent} does not exist")
    return path


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kmc",
        description=__doc__.splitlines()[0],
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"kmc {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="run every task of a config not yet complete")
    run.add_argument("config", help="TOML config file")
    run.add_argument("--output", "-o", help="run directory (default: runs/<name>)")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="check the config, list the tasks with their memory and disk, write nothing",
    )

    inspect = commands.add_parser(
        "inspect", help="print the sites and hop types of a config's lattice (energy keys)"
    )
    inspect.add_argument("config", help="TOML config file")

    analyze = commands.add_parser("analyze", help="recompute observables, write results.h5")
    analyze.add_argument("run_dir", metavar="RUN", help="run directory")
    analyze.add_argument("--json", action="store_true", help="print one JSON object")

    plot = commands.add_parser("plot", help="plot D*, D_σ versus a swept key (PNG, PDF, SVG)")
    plot.add_argument("run_dir", metavar="RUN", help="run directory")
    plot.add_argument(
        "-o", "--output", help="figure file, .png, .pdf or .svg (default: RUN/plot.png)"
    )
    plot.add_argument(
        "--x", metavar="KEY", help="numeric swept key on the x axis (default: amorphous fraction)"
    )
    plot.add_argument("--by", metavar="KEY", help="one column of panels per value of this key")

    export = commands.add_parser("export", help="write one task's trajectory for OVITO/ASE")
    export.add_argument("run_dir", metavar="RUN", help="run directory")
    export.add_argument("--task", type=_task_index, required=True, help="task index (≥ 0)")
    export.add_argument("--format", choices=["extxyz"], default="extxyz")
    export.add_argument("-o", "--output", help="output file (default: RUN/task-K.extxyz)")

    validate = commands.add_parser("validate", help="check the physics against docs/physics.md")
    validate.add_argument("--quick", action="store_true", help="fewer, shorter runs (~1 min)")
    validate.add_argument("--json", action="store_true", help="print one JSON list of records")
    return parser


def _run(args) -> None:
    from kmc import runner

    if args.dry_run:
        _dry_run(args.config, args.output)
        return
    run_dir = runner.run(args.config, args.output)
    if run_dir is not None:  # rank 0 summarizes, from the observables the ranks stored
        results, unsaved = _analyze(run_dir, recompute=False)
        print(results.table())
        if unsaved is not None:
            raise unsaved
        figure = _plot(results, run_dir / "plot.png")
        print(f"\nresults: {run_dir / 'results.h5'}\nplot:    {figure}")
        print(f"next:    kmc analyze {run_dir} --json    (kmc export {run_dir} --task 0)")


def _inspect(config_path: str) -> None:
    """The lattice of a config as a user assigns energies to it: for a structure, its site
    types and hop types (the keys of per-type crystal energy tables); then the supercell and
    the crystal energies the config gives each type."""
    from kmc.config import STRUCTURE, load_config, plain

    config = load_config(config_path, check_memory=False)
    lat_cfg = config.lattice
    if lat_cfg.kind == STRUCTURE:
        print(lat_cfg.read_structure().describe())
        where = f"supercell {' × '.join(map(str, lat_cfg.supercell))}"
    else:
        where = f"{lat_cfg.kind}, cells {' × '.join(map(str, lat_cfg.cells))}"
    lattice = lat_cfg.build()
    print(
        f"\nlattice: {where}: {lattice.n_sites} sites, {lattice.n_bonds} bonds, up to "
        f"{lattice.coordination} hops per site, shortest hop {lattice.hop_distance:.4g} Å"
    )
    for key in ("site_energy", "saddle_energy"):
        print(f"crystal.{key} = {_energy_text(plain(getattr(config.crystal, key)))}")


def _energy_text(value) -> str:
    """A config energy as written in TOML (constants as bare numbers)."""
    if isinstance(value, dict) and value.get("dist") == "constant":
        return f"{value['value']:g}"
    if isinstance(value, dict) and "dist" in value:
        return "{" + ", ".join(f"{k} = {v!r}" for k, v in value.items()) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_energy_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_energy_text(v) for v in value) + "]"
    return repr(value)


def _dry_run(config_path: str, output: str | None) -> None:
    """What ``kmc run`` would do, done only on paper: the config is validated, the tasks
    expanded and listed one line per sweep point with their size, then the totals. The run
    directory is read (to count finished tasks, or to refuse one holding another run) and
    nothing anywhere is written."""
    from kmc import runner
    from kmc.config import (
        config_digest,
        expand_tasks,
        format_bytes,
        ion_count,
        load_config,
        site_count,
        task_disk,
        task_memory,
    )
    from kmc.results import show_value
    from kmc.texttable import text_table

    config = load_config(config_path)
    run_dir = runner.run_directory(config, output)
    exists = runner.check_run_directory(config, run_dir)  # RunError (exit 2) as kmc run
    speaks = not runner.launcher_rank()  # under MPI only rank 0 speaks
    if speaks:  # at once: a sweep of 10^5 tasks takes seconds to expand and tabulate
        print(f"kmc run --dry-run: {config.source} → {run_dir}", flush=True)
    tasks = expand_tasks(config)
    done: set[int] = set()
    damaged: dict[int, str] = {}
    if exists:
        verified, damaged = runner.survey(run_dir, tasks, config_digest(config))
        done = set(verified)

    replicas = config.run.replicas
    swept = [key for key, _ in config.sweep]
    headers = ["point", *swept, "tasks", "replicas", "sites", "ions", "memory/task", "disk/task"]
    rows, peak_memory, peak_disk, disk_to_run = [], 0, 0, 0
    for p in range(len(tasks) // replicas):
        first = tasks[p * replicas]
        memory, disk = task_memory(first.config), task_disk(first.config)
        peak_memory, peak_disk = max(peak_memory, memory), max(peak_disk, disk)
        point_tasks = range(first.index, first.index + replicas)
        disk_to_run += disk * sum(k not in done for k in point_tasks)
        rows.append(
            [
                str(p),
                *(show_value(first.plain_point[key]) for key in swept),
                f"{point_tasks[0]}-{point_tasks[-1]}" if replicas > 1 else str(first.index),
                str(replicas),
                str(site_count(first.config.lattice)),
                str(ion_count(first.config)),
                format_bytes(memory),
                format_bytes(disk),
            ]
        )
    numeric = set(range(len(headers) - 5, len(headers)))  # replicas … disk/task
    where = str(run_dir) if run_dir.exists() else f"{run_dir} (does not exist yet)"
    to_run = len(tasks) - len(done)
    lines = [
        *text_table(headers, rows, right=numeric),
        "",
        f"tasks:  {len(tasks)} ({len(rows)} sweep point(s) × {replicas} replica(s)); "
        f"{len(done)} already complete in {where}, {to_run} to run"
        + (f" ({len(damaged)} damaged or foreign file(s) to set aside)" if damaged else ""),
        f"memory: at most {format_bytes(peak_memory)} per task (each rank runs one at a time)",
        f"disk:   at most {format_bytes(peak_disk)} per task, {format_bytes(disk_to_run)} for "
        f"the {to_run} task(s) to run (an uncompressed upper bound: task files are "
        "gzip-compressed)",
        "nothing was written (dry run)",
    ]
    if speaks:
        print("\n".join(lines))


def _analyze(run_dir: Path, recompute: bool = True):
    """Analyze a run directory and save RUN/results.h5. Returns (results, None), or
    (results, the OSError) if results.h5 could not be written (read-only, disk full): the
    caller still shows the results, then names the failure and exits 1."""
    from kmc import results
    from kmc.runner import os_error_text

    try:
        outcome = results.analyze_run(run_dir, progress=True, recompute=recompute)
    except ValueError as err:  # not a run directory
        raise _UsageError(str(err)) from err
    for line in outcome.damaged:
        print(f"kmc: {line}; skipped (`kmc run` sets it aside and redoes it)", file=sys.stderr)
    if outcome.missing:
        print(
            f"kmc: {len(outcome.missing)} task(s) not complete yet "
            f"({results.index_ranges(outcome.missing)}); rerun `kmc run` to finish",
            file=sys.stderr,
        )
    try:
        results.write_results(outcome, Path(run_dir) / "results.h5")
    except OSError as err:
        target = Path(run_dir) / "results.h5"
        return outcome, OSError(None, f"{target}: not saved ({os_error_text(err)})")
    return outcome, None


def _plot(outcome, path: Path) -> Path:
    from kmc import plot

    return plot.plot_run(outcome, path)


def _export(args) -> None:
    from kmc import export, store
    from kmc.config import STRUCTURE, config_digest, expand_tasks, load_config

    run_dir = Path(args.run_dir)
    config = load_config(run_dir / "config.toml", check_memory=False)
    tasks = expand_tasks(config)
    if args.task >= len(tasks):
        raise _UsageError(f"{run_dir}: no task {args.task} (the run has {len(tasks)} tasks)")
    task_file = run_dir / "tasks" / store.task_filename(args.task)
    identity = store.TaskIdentity.of_task(tasks[args.task], config_digest(config))
    reason = store.verify_task(task_file, identity)
    if reason is not None:
        raise _UsageError(f"{task_file}: {reason}: not exported (kmc run redoes the task)")
    out = _output_file(args.output or run_dir / f"task-{args.task}.extxyz", "-o")
    framework = None  # the framework atoms of a structure run's supercell
    if config.lattice.kind == STRUCTURE:
        framework = config.lattice.read_structure().framework(config.lattice.supercell)
    frames = export.export_extxyz(task_file, out, framework=framework, expect=identity)
    print(f"{out}: {frames} frames")


def _validate(args) -> bool:
    """Run the self-checks; print the table (rank 0 only under MPI). True if all pass."""
    from kmc import validate
    from kmc.runner import launcher_rank

    records = validate.run_validation(args.quick)
    if not launcher_rank():
        print(validate.to_json(records) if args.json else validate.format_table(records))
    return all(record["passed"] for record in records)


def _check_run_dir(path: str) -> Path:
    run_dir = Path(path)
    if not (run_dir / "config.toml").is_file():
        raise _UsageError(f"{run_dir}: not a kmc run directory (no config.toml)")
    return run_dir


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kmc`` command; returns the exit status."""
    from kmc import runner as runner_signals
    from kmc.config import ConfigError
    from kmc.runner import Interrupted, RunError, launcher_rank, os_error_text

    previous = runner_signals.install()
    try:
        args = _parser().parse_args(argv)
        if args.command == "run":
            _run(args)
        elif args.command == "inspect":
            _inspect(args.config)
        elif args.command == "analyze":
            outcome, unsaved = _analyze(_check_run_dir(args.run_dir))
            print(outcome.to_json() if args.json else outcome.table())
            if unsaved is not None:
                raise unsaved
        elif args.command == "plot":
            from kmc import plot

            run_dir = _check_run_dir(args.run_dir)
            try:  # -o and the keys are checked before _analyze rewrites results.h5
                if args.output and Path(args.output).is_dir():
                    raise ValueError(
                        f"-o {args.output}: is a directory; give a file name (.png, .pdf, .svg)"
                    )
                figure = plot.check_output(args.output or run_dir / "plot.png")
                plot.check_run_options(run_dir, x=args.x, by=args.by)
            except ValueError as err:
                raise _UsageError(str(err)) from err
            outcome, unsaved = _analyze(run_dir)
            print(plot.plot_run(outcome, figure, x=args.x, by=args.by))
            if unsaved is not None:
                raise unsaved
        elif args.command == "export":
            _check_run_dir(args.run_dir)
            _export(args)
        elif args.command == "validate" and not _validate(args):
            return 1
    except (ConfigError, RunError, _UsageError) as err:
        if not launcher_rank():  # under MPI only rank 0 speaks
            print(f"kmc: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Interrupted as stop:
        if not launcher_rank():
            if stop.total:
                where = f" --output {shlex.quote(str(stop.run_dir))}" if stop.run_dir else ""
                print(
                    f"kmc: stopped by {stop.name} ({stop.done} of {stop.total} tasks complete); "
                    f"resume with: kmc run {shlex.quote(args.config)}{where}",
                    file=sys.stderr,
                )
            else:
                print(f"kmc: stopped by {stop.name}; rerun the same command", file=sys.stderr)
        return stop.exit_status
    except KeyboardInterrupt:  # a SIGINT before the handlers were in place
        print("kmc: stopped by SIGINT; rerun the same command", file=sys.stderr)
        return 130
    except OSError as err:  # the environment: disk full, read-only, permissions
        if not launcher_rank():
            print(f"kmc: error: {os_error_text(err)}", file=sys.stderr)
        return EXIT_ENVIRONMENT
    finally:
        runner_signals.restore(previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
