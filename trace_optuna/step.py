"""One trial = one optimizer step: the objective that Optuna's ``optimize()`` runs.

The flow of one trial::

    TraceObjective(trial)
      population.refresh()                      read what other trials stored
      no completed trial yet?  -> baseline      evaluate the unmodified agent
      else  strategy = trial.suggest_categorical("strategy", names)
            settings = strategy.suggest_settings(trial)
            proposal = strategy.propose(context)    e.g. best trial -> OptoPrime -> candidate
      candidate already evaluated in the study? -> reuse its score, say so
      another worker evaluating it right now?   -> wait for it, then reuse its score
      else  claim it; restore(agent, candidate); evaluate(agent)  (or evaluate(agent, trial))
      write every record attribute (records.py), then return the score for Optuna's tell()

``evaluate(agent, trial)`` gets the running ``optuna.Trial``: the agent's own knobs it suggests
are ordinary Optuna params of the trial, the same value however often the trial evaluates
(Optuna returns a suggested param's value again). A parent re-run for its feedback gets a
:class:`~trace_optuna.knobs.ParentTrial` instead, whose ``suggest_*`` return the parent's own
stored values, so its feedback matches its stored score. Such an ``evaluate`` may depend on
knobs sampled only while it runs, so a candidate another trial evaluated is evaluated again
rather than its score reused.
(Suggesting the knobs before ``evaluate`` runs, to reuse by snapshot and knob values, would be
unsound: a knob ``evaluate`` asks for only in some configurations would become a param of every
trial, and one whose range depends on another knob could get a value outside the range
``evaluate`` asks for, since Optuna returns an already suggested value with only a warning.)
``evaluate`` may prune through ``trial.report``/``trial.should_prune``: ``optuna.TrialPruned``
ends the trial PRUNED with what it recorded so far (candidate snapshot, parent feedback).

Multi-objective studies (``directions=[...]``): ``Evaluation.score`` is a list, one number per
direction (checked at every evaluation), returned to Optuna as the trial's values and stored as
``trace:score``; ``trace:improvement`` is the per-objective difference to the parent. Strategies
compare scores by Pareto dominance and greedy steps start from the Pareto front (see
:mod:`trace_optuna.population`); a strategy that needs one number (``multi_objective = False``,
e.g. ``stop``) is refused with a ``ConfigurationError`` by ``create_study``, or by the first
trial of a study of your own (it raises out of ``optimize``).

Workers share nothing but the storage. A trial re-queued because its worker died (Optuna's
heartbeat; see :mod:`trace_optuna.storage`) replays the dead trial's step: the same parameters
(strategy and settings, copied by the retry), the population as it was when the dead trial
started, and the same random seed, so the same parents.

Anything that goes wrong inside a trial is stored (``trace:error``, ``trace:traceback``, the raw
LLM responses) and raised as :class:`~trace_optuna.exceptions.TrialFailed`; ``TraceStudy``
asks Optuna to catch it, so the trial ends FAIL and the study goes on.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import importlib.metadata
import logging
import os
import platform
import random
import socket
import threading
import time
import traceback
from typing import TYPE_CHECKING
from typing import Any
import warnings

from opto.trace.bundle import ExecutionError
from opto.trace.containers import ParameterContainer
from opto.trace.nodes import Node
from optuna.exceptions import ExperimentalWarning
from optuna.exceptions import TrialPruned
from optuna.study import StudyDirection
from optuna.trial import TrialState

from trace_optuna import dashboard  # optuna-dashboard: notes, artifacts, HumanFeedback
from trace_optuna import graph
from trace_optuna import records
from trace_optuna import snapshots
from trace_optuna.coordination import Coordinator
from trace_optuna.coordination import coordinator_for
from trace_optuna.evaluation import Evaluation
from trace_optuna.evaluation import Score
from trace_optuna.evaluation import check_score
from trace_optuna.evaluation import score_for_study
from trace_optuna.exceptions import ConfigurationError
from trace_optuna.exceptions import RecordError
from trace_optuna.exceptions import TraceOptunaError
from trace_optuna.exceptions import TrialFailed
from trace_optuna.knobs import STRATEGY_PARAM
from trace_optuna.knobs import ParentTrial
from trace_optuna.knobs import check_names
from trace_optuna.knobs import takes_trial
from trace_optuna.llm import LLM
from trace_optuna.population import Population
from trace_optuna.population import score_of
from trace_optuna.registry import Selection
from trace_optuna.registry import State
from trace_optuna.sharing import pickup_due
from trace_optuna.sharing import share_for
from trace_optuna.strategies.base import ParentEvaluation
from trace_optuna.strategies.base import Proposal
from trace_optuna.strategies.base import RunResult
from trace_optuna.strategies.base import StepContext
from trace_optuna.strategies.base import registered
from trace_optuna.strategies.base import resolve
from trace_optuna.strategies.judge import Selector

if TYPE_CHECKING:
    from collections.abc import Sequence

    import optuna
    from optuna.trial import FrozenTrial

_logger = logging.getLogger(__name__)

METRIC_NAME = "score"  # what optuna-dashboard calls the trial value
# One step at a time per process: Trace keeps its graph in process-wide state.
_STEP_LOCK = threading.Lock()
_CLAIM_POLL_S = (0.05, 1.0)  # first and longest wait between looks at a claim's holder


@dataclasses.dataclass
class _Live:
    """The candidate this process evaluated last, while its Trace graph is still usable."""

    number: int
    snapshot_hash: str
    run: RunResult
    registry_version: int | None = None  # the shared parameters' version it ran with


class TraceObjective:
    """The Trace optimizer step as an Optuna objective: ``study.optimize(TraceObjective(...))``.

    ``trace_optuna.create_study(...).optimize`` runs exactly this; use it directly to add Trace
    to an Optuna study you already have. Optimize with ``catch=(trace_optuna.TrialFailed,)`` so
    a failed step is recorded and the study goes on.

    Args:
        agent: A function that builds a fresh agent (called once, here), or an agent instance.
        evaluate: ``evaluate(agent) -> Evaluation``, or ``evaluate(agent, trial)`` to sample the
            agent's own knobs (``trial.suggest_*``) and prune (``trial.report``,
            ``trial.should_prune``) in the same trial; see the module docstring.
        llm: A litellm model string or a :class:`~trace_optuna.LLM`.
        strategies: Strategy names or instances; the trial's ``strategy`` parameter picks one.
        error_score: The score of a candidate whose code raises when run (in a
            multi-objective study, a list with one number per direction). None (the default)
            fails such a trial instead; the error is stored as its feedback either way.
        selector: How strategies pick among candidates they evaluated: ``"score"`` (by
            ``evaluate``'s score) or ``"llm"`` (a pairwise LLM preference judge, for tasks
            without a meaningful numeric score).
        seed: Seeds each trial's random generator (with the trial number).

    Raises:
        ConfigurationError: On a wrong ``agent``, ``evaluate`` or ``llm``.
        SnapshotError: If a parameter's value cannot be stored as JSON (names the path).
    """

    def __init__(
        self,
        agent: Any = None,
        evaluate: Callable[..., Evaluation] | None = None,
        llm: str | LLM | None = None,
        *,
        parameters: Selection | None = None,
        on_conflict: str = "reevaluate",
        strategies: Any = ("optoprime",),
        error_score: float | Sequence[float] | None = None,
        selector: str = "score",
        seed: int | None = None,
    ) -> None:
        self.shared = share_for(agent, parameters, on_conflict)
        self.make_agent = (
            self.shared.selection.parameter_set.make
            if self.shared is not None
            else _agent_factory(agent)
        )
        self.evaluate_takes_trial = takes_trial(evaluate)  # refuses None, too
        self.evaluate: Callable[..., Evaluation] = evaluate  # type: ignore[assignment]
        self.llm = _resolve_llm(llm)
        self.strategies = {strategy.name: strategy for strategy in resolve(list(strategies))}
        # A number, or one per direction of a multi-objective study (checked at each trial).
        self.error_score = None if error_score is None else check_score(error_score, "error_score")
        self.selector = Selector(selector, self.llm)
        self.seed = seed
        self.agent = self.make_agent()
        self.parameters = snapshots.parameters(self.agent)
        self._nodes = list(self.parameters.values())  # all of them, shared ones included
        self.initial_snapshot = snapshots.snapshot(self.agent)
        if self.shared is not None:  # the study optimizes its selection; the rest is context
            self.shared.check(self.initial_snapshot)
            owned = self.shared.selection.paths
            self.parameters = {path: self.parameters[path] for path in owned}
            self.initial_snapshot = {path: self.initial_snapshot[path] for path in owned}
        self._population: Population | None = None
        self._population_study: optuna.Study | None = None
        self._live: _Live | None = None
        self.artifact_store: Any = None  # create_study(artifact_dir=/artifact_store=) sets it
        self.coordinator: Coordinator | None = None
        self._claimed = False  # whether the running trial holds a candidate claim
        self._knobs: set[str] = set()  # params the running trial's evaluate suggested
        self._directions: list[StudyDirection] = [StudyDirection.MAXIMIZE]  # the running study's
        self._study_name = ""
        self._bound: optuna.Study | None = None  # the study bind() wrote or checked last

    def check_directions(self, directions: Sequence[StudyDirection], study_name: str) -> None:
        """Refuse directions the objective cannot serve.

        Raises:
            ConfigurationError: For a multi-objective study when a strategy, or sharing
                parameters, needs one score; or an ``error_score`` without one number per
                direction.
        """
        if self.error_score is not None:
            score_for_study(self.error_score, directions, study_name, "error_score")
        if len(directions) < 2:
            return
        if self.shared is not None:
            raise ConfigurationError(
                f"This study has {len(directions)} directions, but a study over shared "
                f"parameters (ParameterSet {self.shared.registry_name!r}) publishes its best by "
                "one score: give it one direction."
            )
        single = [name for name, s in self.strategies.items() if not s.multi_objective]
        if single:
            raise ConfigurationError(
                f"Strategy {single[0]!r} needs a single-objective study (it compares candidates "
                f"by one number); this study has {len(directions)} directions. Use strategies "
                f"that handle Pareto scores ({_multi_objective_names()}), or one direction."
            )

    def bind(self, study: optuna.Study) -> None:
        """Write the study's trace attributes on its first use; check them when reopened.

        ``create_study`` and ``load_study`` call it; a study of your own is bound at its first
        trial, so another agent or strategy list is refused there with the same errors.

        Raises:
            ConfigurationError: If the directions do not suit this objective (see
                :meth:`check_directions`), or the study was created with another agent,
                selection of shared parameters or strategy list.
        """
        self.check_directions(study.directions, study.study_name)
        attrs = study.user_attrs
        paths = sorted(self.parameters)
        registry = self._registry_attr()
        if records.SCHEMA not in attrs:
            if study.metric_names is None:  # names the user gave their own study are kept
                count = len(study.directions)
                names = (
                    [f"{METRIC_NAME}[{i}]" for i in range(count)] if count > 1 else [METRIC_NAME]
                )
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ExperimentalWarning)
                    study.set_metric_names(names)
            values = {
                records.STUDY_VERSIONS: _versions(),
                records.STUDY_LLM_SETTINGS: self.llm.settings(),
                records.STUDY_PARAMETERS: paths,
                records.STUDY_STRATEGIES: self.strategy_names,
                records.STUDY_SEED: self.seed,
                records.STUDY_ERROR_SCORE: self.error_score,
                records.REGISTRY: registry,
                # Last: another worker opening the study at this moment reads a study with a
                # schema as complete, or binds it too (with the same values).
                records.SCHEMA: records.SCHEMA_VERSION,
            }
            records.write(study.set_user_attr, values)
            self._bound = study
            return
        records.check_schema(attrs, f"Study {study.study_name!r}")
        stored_registry = attrs.get(records.REGISTRY)
        if (stored_registry or {}).get("name") != (registry or {}).get("name"):
            raise ConfigurationError(
                f"Study {study.study_name!r} was created "
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
                    f"Study {study.study_name!r} was created over the paths {stored_paths} of "
                    f"ParameterSet {registry['name']!r}; this selection has {paths}. Select "
                    "the same paths, or use a new study."
                )
            raise ConfigurationError(
                f"Study {study.study_name!r} was created for an agent with parameters "
                f"{stored_paths}; this agent has {paths}. Use the same agent, or a new study."
            )
        stored_strategies = attrs.get(records.STUDY_STRATEGIES)
        if stored_strategies is not None and stored_strategies != self.strategy_names:
            raise ConfigurationError(
                f"Study {study.study_name!r} was created with strategies {stored_strategies}; "
                f"got {self.strategy_names}. The list is fixed for the life of a study "
                "(Optuna's categorical parameters cannot change their choices)."
            )
        self._bound = study

    def _registry_attr(self) -> dict[str, Any] | None:
        if self.shared is None:
            return None
        return {"name": self.shared.registry_name, "on_conflict": self.shared.on_conflict}

    @property
    def strategy_names(self) -> list[str]:
        """The strategy names, in the order the ``strategy`` parameter offers them."""
        return list(self.strategies)

    def population(self, study: optuna.Study) -> Population:
        """The population view of ``study``, kept across trials of this process."""
        if self._population is None or self._population_study is not study:
            self._population = Population(study)
            self._population_study = study
        self._population.refresh()
        return self._population

    def coordinator_for(self, study: optuna.Study) -> Coordinator:
        """Candidate claims for the study's storage (``create_study`` sets them up)."""
        if self.coordinator is None:
            # Used with a plain optuna.Study: Optuna offers no public handle on its storage.
            self.coordinator = coordinator_for(study._storage)
        return self.coordinator

    def __call__(self, trial: optuna.Trial) -> Score:
        if not _STEP_LOCK.acquire(blocking=False):
            raise ConfigurationError(threads_refused("Another Trace step is running in a thread"))
        try:
            return self._trial(trial)
        finally:
            _STEP_LOCK.release()

    def _trial(self, trial: optuna.Trial) -> Score:
        started = time.perf_counter()
        worker = {"host": socket.gethostname(), "pid": os.getpid()}
        attrs: dict[str, Any] = {records.SCHEMA: records.SCHEMA_VERSION, records.WORKER: worker}
        timing = {"evaluate_s": 0.0}
        self.llm.take_calls()  # calls made outside a trial are not this trial's
        graph.release()  # earlier trials' nodes: only what this objective still holds lives
        dashboard.enter_trial(trial, attrs)  # HumanFeedback asks in this trial's form
        self._claimed = False
        self._knobs = set()
        self._directions = list(trial.study.directions)  # scores are checked against them
        self._study_name = trial.study.study_name
        if self._bound is not trial.study:  # a study of the user's own, at its first trial
            self.bind(trial.study)
        try:
            # First, so that a running (or dead) trial shows which worker runs it.
            trial.set_user_attr(records.WORKER, worker)
            score = self._step(trial, attrs, timing)
        except TrialPruned:
            # Not a failure: Optuna ends the trial PRUNED; keep what it recorded so far.
            self._record_failure(trial, attrs, None, timing, started)
            raise
        except Exception as error:
            self._record_failure(trial, attrs, error, timing, started)
            raise TrialFailed(f"Trial#{trial.number} failed: {_reason(error)}") from error
        self._finish(trial, attrs, timing, started)
        return score

    @staticmethod
    def _fail_stale(coordinator: Coordinator, study: optuna.Study) -> None:
        try:
            coordinator.fail_stale(study)
        except Exception:  # someone else's dead trial must not fail this one
            _logger.exception("Could not look for trials of dead workers.")

    # -- the step -------------------------------------------------------------------------

    def _step(self, trial: optuna.Trial, attrs: dict[str, Any], timing: dict[str, float]) -> Score:
        population = self.population(trial.study)
        # A retry of a dead worker's trial replays its step: the population as it was when
        # that trial started and its random seed, so the strategy picks the same parents.
        original = _retried_from(population, trial.number)
        view = population
        if original is not None:
            attrs[records.RETRY_OF] = original
            view = Population(
                trial.study, finished_before=population.trial(original).datetime_start
            )
            view.refresh()

        better = view.better  # Pareto dominance in a multi-objective study

        shared_state = self._read_registry(trial, attrs)
        best_before = view.best()
        evaluated: list[tuple[dict[str, Any], RunResult]] = []
        parent_knobs: dict[str, dict[str, Any]] = {}  # knobs of each parent re-run for feedback
        registry_values = None if self.shared is None else self.shared.owned_values()
        if best_before is None:
            attrs[records.STRATEGY] = records.BASELINE
            start = registry_values or dict(self.initial_snapshot)
            proposal = Proposal(snapshot=start, parents=[])
        elif registry_values is not None and pickup_due(view, registry_values):
            # Another study published values of this study's parameters: evaluate them as they
            # are, so they join this study's population and its strategies can build on them.
            attrs[records.STRATEGY] = records.REGISTRY_PICKUP
            proposal = Proposal(snapshot=registry_values, parents=[])
        else:
            name = trial.suggest_categorical(STRATEGY_PARAM, self.strategy_names)
            strategy = self.strategies[str(name)]
            attrs[records.STRATEGY] = strategy.name
            extra: dict[str, Any] = {}

            def evaluate(values: dict[str, Any]) -> RunResult:
                try:
                    result = self._evaluate_candidate(trial, population, values, timing)
                except TrialPruned:
                    # Pruned inside the strategy (e.g. one of several offspring): the trial's
                    # candidate is the one being evaluated, measured against the first parent.
                    first = reran[:1]
                    attrs[records.PARENTS] = [parent.number for parent in first]
                    if first:
                        attrs[records.PARENT_SCORE] = first[0].score
                        attrs[records.PARENT_FEEDBACK] = first[0].feedback
                    self._record_candidate(
                        trial.number, population, attrs[records.PARENTS], values, evaluated, attrs
                    )
                    raise
                evaluated.append((dict(values), result))
                return result

            reran: list[ParentEvaluation] = []

            def evaluate_parent(number: int) -> ParentEvaluation:
                parent, knobs = self._evaluate_parent(trial, population, number, timing)
                reran.append(parent)
                parent_knobs.setdefault(str(number), knobs)
                attrs[records.PARENT_KNOBS] = parent_knobs if any(parent_knobs.values()) else None
                return parent

            context = StepContext(
                trial=trial,
                population=view,
                agent=self.agent,
                parameters=self.parameters,
                llm=self.llm,
                settings=strategy.suggest_settings(trial),
                evaluate_parent=evaluate_parent,
                evaluate=evaluate,
                better=better,
                select=lambda candidates: self.selector.select(candidates, better),
                rng=random.Random(f"{self.seed}:{trial.number if original is None else original}"),
                attrs=extra,
            )
            try:
                proposal = strategy.propose(context)
            finally:  # what the strategy recorded is kept when it fails, too
                attrs.update(_strategy_attrs(strategy.name, extra))
        attrs[records.PARENTS] = list(proposal.parents)
        attrs[records.PARENT_SCORE] = proposal.parent_score
        attrs[records.PARENT_FEEDBACK] = proposal.parent_feedback

        candidate = proposal.snapshot
        candidate_hash = self._record_candidate(
            trial.number, population, proposal.parents, candidate, evaluated, attrs
        )

        run = proposal.result
        if run is None:  # evaluated during this trial already? then not again
            run = next(
                (
                    result
                    for values, result in reversed(evaluated)
                    if snapshots.snapshot_hash(values) == candidate_hash
                ),
                None,
            )
        if run is None:
            run = self._evaluate_candidate(trial, population, candidate, timing)
        if run.reused_from is not None:
            attrs[records.DUPLICATE_OF] = run.reused_from  # nothing is paid for twice
        attrs[records.FEEDBACK] = run.feedback
        attrs[records.DETAILS] = run.details
        if run.code_error is not None:
            attrs[records.ERROR] = run.code_error
            if self.error_score is None:
                raise _CandidateCodeFailed(run.code_error)
            score = score_for_study(
                self.error_score, self._directions, self._study_name, "error_score"
            )
        else:
            assert run.score is not None
            score = run.score
            if run.output is not None:
                version = None if shared_state is None else shared_state.version
                self._live = _Live(trial.number, candidate_hash, run, version)
        attrs[records.SCORE] = score
        if proposal.parent_score is not None:
            attrs[records.IMPROVEMENT] = _improvement(score, proposal.parent_score)
        publishable = run.reused_from is None and run.code_error is None
        if shared_state is not None and publishable and isinstance(score, float):
            attrs[records.PUBLISH] = self._publish(
                trial, candidate, score, shared_state, best_before, better, timing, attrs
            )
        return score

    # -- shared parameters (see trace_optuna.sharing) -------------------------------------

    def _read_registry(self, trial: optuna.Trial, attrs: dict[str, Any]) -> State | None:
        """Run this trial with the registry's newest values of the paths the study does not
        select; record the version. None for a study that owns all its parameters."""
        if self.shared is None:
            return None
        state = self.shared.read(trial.study)
        if self._live is not None and self._live.registry_version != state.version:
            self._live = None  # its run saw other values of the parameters around it
        attrs[records.REGISTRY] = {"name": self.shared.registry_name, "version": state.version}
        return state

    def _publish(
        self,
        trial: optuna.Trial,
        candidate: dict[str, Any],
        score: float,
        state: State,
        best: FrozenTrial | None,
        better: Callable[[Score, Score], bool],
        timing: dict[str, float],
        attrs: dict[str, Any],
    ) -> dict[str, Any] | None:
        """Publish a candidate that beats the best: :meth:`trace_optuna.sharing.Share.publish`."""
        assert self.shared is not None

        def beats_best(score: float) -> bool:
            return best is None or better(score, score_of(best))

        def rerun(values: dict[str, Any]) -> RunResult:
            self._live = None  # the agent holds other values than the live run's now
            return self._run(values, timing, trial)

        if not beats_best(score):
            return None
        worker = attrs[records.WORKER]
        return self.shared.publish(trial, candidate, score, state, beats_best, rerun, worker)

    def _evaluate_candidate(
        self,
        trial: optuna.Trial,
        population: Population,
        values: dict[str, Any],
        timing: dict[str, float],
    ) -> RunResult:
        """Evaluate a candidate, or reuse the stored result of an identical one.

        The candidate's hash is claimed in the storage first. While another worker's running
        trial holds the claim, this one waits for it to finish and reuses its stored score.
        A trial that already holds a claim does not wait (two trials could wait for each
        other); it evaluates.
        """
        for path, value in values.items():
            snapshots.check_json_value(path, value)
        if self.evaluate_takes_trial:
            # Its score may depend on this trial's knobs, sampled only as evaluate runs: another
            # trial's score of the same snapshot came from other knob values. Nothing to reuse.
            return self._run(values, timing, trial)
        candidate_hash = snapshots.snapshot_hash(values)
        coordinator = self.coordinator_for(trial.study)
        while True:
            earlier = population.trial_with_snapshot(candidate_hash)
            if earlier is not None:
                stored = population.trial(earlier)
                return RunResult(
                    score=score_of(stored),
                    feedback=records.decode(stored.user_attrs, records.FEEDBACK, ""),
                    details=records.decode(stored.user_attrs, records.DETAILS),
                    reused_from=earlier,
                )
            claim = coordinator.claim(trial.study, trial._trial_id, candidate_hash)
            if claim.held:
                self._claimed = True
                if claim.taken_over:  # its last holder ended: did it store the candidate?
                    population.refresh()
                    if population.trial_with_snapshot(candidate_hash) is not None:
                        continue
                return self._run(values, timing, trial)
            assert claim.holder is not None
            if self._claimed:
                _logger.info(
                    "Trial#%d: Trial#%d holds the same candidate, but this trial holds claims "
                    "itself and does not wait.",
                    trial.number,
                    claim.holder,
                )
                return self._run(values, timing, trial)
            self._wait_for(trial, coordinator, claim.holder)
            population.refresh()

    def _wait_for(self, trial: optuna.Trial, coordinator: Coordinator, holder: int) -> None:
        _logger.info(
            "Trial#%d: Trial#%d is evaluating the same candidate; waiting for it.",
            trial.number,
            holder,
        )
        delay, longest = _CLAIM_POLL_S
        while coordinator.is_running(trial.study, holder):
            time.sleep(delay)  # a poll of the storage: another process owns the answer
            delay = min(2 * delay, longest)
            self._fail_stale(coordinator, trial.study)  # its worker may have died

    def _record_candidate(
        self,
        number: int,
        population: Population,
        parents: list[int],
        candidate: dict[str, Any],
        evaluated: list[tuple[dict[str, Any], RunResult]],
        attrs: dict[str, Any],
    ) -> str:
        """Put the candidate (against its first parent) into ``attrs``; return its hash."""
        for path, value in candidate.items():
            snapshots.check_json_value(path, value)
        candidate_hash = snapshots.snapshot_hash(candidate)
        parent_snapshot = population.snapshot(parents[0]) if parents else {}
        attrs[records.CHANGED] = snapshots.changed_paths(parent_snapshot, candidate)
        attrs[records.DIFF] = snapshots.diff(parent_snapshot, candidate) if parent_snapshot else ""
        self._add_snapshot_attrs(number, population, candidate, candidate_hash, attrs)
        if evaluated:
            attrs[records.EVALUATED] = [
                _evaluated_entry(values, result, parent_snapshot) for values, result in evaluated
            ]
        return candidate_hash

    def _add_snapshot_attrs(
        self,
        number: int,
        population: Population,
        candidate: dict[str, Any],
        candidate_hash: str,
        attrs: dict[str, Any],
    ) -> None:
        # Each distinct value of a parameter is stored once per study: in the trial that
        # introduced it. Values go in before the reference map, which is written after them.
        refs = {}
        for path, value in candidate.items():
            value_hash = snapshots.value_hash(value)
            holder = population.holder(path, value_hash)
            if holder is None:
                attrs[records.value_key(path)] = value
                holder = number
            refs[path] = [value_hash, holder]
        attrs[records.SNAPSHOT] = refs
        attrs[records.SNAPSHOT_HASH] = candidate_hash

    def _evaluate_parent(
        self, trial: optuna.Trial, population: Population, number: int, timing: dict[str, float]
    ) -> tuple[ParentEvaluation, dict[str, Any]]:
        """Re-run a stored trial's candidate for its graph and feedback, with its own knobs.

        Returns:
            The evaluation, and the knob values it ran with (``{}`` without knobs).
        """
        parent = population.trial(number)
        if parent.state != TrialState.COMPLETE:
            # A PRUNED trial has values too (its last report), but no score of its candidate.
            raise TraceOptunaError(
                f"Trial#{number} is {parent.state.name}, not COMPLETE: it has no score of its "
                "candidate and cannot be a parent."
            )
        parent_snapshot = population.snapshot(number)
        live = self._live
        if (
            live is not None
            and live.number == number
            and snapshots.snapshot_hash(self._owned_snapshot()) == live.snapshot_hash
        ):
            run = live.run  # its graph is live: a greedy chain evaluates once per trial
            stored = records.decode(parent.user_attrs, records.KNOBS) or {}
            knobs = {name: parent.params[name] for name in stored if name in parent.params}
        else:
            parent_trial = ParentTrial(parent, trial)
            try:
                run = self._run(parent_snapshot, timing, parent_trial)
            except TrialPruned as error:
                # Pruning judges the running trial's candidate, never a parent's re-run.
                raise TraceOptunaError(
                    f"evaluate() raised TrialPruned while re-running parent Trial#{number} for "
                    "its feedback. A parent's re-run must not prune: prune only when "
                    "trial.should_prune() says so (it is False for a parent's re-run)."
                ) from error
            knobs = parent_trial.knobs
            self._knobs.update(parent_trial.not_in_parent)  # suggested on the running trial
        if run.output is None:
            raise ConfigurationError(
                "evaluate() returned an Evaluation without output; set output= to the Trace "
                "node the agent produced, so feedback can flow back to the parameters."
            )
        evaluation = ParentEvaluation(
            number, parent_snapshot, score_of(parent), run.feedback, run.output
        )
        return evaluation, knobs

    def _run(
        self,
        values: dict[str, Any],
        timing: dict[str, float],
        trial: optuna.Trial | ParentTrial,
    ) -> RunResult:
        """Restore ``values`` into the agent and evaluate it (with ``trial``, if it takes one).

        In a study over shared parameters, ``values`` are the study's own; the others come from
        the registry version the trial runs with.
        """
        context = {} if self.shared is None else self.shared.context_values()
        snapshots.restore(self.agent, {**context, **values})
        for node in self._nodes:  # every run starts clean: no feedback of an earlier backward
            node.zero_feedback()
        self._live = None
        started = time.perf_counter()
        suggested_before = set(trial.params)
        try:
            if self.evaluate_takes_trial:
                evaluation = self.evaluate(self.agent, trial)
            else:
                evaluation = self.evaluate(self.agent)
        except ExecutionError as error:
            raised = (error.exception_node.info or {}).get("output")
            if isinstance(raised, TrialPruned):  # pruned inside a traced function: still pruning
                raise raised from None
            # Code the LLM wrote raised: the error becomes the feedback, as in Trace's examples,
            # and its exception node the output, so the next step can repair the code.
            return RunResult(
                score=None,
                feedback=str(error).strip(),
                output=error.exception_node,
                code_error=f"The candidate's code raised: {error.exception_node.data}",
            )
        finally:
            timing["evaluate_s"] += time.perf_counter() - started
            if not isinstance(trial, ParentTrial):  # what evaluate suggested: the agent's knobs
                suggested = set(trial.params) - suggested_before
                self._knobs.update(suggested)
                check_names(suggested, self.strategy_names)
        if not isinstance(evaluation, Evaluation):
            raise ConfigurationError(
                f"evaluate() must return trace_optuna.Evaluation, got {type(evaluation).__name__}."
            )
        if evaluation.output is not None and not isinstance(evaluation.output, Node):
            raise ConfigurationError(
                "Evaluation.output must be the Trace node the agent produced, got "
                f"{type(evaluation.output).__name__}."
            )
        score = score_for_study(evaluation.score, self._directions, self._study_name, "evaluate()")
        return RunResult(score, evaluation.feedback, evaluation.output, evaluation.details)

    def _owned_snapshot(self) -> dict[str, Any]:
        """The agent's current values of the parameters this study optimizes."""
        return {path: node._data for path, node in self.parameters.items()}

    # -- recording ------------------------------------------------------------------------

    def _finish(
        self,
        trial: optuna.Trial,
        attrs: dict[str, Any],
        timing: dict[str, float],
        started: float,
    ) -> None:
        attrs.update(self._llm_attrs())
        params = trial.params
        knobs = {name: params[name] for name in sorted(self._knobs) if name in params}
        attrs[records.KNOBS] = knobs or None
        llm_s = attrs[records.LLM]["latency_s"]
        attrs[records.TIME] = {
            "evaluate_s": round(timing["evaluate_s"], 6),
            "llm_s": llm_s,
            "total_s": round(time.perf_counter() - started, 6),
        }
        dashboard.before_write(trial, attrs, self.artifact_store)  # long texts to artifacts
        records.write(trial.set_user_attr, {k: v for k, v in attrs.items() if v is not None})
        dashboard.after_write(trial, attrs)  # the trial's note in optuna-dashboard

    def _record_failure(
        self,
        trial: optuna.Trial,
        attrs: dict[str, Any],
        error: Exception | None,
        timing: dict[str, float],
        started: float,
    ) -> None:
        """Store what a trial that did not complete recorded; ``error`` None: it was pruned."""
        if error is not None and not isinstance(error, _CandidateCodeFailed):
            attrs[records.ERROR] = _reason(error)
            attrs[records.TRACEBACK] = "".join(traceback.format_exception(error))
        try:
            self._finish(trial, attrs, timing, started)
        except Exception:  # the storage itself failing: Optuna still records the FAIL
            _logger.exception("Trial#%d: could not store the failure record.", trial.number)

    def _llm_attrs(self) -> dict[str, Any]:
        calls = self.llm.take_calls()
        cost = [call.cost_usd for call in calls if call.cost_usd is not None]
        attrs: dict[str, Any] = {
            records.LLM: {
                "model": self.llm.model,
                "calls": len(calls),
                "prompt_tokens": sum(call.prompt_tokens for call in calls),
                "completion_tokens": sum(call.completion_tokens for call in calls),
                "cost_usd": round(sum(cost), 8) if cost else None,
                "latency_s": round(sum(call.latency_s for call in calls), 6),
            }
        }
        # All calls' texts in one attribute (schema 2): Optuna reads a study one attribute row
        # at a time, and a joining worker reads every trial's.
        texts = []
        for call in calls:
            system = "\n\n".join(m["content"] for m in call.messages if m["role"] == "system")
            user = "\n\n".join(m["content"] for m in call.messages if m["role"] != "system")
            response = call.response if call.error is None else f"[error] {call.error}"
            texts.append({"system": system, "user": user, "response": response or ""})
        attrs[records.LLM_CALLS] = texts or None
        return attrs


