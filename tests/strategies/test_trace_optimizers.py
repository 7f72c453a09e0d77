"""Trace's own optimizers as strategies: opro, textgrad, optoprime_multi, and from_optimizer.

The request shapes are proven against a real local OpenAI-protocol server answering each
optimizer's real prompts; the simulated model runs them end to end on the demo agent.
"""

from __future__ import annotations

import contextlib
import io
import json

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState
import pytest
from support_knobs import evaluate_knobs
from support_knobs import make_knobs
from support_openai_server import OpenAIServer
from support_openai_server import Reply

import trace_optuna as to
from trace_optuna import demo
from trace_optuna.exceptions import ConfigurationError
from trace_optuna.samplers import StrategyBandit
from trace_optuna.strategies import OPROStrategy
from trace_optuna.strategies import OptoPrimeMultiStrategy
from trace_optuna.strategies import TextGradStrategy
from trace_optuna.strategies import from_optimizer
from trace_optuna.strategies.optimizer import OPTIMIZER_ATTR

with contextlib.redirect_stdout(io.StringIO()):  # trace-opt prints its LLM backend on import
    from opto.optimizers import OPRO
    from opto.optimizers import OptoPrime
    from opto.optimizers import OptoPrimeMulti
    from opto.optimizers import TextGrad

NEW = ("opro", "textgrad", "optoprime_multi")
TRACE_CLASSES = {"opro": OPRO, "textgrad": TextGrad, "optoprime_multi": OptoPrimeMulti}
SQLITE_AND_POSTGRESQL = pytest.mark.parametrize(
    "storage_url", ["sqlite", "postgresql"], indirect=True
)


def demo_study(storage_url: str, study_name: str, strategies, **kwargs) -> to.TraceStudy:
    return to.create_study(
        study_name=study_name,
        storage=storage_url,
        agent=demo.make_agent,
        evaluate=demo.evaluate,
        llm=to.LLM(demo.DEMO_LLM, simulated_seed=1),
        strategies=strategies,
        seed=0,
        **kwargs,
    )


@SQLITE_AND_POSTGRESQL
@pytest.mark.parametrize("name", NEW)
def test_each_strategy_completes_trials_with_a_diff_on_the_demo_agent(
    storage_url: str, study_name: str, name: str
) -> None:
    study = demo_study(storage_url, study_name, [name])
    study.optimize(n_trials=3)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    for number in (1, 2):
        record = study.record(number)
        assert record.strategy == name and record.parents
        assert record.diff and record.changed
        assert record.parent_feedback and record.llm_calls
        assert all(call["response"] for call in record.llm_calls)
        info = study.optuna.trials[number].user_attrs[OPTIMIZER_ATTR]
        trace_class = TRACE_CLASSES[name]
        assert info["class"] == f"{trace_class.__module__}.{trace_class.__qualname__}"
        assert info["trace-opt"] == "0.1.3.8"
        sampled = {
            key.split(".", 1)[1]: value
            for key, value in study.trials[number].params.items()
            if key.startswith(name + ".")
        }
        assert sampled and sampled.items() <= info["settings"].items()
    assert study.best_trial.value > study.trials[0].value


def openai_llm(server: OpenAIServer) -> to.LLM:
    return to.LLM("openai/test-model", api_base=server.base_url, api_key="sk-test", num_retries=0)


def knobs_study(server: OpenAIServer, sqlite_url: str, study_name: str, strategy) -> to.TraceStudy:
    return to.create_study(
        study_name=study_name,
        storage=sqlite_url,
        agent=make_knobs,
        evaluate=evaluate_knobs,
        llm=openai_llm(server),
        strategies=[strategy],
        optimizer={"max_tokens": 321},
    )


def by_name(study: to.TraceStudy, values: dict) -> dict:
    names = {path: node.py_name for path, node in study.objective.parameters.items()}
    return {names[path]: value for path, value in values.items()}


