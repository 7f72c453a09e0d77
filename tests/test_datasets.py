"""Datasets (issue 14): ids and splits, the step on a minibatch, acceptance then validation,
pruning, the test set, Pareto parents; on real SQLite files."""

from __future__ import annotations

import collections
import math
import re
import sys
from typing import Any

from opto import trace
import optuna
import pytest

import trace_optuna as to
from trace_optuna import records
from trace_optuna.strategies import Proposal

from support_budget import Replier  # isort: skip

LLM = "simulated/feedback-follower"
WORDS = ("order number", "tracking link")


def examples(count: int = 20) -> list[dict[str, str]]:
    return [{"topic": f"t{i}", "need": WORDS[i % 2]} for i in range(count)]


class CountingRun:
    """``run(agent, example)``: 1 when the reply mentions the example's phrase; counts runs."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, agent: Replier, example: dict[str, str]) -> to.Evaluation:
        self.calls.append(example["topic"])
        out = agent.reply(example["topic"])
        ok = example["need"] in out.data
        feedback = "Good." if ok else f'The reply should mention "{example["need"]}".'
        return to.Evaluation(score=float(ok), feedback=feedback, output=out)


def splits(count: int = 20) -> tuple[to.Dataset, to.Dataset, to.Dataset]:
    data = to.Dataset(examples(count), id=lambda example: example["topic"])
    return data.split(0.5, 0.3, 0.2, seed=0)  # type: ignore[return-value]


def dataset_study(url: str, run: Any, **options: Any) -> to.TraceStudy:
    train, val, _ = splits()
    settings: dict[str, Any] = {
        "trainset": train,
        "valset": val,
        "minibatch_size": 4,
        "seed": 0,
        "figure_interval": None,
    }
    settings.update(options)
    return to.create_study(storage=url, agent=Replier, evaluate=run, llm=LLM, **settings)


class Scripted(to.Strategy):
    """Proposes the given greetings in turn (from the baseline, with ``from_baseline``, else
    from the step's parent, ``population.best()``), then the parent unchanged; records which
    parent it started from."""

    name = "scripted"

    def __init__(self, greetings: list[str], from_baseline: bool = False) -> None:
        self.greetings = list(greetings)
        self.from_baseline = from_baseline

    def propose(self, context: to.StepContext) -> Proposal:
        index = context.trial.number - 1
        scripted = index < len(self.greetings)
        parent = context.population.best()
        assert parent is not None
        number = 0 if scripted and self.from_baseline else parent.number
        evaluated = context.evaluate_parent(number)
        context.attrs["trace:scripted_parent"] = number
        snapshot = dict(evaluated.snapshot)
        if scripted:
            snapshot["greeting"] = self.greetings[index]
        return Proposal(snapshot, [number], evaluated.score, evaluated.feedback)


# -- ids, splits, options ---------------------------------------------------------------


def test_dataset_ids_are_stable_and_errors_name_the_example() -> None:
    hashed = to.Dataset([{"q": 1}, {"q": 2}])
    assert hashed.ids == to.Dataset([{"q": 1}, {"q": 2}]).ids
    assert hashed.ids[0] != hashed.ids[1]
    assert to.Dataset([{"id": 7}], id=lambda example: example["id"]).ids == ["7"]
    with pytest.raises(to.ConfigurationError, match="Examples #0 and #2 have the same id 'a'"):
        to.Dataset(["a", "b", "a"], id=lambda example: example)
    with pytest.raises(to.ConfigurationError, match="same id"):
        to.Dataset([{"q": 1}, {"q": 1}])
    with pytest.raises(to.ConfigurationError, match="Example #1 is not JSON-able"):
        to.Dataset([{"q": 1}, {"q": object()}])
    with pytest.raises(to.ConfigurationError, match="empty"):
        to.Dataset([])
    with pytest.raises(to.ConfigurationError, match="example #0 got float"):
        to.Dataset([1.5], id=lambda example: example)


def test_split_is_seeded_and_checks_its_fractions() -> None:
    data = to.Dataset(list(range(10)), id=str)
    first = [part.ids for part in data.split(0.6, 0.2, 0.2, seed=3)]
    assert first == [part.ids for part in data.split(0.6, 0.2, 0.2, seed=3)]
    assert first != [part.ids for part in data.split(0.6, 0.2, 0.2, seed=4)]
    assert [len(ids) for ids in first] == [6, 2, 2]
    assert sorted(sum(first, [])) == sorted(data.ids)
    with pytest.raises(to.ConfigurationError, match="sum to 1"):
        data.split(0.5, 0.2)
    with pytest.raises(to.ConfigurationError, match=r"fraction #1 must be a number in \(0, 1\)"):
        data.split(0.5, 0.0, 0.5)
    with pytest.raises(to.ConfigurationError, match="fraction #1 .* is empty"):
        to.Dataset([1, 2, 3], id=str).split(0.9, 0.1)


def test_options_are_checked_in_config() -> None:
    train, val, test = splits()
    run = CountingRun()
    with pytest.raises(to.ConfigurationError, match="trainset and valset share example"):
        to.Config(
            evaluate=run,
            trainset=train,
            valset=to.Dataset(train.examples[:2], id=lambda e: e["topic"]),
        )
    with pytest.raises(to.ConfigurationError, match="minibatch_size must be from 1 to .* 10"):
        to.Config(evaluate=run, trainset=train, minibatch_size=11)
    with pytest.raises(to.ConfigurationError, match="minibatch_size must be >= 1"):
        to.Config(evaluate=run, trainset=train, minibatch_size=0)
    with pytest.raises(to.ConfigurationError, match="valset need.* trainset="):
        to.Config(evaluate=run, valset=val)
    with pytest.raises(to.ConfigurationError, match="parent_selection need.* trainset="):
        to.Config(evaluate=run, parent_selection="pareto")
    with pytest.raises(to.ConfigurationError, match="parent_selection must be one of"):
        to.Config(evaluate=run, trainset=train, parent_selection="front")
    with pytest.raises(to.ConfigurationError, match="single-objective"):
        to.Config(evaluate=run, trainset=train, directions=["maximize", "minimize"])
    with pytest.raises(to.ConfigurationError, match="run\\(agent, example\\)"):
        to.Config(evaluate=lambda agent: None, trainset=train)
    with pytest.raises(to.ConfigurationError, match="testset is empty"):
        to.Config(evaluate=run, trainset=train, testset=[])
    config = to.Config(evaluate=run, trainset=train.examples, valset=val, testset=test)
    assert isinstance(config.trainset, to.Dataset) and config.minibatch_size is None


def test_the_splits_are_recorded_and_a_reopening_with_other_splits_is_refused(
    sqlite_url: str,
) -> None:
    train, val, test = splits()
    run = CountingRun()
    options: dict[str, Any] = {
        "storage": sqlite_url, "study_name": "orders", "agent": Replier, "evaluate": run,
        "llm": LLM, "figure_interval": None,
    }  # fmt: skip
    study = to.create_study(trainset=train, valset=val, testset=test, **options)
    recorded = study.optuna.user_attrs[records.STUDY_SPLITS]
    assert recorded["trainset"]["examples"] == 10 and recorded["valset"]["examples"] == 6
    assert recorded["testset"]["examples"] == 4
    assert len({recorded[name]["ids_sha256"] for name in recorded}) == 3
    # The same splits, another order of the same examples: reopened (a worker does this).
    shuffled = to.Dataset(list(reversed(val.examples)), id=lambda example: example["topic"])
    to.load_study(trainset=train, valset=shuffled, testset=test, **options)
    to.create_study(load_if_exists=True, trainset=train, valset=val, testset=test, **options)

    swapped = to.Dataset(val.examples[:5] + test.examples[:1], id=lambda e: e["topic"])
    others = {"valset": swapped, "testset": test.examples[1:] + val.examples[5:]}
    refusals = {
        "with a valset of 6 examples .*; this objective has a valset of as many examples, "
        "other ids": others,
        "with a testset of 4 examples .*; this objective has a testset of 3 examples": {
            "valset": val,
            "testset": test.examples[1:],
        },
        "with a testset of 4 examples; this objective has no testset": {"valset": val},
        "with a valset of 6 examples; this objective has no valset \\(validation on the "
        "training set\\)": {"testset": test},
    }
    for message, given in refusals.items():
        with pytest.raises(to.ConfigurationError, match=f"Study 'orders' was created {message}"):
            to.load_study(trainset=train, **given, **options)
    with pytest.raises(to.ConfigurationError, match="with a trainset of 10 .* has none"):
        to.load_study(**{**options, "evaluate": lambda agent: to.Evaluation(score=1.0)})
    with pytest.raises(to.ConfigurationError, match="splits are fixed"):
        to.create_study(load_if_exists=True, trainset=val, valset=train, testset=test, **options)

    plain = {**options, "study_name": "plain", "evaluate": lambda agent: to.Evaluation(1.0)}
    assert to.create_study(**plain).optuna.user_attrs[records.STUDY_SPLITS] is None
    with pytest.raises(to.ConfigurationError, match="created without trainset=.*a trainset of 10"):
        to.load_study(trainset=train, **{**plain, "evaluate": run})


def test_a_study_bound_before_splits_were_recorded_takes_them_at_its_next_use(
    sqlite_url: str,
) -> None:
    train, val, _ = splits()
    options: dict[str, Any] = {
        "storage": sqlite_url, "agent": Replier, "evaluate": CountingRun(), "llm": LLM,
        "figure_interval": None, "trainset": train,
    }  # fmt: skip
    bound = to.create_study(study_name="now", valset=val, **options).optuna.user_attrs
    # A study bound by a version that did not record its splits: every attribute but those.
    older = optuna.create_study(study_name="older", storage=sqlite_url, direction="maximize")
    for key, value in bound.items():
        if key != records.STUDY_SPLITS:
            older.set_user_attr(key, value)
    to.load_study(study_name="older", valset=val, **options)
    assert older.user_attrs[records.STUDY_SPLITS] == bound[records.STUDY_SPLITS]
    with pytest.raises(to.ConfigurationError, match="with a valset of 6 examples; .* no valset"):
        to.load_study(study_name="older", **options)


def test_a_non_finite_score_stops_optimize_naming_the_example(sqlite_url: str) -> None:
    def run(agent: Replier, example: dict[str, str]) -> to.Evaluation:
        out = agent.reply(example["topic"])
        score = math.nan if example["topic"] == "t3" else 1.0
        return to.Evaluation(score=score, feedback="ok", output=out)

    data = to.Dataset(examples(6), id=lambda example: example["topic"])
    study = to.create_study(
        storage=sqlite_url, agent=Replier, evaluate=run, llm=LLM, trainset=data,
        minibatch_size=6, figure_interval=None,
    )  # fmt: skip
    with pytest.raises(to.ConfigurationError, match="example 't3'.*NaN"):
        study.optimize(n_trials=1)


# -- the step on a minibatch -------------------------------------------------------------


def test_minibatch_is_seeded_recorded_and_its_feedback_is_one_backward_pass(
    sqlite_url: str, tmp_path: Any
) -> None:
    run = CountingRun()
    study = dataset_study(sqlite_url, run)
    study.optimize(n_trials=3)
    train, val, _ = splits()
    trials = study.trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    for trial in trials:
        minibatch = trial.user_attrs[records.MINIBATCH]
        assert len(minibatch) == 4 and set(minibatch) <= set(train.ids)
    step = study.record(1)
    # One OptoPrime call saw every minibatch example's feedback, batched the Trace way.
    assert step.llm["calls"] == 1
    lines = step.parent_feedback.splitlines()
    assert len(lines) == 4 and all(line.startswith(f"ID [{i}]: ") for i, line in enumerate(lines))
    assert "ID [3]:" in step.llm_calls[0]["user"]
    attrs = trials[1].user_attrs
    assert attrs[records.ACCEPTED] is True and attrs[records.VALIDATED] is True
    assert step.dataset["minibatch"] == attrs[records.MINIBATCH]
    assert step.dataset["validation"]["total"] == len(val)
    assert attrs[records.MINIBATCH_SCORES]["parent"] == [0.0] * 4
    assert trials[1].value == attrs[records.VALIDATION]["mean"] == 1.0
    # Its note shows each minibatch example before (the parent) and after (the candidate).
    feedback = attrs[records.MINIBATCH_FEEDBACK]
    assert len(feedback["parent"]) == 4 and feedback["parent"][0].startswith("The reply should")
    assert feedback["candidate"] == ["Good."] * 4
    from optuna_dashboard import get_note  # the dashboard extra (the tests' environment has it)

    note = get_note(optuna.Trial(study.optuna, trials[1]._trial_id))
    first = attrs[records.MINIBATCH][0]
    assert f"| `{first}` | 0 | 1 | +1 | {feedback['parent'][0]} | Good. |" in note
    assert "- **Validation mean:** 1 over 6 of 6 examples" in note
    # The same seed draws the same minibatches in another study.
    again = dataset_study(f"sqlite:///{tmp_path / 'again.db'}", CountingRun())
    again.optimize(n_trials=3)
    assert [t.user_attrs[records.MINIBATCH] for t in again.trials] == [
        t.user_attrs[records.MINIBATCH] for t in trials
    ]


def test_a_worse_candidate_is_not_validated_and_never_a_parent(sqlite_url: str) -> None:
    run = CountingRun()
    # The minibatch is the whole training set (6 "order number", 4 "tracking link" examples).
    # Trial 1 fixes the first phrase (minibatch 0.6, validation 2 of 6); trial 2 swaps it for
    # the second: worse on the minibatch (0.4), though 0.4 is above trial 1's validation mean.
    strategy = Scripted(["Hello. order number", "Hello. tracking link"])
    study = dataset_study(sqlite_url, run, strategies=strategy, minibatch_size=10)
    study.optimize(n_trials=4)
    first, worse = study.trials[1], study.trials[2]
    assert first.user_attrs[records.VALIDATED] is True and first.value == pytest.approx(1 / 3)
    assert worse.user_attrs[records.PARENT_MINIBATCH_SCORE] == 0.6
    assert worse.user_attrs[records.ACCEPTED] is False
    assert worse.user_attrs[records.VALIDATED] is False
    assert records.VALIDATION not in worse.user_attrs
    assert worse.value == worse.user_attrs[records.MINIBATCH_SCORE] == 0.4
    store = study.objective.dataset.store(study.optuna)  # type: ignore[union-attr]
    worse_hash = worse.user_attrs[records.SNAPSHOT_HASH]
    assert store.rows(split="val", candidates=[worse_hash]) == []
    assert len(store.rows(split="train", candidates=[worse_hash])) == 10
    # Trial 3 starts from trial 1, never from the unvalidated one, whatever its value.
    assert study.trials[3].user_attrs["trace:scripted_parent"] == 1
    assert study.best_trial.number == 1


def test_examples_are_the_rows_with_the_trials_that_scored_each_candidate(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As above: trial 1 is validated, trial 2 rejected on the minibatch, and trial 3 proposes
    # trial 1's candidate again (its rows are read, not run).
    _, _, test = splits()
    strategy = Scripted(["Hello. order number", "Hello. tracking link"])
    study = dataset_study(
        sqlite_url, CountingRun(), strategies=strategy, minibatch_size=10, testset=test
    )
    study.optimize(n_trials=4)
    hashes = [trial.user_attrs[records.SNAPSHOT_HASH] for trial in study.trials]
    assert hashes[3] == hashes[1] and len(set(hashes)) == 3
    rows = study.examples()
    assert all(isinstance(row, to.ExampleRow) for row in rows)
    assert {row.candidate: row.trials for row in rows} == {
        hashes[0]: (0,), hashes[1]: (1, 3), hashes[2]: (2,)
    }  # fmt: skip
    assert [row.trials[0] for row in rows] == sorted(row.trials[0] for row in rows)
    splits_of = collections.Counter((row.trials, row.split) for row in rows)
    # The baseline and trial 1's candidate: the minibatch (all 10 training examples) and the
    # 6 validation examples; the rejected one only its minibatch; the best one the test set.
    assert splits_of == {
        ((0,), "train"): 10, ((0,), "val"): 6, ((1, 3), "train"): 10, ((1, 3), "val"): 6,
        ((1, 3), "test"): 4, ((2,), "train"): 10,
    }  # fmt: skip
    third = study.examples(trial=3)
    assert third == study.examples(trial=1) and {row.candidate for row in third} == {hashes[1]}
    assert {row.trial_number for row in third if row.split != "test"} == {1}  # who ran them
    validation = study.examples(split="val")
    assert len(validation) == 12 and {row.split for row in validation} == {"val"}
    assert study.examples(trial=2, split="val") == []

    frame = study.examples(as_dataframe=True)
    assert list(frame.columns) == list(to.example_rows.COLUMNS) and len(frame) == len(rows)
    scores = frame[frame.split == "val"].pivot_table("score", "candidate", "example_id")
    assert scores.shape == (2, 6) and scores.loc[hashes[1]].mean() == pytest.approx(1 / 3)

    with pytest.raises(ValueError, match=r"split must be one of \['train', 'val', 'test'\]"):
        study.examples(split="validation")
    with pytest.raises(ValueError, match="has no Trial#9 "):
        study.examples(trial=9)
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if pandas were not installed
    with pytest.raises(ImportError, match="as_dataframe needs pandas"):
        study.examples(as_dataframe=True)
    assert study.examples() == rows


def test_cache_hits_still_give_feedback_and_rows_are_not_run_again(sqlite_url: str) -> None:
    run = CountingRun()
    # Trial 2 proposes its parent unchanged: every minibatch and validation pair is a row.
    strategy = Scripted(["Hello. order number"])
    study = dataset_study(sqlite_url, run, strategies=strategy, minibatch_size=10)
    study.optimize(n_trials=2)
    before = len(run.calls)
    study.optimize(n_trials=1)
    third = study.trials[2]
    # Only the parent's live re-run (its graph) ran; the candidate's pairs were all rows.
    assert len(run.calls) - before == 10
    assert third.user_attrs[records.VALIDATION]["ran"] == 0
    assert third.user_attrs[records.DUPLICATE_OF] == 1
    feedback = study.record(2).feedback
    assert feedback.count("ID [") == 10 and 'should mention "tracking link"' in feedback


def test_validation_is_pruned_in_chunks_and_keeps_its_rows(sqlite_url: str) -> None:
    class Always(optuna.pruners.BasePruner):
        def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
            return True

    study = dataset_study(sqlite_url, CountingRun(), pruner=Always(), minibatch_size=2)
    study.optimize(n_trials=2)
    baseline, step = study.trials
    assert baseline.state.name == "COMPLETE"  # a root candidate is never pruned
    assert baseline.user_attrs[records.VALIDATION]["scored"] == 6
    assert step.state.name == "PRUNED"
    assert step.user_attrs[records.VALIDATION] == {
        "mean": 1.0, "scored": 2, "total": 6, "ran": 2, "pruned": True,
    }  # fmt: skip
    assert step.intermediate_values == {2: 1.0}
    store = study.objective.dataset.store(study.optuna)  # type: ignore[union-attr]
    candidate = step.user_attrs[records.SNAPSHOT_HASH]
    assert len(store.rows(split="val", candidates=[candidate])) == 2


def test_test_set_is_scored_once_at_the_end(sqlite_url: str) -> None:
    run = CountingRun()
    train, val, test = splits()
    study = dataset_study(sqlite_url, run, testset=test)
    study.optimize(n_trials=3)
    test_ids = set(test.ids)
    first_test_call = next(i for i, topic in enumerate(run.calls) if topic in test_ids)
    assert set(run.calls[first_test_call:]) == test_ids  # nothing before the end read it
    assert len(run.calls) - first_test_call == len(test)
    result = study.test_result
    assert result is not None
    assert result["trial"] == study.best_trial.number and result["examples"] == len(test)
    assert result["ran"] == len(test) and result["mean"] == 1.0
    calls = len(run.calls)
    assert study.evaluate_test()["ran"] == 0  # its rows are read, not run again
    assert len(run.calls) == calls
    store = study.objective.dataset.store(study.optuna)  # type: ignore[union-attr]
    assert {row.example_id for row in store.rows(split="test")} == test_ids
    assert not test_ids & {row.example_id for row in store.rows(split="val")}


def test_workers_finishing_together_score_the_test_set_once(sqlite_url: str) -> None:
    run = CountingRun()
    _, _, test = splits()
    strategy = Scripted(["Hello. order number"])
    first = dataset_study(sqlite_url, run, testset=test, strategies=strategy)
    first.optimize(n_trials=2)
    assert first.test_result is not None
    calls = len(run.calls)
    # A second worker whose trial leaves the best where it was: the stored score is its.
    second = dataset_study(
        sqlite_url,
        run,
        testset=test,
        strategies=Scripted([]),
        study_name=first.study_name,
        load_if_exists=True,
    )
    second.optimize(n_trials=1)
    assert not set(test.ids) & set(run.calls[calls:])
    # A new best whose test score another worker has claimed (it is still running it) is
    # left to that worker.
    third = dataset_study(
        sqlite_url,
        run,
        testset=test,
        strategies=Scripted(["", "", "Hello. order number tracking link"]),
        study_name=first.study_name,
        load_if_exists=True,
    )
    third.optimize(n_trials=1, callbacks=[_claim_test])
    assert first.best_trial.number == 3
    assert third.test_result["trial"] == 1  # type: ignore[index]
    assert not set(test.ids) & set(run.calls[calls:])


def _claim_test(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Another worker's claim of the test score of the candidate ``trial`` just stored."""
    from trace_optuna.coordination import coordinator_for

    candidate = trial.user_attrs[records.SNAPSHOT_HASH]
    assert coordinator_for(study._storage).claim_once(study, f"test:{candidate[:40]}")


def test_pareto_parents_come_from_the_instance_front(sqlite_url: str) -> None:
    # From the baseline, trial 1 fixes the "order number" examples (2 of the 6 validation
    # examples), trial 2 the "tracking link" ones (4 of 6): each leads where the other fails,
    # and the baseline, dominated, leads nowhere. Later trials propose their parent unchanged.
    greetings = ["Hello. order number", "Hello. tracking link"]
    chosen: dict[str, collections.Counter[int]] = {}
    for selection in ("pareto", "best"):
        url = sqlite_url.replace("study.db", f"{selection}.db")
        study = dataset_study(
            url, CountingRun(), strategies=Scripted(greetings, from_baseline=True),
            parent_selection=selection, minibatch_size=10,
        )  # fmt: skip
        study.optimize(n_trials=23)
        assert [t.value for t in study.trials[:3]] == [
            0.0,
            pytest.approx(1 / 3),
            pytest.approx(2 / 3),
        ]
        chosen[selection] = collections.Counter(
            t.user_attrs["trace:scripted_parent"] for t in study.trials[3:]
        )
    pareto = chosen["pareto"]
    assert set(pareto) <= {1, 2, *range(3, 23)} and 0 not in pareto
    # Later trials are duplicates of 1 or 2 (never candidates themselves): parents are 1 and 2,
    # drawn about 2:4 by the examples they lead.
    assert set(pareto) == {1, 2} and pareto[2] > pareto[1]
    assert set(chosen["best"]) == {2}  # one best by validation mean


def test_the_evaluate_agent_form_is_unchanged(sqlite_url: str) -> None:
    calls: list[Any] = []

    def evaluate(agent: Replier) -> to.Evaluation:
        calls.append(agent)
        out = agent.reply("t0")
        ok = "order number" in out.data
        feedback = "Good." if ok else 'The reply should mention "order number".'
        return to.Evaluation(score=float(ok), feedback=feedback, output=out)

    study = to.create_study(
        storage=sqlite_url, agent=Replier, evaluate=evaluate, llm=LLM, figure_interval=None
    )
    study.optimize(n_trials=2)
    assert study.best_value == 1.0
    assert study.objective.dataset is None
    for trial in study.trials:
        assert not {records.MINIBATCH, records.VALIDATED, records.VALIDATION} & set(
            trial.user_attrs
        )
    assert study.record(1).parent_feedback == 'The reply should mention "order number".'


@pytest.mark.slow
def test_the_dataset_example_fixes_the_code_and_the_number_offline(tmp_path: Any) -> None:
    import os
    from pathlib import Path
    import subprocess
    import sys

    example = Path(__file__).parent.parent / "examples" / "dataset.py"
    env = {**os.environ, "PYTHONPATH": str(example.parent.parent)}
    printed = subprocess.run(
        [sys.executable, str(example), "--trials", "15"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, check=True, env=env,
    ).stdout  # fmt: skip
    # The simulated model deletes the raising line and moves the factor; the prompt stays.
    assert "best validation mean 0.500" in printed and "test mean 0.500 on 12 orders" in printed
    assert "raise ValueError" not in printed
    assert "Write the order's total." in printed


def _app() -> to.App:
    train, val, test = splits()
    return to.App(
        agent=Replier, evaluate=CountingRun(), llm=LLM, trainset=train, valset=val,
        testset=test, minibatch_size=4, seed=0, figure_interval=None,
    )  # fmt: skip


APP = _app()


def test_cli_test_scores_the_best_candidate_or_prints_the_stored_score(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from trace_optuna import cli

    assert cli.main(["test", "--storage", sqlite_url, "--study", "cli"]) == 2  # no such study
    capsys.readouterr()
    study = APP.study(study_name="cli", storage=sqlite_url)
    study.optimize(n_trials=2)
    assert study.test_result is not None and study.test_result["ran"] == 4
    assert cli.main(["test", "--storage", sqlite_url, "--study", "cli", "--app",
                     "test_datasets:APP"]) == 0  # fmt: skip
    scored = json.loads(capsys.readouterr().out)
    assert scored["trial"] == study.best_trial.number and scored["examples"] == 4
    assert scored["mean"] == study.test_result["mean"]
    assert cli.main(["test", "--storage", sqlite_url, "--study", "cli"]) == 0
    assert json.loads(capsys.readouterr().out)["mean"] == scored["mean"]


@trace.model
class Raiser:
    """A trainable function that raises on topics it does not know."""

    def __init__(self) -> None:
        self.greeting = trace.node("Hello.", trainable=True, description="the reply's text")

    @trace.bundle(trainable=True)
    def answer(self, greeting, topic):
        """Reply about a topic."""
        if topic.endswith("3"):
            message = f"unknown topic {topic}"
            raise ValueError(message)
        return greeting + " About " + topic

    def reply(self, topic: str) -> Any:
        return self.answer(self.greeting, topic)


def test_an_example_that_raises_scores_error_score_and_its_error_is_feedback(
    sqlite_url: str,
) -> None:
    data = to.Dataset(examples(20), id=lambda example: example["topic"])
    train, val = data.split(0.5, 0.5, seed=0)
    study = to.create_study(
        storage=sqlite_url, agent=Raiser, evaluate=CountingRun(), llm=LLM, trainset=train,
        valset=val, minibatch_size=len(train), error_score=0.0, seed=0, figure_interval=None,
    )  # fmt: skip
    study.optimize(n_trials=2)
    baseline, step = study.record(0), study.record(1)
    raising = [topic for topic in train.ids if topic.endswith("3")]
    assert raising and step.state == "COMPLETE"
    lines = step.parent_feedback.splitlines()
    minibatch = step.dataset["minibatch"]
    for topic in raising:
        assert "(ValueError) unknown topic" in lines[minibatch.index(topic)]
        assert baseline.dataset["minibatch_scores"]["candidate"][
            baseline.dataset["minibatch"].index(topic)
        ] == 0.0  # fmt: skip
    # The simulated model deletes the raising line the batched feedback names.
    assert "raise ValueError" not in study.record(1).snapshot["answer"]


def test_without_error_score_an_example_that_raises_fails_the_candidate(tmp_path: Any) -> None:
    data = to.Dataset(examples(20), id=lambda example: example["topic"])
    options: dict[str, Any] = {
        "agent": Raiser, "evaluate": CountingRun(), "llm": LLM, "trainset": data,
        "minibatch_size": 20, "figure_interval": None,
    }  # fmt: skip
    # As in the evaluate(agent) form: the candidate's code raised, so a repair step runs ...
    repaired = to.create_study(storage=f"sqlite:///{tmp_path / 'a.db'}", **options)
    repaired.optimize(n_trials=1)
    record = repaired.record(0)
    assert record.repairs == 1 and "unknown topic" in record.evaluated[0]["code_error"]
    assert record.dataset["validated"] is True
    # ... and without repairs, starting values that raise stop optimize.
    study = to.create_study(storage=f"sqlite:///{tmp_path / 'b.db'}", repairs=0, **options)
    with pytest.raises(to.ConfigurationError, match="starting values cannot be evaluated"):
        study.optimize(n_trials=1)
    assert re.search(r"unknown topic t1?3\b", study.trials[0].user_attrs[records.ERROR])


def test_dataset_steps_on_every_storage(storage_url: str) -> None:
    study = dataset_study(storage_url, CountingRun(), study_name="datasets-storages")
    study.optimize(n_trials=2)
    records_ = [study.record(trial.number) for trial in study.trials]
    assert [record.state for record in records_] == ["COMPLETE", "COMPLETE"]
    assert records_[1].dataset["validated"] is True
    assert records_[1].dataset["minibatch"] == study.trials[1].user_attrs[records.MINIBATCH]
    assert study.best_value == records_[1].dataset["validation"]["mean"] == 1.0


def test_a_minibatch_where_every_example_raises_still_reaches_the_code(sqlite_url: str) -> None:
    raising = [{"topic": f"t{i}3", "need": "order number"} for i in range(6)]
    data = to.Dataset(raising, id=lambda example: example["topic"])
    study = to.create_study(
        storage=sqlite_url, agent=Raiser, evaluate=CountingRun(), llm=LLM, trainset=data,
        minibatch_size=3, error_score=0.0, repairs=0, seed=0, figure_interval=None,
    )  # fmt: skip
    study.optimize(n_trials=2)
    step = study.record(1)
    assert step.state == "COMPLETE" and step.parent_feedback.count("ValueError") == 3
    # Each example's exception node joined the batch: the backward pass reached the code.
    assert "raise ValueError" not in step.snapshot["answer"]


def test_the_report_of_a_dataset_study_shows_its_candidates_by_examples(sqlite_url: str) -> None:
    from trace_optuna import demo
    from trace_optuna import visualization

    study = dataset_study(sqlite_url, CountingRun(), strategies=Scripted(["Hi. order number"]))
    study.optimize(n_trials=2)
    built = visualization.figures(study)
    assert list(built)[-1] == "example-scores"
    matrix = next(trace for trace in built["example-scores"].data if trace.type == "heatmap")
    assert len(matrix.x) == len(splits()[1])  # one column per validation example
    assert 'id="example-scores"' in visualization.report_html(study)

    plain = to.create_study(
        agent=demo.make_agent,
        evaluate=demo.evaluate,
        llm=demo.DEMO_LLM,
        storage="sqlite:///:memory:",
    )
    assert "example-scores" not in visualization.figures(plain)
