"""OptoPrime through trace_optuna: trace-opt 0.1.3.8's parsing bugs are fixed, not inherited."""

from __future__ import annotations

import json
import os
from pathlib import Path
import subprocess
import sys

import optuna
from optuna.trial import TrialState
import pytest
from support_knobs import evaluate_knobs
from support_knobs import make_knobs
from support_openai_server import OpenAIServer
from support_openai_server import Reply

import trace_optuna as to
from trace_optuna import records
from trace_optuna.strategies.optoprime import SuggestionError
from trace_optuna.strategies.optoprime import cast_suggestion


@pytest.mark.parametrize(
    "current, suggested, expected",
    [
        ("x", "Use the default tone.", "Use the default tone."),
        ("x", 5, "5"),
        (True, "False", False),
        (False, "true", True),
        ([1], "[3, 4]", [3, 4]),
        ({"a": 1}, '{"b": 2}', {"b": 2}),
        (1, "2", 2),
        (1, "2.6", 3),
        (1.5, "2", 2.0),
        (1.5, 3, 3.0),
    ],
)
def test_cast_suggestion(current: object, suggested: object, expected: object) -> None:
    value = cast_suggestion(current, suggested)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    "current, suggested",
    [(True, "maybe"), (1, "many"), ([1], "[1, 2"), ([1], '{"a": 1}'), (1, True)],
)
def test_cast_suggestion_refuses_what_is_not_that_type(current: object, suggested: object) -> None:
    with pytest.raises(SuggestionError):
        cast_suggestion(current, suggested)


def answer(study: to.TraceStudy, suggestion: dict) -> Reply:
    """An OptoPrime answer suggesting values by parameter path.

    The LLM sees Trace's node names (``count0``, or ``count1`` when another ``count`` node
    was made earlier in the process), so paths are translated the way OptoPrime names them.
    """
    names = {path: node.py_name for path, node in study.objective.parameters.items()}
    by_name = {names.get(path, path): value for path, value in suggestion.items()}
    return Reply.ok(json.dumps({"reasoning": "r", "answer": "", "suggestion": by_name}))


def knobs_study(server: OpenAIServer, sqlite_url: str, study_name: str) -> to.TraceStudy:
    llm = to.LLM("openai/test-model", api_base=server.base_url, api_key="sk-test", num_retries=0)
    return to.create_study(
        study_name=study_name,
        storage=sqlite_url,
        agent=make_knobs,
        evaluate=evaluate_knobs,
        llm=llm,
    )


def test_suggestions_trace_opt_would_drop_or_mangle_are_applied(
    sqlite_url: str, study_name: str
) -> None:
    with OpenAIServer() as server:
        study = knobs_study(server, sqlite_url, study_name)
        suggestion = {"tone": "Use the default tone.", "flag": "False", "items": "[3, 4]"}
        server.script(answer(study, {**suggestion, "count": "7"}))
        study.optimize(n_trials=2)
        # OptoPrime asked once, in JSON mode, with our prompt.
        assert len(server.requests) == 1
        assert server.requests[0]["response_format"] == {"type": "json_object"}
    record = study.record(1)
    assert record.snapshot == {
        "tone": "Use the default tone.",
        "flag": False,
        "items": [3, 4],
        "count": 7,
    }
    assert record.changed == ["count", "flag", "items", "tone"]


@pytest.mark.parametrize(
    "content, reason",
    [
        ("I cannot help with that.", "no usable suggestion for any parameter."),
        ({"flag": "maybe"}, "'maybe' is not a bool"),
        ({"unknown": 1}, "no usable suggestion for any parameter."),
    ],
)
def test_unusable_answer_fails_the_trial_with_the_raw_response(
    sqlite_url: str, study_name: str, content: str | dict, reason: str
) -> None:
    with OpenAIServer() as server:
        study = knobs_study(server, sqlite_url, study_name)
        bad = Reply.ok(content) if isinstance(content, str) else answer(study, content)
        content = bad.body.decode() if not isinstance(content, str) else content
        server.script(bad, answer(study, {"count": 4}))
        study.optimize(n_trials=3)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    failed = study.record(1)
    assert failed.error.startswith("LLMError: The LLM's answer held no usable suggestion")
    assert reason in failed.error
    raw = json.loads(content)["choices"][0]["message"]["content"] if "{" in content else content
    assert failed.llm_calls[0]["response"] == raw  # the raw response, as received
    assert study.record(2).snapshot["count"] == 4  # the study went on


# A seeded study of BatchedAgent (several inputs per call, an object input: the agent itself)
# run as a user runs it: a fresh process, a real SQLite file.
_SEEDED_RUN = """
import sys
sys.path.insert(0, sys.argv[2])
import trace_optuna as to
from support_agents import BatchedAgent, evaluate_batched
study = to.create_study(
    study_name="seeded",
    storage=sys.argv[1],
    agent=BatchedAgent,
    evaluate=evaluate_batched,
    llm=to.LLM("simulated/feedback-follower", simulated_noise=0.3),
    direction="maximize",
    seed=3,
)
study.optimize(n_trials=8)
"""


@pytest.mark.slow  # two fresh Python processes that import trace_optuna and Trace
def test_a_seeded_run_stores_the_same_llm_calls_in_every_process(tmp_path: Path) -> None:
    # Trace orders a prompt's nodes by id() and shows object addresses: both change between
    # processes (and PYTHONHASHSEED changes the allocations); the prompt must not.
    tests = str(Path(__file__).parent.parent)
    urls = [f"sqlite:///{tmp_path / f'run{seed}.db'}" for seed in (1, 2)]
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", _SEEDED_RUN, url, tests],
            env={
                **os.environ,
                "PYTHONHASHSEED": str(seed),
                "PYTHONPATH": os.pathsep.join(sys.path),
            },
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for seed, url in zip((1, 2), urls, strict=True)
    ]
    errors = [run.communicate(timeout=300)[1] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], errors[0][-2000:]

    def stored(url: str) -> list[tuple]:
        study = optuna.load_study(study_name="seeded", storage=url)
        return [
            (trial.state, trial.values, records.llm_calls(trial.user_attrs))
            for trial in study.trials
        ]

    first, second = stored(urls[0]), stored(urls[1])
    assert len(first) == 8 and sum(len(calls) for _, _, calls in first) >= 5
    assert "#Inputs" in first[1][2][0]["user"]
    assert len(second) == len(first)
    for number, (one, other) in enumerate(zip(first, second, strict=True)):
        assert one == other, f"trial {number} differs between the two processes"
