from __future__ import annotations

from collections.abc import Iterator
import itertools
import json
import math
import time
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.distributions import CategoricalDistribution
from optuna.distributions import FloatDistribution
from optuna.distributions import IntDistribution
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial
from optuna.trial import TrialState
from optuna.trial import create_trial
import pytest
import sqlalchemy

from trace_optuna import rdb_read
from trace_optuna.storage import ResilientRDBStorage
from trace_optuna.storage import resolve_storage

pytestmark = pytest.mark.parametrize(
    "storage_url", ["sqlite", "postgresql", "mysql"], indirect=True
)

INF = float("inf")
NAN = float("nan")
DISTRIBUTIONS: dict[str, BaseDistribution] = {
    "float": FloatDistribution(-1.0, 1.0),
    "float_log": FloatDistribution(1e-5, 1.0, log=True),
    "float_step": FloatDistribution(0.0, 1.0, step=0.25),
    "int": IntDistribution(-10, 10),
    "int_log": IntDistribution(1, 1024, log=True),
    "int_step": IntDistribution(0, 10, step=2),
    "choice": CategoricalDistribution([None, True, 1, 2.5, "a", "ünï ✓"]),
}
PARAMS: dict[str, Any] = {
    "float": -0.3,
    "float_log": 1e-4,
    "float_step": 0.75,
    "int": -7,
    "int_log": 512,
    "int_step": 4,
    "choice": "ünï ✓",
}
ATTRS: dict[str, Any] = {
    "long": "étape, 日本語 ✓ " * 800,
    "nested": {"a": [1, 2.5, None, True, "ü"], "b": {"c": -INF}},
    "nan": NAN,
    "empty": "",
}
CHOICE = {"choice": DISTRIBUTIONS["choice"]}
STATE_FILTERS: list[tuple[TrialState, ...] | None] = [
    None,
    (TrialState.COMPLETE,),
    (TrialState.RUNNING, TrialState.WAITING),
    (TrialState.PRUNED, TrialState.FAIL, TrialState.COMPLETE),
    tuple(TrialState),
    (),
]


@pytest.fixture(autouse=True)
def local_time_is_not_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # UTC+05:45: a reader that skipped Optuna's conversion of stored UTC to local time would
    # return other datetimes than Optuna's.
    monkeypatch.setenv("TZ", "XYZ-05:45")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def storage(storage_url: str) -> Iterator[RDBStorage]:
    plain = RDBStorage(storage_url)
    yield plain
    plain.engine.dispose()


def fill(storage: RDBStorage, study_name: str) -> list[optuna.Study]:
    """A single- and a multi-objective study, their trials interleaved, in every state."""
    single = optuna.create_study(study_name=study_name, storage=storage)
    multi = optuna.create_study(
        study_name=f"{study_name}-multi", storage=storage, directions=["minimize", "maximize"]
    )
    some = dict(list(DISTRIBUTIONS.items())[::2])
    single_trials = [
        create_trial(
            value=0.5,
            params=PARAMS,
            distributions=DISTRIBUTIONS,
            user_attrs=ATTRS,
            system_attrs={"retry_history": [1, 2], "ü": "✓"},
            intermediate_values={0: 1.0, 1: INF, 2: -INF, 3: NAN, 10: -0.5},
        ),
        create_trial(value=INF, params={"choice": True}, distributions=CHOICE),
        create_trial(value=-INF, params={"choice": 1}, distributions=CHOICE),
        create_trial(value=1.0, params={"choice": None}, distributions=CHOICE),
        create_trial(value=2.0),
        create_trial(state=TrialState.PRUNED, intermediate_values={0: NAN, 1: 0.25}),
        create_trial(state=TrialState.PRUNED, value=0.25, intermediate_values={5: -INF}),
        create_trial(
            state=TrialState.FAIL,
            params={name: PARAMS[name] for name in some},
            distributions=some,
            user_attrs={"error": "ValueError: ü"},
        ),
        create_trial(state=TrialState.WAITING),
    ]
    multi_trials = [
        create_trial(values=[1.0, INF], params=PARAMS, distributions=DISTRIBUTIONS),
        create_trial(values=[-INF, 2.5], user_attrs=ATTRS, intermediate_values={1: 3.0}),
        create_trial(state=TrialState.FAIL),
    ]
    for single_trial, multi_trial in itertools.zip_longest(single_trials, multi_trials):
        single.add_trial(single_trial)
        if multi_trial is not None:
            multi.add_trial(multi_trial)
    single.enqueue_trial({"float": 0.5, "choice": "a"}, user_attrs={"queued": True})
    running = single.ask()  # takes the oldest WAITING trial, leaving the enqueued one
    running.suggest_float("float", -1.0, 1.0)
    running.set_user_attr("updated", 1)
    running.set_user_attr("updated", [2, "ü"])
    running.report(0.5, step=0)
    single.ask()  # RUNNING, empty
    multi.ask().suggest_int("int_log", 1, 1024, log=True)
    return [single, multi]


