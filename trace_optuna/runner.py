"""``AgentRunner``: the agent of one process, its runs, parent re-runs and the live graph.

A run restores a snapshot into the agent, clears the parameters' feedback and calls
``evaluate``; when the candidate's own code raises, the error becomes its feedback (as in
Trace's loops) and its exception node the output, so a next step can repair the code. The run
this process made last keeps its Trace graph (:attr:`AgentRunner.live`): when the next trial
starts from that candidate, its graph is reused instead of evaluated again.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
import contextlib
import dataclasses
import logging
import signal
import threading
import time
from traceback import format_exception
from typing import TYPE_CHECKING
from typing import Any

from opto.trace.bundle import ExecutionError
from opto.trace.containers import ParameterContainer
from opto.trace.nodes import Node
from optuna.exceptions import TrialPruned
from optuna.trial import TrialState

from trace_optuna import records
from trace_optuna import snapshots
from trace_optuna.dataset import Dataset
from trace_optuna.dataset import DatasetFlow
from trace_optuna.evaluation import Evaluation
from trace_optuna.evaluation import score_for_study
from trace_optuna.exceptions import ConfigurationError
from trace_optuna.exceptions import EvaluationTimeout
from trace_optuna.exceptions import TraceOptunaError
from trace_optuna.knobs import ParentTrial
from trace_optuna.knobs import check_names
from trace_optuna.knobs import takes_trial
from trace_optuna.population import score_of
from trace_optuna.strategies.base import ParentEvaluation
from trace_optuna.strategies.base import RunResult

if TYPE_CHECKING:
    import optuna
    from optuna.study import StudyDirection

    from trace_optuna.config import Config
    from trace_optuna.population import Population
    from trace_optuna.sharing import Share


_logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Live:
    """The candidate this process evaluated last, while its Trace graph is still usable."""

    number: int
    snapshot_hash: str
    run: RunResult
    registry_version: int | None = None  # the shared parameters' version it ran with


@dataclasses.dataclass
class RunContext:
    """What one trial's runs need to know and what they report back.

    Attributes:
        directions: The study's directions (scores are checked against them).
        study_name: For error messages.
        strategy_names: Knob names must not collide with them.
        evaluate_s: Seconds spent in ``evaluate`` so far in this trial.
        knobs: The params ``evaluate`` suggested on the running trial.
    """

    directions: list[StudyDirection]
    study_name: str
    strategy_names: list[str]
    evaluate_s: float = 0.0
    knobs: set[str] = dataclasses.field(default_factory=set)


class AgentRunner:
    """The agent this process optimizes, and every run of it.

    Args:
        config: The study's options (``agent``/``parameters``, ``evaluate``,
            ``evaluate_form``, ``evaluate_timeout``).
        shared: The study's side of shared parameters, or None for an agent of its own.

    Raises:
        ConfigurationError: On a wrong ``agent`` or ``evaluate``.
        SnapshotError: If a parameter's value cannot be stored as JSON (names the path).
    """

    def __init__(self, config: Config, shared: Share | None) -> None:
        self.shared = shared
        self.make_agent = agent_factory(config)
        self.dataset: DatasetFlow | None = None
        if config.trainset is None:
            self.evaluate_takes_trial = takes_trial(config.evaluate, config.evaluate_form)
            self.evaluate: Callable[..., Evaluation] = config.evaluate  # type: ignore[assignment]
        else:  # the dataset form: evaluate(agent) scores the trial's examples, batched
            self.dataset = dataset_flow(config, self._candidate_hash)
            self.evaluate_takes_trial = False
            self.evaluate = self.dataset
        self.timeout = config.evaluate_timeout
        self.max_feedback_chars = config.max_feedback_chars
        self.agent = self.make_agent()
        self.parameters = snapshots.parameters(self.agent)
        self._nodes = list(self.parameters.values())  # all of them, shared ones included
        self.initial_snapshot = snapshots.snapshot(self.agent)
        if shared is not None:  # the study optimizes its selection; the rest is context
            shared.check(self.initial_snapshot)
            owned = shared.selection.paths
            self.parameters = {path: self.parameters[path] for path in owned}
            self.initial_snapshot = {path: self.initial_snapshot[path] for path in owned}
        self.live: Live | None = None

    def hold(self, values: dict[str, Any]) -> None:
        """Restore ``values`` into the agent (with the registry's values of shared parameters
        the study does not select), without running it."""
        shared_values = {} if self.shared is None else self.shared.context_values()
        snapshots.restore(self.agent, {**shared_values, **values})

    def _candidate_hash(self) -> str:
        return snapshots.snapshot_hash(self.owned_snapshot())

    def owned_snapshot(self) -> dict[str, Any]:
        """The agent's current values of the parameters this study optimizes."""
        return {path: node._data for path, node in self.parameters.items()}

    def run(
        self,
        values: dict[str, Any],
        context: RunContext,
        trial: optuna.Trial | ParentTrial | None,
    ) -> RunResult:
        """Restore ``values`` into the agent and evaluate it (with ``trial``, if it takes one;
        None outside a trial, for a dataset study's test set).

        In a study over shared parameters, ``values`` are the study's own; the others come from
        the registry version the trial runs with.

        Raises:
            ConfigurationError: If ``evaluate`` breaks its contract (see
                :class:`~trace_optuna.Evaluation`).

        A candidate that fails (its code raises, ``evaluate`` raises on it, the run takes
        longer than ``evaluate_timeout``) is a result too: see :class:`RunResult`.
        """
        self.hold(values)
        for node in self._nodes:  # every run starts clean: no feedback of an earlier backward
            node.zero_feedback()
        self.live = None
        started = time.perf_counter()
        suggested_before = set() if trial is None else set(trial.params)
        try:
            with _time_limit(self.timeout):
                if self.evaluate_takes_trial:
                    evaluation = self.evaluate(self.agent, trial)
                else:
                    evaluation = self.evaluate(self.agent)
        except ExecutionError as error:
            node = error.exception_node
            raised = (node.info or {}).get("output")
            if isinstance(raised, (TrialPruned, ConfigurationError)):  # raised in traced code
                raise raised from None
            # Code the LLM wrote raised: its message becomes the feedback, as in Trace's loops
            # (the exception node's data; the traceback is for the record, not the prompt),
            # and its exception node the output, so a repair step can start from it.
            message = str(node.data).strip()
            return RunResult(
                score=None,
                feedback=self._cut(message),
                output=node,
                code_error=f"The candidate's code raised: {message}",
                transient=is_transient(raised),
                traceback=(node.info or {}).get("traceback") or "".join(format_exception(error)),
            )
        except (TrialPruned, ConfigurationError):
            raise
        except Exception as error:
            # evaluate() raised on this candidate (a grader that chokes on its output, a
            # timeout): the candidate failed, the trial records why and the study goes on.
            message = _described(error)  # EvaluationTimeout's message names evaluate()
            if not isinstance(error, EvaluationTimeout):
                message = f"evaluate() raised {message}"
            return RunResult(
                score=None,
                feedback=self._cut(message),
                evaluate_error=message,
                transient=is_transient(error),
                traceback="".join(format_exception(error)),
            )
        finally:
            context.evaluate_s += time.perf_counter() - started
            if trial is not None and not isinstance(trial, ParentTrial):  # the agent's knobs
                suggested = set(trial.params) - suggested_before
                context.knobs.update(suggested)
                check_names(suggested, context.strategy_names)
        if not isinstance(evaluation, Evaluation):
            raise ConfigurationError(
                f"evaluate() must return trace_optuna.Evaluation, got {type(evaluation).__name__}."
            )
        if evaluation.output is not None and not isinstance(evaluation.output, Node):
            raise ConfigurationError(
                "Evaluation.output must be the Trace node the agent produced, got "
                f"{type(evaluation.output).__name__}."
            )
        score = score_for_study(
            evaluation.score, context.directions, context.study_name, "evaluate()"
        )
        feedback = self._cut(evaluation.feedback)
        return RunResult(score, feedback, evaluation.output, evaluation.details)

    def _cut(self, feedback: str) -> str:
        """The feedback, cut to ``max_feedback_chars`` (saying so) when longer."""
        limit = self.max_feedback_chars
        if len(feedback) <= limit:
            return feedback
        _logger.warning(
            "evaluate() gave %d characters of feedback; keeping the first %d "
            "(max_feedback_chars).",
            len(feedback),
            limit,
        )
        return (
            feedback[:limit]
            + f"\n[... {len(feedback) - limit} more characters cut: feedback is limited to "
            f"max_feedback_chars={limit}]"
        )

    def rerun_parent(
        self,
        trial: optuna.Trial,
        population: Population,
        number: int,
        context: RunContext,
    ) -> tuple[ParentEvaluation, dict[str, Any]]:
        """Re-run a stored trial's candidate for its graph and feedback, with its own knobs.

        The live graph is reused when it is that trial's candidate's.

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
        live = self.live
        if (
            live is not None
            and live.number == number
            and snapshots.snapshot_hash(self.owned_snapshot()) == live.snapshot_hash
        ):
            run = live.run  # its graph is live: a greedy chain evaluates once per trial
            stored = records.decode(parent.user_attrs, records.KNOBS) or {}
            knobs = {name: parent.params[name] for name in stored if name in parent.params}
        else:
            parent_trial = ParentTrial(parent, trial)
            # A dataset study's parent runs every minibatch example: the graph is the point.
            live_runs = contextlib.nullcontext() if self.dataset is None else self.dataset.live()
            try:
                with live_runs:
                    run = self.run(parent_snapshot, context, parent_trial)
            except TrialPruned as error:
                # Pruning judges the running trial's candidate, never a parent's re-run.
                raise TraceOptunaError(
                    f"evaluate() raised TrialPruned while re-running parent Trial#{number} for "
                    "its feedback. A parent's re-run must not prune: prune only when "
                    "trial.should_prune() says so (it is False for a parent's re-run)."
                ) from error
            knobs = parent_trial.knobs
            context.knobs.update(parent_trial.not_in_parent)  # suggested on the running trial
        if run.evaluate_error is not None:
            raise TraceOptunaError(
                f"Re-running parent Trial#{number} for its feedback failed: {run.evaluate_error}"
            )
        if run.output is None:
            raise ConfigurationError(
                "evaluate() returned an Evaluation without output; set output= to the Trace "
                "node the agent produced, so feedback can flow back to the parameters."
            )
        if run.code_error is None and not depends_on(run.output, self.parameters.values()):
            raise ConfigurationError(
                f"evaluate()'s output (Trial#{number}'s re-run) depends on none of the agent's "
                f"trainable parameters {sorted(self.parameters)}: feedback cannot reach them, "
                "and the LLM would be asked to change nothing. Build the output from the "
                "parameters through Trace operations (a @trace.bundle method, node "
                "arithmetic), not from their .data."
            )
        evaluation = ParentEvaluation(
            number, parent_snapshot, score_of(parent), run.feedback, run.output
        )
        return evaluation, knobs


#: Top-level packages whose exceptions are network or service failures (a rate limit, a dropped
#: connection): a candidate that failed with one may be evaluated again.
TRANSIENT_PACKAGES = frozenset({"litellm", "openai", "httpx", "httpcore", "requests", "urllib3"})


def is_transient(error: BaseException | None) -> bool:
    """Whether a failure may not happen again: an ``OSError`` (connection, timeout), an
    ``EvaluationTimeout``, trace_optuna's own errors (an LLM or a person that did not answer),
    or an exception of a network client (:data:`TRANSIENT_PACKAGES`). Any other failure is
    the candidate's: the study remembers it and does not evaluate the candidate again.
    """
    if error is None:
        return False
    if isinstance(error, (OSError, TraceOptunaError)):  # EvaluationTimeout is one of ours
        return True
    package = type(error).__module__.partition(".")[0]
    return package in TRANSIENT_PACKAGES


def _described(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def depends_on(output: Node, parameters: Iterable[Node]) -> bool:
    """Whether Trace's graph leads from ``output`` back to any of ``parameters``."""
    targets = {id(node) for node in parameters}
    seen: set[int] = set()
    stack = [output]
    while stack:
        node = stack.pop()
        if id(node) in targets:
            return True
        if id(node) not in seen:
            seen.add(id(node))
            stack.extend(node.parents)
    return False


