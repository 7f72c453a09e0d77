"""The genetic strategy's crossover prompt: a child per path from the parents.

Recognised by the markers :mod:`trace_optuna.strategies.genetic` writes
(:data:`~trace_optuna.strategies.genetic.CROSSOVER_MARKER`, then ``PARENTS_MARKER`` and the
parents as JSON); answer ``{"reasoning": ..., "child": {path: value}}``.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

from trace_optuna.strategies.genetic import CROSSOVER_MARKER
from trace_optuna.strategies.genetic import PARENTS_MARKER
from trace_optuna.testing.simulated._core import SimulatedOptions
from trace_optuna.testing.simulated._core import Tried
from trace_optuna.testing.simulated._core import append_sentence
from trace_optuna.testing.simulated._core import first_json_object
from trace_optuna.testing.simulated._core import is_code
from trace_optuna.testing.simulated._core import marker_lines
from trace_optuna.testing.simulated._core import sentences

_CROSSOVER_LINE = marker_lines(CROSSOVER_MARKER)
_PARENTS_LINE = marker_lines(PARENTS_MARKER)


def answer_crossover(
    prompt: str,
    rng: random.Random,
    options: SimulatedOptions,
    temperature: float | None,
    tried: Tried | None = None,
) -> str | None:
    """Answer the genetic strategy's crossover prompt, or return None when it is not one.

    The prompt has a ``#Crossover`` line and a ``#Parents`` line followed by
    ``{"direction": "maximize"|"minimize", "parents": [{"trial", "score", "feedback",
    "values": {path: value}}, ...]}``. The child takes, per path: the common value when the
    parents agree; for text that is not code, the better parent's text followed by the other
    parents' sentences it does not already contain; for anything else (numbers, code, ...),
    the better parent's value. With probability ``noise`` one path takes a worse parent's value.
    The answer is ``{"reasoning": ..., "child": {path: value}}``.
    """
    if not _CROSSOVER_LINE.search(prompt):
        return None
    marker = _PARENTS_LINE.search(prompt)
    if marker is None:
        return None
    data = first_json_object(prompt[marker.end() :])
    parents = [p for p in data.get("parents", []) if isinstance(p.get("values"), dict)]
    if not parents:
        return None
    maximize = data.get("direction", "maximize") != "minimize"

    def rank(parent: dict[str, Any]) -> float:
        score = parent.get("score")
        if not isinstance(score, (int, float)) or isinstance(score, bool):
            return math.inf
        return -score if maximize else score

    ordered = sorted(parents, key=rank)  # stable: equal scores keep the prompt's order
    child: dict[str, Any] = {}
    notes = []
    paths = list(dict.fromkeys(path for parent in ordered for path in parent["values"]))
    for path in paths:
        values = [p["values"][path] for p in ordered if path in p["values"]]
        best = values[0]
        if all(value == best for value in values):
            child[path] = best
        elif isinstance(best, str) and not is_code(best):
            text = best
            for other in values[1:]:
                if not isinstance(other, str):
                    continue
                for sentence in sentences(other):
                    if sentence not in text:
                        text = append_sentence(text, sentence)
            child[path] = text
            notes.append(f"{path}: the better text plus the other's missing sentences")
        else:
            child[path] = best
            notes.append(f"{path}: the better parent's value")
    if len(ordered) > 1 and rng.random() < options.noise:
        differing = [path for path in paths if child[path] != ordered[-1]["values"].get(path)]
        differing = [path for path in differing if path in ordered[-1]["values"]]
        if differing:
            path = rng.choice(differing)
            child[path] = ordered[-1]["values"][path]
            notes.append(f"(noise) {path}: the worse parent's value")
    reasoning = "Crossover of trials " + ", ".join(str(p.get("trial")) for p in ordered)
    reasoning += " (best first). " + ("; ".join(notes) or "The parents agree everywhere") + "."
    return json.dumps({"reasoning": reasoning, "child": child})
