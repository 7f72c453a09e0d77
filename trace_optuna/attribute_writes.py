"""Many attributes of one running trial written at once: one transaction, one round trip.

``trial.set_user_attr`` is one storage call per key: on RDB storages its own transaction (a
SELECT of the trial, an upsert, a COMMIT), on a Redis journal four round trips. A trial record
is about twenty keys, and optuna-dashboard's note adds study system attributes, so a trial paid
dozens of commits for what is one record. :func:`write_trial_attrs` writes them together:

* ``RDBStorage`` (also trace_optuna's ``ResilientRDBStorage``, and Optuna's per-process cache
  that ``optuna.create_study(storage=URL)`` puts around it): ONE transaction, in which a SELECT
  of the trial's state (locking the trial's row on PostgreSQL and MySQL, so that a concurrent
  ``tell`` or stale-trial check cannot finish it halfway), one multi-row upsert of the user
  attributes and one of the study system attributes, as Optuna's own upserts (PostgreSQL and
  SQLite ``ON CONFLICT``, MySQL ``ON DUPLICATE KEY``); other dialects read the existing keys and
  insert or update. Values are stored as ``json.dumps(value)``, exactly what Optuna writes, so
  Optuna, optuna-dashboard and trace_optuna read them unchanged. On a ``ResilientRDBStorage``
  a transient error retries the whole transaction (see
  :func:`trace_optuna.storage.call_with_retry`); upserts make that harmless.
* ``JournalStorage`` (Redis or file backend; trace_optuna's ``HeartbeatJournalStorage``): the
  same log entries that ``set_trial_user_attr``/``set_study_system_attr`` write (one per key:
  Optuna's replay accepts one key per entry), the trial's appended in ONE call: on Redis one
  script that appends them all atomically and returns every entry this process has not read
  yet (one round trip instead of about four per key); on a file, one locked write. The study
  system attributes follow in a second append, once the first has been replayed without
  error (a study's entries would be applied even for a trial finished meanwhile). Other
  processes replay them as Optuna's own.
* Any other storage (``InMemoryStorage``, a user's own): one call per attribute.

The rules are Optuna's ``set_trial_user_attr``'s, checked before anything is written: keys are
strings of at most 512 characters, values must survive ``json.dumps`` (a set or bytes raises
``TypeError``), and a finished trial raises ``optuna.exceptions.UpdateFinishedTrialError``
with nothing written. Unlike InMemoryStorage, these rules hold on every storage.

What this relies on in Optuna 5.x (pinned by ``tests/test_attribute_writes.py``): the RDB table
models, ``JournalStorage``'s log entries and replay, ``JournalRedisBackend``'s key layout
(``{prefix}:log_number``, ``{prefix}:log:{n}``), and ``_CachedStorage`` caching only finished
trials (so writes to a running trial need no cache update).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
import json
import sqlite3
from typing import TYPE_CHECKING
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.storages import JournalStorage
from optuna.storages import RDBStorage
from optuna.storages._cached_storage import _CachedStorage
from optuna.storages._rdb import models
from optuna.trial import TrialState
import sqlalchemy

from trace_optuna import rdb_read
from trace_optuna.exceptions import ConfigurationError
from trace_optuna.storage import ResilientRDBStorage
from trace_optuna.storage import call_with_retry

if TYPE_CHECKING:
    from optuna.storages.journal import BaseJournalBackend
    from optuna.storages.journal._storage import JournalStorageReplayResult

__all__ = ["MAX_KEY_CHARS", "write_attrs", "write_study_system_attrs", "write_trial_attrs"]

MAX_KEY_CHARS = models.MAX_INDEXED_STRING_LENGTH
"""The longest attribute key Optuna's RDB tables hold (``String(512)``)."""

# One upsert statement holds at most this many rows and bytes of values: SQLite allows 32,766
# bound variables a statement (999 before 3.32), MySQL's max_allowed_packet is 16 MB on
# MariaDB by default. A trial record (about 20 keys, each at most 60 KB) is one statement.
_ROWS_PER_STATEMENT = 300
_BYTES_PER_STATEMENT = 4_000_000

