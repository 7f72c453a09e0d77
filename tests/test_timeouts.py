"""Every wait on a database connection is bounded (trace_optuna.timeouts), and a wait that runs
out goes through the storage's retry path, logged, as a refused connection does. On the real
PostgreSQL, MariaDB and Redis servers."""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import logging
import threading
import time

import optuna
import pytest
import sqlalchemy

from trace_optuna.exceptions import ConfigurationError
from trace_optuna.storage import DatabaseTimeouts
from trace_optuna.storage import ResilientRDBStorage
from trace_optuna.storage import resolve_storage

RDB_SERVERS = ["postgresql", "mysql"]


def session_values(storage: ResilientRDBStorage) -> dict[str, str]:
    with storage.engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            names = (
                "lock_timeout",
                "statement_timeout",
                "idle_in_transaction_session_timeout",
                "tcp_user_timeout",
            )
            return {name: connection.exec_driver_sql(f"SHOW {name}").scalar() for name in names}
        row = connection.exec_driver_sql(
            "SELECT @@SESSION.innodb_lock_wait_timeout, @@SESSION.wait_timeout"
        ).one()
        return {"innodb_lock_wait_timeout": str(row[0]), "wait_timeout": str(row[1])}


@contextlib.contextmanager
def other_session(url: str) -> Iterator[sqlalchemy.Connection]:
    """A connection of someone else (no trace_optuna settings), rolled back at the end."""
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


