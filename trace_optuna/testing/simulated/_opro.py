"""Trace's OPRO prompt: past solutions and the current one as JSON examples
``{"variables": {py_name: value}, "feedback": ...}``, answered
``{"suggestion": {py_name: value}}``.

Recognised by the first line of OPRO's user prompt, imported from where the ``opro`` strategy
reads it (:data:`~trace_optuna.strategies._safe_optimizers.OPRO_EXAMPLES_MARKER`, taken from
Trace's ``OPRO.user_prompt_template``) when a prompt no other answerer knows comes in: that
import loads Trace's optimizers. The last example is the current solution; the earlier ones
are read as OptoPrime's memory, and the feedback grammar (:mod:`._feedback`) does the rest.
"""

from __future__ import annotations

import json
import random
from typing import Any

from trace_optuna.testing.simulated._core import SimulatedOptions
from trace_optuna.testing.simulated._core import Tried
from trace_optuna.testing.simulated._feedback import OptoPrimeProblem
from trace_optuna.testing.simulated._feedback import value_variable
from trace_optuna.testing.simulated._optoprime import follow_feedback


def _examples(text: str) -> list[dict[str, Any]]:
    decoder = json.JSONDecoder()
    examples, position = [], 0
    while (position := text.find("{", position)) >= 0:
        try:
            entry, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            position += 1
            continue
        if isinstance(entry, dict) and isinstance(entry.get("variables"), dict):
            examples.append(entry)
    return examples


def answer_opro(
    prompt: str,
    rng: random.Random,
    options: SimulatedOptions,
    temperature: float | None,
    tried: Tried | None = None,
) -> str | None:
    """Answer an OPRO prompt, or return None when ``prompt`` is not one.

    Returns:
        ``{"reasoning": ..., "suggestion": {py_name: value}}``, ``"TERMINATE"`` when the
        feedback asks for nothing, or None.
    """
    from trace_optuna.strategies._safe_optimizers import OPRO_EXAMPLES_MARKER

    start = prompt.find(OPRO_EXAMPLES_MARKER)
    if start < 0:
        return None
    examples = _examples(prompt[start + len(OPRO_EXAMPLES_MARKER) :])
    if not examples:
        return None
    *past, current = examples
    problem = OptoPrimeProblem(
        variables=[value_variable(name, value) for name, value in current["variables"].items()],
        feedback=str(current.get("feedback", "")),
        memory=[(entry["variables"], str(entry.get("feedback", ""))) for entry in past],
    )
    edits = follow_feedback(problem, rng, options, temperature, tried)
    if not edits:
        return "TERMINATE"
    suggestion = {edit.variable.py_name: edit.new_value for edit in edits}
    reasoning = "Following the feedback: " + "; ".join(edit.why for edit in edits) + "."
    return json.dumps({"reasoning": reasoning, "suggestion": suggestion})
