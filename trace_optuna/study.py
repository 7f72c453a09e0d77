"""``TraceStudy``: a real ``optuna.Study`` plus what Trace needs; ``create_study``, ``load_study``.

The Optuna study is exposed as ``study.optuna``; nothing is hidden behind the façade, and the
stored records are plain Optuna trials that any Optuna tool reads.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
import logging
import os
import time
from typing import TYPE_CHECKING
from typing import Any

import optuna
from optuna.study import Study
from optuna.study import StudyDirection

from trace_optuna import dashboard  # optuna-dashboard: figures, artifacts, description
from trace_optuna import records
from trace_optuna.coordination import coordinator_for
from trace_optuna.exceptions import ConfigurationError
from trace_optuna.exceptions import RecordError
from trace_optuna.exceptions import TrialFailed
from trace_optuna.population import Population
from trace_optuna.samplers import StrategyBandit
from trace_optuna.snapshots import restore
from trace_optuna.step import TraceObjective
from trace_optuna.step import threads_refused
from trace_optuna.storage import HEARTBEAT_INTERVAL_S
from trace_optuna.storage import MAX_RETRY
from trace_optuna.storage import resolve_storage

if TYPE_CHECKING:
    from collections.abc import Sequence

    from optuna.artifacts._protocol import ArtifactStore
    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial

    from trace_optuna.evaluation import Evaluation
    from trace_optuna.llm import LLM
    from trace_optuna.records import TrialRecord
    from trace_optuna.registry import Selection

_logger = logging.getLogger(__name__)


class TraceStudy:
    """A Trace optimization stored as an Optuna study. Build one with :func:`create_study`.

    Args:
        study: The Optuna study holding the trials.
        objective: The step run for each trial.
    """

    def __init__(self, study: optuna.Study, objective: TraceObjective) -> None:
        self._study = study
        self._objective = objective
        # Seconds between refreshes of the figures saved for optuna-dashboard; None: none saved.
        self.figure_interval: float | None = dashboard.DEFAULT_FIGURE_INTERVAL

    @property
    def optuna(self) -> Study:
        """The underlying ``optuna.Study``, for everything Optuna already does."""
        return self._study

    @property
    def objective(self) -> TraceObjective:
        """The objective each trial runs; usable with ``optuna.Study.optimize`` directly."""
        return self._objective

    @property
    def study_name(self) -> str:
        return self._study.study_name

    def optimize(
        self,
        n_trials: int | None = None,
        timeout: float | None = None,
        *,
        callbacks: Iterable[Callable[[Study, FrozenTrial], None]] | None = None,
        catch: Iterable[type[Exception]] = (),
        gc_after_trial: bool = False,
        show_progress_bar: bool = False,
        n_jobs: int = 1,
    ) -> None:
        """Run ``n_trials`` more optimizer steps through Optuna's ``optimize``.

        A trial whose step fails (``evaluate`` raising, the LLM failing, no usable suggestion)
        is recorded as FAIL with its reason and the study goes on.

        Args:
            n_trials: How many trials to add (None with a timeout: until the timeout).
            timeout: Stop starting new trials after this many seconds.
            callbacks: Optuna callbacks, called after each trial.
            catch: More exception types to record as FAIL instead of raising.
            gc_after_trial: Run the garbage collector after each trial.
            show_progress_bar: Show Optuna's progress bar.
            n_jobs: Must be 1. Trace keeps its graph in process-wide state that threads
                corrupt; run several processes against one storage instead.

        Raises:
            ConfigurationError: If ``n_jobs`` is not 1.
        """
        if n_jobs != 1:
            raise ConfigurationError(
                threads_refused(f"n_jobs={n_jobs} would run Trace steps in threads")
            )
        # Figures for optuna-dashboard, saved at most once per interval by all workers together.
        figures = dashboard.FigureRefresher(
            self.figure_interval, self._objective.coordinator_for(self._study)
        )
        _optimize(
            self._study,
            self._objective,
            n_trials=n_trials,
            timeout=timeout,
            catch=(TrialFailed, *catch),
            callbacks=[*(callbacks or ()), figures],
            gc_after_trial=gc_after_trial,
            show_progress_bar=show_progress_bar,
        )
        figures.refresh(self._study)  # unless a worker saved them within the interval

    @property
    def trials(self) -> list[FrozenTrial]:
        """All trials, as Optuna reports them."""
        return self._study.trials

    @property
    def best_trial(self) -> FrozenTrial:
        """The completed trial with the best score (single-objective studies only).

        Raises:
            ConfigurationError: In a multi-objective study: use :attr:`best_trials`.
        """
        self._single_objective("best_trial")
        best = self._population().best()
        if best is None:
            raise ValueError(f"Study {self.study_name!r} has no completed trial yet.")
        return best

    @property
    def best_value(self) -> float:
        """The best score (single-objective studies only)."""
        self._single_objective("best_value")
        value = self.best_trial.value
        assert value is not None
        return value

    @property
    def best_snapshot(self) -> dict[str, Any]:
        """The best trial's parameters, ``{path: value}`` (single-objective studies only)."""
        self._single_objective("best_snapshot")
        return self._population().snapshot(self.best_trial.number)

    @property
    def best_trials(self) -> list[FrozenTrial]:
        """The Pareto front: completed candidates no other candidate dominates, in trial order.

        As Optuna's ``Study.best_trials``, but a trial that reused an earlier identical
        candidate's score is left out. In a single-objective study: every candidate with the
        best score. ``study.record(trial.number).snapshot`` holds each one's parameters.
        """
        return self._population().pareto_front()

    def _single_objective(self, name: str) -> None:
        directions = self._study.directions
        if len(directions) > 1:
            raise ConfigurationError(
                f"Study {self.study_name!r} has {len(directions)} objectives "
                f"({[d.name.lower() for d in directions]}): there is no single best trial, so "
                f"no {name}. Use study.best_trials (the Pareto front) and "
                "study.record(trial.number).snapshot."
            )

    def load_best(self) -> Any:
        """A fresh agent (built by the study's agent function) holding the best parameters."""
        agent = self._objective.make_agent()
        restore(agent, self.best_snapshot)
        return agent

    def record(self, number: int) -> TrialRecord:
        """What trial ``number`` holds, decoded (see :class:`~trace_optuna.TrialRecord`)."""
        population = self._population()
        trial = population.trial(number)
        try:
            values = population.snapshot(number)
        except RecordError:
            if records.SNAPSHOT in trial.user_attrs:
                raise  # a snapshot that is there but unreadable is an error, not "none"
            values = {}
        return records.build_record(trial, values)

    def _population(self) -> Population:
        return self._objective.population(self._study)

    def __repr__(self) -> str:
        return f"TraceStudy(study_name={self.study_name!r})"


