"""One trial = one optimizer step: the objective that Optuna's ``optimize()`` runs.

Read :meth:`TraceObjective._trial` and :meth:`TraceObjective._step` top to bottom: they are one
trial, in order. The parts live where their concept does:

=======================  =================================================================
:mod:`~trace_optuna.config`        every option, checked once (:class:`~trace_optuna.Config`)
:mod:`~trace_optuna.binding`       the study's trace attributes, written once, checked on reopening
:mod:`~trace_optuna.runner`        the agent, its runs, parent re-runs, the live graph, time limits
:mod:`~trace_optuna.coordination`  candidate claims: each candidate evaluated once by all workers
:mod:`~trace_optuna.sharing`       shared parameters: registry values in, improvements published
:mod:`~trace_optuna.records`       the record's keys, chunking, and its one write
:mod:`~trace_optuna.observers`     what others (the dashboard) are told about the trial
=======================  =================================================================

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
asks Optuna to catch it, so the trial ends FAIL and the study goes on. Two exceptions: a broken
contract (a :class:`~trace_optuna.exceptions.ConfigurationError`: ``evaluate`` returning
something else than an ``Evaluation``, an output that depends on no parameter, a knob named like
the step's own params) is stored the same way and then raised as it is, so ``optimize()`` stops
at its first occurrence instead of failing every trial alike; an interruption (Ctrl-C) is
stored with ``trace:interrupted`` and raised on, and resuming re-runs the trial.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import socket
import threading
import time
import traceback
from typing import TYPE_CHECKING
from typing import Any

from optuna.exceptions import TrialPruned

from trace_optuna import binding
from trace_optuna import budget
from trace_optuna import dataset
from trace_optuna import graph
from trace_optuna import records
from trace_optuna import snapshots
from trace_optuna.config import Config
from trace_optuna.coordination import Coordinator
from trace_optuna.coordination import TrialClaims
from trace_optuna.coordination import coordinator_for
from trace_optuna.evaluation import Score
from trace_optuna.evaluation import score_for_study
from trace_optuna.exceptions import BudgetExhausted
from trace_optuna.exceptions import ConfigurationError
from trace_optuna.exceptions import LLMError
from trace_optuna.exceptions import RecordError
from trace_optuna.exceptions import TrialFailed
from trace_optuna.knobs import STRATEGY_PARAM
from trace_optuna.llm import LLM
from trace_optuna.llm._agent import agent_llm_for
from trace_optuna.observers import TrialObserver
from trace_optuna.observers import notify
from trace_optuna.observers import observers_for
from trace_optuna.population import Population
from trace_optuna.population import score_of
from trace_optuna.runner import AgentRunner
from trace_optuna.runner import Live
from trace_optuna.runner import RunContext
from trace_optuna.sharing import pickup_due
from trace_optuna.sharing import share_for
from trace_optuna.strategies.base import ParentEvaluation
from trace_optuna.strategies.base import Proposal
from trace_optuna.strategies.base import RunResult
from trace_optuna.strategies.base import StepContext
from trace_optuna.strategies.base import resolve
from trace_optuna.strategies.judge import Selector
from trace_optuna.strategies.sandbox import isolation_for

if TYPE_CHECKING:
    from collections.abc import Callable
    from collections.abc import Sequence

    import optuna
    from optuna.study import StudyDirection
    from optuna.trial import FrozenTrial

    from trace_optuna.dataset import DatasetFlow
    from trace_optuna.registry import State

_logger = logging.getLogger(__name__)

# One step at a time per process: Trace keeps its graph in process-wide state.
_STEP_LOCK = threading.Lock()


@dataclasses.dataclass
class _TrialRun:
    """Everything one trial holds while it runs; a new one per trial.

    Attributes:
        trial: The running trial.
        record: Its attributes, collected as the step goes and written once at its end.
        context: What its runs of the agent share (directions, time spent, knobs).
        claims: Its candidate claims.
        started: ``time.perf_counter()`` at its start.
        population: The study's trials as this process last read them.
        view: What the strategy sees: ``population``, or for a retry of a dead worker's
            trial the population as it was when that trial started.
        retry_of: The number of the dead trial this one re-runs, if any.
        evaluated: Every candidate a strategy evaluated in this trial, with its result.
        reran: The parents re-run for their feedback in this trial.
        parent_knobs: The knobs each re-run parent ran with.
    """

    trial: optuna.Trial
    record: dict[str, Any]
    context: RunContext
    claims: TrialClaims
    started: float
    population: Population = dataclasses.field(init=False)
    view: Population = dataclasses.field(init=False)
    retry_of: int | None = None
    evaluated: list[tuple[dict[str, Any], RunResult]] = dataclasses.field(default_factory=list)
    reran: list[ParentEvaluation] = dataclasses.field(default_factory=list)
    parent_knobs: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


class TraceObjective:
    """The Trace optimizer step as an Optuna objective: ``study.optimize(TraceObjective(...))``.

    ``trace_optuna.create_study(...).optimize`` runs exactly this; use it directly to add Trace
    to an Optuna study you already have. Optimize with ``catch=(trace_optuna.TrialFailed,)`` so
    a failed step is recorded and the study goes on.

    Args:
        agent: As :attr:`Config.agent <trace_optuna.Config>`.
        evaluate: As :attr:`Config.evaluate <trace_optuna.Config>`.
        llm: As :attr:`Config.llm <trace_optuna.Config>`.
        config: A :class:`~trace_optuna.Config` with any other options.
        **options: Any other field of :class:`~trace_optuna.Config` (``strategies``,
            ``error_score``, ``selector``, ``seed``, ``evaluate_timeout``, ...); they override
            ``config``'s.

    Raises:
        ConfigurationError: On a wrong or missing ``agent``, ``evaluate`` or ``llm``, or any
            other option (naming it and the rule).
        SnapshotError: If a parameter's value cannot be stored as JSON (names the path).
    """

    def __init__(
        self,
        agent: Any = None,
        evaluate: Callable[..., Any] | None = None,
        llm: str | LLM | None = None,
        *,
        config: Config | None = None,
        **options: Any,
    ) -> None:
        given = {"agent": agent, "evaluate": evaluate, "llm": llm}
        given = {name: value for name, value in given.items() if value is not None}
        self.config = Config.from_options(config, {**given, **options}, "TraceObjective")
        config = self.config
        self.shared = share_for(config.agent, config.parameters, config.on_conflict)
        self.runner = AgentRunner(config, self.shared)
        self.llm = config.llm if isinstance(config.llm, LLM) else _resolve_llm(config.llm)
        self.agent_llm = agent_llm_for(config.agent_llm)
        if self.agent_llm is not None:  # the agent's Trace model calls: answered and metered
            self.runner.evaluate = self.agent_llm.routing(self.runner.evaluate)
        self.strategies = {strategy.name: strategy for strategy in resolve(config.strategies)}
        # Fail closed, once per process: LLM-written code runs only where it can be isolated.
        self.isolation_layers = isolation_for(self.strategies, config.stop_isolation)
        self.error_score = config.error_score
        self.selector = Selector(config.selector, self.llm)
        self.seed = config.seed
        self._start_hash = snapshots.snapshot_hash(self.runner.initial_snapshot)
        self.observers: list[TrialObserver] = observers_for(config)
        self.coordinator: Coordinator | None = None  # create_study sets it; else at first use
        self._population: Population | None = None
        self._population_study: optuna.Study | None = None
        self._bound: optuna.Study | None = None  # the study bind() wrote or checked last
        self._llm_checked = False

    # -- what the study and tests read ---------------------------------------------------

    @property
    def agent(self) -> Any:
        """The agent this process optimizes."""
        return self.runner.agent

    @property
    def make_agent(self) -> Callable[[], Any]:
        """The function that builds a fresh agent."""
        return self.runner.make_agent

    @property
    def evaluate(self) -> Callable[..., Any]:
        return self.runner.evaluate

    @property
    def dataset(self) -> DatasetFlow | None:
        """A dataset study's flow (``trainset=``): minibatches, validation, the test set."""
        return self.runner.dataset

    @property
    def evaluate_takes_trial(self) -> bool:
        """Whether ``evaluate`` is called as ``evaluate(agent, trial)``."""
        return self.runner.evaluate_takes_trial

    @property
    def parameters(self) -> dict[str, Any]:
        """``{path: ParameterNode}`` of the parameters this study optimizes."""
        return self.runner.parameters

    @property
    def initial_snapshot(self) -> dict[str, Any]:
        """The starting values of those parameters."""
        return self.runner.initial_snapshot

    @property
    def strategy_names(self) -> list[str]:
        """The strategy names, in the order the ``strategy`` parameter offers them."""
        return list(self.strategies)

    def check_directions(self, directions: Sequence[StudyDirection], study_name: str) -> None:
        """Refuse directions the objective cannot serve (see :func:`binding.check_directions`).

        Raises:
            ConfigurationError: Saying why.
        """
        binding.check_directions(self, directions, study_name)

    def bind(self, study: optuna.Study) -> None:
        """Write the study's trace attributes on first use; check them when it is reopened.

        ``create_study`` and ``load_study`` call it; a study of your own is bound at its first
        trial, so another agent or strategy list is refused there with the same errors.

        Raises:
            ConfigurationError: See :func:`trace_optuna.binding.bind`.
        """
        binding.bind(self, study)
        if self.isolation_layers is not None and self.config.stop_isolation == "none":
            study.set_user_attr(
                records.STUDY_STOP_ISOLATION, {"option": "none", "layers": self.isolation_layers}
            )
        self._bound = study
        notify(
            self.observers,
            "study_ready",
            study,
            agent=self.agent,
            make_agent=self.make_agent,
            evaluate=self.evaluate,
            strategies=self.strategies,
            coordinator=self.coordinator_for(study),
        )

    def check_llm(self) -> None:
        """Refuse to start trials whose LLM calls cannot work: the provider's API key is not
        set. Checked once, before the first trial, so that a missing key is one message
        rather than a study full of failed trials.

        Raises:
            ConfigurationError: Naming the model and the missing variables.
        """
        if self._llm_checked:
            return
        models = [("llm", self.llm)]
        if self.agent_llm is not None:
            models.append(("agent_llm", self.agent_llm.llm))
        for option, llm in models:
            missing = llm.missing_keys()
            if missing:
                raise ConfigurationError(
                    f"{option} {llm.model!r} needs {' and '.join(missing)}, which the "
                    "environment does not set: set it, pass it as to.LLM(..., api_key=...), or "
                    f"run offline with {option}='simulated/feedback-follower' (a simulation for "
                    "demos and tests)."
                )
        self._llm_checked = True

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

    def evaluate_test(self, study: optuna.Study, number: int) -> dict[str, Any]:
        """Score trial ``number``'s candidate on the test set, once, outside any trial, and
        store it as the study's ``trace:test`` (see :func:`trace_optuna.dataset.score_test`).

        Raises:
            ConfigurationError: If the study has no test set.
            TrialFailed: If the candidate fails on it.
        """
        flow = self.dataset
        if flow is None or flow.testset is None:
            raise ConfigurationError(
                f"Study {study.study_name!r} has no test set: give testset= (with trainset=)."
            )
        values = self.population(study).snapshot(number)
        context = RunContext(list(study.directions), study.study_name, self.strategy_names)

        def run_examples() -> None:
            result = self.runner.run(values, context, None)
            if result.failed:
                raise TrialFailed(
                    f"Trial#{number}'s candidate failed on the test set: {result.error}"
                )

        with _STEP_LOCK:
            candidate = snapshots.snapshot_hash(values)
            return dataset.score_test(flow, run_examples, study, number, candidate)

    # -- one trial ------------------------------------------------------------------------

    def __call__(self, trial: optuna.Trial) -> Score:
        if not _STEP_LOCK.acquire(blocking=False):
            raise ConfigurationError(threads_refused("Another Trace step is running in a thread"))
        try:
            return self._trial(trial)
        finally:
            _STEP_LOCK.release()

    def _trial(self, trial: optuna.Trial) -> Score:
        """One trial: start it, take the step, write its record once, return its score."""
        if self._bound is not trial.study:  # a study of the user's own, at its first trial
            self.bind(trial.study)
        self.check_llm()
        run = self._start(trial)
        try:
            score = self._step(run)
        except TrialPruned:
            # Not a failure: Optuna ends the trial PRUNED; keep what it recorded so far.
            self._write_record(run, error=None, ending=True)
            raise
        except BudgetExhausted as spent:
            # Every worker's spend reached the study's budget: this trial stops (PRUNED, the
            # reason in its record), so does optimize(), and the study says why.
            self._write_record(run, spent, ending=True)
            budget.record_exhausted(trial.study, spent.reason)
            trial.study.stop()
            raise TrialPruned(str(spent)) from None
        except ConfigurationError as broken:
            # A contract broken (evaluate's return, a knob's name, a strategy's record): every
            # trial would fail the same way, so optimize() stops with it after recording it.
            self._write_record(run, broken, ending=True)
            raise
        except Exception as error:
            self._write_record(run, error, ending=True)
            # The traceback is in the record (trace:traceback): one in the log is enough.
            raise TrialFailed(f"Trial#{trial.number} failed: {_reason(error)}") from None
        except BaseException as interruption:  # Ctrl-C, SystemExit: keep what is known
            run.record[records.INTERRUPTED] = True
            self._write_record(run, interruption, ending=True)
            raise
        self._write_record(run, error=None)
        return score

    def _start(self, trial: optuna.Trial) -> _TrialRun:
        worker = {"host": socket.gethostname(), "pid": os.getpid()}
        run = _TrialRun(
            trial=trial,
            record={records.SCHEMA: records.SCHEMA_VERSION, records.WORKER: worker},
            context=RunContext(
                directions=list(trial.study.directions),
                study_name=trial.study.study_name,
                strategy_names=self.strategy_names,
            ),
            claims=TrialClaims(self.coordinator_for(trial.study), trial),
            started=time.perf_counter(),
        )
        self.llm.take_calls()  # calls made outside a trial are not this trial's
        graph.release()  # earlier trials' nodes: only what this objective still holds lives
        notify(self.observers, "trial_started", trial, run.record)
        # First, so that a running (or dead) trial shows which worker runs it.
        trial.set_user_attr(records.WORKER, worker)
        return run

    def _step(self, run: _TrialRun) -> Score:
        """The step: a candidate proposed, evaluated (once in the study), scored, published."""
        self._read_population(run)
        _check_budget(self.config, run.trial.study)
        self._draw_minibatch(run)
        shared_state = self._read_registry(run)
        best_before = run.view.best()
        proposal = self._propose(run, best_before)
        candidate_hash = self._record_candidate(run, proposal.parents, proposal.snapshot)
        if proposal.parents and not run.record[records.CHANGED]:
            _logger.info(
                "Trial#%d: %s proposed no change (e.g. the model answered TERMINATE): the "
                "candidate is Trial#%d's.",
                run.trial.number,
                run.record[records.STRATEGY],
                proposal.parents[0],
            )
        result = self._evaluate_proposal(run, proposal, candidate_hash)
        if result.code_error is not None and result.output is not None:
            proposal, candidate_hash, result = self._repair(run, proposal, result)
        if result.failed and not result.transient:
            if run.record[records.STRATEGY] == records.BASELINE:
                _record_failure(run.record, result)
                raise ConfigurationError(
                    f"The agent's starting values cannot be evaluated: {result.error}. Every "
                    "step starts from them: fix the program (or evaluate) so that they run. "
                    f"Trial#{run.trial.number}'s record holds the traceback."
                )
        score = self._score(run, proposal, result)
        if self.dataset is not None and not result.failed:  # accepted on the minibatch?
            score = self._validate(run, proposal, candidate_hash, score)
        if not result.failed and result.output is not None and self.dataset is None:
            version = None if shared_state is None else shared_state.version
            self.runner.live = Live(run.trial.number, candidate_hash, result, version)
        publishable = result.reused_from is None and not result.failed
        if shared_state is not None and publishable and isinstance(score, float):
            run.record[records.PUBLISH] = self._publish(
                run, proposal.snapshot, score, shared_state, best_before
            )
        return score

    # -- the step's parts, in the order it takes them ------------------------------------

    def _read_population(self, run: _TrialRun) -> None:
        """What the study holds. A retry of a dead worker's trial replays its step: the
        population as it was when that trial started (and its seed), so the same parents."""
        run.population = self.population(run.trial.study)
        run.view = run.population
        run.retry_of = _retried_from(run.population, run.trial.number)
        if run.retry_of is not None:
            run.record[records.RETRY_OF] = run.retry_of
            started = run.population.trial(run.retry_of).datetime_start
            run.view = Population(run.trial.study, finished_before=started)
            run.view.refresh()

    def _draw_minibatch(self, run: _TrialRun) -> None:
        """A dataset study: the trial's seeded minibatch of the training set (a retry draws
        the dead trial's), and with ``parent_selection="pareto"`` its parent rule."""
        flow = self.dataset
        if flow is None:
            return
        seed = f"{self.seed}:{run.trial.number if run.retry_of is None else run.retry_of}"
        run.record[records.MINIBATCH] = flow.begin(run.trial.study, run.trial.number, seed)
        if flow.parent_selection == "pareto":
            rng = random.Random(f"{seed}:parent")
            chosen: list[FrozenTrial | None] = []  # drawn once: every best() of the trial agrees

            def pareto_parent(view: Population) -> FrozenTrial | None:
                if not chosen:
                    chosen.append(flow.pareto_parent(view, rng))
                return chosen[0]

            run.view.parent_rule = pareto_parent

    def _read_registry(self, run: _TrialRun) -> State | None:
        """Run this trial with the registry's newest values of the paths the study does not
        select; record the version. None for a study that owns all its parameters."""
        if self.shared is None:
            return None
        state = self.shared.read(run.trial.study)
        live = self.runner.live
        if live is not None and live.registry_version != state.version:
            self.runner.live = None  # its run saw other values of the parameters around it
        run.record[records.REGISTRY] = {
            "name": self.shared.registry_name,
            "version": state.version,
        }
        return state

    def _propose(self, run: _TrialRun, best_before: FrozenTrial | None) -> Proposal:
        """The baseline, another study's published values, or the chosen strategy's proposal."""
        registry_values = None if self.shared is None else self.shared.owned_values()
        if best_before is None or (registry_values is None and self.start_unseen(run.population)):
            # The first trial, or the program was edited: its starting values are a new root.
            run.record[records.STRATEGY] = records.BASELINE
            start = registry_values or dict(self.initial_snapshot)
            proposal = Proposal(snapshot=start, parents=[])
        elif registry_values is not None and pickup_due(run.view, registry_values):
            # Another study published values of this study's parameters: evaluate them as they
            # are, so they join this study's population and its strategies can build on them.
            run.record[records.STRATEGY] = records.REGISTRY_PICKUP
            proposal = Proposal(snapshot=registry_values, parents=[])
        else:
            proposal = self._strategy_proposal(run)
        run.record[records.PARENTS] = list(proposal.parents)
        run.record[records.PARENT_SCORE] = proposal.parent_score
        run.record[records.PARENT_FEEDBACK] = proposal.parent_feedback
        return proposal

    def start_unseen(self, population: Population) -> bool:
        """Whether no trial of the study holds the agent's starting values (then the program
        was edited since the study began; ``edited_start="refuse"`` refuses that at binding)."""
        return population.trial_with_snapshot(self._start_hash) is None

    def _strategy_proposal(self, run: _TrialRun) -> Proposal:
        trial = run.trial
        name = trial.suggest_categorical(STRATEGY_PARAM, self.strategy_names)
        strategy = self.strategies[str(name)]
        run.record[records.STRATEGY] = strategy.name
        context = self._context(run, strategy.suggest_settings(trial))
        try:
            return strategy.propose(context)
        finally:  # what the strategy recorded is kept when it fails, too
            run.record.update(_strategy_attrs(strategy.name, context.attrs))

    def _context(self, run: _TrialRun, settings: dict[str, Any]) -> StepContext:
        """What a strategy (or a repair step) may use in this trial."""
        better = run.view.better  # Pareto dominance in a multi-objective study
        seed_number = run.trial.number if run.retry_of is None else run.retry_of
        return StepContext(
            trial=run.trial,
            population=run.view,
            agent=self.agent,
            parameters=self.parameters,
            llm=self.llm,
            settings=settings,
            evaluate_parent=lambda number: self._rerun_parent(run, number),
            evaluate=lambda values: self._evaluate_for_strategy(run, values),
            better=better,
            select=lambda candidates: self.selector.select(candidates, better),
            rng=random.Random(f"{self.seed}:{seed_number}"),
            attrs={},
            optimizer=self.config.optimizer_settings(),
            isolation=self.config.stop_isolation,
        )

    def _rerun_parent(self, run: _TrialRun, number: int) -> ParentEvaluation:
        parent, knobs = self.runner.rerun_parent(run.trial, run.population, number, run.context)
        run.reran.append(parent)
        run.parent_knobs.setdefault(str(number), knobs)
        knobs_used = any(run.parent_knobs.values())
        run.record[records.PARENT_KNOBS] = run.parent_knobs if knobs_used else None
        return parent

    def _evaluate_for_strategy(self, run: _TrialRun, values: dict[str, Any]) -> RunResult:
        """A candidate a strategy evaluates while it proposes (e.g. one of several offspring)."""
        try:
            result = self._evaluate_once(run, values)
        except TrialPruned:
            self._record_unfinished(run, values)
            raise
        run.evaluated.append((dict(values), result))
        if result.transient:
            # Says nothing about the candidate: no strategy may judge it by this. The trial
            # fails (with the reason) as it would for the trial's own candidate.
            assert result.error is not None
            self._record_unfinished(run, values)
            _record_failure(run.record, result)
            raise _CandidateFailed(result.error)
        return result

    def _record_unfinished(self, run: _TrialRun, values: dict[str, Any]) -> None:
        """The trial ends while a strategy evaluates ``values`` (pruned, or a transient error):
        its candidate is that one, measured against the first parent it re-ran."""
        first = run.reran[:1]
        run.record[records.PARENTS] = [parent.number for parent in first]
        if first:
            run.record[records.PARENT_SCORE] = first[0].score
            run.record[records.PARENT_FEEDBACK] = first[0].feedback
        self._record_candidate(run, run.record[records.PARENTS], values)

    def _evaluate_once(self, run: _TrialRun, values: dict[str, Any]) -> RunResult:
        """Evaluate a candidate, or reuse the stored result of an identical one."""
        for path, value in values.items():
            snapshots.check_json_value(path, value)

        def evaluate(candidate: dict[str, Any]) -> RunResult:
            return self.runner.run(candidate, run.context, run.trial)

        if self.evaluate_takes_trial:
            # Its score may depend on this trial's knobs, sampled only as evaluate runs: another
            # trial's score of the same snapshot came from other knob values. Nothing to reuse.
            return evaluate(values)
        if self.dataset is not None:
            # Scored on this trial's minibatch: the study's per-example rows are the cache.
            return evaluate(values)
        return run.claims.evaluate_once(run.population, values, evaluate)

    def _record_candidate(
        self, run: _TrialRun, parents: list[int], candidate: dict[str, Any]
    ) -> str:
        """Put the candidate (against its first parent) into the record; return its hash.

        Each distinct value of a parameter is stored once per study: in the trial that
        introduced it; the snapshot refers to it by hash and trial number.
        """
        for path, value in candidate.items():
            snapshots.check_json_value(path, value)
        record, population = run.record, run.population
        parent_snapshot = population.snapshot(parents[0]) if parents else {}
        record[records.CHANGED] = (
            snapshots.changed_paths(parent_snapshot, candidate) if parents else []
        )
        record[records.DIFF] = (
            snapshots.diff(parent_snapshot, candidate) if parent_snapshot else ""
        )
        refs = {}
        for path, value in candidate.items():
            value_hash = snapshots.value_hash(value)
            holder = population.holder(path, value_hash)
            if holder is None:
                record[records.value_key(path)] = value
                holder = run.trial.number
            refs[path] = [value_hash, holder]
        record[records.SNAPSHOT] = refs
        candidate_hash = snapshots.snapshot_hash(candidate)
        record[records.SNAPSHOT_HASH] = candidate_hash
        if run.evaluated:
            record[records.EVALUATED] = [
                _evaluated_entry(values, result, parent_snapshot)
                for values, result in run.evaluated
            ]
        return candidate_hash

    def _evaluate_proposal(
        self, run: _TrialRun, proposal: Proposal, candidate_hash: str
    ) -> RunResult:
        """The proposal's result: the strategy's own, one it evaluated in this trial, or a new
        evaluation (or the stored result of an identical candidate)."""
        result = proposal.result
        if result is None:
            result = next(
                (
                    earlier
                    for values, earlier in reversed(run.evaluated)
                    if snapshots.snapshot_hash(values) == candidate_hash
                ),
                None,
            )
        if result is None:
            result = self._evaluate_once(run, proposal.snapshot)
        if result.reused_from is not None:
            run.record[records.DUPLICATE_OF] = result.reused_from  # nothing is paid for twice
        run.record[records.FEEDBACK] = result.feedback
        run.record[records.DETAILS] = result.details
        return result

    def _repair(
        self, run: _TrialRun, proposal: Proposal, result: RunResult
    ) -> tuple[Proposal, str, RunResult]:
        """Repair steps from a candidate whose code raised, as Trace's loops take them: OptoPrime
        gets the exception node's graph with the error as feedback and proposes a fix, which
        is evaluated in this trial (at most ``repairs`` times). Each failed attempt is kept in
        ``trace:evaluated``; the last attempt becomes the trial's candidate."""
        from trace_optuna.strategies.optoprime import optoprime_update

        candidate_hash = snapshots.snapshot_hash(proposal.snapshot)
        repairs = 0
        while (
            repairs < self.config.repairs
            and result.code_error is not None
            and result.output is not None
            and not result.transient
        ):
            run.evaluated.append((dict(proposal.snapshot), result))
            self.runner.hold(proposal.snapshot)  # the graph's parameters hold its values again
            try:
                update = optoprime_update(self._context(run, {}), result.feedback, result.output)
            except LLMError as error:
                _logger.info("Trial#%d: no repair: %s", run.trial.number, error)
                break
            repaired = {**proposal.snapshot, **update}
            if not update or snapshots.snapshot_hash(repaired) == candidate_hash:
                break  # the model proposed no change
            repairs += 1
            proposal = dataclasses.replace(proposal, snapshot=repaired, result=None)
            run.record.pop(records.DUPLICATE_OF, None)
            candidate_hash = self._record_candidate(run, proposal.parents, repaired)
            result = self._evaluate_proposal(run, proposal, candidate_hash)
        if repairs:
            run.record[records.REPAIRS] = repairs
            self._record_candidate(run, proposal.parents, proposal.snapshot)  # trace:evaluated
        return proposal, candidate_hash, result

    def _score(self, run: _TrialRun, proposal: Proposal, result: RunResult) -> Score:
        """The candidate's score: ``evaluate``'s, or ``error_score`` when the candidate failed
        (a transient failure, or one without ``error_score``, fails the trial)."""
        if result.failed:
            assert result.error is not None
            _record_failure(run.record, result)
            if self.error_score is None or result.transient:
                raise _CandidateFailed(result.error)
            score = score_for_study(
                self.error_score, run.context.directions, run.context.study_name, "error_score"
            )
        else:
            assert result.score is not None
            score = result.score
        run.record[records.SCORE] = score
        if proposal.parent_score is not None:
            run.record[records.IMPROVEMENT] = _improvement(score, proposal.parent_score)
        return score

    def _validate(
        self, run: _TrialRun, proposal: Proposal, candidate_hash: str, minibatch_score: Score
    ) -> Score:
        """A dataset study's candidate, scored on the minibatch: compared with its parent
        there, and only if not worse scored on the validation set (GEPA's rule), in chunks a
        pruner may stop. The trial's value: the validation mean, or the minibatch mean with
        ``trace:validated`` False."""
        flow, record = self.dataset, run.record
        assert flow is not None and isinstance(minibatch_score, float)
        parent_rows = None
        if proposal.parents:  # rows its live re-run wrote: read, not run again
            parent = run.population.snapshot(proposal.parents[0])
            self._run_split(run, parent, "train", flow.minibatch, own=False)
            parent_rows = flow.last
        candidate_rows = flow.stored(candidate_hash, "train", flow.minibatch)
        record.update(dataset.acceptance(parent_rows, candidate_rows, run.view.better))
        if record[records.VALIDATED] is False:
            return minibatch_score
        earlier = run.population.trial_with_snapshot(candidate_hash)
        if earlier is not None:  # e.g. no change proposed: its validation rows are all there
            record[records.DUPLICATE_OF] = earlier
        values = proposal.snapshot
        try:
            validation = dataset.validate(
                flow,
                lambda chunk: self._run_split(run, values, "val", chunk),
                run.trial,
                may_prune=bool(proposal.parents),
                before_chunk=lambda: _check_budget(self.config, run.trial.study),
            )
        finally:
            self.runner.hold(values)
        record[records.VALIDATION] = dataclasses.asdict(validation)
        record[records.SCORE] = validation.mean
        if proposal.parent_score is not None:
            record[records.IMPROVEMENT] = _improvement(validation.mean, proposal.parent_score)
        if validation.pruned:
            raise TrialPruned(
                f"Trial#{run.trial.number}: validation stopped by the study's pruner after "
                f"{validation.scored} of {validation.total} examples (mean {validation.mean:g})."
            )
        return validation.mean

    def _run_split(
        self,
        run: _TrialRun,
        values: dict[str, Any],
        split: str,
        examples: Sequence[Any],
        own: bool = True,
    ) -> list[float]:
        """Score ``values`` on ``examples`` of ``split`` through the study's rows (the dataset
        flow's ``last`` holds them); return the scores. A failure fails the trial, remembered
        as the candidate's when the values are its ``own`` (not its parent's)."""
        assert self.dataset is not None
        with self.dataset.using(split, examples):
            result = self.runner.run(values, run.context, run.trial)
        if result.failed:
            assert result.error is not None
            if own:
                _record_failure(run.record, result)
            raise _CandidateFailed(f"{result.error} (scoring the {split} split)")
        return [row.score for row in self.dataset.last]

    def _publish(
        self,
        run: _TrialRun,
        candidate: dict[str, Any],
        score: float,
        state: State,
        best: FrozenTrial | None,
    ) -> dict[str, Any] | None:
        """Publish a candidate that beats the best: :meth:`trace_optuna.sharing.Share.publish`."""
        assert self.shared is not None
        better = run.view.better

        def beats_best(score: float) -> bool:
            return best is None or better(score, score_of(best))

        def rerun(values: dict[str, Any]) -> RunResult:
            self.runner.live = None  # the agent holds other values than the live run's now
            return self.runner.run(values, run.context, run.trial)

        if not beats_best(score):
            return None
        worker = run.record[records.WORKER]
        return self.shared.publish(run.trial, candidate, score, state, beats_best, rerun, worker)

    # -- the record -----------------------------------------------------------------------

    def _write_record(
        self, run: _TrialRun, error: BaseException | None, ending: bool = False
    ) -> None:
        """Write everything the trial knows, once: on success, pruning, failure or interruption.

        A failure to store the record of a trial that is ``ending`` anyway (failed, pruned,
        interrupted) is logged: Optuna still records how it ended.
        """
        record, trial = run.record, run.trial
        if error is not None and not isinstance(error, _CandidateFailed):
            record[records.ERROR] = _reason(error)
            # A failed candidate's own traceback, if it has one, says more than this one.
            record.setdefault(records.TRACEBACK, "".join(traceback.format_exception(error)))
        record.update(self._llm_record())
        params = trial.params
        knobs = {name: params[name] for name in sorted(run.context.knobs) if name in params}
        record[records.KNOBS] = knobs or None
        record[records.TIME] = {
            "evaluate_s": round(run.context.evaluate_s, 6),
            "llm_s": record[records.LLM]["latency_s"],
            "total_s": round(time.perf_counter() - run.started, 6),
        }
        try:
            study_attrs: dict[str, Any] = {}
            for observer in self.observers:  # e.g. long texts to artifacts, the trial's note
                study_attrs.update(observer.before_write(trial, record) or {})
            records.write_trial(trial, record, study_system_attrs=study_attrs)
        except Exception:
            if not ending:
                raise
            _logger.exception("Trial#%d: could not store its record.", trial.number)
            return
        notify(self.observers, "record_written", trial, record)  # e.g. the dashboard's note

    def _llm_record(self) -> dict[str, Any]:
        record = records.llm_usage(self.llm.model, self.llm.take_calls())
        if self.agent_llm is not None:  # the agent's own calls, apart from the optimizer's
            calls = self.agent_llm.take_calls()
            record.update(records.llm_usage(self.agent_llm.model, calls, agent=True))
        return record


