"""A worker app for the tests of distributed workers: ``support_workers:app``.

The agent holds one number that should reach a far target, so every step proposes a new
candidate and a study never converges during a test. Settings come from the environment, so
tests start worker processes with what they need:

* ``TRACE_OPTUNA_TEST_LATENCY``: seconds the simulated model sleeps per call (default 0.2).
* ``TRACE_OPTUNA_TEST_BARRIER``: ``N STORAGE_URL STUDY``: the first evaluation of the study
  waits until N trials are running, so N workers start their baselines at the same moment;
  after 120 s without them the trial fails with :class:`BarrierTimeout`.
"""

from __future__ import annotations

import dataclasses
import os
import time

from opto import trace
import optuna

import trace_optuna as to
from trace_optuna.storage import resolve_storage
from trace_optuna.workers import App

TARGET = 1_000_000
_waited = False


@trace.bundle()
def reach(x):
    """The number itself."""
    return x


def make_agent() -> dict:
    return {"x": trace.node(1, name="x", trainable=True, description="a number to make larger")}


class BarrierTimeout(RuntimeError):
    """The workers did not run trials at once: a test of their race would test nothing."""


def _barrier() -> None:
    """Wait (once per process) until N trials run or one has completed.

    Raises:
        BarrierTimeout: After 120 s without N running trials; the trial fails saying so.
    """
    global _waited
    setting = os.environ.get("TRACE_OPTUNA_TEST_BARRIER")
    if not setting or _waited:
        return
    _waited = True
    count, url, name = setting.split(" ", 2)
    running = 0
    deadline = time.monotonic() + 120
    try:
        storage = resolve_storage(url, heartbeat_interval=None)
        study = optuna.load_study(study_name=name, storage=storage)
    except Exception:  # the database is down (a fault test): no barrier then
        return
    while time.monotonic() < deadline:
        try:
            states = [trial.state for trial in study.get_trials(deepcopy=False)]
        except Exception:  # the database went down meanwhile: no barrier then
            return
        running = states.count(optuna.trial.TrialState.RUNNING)
        if running >= int(count):
            return
        if optuna.trial.TrialState.COMPLETE in states:
            return
        time.sleep(0.1)  # polls the other workers' progress in the storage
    raise BarrierTimeout(
        f"TRACE_OPTUNA_TEST_BARRIER: {running} of {count} trials of {name!r} were running "
        "after 120 s; the workers did not start at once"
    )


def evaluate(agent: dict) -> to.Evaluation:
    _barrier()
    out = reach(agent["x"])
    gap = TARGET - out.data
    if gap > 0:
        feedback = "x should be larger."
    elif gap < 0:
        feedback = "x should be smaller."
    else:
        feedback = "x is correct."
    return to.Evaluation(score=-abs(gap) / TARGET, feedback=feedback, output=out)


app = App(
    agent=make_agent,
    evaluate=evaluate,
    llm=to.LLM(
        "simulated/feedback-follower",
        simulated_latency=float(os.environ.get("TRACE_OPTUNA_TEST_LATENCY", "0.2")),
    ),
    seed=0,
    heartbeat_interval=1,
    grace_period=4,
)

# The same app with another strategy list: a study made by ``app`` refuses it.
other_strategies = dataclasses.replace(app, strategies=("optoprime", "genetic"))
