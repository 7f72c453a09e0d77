"""Small Trace agents for the tests (``@trace.bundle`` needs their source in a file)."""

from __future__ import annotations

from opto import trace

import trace_optuna as to

REQUIRED = ("order number", "tracking link")


@trace.model
class Greeter:
    """A prompt, a number and a trainable method: every kind of parameter the core stores."""

    def __init__(self) -> None:
        self.greeting = trace.node("Hello.", trainable=True, description="the reply's text")
        self.excitement = trace.node(1, trainable=True, description="how many '!' to add")

    @trace.bundle(trainable=True)
    def decorate(self, text, excitement):
        """Finish the reply."""
        return text + "!" * excitement

    def reply(self):
        return self.decorate(self.greeting, self.excitement)


class CountingEvaluate:
    """Scores a Greeter by the required phrases it mentions; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, agent: Greeter) -> to.Evaluation:
        self.calls += 1
        out = agent.reply()
        text = out.data.lower()
        missing = [phrase for phrase in REQUIRED if phrase not in text]
        score = (len(REQUIRED) - len(missing)) / len(REQUIRED)
        if missing:
            feedback = f'The reply should mention "{missing[0]}". Add "{missing[0]}" to greeting.'
        else:
            feedback = "The reply is perfect."
        return to.Evaluation(
            score=score, feedback=feedback, output=out, details={"missing": missing}
        )


def make_greeter() -> Greeter:
    return Greeter()


TARGET_DOSE = 11.0


@trace.model
class Dose:
    """One trainable number that must come close to ``TARGET_DOSE`` (from 10, +50% overshoots)."""

    def __init__(self) -> None:
        self.dose = trace.node(10.0, trainable=True, description="the dose")

    def output(self) -> trace.Node:
        return self.dose * 1.0


def evaluate_dose(agent: Dose) -> to.Evaluation:
    out = agent.output()
    gap = out.data - TARGET_DOSE
    feedback = "The dose is correct." if abs(gap) < 0.5 else "The dose is too small."
    if gap >= 0.5:
        feedback = "The dose is too large."
    return to.Evaluation(score=-abs(gap), feedback=feedback, output=out)


@trace.model
class Translator:
    """One trainable instruction; the message it answers is a Trace node made by evaluate."""

    def __init__(self) -> None:
        self.instruction = trace.node("Decide the language.", trainable=True)

    @trace.bundle()
    def answer(self, instruction, message):
        """Answers the message as the instruction says."""
        return f"{instruction} {message}"

    def reply(self, message: trace.Node) -> trace.Node:
        return self.answer(self.instruction, message)


@trace.model
class AskingTranslator:
    """Answers through ``ask(instruction, message)``: the call a real agent makes to its LLM."""

    def __init__(self, ask) -> None:
        self.instruction = trace.node("Decide the language.", trainable=True)
        self.ask = ask

    @trace.bundle()
    def answer(self, instruction, message):
        """Answers the message as the instruction says."""
        return self.ask(instruction, message)

    def reply(self, message: trace.Node) -> trace.Node:
        return self.answer(self.instruction, message)


@trace.bundle()
def compose(instructions, name, question):
    """Writes one customer's prompt: the instructions, the customer's name, the question."""
    return f"{instructions} [{name}] {question}"


@trace.model
class BatchedAgent:
    """Answers a batch of customers: several inputs per call, a trainable method, a number."""

    def __init__(self) -> None:
        self.instructions = trace.node(
            "Answer.", name="instructions", trainable=True, description="the instructions"
        )
        self.limit = trace.node(1, name="limit", trainable=True, description="items to list")

    @trace.bundle(trainable=True)
    def answer(self, prompt, count, limit):
        """Answers one prompt, listing at most limit items."""
        return prompt + " items=" + str(min(count, limit))

    def run(self, name: str, question: str, count: int) -> trace.Node:
        prompt = compose(self.instructions, trace.node(name), trace.node(question))
        return self.answer(prompt, trace.node(count), self.limit)


BATCH = (("alice", "order 12", 3), ("bob", "refund 7", 2), ("carol", "parcel 9", 4))


def evaluate_batched(agent: BatchedAgent) -> to.Evaluation:
    """Runs the whole batch; one feedback sentence per example, as batched graders write."""
    outputs, sentences, passed = [], [], 0
    for index, (name, question, count) in enumerate(BATCH, 1):
        out = agent.run(name, question, count)
        outputs.append(out)
        if "order number" not in out.data:
            sentences.append(f'Example {index}: wrong. Mention "order number" in instructions.')
        elif f"items={count}" not in out.data:
            sentences.append(f"Example {index}: wrong. The limit should be larger.")
        else:
            sentences.append(f"Example {index}: correct.")
            passed += 1
    batch = outputs[0]
    for out in outputs[1:]:
        batch = batch + out
    return to.Evaluation(score=passed / len(BATCH), feedback=" ".join(sentences), output=batch)
