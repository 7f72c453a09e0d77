"""A SIMULATED model for demos, tests and benchmarks. It is not a language model.

``simulated/feedback-follower`` is a litellm custom provider: once
:func:`register_simulated_provider` has run (``LLM("simulated/...")`` runs it),
``litellm.completion(model="simulated/feedback-follower", messages=...)`` answers offline, and
litellm's usage and cost accounting work exactly as for a real model. Token usage is reported as
about ``len(text) / 4``; the prices registered with litellm are MADE UP ($0.15 per million input
tokens, $0.60 per million output tokens) so that ``litellm.completion_cost`` returns a number.

What it does: it reads the problem that Trace's ``OptoPrime`` sends (the ``#Variables`` and
``#Feedback`` sections), follows the small feedback grammar below mechanically, and answers in
OptoPrime's JSON format ``{"reasoning": ..., "answer": "", "suggestion": {py_name: value}}``.

Feedback grammar (case-insensitive; quoted text is taken literally):

* Numbers (``int``/``float`` variables). "larger", "increase", "higher", "more", "longer",
  "too small", "too short" move up; "smaller", "decrease", "lower", "less", "shorter",
  "too large", "too long" move down (the first such word decides). ``by N`` sets the step;
  otherwise the step is a random fraction (about 25-75% at temperature 1) of the value, at least
  1 for ints. If a variable's name (its ``py_name`` without the trailing digits, e.g.
  ``max_words``) appears in the feedback, only named variables move; otherwise all numbers move.
  Memory (OptoPrime's "variables and their feedbacks you received in the past"): when a past
  value of the variable lies the way the feedback points and its own feedback pointed back,
  the move stays short of it, landing a random fraction (about 25-75% at temperature 1) of the
  way there: a bisection, as a model that reads its memory would do after an overshoot.
* Text (``str`` variables). ``mention "X"`` / ``include "X"`` append the sentence
  ``Always mention X.``; ``add "X"`` appends ``X`` itself as a sentence; ``remove "X"`` deletes
  ``X``. Nothing is appended when the text already contains ``X``. The target is the variable
  named in the feedback, else the first ``str`` variable (``remove``: every variable holding X).
* ``replace "X" with "Y"`` edits the named variables, else every ``str`` or ``(code)`` variable
  containing ``X``.
* Code repair. When the feedback names an exception (``RuntimeError``, ``ValueError``, ...) that
  a ``(code)`` variable raises explicitly, those ``raise`` lines are deleted.
* If the feedback says the output is correct or perfect, or holds no instruction understood
  above, the answer is ``TERMINATE`` (OptoPrime then proposes nothing).

Options, passed as completion keyword arguments (litellm hands unknown keyword arguments to a
custom provider in ``optional_params``)::

    LLM("simulated/feedback-follower", simulated_noise=0.2, simulated_seed=0,
        simulated_latency=0.0)

* ``simulated_noise``: probability that an answer which would change something is replaced by a
  wrong or useless one: a number moved the wrong way, an irrelevant sentence appended to a
  string, or a ``raise RuntimeError("simulated bug")`` inserted as the first body line of a
  function (so the ``ExecutionError`` path gets exercised). ``TERMINATE`` is never noisy.
* ``simulated_seed``: the random seed.
* ``simulated_latency``: seconds to sleep per call (benchmarks use it).
* ``temperature`` (the usual argument) scales the randomness of step sizes; 0 makes them fixed.

Determinism: each answer draws from a ``random.Random`` seeded by (seed, sha256 of the prompt
with object addresses like ``0x7f3a...`` blanked, the temperature, how many times this handler
has seen that seed and prompt), so identical prompts sent repeatedly get different samples
while a rerun of the same sequence of calls in a fresh process (or after
:func:`reset_simulated_model`) gives the same answers.

Other prompt shapes it answers, each recognised by a marker line:

* ``#Improve`` with ``#Feedback`` and ``#Solution`` (STOP's "improve this solution", a JSON
  object ``{path: value}``): the same feedback grammar, noise and temperature applied to the
  solution's values; answer ``{"idea": ..., "solution": {path: value}}``
  (:func:`answer_stop_solution`).
* ``#Improve`` with ``#Program`` holding ``def improve(`` (STOP's "improve this improver"): a
  rewritten improver in a python block -- another ``NUM_CANDIDATES`` or ``TEMPERATURE``, or a
  refinement round; with noise a worse or broken one (:func:`answer_stop_improver`).
* ``#Crossover`` with ``#Parents`` (the genetic strategy): a child per path from the parents;
  answer ``{"reasoning": ..., "child": {path: value}}`` (:func:`answer_crossover`).
* ``#Compare`` (the pairwise judge of ``selector="llm"``): answer ``{"reasoning": ...,
  "winner": "A"|"B"}`` (:func:`answer_judge`).

Any other prompt gets a valid, empty answer ``{"reasoning": ..., "suggestion": {}}``; it never
raises on odd input. To teach it a new prompt shape, add a function to ``_ANSWERERS``.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import re
import threading
import time
from typing import TYPE_CHECKING
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm  # noqa: E402  (after the environment variable above)

from trace_optuna.exceptions import ConfigurationError  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable

_logger = logging.getLogger("trace_optuna.llm.simulated")

PROVIDER = "simulated"
"""The litellm provider name: model strings look like ``simulated/<model>``."""

MODELS = ("feedback-follower",)
"""The simulated models there are."""

INPUT_COST_PER_TOKEN = 0.15e-6
"""Made-up price per input token (USD): $0.15 per million."""

OUTPUT_COST_PER_TOKEN = 0.60e-6
"""Made-up price per output token (USD): $0.60 per million."""

OPTION_PREFIX = "simulated_"

_IRRELEVANT_SENTENCES = (
    "Talk about the weather.",
    "Use the default tone.",
    "Mention our new logo.",
    "Quote a famous poem.",
)
_BUG_LINE = 'raise RuntimeError("simulated bug")'


# ---------------------------------------------------------------------------------------------
# Options


@dataclasses.dataclass(frozen=True)
class SimulatedOptions:
    """The knobs of the simulated model (see the module docstring).

    Args:
        noise: Probability in [0, 1] of a wrong or useless suggestion.
        seed: Random seed.
        latency: Seconds to sleep per call, >= 0.
    """

    noise: float = 0.0
    seed: int = 0
    latency: float = 0.0

    def __post_init__(self) -> None:
        if _not_number(self.noise) or not 0.0 <= self.noise <= 1.0:
            raise ConfigurationError(
                f"simulated_noise must be a number in [0, 1], got {self.noise!r}."
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigurationError(f"simulated_seed must be an int, got {self.seed!r}.")
        if _not_number(self.latency) or not self.latency >= 0.0:
            raise ConfigurationError(
                f"simulated_latency must be a number >= 0 (seconds), got {self.latency!r}."
            )

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> SimulatedOptions:
        """Read ``simulated_*`` entries from completion keyword arguments.

        Raises:
            ConfigurationError: On an unknown ``simulated_*`` name or a bad value.
        """
        known = {field.name for field in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, value in params.items():
            if not key.startswith(OPTION_PREFIX):
                continue
            name = key[len(OPTION_PREFIX) :]
            if name not in known:
                valid = ", ".join(OPTION_PREFIX + n for n in sorted(known))
                raise ConfigurationError(
                    f"Unknown simulated model option {key!r}; valid options are {valid}."
                )
            values[name] = value
        return cls(**values)


def _not_number(value: object) -> bool:
    return isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value)


# ---------------------------------------------------------------------------------------------
# Reading OptoPrime's prompt


@dataclasses.dataclass
class Variable:
    """One entry of OptoPrime's ``#Variables`` section.

    Attributes:
        type_name: ``int``, ``float``, ``str``, ``code``, or another Python type name.
        py_name: The key OptoPrime expects in the suggestion (``max_words0``, ``__code1``).
        value: The value: a number for int/float, else the text as shown.
    """

    type_name: str
    py_name: str
    value: Any

    @property
    def names(self) -> tuple[str, ...]:
        """Names by which feedback may refer to this variable, lower case."""
        names = [self.py_name.lower(), re.sub(r"\d+$", "", self.py_name).lower()]
        if self.type_name == "code":
            match = re.search(r"\bdef\s+(\w+)", self.value)
            if match:
                names.append(match.group(1).lower())
        return tuple(name for name in names if name)

    @property
    def is_number(self) -> bool:
        return self.type_name in ("int", "float")

    @property
    def is_text(self) -> bool:
        return self.type_name in ("str", "code")


@dataclasses.dataclass
class OptoPrimeProblem:
    """What the simulated model reads from an OptoPrime prompt.

    Attributes:
        variables: The ``#Variables`` section.
        feedback: The ``#Feedback`` section.
        memory: OptoPrime's memory entries, oldest first: ``(values by py_name, feedback)``.
    """

    variables: list[Variable]
    feedback: str
    memory: list[tuple[dict[str, Any], str]] = dataclasses.field(default_factory=list)


_SECTION_HEADERS = (
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
_NEXT_SECTION = re.compile(r"\n#(?:" + "|".join(_SECTION_HEADERS) + r")\n")
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


# ---------------------------------------------------------------------------------------------
# Following the feedback


@dataclasses.dataclass
class _Edit:
    variable: Variable
    new_value: Any
    why: str


_QUOTED = r'"([^"]+)"'
_UP_WORDS = r"larger|increase|higher|more|longer|too small|too short"
_DOWN_WORDS = r"smaller|decrease|lower|less|shorter|too large|too long"
_DIRECTION = re.compile(rf"\b(?:(?P<up>{_UP_WORDS})|(?P<down>{_DOWN_WORDS}))\b", re.IGNORECASE)
_BY_STEP = re.compile(r"\bby\s+(\d+(?:\.\d+)?)\b", re.IGNORECASE)
_SATISFIED = re.compile(r"(?<!not )(?<!n't )\b(?:correct|perfect)\b", re.IGNORECASE)
_MENTION = re.compile(rf"\b(mention|include|add)\s+{_QUOTED}", re.IGNORECASE)
_REMOVE = re.compile(rf"\bremove\s+{_QUOTED}", re.IGNORECASE)
_REPLACE = re.compile(rf"\breplace\s+{_QUOTED}\s+with\s+{_QUOTED}", re.IGNORECASE)
_ERROR_NAME = re.compile(r"\b(\w*(?:Error|Exception))\b")


def _named(variables: list[Variable], feedback: str) -> list[Variable]:
    """Variables whose name appears in the feedback (outside quotes)."""
    text = re.sub(_QUOTED, " ", feedback).lower()
    return [
        variable
        for variable in variables
        if any(re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text) for name in variable.names)
    ]


def _number_edits(
    problem: OptoPrimeProblem, rng: random.Random, spread: float, current: dict[str, Any]
) -> list[_Edit]:
    numbers = [v for v in problem.variables if v.is_number]
    unquoted = re.sub(_QUOTED, " ", problem.feedback)
    direction = _DIRECTION.search(unquoted)
    if not numbers or direction is None:
        return []
    sign = 1 if direction["up"] else -1
    targets = _named(numbers, problem.feedback) or numbers
    by_step = _BY_STEP.search(unquoted)
    edits = []
    for variable in targets:
        old = current.get(variable.py_name, variable.value)
        why = f"{direction.group(0)!r} moves {variable.py_name}"
        bound = None if by_step else _bound(problem.memory, variable.py_name, old, sign)
        if by_step:
            step = float(by_step.group(1))
        else:
            fraction = max(0.05, 0.5 + (rng.random() - 0.5) * 0.5 * spread)
            step = (abs(old) if old != 0 else 1.0) * fraction
            if bound is not None:
                step = abs(bound - old) * fraction
                why += f", short of {bound!r} tried before"
        new = old + sign * step
        if variable.type_name == "int":
            new = old + sign * max(1, round(step))
        edits.append(_Edit(variable, new, why))
    return edits


def _bound(
    memory: list[tuple[dict[str, Any], str]], name: str, old: float, sign: int
) -> float | None:
    """The nearest remembered value of ``name`` beyond ``old`` whose feedback pointed back."""
    bounds: list[float] = []
    for values, feedback in memory:
        value = values.get(name)
        if not isinstance(value, (int, float)) or _not_number(value) or (value - old) * sign <= 0:
            continue
        direction = _DIRECTION.search(re.sub(_QUOTED, " ", feedback))
        if direction is not None and (1 if direction["up"] else -1) == -sign:
            bounds.append(float(value))
    return min(bounds, key=lambda value: abs(value - old)) if bounds else None


def _text_edits(problem: OptoPrimeProblem, current: dict[str, Any]) -> list[_Edit]:
    feedback = problem.feedback
    texts = [v for v in problem.variables if v.is_text]
    strings = [v for v in texts if v.type_name == "str"]
    named = _named(texts, feedback)
    edits: list[_Edit] = []

    def value(variable: Variable) -> str:
        return current.get(variable.py_name, variable.value)

    def edit(variable: Variable, new_value: str, why: str) -> None:
        current[variable.py_name] = new_value
        edits.append(_Edit(variable, new_value, why))

    for match in _REPLACE.finditer(feedback):
        old, new = match.group(1), match.group(2)
        for variable in [v for v in (named or texts) if old in value(v)]:
            edit(variable, value(variable).replace(old, new), f"replace {old!r} with {new!r}")
    for match in _REMOVE.finditer(feedback):
        gone = match.group(1)
        for variable in [v for v in (named or texts) if gone in value(v)]:
            edit(variable, _tidy(value(variable).replace(gone, "")), f"remove {gone!r}")
    for match in _MENTION.finditer(feedback):
        verb, wanted = match.group(1).lower(), match.group(2)
        targets = [v for v in named if v.type_name == "str"] or strings[:1]
        for variable in targets:
            if wanted in value(variable):
                continue
            sentence = _sentence(wanted) if verb == "add" else f"Always mention {wanted}."
            edit(variable, _append(value(variable), sentence), f"{verb} {wanted!r}")
    for error_name in dict.fromkeys(_ERROR_NAME.findall(feedback)):
        raise_line = re.compile(rf"^[ \t]*raise\s+{re.escape(error_name)}\b.*\n?", re.MULTILINE)
        for variable in [v for v in texts if v.type_name == "code"]:
            if raise_line.search(value(variable)):
                repaired = raise_line.sub("", value(variable))
                edit(variable, repaired, f"delete the line raising {error_name}")
    return edits


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."


def _append(text: str, sentence: str) -> str:
    return f"{text.rstrip()} {sentence}" if text.strip() else sentence


def _tidy(text: str) -> str:
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def _noisy_edit(edit: _Edit, rng: random.Random) -> _Edit:
    """A wrong or useless version of ``edit`` on the same variable."""
    variable = edit.variable
    if variable.is_number:
        old, right = variable.value, edit.new_value
        if old > 0 and right > 0:
            wrong = old * old / right  # as far the wrong way as the right step, in ratio
        else:
            wrong = old - (right - old)
        if variable.type_name == "int":
            wrong = round(wrong)
            if wrong == old:
                wrong = old - (1 if right > old else -1)
        return _Edit(variable, wrong, f"(noise) moves {variable.py_name} the wrong way")
    if variable.type_name == "code":
        return _Edit(variable, _insert_bug(variable.value), "(noise) breaks the function")
    sentence = rng.choice(_IRRELEVANT_SENTENCES)
    return _Edit(variable, _append(variable.value, sentence), "(noise) adds an irrelevant line")


def _insert_bug(source: str) -> str:
    """Insert a raise as the first body statement (after the docstring), keeping the signature."""
    lines = source.split("\n")
    signature_end = next(
        (i for i, line in enumerate(lines) if line.rstrip().endswith(":")), len(lines) - 1
    )
    body = signature_end + 1
    indent = "    "
    if body < len(lines):
        indent = re.match(r"[ \t]*", lines[body]).group(0) or indent  # type: ignore[union-attr]
        stripped = lines[body].strip()
        quote = stripped[:3] if stripped[:3] in ('"""', "'''") else None
        if quote:
            end = body
            if not (len(stripped) >= 6 and stripped.endswith(quote)):
                end = next((j for j in range(body + 1, len(lines)) if quote in lines[j]), body)
            body = end + 1
    lines.insert(body, indent + _BUG_LINE)
    return "\n".join(lines)


