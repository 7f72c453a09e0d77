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
  A value already rejected is not proposed again: one that memory shows with feedback asking
  for a change (feedback naming this variable, or naming no number), or one this model already
  suggested for the same prompt (``tried``). The move then goes to the nearest value not
  rejected (one unit, or the ``by N`` step, further), still short of an overshoot; where none is
  left, the variable stays as it is.
* Text (``str`` variables). ``mention "X"`` / ``include "X"`` append the sentence
  ``Always mention X.``; ``add "X"`` appends ``X`` itself as a sentence; ``remove "X"`` deletes
  ``X``. Nothing is appended when the text already contains ``X``. The target is the variable
  named in the feedback, else the first ``str`` variable (``remove``: every variable holding X).
* ``replace "X" with "Y"`` edits the named variables, else every ``str`` or ``(code)`` variable
  containing ``X``.
* Code repair. When the feedback names an exception (``RuntimeError``, ``ValueError``, ...) that
  a ``(code)`` variable raises explicitly, those ``raise`` lines are deleted.
* Each instruction counts once: the same one repeated (batched feedback, one sentence per
  example) is applied once.
* Feedback that says the output is correct or perfect (:data:`SATISFIED`) asks for nothing,
  unless it also says something is wrong or gives an instruction (batched feedback such as
  "Example 1: correct. Example 2: wrong, ..."): see :func:`satisfied`.

Noise (:func:`noisy_edit`) replaces a right edit by a wrong or useless one: a number moved the
wrong way, an irrelevant sentence appended to a string, or, for a function, the intended new
code with :data:`BUG_LINE` inserted as its first body line (so the ``ExecutionError`` path gets
exercised, and a repair that deletes the line keeps the intended change).
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
import dataclasses
import random
import re
from typing import Any

from trace_optuna.testing.simulated._core import append_sentence
from trace_optuna.testing.simulated._core import not_number
from trace_optuna.testing.simulated._core import sentences

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
_TROUBLE = re.compile(
    r"\b(?:wrong|incorrect|fail\w*|errors?|exceptions?|missing|mistakes?|bugs?|broken|crash\w*"
    r"|should|must|expected|not|\w+n't|too)\b|\w(?:Error|Exception)\b",
    re.IGNORECASE,
)


def satisfied(feedback: str) -> bool:
    """Whether ``feedback`` says all is well: "correct" or "perfect", and nothing else.

    Words of :data:`SATISFIED` alone are not enough: feedback that also says something is
    wrong, failed or should change, or gives an instruction of the grammar, is not satisfied
    (batched feedback "Example 1: correct. Example 2: wrong, add ..." asks for a change).
    Quoted text is not read.

    Example:
        >>> satisfied("The output is correct."), satisfied("Example 1: correct. Example 2: wrong.")
        (True, False)
    """
    unquoted = re.sub(_QUOTED, " ", feedback)
    if not SATISFIED.search(unquoted):
        return False
    instructions = (_MENTION, _REMOVE, _REPLACE)
    return not (
        _TROUBLE.search(unquoted)
        or _DIRECTION.search(unquoted)
        or any(pattern.search(feedback) for pattern in instructions)
    )


def instructions(text: str) -> list[str]:
    """The sentences of ``text`` that hold an instruction of the grammar (a quoted ``mention``,
    ``include``, ``add``, ``remove`` or ``replace``, a direction word, an exception's name),
    each once, in order: what feedback passed on by a model keeps of a longer text.

    Example:
        >>> instructions('Hello. The reply is cut: max_words should be larger. Bye.')
        ['The reply is cut: max_words should be larger.']
    """
    kept: list[str] = []
    for sentence in sentences(text):
        unquoted = re.sub(_QUOTED, " ", sentence)
        found = any(p.search(sentence) for p in (_MENTION, _REMOVE, _REPLACE)) or any(
            p.search(unquoted) for p in (_DIRECTION, _ERROR_NAME)
        )
        if found and sentence not in kept:
            kept.append(sentence)
    return kept


