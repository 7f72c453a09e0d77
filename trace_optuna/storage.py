"""Storage URLs -> Optuna storages configured for many writers.

* ``None``: the default, a SQLite file ``trace_optuna.db`` in the working directory.
* ``sqlite:///path.db``: RDBStorage in WAL mode with a 30 s busy timeout (Optuna's default 5 s
  gives "database is locked" under several writers). One host only: SQLite's locking does not
  work over network file systems. A path starting with ``~`` is the user's home, as in a shell
  (``sqlite:///~/runs/study.db``); SQLAlchemy and Optuna do not expand it, so give the stock
  ``optuna-dashboard`` the absolute path. A missing directory, a directory instead of a file
  and a file or directory that cannot be written are refused before SQLite runs, naming the
  path.
* ``postgresql://...``, ``mysql+pymysql://...`` (and other SQLAlchemy URLs): RDBStorage with
  a ping of pooled connections idle for 10 s (not of every checkout: a round trip each), so
  a restarted database server does not leave dead pooled connections, and bounded waits (see
  :mod:`trace_optuna.timeouts`).
  MySQL/MariaDB sessions are checked for a strict ``sql_mode`` when the storage opens.
  ``postgres://`` is refused (SQLAlchemy dropped that alias): write ``postgresql://``. A
  missing driver names the URL and the package to install (``mysql://`` means the MySQLdb
  driver: trace_optuna's ``[mysql]`` extra installs PyMySQL, for ``mysql+pymysql://``).
* ``redis://host:port/db``: Optuna's JournalStorage over Redis; ``?prefix=NAME`` keeps several
  independent journals in one Redis database.
* ``journal:///path/to/file.log``: Optuna's JournalStorage over a local file.
  Journals opened from a URL are a :class:`HeartbeatJournalStorage`: JournalStorage with the
  heartbeat Optuna gives RDB storages, so dead workers' trials are retried on them too.
* Any ``optuna.storages.BaseStorage`` instance is used as it is.

:func:`resolve_storage` opens a storage to write to (creating a SQLite file and Optuna's tables
if needed); :func:`open_existing` opens one that must already hold studies and creates nothing,
read-only on request (SQLite on read-only media included). :func:`check_study_name` refuses a
study name that no storage would take.

RDB storages opened from a URL are a :class:`ResilientRDBStorage`: Optuna's RDBStorage with its
heartbeat switched on (a worker killed mid-trial leaves a trial that the next worker marks FAIL
and re-queues through :class:`RetryStaleTrialCallback`) and every storage call retried with
backoff while the database server is unreachable (a restart does not kill the workers).
Optuna wraps them in its per-process cache of finished trials, so reading the study again after
each trial only fetches what changed.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
import contextlib
import copy
import datetime
import functools
import json
import logging
import os
import random
import socket
import sqlite3
import threading
import time
from typing import TYPE_CHECKING
from typing import Any
import urllib.parse
import warnings

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.storages import RDBStorage
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import TrialState
import sqlalchemy

from trace_optuna import rdb_read
from trace_optuna import records
from trace_optuna import timeouts as _timeouts
from trace_optuna._warnings import warn_user
from trace_optuna.exceptions import ConfigurationError
from trace_optuna.timeouts import DatabaseTimeouts

if TYPE_CHECKING:
    from collections.abc import Container

    from optuna.trial import FrozenTrial

DEFAULT_STORAGE = "sqlite:///trace_optuna.db"
SQLITE_BUSY_TIMEOUT_S = 30
HEARTBEAT_INTERVAL_S = 60
MAX_RETRY = 3
RETRY_TIMEOUT_S = 600.0

_logger = logging.getLogger(__name__)

_STUDIES = models.StudyModel.__table__
_TRIALS = models.TrialModel.__table__
_PARAMS = models.TrialParamModel.__table__
_HEARTBEATS = models.TrialHeartbeatModel.__table__
_VALUES = models.TrialValueModel.__table__
_UNFINISHED = (TrialState.RUNNING, TrialState.WAITING)  # Optuna's check_trial_is_updatable

MAX_STUDY_NAME_LENGTH = 512
"""Characters in a study name: Optuna's ``studies.study_name`` column is ``String(512)``
(PostgreSQL and MySQL/MariaDB refuse longer names; SQLite and Redis would take them, but such a
study could not move to a server)."""

_RDB_SCHEMES = ("sqlite", "postgresql", "mysql", "mariadb", "oracle", "mssql")
# A missing driver module -> (the URL scheme whose driver trace_optuna installs, the package).
# mysql:// and mariadb:// mean SQLAlchemy's default MySQLdb (mysqlclient, a C build); the
# [mysql] extra installs PyMySQL instead, so the advice is the URL that uses it.
_DRIVER_ADVICE = {
    "psycopg": ("postgresql+psycopg", "'trace-optuna[postgres]'"),
    "psycopg2": ("postgresql+psycopg", "'trace-optuna[postgres]'"),
    "pymysql": ("mysql+pymysql", "'trace-optuna[mysql]'"),
    "MySQLdb": ("mysql+pymysql", "'trace-optuna[mysql]'"),
    "mariadb": ("mysql+pymysql", "'trace-optuna[mysql]'"),
    "redis": ("redis", "'trace-optuna[redis]'"),
}
_STRICT_MODES = ("STRICT_TRANS_TABLES", "STRICT_ALL_TABLES")


class SQLModeWarning(UserWarning):
    """A MySQL/MariaDB session is not in strict mode: oversized values would be truncated."""


def resolve_storage(
    storage: str | BaseStorage | None,
    *,
    heartbeat_interval: int | None = HEARTBEAT_INTERVAL_S,
    grace_period: int | None = None,
    max_retry: int | None = MAX_RETRY,
    retry_timeout: float = RETRY_TIMEOUT_S,
    timeouts: DatabaseTimeouts | None = None,
    engine_kwargs: dict[str, Any] | None = None,
) -> BaseStorage:
    """Turn a storage URL (or None) into an Optuna storage.

    Args:
        storage: A URL as listed in this module's docstring, a storage object, or None for the
            default SQLite file.
        heartbeat_interval: Seconds between heartbeats of a running trial (None turns the
            heartbeat off). A trial whose worker stops beating for ``grace_period`` is
            marked FAIL by the next worker and re-queued.
        grace_period: Seconds without a heartbeat before a trial counts as dead; None is twice
            ``heartbeat_interval``.
        max_retry: How often a dead worker's trial is re-queued (None: without limit).
        retry_timeout: How long RDB storage calls are retried while the database server is
            unreachable before the error is raised.
        timeouts: Bounds on every wait on the database's connections (PostgreSQL,
            MySQL/MariaDB, Redis; see :class:`~trace_optuna.timeouts.DatabaseTimeouts`); None
            for the defaults. Settings given in the URL or ``engine_kwargs`` win.
        engine_kwargs: SQLAlchemy ``create_engine`` arguments for an RDB URL, over
            trace_optuna's (``connect_args`` merged key by key).

    Returns:
        An Optuna storage object.

    Raises:
        ConfigurationError: If the URL's scheme is unknown, its database driver is missing or
            the database cannot be opened.

    Example:
        >>> type(resolve_storage("sqlite:///:memory:")).__name__
        'ResilientRDBStorage'
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
    _check_heartbeat(heartbeat_interval, grace_period, max_retry)
    timeouts = _timeouts.coerce(timeouts)
    heartbeat: dict[str, Any] = {
        "heartbeat_interval": heartbeat_interval,
        "grace_period": grace_period,
        "heartbeat_stale_trial_callback": (
            RetryStaleTrialCallback(max_retry) if heartbeat_interval else None
        ),
    }
    storage = expand_home(storage)
    scheme = _scheme(storage)
    path = local_file(storage)
    if path is not None:
        check_local_file(storage, write=True)
    if scheme == "sqlite" and sqlalchemy.engine.make_url(storage).database in (
        None,
        "",
        ":memory:",
    ):
        # In memory: the heartbeat thread's own connection would see another, empty database
        # (and fail with "no such table"); nor can another process hold a trial to fail.
        heartbeat = {key: None for key in heartbeat}
    with _storage_errors(storage):
        if scheme == "redis":
            from optuna.storages.journal import JournalRedisBackend

            url, prefix = _split_prefix(_timeouts.redis_url(storage, timeouts))
            return HeartbeatJournalStorage(JournalRedisBackend(url, prefix=prefix), **heartbeat)
        if scheme == "journal":
            from optuna.storages.journal import JournalFileBackend

            assert path is not None
            return HeartbeatJournalStorage(JournalFileBackend(path), **heartbeat)
        if scheme in _RDB_SCHEMES:
            if scheme == "sqlite":
                _use_wal(storage)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                rdb = ResilientRDBStorage(
                    storage,
                    engine_kwargs=_engine_kwargs(storage, timeouts, engine_kwargs),
                    retry_timeout=retry_timeout,
                    timeouts=timeouts,
                    **heartbeat,
                )
            if scheme in ("mysql", "mariadb"):
                check_sql_mode(rdb)
            return rdb
    raise _unknown_scheme(storage)


