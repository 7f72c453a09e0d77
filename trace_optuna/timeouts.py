"""Bounded waits on the library's own database connections.

Between machines, packets are dropped rather than refused: a call to a database that went out
of reach does not fail, it waits, by default until the kernel gives up on the connection (15
minutes of retransmissions, or two hours of keepalive silence). A session whose host vanished
in the middle of a transaction keeps its locks as long, and every other worker waits on them.
:class:`DatabaseTimeouts` bounds every such wait on the connections trace_optuna opens from a
URL, so that a wait ends in an error; the storage's retry layer then treats it like a refused
connection (retried with backoff, logged; see :func:`trace_optuna.storage.call_with_retry`).

PostgreSQL (psycopg): libpq's ``connect_timeout``, TCP keepalives (``keepalives_idle``,
``keepalives_interval``, ``keepalives_count``) and ``tcp_user_timeout`` on the client's
socket, and per session ``lock_timeout``, ``statement_timeout``,
``idle_in_transaction_session_timeout`` (the server ends a session that sits inside a
transaction longer: a dead worker's locks are released) and the server side's own keepalives
and ``tcp_user_timeout`` towards the client.

MySQL/MariaDB (PyMySQL, mysqlclient): the driver's ``connect_timeout``, ``read_timeout`` and
``write_timeout``, and per session ``innodb_lock_wait_timeout``, ``wait_timeout`` (the server
closes an idle session, in a transaction or not) and MariaDB's ``max_statement_time``.

Redis: ``socket_connect_timeout``, ``socket_timeout``, ``socket_keepalive`` and
``health_check_interval`` of redis-py, as URL query parameters.

What the user gives wins: a setting in the URL's query (``?connect_timeout=3``, libpq's
``options=-c lock_timeout=...``, redis-py's ``socket_timeout=...``), in ``connect_args`` of
``engine_kwargs`` (PyMySQL's ``init_command`` included), or None in :class:`DatabaseTimeouts`
(left to the server's and driver's defaults). Session settings are set with one statement when
a connection is opened (not as a startup parameter, which PgBouncer refuses).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import re
import time
from typing import Any
import urllib.parse

import sqlalchemy

from trace_optuna.exceptions import ConfigurationError

_logger = logging.getLogger(__name__)

_PSYCOPG_DRIVERS = ("psycopg", "psycopg2", "psycopg2cffi")
_MYSQL_DRIVERS = ("pymysql", "mysqldb", "mariadbconnector")


@dataclasses.dataclass(frozen=True)
class DatabaseTimeouts:
    """How long any wait on a storage's database connection may last, in seconds.

    None leaves a setting to the server's and the driver's defaults (which are unbounded or
    hours long for most). The defaults bound a worker's wait on a lost host or a lost worker's
    locks to about a minute, far below the heartbeat's default grace period (120 s).

    Args:
        connect: Opening a connection.
        lock: Waiting for a row lock another session holds (PostgreSQL ``lock_timeout``,
            InnoDB ``innodb_lock_wait_timeout``, whole seconds).
        statement: One statement (PostgreSQL ``statement_timeout``, MariaDB
            ``max_statement_time``; MySQL/MariaDB drivers' read and write timeouts are this plus
            ``network``; redis-py's ``socket_timeout`` is ``network``).
        idle_in_transaction: How long the server keeps a session that sits inside a transaction
            without sending anything (a worker that died or was cut off mid-transaction):
            PostgreSQL ``idle_in_transaction_session_timeout``; MySQL/MariaDB have no such
            setting and get ``wait_timeout``, which ends any idle session (a pooled connection
            is then opened again when next used).
        network: How long sent data may stay unacknowledged, or a connection silent, before the
            peer counts as gone (``tcp_user_timeout``; keepalive probes start after a third of
            it and three probes a sixth apart end it).

    Raises:
        ConfigurationError: If a value is not a positive number or None.

    Example:
        >>> DatabaseTimeouts(lock=5).postgresql_session_settings()["lock_timeout"]
        '5000'
    """

    connect: float | None = 10.0
    lock: float | None = 30.0
    statement: float | None = 120.0
    idle_in_transaction: float | None = 60.0
    network: float | None = 30.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None:
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ConfigurationError(
                    f"DatabaseTimeouts.{field.name} must be a positive number of seconds or "
                    f"None (no bound), got {value!r}."
                )

    # -- PostgreSQL ---------------------------------------------------------------------------

    def postgresql_connect_args(self) -> dict[str, Any]:
        """libpq connection parameters: the client side's bounds."""
        args: dict[str, Any] = {}
        if self.connect is not None:
            args["connect_timeout"] = max(1, math.ceil(self.connect))
        if self.network is not None:
            args.update(
                keepalives=1,
                keepalives_idle=max(1, round(self.network / 3)),
                keepalives_interval=max(1, round(self.network / 6)),
                keepalives_count=3,
                tcp_user_timeout=_ms(self.network),
            )
        return args

    def postgresql_session_settings(self) -> dict[str, str]:
        """Per-session settings (milliseconds; keepalives in seconds), set at connect."""
        settings: dict[str, str] = {}
        if self.lock is not None:
            settings["lock_timeout"] = str(_ms(self.lock))
        if self.statement is not None:
            settings["statement_timeout"] = str(_ms(self.statement))
        if self.idle_in_transaction is not None:
            settings["idle_in_transaction_session_timeout"] = str(_ms(self.idle_in_transaction))
        if self.network is not None:  # the server's socket towards this client
            settings["tcp_keepalives_idle"] = str(max(1, round(self.network / 3)))
            settings["tcp_keepalives_interval"] = str(max(1, round(self.network / 6)))
            settings["tcp_keepalives_count"] = "3"
            settings["tcp_user_timeout"] = str(_ms(self.network))
        return settings

    # -- MySQL / MariaDB ----------------------------------------------------------------------

    def mysql_connect_args(self) -> dict[str, Any]:
        """The driver's socket timeouts (PyMySQL, mysqlclient and MariaDB's connector)."""
        args: dict[str, Any] = {}
        if self.connect is not None:
            args["connect_timeout"] = max(1, math.ceil(self.connect))
        if self.network is not None:
            longest = max(self.statement or 0, self.lock or 0)
            args["read_timeout"] = max(1, math.ceil(longest + self.network))
            args["write_timeout"] = max(1, math.ceil(self.network))
        return args

    def mysql_session_settings(self, mariadb: bool) -> dict[str, str]:
        """Per-session settings (seconds), set at connect."""
        settings: dict[str, str] = {}
        if self.lock is not None:
            settings["innodb_lock_wait_timeout"] = str(max(1, math.ceil(self.lock)))
        if self.idle_in_transaction is not None:
            settings["wait_timeout"] = str(max(1, math.ceil(self.idle_in_transaction)))
        if self.statement is not None and mariadb:
            settings["max_statement_time"] = f"{self.statement:g}"
        return settings

    # -- Redis --------------------------------------------------------------------------------

    def redis_query(self) -> dict[str, str]:
        """redis-py's URL query parameters."""
        query: dict[str, str] = {}
        if self.connect is not None:
            query["socket_connect_timeout"] = f"{self.connect:g}"
        if self.network is not None:
            query["socket_timeout"] = f"{self.network:g}"
            query["socket_keepalive"] = "true"
            query["health_check_interval"] = str(max(1, round(self.network)))
        return query


DEFAULT_TIMEOUTS = DatabaseTimeouts()

IDLE_PING_S = 10.0
"""A pooled connection idle longer than this is pinged before it is used again."""


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def coerce(timeouts: DatabaseTimeouts | None) -> DatabaseTimeouts:
    """``timeouts``, or the defaults for None.

    Raises:
        ConfigurationError: If ``timeouts`` is neither.
    """
    if timeouts is None:
        return DEFAULT_TIMEOUTS
    if not isinstance(timeouts, DatabaseTimeouts):
        raise ConfigurationError(
            "timeouts must be a trace_optuna.storage.DatabaseTimeouts or None, got "
            f"{type(timeouts).__name__}."
        )
    return timeouts


def engine_kwargs(
    url: str, timeouts: DatabaseTimeouts, given: dict[str, Any] | None
) -> dict[str, Any]:
    """SQLAlchemy ``create_engine`` arguments for a server URL: the driver's bounds in
    ``connect_args``, under what the URL's query and the ``given`` arguments already set."""
    kwargs = dict(given or {})
    # No ping on every checkout (a round trip each, about 15 a trial): see install_idle_ping.
    kwargs.setdefault("pool_pre_ping", False)
    parsed = sqlalchemy.engine.make_url(url)
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if backend == "postgresql" and driver in _PSYCOPG_DRIVERS:
        defaults = timeouts.postgresql_connect_args()
    elif backend in ("mysql", "mariadb") and driver in _MYSQL_DRIVERS:
        defaults = timeouts.mysql_connect_args()
    else:
        defaults = {}
    connect_args = dict(kwargs.get("connect_args") or {})
    for name, value in defaults.items():
        if name not in parsed.query and name not in connect_args:
            connect_args[name] = value
    if connect_args:
        kwargs["connect_args"] = connect_args
    return kwargs


def install_session_settings(
    engine: sqlalchemy.engine.Engine, timeouts: DatabaseTimeouts, given: dict[str, Any] | None
) -> None:
    """Set the per-session bounds on every connection ``engine`` opens (one statement each).

    Settings the user gave in libpq's ``options`` or PyMySQL's ``init_command`` (in the URL's
    query or ``connect_args``) are left out. Connections the engine already holds are closed,
    so that every connection from now on has them.
    """
    backend = engine.dialect.name
    if backend not in ("postgresql", "mysql"):
        return
    connect_args = dict((given or {}).get("connect_args") or {})
    user_text = " ".join(
        str(value)
        for value in (
            *engine.url.query.values(),
            connect_args.get("options", ""),
            connect_args.get("init_command", ""),
        )
    )

    def own(settings: dict[str, str]) -> dict[str, str]:
        return {
            name: value
            for name, value in settings.items()
            # A whole word: wait_timeout is not innodb_lock_wait_timeout.
            if not re.search(rf"(?<!\w){name}(?!\w)", user_text)
        }

    def on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            if backend == "postgresql":
                settings = own(timeouts.postgresql_session_settings())
                if settings:
                    calls = ", ".join(
                        f"set_config('{name}', '{value}', false)"
                        for name, value in settings.items()
                    )
                    cursor.execute(f"SELECT {calls}")
            else:
                cursor.execute("SELECT VERSION()")
                mariadb = "mariadb" in str(cursor.fetchone()[0]).lower()
                settings = own(timeouts.mysql_session_settings(mariadb))
                if settings:
                    cursor.execute(
                        "SET " + ", ".join(f"SESSION {n} = {v}" for n, v in settings.items())
                    )
        finally:
            cursor.close()
        # psycopg opens a transaction for the SELECT: end it, or the pool would get a
        # connection idle in a transaction (SQLAlchemy itself starts from a clean state).
        if backend == "postgresql":
            dbapi_connection.commit()

    sqlalchemy.event.listen(engine, "connect", on_connect)
    engine.dispose()


def redis_url(url: str, timeouts: DatabaseTimeouts) -> str:
    """A ``redis://`` URL with redis-py's socket bounds added to its query, where not given."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    for name, value in timeouts.redis_query().items():
        query.setdefault(name, [value])
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query, doseq=True)))


def install_idle_ping(engine: sqlalchemy.engine.Engine) -> None:
    """Ping a pooled connection before use only when it sat idle for :data:`IDLE_PING_S`.

    SQLAlchemy's ``pool_pre_ping`` pings on every checkout, a round trip each; a trial checks
    out a connection about 15 times, milliseconds apart. A connection that broke meanwhile
    anyway fails its statement as a disconnect, which the storage's retry layer retries on a
    new connection; the ping keeps the first call after a long pause (a database restart
    while a trial ran) from failing at all.
    """

    def checkin(dbapi_connection: Any, record: Any) -> None:
        record.info["trace_optuna_idle_since"] = time.monotonic()

    def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.get("trace_optuna_idle_since")
        if since is None or time.monotonic() - since < IDLE_PING_S:
            return
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT 1")
            cursor.fetchall()
        except Exception as error:
            raise sqlalchemy.exc.DisconnectionError(str(error)) from error  # a new connection
        finally:
            with contextlib.suppress(Exception):
                cursor.close()
        if engine.dialect.name == "postgresql":
            dbapi_connection.rollback()  # psycopg opened a transaction for the ping

    sqlalchemy.event.listen(engine, "checkin", checkin)
    sqlalchemy.event.listen(engine, "checkout", checkout)
