"""``Config``: every option checked once, with an error naming the option and the rule, before
anything is created or stored; the same options through create_study, load_study,
TraceObjective and App."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.study import StudyDirection
import pytest
from support_agents import CountingEvaluate
from support_agents import make_greeter

import trace_optuna as to
from trace_optuna import records

SIMULATED = "simulated/feedback-follower"


def options(**overrides: Any) -> dict[str, Any]:
    return {"agent": make_greeter, "evaluate": CountingEvaluate(), "llm": SIMULATED, **overrides}


def storage_file(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("selector", "best", r"selector must be one of \['score', 'llm'\], got 'best'"),
        ("on_conflict", "later", r"on_conflict must be one of"),
        ("evaluate_form", "trial", r"evaluate_form must be one of \['agent', 'agent_trial'\]"),
        ("direction", "up", r"direction must be 'maximize' or 'minimize'"),
        ("directions", "maximize", r"directions must be a non-empty list"),
        ("sampler", "tpe", r"sampler must be an Optuna sampler object, not the string 'tpe'"),
        ("sampler", optuna.samplers.TPESampler, r"not the class"),
        ("sampler", optuna.samplers.BruteForceSampler(), r"BruteForceSampler enumerates a fixed"),
        ("sampler", optuna.samplers.GridSampler({"x": [1]}), r"GridSampler enumerates a fixed"),
        ("pruner", "median", r"pruner must be an Optuna pruner"),
        ("seed", 1.5, r"seed must be an int, got float"),
        ("seed", True, r"seed must be an int, got bool"),
        ("evaluate_timeout", 0, r"evaluate_timeout must be a number of seconds > 0"),
        ("evaluate_timeout", "5", r"evaluate_timeout must be a number of seconds or None"),
        ("heartbeat_interval", 0, r"heartbeat_interval must be >= 1"),
        ("max_retry", -1, r"max_retry must be >= 0"),
        ("artifact_dir", 123, r"artifact_dir must be a directory path \(str or os.PathLike\)"),
        ("artifact_store", "dir", r"artifact_store must be an Optuna artifact store"),
        ("figure_interval", -1, r"figure_interval must be a number of seconds >= 0"),
        ("llm", 5, r"llm must be a litellm model string"),
        ("evaluate", "score", r"evaluate must be a function"),
        ("error_score", "low", r"error_score"),
    ],
)
def test_a_wrong_option_is_refused_before_anything_is_created(
    sqlite_url: str, option: str, value: Any, message: str
) -> None:
    with pytest.raises(to.ConfigurationError, match=message):
        to.create_study(storage=sqlite_url, **options(**{option: value}))
    assert not storage_file(sqlite_url).exists()  # nothing created


def test_an_unknown_option_names_the_nearest_ones(sqlite_url: str) -> None:
    with pytest.raises(to.ConfigurationError, match=r"unknown option 'stratgies'.*strategies"):
        to.create_study(storage=sqlite_url, stratgies=["optoprime"], **options())
    assert not storage_file(sqlite_url).exists()


@pytest.mark.parametrize("value", ["false", 1, None])
def test_load_if_exists_must_be_a_bool(sqlite_url: str, value: Any) -> None:
    with pytest.raises(to.ConfigurationError, match="load_if_exists must be True or False"):
        to.create_study(storage=sqlite_url, load_if_exists=value, **options())


def test_a_study_name_over_the_databases_limit_is_refused(sqlite_url: str) -> None:
    with pytest.raises(to.ConfigurationError, match="a study name holds at most 512"):
        to.create_study(storage=sqlite_url, study_name="x" * 513, **options())


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"n_trials": -1}, r"n_trials must be >= 1 or None, got -1"),
        ({"n_trials": 0}, r"n_trials must be >= 1"),
        ({"n_trials": 2.5}, r"n_trials must be an int >= 1 or None, got float 2.5"),
        ({"n_trials": "3"}, r"n_trials must be an int >= 1 or None, got str '3'"),
        ({"n_trials": 1, "timeout": -1}, r"timeout must be a number of seconds > 0"),
        ({"n_trials": 1, "callbacks": [1]}, r"callbacks\[0\] must be callable"),
    ],
)
def test_optimize_arguments_are_checked_before_a_trial_runs(
    sqlite_url: str, study_name: str, arguments: dict[str, Any], message: str
) -> None:
    study = to.create_study(storage=sqlite_url, study_name=study_name, **options())
    with pytest.raises(to.ConfigurationError, match=message):
        study.optimize(**arguments)
    assert study.trials == []  # no trial ran


def test_one_config_serves_create_study_load_study_objective_and_app(
    sqlite_url: str, study_name: str
) -> None:
    config = to.Config(
        **options(seed=3, strategies="optoprime", direction=StudyDirection.MAXIMIZE)
    )
    study = to.create_study(storage=sqlite_url, study_name=study_name, config=config)
    study.optimize(n_trials=2)
    assert study.optuna.user_attrs[records.STUDY_SEED] == 3
    again = to.load_study(study_name=study_name, storage=sqlite_url, config=config)
    assert again.config.seed == 3
    objective = to.TraceObjective(config=config)
    assert objective.strategy_names == ["optoprime"]
    app = to.App(**options(seed=3))
    assert isinstance(app, to.Config)
    assert len(app.study(study_name=study_name, storage=sqlite_url).trials) == 2


def test_options_override_the_configs_and_are_checked_again() -> None:
    config = to.Config(**options())
    with pytest.raises(to.ConfigurationError, match="selector must be one of"):
        to.TraceObjective(config=config, selector="judge")


def test_the_pruner_is_the_studys(sqlite_url: str, study_name: str) -> None:
    pruner = optuna.pruners.NopPruner()
    study = to.create_study(storage=sqlite_url, study_name=study_name, pruner=pruner, **options())
    assert study.optuna.pruner is pruner


def test_reopening_with_another_direction_is_refused(sqlite_url: str, study_name: str) -> None:
    to.create_study(storage=sqlite_url, study_name=study_name, **options())
    with pytest.raises(to.ConfigurationError, match=r"created with directions \['maximize'\]"):
        to.create_study(
            storage=sqlite_url,
            study_name=study_name,
            load_if_exists=True,
            direction="minimize",
            **options(),
        )
    with pytest.raises(to.ConfigurationError, match="created with directions"):
        to.load_study(study_name=study_name, storage=sqlite_url, direction="minimize", **options())
    # Reopened without a direction, it keeps its own.
    again = to.load_study(study_name=study_name, storage=sqlite_url, **options())
    assert again.optuna.directions == [StudyDirection.MAXIMIZE]


def test_reopening_with_another_error_score_is_refused_and_none_takes_the_studys(
    sqlite_url: str, study_name: str
) -> None:
    to.create_study(storage=sqlite_url, study_name=study_name, error_score=0.0, **options())
    with pytest.raises(to.ConfigurationError, match=r"created with error_score=0.0; got error_sc"):
        to.load_study(study_name=study_name, storage=sqlite_url, error_score=-1.0, **options())
    again = to.load_study(study_name=study_name, storage=sqlite_url, **options())
    assert again.objective.error_score == 0.0


def test_reopening_with_another_model_warns_at_the_users_line(
    sqlite_url: str, study_name: str
) -> None:
    to.create_study(storage=sqlite_url, study_name=study_name, **options()).optimize(n_trials=1)
    # Built, never called: no key is needed to construct it.
    other = "openai/gpt-4o-mini"
    with pytest.warns(UserWarning, match=f"created with the model '{SIMULATED}'.*'{other}'") as w:
        to.load_study(study_name=study_name, storage=sqlite_url, **options(llm=other))
    assert w[0].filename == __file__


def test_a_study_without_trials_takes_the_new_model_without_a_word(
    sqlite_url: str, study_name: str, recwarn: pytest.WarningsRecorder
) -> None:
    to.create_study(storage=sqlite_url, study_name=study_name, **options())
    other = "openai/gpt-4o-mini"
    again = to.load_study(study_name=study_name, storage=sqlite_url, **options(llm=other))
    assert not [w for w in recwarn if "created with the model" in str(w.message)]
    assert again.optuna.user_attrs[records.STUDY_LLM_SETTINGS]["model"] == other
