"""The optimizer settings a Trace user gives ``OptoPrime`` (objective, max_tokens, ...), given
once as ``Config(optimizer=...)``, reach every strategy's prompts, as stored in the trials and
as sent to a real OpenAI-protocol server."""

from __future__ import annotations

import json
from typing import Any

import optuna
from optuna.trial import TrialState
import pytest
from support_agents import CountingEvaluate
from support_agents import Dose
from support_agents import evaluate_dose
from support_agents import make_greeter
from support_openai_server import OpenAIServer
from support_openai_server import Reply

import trace_optuna as to
from trace_optuna import demo
from trace_optuna.strategies import EvolutionaryStrategy
from trace_optuna.strategies import GeneticStrategy
from trace_optuna.strategies import OptoPrimeStrategy
from trace_optuna.strategies import StopStrategy
from trace_optuna.strategies.genetic import CROSSOVER_MARKER
from trace_optuna.strategies.genetic import parse_child
from trace_optuna.testing import simulated

OBJECTIVE = "Answer like a pirate who never forgets the tracking link."
EXAMPLE_LINE = "Here is an example of problem instance and response"


@pytest.fixture(autouse=True)
def _fresh_simulation() -> None:
    simulated.reset_simulated_model()


def _strategy(name: str) -> to.Strategy:
    # Each strategy's every prompt in a few trials: genetic always mutates (crossover, then an
    # OptoPrime prompt), evolutionary makes two offspring, STOP makes one solution prompt.
    return {
        "optoprime": OptoPrimeStrategy(temperature=0.0, memory_size=1),
        "genetic": GeneticStrategy(tournament_size=2, mutation_rate=1.0),
        "evolutionary": EvolutionaryStrategy(mu=2, offspring=2),
        "stop": StopStrategy(meta_every=100, num_candidates=(1, 1), timeout_s=30.0),
    }[name]


def _prompts(study: to.TraceStudy) -> list[str]:
    """Every prompt the study's trials sent, as stored (system and user text joined)."""
    return [
        call["system"] + "\n" + call["user"]
        for trial in study.optuna.trials
        for call in study.record(trial.number).llm_calls
    ]


@pytest.mark.parametrize("strategy", ["optoprime", "genetic", "evolutionary", "stop"])
def test_an_objective_given_once_is_in_every_prompt_of_every_strategy(
    storage_url: str, study_name: str, strategy: str
) -> None:
    study = to.create_study(
        study_name=study_name,
        storage=storage_url,
        agent=demo.make_agent,
        evaluate=demo.evaluate,
        llm=to.LLM(demo.DEMO_LLM, simulated_seed=3),
        strategies=[_strategy(strategy)],
        optimizer={"objective": OBJECTIVE},
        seed=0,
        error_score=0.0,
    )
    study.optimize(n_trials=4)
    prompts = _prompts(study)
    assert len(prompts) >= 3  # three steps after the baseline, each at least one prompt
    assert all(OBJECTIVE in prompt for prompt in prompts), [
        prompt[:300] for prompt in prompts if OBJECTIVE not in prompt
    ]
    if strategy == "genetic":  # the crossover prompt and the mutation's OptoPrime prompt
        assert any(CROSSOVER_MARKER in prompt for prompt in prompts)
        assert any("#Instruction" in prompt for prompt in prompts)
    if strategy != "stop":  # OptoPrime's instruction is the objective, not its default
        instructions = [prompt for prompt in prompts if "#Instruction" in prompt]
        assert instructions and all(f"#Instruction\n{OBJECTIVE}" in p for p in instructions)
    assert study.optuna.trials[-1].state == TrialState.COMPLETE


