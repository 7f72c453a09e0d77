from __future__ import annotations

import optuna
from optuna.trial import TrialState
import pytest

import trace_optuna as to
from trace_optuna import demo
from trace_optuna.strategies import EvolutionaryStrategy


class CountingDemoEvaluate:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, agent: demo.SupportAgent) -> to.Evaluation:
        self.calls += 1
        return demo.evaluate(agent)


def evolutionary_study(storage_url: str, study_name: str, evaluate=demo.evaluate, **kwargs):
    return to.create_study(
        study_name=study_name,
        storage=storage_url,
        agent=demo.make_agent,
        evaluate=evaluate,
        llm=to.LLM(demo.DEMO_LLM, simulated_seed=1),
        strategies=[EvolutionaryStrategy(**kwargs)],
        sampler=optuna.samplers.RandomSampler(seed=0),
        seed=0,
        error_score=0.0,
    )


@pytest.mark.parametrize("storage_url", ["sqlite"], indirect=True)  # strategy logic
def test_every_offspring_is_evaluated_and_kept(storage_url: str, study_name: str) -> None:
    evaluate = CountingDemoEvaluate()
    study = evolutionary_study(storage_url, study_name, evaluate, mu=1, offspring=4)
    study.optimize(n_trials=3)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    for number in (1, 2):
        record = study.record(number)
        assert record.strategy == "evolutionary"
        offspring = record.evaluated
        assert 1 <= len(offspring) <= 4
        assert len({entry["snapshot_hash"] for entry in offspring}) == len(offspring)
        scores = [entry["score"] for entry in offspring]
        assert record.value == max(scores)  # the best offspring is the trial's candidate
        assert all("max_words" in entry["changes"] for entry in offspring if entry["changes"])
        info = study.optuna.trials[number].user_attrs["trace:evolutionary"]
        assert info["offspring"] == len(offspring) and info["parent"] == record.parents[0]
    # Offspring are evaluated once each; the parent only when its graph was not live.
    evaluated = sum(len(study.record(n).evaluated) for n in (1, 2))
    assert evaluated + 1 <= evaluate.calls <= evaluated + 3


def test_offspring_differ_by_temperature(sqlite_url: str, study_name: str) -> None:
    study = evolutionary_study(sqlite_url, study_name, mu=1, offspring=5)
    study.optimize(n_trials=2)
    record = study.record(1)
    assert record.llm["calls"] == 5
    values = {entry["changes"].get("max_words") for entry in record.evaluated}
    assert len(values) >= 2  # spread temperatures gave different steps


def test_settings_are_optuna_params(sqlite_url: str, study_name: str) -> None:
    study = evolutionary_study(sqlite_url, study_name)
    study.optimize(n_trials=3)
    params = study.trials[1].params
    assert params["strategy"] == "evolutionary"
    assert 1 <= params["evolutionary.mu"] <= 4 and 2 <= params["evolutionary.offspring"] <= 5


def test_temperature_range_is_validated() -> None:
    with pytest.raises(to.ConfigurationError, match="temperature_range"):
        EvolutionaryStrategy(temperature_range=(1.0, 0.5))
    assert EvolutionaryStrategy(temperature_range=(0.0, 1.0)).temperatures(3) == [0.0, 0.5, 1.0]


def test_a_candidate_evaluated_by_its_strategy_is_not_evaluated_again(
    sqlite_url: str, study_name: str
) -> None:
    class EvaluateThenPropose(to.Strategy):
        """Evaluates its candidate itself but does not pass the result along."""

        name = "evaluate-then-propose"

        def propose(self, context: to.StepContext) -> to.Proposal:
            best = context.population.best()
            values = {**context.population.snapshot(best.number), "max_words": 30}
            context.evaluate(values)
            return to.Proposal(values, [best.number], best.value)

    evaluate = CountingDemoEvaluate()
    study = to.create_study(
        study_name=study_name,
        storage=sqlite_url,
        agent=demo.make_agent,
        evaluate=evaluate,
        llm=demo.DEMO_LLM,
        strategies=[EvaluateThenPropose()],
    )
    study.optimize(n_trials=2)
    assert evaluate.calls == 2  # the baseline, then the candidate once
    assert study.record(1).snapshot["max_words"] == 30
