from __future__ import annotations

import json

import pytest

import trace_optuna as to
from trace_optuna import demo
from trace_optuna.strategies import GeneticStrategy
from trace_optuna.strategies.genetic import parse_child


def genetic_study(storage_url: str, study_name: str, mutation_rate: float) -> to.TraceStudy:
    return to.create_study(
        study_name=study_name,
        storage=storage_url,
        agent=demo.make_agent,
        evaluate=demo.evaluate,
        llm=to.LLM(demo.DEMO_LLM, simulated_seed=3),
        strategies=[GeneticStrategy(tournament_size=2, mutation_rate=mutation_rate)],
        seed=0,
        error_score=0.0,
    )


def test_first_step_falls_back_to_greedy_until_two_candidates(
    sqlite_url: str, study_name: str
) -> None:
    study = genetic_study(sqlite_url, study_name, 0.0)
    study.optimize(n_trials=2)
    assert study.optuna.trials[1].user_attrs["trace:genetic"] == {
        "fallback": "fewer than two candidates"
    }
    assert study.record(1).parents == [0]


@pytest.mark.parametrize("storage_url", ["sqlite"], indirect=True)  # strategy logic
def test_crossover_records_both_parents_and_merges_them(storage_url: str, study_name: str) -> None:
    study = genetic_study(storage_url, study_name, 0.0)
    study.optimize(n_trials=6)
    crossed = [
        study.record(n)
        for n in range(2, 6)
        if "parents" in study.optuna.trials[n].user_attrs.get("trace:genetic", {})
    ]
    assert crossed
    for record in crossed:
        better, other = record.parents
        assert record.parent_score == study.optuna.trials[better].value
        assert study.optuna.trials[better].value >= study.optuna.trials[other].value
        assert record.llm_calls[0]["user"].startswith("#Crossover")
        assert record.evaluated == []  # no mutation: the child is the candidate


def test_mutation_evaluates_the_child_then_steps_from_its_feedback(
    sqlite_url: str, study_name: str
) -> None:
    study = genetic_study(sqlite_url, study_name, 1.0)
    study.optimize(n_trials=4)
    record = study.record(3)
    info = study.optuna.trials[3].user_attrs["trace:genetic"]
    assert info["mutated"] is True
    assert len(record.evaluated) == 1  # the crossover child, before mutation
    assert record.llm["calls"] == 2  # crossover, then OptoPrime


def test_parse_child_keeps_the_better_parents_values_where_the_answer_is_unusable() -> None:
    template = {"text": "a", "n": 1, "flag": True}
    answer = json.dumps({"child": {"text": "b", "n": "not a number", "extra": 5}})
    assert parse_child(answer, template) == {"text": "b", "n": 1, "flag": True}
    assert parse_child('Sure! {"child": {"n": 2}} done', template)["n"] == 2
    with pytest.raises(to.LLMError, match="no child"):
        parse_child("I refuse.", template)
