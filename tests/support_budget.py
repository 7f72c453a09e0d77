"""A dataset study for the budget tests (``test_budget_stop.py``), importable by the worker
processes they start (``spawn``): the agent, the per-example grader and the splits."""

from __future__ import annotations

from typing import Any

from opto import trace

import trace_optuna as to

LLM = "simulated/feedback-follower"
WORDS = ("order number", "tracking link", "refund")
MINIBATCH = 4


@trace.model
class Replier:
    """A greeting the replies start with; each example needs a phrase in the reply."""

    def __init__(self) -> None:
        self.greeting = trace.node("Hello.", trainable=True, description="the reply's text")

    @trace.bundle()
    def answer(self, greeting, topic):
        """Reply about a topic."""
        return greeting + " About " + topic

    def reply(self, topic: str) -> Any:
        return self.answer(self.greeting, topic)


def run(agent: Replier, example: dict[str, str]) -> to.Evaluation:
    """1 when the reply mentions the example's phrase; says which phrase is missing."""
    out = agent.reply(example["topic"])
    ok = example["need"] in out.data
    feedback = "Good." if ok else f'The reply does not mention "{example["need"]}".'
    return to.Evaluation(score=float(ok), feedback=feedback, output=out)


def splits() -> tuple[to.Dataset, to.Dataset]:
    """30 examples: 15 to train on, 15 to validate on."""
    data = to.Dataset(
        [{"topic": f"t{i}", "need": WORDS[i % 3]} for i in range(30)],
        id=lambda example: example["topic"],
    )
    train, val = data.split(0.5, 0.5, seed=0)
    return train, val


def trial_share() -> int:
    """The most examples one trial runs: its minibatch and the whole validation set."""
    return MINIBATCH + len(splits()[1])


def study(url: str, name: str, budget: to.Budget) -> to.TraceStudy:
    train, val = splits()
    return to.create_study(
        storage=url,
        study_name=name,
        load_if_exists=True,
        agent=Replier,
        evaluate=run,
        llm=LLM,
        trainset=train,
        valset=val,
        minibatch_size=MINIBATCH,
        budget=budget,
        seed=0,
        figure_interval=None,
    )


def work(url: str, name: str, llm_calls: int, n_trials: int) -> None:
    """A worker process: optimize until the study's budget stops it (or ``n_trials``)."""
    study(url, name, to.Budget(llm_calls=llm_calls)).optimize(n_trials=n_trials)
