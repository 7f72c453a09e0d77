"""Storage URLs -> Optuna storages configured for many writers.

* ``None``: the default, a SQLite file ``trace_optuna.db`` in the working directory.
* ``sqlite:///path.db``: RDBStorage in WAL mode with a 30 s busy timeout (Optuna's default 5 s
  gives "database is locked" under several writers). One host only: SQLite's locking does not
  work over network file systems.
* ``postgresql://...``, ``mysql+pymysql://...`` (and other SQLAlchemy URLs): RDBStorage with
  ``pool_pre_ping`` so a restarted database server does not leave dead pooled connections.
  MySQL/MariaDB sessions are checked for a strict ``sql_mode`` when the storage opens.
* ``redis://host:port/db``: Optuna's JournalStorage over Redis; ``?prefix=NAME`` keeps several
  independent journals in one Redis database.
* ``journal:///path/to/file.log``: Optuna's JournalStorage over a local file.
  Journals opened from a URL are a :class:`HeartbeatJournalStorage`: JournalStorage with the
  heartbeat Optuna gives RDB storages, so dead workers' trials are retried on them too.
* Any ``optuna.storages.BaseStorage`` instance is used as it is.

RDB storages opened from a URL are a :class:`ResilientRDBStorage`: Optuna's RDBStorage with its
heartbeat switched on (a worker killed mid-trial leaves a trial that the next worker marks FAIL
and re-queues through :class:`RetryStaleTrialCallback`) and every storage call retried with
backoff while the database server is unreachable (a restart does not kill the workers).
Optuna wraps them in its per-process cache of finished trials, so reading the study again after
each trial only fetches what changed.
"""

from __future__ import annotations

from collections.abc import Callable
import functools
import logging
import os
import random
import socket
import sys
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
from optuna.trial import TrialState
import sqlalchemy

from trace_optuna import rdb_read
from trace_optuna import records
from trace_optuna.exceptions import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Container

    from optuna.trial import FrozenTrial

DEFAULT_STORAGE = "sqlite:///trace_optuna.db"
SQLITE_BUSY_TIMEOUT_S = 30
HEARTBEAT_INTERVAL_S = 60
MAX_RETRY = 3
RETRY_TIMEOUT_S = 600.0

_logger = logging.getLogger(__name__)

_RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")
_DRIVER_EXTRAS = {
    "psycopg": "trace-optuna[postgres]",
    "psycopg2": "trace-optuna[postgres] or psycopg2-binary",
    "pymysql": "trace-optuna[mysql]",
    "MySQLdb": "trace-optuna[mysql] and a mysql+pymysql:// URL",
    "redis": "trace-optuna[redis]",
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
    heartbeat: dict[str, Any] = {
        "heartbeat_interval": heartbeat_interval,
        "grace_period": grace_period,
        "heartbeat_stale_trial_callback": (
            RetryStaleTrialCallback(max_retry) if heartbeat_interval else None
        ),
    }
    scheme = storage.split("://", 1)[0].split("+", 1)[0].lower() if "://" in storage else ""
    try:
        if scheme == "redis":
            from optuna.storages.journal import JournalRedisBackend

            url, prefix = _split_prefix(storage)
            return HeartbeatJournalStorage(JournalRedisBackend(url, prefix=prefix), **heartbeat)
        if scheme == "journal":
            from optuna.storages.journal import JournalFileBackend

            path = local_file(storage)
            assert path is not None
            return HeartbeatJournalStorage(JournalFileBackend(path), **heartbeat)
        if scheme in _RDB_SCHEMES:
            if scheme == "sqlite":
                _use_wal(storage)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                rdb = ResilientRDBStorage(
                    storage,
                    engine_kwargs=_engine_kwargs(scheme),
                    retry_timeout=retry_timeout,
                    **heartbeat,
                )
            if scheme in ("mysql", "mariadb"):
                check_sql_mode(rdb)
            return rdb
    except ImportError as error:
        raise ConfigurationError(_missing_driver_message(storage, error)) from None
    except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError) as error:
        cause = error.__cause__ or error
        raise ConfigurationError(
            f"Could not open storage {redact(storage)!r}: {str(cause).splitlines()[0]}"
        ) from None
    raise ConfigurationError(
        f"Unknown storage URL {redact(storage)!r}: the scheme must be one of sqlite, "
        "postgresql, mysql (e.g. mysql+pymysql://), redis or journal."
    )


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


def open_existing(storage: str | BaseStorage | None) -> BaseStorage:
    """:func:`resolve_storage` for reading what studies stored: a SQLite or journal file named
    by the URL must exist (reading must not create an empty database).

    Raises:
        ConfigurationError: If the file does not exist, or as :func:`resolve_storage`.
    """
    if isinstance(storage, str):
        path = local_file(storage)
        if path is not None and not os.path.exists(path):
            raise ConfigurationError(f"No file {path!r}: {storage!r} holds no study yet.")
    return resolve_storage(storage)


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
        _warn_user(message, SQLModeWarning)
    return mode


def _warn_user(message: str, category: type[Warning]) -> None:
    """``warnings.warn`` pointing at the first frame outside trace_optuna and optuna."""
    level, frame = 1, sys._getframe(1)
    while frame is not None and str(frame.f_globals.get("__name__", "")).startswith(
        ("trace_optuna", "optuna")
    ):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    warnings.warn(message, category, stacklevel=level)


# -- surviving a database restart ---------------------------------------------------------


def is_transient(error: BaseException) -> bool:
    """Whether a storage error means "the server is unreachable or busy, try again".

    Connection failures, server restarts and SQLite's "database is locked" are transient;
    invalid data (a value too long, an integrity violation) is not.
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
                    "Storage unreachable during %s (%s); retrying with backoff for up to %.0f s.",
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
        **kwargs: ``optuna.storages.RDBStorage`` arguments.
    """

    def __init__(self, url: str, *, retry_timeout: float = RETRY_TIMEOUT_S, **kwargs: Any) -> None:
        self.retry_timeout = retry_timeout
        for attempt in range(3):
            try:
                super().__init__(url, **kwargs)
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

    def record_heartbeat(self, trial_id: int) -> None:
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

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        attempts = 0

        def set_state() -> bool:
            nonlocal attempts
            attempts += 1
            try:
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

    def record_heartbeat(self, trial_id: int) -> None:
        lease: dict[str, float | str] = {
            "until": time.time() + (self.grace_period or 2 * (self.heartbeat_interval or 0)),
            "worker": f"{socket.gethostname()}:{os.getpid()}",
        }
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
