"""ResilientRDBStorage's calls of a trial made in one statement each behave as Optuna's.

Between hosts every statement is a round trip (issue 21): a suggest after the first of its name
in a process and the stale-trial check before each trial are one statement. Each is compared
with Optuna's own RDBStorage on the same database, on SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

from collections.abc import Iterator
import concurrent.futures
import datetime
from typing import Any

import optuna
from optuna.distributions import FloatDistribution
from optuna.distributions import IntDistribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage
from optuna.storages._rdb import models
from optuna.trial import TrialState
import pytest
import sqlalchemy

from trace_optuna.storage import ResilientRDBStorage
from trace_optuna.storage import resolve_storage

#: The RDB storages (Redis is a journal: none of these statements).
RDB_KINDS = ["sqlite", "postgresql", "mysql"]


@pytest.fixture
def storages(storage_url: str) -> Iterator[tuple[ResilientRDBStorage, RDBStorage]]:
    ours = resolve_storage(storage_url, heartbeat_interval=60, grace_period=120)
    assert isinstance(ours, ResilientRDBStorage)
    optunas = RDBStorage(storage_url, heartbeat_interval=60, grace_period=120)
    yield ours, optunas
    ours.engine.dispose()
    optunas.engine.dispose()


class Statements:
    """The statements an engine sends (not the session settings of a new connection)."""

    def __init__(self, engine: sqlalchemy.engine.Engine) -> None:
        self.sent: list[str] = []
        self.engine = engine
        sqlalchemy.event.listen(engine, "before_cursor_execute", self._sent)

    def _sent(self, connection: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not statement.lstrip().upper().startswith(("SET", "SHOW", "BEGIN")):
            self.sent.append(statement)

    def close(self) -> None:
        sqlalchemy.event.remove(self.engine, "before_cursor_execute", self._sent)


@pytest.mark.parametrize("storage_url", RDB_KINDS, indirect=True)
def test_a_suggest_is_one_statement_and_stores_what_optunas_does(
    storages: tuple[ResilientRDBStorage, RDBStorage], study_name: str
) -> None:
    ours, optunas = storages
    study = optuna.create_study(study_name=study_name, storage=ours)
    first = study.ask()
    first.suggest_float("x", 0.0, 1.0)
    first.suggest_int("n", 1, 10)
    trial = study.ask()
    cache = study._storage  # Optuna's per-process cache: it knows the distributions now
    statements = Statements(ours.engine)
    try:
        x, n = 0.25, 7
        cache.set_trial_param(trial._trial_id, "x", x, FloatDistribution(0.0, 1.0))
        cache.set_trial_param(trial._trial_id, "n", n, IntDistribution(1, 10))
        assert len(statements.sent) == 2
    finally:
        statements.close()
    stored = RDBStorage.get_trial(optunas, trial._trial_id)
    assert stored.params == {"x": x, "n": n}
    assert stored.distributions == {
        "x": FloatDistribution(0.0, 1.0),
        "n": IntDistribution(1, 10),
    }

    # As Optuna: an incompatible distribution is an error, a name set again is ignored.
    with pytest.raises(ValueError):
        cache.set_trial_param(trial._trial_id, "x", 3.0, IntDistribution(1, 10))
    cache.set_trial_param(trial._trial_id, "x", 0.5, FloatDistribution(0.0, 1.0))
    optunas.set_trial_param(trial._trial_id, "x", 0.75, FloatDistribution(0.0, 1.0))
    study.tell(trial, 1.0)
    with pytest.raises(UpdateFinishedTrialError):
        cache.set_trial_param(trial._trial_id, "x", 0.5, FloatDistribution(0.0, 1.0))
    with pytest.raises(KeyError):
        ours._set_trial_param(
            trial._trial_id + 1000, "x", 0.5, FloatDistribution(0.0, 1.0), FloatDistribution(0, 1)
        )
    assert RDBStorage.get_trial(optunas, trial._trial_id).params == {"x": x, "n": n}


@pytest.mark.parametrize("storage_url", RDB_KINDS, indirect=True)
def test_the_stale_check_is_one_statement_and_finds_what_optunas_does(
    storages: tuple[ResilientRDBStorage, RDBStorage], study_name: str
) -> None:
    ours, optunas = storages
    study = optuna.create_study(study_name=study_name, storage=ours)
    other = optuna.create_study(study_name=f"{study_name}-other", storage=ours)
    old, fresh, finished = study.ask(), study.ask(), study.ask()
    other_old = other.ask()
    study.tell(finished, 0.0)
    waiting = study.enqueue_trial({})  # noqa: F841  (WAITING, no heartbeat)
    heartbeats = models.TrialHeartbeatModel.__table__
    with ours.engine.begin() as connection:
        past = datetime.datetime(2000, 1, 1)
        connection.execute(
            sqlalchemy.update(heartbeats)
            .where(
                heartbeats.c.trial_id.in_([old._trial_id, finished._trial_id, other_old._trial_id])
            )
            .values(heartbeat=past)
        )
        # A running trial without a heartbeat row (Optuna's skips it, so does ours).
        connection.execute(
            sqlalchemy.delete(heartbeats).where(heartbeats.c.trial_id == fresh._trial_id)
        )
    statements = Statements(ours.engine)
    try:
        stale = ours._get_stale_trial_ids(study._study_id)
        assert len(statements.sent) == 1
    finally:
        statements.close()
    assert stale == [old._trial_id]
    assert stale == RDBStorage._get_stale_trial_ids(optunas, study._study_id)
    assert ours._get_stale_trial_ids(other._study_id) == [other_old._trial_id]


@pytest.mark.parametrize("storage_url", RDB_KINDS, indirect=True)
def test_a_trial_attribute_is_one_statement_and_stored_as_optunas(
    storages: tuple[ResilientRDBStorage, RDBStorage], study_name: str
) -> None:
    ours, optunas = storages
    study = optuna.create_study(study_name=study_name, storage=ours)
    trial = study.ask()
    statements = Statements(ours.engine)
    try:
        trial.set_user_attr("worker", {"host": "ü", "pid": 1})
        trial.set_user_attr("worker", {"host": "h", "pid": 2})  # overwritten
        ours.set_trial_system_attr(trial._trial_id, "system", [1, None])
        upserts = 1 if ours.engine.dialect.name in ("postgresql", "sqlite") else 2
        assert len(statements.sent) == 3 * upserts  # MySQL: Optuna's read and upsert
    finally:
        statements.close()
    stored = RDBStorage.get_trial(optunas, trial._trial_id)
    assert stored.user_attrs == {"worker": {"host": "h", "pid": 2}}
    assert stored.system_attrs == {"system": [1, None]}
    study.tell(trial, 1.0)
    with pytest.raises(UpdateFinishedTrialError):
        ours.set_trial_user_attr(trial._trial_id, "worker", 3)
    with pytest.raises(UpdateFinishedTrialError):
        ours.set_trial_system_attr(trial._trial_id, "system", 3)
    with pytest.raises(KeyError):
        ours.set_trial_user_attr(trial._trial_id + 1000, "worker", 3)
    assert RDBStorage.get_trial(optunas, trial._trial_id).user_attrs["worker"]["pid"] == 2


@pytest.mark.parametrize(
    ("state", "values"),
    [
        (TrialState.COMPLETE, [0.5]),
        (TrialState.COMPLETE, [float("inf"), float("-inf")]),
        (TrialState.PRUNED, [1.5]),
        (TrialState.FAIL, None),
    ],
)
@pytest.mark.parametrize("storage_url", RDB_KINDS, indirect=True)
def test_finishing_a_trial_takes_one_statement_on_postgresql_and_stores_as_optuna(
    storages: tuple[ResilientRDBStorage, RDBStorage],
    study_name: str,
    state: TrialState,
    values: list[float] | None,
) -> None:
    ours, optunas = storages
    directions = ["minimize"] * len(values or [0])
    study = optuna.create_study(study_name=study_name, storage=ours, directions=directions)
    trial, twin = study.ask(), study.ask()
    statements = Statements(ours.engine)
    try:
        assert ours.set_trial_state_values(trial._trial_id, state, values)
        writes = 1 if ours.engine.dialect.name == "postgresql" or not values else 2
        assert len([s for s in statements.sent if "COMMIT" not in s.upper()]) == writes
    finally:
        statements.close()
    assert RDBStorage.set_trial_state_values(optunas, twin._trial_id, state, values)
    ours_trial = RDBStorage.get_trial(optunas, trial._trial_id)
    optunas_trial = RDBStorage.get_trial(optunas, twin._trial_id)
    assert (ours_trial.state, ours_trial.values) == (optunas_trial.state, optunas_trial.values)
    assert ours_trial.datetime_complete is not None
    assert optunas_trial.datetime_complete is not None
    assert abs(
        ours_trial.datetime_complete - optunas_trial.datetime_complete
    ) < datetime.timedelta(
        minutes=1
    )  # both naive local time (a UTC slip would be hours off, or none here on UTC)
    with pytest.raises(UpdateFinishedTrialError):
        ours.set_trial_state_values(trial._trial_id, TrialState.COMPLETE, [2.0])
    with pytest.raises(KeyError):
        ours.set_trial_state_values(trial._trial_id + 1000, TrialState.COMPLETE, [2.0])
    assert RDBStorage.get_trial(optunas, trial._trial_id).values == ours_trial.values


@pytest.mark.parametrize("storage_url", RDB_KINDS, indirect=True)
def test_a_new_trial_is_two_statements_on_postgresql_numbered_and_beating(
    storages: tuple[ResilientRDBStorage, RDBStorage], study_name: str, storage_url: str
) -> None:
    ours, optunas = storages
    study = optuna.create_study(study_name=study_name, storage=ours)
    statements = Statements(ours.engine)
    try:
        created = ours._create_new_trial(study._study_id)
        if ours.engine.dialect.name == "postgresql":
            # The study's row locked, then the trial and its first heartbeat inserted.
            assert len([s for s in statements.sent if "COMMIT" not in s.upper()]) == 2
    finally:
        statements.close()
    stored = RDBStorage.get_trial(optunas, created._trial_id)
    assert created.datetime_start is not None and stored.datetime_start is not None
    # Local time, both (MySQL's DATETIME keeps whole seconds).
    assert abs(created.datetime_start - stored.datetime_start) < datetime.timedelta(seconds=1)
    created.datetime_start = stored.datetime_start
    assert created == stored  # number, state, nothing else set
    assert (stored.number, stored.state) == (0, TrialState.RUNNING)

    # Workers creating trials at once: numbers 0..n-1, each once; every trial has its beat.
    def create(count: int) -> list[int]:
        worker = resolve_storage(storage_url, heartbeat_interval=60)
        assert isinstance(worker, ResilientRDBStorage)
        numbers = [worker._create_new_trial(study._study_id).number for _ in range(count)]
        worker.engine.dispose()
        return numbers

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        numbers = [n for batch in pool.map(create, [5] * 4) for n in batch]
    assert sorted([0, *numbers]) == list(range(21))
    heartbeats = models.TrialHeartbeatModel.__table__
    with ours.engine.connect() as connection:
        beating = connection.execute(sqlalchemy.select(heartbeats.c.trial_id)).scalars().all()
    assert {trial._trial_id for trial in study.get_trials()} <= set(beating)
    with pytest.raises(KeyError):
        ours._create_new_trial(study._study_id + 1000)


@pytest.mark.parametrize("storage_url", ["postgresql"], indirect=True)
def test_a_record_waiting_on_a_tell_is_refused_once_the_trial_finished(
    storages: tuple[ResilientRDBStorage, RDBStorage], study_name: str
) -> None:
    # The record's one statement selects the trial's row FOR KEY SHARE while unfinished: it
    # waits for a tell holding the row, then sees the trial finished and writes nothing.
    from trace_optuna.attribute_writes import write_trial_attrs

    ours, optunas = storages
    study = optuna.create_study(study_name=study_name, storage=ours)
    trial = study.ask()
    trials = models.TrialModel.__table__
    with optunas.engine.connect() as telling:
        telling.execute(  # a tell in progress: the row locked FOR UPDATE, the state changed
            sqlalchemy.select(trials.c.trial_id)
            .where(trials.c.trial_id == trial._trial_id)
            .with_for_update()
        )
        telling.execute(
            sqlalchemy.update(trials)
            .where(trials.c.trial_id == trial._trial_id)
            .values(state=TrialState.COMPLETE)
        )
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            writing = pool.submit(
                write_trial_attrs,
                ours,
                trial._trial_id,
                {"late": 1},
                study_system_attrs={"late-note": 1},
            )
            with pytest.raises(concurrent.futures.TimeoutError):
                writing.result(timeout=1.0)  # waiting on the row
            telling.commit()
            with pytest.raises(UpdateFinishedTrialError):
                writing.result(timeout=30)
    stored = RDBStorage.get_trial(optunas, trial._trial_id)
    assert stored.state == TrialState.COMPLETE and stored.user_attrs == {}
    assert "late-note" not in RDBStorage.get_study_system_attrs(optunas, study._study_id)
