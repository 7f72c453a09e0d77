"""Programmatically scored tasks for ``benchmarks/strategies.py``: numbers, a prompt, code.

Each task is built from a seed (:func:`make_task`) and gives a :class:`Task`: ``make_agent()``
(a fresh ``@trace.model`` agent in its starting state), ``evaluate(agent) -> Evaluation`` (a
grader with no LLM in it) and the ``target`` score that counts as solved. Scores are in
[0, 1], higher is better. The graders' feedback is written in the grammar of the simulated
model (:mod:`trace_optuna.testing.simulated`), and is plain enough English for a real model too.

* ``numeric``: the Trace paper's numerical task. ``h(x)`` is a small random computation graph
  (additions and multiplications of three trainable numbers and a few constants, built from
  Trace operators so OptoPrime sees the graph); the target ``y*`` is ``h`` at hidden values.
  Score ``1 / (1 + |h(x) - y*| / |y*|)``; feedback "The output should be larger." or
  "... smaller."; solved within 5% relative error (score >= 1 / 1.05). The simulated model
  moves every number by a quarter to three quarters of its value per step (temperature <= 1),
  so it places the output only coarsely: in a 2-seed pilot, a 2% window was reached within
  60 calls by 8 of 28 runs over all arms, which left too little to compare.
* ``prompt``: an instruction string must cover five requirements drawn from a pool. The
  grader reveals ONE missing requirement at a time, in a hidden order
  (``mention "X"``); once all are there it asks to remove off-topic sentences, one at a time.
  Score ``(met - off-topic) / 5``, at least 0; solved at 1.
* ``code``: a trainable ``order_summary`` function with four of six possible bugs, checked by
  six hidden unit tests (one per field of its result). The grader reports the first failing
  test in a hidden order with the edit that fixes it (``replace "X" with "Y"``); a function
  that raises gets the error as feedback (the simulated model then deletes the ``raise``
  line). Score: the fraction of tests passed; solved at 1.
* ``code-raises``: the same function and tests, graded as a new Trace user first writes it:
  ``evaluate`` catches nothing, so a candidate whose code raises raises out of ``evaluate``
  (Trace's ``ExecutionError``; trace_optuna turns it into the candidate's feedback), and the
  grader itself raises (``TypeError``) on a candidate whose result is not a dict. With noise,
  the simulated model's wrong answers insert a ``raise`` into the function: this task measures
  what failing candidates cost (LLM calls, evaluations).

The agents live in this file because ``trace.bundle`` reads a function's source. Trace names
nodes from a per-process counter (``x:0``, ``x:1``...); the benchmark builds one agent per
fresh worker process, so the names, and with them the prompts the model sees, are the same for
every arm and seed.

Example:
    >>> task = make_task("prompt", seed=0)
    >>> result = task.evaluate(task.make_agent())
    >>> result.score < task.target
    True
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import inspect
import operator
import random
import re
from typing import Any

from opto import trace

from trace_optuna import Evaluation

TASK_NAMES = ("numeric", "prompt", "code", "code-raises")
"""The tasks :func:`make_task` builds."""


@dataclasses.dataclass(frozen=True)
class Task:
    """One benchmark task instance.

    Attributes:
        name: The task's name (one of :data:`TASK_NAMES`).
        seed: The seed the instance was drawn with.
        make_agent: Builds a fresh agent in its starting state.
        evaluate: Grades an agent: ``evaluate(agent) -> Evaluation``; never raises for a bad
            candidate (code that raises scores 0 with the error as feedback).
        target: The score at which the task counts as solved.
        description: One line saying what this instance asks for.
    """

    name: str
    seed: int
    make_agent: Callable[[], Any]
    evaluate: Callable[[Any], Evaluation]
    target: float
    description: str


def make_task(name: str, seed: int) -> Task:
    """Build task ``name`` drawn with ``seed``.

    Raises:
        ValueError: If ``name`` is not one of :data:`TASK_NAMES`.
    """
    builders: dict[str, Callable[[int], Task]] = {
        "numeric": numeric_task,
        "prompt": prompt_task,
        "code": code_task,
        "code-raises": lambda seed: code_task(seed, catch_errors=False),
    }
    if name not in builders:
        raise ValueError(f"Unknown task {name!r}; valid tasks are {list(TASK_NAMES)}.")
    return builders[name](seed)


def _exception_evaluation(error: trace.ExecutionError, label: str) -> Evaluation:
    """Score 0, the error as feedback and the exception node as output (so code is repaired)."""
    node = error.exception_node
    return Evaluation(
        score=0.0,
        feedback=f"{label} raised an error: {node.data}",
        output=node,
        details={"error": str(node.data)},
    )


# ---------------------------------------------------------------------------------------------
# numeric: minimise |h(x) - y*| with "larger" / "smaller" feedback

NUMERIC_TOLERANCE = 0.05
"""Relative error |h(x) - y*| / |y*| at which the numeric task is solved."""

_NUMERIC_PARAMETERS = 3


@dataclasses.dataclass(frozen=True)
class _Operation:
    """``value = kind(left, right)``; operands index the agent's values (see ``_graph``)."""

    kind: str  # "add" or "multiply"
    left: int
    right: int


