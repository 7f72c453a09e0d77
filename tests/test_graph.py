"""Trace's global registry is released between trials, and names are never reused."""

from __future__ import annotations

import collections
from collections.abc import Iterator
import concurrent.futures
import gc
import re
import threading
import weakref

from opto import trace
from opto.optimizers import OptoPrime
from opto.trace.nodes import GRAPH
import pytest
from support_agents import AskingTranslator
from support_agents import Greeter
from support_agents import Translator
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


def evaluate_after_clear(agent: Translator) -> to.Evaluation:
    """Ported from a Trace loop: clears the registry, then makes the run's input nodes."""
    GRAPH.clear()
    out = agent.reply(trace.node("Hola, soy Juan."))
    if "Spanish" in agent.instruction.data:
        return to.Evaluation(score=1.0, feedback="The reply is perfect.", output=out)
    return to.Evaluation(
        score=0.0, feedback='The instruction should mention "Spanish".', output=out
    )


def _shown(prompt: str) -> list[tuple[str, str]]:
    """The (name, value) of every node OptoPrime's prompt shows, in every section."""
    return re.findall(r"^\(\w+\) (\S+?)=(.*)$", prompt, flags=re.MULTILINE)


def test_graph_clear_in_evaluate_cannot_send_a_parameter_another_nodes_value(
    isolated_registry: None, storage_url: str
) -> None:
    # In a fresh process the parameter is str:0; after GRAPH.clear() the evaluate's first
    # string node is str:0 too. Trace's OptoPrime then showed "(str) str0=Hola, soy Juan." as
    # the variable and wrote the suggestion made for that text into the instruction.
    agent = Translator()
    parameter_name = agent.instruction.py_name
    study = to.create_study(
        study_name="cleared",
        storage=storage_url,
        agent=agent,
        evaluate=evaluate_after_clear,
        llm=MODEL,
        strategies=["optoprime"],
        seed=0,
    )
    study.optimize(n_trials=2)

    prompt = study.record(1).llm_calls[0]["user"]
    variables = prompt.split("#Variables\n")[-1].split("\n#")[0].strip()
    assert variables == f"(str) {parameter_name}=Decide the language.", prompt
    shown = _shown(prompt)
    names = [name for name, _ in shown]
    assert len(names) == len(set(names)), prompt
    assert "Hola, soy Juan." in [value for _, value in shown], prompt
    assert study.record(1).snapshot["instruction"] == (
        "Decide the language. Always mention Spanish."
    )
    assert study.best_trial.number == 1


def test_distinct_names_keeps_the_parameters_and_renames_the_others_once(
    isolated_registry: None,
) -> None:
    first = trace.node("a", trainable=True)
    GRAPH.clear()
    second = trace.node("b", trainable=True)  # a second parameter of the same name
    GRAPH.clear()
    other = trace.node("c")
    joined = combine(first, second, other)
    # "x1:0" and "x:10" are two names with one py_name, the name a prompt shows.
    tens = [trace.node(n, name="x") for n in range(11)]
    one = trace.node(0, name="x1")
    total = combine(*tens, one)
    assert first.name == second.name == other.name == "str:0"

    renamed = graph.distinct_names([first, second], [joined, total])
    shown = [first, second, other, joined, *tens, one, total]
    assert first.name == "str:0"
    assert len({node.py_name for node in shown}) == len(shown)
    assert renamed == {second.name: "str:0", other.name: "str:0", one.name: "x1:0"}
    assert graph.distinct_names([first, second], [joined, total]) == {}


class ThreadPoolEvaluate:
    """Runs the agent over two messages in a thread pool, as OpenTrace's trainer does.

    The first message's LLM call is still running while the second example finishes and
    reads its reply: in trace-opt 0.1.3.8, whose record of the nodes an operator reads is
    one stack for all threads, that read landed in the first call's record, which then
    failed with TraceMissingInputsError.
    """

    FIRST, SECOND = "Hola, soy Juan.", "¿Dónde está mi pedido?"

    def __init__(self) -> None:
        self.first_asking = threading.Event()
        self.second_read = threading.Event()

    def ask(self, instruction: str, message: str) -> str:
        if message == self.FIRST:
            self.first_asking.set()
            assert self.second_read.wait(timeout=30)
        return f"{instruction} {message}"

    def example(self, agent: AskingTranslator, message: str) -> trace.Node:
        if message == self.SECOND:
            assert self.first_asking.wait(timeout=30)
        out = agent.reply(trace.node(message))
        assert out.data.endswith(message)
        if message == self.SECOND:
            self.second_read.set()
        return out

    def __call__(self, agent: AskingTranslator) -> to.Evaluation:
        self.first_asking.clear()
        self.second_read.clear()
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            outs = list(pool.map(self.example, [agent, agent], [self.FIRST, self.SECOND]))
        out = combine(*outs)
        if "Spanish" in agent.instruction.data:
            return to.Evaluation(score=1.0, feedback="The reply is perfect.", output=out)
        return to.Evaluation(
            score=0.0, feedback='The instruction should mention "Spanish".', output=out
        )


def test_evaluate_can_run_the_agent_in_a_thread_pool(sqlite_url: str) -> None:
    evaluate = ThreadPoolEvaluate()
    study = to.create_study(
        study_name="threads",
        storage=sqlite_url,
        agent=lambda: AskingTranslator(evaluate.ask),
        evaluate=evaluate,
        llm=MODEL,
        strategies=["optoprime"],
        seed=0,
    )
    study.optimize(n_trials=2)
    assert [trial.state.name for trial in study.trials] == ["COMPLETE", "COMPLETE"]
    assert study.record(1).snapshot["instruction"] == (
        "Decide the language. Always mention Spanish."
    )
    names = [name for name, _ in _shown(study.record(1).llm_calls[0]["user"])]
    assert len(names) == len(set(names))


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
