"""The greedy step: Trace's OptoPrime proposes a change to the best trial's candidate.

:class:`SafeOptoPrime` is Trace's ``OptoPrime`` with three behaviours of trace-opt 0.1.3.8 fixed
instead of inherited:

* a string suggestion containing ``def`` (``"Use the default tone"``) was sent through ``black``
  and silently dropped when it failed to format: suggestions are now taken as written;
* values were cast with ``type(old)(new)``, so ``bool("False")`` was True and ``list("[3, 4]")``
  a list of characters: :func:`cast_suggestion` parses them;
* any LLM error was retried once without ``response_format`` and then lost: the LLM is called
  once (litellm does the retrying), and a failure raises ``LLMError``.

Its prompt is canonical as well (the same in every process): see :class:`SafeOptoPrime`.
"""

from __future__ import annotations

from collections.abc import Sequence
import json
from typing import TYPE_CHECKING
from typing import Any

from trace_optuna import graph
from trace_optuna import records
from trace_optuna.exceptions import ConfigurationError
from trace_optuna.exceptions import LLMError
from trace_optuna.exceptions import NoCompletedTrialError
from trace_optuna.exceptions import SuggestionError
from trace_optuna.snapshots import snapshot_hash
from trace_optuna.strategies.base import Proposal
from trace_optuna.strategies.base import StepContext
from trace_optuna.strategies.base import Strategy
from trace_optuna.strategies.base import check_int
from trace_optuna.strategies.base import check_number
from trace_optuna.strategies.base import register

if TYPE_CHECKING:
    import optuna


def __getattr__(name: str) -> Any:
    # SafeOptoPrime subclasses Trace's OptoPrime, whose module imports litellm and openai
    # (seconds): it is defined when first used, not when the strategies are imported.
    if name == "SafeOptoPrime":
        from trace_optuna.strategies._safe_optoprime import SafeOptoPrime

        return SafeOptoPrime
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def cast_suggestion(current: Any, suggested: Any) -> Any:
    """Convert an LLM's suggested value to the type of the parameter's current value.

    Args:
        current: The parameter's current value (its type is kept).
        suggested: What the LLM wrote (often a string, whatever the type).

    Returns:
        The suggested value with the current value's type.

    Raises:
        SuggestionError: If the suggestion does not express a value of that type.

    Example:
        >>> cast_suggestion(True, "False"), cast_suggestion([1], "[3, 4]"), cast_suggestion(1, "2")
        (False, [3, 4], 2)
    """
    if current is None:
        return suggested
    if isinstance(current, str):
        if isinstance(suggested, str):
            return suggested
        return json.dumps(suggested) if isinstance(suggested, (list, dict)) else str(suggested)
    if isinstance(current, bool):
        if isinstance(suggested, bool):
            return suggested
        if isinstance(suggested, str) and suggested.strip().lower() in ("true", "false"):
            return suggested.strip().lower() == "true"
        raise SuggestionError(f"{suggested!r} is not a bool (true or false)")
    if isinstance(current, (int, float)):
        number = _number(suggested)
        return float(number) if isinstance(current, float) else int(round(number))
    if isinstance(current, (list, dict)):
        value = suggested
        if isinstance(suggested, str):
            try:
                value = json.loads(suggested)
            except json.JSONDecodeError as error:
                raise SuggestionError(f"{suggested[:80]!r} is not JSON: {error}") from None
        if not isinstance(value, type(current)):
            raise SuggestionError(f"{suggested!r} is not a {type(current).__name__}")
        return value
    raise SuggestionError(f"parameters of type {type(current).__name__} cannot be suggested")


def _number(suggested: Any) -> float:
    if isinstance(suggested, bool):
        raise SuggestionError(f"{suggested!r} is not a number")
    if isinstance(suggested, (int, float)):
        return suggested
    try:
        return float(str(suggested).strip())
    except ValueError:
        raise SuggestionError(f"{suggested!r} is not a number") from None


