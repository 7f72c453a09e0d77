"""Binding a study to an objective: the study's trace attributes written on first use, checked
on every reopening.

What is fixed for the life of a study (its agent's parameter paths or its shared selection, its
strategy list, its ``error_score``, its directions, a dataset study's splits) is written once,
by the first process that binds it, and every later process is refused when it differs. The
LLM may change between runs (a user may resume with another model): that is logged and
warned, and each trial records the model it used.
"""

from __future__ import annotations

from collections.abc import Sequence
import importlib.metadata
import logging
import platform
from typing import TYPE_CHECKING
from typing import Any
import warnings

from optuna.exceptions import ExperimentalWarning
from optuna.trial import TrialState

from trace_optuna import dataset
from trace_optuna import records
from trace_optuna._warnings import warn_user
from trace_optuna.evaluation import score_for_study
from trace_optuna.exceptions import ConfigurationError
from trace_optuna.population import Population
from trace_optuna.strategies.base import registered

if TYPE_CHECKING:
    import optuna
    from optuna.study import StudyDirection

    from trace_optuna.step import TraceObjective

_logger = logging.getLogger(__name__)

METRIC_NAME = "score"  # what optuna-dashboard calls the trial value


def check_directions(
    objective: TraceObjective, directions: Sequence[StudyDirection], study_name: str
) -> None:
    """Refuse directions the objective cannot serve.

    Raises:
        ConfigurationError: For a multi-objective study when a strategy, or sharing parameters,
            needs one score; or an ``error_score`` without one number per direction.
    """
    if objective.error_score is not None:
        score_for_study(objective.error_score, directions, study_name, "error_score")
    if len(directions) < 2:
        return
    if objective.shared is not None:
        raise ConfigurationError(
            f"This study has {len(directions)} directions, but a study over shared parameters "
            f"(ParameterSet {objective.shared.registry_name!r}) publishes its best by one score: "
            "give it one direction."
        )
    single = [name for name, s in objective.strategies.items() if not s.multi_objective]
    if single:
        names = sorted(name for name, cls in registered().items() if cls.multi_objective)
        raise ConfigurationError(
            f"Strategy {single[0]!r} needs a single-objective study (it compares candidates "
            f"by one number); this study has {len(directions)} directions. Use strategies "
            f"that handle Pareto scores ({', '.join(names)}), or one direction."
        )


def check_requested_directions(
    study: optuna.Study, requested: Sequence[StudyDirection] | None
) -> None:
    """Refuse reopening a study with other directions than it was created with.

    Optuna's ``load_if_exists`` ignores the directions given; a study reopened to minimize what
    it maximized would compare its new scores the wrong way round without a word.

    Raises:
        ConfigurationError: Naming both.
    """
    if requested is None or list(requested) == list(study.directions):
        return
    stored = [direction.name.lower() for direction in study.directions]
    given = [direction.name.lower() for direction in requested]
    raise ConfigurationError(
        f"Study {study.study_name!r} was created with directions {stored}; got {given}. A "
        "study's directions are fixed: reopen it without direction=/directions=, or with the "
        "same, or use a new study."
    )