def create_study(
    *,
    agent: Any = None,
    evaluate: Callable[..., Evaluation],
    llm: str | LLM,
    parameters: Selection | None = None,
    on_conflict: str = "reevaluate",
    study_name: str | None = None,
    storage: str | BaseStorage | None = None,
    direction: str | None = None,
    directions: Sequence[str] | None = None,
    load_if_exists: bool = False,
    strategies: Any = ("optoprime",),
    sampler: optuna.samplers.BaseSampler | None = None,
    seed: int | None = None,
    error_score: float | Sequence[float] | None = None,
    selector: str = "score",
    heartbeat_interval: int | None = HEARTBEAT_INTERVAL_S,
    grace_period: int | None = None,
    max_retry: int | None = MAX_RETRY,
    artifact_dir: str | os.PathLike[str] | None = None,
    artifact_store: ArtifactStore | None = None,
    figure_interval: float | None = dashboard.DEFAULT_FIGURE_INTERVAL,
) -> TraceStudy:
    """Create (or, with ``load_if_exists``, reopen) a study whose trials are Trace steps.

    Args:
        agent: A function that builds a fresh agent (each process calls it once), or an
            agent: a ``@trace.model`` instance, a trace Module, or a dict of
            ``{name: ParameterNode | trainable bundled function}``.
        evaluate: ``evaluate(agent) -> Evaluation``, or ``evaluate(agent, trial)`` to sample
            the agent's own knobs and prune in the same trial (see
            :class:`~trace_optuna.TraceObjective`).
        llm: A litellm model string (``"openai/gpt-4o-mini"``;
            ``"simulated/feedback-follower"`` offline) or a :class:`~trace_optuna.LLM`.
        parameters: Instead of ``agent``: the paths of a shared
            :class:`~trace_optuna.ParameterSet` this study optimizes
            (``team.select("agent1.*")``); every other parameter takes its newest value in the
            set's registry in the same storage, and improvements are published there (see
            :mod:`trace_optuna.registry`).
        on_conflict: With ``parameters``: what a trial does when another study published one
            of this study's paths since the trial started: ``"reevaluate"`` its changes on the
            newer values and publish if still better, or ``"skip"`` publishing.
        study_name: The study's name; Optuna makes one up when None.
        storage: A storage URL or object; None is the SQLite file ``trace_optuna.db``.
        direction: ``"maximize"`` (the default) or ``"minimize"`` the score.
        directions: Instead of ``direction``, for a multi-objective study: one
            ``"maximize"``/``"minimize"`` per objective, e.g. ``["maximize", "minimize"]``;
            ``evaluate`` then returns ``Evaluation(score=[...])`` with one number per
            direction, greedy steps start from the Pareto front
            (:meth:`~trace_optuna.population.Population.best`), and ``best_trials`` replaces
            ``best_trial``. Strategies that need one number (``stop``) are refused.
        load_if_exists: Continue an existing study of that name instead of failing.
        strategies: Strategy names or instances the ``strategy`` parameter chooses from.
            Fixed for the life of a study.
        sampler: The Optuna sampler; None is :class:`~trace_optuna.samplers.StrategyBandit`
            seeded with ``seed`` (a bandit over strategies, TPE for their settings).
        seed: Recorded in the study and used to seed the default sampler.
        error_score: The score of a candidate whose code raises (one number per direction in
            a multi-objective study); None fails such trials.
        selector: How strategies pick among candidates: ``"score"`` or ``"llm"`` (a pairwise
            LLM preference judge, for tasks without a meaningful numeric score).
        heartbeat_interval: Seconds between heartbeats of a running trial, so that a trial
            whose worker died is marked FAIL and re-run by another worker (Optuna's heartbeat,
            on every storage given as a URL); None turns it off. A storage object you build
            yourself keeps its own settings (build one with
            :func:`trace_optuna.storage.resolve_storage` to get them).
        grace_period: Seconds without a heartbeat before a trial counts as dead; None is
            twice ``heartbeat_interval``.
        max_retry: How often a dead worker's trial is re-run (None: without limit).
        artifact_dir: A directory for the study's artifacts (long LLM prompts and responses);
            recorded in the study, so ``trace-optuna dashboard`` serves it.
        artifact_store: Any Optuna artifact store instead of ``artifact_dir``.
        figure_interval: Seconds between refreshes of the figures saved into the study for
            optuna-dashboard, by all workers together: after a trial or when ``optimize``
            returns, they are saved if no worker saved them within the interval; None: none.

    Returns:
        The study.

    Raises:
        ConfigurationError: On bad arguments, an unknown storage, or when reopening a study
            with another agent or strategy list.
        SnapshotError: If a parameter value is not JSON-able (names the parameter path).
        optuna.exceptions.DuplicatedStudyError: If the study exists and ``load_if_exists``
            is False.

    Example:
        >>> import trace_optuna as to
        >>> from trace_optuna import demo
        >>> study = to.create_study(agent=demo.make_agent, evaluate=demo.evaluate,
        ...                         llm=demo.DEMO_LLM, storage="sqlite:///:memory:")
        >>> study.optimize(n_trials=3)
        >>> study.best_value > 0
        True
    """
    study_directions = _directions(direction, directions)
    objective = TraceObjective(
        agent,
        evaluate,
        llm,
        parameters=parameters,
        on_conflict=on_conflict,
        strategies=strategies,
        error_score=error_score,
        selector=selector,
        seed=seed,
    )
    # Refused before the study is made: a strategy needing one number, an error_score
    # without one number per direction.
    objective.check_directions(study_directions, study_name or "(new)")
    resolved = resolve_storage(
        storage,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        max_retry=max_retry,
    )
    study = optuna.create_study(
        study_name=study_name,
        storage=resolved,
        directions=study_directions,
        sampler=sampler if sampler is not None else StrategyBandit(seed=seed),
        load_if_exists=load_if_exists,
    )
    return _assemble(
        study,
        objective,
        resolved,
        artifact_dir=artifact_dir,
        artifact_store=artifact_store,
        figure_interval=figure_interval,
    )


