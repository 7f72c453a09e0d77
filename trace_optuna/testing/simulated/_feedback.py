"""The feedback grammar: how the simulated model turns feedback into edits of variables.

Both OptoPrime's prompt (:mod:`._optoprime`) and STOP's "improve this solution" prompt
(:mod:`._stop`) are answered with it. Case-insensitive; quoted text is taken literally:

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
* Feedback that says the output is correct or perfect (:data:`SATISFIED`) asks for nothing.

Noise (:func:`noisy_edit`) replaces a right edit by a wrong or useless one: a number moved the
wrong way, an irrelevant sentence appended to a string, or :data:`BUG_LINE` inserted as the
first body line of a function (so the ``ExecutionError`` path gets exercised).
"""

from __future__ import annotations

import dataclasses
import random
import re
from typing import Any

from trace_optuna.testing.simulated._core import append_sentence
from trace_optuna.testing.simulated._core import not_number

_IRRELEVANT_SENTENCES = (
    "Talk about the weather.",
    "Use the default tone.",
    "Mention our new logo.",
    "Quote a famous poem.",
)
BUG_LINE = 'raise RuntimeError("simulated bug")'


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


@dataclasses.dataclass
class Edit:
    variable: Variable
    new_value: Any
    why: str


_QUOTED = r'"([^"]+)"'
_UP_WORDS = r"larger|increase|higher|more|longer|too small|too short"
_DOWN_WORDS = r"smaller|decrease|lower|less|shorter|too large|too long"
_DIRECTION = re.compile(rf"\b(?:(?P<up>{_UP_WORDS})|(?P<down>{_DOWN_WORDS}))\b", re.IGNORECASE)
_BY_STEP = re.compile(r"\bby\s+(\d+(?:\.\d+)?)\b", re.IGNORECASE)
SATISFIED = re.compile(r"(?<!not )(?<!n't )\b(?:correct|perfect)\b", re.IGNORECASE)
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


def number_edits(
    problem: OptoPrimeProblem, rng: random.Random, spread: float, current: dict[str, Any]
) -> list[Edit]:
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
        edits.append(Edit(variable, new, why))
    return edits


def _bound(
    memory: list[tuple[dict[str, Any], str]], name: str, old: float, sign: int
) -> float | None:
    """The nearest remembered value of ``name`` beyond ``old`` whose feedback pointed back."""
    bounds: list[float] = []
    for values, feedback in memory:
        value = values.get(name)
        if not isinstance(value, (int, float)) or not_number(value) or (value - old) * sign <= 0:
            continue
        direction = _DIRECTION.search(re.sub(_QUOTED, " ", feedback))
        if direction is not None and (1 if direction["up"] else -1) == -sign:
            bounds.append(float(value))
    return min(bounds, key=lambda value: abs(value - old)) if bounds else None


def text_edits(problem: OptoPrimeProblem, current: dict[str, Any]) -> list[Edit]:
    feedback = problem.feedback
    texts = [v for v in problem.variables if v.is_text]
    strings = [v for v in texts if v.type_name == "str"]
    named = _named(texts, feedback)
    edits: list[Edit] = []

    def value(variable: Variable) -> str:
        return current.get(variable.py_name, variable.value)

    def edit(variable: Variable, new_value: str, why: str) -> None:
        current[variable.py_name] = new_value
        edits.append(Edit(variable, new_value, why))

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
            edit(variable, append_sentence(value(variable), sentence), f"{verb} {wanted!r}")
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


def _tidy(text: str) -> str:
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def noisy_edit(edit: Edit, rng: random.Random) -> Edit:
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
        return Edit(variable, wrong, f"(noise) moves {variable.py_name} the wrong way")
    if variable.type_name == "code":
        return Edit(variable, _insert_bug(variable.value), "(noise) breaks the function")
    sentence = rng.choice(_IRRELEVANT_SENTENCES)
    return Edit(
        variable, append_sentence(variable.value, sentence), "(noise) adds an irrelevant line"
    )


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
    lines.insert(body, indent + BUG_LINE)
    return "\n".join(lines)