def test_include_example_puts_optoprimes_example_in_its_prompts(
    sqlite_url: str, study_name: str
) -> None:
    study = to.create_study(
        study_name=study_name,
        storage=sqlite_url,
        agent=demo.make_agent,
        evaluate=demo.evaluate,
        llm=demo.DEMO_LLM,
        strategies=[_strategy("optoprime"), _strategy("evolutionary")],
        optimizer=to.OptimizerSettings(include_example=True),
        seed=0,
    )
    study.optimize(n_trials=3)
    prompts = _prompts(study)
    assert prompts and all(EXAMPLE_LINE in prompt for prompt in prompts)
    assert study.best_trial.number > 0  # the simulated model still reads the real problem
    # No objective given: OptoPrime's default instruction, and no objective section.
    assert all("#Instruction\nYou need to change the <value>" in p for p in prompts)
    assert not any("#Objective" in prompt for prompt in prompts)


# -- what reaches the LLM endpoint -------------------------------------------------------------


def _answer_for_every_prompt(study: to.TraceStudy, value: Any) -> Reply:
    """One answer every strategy's prompt can use: OptoPrime's ``suggestion`` (by Trace
    name), the crossover's ``child`` and STOP's ``solution`` (by path)."""
    paths = {path: node.py_name for path, node in study.objective.parameters.items()}
    return Reply.ok(
        json.dumps(
            {
                "reasoning": "a test answer",
                "answer": "",
                "suggestion": {name: value for name in paths.values()},
                "child": {path: value for path in paths},
                "solution": {path: value for path in paths},
            }
        )
    )


def _served_llm(server: OpenAIServer, **settings: Any) -> to.LLM:
    return to.LLM(
        "openai/test-model", api_base=server.base_url, api_key="sk-test", num_retries=0, **settings
    )


def test_max_tokens_given_once_reaches_every_strategys_requests(
    storage_url: str, study_name: str
) -> None:
    names = ["optoprime", "genetic", "evolutionary", "stop"]
    with OpenAIServer() as server:
        for name in names:
            study = to.create_study(
                study_name=f"{study_name}-{name}",
                storage=storage_url,
                agent=Dose,
                evaluate=evaluate_dose,
                # The settings' max_tokens is each call's, over the LLM's own.
                llm=_served_llm(server, max_tokens=999),
                strategies=[_strategy(name)],
                optimizer={"max_tokens": 321},
                seed=0,
            )
            server.default = _answer_for_every_prompt(study, 10.5)
            before = len(server.requests)
            study.optimize(n_trials=3)
            sent = server.requests[before:]
            assert len(sent) >= 2, name
            assert [request["max_tokens"] for request in sent] == [321] * len(sent), name
            assert [t.state for t in study.optuna.trials] == [TrialState.COMPLETE] * 3, name
            if name == "genetic":
                crossover = [r for r in sent if CROSSOVER_MARKER in r["messages"][1]["content"]]
                assert crossover, "no crossover request"


def test_without_max_tokens_optoprime_sends_the_llms_own(sqlite_url: str, study_name: str) -> None:
    # Trace's OptoPrime sends max_tokens=4096 with every call, overriding the LLM's setting.
    with OpenAIServer() as server:
        study = to.create_study(
            study_name=study_name,
            storage=sqlite_url,
            agent=Dose,
            evaluate=evaluate_dose,
            llm=_served_llm(server, max_tokens=64),
            strategies=["optoprime"],
        )
        server.default = _answer_for_every_prompt(study, 10.5)
        study.optimize(n_trials=2)
    assert [request["max_tokens"] for request in server.requests] == [64]


@pytest.mark.parametrize("strict", [False, True])
def test_ignore_extraction_error_false_fails_a_step_with_an_unusable_suggestion(
    sqlite_url: str, study_name: str, strict: bool
) -> None:
    with OpenAIServer() as server:
        study = to.create_study(
            study_name=study_name,
            storage=sqlite_url,
            agent=make_greeter,
            evaluate=CountingEvaluate(),
            llm=_served_llm(server),
            strategies=[OptoPrimeStrategy(temperature=0.0, memory_size=0)],
            optimizer={"ignore_extraction_error": not strict},
        )
        names = {path: node.py_name for path, node in study.objective.parameters.items()}
        greeting = names[next(path for path in names if path.endswith("greeting"))]
        excitement = names[next(path for path in names if path.endswith("excitement"))]
        suggestion = {greeting: "Your order number and tracking link.", excitement: "lots"}
        server.default = Reply.ok(json.dumps({"reasoning": "r", "suggestion": suggestion}))
        study.optimize(n_trials=2)
    trial = study.optuna.trials[1]
    if strict:
        assert trial.state == TrialState.FAIL
        error = study.record(1).error or ""
        assert "ignore_extraction_error=False" in error and "lots" in error
    else:  # the usable suggestion is taken, the other skipped
        assert trial.state == TrialState.COMPLETE
        assert trial.value == 1.0