def load_study(
    *,
    study_name: str,
    storage: str | BaseStorage | None,
    agent: Any = None,
    evaluate: Callable[..., Evaluation],
    llm: str | LLM,
    parameters: Selection | None = None,
    on_conflict: str = "reevaluate",
    strategies: Any = ("optoprime",),
    sampler: optuna.samplers.BaseSampler | None = None,
    error_score: float | Sequence[float] | None = None,
    selector: str = "score",
    heartbeat_interval: int | None = HEARTBEAT_INTERVAL_S,
    grace_period: int | None = None,
    max_retry: int | None = MAX_RETRY,
    artifact_dir: str | os.PathLike[str] | None = None,
    artifact_store: ArtifactStore | None = None,
    figure_interval: float | None = dashboard.DEFAULT_FIGURE_INTERVAL,
) -> TraceStudy:
    """Open an existing study to continue it or read its records.

    Args:
        study_name: The study's name.
        storage: Its storage URL or object.
        agent: As for :func:`create_study`; it must have the study's parameter paths.
        evaluate: As for :func:`create_study`.
        llm: As for :func:`create_study`.
        parameters: Instead of ``agent``, as for :func:`create_study`: the same selection.
        on_conflict: As for :func:`create_study`.
        strategies: Must be the strategy list the study was created with.
        sampler: The Optuna sampler for further trials; None is a StrategyBandit seeded with
            the study's stored seed.
        error_score: As for :func:`create_study`.
        selector: As for :func:`create_study`.
        heartbeat_interval: As for :func:`create_study`.
        grace_period: As for :func:`create_study`.
        max_retry: As for :func:`create_study`.
        artifact_dir: As for :func:`create_study`; None uses the directory the study
            recorded, if any.
        artifact_store: As for :func:`create_study`.
        figure_interval: As for :func:`create_study`.

    Raises:
        ConfigurationError: If the study does not exist, or the agent or strategies differ.
    """
    resolved = resolve_storage(
        storage,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        max_retry=max_retry,
    )
    try:
        study = optuna.load_study(study_name=study_name, storage=resolved)
    except KeyError:
        names = [summary.study_name for summary in optuna.get_all_study_summaries(resolved)]
        raise ConfigurationError(
            f"No study named {study_name!r} in this storage; it has {sorted(names)}. Use "
            "create_study(..., load_if_exists=True) to create it."
        ) from None
    seed = study.user_attrs.get(records.STUDY_SEED)
    study.sampler = sampler if sampler is not None else StrategyBandit(seed=seed)
    objective = TraceObjective(
        agent,
        evaluate,
        llm,
        parameters=parameters,
        on_conflict=on_conflict,
        strategies=strategies,
        error_score=error_score,
        selector=selector,
        seed=seed,
    )
    return _assemble(
        study,
        objective,
        resolved,
        artifact_dir=artifact_dir,
        artifact_store=artifact_store,
        figure_interval=figure_interval,
    )


