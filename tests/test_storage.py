from __future__ import annotations

from pathlib import Path

import optuna
import pytest

import trace_optuna as to
from trace_optuna.storage import describe
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
