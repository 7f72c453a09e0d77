from __future__ import annotations

from collections.abc import Iterator
import contextlib
import importlib.util
import os
from pathlib import Path
import subprocess
import sys
import time
import urllib.parse

from opto import trace
import optuna
from optuna.trial import TrialState
import pytest
import sqlalchemy

import trace_optuna as to
from trace_optuna import testing
from trace_optuna.storage import MAX_STUDY_NAME_LENGTH
from trace_optuna.storage import ResilientRDBStorage
from trace_optuna.storage import RetryStaleTrialCallback
from trace_optuna.storage import SQLModeWarning
from trace_optuna.storage import check_sql_mode
from trace_optuna.storage import check_study_name
from trace_optuna.storage import describe
from trace_optuna.storage import is_transient
from trace_optuna.storage import open_existing
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
    with pytest.warns(SQLModeWarning, match="not strict") as caught:
        storage = resolve_storage(url, heartbeat_interval=None)
    assert caught[0].filename == __file__  # the warning points at the user's line
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


# -- SQLite paths, URLs and drivers: each refused with the path or URL and the rule ---------


@contextlib.contextmanager
def read_only_directory(source: Path, target: Path) -> Iterator[Path]:
    """``source``'s files seen through a directory this process cannot write.

    As root, chmod stops nothing, so ``target`` is a read-only bind mount of ``source`` (what
    read-only media look like to SQLite: EROFS); otherwise ``source`` itself is chmod 555 and
    its files 444. Yields the read-only directory, checked to refuse a new file.
    """
    if os.geteuid() == 0:
        target.mkdir()
        mounted = subprocess.run(["mount", "--bind", str(source), str(target)], check=False)
        if mounted.returncode != 0:
            pytest.skip("needs mount --bind (CAP_SYS_ADMIN) to make a read-only place as root")
        try:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(target)], check=True)
            with pytest.raises(OSError):
                (target / "probe").touch()
            yield target
        finally:
            subprocess.run(["umount", "-l", str(target)], check=True)
        return
    for path in source.iterdir():
        path.chmod(0o444)
    source.chmod(0o555)
    try:
        with pytest.raises(OSError):
            (source / "probe").touch()
        yield source
    finally:
        source.chmod(0o755)
        for path in source.iterdir():
            path.chmod(0o644)


def _plain_study(url: str, name: str = "plain") -> None:
    """A study made by Optuna alone: 3 COMPLETE trials, no trace_optuna records."""
    storage = resolve_storage(url, heartbeat_interval=None)
    study = optuna.create_study(study_name=name, storage=storage)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=3)
    storage.engine.dispose()  # type: ignore[attr-defined]  # closing drops the -wal and -shm


@pytest.mark.parametrize(
    "path, message",
    [
        ("missing/study.db", r"the directory '.*missing' does not exist"),
        ("adir", r"names the directory 'adir' .* not a SQLite file: name a file in it"),
        ("afile/study.db", r"the directory '.*afile' is not a directory"),
    ],
)
def test_sqlite_paths_that_cannot_work_are_refused_naming_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("not a directory")
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(to.ConfigurationError, match=message) as raised:
        resolve_storage(f"sqlite:///{path}")
    assert f"sqlite:///{path}" in str(raised.value)
    assert sorted(tmp_path.rglob("*")) == before  # nothing created


def test_a_tilde_is_the_home_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    storage = resolve_storage("sqlite:///~/study.db", heartbeat_interval=None)
    assert storage.url == f"sqlite:///{home}/study.db"  # type: ignore[attr-defined]
    optuna.create_study(study_name="s", storage=storage)
    assert (home / "study.db").is_file() and not (tmp_path / "~").exists()
    assert optuna.load_study(study_name="s", storage=open_existing("sqlite:///~/study.db"))
    journal = resolve_storage("journal://~/study.log")
    optuna.create_study(study_name="j", storage=journal)
    assert (home / "study.log").is_file()
    with pytest.raises(to.ConfigurationError, match="cannot expand '~no-such-user-here'"):
        resolve_storage("sqlite:///~no-such-user-here/study.db")