_STUDIES = models.StudyModel.__table__
_TRIALS = models.TrialModel.__table__
_UNFINISHED = (TrialState.RUNNING, TrialState.WAITING)  # Optuna's check_trial_is_updatable
_TRIAL_USER_ATTRS = models.TrialUserAttributeModel.__table__
_STUDY_SYSTEM_ATTRS = models.StudySystemAttributeModel.__table__

# Optuna's journal operation codes (optuna.storages.journal._storage.JournalOperation).
_SET_STUDY_SYSTEM_ATTR = 3
_SET_TRIAL_USER_ATTR = 8

# Appends the entries (ARGV[3:]) as JournalRedisBackend.append_logs does, atomically, then
# returns every entry from number ARGV[2] on (what this process has not replayed yet,
# its own included): the write and the read-back in one round trip.
_REDIS_APPEND_AND_READ = """
local counter = string.format('%s:log_number', ARGV[1])
redis.call('setnx', counter, -1)
for i = 3, #ARGV do
    local number = redis.call('incr', counter)
    redis.call('set', string.format('%s:log:%d', ARGV[1], number), ARGV[i])
end
local last = tonumber(redis.call('get', counter))
local entries = {}
for number = tonumber(ARGV[2]), last do
    entries[#entries + 1] = redis.call('get', string.format('%s:log:%d', ARGV[1], number))
end
return entries
"""


def write_trial_attrs(
    storage: BaseStorage,
    trial_id: int,
    user_attrs: Mapping[str, Any],
    *,
    study_system_attrs: Mapping[str, Any] | None = None,
    study_id: int | None = None,
) -> None:
    """Set many user attributes of a running trial (and system attributes of its study) at once.

    The stored result is the same as ``storage.set_trial_user_attr(trial_id, key, value)`` for
    each user attribute and ``storage.set_study_system_attr(study_id, key, value)`` for each
    study system attribute, written in one transaction on RDB storages, and on journal storages
    in one log append for the trial's attributes and one for the study's (see the module
    docstring). Existing keys are overwritten.

    Args:
        storage: The study's storage (``study._storage``; an ``RDBStorage``, the cache around
            it, a ``JournalStorage`` or any other ``BaseStorage``).
        trial_id: The trial's storage id (``trial._trial_id``, not its number).
        user_attrs: ``{key: JSON value}`` to set on the trial.
        study_system_attrs: ``{key: JSON value}`` to set on the trial's study, e.g.
            optuna-dashboard's note keys; None or empty for none.
        study_id: The trial's study id (``study._study_id``). Needed only with
            ``study_system_attrs`` on a storage other than RDB and journal, which cannot tell
            a trial's study; elsewhere it is checked against the trial's.

    Raises:
        ConfigurationError: If a key is not a string or longer than 512 characters, or
            ``study_id`` is missing where it is needed or is not the trial's study.
        TypeError: If a value cannot be stored as JSON (a set, bytes...).
        KeyError: If no trial has ``trial_id``.
        optuna.exceptions.UpdateFinishedTrialError: If the trial has finished. Nothing is
            written.
        optuna.exceptions.StorageInternalError: If the database refuses the write (e.g. a value
            longer than MySQL's 65,535-byte TEXT column). Nothing is written.

    Example:
        >>> import optuna
        >>> study = optuna.create_study(storage="sqlite:///:memory:")
        >>> trial = study.ask()
        >>> write_trial_attrs(study._storage, trial._trial_id, {"a": 1, "b": [2, "three"]})
        >>> _ = study.tell(trial, 0.0)
        >>> study.trials[0].user_attrs
        {'a': 1, 'b': [2, 'three']}
    """
    user_rows = _encoded(user_attrs, "user_attrs")
    system_rows = _encoded(study_system_attrs or {}, "study_system_attrs")
    if not user_rows and not system_rows:
        return
    # The cache keeps finished trials only (and re-reads running ones on every read), and only
    # running trials can be written: writing to its backend keeps it consistent.
    backend = storage._backend if isinstance(storage, _CachedStorage) else storage
    if isinstance(backend, RDBStorage):
        _write_rdb(backend, trial_id, user_rows, system_rows, study_id)
    elif isinstance(backend, JournalStorage) and _journal_internals_present(backend):
        _write_journal(
            backend, trial_id, dict(user_attrs), dict(study_system_attrs or {}), study_id
        )
    else:
        _write_each(storage, trial_id, dict(user_attrs), dict(study_system_attrs or {}), study_id)