def _check_budget(config: Config, study: optuna.Study) -> None:
    """The study-wide budget, checked before each trial and each validation chunk.

    Raises:
        BudgetExhausted: If every worker's spend, as the database holds it, reached a limit.
    """
    if config.budget is None:
        return
    reason = config.budget.exhausted(budget.spent(study))
    if reason is not None:
        raise BudgetExhausted(reason)


class _CandidateFailed(Exception):
    """The candidate failed (its code or ``evaluate`` raised on it) and the study has no
    ``error_score``, or the failure was transient."""


def _record_failure(record: dict[str, Any], result: RunResult) -> None:
    """Put a failed candidate's error into the record; remembered unless it was transient."""
    record[records.ERROR] = result.error
    if result.traceback:
        record[records.TRACEBACK] = result.traceback
    if not result.transient:  # the study never evaluates this candidate again
        record[records.CANDIDATE_ERROR] = result.error


def _improvement(score: Score, parent_score: Score) -> Score:
    """Score minus parent score; per objective (a list) in a multi-objective study."""
    if isinstance(score, list) and isinstance(parent_score, list):
        return [value - parent for value, parent in zip(score, parent_score, strict=True)]
    assert not isinstance(score, list) and not isinstance(parent_score, list)
    return score - parent_score


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
        "error": result.error,
        "transient": result.transient,
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
    if isinstance(error, _CandidateFailed):
        return text  # it says what happened; its class is ours, not the user's
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _resolve_llm(llm: Any) -> LLM:
    if isinstance(llm, str):
        return LLM(llm)
    raise ConfigurationError(
        "llm must be a litellm model string (e.g. 'openai/gpt-4o-mini', or "
        f"'simulated/feedback-follower' offline) or a trace_optuna.LLM; got {llm!r}."
    )
