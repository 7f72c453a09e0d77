"""Agents that call a model themselves, as Trace agents do (``@trace.bundle`` needs a file).

``SalesAgent`` is Trace's greeting agent (``examples/greeting.py``): ``call_llm`` builds Trace's
``LLM()`` at every call. ``HeldModelAgent`` builds ``LLM()`` once, in ``__init__``, with the
name imported when this module was (Trace's own class, not one installed later).
"""

from __future__ import annotations

from opto import trace
from opto.trace.operators import call_llm
from opto.utils.llm import LLM

import trace_optuna as to

QUERY = "Hello, I'm John."
SYSTEM_PROMPT = "You are a sales assistant."


@trace.model
class SalesAgent:
    """Trace's greeting agent, unchanged."""

    def __init__(self, system_prompt=SYSTEM_PROMPT):
        self.system_prompt = system_prompt
        self.instruct1 = trace.node("Decide the language", trainable=True)
        self.instruct2 = trace.node("Extract name if it's there", trainable=True)

    def __call__(self, user_query):
        response = call_llm(self.system_prompt, self.instruct1, user_query)
        en_or_es = self.decide_lang(response)

        user_name = call_llm(self.system_prompt, self.instruct2, user_query)
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


def evaluate_greeting(agent: SalesAgent) -> to.Evaluation:
    """1 for an English greeting of the English query; the feedback says what to replace."""
    greeting = agent(QUERY)
    correct = "Hello" in greeting.data
    feedback = (
        "Correct"
        if correct
        else 'Incorrect: the user wrote in English. Replace "Hola" with "Hello".'
    )
    return to.Evaluation(score=1.0 if correct else 0.0, feedback=feedback, output=greeting)


@trace.model
class HeldModelAgent:
    """Builds its model once, when it is made, and asks it in a bundled method."""

    def __init__(self):
        self.llm = LLM()
        self.instruction = trace.node("Greet the user.", trainable=True)

    def __call__(self, user_query):
        return self.answer(self.instruction, user_query)

    @trace.bundle()
    def answer(self, instruction, user_query):
        """Ask the model to follow the instruction."""
        messages = [
            {"role": "system", "content": instruction},
            {"role": "user", "content": user_query},
        ]
        return self.llm(messages=messages).choices[0].message.content


def evaluate_held(agent: HeldModelAgent) -> to.Evaluation:
    """Scores nothing in particular: the test is about the model calls."""
    reply = agent(QUERY)
    return to.Evaluation(score=0.0, feedback='Replace "Greet" with "Welcome".', output=reply)