@register
class OptoPrimeStrategy(Strategy):
    """One OptoPrime step from the best completed trial (the greedy step).

    OptoPrime's memory (earlier variables and their feedback, shown to the LLM) is rebuilt from
    the storage, so it survives restarts and any worker can continue any lineage: first the
    proposals already tried from this parent that did not beat it (newest first), then the
    parent's ancestors. A step whose proposal was rejected is therefore not blind to it: the
    next step from the same parent sees what was tried and what the feedback said (an
    overshoot, say) instead of asking the same question again.

    ``temperature`` and ``memory_size`` are each either fixed here (the same in every trial;
    no Optuna parameter) or, when None, sampled by Optuna in every trial under the parameter
    name given below, so the study's sampler tunes them.

    Args:
        temperature: The LLM temperature of the proposal, a number in [0, 2]. None: sampled
            as ``optoprime.temperature`` in [0, 1].
        memory_size: How many earlier (variables, feedback) pairs OptoPrime shows, an int >=
            0. None: sampled as ``optoprime.memory_size`` in [0, 4].
        objective: Replaces OptoPrime's default instruction to the LLM, a non-empty str;
            None takes the study's (``Config(optimizer={"objective": ...})``, which reaches
            every strategy), or OptoPrime's default. A study refuses two different ones.

    Raises:
        ConfigurationError: If a setting is of the wrong type or out of its range.
    """

    name = "optoprime"

    def __init__(
        self,
        temperature: float | None = None,
        memory_size: int | None = None,
        objective: str | None = None,
    ) -> None:
        check_number("OptoPrimeStrategy", "temperature", temperature, 0.0, 2.0, sampled=True)
        check_int("OptoPrimeStrategy", "memory_size", memory_size, 0, sampled=True)
        if objective is not None and (not isinstance(objective, str) or not objective.strip()):
            raise ConfigurationError(
                "OptoPrimeStrategy: objective must be a non-empty str, or None for OptoPrime's "
                f"default instruction; got {objective!r} ({type(objective).__name__})."
            )
        self.temperature = None if temperature is None else float(temperature)
        self.memory_size = memory_size
        self.objective = objective

    def suggest_settings(self, trial: optuna.Trial) -> dict[str, Any]:
        return {
            "temperature": self.temperature
            if self.temperature is not None
            else trial.suggest_float("optoprime.temperature", 0.0, 1.0),
            "memory_size": self.memory_size
            if self.memory_size is not None
            else trial.suggest_int("optoprime.memory_size", 0, 4),
        }

    def propose(self, context: StepContext) -> Proposal:
        best = context.population.best()
        if best is None:
            raise NoCompletedTrialError(
                "optoprime needs a completed trial to start from; there is none yet."
            )
        parent = context.evaluate_parent(best.number)
        memory_size = int(context.settings.get("memory_size", 0))
        update = optoprime_update(
            context,
            parent.feedback,
            parent.output,
            memory=step_memory(context, parent.number, memory_size),
            objective=self.objective,  # None: the study's (context.optimizer)
            llm=_with_temperature(context.llm, context.settings.get("temperature")),
        )
        candidate = dict(parent.snapshot)
        candidate.update(update)
        return Proposal(
            snapshot=candidate,
            parents=[parent.number],
            parent_score=parent.score,
            parent_feedback=parent.feedback,
        )


def _with_temperature(llm: Any, temperature: float | None) -> Any:
    return llm if temperature is None else llm.with_options(temperature=temperature)


def step_memory(context: StepContext, number: int, size: int) -> list[tuple[dict, str]]:
    """OptoPrime memory for a step from trial ``number``: at most ``size`` entries, oldest first.

    The proposals already tried from ``number`` come first (the newest ``size`` of them, each
    candidate once, failed ones included: their feedback is the error, so the LLM sees what
    broke), then the ancestors of ``number`` fill what is left. Each entry is what
    OptoPrime keeps in ``optimizer.memory``: the variables (by the Trace names this process
    gives the parameters) with their values, and the feedback they got.
    """
    if size <= 0:
        return []
    graph.distinct_names(context.parameters.values())  # as SafeOptoPrime will name them
    population = context.population
    tried, seen = [], set()
    for child in reversed(population.tried_from(number)):
        trial = population.trial(child)
        key = trial.user_attrs.get(records.SNAPSHOT_HASH)
        if records.DUPLICATE_OF in trial.user_attrs or key in seen:
            continue
        seen.add(key)
        tried.append(child)
        if len(tried) == size:
            break
    ancestors = (
        population.lineage(number)[:-1][-(size - len(tried)) :] if len(tried) < size else []
    )
    return [_memory_entry(context, n) for n in [*ancestors, *reversed(tried)]]


