"""The examples run as a user runs them: as scripts, in a fresh directory."""

from __future__ import annotations

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
