"""An agent with one parameter of each JSON type, for tests of suggestion parsing."""

from __future__ import annotations

from opto import trace

import trace_optuna as to


@trace.bundle()
def describe(tone, flag, items, count):
    """Describe the settings."""
    return f"{tone} {flag} {items} {count}"


def make_knobs() -> dict:
    return {
        "tone": trace.node("Be brief.", name="tone", trainable=True),
        "flag": trace.node(True, name="flag", trainable=True),
        "items": trace.node([1, 2], name="items", trainable=True),
        "count": trace.node(3, name="count", trainable=True),
    }


def evaluate_knobs(agent: dict) -> to.Evaluation:
    out = describe(agent["tone"], agent["flag"], agent["items"], agent["count"])
    return to.Evaluation(score=len(out.data), feedback="Make it longer.", output=out)
