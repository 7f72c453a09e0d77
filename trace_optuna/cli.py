"""The ``trace-optuna`` command line: one small function per subcommand.

The storage comes from ``--storage`` or the ``TRACE_OPTUNA_STORAGE`` environment variable.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from collections.abc import Sequence
import json
import logging
import math
import os
import shutil
import sys
from typing import TYPE_CHECKING
from typing import Any

if TYPE_CHECKING:
    import optuna

STORAGE_ENV = "TRACE_OPTUNA_STORAGE"
DEMO_STUDY = "trace-optuna-demo"
DEMO_STORAGE = "sqlite:///trace_optuna_demo.db"


def _storage_argument(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    parser.add_argument(
        "--storage",
        default=os.environ.get(STORAGE_ENV, default),
        help=f"Optuna storage URL (default: ${STORAGE_ENV}"
        + (f", else {default})" if default else ")"),
    )


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number >= ``minimum``; argparse names the option."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {minimum}, got {text!r}")
        return value

    return parse


def positive_seconds(text: str) -> float:
    """An argparse ``type``: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


def fraction(text: str) -> float:
    """An argparse ``type``: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text!r}")
    return value


def port_number(text: str) -> int:
    """An argparse ``type``: a TCP port, 0 (any free port) to 65535."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(
            f"must be a port number from 0 (any free port) to 65535, got {text!r}"
        )
    return value


def require_storage(args: argparse.Namespace) -> str:
    """The ``--storage`` URL, or a ConfigurationError saying how to give one."""
    from trace_optuna.exceptions import ConfigurationError

    if not args.storage:
        raise ConfigurationError(
            f"give --storage URL or set {STORAGE_ENV} (e.g. sqlite:///study.db)."
        )
    return str(args.storage)


def load_for_reading(storage: str, study_name: str) -> optuna.Study:
    """Open a trace_optuna study to read it, creating nothing and writing nothing.

    Raises:
        ConfigurationError: If the storage holds no study (a missing SQLite file included),
            no study of that name (the error lists the names it has), or the study was not
            made by trace_optuna.
    """
    from collections import Counter

    import optuna

    from trace_optuna import records
    from trace_optuna.exceptions import ConfigurationError
    from trace_optuna.storage import open_existing
    from trace_optuna.storage import redact

    opened = open_existing(storage, read_only=True)
    try:
        study = optuna.load_study(study_name=study_name, storage=opened)
    except KeyError:
        names = sorted(summary.study_name for summary in optuna.get_all_study_summaries(opened))
        raise ConfigurationError(
            f"No study named {study_name!r} in {redact(storage)}; "
            + (f"it holds {names}." if names else "it holds no study.")
        ) from None
    if records.SCHEMA not in study.user_attrs:
        states = Counter(trial.state.name for trial in study.get_trials(deepcopy=False))
        counts = ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
        raise ConfigurationError(
            f"Study {study_name!r} was not made by trace_optuna: it has no {records.SCHEMA!r} "
            f"attribute, so its trials ({counts or 'none'}) hold no Trace steps (snapshots, "
            "feedback, diffs) to show. Read a plain Optuna study with Optuna's own tools: "
            f"optuna best-trial --study-name {study_name!r} --storage {redact(storage)}, "
            "optuna.visualization, or optuna-dashboard."
        )
    return study


