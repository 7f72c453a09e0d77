"""The trace-optuna command, run as a user runs it: a subprocess in a fresh directory."""

from __future__ import annotations

import json
import os
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
    # Run as `python -m trace_optuna`, it says to run the dashboard the same way.
    browse = f"{sys.executable} -m trace_optuna dashboard --storage sqlite:///trace_optuna_demo.db"
    assert browse in result.stdout
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
            "No file 'missing.db'",
        ),
        (("demo", "--storage", "mongodb://x/y", "--trials", "1"), "Unknown storage URL"),
    ],
)
def test_errors_are_one_clear_line(tmp_path: Path, args: tuple, message: str) -> None:
    result = trace_optuna(*args, cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "missing.db").exists()


# -- numbers, storages and studies a careless user gives ----------------------------------


@pytest.mark.parametrize(
    "args, option",
    [
        (("demo", "--trials", "-3"), "--trials"),
        (("demo", "--trials", "0"), "--trials"),
        (("demo", "--trials", "2.5"), "--trials"),
        (("demo", "--seed", "-1"), "--seed"),
        (("demo", "--noise", "1.5"), "--noise"),
        (("demo", "--noise", "nan"), "--noise"),
        (("worker", "--trials", "0"), "--trials"),
        (("worker", "--timeout", "-1"), "--timeout"),
        (("worker", "--timeout", "inf"), "--timeout"),
        (("worker", "--heartbeat-interval", "0"), "--heartbeat-interval"),
        (("worker", "--grace-period", "-5"), "--grace-period"),
        (("workers", "--processes", "0"), "--processes"),
        (("dashboard", "--port", "70000"), "--port"),
        (("dashboard", "--port", "-1"), "--port"),
    ],
)
def test_numeric_options_out_of_range_are_argparse_errors_naming_the_option(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    option: str,
) -> None:
    from trace_optuna.cli import main

    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    rest = ("--study", "s", "--app", "nowhere:app") if args[0] in ("worker", "workers") else ()
    with pytest.raises(SystemExit) as exited:
        main([*args, "--storage", url, *rest])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert f"argument {option}: must be" in error and repr(args[-1]) in error
    assert list(tmp_path.iterdir()) == []  # nothing created


@pytest.mark.parametrize("command", ["best", "report", "dashboard"])
def test_reading_commands_on_a_missing_file_create_nothing(tmp_path: Path, command: str) -> None:
    extra = {"best": ["--study", "s"], "report": ["--study", "s", "--out", "r.html"]}
    result = subprocess.run(
        [sys.executable, "-m", "trace_optuna", command, "--storage", "sqlite:///typo.db"]
        + extra.get(command, ["--port", "0"]),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,  # the dashboard served a new empty database forever
        check=False,
    )
    assert result.returncode == 2
    assert "No file 'typo.db'" in result.stderr and "creates nothing" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def _plain_study(url: str) -> None:
    import optuna

    optuna.create_study(study_name="plain", storage=url).optimize(
        lambda trial: trial.suggest_float("x", 0, 1), n_trials=3
    )


def test_best_and_report_say_a_plain_optuna_study_is_not_theirs(tmp_path: Path) -> None:
    _plain_study(f"sqlite:///{tmp_path / 'plain.db'}")
    for args in (["best"], ["report", "--out", "r.html"]):
        result = trace_optuna(
            *args, "--storage", "sqlite:///plain.db", "--study", "plain", cwd=tmp_path, check=False
        )
        assert result.returncode == 2, result.stderr
        assert "Study 'plain' was not made by trace_optuna" in result.stderr
        assert "(3 COMPLETE)" in result.stderr and "optuna best-trial" in result.stderr
        assert "no completed trial" not in result.stderr
    assert not (tmp_path / "r.html").exists()
    wrong = trace_optuna(
        "best", "--storage", "sqlite:///plain.db", "--study", "plian", cwd=tmp_path, check=False
    )
    assert "No study named 'plian' in sqlite:///plain.db; it holds ['plain']." in wrong.stderr


def test_report_out_must_be_a_file_in_an_existing_directory(tmp_path: Path) -> None:
    trace_optuna("demo", "--trials", "1", "--no-progress", cwd=tmp_path)
    for out, problem in ((tmp_path / "nowhere" / "r.html", "is not one"), (tmp_path, "directory")):
        result = trace_optuna(
            "report",
            "--storage",
            "sqlite:///trace_optuna_demo.db",
            "--study",
            "trace-optuna-demo",
            "--out",
            str(out),
            cwd=tmp_path,
            check=False,
        )
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert f"--out {str(out)!r} must name an HTML file" in result.stderr
        assert problem in result.stderr
    assert not (tmp_path / "nowhere").exists()


def test_best_and_report_read_a_study_on_read_only_media(tmp_path: Path) -> None:
    from test_storage import read_only_directory

    media = tmp_path / "media"
    media.mkdir()
    url = f"sqlite:///{media / 'demo.db'}"
    trace_optuna("demo", "--trials", "3", "--no-progress", "--storage", url, cwd=tmp_path)
    expected = trace_optuna(
        "best", "--storage", url, "--study", "trace-optuna-demo", cwd=tmp_path
    ).stdout
    assert sorted(path.name for path in media.iterdir()) == ["demo.db"]
    with read_only_directory(media, tmp_path / "ro") as place:
        read_only = f"sqlite:///{place / 'demo.db'}"
        best = trace_optuna(
            "best", "--storage", read_only, "--study", "trace-optuna-demo", cwd=tmp_path
        )
        assert json.loads(best.stdout) == json.loads(expected)
        trace_optuna(
            "report",
            "--storage",
            read_only,
            "--study",
            "trace-optuna-demo",
            "--out",
            str(tmp_path / "report.html"),
            cwd=tmp_path,
        )
        assert "trace-optuna-demo" in (tmp_path / "report.html").read_text(encoding="utf-8")
        demo = trace_optuna(
            "demo", "--trials", "1", "--storage", read_only, cwd=tmp_path, check=False
        )
        assert demo.returncode == 2 and "is read-only for this process" in demo.stderr
        assert sorted(path.name for path in place.iterdir()) == ["demo.db"]


@pytest.mark.slow
def test_the_demo_names_a_command_the_users_shell_can_run(tmp_path: Path) -> None:
    """From a venv that is not activated, `trace-optuna` is not on PATH: the demo prints the
    script's own path instead of a name the shell would not find."""
    script = Path(sys.executable).parent / "trace-optuna"
    environment = {**os.environ, "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [str(script), "demo", "--trials", "1", "--no-progress"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
        check=True,
    )
    assert f"  {script} dashboard --storage sqlite:///trace_optuna_demo.db" in result.stdout