def _assemble(
    study: optuna.Study,
    objective: TraceObjective,
    resolved: BaseStorage,
    *,
    artifact_dir: str | os.PathLike[str] | None,
    artifact_store: ArtifactStore | None,
    figure_interval: float | None,
) -> TraceStudy:
    """Bind the objective to the study, give it the storage's coordinator, wire the dashboard."""
    objective.bind(study)
    objective.coordinator = coordinator_for(resolved)
    return dashboard.wire(
        TraceStudy(study, objective), artifact_dir, artifact_store, figure_interval
    )


def _directions(direction: str | None, directions: Sequence[str] | None) -> list[StudyDirection]:
    """The study's directions from ``create_study``'s ``direction`` or ``directions``."""
    if direction is not None and directions is not None:
        raise ConfigurationError(
            "Give direction= (one objective) or directions= (one per objective), not both; got "
            f"direction={direction!r} and directions={directions!r}."
        )
    if directions is None:
        chosen = ["maximize" if direction is None else direction]
        name = "direction"
    else:
        if isinstance(directions, str) or not directions:
            raise ConfigurationError(
                "directions must be a non-empty list of 'maximize'/'minimize', one per "
                f"objective, got {directions!r}."
            )
        chosen = list(directions)
        name = "directions"
    for value in chosen:
        if value not in ("maximize", "minimize"):
            raise ConfigurationError(
                f"{name} must be 'maximize' or 'minimize'"
                + (" for each objective" if directions is not None else "")
                + f", got {value!r}."
            )
    return [StudyDirection[value.upper()] for value in chosen]


def _optimize(
    study: optuna.Study,
    objective: TraceObjective,
    *,
    n_trials: int | None,
    timeout: float | None,
    callbacks: list[Callable[[Study, FrozenTrial], None]],
    **kwargs: Any,
) -> None:
    """``study.optimize``, going on when another worker marked a trial of this one FAIL.

    That happens when this worker's heartbeat could not be written for longer than the grace
    period (a long database outage): the trial was re-queued elsewhere, and Optuna refuses to
    finish it here. The trial counts towards ``n_trials``.
    """
    finished = 0

    def count(study: Study, trial: FrozenTrial) -> None:
        nonlocal finished
        finished += 1

    started = time.monotonic()
    while True:
        remaining = None if n_trials is None else n_trials - finished
        left = None if timeout is None else timeout - (time.monotonic() - started)
        if (remaining is not None and remaining <= 0) or (left is not None and left <= 0):
            return
        try:
            study.optimize(
                objective,
                n_trials=remaining,
                timeout=left,
                callbacks=[*callbacks, count],
                **kwargs,
            )
            return
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError) as error:
            if not _taken_over(error):
                raise
            finished += 1
            _logger.warning(
                "Another worker marked a trial of this worker FAIL (its heartbeat was late) "
                "and re-queued it; going on. (%s)",
                error,
            )


def _taken_over(error: Exception) -> bool:
    if isinstance(error, optuna.exceptions.UpdateFinishedTrialError):
        return True
    return str(error).startswith("Cannot tell a ")  # Optuna's tell() of a finished trial
