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


def _numpy_agent() -> dict[str, object]:
    import numpy as np

    return {
        "count": trace.node(np.int64(3), trainable=True),
        "rate": trace.node(np.float32(0.5), trainable=True),
        "flag": trace.node(np.bool_(True), trainable=True),
        "sizes": trace.node([np.int64(1), np.int32(2)], trainable=True),
    }


def test_numpy_scalars_are_taken_as_the_python_values_they_hold() -> None:
    import numpy as np

    agent = _numpy_agent()
    values = to.snapshot(agent)
    assert values == {"count": 3, "flag": True, "rate": 0.5, "sizes": [1, 2]}
    assert [type(values[path]) for path in ("count", "flag", "rate")] == [int, bool, float]
    assert type(values["sizes"][0]) is int
    to.restore(agent, {**values, "count": np.int64(7), "sizes": [np.int16(4)]})
    assert agent["count"]._data == 7 and type(agent["count"]._data) is int
    assert agent["sizes"]._data == [4] and type(agent["sizes"]._data[0]) is int
    # The kind check sees the numbers they hold: an int64 parameter is an int parameter.
    refused = "'count' holds an int and the snapshot gives a str"
    with pytest.raises(to.SnapshotError, match=refused):
        to.restore(_numpy_agent(), {**values, "count": "3"})


class _Larger:
    """Asks for a larger ``count`` until it is at least 5."""

    def __call__(self, agent: dict[str, trace.Node]) -> to.Evaluation:
        out = agent["count"] + 0
        ok = out.data >= 5
        return to.Evaluation(
            score=float(ok),
            feedback="Correct." if ok else "The count is too small: make it larger by 1.",
            output=out,
        )


def test_a_study_of_numpy_valued_parameters_stores_plain_values(
    storage_url: str, study_name: str
) -> None:
    study = to.create_study(
        study_name=study_name,
        storage=storage_url,
        agent=_numpy_agent,
        evaluate=_Larger(),
        llm="simulated/feedback-follower",
        strategies="optoprime",
        seed=0,
    )
    study.optimize(n_trials=3)
    records = [study.record(trial.number) for trial in study.trials]
    assert [record.state for record in records] == ["COMPLETE"] * 3
    assert records[0].snapshot == {"count": 3, "flag": True, "rate": 0.5, "sizes": [1, 2]}
    assert [record.snapshot["count"] for record in records] == [3, 4, 5]
    assert study.best_value == 1.0 and study.best_snapshot["count"] == 5
    assert to.snapshot(study.load_best()) == study.best_snapshot


# Trace's quick start: a trainable function defined at module level.
@trace.bundle(trainable=True)
def strange_sort_list(lst):
    """Sort the list as the test asks."""
    lst = sorted(lst)
    return lst


STRANGE_SORT_CODE = strange_sort_list.parameter._data


def _sort_in_reverse(agent: dict[str, object]) -> to.Evaluation:
    out = agent["sort"]([3, 1, 2])
    ok = out.data == [3, 2, 1]
    return to.Evaluation(
        score=float(ok),
        feedback="Correct." if ok else 'Replace "sorted(lst)" with "sorted(lst, reverse=True)".',
        output=out,
    )


def test_optimize_and_load_best_leave_a_module_level_function_as_it_was(
    storage_url: str, study_name: str
) -> None:
    assert strange_sort_list.parameter._data == STRANGE_SORT_CODE
    study = to.create_study(
        study_name=study_name,
        storage=storage_url,
        agent=lambda: {"sort": strange_sort_list},
        evaluate=_sort_in_reverse,
        llm="simulated/feedback-follower",
        strategies="optoprime",
        seed=0,
    )
    study.optimize(n_trials=2)
    # The second trial ran the candidate (in the module's function, as Trace runs it) ...
    assert [trial.value for trial in study.trials] == [0.0, 1.0]
    assert "sorted(lst, reverse=True)" in study.best_snapshot["sort"]
    # ... and the module's function has its own code back.
    assert strange_sort_list.parameter._data == STRANGE_SORT_CODE
    assert strange_sort_list([3, 1, 2]).data == [1, 2, 3]

    best = study.load_best()
    assert best["sort"]([3, 1, 2]).data == [3, 2, 1]  # the agent runs the best code
    assert to.snapshot(best) == study.best_snapshot
    assert strange_sort_list.parameter._data == STRANGE_SORT_CODE
    assert strange_sort_list([3, 1, 2]).data == [1, 2, 3]

    # A study opened again in this process continues from its best, and puts the code back too.
    again = to.load_study(
        study_name=study_name,
        storage=storage_url,
        agent=lambda: {"sort": strange_sort_list},
        evaluate=_sort_in_reverse,
        llm="simulated/feedback-follower",
    )
    again.optimize(n_trials=1)
    assert study.optuna.trials[-1].value == 1.0
    assert strange_sort_list.parameter._data == STRANGE_SORT_CODE


def test_module_level_functions_are_found_and_copied_for_an_agent() -> None:
    @trace.model
    class Holder:
        def __init__(self) -> None:
            self.sorter = strange_sort_list
            self.prompt = trace.node("Sort.", trainable=True)

    agent = {"sort": strange_sort_list, "holder": Holder()}
    assert sorted(snapshots.module_functions(agent)) == ["holder.sorter", "sort"]
    detached = snapshots.detach_module_functions(agent)
    assert agent["sort"] is strange_sort_list  # the caller's dict is left as it was
    assert detached["sort"] is not strange_sort_list
    assert detached["holder"].sorter is not strange_sort_list
    assert snapshots.module_functions(detached) == {}
    values = to.snapshot(detached)
    assert values == to.snapshot(agent)
    reverse = values["sort"].replace("sorted(lst)", "sorted(lst, reverse=True)")
    to.restore(detached, {**values, "sort": reverse, "holder.sorter": reverse})
    assert detached["sort"]([1, 3, 2]).data == [3, 2, 1]
    assert detached["holder"].sorter([1, 3, 2]).data == [3, 2, 1]
    assert strange_sort_list([1, 3, 2]).data == [1, 2, 3]
    assert strange_sort_list.parameter._data == STRANGE_SORT_CODE