def plain(value: Any) -> Any:
    """``value`` where equal means the same: nan equals nan, ``True`` differs from ``1``."""
    if isinstance(value, float) and math.isnan(value):
        return ("float", "nan")
    if isinstance(value, dict):
        return {plain(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [plain(item) for item in value])
    if isinstance(value, (FrozenTrial, BaseDistribution)):
        return (type(value).__name__, plain(vars(value)))
    return (type(value).__name__, value)


def assert_same(ours: list[FrozenTrial], optunas: list[FrozenTrial]) -> None:
    assert [plain(trial) for trial in ours] == [plain(trial) for trial in optunas]
    assert [list(trial.params) for trial in ours] == [list(trial.params) for trial in optunas]


def test_reads_what_optuna_reads(storage: RDBStorage, study_name: str) -> None:
    for study in fill(storage, study_name):
        ids = [trial._trial_id for trial in study.get_trials()]
        middle = ids[len(ids) // 2]
        checked = 0
        for states, greater_than, included in itertools.product(
            STATE_FILTERS,
            [-1, ids[0], middle, ids[-1], ids[-1] + 100],
            [set(), {ids[1], ids[2]}, {middle, ids[-1]}, set(ids), {ids[1], -5, 10**9}],
        ):
            arguments = (study._study_id, states, included, greater_than)
            optunas = RDBStorage._get_trials(storage, *arguments)
            assert_same(rdb_read.read_trials(storage.engine, *arguments), optunas)
            checked += len(optunas)
        assert checked > 100  # the combinations read trials, not mostly empty lists


def test_many_included_ids(
    storage: RDBStorage, study_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = fill(storage, study_name)[0]
    ids = [trial._trial_id for trial in study.get_trials()]
    for included, greater_than in [
        (set(range(-rdb_read.MAX_LISTED_IDS - 500, 0)) | {ids[1]}, ids[3]),
        ({ids[2], ids[4], ids[5]}, ids[-3]),
    ]:
        if len(included) < rdb_read.MAX_LISTED_IDS:
            monkeypatch.setattr(rdb_read, "MAX_LISTED_IDS", 2)
        arguments = (study._study_id, None, included, greater_than)
        optunas = RDBStorage._get_trials(storage, *arguments)
        later = [trial_id for trial_id in ids if trial_id > greater_than]
        assert [trial._trial_id for trial in optunas] == sorted(included & set(ids)) + later
        assert_same(rdb_read.read_trials(storage.engine, *arguments), optunas)


def test_a_missing_study_is_a_key_error(storage: RDBStorage, study_name: str) -> None:
    study = optuna.create_study(study_name=study_name, storage=storage)
    missing = study._study_id + 1000
    with pytest.raises(KeyError):
        RDBStorage._get_trials(storage, missing, None, set(), -1)
    with pytest.raises(KeyError):
        rdb_read.read_trials(storage.engine, missing, None, set(), -1)
    resilient = resolve_storage(storage.url, heartbeat_interval=None)
    assert isinstance(resilient, ResilientRDBStorage)
    with pytest.raises(KeyError):
        resilient._get_trials(missing, None, set(), -1)
    resilient.engine.dispose()


def test_trace_optuna_storages_read_through_it_and_read_the_same(
    storage: RDBStorage, study_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(storage, study_name)
    calls = []
    read_trials = rdb_read.read_trials

    def failing_once(*args: Any) -> list[FrozenTrial]:
        calls.append(args)
        if len(calls) == 1:  # a server restart: retried like every storage call
            raise sqlalchemy.exc.OperationalError("SELECT", {}, ConnectionRefusedError())
        return read_trials(*args)

    monkeypatch.setattr(rdb_read, "read_trials", failing_once)
    resilient = resolve_storage(storage.url, heartbeat_interval=None)
    assert isinstance(resilient, ResilientRDBStorage)
    for name in (study_name, f"{study_name}-multi"):
        ours = optuna.load_study(study_name=name, storage=resilient).get_trials()
        optunas = optuna.load_study(study_name=name, storage=storage).get_trials()
        assert_same(ours, optunas)
    assert len(calls) >= 3
    resilient.engine.dispose()


def test_study_attributes_read_what_optuna_reads(storage: RDBStorage, study_name: str) -> None:
    study = optuna.create_study(study_name=study_name, storage=storage)
    for key, value in {**ATTRS, "number": 3, "list": [1, "ü", None]}.items():
        storage.set_study_user_attr(study._study_id, key, value)
        storage.set_study_system_attr(study._study_id, f"system:{key}", value)
    storage.set_study_user_attr(study._study_id, "number", 4)  # written twice
    optuna.create_study(study_name=f"{study_name}-other", storage=storage).set_user_attr("x", 1)
    resilient = resolve_storage(storage.url, heartbeat_interval=None)
    for system in (False, True):
        ours = rdb_read.read_study_attrs(storage.engine, study._study_id, system=system)
        read = RDBStorage.get_study_system_attrs if system else RDBStorage.get_study_user_attrs
        optunas = read(storage, study._study_id)
        assert json.dumps(ours, sort_keys=True) == json.dumps(optunas, sort_keys=True)
        assert ours.keys() == optunas.keys() and len(ours) >= len(ATTRS) + 2
        with pytest.raises(KeyError):
            rdb_read.read_study_attrs(storage.engine, study._study_id + 1000, system=system)
    # The storages trace_optuna opens read through it.
    assert resilient.get_study_user_attrs(study._study_id)["number"] == 4
    study.set_metric_names(["score"])  # a study system attribute
    optunas = RDBStorage.get_study_system_attrs(storage, study._study_id)
    ours = resilient.get_study_system_attrs(study._study_id)
    assert json.dumps(ours, sort_keys=True) == json.dumps(optunas, sort_keys=True)
    assert optuna.load_study(study_name=study_name, storage=resilient).metric_names == ["score"]
    resilient.engine.dispose()


def test_one_trial_reads_what_optuna_reads(storage: RDBStorage, study_name: str) -> None:
    resilient = resolve_storage(storage.url, heartbeat_interval=None)
    assert isinstance(resilient, ResilientRDBStorage)
    ids = [trial._trial_id for study in fill(storage, study_name) for trial in study.get_trials()]
    for trial_id in ids:
        optunas = RDBStorage.get_trial(storage, trial_id)
        assert_same([rdb_read.read_trial(storage.engine, trial_id)], [optunas])
        assert_same([resilient.get_trial(trial_id)], [optunas])
    with pytest.raises(KeyError):
        RDBStorage.get_trial(storage, max(ids) + 1000)
    with pytest.raises(KeyError):
        rdb_read.read_trial(storage.engine, max(ids) + 1000)
    resilient.engine.dispose()


def test_a_read_is_one_statement(storage: RDBStorage, study_name: str) -> None:
    # Between hosts each statement is a round trip: a read of trials or of a trial is one,
    # however many child tables it reads (and one snapshot of them).
    study = fill(storage, study_name)[0]
    statements: list[str] = []

    def count(connection: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not statement.lstrip().upper().startswith(("SET", "SHOW", "BEGIN")):
            statements.append(statement)

    sqlalchemy.event.listen(storage.engine, "before_cursor_execute", count)
    try:
        trials = rdb_read.read_trials(storage.engine, study._study_id, None, set(), -1)
        assert len(statements) == 1 and len(trials) > 5
        rdb_read.read_trial(storage.engine, trials[0]._trial_id)
        assert len(statements) == 2
        assert rdb_read.read_trials(storage.engine, study._study_id, (), set(), -1) == []
        assert len(statements) == 3
    finally:
        sqlalchemy.event.remove(storage.engine, "before_cursor_execute", count)
