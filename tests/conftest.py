"""Shared fixtures: storages on real SQLite files and real PostgreSQL, MariaDB and Redis."""

from __future__ import annotations

import os
from pathlib import Path
import uuid

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import pytest  # noqa: E402

from trace_optuna import testing  # noqa: E402

_SERVERS: dict[str, testing.ServerDatabase | str] = {}


def _server(kind: str) -> testing.ServerDatabase:
    """One fresh database per server per test session (or the reason it is unavailable)."""
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
    return _server(request.param).url


@pytest.fixture
def study_name() -> str:
    return f"study-{uuid.uuid4().hex[:8]}"
