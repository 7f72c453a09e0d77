"""Evolutionary (mu + lambda): lambda OptoPrime offspring of one of the top mu, all evaluated.

1. A parent is drawn at random from the ``evolutionary.mu`` best stored candidates.
2. ``evolutionary.offspring`` (lambda) OptoPrime proposals are made from the parent's live
   graph, at temperatures spread evenly over ``temperature_range``, so they differ; each
   prompt follows the study's optimizer settings (objective, ``max_tokens``, ...).
3. Every distinct offspring is evaluated; the best (by score, or by the LLM judge with
   ``selector="llm"``) becomes the trial's candidate. All offspring with their scores stay in
   the trial's ``trace:evaluated``: nothing evaluated is thrown away.

Plus-selection comes from the storage: parents stay in the population, so the next trial's
top mu is drawn from parents and offspring alike.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from typing import Any

from trace_optuna.exceptions import ConfigurationError
from trace_optuna.exceptions import LLMError
from trace_optuna.exceptions import NoCompletedTrialError
from trace_optuna.snapshots import snapshot_hash
from trace_optuna.strategies.base import Proposal
from trace_optuna.strategies.base import StepContext
from trace_optuna.strategies.base import Strategy
from trace_optuna.strategies.base import check_int
from trace_optuna.strategies.base import register
from trace_optuna.strategies.optoprime import optoprime_update

if TYPE_CHECKING:
    import optuna

_logger = logging.getLogger(__name__)


@register
class EvolutionaryStrategy(Strategy):
    """(mu + lambda) evolution with OptoPrime as the mutation operator.

    ``mu`` and ``offspring`` are each either fixed here (the same in every trial; no Optuna
    parameter) or, when None, sampled by Optuna in every trial under the parameter name given
    below, so the study's sampler tunes them. ``temperature_range`` is always fixed.

    Args:
        mu: How many of the best candidates a parent is drawn from, an int >= 1. None:
            sampled as ``evolutionary.mu`` in [1, 4].
        offspring: Lambda, the offspring per trial, an int >= 1 (each is one LLM call and one
            evaluation). None: sampled as ``evolutionary.offspring`` in [2, 5].
        temperature_range: The lowest and highest LLM temperature of the offspring, a pair
            of numbers with 0 <= low <= high <= 2.

    Raises:
        ConfigurationError: If a setting is of the wrong type or out of its range.
    """

    name = "evolutionary"

    def __init__(
        self,
        mu: int | None = None,
        offspring: int | None = None,
        temperature_range: tuple[float, float] = (0.2, 1.2),
    ) -> None:
        check_int("EvolutionaryStrategy", "mu", mu, 1, sampled=True)
        check_int("EvolutionaryStrategy", "offspring", offspring, 1, sampled=True)
        self.mu = mu
        self.offspring = offspring
        self.temperature_range = _temperature_range(temperature_range)

    def suggest_settings(self, trial: optuna.Trial) -> dict[str, Any]:
        return {
            "mu": self.mu if self.mu is not None else trial.suggest_int("evolutionary.mu", 1, 4),
            "offspring": self.offspring
            if self.offspring is not None
            else trial.suggest_int("evolutionary.offspring", 2, 5),
        }

    def propose(self, context: StepContext) -> Proposal:
        top = context.population.top_k(int(context.settings["mu"]))
        if not top:
            raise NoCompletedTrialError(
                "evolutionary needs a completed trial to start from; there is none yet."
            )
        chosen = context.rng.choice(top)
        parent = context.evaluate_parent(chosen.number)

        # All proposals come from the parent's live graph, before any offspring is evaluated
        # (evaluating restores other values into the agent).
        offspring: dict[str, dict[str, Any]] = {}
        failures = []
        for temperature in self.temperatures(int(context.settings["offspring"])):
            try:
                update = optoprime_update(
                    context,
                    parent.feedback,
                    parent.output,
                    llm=context.llm.with_options(temperature=temperature),
                    ask_again=False,  # a sibling is the other chance; a known failure is free
                )
            except LLMError as error:
                failures.append(f"temperature {temperature}: {error}")
                continue
            child = {**parent.snapshot, **update}
            offspring.setdefault(snapshot_hash(child), child)
        if not offspring:
            raise LLMError("No offspring: " + "; ".join(failures))

        evaluated = [(child, context.evaluate(child)) for child in offspring.values()]
        winner = context.select(evaluated)
        context.attrs["trace:evolutionary"] = {
            "parent": parent.number,
            "offspring": len(evaluated),
            "winner": winner,
            "failed_proposals": failures,
        }
        snapshot, result = evaluated[winner]
        return Proposal(
            snapshot=snapshot,
            parents=[parent.number],
            parent_score=parent.score,
            parent_feedback=parent.feedback,
            result=result,
        )

    def temperatures(self, count: int) -> list[float]:
        """``count`` temperatures spread evenly over the range."""
        low, high = self.temperature_range
        if count == 1:
            return [round((low + high) / 2, 3)]
        return [round(low + (high - low) * i / (count - 1), 3) for i in range(count)]


def _temperature_range(value: Any) -> tuple[float, float]:
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        and 0.0 <= value[0] <= value[1] <= 2.0
    ):
        return float(value[0]), float(value[1])
    raise ConfigurationError(
        "EvolutionaryStrategy: temperature_range must be a (low, high) pair of numbers with "
        f"0 <= low <= high <= 2; got {value!r} ({type(value).__name__})."
    )
