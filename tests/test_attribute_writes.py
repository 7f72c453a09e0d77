"""write_trial_attrs on real storages: the same stored result as per-key writes, in one
transaction (RDB) or one round trip (Redis)."""

from __future__ import annotations

from collections.abc import Iterator
import json
import logging
from pathlib import Path
import sqlite3
import threading
from typing import Any
import uuid

import optuna
from optuna.exceptions import StorageInternalError
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.storages import InMemoryStorage
from optuna.storages import JournalStorage
from optuna.storages import RDBStorage
from optuna.storages._cached_storage import _CachedStorage
import pytest
import sqlalchemy

from trace_optuna import attribute_writes
from trace_optuna.attribute_writes import write_attrs
from trace_optuna.attribute_writes import write_study_system_attrs
from trace_optuna.attribute_writes import write_trial_attrs
from trace_optuna.exceptions import ConfigurationError
from trace_optuna.storage import ResilientRDBStorage
from trace_optuna.storage import resolve_storage

RDB_KINDS = ["sqlite", "postgresql", "mysql"]
INF = float("inf")
NAN = float("nan")

# A trial record's shape: about 20 keys, mostly small, a few long (the long ones stay under
# MariaDB's 65,535-byte TEXT: chunking longer values is records.encode's job).
RECORD: dict[str, Any] = {
    "trace:schema": 3,
    "trace:strategy": "optoprime",
    "trace:parents": [4, 7],
    "trace:score": 0.8125,
    "trace:parent_score": -INF,
    "trace:improvement": NAN,
    "trace:snapshot": {
        "instructions": "Answer the customer. ✓ 日本語",
        "sign": "def sign(self, text):\n    return text + ' -- Support'",
    },
    "trace:changed": ["instructions"],
    "trace:diff": "--- a\n+++ b\n@@ -1 +1 @@\n-Answer.\n+Answer the customer. ✓\n",
    "trace:feedback": 'The reply should mention "order number". Émoji 🎉',
    "trace:llm": {"model": "simulated/feedback-follower", "calls": 1, "cost": 0.00012},
    "trace:time": {"evaluate_s": 0.001, "llm_s": 0.002, "total_s": 0.01},
    "trace:worker": "host:1234",
    "trace:details": {"a": [1, 2.5, None, True, "ü"], "b": {"c": {"d": [[], {}]}}},
    "trace:knobs": None,
    "trace:empty": "",
    "trace:tuple": (1, "two"),  # stored as a list, as Optuna does
    "trace:long": "x" * 60_000,
    "trace:long_unicode": "é" * 9_000,  # json.dumps escapes it: 54,002 bytes
    "trace:llm_calls": [{"system": "s" * 2_000, "user": "u" * 6_000, "response": "r" * 500}],
}
OVERWRITTEN: dict[str, Any] = {
    "trace:strategy": "genetic",
    "trace:score": 0.1,
    "trace:long": "y" * 10,
    "trace:only_first": {"kept": True},
}


def _note_attrs(trial_id: int, body: str) -> dict[str, Any]:
    """optuna-dashboard's note keys of a trial (see trace_optuna.dashboard._keys)."""
    return {
        f"dashboard:{trial_id}:note_ver": 1,
        f"dashboard:{trial_id}:note_str:0": body[:2048],
        f"dashboard:{trial_id}:note_str:1": body[2048:],
    }


def _canonical(attrs: dict[str, Any]) -> str:
    return json.dumps(attrs, sort_keys=True)  # NaN equals NaN here


def _open(url: str) -> BaseStorage:
    return resolve_storage(url, heartbeat_interval=None)


def _backend(storage: BaseStorage) -> BaseStorage:
    return storage._backend if isinstance(storage, _CachedStorage) else storage


@pytest.fixture
def study(storage_url: str, study_name: str) -> optuna.Study:
    return optuna.create_study(storage=_open(storage_url), study_name=study_name)


