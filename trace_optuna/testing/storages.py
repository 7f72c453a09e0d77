"""Storages for tests: a fresh database per test session on real servers.

InMemoryStorage accepts values that real storages reject (sets, bytes, keys over 512 characters,
values over 65,535 bytes on MySQL), so tests of anything that stores belong on real databases.
This module gives each test session its own database on a PostgreSQL or MySQL/MariaDB server
(dropped afterwards), its own key prefix on Redis, and SQLite files in a temporary directory.

Servers are found through environment variables, with this machine's defaults:

=========================  ===================================================
``TRACE_OPTUNA_TEST_POSTGRESQL``  ``postgresql://postgres@127.0.0.1:5432/test``
``TRACE_OPTUNA_TEST_MYSQL``       ``mysql+pymysql://root@127.0.0.1:3306/test``
``TRACE_OPTUNA_TEST_REDIS``       ``redis://127.0.0.1:6379/0``
=========================  ===================================================

A server that cannot be reached makes its tests skip with the reason, unless
``TRACE_OPTUNA_REQUIRE_DATABASES=1`` is set (as CI does): then they fail.
"""

from __future__ import annotations

import os
import uuid

import sqlalchemy

STORAGE_KINDS = ("sqlite", "postgresql", "mysql", "redis")

_DEFAULT_URLS = {
    "postgresql": "postgresql://postgres@127.0.0.1:5432/test",
    "mysql": "mysql+pymysql://root@127.0.0.1:3306/test",
    "redis": "redis://127.0.0.1:6379/0",
}


class ServerUnavailable(Exception):
    """A database server for tests cannot be reached; the message says which and why."""


def databases_required() -> bool:
    """Whether unreachable servers must fail the tests instead of skipping them."""
    return os.environ.get("TRACE_OPTUNA_REQUIRE_DATABASES", "") not in ("", "0", "false")


def server_url(kind: str) -> str:
    """The configured URL of the server for ``kind`` (``postgresql``, ``mysql``, ``redis``)."""
    return os.environ.get(f"TRACE_OPTUNA_TEST_{kind.upper()}", _DEFAULT_URLS[kind])


class ServerDatabase:
    """A fresh database (or Redis key prefix) on a real server, for one test session.

    Args:
        kind: ``postgresql``, ``mysql`` or ``redis``.

    Raises:
        ServerUnavailable: If the server cannot be reached or the database not created.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.admin_url = server_url(kind)
        self.name = f"trace_optuna_test_{uuid.uuid4().hex[:10]}"
        if kind == "redis":
            self._check_redis()
            self.url = f"{self.admin_url}?prefix={self.name}"
            return
        engine = self._admin_engine()
        try:
            with engine.connect() as connection:
                connection.execute(sqlalchemy.text(f"CREATE DATABASE {self.name}"))
        except sqlalchemy.exc.SQLAlchemyError as error:
            raise ServerUnavailable(
                f"{kind} server at {self.admin_url} is not usable: {error.__class__.__name__}: "
                f"{str(error).splitlines()[0]}"
            ) from None
        finally:
            engine.dispose()
        self.url = str(
            sqlalchemy.engine.make_url(self.admin_url)
            .set(database=self.name)
            .render_as_string(hide_password=False)
        )

    def _admin_engine(self) -> sqlalchemy.engine.Engine:
        return sqlalchemy.create_engine(
            self.admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
        )

    def _check_redis(self) -> None:
        try:
            import redis

            redis.Redis.from_url(self.admin_url, socket_connect_timeout=5).ping()
        except Exception as error:
            raise ServerUnavailable(
                f"redis server at {self.admin_url} is not usable: {error!r}"
            ) from None

    def drop(self) -> None:
        """Remove the database (or the Redis keys) again."""
        if self.kind == "redis":
            import redis

            client = redis.Redis.from_url(self.admin_url)
            keys = list(client.scan_iter(match=f"{self.name}*"))
            if keys:
                client.delete(*keys)
            return
        engine = self._admin_engine()
        try:
            with engine.connect() as connection:
                force = " WITH (FORCE)" if self.kind == "postgresql" else ""
                connection.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {self.name}{force}"))
        finally:
            engine.dispose()
