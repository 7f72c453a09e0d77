"""STOP's two prompts: "improve this solution" and "improve this improver".

Both are written by the seed improver's ``make_prompt`` (:mod:`trace_optuna.strategies.stop`,
whose section markers this module imports): :data:`~trace_optuna.strategies.stop.IMPROVE_MARKER`
first, then the feedback, then a JSON solution or a program in a python block.

* ``#Improve`` with ``#Feedback`` and ``#Solution`` (a JSON object ``{path: value}``): the
  feedback grammar, noise and temperature applied to the solution's values; answer
  ``{"idea": ..., "solution": {path: value}}`` (:func:`answer_stop_solution`).
* ``#Improve`` with ``#Program`` holding ``def improve(``: a rewritten improver in a python
  block -- another ``NUM_CANDIDATES`` or ``TEMPERATURE``, or a refinement round; with noise a
  worse or broken one (:func:`answer_stop_improver`).
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

from trace_optuna.strategies.stop import ANSWER_SECTION
from trace_optuna.strategies.stop import FEEDBACK_SECTION
from trace_optuna.strategies.stop import IMPROVE_MARKER
from trace_optuna.strategies.stop import PROGRAM_SECTION
from trace_optuna.strategies.stop import SOLUTION_SECTION
from trace_optuna.testing.simulated._core import SimulatedOptions
from trace_optuna.testing.simulated._core import Tried
from trace_optuna.testing.simulated._core import first_json_object
from trace_optuna.testing.simulated._core import is_code
from trace_optuna.testing.simulated._core import marker_lines
from trace_optuna.testing.simulated._feedback import BUG_LINE
from trace_optuna.testing.simulated._feedback import Edit
from trace_optuna.testing.simulated._feedback import OptoPrimeProblem
from trace_optuna.testing.simulated._feedback import Variable
from trace_optuna.testing.simulated._feedback import noisy_edit
from trace_optuna.testing.simulated._feedback import number_edits
from trace_optuna.testing.simulated._feedback import satisfied
from trace_optuna.testing.simulated._feedback import text_edits

_IMPROVE_LINE = marker_lines(IMPROVE_MARKER)
_SECTION_LINE = marker_lines(
    IMPROVE_MARKER, FEEDBACK_SECTION, SOLUTION_SECTION, PROGRAM_SECTION, ANSWER_SECTION
)
# Greedy: from the first fence to the last, since a program may hold ``` in its strings.
_CODE_BLOCK = re.compile(r"```(?:python|py)?[ \t]*\n(.*)```", re.DOTALL)


def _stop_sections(prompt: str) -> dict[str, str] | None:
    """The bodies of a STOP prompt's sections by marker, or None when it is not a STOP prompt."""
    if not _IMPROVE_LINE.search(prompt):
        return None
    starts = list(_SECTION_LINE.finditer(prompt))
    sections = {}
    for index, match in enumerate(starts):
        end = starts[index + 1].start() if index + 1 < len(starts) else len(prompt)
        sections[match.group(0).strip()] = prompt[match.end() : end].strip("\n")
    return sections


def _solution_variables(solution: dict[str, Any]) -> list[Variable]:
    variables = []
    for path, value in solution.items():
        if isinstance(value, bool):
            type_name = "bool"
        elif isinstance(value, int):
            type_name = "int"
        elif isinstance(value, float):
            type_name = "float"
        elif isinstance(value, str):
            type_name = "code" if is_code(value) else "str"
        else:
            type_name = "json"
        variables.append(Variable(type_name=type_name, py_name=path, value=value))
    return variables


def answer_stop_solution(
    prompt: str,
    rng: random.Random,
    options: SimulatedOptions,
    temperature: float | None,
    tried: Tried | None = None,
) -> str | None:
    """Answer STOP's "improve this solution" prompt, or return None when it is not one.

    The prompt has the sections ``#Improve``, ``#Feedback`` and ``#Solution`` (a JSON object
    ``{parameter path: value}``). The feedback is followed with the same grammar, noise and
    temperature as OptoPrime's answers; a path's name in the feedback names it as a variable.
    The answer is ``{"idea": ..., "solution": {every path: value}}``; when the feedback says the
    solution is correct, or holds no instruction understood, the solution comes back unchanged.
    """
    sections = _stop_sections(prompt)
    if sections is None or SOLUTION_SECTION not in sections:
        return None
    solution = first_json_object(sections[SOLUTION_SECTION])
    if not isinstance(solution, dict):
        return None
    problem = OptoPrimeProblem(
        variables=_solution_variables(solution),
        feedback=sections.get(FEEDBACK_SECTION, "").strip(),
    )
    noisy = rng.random() < options.noise
    edits: list[Edit] = []
    if not satisfied(problem.feedback):
        spread = 1.0 if temperature is None else float(temperature)
        current: dict[str, Any] = {}
        edits = text_edits(problem, current) + number_edits(problem, rng, spread, current, tried)
    if edits and noisy:
        edits = [noisy_edit(rng.choice(edits), rng)]
    improved = dict(solution)
    improved.update({edit.variable.py_name: edit.new_value for edit in edits})
    if edits:
        idea = "Follow the feedback: " + "; ".join(edit.why for edit in edits) + "."
    else:
        idea = "The feedback asks for nothing I can act on; keep the solution as it is."
    return json.dumps({"idea": idea, "solution": improved})