def _improvement(score: Score, parent_score: Score) -> Score:
    """Score minus parent score; per objective (a list) in a multi-objective study."""
    if isinstance(score, list) and isinstance(parent_score, list):
        return [value - parent for value, parent in zip(score, parent_score, strict=True)]
    assert not isinstance(score, list) and not isinstance(parent_score, list)
    return score - parent_score


def _multi_objective_names() -> str:
    names = [name for name, cls in registered().items() if cls.multi_objective]
    return ", ".join(sorted(names))


class _CandidateCodeFailed(Exception):
    """The candidate's code raised and the study has no ``error_score``."""


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("trace-optuna", "trace-opt", "optuna", "litellm", "sqlalchemy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def threads_refused(what: str) -> str:
    """Why Trace steps cannot run in threads, and what to run instead."""
    return (
        f"{what} of this process, and Trace's graph state is process-wide: threads corrupt it "
        "(a step would store a candidate other than the one it evaluated). Start several "
        "processes instead: `trace-optuna workers --processes N ...` (see trace_optuna.workers), "
        "or your own processes each optimizing the study on one storage."
    )


def _strategy_attrs(name: str, extra: dict[str, Any]) -> dict[str, Any]:
    for key in extra:
        if not key.startswith(records.PREFIX) or key in records.RESERVED:
            raise ConfigurationError(
                f"Strategy {name!r} stored the attribute {key!r}; strategy attributes must start "
                f"with {records.PREFIX!r} and not be one of the trial record's own keys."
            )
    return extra


def _evaluated_entry(
    values: dict[str, Any], result: RunResult, parent: dict[str, Any]
) -> dict[str, Any]:
    """What ``trace:evaluated`` keeps of one candidate a strategy evaluated."""
    return {
        "snapshot_hash": snapshots.snapshot_hash(values),
        "score": result.score,
        "changes": {
            path: values[path]
            for path in snapshots.changed_paths(parent, values)
            if path in values
        },
        "feedback": result.feedback,
        "code_error": result.code_error,
        "reused_from": result.reused_from,
    }


def _retried_from(population: Population, number: int) -> int | None:
    """The number of the dead trial that trial ``number`` re-runs, if it is a retry."""
    try:
        original = population.trial(number).system_attrs.get("failed_trial")
    except RecordError:
        return None
    return None if original is None else int(original)


def _reason(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _agent_factory(agent: Any) -> Callable[[], Any]:
    if isinstance(agent, (ParameterContainer, dict)):
        return lambda: agent
    if callable(agent):
        return agent
    raise ConfigurationError(
        "agent must be a function that builds the agent (recommended: each process calls it "
        f"once), a trace Module/@trace.model instance, or a dict of parameters; got "
        f"{type(agent).__name__}."
    )


def _resolve_llm(llm: Any) -> LLM:
    if isinstance(llm, LLM):
        return llm
    if isinstance(llm, str):
        return LLM(llm)
    raise ConfigurationError(
        "llm must be a litellm model string (e.g. 'openai/gpt-4o-mini', or "
        f"'simulated/feedback-follower' offline) or a trace_optuna.LLM; got {llm!r}."
    )