def _numeric_graph(rng: random.Random) -> tuple[list[float], list[_Operation]]:
    """Random constants and a chain of operations over parameters 0..2 and the constants.

    Value indices: the parameters first, then the constants, then each operation's result.
    Every parameter feeds the output, and all values stay positive, so ``h`` increases in
    every parameter: "larger" is always reached by increasing the numbers.
    """
    constants = [round(rng.uniform(0.5, 2.0), 2) for _ in range(2)]
    first_constant = _NUMERIC_PARAMETERS
    operations: list[_Operation] = []
    current = 0
    for parameter in range(1, _NUMERIC_PARAMETERS):
        operations.append(_Operation(rng.choice(("add", "multiply")), current, parameter))
        current = _NUMERIC_PARAMETERS + len(constants) + len(operations) - 1
        if rng.random() < 0.6:
            constant = first_constant + rng.randrange(len(constants))
            operations.append(_Operation(rng.choice(("add", "multiply")), current, constant))
            current = _NUMERIC_PARAMETERS + len(constants) + len(operations) - 1
    return constants, operations


def _apply(operations: list[_Operation], values: list[Any], *, traced: bool) -> Any:
    """Run the chain on ``values`` (Trace nodes if ``traced``, else floats); return the end."""
    add = trace.operators.add if traced else operator.add
    multiply = trace.operators.multiply if traced else operator.mul
    values = list(values)
    for operation in operations:
        left, right = values[operation.left], values[operation.right]
        values.append(add(left, right) if operation.kind == "add" else multiply(left, right))
    return values[-1]


def _formula(operations: list[_Operation], constants: list[float]) -> str:
    names = [f"x{i}" for i in range(_NUMERIC_PARAMETERS)] + [f"{c:g}" for c in constants]
    for operation in operations:
        symbol = "+" if operation.kind == "add" else "*"
        names.append(f"({names[operation.left]} {symbol} {names[operation.right]})")
    return names[-1]


@trace.model
class NumericAgent:
    """Three trainable numbers fed through a fixed computation graph ``h``."""

    def __init__(
        self, start: list[float], constants: list[float], operations: list[_Operation]
    ) -> None:
        self.x0 = trace.node(start[0], name="x", trainable=True, description="An input of h.")
        self.x1 = trace.node(start[1], name="x", trainable=True, description="An input of h.")
        self.x2 = trace.node(start[2], name="x", trainable=True, description="An input of h.")
        self._constants = [trace.node(value, name="c") for value in constants]
        self._operations = operations

    def output(self) -> trace.Node:
        """``h(x)`` as a Trace node whose graph reaches the three numbers."""
        values = [self.x0, self.x1, self.x2, *self._constants]
        return _apply(self._operations, values, traced=True)


def numeric_task(seed: int) -> Task:
    """The Trace paper's numeric task: bring ``h(x)`` to a hidden target ``y*``."""
    rng = random.Random(f"numeric:{seed}")
    constants, operations = _numeric_graph(rng)
    start = [round(rng.uniform(0.5, 3.0), 2) for _ in range(_NUMERIC_PARAMETERS)]
    hidden = [round(rng.uniform(0.5, 3.0), 2) for _ in range(_NUMERIC_PARAMETERS)]
    target_value = float(_apply(operations, [*hidden, *constants], traced=False))

    def make_agent() -> NumericAgent:
        return NumericAgent(start, constants, operations)

    def evaluate(agent: NumericAgent) -> Evaluation:
        output = agent.output()
        value = float(output.data)
        error = abs(value - target_value) / abs(target_value)
        if error <= NUMERIC_TOLERANCE:
            feedback = "The output is correct."
        elif value < target_value:
            feedback = "The output should be larger."
        else:
            feedback = "The output should be smaller."
        return Evaluation(
            score=1.0 / (1.0 + error),
            feedback=feedback,
            output=output,
            details={"h": value, "target": target_value, "relative_error": error},
        )

    return Task(
        name="numeric",
        seed=seed,
        make_agent=make_agent,
        evaluate=evaluate,
        target=1.0 / (1.0 + NUMERIC_TOLERANCE) - 1e-12,
        description=f"h(x) = {_formula(operations, constants)}, y* = {target_value:.4g}",
    )