def write_attrs(
    trial: optuna.Trial,
    user_attrs: Mapping[str, Any],
    *,
    study_system_attrs: Mapping[str, Any] | None = None,
) -> None:
    """:func:`write_trial_attrs` for a running ``optuna.Trial``; ``trial.user_attrs`` then
    shows the new values too, as after ``trial.set_user_attr``.

    Args:
        trial: The running trial (the one ``optimize`` passed to the objective, or ``ask()``'s).
        user_attrs: ``{key: JSON value}`` to set on the trial.
        study_system_attrs: ``{key: JSON value}`` to set on the trial's study, or None.

    Raises:
        As :func:`write_trial_attrs`.

    Example:
        >>> import optuna
        >>> study = optuna.create_study(storage="sqlite:///:memory:")
        >>> trial = study.ask()
        >>> write_attrs(trial, {"score": 0.5}, study_system_attrs={"note": "first"})
        >>> trial.user_attrs
        {'score': 0.5}
    """
    write_trial_attrs(
        trial.study._storage,
        trial._trial_id,
        user_attrs,
        study_system_attrs=study_system_attrs,
        study_id=trial.study._study_id,
    )
    # Trial.set_user_attr updates the trial's own copy the same way.
    trial._cached_frozen_trial.user_attrs.update(user_attrs)


def write_study_system_attrs(
    storage: BaseStorage, study_id: int, attrs: Mapping[str, Any]
) -> None:
    """Set many system attributes of a study at once (e.g. the chunks of saved figures).

    The stored result is that of ``storage.set_study_system_attr(study_id, key, value)`` for
    each key, written in one transaction on RDB storages (multi-row upserts) and in one log
    append on a journal storage (one round trip on Redis); other storages get one call per key.

    Args:
        storage: The study's storage (``study._storage``).
        study_id: The study's storage id (``study._study_id``).
        attrs: ``{key: JSON value}`` to set on the study.

    Raises:
        ConfigurationError: If a key is not a string or longer than 512 characters.
        TypeError: If a value cannot be stored as JSON.
        KeyError: If no study has ``study_id``.

    Example:
        >>> import optuna
        >>> study = optuna.create_study(storage="sqlite:///:memory:")
        >>> write_study_system_attrs(study._storage, study._study_id, {"a": 1, "b": "two"})
        >>> study._storage.get_study_system_attrs(study._study_id)
        {'a': 1, 'b': 'two'}
    """
    rows = _encoded(attrs, "attrs")
    if not rows:
        return
    backend = storage._backend if isinstance(storage, _CachedStorage) else storage
    if isinstance(backend, RDBStorage):

        def write(connection: sqlalchemy.Connection) -> None:
            study = sqlalchemy.select(_STUDIES.c.study_id).where(_STUDIES.c.study_id == study_id)
            if connection.execute(study).one_or_none() is None:
                raise KeyError(f"No study with id {study_id} in the storage.")
            dialect = connection.dialect.name
            _upsert(connection, _STUDY_SYSTEM_ATTRS, "study_id", study_id, rows, dialect)

        what = f"Writing {len(rows)} system attributes of study id {study_id}"
        _in_one_transaction(backend, write, what, "write_study_system_attrs")
    elif isinstance(backend, JournalStorage) and _journal_internals_present(backend):
        with backend._thread_lock:
            if study_id not in backend._replay_result._studies:
                backend._sync_with_backend()  # created by another process since the last read
            if study_id not in backend._replay_result._studies:
                raise KeyError(f"No study with id {study_id} in the storage.")
            _append(backend, _study_system_entries(backend, study_id, attrs))
    else:
        for key, value in attrs.items():
            storage.set_study_system_attr(study_id, key, value)