# -- the same stored result as per-key writes -----------------------------------------------------


def _write_both_ways(study: optuna.Study) -> tuple[optuna.Trial, optuna.Trial]:
    """Trial 0 written key by key through Optuna, trial 1 through write_attrs."""
    storage = study._storage
    per_key, batched = study.ask(), study.ask()
    for values in (OVERWRITTEN, RECORD):
        for key, value in values.items():
            per_key.set_user_attr(key, value)
        for key, value in _note_attrs(per_key._trial_id, "n" * 3000).items():
            storage.set_study_system_attr(study._study_id, key, value)
        write_attrs(batched, values, study_system_attrs=_note_attrs(batched._trial_id, "n" * 3000))
    return per_key, batched


def _system_attrs_of(trial_id: int, attrs: dict[str, Any]) -> dict[str, Any]:
    prefix = f"dashboard:{trial_id}:"
    return {key[len(prefix) :]: value for key, value in attrs.items() if key.startswith(prefix)}


def _assert_same(storage: BaseStorage, study_id: int, per_key_id: int, batched_id: int) -> None:
    per_key, batched = storage.get_trial(per_key_id), storage.get_trial(batched_id)
    assert _canonical(batched.user_attrs) == _canonical(per_key.user_attrs)
    assert batched.user_attrs["trace:long_unicode"] == RECORD["trace:long_unicode"]
    assert batched.user_attrs["trace:only_first"] == {"kept": True}
    assert batched.user_attrs["trace:strategy"] == "optoprime"  # overwritten
    system = storage.get_study_system_attrs(study_id)
    assert _system_attrs_of(batched_id, system) == _system_attrs_of(per_key_id, system)
    assert len(_system_attrs_of(batched_id, system)) == 3


def _stored_rows(storage: BaseStorage, study_id: int, trial_ids: list[int]) -> list[Any]:
    """What the database or the journal holds for each trial, as text, without ids."""
    backend = _backend(storage)
    if isinstance(backend, RDBStorage):
        table = sqlalchemy.table(
            "trial_user_attributes",
            sqlalchemy.column("trial_id"),
            sqlalchemy.column("key"),
            sqlalchemy.column("value_json"),
        )
        with backend.engine.connect() as connection:
            return [
                sorted(
                    connection.execute(
                        sqlalchemy.select(table.c.key, table.c.value_json).where(
                            table.c.trial_id == trial_id
                        )
                    ).all()
                )
                for trial_id in trial_ids
            ]
    assert isinstance(backend, JournalStorage)
    logs = [log for log in backend._backend.read_logs(0) if "user_attr" in log]
    return [
        [json.dumps(log["user_attr"]) for log in logs if log.get("trial_id") == trial_id]
        for trial_id in trial_ids
    ]


def test_values_read_back_as_after_per_key_writes(study: optuna.Study, storage_url: str) -> None:
    storage = study._storage
    assert study.trials == []  # fills the cache of RDB storages before the writes
    per_key, batched = _write_both_ways(study)

    # This process, while the trials run: the storage, the cache, the Trial objects.
    _assert_same(storage, study._study_id, per_key._trial_id, batched._trial_id)
    running = {trial.number: trial.user_attrs for trial in study.trials}
    assert _canonical(running[batched.number]) == _canonical(running[per_key.number])
    assert _canonical(batched.user_attrs) == _canonical(per_key.user_attrs)

    study.tell(per_key, 1.0)
    study.tell(batched, 1.0)
    finished = {trial.number: trial.user_attrs for trial in study.trials}
    assert _canonical(finished[batched.number]) == _canonical(finished[per_key.number])

    # Another storage object (its own connections, cache and journal replay) reads the same.
    fresh = optuna.load_study(study_name=study.study_name, storage=_open(storage_url))
    _assert_same(fresh._storage, fresh._study_id, per_key._trial_id, batched._trial_id)
    per_key_rows, batched_rows = _stored_rows(
        fresh._storage, fresh._study_id, [per_key._trial_id, batched._trial_id]
    )
    assert batched_rows == per_key_rows  # byte for byte what Optuna stores