def _demo(args: argparse.Namespace) -> int:
    import trace_optuna as to
    from trace_optuna import demo
    from trace_optuna.storage import describe

    study = to.create_study(
        study_name=args.study,
        storage=args.storage,
        agent=demo.make_agent,
        evaluate=demo.evaluate,
        llm=to.LLM(demo.DEMO_LLM, simulated_seed=args.seed, simulated_noise=args.noise),
        seed=args.seed,
        error_score=0.0,
        load_if_exists=True,
    )
    before = len(study.trials)
    print(
        f"Running {args.trials} trials of study {study.study_name!r} (it has {before}) with the "
        f"simulated model {demo.DEMO_LLM!r}: a simulation for demos, not a language model."
    )
    study.optimize(n_trials=args.trials, show_progress_bar=not args.no_progress)
    best = study.best_trial
    print(f"\nBest score {best.value:.3f} at trial {best.number}. Best parameters:")
    print(json.dumps(study.best_snapshot, indent=2))
    print("\nBrowse every step (feedback, diffs, LLM calls) in optuna-dashboard with:")
    print(f"  {_this_command()} dashboard --storage {describe(args.storage)}")
    print(
        "(it needs the dashboard extra: pip install 'trace-optuna[dashboard]', or make dashboard)"
    )
    return 0


def _this_command() -> str:
    """How to run this command again from the user's shell: the bare name only where it is on
    PATH (a venv that is not activated is not), else the script's path, else ``python -m``."""
    script = sys.argv[0]
    if os.path.basename(script) != "trace-optuna":
        return f"{sys.executable} -m trace_optuna"
    found = shutil.which("trace-optuna")
    if found is not None and os.path.samefile(found, script):
        return "trace-optuna"
    relative = os.path.relpath(script)
    return relative if not relative.startswith("..") else os.path.abspath(script)


def _best(args: argparse.Namespace) -> int:
    from trace_optuna.population import Population

    study = load_for_reading(require_storage(args), args.study)
    population = Population(study)
    population.refresh()
    if population.multi_objective:
        front = [trial.number for trial in population.pareto_front()]
        print(
            f"error: study {args.study!r} has {len(study.directions)} objectives: no single "
            f"best trial. Its Pareto front is trials {front}.",
            file=sys.stderr,
        )
        return 2
    best = population.best()
    if best is None:
        print(f"error: study {args.study!r} has no completed trial yet", file=sys.stderr)
        return 1
    print(json.dumps(population.snapshot(best.number), indent=2))
    return 0


def _worker_arguments(parser: argparse.ArgumentParser) -> None:
    _storage_argument(parser)
    parser.add_argument("--study", required=True, help="study name (created on first use)")
    parser.add_argument(
        "--app",
        required=True,
        help="the trace_optuna.workers.App to run, as package.module:name",
    )
    parser.add_argument(
        "--trials", type=int_at_least(1), default=None, help="trials to run (default: no limit)"
    )
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=None,
        help="stop starting trials after S seconds",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=int_at_least(1),
        default=None,
        help="seconds between heartbeats of a running trial (default: the app's, 60)",
    )
    parser.add_argument(
        "--grace-period",
        type=int_at_least(1),
        default=None,
        help="seconds without a heartbeat before a trial counts as dead (default: twice the "
        "interval)",
    )


def _app_overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if args.heartbeat_interval is not None:
        overrides["heartbeat_interval"] = args.heartbeat_interval
    if args.grace_period is not None:
        overrides["grace_period"] = args.grace_period
    return overrides


def _worker(args: argparse.Namespace) -> int:
    import dataclasses

    from trace_optuna.workers import EXIT_INTERRUPTED
    from trace_optuna.workers import load_app
    from trace_optuna.workers import run_worker

    require_storage(args)
    app = dataclasses.replace(load_app(args.app), **_app_overrides(args))
    try:
        done = run_worker(
            app,
            study_name=args.study,
            storage=args.storage,
            n_trials=args.trials,
            timeout=args.timeout,
        )
    except KeyboardInterrupt:
        print("Interrupted; the running trial is recorded as FAIL.", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"Worker pid {os.getpid()} finished {done} trials of study {args.study!r}.")
    return 0


def _workers(args: argparse.Namespace) -> int:
    from trace_optuna.workers import run_workers

    require_storage(args)
    return run_workers(
        args.app,
        processes=args.processes,
        study_name=args.study,
        storage=args.storage,
        n_trials=args.trials,
        timeout=args.timeout,
        overrides=_app_overrides(args),
        log_level=logging.INFO if args.verbose else logging.WARNING,
    )