def open_existing(
    storage: str | BaseStorage | None,
    *,
    read_only: bool = False,
    heartbeat_interval: int | None = HEARTBEAT_INTERVAL_S,
    grace_period: int | None = None,
    max_retry: int | None = MAX_RETRY,
    retry_timeout: float = RETRY_TIMEOUT_S,
    timeouts: DatabaseTimeouts | None = None,
    engine_kwargs: dict[str, Any] | None = None,
) -> BaseStorage:
    """Open a storage that already holds studies, creating nothing.

    :func:`resolve_storage` creates what a URL names (a SQLite file, Optuna's tables in an
    empty database); reading or reopening a study must not, so a mistyped path is an error
    here instead of a new empty database. Use it to load a study
    (``optuna.load_study(..., storage=open_existing(url))``) and in every reading command.

    Args:
        storage: A URL, a storage object (returned as it is) or None for the default SQLite
            file.
        read_only: Open a SQLite file read-only (SQLite's ``mode=ro``; on read-only media,
            where SQLite cannot make its WAL index, ``immutable=1``), without a heartbeat:
            for reading a study on a file or directory this process cannot write. Other
            storages are opened as by :func:`resolve_storage`, and reading them writes
            nothing.
        heartbeat_interval: As for :func:`resolve_storage`; ignored when ``read_only``.
        grace_period: As for :func:`resolve_storage`.
        max_retry: As for :func:`resolve_storage`.
        retry_timeout: As for :func:`resolve_storage`.
        timeouts: As for :func:`resolve_storage`.
        engine_kwargs: As for :func:`resolve_storage`.

    Returns:
        An Optuna storage object.

    Raises:
        ConfigurationError: If the SQLite or journal file does not exist (or is a
            directory, or is read-only and ``read_only`` is False), the database holds no
            Optuna tables, or as :func:`resolve_storage`.

    Example:
        >>> import tempfile
        >>> open_existing(f"sqlite:///{tempfile.mkdtemp()}/typo.db")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        trace_optuna.exceptions.ConfigurationError: No file ...
    """
    if storage is None:
        storage = DEFAULT_STORAGE
    if not isinstance(storage, str):
        return resolve_storage(storage)
    storage = expand_home(storage)
    scheme = _scheme(storage)
    path = local_file(storage)
    if path is not None:
        if not os.path.lexists(path):
            raise ConfigurationError(
                f"No file {_shown(path)}: storage {storage!r} holds no study yet, and opening "
                "it to read creates nothing. Check the path (create the study with "
                "create_study or trace-optuna demo/worker first)."
            )
        check_local_file(storage, write=not read_only)
        if scheme == "sqlite" and read_only:
            return _open_sqlite_read_only(storage, path, retry_timeout)
    if scheme in _RDB_SCHEMES:
        kwargs = _engine_kwargs(storage, _timeouts.coerce(timeouts), engine_kwargs)
        _require_optuna_tables(storage, scheme, kwargs)
    return resolve_storage(
        storage,
        heartbeat_interval=None if read_only else heartbeat_interval,
        grace_period=None if read_only else grace_period,
        max_retry=max_retry,
        retry_timeout=retry_timeout,
        timeouts=timeouts,
        engine_kwargs=engine_kwargs,
    )


def check_study_name(study_name: object, *, allow_none: bool = False) -> str | None:
    """Refuse a study name that a storage would not take, before anything is created.

    Args:
        study_name: The name to check.
        allow_none: Accept None (``create_study`` then lets Optuna make a name up).

    Returns:
        The name, unchanged.

    Raises:
        ConfigurationError: If the name is not a str, is empty or only spaces, holds a NUL
            character (PostgreSQL refuses it), or is longer than
            :data:`MAX_STUDY_NAME_LENGTH` characters.

    Example:
        >>> check_study_name("x" * 513)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        trace_optuna.exceptions.ConfigurationError: study_name is 513 characters long; ...
    """
    if study_name is None and allow_none:
        return None
    if not isinstance(study_name, str):
        raise ConfigurationError(
            f"study_name must be a str, got {type(study_name).__name__} {study_name!r}."
        )
    if not study_name.strip():
        raise ConfigurationError(
            f"study_name must not be empty or only spaces, got {study_name!r}."
        )
    if "\x00" in study_name:
        raise ConfigurationError(
            f"study_name must not contain a NUL character (\\x00), got {study_name!r}."
        )
    if len(study_name) > MAX_STUDY_NAME_LENGTH:
        raise ConfigurationError(
            f"study_name is {len(study_name)} characters long; a study name holds at most "
            f"{MAX_STUDY_NAME_LENGTH} (Optuna stores it in a String({MAX_STUDY_NAME_LENGTH}) "
            f"column). It begins {study_name[:40]!r}: choose a shorter name."
        )
    return study_name