def test_a_journal_file_is_written_as_per_key_writes(tmp_path: Path, study_name: str) -> None:
    url = f"journal:///{tmp_path / 'study.log'}"
    study = optuna.create_study(storage=_open(url), study_name=study_name)
    per_key, batched = _write_both_ways(study)
    _assert_same(study._storage, study._study_id, per_key._trial_id, batched._trial_id)
    study.tell(batched, 1.0)
    fresh = optuna.load_study(study_name=study_name, storage=_open(url))
    _assert_same(fresh._storage, fresh._study_id, per_key._trial_id, batched._trial_id)
    per_key_rows, batched_rows = _stored_rows(
        fresh._storage, fresh._study_id, [per_key._trial_id, batched._trial_id]
    )
    assert batched_rows == per_key_rows


@pytest.mark.parametrize("storage_url", RDB_KINDS, indirect=True)
def test_plain_optuna_rdb_storage_from_a_url(storage_url: str, study_name: str) -> None:
    study = optuna.create_study(storage=storage_url, study_name=study_name)
    assert isinstance(study._storage, _CachedStorage)
    assert type(study._storage._backend) is RDBStorage  # no trace_optuna retry layer
    per_key, batched = _write_both_ways(study)
    _assert_same(study._storage, study._study_id, per_key._trial_id, batched._trial_id)


def test_other_storages_write_key_by_key() -> None:
    study = optuna.create_study(storage=InMemoryStorage())
    trial = study.ask()
    write_attrs(trial, RECORD, study_system_attrs={"note": "n"})
    assert _canonical(study.trials[0].user_attrs) == _canonical(
        {**RECORD, "trace:tuple": [1, "two"]}
    )
    assert study._storage.get_study_system_attrs(study._study_id) == {"note": "n"}
    with pytest.raises(ConfigurationError, match="study_id"):
        write_trial_attrs(study._storage, trial._trial_id, {}, study_system_attrs={"x": 1})
    study.tell(trial, 0.0)
    with pytest.raises(UpdateFinishedTrialError, match="Trial#0 has already finished"):
        write_trial_attrs(study._storage, trial._trial_id, {"late": 1})
    assert "late" not in study.trials[0].user_attrs


@pytest.mark.parametrize("storage_url", RDB_KINDS, indirect=True)
def test_the_other_dialects_path_stores_the_same(study: optuna.Study) -> None:
    backend = _backend(study._storage)
    assert isinstance(backend, RDBStorage)
    upserted, inserted = study.ask(), study.ask()
    for values in (OVERWRITTEN, RECORD):
        write_trial_attrs(study._storage, upserted._trial_id, values)
        rows = attribute_writes._encoded(values, "user_attrs")
        with backend.engine.begin() as connection:
            attribute_writes._upsert(
                connection,
                attribute_writes._TRIAL_USER_ATTRS,
                "trial_id",
                inserted._trial_id,
                rows,
                "other",
            )
    assert _stored_rows(backend, study._study_id, [upserted._trial_id]) == _stored_rows(
        backend, study._study_id, [inserted._trial_id]
    )


# -- the rules ------------------------------------------------------------------------------------


def test_a_finished_trial_is_refused_and_nothing_written(
    study: optuna.Study, storage_url: str
) -> None:
    storage = study._storage
    trial = study.ask()
    write_attrs(trial, {"kept": 1})
    study.tell(trial, 0.5)
    with pytest.raises(UpdateFinishedTrialError, match="Trial#0 has already finished"):
        write_trial_attrs(
            storage,
            trial._trial_id,
            {"kept": 2, "new": 3},
            study_system_attrs={"dashboard:note": "late"},
        )
    # Reads after the refusal work and see nothing of it (a journal replays its own entries).
    assert storage.get_trial(trial._trial_id).user_attrs == {"kept": 1}
    assert "dashboard:note" not in storage.get_study_system_attrs(study._study_id)
    fresh = optuna.load_study(study_name=study.study_name, storage=_open(storage_url))
    assert fresh.trials[0].user_attrs == {"kept": 1}
    assert "dashboard:note" not in fresh._storage.get_study_system_attrs(fresh._study_id)