def bind(objective: TraceObjective, study: optuna.Study) -> None:
    """Write the study's trace attributes on its first use; check them when reopened.

    An objective without ``error_score`` takes the study's.

    Raises:
        ConfigurationError: If the directions do not suit the objective, the study holds
            trials that trace_optuna did not make, or it was created with another agent,
            selection of shared parameters, strategy list, ``error_score`` or splits
            (``trainset``, ``valset``, ``testset``).
    """
    check_directions(objective, study.directions, study.study_name)
    attrs = study.user_attrs
    paths = sorted(objective.parameters)
    registry = registry_attr(objective)
    splits = splits_attr(objective)
    if records.SCHEMA not in attrs:
        _refuse_plain_trials(study)
        if study.metric_names is None:  # names the user gave their own study are kept
            count = len(study.directions)
            names = [f"{METRIC_NAME}[{i}]" for i in range(count)] if count > 1 else [METRIC_NAME]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                study.set_metric_names(names)
        values = {
            records.STUDY_VERSIONS: versions(),
            records.STUDY_LLM_SETTINGS: objective.llm.settings(),
            records.STUDY_PARAMETERS: paths,
            records.STUDY_STRATEGIES: objective.strategy_names,
            records.STUDY_SEED: objective.seed,
            records.STUDY_ERROR_SCORE: objective.error_score,
            records.STUDY_SPLITS: splits,
            records.REGISTRY: registry,
            # Last: another worker opening the study at this moment reads a study with a
            # schema as complete, or binds it too (with the same values).
            records.SCHEMA: records.SCHEMA_VERSION,
        }
        records.write(study.set_user_attr, values)
        return
    records.check_schema(attrs, f"Study {study.study_name!r}")
    name = study.study_name
    stored_registry = attrs.get(records.REGISTRY)
    if (stored_registry or {}).get("name") != (registry or {}).get("name"):
        raise ConfigurationError(
            f"Study {name!r} was created "
            + (
                f"over the shared parameters {stored_registry['name']!r}"
                if stored_registry
                else "with its own agent"
            )
            + "; this objective has "
            + (f"the shared parameters {registry['name']!r}" if registry else "its own agent")
            + ". Reopen it the way it was created."
        )
    stored_paths = attrs.get(records.STUDY_PARAMETERS)
    if stored_paths is not None and stored_paths != paths:
        if registry:
            raise ConfigurationError(
                f"Study {name!r} was created over the paths {stored_paths} of ParameterSet "
                f"{registry['name']!r}; this selection has {paths}. Select the same paths, or "
                "use a new study."
            )
        raise ConfigurationError(
            f"Study {name!r} was created for an agent with parameters {stored_paths}; this "
            f"agent has {paths}. Use the same agent, or a new study."
        )
    stored_strategies = attrs.get(records.STUDY_STRATEGIES)
    if stored_strategies is not None and stored_strategies != objective.strategy_names:
        raise ConfigurationError(
            f"Study {name!r} was created with strategies {stored_strategies}; got "
            f"{objective.strategy_names}. The list is fixed for the life of a study (Optuna's "
            "categorical parameters cannot change their choices)."
        )
    stored_error_score = attrs.get(records.STUDY_ERROR_SCORE)
    if objective.error_score is None:
        objective.error_score = stored_error_score  # not given: the study's own
    elif stored_error_score != objective.error_score:
        raise ConfigurationError(
            f"Study {name!r} was created with error_score={stored_error_score!r}; got "
            f"error_score={objective.error_score!r}. It is fixed for the life of a study (the "
            "stored scores of failing candidates would mean two things): reopen it without "
            "error_score (it takes the study's), or use a new study."
        )
    if records.STUDY_SPLITS in attrs:
        dataset.check_same_splits(attrs[records.STUDY_SPLITS], splits, name)
    else:  # bound by a version that did not record them: these are the study's from now on
        study.set_user_attr(records.STUDY_SPLITS, splits)
    if objective.config.edited_start == "refuse" and objective.shared is None:
        _refuse_edited_start(objective, study)
    stored_llm = attrs.get(records.STUDY_LLM_SETTINGS)
    current_llm = objective.llm.settings()
    if stored_llm is not None and stored_llm.get("model") != current_llm.get("model"):
        if not study.get_trials(deepcopy=False):  # no trial used it: the study's model is this
            study.set_user_attr(records.STUDY_LLM_SETTINGS, current_llm)
            return
        message = (
            f"Study {name!r} was created with the model {stored_llm.get('model')!r}; its new "
            f"trials use {current_llm.get('model')!r} (each trial records its model in "
            f"{records.LLM!r})."
        )
        _logger.warning(message)
        warn_user(message)


def _refuse_edited_start(objective: TraceObjective, study: optuna.Study) -> None:
    """With ``edited_start="refuse"``: the agent's starting values must be a trial's."""
    population = Population(study)
    population.refresh()
    if population.best() is None:
        return  # nothing evaluated yet: the first trial evaluates the start
    if objective.start_unseen(population):
        raise ConfigurationError(
            f"Study {study.study_name!r} holds no trial with this agent's starting values: the "
            "program was edited since the study began. Reopen it with edited_start='evaluate' "
            "to evaluate them as a new root trial, or use a new study."
        )


def _refuse_plain_trials(study: optuna.Study) -> None:
    """A study with trials but no trace schema was made by someone else: never add to it."""
    finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    count = len(study.get_trials(deepcopy=False, states=finished))
    if count:
        raise ConfigurationError(
            f"Study {study.study_name!r} holds {count} trial(s) that trace_optuna did not make "
            "(it has no trace records): Trace steps would be mixed into another optimization. "
            "Use a new study name."
        )


def versions() -> dict[str, str]:
    """The versions of Python and the packages a study's records depend on."""
    found = {"python": platform.python_version()}
    for package in ("trace-optuna", "trace-opt", "optuna", "litellm", "sqlalchemy"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def splits_attr(objective: TraceObjective) -> dict[str, Any] | None:
    """What a study records of its splits (:func:`trace_optuna.dataset.split_fingerprints`)."""
    config = objective.config
    return dataset.split_fingerprints(
        {name: getattr(config, name) for name in dataset.SPLIT_OPTIONS}
    )


def registry_attr(objective: TraceObjective) -> dict[str, Any] | None:
    """What a study over shared parameters records about its registry; None otherwise."""
    if objective.shared is None:
        return None
    return {"name": objective.shared.registry_name, "on_conflict": objective.shared.on_conflict}
