"""Trace's TextGrad prompts: feedback ("gradients") on a variable, their summary, and the
improved variable between tags.

Recognised by TextGrad's system prompts and read with its templates, imported from where the
``textgrad`` strategy reads them (:mod:`trace_optuna.strategies._safe_optimizers`, taken from
Trace's ``opto.optimizers.textgrad``) when a prompt no other answerer knows comes in.

* A gradient prompt is answered with the instructions of the grammar (:mod:`._feedback`) found
  in the feedback it passes on (:func:`~._feedback.instructions`): the model "propagates" the
  feedback unchanged.
* A summary prompt is answered with the instructions of all its feedbacks, each once.
* An update prompt shows one variable (its value cut to its first and last words when long:
  the whole value is then read from the conversation in its context) with its feedback; the
  grammar edits it, and the answer is the new value between the tags the prompt asks for (the
  value unchanged when the feedback asks for nothing).
"""

from __future__ import annotations

import random
import re

from trace_optuna.testing.simulated._core import SimulatedOptions
from trace_optuna.testing.simulated._core import Tried
from trace_optuna.testing.simulated._feedback import OptoPrimeProblem
from trace_optuna.testing.simulated._feedback import instructions
from trace_optuna.testing.simulated._feedback import value_variable
from trace_optuna.testing.simulated._optoprime import follow_feedback

_NO_FEEDBACK = "No change is needed."


def answer_textgrad(
    prompt: str,
    rng: random.Random,
    options: SimulatedOptions,
    temperature: float | None,
    tried: Tried | None = None,
) -> str | None:
    """Answer one of TextGrad's prompts, or return None when ``prompt`` is not one."""
    from trace_optuna.strategies import _safe_optimizers as textgrad

    if prompt.startswith(textgrad.TEXTGRAD_GRADIENT_SYSTEM):
        objective = textgrad.template_pattern(textgrad.TEXTGRAD_TEMPLATES["objective"])
        match = objective.search(prompt)
        found = instructions(match["response_gradient"]) if match else []
        return " ".join(found) or _NO_FEEDBACK
    if prompt.startswith(textgrad.TEXTGRAD_REDUCE_SYSTEM):
        start, end = textgrad.TEXTGRAD_REDUCE_TAGS
        feedbacks = re.findall(f"{re.escape(start)}(.*?){re.escape(end)}", prompt, re.DOTALL)
        found = [sentence for text in feedbacks for sentence in instructions(text)]
        return " ".join(dict.fromkeys(found)) or _NO_FEEDBACK
    if not prompt.startswith(textgrad.TEXTGRAD_UPDATE_SYSTEM_START):
        return None
    update = textgrad.template_pattern(textgrad.TEXTGRAD_TEMPLATES["update"]).search(prompt)
    tags = textgrad.template_pattern(textgrad.TEXTGRAD_TEMPLATES["suffix"]).search(prompt)
    if update is None or tags is None:
        return None
    value = _whole_value(update["variable_short"], update["variable_grad"])
    variable = value_variable("variable", value)
    feedback = " ".join(dict.fromkeys(instructions(update["variable_grad"])))
    problem = OptoPrimeProblem(variables=[variable], feedback=feedback)
    edits = follow_feedback(problem, rng, options, temperature, tried) if feedback else []
    new_value = str(edits[0].new_value) if edits else value
    return f"{tags['new_variable_start_tag']}{new_value}{tags['new_variable_end_tag']}"


def _whole_value(short: str, context: str) -> str:
    """The variable's value: ``short`` itself, or, when TextGrad cut it, the value in the
    context's conversation that cuts to it."""
    from opto.optimizers.textgrad import get_short_value

    from trace_optuna.strategies._safe_optimizers import TEXTGRAD_TEMPLATES
    from trace_optuna.strategies._safe_optimizers import template_pattern

    short = short.strip()
    conversation = template_pattern(TEXTGRAD_TEMPLATES["conversation"])
    for match in conversation.finditer(context):
        whole = match["prompt"].strip()
        if whole != short and get_short_value(whole).strip() == short:
            return whole
    return short
