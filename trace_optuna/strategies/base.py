"""The contract between a trial and a candidate-generation strategy.

A trial (see :mod:`trace_optuna.step`) asks the study's sampler which strategy to run, lets the
strategy propose one candidate, evaluates it and stores everything. A strategy only proposes.

Lifecycle of one trial, as a strategy sees it:

1. :meth:`Strategy.suggest_settings` is called with the live ``optuna.Trial``. Sample your own
   settings here as Optuna parameters named ``"<strategy name>.<setting>"`` so that Optuna's
   samplers and importance analysis see them. Return them as a dict. The default samples none.
2. :meth:`Strategy.propose` is called with a :class:`StepContext`: the study's population (all
   stored trials, read from the storage), this process's agent, the LLM, the settings, a seeded
   random generator and helpers to evaluate a parent or any candidate. Return a
   :class:`Proposal`: the candidate snapshot and the trial numbers of its parents. If you
   evaluated the candidate yourself (``context.evaluate``), pass that result along so the trial
   does not evaluate it again.

Rules:

* Read state from ``context.population`` (the storage), never from attributes you kept from an
  earlier call: another worker may have run the trials in between, and the process may be new.
* The agent's parameters may be left holding anything; the trial restores what it evaluates.
* Raise :class:`~trace_optuna.exceptions.LLMError` when the LLM gave nothing usable,
  :class:`~trace_optuna.exceptions.NoCompletedTrialError` when the population holds nothing to
  start from, and any other exception for a real failure: the trial is recorded as FAIL with
  the reason and the study goes on. Do not catch-and-hide errors to return the parent
  unchanged.
* Follow the study's optimizer settings (``context.optimizer``, given once by the user as
  ``Config(optimizer=...)``) in every prompt you send: pass ``context.optimizer.call_options()``
  to each LLM call (``max_tokens``) and show ``context.optimizer.objective_section()`` (the
  objective, if any) in the prompt; :func:`~trace_optuna.strategies.optoprime.optoprime_update`
  does both.
* Check your constructor's arguments when the strategy is built (:func:`check_int`,
  :func:`check_number`), so a bad setting fails once, naming the argument and the rule,
  instead of failing every trial. A setting is either *fixed* (given to the constructor: the
  same in every trial, and no Optuna parameter) or *sampled* (None: Optuna suggests it in every
  trial in :meth:`Strategy.suggest_settings`, so the study's sampler tunes it).
* Scores follow the study's direction: ``context.better(a, b)`` says which is better. In a
  multi-objective study a score is a list (one number per direction) and ``better`` is Pareto
  dominance: two scores can each be no better than the other. ``population.best()`` is then
  the Pareto-front member a greedy step starts from, and ``top_k``/``tournament`` rank by
  Pareto layer (see :mod:`trace_optuna.population`). A strategy that needs one number sets
  ``multi_objective = False``: a multi-objective study then refuses it at its first trial.
* Every candidate you evaluate with ``context.evaluate`` is kept in the trial's record
  (``trace:evaluated``), so nothing evaluated is thrown away. Store anything else your strategy
  should leave behind in ``context.attrs`` under keys starting with ``trace:``.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import difflib
import random
import re
from typing import TYPE_CHECKING
from typing import Any
from typing import ClassVar
from typing import NoReturn

from trace_optuna.exceptions import ConfigurationError
from trace_optuna.strategies.optimizer_settings import OptimizerSettings

if TYPE_CHECKING:
    import optuna

    from trace_optuna.evaluation import Score
    from trace_optuna.llm import LLM
    from trace_optuna.population import Population


@dataclasses.dataclass
class RunResult:
    """One evaluation of a candidate snapshot in this process.

    A candidate *fails* when its own code raised (``code_error``: Trace's ``ExecutionError``,
    whose message is the feedback, as in Trace's loops) or ``evaluate`` raised on it
    (``evaluate_error``). Either way it has no score and never becomes a working candidate;
    a failure that is not ``transient`` is remembered by the study (see
    :meth:`~trace_optuna.population.Population.failure`), so the candidate is not evaluated
    again.

    Attributes:
        score: The score, or None when the candidate failed or the result was reused without
            a score.
        feedback: The feedback (the error's message when the candidate failed).
        output: The Trace node produced (an exception node when the code raised); None when
            the result was reused from storage instead of evaluated.
        details: ``Evaluation.details``.
        code_error: Why the candidate's code raised, if it did.
        evaluate_error: Why ``evaluate`` raised on this candidate, if it did.
        transient: Whether the failure may not happen again (a connection error, a timeout):
            such a failure is not remembered, and a later trial may evaluate the candidate.
        traceback: The failure's traceback, for the record (never shown to the LLM).
        reused_from: The trial whose stored result was reused (nothing was run), if any.
    """

    score: Score | None
    feedback: str
    output: Any = None
    details: dict[str, Any] | None = None
    code_error: str | None = None
    evaluate_error: str | None = None
    transient: bool = False
    traceback: str | None = None
    reused_from: int | None = None

    @property
    def error(self) -> str | None:
        """Why the candidate failed (its code or ``evaluate`` raised), or None."""
        return self.code_error or self.evaluate_error

    @property
    def failed(self) -> bool:
        """Whether the candidate failed: it has no score of its own."""
        return self.error is not None


@dataclasses.dataclass
class ParentEvaluation:
    """A parent trial re-run in this process, so its Trace graph can take feedback.

    Attributes:
        number: The parent's trial number.
        snapshot: The parent's full snapshot.
        score: The parent's stored score (its trial value; its values, a list, in a
            multi-objective study).
        feedback: The feedback of this run (the error text if the parent's code raised).
        output: The Trace node this run produced (an exception node if its code raised); its
            graph is live, so feedback can be propagated backward from it.
    """

    number: int
    snapshot: dict[str, Any]
    score: Score
    feedback: str
    output: Any


@dataclasses.dataclass
class Proposal:
    """What a strategy returns: one candidate and where it came from.

    Attributes:
        snapshot: The candidate's full snapshot ``{path: value}``.
        parents: Parent trial numbers; the first one is the parent the diff and the
            improvement are measured against.
        parent_score: The first parent's score.
        parent_feedback: The feedback that drove the proposal.
        result: The candidate's evaluation, when the strategy already ran it with
            ``context.evaluate(snapshot)``; the trial then uses it instead of evaluating again.
    """

    snapshot: dict[str, Any]
    parents: list[int]
    parent_score: Score | None = None
    parent_feedback: str | None = None
    result: RunResult | None = None


@dataclasses.dataclass
class StepContext:
    """What a strategy may use to propose a candidate.

    Attributes:
        trial: The running Optuna trial.
        population: The study's stored trials.
        agent: This process's agent (parameters are restored by the helpers below).
        parameters: ``{path: ParameterNode}`` of the agent, in a stable order.
        llm: The study's LLM; every call through it is accounted to this trial.
        settings: What :meth:`Strategy.suggest_settings` returned.
        evaluate_parent: Re-runs a stored trial's candidate in this process and returns a
            :class:`ParentEvaluation` (reusing the live graph when this process evaluated
            that candidate last). ``evaluate(agent, trial)`` then gets the parent's own knob
            values (:class:`~trace_optuna.knobs.ParentTrial`).
        evaluate: Evaluates any candidate snapshot and returns a :class:`RunResult`; a snapshot
            the study already evaluated is not run again (``reused_from`` says which trial's
            score was reused), unless ``evaluate`` takes the trial: its score then depends on
            the trial's own knobs. Each call is recorded in the trial.
        better: ``better(a, b)`` is True when score ``a`` is better than ``b`` (Pareto
            dominance when scores are lists, in a multi-objective study).
        select: Picks the best of several evaluated candidates, by score or, with the study's
            ``selector="llm"``, by a pairwise LLM judge; returns the winner's index.
        rng: A random generator seeded from the study's seed and the trial number.
        attrs: Extra record attributes to store with the trial (keys start with ``trace:``).
        optimizer: The study's optimizer settings (``Config(optimizer=...)``): the objective,
            ``max_tokens`` and the rest, for every prompt the strategy sends
            (``optimizer.call_options()`` are the keyword arguments of each LLM call).
        isolation: ``Config.stop_isolation``: pass it to every sandboxed run
            (:func:`trace_optuna.sandbox.run`) of LLM-written code.
    """

    trial: optuna.Trial
    population: Population
    agent: Any
    parameters: dict[str, Any]
    llm: LLM
    settings: dict[str, Any]
    evaluate_parent: Callable[[int], ParentEvaluation]
    evaluate: Callable[[dict[str, Any]], RunResult]
    better: Callable[[Score, Score], bool]
    select: Callable[[list[tuple[dict[str, Any], RunResult]]], int]
    rng: random.Random
    attrs: dict[str, Any]
    optimizer: OptimizerSettings = dataclasses.field(default_factory=OptimizerSettings)
    isolation: str = "required"


class Strategy:
    """Base class of candidate-generation strategies. Subclass it to add your own.

    Set ``name`` (a short identifier, used as the value of the trial's ``strategy`` parameter)
    and implement :meth:`propose`. Override :meth:`suggest_settings` to let Optuna tune your
    strategy's settings.

    Example:
        >>> class KeepBest(Strategy):
        ...     name = "keep-best"
        ...     def propose(self, context):
        ...         best = context.population.best()
        ...         return Proposal(context.population.snapshot(best.number), [best.number])
    """

    name: ClassVar[str] = ""
    #: Whether the strategy works in multi-objective studies (scores are lists, compared by
    #: Pareto dominance). Set False if it needs one number per candidate.
    multi_objective: ClassVar[bool] = True
    #: Whether the strategy runs LLM-written programs in the sandboxed child
    #: (:mod:`trace_optuna.sandbox`). A study or worker with such a strategy checks, as it
    #: starts, that this machine can isolate them, and refuses to start unless it can or the
    #: user opted out (``Config.stop_isolation``).
    sandboxed: ClassVar[bool] = False

    def suggest_settings(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample this strategy's settings for one trial. The default has none."""
        return {}

    def propose(self, context: StepContext) -> Proposal:
        """Return one candidate. See the module docstring for the rules."""
        raise NotImplementedError


_REGISTRY: dict[str, type[Strategy]] = {}


# An object's default repr carries its address ("<Agent object at 0x7f3a...>").
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+(?=>)")


def without_addresses(text: str) -> str:
    """``text`` with the addresses of default object reprs left out, for a prompt.

    Addresses change from process to process; a prompt holding them would differ between two
    runs of the same seeded study.

    Example:
        >>> without_addresses("<Agent object at 0x7f3a2c1b9d50>")
        '<Agent object>'
    """
    return _ADDRESS.sub("", text)


def register(strategy_class: type[Strategy]) -> type[Strategy]:
    """Make a strategy class available by its name (usable as a class decorator).

    Raises:
        ConfigurationError: If ``strategy_class`` is not a :class:`Strategy` subclass, has no
            name, or its name is taken by another class.
    """
    if not (isinstance(strategy_class, type) and issubclass(strategy_class, Strategy)):
        raise ConfigurationError(
            f"register() takes a trace_optuna.Strategy subclass, got {strategy_class!r}."
        )
    name = strategy_class.name
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"{strategy_class.__name__}.name must be a non-empty str.")
    taken = _REGISTRY.get(name)
    if taken is not None and taken.__qualname__ != strategy_class.__qualname__:
        raise ConfigurationError(
            f"The strategy name {name!r} is taken by {taken.__qualname__}; give "
            f"{strategy_class.__qualname__} another name."
        )
    _REGISTRY[name] = strategy_class
    return strategy_class


def registered() -> dict[str, type[Strategy]]:
    """The strategy classes available by name."""
    return dict(_REGISTRY)


def resolve(strategies: Any) -> list[Strategy]:
    """Turn one name, one Strategy instance, or a list or tuple of them into Strategy instances.

    Names resolve through the registry (:func:`register`); a name builds the strategy with
    its default settings (each sampled by Optuna).

    Example:
        >>> [strategy.name for strategy in resolve("optoprime")]
        ['optoprime']
        >>> [strategy.name for strategy in resolve(["optoprime", "genetic"])]
        ['optoprime', 'genetic']

    Raises:
        ConfigurationError: On an unknown name (the error lists the valid ones), a Strategy
            class instead of an instance, anything else that is not a name or a Strategy, an
            empty list, or a name given twice.
    """
    if isinstance(strategies, (str, Strategy)) or (
        isinstance(strategies, type) and issubclass(strategies, Strategy)
    ):
        strategies = [strategies]  # one of them; a class is refused below, naming the fix
    elif not isinstance(strategies, (list, tuple)):
        raise ConfigurationError(
            "strategies must be a strategy name, a trace_optuna.Strategy instance, or a list "
            f"of them; got {_shown(strategies)}. Valid names are {sorted(_REGISTRY)}."
        )
    resolved = [_resolve_one(item) for item in strategies]
    if not resolved:
        raise ConfigurationError(
            f"strategies must name at least one strategy; valid names are {sorted(_REGISTRY)}."
        )
    names = [strategy.name for strategy in resolved]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigurationError(
            f"strategies names {repeated} more than once ({names}): the trial's 'strategy' "
            "parameter picks a strategy by its name, so each name may appear once."
        )
    return resolved


def _resolve_one(item: Any) -> Strategy:
    if isinstance(item, Strategy):
        if not isinstance(item.name, str) or not item.name:
            raise ConfigurationError(f"{type(item).__name__}.name must be a non-empty str.")
        return item
    if isinstance(item, str):
        if item not in _REGISTRY:
            close = difflib.get_close_matches(item, list(_REGISTRY), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigurationError(
                f"Unknown strategy {item!r}; valid names are {sorted(_REGISTRY)}, or pass a "
                f"trace_optuna.Strategy instance.{hint}"
            )
        return _REGISTRY[item]()
    if isinstance(item, type) and issubclass(item, Strategy):
        raise ConfigurationError(
            f"strategies must hold Strategy instances, not classes: pass {item.__name__}() "
            f"instead of {item.__name__}."
        )
    raise ConfigurationError(
        f"strategies must hold strategy names or trace_optuna.Strategy instances, got "
        f"{_shown(item)}. Valid names are {sorted(_REGISTRY)}."
    )


def _shown(value: Any) -> str:
    """``value`` as an error message shows it: its repr (cut short) and its type."""
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({type(value).__name__})"


def check_int(
    owner: str, name: str, value: Any, low: int, high: int | None = None, *, sampled: bool = False
) -> None:
    """Refuse a constructor argument that is not an int in ``[low, high]``.

    For strategy authors: check settings in ``__init__`` so that a bad one fails when the
    strategy is built, not at every trial.

    Args:
        owner: The class whose argument it is (named in the error).
        name: The argument's name.
        value: What was given.
        low: The smallest value allowed.
        high: The largest value allowed; None for no limit.
        sampled: Whether None is allowed (it means "sampled by Optuna in each trial").

    Raises:
        ConfigurationError: Naming ``owner``, ``name``, the rule and the value given.
    """
    if value is None and sampled:
        return
    if isinstance(value, int) and not isinstance(value, bool):
        if value >= low and (high is None or value <= high):
            return
    rule = f"an int >= {low}" if high is None else f"an int in [{low}, {high}]"
    _refuse(owner, name, rule, value, sampled)


def check_number(
    owner: str, name: str, value: Any, low: float, high: float, *, sampled: bool = False
) -> None:
    """Refuse a constructor argument that is not a finite number (int or float) in ``[low, high]``.

    Args:
        owner: The class whose argument it is (named in the error).
        name: The argument's name.
        value: What was given.
        low: The smallest value allowed.
        high: The largest value allowed.
        sampled: Whether None is allowed (it means "sampled by Optuna in each trial").

    Raises:
        ConfigurationError: Naming ``owner``, ``name``, the rule and the value given.
    """
    if value is None and sampled:
        return
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if low <= value <= high:  # NaN fails both comparisons
            return
    _refuse(owner, name, f"a number in [{low:g}, {high:g}]", value, sampled)


def _refuse(owner: str, name: str, rule: str, value: Any, sampled: bool) -> NoReturn:
    alternative = ", or None to let Optuna sample it in each trial" if sampled else ""
    raise ConfigurationError(f"{owner}: {name} must be {rule}{alternative}; got {_shown(value)}.")
