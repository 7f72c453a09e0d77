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
* Raise :class:`~trace_optuna.exceptions.LLMError` when the LLM gave nothing usable, and any
  other exception for a real failure: the trial is recorded as FAIL with the reason and the
  study goes on. Do not catch-and-hide errors to return the parent unchanged.
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
import random
from typing import TYPE_CHECKING
from typing import Any
from typing import ClassVar

from trace_optuna.exceptions import ConfigurationError

if TYPE_CHECKING:
    import optuna

    from trace_optuna.evaluation import Score
    from trace_optuna.llm import LLM
    from trace_optuna.population import Population


@dataclasses.dataclass
class RunResult:
    """One evaluation of a candidate snapshot in this process.

    Attributes:
        score: The score, or None when the candidate's code raised (``code_error``) or the
            result was reused without a score.
        feedback: The feedback (the error text when the code raised).
        output: The Trace node produced (an exception node when the code raised); None when
            the result was reused from storage instead of evaluated.
        details: ``Evaluation.details``.
        code_error: Why the candidate's code raised, if it did.
        reused_from: The trial whose stored score was reused (nothing was run), if any.
    """

    score: Score | None
    feedback: str
    output: Any = None
    details: dict[str, Any] | None = None
    code_error: str | None = None
    reused_from: int | None = None


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

    def suggest_settings(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample this strategy's settings for one trial. The default has none."""
        return {}

    def propose(self, context: StepContext) -> Proposal:
        """Return one candidate. See the module docstring for the rules."""
        raise NotImplementedError


_REGISTRY: dict[str, type[Strategy]] = {}


def register(strategy_class: type[Strategy]) -> type[Strategy]:
    """Make a strategy class available by its name (usable as a class decorator)."""
    if not strategy_class.name:
        raise ConfigurationError(f"{strategy_class.__name__}.name must be a non-empty str.")
    _REGISTRY[strategy_class.name] = strategy_class
    return strategy_class


def registered() -> dict[str, type[Strategy]]:
    """The strategy classes available by name."""
    return dict(_REGISTRY)


def resolve(strategies: Any) -> list[Strategy]:
    """Turn a list of names and/or Strategy instances into Strategy instances.

    Raises:
        ConfigurationError: On an unknown name, a non-Strategy, an empty list or duplicates.
    """
    if isinstance(strategies, (str, Strategy)):
        strategies = [strategies]
    resolved: list[Strategy] = []
    for item in strategies:
        if isinstance(item, Strategy):
            if not item.name:
                raise ConfigurationError(f"{type(item).__name__}.name must be a non-empty str.")
            resolved.append(item)
        elif isinstance(item, str):
            if item not in _REGISTRY:
                raise ConfigurationError(
                    f"Unknown strategy {item!r}; valid names are {sorted(_REGISTRY)}, or pass "
                    "a trace_optuna.Strategy instance."
                )
            resolved.append(_REGISTRY[item]())
        else:
            raise ConfigurationError(
                f"strategies must hold names or Strategy instances, got {type(item).__name__}."
            )
    names = [strategy.name for strategy in resolved]
    if not names:
        raise ConfigurationError("strategies must name at least one strategy.")
    if len(set(names)) != len(names):
        raise ConfigurationError(f"strategies must not repeat a name: {names}.")
    return resolved