def test_a_read_only_place_is_refused_for_writing_and_read_read_only(tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    _plain_study(f"sqlite:///{media / 'study.db'}")
    assert sorted(p.name for p in media.iterdir()) == ["study.db"]  # no WAL index left
    with read_only_directory(media, tmp_path / "ro") as place:
        with pytest.raises(to.ConfigurationError, match="cannot create the SQLite file") as new:
            resolve_storage(f"sqlite:///{place / 'new.db'}")
        assert str(place / "new.db") in str(new.value)
        url = f"sqlite:///{place / 'study.db'}"
        with pytest.raises(to.ConfigurationError, match="is read-only for this process"):
            resolve_storage(url)
        with pytest.raises(to.ConfigurationError, match="read-only"):
            open_existing(url)
        storage = open_existing(url, read_only=True)
        study = optuna.load_study(study_name="plain", storage=storage)
        assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
        assert study.best_value == min(t.value for t in study.trials)
        assert sorted(p.name for p in place.iterdir()) == ["study.db"]


def test_read_only_opening_never_writes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    _plain_study(url)
    before = (tmp_path / "study.db").read_bytes()
    study = optuna.load_study(study_name="plain", storage=open_existing(url, read_only=True))
    assert len(study.trials) == 3
    with pytest.raises(optuna.exceptions.StorageInternalError) as refused:
        study.set_user_attr("written", True)
    assert "attempt to write a readonly database" in str(refused.value.__cause__)
    assert (tmp_path / "study.db").read_bytes() == before


@pytest.mark.parametrize("how", ["missing", "empty file"])
def test_opening_an_existing_storage_creates_nothing(tmp_path: Path, how: str) -> None:
    path = tmp_path / "typo.db"
    if how == "empty file":
        path.touch()  # what opening a mistyped path used to leave behind
    url = f"sqlite:///{path}"
    with pytest.raises(to.ConfigurationError, match=r"No file|holds no Optuna study") as raised:
        open_existing(url)
    assert url in str(raised.value)
    if how == "missing":
        assert not path.exists()
    else:
        assert path.stat().st_size == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if how == "missing" else ["typo.db"])


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_opening_a_server_database_without_optuna_tables_creates_none(kind: str) -> None:
    try:
        database = testing.ServerDatabase(kind)
    except testing.ServerUnavailable as error:
        if testing.databases_required():
            pytest.fail(f"TRACE_OPTUNA_REQUIRE_DATABASES is set but {error}")
        pytest.skip(f"needs a database server: {error}")
    try:
        with pytest.raises(to.ConfigurationError, match="holds no Optuna study"):
            open_existing(database.url)
        engine = sqlalchemy.create_engine(database.url)
        try:
            with engine.connect() as connection:
                assert sqlalchemy.inspect(connection).get_table_names() == []
        finally:
            engine.dispose()
    finally:
        database.drop()


def test_postgres_scheme_is_refused_naming_postgresql() -> None:
    with pytest.raises(to.ConfigurationError, match="postgres://' is not a SQLAlchemy") as raised:
        resolve_storage("postgres://me:secret@127.0.0.1:5432/test")
    assert "write 'postgresql://me:***@127.0.0.1:5432/test'" in str(raised.value)
    assert "secret" not in str(raised.value)


@pytest.mark.skipif(
    importlib.util.find_spec("MySQLdb") is not None, reason="mysqlclient is installed here"
)
@pytest.mark.parametrize("scheme", ["mysql", "mariadb"])
def test_mysql_without_a_driver_names_the_url_and_the_package(scheme: str) -> None:
    with pytest.raises(to.ConfigurationError, match="'MySQLdb'") as raised:
        resolve_storage(f"{scheme}://root@127.0.0.1:3306/test")
    message = str(raised.value)
    assert "write 'mysql+pymysql://root@127.0.0.1:3306/test'" in message
    assert "pip install 'trace-optuna[mysql]'" in message


def test_a_bare_file_name_is_pointed_to_sqlite() -> None:
    with pytest.raises(to.ConfigurationError, match="write 'sqlite:///study.db'"):
        resolve_storage("study.db")


# -- study names --------------------------------------------------------------------------


def test_study_names_over_the_column_limit_are_refused_before_anything_is_made(
    storage_url: str, study_name: str
) -> None:
    longest = (study_name + "-é" * 300)[:MAX_STUDY_NAME_LENGTH]
    assert check_study_name(longest) == longest
    storage = resolve_storage(storage_url, heartbeat_interval=None)
    optuna.create_study(study_name=longest, storage=storage)  # the limit is the real one
    optuna.delete_study(study_name=longest, storage=storage)
    too_long = longest + "x"
    with pytest.raises(to.ConfigurationError, match="at most 512") as raised:
        check_study_name(too_long)
    assert "study_name is 513 characters long" in str(raised.value)


@pytest.mark.parametrize(
    "name, message",
    [
        (None, "must be a str, got NoneType"),
        (42, "must be a str, got int"),
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("a\x00b", "NUL character"),
    ],
)
def test_study_names_that_no_storage_takes_are_refused(name: object, message: str) -> None:
    with pytest.raises(to.ConfigurationError, match=message) as raised:
        check_study_name(name)
    assert "study_name" in str(raised.value)
    assert check_study_name(None, allow_none=True) is None
