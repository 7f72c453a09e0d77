"""The ``trace-optuna dashboard`` and ``trace-optuna report`` commands."""

from __future__ import annotations

import argparse
from collections.abc import Callable
import dataclasses
import logging
import os
from pathlib import Path
import secrets
import socket
import sys
from typing import Any
import urllib.parse
import warnings

import optuna

from trace_optuna import records
from trace_optuna.dashboard._artifacts import resolve_artifact_store
from trace_optuna.dashboard._figures import dashboard_trial_url
from trace_optuna.dashboard._guard import TOKEN_PARAMETER
from trace_optuna.dashboard._guard import Guard
from trace_optuna.dashboard._guard import GuardSettings
from trace_optuna.dashboard._guard import bracketed
from trace_optuna.dashboard._guard import is_loopback
from trace_optuna.dashboard._imports import _optuna_dashboard

_logger = logging.getLogger(__name__)

TOKEN_ENV = "TRACE_OPTUNA_DASHBOARD_TOKEN"
ALLOWED_HOSTS_ENV = "TRACE_OPTUNA_DASHBOARD_ALLOWED_HOSTS"


def add_commands(
    commands: Any, storage_argument: Callable[[argparse.ArgumentParser], None]
) -> None:
    """Register ``trace-optuna dashboard`` and ``trace-optuna report`` (called by ``cli.py``)."""
    from trace_optuna.cli import port_number

    dashboard = commands.add_parser(
        "dashboard",
        help="start optuna-dashboard for a storage, on 127.0.0.1, behind a per-start token",
    )
    dashboard.add_argument(
        "storage_url", nargs="?", default=None, metavar="STORAGE", help="as --storage"
    )
    storage_argument(dashboard)
    dashboard.add_argument(
        "--port",
        type=port_number,
        default=8080,
        help="port (default: 8080; 0 picks a free one)",
    )
    dashboard.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1); any other needs --allowed-hosts, and "
        "--token (or $" + TOKEN_ENV + ") or --no-token",
    )
    dashboard.add_argument(
        "--allowed-hosts",
        default=os.environ.get(ALLOWED_HOSTS_ENV, ""),
        help="more Host names to answer, comma-separated patterns such as dash.internal or "
        f"'*.internal:8080' (default: ${ALLOWED_HOSTS_ENV})",
    )
    dashboard.add_argument(
        "--allowed-origins",
        default="",
        help="comma-separated origins (https://app.example) whose pages may call the API",
    )
    tokens = dashboard.add_mutually_exclusive_group()
    tokens.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV) or None,
        help=f"the token to require (default: ${TOKEN_ENV}, else a new random one per start)",
    )
    tokens.add_argument(
        "--no-token",
        action="store_true",
        help="require no token: anyone who reaches the port can read and change the studies",
    )
    dashboard.add_argument(
        "--read-only", action="store_true", help="refuse every change (notes, feedback, deletion)"
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

    if args.storage_url is not None:
        args.storage = args.storage_url
    url = require_storage(args)
    settings = guard_settings(args)
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
        address_family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET

    class _Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            _logger.debug(format, *args)

    try:
        server = make_server(
            settings.host, args.port, app, server_class=_Server, handler_class=_Quiet
        )
    except OSError as error:
        raise ConfigurationError(
            f"--port {args.port}: cannot listen on {settings.host}:{args.port} "
            f"({error.strerror}). Choose another port, or --port 0 for any free one."
        ) from None
    settings = dataclasses.replace(
        settings, port=server.server_port, read_only=settings.read_only or read_only
    )
    server.set_app(Guard(app, settings))
    address = f"http://{_url_host(settings)}:{server.server_port}/dashboard/"
    if settings.token is not None:
        address += f"?{TOKEN_PARAMETER}={settings.token}"
    print(f"optuna-dashboard for {describe(url)}: {address}")
    print(f"artifacts: {directory}" if directory else "artifacts: none (no artifact directory)")
    if settings.token is not None:
        print("Only this URL opens it (it holds the token). Ctrl-C stops it.", flush=True)
    else:
        print(
            "warning: --no-token: anyone who can reach this port can read and change every "
            "study. Ctrl-C stops it.",
            flush=True,
        )
    if read_only:
        print("Read-only: this process cannot write the file, so notes are not saved.", flush=True)
    elif settings.read_only:
        print("Read-only: every change is refused.", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def guard_settings(args: argparse.Namespace) -> GuardSettings:
    """The :class:`GuardSettings` of ``trace-optuna dashboard``'s options, checked.

    Raises:
        ConfigurationError: A non-loopback ``--host`` without ``--allowed-hosts``, or without
            a token given (``--token`` or the environment) or an explicit ``--no-token``: a
            dashboard others reach needs the names they use, and a token they share that
            survives a restart.
    """
    from trace_optuna.exceptions import ConfigurationError

    allowed_hosts = tuple(_items(args.allowed_hosts))
    allowed_origins = tuple(origin.rstrip("/") for origin in _items(args.allowed_origins))
    for origin in allowed_origins:
        parsed = urllib.parse.urlsplit(origin)
        if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.path:
            raise ConfigurationError(
                f"--allowed-origins: {origin!r} is not an origin (scheme://host[:port], "
                "e.g. https://app.example)."
            )
    if not is_loopback(args.host):
        if not allowed_hosts:
            raise ConfigurationError(
                f"--host {args.host}: others reach this dashboard by a name; give it with "
                f"--allowed-hosts (e.g. --allowed-hosts dash.internal), or ${ALLOWED_HOSTS_ENV}."
            )
        if args.token is None and not args.no_token:
            raise ConfigurationError(
                f"--host {args.host}: a dashboard others reach needs a token they share: give "
                f"--token VALUE (or ${TOKEN_ENV}), or --no-token to serve it to anyone who "
                "reaches the port."
            )
    if args.token is not None and len(args.token) < 16:
        raise ConfigurationError("--token must be at least 16 characters long.")
    token = None if args.no_token else (args.token or secrets.token_urlsafe(24))
    return GuardSettings(
        host=args.host,
        port=args.port,
        allowed_hosts=allowed_hosts,
        token=token,
        read_only=args.read_only,
        allowed_origins=allowed_origins,
    )


def _items(text: str) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def _url_host(settings: GuardSettings) -> str:
    """The host to print in the dashboard's URL."""
    if is_loopback(settings.host):
        return "127.0.0.1"
    if settings.host not in ("0.0.0.0", "::"):
        return bracketed(settings.host)
    named = [host for host in settings.allowed_hosts if not any(c in host for c in "*?[")]
    return named[0].rsplit(":", 1)[0] if named else settings.host


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
