"""Worker apps for the shared-parameter tests: ``support_shared:left`` and ``support_shared:both``.

A team of two agents, ``a`` and ``b``, each holding one number that should grow. The study
``left`` optimizes ``a.x``; the study ``both`` optimizes ``a.x`` and ``b.x``: they share
``a.x``. The score is the wall-clock time the evaluation ended, so every trial beats every
trial that finished before it and publishes what it changed: publishes are frequent and the
two studies' workers collide on ``a.x``. Settings come from the environment:

* ``TRACE_OPTUNA_TEST_REGISTRY``: the registry name (unique per test).
* ``TRACE_OPTUNA_TEST_LATENCY``: seconds the simulated model sleeps per call (default 0.2).
"""

from __future__ import annotations

import os
import time

from opto import trace

import trace_optuna as to
from trace_optuna.workers import App


@trace.model
class Member:
    def __init__(self, name: str) -> None:
        self.x = trace.node(1, name="x", trainable=True, description=f"{name}'s number")

    def act(self, value):
        return self.x + value


def make_team() -> dict:
    return {"a": Member("a"), "b": Member("b")}


def evaluate(team: dict) -> to.Evaluation:
    out = team["a"].act(team["b"].x)
    seen = to.snapshot(team)  # the values this run used, the other study's included
    return to.Evaluation(
        score=time.time(), feedback="x should be larger.", output=out, details={"seen": seen}
    )


team = to.ParameterSet(make_team, name=os.environ.get("TRACE_OPTUNA_TEST_REGISTRY", "team"))
_llm = to.LLM(
    "simulated/feedback-follower",
    simulated_latency=float(os.environ.get("TRACE_OPTUNA_TEST_LATENCY", "0.2")),
)
left = App(
    parameters=team.select("a.*"),
    evaluate=evaluate,
    llm=_llm,
    seed=0,
    heartbeat_interval=1,
    grace_period=4,
)
both = App(
    parameters=team.select("*"),
    evaluate=evaluate,
    llm=_llm,
    seed=1,
    heartbeat_interval=1,
    grace_period=4,
)
