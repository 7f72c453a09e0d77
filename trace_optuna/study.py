"""``TraceStudy``: a real ``optuna.Study`` plus what Trace needs; ``create_study``, ``load_study``.

The Optuna study is exposed as ``study.optuna``; nothing is hidden behind the façade, and the
stored records are plain Optuna trials that any Optuna tool reads. Every option of a study is a
field of :class:`~trace_optuna.Config`, checked there.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
import dataclasses
import logging
import time
from typing import TYPE_CHECKING
from typing import Any

import optuna
from optuna.study import Study
from optuna.study import StudyDirection
from optuna.trial import TrialState

from trace_optuna import budget
from trace_optuna import records
from trace_optuna.binding import check_requested_directions
from trace_optuna.config import Config
from trace_optuna.config import check_optimize_arguments
from trace_optuna.coordination import coordinator_for
from trace_optuna.example_rows import ExampleRow
from trace_optuna.example_rows import as_dataframe as to_dataframe
from trace_optuna.example_rows import example_rows
from trace_optuna.exceptions import ConfigurationError
from trace_optuna.exceptions import NoCompletedTrialError
from trace_optuna.exceptions import RecordError
from trace_optuna.exceptions import TrialFailed
from trace_optuna.observers import notify
from trace_optuna.population import Population
from trace_optuna.runner import agent_factory
from trace_optuna.samplers import StrategyBandit
from trace_optuna.snapshots import detach_module_functions
from trace_optuna.snapshots import keep_module_functions
from trace_optuna.snapshots import restore
from trace_optuna.step import TraceObjective
from trace_optuna.step import threads_refused
from trace_optuna.storage import RetryStaleTrialCallback
from trace_optuna.storage import check_study_name
from trace_optuna.storage import open_existing
from trace_optuna.storage import resolve_storage

if TYPE_CHECKING:
    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial
    import pandas as pd

    from trace_optuna.records import TrialRecord

_logger = logging.getLogger(__name__)


class TraceStudy:
    """A Trace optimization stored as an Optuna study. Build one with :func:`create_study`.

    Args:
        study: The Optuna study holding the trials.
        objective: The step run for each trial; None for a study opened for reading only.
        config: The study's options.
    """

    def __init__(
        self, study: optuna.Study, objective: TraceObjective | None, config: Config
    ) -> None:
        self._study = study
        self._objective = objective
        self.config = config
        self._reader: Population | None = None

    @property
    def optuna(self) -> Study:
        """The underlying ``optuna.Study``, for everything Optuna already does."""
        return self._study

    @property
    def objective(self) -> TraceObjective:
        """The objective each trial runs; usable with ``optuna.Study.optimize`` directly.

        Raises:
            ConfigurationError: For a study opened for reading only.
        """
        if self._objective is None:
            raise ConfigurationError(
                f"Study {self.study_name!r} was opened for reading only (no evaluate= or llm= "
                "was given): pass agent=, evaluate= and llm= to load_study to optimize it."
            )
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
        is recorded as FAIL with its reason and the study goes on. Trials that an earlier run
        left interrupted (Ctrl-C) are queued again first, as a dead worker's are. With a
        ``budget``, no trial starts once every worker's spend reached it, and a trial that
        finds it spent ends PRUNED and stops this call (the study's ``trace:budget_exhausted``
        says why).

        Args:
            n_trials: How many trials to add (None with a timeout: until the timeout).
            timeout: Stop starting new trials after this many seconds (a running trial is not
                stopped: ``evaluate_timeout`` bounds each evaluation).
            callbacks: Optuna callbacks, called after each trial.
            catch: More exception types to record as FAIL instead of raising.
            gc_after_trial: Run the garbage collector after each trial.
            show_progress_bar: Show Optuna's progress bar.
            n_jobs: Must be 1. Trace keeps its graph in process-wide state that threads
                corrupt; run several processes against one storage instead.

        Raises:
            ConfigurationError: On a wrong argument (``n_trials`` not an int >= 1, a negative
                ``timeout``, a callback that is not callable, ``n_jobs`` not 1), or for a
                study opened for reading only.
        """
        listed = check_optimize_arguments(n_trials, timeout, callbacks)
        if n_jobs != 1:
            raise ConfigurationError(
                threads_refused(f"n_jobs={n_jobs} would run Trace steps in threads")
            )
        objective = self.objective
        objective.check_llm()  # a missing API key is one message, not a study of FAIL trials
        if self._target_reached():
            _logger.info(
                "Study %r has reached its target %s; no trial to run.",
                self.study_name,
                self.config.target,
            )
            return
        if self.config.budget is not None:
            reason = self.config.budget.exhausted(budget.spent(self._study))
            if reason is not None:
                _logger.warning(
                    "Study %r: its budget is spent (%s); no trial to run.", self.study_name, reason
                )
                return
        observed = [callback for o in objective.observers for callback in o.callbacks()]
        if self.config.target is not None:
            observed.append(self._stop_at_target)
        # A trainable function defined at module level is the user's own object: trials run
        # candidates in it (as Trace does), and it gets its code back when optimize returns.
        put_back_module_functions = keep_module_functions(objective.agent)
        try:
            _requeue_interrupted(self._study, self.config.max_retry)
            _optimize(
                self._study,
                objective,
                n_trials=n_trials,
                timeout=timeout,
                catch=(TrialFailed, *catch),
                callbacks=[*listed, *observed],
                gc_after_trial=gc_after_trial,
                show_progress_bar=show_progress_bar,
            )
            if self.config.testset is not None:
                self._score_test_once()  # the test set, now that the search is over
        except KeyError as error:  # Optuna's storages say a missing record this way
            if _study_exists(self._study):
                raise
            raise ConfigurationError(
                f"Study {self.study_name!r} is no longer in the storage (it was deleted while "
                "this process used it); nothing more can be stored in it."
            ) from error
        finally:
            put_back_module_functions()
            notify(objective.observers, "optimize_finished", self._study)

    def _target_reached(self) -> bool:
        """Whether the study's best score (any worker's) reached ``target``."""
        target = self.config.target
        if target is None:
            return False
        best = self._population().best()
        if best is None or best.value is None:
            return False
        if self._study.direction == StudyDirection.MINIMIZE:
            return best.value <= target
        return best.value >= target

    def _stop_at_target(self, study: Study, trial: FrozenTrial) -> None:
        if self._target_reached():
            _logger.info(
                "Study %r reached its target %s; stopping.", self.study_name, self.config.target
            )
            study.stop()

    def evaluate_test(self) -> dict[str, Any]:
        """Score the best candidate on the test set and store it as the study's
        ``trace:test`` (``optimize`` does this when it returns). Rows already stored for that
        candidate are read, not run again. No trial, sampler, strategy or parent selection
        reads the test set or this record.

        Returns:
            ``{trial, snapshot_hash, mean, examples, ran, at}``.

        Raises:
            ConfigurationError: For a study without ``testset``, or opened for reading only.
        """
        objective = self.objective
        number = self.best_trial.number
        put_back_module_functions = keep_module_functions(objective.agent)
        try:
            return objective.evaluate_test(self._study, number)
        finally:
            put_back_module_functions()

    def _score_test_once(self) -> None:
        """``optimize``'s end: the best candidate on the test set, unless it is stored already
        or another worker claimed it (workers finishing together would each run it: the
        per-example claims protect pairs only while their trial runs)."""
        best = self._population().best()
        if best is None:
            return
        candidate = best.user_attrs.get(records.SNAPSHOT_HASH)
        stored = self.test_result
        if candidate is not None:
            if stored is not None and stored.get("snapshot_hash") == candidate:
                return
            coordinator = self.objective.coordinator_for(self._study)
            if not coordinator.claim_once(self._study, f"test:{candidate[:40]}"):
                _logger.info(
                    "Study %r: another worker scores Trial#%d's candidate on the test set.",
                    self.study_name,
                    best.number,
                )
                return
        self.evaluate_test()

    @property
    def test_result(self) -> dict[str, Any] | None:
        """The stored ``trace:test`` record (see :meth:`evaluate_test`), or None."""
        return self._study.user_attrs.get(records.STUDY_TEST)

    def examples(
        self, trial: int | None = None, split: str | None = None, *, as_dataframe: bool = False
    ) -> list[ExampleRow] | pd.DataFrame:
        """A dataset study's per-example rows, for analysis: every (candidate, split, example)
        result stored, each with the trials that scored its candidate.

        Args:
            trial: Only the rows of this trial's candidate (its minibatch, validation and test
                rows, whichever trial ran them); None: every candidate's.
            split: Only ``"train"``, ``"val"`` or ``"test"`` rows; None: all.
            as_dataframe: Return a pandas DataFrame (one row per result, the columns of
                :data:`trace_optuna.example_rows.COLUMNS`), as ``optuna.Study.
                trials_dataframe`` does; needs pandas.

        Returns:
            :class:`~trace_optuna.ExampleRow` objects (a stored result plus ``trials``),
            ordered by their candidate's first trial, split and example id; or the DataFrame.

        Raises:
            ValueError: For an unknown split or trial number.
            ImportError: With ``as_dataframe=True`` when pandas is not installed.

        Example::

            wrong = [row for row in study.examples(split="val") if row.score < 1]
            frame = study.examples(split="val", as_dataframe=True)
            frame.pivot_table("score", "candidate", "example_id")  # candidates x examples
        """
        rows = example_rows(self._study, trial, split)
        return to_dataframe(rows) if as_dataframe else rows

    @property
    def trials(self) -> list[FrozenTrial]:
        """All trials, as Optuna reports them."""
        return self._study.trials

    @property
    def best_trial(self) -> FrozenTrial:
        """The completed trial with the best score (single-objective studies only).

        Raises:
            ConfigurationError: In a multi-objective study: use :attr:`best_trials`.
            NoCompletedTrialError: Before a trial completed.
            RecordError: For a study trace_optuna did not make.
        """
        self._single_objective("best_trial")
        best = self._population().best()
        if best is None:
            if records.SCHEMA not in self._study.user_attrs:
                complete = self._study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                raise RecordError(
                    f"Study {self.study_name!r} was not made by trace_optuna: its "
                    f"{len(complete)} COMPLETE trial(s) hold no Trace steps. Read it with "
                    "Optuna itself (optuna.load_study(...).best_trial)."
                )
            raise NoCompletedTrialError(
                f"Study {self.study_name!r} has no completed trace_optuna trial yet."
            )
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
        # Private copies of module-level trainable functions: the module's stay as they are.
        agent = detach_module_functions(self._agent_factory()())
        restore(agent, self.best_snapshot)
        return agent

    def _agent_factory(self) -> Callable[[], Any]:
        if self._objective is not None:
            return self._objective.make_agent
        if self.config.agent is None and self.config.parameters is None:
            raise ConfigurationError(
                f"Study {self.study_name!r} was opened without an agent: pass agent= (the "
                "function that builds it) to load_study to build the best agent."
            )
        return agent_factory(self.config)

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
        if self._objective is not None:
            return self._objective.population(self._study)
        if self._reader is None:
            self._reader = Population(self._study)
        self._reader.refresh()
        return self._reader

    def __repr__(self) -> str:
        return f"TraceStudy(study_name={self.study_name!r})"