# ---------------------------------------------------------------------------------------------
# prompt: requirements revealed one at a time

PROMPT_REQUIREMENTS = 5
"""How many requirements one prompt task instance has."""

_REQUIREMENT_POOL = (
    "order number",
    "tracking link",
    "delivery date",
    "refund policy",
    "support hours",
    "return label",
    "store credit",
    "shipping fee",
    "warranty period",
    "reference code",
    "contact email",
    "gift receipt",
)
_START_INSTRUCTIONS = "Answer the customer's question."
_QUESTION = "My parcel has not arrived. What can I do?"
_SEPARATOR = "\n---\n"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@trace.bundle()
def compose_prompt(instructions: str, question: str) -> str:
    """Builds the message sent to the assistant model: the instructions (its system prompt),
    a separator line, then the customer's question."""
    return f"{instructions}\n---\n{question}"


@trace.model
class PromptAgent:
    """An assistant whose system prompt (``instructions``) is trainable."""

    def __init__(self) -> None:
        self.instructions = trace.node(
            _START_INSTRUCTIONS,
            name="instructions",
            trainable=True,
            description="The system prompt of the assistant.",
        )

    def output(self) -> trace.Node:
        """The message the assistant model would receive."""
        return compose_prompt(self.instructions, _QUESTION)


def prompt_task(seed: int) -> Task:
    """A prompt that must cover hidden requirements, revealed one missing one at a time."""
    rng = random.Random(f"prompt:{seed}")
    required = rng.sample(_REQUIREMENT_POOL, PROMPT_REQUIREMENTS)  # in the order revealed

    def evaluate(agent: PromptAgent) -> Evaluation:
        output = agent.output()
        instructions = str(output.data).split(_SEPARATOR)[0]
        lowered = instructions.lower()
        missing = [phrase for phrase in required if phrase not in lowered]
        off_topic = [
            sentence
            for sentence in _SENTENCE_END.split(instructions.strip())
            if sentence
            and sentence != _START_INSTRUCTIONS
            and not any(phrase in sentence.lower() for phrase in required)
        ]
        met = PROMPT_REQUIREMENTS - len(missing)
        score = max(0, met - len(off_topic)) / PROMPT_REQUIREMENTS
        if missing:
            feedback = f'The instructions miss a requirement: mention "{missing[0]}".'
        elif off_topic:
            feedback = f'The instructions have an off-topic sentence: remove "{off_topic[0]}"'
        else:
            feedback = "The instructions are perfect."
        return Evaluation(
            score=score,
            feedback=feedback,
            output=output,
            details={"missing": missing, "off_topic": off_topic},
        )

    return Task(
        name="prompt",
        seed=seed,
        make_agent=PromptAgent,
        evaluate=evaluate,
        target=1.0,
        description="mention " + ", ".join(required),
    )


# ---------------------------------------------------------------------------------------------
# code: a buggy function and hidden unit tests

CODE_BUGS = 4
"""How many of the six bug sites one code task instance has."""


def order_summary(items):
    """Summarises an order.

    items is a list of (name, unit_price, quantity) tuples. Returns a dict with count (the
    total quantity), subtotal (the sum of unit_price * quantity, rounded to cents),
    most_expensive (the name of the item with the highest unit price), names (the distinct
    names in lower case, sorted), cheapest (the lowest unit price) and free_shipping (True
    when the order's total is 50 or above).
    """
    count = sum(quantity for _, _, quantity in items)
    subtotal = round(sum(price * quantity for _, price, quantity in items), 2)
    most_expensive = max(items, key=lambda item: item[1])[0]
    names = sorted({name.lower() for name, _, _ in items})
    cheapest = min(price for _, price, _ in items)
    free_shipping = sum(quantity * price for _, price, quantity in items) >= 50
    return {
        "count": count,
        "subtotal": subtotal,
        "most_expensive": most_expensive,
        "names": names,
        "cheapest": cheapest,
        "free_shipping": free_shipping,
    }


@dataclasses.dataclass(frozen=True)
class _BugSite:
    """A line of ``order_summary`` that may hold a bug, and the hidden test that finds it.

    Snippets hold no double quotes (the feedback quotes them) and are laid out as ``black``
    lays them out: Trace's own OptoPrime reformats code with ``black``.
    """

    field: str
    right: str
    wrong: str
    items: tuple[tuple[str, float, int], ...]
    expected: Any


