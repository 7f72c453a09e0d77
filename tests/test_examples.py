"""The examples run as a user runs them: as scripts, in a fresh directory."""

from __future__ import annotations

import ast
from pathlib import Path
import subprocess
import sys

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_quickstart_runs_and_resumes(tmp_path: Path) -> None:
    def run() -> str:
        result = subprocess.run(
            [sys.executable, str(EXAMPLES / "quickstart.py")],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        return result.stdout

    first = run()
    assert "best score 1.00 after 5 trials" in first
    assert "--- instructions (parent)" in first
    second = run()  # continues the same study: 5 more trials
    assert "after 10 trials" in second
    assert (tmp_path / "quickstart.db").exists()


def test_hybrid_knobs_tunes_the_prompt_and_the_knobs(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "hybrid_knobs.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "prompt score of the best trial: 1.0" in result.stdout
    # TPE lands near the simulated optimum of the knobs (temperature 0.3, top-k 4).
    best = ast.literal_eval(
        result.stdout.split("best score ", 1)[1].split(": ", 1)[1].split("\n")[0]
    )
    assert abs(best["agent.temperature"] - 0.3) < 0.1 and abs(best["retriever.top_k"] - 4) <= 1
    importances = result.stdout.split("param importances", 1)[1]
    assert "agent.temperature" in importances and "retriever.top_k" in importances


def test_shared_parameters_runs_six_studies_over_one_team(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "shared_parameters.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    table, history = result.stdout.split("\nregistry ", 1)
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
    result = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "shared_parameters.py"),
            "--parallel",
            "--rounds",
            "6",
            "--storage",
            url,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    assert "registry 'agent-team'" in result.stdout
    storage = resolve_storage(url)
    expected = {"agent1": 6, "agent2": 6, "agent3": 6, "agent1+agent2": 3, "agent2+agent3": 3}
    for name, trials in {**expected, "workflow": 2}.items():
        study = optuna.load_study(study_name=name, storage=storage)
        assert [t.state.name for t in study.trials] == ["COMPLETE"] * trials, name
    # The log is a valid compare-and-set sequence: each version was published on a base that
    # no later version before it changed any of the publisher's paths.
    versions = Registry(storage, "agent-team").versions()
    for version in versions[1:]:
        assert version.base is not None and version.base < version.number
        between = versions[version.base + 1 : version.number]
        assert all(set(other.values).isdisjoint(version.owned) for other in between)