def dataset_flow(config: Config, candidate_hash: Callable[[], str]) -> DatasetFlow:
    """The dataset form's ``evaluate(agent)`` for a study given ``trainset``."""
    assert config.evaluate is not None and isinstance(config.trainset, Dataset)
    error_score = config.error_score
    return DatasetFlow(
        config.evaluate,
        trainset=config.trainset,
        valset=config.valset,  # type: ignore[arg-type]
        testset=config.testset,  # type: ignore[arg-type]
        minibatch_size=config.minibatch_size,
        error_score=error_score if isinstance(error_score, float) else None,
        parent_selection=config.parent_selection,
        candidate_hash=candidate_hash,
    )


def agent_factory(config: Config) -> Callable[[], Any]:
    """The function that builds the study's agent: the shared ``ParameterSet``'s, ``agent``
    itself when it is a function, or one returning ``agent`` when it is an agent.

    Raises:
        ConfigurationError: If ``agent`` is neither an agent nor a function building one.
    """
    if config.parameters is not None:
        return config.parameters.parameter_set.make
    agent = config.agent
    if isinstance(agent, (ParameterContainer, dict)):
        return lambda: agent
    if callable(agent):
        return agent
    raise ConfigurationError(
        "agent must be a function that builds the agent (recommended: each process calls it "
        f"once), a trace Module/@trace.model instance, or a dict of parameters; got "
        f"{type(agent).__name__}."
    )


@contextlib.contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`EvaluationTimeout` inside the block once it has run ``seconds``.

    A Unix interval timer: its signal handler raises in the main thread wherever the block is,
    also inside a blocking sleep or socket read (Python retries neither after a handler that
    raises). Code in C that never returns to Python is not interrupted.
    """
    if seconds is None:
        yield
        return
    if threading.current_thread() is not threading.main_thread():
        raise ConfigurationError(
            "evaluate_timeout needs the main thread (it uses a timer signal); run the study "
            "in the main thread or set evaluate_timeout=None."
        )

    def expire(number: int, frame: Any) -> None:
        raise EvaluationTimeout(
            f"evaluate() ran longer than evaluate_timeout={seconds} s and was interrupted."
        )

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
