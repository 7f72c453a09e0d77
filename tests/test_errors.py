"""Bad input gets a clear error naming the thing and the rule; nothing stored is touched."""

from __future__ import annotations

import importlib
import pkgutil

from opto import trace
import optuna
import pytest
from support_agents import CountingEvaluate
from support_agents import Greeter
from support_agents import make_greeter

import trace_optuna as to
from trace_optuna import exceptions

SIMULATED = "simulated/feedback-follower"


def create(storage: str, name: str, **kwargs: object) -> to.TraceStudy:
    options: dict = dict(
        study_name=name,
        storage=storage,
        agent=make_greeter,
        evaluate=CountingEvaluate(),
        llm=SIMULATED,
    )
    options.update(kwargs)
    return to.create_study(**options)


def test_non_json_parameter_is_refused_before_any_trial(sqlite_url: str, study_name: str) -> None:
    def make_bad() -> Greeter:
        agent = Greeter()
        agent.excitement._set({"levels": {1, 2}})
        return agent

    with pytest.raises(
        to.SnapshotError, match=r"Parameter 'excitement' holds a value of type set"
    ):
        create(sqlite_url, study_name, agent=make_bad)
    assert optuna.get_all_study_names(sqlite_url) == []


@pytest.mark.parametrize(
    "url, message",
    [
        ("mongodb://localhost/db", "Unknown storage URL 'mongodb://localhost/db'"),
        ("not a url", "Unknown storage URL 'not a url'"),
    ],
)
def test_unknown_storage_url(url: str, message: str) -> None:
    with pytest.raises(to.ConfigurationError, match=message):
        create(url, "x")


def test_storage_password_is_redacted_in_errors() -> None:
    with pytest.raises(to.ConfigurationError) as error:
        create("mongodb://user:hunter2@localhost/db", "x")
    assert "hunter2" not in str(error.value) and "user:***@" in str(error.value)


def test_missing_study_without_load_if_exists(sqlite_url: str, study_name: str) -> None:
    create(sqlite_url, "other")
    with pytest.raises(
        to.ConfigurationError, match=rf"No study named '{study_name}'.*\['other'\]"
    ):
        to.load_study(
            study_name=study_name,
            storage=sqlite_url,
            agent=make_greeter,
            evaluate=CountingEvaluate(),
            llm=SIMULATED,
        )


def test_existing_study_without_load_if_exists(sqlite_url: str, study_name: str) -> None:
    create(sqlite_url, study_name)
    with pytest.raises(optuna.exceptions.DuplicatedStudyError):
        create(sqlite_url, study_name)


def test_wrong_evaluate_signature(sqlite_url: str) -> None:
    def evaluate(agent, dataset, split):  # type: ignore[no-untyped-def]
        raise AssertionError("never called")

    with pytest.raises(
        to.ConfigurationError, match=r"evaluate must accept the agent.*\(agent, dataset, split\)"
    ):
        create(sqlite_url, "x", evaluate=evaluate)


