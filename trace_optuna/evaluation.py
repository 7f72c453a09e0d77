"""``Evaluation``: what a user's ``evaluate(agent)`` returns, and the rules its score follows."""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import json
import math
import numbers
from typing import TYPE_CHECKING
from typing import Any
from typing import TypeAlias

from trace_optuna.exceptions import ConfigurationError

if TYPE_CHECKING:
    from optuna.study import StudyDirection

#: A score: one number, or one number per direction of a multi-objective study.
Score: TypeAlias = "float | list[float]"


@dataclasses.dataclass
class Evaluation:
    """The score and the text feedback of one run of an agent.

    Args:
        score: The number Optuna optimizes (higher is better when the study maximizes). In a
            multi-objective study (``directions=[...]``), a list or tuple of numbers, one per
            direction in the study's order, e.g. ``[accuracy, cost]``; the trial's values.
            NaN is refused.
        feedback: Text that tells the optimizer what to change; it becomes Trace feedback.
        output: The Trace node the agent produced. Feedback is propagated backward from it, so
            it must be the node returned by the agent's traced call (``agent.reply(...)``).
        details: Optional JSON-able extras stored with the trial (per-example scores, ...).

    Example:
        >>> Evaluation(score=0.5, feedback="Mention the order number.", output=None).score
        0.5
        >>> Evaluation(score=(0.9, 3), feedback="Cheaper, please.").score
        [0.9, 3.0]
    """

    score: Score
    feedback: str
    output: Any = None
    details: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.score = check_score(self.score, "Evaluation.score")
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


def score_for_study(
    score: Any, directions: Sequence[StudyDirection], study_name: str, source: str
) -> Score:
    """``score`` as the study's objective takes it: a float, or one float per direction.

    A single-objective study takes a number (a one-number list is accepted); a study with
    several directions takes a list with exactly one number per direction.

    Args:
        score: A number or a list/tuple of numbers.
        directions: The study's directions.
        study_name: Named in the error.
        source: What gave the score (``"evaluate()"``, ``"error_score"``), named in the error.

    Raises:
        ConfigurationError: If the score is not numbers, holds NaN or an infinity, or its
            count does not match the study's directions.
    """
    checked = check_score(score, source)
    count = 1 if isinstance(checked, float) else len(checked)
    if count != len(directions):
        names = [direction.name.lower() for direction in directions]
        shape = (
            "one number"
            if len(directions) == 1
            else f"a list of {len(directions)} numbers, one per direction"
        )
        raise ConfigurationError(
            f"Study {study_name!r} has {len(directions)} objective(s) (directions {names}), but "
            f"{source} gave {count} score(s): {score!r}. Give {shape}."
        )
    if isinstance(checked, list) and len(directions) == 1:
        return checked[0]
    return checked


def check_score(score: Any, source: str) -> Score:
    """``score`` as a float, or a list of floats; ``source`` names it in the error.

    Raises:
        ConfigurationError: If it is not a number or a non-empty list/tuple of numbers, or
            holds NaN or an infinity.
    """
    if isinstance(score, (list, tuple)):
        if not score:
            raise ConfigurationError(f"{source} must not be an empty list.")
        return [_number(value, f"{source}[{index}]") for index, value in enumerate(score)]
    return _number(score, source)


def _number(value: Any, source: str) -> float:
    # numbers.Real takes NumPy's scalars too; bool is an int to Python but never a score.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigurationError(
            f"{source} must be a number (or, for a multi-objective study, a list of numbers), "
            f"got {type(value).__name__}: {value!r}."
        )
    number = float(value)
    if math.isnan(number):
        raise ConfigurationError(f"{source} must not be NaN.")
    if math.isinf(number):
        # An infinite score makes every improvement over it inf or NaN and is not JSON that
        # strict readers accept; score a broken candidate with a large finite number instead.
        raise ConfigurationError(f"{source} must be finite, got {number}.")
    return number