def _check_heartbeat(
    heartbeat_interval: int | None, grace_period: int | None, max_retry: int | None
) -> None:
    for name, value in (
        ("heartbeat_interval", heartbeat_interval),
        ("grace_period", grace_period),
    ):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value <= 0
        ):
            raise ConfigurationError(
                f"{name} must be a positive int (seconds) or None, got {value!r}."
            )
    if (
        heartbeat_interval is not None
        and grace_period is not None
        and grace_period <= heartbeat_interval
    ):
        raise ConfigurationError(
            f"grace_period ({grace_period} s) must be longer than heartbeat_interval "
            f"({heartbeat_interval} s), or every live trial would look dead."
        )
    if max_retry is not None and (
        isinstance(max_retry, bool) or not isinstance(max_retry, int) or max_retry < 0
    ):
        raise ConfigurationError(f"max_retry must be an int >= 0 or None, got {max_retry!r}.")


def local_file(url: str) -> str | None:
    """The local file a ``sqlite:///`` or ``journal:///`` URL names; None for other URLs (and
    for SQLite in memory or a ``file:`` URI)."""
    if url.startswith("journal://"):
        return url[len("journal://") :] or None
    if not url.startswith("sqlite"):
        return None
    path = sqlalchemy.engine.make_url(url).database
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    return path


def expand_home(url: str) -> str:
    """The URL with a leading ``~`` (or ``~user``) of its SQLite or journal file path expanded
    to that home directory, as a shell would; other URLs unchanged.

    Raises:
        ConfigurationError: If ``~user`` names no user.

    Example:
        >>> import os
        >>> expand_home("sqlite:///~/study.db") == f"sqlite:///{os.path.expanduser('~')}/study.db"
        True
    """
    path = local_file(url)
    if path is None or not path.startswith("~"):
        return url
    expanded = os.path.expanduser(path)
    if expanded == path:
        raise ConfigurationError(
            f"Storage {url!r}: cannot expand {path.split('/', 1)[0]!r} in the path (no such "
            "user, or no home directory): write the absolute path."
        )
    if url.startswith("journal://"):
        return "journal://" + expanded
    return (
        sqlalchemy.engine.make_url(url)
        .set(database=expanded)
        .render_as_string(hide_password=False)
    )


def check_local_file(url: str, *, write: bool) -> None:
    """Refuse a SQLite or journal file path that cannot work, naming the path and the rule.

    SQLite answers all of these with "unable to open database file". A file that does not
    exist yet is fine when ``write`` (it is created), as long as its directory exists and can
    be written. SQLite also writes its journal (``-wal``, ``-shm``) next to the file, so
    writing needs the directory writable too. "Writable" is the kernel's answer for this
    process (``os.access``): read-only media, permissions, an immutable flag.

    Args:
        url: A storage URL; URLs that name no local file are not checked.
        write: Whether the storage will be written.

    Raises:
        ConfigurationError: If the path is a directory, its directory is missing or not a
            directory, or (``write``) the file or its directory cannot be written.
    """
    path = local_file(url)
    if path is None:
        return
    kind = "SQLite" if url.startswith("sqlite") else "journal"
    shown = _shown(path)
    if os.path.isdir(path):
        example = (
            f"sqlite:///{os.path.join(path, 'study.db')}"
            if kind == "SQLite"
            else f"journal://{os.path.join(path, 'study.log')}"
        )
        raise ConfigurationError(
            f"Storage {url!r} names the directory {shown}, not a {kind} file: name a file "
            f"in it, e.g. {example}."
        )
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(path):
        if not os.path.isdir(directory):
            problem = "is not a directory" if os.path.exists(directory) else "does not exist"
            raise ConfigurationError(
                f"Storage {url!r}: the directory {directory!r} {problem}, so the {kind} file "
                f"{os.path.basename(path)!r} cannot be created in it. Create the directory "
                "first, or correct the path."
            )
        if write and not os.access(directory, os.W_OK):
            raise ConfigurationError(
                f"Storage {url!r}: cannot create the {kind} file {shown}: its directory "
                "cannot be written by this process (read-only media or permissions). Choose "
                "a writable directory."
            )
        return
    if write and not (os.access(path, os.W_OK) and os.access(directory, os.W_OK)):
        raise ConfigurationError(
            f"Storage {url!r}: the {kind} file {shown} is read-only for this process (it or "
            "its directory cannot be written: read-only media, permissions or an immutable "
            f"flag), and {kind} needs both to write. Reading works: trace-optuna best and "
            "report, or open_existing(url, read_only=True). To run trials, copy the file to "
            "a writable directory."
        )


def read_only_file(url: str) -> bool:
    """Whether the URL names an existing local file that this process cannot write (it or its
    directory): such a SQLite file can only be opened with ``open_existing(read_only=True)``."""
    path = local_file(expand_home(url))
    if path is None or not os.path.isfile(path):
        return False
    directory = os.path.dirname(os.path.abspath(path))
    return not (os.access(path, os.W_OK) and os.access(directory, os.W_OK))


def _shown(path: str) -> str:
    """A path for a message: as given, and where it is when it is relative."""
    if os.path.isabs(path):
        return repr(path)
    return f"{path!r} ({os.path.abspath(path)!r})"


def _scheme(url: str) -> str:
    """``"postgresql"`` for ``postgresql+psycopg://...``; "" for a string without ``://``."""
    return url.split("://", 1)[0].split("+", 1)[0].lower() if "://" in url else ""


@contextlib.contextmanager
def _storage_errors(url: str) -> Iterator[None]:
    """Turn a missing driver or a failing database into one ConfigurationError naming ``url``."""
    try:
        yield
    except ImportError as error:
        raise ConfigurationError(_missing_driver_message(url, error)) from None
    except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError) as error:
        cause = error.__cause__ or error
        raise ConfigurationError(
            f"Could not open storage {redact(url)!r}: {str(cause).splitlines()[0]}"
        ) from None
    except OSError as error:  # a journal file Optuna opens for appending, on read-only media
        raise ConfigurationError(f"Could not open storage {redact(url)!r}: {error}") from None


def _unknown_scheme(url: str) -> ConfigurationError:
    scheme = _scheme(url)
    if scheme == "postgres":
        fixed = "postgresql" + url[len(url.split("://", 1)[0].split("+", 1)[0]) :]
        return ConfigurationError(
            f"Storage {redact(url)!r}: 'postgres://' is not a SQLAlchemy URL scheme (SQLAlchemy "
            f"1.4 dropped that alias, which Heroku-style URLs still use): write "
            f"{redact(fixed)!r}."
        )
    hint = ""
    if not scheme and url.endswith((".db", ".sqlite", ".sqlite3")):
        hint = f" For a SQLite file write 'sqlite:///{url}'."
    return ConfigurationError(
        f"Unknown storage URL {redact(url)!r}: the scheme must be one of sqlite, "
        f"postgresql, mysql (e.g. mysql+pymysql://), redis or journal.{hint}"
    )