@pytest.mark.parametrize(
    "agent, message",
    [
        (42, "agent must be a function that builds the agent"),
        ({"x": trace.node(1)}, "no trainable parameter"),
    ],
)
def test_wrong_agent(sqlite_url: str, agent: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create(sqlite_url, "x", agent=agent)


@pytest.mark.parametrize(
    "llm, message",
    [(None, "llm must be a litellm model string"), ("", "model"), (3, "llm must be")],
)
def test_wrong_llm(sqlite_url: str, llm: object, message: str) -> None:
    with pytest.raises(to.ConfigurationError, match=message):
        create(sqlite_url, "x", llm=llm)


def test_unknown_strategy_lists_the_valid_names(sqlite_url: str) -> None:
    with pytest.raises(
        to.ConfigurationError, match=r"Unknown strategy 'greedy'; valid names are \[.*'optoprime'"
    ):
        create(sqlite_url, "x", strategies=["greedy"])


def test_wrong_direction(sqlite_url: str) -> None:
    with pytest.raises(to.ConfigurationError, match="direction must be 'maximize' or 'minimize'"):
        create(sqlite_url, "x", direction="up")


def test_reopening_with_another_agent_or_strategies(sqlite_url: str, study_name: str) -> None:
    create(sqlite_url, study_name).optimize(n_trials=1)

    class KeepBest(to.Strategy):
        name = "keep-best"

    with pytest.raises(to.ConfigurationError, match=r"created with strategies \['optoprime'\]"):
        create(sqlite_url, study_name, load_if_exists=True, strategies=["optoprime", KeepBest()])

    def other_agent() -> dict:
        return {"prompt": trace.node("hi", trainable=True)}

    with pytest.raises(
        to.ConfigurationError, match=r"parameters \['decorate', 'excitement', 'greeting'\]"
    ):
        create(sqlite_url, study_name, load_if_exists=True, agent=other_agent)
    # The stored study is untouched by the refused attempts.
    assert len(optuna.load_study(study_name=study_name, storage=sqlite_url).trials) == 1


def test_threads_are_refused_with_a_pointer_to_processes(sqlite_url: str) -> None:
    study = create(sqlite_url, "x")
    with pytest.raises(to.ConfigurationError, match="threads.*Start several processes"):
        study.optimize(n_trials=2, n_jobs=2)


def test_evaluate_returning_the_wrong_type_stops_optimize_after_recording_the_reason(
    sqlite_url: str,
) -> None:
    study = create(sqlite_url, "x", evaluate=lambda agent: 0.5)
    with pytest.raises(to.ConfigurationError, match="must return trace_optuna.Evaluation"):
        study.optimize(n_trials=5)  # a contract error stops at once: not 5 failing trials
    assert [trial.state for trial in study.trials] == [optuna.trial.TrialState.FAIL]
    assert study.record(0).error == (
        "ConfigurationError: evaluate() must return trace_optuna.Evaluation, got float."
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"score": "high", "feedback": "x"}, "Evaluation.score must be a number"),
        ({"score": float("nan"), "feedback": "x"}, "must not be NaN"),
        ({"score": float("-inf"), "feedback": "x"}, "Evaluation.score must be finite, got -inf"),
        ({"score": 1, "feedback": None}, "Evaluation.feedback must be a str"),
        ({"score": 1, "feedback": "x", "details": {"s": {1}}}, "details must be JSON"),
    ],
)
def test_evaluation_validates_its_fields(kwargs: dict, message: str) -> None:
    with pytest.raises(to.ConfigurationError, match=message):
        to.Evaluation(**kwargs)


def test_numpy_scores_are_numbers() -> None:
    import numpy as np

    assert to.Evaluation(score=np.float32(0.5), feedback="").score == 0.5
    assert to.Evaluation(score=[np.int64(3), np.float64(0.25)], feedback="").score == [3.0, 0.25]
    assert type(to.Evaluation(score=np.float32(0.5), feedback="").score) is float


def _public_exception_classes() -> dict[str, type[BaseException]]:
    """Every public exception class defined in a trace_optuna module, by qualified name."""
    found: dict[str, type[BaseException]] = {}
    for module_info in pkgutil.walk_packages(to.__path__, "trace_optuna."):
        if module_info.name.endswith("__main__"):
            continue  # running it is the CLI
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            if (
                isinstance(value, type)
                and issubclass(value, BaseException)
                and not issubclass(value, Warning)  # warned, not raised
                and value.__module__ == module.__name__
                and not name.startswith("_")
            ):
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return found


def test_every_public_exception_is_defined_in_exceptions_and_derives_from_the_base() -> None:
    found = _public_exception_classes()
    # Raised by the test fixtures when a database server is down, never by the library.
    found.pop("trace_optuna.testing.storages.ServerUnavailable", None)
    assert sorted(name for name in found if not name.startswith("trace_optuna.exceptions.")) == []
    assert all(issubclass(error, to.TraceOptunaError) for error in found.values())
    tree = exceptions.__doc__ or ""
    for error in found.values():
        assert f" {error.__name__} " in tree, f"{error.__name__} is missing from the tree"
    assert len(found) >= 11


def test_old_import_paths_are_the_same_classes() -> None:
    from trace_optuna.dashboard import HumanFeedbackTimeout
    from trace_optuna.strategies.optoprime import SuggestionError
    from trace_optuna.strategies.sandbox import ImproverFailed
    from trace_optuna.strategies.sandbox import Rejected

    assert HumanFeedbackTimeout is exceptions.HumanFeedbackTimeout
    assert SuggestionError is exceptions.SuggestionError
    assert ImproverFailed is exceptions.ImproverFailed
    assert Rejected is exceptions.Rejected


@pytest.mark.parametrize(
    "error, bases",
    [
        ("ConfigurationError", (ValueError,)),
        ("SnapshotError", (ValueError,)),
        ("NoCompletedTrialError", (ValueError,)),
        ("SuggestionError", (exceptions.LLMError, ValueError)),
        ("Rejected", (ValueError,)),
        ("HumanFeedbackTimeout", ()),
        ("ImproverFailed", ()),
    ],
)
def test_except_valueerror_still_catches_what_it_caught(
    error: str, bases: tuple[type, ...]
) -> None:
    cls = getattr(exceptions, error)
    assert issubclass(cls, exceptions.TraceOptunaError)
    assert all(issubclass(cls, base) for base in bases)