# -- the rules -----------------------------------------------------------------------------------


def _encoded(attrs: Mapping[str, Any], argument: str) -> dict[str, str]:
    """``{key: json.dumps(value)}``, checking Optuna's rules for every key before any write."""
    if not isinstance(attrs, Mapping):
        raise ConfigurationError(
            f"{argument} must be a mapping of attribute keys to JSON values, got "
            f"{type(attrs).__name__}."
        )
    encoded = {}
    for key, value in attrs.items():
        if not isinstance(key, str):
            raise ConfigurationError(
                f"{argument}: attribute keys must be strings, got {type(key).__name__} {key!r}."
            )
        if len(key) > MAX_KEY_CHARS:
            raise ConfigurationError(
                f"{argument}: the key {key[:40]!r}... has {len(key)} characters; Optuna's "
                f"storages hold keys of at most {MAX_KEY_CHARS}."
            )
        try:
            encoded[key] = json.dumps(value)  # what Optuna stores, byte for byte
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"{argument}[{key!r}] cannot be stored: its value must be JSON-serializable "
                f"({error})."
            ) from None
    return encoded


# -- RDB: one transaction ------------------------------------------------------------------------


def _write_rdb(
    storage: RDBStorage,
    trial_id: int,
    user_rows: dict[str, str],
    system_rows: dict[str, str],
    study_id: int | None,
) -> None:
    def write(connection: sqlalchemy.Connection) -> None:
        _write_rdb_rows(connection, storage, trial_id, user_rows, system_rows, study_id)

    what = f"Writing {len(user_rows)} attributes of trial id {trial_id}"
    if _write_postgresql_statement(storage, trial_id, user_rows, system_rows, study_id, what):
        return
    _in_one_transaction(storage, write, what, "write_trial_attrs")


def _write_postgresql_statement(
    storage: RDBStorage,
    trial_id: int,
    user_rows: dict[str, str],
    system_rows: dict[str, str],
    study_id: int | None,
    what: str,
) -> bool:
    """On PostgreSQL, the record as ONE statement in autocommit (one round trip instead of
    five: BEGIN, the trial's SELECT, two upserts, COMMIT): the trial's row selected ``FOR KEY
    SHARE`` while unfinished (and of ``study_id`` if given), the upserts inserting from it.
    False when nothing was written (a finished or missing trial, another study, rows for more
    than one statement, another dialect): the transaction of :func:`_write_rdb_rows` then
    writes or raises its error."""
    if storage.engine.dialect.name != "postgresql":
        return False
    if len(list(_batches(user_rows))) > 1 or len(list(_batches(system_rows))) > 1:
        return False
    from sqlalchemy.dialects import postgresql

    chosen = sqlalchemy.select(_TRIALS.c.trial_id, _TRIALS.c.study_id).where(
        _TRIALS.c.trial_id == trial_id, _TRIALS.c.state.in_(_UNFINISHED)
    )
    if study_id is not None:
        chosen = chosen.where(_TRIALS.c.study_id == study_id)
    trial = chosen.with_for_update(key_share=True).cte("trial")
    statement: Any = sqlalchemy.select(sqlalchemy.func.count()).select_from(trial)
    for table, owner, rows, name in (
        (_TRIAL_USER_ATTRS, "trial_id", user_rows, "user_rows"),
        (_STUDY_SYSTEM_ATTRS, "study_id", system_rows, "system_rows"),
    ):
        if not rows:
            continue
        given = sqlalchemy.values(
            sqlalchemy.column("key", sqlalchemy.String()),
            sqlalchemy.column("value_json", sqlalchemy.Text()),
            name=f"{name}_given",
        ).data(list(rows.items()))
        insert = postgresql.insert(table).from_select(
            [owner, "key", "value_json"],
            sqlalchemy.select(trial.c[owner], given.c.key, given.c.value_json).select_from(
                trial.join(given, sqlalchemy.true())
            ),
        )
        upsert = insert.on_conflict_do_update(
            index_elements=[table.c[owner], table.c.key],
            set_={"value_json": insert.excluded.value_json},
        )
        statement = statement.add_cte(upsert.cte(name))

    def run() -> bool:
        try:
            with rdb_read.one_statement(storage.engine) as connection:
                return bool(connection.execute(statement).scalar_one() == 1)
        except sqlalchemy.exc.SQLAlchemyError as error:
            raise optuna.exceptions.StorageInternalError(
                f"{what} failed: {str(error).splitlines()[0]}"
            ) from error

    if isinstance(storage, ResilientRDBStorage):
        return bool(call_with_retry(run, what="write_trial_attrs", timeout=storage.retry_timeout))
    return run()


