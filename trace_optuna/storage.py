"""Storage URLs -> Optuna storages configured for many writers.

* ``None``: the default, a SQLite file ``trace_optuna.db`` in the working directory.
* ``sqlite:///path.db``: RDBStorage with a 30 s busy timeout (Optuna's default 5 s gives
  "database is locked" under several writers). One host only.
* ``postgresql://...``, ``mysql+pymysql://...`` (and other SQLAlchemy URLs): RDBStorage with
  ``pool_pre_ping`` so a restarted database server does not leave dead pooled connections.
* ``redis://host:port/db``: Optuna's JournalStorage over Redis; ``?prefix=NAME`` keeps several
  independent journals in one Redis database.
* ``journal:///path/to/file.log``: Optuna's JournalStorage over a local file.
* Any ``optuna.storages.BaseStorage`` instance is used as it is.

RDB storages are wrapped by Optuna in its per-process cache of finished trials, so reading the
study again after each trial only fetches what changed.
"""

from __future__ import annotations

import logging
from typing import Any
import urllib.parse

import optuna
from optuna.storages import BaseStorage
from optuna.storages import RDBStorage

from trace_optuna.exceptions import ConfigurationError

DEFAULT_STORAGE = "sqlite:///trace_optuna.db"
SQLITE_BUSY_TIMEOUT_S = 30

_logger = logging.getLogger(__name__)

_RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")
_DRIVER_EXTRAS = {
    "psycopg": "trace-optuna[postgres]",
    "psycopg2": "trace-optuna[postgres] or psycopg2-binary",
    "pymysql": "trace-optuna[mysql]",
    "MySQLdb": "trace-optuna[mysql] and a mysql+pymysql:// URL",
    "redis": "trace-optuna[redis]",
}


def resolve_storage(storage: str | BaseStorage | None) -> BaseStorage:
    """Turn a storage URL (or None) into an Optuna storage.

    Args:
        storage: A URL as listed in this module's docstring, a storage object, or None for the
            default SQLite file.

    Returns:
        An Optuna storage object.

    Raises:
        ConfigurationError: If the URL's scheme is unknown or its database driver is missing.

    Example:
        >>> type(resolve_storage("sqlite:///:memory:")).__name__
        'RDBStorage'
    """
    if storage is None:
        storage = DEFAULT_STORAGE
    if isinstance(storage, BaseStorage):
        return storage
    if not isinstance(storage, str):
        raise ConfigurationError(
            f"storage must be a URL string or an optuna.storages.BaseStorage, got "
            f"{type(storage).__name__}."
        )
    scheme = storage.split("://", 1)[0].split("+", 1)[0].lower() if "://" in storage else ""
    try:
        if scheme == "redis":
            from optuna.storages.journal import JournalRedisBackend

            url, prefix = _split_prefix(storage)
            return optuna.storages.JournalStorage(JournalRedisBackend(url, prefix=prefix))
        if scheme == "journal":
            from optuna.storages.journal import JournalFileBackend

            return optuna.storages.JournalStorage(JournalFileBackend(storage[len("journal://") :]))
        if scheme in _RDB_SCHEMES:
            return RDBStorage(storage, engine_kwargs=_engine_kwargs(scheme))
    except ImportError as error:
        raise ConfigurationError(_missing_driver_message(storage, error)) from None
    except optuna.exceptions.StorageInternalError as error:
        raise ConfigurationError(
            f"Could not open storage {redact(storage)!r}: {error.__cause__ or error}"
        ) from None
    raise ConfigurationError(
        f"Unknown storage URL {redact(storage)!r}: the scheme must be one of sqlite, "
        "postgresql, mysql (e.g. mysql+pymysql://), redis or journal."
    )


def _split_prefix(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    prefix = query.pop("prefix", [""])[0]
    rest = urllib.parse.urlencode(query, doseq=True)
    return urllib.parse.urlunsplit(parts._replace(query=rest)), prefix


def _engine_kwargs(scheme: str) -> dict[str, Any]:
    if scheme == "sqlite":
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    return {"pool_pre_ping": True}


def _missing_driver_message(url: str, error: ImportError) -> str:
    module = (error.name or "").split(".")[0]
    extra = _DRIVER_EXTRAS.get(module)
    hint = f" Install {extra}." if extra else ""
    return f"The database driver for {redact(url)!r} is not installed ({error}).{hint}"


def redact(url: str) -> str:
    """A storage URL with its password replaced by ``***``, fit for logs and errors."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    if ":" in credentials:
        credentials = credentials.split(":", 1)[0] + ":***"
    return f"{scheme}://{credentials}@{host}"


def describe(storage: str | BaseStorage | None) -> str:
    """A URL to show a person (for the optuna-dashboard command), password redacted."""
    if storage is None:
        return DEFAULT_STORAGE
    if isinstance(storage, str):
        return redact(storage)
    if isinstance(storage, RDBStorage):
        return redact(storage.url)
    return type(storage).__name__
