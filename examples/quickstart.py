"""Quick start, offline: optimize a small Trace agent; every step is an Optuna trial.

Run it twice: the second run continues the same study from ``quickstart.db``.

    python examples/quickstart.py
    optuna-dashboard sqlite:///quickstart.db     # browse feedback, diffs and LLM calls

It uses the simulated model (``simulated/feedback-follower``), which follows the grader's
feedback by rule: a simulation for demos and tests, not a language model. For a real model,
see ``examples/real_llm.py``.
"""

from __future__ import annotations

from opto import trace

import trace_optuna as to

REQUIRED = ("order number", "tracking link", "sorry")


@trace.model
class SupportAgent:
    def __init__(self) -> None:
        self.instructions = trace.node(
            "Answer the customer.", trainable=True, description="what every reply must do"
        )

    @trace.bundle(trainable=True)
    def sign(self, text):
        """Add the sign-off to a reply."""
        return text + " -- Support"

    def reply(self, question: str):
        return self.sign(self.instructions + " Q: " + question)


def evaluate(agent: SupportAgent) -> to.Evaluation:
    out = agent.reply("Where is my order?")
    missing = [phrase for phrase in REQUIRED if phrase not in out.data.lower()]
    score = 1 - len(missing) / len(REQUIRED)
    if missing:
        feedback = f'The reply should mention "{missing[0]}". Add "{missing[0]}" to instructions.'
    else:
        feedback = "The reply is perfect."
    return to.Evaluation(score=score, feedback=feedback, output=out)


def main() -> None:
    study = to.create_study(
        study_name="quickstart",
        storage="sqlite:///quickstart.db",
        agent=SupportAgent,  # a function that builds a fresh agent; a class works too
        evaluate=evaluate,
        llm="simulated/feedback-follower",
        load_if_exists=True,
    )
    study.optimize(n_trials=5)
    print(f"best score {study.best_value:.2f} after {len(study.trials)} trials")
    print(study.best_snapshot["instructions"])
    record = study.record(study.best_trial.number)
    print(f"trial {record.number} ({record.strategy}) changed {record.changed}:\n{record.diff}")


if __name__ == "__main__":
    main()
