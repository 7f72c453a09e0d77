"""The ``trace-optuna dashboard`` and ``trace-optuna report`` commands."""

from __future__ import annotations

import argparse
from collections.abc import Callable
import logging
from pathlib import Path
import sys
from typing import Any
import warnings

import optuna

from trace_optuna import records
from trace_optuna.dashboard._artifacts import resolve_artifact_store
from trace_optuna.dashboard._figures import dashboard_trial_url
from trace_optuna.dashboard._imports import _optuna_dashboard

_logger = logging.getLogger(__name__)


def add_commands(
    commands: Any, storage_argument: Callable[[argparse.ArgumentParser], None]
) -> None:
    """Register ``trace-optuna dashboard`` and ``trace-optuna report`` (called by ``cli.py``)."""
    dashboard = commands.add_parser(
        "dashboard",
        help="start optuna-dashboard on 127.0.0.1 for a storage (no authentication: local only)",
    )
    storage_argument(dashboard)
    dashboard.add_argument(
        "--port", type=int, default=8080, help="port (default: 8080; 0 picks a free one)"
    )
    dashboard.add_argument(
        "--artifact-dir",
        default=None,
        help="artifact directory (default: the one the storage's studies recorded)",
    )
    dashboard.set_defaults(run=run_dashboard)

    report = commands.add_parser(
        "report", help="write a study's figures into one self-contained HTML page"
    )
    storage_argument(report)
    report.add_argument("--study", required=True, help="study name")
    report.add_argument("--out", required=True, help="the HTML file to write")
    report.add_argument(
        "--dashboard-url",
        default=None,
        help="link lineage nodes to this optuna-dashboard (e.g. http://127.0.0.1:8080)",
    )
    report.set_defaults(run=run_report)


def run_dashboard(args: argparse.Namespace) -> int:
    """``trace-optuna dashboard``: serve optuna-dashboard on 127.0.0.1 until interrupted."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler
    from wsgiref.simple_server import WSGIServer
    from wsgiref.simple_server import make_server

    from trace_optuna.storage import describe
    from trace_optuna.storage import resolve_storage

    if not args.storage:
        print("error: give --storage or set TRACE_OPTUNA_STORAGE", file=sys.stderr)
        return 2
    try:
        module = _optuna_dashboard()
    except ImportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    storage = resolve_storage(args.storage)
    artifact_store, directory = _dashboard_artifacts(storage, args.artifact_dir)
    app = module.wsgi(storage, artifact_store=artifact_store)

    class _Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class _Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            _logger.debug(format, *args)

    server = make_server("127.0.0.1", args.port, app, server_class=_Server, handler_class=_Quiet)
    address = f"http://127.0.0.1:{server.server_port}/dashboard/"
    print(f"optuna-dashboard for {describe(args.storage)}: {address}")
    print(f"artifacts: {directory}" if directory else "artifacts: none (no artifact directory)")
    print("It has no authentication: keep it on 127.0.0.1. Ctrl-C stops it.", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _dashboard_artifacts(storage: Any, artifact_dir: str | None) -> tuple[Any, str | None]:
    if artifact_dir is not None:
        return resolve_artifact_store(artifact_dir, None), str(Path(artifact_dir).resolve())
    directories = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        directory = summary.user_attrs.get(records.STUDY_ARTIFACT_DIR)
        if isinstance(directory, str) and directory not in directories:
            directories.append(directory)
    if not directories:
        return None, None
    if len(directories) > 1:
        warnings.warn(
            f"The studies in this storage use several artifact directories {directories}; "
            f"the dashboard serves {directories[0]!r} (choose with --artifact-dir).",
            stacklevel=2,
        )
    return resolve_artifact_store(directories[0], None), directories[0]


def run_report(args: argparse.Namespace) -> int:
    """``trace-optuna report``: write every figure of a study into one HTML page."""
    from trace_optuna import visualization
    from trace_optuna.storage import resolve_storage

    if not args.storage:
        print("error: give --storage or set TRACE_OPTUNA_STORAGE", file=sys.stderr)
        return 2
    storage = resolve_storage(args.storage)
    try:
        study = optuna.load_study(study_name=args.study, storage=storage)
    except KeyError:
        print(f"error: no study named {args.study!r} in that storage", file=sys.stderr)
        return 2
    trial_url = None
    if args.dashboard_url:
        relative = dashboard_trial_url(study)
        base = args.dashboard_url.rstrip("/")
        trial_url = lambda number: base + relative(number)  # noqa: E731
    path = visualization.write_report(study, args.out, trial_url=trial_url)
    print(f"wrote {path}")
    return 0
