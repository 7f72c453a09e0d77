"""Evolutionary (mu + lambda): lambda OptoPrime offspring of one of the top mu, all evaluated.

1. A parent is drawn at random from the ``evolutionary.mu`` best stored candidates.
2. ``evolutionary.offspring`` (lambda) OptoPrime proposals are made from the parent's live
   graph, at temperatures spread evenly over ``temperature_range``, so they differ.
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
from trace_optuna.snapshots import snapshot_hash
from trace_optuna.strategies.base import Proposal
from trace_optuna.strategies.base import StepContext
from trace_optuna.strategies.base import Strategy
from trace_optuna.strategies.base import register
from trace_optuna.strategies.optoprime import optoprime_update

if TYPE_CHECKING:
    import optuna

_logger = logging.getLogger(__name__)


@register
class EvolutionaryStrategy(Strategy):
    """(mu + lambda) evolution with OptoPrime as the mutation operator.

    Args:
        mu: How many of the best candidates a parent is drawn from. None: sampled as
            ``evolutionary.mu`` in [1, 4].
        offspring: Lambda, the offspring per trial. None: sampled as
            ``evolutionary.offspring`` in [2, 5].
        temperature_range: The lowest and highest LLM temperature of the offspring.
    """

    name = "evolutionary"

    def __init__(
        self,
        mu: int | None = None,
        offspring: int | None = None,
        temperature_range: tuple[float, float] = (0.2, 1.2),
    ) -> None:
        low, high = temperature_range
        if not 0.0 <= low <= high <= 2.0:
            raise ConfigurationError(
                f"temperature_range must satisfy 0 <= low <= high <= 2, got {temperature_range}."
            )
        self.mu = mu
        self.offspring = offspring
        self.temperature_range = (low, high)

    def suggest_settings(self, trial: optuna.Trial) -> dict[str, Any]:
        return {
            "mu": self.mu or trial.suggest_int("evolutionary.mu", 1, 4),
            "offspring": self.offspring or trial.suggest_int("evolutionary.offspring", 2, 5),
        }

    def propose(self, context: StepContext) -> Proposal:
        top = context.population.top_k(int(context.settings["mu"]))
        if not top:
            raise LLMError("evolutionary needs a completed trial to start from; none yet.")
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
