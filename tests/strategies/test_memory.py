"""OptoPrime's memory is rebuilt from the parent's lineage in storage, in any process."""

from __future__ import annotations

import json

import optuna
from support_agents import CountingEvaluate
from support_agents import Dose
from support_agents import evaluate_dose
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


def dose_study(sqlite_url: str, study_name: str, memory_size: int) -> to.TraceStudy:
    return to.create_study(
        study_name=study_name,
        storage=sqlite_url,
        agent=Dose,
        evaluate=evaluate_dose,
        llm="simulated/feedback-follower",
        strategies=[OptoPrimeStrategy(temperature=0.0, memory_size=memory_size)],
    )


def test_a_rejected_proposal_is_remembered_by_the_next_step(sqlite_url: str) -> None:
    # From 10 the step overshoots to 15 (worse than 10, so 10 stays the parent). The next step
    # from 10 is shown that 15 was "too large" and lands between them.
    study = dose_study(sqlite_url, "remembers", 2)
    study.optimize(n_trials=4)
    doses = [study.record(n).snapshot["dose"] for n in range(4)]
    assert doses[:2] == [10.0, 15.0]
    assert study.record(2).parents == [0]
    assert 10.0 < doses[2] < 15.0
    prompt = study.record(2).llm_calls[0]["user"]
    assert PAST in prompt and json.dumps(study.record(1).feedback) in prompt
    assert study.best_trial.value > -1.0  # closer than the start


def test_without_memory_the_same_overshoot_is_proposed_again(sqlite_url: str) -> None:
    study = dose_study(sqlite_url, "forgets", 0)
    study.optimize(n_trials=4)
    assert [study.record(n).snapshot["dose"] for n in range(1, 4)] == [15.0] * 3
    assert study.record(2).duplicate_of == 1
    assert study.best_trial.number == 0