def value_variable(py_name: str, value: Any) -> Variable:
    """A :class:`Variable` for a value shown without its type (JSON, or text): its type read
    from the value (``int``, ``float``, ``code`` for text starting ``def``, ``str``...)."""
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"[+-]?\d+", text):
            return Variable("int", py_name, int(text))
        if re.fullmatch(r"[+-]?(?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?", text):
            return Variable("float", py_name, float(text))
        return Variable("code" if text.startswith("def ") else "str", py_name, value)
    if isinstance(value, bool):
        return Variable("bool", py_name, value)
    if isinstance(value, (int, float)):
        return Variable(type(value).__name__, py_name, value)
    return Variable(type(value).__name__, py_name, value)


def _named(variables: list[Variable], feedback: str) -> list[Variable]:
    """Variables whose name appears in the feedback (outside quotes)."""
    text = re.sub(_QUOTED, " ", feedback).lower()
    return [
        variable
        for variable in variables
        if any(re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text) for name in variable.names)
    ]


def number_edits(
    problem: OptoPrimeProblem,
    rng: random.Random,
    spread: float,
    current: dict[str, Any],
    tried: Mapping[str, Sequence[Any]] | None = None,
) -> list[Edit]:
    """Moves of the number variables; ``tried``: values already suggested for this prompt."""
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
        unit: float = step  # a rejected value: one more step (an int: one more unit)
        if variable.type_name == "int":
            new = old + sign * max(1, round(step))
            unit = max(1, round(step)) if by_step else 1
        rejected = _rejected(problem, variable, numbers) | {
            value for value in (tried or {}).get(variable.py_name, ()) if not not_number(value)
        }
        untried = _untried(new, old, sign * unit, bound, rejected)
        if untried is None:
            continue
        if untried != new:
            why += f", past {new!r} rejected before"
        edits.append(
            Edit(variable, round(untried) if variable.type_name == "int" else untried, why)
        )
    return edits


def _rejected(problem: OptoPrimeProblem, variable: Variable, numbers: list[Variable]) -> set[Any]:
    """Values of ``variable`` that memory shows with feedback asking for a change.

    An entry counts when its feedback names this variable, or names no number variable (it is
    then about all of them); feedback naming only other variables says nothing about this one.
    """
    rejected = set()
    for values, feedback in problem.memory:
        value = values.get(variable.py_name)
        if not isinstance(value, (int, float)) or not_number(value) or satisfied(feedback):
            continue
        named = _named(numbers, feedback)
        if not named or variable in named:
            rejected.add(value)
    return rejected


def _untried(
    new: float, old: float, stride: float, bound: float | None, rejected: set[Any]
) -> float | None:
    """``new``, or the nearest value past it by ``stride`` steps that is not ``rejected``.

    Values stay strictly between ``old`` and ``bound`` (an overshoot seen before); values
    between ``old`` and ``new`` are tried when none is left beyond. None: nothing is left.
    """
    sign = 1 if stride > 0 else -1

    def allowed(value: float) -> bool:
        inside = (value - old) * sign > 0 and (bound is None or (bound - value) * sign > 0)
        return inside and value not in rejected

    if bound is not None and (new - bound) * sign >= 0:
        new = bound - stride  # an int step rounded onto the overshoot: one unit short of it
    candidates = [new + stride * k for k in range(100)] + [new - stride * k for k in range(1, 100)]
    return next((value for value in candidates if allowed(value)), None)


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

    # Each distinct instruction once: batched feedback repeats one per failing example.
    for old, new in dict.fromkeys(match.groups() for match in _REPLACE.finditer(feedback)):
        for variable in [v for v in (named or texts) if old in value(v)]:
            edit(variable, value(variable).replace(old, new), f"replace {old!r} with {new!r}")
    for gone in dict.fromkeys(match.group(1) for match in _REMOVE.finditer(feedback)):
        for variable in [v for v in (named or texts) if gone in value(v)]:
            edit(variable, _tidy(value(variable).replace(gone, "")), f"remove {gone!r}")
    mentions = ((match.group(1).lower(), match.group(2)) for match in _MENTION.finditer(feedback))
    for verb, wanted in dict.fromkeys(mentions):
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
        # As a real model's slip: the intended change, with a bug in it.
        return Edit(variable, _insert_bug(edit.new_value), "(noise) a bug in the new function")
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
