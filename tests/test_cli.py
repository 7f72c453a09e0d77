"""The trace-optuna command, run as a user runs it: a subprocess in a fresh directory."""

from __future__ import annotations

import json
from pathlib import Path
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # every test runs the trace-optuna command in a new process


def trace_optuna(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trace_optuna", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=check,
    )


def test_demo_reaches_the_best_score_and_prints_how_to_browse(tmp_path: Path) -> None:
    result = trace_optuna("demo", "--trials", "20", "--no-progress", cwd=tmp_path)
    assert "simulated model" in result.stdout and "not a language model" in result.stdout
    assert "Best score 1.000" in result.stdout
    assert "trace-optuna dashboard --storage sqlite:///trace_optuna_demo.db" in result.stdout
    assert "Using LiteLLM" not in result.stdout
    printed = json.loads(result.stdout.split("Best parameters:\n", 1)[1].split("\n\n")[0])
    assert "Kind regards, Acme Support" in printed["format_reply"]

    best = trace_optuna(
        "best",
        "--storage",
        "sqlite:///trace_optuna_demo.db",
        "--study",
        "trace-optuna-demo",
        cwd=tmp_path,
    )
    assert json.loads(best.stdout) == printed

    again = trace_optuna("demo", "--trials", "2", "--no-progress", cwd=tmp_path)
    assert "(it has 20)" in again.stdout


def test_storage_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACE_OPTUNA_STORAGE", f"sqlite:///{tmp_path / 'env.db'}")
    trace_optuna("demo", "--trials", "1", "--no-progress", cwd=tmp_path)
    assert (tmp_path / "env.db").exists()
    best = trace_optuna("best", "--study", "trace-optuna-demo", cwd=tmp_path)
    assert "max_words" in json.loads(best.stdout)


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ("best", "--storage", "sqlite:///missing.db", "--study", "nope"),
            "no study named 'nope'",
        ),
        (("demo", "--storage", "mongodb://x/y", "--trials", "1"), "Unknown storage URL"),
    ],
)
def test_errors_are_one_clear_line(tmp_path: Path, args: tuple, message: str) -> None:
    result = trace_optuna(*args, cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