def _require_optuna_tables(url: str, scheme: str, engine_kwargs: dict[str, Any]) -> None:
    """Refuse a database without Optuna's tables: RDBStorage would create them in it."""
    with _storage_errors(url):
        engine = sqlalchemy.create_engine(url, **engine_kwargs)
        try:
            with engine.connect() as connection:
                has_studies = sqlalchemy.inspect(connection).has_table("studies")
        finally:
            engine.dispose()
    if not has_studies:
        raise ConfigurationError(
            f"Storage {redact(url)!r} holds no Optuna study (the database has no Optuna "
            "tables), and opening it to read creates nothing. Check the URL (the database's "
            "name, the file's path)."
        )


def _open_sqlite_read_only(url: str, path: str, retry_timeout: float) -> ResilientRDBStorage:
    """A SQLite file opened so that nothing can be written to it.

    Where this process may write the file and its directory, SQLite opens it as usual with
    ``PRAGMA query_only``: every write is refused, and the last connection still removes the
    ``-wal`` and ``-shm`` files it made (a ``mode=ro`` connection cannot, and would leave them
    behind). Elsewhere (read-only media, another user's file) it is opened with ``mode=ro``;
    a WAL database (every file trace_optuna writes) cannot be read that way without its
    ``-shm`` index, which read-only media cannot hold, and as nobody can be writing there the
    file is then read as ``immutable``. The file URI goes to sqlite3 directly (``creator``):
    through a SQLAlchemy URL, a ``?`` or ``#`` in the path would be taken for the URI's query
    and lose ``mode``.
    """
    import sqlite3

    absolute = os.path.abspath(path)
    file_uri = "file:" + urllib.parse.quote(absolute)
    if not read_only_file(url):
        uri, query_only = file_uri + "?mode=rw", True
    else:
        uri, query_only = file_uri + "?mode=ro", False
        try:
            _connect_sqlite(uri, query_only=False).close()
        except sqlite3.Error:
            _logger.info("%s is read-only without its WAL index: read as immutable.", path)
            uri = file_uri + "?immutable=1"
    engine_kwargs: dict[str, Any] = {
        "creator": functools.partial(_connect_sqlite, uri, query_only=query_only)
    }
    _require_optuna_tables(f"sqlite:///{absolute}", "sqlite", engine_kwargs)
    with _storage_errors(url):
        return ResilientRDBStorage(
            f"sqlite:///{absolute}",
            engine_kwargs=engine_kwargs,
            retry_timeout=retry_timeout,
            skip_table_creation=True,
        )


def _connect_sqlite(uri: str, *, query_only: bool) -> Any:
    """A sqlite3 connection to a ``file:`` URI, checked to be a readable database."""
    import sqlite3

    connection = sqlite3.connect(
        uri, uri=True, timeout=SQLITE_BUSY_TIMEOUT_S, check_same_thread=False
    )
    try:
        if query_only:
            connection.execute("PRAGMA query_only = ON")
        connection.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    except BaseException:
        connection.close()
        raise
    return connection


def _use_wal(url: str) -> None:
    """Switch a SQLite file to write-ahead logging: readers no longer block the writer.

    The journal mode is stored in the database file, so setting it once, before Optuna opens
    the file, is enough.
    """
    import sqlite3

    path = local_file(url)
    if path is None:
        return
    try:
        connection = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S)
        try:
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        finally:
            connection.close()
    except sqlite3.Error as error:
        _logger.warning("Could not switch SQLite file %s to WAL: %s", path, error)
        return
    if str(mode).lower() != "wal":
        _logger.warning("SQLite file %s stays in journal mode %r.", path, mode)


def check_sql_mode(storage: RDBStorage) -> str:
    """Warn loudly when a MySQL/MariaDB session is not in strict mode; return its ``sql_mode``.

    Without ``STRICT_TRANS_TABLES`` (or ``STRICT_ALL_TABLES``) the server silently truncates
    a value longer than its column instead of refusing it, and a truncated JSON attribute makes
    every later read of the study fail. trace_optuna keeps each of its values under 60,000
    bytes (see :mod:`trace_optuna.records`), but other writers of the study are not protected.
    """
    with storage.engine.connect() as connection:
        mode = str(connection.execute(sqlalchemy.text("SELECT @@SESSION.sql_mode")).scalar())
    if not any(strict in mode.upper().split(",") for strict in _STRICT_MODES):
        message = (
            f"The MySQL/MariaDB server at {redact(storage.url)} runs sessions with "
            f"sql_mode={mode!r}, which is not strict: a value longer than its column is "
            "silently truncated instead of refused, and one truncated attribute makes the whole "
            "study unreadable. trace_optuna keeps its own values under 60,000 bytes, but fix "
            "the server: SET GLOBAL sql_mode = CONCAT(@@GLOBAL.sql_mode, ',STRICT_TRANS_TABLES') "
            "(and sql_mode in my.cnf)."
        )
        _logger.warning(message)
        warn_user(message, SQLModeWarning)
    return mode


# -- surviving a database restart ---------------------------------------------------------