def _memory_entry(context: StepContext, number: int) -> tuple[dict, str]:
    values = context.population.snapshot(number)
    variables = {
        node.py_name: (values[path], node.description)
        for path, node in context.parameters.items()
        if path in values
    }
    return variables, context.population.feedback(number)


def optoprime_update(
    context: StepContext,
    feedback: str,
    output: Any,
    *,
    memory: Sequence[tuple[dict, str]] = (),
    objective: str | None = None,
    llm: Any = None,
    ask_again: bool = True,
) -> dict[str, Any]:
    """Run one OptoPrime proposal from a live run; return ``{path: new value}``.

    ``output`` is the Trace node of a run whose graph is live and ``feedback`` its feedback;
    the agent's parameters must still hold that run's values (``context.evaluate_parent`` and
    ``context.evaluate`` leave them so). The study's optimizer settings
    (``context.optimizer``) apply: its objective unless ``objective`` is given, its
    ``max_tokens``, ``include_example`` and ``ignore_extraction_error``.

    A proposal the study already evaluated and saw fail (:meth:`Population.failure
    <trace_optuna.population.Population.failure>`) is not returned as it is: the LLM is told
    so, with the error, and asked once more for a different change (unless ``ask_again`` is
    false: a strategy sampling several proposals, such as evolutionary's offspring, takes the
    known failure as it is, reused without being evaluated, rather than pay another call).

    Raises:
        LLMError: If the LLM's answer held no usable suggestion (an explicit ``TERMINATE``
            is not an error: it returns ``{}``, meaning "no change"), or, with
            ``ignore_extraction_error=False``, any suggestion that could not be used.
    """
    current = {path: node._data for path, node in context.parameters.items()}
    update = _optoprime_once(context, feedback, output, memory, objective, llm)
    failure = context.population.failure(snapshot_hash({**current, **update}))
    if update and failure is not None and ask_again:
        told = (
            f"{feedback}\n\nNote: the change you would suggest now (to "
            f"{', '.join(sorted(update))}) was already evaluated, in Trial#{failure.number}, "
            f"and failed: {failure.error}\nSuggest a different change."
        )
        update = _optoprime_once(context, told, output, memory, objective, llm)
    return update


def _optoprime_once(
    context: StepContext,
    feedback: str,
    output: Any,
    memory: Sequence[tuple[dict, str]],
    objective: str | None,
    llm: Any,
) -> dict[str, Any]:
    from trace_optuna.strategies._safe_optoprime import SafeOptoPrime

    settings = context.optimizer
    optimizer = SafeOptoPrime(
        list(context.parameters.values()),
        llm=llm or context.llm,
        memory_size=len(memory),
        objective=objective or settings.objective,
        include_example=settings.include_example,
        max_tokens=settings.max_tokens,
    )
    for entry in memory:
        optimizer.memory.add(entry)
    optimizer.zero_feedback()
    optimizer.backward(output, feedback, retain_graph=True)
    update = optimizer.propose()
    response = optimizer.last_response or ""
    if optimizer.rejected and not settings.ignore_extraction_error:
        reason = "; ".join(f"{k}: {v}" for k, v in optimizer.rejected.items())
        raise LLMError(
            f"The LLM's suggestion could not be used ({reason}), and the optimizer settings "
            "say ignore_extraction_error=False.",
            response=response,
        )
    if not update and "TERMINATE" not in response:
        reason = "; ".join(f"{k}: {v}" for k, v in optimizer.rejected.items())
        raise LLMError(
            "The LLM's answer held no usable suggestion for any parameter"
            + (f" ({reason})." if reason else "."),
            response=response,
        )
    path_of = {id(node): path for path, node in context.parameters.items()}
    return {path_of[id(node)]: value for node, value in update.items()}