def _in_one_transaction(
    storage: RDBStorage,
    write: Callable[[sqlalchemy.Connection], None],
    what: str,
    name: str,
) -> None:
    """Run ``write`` in one transaction; on a ``ResilientRDBStorage`` retry it whole on a
    transient error (upserts make that harmless), logged under ``name``."""

    def transaction() -> None:
        try:
            with storage.engine.begin() as connection:
                write(connection)
        except sqlalchemy.exc.SQLAlchemyError as error:
            # As Optuna's own writes report it (and call_with_retry looks through the cause).
            raise optuna.exceptions.StorageInternalError(
                f"{what} failed: {str(error).splitlines()[0]}"
            ) from error

    if isinstance(storage, ResilientRDBStorage):
        call_with_retry(transaction, what=name, timeout=storage.retry_timeout)
    else:
        transaction()


def _write_rdb_rows(
    connection: sqlalchemy.Connection,
    storage: RDBStorage,
    trial_id: int,
    user_rows: dict[str, str],
    system_rows: dict[str, str],
    study_id: int | None,
) -> None:
    dialect = connection.dialect.name
    if dialect == "sqlite":
        _begin_immediate(connection)
    query = sqlalchemy.select(_TRIALS.c.state, _TRIALS.c.study_id, _TRIALS.c.number).where(
        _TRIALS.c.trial_id == trial_id
    )
    if dialect != "sqlite":
        # Until COMMIT, no tell() or stale-trial check (Optuna's set_trial_state_values takes
        # FOR UPDATE) can finish the trial. NO KEY UPDATE on PostgreSQL: the rows inserted
        # here and the heartbeat's, which reference the trial, do not wait on it.
        query = query.with_for_update(key_share=True)
    trial = connection.execute(query).one_or_none()
    if trial is None:
        raise KeyError(f"No trial with id {trial_id} in the storage.")
    if trial.state.is_finished():
        raise UpdateFinishedTrialError(
            f"Trial#{trial.number} has already finished and can not be updated."
        )
    _check_study_id(study_id, trial.study_id, trial_id)
    _upsert(connection, _TRIAL_USER_ATTRS, "trial_id", trial_id, user_rows, dialect)
    _upsert(connection, _STUDY_SYSTEM_ATTRS, "study_id", trial.study_id, system_rows, dialect)


