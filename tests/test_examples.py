"""The examples run as a user runs them: as scripts, in a fresh directory."""

from __future__ import annotations

import ast
from pathlib import Path
import subprocess
import sys

import pytest
from support_concurrency import assert_ran_at_once

pytestmark = pytest.mark.slow  # every test runs an example script in a new process

EXAMPLES = Path(__file__).parent.parent / "examples"


def run_example(name: str, cwd: Path, *args: str) -> str:
    """Run ``examples/<name>`` as a user does, in ``cwd``; return what it printed."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return result.stdout


def test_quickstart_runs_and_resumes(tmp_path: Path) -> None:
    first = run_example("quickstart.py", tmp_path)
    assert "best score 1.00 after 5 trials" in first
    assert "--- instructions (parent)" in first
    second = run_example("quickstart.py", tmp_path)  # continues the same study: 5 more trials
    assert "after 10 trials" in second
    assert (tmp_path / "quickstart.db").exists()


def test_hybrid_knobs_tunes_the_prompt_and_the_knobs(tmp_path: Path) -> None:
    stdout = run_example("hybrid_knobs.py", tmp_path)
    assert "prompt score of the best trial: 1.0" in stdout
    # TPE lands near the simulated optimum of the knobs (temperature 0.3, top-k 4).
    best = ast.literal_eval(stdout.split("best score ", 1)[1].split(": ", 1)[1].split("\n")[0])
    assert abs(best["agent.temperature"] - 0.3) < 0.1 and abs(best["retriever.top_k"] - 4) <= 1
    importances = stdout.split("param importances", 1)[1]
    assert "agent.temperature" in importances and "retriever.top_k" in importances


def test_shared_parameters_runs_six_studies_over_one_team(tmp_path: Path) -> None:
    table, history = run_example("shared_parameters.py", tmp_path).split("\nregistry ", 1)
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines()[1:]}
    # Each study ran at its own frequency, and every one of them published to the registry.
    assert {name: int(row[0]) for name, row in rows.items()} == {
        "agent1": 12,
        "agent2": 12,
        "agent3": 12,
        "agent1+agent2": 6,
        "agent2+agent3": 6,
        "workflow": 4,
    }
    assert all(int(row[2]) > 0 for row in rows.values()), table
    changed_by = history.split("changes per study: ", 1)[1].splitlines()[0]
    assert all(f"'{name}'" in changed_by for name in rows), changed_by


def test_shared_parameters_in_parallel_processes_loses_nothing(tmp_path: Path) -> None:
    import optuna

    from trace_optuna.registry import Registry
    from trace_optuna.storage import resolve_storage

    url = f"sqlite:///{tmp_path / 'parallel.db'}"
    stdout = run_example(
        "shared_parameters.py", tmp_path, "--parallel", "--rounds", "6", "--storage", url
    )
    assert "registry 'agent-team'" in stdout
    storage = resolve_storage(url)
    expected = {"agent1": 6, "agent2": 6, "agent3": 6, "agent1+agent2": 3, "agent2+agent3": 3}
    ran = {}
    for name, trials in {**expected, "workflow": 2}.items():
        study = optuna.load_study(study_name=name, storage=storage)
        assert [t.state.name for t in study.trials] == ["COMPLETE"] * trials, name
        ran[name] = study.trials
    # One process per study: studies ran at the same time (the conflicts the log resolves).
    assert_ran_at_once(ran, "the studies of --parallel", every_pair=False)
    # The log is a valid compare-and-set sequence: each version was published on a base that
    # no later version before it changed any of the publisher's paths.
    versions = Registry(storage, "agent-team").versions()
    for version in versions[1:]:
        assert version.base is not None and version.base < version.number
        between = versions[version.base + 1 : version.number]
        assert all(set(other.values).isdisjoint(version.owned) for other in between)