_IMPROVE_DEF = re.compile(r"^def improve\(", re.MULTILINE)
_NUM_CANDIDATES = re.compile(r"^NUM_CANDIDATES = (\d+)[ \t]*$", re.MULTILINE)
_TEMPERATURE = re.compile(r"^TEMPERATURE = (\d+(?:\.\d+)?)[ \t]*$", re.MULTILINE)
_RETURN_BEST = re.compile(r"^    return best[ \t]*$", re.MULTILINE)
_REFINE_MARK = "# Refinement:"
_REFINEMENT = (
    "    # Refinement: spend what is left of the budget improving the best candidate again.\n"
    "    for _ in range(max(0, budget - n)):\n"
    "        candidate = ask(llm, make_prompt(best, feedback), solution)\n"
    "        if candidate is not None:\n"
    "            score = score_of(utility, candidate)\n"
    "            if score > best_score:\n"
    "                best, best_score = candidate, score\n"
)


def _improve_body_index(lines: list[str]) -> int | None:
    """The index of the first statement of ``improve``'s body, after its docstring."""
    start = next((i for i, line in enumerate(lines) if line.startswith("def improve(")), None)
    if start is None:
        return None
    body = next((i for i in range(start, len(lines)) if lines[i].rstrip().endswith(":")), start)
    body += 1
    if body < len(lines):
        stripped = lines[body].strip()
        quote = stripped[:3] if stripped[:3] in ('"""', "'''") else None
        if quote:
            end = body
            if not (len(stripped) >= 6 and stripped.endswith(quote)):
                end = next((j for j in range(body + 1, len(lines)) if quote in lines[j]), body)
            body = end + 1
    return body


def _insert_into_improve(source: str, line: str) -> str | None:
    lines = source.split("\n")
    index = _improve_body_index(lines)
    if index is None:
        return None
    lines.insert(index, "    " + line)
    return "\n".join(lines)


def _improver_variants(source: str, rng: random.Random) -> list[tuple[str, str]]:
    """Plausible rewrites of an improver: ``[(idea, new source)]``."""
    variants = []
    count = _NUM_CANDIDATES.search(source)
    if count:
        old = int(count.group(1))
        new = rng.choice([n for n in (2, 3, 4, 8) if n != old])
        variants.append(
            (
                f"Sample {new} candidates instead of {old} per step.",
                _NUM_CANDIDATES.sub(f"NUM_CANDIDATES = {new}", source, count=1),
            )
        )
    temperature = _TEMPERATURE.search(source)
    if temperature:
        old_t = float(temperature.group(1))
        new_t = rng.choice([t for t in (0.3, 0.5, 0.9, 1.0) if t != old_t])
        variants.append(
            (
                f"Sample at temperature {new_t:g} instead of {old_t:g}.",
                _TEMPERATURE.sub(f"TEMPERATURE = {new_t}", source, count=1),
            )
        )
    returns = list(_RETURN_BEST.finditer(source))
    if _REFINE_MARK not in source and returns and count is not None:
        last = returns[-1]
        refined = source[: last.start()] + _REFINEMENT + source[last.start() :]
        half = max(1, int(count.group(1)) // 2)
        refined = _NUM_CANDIDATES.sub(f"NUM_CANDIDATES = {half}", refined, count=1)
        variants.append(
            (
                "Sample fewer candidates and spend the rest of the budget refining the best one.",
                refined,
            )
        )
    return variants


def _broken_improver_variants(source: str) -> list[tuple[str, str]]:
    """Wrong or worse rewrites of an improver (the noise): ``[(idea, new source)]``."""
    variants = []
    lazy = _insert_into_improve(source, "return solution  # the incumbent is good enough")
    if lazy is not None:
        variants.append(("(noise) Keep the incumbent and save every LLM call.", lazy))
    buggy = _insert_into_improve(source, BUG_LINE)
    if buggy is not None:
        variants.append(("(noise) Fail fast.", buggy))
    greedy = _insert_into_improve(source, "budget = budget + 2  # more samples, more ideas")
    if greedy is not None:
        variants.append(("(noise) Ask for a few more samples than the budget.", greedy))
    cut = source.rstrip().rfind("\n")
    if cut > 0:
        variants.append(("(noise) A shorter program.", source[:cut] + "\n    return (\n"))
    return variants


def answer_stop_improver(
    prompt: str,
    rng: random.Random,
    options: SimulatedOptions,
    temperature: float | None,
    tried: Tried | None = None,
) -> str | None:
    """Answer STOP's "improve this improver" prompt, or return None when it is not one.

    The prompt has the sections ``#Improve``, ``#Feedback`` and ``#Program`` (a python block
    defining ``improve(``). The answer is an idea and the rewritten program in a python block:
    a plausible variation (another ``NUM_CANDIDATES`` or ``TEMPERATURE``, or a refinement round
    that spends the rest of the budget on the best candidate); with probability ``noise`` a
    broken or worse one instead (it returns the incumbent at once, raises, asks for more LLM
    calls than its budget, or does not parse).
    """
    sections = _stop_sections(prompt)
    if sections is None or PROGRAM_SECTION not in sections:
        return None
    blocks = _CODE_BLOCK.findall(sections[PROGRAM_SECTION])
    source = blocks[0] if blocks else sections[PROGRAM_SECTION]
    if not _IMPROVE_DEF.search(source):
        return None
    noisy = rng.random() < options.noise
    variants = _broken_improver_variants(source) if noisy else _improver_variants(source, rng)
    if variants:
        idea, new_source = rng.choice(variants)
    else:
        idea, new_source = "I see no safe change; keep the program.", source
    return f"Idea: {idea}\n\n```python\n{new_source.rstrip()}\n```\n"
