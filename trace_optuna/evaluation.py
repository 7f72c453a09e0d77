"""``Evaluation``: what a user's ``evaluate(agent)`` returns."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from trace_optuna.exceptions import ConfigurationError


@dataclasses.dataclass
class Evaluation:
    """The score and the text feedback of one run of an agent.

    Args:
        score: The number Optuna optimizes (higher is better when the study maximizes).
        feedback: Text that tells the optimizer what to change; it becomes Trace feedback.
        output: The Trace node the agent produced. Feedback is propagated backward from it, so
            it must be the node returned by the agent's traced call (``agent.reply(...)``).
        details: Optional JSON-able extras stored with the trial (per-example scores, ...).

    Example:
        >>> Evaluation(score=0.5, feedback="Mention the order number.", output=None).score
        0.5
    """

    score: float
    feedback: str
    output: Any = None
    details: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.score, bool) or not isinstance(self.score, (int, float)):
            raise ConfigurationError(
                f"Evaluation.score must be a number, got {type(self.score).__name__}: "
                f"{self.score!r}."
            )
        if math.isnan(self.score):
            raise ConfigurationError("Evaluation.score must not be NaN.")
        self.score = float(self.score)
        if not isinstance(self.feedback, str):
            raise ConfigurationError(
                f"Evaluation.feedback must be a str, got {type(self.feedback).__name__}."
            )
        if self.details is not None:
            if not isinstance(self.details, dict):
                raise ConfigurationError(
                    f"Evaluation.details must be a dict, got {type(self.details).__name__}."
                )
            try:
                json.dumps(self.details, allow_nan=False)
            except (TypeError, ValueError) as error:
                raise ConfigurationError(
                    f"Evaluation.details must be JSON-serializable: {error}"
                ) from None
