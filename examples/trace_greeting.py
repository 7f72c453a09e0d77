"""Trace's own greeting agent, optimized with trace_optuna: every OptoPrime step is a trial.

Ported from Microsoft Trace, ``examples/greeting.py`` and ``docs/examples/basic/greeting.ipynb``
(github.com/microsoft/Trace at 8190d03): the "sales assistant" that decides the user's language
and greets them by name. Its trainable parameters are two prompts (``instruct1``,
``instruct2``) and the code of two methods (``decide_lang``, ``greet``).

    python examples/trace_greeting.py --storage sqlite:///greeting.db --trials 5
    python examples/trace_greeting.py --storage postgresql://postgres@127.0.0.1:5432/test

Run it again with the same storage and study name and it continues the study.

What changed from Trace's code, and why:

* ``trace.operators.call_llm`` (the agent's own LLM call) is replaced by ``local_llm``, a
  deterministic local function bundled the same way, so the example runs offline and every run
  of the agent gives the same output. It answers the language instruction with "Spanish (es)" or
  "English (en)" and the name instruction with the name in the query. The agent's code is
  otherwise Trace's, unchanged: ``decide_lang`` still returns nothing and ``greet`` still always
  says "Hola" until the optimizer changes them.
* Trace's training loop (``train()``: run, ``feedback_fn``, ``backward``, ``step``) becomes
  ``evaluate`` below plus ``study.optimize``; the ``except ExecutionError`` branch of Trace's
  loop is done by trace_optuna (the exception's text is the feedback).
* ``feedback_fn`` answers only "Correct" or "Incorrect". ``evaluate`` keeps its rule (an English
  query must get "Hello", a Spanish one "Hola") and says what is wrong in the feedback.

The query optimized is the notebook's, "Hello, I'm John." (English); the Spanish query of
``greeting.py`` is checked too and stored in the trial's details (``spanish_ok``), not scored.

About the optimizer's model. The default, ``simulated/feedback-follower``, is a simulation, not
a language model: it follows a small feedback grammar by rule (``trace_optuna.testing.simulated``)
and proposes nothing for feedback outside it. So ``--feedback`` chooses what the grader says:

* ``plain`` (the default): what is wrong, in words a person would use. A real model
  (``--llm openai/gpt-4o-mini``, needs ``OPENAI_API_KEY``) can act on it; the simulated model
  cannot, and every trial keeps the baseline unchanged (score 0).
* ``directive``: the same, plus the edit in the simulated model's grammar
  (``replace "Hola" with "Hello"``), so the offline run changes ``greet``'s code and reaches 1.
"""

from __future__ import annotations

import argparse
import re

from opto import trace

import trace_optuna as to

#: The notebook's training query and its gold label.
QUERY, GOLD = "Hello, I'm John.", "en"
#: ``greeting.py``'s query, checked but not scored.
SPANISH_QUERY = "Hola, soy Juan."
GREETING_WORD = {"en": "Hello", "es": "Hola"}
LANGUAGE_NAME = {"en": "English", "es": "Spanish"}


@trace.bundle()
def local_llm(system_prompt, instruction, user_query):
    """A deterministic stand-in for the agent's ``call_llm``: answer the instruction."""
    if "language" in instruction.lower():
        spanish = re.search(r"\b(hola|soy|buenos)\b", user_query, re.IGNORECASE)
        return "Spanish (es)" if spanish else "English (en)"
    name = re.search(r"\b(?:soy|i'm|i am|my name is)\s+(\w+)", user_query, re.IGNORECASE)
    return name.group(1) if name else "there"


@trace.model
class Agent:
    """Trace's greeting agent (``examples/greeting.py``), with ``call_llm`` made local."""

    def __init__(self, system_prompt="You are a sales assistant."):
        self.system_prompt = system_prompt
        self.instruct1 = trace.node("Decide the language", trainable=True)
        self.instruct2 = trace.node("Extract name if it's there", trainable=True)

    def __call__(self, user_query):
        response = local_llm(self.system_prompt, self.instruct1, user_query)
        en_or_es = self.decide_lang(response)

        user_name = local_llm(self.system_prompt, self.instruct2, user_query)
        greeting = self.greet(en_or_es, user_name)

        return greeting

    @trace.bundle(trainable=True)
    def decide_lang(self, response):
        """Map the language into a variable"""
        return

    @trace.bundle(trainable=True)
    def greet(self, lang, user_name):
        """Produce a greeting based on the language"""
        greeting = "Hola"
        return f"{greeting}, {user_name}!"


def feedback_fn(generated_response: str, gold_label: str = "en") -> str:
    """Trace's grader, unchanged."""
    if gold_label == "en" and "Hello" in generated_response:
        return "Correct"
    elif gold_label == "es" and "Hola" in generated_response:
        return "Correct"
    else:
        return "Incorrect"


def make_evaluate(feedback_style: str = "plain"):
    """``evaluate(agent)`` built on ``feedback_fn``; ``feedback_style`` as in the docstring."""

    def evaluate(agent: Agent) -> to.Evaluation:
        greeting = agent(QUERY)  # an ExecutionError here fails nothing: trace_optuna reports it
        verdict = feedback_fn(greeting.data, GOLD)
        spanish_ok = feedback_fn(_safe_greeting(agent, SPANISH_QUERY), "es") == "Correct"
        if verdict == "Correct":
            feedback = "Correct"
        else:
            expected = GREETING_WORD[GOLD]
            wrong = next((w for w in GREETING_WORD.values() if w in greeting.data), None)
            feedback = (
                f'Incorrect: the user wrote "{QUERY}" in {LANGUAGE_NAME[GOLD]}, so the greeting '
                f'should say "{expected}", but the reply was "{greeting.data}".'
            )
            if feedback_style == "directive" and wrong is not None:
                feedback += f' Replace "{wrong}" with "{expected}".'
        return to.Evaluation(
            score=1.0 if verdict == "Correct" else 0.0,
            feedback=feedback,
            output=greeting,
            details={"reply": greeting.data, "spanish_ok": spanish_ok},
        )

    return evaluate


def _safe_greeting(agent: Agent, query: str) -> str:
    try:
        return agent(query).data
    except trace.ExecutionError as error:
        return str(error.exception_node.data)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default="sqlite:///trace_greeting.db")
    parser.add_argument("--study-name", default="trace-greeting")
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--llm", default="simulated/feedback-follower")
    parser.add_argument("--feedback", choices=("plain", "directive"), default="plain")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    study = to.create_study(
        study_name=args.study_name,
        storage=args.storage,
        agent=Agent,
        evaluate=make_evaluate(args.feedback),
        llm=args.llm,
        seed=args.seed,
        load_if_exists=True,
    )
    study.optimize(n_trials=args.trials)
    best = study.best_trial
    print(f"best score {best.value:.2f} (trial {best.number}) after {len(study.trials)} trials")
    print(f"greet:\n{study.best_snapshot['greet']}")
    record = study.record(best.number)
    print(f"trial {record.number} ({record.strategy}) changed {record.changed}:\n{record.diff}")


if __name__ == "__main__":
    main()