def is_transient(error: BaseException) -> bool:
    """Whether a storage error means "the server is unreachable or busy, try again".

    Connection failures, server restarts, SQLite's "database is locked" and the bounds of
    :class:`~trace_optuna.timeouts.DatabaseTimeouts` running out (a lock wait, a statement, a
    socket, a session ended by the server for idling in a transaction) are transient; invalid
    data (a value too long, an integrity violation) is not.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sqlalchemy.exc.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
            text = str(current).lower()
            if "sqlite" in type(current.orig).__module__.lower():
                return "locked" in text or "busy" in text
            return True
        if isinstance(current, (sqlalchemy.exc.TimeoutError, ConnectionError, TimeoutError)):
            return True
        if type(current).__name__ == "IdleInTransactionSessionTimeout":  # psycopg, 25P03
            return True
        if type(current).__module__.startswith("redis") and type(current).__name__ in (
            "ConnectionError",
            "TimeoutError",
            "BusyLoadingError",
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


_retrying = threading.local()


def call_with_retry(
    function: Callable[..., Any],
    *args: Any,
    what: str,
    timeout: float = RETRY_TIMEOUT_S,
    **kwargs: Any,
) -> Any:
    """Call ``function``, retrying transient storage errors with capped exponential backoff.

    The first failure and the recovery are logged as warnings. Calls nested inside a retried
    call are not retried again (the outer call does it).

    Raises:
        Exception: The last error, once ``timeout`` seconds have passed, or at once when it is
            not transient.
    """
    if getattr(_retrying, "active", False):
        return function(*args, **kwargs)
    started = time.monotonic()
    attempt = 0
    while True:
        _retrying.active = True
        try:
            result = function(*args, **kwargs)
        except Exception as error:
            if not is_transient(error) or time.monotonic() - started > timeout:
                if attempt:
                    _logger.error("Storage call %s failed for good: %s", what, _first_line(error))
                raise
            if attempt == 0:
                _logger.warning(
                    "Storage unreachable or busy during %s (%s); retrying with backoff for up "
                    "to %.0f s.",
                    what,
                    _first_line(error),
                    timeout,
                )
            delay = min(5.0, 0.2 * 2**attempt) * (0.5 + random.random())
            attempt += 1
            time.sleep(delay)
            continue
        finally:
            _retrying.active = False
        if attempt:
            _logger.warning(
                "Storage reachable again: %s succeeded after %.1f s and %d retries.",
                what,
                time.monotonic() - started,
                attempt,
            )
        return result


def _first_line(error: BaseException) -> str:
    cause = error.__cause__ or error
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0] if lines else ''}"


def _new_trial(
    number: int, state: TrialState, started: datetime.datetime | None, trial_id: int
) -> optuna.trial.FrozenTrial:
    """A trial as just created: nothing set on it yet."""
    return optuna.trial.FrozenTrial(
        number=number,
        state=state,
        value=None,
        datetime_start=started,
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs={},
        system_attrs={},
        intermediate_values={},
        trial_id=trial_id,
    )


class ResilientRDBStorage(RDBStorage):
    """Optuna's RDBStorage whose calls survive a database restart.

    Every storage call is retried with backoff while the server is unreachable (see
    :func:`call_with_retry`); a heartbeat that cannot be written is skipped with a warning
    instead of ending the heartbeat thread, so a short outage does not make live trials look
    dead. Retrying a write whose commit reached the server before the connection broke is
    harmless: attribute writes are idempotent, and a state change found already applied counts
    as done.

    Args:
        url: The SQLAlchemy URL.
        retry_timeout: Seconds to keep retrying one call before raising.
        timeouts: The per-session bounds set on every connection of a PostgreSQL or
            MySQL/MariaDB server (see :mod:`trace_optuna.timeouts`; the driver's own are in
            ``engine_kwargs``); None sets none.
        **kwargs: ``optuna.storages.RDBStorage`` arguments.
    """

    def __init__(
        self,
        url: str,
        *,
        retry_timeout: float = RETRY_TIMEOUT_S,
        timeouts: DatabaseTimeouts | None = None,
        **kwargs: Any,
    ) -> None:
        self.retry_timeout = retry_timeout
        self.timeouts = timeouts
        # Trial id -> when this process wrote its first heartbeat (monotonic), with the trial.
        self._first_beats: dict[int, float] = {}
        for attempt in range(3):
            try:
                super().__init__(url, **kwargs)
                self._install_timeouts()
                return
            except (
                optuna.exceptions.StorageInternalError,
                sqlalchemy.exc.SQLAlchemyError,
            ) as error:
                # Workers started together on an empty database all create Optuna's schema:
                # the others' tables or version row appear under them. Opened again, it is there.
                if attempt == 2 or not _created_concurrently(error):
                    raise
                _logger.info("Another process created the storage's tables at the same time.")
                time.sleep(0.2 * (attempt + 1))

    def _install_timeouts(self) -> None:
        if self.timeouts is not None:
            _timeouts.install_session_settings(self.engine, self.timeouts, self.engine_kwargs)
        if self.engine.dialect.name != "sqlite" and not self.engine_kwargs.get("pool_pre_ping"):
            _timeouts.install_idle_ping(self.engine)

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)  # a new engine, without the session settings
        self._install_timeouts()

    def record_heartbeat(self, trial_id: int) -> None:
        written = self._first_beats.pop(trial_id, None)
        if written is not None and time.monotonic() - written < (self.heartbeat_interval or 0) / 2:
            return  # Optuna's first beat, just after the one written with the trial: skipped
        try:
            super().record_heartbeat(trial_id)
        except Exception as error:
            if not is_transient(error):
                raise
            _logger.warning(
                "Trial id %d: heartbeat not recorded (%s); trying again in %s s.",
                trial_id,
                _first_line(error),
                self.heartbeat_interval,
            )

    def _create_new_trial(
        self, study_id: int, template_trial: FrozenTrial | None = None
    ) -> FrozenTrial:
        """Optuna's trial creation, tried once: retries are :func:`call_with_retry`'s.

        Optuna's own ``_create_new_trial`` tries five times (for deadlocks), silently, up to
        2 s apart, before it raises: a connection lost under a worker then waited five times
        the network bound (about 20 s across a cut, in the tests between namespaces) before
        the retry layer saw anything or logged it, and a lock wait that ran out was waited
        five times over. Here the first failure goes to the retry layer, which retries it with
        backoff and logs it, like any other call (a deadlock included: it is transient).
        """
        if template_trial is None and self.engine.dialect.name == "postgresql":
            return self._create_running_trial(study_id)
        with _create_scoped_session(self.scoped_session) as session:
            # Optuna's lock: the next trial number is computed from the study's trials.
            models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
            trial = self._get_prepared_new_trial(study_id, template_trial, session)
            number, trial_id, started, state = (
                trial.number,
                trial.trial_id,
                trial.datetime_start,
                trial.state,
            )
        if template_trial is not None:
            created = copy.deepcopy(template_trial)
            created.number, created.datetime_start = number, started
            created._trial_id = trial_id
            return created
        return _new_trial(number, state, started, trial_id)

    def _create_running_trial(self, study_id: int) -> FrozenTrial:
        """Optuna's creation of a new RUNNING trial in two statements on PostgreSQL: the
        study's row locked ``FOR UPDATE`` as Optuna does, then one statement that inserts the
        trial numbered by the study's trials (counted after the lock, in the statement's own
        snapshot) and its first heartbeat. Optuna's sends five (the lock, the insert, the count,
        the number's update, the heartbeat)."""
        started = datetime.datetime.now()
        started_utc = started.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        number = (
            sqlalchemy.select(sqlalchemy.func.count(_TRIALS.c.trial_id))
            .where(_TRIALS.c.study_id == study_id)
            .scalar_subquery()
        )
        created = (
            sqlalchemy.insert(_TRIALS)
            .from_select(
                ["number", "study_id", "state", "datetime_start"],
                sqlalchemy.select(
                    number,
                    sqlalchemy.literal(study_id, sqlalchemy.Integer()),
                    sqlalchemy.cast(
                        sqlalchemy.literal(TrialState.RUNNING, _TRIALS.c.state.type),
                        _TRIALS.c.state.type,
                    ),
                    sqlalchemy.cast(
                        sqlalchemy.literal(started_utc, sqlalchemy.DateTime()),
                        sqlalchemy.DateTime(),
                    ),
                ),
            )
            .returning(_TRIALS.c.trial_id, _TRIALS.c.number)
            .cte("created")
        )
        statement = sqlalchemy.select(created.c.trial_id, created.c.number)
        if self.heartbeat_interval is not None:
            # Its first heartbeat with it (see _get_prepared_new_trial).
            beat = (
                sqlalchemy.insert(_HEARTBEATS)
                .from_select(
                    ["trial_id", "heartbeat"],
                    sqlalchemy.select(created.c.trial_id, sqlalchemy.func.current_timestamp()),
                )
                .cte("beat")
            )
            statement = statement.add_cte(beat)
        with self.engine.begin() as connection:
            locked = connection.execute(
                sqlalchemy.select(_STUDIES.c.study_id)
                .where(_STUDIES.c.study_id == study_id)
                .with_for_update()
            ).first()
            if locked is None:
                raise KeyError(models.NOT_FOUND_MSG)  # as models.StudyModel.find_or_raise_by_id
            trial_id, trial_number = connection.execute(statement).one()
        if self.heartbeat_interval is not None:
            if len(self._first_beats) > 1000:  # trials asked outside optimize are never beaten
                self._first_beats.clear()
            self._first_beats[trial_id] = time.monotonic()
        return _new_trial(trial_number, TrialState.RUNNING, started, trial_id)

    def _get_prepared_new_trial(
        self, study_id: int, template_trial: FrozenTrial | None, session: Any
    ) -> Any:
        trial = super()._get_prepared_new_trial(study_id, template_trial, session)
        if self.heartbeat_interval is not None and trial.state == TrialState.RUNNING:
            # Its first heartbeat in the transaction that creates it (the server's clock, as
            # every heartbeat): a worker killed before its heartbeat thread first beats still
            # leaves a trial that goes stale. Optuna's stale check skips trials without one.
            session.add(models.TrialHeartbeatModel(trial_id=trial.trial_id))
            if len(self._first_beats) > 1000:  # trials asked outside optimize are never beaten
                self._first_beats.clear()
            self._first_beats[trial.trial_id] = time.monotonic()
        return trial

    def _start_waiting_trial(self, trial_id: int) -> bool:
        """Optuna's WAITING -> RUNNING (``_pop_waiting_trial_id``), and the trial's first
        heartbeat, in one transaction."""
        try:
            with _create_scoped_session(self.scoped_session) as session:
                trial = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
                self.check_trial_is_updatable(trial_id, trial.state)
                if trial.state != TrialState.WAITING:
                    return False
                trial.state = TrialState.RUNNING
                trial.datetime_start = datetime.datetime.now()
                heartbeat = models.TrialHeartbeatModel.where_trial_id(trial_id, session, True)
                if heartbeat is None:
                    session.add(models.TrialHeartbeatModel(trial_id=trial_id))
                else:
                    heartbeat.heartbeat = session.execute(sqlalchemy.func.now()).scalar_one()
        except sqlalchemy.exc.IntegrityError:
            return False
        self._first_beats[trial_id] = time.monotonic()
        return True

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        attempts = 0

        def set_state() -> bool:
            nonlocal attempts
            attempts += 1
            try:
                if state == TrialState.RUNNING and values is None and self.heartbeat_interval:
                    return self._start_waiting_trial(trial_id)
                if state.is_finished() and self._finish(trial_id, state, values):
                    return True
                return RDBStorage.set_trial_state_values(self, trial_id, state, values)
            except UpdateFinishedTrialError:
                if attempts > 1 and state.is_finished():
                    stored = RDBStorage.get_trial(self, trial_id)
                    if stored.state == state:
                        return True  # the first attempt committed before its connection broke
                raise

        return call_with_retry(
            set_state, what=f"set_trial_state_values({state.name})", timeout=self.retry_timeout
        )

    def _finish(self, trial_id: int, state: TrialState, values: Any) -> bool:
        """Optuna's ``set_trial_state_values`` to a finished state in one statement on
        PostgreSQL (the update of the trial's row, then its values' rows inserted from the
        updated row), two in one transaction elsewhere: only an unfinished trial's row is
        updated, which locks it as Optuna's ``FOR UPDATE`` does. False when nothing was
        written (a finished or missing trial, values already stored): Optuna's own call then
        does it or raises its error."""
        chosen_row: Any = _TRIALS.c.trial_id == trial_id
        if self.engine.dialect.name == "postgresql":
            # Optuna's FOR UPDATE: an UPDATE of the state alone would not wait for a record
            # being written (attribute_writes holds the row FOR KEY SHARE until it commits).
            chosen_row = _TRIALS.c.trial_id == (
                sqlalchemy.select(_TRIALS.c.trial_id)
                .where(_TRIALS.c.trial_id == trial_id)
                .with_for_update()
                .scalar_subquery()
            )
        update = (
            sqlalchemy.update(_TRIALS)
            .where(chosen_row, _TRIALS.c.state.in_(_UNFINISHED))
            .values(
                state=state,
                # As Optuna's TrialModel stores datetime.now(): naive UTC.
                datetime_complete=datetime.datetime.now(datetime.timezone.utc).replace(
                    tzinfo=None
                ),
            )
        )
        rows = []
        for objective, value in enumerate(values or ()):
            stored, value_type = models.TrialValueModel.value_to_stored_repr(value)
            rows.append(
                {
                    "trial_id": trial_id,
                    "objective": objective,
                    "value": stored,
                    "value_type": value_type,
                }
            )
        try:
            if self.engine.dialect.name == "postgresql" and rows:
                updated = update.returning(_TRIALS.c.trial_id).cte("finished")
                chosen = sqlalchemy.union_all(
                    *(
                        sqlalchemy.select(
                            updated.c.trial_id,
                            sqlalchemy.literal(row["objective"], sqlalchemy.Integer()),
                            # Typed: in a UNION an untyped parameter (a NULL value) is text.
                            sqlalchemy.cast(
                                sqlalchemy.literal(row["value"]), _VALUES.c.value.type
                            ),
                            sqlalchemy.cast(
                                sqlalchemy.literal(row["value_type"], _VALUES.c.value_type.type),
                                _VALUES.c.value_type.type,
                            ),
                        )
                        for row in rows
                    )
                )
                insert = (
                    sqlalchemy.insert(_VALUES)
                    .from_select(["trial_id", "objective", "value", "value_type"], chosen)
                    .add_cte(updated)
                )
                with rdb_read.one_statement(self.engine) as connection:
                    written = connection.execute(insert.execution_options(preserve_rowcount=True))
                    return bool(written.rowcount == len(rows))
            with self.engine.begin() as connection:
                updated_rows = connection.execute(
                    update.execution_options(preserve_rowcount=True)
                ).rowcount
                if updated_rows != 1:
                    return False  # nothing written
                if rows:
                    connection.execute(sqlalchemy.insert(_VALUES).values(rows))
                return True
        except sqlalchemy.exc.IntegrityError:
            return False  # values stored before (the transaction rolled back): Optuna's

    def _get_trials(
        self,
        study_id: int,
        states: Container[TrialState] | None,
        included_trial_ids: set[int],
        trial_id_greater_than: int,
    ) -> list[FrozenTrial]:
        # Optuna's ORM read took seconds for a worker joining a big study: see rdb_read.
        return rdb_read.read_trials(
            self.engine, study_id, states, included_trial_ids, trial_id_greater_than
        )

    def _set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: optuna.distributions.BaseDistribution,
        previous_distribution: optuna.distributions.BaseDistribution | None,
    ) -> None:
        """Optuna's (called by its cache for each ``suggest_*``), in one statement once the
        cache knows the parameter's distribution: the param's row inserted only if the trial
        is not finished. Otherwise (the first suggest of a name in this process, a finished or
        missing trial, the name already set) Optuna's own: its checks and its errors."""
        if previous_distribution is not None:
            optuna.distributions.check_distribution_compatibility(
                previous_distribution, distribution
            )
            chosen = sqlalchemy.select(
                _TRIALS.c.trial_id,
                sqlalchemy.literal(param_name, sqlalchemy.String()),
                sqlalchemy.literal(param_value_internal, sqlalchemy.Float()),
                sqlalchemy.literal(
                    optuna.distributions.distribution_to_json(distribution), sqlalchemy.Text()
                ),
            ).where(_TRIALS.c.trial_id == trial_id, _TRIALS.c.state.in_(_UNFINISHED))
            insert = sqlalchemy.insert(_PARAMS).from_select(
                ["trial_id", "param_name", "param_value", "distribution_json"], chosen
            )
            try:
                with rdb_read.one_statement(self.engine) as connection:
                    inserted = connection.execute(insert.execution_options(preserve_rowcount=True))
                    if inserted.rowcount == 1:
                        return
            except sqlalchemy.exc.IntegrityError:
                pass  # the name is set: Optuna's error
        RDBStorage._set_trial_param(
            self, trial_id, param_name, param_value_internal, distribution, previous_distribution
        )

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        if not self._upsert_trial_attr(
            models.TrialUserAttributeModel.__table__, trial_id, key, value
        ):
            RDBStorage.set_trial_user_attr(self, trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        if not self._upsert_trial_attr(
            models.TrialSystemAttributeModel.__table__, trial_id, key, value
        ):
            RDBStorage.set_trial_system_attr(self, trial_id, key, value)

    def _upsert_trial_attr(self, table: Any, trial_id: int, key: str, value: Any) -> bool:
        """Optuna's upsert of a trial's attribute in one statement on PostgreSQL and SQLite:
        inserted (or overwritten) only if the trial is not finished. False when nothing was
        written (a finished or missing trial: Optuna's own call then raises its error; MySQL,
        whose ``INSERT ... SELECT`` cannot take Optuna's upsert: Optuna's own writes it)."""
        from sqlalchemy.dialects import postgresql
        from sqlalchemy.dialects import sqlite

        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            upserting: Any = postgresql
        elif dialect == "sqlite" and sqlite3.sqlite_version_info >= (3, 24, 0):
            upserting = sqlite
        else:
            return False
        chosen = sqlalchemy.select(
            _TRIALS.c.trial_id,
            sqlalchemy.literal(key, sqlalchemy.String()),
            sqlalchemy.literal(json.dumps(value), sqlalchemy.Text()),
        ).where(_TRIALS.c.trial_id == trial_id, _TRIALS.c.state.in_(_UNFINISHED))
        upsert: Any = upserting.insert(table).from_select(
            ["trial_id", "key", "value_json"], chosen
        )
        upsert = upsert.on_conflict_do_update(
            index_elements=[table.c.trial_id, table.c.key],
            set_={"value_json": upsert.excluded.value_json},
        )
        with rdb_read.one_statement(self.engine) as connection:
            written = connection.execute(upsert.execution_options(preserve_rowcount=True))
            return bool(written.rowcount == 1)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """Optuna's, in one statement: the running trials' heartbeats and the server's clock
        read together, compared here as Optuna compares them (a trial without a heartbeat row
        is skipped; its creation writes one)."""
        assert self.heartbeat_interval is not None
        grace = datetime.timedelta(
            seconds=self.grace_period
            if self.grace_period is not None
            else 2 * self.heartbeat_interval
        )
        query = (
            sqlalchemy.select(
                _TRIALS.c.trial_id,
                _HEARTBEATS.c.heartbeat,
                sqlalchemy.func.now(type_=sqlalchemy.DateTime()),
            )
            .join(_HEARTBEATS, _HEARTBEATS.c.trial_id == _TRIALS.c.trial_id)
            .where(_TRIALS.c.study_id == study_id, _TRIALS.c.state == TrialState.RUNNING)
            .order_by(_TRIALS.c.trial_id)
        )
        with rdb_read.one_statement(self.engine) as connection:
            rows = connection.execute(query).all()
        # As Optuna: PostgreSQL's now() is timezone-aware, the heartbeat column is not.
        return [
            trial_id for trial_id, beat, now in rows if now.replace(tzinfo=None) - beat > grace
        ]

    def get_trial(self, trial_id: int) -> FrozenTrial:
        # Optuna reads a running trial (its cache keeps only finished ones) three times a
        # trial, each time the trial row and five child tables: one statement here.
        return rdb_read.read_trial(self.engine, trial_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return rdb_read.read_study_attrs(self.engine, study_id, system=False)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        # optuna-dashboard's notes live here: two keys a trial (see rdb_read).
        return rdb_read.read_study_attrs(self.engine, study_id, system=True)


def _created_concurrently(error: BaseException | None) -> bool:
    """Whether ``error`` says another process created the same tables or rows just now."""
    while error is not None:
        if isinstance(error, sqlalchemy.exc.IntegrityError) or "already exists" in str(error):
            return True
        error = error.__cause__
    return False


def _retried(name: str) -> Callable[..., Any]:
    method = getattr(ResilientRDBStorage, name)

    @functools.wraps(method)
    def call(self: ResilientRDBStorage, *args: Any, **kwargs: Any) -> Any:
        return call_with_retry(
            method, self, *args, what=name, timeout=self.retry_timeout, **kwargs
        )

    return call


for _name in (
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_all_studies",
    "create_new_trial",
    "set_trial_param",
    "get_trial_id_from_study_id_trial_number",
    "get_trial_number_from_id",
    "get_trial_param",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial",
    "get_all_trials",
    "get_n_trials",
    "get_best_trial",
    "get_trial_params",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "_get_stale_trial_ids",
    # Optuna's per-process trial cache calls these private methods of its backend directly.
    "_create_new_trial",
    "_set_trial_param",
    "_get_best_trial_id",
    "_get_trials",
):
    setattr(ResilientRDBStorage, _name, _retried(_name))


class HeartbeatJournalStorage(optuna.storages.JournalStorage, BaseHeartbeat):
    """Optuna's JournalStorage (Redis, file) with the heartbeat Optuna gives RDB storages.

    JournalStorage has no heartbeat, so a worker killed mid-trial would leave its trial RUNNING
    for good. This class implements Optuna's heartbeat interface for it, the way
    ``RDBStorage`` does, so Optuna's own ``optimize`` loop drives it: while a trial runs,
    Optuna's heartbeat thread records a lease on it every ``heartbeat_interval`` seconds (the
    trial system attribute ``trace:lease``: when it expires, and which worker holds it), and
    before each ``ask()`` Optuna fails the RUNNING trials whose lease has expired and calls
    ``heartbeat_stale_trial_callback`` (which re-queues them), so the same worker runs the retry
    at once. RDB storages compare heartbeats with the database server's clock; a journal has no
    server clock, so leases compare the wall clocks of the workers' hosts: keep them in sync
    (NTP) to well within the grace period.

    Args:
        log_storage: The journal backend, as for ``optuna.storages.JournalStorage``.
        heartbeat_interval: Seconds between lease renewals; None turns the heartbeat off.
        grace_period: Seconds a lease lasts; None is twice ``heartbeat_interval``.
        heartbeat_stale_trial_callback: Called with each trial failed for an expired lease.
    """

    def __init__(
        self,
        log_storage: optuna.storages.journal.BaseJournalBackend,
        *,
        heartbeat_interval: int | None = None,
        grace_period: int | None = None,
        heartbeat_stale_trial_callback: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    ) -> None:
        super().__init__(log_storage)
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.heartbeat_stale_trial_callback = heartbeat_stale_trial_callback

    def _lease(self) -> dict[str, float | str]:
        return {
            "until": time.time() + (self.grace_period or 2 * (self.heartbeat_interval or 0)),
            "worker": f"{socket.gethostname()}:{os.getpid()}",
        }

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        if self.heartbeat_interval is None or (
            template_trial is not None and template_trial.state != TrialState.RUNNING
        ):
            return super().create_new_trial(study_id, template_trial)
        # The first lease in the entry that creates the trial: a worker killed before its
        # heartbeat thread first renews it still leaves a trial whose lease expires.
        template = copy.deepcopy(template_trial) or optuna.trial.FrozenTrial(
            number=-1,
            state=TrialState.RUNNING,
            value=None,
            datetime_start=datetime.datetime.now(),
            datetime_complete=None,
            params={},
            distributions={},
            user_attrs={},
            system_attrs={},
            intermediate_values={},
            trial_id=-1,
        )
        template.system_attrs[records.LEASE] = self._lease()
        return super().create_new_trial(study_id, template)

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        started = super().set_trial_state_values(trial_id, state, values)
        if started and state == TrialState.RUNNING and self.heartbeat_interval is not None:
            self.record_heartbeat(trial_id)  # a WAITING trial taken: its first lease at once
        return started

    def record_heartbeat(self, trial_id: int) -> None:
        lease = self._lease()
        try:
            self.set_trial_system_attr(trial_id, records.LEASE, lease)
        except UpdateFinishedTrialError:
            pass  # it ended, or another worker failed it: Optuna stops beating after the trial
        except Exception as error:
            if not is_transient(error):
                raise
            _logger.warning(
                "Trial id %d: lease not renewed (%s); trying again in %s s.",
                trial_id,
                _first_line(error),
                self.heartbeat_interval,
            )

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            lease = trial.system_attrs.get(records.LEASE)
            if not isinstance(lease, dict) or float(lease.get("until", now)) >= now:
                continue  # alive, or never leased (a trial run outside optimize)
            _logger.warning(
                "Trial#%d: the lease of worker %s expired %.1f s ago.",
                trial.number,
                lease.get("worker"),
                now - float(lease["until"]),
            )
            stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(
        self,
    ) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self.heartbeat_stale_trial_callback


class RetryStaleTrialCallback(RetryHeartbeatStaleTrialCallback):
    """Re-queue a dead worker's trial: Optuna's retry callback, minus the partial record.

    Like ``optuna.storages.RetryHeartbeatStaleTrialCallback`` it adds a WAITING trial with the
    dead trial's parameters (so the same strategy and settings) and Optuna's ``failed_trial``
    and ``retry_history`` system attributes, which the step reads to replay the same step. It
    leaves out the dead trial's ``trace:`` record attributes and its lease: the worker may have
    died halfway through writing them, and the retry writes its own.

    Args:
        max_retry: How often one trial is re-queued; None without limit.
    """

    def __init__(self, max_retry: int | None = None) -> None:
        with warnings.catch_warnings():  # Optuna marks its retry callback experimental
            warnings.simplefilter("ignore", ExperimentalWarning)
            super().__init__(max_retry)

    def __call__(self, study: optuna.study.Study, trial: FrozenTrial) -> None:
        history = list(trial.system_attrs.get("retry_history", [])) + [trial.number]
        if self._max_retry is not None and self._max_retry < len(history):
            _logger.warning(
                "Trial#%d died and was already retried %d times; not retrying it again.",
                trial.number,
                len(history) - 1,
            )
            return
        system_attrs = {
            key: value
            for key, value in trial.system_attrs.items()
            if not key.startswith(records.PREFIX)
        }
        system_attrs["failed_trial"] = trial.system_attrs.get("failed_trial", trial.number)
        system_attrs["retry_history"] = history
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.WAITING,
                params=trial.params,
                distributions=trial.distributions,
                user_attrs={
                    key: value
                    for key, value in trial.user_attrs.items()
                    if not key.startswith(records.PREFIX)
                },
                system_attrs=system_attrs,
            )
        )
        _logger.warning(
            "Trial#%d was left RUNNING by a worker that stopped beating; marked FAIL and "
            "queued again with the same parameters.",
            trial.number,
        )