class LogEvent(logging.Handler):
    """Sets ``event`` when a record containing ``text`` is logged."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.WARNING)
        self.text = text
        self.event = threading.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.messages.append(message)
        if self.text in message:
            self.event.set()


@contextlib.contextmanager
def watching(text: str) -> Iterator[LogEvent]:
    handler = LogEvent(text)
    logger = logging.getLogger("trace_optuna")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


# -- the settings ---------------------------------------------------------------------------


@pytest.mark.parametrize("storage_url", RDB_SERVERS, indirect=True)
def test_every_session_gets_the_bounds_and_the_users_own_win(storage_url: str) -> None:
    storage = resolve_storage(storage_url, timeouts=DatabaseTimeouts(lock=4, network=12))
    assert isinstance(storage, ResilientRDBStorage)
    values = session_values(storage)
    if storage.engine.dialect.name == "postgresql":
        assert values == {
            "lock_timeout": "4s",
            "statement_timeout": "2min",
            "idle_in_transaction_session_timeout": "1min",
            "tcp_user_timeout": "12000",  # ms
        }
        with storage.engine.connect() as connection:
            dsn = connection.connection.dbapi_connection.info.dsn  # type: ignore[union-attr]
        assert "keepalives_idle=4" in dsn and "tcp_user_timeout=12000" in dsn
        assert "connect_timeout=10" in dsn
        # Set in the URL (libpq's options and connect_timeout): the user's values win.
        url = storage_url + "?connect_timeout=3&options=-c%20lock_timeout%3D7s"
        user = resolve_storage(url, timeouts=DatabaseTimeouts(lock=4))
        assert isinstance(user, ResilientRDBStorage)
        assert session_values(user)["lock_timeout"] == "7s"
        with user.engine.connect() as connection:
            assert "connect_timeout=3" in connection.connection.dbapi_connection.info.dsn  # type: ignore[union-attr]
    else:
        assert values == {"innodb_lock_wait_timeout": "4", "wait_timeout": "60"}
        assert storage.engine_kwargs["connect_args"] == {
            "connect_timeout": 10,
            "read_timeout": 132,
            "write_timeout": 12,
        }
        user = resolve_storage(
            storage_url,
            engine_kwargs={
                "connect_args": {
                    "init_command": "SET SESSION innodb_lock_wait_timeout = 9",
                    "read_timeout": 300,
                }
            },
        )
        assert isinstance(user, ResilientRDBStorage)
        # Only the setting the user made is left alone (wait_timeout is another word).
        assert session_values(user) == {"innodb_lock_wait_timeout": "9", "wait_timeout": "60"}
        assert user.engine_kwargs["connect_args"]["read_timeout"] == 300
    # None leaves a setting to the server.
    unbounded = resolve_storage(storage_url, timeouts=DatabaseTimeouts(lock=None))
    assert isinstance(unbounded, ResilientRDBStorage)
    assert session_values(unbounded).get("lock_timeout", "0") == "0"


@pytest.mark.parametrize("storage_url", ["redis"], indirect=True)
def test_redis_connections_get_socket_timeouts_and_keepalive(storage_url: str) -> None:
    storage = resolve_storage(storage_url, timeouts=DatabaseTimeouts(connect=3, network=20))
    client = storage._backend._redis  # type: ignore[attr-defined]
    options = client.connection_pool.connection_kwargs
    assert options["socket_timeout"] == 20 and options["socket_connect_timeout"] == 3
    assert options["socket_keepalive"] is True
    given = resolve_storage(storage_url + "&socket_timeout=5")
    assert given._backend._redis.connection_pool.connection_kwargs["socket_timeout"] == 5  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "settings", [{"lock": 0}, {"network": -1}, {"statement": "10"}, {"connect": float("inf")}]
)
def test_timeouts_are_checked(settings: dict) -> None:
    (name,) = settings
    with pytest.raises(ConfigurationError, match=f"DatabaseTimeouts.{name} must be a positive"):
        DatabaseTimeouts(**settings)


# -- a wait that runs out is retried --------------------------------------------------------


@pytest.mark.parametrize("storage_url", RDB_SERVERS, indirect=True)
def test_a_held_row_lock_makes_a_write_time_out_and_retry_not_hang(
    storage_url: str, study_name: str
) -> None:
    storage = resolve_storage(
        storage_url, heartbeat_interval=None, timeouts=DatabaseTimeouts(lock=1)
    )
    study = optuna.create_study(study_name=study_name, storage=storage)
    trial_id = study.ask()._trial_id
    with watching("Storage unreachable or busy during set_trial_user_attr") as log:

        def hold_then_release() -> None:
            with other_session(storage_url) as holder:
                holder.exec_driver_sql(
                    f"SELECT * FROM trials WHERE trial_id = {trial_id} FOR UPDATE"
                ).all()
                held.set()
                # Released once the write timed out and said so (or after 30 s: a failure).
                log.event.wait(timeout=30)
                holder.rollback()

        held = threading.Event()
        holder = threading.Thread(target=hold_then_release)
        holder.start()
        assert held.wait(timeout=10)
        started = time.monotonic()
        storage.set_trial_user_attr(trial_id, "written", True)  # waits on the lock
        waited = time.monotonic() - started
        holder.join()
    assert log.event.is_set(), log.messages
    assert waited < 10, f"the write waited {waited:.1f} s on a lock bounded to 1 s"
    (warning,) = [m for m in log.messages if "unreachable or busy" in m]
    assert "lock" in warning.lower()  # the reason: PostgreSQL's lock_timeout, InnoDB's wait
    assert any("Storage reachable again" in message for message in log.messages)
    assert study.trials[0].user_attrs == {"written": True}


@pytest.mark.parametrize("storage_url", RDB_SERVERS, indirect=True)
def test_a_trial_creation_that_times_out_is_retried_by_the_retry_layer_at_once(
    storage_url: str, study_name: str
) -> None:
    """Optuna retries a failed trial creation five times itself, silently: the first lock
    wait (or lost connection) that runs out must reach the retry layer and be logged."""
    storage = resolve_storage(
        storage_url, heartbeat_interval=None, timeouts=DatabaseTimeouts(lock=1)
    )
    assert isinstance(storage, ResilientRDBStorage)
    study = optuna.create_study(study_name=study_name, storage=storage)
    failures: list[BaseException] = []
    sqlalchemy.event.listen(
        storage.engine, "handle_error", lambda context: failures.append(context.original_exception)
    )
    seen_when_logged: list[int] = []
    with watching("Storage unreachable or busy during _create_new_trial") as log:

        def hold_then_release() -> None:
            with other_session(storage_url) as holder:
                holder.exec_driver_sql(
                    f"SELECT * FROM studies WHERE study_id = {study._study_id} FOR UPDATE"
                ).all()
                held.set()
                log.event.wait(timeout=30)  # released once the creation said it waits
                seen_when_logged.append(len(failures))
                holder.rollback()

        held = threading.Event()
        holder = threading.Thread(target=hold_then_release)
        holder.start()
        assert held.wait(timeout=10)
        trial = study.ask()  # waits on the study's row
        holder.join()
    assert log.event.is_set(), log.messages
    # One lock wait ran out, and the retry layer logged it: none retried out of sight.
    assert seen_when_logged == [1], f"{seen_when_logged} lock waits ran out before the log"
    assert "lock" in str(failures[0]).lower()
    assert any("Storage reachable again" in message for message in log.messages)
    assert trial.number == 0 and len(study.trials) == 1


@pytest.mark.parametrize("storage_url", RDB_SERVERS, indirect=True)
def test_a_dead_workers_open_transaction_is_ended_by_the_server(
    storage_url: str, study_name: str
) -> None:
    """A worker that stops inside Optuna's trial creation (the study row locked FOR UPDATE)
    does not stop the others for longer than its session's idle bound."""
    bound = DatabaseTimeouts(idle_in_transaction=2)
    study = optuna.create_study(
        study_name=study_name, storage=resolve_storage(storage_url, heartbeat_interval=None)
    )
    dead = resolve_storage(storage_url, heartbeat_interval=None, timeouts=bound)
    assert isinstance(dead, ResilientRDBStorage)
    lost = dead.engine.connect()  # the dead worker: its process froze, its socket stays open
    lost.exec_driver_sql(
        f"SELECT * FROM studies WHERE study_id = {study._study_id} FOR UPDATE"
    ).all()
    created: list[float] = []

    def ask() -> None:
        started = time.monotonic()
        study.ask()
        created.append(time.monotonic() - started)

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    asker.join(timeout=30)
    try:
        assert created, "another worker's trial creation stayed blocked for 30 s"
        assert created[0] < 2 + 8, f"blocked {created[0]:.1f} s behind an idle bound of 2 s"
        assert len(study.trials) == 1
    finally:
        with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError):
            lost.rollback()  # on the old code: release the lock, so the asker ends
        with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError):
            lost.close()
        asker.join(timeout=30)
        dead.engine.dispose()


@pytest.mark.parametrize("storage_url", ["postgresql"], indirect=True)
def test_a_pooled_connection_the_server_ended_is_replaced_without_an_error(
    storage_url: str, study_name: str
) -> None:
    """No ping on every checkout (a round trip each): a dead pooled connection fails its
    statement as a disconnect, and the retry layer runs it again on a new connection."""
    storage = resolve_storage(storage_url, heartbeat_interval=None)
    assert isinstance(storage, ResilientRDBStorage) and not storage.engine.pool._pre_ping
    study = optuna.create_study(study_name=study_name, storage=storage)
    database = storage.engine.url.database
    with other_session(storage_url) as admin:
        ended = admin.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{database}' AND pid <> pg_backend_pid()"
        ).all()
        admin.commit()
    assert ended  # the storage's pooled connection
    assert optuna.load_study(study_name=study_name, storage=storage).trials == []
    assert study.ask().number == 0