_PEN_AND_CAP = (("pen", 1.5, 3), ("cap", 8.0, 2))
_BUG_SITES = (
    _BugSite("count", "sum(quantity for _, _, quantity in items)", "len(items)", _PEN_AND_CAP, 5),
    _BugSite("subtotal", "price * quantity for", "price + quantity for", _PEN_AND_CAP, 20.5),
    _BugSite(
        "most_expensive",
        "key=lambda item: item[1]",
        "key=lambda item: item[2]",
        (("pen", 1.5, 30), ("cap", 8.0, 2)),
        "cap",
    ),
    _BugSite(
        "names",
        "{name.lower() for name, _, _ in items}",
        "{name for name, _, _ in items}",
        (("Pen", 1.0, 1), ("cap", 2.0, 1), ("pen", 1.0, 2)),
        ["cap", "pen"],
    ),
    _BugSite(
        "cheapest",
        "min(price for _, price, _ in items)",
        "max(price for _, price, _ in items)",
        _PEN_AND_CAP,
        1.5,
    ),
    _BugSite("free_shipping", "items) >= 50", "items) > 50", (("mug", 25.0, 2),), True),
)


@trace.model
class CodeAgent:
    """An agent whose trainable part is the code of ``order_summary``."""

    def __init__(self, source: str) -> None:
        self.order_summary = trace.bundle(trainable=True)(order_summary)
        self.order_summary.parameter._set(source)

    def summarise(self, items: Any) -> trace.Node:
        """Run the current ``order_summary`` on ``items``."""
        return self.order_summary(items)


def _clean_source() -> str:
    """The source of ``order_summary`` as ``trace.bundle`` stores it (no node is created)."""
    return inspect.getsource(order_summary)


def code_task(seed: int, *, catch_errors: bool = True) -> Task:
    """Fix ``order_summary`` so that six hidden unit tests pass.

    ``catch_errors=False`` is the ``code-raises`` task: ``evaluate`` lets the candidate's
    ``ExecutionError`` out, and raises ``TypeError`` itself on a result that is not a dict.
    """
    rng = random.Random(f"code:{seed}")
    buggy = rng.sample(range(len(_BUG_SITES)), CODE_BUGS)
    order = rng.sample(range(len(_BUG_SITES)), len(_BUG_SITES))  # hidden test order
    source = _clean_source()
    for index in buggy:
        site = _BUG_SITES[index]
        if source.count(site.right) != 1:
            raise RuntimeError(f"Bug site {site.field!r} is not unique in order_summary.")
        source = source.replace(site.right, site.wrong)

    def make_agent() -> CodeAgent:
        return CodeAgent(source)

    def evaluate(agent: CodeAgent) -> Evaluation:
        results = []
        first_output: trace.Node | None = None
        for index in order:
            site = _BUG_SITES[index]
            if not catch_errors:
                output = agent.summarise(list(site.items))  # raises ExecutionError
                if not isinstance(output.data, dict):
                    raise TypeError(f"order_summary returned {type(output.data).__name__}")
            else:
                try:
                    output = agent.summarise(list(site.items))
                except trace.ExecutionError as error:
                    return _exception_evaluation(error, "order_summary")
            if first_output is None:
                first_output = output
            value = output.data.get(site.field) if isinstance(output.data, dict) else None
            results.append((site, output, value, value == site.expected))
        passed = sum(ok for *_, ok in results)
        failing = [(site, output, value) for site, output, value, ok in results if not ok]
        if not failing:
            feedback = "All hidden tests pass: the function is correct."
            output = first_output
        else:
            site, output, value = failing[0]
            feedback = (
                f"Hidden test {site.field} failed: order_summary({list(site.items)!r}) gave "
                f"{site.field}={value!r}, expected {site.expected!r}."
            )
            code = agent.order_summary.parameter._data
            if site.wrong in code:
                feedback += f' In order_summary, replace "{site.wrong}" with "{site.right}".'
        assert output is not None
        return Evaluation(
            score=passed / len(_BUG_SITES),
            feedback=feedback,
            output=output,
            details={"passed": passed, "failing": [site.field for site, *_ in failing]},
        )

    return Task(
        name="code" if catch_errors else "code-raises",
        seed=seed,
        make_agent=make_agent,
        evaluate=evaluate,
        target=1.0,
        description="bugs in " + ", ".join(_BUG_SITES[i].field for i in sorted(buggy)),
    )