def answer_optoprime(
    prompt: str, rng: random.Random, options: SimulatedOptions, temperature: float | None
) -> str | None:
    """Answer an OptoPrime problem, or return None when ``prompt`` is not one.

    Args:
        prompt: The messages' text, joined.
        rng: The random source for this call.
        options: Noise and seed.
        temperature: The request's temperature, or None (treated as 1).

    Returns:
        OptoPrime's JSON answer, ``"TERMINATE"``, or None.
    """
    problem = parse_optoprime_problem(prompt)
    if problem is None:
        return None
    noisy = rng.random() < options.noise
    if _SATISFIED.search(problem.feedback):
        return "TERMINATE"
    spread = 1.0 if temperature is None else float(temperature)
    current: dict[str, Any] = {}
    edits = _text_edits(problem, current) + _number_edits(problem, rng, spread, current)
    if not edits:
        return "TERMINATE"
    if noisy:
        edits = [_noisy_edit(rng.choice(edits), rng)]
    suggestion = {edit.variable.py_name: edit.new_value for edit in edits}
    reasoning = "Following the feedback: " + "; ".join(edit.why for edit in edits) + "."
    return json.dumps({"reasoning": reasoning, "answer": "", "suggestion": suggestion})


# ---------------------------------------------------------------------------------------------
# STOP: "improve this solution" and "improve this improver"