def _begin_immediate(connection: sqlalchemy.Connection) -> None:
    """Take SQLite's write lock before reading the trial's state.

    Python's sqlite3 opens a transaction only at the first INSERT: the state would be read
    outside it, and a transaction that reads and then writes fails at once with "database is
    locked" when another connection wrote in between, without waiting the busy timeout.
    """
    dbapi_connection = connection.connection.dbapi_connection
    if getattr(dbapi_connection, "isolation_level", None) is None:
        return  # autocommit: the driver opens no transactions; leave it alone
    if not getattr(dbapi_connection, "in_transaction", True):
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _upsert(
    connection: sqlalchemy.Connection,
    table: sqlalchemy.Table,
    owner_column: str,
    owner_id: int,
    rows: dict[str, str],
    dialect: str,
) -> None:
    """Insert or overwrite ``{key: value_json}`` of one trial or study, in few statements.

    ``dialect`` is the connection's (any other name takes the path for dialects without an
    upsert).
    """
    for batch in _batches(rows):
        values = [{owner_column: owner_id, "key": key, "value_json": text} for key, text in batch]
        statement: Any
        if dialect == "postgresql" or (
            dialect == "sqlite" and sqlite3.sqlite_version_info >= (3, 24, 0)
        ):
            from sqlalchemy.dialects import postgresql
            from sqlalchemy.dialects import sqlite

            insert = (postgresql if dialect == "postgresql" else sqlite).insert(table)
            insert = insert.values(values)
            statement = insert.on_conflict_do_update(
                index_elements=[table.c[owner_column], table.c.key],
                set_={"value_json": insert.excluded.value_json},
            )
            connection.execute(statement)
        elif dialect == "mysql":
            from sqlalchemy.dialects import mysql

            # ``inserted`` must come from the statement holding the rows: MariaDB and MySQL
            # before 8.0.20 then get VALUES(value_json), later MySQL a row alias.
            insert = mysql.insert(table).values(values)
            statement = insert.on_duplicate_key_update(value_json=insert.inserted.value_json)
            connection.execute(statement)
        else:
            _insert_or_update(connection, table, owner_column, owner_id, dict(batch))


def _insert_or_update(
    connection: sqlalchemy.Connection,
    table: sqlalchemy.Table,
    owner_column: str,
    owner_id: int,
    rows: dict[str, str],
) -> None:
    """The upsert for dialects without one: read which keys exist, insert the rest, update."""
    owner = table.c[owner_column]
    existing = set(
        connection.execute(
            sqlalchemy.select(table.c.key).where(owner == owner_id, table.c.key.in_(list(rows)))
        ).scalars()
    )
    new = [
        {owner_column: owner_id, "key": key, "value_json": text}
        for key, text in rows.items()
        if key not in existing
    ]
    if new:
        connection.execute(sqlalchemy.insert(table), new)
    if existing:
        connection.execute(
            sqlalchemy.update(table)
            .where(
                owner == sqlalchemy.bindparam("owner"), table.c.key == sqlalchemy.bindparam("k")
            )
            .values(value_json=sqlalchemy.bindparam("text")),
            [{"owner": owner_id, "k": key, "text": rows[key]} for key in existing],
        )


def _batches(rows: dict[str, str]) -> Iterator[list[tuple[str, str]]]:
    batch: list[tuple[str, str]] = []
    size = 0
    for key, text in rows.items():
        if batch and (
            len(batch) >= _ROWS_PER_STATEMENT or size + len(text) > _BYTES_PER_STATEMENT
        ):
            yield batch
            batch, size = [], 0
        batch.append((key, text))
        size += len(text)
    if batch:
        yield batch


def _check_study_id(given: int | None, actual: int, trial_id: int) -> None:
    if given is not None and given != actual:
        raise ConfigurationError(
            f"study_id {given} is not the study of trial id {trial_id} (study id {actual})."
        )


# -- journal: one append -------------------------------------------------------------------------


def _journal_internals_present(storage: JournalStorage) -> bool:
    """Whether this Optuna's JournalStorage has the parts written through here."""
    return all(
        hasattr(storage, name) for name in ("_backend", "_replay_result", "_thread_lock")
    ) and hasattr(storage._replay_result, "_trial_id_to_study_id")