def _split_prefix(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    prefix = query.pop("prefix", [""])[0]
    rest = urllib.parse.urlencode(query, doseq=True)
    return urllib.parse.urlunsplit(parts._replace(query=rest)), prefix


def _engine_kwargs(
    url: str, timeouts: DatabaseTimeouts, given: dict[str, Any] | None
) -> dict[str, Any]:
    if _scheme(url) == "sqlite":
        kwargs = dict(given or {})
        kwargs["connect_args"] = {
            "timeout": SQLITE_BUSY_TIMEOUT_S,
            **kwargs.get("connect_args", {}),
        }
        return kwargs
    return _timeouts.engine_kwargs(url, timeouts, given)


def _missing_driver_message(url: str, error: ImportError) -> str:
    """Name the missing driver module, and the URL and package that give a working one."""
    module = ""
    current: BaseException | None = error
    while current is not None and not module:  # Optuna re-raises without the module's name
        module = (getattr(current, "name", None) or "").split(".")[0]
        current = current.__cause__ or current.__context__
    if module not in _DRIVER_ADVICE:
        return f"The database driver for {redact(url)!r} is not installed ({error})."
    scheme, package = _DRIVER_ADVICE[module]
    given = url.split("://", 1)[0]
    if given.lower() == scheme:
        return (
            f"Storage {redact(url)!r} needs the database driver module {module!r}, which is "
            f"not installed: pip install {package}."
        )
    fixed = scheme + url[len(given) :]
    why = "named in the URL" if "+" in given else f"SQLAlchemy's default for {given}://"
    return (
        f"Storage {redact(url)!r} needs the database driver module {module!r} ({why}), which "
        f"is not installed. Use the driver trace_optuna installs: write {redact(fixed)!r} and "
        f"pip install {package}."
    )


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
