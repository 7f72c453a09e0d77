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
    from trace_optuna.cli import port_number

    dashboard = commands.add_parser(
        "dashboard",
        help="start optuna-dashboard on 127.0.0.1 for a storage (no authentication: local only)",
    )
    storage_argument(dashboard)
    dashboard.add_argument(
        "--port",
        type=port_number,
        default=8080,
        help="port (default: 8080; 0 picks a free one)",
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

    from trace_optuna.cli import require_storage
    from trace_optuna.exceptions import ConfigurationError
    from trace_optuna.storage import describe
    from trace_optuna.storage import open_existing
    from trace_optuna.storage import read_only_file

    url = require_storage(args)
    try:
        module = _optuna_dashboard()
    except ImportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    # Browsing creates nothing (a mistyped path is an error, not a new empty database); a
    # file on read-only media is served read-only rather than refused.
    read_only = read_only_file(url)
    storage = open_existing(url, read_only=read_only)
    artifact_store, directory = _dashboard_artifacts(storage, args.artifact_dir)
    app = _default_accept_encoding(module.wsgi(storage, artifact_store=artifact_store))

    class _Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class _Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            _logger.debug(format, *args)

    try:
        server = make_server(
            "127.0.0.1", args.port, app, server_class=_Server, handler_class=_Quiet
        )
    except OSError as error:
        raise ConfigurationError(
            f"--port {args.port}: cannot listen on 127.0.0.1:{args.port} ({error.strerror}). "
            "Choose another port, or --port 0 for any free one."
        ) from None
    address = f"http://127.0.0.1:{server.server_port}/dashboard/"
    print(f"optuna-dashboard for {describe(url)}: {address}")
    print(f"artifacts: {directory}" if directory else "artifacts: none (no artifact directory)")
    print("It has no authentication: keep it on 127.0.0.1. Ctrl-C stops it.", flush=True)
    if read_only:
        print("Read-only: this process cannot write the file, so notes are not saved.", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _default_accept_encoding(app: Any) -> Any:
    """optuna-dashboard with a default ``Accept-Encoding`` header.

    optuna-dashboard 0.21 reads ``request.headers["Accept-Encoding"]`` for ``/static/*`` and
    ``/favicon.ico``, and answers 500 to a client that sends none (curl, wget, health checks).
    A request without the header gets the plain file, as if it had sent ``identity``.
    """

    def with_default(environ: dict[str, Any], start_response: Any) -> Any:
        environ.setdefault("HTTP_ACCEPT_ENCODING", "identity")
        return app(environ, start_response)

    return with_default


def _dashboard_artifacts(storage: Any, artifact_dir: str | None) -> tuple[Any, str | None]:
    from trace_optuna.exceptions import ConfigurationError

    if artifact_dir is not None:
        if not Path(artifact_dir).expanduser().is_dir():
            raise ConfigurationError(
                f"--artifact-dir {artifact_dir!r} is not a directory: give the artifact "
                "directory the study was created with (artifact_dir=)."
            )
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
    if not Path(directories[0]).is_dir():
        warnings.warn(
            f"The artifact directory {directories[0]!r} the studies recorded does not exist "
            "here: no artifacts are served (give the moved directory with --artifact-dir).",
            stacklevel=2,
        )
        return None, None
    return resolve_artifact_store(directories[0], None), directories[0]


def run_report(args: argparse.Namespace) -> int:
    """``trace-optuna report``: write every figure of a study into one HTML page."""
    from trace_optuna import visualization
    from trace_optuna.cli import load_for_reading
    from trace_optuna.cli import require_storage
    from trace_optuna.exceptions import ConfigurationError

    url = require_storage(args)
    out = Path(args.out)
    if out.is_dir() or not out.parent.is_dir():
        raise ConfigurationError(
            f"--out {args.out!r} must name an HTML file in an existing directory"
            + (" (it is a directory)." if out.is_dir() else f" ({str(out.parent)!r} is not one).")
        )
    study = load_for_reading(url, args.study)
    trial_url = None
    if args.dashboard_url:
        relative = dashboard_trial_url(study)
        base = args.dashboard_url.rstrip("/")
        trial_url = lambda number: base + relative(number)  # noqa: E731
    path = visualization.write_report(study, out, trial_url=trial_url)
    print(f"wrote {path}")
    return 0
