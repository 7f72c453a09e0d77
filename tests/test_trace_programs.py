"""Two more of Trace's own programs, ported into examples/ as a user would, run end to end.

* ``examples/trace_battleship.py``: the Battleship notebook's ``Policy``, two trainable
  functions whose code starts empty (CODE parameters).
* ``examples/trace_bigbench.py``: BigBench-Hard's ``Predict``, a prompt and the code of two
  methods, scored over a list of questions.

Each script runs in its own process on each real storage; a second, fresh process reads the
study back, rebuilds the best agent from storage alone and scores it again with the example's
own evaluation.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import subprocess
import sys

import pytest

import trace_optuna as to

pytestmark = pytest.mark.slow  # two processes per storage, ~20-40 s each on the 2-core machine

EXAMPLES = Path(__file__).parent.parent / "examples"


def _run(*args: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=600, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def run_example(script: str, storage: str, study_name: str, trials: int, *more: str) -> str:
    return _run(
        str(EXAMPLES / script),
        *("--storage", storage, "--study-name", study_name, "--trials", str(trials)),
        *("--feedback", "directive"),
        *more,
    )


def read_back(program: str, storage: str, study_name: str) -> dict:
    """Run ``program`` in a fresh process with the study and the examples' folder."""
    return json.loads(_run("-c", program, study_name, storage, str(EXAMPLES)).splitlines()[-1])


BATTLESHIP_READ_BACK = """
import json, sys
sys.path.insert(0, sys.argv[3])
import trace_optuna as to
from trace_battleship import Policy, make_evaluate

study = to.load_study(study_name=sys.argv[1], storage=sys.argv[2], agent=Policy)
policy = study.load_best()
print(json.dumps({
    "best_value": study.best_value,
    "best_snapshot": study.best_snapshot,
    "reproduced": make_evaluate()(policy).score,
    "first_shot": policy([["."] * 5 for _ in range(5)]),
}))
"""


def test_trace_battleship_writes_the_policys_code(storage_url: str, study_name: str) -> None:
    stdout = run_example("trace_battleship.py", storage_url, study_name, trials=3)
    assert "after 3 trials" in stdout

    study = to.load_study(study_name=study_name, storage=storage_url)
    records = [study.record(t.number) for t in study.trials]
    assert [r.state for r in records] == ["COMPLETE"] * 3
    assert all(sorted(r.snapshot) == ["act", "reason"] for r in records)
    assert all(r.feedback for r in records), [r.feedback for r in records]
    baseline = records[0]
    # The empty policy shoots None: the notebook's feedback is the error of that coordinate.
    assert baseline.strategy == "baseline" and baseline.value == 0.0
    assert baseline.feedback.startswith("'NoneType' object is not subscriptable")
    assert baseline.details == {"shot": "None", "reward": 0, "terminal": False}
    # The first step writes act's code from that feedback; the policy then scores.
    first = records[1]
    assert first.changed == ["act"] and first.parents == [0]
    assert "-        return\n" in first.diff
    assert "+        return next([r, c] for r, row in enumerate(map)" in first.diff
    assert first.value is not None and first.value > 0.3 and first.improvement == first.value
    assert first.details == {"shot": "[0, 0]", "reward": 0, "terminal": False}
    assert study.best_value == first.value

    fresh = read_back(BATTLESHIP_READ_BACK, storage_url, study_name)
    assert fresh["best_snapshot"] == study.best_snapshot
    assert fresh["reproduced"] == fresh["best_value"] == study.best_value
    assert fresh["first_shot"] == [0, 0]


BIGBENCH_READ_BACK = """
import json, sys
sys.path.insert(0, sys.argv[3])
import trace_optuna as to
from trace_bigbench import Predict, TEST, TRAIN, evaluate_dp

study = to.load_study(study_name=sys.argv[1], storage=sys.argv[2], agent=Predict)
dp = study.load_best()
print(json.dumps({
    "best_value": study.best_value,
    "best_snapshot": study.best_snapshot,
    "train": evaluate_dp(dp, TRAIN),
    "test": evaluate_dp(dp, TEST),
}))
"""


def test_trace_bigbench_fixes_the_prompt_then_the_code(storage_url: str, study_name: str) -> None:
    stdout = run_example("trace_bigbench.py", storage_url, study_name, trials=3)
    assert "after 3 trials" in stdout
    assert "test accuracy of the best: 1.00" in stdout

    study = to.load_study(study_name=study_name, storage=storage_url)
    records = [study.record(t.number) for t in study.trials]
    assert [r.state for r in records] == ["COMPLETE"] * 3
    assert [r.value for r in records] == [0.0, 0.0, 1.0]
    assert [r.details["answers_right"] for r in records] == [0, 0, 6]
    assert all(
        sorted(r.snapshot) == ["create_prompt", "extract_answer", "prompt_template"]
        for r in records
    )
    # No "Answer:" in the model's reply: extract_answer raises, and its error is the feedback.
    assert records[0].feedback.startswith("(IndexError) list index out of range.")
    # Step 1 changes the prompt; its answers keep a period, so step 2 changes the code.
    assert records[1].changed == ["prompt_template"] and records[1].parents == [0]
    assert "+Answer: Finish with a final line Answer: <answer>." in records[1].diff
    assert records[1].feedback.startswith("The answer is wrong. We expect the output")
    assert records[2].changed == ["extract_answer"] and records[2].parents == [1]
    assert """+        answer = response.split("Answer:")[1].strip().rstrip('.')""" in (
        records[2].diff
    )
    assert records[2].feedback == "The answer is correct! No need to change anything."
    assert study.best_trial.number == 2

    fresh = read_back(BIGBENCH_READ_BACK, storage_url, study_name)
    assert fresh["best_snapshot"] == study.best_snapshot == records[2].snapshot
    assert fresh["train"] == [1.0, ["False", "True", "False", "False", "True", "True"]]
    assert fresh["test"] == [1.0, ["True", "False", "True"]]
    assert fresh["best_value"] == 1.0


def test_trace_bigbench_in_the_dataset_form(storage_url: str, study_name: str) -> None:
    """The same program with ``--dataset``: a minibatch of 3 training questions per step,
    their outputs and feedback batched into one backward pass, validation on the training
    set, the test set scored once, every (candidate, question) result a row in the storage."""
    from trace_optuna import example_results

    stdout = run_example("trace_bigbench.py", storage_url, study_name, 4, "--dataset")
    assert "test accuracy of the best: 1.00" in stdout

    study = to.load_study(study_name=study_name, storage=storage_url)
    minibatches = [t.user_attrs["trace:minibatch"] for t in study.trials]
    assert all(len(ids) == 3 for ids in minibatches)
    assert study.best_value == 1.0
    best = study.record(study.best_trial.number)
    assert best.snapshot["extract_answer"].count("rstrip('.')") == 1
    assert study.test_result is not None and study.test_result["mean"] == 1.0
    store = example_results.ExampleStore(study.optuna._storage, study.optuna._study_id)
    rows = store.rows()
    assert {row.split for row in rows} == {"train", "val", "test"}
    pairs = [(row.candidate, row.split, row.example_id) for row in rows]
    assert len(pairs) == len(set(pairs))
    assert len([row for row in rows if row.split == "test"]) == 3  # the best candidate, once
