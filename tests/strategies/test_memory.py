"""OptoPrime's memory is rebuilt from the parent's lineage in storage, in any process."""

from __future__ import annotations

import json

import optuna
from support_agents import CountingEvaluate
from support_agents import make_greeter

import trace_optuna as to
from trace_optuna.strategies import OptoPrimeStrategy

PAST = "Below are some variables and their feedbacks you received in the past."


def memory_study(sqlite_url: str, study_name: str, memory_size: int) -> to.TraceStudy:
    return to.create_study(
        study_name=study_name,
        storage=sqlite_url,
        agent=make_greeter,
        evaluate=CountingEvaluate(),
        llm="simulated/feedback-follower",
        strategies=[OptoPrimeStrategy(temperature=0.0, memory_size=memory_size)],
        load_if_exists=True,
    )


def test_memory_comes_from_the_lineage(sqlite_url: str, study_name: str) -> None:
    memory_study(sqlite_url, study_name, 2).optimize(n_trials=2)
    # A new objective (as in a new process) continues the lineage with the same memory.
    study = memory_study(sqlite_url, study_name, 2)
    study.optimize(n_trials=1)
    record = study.record(2)
    assert record.parents == [1]
    prompt = record.llm_calls[0]["user"]
    assert PAST in prompt
    # The ancestor of the parent (trial 0) and its feedback are shown to the LLM (as JSON).
    assert json.dumps(study.record(0).feedback) in prompt
    assert json.dumps(study.record(0).snapshot["greeting"]) in prompt


def test_no_memory_when_size_is_zero(sqlite_url: str, study_name: str) -> None:
    study = memory_study(sqlite_url, study_name, 0)
    study.optimize(n_trials=3)
    assert all(PAST not in study.record(n).llm_calls[0]["user"] for n in (1, 2))


def test_fixed_settings_are_not_sampled(sqlite_url: str, study_name: str) -> None:
    study = memory_study(sqlite_url, study_name, 1)
    study.optimize(n_trials=2)
    assert study.trials[1].params == {"strategy": "optoprime"}
    assert optuna.load_study(study_name=study_name, storage=sqlite_url).trials[1].params == {
        "strategy": "optoprime"
    }
