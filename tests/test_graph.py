"""Trace's global registry is released between trials, and names are never reused."""

from __future__ import annotations

import collections
from collections.abc import Iterator
import gc
import weakref

from opto import trace
from opto.optimizers import OptoPrime
from opto.trace.nodes import GRAPH
import pytest
from support_agents import Greeter
from support_agents import make_greeter

import trace_optuna as to
from trace_optuna import graph
from trace_optuna.llm import LLM

MODEL = "simulated/feedback-follower"


@pytest.fixture
def isolated_registry() -> Iterator[None]:
    """Run a test against an empty registry and put the process's own back afterwards."""
    saved = GRAPH._nodes
    GRAPH._nodes = collections.defaultdict(list)
    try:
        yield
    finally:
        GRAPH._nodes = saved


def test_release_frees_what_nobody_holds_and_keeps_the_rest(isolated_registry: None) -> None:
    kept = trace.node(1, name="kept", trainable=True)
    dropped = trace.node(2, name="temporary")
    total = kept + dropped
    watch = weakref.ref(total)
    del dropped, total
    assert graph.registered_nodes() == 3
    assert graph.release() == 3
    gc.collect()
    assert watch() is None
    assert kept.data == 1 and kept.name == "kept:0"
    assert graph.registered_nodes() == 0


def test_names_continue_after_release_where_clear_reuses_them(isolated_registry: None) -> None:
    first = trace.node(1, name="count", trainable=True)
    graph.release()
    second = trace.node(2, name="count", trainable=True)
    assert (first.py_name, second.py_name) == ("count0", "count1")
    assert GRAPH.get("count:1") is second
    with pytest.raises(LookupError, match="released"):
        GRAPH.get("count:0")
    GRAPH.clear()  # what Trace offers: the counters restart and a live name is taken again
    third = trace.node(3, name="count", trainable=True)
    assert third.py_name == first.py_name


@trace.bundle()
def combine(*values):
    """Joins the values into one text."""
    return " | ".join(str(value) for value in values)


def test_every_parameter_gets_its_own_suggestion_after_release(isolated_registry: None) -> None:
    old = trace.node(10, name="count", trainable=True)
    graph.release()
    new = trace.node(20, name="count", trainable=True)
    optimizer = OptoPrime([old, new], llm=LLM(MODEL))
    optimizer.zero_feedback()
    optimizer.backward(combine(old, new), f"Increase {new.py_name} by 5.")
    optimizer.step()
    assert (old.data, new.data) == (10, 25)


class EndlessEvaluate:
    """Always asks for one more '!': every trial is a new, better candidate, run once."""

    def __init__(self) -> None:
        self.outputs: list[weakref.ref] = []

    def __call__(self, agent: Greeter) -> to.Evaluation:
        out = agent.reply()
        self.outputs.append(weakref.ref(out))
        return to.Evaluation(
            score=agent.excitement.data, feedback="Increase excitement by 1.", output=out
        )


@pytest.mark.slow  # 64 s here
def test_the_step_releases_the_registry_every_trial(sqlite_url: str) -> None:
    # A few hundred agent runs: the registry must not keep them alive, and the step must still
    # continue from its parent's live graph (each candidate is evaluated exactly once).
    evaluate = EndlessEvaluate()
    study = to.create_study(
        study_name="released",
        storage=sqlite_url,
        agent=make_greeter,
        evaluate=evaluate,
        llm=MODEL,
        strategies=["optoprime"],
        seed=0,
    )
    study.optimize(n_trials=300)
    gc.collect()
    assert len(evaluate.outputs) == 300  # one run per trial: the live graph was reused
    alive = [n for n, ref in enumerate(evaluate.outputs) if ref() is not None]
    # The newest run (the next step continues it) and its parent's (linked by the last step,
    # released when the next trial starts): nothing older.
    assert alive == [298, 299], alive
    assert graph.registered_nodes() < 50
    assert study.best_trial.number == 299
    assert study.record(299).snapshot["excitement"] == 300
