"""The pairwise judge's prompt (``selector="llm"``): which of two candidates is better.

Recognised by the marker and the candidate labels :mod:`trace_optuna.strategies.judge` writes;
answer ``{"reasoning": ..., "winner": "A"|"B"}``.
"""

from __future__ import annotations

import json
import random
import re

from trace_optuna.strategies.judge import CANDIDATE_FEEDBACK
from trace_optuna.strategies.judge import CANDIDATE_OUTPUT
from trace_optuna.strategies.judge import JUDGE_MARKER
from trace_optuna.strategies.judge import JUDGE_QUESTION
from trace_optuna.testing.simulated._core import SimulatedOptions
from trace_optuna.testing.simulated._core import Tried
from trace_optuna.testing.simulated._core import marker_lines
from trace_optuna.testing.simulated._core import sentences
from trace_optuna.testing.simulated._feedback import SATISFIED
from trace_optuna.testing.simulated._feedback import satisfied

_COMPARE_LINE = marker_lines(JUDGE_MARKER)


def _candidate(label: str) -> str:
    """The pattern of one candidate's part, as the judge writes it: output, then feedback."""
    output = re.escape(CANDIDATE_OUTPUT.format(label=label))
    feedback = re.escape(CANDIDATE_FEEDBACK.format(label=label))
    name = label.lower()
    return rf"{output}\n(?P<out_{name}>.*?)\n{feedback}\n(?P<fb_{name}>.*?)"


_JUDGE_PARTS = re.compile(
    _candidate("A") + r"\n\s*" + _candidate("B") + rf"(?:\n\s*{re.escape(JUDGE_QUESTION)}|\Z)",
    re.DOTALL,
)


def _problems(feedback: str) -> int:
    """How many problems a feedback names: its sentences that do not say all is well."""
    return sum(1 for sentence in sentences(feedback) if not SATISFIED.search(sentence))


def answer_judge(
    prompt: str,
    rng: random.Random,
    options: SimulatedOptions,
    temperature: float | None,
    tried: Tried | None = None,
) -> str | None:
    """Answer the pairwise judge's prompt, or return None when it is not one.

    The judge prefers the candidate whose feedback says it is correct or perfect and nothing
    wrong (:func:`~._feedback.satisfied`); otherwise the one whose feedback names fewer problems
    (sentences), then the shorter feedback; a tie goes to A. With probability ``noise`` the
    verdict is flipped. The answer is ``{"reasoning": ..., "winner": "A"|"B"}``.
    """
    if not _COMPARE_LINE.search(prompt):
        return None
    match = _JUDGE_PARTS.search(prompt)
    if match is None:
        return None
    feedback_a, feedback_b = match["fb_a"].strip(), match["fb_b"].strip()
    satisfied_a, satisfied_b = satisfied(feedback_a), satisfied(feedback_b)
    key_a = (not satisfied_a, _problems(feedback_a), len(feedback_a))
    key_b = (not satisfied_b, _problems(feedback_b), len(feedback_b))
    winner = "B" if key_b < key_a else "A"
    if satisfied_a != satisfied_b:
        why = f"the feedback on {winner} says it is correct"
    elif key_a == key_b:
        why = "both feedbacks are alike; the tie goes to A"
    else:
        why = f"the feedback on {winner} names fewer problems"
    if rng.random() < options.noise:
        winner = "A" if winner == "B" else "B"
        why += " (noise: the verdict is flipped)"
    return json.dumps({"reasoning": f"Candidate {winner} is better: {why}.", "winner": winner})
