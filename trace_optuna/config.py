"""``Config``: every option of a Trace study, checked in one place.

``create_study``, ``load_study``, :class:`~trace_optuna.TraceObjective` and the workers'
:class:`~trace_optuna.App` all take these options (as keyword arguments, or a ``Config`` through
``config=``), so each option exists everywhere, with the one docstring below, and is checked
once, when the ``Config`` is made: a wrong value raises before anything is created or stored,
with an error that names the option and the rule.

What a study is (its name, its storage, whether to reopen it) is not an option: those are the
arguments of ``create_study``/``load_study`` themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
import dataclasses
import difflib
import numbers
import os
from typing import TYPE_CHECKING
from typing import Any
from typing import Literal

import optuna
from optuna.study import StudyDirection

from trace_optuna.evaluation import check_score
from trace_optuna.exceptions import ConfigurationError
from trace_optuna.storage import HEARTBEAT_INTERVAL_S
from trace_optuna.storage import MAX_RETRY
from trace_optuna.strategies.optimizer_settings import OptimizerSettings

if TYPE_CHECKING:
    from optuna.artifacts._protocol import ArtifactStore

    from trace_optuna.budget import Budget
    from trace_optuna.dataset import Dataset
    from trace_optuna.evaluation import Evaluation
    from trace_optuna.llm import LLM
    from trace_optuna.registry import Selection

DEFAULT_FIGURE_INTERVAL = 60.0  # seconds between refreshes of the study's saved figures

EvaluateForm = Literal["agent", "agent_trial"]
OnConflict = Literal["reevaluate", "skip"]
SelectorKind = Literal["score", "llm"]
EditedStart = Literal["evaluate", "refuse"]
StopIsolation = Literal["required", "none"]
ParentSelection = Literal["best", "pareto"]
DirectionLike = str | StudyDirection


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """The options of a Trace study. Every field is checked when the ``Config`` is made.

    Attributes:
        agent: A function that builds a fresh agent (each process calls it once), or an agent:
            a ``@trace.model`` instance, a trace Module, or a dict of
            ``{name: ParameterNode | trainable bundled function}``. None with ``parameters``, or
            to open a study for reading only.
        evaluate: ``evaluate(agent) -> Evaluation``, or ``evaluate(agent, trial)`` to sample the
            agent's own knobs (``trial.suggest_*``) and prune in the same trial (see
            :class:`~trace_optuna.TraceObjective`); with ``trainset``, ``run(agent, example)
            -> Evaluation`` scoring one example. None opens a study for reading only.
        llm: The optimizer's model: a litellm model string (``"openai/gpt-4o-mini"``;
            ``"simulated/feedback-follower"`` offline) or a :class:`~trace_optuna.LLM`.
        agent_llm: The agent's own model, as ``llm``: while ``evaluate`` runs, every call to a
            Trace model (``call_llm``, ``opto.utils.llm.LLM()``, also one the agent built in
            ``__init__``) is answered by it instead of ``TRACE_LITELLM_MODEL``'s, and recorded
            per trial apart from the optimizer's (``trace:agent_llm``); costs count both. None
            leaves the agent's calls alone (and unrecorded).
        evaluate_form: ``"agent"`` calls ``evaluate(agent)``, ``"agent_trial"`` calls
            ``evaluate(agent, trial)``. None decides by ``evaluate``'s required positional
            parameters: one is ``"agent"``, two is ``"agent_trial"`` (a second parameter with a
            default, like ``verbose=False``, is never given the trial).
        parameters: Instead of ``agent``: the paths of a shared
            :class:`~trace_optuna.ParameterSet` the study optimizes (``team.select("agent1.*")``);
            every other parameter takes its newest value in the set's registry.
        on_conflict: With ``parameters``: what a trial does when another study published one of
            its paths since it started: ``"reevaluate"`` its changes on the newer values and
            publish if still better, or ``"skip"`` publishing.
        edited_start: What a reopened study does when the agent's starting values are in none
            of its trials (the program was edited since): ``"evaluate"`` them as a new root
            trial (strategy ``baseline``, no parents) so the study can build on them, or
            ``"refuse"`` to reopen it.
        strategies: A strategy name, a :class:`~trace_optuna.Strategy`, or a list of them; the
            trial's ``strategy`` parameter picks one. Fixed for the life of a study.
        optimizer: The optimizer settings a Trace user gives ``OptoPrime`` (``objective``,
            ``max_tokens``, ``include_example``, ``ignore_extraction_error``), given once for
            every strategy's prompts: a :class:`~trace_optuna.OptimizerSettings` or a dict of
            its settings. None: Trace's defaults.
        direction: ``"maximize"`` (the default) or ``"minimize"`` the score, or an Optuna
            ``StudyDirection``.
        directions: Instead of ``direction``, for a multi-objective study: one direction per
            objective; ``evaluate`` then returns ``Evaluation(score=[...])``.
        sampler: An Optuna sampler, or a function returning one (each worker process builds its
            own). None is :class:`~trace_optuna.samplers.StrategyBandit` seeded with ``seed``.
        pruner: An Optuna pruner for ``evaluate(agent, trial)``'s ``trial.should_prune()``;
            None is Optuna's default (``MedianPruner``).
        target: Stop once the study's best score reaches this (``>=`` when maximizing, ``<=``
            when minimizing): every worker stops after its running trial, and ``optimize`` on a
            study already there runs nothing. Single-objective studies only.
        seed: Recorded in the study; seeds the default sampler and each trial's random choices.
        error_score: The score of a candidate that fails, its code or ``evaluate`` raising on
            it (one number per direction in a multi-objective study); None fails such trials.
            Either way the error's message is its feedback, the study remembers the failure
            (the candidate is never evaluated again, unless the failure was transient: see
            :func:`trace_optuna.runner.is_transient`), and a failed candidate never ranks above
            a working one of equal score.
        repairs: How many repair steps a trial takes when its candidate's code raises, an int
            >= 0: as in Trace's loops, OptoPrime gets the exception node's graph with the
            error as feedback and proposes a fix, which is evaluated in the same trial (its
            failed attempts stay in ``trace:evaluated``). 0: none; the failure is still
            remembered and shown to later steps.
        selector: How strategies pick among candidates: ``"score"`` or ``"llm"`` (a pairwise
            LLM preference judge, for tasks without a meaningful numeric score).
        max_feedback_chars: The longest feedback text kept from one run of ``evaluate``; longer
            feedback is cut (the cut is said at its end and logged) before it is stored or sent
            to the LLM, so one huge feedback neither bloats the database nor the prompt.
        evaluate_timeout: Seconds one run of ``evaluate`` may take; a run that takes longer is
            interrupted (``EvaluationTimeout`` is raised inside it) and the trial fails with that
            reason. None: no limit. Needs the main thread (a Unix timer signal).
        heartbeat_interval: Seconds between heartbeats of a running trial, so that a trial whose
            worker died is marked FAIL and re-run by another worker; None turns it off. Applies
            to storages given as URLs.
        grace_period: Seconds without a heartbeat before a trial counts as dead; None is twice
            ``heartbeat_interval``.
        max_retry: How often a dead (or interrupted) worker's trial is re-run; None: no limit.
        artifact_dir: A directory for the study's artifacts (long LLM prompts and responses);
            recorded in the study, so ``trace-optuna dashboard`` serves it.
        artifact_store: Any Optuna artifact store instead of ``artifact_dir``.
        figure_interval: Seconds between refreshes of the figures saved into the study for
            optuna-dashboard, by all workers together; None saves none.
        stop_isolation: How the ``stop`` strategy's LLM-written improver must be isolated:
            ``"required"`` (the default) refuses to start a study or worker with ``stop`` on a
            machine that cannot set up every layer of :data:`trace_optuna.sandbox.LAYERS`
            (no network, a read-only file system but its temporary directory, no view of the
            worker, no new process), with an error saying what is missing and how to enable
            it; ``"none"`` opts out: the layers the machine supports are still used, and the
            opt-out is recorded in the study (``trace:stop_isolation``) and in each STOP
            trial. ``trace-optuna doctor`` shows what a machine supports.
        trainset: A :class:`~trace_optuna.Dataset` (or a list of examples) to optimize over.
            Given, ``evaluate`` is ``run(agent, example) -> Evaluation`` for one example and
            each trial is a step on a minibatch of it (see :mod:`trace_optuna.dataset`): the
            parent runs on the minibatch, its per-example feedback reaches the strategy as one
            backward pass, and the candidate is validated only if it is not worse there.
            Single-objective studies only; ``evaluate`` takes no trial.
        valset: The examples a candidate is validated on (the trial's value is their mean);
            None: the training set. Needs ``trainset``.
        testset: Examples scored once, for the best candidate, when ``optimize`` returns and
            by ``study.evaluate_test()``; never read by a trial. Needs ``trainset``.
        minibatch_size: Training examples per step, an int from 1 to ``len(trainset)``; None:
            8, or the whole training set when smaller. Validation runs in chunks of this size.
        budget: A study-wide budget (:class:`trace_optuna.Budget`: dollars, evaluations of
            examples, LLM calls), counting every worker's spend as the database holds it,
            checked before each trial and each validation chunk. When it is spent, the trial
            under way ends PRUNED with the reason in its record, ``optimize`` returns, the
            study's ``trace:budget_exhausted`` says why, and later ``optimize`` calls start no
            trial. ``evaluations`` needs ``trainset``. None: no budget.
        parent_selection: Where a dataset study's greedy steps start: ``"best"``, the best
            validation mean; ``"pareto"``, a candidate best on at least one validation example
            (GEPA's instance front), drawn with weights = how many examples it leads.
        dashboard_notes: Write each trial's Markdown note for optuna-dashboard (study system
            attributes, in the record's one write). False writes none, so a trial writes
            nothing to its study's rows (each such write waits on, and holds, a lock on the
            study row that Optuna's trial creation takes); every attribute stays readable.

    Raises:
        ConfigurationError: Naming the option and the rule it breaks.

    Example:
        >>> from trace_optuna import demo
        >>> config = Config(agent=demo.make_agent, evaluate=demo.evaluate, llm=demo.DEMO_LLM)
        >>> config.study_directions()
        [<StudyDirection.MAXIMIZE: 2>]
        >>> Config(selector="best")
        Traceback (most recent call last):
        ...
        trace_optuna.exceptions.ConfigurationError: selector must be one of ['score', 'llm'], ...
    """

    agent: Any = None
    evaluate: Callable[..., Evaluation] | None = None
    llm: str | LLM | None = None
    agent_llm: str | LLM | None = None
    evaluate_form: EvaluateForm | None = None
    parameters: Selection | None = None
    on_conflict: OnConflict = "reevaluate"
    edited_start: EditedStart = "evaluate"
    strategies: Any = ("optoprime",)
    optimizer: OptimizerSettings | Mapping[str, Any] | None = None
    direction: DirectionLike | None = None
    directions: Sequence[DirectionLike] | None = None
    sampler: optuna.samplers.BaseSampler | Callable[[], optuna.samplers.BaseSampler] | None = None
    pruner: optuna.pruners.BasePruner | None = None
    target: float | None = None
    seed: int | None = None
    error_score: float | Sequence[float] | None = None
    repairs: int = 1
    selector: SelectorKind = "score"
    max_feedback_chars: int = 20_000
    evaluate_timeout: float | None = None
    heartbeat_interval: int | None = HEARTBEAT_INTERVAL_S
    grace_period: int | None = None
    max_retry: int | None = MAX_RETRY
    artifact_dir: str | os.PathLike[str] | None = None
    artifact_store: ArtifactStore | None = None
    figure_interval: float | None = DEFAULT_FIGURE_INTERVAL
    stop_isolation: StopIsolation = "required"
    dashboard_notes: bool = True
    trainset: Dataset | Sequence[Any] | None = None
    valset: Dataset | Sequence[Any] | None = None
    testset: Dataset | Sequence[Any] | None = None
    minibatch_size: int | None = None
    budget: Budget | None = None
    parent_selection: ParentSelection = "best"

    def __post_init__(self) -> None:
        _one_of("evaluate_form", self.evaluate_form, ("agent", "agent_trial"), none=True)
        _one_of("on_conflict", self.on_conflict, ("reevaluate", "skip"))
        _one_of("selector", self.selector, ("score", "llm"))
        _one_of("edited_start", self.edited_start, ("evaluate", "refuse"))
        _one_of("stop_isolation", self.stop_isolation, ("required", "none"))
        if self.evaluate is not None and not callable(self.evaluate):
            raise ConfigurationError(
                "evaluate must be a function evaluate(agent) or evaluate(agent, trial) -> "
                f"Evaluation, got {type(self.evaluate).__name__}."
            )
        self._check_llm()
        object.__setattr__(self, "optimizer", OptimizerSettings.coerce(self.optimizer))
        self._check_objective_given_once()
        self.study_directions()  # checks direction/directions
        self._check_sampler()
        if self.pruner is not None and not isinstance(self.pruner, optuna.pruners.BasePruner):
            raise ConfigurationError(
                "pruner must be an Optuna pruner (e.g. optuna.pruners.MedianPruner()) or None, "
                f"got {self.pruner!r}."
            )
        if self.seed is not None:
            object.__setattr__(self, "seed", _integer("seed", self.seed, minimum=None))
        if self.target is not None:
            if len(self.study_directions()) > 1:
                raise ConfigurationError(
                    "target needs a single-objective study (one score to reach); this study "
                    f"has directions {self.directions!r}."
                )
            if isinstance(self.target, (list, tuple)):
                raise ConfigurationError(f"target must be one number, got {self.target!r}.")
            object.__setattr__(self, "target", check_score(self.target, "target"))
        if self.error_score is not None:
            object.__setattr__(self, "error_score", check_score(self.error_score, "error_score"))
        object.__setattr__(self, "repairs", _integer("repairs", self.repairs, minimum=0))
        object.__setattr__(
            self,
            "max_feedback_chars",
            _integer("max_feedback_chars", self.max_feedback_chars, minimum=100),
        )
        _seconds("evaluate_timeout", self.evaluate_timeout, positive=True)
        for name in ("heartbeat_interval", "grace_period"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _integer(name, value, minimum=1))
        if self.max_retry is not None:
            object.__setattr__(self, "max_retry", _integer("max_retry", self.max_retry, minimum=0))
        self._check_artifacts()
        _seconds("figure_interval", self.figure_interval, positive=False)
        if not isinstance(self.dashboard_notes, bool):
            raise ConfigurationError(
                f"dashboard_notes must be True or False, got {self.dashboard_notes!r}."
            )
        self._check_datasets()
        self._check_budget()

    @classmethod
    def from_options(
        cls, config: Config | None, options: Mapping[str, Any], caller: str
    ) -> Config:
        """``config`` with ``options`` applied: what ``create_study(config=..., **options)`` takes.

        Raises:
            ConfigurationError: On an option that is not a field (with the nearest names), or a
                ``config`` that is not a ``Config``.
        """
        if config is not None and not isinstance(config, Config):
            raise ConfigurationError(
                f"{caller}(config=...) must be a trace_optuna.Config, got {type(config).__name__}."
            )
        fields = [field.name for field in dataclasses.fields(cls)]
        for name in options:
            if name not in fields:
                near = difflib.get_close_matches(name, fields, n=3)
                hint = f" Did you mean {', '.join(near)}?" if near else ""
                raise ConfigurationError(
                    f"{caller}() got an unknown option {name!r}.{hint} Options are the fields "
                    f"of trace_optuna.Config: {', '.join(fields)}."
                )
        if config is None:
            return cls(**options)
        return dataclasses.replace(config, **options) if options else config

    def study_directions(self) -> list[StudyDirection]:
        """The study's directions from ``direction`` or ``directions``.

        Raises:
            ConfigurationError: If both are given, or a value is not a direction.
        """
        if self.direction is not None and self.directions is not None:
            raise ConfigurationError(
                "Give direction= (one objective) or directions= (one per objective), not both; "
                f"got direction={self.direction!r} and directions={self.directions!r}."
            )
        if self.directions is None:
            return [
                _direction(
                    "direction",
                    StudyDirection.MAXIMIZE if self.direction is None else self.direction,
                )
            ]
        if (
            isinstance(self.directions, (str, StudyDirection))
            or not isinstance(self.directions, Sequence)
            or not self.directions
        ):
            raise ConfigurationError(
                "directions must be a non-empty list of 'maximize'/'minimize', one per "
                f"objective, got {self.directions!r}."
            )
        return [_direction("directions", value) for value in self.directions]

    def build_sampler(self) -> optuna.samplers.BaseSampler | None:
        """The sampler (built by ``sampler()`` when a function was given); None: the default."""
        if self.sampler is None or isinstance(self.sampler, optuna.samplers.BaseSampler):
            return self.sampler
        built = self.sampler()
        if not isinstance(built, optuna.samplers.BaseSampler):
            raise ConfigurationError(
                f"sampler() must return an Optuna sampler, got {type(built).__name__}."
            )
        _check_sampler_fits(built)
        return built

    def optimizer_settings(self) -> OptimizerSettings:
        """The ``optimizer`` option as :class:`~trace_optuna.OptimizerSettings`."""
        return OptimizerSettings.coerce(self.optimizer)

    def for_reading(self) -> bool:
        """Whether this config can only read a study (no ``evaluate`` or no ``llm``)."""
        return self.evaluate is None or self.llm is None

    def _check_llm(self) -> None:
        from trace_optuna.llm import LLM  # cheap: litellm comes when an LLM is built

        for name in ("llm", "agent_llm"):
            value = getattr(self, name)
            if value is not None and not (
                isinstance(value, LLM) or (isinstance(value, str) and value.strip())
            ):
                raise ConfigurationError(
                    f"{name} must be a litellm model string (e.g. 'openai/gpt-4o-mini', or "
                    f"'simulated/feedback-follower' offline) or a trace_optuna.LLM; got "
                    f"{value!r}."
                )

    def _check_objective_given_once(self) -> None:
        """Refuse an ``OptoPrimeStrategy(objective=...)`` that differs from ``optimizer``'s."""
        from trace_optuna.strategies.optoprime import OptoPrimeStrategy

        objective = self.optimizer_settings().objective
        strategies = self.strategies
        listed = strategies if isinstance(strategies, (list, tuple)) else [strategies]
        for strategy in listed:
            own = getattr(strategy, "objective", None)
            if isinstance(strategy, OptoPrimeStrategy) and None not in (own, objective):
                if own != objective:
                    raise ConfigurationError(
                        f"Two objectives: OptoPrimeStrategy(objective={own!r}) and optimizer "
                        f"objective {objective!r}. Give it once, in optimizer={{'objective': "
                        "...}: it reaches every strategy's prompts."
                    )

    def _check_sampler(self) -> None:
        sampler = self.sampler
        if isinstance(sampler, optuna.samplers.BaseSampler):
            _check_sampler_fits(sampler)
            return
        if sampler is None:
            return
        if isinstance(sampler, str):
            raise ConfigurationError(
                f"sampler must be an Optuna sampler object, not the string {sampler!r}: e.g. "
                "sampler=optuna.samplers.TPESampler(seed=0), or None for the default "
                "StrategyBandit."
            )
        if isinstance(sampler, type) or not callable(sampler):
            raise ConfigurationError(
                "sampler must be an Optuna sampler instance or a function returning one (e.g. "
                f"optuna.samplers.TPESampler(), not the class), got {sampler!r}."
            )

    def _check_datasets(self) -> None:
        from trace_optuna import dataset

        _one_of("parent_selection", self.parent_selection, dataset.PARENT_SELECTIONS)
        for name in ("trainset", "valset", "testset"):
            object.__setattr__(self, name, dataset.coerce(name, getattr(self, name)))
        train = self.trainset
        if train is None:
            given = [
                name
                for name in ("valset", "testset", "minibatch_size")
                if getattr(self, name) is not None
            ]
            if self.parent_selection != "best":
                given.append("parent_selection")
            if given:
                raise ConfigurationError(
                    f"{', '.join(given)} need(s) trainset=: the dataset form of a study "
                    "(evaluate as run(agent, example)) is chosen by passing trainset."
                )
            return
        assert isinstance(train, dataset.Dataset)
        if self.minibatch_size is not None:
            size = _integer("minibatch_size", self.minibatch_size, minimum=1)
            if size > len(train):
                raise ConfigurationError(
                    f"minibatch_size must be from 1 to the training set's size {len(train)}, "
                    f"got {size}."
                )
            object.__setattr__(self, "minibatch_size", size)
        dataset.check_splits(
            {"trainset": train, "valset": self.valset, "testset": self.testset}  # type: ignore[dict-item]
        )
        if len(self.study_directions()) > 1:
            raise ConfigurationError(
                "trainset needs a single-objective study: a candidate's score is the mean of "
                f"its examples' scores; this study has directions {self.directions!r}."
            )
        if self.evaluate_form == "agent_trial":
            raise ConfigurationError(
                "evaluate_form='agent_trial' cannot be used with trainset: evaluate is then "
                "run(agent, example), called once per example."
            )
        if self.evaluate is not None:
            dataset.check_run_signature(self.evaluate)

    def _check_budget(self) -> None:
        from trace_optuna.budget import Budget

        if self.budget is None:
            return
        if not isinstance(self.budget, Budget):
            raise ConfigurationError(
                "budget must be a trace_optuna.Budget(usd=..., evaluations=..., llm_calls=...) "
                f"or None, got {type(self.budget).__name__}: {self.budget!r}."
            )
        if self.budget.evaluations is not None and self.trainset is None:
            raise ConfigurationError(
                f"budget evaluations={self.budget.evaluations} counts runs of examples, which "
                "only a dataset study makes: give trainset=, or a budget in usd or llm_calls."
            )

    def _check_artifacts(self) -> None:
        if self.artifact_dir is not None and self.artifact_store is not None:
            raise ConfigurationError(
                "Give artifact_dir= (a directory, for a FileSystemArtifactStore) or "
                "artifact_store= (any Optuna artifact store), not both."
            )
        if self.artifact_dir is not None and not isinstance(self.artifact_dir, (str, os.PathLike)):
            raise ConfigurationError(
                "artifact_dir must be a directory path (str or os.PathLike), got "
                f"{type(self.artifact_dir).__name__} {self.artifact_dir!r}."
            )
        store = self.artifact_store
        if store is not None and not all(
            callable(getattr(store, method, None)) for method in ("open_reader", "write")
        ):
            raise ConfigurationError(
                "artifact_store must be an Optuna artifact store (with open_reader and write, "
                "e.g. optuna.artifacts.FileSystemArtifactStore), got "
                f"{type(store).__name__}."
            )


def _check_sampler_fits(sampler: optuna.samplers.BaseSampler) -> None:
    """Refuse samplers that enumerate a fixed search space: a Trace study has none."""
    if isinstance(sampler, (optuna.samplers.BruteForceSampler, optuna.samplers.GridSampler)):
        raise ConfigurationError(
            f"sampler={type(sampler).__name__} enumerates a fixed search space, but a Trace "
            "study has none: the baseline trial has no params and each strategy brings its own "
            "settings (Optuna would stop the study after its first trial). Use the default "
            "StrategyBandit, or optuna.samplers.TPESampler/RandomSampler."
        )


def _one_of(name: str, value: Any, choices: tuple[str, ...], none: bool = False) -> None:
    if value is None and none:
        return
    if not isinstance(value, str) or value not in choices:
        raise ConfigurationError(
            f"{name} must be one of {list(choices)}"
            + (" or None" if none else "")
            + f", got {value!r}."
        )


def _direction(name: str, value: Any) -> StudyDirection:
    if isinstance(value, StudyDirection) and value != StudyDirection.NOT_SET:
        return value
    if isinstance(value, str) and value.lower() in ("maximize", "minimize"):
        return StudyDirection[value.upper()]
    raise ConfigurationError(
        f"{name} must be 'maximize' or 'minimize'"
        + (" for each objective" if name == "directions" else "")
        + f" (or an optuna StudyDirection), got {value!r}."
    )


def _integer(name: str, value: Any, *, minimum: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigurationError(f"{name} must be an int, got {type(value).__name__} {value!r}.")
    if minimum is not None and value < minimum:
        raise ConfigurationError(f"{name} must be >= {minimum}, got {value!r}.")
    return int(value)


def _seconds(name: str, value: Any, *, positive: bool) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != value:
        raise ConfigurationError(
            f"{name} must be a number of seconds or None, got {type(value).__name__} {value!r}."
        )
    if value < 0 or (positive and value == 0):
        raise ConfigurationError(
            f"{name} must be a number of seconds {'> 0' if positive else '>= 0'} or None, "
            f"got {value!r}."
        )


def check_optimize_arguments(n_trials: Any, timeout: Any, callbacks: Any) -> list[Any]:
    """Check ``optimize``'s own arguments; return the callbacks as a list.

    Raises:
        ConfigurationError: On a negative, zero or fractional ``n_trials``, a negative ``timeout``,
            or a callback that is not callable.
    """
    if n_trials is not None:
        if isinstance(n_trials, bool) or not isinstance(n_trials, numbers.Integral):
            raise ConfigurationError(
                f"n_trials must be an int >= 1 or None, got {type(n_trials).__name__} "
                f"{n_trials!r}."
            )
        if n_trials < 1:
            raise ConfigurationError(f"n_trials must be >= 1 or None, got {n_trials!r}.")
    _seconds("timeout", timeout, positive=True)
    listed = list(callbacks or ())
    for index, callback in enumerate(listed):
        if not callable(callback):
            raise ConfigurationError(
                f"callbacks[{index}] must be callable as callback(study, frozen_trial), got "
                f"{type(callback).__name__} {callback!r}."
            )
    return listed