def test_opro_sends_its_examples_and_applies_the_suggestion(
    sqlite_url: str, study_name: str
) -> None:
    from trace_optuna.strategies._safe_optimizers import OPRO_EXAMPLES_MARKER

    with OpenAIServer() as server:
        study = knobs_study(server, sqlite_url, study_name, OPROStrategy(0.3, 1))
        first = {"count": "5", "flag": "False"}  # trace-opt would cast "False" to True
        second = {"count": "6", "tone": "Use the default tone."}  # and drop this (black)
        server.script(
            Reply.ok(json.dumps({"suggestion": by_name(study, first)})),
            Reply.ok(json.dumps({"suggestion": by_name(study, second)})),
        )
        study.optimize(n_trials=3)
        requests = list(server.requests)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert len(requests) == 2
    for request in requests:
        system, user = request["messages"]
        assert OPRO_EXAMPLES_MARKER in user["content"]
        assert request["response_format"] == {"type": "json_object"}
        assert request["temperature"] == 0.3 and request["max_tokens"] == 321
    # The second step shows the first step's candidate before the current one (memory_size=1).
    assert user["content"].count('"feedback"') == 2
    assert study.record(1).snapshot["flag"] is False
    assert study.record(2).snapshot["tone"] == "Use the default tone."


def test_optoprime_multi_calls_create_over_its_temperature_range(
    sqlite_url: str, study_name: str
) -> None:
    # trace-opt 0.1.3.8: OptoPrimeMulti calls llm.create (LiteLLM has none), and a given
    # temperature_range raised AttributeError.
    with OpenAIServer() as server:
        strategy = OptoPrimeMultiStrategy(3, "last", temperature_range=(0.9, 0.1))
        study = knobs_study(server, sqlite_url, study_name, strategy)
        answers = [{"count": 4}, {"count": 5}, {"count": 6}]
        server.script(*(Reply.ok(json.dumps({"suggestion": by_name(study, a)})) for a in answers))
        study.optimize(n_trials=2)
        requests = list(server.requests)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert [r["temperature"] for r in requests] == pytest.approx([0.9, 0.5, 0.1])
    assert all(r["max_tokens"] == 321 and r["n"] == 1 for r in requests)
    assert all("#Variables" in r["messages"][1]["content"] for r in requests)
    assert study.record(1).snapshot["count"] == 6  # Trace's selector: the last candidate
    assert study.optuna.trials[1].user_attrs["trace:optoprime_multi"]["candidates"] == 3


def test_optoprime_multi_best_evaluates_every_candidate(sqlite_url: str, study_name: str) -> None:
    with OpenAIServer() as server:
        strategy = OptoPrimeMultiStrategy(3, "best")
        study = knobs_study(server, sqlite_url, study_name, strategy)
        answers = [{"tone": "A much longer tone than before."}, {"count": 5}, {"count": 5}]
        server.script(*(Reply.ok(json.dumps({"suggestion": by_name(study, a)})) for a in answers))
        study.optimize(n_trials=2)
    record = study.record(1)
    assert len(record.evaluated) == 2  # two distinct candidates, both evaluated
    assert record.snapshot["tone"] == "A much longer tone than before."  # the longer output


def test_textgrad_asks_for_gradients_then_each_parameter(sqlite_url: str, study_name: str) -> None:
    from trace_optuna.strategies._safe_optimizers import TEXTGRAD_GRADIENT_SYSTEM

    with OpenAIServer() as server:
        study = knobs_study(server, sqlite_url, study_name, TextGradStrategy(0.2, 0.7))
        paths = list(study.objective.parameters)
        improved = {"tone": "Be brief and kind.", "flag": "False", "items": "[3, 4]", "count": "9"}
        server.script(
            *(Reply.ok("Make it longer.") for _ in paths),  # one gradient per input of describe
            *(Reply.ok(f"<IMPROVED_VARIABLE>{improved[p]}</IMPROVED_VARIABLE>") for p in paths),
        )
        study.optimize(n_trials=2)
        requests = list(server.requests)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    gradients, updates = requests[: len(paths)], requests[len(paths) :]
    assert len(updates) == len(paths)
    assert all(r["messages"][0]["content"] == TEXTGRAD_GRADIENT_SYSTEM for r in gradients)
    assert all(r["temperature"] == 0.2 for r in gradients)
    assert all(r["temperature"] == 0.7 and r["max_tokens"] == 321 for r in updates)
    # trace-opt would cast with type(old)(new): bool("False") is True, list("[3, 4]") chars.
    assert study.record(1).snapshot == {
        "tone": "Be brief and kind.",
        "flag": False,
        "items": [3, 4],
        "count": 9,
    }