def test_a_trial_finished_by_another_process_is_refused(
    study: optuna.Study, storage_url: str
) -> None:
    storage = study._storage
    trial = study.ask()
    write_attrs(trial, {"kept": 1})
    storage.get_trial(trial._trial_id)  # this process has read the trial RUNNING
    other = optuna.load_study(study_name=study.study_name, storage=_open(storage_url))
    other.tell(trial.number, 0.5)
    with pytest.raises(UpdateFinishedTrialError, match="Trial#0 has already finished"):
        write_trial_attrs(
            storage,
            trial._trial_id,
            {"kept": 2, "new": 3, "more": 4},
            study_system_attrs={"dashboard:note": "late"},
        )
    assert storage.get_trial(trial._trial_id).user_attrs == {"kept": 1}
    assert "dashboard:note" not in storage.get_study_system_attrs(study._study_id)
    other_storage = _open(storage_url)
    assert other_storage.get_trial(trial._trial_id).user_attrs == {"kept": 1}
    assert "dashboard:note" not in other_storage.get_study_system_attrs(study._study_id)


@pytest.mark.parametrize(
    ("attrs", "error", "message"),
    [
        ({"ok": 1, "bad": {1, 2}}, TypeError, r"user_attrs\['bad'\].*JSON-serializable"),
        ({"ok": 1, "bad": b"bytes"}, TypeError, r"user_attrs\['bad'\].*JSON-serializable"),
        ({"ok": 1, "k" * 513: 1}, ConfigurationError, "513 characters.*at most 512"),
        ({"ok": 1, 7: 1}, ConfigurationError, "keys must be strings"),
    ],
)
def test_bad_attributes_are_refused_before_anything_is_written(
    study: optuna.Study, attrs: dict[Any, Any], error: type[Exception], message: str
) -> None:
    trial = study.ask()
    with pytest.raises(error, match=message):
        write_trial_attrs(study._storage, trial._trial_id, attrs)
    with pytest.raises(error, match=message.replace("user_attrs", "study_system_attrs")):
        write_trial_attrs(study._storage, trial._trial_id, {"ok": 1}, study_system_attrs=attrs)
    assert study._storage.get_trial(trial._trial_id).user_attrs == {}
    assert "ok" not in study._storage.get_study_system_attrs(study._study_id)


def test_a_key_of_512_characters_is_stored(study: optuna.Study) -> None:
    trial = study.ask()
    key = "ключ" * 128
    write_attrs(trial, {key: 1}, study_system_attrs={key: 2})
    assert study._storage.get_trial(trial._trial_id).user_attrs == {key: 1}
    assert study._storage.get_study_system_attrs(study._study_id)[key] == 2


def test_study_id_must_be_the_trials(study: optuna.Study) -> None:
    trial = study.ask()
    with pytest.raises(ConfigurationError, match="is not the study of trial id"):
        write_trial_attrs(
            study._storage,
            trial._trial_id,
            {"a": 1},
            study_system_attrs={"b": 2},
            study_id=study._study_id + 1000,
        )
    assert study._storage.get_trial(trial._trial_id).user_attrs == {}


def test_an_unknown_trial_raises_key_error(study: optuna.Study) -> None:
    study.ask()
    with pytest.raises(KeyError):
        write_trial_attrs(study._storage, 10_000, {"a": 1})


