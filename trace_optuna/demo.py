"""An offline demo: a tiny customer-support agent, its grader, and the simulated model to tune it.

No real language model is involved anywhere: the agent composes its reply with plain string
logic, the grader checks it with plain rules, and ``DEMO_LLM`` names the simulated model
(:mod:`trace_optuna.testing.simulated`), which follows the grader's feedback mechanically. It is
what ``trace-optuna demo``, the tests and the benchmarks run.

The agent has three trainable parameters, all reached by the graph of its output:

* ``instructions`` (str): the "system prompt"; the draft follows it literally, then repeats
  the question.
* ``max_words`` (int): the draft is cut to this many words; it starts too small.
* ``format_reply`` (code): turns the draft into the message sent; its sign-off is wrong.

The grader's feedback names the first unmet requirement in the simulated model's grammar, so
Trace's ``OptoPrime`` driven by ``DEMO_LLM`` reaches a score of 1.0 in about ten steps.

Example:
    >>> from opto.optimizers import OptoPrime
    >>> from trace_optuna.llm import LLM
    >>> agent = make_agent()
    >>> optimizer = OptoPrime(agent.parameters(), llm=LLM(DEMO_LLM))
    >>> for _ in range(15):
    ...     result = evaluate(agent)
    ...     if result.score == 1.0:
    ...         break
    ...     optimizer.zero_feedback()
    ...     optimizer.backward(result.output, result.feedback)
    ...     optimizer.step()
    >>> result.score
    1.0
"""

from __future__ import annotations

from opto import trace

from trace_optuna.evaluation import Evaluation

DEMO_LLM = "simulated/feedback-follower"
"""The litellm model string of the simulated model that tunes the demo agent."""

QUESTION = "Where is my package? It has not arrived yet."
"""The customer's question the demo agent answers."""

SIGN_OFF = "Kind regards, Acme Support"
"""The sign-off the grader requires at the end of the reply."""

_START_SIGN_OFF = "Best, The Team"
_CUT_MARK = "..."


@trace.bundle()
def compose(instructions: str, question: str, max_words: int) -> str:
    """Writes a draft reply: a greeting, the instructions (the system prompt) followed
    literally, then the question it answers. The draft is cut to at most max_words words, and
    ends with "..." when it was cut."""
    words = f"Hello! {instructions} You asked: {question}".split()
    if len(words) > max_words:
        return " ".join(words[: max(int(max_words), 0)]) + " ..."
    return " ".join(words)


@trace.model
class SupportAgent:
    """A customer-support agent whose reply depends on three trainable parameters."""

    def __init__(self) -> None:
        self.instructions = trace.node(
            "Answer the customer's question.",
            name="instructions",
            trainable=True,
            description="The system prompt: what the reply should say.",
        )
        self.max_words = trace.node(
            8,
            name="max_words",
            trainable=True,
            description="The longest draft reply, in words.",
        )

    @trace.bundle(trainable=True)
    def format_reply(self, draft):
        """Formats the draft reply as the message sent to the customer."""
        return draft + "\n\nBest, The Team"

    def reply(self, question: str) -> trace.Node:
        """Answer ``question``; the returned node's graph reaches all three parameters."""
        draft = compose(self.instructions, question, self.max_words)
        return self.format_reply(draft)


def make_agent() -> SupportAgent:
    """A fresh demo agent in its starting state (score below 1)."""
    return SupportAgent()


# Each requirement: (name, is met by the reply text, feedback in the simulated grammar).
_REQUIREMENTS = (
    (
        "complete",
        lambda text: _CUT_MARK not in text,
        "The reply is cut off: max_words should be larger.",
    ),
    (
        "order_number",
        lambda text: "order number" in text.lower(),
        'The reply should ask for the order number: include "order number" in instructions.',
    ),
    (
        "tracking_link",
        lambda text: "tracking link" in text.lower(),
        'The reply should offer a tracking link: include "tracking link" in instructions.',
    ),
    (
        "apology",
        lambda text: "sorry" in text.lower(),
        'The reply should apologise: add "We are sorry for the delay." to instructions.',
    ),
    (
        "sign_off",
        lambda text: text.rstrip().endswith(SIGN_OFF),
        f'The reply should end with "{SIGN_OFF}": in format_reply, replace '
        f'"{_START_SIGN_OFF}" with "{SIGN_OFF}".',
    ),
)


def evaluate(agent: SupportAgent) -> Evaluation:
    """Grade the agent's reply to :data:`QUESTION` with programmatic rules.

    The score is the fraction of requirements met; the feedback names the first unmet one
    (or says the reply is perfect). If the agent's code raises, the score is 0, the feedback is
    the error, and ``output`` is Trace's exception node, so the optimizer can repair the code.

    Args:
        agent: An agent from :func:`make_agent`.

    Returns:
        The evaluation; ``details`` holds which requirements were met.
    """
    try:
        output = agent.reply(QUESTION)
    except trace.ExecutionError as error:
        node = error.exception_node
        return Evaluation(
            score=0.0,
            feedback=f"The agent raised an error: {node.data}",
            output=node,
            details={"error": str(node.data)},
        )
    text = str(output.data)
    met = {name: bool(check(text)) for name, check, _ in _REQUIREMENTS}
    score = sum(met.values()) / len(met)
    feedback = next(
        (message for name, _, message in _REQUIREMENTS if not met[name]),
        "The reply is perfect.",
    )
    return Evaluation(
        score=score,
        feedback=feedback,
        output=output,
        details={"met": met, "words": len(text.split())},
    )
