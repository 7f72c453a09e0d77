"""Every strategy checks its settings when it is built, naming the class, the argument and
the rule, so a bad setting fails once instead of failing every trial."""

from __future__ import annotations

import math
from typing import Any

import optuna
import pytest
from support_agents import CountingEvaluate
from support_agents import make_greeter

import trace_optuna as to
from trace_optuna.llm import LLM
from trace_optuna.storage import resolve_storage
from trace_optuna.strategies import EvolutionaryStrategy
from trace_optuna.strategies import GeneticStrategy
from trace_optuna.strategies import OptoPrimeStrategy
from trace_optuna.strategies import Selector
from trace_optuna.strategies import StopStrategy

SIMULATED = "simulated/feedback-follower"

BAD_SETTINGS = [
    # (strategy class, keyword arguments, the argument the error must name, the rule)
    (GeneticStrategy, {"mutation_rate": 5}, "mutation_rate", "in [0, 1]"),
    (GeneticStrategy, {"mutation_rate": -0.1}, "mutation_rate", "in [0, 1]"),
    (GeneticStrategy, {"mutation_rate": "high"}, "mutation_rate", "a number"),
    (GeneticStrategy, {"mutation_rate": math.nan}, "mutation_rate", "a number"),
    (GeneticStrategy, {"mutation_rate": True}, "mutation_rate", "a number"),
    (GeneticStrategy, {"tournament_size": 0}, "tournament_size", "an int >= 1"),
    (GeneticStrategy, {"tournament_size": 2.5}, "tournament_size", "an int >= 1"),
    (GeneticStrategy, {"tournament_size": "3"}, "tournament_size", "an int >= 1"),
    (EvolutionaryStrategy, {"mu": 0}, "mu", "an int >= 1"),
    (EvolutionaryStrategy, {"mu": 1.5}, "mu", "an int >= 1"),
    (EvolutionaryStrategy, {"offspring": 0}, "offspring", "an int >= 1"),
    (EvolutionaryStrategy, {"offspring": "3"}, "offspring", "an int >= 1"),
    (EvolutionaryStrategy, {"temperature_range": "ab"}, "temperature_range", "(low, high)"),
    (EvolutionaryStrategy, {"temperature_range": (0.5,)}, "temperature_range", "(low, high)"),
    (EvolutionaryStrategy, {"temperature_range": (0, 3)}, "temperature_range", "high <= 2"),
    (OptoPrimeStrategy, {"temperature": 3}, "temperature", "in [0, 2]"),
    (OptoPrimeStrategy, {"temperature": "hot"}, "temperature", "a number"),
    (OptoPrimeStrategy, {"memory_size": -1}, "memory_size", "an int >= 0"),
    (OptoPrimeStrategy, {"memory_size": True}, "memory_size", "an int >= 0"),
    (OptoPrimeStrategy, {"objective": ""}, "objective", "a non-empty str"),
    (OptoPrimeStrategy, {"objective": 5}, "objective", "a non-empty str"),
    (StopStrategy, {"meta_every": 2.0}, "meta_every", "an int >= 1"),
    (StopStrategy, {"smoke_budget": 0}, "smoke_budget", "an int >= 1"),
    (StopStrategy, {"timeout_s": math.inf}, "timeout_s", "a finite number > 0"),
    (StopStrategy, {"timeout_s": "60"}, "timeout_s", "a finite number > 0"),
    (StopStrategy, {"num_candidates": (0, 2)}, "num_candidates", "1 <= low <= high"),
    (StopStrategy, {"seed_source": 5}, "seed_source", "Python source (a str)"),
]


@pytest.mark.parametrize(
    "strategy_class, kwargs, argument, rule",
    BAD_SETTINGS,
    ids=[f"{c.__name__}-{k}" for c, k, _, _ in BAD_SETTINGS],
)
def test_a_bad_setting_is_refused_naming_the_class_the_argument_and_the_rule(
    strategy_class: type, kwargs: dict[str, Any], argument: str, rule: str
) -> None:
    with pytest.raises(to.ConfigurationError) as caught:
        strategy_class(**kwargs)
    message = str(caught.value)
    assert strategy_class.__name__ in message
    assert argument in message and rule in message
    given = next(iter(kwargs.values()))
    assert repr(given) in message or type(given).__name__ in message  # what was given


