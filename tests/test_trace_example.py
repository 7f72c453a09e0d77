"""Trace's own greeting example (``examples/trace_greeting.py``), run as a user runs it.

The script runs in its own process on each real storage; a second, fresh process reads the
study back, rebuilds the best agent from storage alone and evaluates it again; a third run of
the script continues the study.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import subprocess
import sys

import pytest

import trace_optuna as to

pytestmark = pytest.mark.slow  # three processes per storage, ~20 s each on the 2-core machine

EXAMPLES = Path(__file__).parent.parent / "examples"
SCRIPT = EXAMPLES / "trace_greeting.py"

# Run in a fresh process: what a user who opens the study later gets, from storage alone.
READ_BACK = """
import json, sys
sys.path.insert(0, sys.argv[3])
import trace_optuna as to
from trace_greeting import Agent, make_evaluate

study = to.load_study(study_name=sys.argv[1], storage=sys.argv[2])
with_agent = to.load_study(study_name=sys.argv[1], storage=sys.argv[2], agent=Agent)
agent = with_agent.load_best()
print(json.dumps({
    "best_number": study.best_trial.number,
    "best_value": study.best_value,
    "best_snapshot": study.best_snapshot,
    "reproduced": make_evaluate()(agent).score,
    "reply": agent("Hello, I'm John.").data,
}))
"""


def _run(*args: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=600, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def run_example(storage: str, study_name: str, trials: int, feedback: str) -> str:
    return _run(
        str(SCRIPT),
        *("--storage", storage, "--study-name", study_name, "--trials", str(trials)),
        *("--feedback", feedback),
    )


def test_trace_greeting_end_to_end(storage_url: str, study_name: str) -> None:
    stdout = run_example(storage_url, study_name, trials=4, feedback="directive")
    assert "after 4 trials" in stdout

    study = to.load_study(study_name=study_name, storage=storage_url)
    records = [study.record(t.number) for t in study.trials]
    assert [r.state for r in records] == ["COMPLETE"] * 4
    assert records[0].strategy == "baseline" and records[0].value == 0.0
    assert all(r.feedback for r in records), [r.feedback for r in records]
    # At least one trial changed the code of the trainable method greet, with its diff stored.
    code_changes = [r for r in records if "greet" in r.changed]
    assert code_changes, [r.changed for r in records]
    first = code_changes[0]
    assert '-        greeting = "Hola"' in first.diff
    assert '+        greeting = "Hello"' in first.diff
    assert first.parent_feedback.startswith("Incorrect: the user wrote")
    assert first.value == 1.0 and first.improvement == 1.0
    assert first.details == {"reply": "Hello, John!", "spanish_ok": False}

    # A fresh process reads the same best snapshot and its agent scores the stored best again.
    fresh = json.loads(_run("-c", READ_BACK, study_name, storage_url, str(EXAMPLES)))
    assert fresh["best_number"] == study.best_trial.number == first.number
    assert fresh["best_snapshot"] == study.best_snapshot
    assert fresh["best_snapshot"]["greet"] == first.snapshot["greet"]
    assert fresh["reproduced"] == fresh["best_value"] == 1.0
    assert fresh["reply"] == "Hello, John!"

    # Running the script again continues the study; what was stored stays as it was.
    stdout = run_example(storage_url, study_name, trials=2, feedback="directive")
    assert "after 6 trials" in stdout
    resumed = to.load_study(study_name=study_name, storage=storage_url)
    assert len(resumed.trials) == 6
    assert [resumed.record(n) for n in range(4)] == records
    assert resumed.best_snapshot == study.best_snapshot