def create_study(
    *,
    study_name: str | None = None,
    storage: str | BaseStorage | None = None,
    load_if_exists: bool = False,
    config: Config | None = None,
    **options: Any,
) -> TraceStudy:
    """Create (or, with ``load_if_exists``, reopen) a study whose trials are Trace steps.

    Args:
        study_name: The study's name; Optuna makes one up when None.
        storage: A storage URL or object; None is the SQLite file ``trace_optuna.db``.
        load_if_exists: Continue an existing study of that name instead of failing.
        config: A :class:`~trace_optuna.Config` holding the options below.
        **options: The study's options: any field of :class:`~trace_optuna.Config`, documented
            there (``agent``, ``evaluate`` and ``llm`` are required; ``strategies``,
            ``direction``/``directions``, ``sampler``, ``pruner``, ``seed``, ``error_score``,
            ``selector``, ``evaluate_form``, ``evaluate_timeout``, ``parameters``,
            ``on_conflict``, ``heartbeat_interval``, ``grace_period``, ``max_retry``,
            ``artifact_dir``, ``artifact_store``, ``figure_interval``, ``dashboard_notes``).
            They override ``config``'s.

    Returns:
        The study.

    Raises:
        ConfigurationError: On an unknown or wrong option (naming it and the rule), an unknown
            storage, or when reopening a study with another agent, strategy list,
            ``error_score`` or direction, or a study trace_optuna did not make.
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
    config = Config.from_options(config, options, "create_study")
    check_study_name(study_name, allow_none=True)
    if not isinstance(load_if_exists, bool):
        raise ConfigurationError(
            f"load_if_exists must be True or False, got {type(load_if_exists).__name__} "
            f"{load_if_exists!r}."
        )
    objective = TraceObjective(config=config)
    # Refused before the study is made: a strategy needing one number, an error_score
    # without one number per direction.
    directions = config.study_directions()
    objective.check_directions(directions, study_name or "(new)")
    resolved = _storage(storage, config)
    study = optuna.create_study(
        study_name=study_name,
        storage=resolved,
        directions=directions,
        sampler=config.build_sampler() or StrategyBandit(seed=config.seed),
        pruner=config.pruner,
        load_if_exists=load_if_exists,
    )
    if config.direction is not None or config.directions is not None:
        check_requested_directions(study, directions)
    return _assemble(study, objective, resolved)


def load_study(
    *,
    study_name: str,
    storage: str | BaseStorage | None,
    config: Config | None = None,
    **options: Any,
) -> TraceStudy:
    """Open an existing study to continue it, or (without ``evaluate``/``llm``) to read it.

    ``load_study(study_name=..., storage=...)`` alone opens a study for reading: its records,
    best snapshot and figures (``load_best`` also needs ``agent``). To run more trials, give
    the options it was created with (at least ``agent``, ``evaluate`` and ``llm``).

    Args:
        study_name: The study's name.
        storage: Its storage URL or object.
        config: A :class:`~trace_optuna.Config` holding the options below.
        **options: Any field of :class:`~trace_optuna.Config`, as for :func:`create_study`.
            ``seed`` defaults to the study's stored seed (it seeds the default sampler);
            ``artifact_dir`` to the directory the study recorded; ``direction``, if given,
            must be the study's.

    Raises:
        ConfigurationError: If the study does not exist, the options are wrong, or the agent,
            strategies, ``error_score`` or directions differ from the study's.
    """
    config = Config.from_options(config, options, "load_study")
    check_study_name(study_name)
    resolved = open_existing(  # creates nothing: a mistyped path is an error, not a new file
        storage,
        read_only=config.for_reading(),
        heartbeat_interval=config.heartbeat_interval,
        grace_period=config.grace_period,
        max_retry=config.max_retry,
    )
    try:
        study = optuna.load_study(study_name=study_name, storage=resolved)
    except KeyError:
        names = [summary.study_name for summary in optuna.get_all_study_summaries(resolved)]
        raise ConfigurationError(
            f"No study named {study_name!r} in this storage; it has {sorted(names)}. Use "
            "create_study(..., load_if_exists=True) to create it."
        ) from None
    if config.direction is not None or config.directions is not None:
        check_requested_directions(study, config.study_directions())
    if config.seed is None:
        config = dataclasses.replace(config, seed=study.user_attrs.get(records.STUDY_SEED))
    study.sampler = config.build_sampler() or StrategyBandit(seed=config.seed)
    if config.pruner is not None:
        study.pruner = config.pruner
    if config.for_reading():
        return TraceStudy(study, None, config)
    return _assemble(study, TraceObjective(config=config), resolved)


def _storage(storage: str | BaseStorage | None, config: Config) -> BaseStorage:
    return resolve_storage(
        storage,
        heartbeat_interval=config.heartbeat_interval,
        grace_period=config.grace_period,
        max_retry=config.max_retry,
    )


def _assemble(study: optuna.Study, objective: TraceObjective, resolved: BaseStorage) -> TraceStudy:
    """Give the objective the storage's coordinator and bind it to the study."""
    objective.coordinator = coordinator_for(resolved)
    objective.bind(study)
    return TraceStudy(study, objective, objective.config)


def _requeue_interrupted(study: optuna.Study, max_retry: int | None) -> None:
    """Queue again the trials an interruption (Ctrl-C) ended, as a dead worker's are.

    An interrupted trial is FAIL with ``trace:interrupted``; it is re-queued once (the retry
    names it in ``failed_trial``), up to ``max_retry`` times along its retry history.
    """
    trials = study.get_trials(deepcopy=False)
    retried = {t.system_attrs.get("failed_trial") for t in trials}
    retried |= {number for t in trials for number in t.system_attrs.get("retry_history", [])}
    for trial in trials:
        if (
            trial.state == TrialState.FAIL
            and trial.user_attrs.get(records.INTERRUPTED)
            and trial.number not in retried
        ):
            _logger.warning("Trial#%d was interrupted; queueing it again.", trial.number)
            RetryStaleTrialCallback(max_retry)(study, trial)


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


def _study_exists(study: optuna.Study) -> bool:
    try:
        study._storage.get_study_id_from_name(study.study_name)
    except KeyError:
        return False
    return True


def _taken_over(error: Exception) -> bool:
    if isinstance(error, optuna.exceptions.UpdateFinishedTrialError):
        return True
    return str(error).startswith("Cannot tell a ")  # Optuna's tell() of a finished trial