def _test(args: argparse.Namespace) -> int:
    """Score a dataset study's best candidate on its test set (with --app), or print the
    stored score (without)."""
    from trace_optuna import records

    storage = require_storage(args)
    if args.app is None:
        stored = load_for_reading(storage, args.study).user_attrs.get(records.STUDY_TEST)
        if stored is None:
            print(
                f"error: study {args.study!r} has no test score yet; give --app to score its "
                "best candidate on the app's testset",
                file=sys.stderr,
            )
            return 1
        print(json.dumps(stored, indent=2))
        return 0
    from trace_optuna.workers import load_app

    study = load_app(args.app).study(study_name=args.study, storage=storage)
    print(json.dumps(study.evaluate_test(), indent=2))
    return 0


def _doctor(args: argparse.Namespace) -> int:
    """Print which isolation layers of the STOP sandbox this machine supports."""
    from trace_optuna.strategies.sandbox import HOW_TO_ENABLE
    from trace_optuna.strategies.sandbox import supported_layers

    layers = supported_layers()
    print("Isolation of LLM-written code (the stop strategy, trace_optuna.sandbox):")
    for layer, why in layers.items():
        print(f"  {layer:<18} {'yes' if why is None else 'NO: ' + why}")
        if why is not None:
            print(f"  {'':<18} {HOW_TO_ENABLE[layer]}")
    if all(why is None for why in layers.values()):
        print("All layers work: the stop strategy runs with stop_isolation='required'.")
        return 0
    print("The stop strategy refuses to start here unless you opt out with stop_isolation='none'.")
    return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trace-optuna",
        description="Trace optimizer steps stored as Optuna trials.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", help="run the offline demo study (simulated model, SQLite by default)"
    )
    _storage_argument(demo, DEMO_STORAGE)
    demo.add_argument("--study", default=DEMO_STUDY, help="study name (default: %(default)s)")
    demo.add_argument(
        "--trials", type=int_at_least(1), default=20, help="trials to add (default: 20)"
    )
    demo.add_argument("--seed", type=int_at_least(0), default=0, help="seed (default: 0)")
    demo.add_argument(
        "--noise",
        type=fraction,
        default=0.1,
        help="share of wrong suggestions the simulated model makes (default: 0.1)",
    )
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(run=_demo)

    best = commands.add_parser("best", help="print a study's best snapshot as JSON")
    _storage_argument(best)
    best.add_argument("--study", required=True, help="study name")
    best.set_defaults(run=_best)

    worker = commands.add_parser(
        "worker", help="run trials of a shared study in this process (start it anywhere)"
    )
    _worker_arguments(worker)
    worker.set_defaults(run=_worker)

    workers = commands.add_parser(
        "workers", help="start and supervise N local worker processes on a shared study"
    )
    workers.add_argument(
        "--processes",
        type=int_at_least(1),
        default=os.cpu_count() or 1,
        help="worker processes (default: the number of CPUs)",
    )
    _worker_arguments(workers)
    workers.set_defaults(run=_workers)

    test = commands.add_parser(
        "test",
        help="score a dataset study's best candidate on its test set, or print the stored score",
    )
    _storage_argument(test)
    test.add_argument("--study", required=True, help="study name")
    test.add_argument(
        "--app",
        default=None,
        help="the trace_optuna.workers.App with the study's testset, as package.module:name; "
        "without it, the stored test score is printed",
    )
    test.set_defaults(run=_test)

    doctor = commands.add_parser(
        "doctor", help="print which sandbox isolation layers this machine supports"
    )
    doctor.set_defaults(run=_doctor)

    from trace_optuna import dashboard  # the `dashboard` and `report` subcommands

    dashboard.add_commands(commands, _storage_argument)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trace-optuna`` command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    from trace_optuna.exceptions import TraceOptunaError

    try:
        return int(args.run(args))
    except TraceOptunaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
