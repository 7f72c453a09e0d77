"""The strategy contract: names resolve through one registry, and a strategy with nothing to
start from says so with its own error class."""

from __future__ import annotations

import random
import re
from typing import Any

import optuna
import pytest
from support_agents import CountingEvaluate
from support_agents import make_greeter

import trace_optuna as to
from trace_optuna.exceptions import NoCompletedTrialError
from trace_optuna.llm import LLM
from trace_optuna.population import Population
from trace_optuna.storage import resolve_storage
from trace_optuna.strategies import EvolutionaryStrategy
from trace_optuna.strategies import GeneticStrategy
from trace_optuna.strategies import OptoPrimeStrategy
from trace_optuna.strategies import StepContext
from trace_optuna.strategies import StopStrategy
from trace_optuna.strategies import register
from trace_optuna.strategies import resolve

SIMULATED = "simulated/feedback-follower"
NAMES = "['evolutionary', 'genetic', 'opro', 'optoprime', 'optoprime_multi', 'stop', 'textgrad']"


def test_one_name_one_instance_or_a_list_resolve() -> None:
    assert [s.name for s in resolve("optoprime")] == ["optoprime"]
    genetic = GeneticStrategy(tournament_size=2)
    assert resolve(genetic) == [genetic]
    assert [s.name for s in resolve(("genetic", OptoPrimeStrategy()))] == ["genetic", "optoprime"]


@pytest.mark.parametrize(
    "strategies, message",
    [
        ("optoprim", r"Unknown strategy 'optoprim'; valid names .* Did you mean 'optoprime'\?"),
        (["o", "p"], r"Unknown strategy 'o'; valid names are " + re.escape(NAMES)),
        ([], r"strategies must name at least one strategy"),
        (5, r"strategies must be a strategy name, a trace_optuna.Strategy instance, or a list"),
        (None, r"got None \(NoneType\)"),
        ({"optoprime"}, r"got \{'optoprime'\} \(set\)"),
        (GeneticStrategy, r"pass GeneticStrategy\(\) instead of GeneticStrategy"),
        ([GeneticStrategy], r"pass GeneticStrategy\(\) instead of GeneticStrategy"),
        ([1.5], r"strategy names or trace_optuna.Strategy instances, got 1.5 \(float\)"),
        (["genetic", "genetic"], r"strategies names \['genetic'\] more than once"),
        (
            ["optoprime", OptoPrimeStrategy(temperature=0.0)],
            r"names \['optoprime'\] more than once",
        ),
    ],
    ids=[
        "near-miss",
        "characters",
        "empty",
        "int",
        "none",
        "set",
        "class",
        "class-in-list",
        "float",
        "repeated-name",
        "repeated-instance",
    ],
)
def test_bad_strategies_are_refused_with_the_valid_names(strategies: Any, message: str) -> None:
    with pytest.raises(to.ConfigurationError, match=message):
        resolve(strategies)


def test_a_study_takes_one_strategy_name(sqlite_url: str, study_name: str) -> None:
    study = to.create_study(
        study_name=study_name,
        storage=sqlite_url,
        agent=make_greeter,
        evaluate=CountingEvaluate(),
        llm=SIMULATED,
        strategies="optoprime",
    )
    study.optimize(n_trials=2)
    assert study.record(1).strategy == "optoprime"


def test_register_refuses_what_is_not_a_strategy_and_a_taken_name() -> None:
    with pytest.raises(to.ConfigurationError, match="takes a trace_optuna.Strategy subclass"):
        register(int)  # type: ignore[arg-type]

    class Nameless(to.Strategy):
        pass

    with pytest.raises(to.ConfigurationError, match=r"Nameless.name must be a non-empty str"):
        register(Nameless)

    class MyOptoPrime(OptoPrimeStrategy):
        pass  # inherits the name "optoprime"

    with pytest.raises(to.ConfigurationError, match="'optoprime' is taken by OptoPrimeStrategy"):
        register(MyOptoPrime)
    assert type(resolve("optoprime")[0]) is OptoPrimeStrategy  # the built-in is still there


@pytest.mark.parametrize(
    "strategy",
    [OptoPrimeStrategy, EvolutionaryStrategy, StopStrategy],
    ids=["optoprime", "evolutionary", "stop"],
)
def test_no_completed_trial_to_start_from_is_its_own_error_not_an_llm_error(
    storage_url: str, study_name: str, strategy: type[to.Strategy]
) -> None:
    """A study whose trials all failed: the population is empty, and the LLM is not to blame."""
    storage = resolve_storage(storage_url)
    study = optuna.create_study(study_name=study_name, storage=storage, direction="maximize")
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    population = Population(study)
    population.refresh()
    trial = study.ask()
    context = StepContext(
        trial=trial,
        population=population,
        agent=make_greeter(),
        parameters={},
        llm=LLM(SIMULATED),
        settings={"mu": 2, "offspring": 2, "num_candidates": 2},
        evaluate_parent=_never,
        evaluate=_never,
        better=population.better,
        select=_never,
        rng=random.Random(0),
        attrs={},
    )
    with pytest.raises(NoCompletedTrialError, match="needs a completed trial") as caught:
        strategy().propose(context)
    assert not isinstance(caught.value, to.LLMError)
    assert isinstance(caught.value, (to.TraceOptunaError, ValueError))
    assert study.trials[1].user_attrs == {}  # the strategy wrote nothing


def _never(*args: Any) -> Any:
    raise AssertionError("a strategy with nothing to start from must not evaluate")