def _write_journal(
    storage: JournalStorage,
    trial_id: int,
    user_attrs: dict[str, Any],
    system_attrs: dict[str, Any],
    study_id: int | None,
) -> None:
    with storage._thread_lock:
        replay = storage._replay_result
        if _redis_client(storage._backend) is None:
            storage._sync_with_backend()  # a local file: reading it is cheap
        # Checked against the state this process last replayed. A trial finished by another
        # process since then is caught by the replay of the user attributes' entries, which
        # raises as Optuna's set_trial_user_attr does (every process ignores those entries).
        trial = replay.get_trial(trial_id)
        if trial.state.is_finished():
            raise UpdateFinishedTrialError(
                f"Trial#{trial.number} has already finished and can not be updated."
            )
        trial_study_id = replay._trial_id_to_study_id[trial_id]
        _check_study_id(study_id, trial_study_id, trial_id)
        worker_id = replay.worker_id
        _append(
            storage,
            [
                {
                    "op_code": _SET_TRIAL_USER_ATTR,
                    "worker_id": worker_id,
                    "trial_id": trial_id,
                    "user_attr": {key: value},
                }
                for key, value in user_attrs.items()
            ],
        )
        # A second append, after the first was replayed without error: the study's entries
        # would be applied even for a trial finished meanwhile, and nothing may be written then.
        _append(storage, _study_system_entries(storage, trial_study_id, system_attrs))


def _study_system_entries(
    storage: JournalStorage, study_id: int, attrs: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The journal entries of ``set_study_system_attr``, one per key (as Optuna's replay reads)."""
    worker_id = storage._replay_result.worker_id
    return [
        {
            "op_code": _SET_STUDY_SYSTEM_ATTR,
            "worker_id": worker_id,
            "study_id": study_id,
            "system_attr": {key: value},
        }
        for key, value in attrs.items()
    ]


def _append(storage: JournalStorage, logs: list[dict[str, Any]]) -> None:
    """Append ``logs`` in one backend call and replay up to them; raise as Optuna's replay."""
    if not logs:
        return
    replay, backend = storage._replay_result, storage._backend
    redis_client = _redis_client(backend)
    if redis_client is not None:
        unread = redis_client.eval(
            _REDIS_APPEND_AND_READ,
            0,
            backend._prefix,  # type: ignore[attr-defined]
            replay.log_number_read,
            *(json.dumps(log) for log in logs),
        )
        if all(entry is not None for entry in unread):
            _replay_all(replay, (json.loads(entry) for entry in unread))
            return
    else:
        backend.append_logs(logs)
    _replay_all(replay, backend.read_logs(replay.log_number_read))


def _redis_client(backend: BaseJournalBackend) -> Any:
    """The Redis client of a standalone-Redis journal backend, or None for other backends.

    Only a standalone server runs the append script atomically (Optuna's own condition:
    ``use_cluster=False``).
    """
    try:
        from optuna.storages.journal import JournalRedisBackend
    except ImportError:  # pragma: no cover - Optuna always has the class; redis may be missing
        return None
    if not isinstance(backend, JournalRedisBackend) or getattr(backend, "_use_cluster", True):
        return None
    return getattr(backend, "_redis", None)


def _replay_all(replay: JournalStorageReplayResult, logs: Any) -> None:
    """Replay every entry; re-raise the first error replay raised for this process's own.

    Optuna's replay raises at this process's entry for a finished or unknown trial, after
    counting it as read; the entries after it must be replayed too, or a later, unrelated read
    in this thread would raise for them.
    """
    entries = iter(logs)
    first_error: Exception | None = None
    while True:
        try:
            replay.apply_logs(entries)
            break
        except (UpdateFinishedTrialError, KeyError) as error:
            first_error = first_error or error
    if first_error is not None:
        raise first_error


# -- any other storage: one call per attribute ---------------------------------------------------


def _write_each(
    storage: BaseStorage,
    trial_id: int,
    user_attrs: dict[str, Any],
    system_attrs: dict[str, Any],
    study_id: int | None,
) -> None:
    trial = storage.get_trial(trial_id)
    if trial.state.is_finished():
        raise UpdateFinishedTrialError(
            f"Trial#{trial.number} has already finished and can not be updated."
        )
    if system_attrs and study_id is None:
        raise ConfigurationError(
            f"study_id is needed to write study_system_attrs on a {type(storage).__name__}, "
            "which cannot tell a trial's study: pass the trial's study._study_id."
        )
    for key, value in user_attrs.items():
        storage.set_trial_user_attr(trial_id, key, value)
    for key, value in system_attrs.items():
        storage.set_study_system_attr(study_id, key, value)  # type: ignore[arg-type]
