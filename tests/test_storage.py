from __future__ import annotations

from pathlib import Path
import subprocess
import sys
import time
import urllib.parse

from opto import trace
import optuna
import pytest
import sqlalchemy

import trace_optuna as to
from trace_optuna import testing
from trace_optuna.storage import ResilientRDBStorage
from trace_optuna.storage import RetryStaleTrialCallback
from trace_optuna.storage import SQLModeWarning
from trace_optuna.storage import check_sql_mode
from trace_optuna.storage import describe
from trace_optuna.storage import is_transient
from trace_optuna.storage import redact
from trace_optuna.storage import resolve_storage


def test_default_is_a_sqlite_file_with_a_long_busy_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    storage = resolve_storage(None)
    assert isinstance(storage, optuna.storages.RDBStorage)
    assert storage.url == "sqlite:///trace_optuna.db"
    assert storage.engine_kwargs["connect_args"]["timeout"] >= 30
    assert (tmp_path / "trace_optuna.db").exists()


def test_journal_file_and_storage_objects(tmp_path: Path) -> None:
    journal = resolve_storage(f"journal://{tmp_path / 'study.log'}")
    assert isinstance(journal, optuna.storages.JournalStorage)
    given = optuna.storages.InMemoryStorage()
    assert resolve_storage(given) is given


def test_wrong_storage_type() -> None:
    with pytest.raises(to.ConfigurationError, match="storage must be a URL string"):
        resolve_storage(42)  # type: ignore[arg-type]


def test_passwords_never_reach_messages() -> None:
    assert redact("postgresql://me:secret@db:5432/x") == "postgresql://me:***@db:5432/x"
    assert redact("sqlite:///a.db") == "sqlite:///a.db"
    assert describe("mysql+pymysql://root:pw@h/db") == "mysql+pymysql://root:***@h/db"


def test_sqlite_files_use_wal_and_rdb_urls_get_heartbeats(sqlite_url: str) -> None:
    storage = resolve_storage(sqlite_url)
    assert isinstance(storage, ResilientRDBStorage)
    with storage.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    assert storage.heartbeat_interval == 60 and storage.grace_period is None
    assert isinstance(storage.heartbeat_stale_trial_callback, RetryStaleTrialCallback)
    quiet = resolve_storage(sqlite_url, heartbeat_interval=None)
    assert quiet.heartbeat_interval is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"heartbeat_interval": 0}, "heartbeat_interval must be a positive int"),
        ({"heartbeat_interval": 10, "grace_period": 10}, "must be longer than heartbeat_interval"),
        ({"max_retry": -1}, "max_retry must be an int >= 0"),
    ],
)
def test_heartbeat_settings_are_checked(sqlite_url: str, settings: dict, message: str) -> None:
    with pytest.raises(to.ConfigurationError, match=message):
        resolve_storage(sqlite_url, **settings)


def test_only_connection_problems_are_retried() -> None:
    refused = sqlalchemy.exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("refused"))
    assert not is_transient(optuna.exceptions.StorageInternalError("commit failed"))
    wrapped = optuna.exceptions.StorageInternalError("commit failed")
    wrapped.__cause__ = refused
    assert is_transient(wrapped) and is_transient(refused)
    too_long = sqlalchemy.exc.DataError("INSERT", {}, ValueError("Data too long"))
    assert not is_transient(too_long)
    assert not is_transient(sqlalchemy.exc.IntegrityError("INSERT", {}, ValueError("dup")))


# -- MySQL/MariaDB in non-strict mode -------------------------------------------------------

# About 170 KB of JSON once Optuna escapes it: far over MySQL's 65,535-byte TEXT column.
BIG_PROGRAM = "def solve(items):\n" + "    # étape: trier les éléments, garder l'ordre\n" * 3000


@trace.bundle()
def run_program(program):
    """The program's length stands for its quality."""
    return len(program)


def make_program_agent() -> dict:
    return {"program": trace.node(BIG_PROGRAM, name="program", trainable=True)}


def evaluate_program(agent: dict) -> to.Evaluation:
    out = run_program(agent["program"])
    return to.Evaluation(score=1.0, feedback="Fine.", output=out)


@pytest.mark.parametrize("storage_url", ["mysql"], indirect=True)
def test_non_strict_mysql_warns_and_a_large_code_parameter_survives(
    storage_url: str, study_name: str
) -> None:
    # This session runs in non-strict mode, as a misconfigured server would.
    url = storage_url + "?init_command=" + urllib.parse.quote("SET SESSION sql_mode=''")
    with pytest.warns(SQLModeWarning, match="not strict"):
        storage = resolve_storage(url, heartbeat_interval=None)
    assert check_sql_mode(storage) == ""  # type: ignore[arg-type]

    # The danger is real here: plain Optuna writing the same text truncates and poisons.
    plain = optuna.create_study(study_name=f"{study_name}-plain", storage=storage)
    plain.ask().set_user_attr("program", BIG_PROGRAM)
    with pytest.raises(ValueError):  # json.JSONDecodeError
        optuna.load_study(study_name=f"{study_name}-plain", storage=url).get_trials()

    study = to.create_study(
        study_name=study_name,
        storage=storage,
        agent=make_program_agent,
        evaluate=evaluate_program,
        llm="simulated/feedback-follower",
    )
    study.optimize(n_trials=1)
    reopened = to.load_study(
        study_name=study_name,
        storage=url,
        agent=make_program_agent,
        evaluate=evaluate_program,
        llm="simulated/feedback-follower",
    )
    record = reopened.record(0)
    assert record.state == "COMPLETE"
    assert record.snapshot["program"] == BIG_PROGRAM


@pytest.mark.slow  # starts Python processes that import trace_optuna
@pytest.mark.storage
@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_workers_opening_an_empty_database_together_all_succeed(kind: str) -> None:
    # Each process creates Optuna's tables; all but one find the version row inserted by
    # another at the same moment. Every one of them must still open the storage.
    try:
        database = testing.ServerDatabase(kind)
    except testing.ServerUnavailable as error:
        if testing.databases_required():
            pytest.fail(f"TRACE_OPTUNA_REQUIRE_DATABASES is set but {error}")
        pytest.skip(f"needs a database server: {error}")
    start = time.time() + 3.0  # a common moment, after every process has imported
    code = (
        "import sys, time\n"
        "from trace_optuna.storage import resolve_storage\n"
        f"time.sleep(max(0.0, {start} - time.time()))\n"
        "resolve_storage(sys.argv[1], heartbeat_interval=None)\n"
    )
    try:
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", code, database.url],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(6)
        ]
        outputs = [process.communicate(timeout=120)[0] for process in processes]
        failed = [
            out for process, out in zip(processes, outputs, strict=True) if process.returncode
        ]
        assert not failed, failed[0][-2000:]
    finally:
        database.drop()