_IMPROVE_MARKER = re.compile(r"(?m)^#Improve[ \t]*$")
_STOP_SECTION = re.compile(r"(?m)^#(?:Improve|Feedback|Solution|Program|Answer)[ \t]*$")
# Greedy: from the first fence to the last, since a program may hold ``` in its strings.
_CODE_BLOCK = re.compile(r"```(?:python|py)?[ \t]*\n(.*)```", re.DOTALL)


def _stop_sections(prompt: str) -> dict[str, str] | None:
    """The ``#Section`` bodies of a STOP prompt, or None when ``prompt`` is not one."""
    if not _IMPROVE_MARKER.search(prompt):
        return None
    starts = list(_STOP_SECTION.finditer(prompt))
    sections = {}
    for index, match in enumerate(starts):
        end = starts[index + 1].start() if index + 1 < len(starts) else len(prompt)
        sections[match.group(0).strip()[1:]] = prompt[match.end() : end].strip("\n")
    return sections


def _first_json_object(text: str) -> Any:
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON object")
    return json.JSONDecoder().raw_decode(text[start:])[0]


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
            type_name = "code" if _is_code(value) else "str"
        else:
            type_name = "json"
        variables.append(Variable(type_name=type_name, py_name=path, value=value))
    return variables


def answer_stop_solution(
    prompt: str, rng: random.Random, options: SimulatedOptions, temperature: float | None
) -> str | None:
    """Answer STOP's "improve this solution" prompt, or return None when it is not one.

    The prompt has the sections ``#Improve``, ``#Feedback`` and ``#Solution`` (a JSON object
    ``{parameter path: value}``). The feedback is followed with the same grammar, noise and
    temperature as OptoPrime's answers; a path's name in the feedback names it as a variable.
    The answer is ``{"idea": ..., "solution": {every path: value}}``; when the feedback says the
    solution is correct, or holds no instruction understood, the solution comes back unchanged.
    """
    sections = _stop_sections(prompt)
    if sections is None or "Solution" not in sections:
        return None
    solution = _first_json_object(sections["Solution"])
    if not isinstance(solution, dict):
        return None
    problem = OptoPrimeProblem(
        variables=_solution_variables(solution), feedback=sections.get("Feedback", "").strip()
    )
    noisy = rng.random() < options.noise
    edits: list[_Edit] = []
    if not _SATISFIED.search(problem.feedback):
        spread = 1.0 if temperature is None else float(temperature)
        current: dict[str, Any] = {}
        edits = _text_edits(problem, current) + _number_edits(problem, rng, spread, current)
    if edits and noisy:
        edits = [_noisy_edit(rng.choice(edits), rng)]
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
    buggy = _insert_into_improve(source, _BUG_LINE)
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
    prompt: str, rng: random.Random, options: SimulatedOptions, temperature: float | None
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
    if sections is None or "Program" not in sections:
        return None
    blocks = _CODE_BLOCK.findall(sections["Program"])
    source = blocks[0] if blocks else sections["Program"]
    if not _IMPROVE_DEF.search(source):
        return None
    noisy = rng.random() < options.noise
    variants = _broken_improver_variants(source) if noisy else _improver_variants(source, rng)
    if variants:
        idea, new_source = rng.choice(variants)
    else:
        idea, new_source = "I see no safe change; keep the program.", source
    return f"Idea: {idea}\n\n```python\n{new_source.rstrip()}\n```\n"