def test_a_strict_crossover_refuses_a_child_value_of_the_wrong_type() -> None:
    template = {"text": "a", "n": 1}
    answer = json.dumps({"child": {"text": "b", "n": "many"}})
    assert parse_child(answer, template) == {"text": "b", "n": 1}
    with pytest.raises(to.LLMError, match=r"n: .*ignore_extraction_error=False"):
        parse_child(answer, template, strict=True)


# -- the settings checked when given -----------------------------------------------------------

BAD_SETTINGS = [
    ({"objectve": "x"}, ["'objectve' (did you mean 'objective'?)"]),
    (
        {"max_token": 10, "include_examples": True},
        ["'max_token' (did you mean 'max_tokens'?)", "'include_examples' (did you mean"],
    ),
    ({"objective": "  "}, ["objective must be a non-empty str"]),
    ({"objective": 3}, ["objective must be a non-empty str", "3 (int)"]),
    ({"max_tokens": 0}, ["max_tokens must be an int >= 1", "0 (int)"]),
    ({"max_tokens": True}, ["max_tokens must be an int >= 1"]),
    ({"max_tokens": 10.0}, ["max_tokens must be an int >= 1"]),
    (
        {"include_example": "yes", "ignore_extraction_error": 0},
        ["include_example must be True or False", "ignore_extraction_error must be True"],
    ),
    ("Be brief.", ["optimizer must be a trace_optuna.OptimizerSettings, a dict"]),
]


@pytest.mark.parametrize("value, expected", BAD_SETTINGS)
def test_bad_settings_are_refused_naming_each_setting_and_its_rule(
    sqlite_url: str, study_name: str, value: Any, expected: list[str]
) -> None:
    with pytest.raises(to.ConfigurationError) as caught:
        to.create_study(
            study_name=study_name,
            storage=sqlite_url,
            agent=demo.make_agent,
            evaluate=demo.evaluate,
            llm=demo.DEMO_LLM,
            optimizer=value,
        )
    message = str(caught.value)
    for part in expected:
        assert part in message, message
    if isinstance(value, dict) and any(key not in to.OptimizerSettings.names() for key in value):
        assert "the settings are objective, max_tokens" in message
    assert optuna.get_all_study_names(sqlite_url) == []  # refused before anything is stored


def test_two_different_objectives_are_refused_and_one_given_twice_is_not() -> None:
    with pytest.raises(to.ConfigurationError, match="Two objectives.*Give it once"):
        to.Config(strategies=[OptoPrimeStrategy(objective="A")], optimizer={"objective": "B"})
    config = to.Config(strategies=[OptoPrimeStrategy(objective="A")], optimizer={"objective": "A"})
    assert config.optimizer_settings().objective == "A"
    # A dict and the settings object are the same option.
    assert to.Config(optimizer={"max_tokens": 5}).optimizer == to.OptimizerSettings(max_tokens=5)


def test_the_strategys_own_objective_still_reaches_its_prompts(
    sqlite_url: str, study_name: str
) -> None:
    study = to.create_study(
        study_name=study_name,
        storage=sqlite_url,
        agent=demo.make_agent,
        evaluate=demo.evaluate,
        llm=demo.DEMO_LLM,
        strategies=[OptoPrimeStrategy(temperature=0.0, memory_size=0, objective=OBJECTIVE)],
        optimizer={"include_example": True},  # settings without an objective
    )
    study.optimize(n_trials=2)
    (prompt,) = _prompts(study)
    assert f"#Instruction\n{OBJECTIVE}" in prompt and EXAMPLE_LINE in prompt
