from __future__ import annotations

from opto import trace
import pytest
from support_agents import CountingEvaluate
from support_agents import make_greeter

import trace_optuna as to
from trace_optuna import snapshots


@trace.model
class Tool:
    def __init__(self, prompt: str) -> None:
        self.prompt = trace.node(prompt, trainable=True)


@trace.model
class Agent:
    def __init__(self) -> None:
        self.instructions = trace.node("Be kind.", trainable=True)
        self.frozen = trace.node("not trained", trainable=False)
        self.tools = [Tool("search"), Tool("lookup")]
        self.limits = {"words": trace.node(10, trainable=True)}

    @trace.bundle(trainable=True)
    def reply(self, text):
        """Reply to the text."""
        return text + "!"


def test_paths_are_attribute_paths_not_node_names() -> None:
    agent = Agent()
    assert list(snapshots.parameters(agent)) == [
        "instructions",
        "limits.words",
        "reply",
        "tools.0.prompt",
        "tools.1.prompt",
    ]
    # The same paths in a second instance, although Trace names its nodes differently.
    other = Agent()
    assert list(snapshots.parameters(other)) == list(snapshots.parameters(agent))
    assert other.instructions.name != agent.instructions.name


def test_snapshot_and_restore_round_trip_through_another_instance() -> None:
    agent = Agent()
    agent.tools[1].prompt._set("find the order")
    values = to.snapshot(agent)
    assert values["tools.1.prompt"] == "find the order"
    assert values["reply"].startswith("def reply(self, text):")

    fresh = Agent()
    to.restore(fresh, values)
    assert to.snapshot(fresh) == values
    assert fresh.tools[1].prompt._data == "find the order"


def test_restored_code_changes_behaviour() -> None:
    agent = Agent()
    values = to.snapshot(agent)
    values["reply"] = values["reply"].replace('text + "!"', 'text + "?"')
    to.restore(agent, values)
    assert agent.reply("hi").data == "hi?"


def test_dict_agent_with_bundled_function() -> None:
    @trace.bundle(trainable=True)
    def double(x):
        return x * 2

    agent = {"prompt": trace.node("Hi", trainable=True), "double": double}
    assert sorted(to.snapshot(agent)) == ["double", "prompt"]


@pytest.mark.parametrize(
    "value, problem",
    [
        ({1, 2}, "set"),
        (b"x", "bytes"),
        ((1, 2), "tuple"),
        ({1: "a"}, "int key"),
        (float("nan"), "nan"),
    ],
)
def test_non_json_value_is_refused_naming_the_path(value: object, problem: str) -> None:
    agent = Agent()
    agent.limits["words"]._set(value)
    with pytest.raises(to.SnapshotError, match=r"'limits\.words'"):
        to.snapshot(agent)


def test_restore_refuses_a_snapshot_of_another_agent_without_changing_anything() -> None:
    agent = Agent()
    before = to.snapshot(agent)
    wrong = dict(before)
    wrong.pop("instructions")
    wrong["unknown"] = 1
    with pytest.raises(to.SnapshotError, match="missing values for \\['instructions'\\]"):
        to.restore(agent, wrong)
    assert to.snapshot(agent) == before


def test_agent_without_trainable_parameter_is_refused() -> None:
    with pytest.raises(to.SnapshotError, match="no trainable parameter"):
        snapshots.parameters({"x": trace.node(1)})


def test_hash_is_content_based_and_diff_is_readable() -> None:
    assert snapshots.value_hash({"a": 1, "b": [2]}) == snapshots.value_hash({"b": [2], "a": 1})
    assert snapshots.value_hash("1") != snapshots.value_hash(1)
    old = {"prompt": "line one\nline two", "n": 1, "same": True}
    new = {"prompt": "line one\nline 2", "n": 1, "same": True}
    assert snapshots.changed_paths(old, new) == ["prompt"]
    text = snapshots.diff(old, new)
    assert "--- prompt (parent)" in text
    assert "-line two" in text and "+line 2" in text
    assert "same" not in text