@pytest.mark.parametrize(
    "kwargs",
    [{"mutation_rate": "high"}, {"tournament_size": 0}, {"mutation_rate": 5}],
    ids=["string", "zero-size", "rate-5"],
)
def test_a_bad_genetic_setting_fails_before_anything_is_stored(
    storage_url: str, study_name: str, kwargs: dict[str, Any]
) -> None:
    """It used to be accepted and fail every trial (or be replaced by a sampled value)."""
    with pytest.raises(to.ConfigurationError, match=next(iter(kwargs))):
        to.create_study(
            study_name=study_name,
            storage=storage_url,
            agent=make_greeter,
            evaluate=CountingEvaluate(),
            llm=SIMULATED,
            strategies=["optoprime", GeneticStrategy(**kwargs)],
        )
    assert study_name not in optuna.get_all_study_names(resolve_storage(storage_url))


def test_fixed_settings_are_used_as_given_and_not_sampled(
    storage_url: str, study_name: str
) -> None:
    """A fixed setting is no Optuna parameter; None is sampled under '<strategy>.<setting>'."""
    fixed = GeneticStrategy(tournament_size=1, mutation_rate=0)
    assert fixed.suggest_settings(optuna.trial.FixedTrial({})) == {
        "tournament_size": 1,
        "mutation_rate": 0.0,
    }
    study = to.create_study(
        study_name=study_name,
        storage=storage_url,
        agent=make_greeter,
        evaluate=CountingEvaluate(),
        llm=SIMULATED,
        strategies=[fixed, EvolutionaryStrategy(mu=1)],
        seed=0,
    )
    study.optimize(n_trials=1)  # the baseline
    for name in ("evolutionary", "genetic", "evolutionary", "genetic"):
        study.optuna.enqueue_trial({"strategy": name})
    study.optimize(n_trials=4)
    stored = optuna.load_study(study_name=study_name, storage=resolve_storage(storage_url))
    assert [
        trial.params for trial in stored.trials[1:] if trial.params["strategy"] == "genetic"
    ] == [{"strategy": "genetic"}] * 2
    evolutionary = [
        trial.params for trial in stored.trials[1:] if "evolutionary.offspring" in trial.params
    ]
    assert len(evolutionary) == 2
    assert all(set(params) == {"strategy", "evolutionary.offspring"} for params in evolutionary)


@pytest.mark.parametrize(
    "strategy_class, kwargs",
    [
        (GeneticStrategy, {"tournament_size": 1, "mutation_rate": 1}),
        (EvolutionaryStrategy, {"mu": 1, "offspring": 1, "temperature_range": [0, 2]}),
        (OptoPrimeStrategy, {"temperature": 2, "memory_size": 0, "objective": "Be brief."}),
        (StopStrategy, {"meta_every": 1, "num_candidates": [1, 1], "timeout_s": 1}),
    ],
    ids=["genetic", "evolutionary", "optoprime", "stop"],
)
def test_the_edges_of_each_rule_are_accepted(
    strategy_class: type[to.Strategy], kwargs: dict[str, Any]
) -> None:
    strategy = strategy_class(**kwargs)  # type: ignore[call-arg]
    assert strategy.suggest_settings(optuna.trial.FixedTrial({"stop.num_candidates": 1}))


def test_selector_checks_its_kind_and_needs_an_llm_to_judge() -> None:
    with pytest.raises(to.ConfigurationError, match=r"selector must be one of \['score', 'llm'\]"):
        Selector(["score"], llm=None)  # type: ignore[arg-type]
    with pytest.raises(to.ConfigurationError, match='selector="llm" needs an LLM'):
        Selector("llm", llm=None)  # type: ignore[arg-type]
    assert Selector("llm", LLM(SIMULATED)).kind == "llm"
    with pytest.raises(to.ConfigurationError, match="at least one candidate"):
        Selector("score", llm=None).select([], lambda a, b: a > b)  # type: ignore[arg-type]
