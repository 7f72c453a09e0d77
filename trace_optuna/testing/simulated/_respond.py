"""Which answerer answers a prompt: those recognising a marker line first, then OptoPrime's,
then a valid, empty fallback answer. To teach the simulated model a new prompt shape, add an
answerer to :data:`ANSWERERS`.
"""

from __future__ import annotations

import json
import logging
import random
import re

from trace_optuna.testing.simulated._core import Answerer
from trace_optuna.testing.simulated._core import SimulatedOptions
from trace_optuna.testing.simulated._core import Tried
from trace_optuna.testing.simulated._genetic import answer_crossover
from trace_optuna.testing.simulated._judge import answer_judge
from trace_optuna.testing.simulated._opro import answer_opro
from trace_optuna.testing.simulated._optoprime import answer_optoprime
from trace_optuna.testing.simulated._stop import answer_stop_improver
from trace_optuna.testing.simulated._stop import answer_stop_solution
from trace_optuna.testing.simulated._textgrad import answer_textgrad

_logger = logging.getLogger("trace_optuna.testing.simulated")


def answer_generic(
    prompt: str,
    rng: random.Random,
    options: SimulatedOptions,
    temperature: float | None,
    tried: Tried | None = None,
) -> str:
    """Answer any prompt with a valid, empty suggestion (the fallback)."""
    shape = "an unrecognised prompt"
    if re.search(r'"candidates"\s*:', prompt):
        shape = "a prompt with candidates"
    elif re.search(r'"solution"\s*:', prompt):
        shape = "a prompt with a solution"
    reasoning = f"The simulated model read {shape}; it has no rule for it and suggests nothing."
    return json.dumps({"reasoning": reasoning, "answer": "", "suggestion": {}})


# Answerers of prompts with an explicit marker line come first; OptoPrime's, then the fallback.
ANSWERERS: list[Answerer] = [
    answer_crossover,
    answer_judge,
    answer_stop_improver,
    answer_stop_solution,
    answer_optoprime,
    # Trace's OPRO and TextGrad prompts are read with Trace's own definitions, which are
    # imported (with Trace's optimizers) only when a prompt gets this far.
    answer_opro,
    answer_textgrad,
    answer_generic,
]


def respond(
    prompt: str,
    rng: random.Random,
    options: SimulatedOptions,
    temperature: float | None,
    tried: Tried | None = None,
) -> str:
    """The simulated model's answer to ``prompt``: the first answerer that recognises it."""
    for answerer in ANSWERERS:
        try:
            answer = answerer(prompt, rng, options, temperature, tried)
        except Exception:  # the simulation must never crash a run
            _logger.exception("Simulated answerer %s failed; trying the next.", answerer.__name__)
            continue
        if answer is not None:
            return answer
    return json.dumps({"reasoning": "No answer.", "answer": "", "suggestion": {}})
