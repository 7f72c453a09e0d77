"""A study-wide budget stops the study (issue 14): before a trial, before a validation chunk,
across worker processes; the study says why and nothing stored is lost."""

from __future__ import annotations

import multiprocessing
from typing import Any

import optuna
from optuna.trial import TrialState
import pytest

import trace_optuna as to
from trace_optuna import budget
from trace_optuna import records
from trace_optuna.storage import resolve_storage

import support_budget  # isort: skip

_spawn = multiprocessing.get_context("spawn")


def _states(study: to.TraceStudy) -> list[TrialState]:
    return [trial.state for trial in study.trials]


def test_an_evaluation_budget_stops_optimize_and_the_study_says_why(sqlite_url: str) -> None:
    study = support_budget.study(sqlite_url, "budget", to.Budget(evaluations=40))
    study.optimize(n_trials=30)

    states = _states(study)
    assert len(states) < 30, "the budget did not stop optimize"
    assert states[-1] == TrialState.PRUNED  # the trial that found it spent
    assert TrialState.FAIL not in states
    record = study.record(len(states) - 1)
    assert "budget is spent" in str(record.error) and "evaluations" in str(record.error)
    said = budget.exhausted_record(study.optuna)
    assert said is not None and "evaluations" in said["reason"]
    spend = budget.spent(study)
    assert 40 <= spend.evaluations <= 40 + support_budget.trial_share()
    # Every stored trial's record is readable.
    for trial in study.trials:
        study.record(trial.number)

    # A later optimize (another worker, a restart) starts no trial.
    again = support_budget.study(sqlite_url, "budget", to.Budget(evaluations=40))
    again.optimize(n_trials=5)
    assert len(again.trials) == len(states)
    # A larger budget lets the study go on.
    more = support_budget.study(sqlite_url, "budget", to.Budget(evaluations=200))
    more.optimize(n_trials=1)
    assert len(more.trials) == len(states) + 1


def test_a_budget_is_checked_before_each_validation_chunk(sqlite_url: str) -> None:
    # The first trial (the baseline) runs the whole validation set: 15 examples, in chunks of
    # 4. A budget of 6 runs out after its second chunk, so its third chunk never runs.
    study = support_budget.study(sqlite_url, "chunks", to.Budget(evaluations=6))
    study.optimize(n_trials=3)

    (trial,) = study.trials
    assert trial.state == TrialState.PRUNED
    spend = budget.spent(study)
    assert spend.evaluations == 8  # two chunks of 4 ran; the third was refused


def test_an_llm_call_budget_stops_a_study_without_a_dataset(sqlite_url: str) -> None:
    def evaluate(agent: support_budget.Replier) -> to.Evaluation:
        return support_budget.run(agent, {"topic": "t1", "need": "refund"})

    study = to.create_study(
        storage=sqlite_url,
        agent=support_budget.Replier,
        evaluate=evaluate,
        llm=support_budget.LLM,
        budget=to.Budget(llm_calls=2),
        seed=0,
        figure_interval=None,
    )
    study.optimize(n_trials=10)

    spend = budget.spent(study)
    assert spend.llm_calls >= 2
    assert len(study.trials) < 10
    assert study.trials[-1].state == TrialState.PRUNED
    assert "llm_calls" in budget.exhausted_record(study.optuna)["reason"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("options", "rule"),
    [
        ({"budget": {"usd": 1.0}}, "must be a trace_optuna.Budget"),
        ({"budget": to.Budget(evaluations=10)}, "only a dataset study makes"),
    ],
)
def test_a_budget_option_that_breaks_a_rule_is_refused(options: dict[str, Any], rule: str) -> None:
    with pytest.raises(to.ConfigurationError, match=rule):
        to.Config(agent=support_budget.Replier, evaluate=lambda agent: None, **options)


@pytest.mark.parametrize("storage_url", ["postgresql", "redis"], indirect=True)
def test_three_workers_stop_together_within_one_trial_each_of_the_budget(
    storage_url: str, study_name: str
) -> None:
    # A budget of LLM calls: every step makes one, whether or not its candidate is new (a
    # repeated candidate's examples are rows, so it would spend no evaluations).
    llm_calls = 12
    support_budget.study(storage_url, study_name, to.Budget(llm_calls=llm_calls))
    workers = [
        _spawn.Process(target=support_budget.work, args=(storage_url, study_name, llm_calls, 40))
        for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(300)
        if worker.is_alive():
            worker.kill()
            worker.join()
            pytest.fail("a worker did not stop within 300 s")
    assert [worker.exitcode for worker in workers] == [0, 0, 0]

    study = optuna.load_study(study_name=study_name, storage=resolve_storage(storage_url))
    trials = study.get_trials(deepcopy=False)
    states = [trial.state for trial in trials]
    assert len(states) < 3 * 40, "the budget did not stop the workers"
    assert TrialState.RUNNING not in states and TrialState.FAIL not in states
    assert TrialState.PRUNED in states
    spend = budget.spent(study)
    # Each worker may be one step into its share when another one spends the last of it.
    most_per_step = max(trial.user_attrs.get(records.LLM, {}).get("calls", 0) for trial in trials)
    assert llm_calls <= spend.llm_calls <= llm_calls + 3 * most_per_step
    assert budget.exhausted_record(study) is not None