@trace.model
class Kinds:
    """One parameter of each JSON kind, and one that holds None."""

    def __init__(self) -> None:
        self.instructions = trace.node("Be kind.", trainable=True)
        self.words = trace.node(10, trainable=True)
        self.temperature = trace.node(0.5, trainable=True)
        self.verbose = trace.node(False, trainable=True)
        self.steps = trace.node(["plan", "act"], trainable=True)
        self.style = trace.node({"tone": "warm"}, trainable=True)
        self.anything = trace.node(None, trainable=True)

    @trace.bundle(trainable=True)
    def reply(self, text):
        """Reply to the text."""
        return text + "!"


@pytest.mark.parametrize(
    "path, value, holds, given",
    [
        ("instructions", 5, "a str", "an int (5)"),
        ("instructions", ["Be kind."], "a str", "a list"),
        ("words", "10", "an int", "a str ('10')"),
        ("words", 10.5, "an int", "a float (10.5)"),
        ("words", True, "an int", "a bool (True)"),
        ("temperature", "0.7", "a float", "a str"),
        ("temperature", False, "a float", "a bool"),
        ("verbose", 1, "a bool", "an int (1)"),
        ("verbose", "false", "a bool", "a str"),
        ("steps", {"plan": 1}, "a list", "a dict"),
        ("style", ["warm"], "a dict", "a list"),
        ("reply", 5, "a str (the method's source code)", "an int (5)"),
    ],
)
def test_restore_refuses_a_value_of_another_type_naming_the_path_and_both_types(
    path: str, value: object, holds: str, given: str
) -> None:
    agent = Kinds()
    before = to.snapshot(agent)
    with pytest.raises(to.SnapshotError) as caught:
        to.restore(agent, {**before, path: value})
    assert f"{path!r} holds {holds} and the snapshot gives {given}" in str(caught.value)
    assert to.snapshot(agent) == before  # nothing was restored halfway


def test_restore_names_every_misfit_and_refuses_what_is_not_a_snapshot() -> None:
    agent = Kinds()
    before = to.snapshot(agent)
    with pytest.raises(to.SnapshotError, match=r"'instructions' holds .*; 'words' holds"):
        to.restore(agent, {**before, "instructions": 5, "words": "ten"})
    with pytest.raises(to.SnapshotError, match="must be a mapping .* got list"):
        to.restore(agent, [("instructions", "Hi")])  # type: ignore[arg-type]
    with pytest.raises(to.SnapshotError, match=r"no parameter at \['instructionz'\]"):
        to.restore(agent, {**before, "instructionz": "Hi"})
    assert to.snapshot(agent) == before


def test_restore_accepts_what_fits() -> None:
    agent = Kinds()
    values = {
        **to.snapshot(agent),
        "instructions": "Be brief.",
        "words": 12,
        "temperature": 1,  # an int for a float parameter: it stays a float
        "verbose": True,
        "steps": [],
        "style": {},
        "anything": [1, "two"],  # a parameter holding None takes any value
    }
    to.restore(agent, values)
    restored = to.snapshot(agent)
    assert restored == values
    assert isinstance(restored["temperature"], float)
    to.restore(agent, {**values, "instructions": None, "anything": "three"})  # None fits any
    assert agent.instructions._data is None and agent.anything._data == "three"


def test_every_record_a_study_wrote_restores_into_a_fresh_agent(
    storage_url: str, study_name: str
) -> None:
    """Values the library stored (str, int and code) keep their types through the storage."""
    study = to.create_study(
        study_name=study_name,
        storage=storage_url,
        agent=make_greeter,
        evaluate=CountingEvaluate(),
        llm="simulated/feedback-follower",
        strategies=["optoprime", "genetic"],
        seed=0,
    )
    study.optimize(n_trials=5)
    for trial in study.trials:
        snapshot = study.record(trial.number).snapshot
        agent = make_greeter()
        to.restore(agent, snapshot)
        assert to.snapshot(agent) == snapshot
    agent = study.load_best()
    assert to.snapshot(agent) == study.best_snapshot
    tampered = {**study.best_snapshot, "excitement": "2"}
    with pytest.raises(to.SnapshotError, match="'excitement' holds an int and the snapshot"):
        to.restore(make_greeter(), tampered)
