"""Database round trips per trial: trace_optuna against bare Optuna ask/tell with the same
attributes, on PostgreSQL (or any RDB URL).

Between hosts every round trip costs the network's round-trip time, so their number, not the
server's work, sets a trial's database time. This counts, in the worker's own process, what
SQLAlchemy sends on every engine:

- **statements**: every statement executed (``before_cursor_execute``; ``executemany`` counts
  once);
- **transactions**: COMMITs and ROLLBACKs (each one round trip; psycopg sends BEGIN with the
  first statement of a transaction as one more round trip, counted in ``round trips``); on
  PostgreSQL only those of a transaction psycopg opened (a connection in autocommit opens none:
  its ``rollback()`` sends nothing);
- **pings**: pool checkouts of an engine with ``pool_pre_ping`` (one round trip each; Optuna
  does not set it, trace_optuna pings only connections idle for 10 s, not counted).

``round trips`` = statements + 2 x transactions + pings: an estimate of what a trial waits
for on a remote database (``--rtt-ms`` multiplies it into seconds per trial).

Both runs make the same trials: trace_optuna's run (the demo agent, the simulated model) is
replayed through bare Optuna: ``ask()``, the same ``suggest_*`` calls, one ``set_user_attr`` per
stored attribute, ``tell()``; the study's system attributes the trial wrote (optuna-dashboard's
note) are written with ``set_study_system_attr``.

    python benchmarks/round_trips.py --storage postgresql://postgres@127.0.0.1:5432/bench \\
        --trials 20
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import sys
import traceback
from typing import Any
import uuid

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import optuna  # noqa: E402
import sqlalchemy  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from overhead import _suggest  # noqa: E402


@dataclasses.dataclass
class Count:
    statements: int = 0
    transactions: int = 0
    checkouts: int = 0

    @property
    def round_trips(self) -> int:
        return self.statements + 2 * self.transactions + self.checkouts


class Counter:
    """Counts what every SQLAlchemy engine in this process sends, while ``active``."""

    def __init__(self) -> None:
        self.count = Count()
        self.shapes: collections.Counter[str] = collections.Counter()
        self.callers: collections.Counter[str] = collections.Counter()
        self.active = False
        engine = sqlalchemy.engine.Engine
        sqlalchemy.event.listen(engine, "before_cursor_execute", self._statement)
        sqlalchemy.event.listen(engine, "commit", self._transaction)
        sqlalchemy.event.listen(engine, "rollback", self._transaction)
        sqlalchemy.event.listen(sqlalchemy.pool.Pool, "checkout", self._checkout)

    def _statement(self, conn: object, cursor: object, statement: str, *args: object) -> None:
        if self.active:
            self.count.statements += 1
            self.shapes[" ".join(statement.split())[:90]] += 1
            self.callers[_caller()] += 1

    def _transaction(self, conn: Any, *args: object) -> None:
        if self.active:
            dbapi_connection = conn.connection.dbapi_connection
            info = getattr(dbapi_connection, "info", None)
            status = getattr(info, "transaction_status", None)
            if status is not None and status == 0:  # psycopg: idle, no transaction to end
                return
            self.count.transactions += 1

    def _checkout(self, dbapi_connection: object, record: object, proxy: object) -> None:
        pool = getattr(record, "_ConnectionRecord__pool", None)
        if self.active and getattr(pool, "_pre_ping", False):
            self.count.checkouts += 1  # pool_pre_ping: a round trip on each checkout

    def measure(self, run: object) -> Count:
        self.count, self.active = Count(), True
        self.shapes.clear()
        self.callers.clear()
        try:
            run()  # type: ignore[operator]
        finally:
            self.active = False
        return self.count


_PLUMBING = (
    "sqlalchemy",
    "/optuna/storages/",
    "/trace_optuna/storage.py",
    "/trace_optuna/rdb_read.py",
    "/contextlib.py",
    "/optuna/_experimental.py",
    "/round_trips.py",
)


def _caller() -> str:
    """Which storage method sent a statement, and who called it (the innermost frame outside
    SQLAlchemy and the storage layers)."""
    method = "?"
    for frame in reversed(traceback.extract_stack()):
        path = frame.filename
        if "/optuna/storages/" in path or "/trace_optuna/storage.py" in path:
            if not frame.name.startswith("_") or frame.name in (
                "_get_trials",
                "_create_new_trial",
            ):
                method = frame.name
        if not any(part in path for part in _PLUMBING):
            where = path.split("site-packages/")[-1].rsplit("/", 2)
            return f"{method} < {'/'.join(where[-2:])}:{frame.name}"
    return method


def _database(admin_url: str) -> tuple[str, sqlalchemy.Engine]:
    """A fresh database on the server of ``admin_url``; SQLite files are used as they are."""
    url = sqlalchemy.engine.make_url(admin_url)
    if url.get_backend_name() == "sqlite":
        return admin_url, sqlalchemy.create_engine(admin_url)
    name = f"round_trips_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    return url.set(database=name).render_as_string(hide_password=False), admin


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", default=os.environ.get("TRACE_OPTUNA_TEST_POSTGRESQL"))
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--rtt-ms", type=float, default=100.0)
    parser.add_argument(
        "--no-notes", action="store_true", help="dashboard_notes=False (no study row writes)"
    )
    parser.add_argument(
        "--top", type=int, default=0, help="list trace_optuna's N most frequent statements"
    )
    parser.add_argument(
        "--callers",
        action="store_true",
        help="list trace_optuna's statements by the storage method and caller that sent them",
    )
    args = parser.parse_args()
    if not args.storage:
        parser.error("--storage (or TRACE_OPTUNA_TEST_POSTGRESQL) is required")
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    import trace_optuna
    from trace_optuna import demo

    counter = Counter()
    url, admin = _database(args.storage)
    try:
        study = trace_optuna.create_study(
            study_name="trace",
            storage=url,
            agent=demo.make_agent,
            evaluate=demo.evaluate,
            llm=demo.DEMO_LLM,
            seed=0,
            error_score=0.0,
            figure_interval=None,  # the figure refresh is off the trial path: not counted
            dashboard_notes=not args.no_notes,
        )
        study.optimize(n_trials=2)  # warm: imports, the baseline, first connections
        first = len(study.trials)
        trace = counter.measure(lambda: study.optimize(n_trials=args.trials))
        shapes = counter.shapes.most_common(args.top)
        callers = counter.callers.most_common()
        trials = study.optuna.get_trials()[first:]
        storage = study.optuna._storage
        note_keys = [
            key
            for key in storage.get_study_system_attrs(study.optuna._study_id)
            if key.startswith("dashboard:") and ":note_" in key
        ]
        notes_per_trial = len(note_keys) / max(1, len(study.trials))

        bare_study = optuna.create_study(
            study_name="bare",
            storage=url,
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=0),
        )

        def replay() -> None:
            for frozen in trials:
                trial = bare_study.ask()
                for name, distribution in frozen.distributions.items():
                    _suggest(trial, name, distribution)
                for key, value in frozen.user_attrs.items():
                    trial.set_user_attr(key, value)
                for index in range(round(notes_per_trial)):
                    bare_study._storage.set_study_system_attr(
                        bare_study._study_id, f"note:{trial._trial_id}:{index}", "x"
                    )
                bare_study.tell(trial, frozen.value)

        bare = counter.measure(replay)
        attrs = sum(len(t.user_attrs) for t in trials) / len(trials)
    finally:
        if admin.url.get_backend_name() != "sqlite":
            with admin.connect() as connection:
                connection.exec_driver_sql(
                    f"DROP DATABASE {sqlalchemy.engine.make_url(url).database} WITH (FORCE)"
                    if admin.url.get_backend_name() == "postgresql"
                    else f"DROP DATABASE {sqlalchemy.engine.make_url(url).database}"
                )
        admin.dispose()

    n = len(trials)
    print(
        f"{n} trials, {attrs:.1f} user attributes and {notes_per_trial:.1f} study system "
        f"attributes (dashboard note) a trial; {admin.url.get_backend_name()}"
    )
    print()
    print(
        "| run | statements/trial | transactions/trial | pings/trial | round trips/trial "
        f"| at {args.rtt_ms:g} ms RTT |"
    )
    print("|---|---|---|---|---|---|")
    for name, count in (("trace_optuna", trace), ("bare Optuna ask/tell", bare)):
        trips = count.round_trips / n
        print(
            f"| {name} | {count.statements / n:.1f} | {count.transactions / n:.1f} | "
            f"{count.checkouts / n:.1f} | {trips:.1f} | {trips * args.rtt_ms / 1000:.1f} s |"
        )
    if shapes:
        print()
        print("| trace_optuna statement | per trial |")
        print("|---|---|")
        for shape, count_of in shapes:
            print(f"| `{shape}` | {count_of / n:.1f} |")
    if args.callers:
        print()
        print("| trace_optuna storage method < caller | statements per trial |")
        print("|---|---|")
        for caller, count_of in callers:
            print(f"| `{caller}` | {count_of / n:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
