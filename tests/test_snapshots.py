from __future__ import annotations

from opto import trace
import pytest

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