@pytest.mark.parametrize("storage_url", ["mysql"], indirect=True)
def test_a_value_the_database_refuses_leaves_nothing_written(study: optuna.Study) -> None:
    trial = study.ask()
    too_long = "z" * 70_000  # over MariaDB's TEXT (65,535 bytes), refused in strict mode
    with pytest.raises(StorageInternalError):
        write_attrs(trial, {"first": 1, "too_long": too_long, "last": 2})
    assert study._storage.get_trial(trial._trial_id).user_attrs == {}  # not "first"


# -- one transaction, one round trip --------------------------------------------------------------


@pytest.fixture
def counted_engine(study: optuna.Study) -> Iterator[dict[str, list[Any]]]:
    """COMMITs and statements sent on the study's RDB engine while the test runs."""
    backend = _backend(study._storage)
    assert isinstance(backend, RDBStorage)
    seen: dict[str, list[Any]] = {"commits": [], "statements": []}

    def on_commit(connection: Any) -> None:
        seen["commits"].append(connection)

    def on_statement(connection: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen["statements"].append(statement.split(None, 1)[0].upper())

    sqlalchemy.event.listen(backend.engine, "commit", on_commit)
    sqlalchemy.event.listen(backend.engine, "before_cursor_execute", on_statement)
    yield seen
    sqlalchemy.event.remove(backend.engine, "commit", on_commit)
    sqlalchemy.event.remove(backend.engine, "before_cursor_execute", on_statement)


@pytest.mark.parametrize("storage_url", RDB_KINDS, indirect=True)
def test_one_transaction_per_call_on_rdb(
    study: optuna.Study, counted_engine: dict[str, list[Any]]
) -> None:
    trial = study.ask()
    notes = _note_attrs(trial._trial_id, "n" * 3000)
    counted_engine["commits"].clear()
    counted_engine["statements"].clear()

    write_attrs(trial, RECORD, study_system_attrs=notes)

    assert len(RECORD) == 20
    statements = [kind for kind in counted_engine["statements"] if kind != "BEGIN"]
    if _backend(study._storage).engine.dialect.name == "postgresql":
        # One statement in autocommit: the trial's row, both upserts from it.
        assert statements == ["WITH"] and counted_engine["commits"] == []
    else:
        # SELECT of the trial, one upsert per table (and SQLite's BEGIN IMMEDIATE).
        assert statements == ["SELECT", "INSERT", "INSERT"]
        assert len(counted_engine["commits"]) == 1
    stored = study._storage.get_trial(trial._trial_id).user_attrs
    assert json.dumps(stored, sort_keys=True) == json.dumps(RECORD, sort_keys=True)
    assert set(notes) <= set(study._storage.get_study_system_attrs(study._study_id))

    # The counter sees the per-key writes: one upsert each (in autocommit on PostgreSQL).
    counted_engine["statements"].clear()
    for key, value in RECORD.items():
        trial.set_user_attr(key, value)
    assert counted_engine["statements"].count("INSERT") == len(RECORD)


@pytest.mark.parametrize("storage_url", ["redis"], indirect=True)
def test_one_round_trip_per_call_on_redis(study: optuna.Study, storage_url: str) -> None:
    import redis

    backend = _backend(study._storage)
    assert isinstance(backend, JournalStorage)
    client = backend._backend._redis
    trial = study.ask()
    address = client.client_info()["addr"]  # one thread: the client's one pooled connection
    notes = _note_attrs(trial._trial_id, "n" * 3000)

    def commands_sent(write: Any) -> list[str]:
        """The commands this client sends to Redis during ``write()``, seen by MONITOR."""
        marker = f"done-{uuid.uuid4().hex}"
        with redis.Redis.from_url(storage_url.split("?")[0]).monitor() as monitor:
            write()
            client.echo(marker)
            sent = []
            while True:
                command = monitor.next_command()
                if f"{command['client_address']}:{command['client_port']}" != address:
                    continue  # other clients, and the commands a script runs
                if marker in command["command"]:
                    return sent
                sent.append(command["command"].split(None, 1)[0].upper())

    assert commands_sent(lambda: write_attrs(trial, RECORD)) == ["EVAL"]
    # The study's note: a second append, after the trial's was replayed.
    notes_too = commands_sent(lambda: write_attrs(trial, RECORD, study_system_attrs=notes))
    assert notes_too == ["EVAL", "EVAL"]
    per_key = commands_sent(lambda: [trial.set_user_attr(k, v) for k, v in RECORD.items()])
    assert len(per_key) >= 3 * len(RECORD)  # the monitor sees Optuna's per-key round trips
    assert _canonical(study._storage.get_trial(trial._trial_id).user_attrs) == _canonical(
        {**RECORD, "trace:tuple": [1, "two"]}
    )


# -- a study's system attributes (saved figures) --------------------------------------------------


def test_study_system_attrs_read_back_as_after_per_key_writes(
    study: optuna.Study, storage_url: str
) -> None:
    storage, study_id = study._storage, study._study_id
    storage.set_study_system_attr(study_id, "plot:a:0", "old")
    storage.set_study_system_attr(study_id, "kept", {"untouched": True})
    figure = {f"plot:a:{index}": "p" * 2048 for index in range(400)}  # 800 KB, as at 3,000 trials
    write_study_system_attrs(
        storage, study_id, {**figure, "stamp": [1, "two"], "long": "é" * 9_000}
    )

    fresh = optuna.load_study(study_name=study.study_name, storage=_open(storage_url))
    stored = fresh._storage.get_study_system_attrs(fresh._study_id)
    assert {key: stored[key] for key in figure} == figure  # "plot:a:0" overwritten
    assert stored["stamp"] == [1, "two"]
    assert stored["long"] == "é" * 9_000
    assert stored["kept"] == {"untouched": True}


@pytest.mark.parametrize("storage_url", RDB_KINDS, indirect=True)
def test_study_system_attrs_in_one_transaction_on_rdb(
    study: optuna.Study, counted_engine: dict[str, list[Any]]
) -> None:
    counted_engine["commits"].clear()
    attrs = {f"plot:a:{index}": "p" * 2048 for index in range(569)}
    write_study_system_attrs(study._storage, study._study_id, attrs)
    assert len(counted_engine["commits"]) == 1
    # 569 rows of 2 KB: more than one statement's worth of rows (_ROWS_PER_STATEMENT).
    inserts = [kind for kind in counted_engine["statements"] if kind == "INSERT"]
    assert len(inserts) == 2


def test_study_system_attrs_of_an_unknown_study_raise_key_error(study: optuna.Study) -> None:
    with pytest.raises(KeyError, match="No study with id"):
        write_study_system_attrs(study._storage, study._study_id + 1000, {"a": 1})
    with pytest.raises(ConfigurationError, match="attribute keys must be strings"):
        write_study_system_attrs(study._storage, study._study_id, {1: "a"})  # type: ignore[dict-item]


# -- the retry path -------------------------------------------------------------------------------


def test_a_locked_database_is_waited_out_through_the_retry_path(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    storage = ResilientRDBStorage(
        f"sqlite:///{path}", engine_kwargs={"connect_args": {"timeout": 0.05}}, retry_timeout=60
    )
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    retrying = threading.Event()

    class SeeRetry(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "write_trial_attrs" in record.getMessage():
                retrying.set()

    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock

    def release_when_retrying() -> None:
        retrying.wait(timeout=60)
        blocker.execute("COMMIT")

    handler = SeeRetry()
    logger = logging.getLogger("trace_optuna.storage")
    logger.addHandler(handler)
    releaser = threading.Thread(target=release_when_retrying)
    releaser.start()
    try:
        write_attrs(trial, {"a": 1, "b": 2})
    finally:
        logger.removeHandler(handler)
        releaser.join()
        blocker.close()
    assert retrying.is_set()
    assert storage.get_trial(trial._trial_id).user_attrs == {"a": 1, "b": 2}
