"""Choosing among evaluated candidates: by score, or by a pairwise LLM preference judge.

``selector="llm"`` is for tasks whose ``evaluate`` has no meaningful numeric score: the judge
sees two candidates' outputs and feedback at a time and names the better one; the champion of
a knock-out over all candidates wins. Candidates whose code raised never win against ones that
ran.
"""

from __future__ import annotations

from collections.abc import Callable
import json
import re
from typing import TYPE_CHECKING
from typing import Any

from trace_optuna.exceptions import ConfigurationError
from trace_optuna.exceptions import LLMError
from trace_optuna.strategies.base import without_addresses

if TYPE_CHECKING:
    from trace_optuna.evaluation import Score
    from trace_optuna.llm import LLM
    from trace_optuna.strategies.base import RunResult

SELECTORS = ("score", "llm")

JUDGE_SYSTEM_PROMPT = (
    "You compare two candidate solutions of the same task. Each comes with the output it "
    "produced and the feedback it received. Decide which candidate is better at the task. "
    'Answer with JSON only: {"reasoning": "<one or two sentences>", "winner": "A" or "B"}.'
)
JUDGE_MARKER = "#Compare"
CANDIDATE_OUTPUT = "Candidate {label} output:"
CANDIDATE_FEEDBACK = "Feedback on {label}:"
JUDGE_QUESTION = "Which candidate is better?"


class Selector:
    """Picks the best of several evaluated candidates.

    Both settings are fixed: they are not Optuna parameters.

    Args:
        kind: ``"score"`` or ``"llm"``.
        llm: The LLM the judge asks when ``kind == "llm"`` (an object with
            ``complete(messages)``, such as :class:`~trace_optuna.LLM`); unused by
            ``"score"``.

    Raises:
        ConfigurationError: On an unknown kind, or a judge without an LLM.
    """

    def __init__(self, kind: str, llm: LLM) -> None:
        if not isinstance(kind, str) or kind not in SELECTORS:
            raise ConfigurationError(
                f"selector must be one of {list(SELECTORS)}; got {kind!r} ({type(kind).__name__})."
            )
        if kind == "llm" and not callable(getattr(llm, "complete", None)):
            raise ConfigurationError(
                'selector="llm" needs an LLM to judge with (an object with complete(messages), '
                f"such as trace_optuna.LLM); got {type(llm).__name__}."
            )
        self.kind = kind
        self.llm = llm

    def select(
        self,
        candidates: list[tuple[dict[str, Any], RunResult]],
        better: Callable[[Score, Score], bool],
    ) -> int:
        """The index of the best candidate.

        By score, a knock-out: a challenger replaces the champion when ``better`` says so. In
        a multi-objective study ``better`` is Pareto dominance, so the winner is a candidate
        none of the others dominates (the earliest such champion when several are).

        Raises:
            ConfigurationError: If ``candidates`` is empty.
            LLMError: If the judge's answer names no winner.
        """
        if not candidates:
            raise ConfigurationError("select() needs at least one candidate; got none.")
        champion = 0
        for challenger in range(1, len(candidates)):
            if self._prefers(candidates[challenger][1], candidates[champion][1], better):
                champion = challenger
        return champion

    def _prefers(
        self, challenger: RunResult, champion: RunResult, better: Callable[[Score, Score], bool]
    ) -> bool:
        if challenger.failed or challenger.score is None:
            return False
        if champion.failed or champion.score is None:
            return True
        if self.kind == "score":
            return better(challenger.score, champion.score)
        return self.judge(champion, challenger) == "B"

    def judge(self, first: RunResult, second: RunResult) -> str:
        """Ask the LLM which of two candidates is better: ``"A"`` (first) or ``"B"``."""
        user = "\n\n".join(
            [
                JUDGE_MARKER,
                _candidate_text("A", first),
                _candidate_text("B", second),
                f"{JUDGE_QUESTION} Answer with the JSON format above.",
            ]
        )
        text = self.llm.complete(
            [{"role": "system", "content": JUDGE_SYSTEM_PROMPT}, {"role": "user", "content": user}]
        )
        return parse_winner(text)


def parse_winner(text: str) -> str:
    """Read ``"A"`` or ``"B"`` from a judge's answer (JSON, or JSON inside other text)."""
    for candidate in (text, *re.findall(r"\{.*\}", text, re.DOTALL)):
        try:
            winner = json.loads(candidate).get("winner")
        except (json.JSONDecodeError, AttributeError):
            continue
        if isinstance(winner, str) and winner.strip().upper() in ("A", "B"):
            return winner.strip().upper()
    raise LLMError('The judge\'s answer names no winner (expected "A" or "B").', response=text)


def _candidate_text(label: str, result: RunResult) -> str:
    return (
        f"{CANDIDATE_OUTPUT.format(label=label)}\n{_output_text(result)}\n"
        f"{CANDIDATE_FEEDBACK.format(label=label)}\n{result.feedback}"
    )


def _output_text(result: RunResult) -> str:
    if result.output is None:
        return "(not run again: an identical candidate was evaluated earlier)"
    return without_addresses(str(getattr(result.output, "data", result.output)))
