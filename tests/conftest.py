"""Shared fixtures: storages on real SQLite files and real PostgreSQL, MariaDB and Redis.

Markers (registered in pyproject.toml; ``make test`` runs every test, ``make test-quick`` leaves
out ``slow``, ``browser`` and ``destructive``):

* ``storage``: runs on the real database servers. Added here to every test parametrized with a
  server's ``storage_url``; a test reaching a server another way carries it itself, and one
  that reaches a server through this file without it fails, naming the marker.
* ``browser``: drives headless Chromium (selenium, or kaleido's rendering).
* ``destructive``: stops a database server that other tests and people use.
* ``slow``: takes over ~10 s on the project's 2-core machine.
* ``network``: runs workers in network namespaces (tests/support_netns.py); needs root.

Each test's markers are written to the JUnit XML report as the property ``markers``, so CI
(``.ci/run``) can tell which skipped tests needed a server or a browser.
"""

from __future__ import annotations

import os
from pathlib import Path
import uuid

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import pytest  # noqa: E402

from trace_optuna import testing  # noqa: E402

_SERVERS: dict[str, testing.ServerDatabase | str] = {}


SERVER_KINDS = tuple(kind for kind in testing.STORAGE_KINDS if kind != "sqlite")
REPORTED_MARKERS = ("storage", "browser", "destructive", "slow", "network")


@pytest.hookimpl(tryfirst=True)  # before -m selects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("storage_url") in SERVER_KINDS:
            item.add_marker(pytest.mark.storage)
        names = sorted({mark.name for mark in item.iter_markers()} & set(REPORTED_MARKERS))
        item.user_properties.append(("markers", " ".join(names)))


def _server(kind: str, request: pytest.FixtureRequest) -> testing.ServerDatabase:
    """One fresh database per server per test session (or the reason it is unavailable)."""
    if request.node.get_closest_marker("storage") is None:
        pytest.fail(f"{request.node.nodeid} uses the {kind} server: mark it @pytest.mark.storage")
    if kind not in _SERVERS:
        try:
            _SERVERS[kind] = testing.ServerDatabase(kind)
        except testing.ServerUnavailable as error:
            _SERVERS[kind] = str(error)
    server = _SERVERS[kind]
    if isinstance(server, str):
        if testing.databases_required():
            pytest.fail(f"TRACE_OPTUNA_REQUIRE_DATABASES is set but {server}")
        pytest.skip(f"needs a database server: {server}")
    return server


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for server in _SERVERS.values():
        if isinstance(server, testing.ServerDatabase):
            server.drop()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'study.db'}"


@pytest.fixture(params=testing.STORAGE_KINDS)
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A storage URL for each kind: a SQLite file, and databases on the real servers."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    return _server(request.param, request).url


@pytest.fixture
def study_name() -> str:
    return f"study-{uuid.uuid4().hex[:8]}"