@pytest.mark.parametrize("name", NEW)
def test_a_malformed_answer_fails_the_trial_with_the_raw_response(
    sqlite_url: str, study_name: str, name: str
) -> None:
    strategy = {
        "opro": OPROStrategy(0.0, 0),
        "textgrad": TextGradStrategy(0.0, 0.0),
        "optoprime_multi": OptoPrimeMultiStrategy(2, "last"),
    }[name]
    with OpenAIServer() as server:
        server.default = Reply.ok("I would rather not say.")
        study = knobs_study(server, sqlite_url, study_name, strategy)
        study.optimize(n_trials=2)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL]
    failed = study.record(1)
    assert failed.error.startswith(f"LLMError: {name}: the LLM's answer held no usable")
    assert failed.llm_calls and failed.llm_calls[-1]["response"] == "I would rather not say."


@SQLITE_AND_POSTGRESQL
def test_the_bandit_mixes_them_in_one_study(storage_url: str, study_name: str) -> None:
    study = demo_study(
        storage_url,
        study_name,
        ["optoprime", *NEW],
        sampler=StrategyBandit(seed=0, prior_reward=None),  # every arm once first
    )
    study.optimize(n_trials=7)
    ran = [t.params["strategy"] for t in study.trials[1:]]
    assert set(ran) == {"optoprime", *NEW}
    assert all(t.state == TrialState.COMPLETE for t in study.trials)


def test_an_optuna_sampler_chooses_among_them_too(sqlite_url: str, study_name: str) -> None:
    study = demo_study(
        sqlite_url, study_name, list(NEW), sampler=optuna.samplers.RandomSampler(seed=3)
    )
    study.optimize(n_trials=5)
    assert len({t.params["strategy"] for t in study.trials[1:]}) >= 2


class Cautious(OptoPrime):
    """OptoPrime told to change one thing at a time."""

    default_objective = "Change one variable at a time, following the feedback."


def test_from_optimizer_wraps_a_users_optimizer(sqlite_url: str, study_name: str) -> None:
    strategy = from_optimizer(
        Cautious,
        settings={"memory_size": 1, "temperature": FloatDistribution(0.0, 1.0)},
    )
    assert strategy.name == "cautious"
    study = demo_study(sqlite_url, study_name, [strategy])
    study.optimize(n_trials=3)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    record = study.record(1)
    assert record.strategy == "cautious" and record.diff
    assert "Change one variable at a time" in record.llm_calls[0]["user"]
    info = study.optuna.trials[1].user_attrs[OPTIMIZER_ATTR]
    assert info["class"] == f"{__name__}.Cautious"
    assert info["settings"]["memory_size"] == 1
    assert info["settings"]["temperature"] == study.trials[1].params["cautious.temperature"]


def test_from_optimizer_gives_create_to_textgrad_subclasses(
    sqlite_url: str, study_name: str
) -> None:
    class MyTextGrad(TextGrad):  # Trace's own class, calling llm.create
        pass

    study = demo_study(sqlite_url, study_name, [from_optimizer(MyTextGrad, name="mine")])
    study.optimize(n_trials=2)
    assert study.trials[1].state == TrialState.COMPLETE
    assert study.record(1).diff


def test_from_optimizer_refuses_what_it_cannot_run() -> None:
    with pytest.raises(ConfigurationError, match="subclass of Trace's"):
        from_optimizer(dict)
    with pytest.raises(ConfigurationError, match="takes no setting 'memory_sise'"):
        from_optimizer(Cautious, settings={"memory_sise": 2})
    with pytest.raises(ConfigurationError, match="'llm'"):
        from_optimizer(Cautious, settings={"llm": None})


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: OPROStrategy(memory_size=-1), "memory_size must be an int >= 0"),
        (lambda: TextGradStrategy(update_temperature=3), "update_temperature must be a number"),
        (lambda: OptoPrimeMultiStrategy(selector="first"), "selector must be one of"),
        (lambda: OptoPrimeMultiStrategy(temperature_range=(1,)), "temperature_range must be"),
    ],
)
def test_bad_settings_are_refused_when_built(make, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make()