# ---------------------------------------------------------------------------------------------
# Genetic crossover

_CROSSOVER_MARKER = re.compile(r"(?m)^#Crossover[ \t]*$")
_PARENTS_MARKER = re.compile(r"(?m)^#Parents[ \t]*$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _is_code(value: Any) -> bool:
    return isinstance(value, str) and value.lstrip().startswith("def ")


def _sentences(text: str) -> list[str]:
    return [part.strip() for part in _SENTENCE_END.split(text.strip()) if part.strip()]


def answer_crossover(
    prompt: str, rng: random.Random, options: SimulatedOptions, temperature: float | None
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
    if not _CROSSOVER_MARKER.search(prompt):
        return None
    marker = _PARENTS_MARKER.search(prompt)
    if marker is None:
        return None
    data = _first_json_object(prompt[marker.end() :])
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
        elif isinstance(best, str) and not _is_code(best):
            text = best
            for other in values[1:]:
                if not isinstance(other, str):
                    continue
                for sentence in _sentences(other):
                    if sentence not in text:
                        text = _append(text, sentence)
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


# ---------------------------------------------------------------------------------------------
# Pairwise judge

_COMPARE_MARKER = re.compile(r"(?m)^#Compare[ \t]*$")
_JUDGE_PARTS = re.compile(
    r"Candidate A output:\n(?P<out_a>.*?)\nFeedback on A:\n(?P<fb_a>.*?)\n\s*"
    r"Candidate B output:\n(?P<out_b>.*?)\nFeedback on B:\n(?P<fb_b>.*?)"
    r"(?:\n\s*Which candidate is better\?|\Z)",
    re.DOTALL,
)


def _problems(feedback: str) -> int:
    """How many problems a feedback names: its sentences that do not say all is well."""
    return sum(1 for sentence in _sentences(feedback) if not _SATISFIED.search(sentence))


def answer_judge(
    prompt: str, rng: random.Random, options: SimulatedOptions, temperature: float | None
) -> str | None:
    """Answer the pairwise judge's prompt, or return None when it is not one.

    The judge prefers the candidate whose feedback says it is correct or perfect; otherwise
    the one whose feedback names fewer problems (sentences), then the shorter feedback; a tie
    goes to A. With probability ``noise`` the verdict is flipped. The answer is
    ``{"reasoning": ..., "winner": "A"|"B"}``.
    """
    if not _COMPARE_MARKER.search(prompt):
        return None
    match = _JUDGE_PARTS.search(prompt)
    if match is None:
        return None
    feedback_a, feedback_b = match["fb_a"].strip(), match["fb_b"].strip()
    satisfied_a = bool(_SATISFIED.search(feedback_a))
    satisfied_b = bool(_SATISFIED.search(feedback_b))
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


def answer_generic(
    prompt: str, rng: random.Random, options: SimulatedOptions, temperature: float | None
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
_ANSWERERS: list[Callable[[str, random.Random, SimulatedOptions, float | None], str | None]] = [
    answer_crossover,
    answer_judge,
    answer_stop_improver,
    answer_stop_solution,
    answer_optoprime,
    answer_generic,
]


def respond(
    prompt: str, rng: random.Random, options: SimulatedOptions, temperature: float | None
) -> str:
    """The simulated model's answer to ``prompt``: the first answerer that recognises it."""
    for answerer in _ANSWERERS:
        try:
            answer = answerer(prompt, rng, options, temperature)
        except Exception:  # the simulation must never crash a run
            _logger.exception("Simulated answerer %s failed; trying the next.", answerer.__name__)
            continue
        if answer is not None:
            return answer
    return json.dumps({"reasoning": "No answer.", "answer": "", "suggestion": {}})


# ---------------------------------------------------------------------------------------------
# The litellm provider


def _message_text(messages: list[dict[str, Any]]) -> str:
    parts = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):  # content blocks
            content = "\n".join(str(block.get("text", "")) for block in content)
        parts.append("" if content is None else str(content))
    return "\n".join(parts)


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def approximate_tokens(text: str) -> int:
    """Roughly ``len(text) / 4``, at least 1: the simulated model's token count."""
    return max(1, math.ceil(len(text) / 4))


class SimulatedLLM(litellm.CustomLLM):
    """The litellm handler behind ``simulated/<model>``; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._seen: collections.Counter[tuple[int, str]] = collections.Counter()

    def reset(self) -> None:
        """Forget how often each prompt was seen, so answers repeat from the start."""
        with self._lock:
            self._seen.clear()

    def _answer(
        self, model: str, messages: list[dict[str, Any]], optional_params: dict[str, Any]
    ) -> tuple[str, str, SimulatedOptions]:
        name = model.split("/", 1)[1] if model.startswith(PROVIDER + "/") else model
        if name not in MODELS:
            raise ConfigurationError(
                f"Unknown simulated model {model!r}; known: "
                + ", ".join(f"{PROVIDER}/{m}" for m in MODELS)
                + "."
            )
        options = SimulatedOptions.from_params(optional_params)
        prompt = _message_text(messages)
        # Object reprs in the prompt (``<... object at 0x7f...>``) differ between processes.
        stable = _ADDRESS.sub(" at 0x0", prompt)
        digest = hashlib.sha256(stable.encode()).hexdigest()
        with self._lock:
            index = self._seen[(options.seed, digest)]
            self._seen[(options.seed, digest)] += 1
        temperature = optional_params.get("temperature")
        rng = random.Random(f"{options.seed}:{digest}:{index}:{temperature}")
        return prompt, respond(prompt, rng, options, temperature), options

    @staticmethod
    def _fill(
        response: litellm.ModelResponse, model: str, prompt: str, content: str
    ) -> litellm.ModelResponse:
        response.choices[0].message.content = content  # type: ignore[union-attr]
        response.choices[0].finish_reason = "stop"
        response.model = model if model.startswith(PROVIDER + "/") else f"{PROVIDER}/{model}"
        prompt_tokens = approximate_tokens(prompt)
        completion_tokens = approximate_tokens(content)
        response.usage = litellm.Usage(  # type: ignore[attr-defined]
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )
        return response

    def completion(  # type: ignore[override]
        self,
        model: str,
        messages: list[dict[str, Any]],
        *args: Any,
        model_response: litellm.ModelResponse,
        optional_params: dict[str, Any],
        **kwargs: Any,
    ) -> litellm.ModelResponse:
        """Answer synchronously (litellm calls this for ``litellm.completion``)."""
        prompt, content, options = self._answer(model, messages, optional_params)
        if options.latency:
            time.sleep(options.latency)
        return self._fill(model_response, model, prompt, content)

    async def acompletion(  # type: ignore[override]
        self,
        model: str,
        messages: list[dict[str, Any]],
        *args: Any,
        model_response: litellm.ModelResponse,
        optional_params: dict[str, Any],
        **kwargs: Any,
    ) -> litellm.ModelResponse:
        """Answer asynchronously (litellm calls this for ``litellm.acompletion``)."""
        prompt, content, options = self._answer(model, messages, optional_params)
        if options.latency:
            await asyncio.sleep(options.latency)
        return self._fill(model_response, model, prompt, content)


_registration_lock = threading.Lock()


def register_simulated_provider() -> SimulatedLLM:
    """Make ``simulated/<model>`` usable in litellm; safe to call any number of times.

    Registers the handler in ``litellm.custom_provider_map`` under the provider name
    ``simulated`` and the made-up prices with ``litellm.register_model``.

    Returns:
        The registered handler (the same object on every call).

    Example:
        >>> handler = register_simulated_provider()
        >>> handler is register_simulated_provider()
        True
    """
    with _registration_lock:
        for item in litellm.custom_provider_map:
            if item["provider"] == PROVIDER:
                return item["custom_handler"]  # type: ignore[return-value]
        handler = SimulatedLLM()
        litellm.custom_provider_map.append({"provider": PROVIDER, "custom_handler": handler})
        litellm.utils.custom_llm_setup()  # adds the provider to litellm.provider_list
        litellm.register_model(
            {
                f"{PROVIDER}/{name}": {
                    "litellm_provider": PROVIDER,
                    "mode": "chat",
                    "input_cost_per_token": INPUT_COST_PER_TOKEN,
                    "output_cost_per_token": OUTPUT_COST_PER_TOKEN,
                    "cache_creation_input_token_cost": 0.0,
                    "cache_read_input_token_cost": 0.0,
                    "max_input_tokens": 1_000_000,
                    "max_output_tokens": 1_000_000,
                }
                for name in MODELS
            }
        )
        _logger.debug("Registered the simulated litellm provider %r.", PROVIDER)
        return handler


def reset_simulated_model() -> None:
    """Restart the simulated model's per-prompt call counters (for reproducible tests)."""
    register_simulated_provider().reset()
