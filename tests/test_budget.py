"""Budgets: limits validated on construction, the spend read study-wide from the database
(every worker's rows and trials), the reason a budget is spent."""

from __future__ import annotations

import math
from typing import Any

import optuna
import pytest

import trace_optuna as to
from trace_optuna import records
from trace_optuna.budget import Budget
from trace_optuna.budget import Spend
from trace_optuna.budget import spent
from trace_optuna.example_results import ExampleResult
from trace_optuna.example_results import ExampleStore
from trace_optuna.storage import resolve_storage


@pytest.mark.parametrize(
    ("limits", "rule"),
    [
        ({"usd": 0}, "usd must be a positive finite number"),
        ({"usd": -1.0}, "usd must be a positive finite number"),
        ({"usd": math.nan}, "usd must be a positive finite number"),
        ({"usd": math.inf}, "usd must be a positive finite number"),
        ({"usd": "5"}, "usd must be a positive finite number"),
        ({"usd": True}, "usd must be a positive finite number"),
        ({"evaluations": 0}, "evaluations must be a positive int"),
        ({"evaluations": 10.5}, "evaluations must be a positive int"),
        ({"llm_calls": -3}, "llm_calls must be a positive int"),
        ({"llm_calls": True}, "llm_calls must be a positive int"),
        ({}, "at least one limit"),
        ({"usd": None, "evaluations": None}, "at least one limit"),
    ],
)
def test_a_budget_refuses_limits_that_break_a_rule(limits: dict[str, Any], rule: str) -> None:
    with pytest.raises(to.ConfigurationError, match=rule):
        Budget(**limits)


def test_exhausted_names_every_limit_reached_with_the_numbers() -> None:
    budget = Budget(usd=2.0, evaluations=100, llm_calls=10)
    assert budget.exhausted(Spend(usd=1.99, evaluations=99, llm_calls=9)) is None
    assert budget.exhausted(Spend(usd=0.5, evaluations=100, llm_calls=3)) == (
        "evaluations budget spent: 100 example evaluations of at most 100"
    )
    reason = budget.exhausted(Spend(usd=2.5, evaluations=3, llm_calls=12, unpriced_trials=1))
    assert reason is not None
    assert reason.startswith("usd budget spent: $2.5000 of LLM calls (and 1 trial(s)")
    assert reason.endswith("llm_calls budget spent: 12 LLM calls of at most 10")
    assert "evaluations" not in reason
    assert Budget(llm_calls=5).exhausted(Spend(usd=1e9, evaluations=10**9)) is None
    assert budget.remaining_evaluations(Spend(evaluations=30)) == 70
    assert budget.remaining_evaluations(Spend(evaluations=300)) == 0
    assert Budget(usd=1.0).remaining_evaluations(Spend(evaluations=30)) is None


def test_a_budget_round_trips_through_json() -> None:
    budget = Budget(usd=5, evaluations=5000)
    assert budget.to_dict() == {"usd": 5.0, "evaluations": 5000, "llm_calls": None}
    assert Budget.from_dict(budget.to_dict()) == budget
    assert repr(budget) == "Budget(usd=5.0, evaluations=5000)"
    with pytest.raises(to.ConfigurationError, match="unknown \\['dollars'\\]"):
        Budget.from_dict({"dollars": 5})


def test_budget_exhausted_is_public_and_says_why() -> None:
    error = to.BudgetExhausted("llm_calls budget spent: 12 LLM calls of at most 10")
    assert isinstance(error, to.TraceOptunaError)
    assert error.reason == "llm_calls budget spent: 12 LLM calls of at most 10"
    assert "budget is spent (llm_calls budget spent" in str(error)


def _trial(study: optuna.Study, state: str, **llm: dict[str, Any]) -> None:
    trial = study.ask()
    for key, summary in llm.items():
        trial.set_user_attr(getattr(records, key.upper()), summary)
    if state == "complete":
        study.tell(trial, 0.5)
    elif state == "fail":
        study.tell(trial, state=optuna.trial.TrialState.FAIL)


def test_spent_sums_every_workers_rows_and_llm_records(storage_url: str, study_name: str) -> None:
    def worker() -> optuna.Study:
        storage = resolve_storage(storage_url, heartbeat_interval=None)
        return optuna.create_study(study_name=study_name, storage=storage, load_if_exists=True)

    first, second = worker(), worker()
    assert spent(first) == Spend()
    _trial(first, "complete", llm={"calls": 3, "cost_usd": 0.5}, agent_llm={"calls": 2})
    _trial(second, "fail", llm={"calls": 1, "cost_usd": None})  # no known price
    _trial(second, "complete", agent_llm={"calls": 4, "cost_usd": 0.25})
    _trial(first, "running", llm={"calls": 100, "cost_usd": 100.0})  # counts once written
    _trial(first, "complete")  # no LLM record (a reused candidate)
    rows = [
        ExampleResult("c" * 64, split, str(number), 1.0, "", "", 0.0, "w", 0)
        for split, count in (("train", 4), ("val", 3))
        for number in range(count)
    ]
    ExampleStore(second._storage, second._study_id).put(rows)
    assert spent(first) == Spend(usd=100.75, evaluations=7, llm_calls=110, unpriced_trials=1)
    assert Budget(evaluations=7).exhausted(spent(first)) is not None
    assert Budget(evaluations=8).exhausted(spent(first)) is None
