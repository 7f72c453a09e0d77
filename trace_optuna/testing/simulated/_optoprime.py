"""Trace's OptoPrime prompt: its ``#Variables`` and ``#Feedback`` sections, answered in
OptoPrime's JSON format ``{"reasoning": ..., "answer": "", "suggestion": {py_name: value}}``.

Trace writes this prompt (``opto.optimizers.OptoPrime``, which the ``optoprime`` strategy's
``SafeOptoPrime`` extends), not a trace_optuna strategy, so its section headers and memory
line are spelled out here as Trace writes them (``OptoPrime.default_prompt_symbols`` and
``construct_prompt``); tests/llm checks them against Trace's. Importing Trace's optimizers
here would import litellm with them.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

from trace_optuna.testing.simulated._core import SimulatedOptions
from trace_optuna.testing.simulated._core import Tried
from trace_optuna.testing.simulated._feedback import Edit
from trace_optuna.testing.simulated._feedback import OptoPrimeProblem
from trace_optuna.testing.simulated._feedback import Variable
from trace_optuna.testing.simulated._feedback import noisy_edit
from trace_optuna.testing.simulated._feedback import number_edits
from trace_optuna.testing.simulated._feedback import satisfied
from trace_optuna.testing.simulated._feedback import text_edits

# The values of OptoPrime.default_prompt_symbols, without the "#".
SECTION_HEADERS = (
    "Instruction",
    "Code",
    "Documentation",
    "Variables",
    "Constraints",
    "Inputs",
    "Others",
    "Outputs",
    "Feedback",
)
_NEXT_SECTION = re.compile(r"\n#(?:" + "|".join(SECTION_HEADERS) + r")\n")
_VARIABLE_LINE = re.compile(r"^\((?P<type>\w+)\) (?P<name>\w+)(?P<sep>[=:])(?P<rest>.*)$")
_PROBLEM_END = "\n================================"
_MEMORY_START = "Below are some variables and their feedbacks you received in the past."


def parse_optoprime_problem(prompt: str) -> OptoPrimeProblem | None:
    """Read the variables and the feedback of an OptoPrime problem instance.

    Values may span many lines: a value runs until the next ``(type) name=`` line or the next
    ``#Section`` header.

    Args:
        prompt: The system and user messages, joined.

    Returns:
        The problem, or None when the prompt has no ``#Variables`` and ``#Feedback`` sections.
    """
    prompt = "\n" + prompt  # so a header on the first line is found like any other
    start = prompt.rfind("\n#Variables\n")
    feedback_start = prompt.rfind("\n#Feedback\n")
    if start < 0 or feedback_start < start:
        return None
    body_start = start + len("\n#Variables\n")
    next_section = _NEXT_SECTION.search(prompt, body_start)
    body_end = next_section.start() if next_section else feedback_start
    variables = _parse_variables(prompt[body_start:body_end])

    feedback_body = feedback_start + len("\n#Feedback\n")
    feedback_end = prompt.find(_PROBLEM_END, feedback_body)
    feedback = prompt[feedback_body : feedback_end if feedback_end >= 0 else len(prompt)]
    return OptoPrimeProblem(
        variables=variables, feedback=feedback.strip(), memory=_parse_memory(prompt)
    )


def _parse_memory(prompt: str) -> list[tuple[dict[str, Any], str]]:
    """OptoPrime's memory entries: JSON objects ``{"variables": ..., "feedback": ...}``."""
    start = prompt.rfind(_MEMORY_START)
    if start < 0:
        return []
    decoder = json.JSONDecoder()
    position = start + len(_MEMORY_START)
    entries: list[tuple[dict[str, Any], str]] = []
    while True:
        position = prompt.find("{", position)
        if position < 0:
            return entries
        try:
            entry, position = decoder.raw_decode(prompt, position)
        except json.JSONDecodeError:
            return entries
        if not isinstance(entry, dict) or not isinstance(entry.get("variables"), dict):
            return entries
        entries.append((entry["variables"], str(entry.get("feedback", ""))))


def _parse_variables(block: str) -> list[Variable]:
    entries: list[tuple[str, str, list[str]]] = []
    for line in block.split("\n"):
        match = _VARIABLE_LINE.match(line)
        is_code = match is not None and match["type"] == "code"
        if match and (match["sep"] == ":") == is_code:
            entries.append((match["type"], match["name"], [match["rest"]]))
        elif entries:
            entries[-1][2].append(line)
    variables = []
    for type_name, py_name, lines in entries:
        text = "\n".join(lines).rstrip("\n")
        value: Any = text
        try:
            if type_name == "int":
                value = int(text.strip())
            elif type_name == "float":
                value = float(text.strip())
        except ValueError:
            type_name = "unparsed"
        variables.append(Variable(type_name=type_name, py_name=py_name, value=value))
    return variables


def answer_optoprime(
    prompt: str,
    rng: random.Random,
    options: SimulatedOptions,
    temperature: float | None,
    tried: Tried | None = None,
) -> str | None:
    """Answer an OptoPrime problem, or return None when ``prompt`` is not one.

    Args:
        prompt: The messages' text, joined.
        rng: The random source for this call.
        options: Noise and seed.
        temperature: The request's temperature, or None (treated as 1).
        tried: Values already suggested for this prompt, not proposed again (numbers).

    Returns:
        OptoPrime's JSON answer, ``"TERMINATE"``, or None.
    """
    problem = parse_optoprime_problem(prompt)
    if problem is None:
        return None
    edits = follow_feedback(problem, rng, options, temperature, tried)
    if not edits:
        return "TERMINATE"
    suggestion = {edit.variable.py_name: edit.new_value for edit in edits}
    reasoning = "Following the feedback: " + "; ".join(edit.why for edit in edits) + "."
    return json.dumps({"reasoning": reasoning, "answer": "", "suggestion": suggestion})


def follow_feedback(
    problem: OptoPrimeProblem,
    rng: random.Random,
    options: SimulatedOptions,
    temperature: float | None,
    tried: Tried | None = None,
) -> list[Edit]:
    """The edits the feedback grammar makes of ``problem``: none when the feedback is
    satisfied or holds no instruction it understands (the answer is then ``TERMINATE``, or the
    value unchanged). With probability ``noise`` one of them is replaced by a wrong one."""
    noisy = rng.random() < options.noise
    if satisfied(problem.feedback):
        return []
    spread = 1.0 if temperature is None else float(temperature)
    current: dict[str, Any] = {}
    edits = text_edits(problem, current) + number_edits(problem, rng, spread, current, tried)
    if edits and noisy:
        edits = [noisy_edit(rng.choice(edits), rng)]
    return edits
