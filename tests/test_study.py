from __future__ import annotations

import os

from optuna.trial import TrialState
from support_agents import CountingEvaluate
from support_agents import Greeter
from support_agents import make_greeter

import trace_optuna as to
from trace_optuna import records

SIMULATED = "simulated/feedback-follower"


def make_study(storage_url: str, study_name: str, **kwargs: object) -> to.TraceStudy:
    options: dict = dict(
        study_name=study_name,
        storage=storage_url,
        agent=make_greeter,
        evaluate=CountingEvaluate(),
        llm=SIMULATED,
        load_if_exists=True,
        seed=0,
    )
    options.update(kwargs)
    return to.create_study(**options)


def test_each_trial_is_one_recorded_optimizer_step(storage_url: str, study_name: str) -> None:
    evaluate = CountingEvaluate()
    study = make_study(storage_url, study_name, evaluate=evaluate)
    study.optimize(n_trials=4)

    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    baseline, first = study.record(0), study.record(1)
    assert baseline.strategy == "baseline" and baseline.parents == []
    assert baseline.snapshot == to.snapshot(Greeter())
    assert baseline.value == 0.0
    assert baseline.details == {"missing": ["order number", "tracking link"]}

    # Trial 1: OptoPrime followed the baseline's feedback through the simulated model.
    assert first.strategy == "optoprime" and first.parents == [0]
    assert first.params["strategy"] == "optoprime"
    assert set(first.params) == {"strategy", "optoprime.temperature", "optoprime.memory_size"}
    assert first.parent_feedback.startswith('The reply should mention "order number"')
    assert first.changed == ["greeting"]
    assert "order number" in first.snapshot["greeting"]
    assert first.diff.startswith("--- greeting (parent)\n+++ greeting (candidate)")
    assert first.value == 0.5 and first.improvement == 0.5
    assert first.feedback.startswith('The reply should mention "tracking link"')
    assert first.llm["model"] == SIMULATED and first.llm["calls"] == 1
    assert first.llm["prompt_tokens"] > 0 and first.llm["cost_usd"] > 0
    assert "#Feedback" in first.llm_calls[0]["user"]
    assert "order number" in first.llm_calls[0]["response"]
    assert first.worker == {"host": os.uname().nodename, "pid": os.getpid()}
    assert set(first.time) == {"evaluate_s", "llm_s", "total_s"}

    assert study.best_value == 1.0
    assert "tracking link" in study.best_snapshot["greeting"]
    # A greedy chain costs one evaluation per new candidate: the parent's graph is reused
    # while live, and trial 3 (the model answered TERMINATE) reuses trial 2's score.
    assert study.record(3).duplicate_of == 2
    assert evaluate.calls == 3

    # Plain Optuna sees the same: value, params and readable attributes.
    frame = study.optuna.trials_dataframe()
    assert list(frame["value_score"]) == [t.value for t in trials]  # the metric is named
    assert frame.loc[1, "user_attrs_trace:value:greeting"] == first.snapshot["greeting"]
    assert frame.loc[1, "user_attrs_trace:diff"] == first.diff


def test_values_are_stored_once_and_referenced(storage_url: str, study_name: str) -> None:
    study = make_study(storage_url, study_name)
    study.optimize(n_trials=3)
    trials = study.trials
    # The baseline stores every value; trial 1 only the one it changed.
    assert {k for k in trials[0].user_attrs if k.startswith("trace:value:")} == {
        "trace:value:greeting",
        "trace:value:excitement",
        "trace:value:decorate",
    }
    assert [k for k in trials[1].user_attrs if k.startswith("trace:value:")] == [
        "trace:value:greeting"
    ]
    refs = trials[1].user_attrs[records.SNAPSHOT]
    assert refs["decorate"][1] == 0 and refs["greeting"][1] == 1


def test_rerun_resumes_without_repeating_anything(storage_url: str, study_name: str) -> None:
    make_study(storage_url, study_name).optimize(n_trials=2)
    evaluate = CountingEvaluate()
    again = make_study(storage_url, study_name, evaluate=evaluate)  # a "new process"
    again.optimize(n_trials=2)
    trials = again.trials
    assert len(trials) == 4
    assert [again.record(n).strategy for n in range(4)] == ["baseline"] + ["optoprime"] * 3
    assert again.record(2).parents == [1]
    # The new objective had no live graph: trial 2 re-ran its parent, then its candidate;
    # trial 3 chained on the live graph, and its candidate (TERMINATE) was a duplicate.
    assert evaluate.calls == 2
    assert again.record(3).duplicate_of == 2


def test_reopened_study_is_read_back_with_load_study(storage_url: str, study_name: str) -> None:
    make_study(storage_url, study_name).optimize(n_trials=3)
    loaded = to.load_study(
        study_name=study_name,
        storage=storage_url,
        agent=make_greeter,
        evaluate=CountingEvaluate(),
        llm=SIMULATED,
    )
    assert loaded.best_value == 1.0
    agent = loaded.load_best()
    assert to.snapshot(agent) == loaded.best_snapshot
    assert "tracking link" in agent.reply().data
    attrs = loaded.optuna.user_attrs
    assert attrs[records.STUDY_PARAMETERS] == ["decorate", "excitement", "greeting"]
    assert attrs[records.STUDY_LLM_SETTINGS]["model"] == SIMULATED
    assert set(attrs[records.STUDY_VERSIONS]) >= {"trace-opt", "optuna", "litellm"}
    assert attrs[records.STUDY_SEED] == 0
    assert loaded.optuna.metric_names == ["score"]


def test_duplicate_candidate_is_not_evaluated_again(sqlite_url: str, study_name: str) -> None:
    evaluate = CountingEvaluate()
    study = make_study(sqlite_url, study_name, evaluate=evaluate)
    study.optimize(n_trials=5)
    # After trial 2 the reply is perfect: the model answers TERMINATE, the candidate equals
    # its parent, and its stored score is reused.
    later = study.record(3)
    assert later.duplicate_of == 2 and later.value == 1.0 and later.changed == []
    assert evaluate.calls == 3


def test_failing_evaluate_is_recorded_and_the_study_goes_on(
    sqlite_url: str, study_name: str
) -> None:
    inner = CountingEvaluate()
    crashed = []

    def evaluate(agent: Greeter) -> to.Evaluation:
        result = inner(agent)
        if "tracking link" in agent.greeting._data:
            crashed.append(agent.greeting._data)
            raise RuntimeError("grader crashed on this reply")
        return result

    study = make_study(sqlite_url, study_name, evaluate=evaluate)
    study.optimize(n_trials=4)
    states = [t.state for t in study.trials]
    assert states[:2] == [TrialState.COMPLETE] * 2
    assert states[2:] == [TrialState.FAIL] * 2
    failed = study.record(2)
    assert failed.error == "evaluate() raised RuntimeError: grader crashed on this reply"
    assert failed.feedback == failed.error  # what the next prompt is told
    assert "Traceback" in failed.traceback and "grader crashed" in failed.traceback
    assert "tracking link" in failed.snapshot["greeting"]  # the candidate is kept
    assert failed.llm["calls"] == 1
    # The model proposes the same candidate again (this grader allows nothing better): it is
    # told it failed, and the remembered failure is reused instead of evaluated again.
    again = study.record(3)
    assert again.duplicate_of == 2 and again.error == failed.error
    assert again.llm["calls"] == 2
    assert "already evaluated, in Trial#2" in again.llm_calls[1]["user"]
    assert len(crashed) == 1


def test_llm_failure_is_recorded_and_the_study_goes_on(sqlite_url: str, study_name: str) -> None:
    llm = to.LLM(
        "openai/unreachable",
        api_base="http://127.0.0.1:9/v1",  # nothing listens on the discard port
        api_key="sk-test-secret",
        num_retries=0,
        timeout=5,
    )
    study = make_study(sqlite_url, study_name, llm=llm)
    study.optimize(n_trials=3)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] + [TrialState.FAIL] * 2
    failed = study.record(1)
    assert failed.error.startswith("LLMError:") and "openai/unreachable" in failed.error
    assert failed.llm["calls"] == 1 and failed.llm_calls[0]["response"].startswith("[error]")
    stored = repr(study.optuna.user_attrs) + repr([t.user_attrs for t in study.trials])
    assert "sk-test-secret" not in stored


def test_code_that_raises_becomes_feedback(sqlite_url: str, study_name: str) -> None:
    """A candidate whose code raises: Trace's ExecutionError is the feedback, scored."""

    def evaluate(agent: Greeter) -> to.Evaluation:
        out = agent.reply()
        return to.Evaluation(score=1.0, feedback="fine", output=out)

    study = make_study(sqlite_url, study_name, evaluate=evaluate, error_score=-1.0, repairs=0)
    baseline = study.objective.initial_snapshot
    broken = dict(baseline)
    broken["decorate"] = baseline["decorate"].replace(
        "return", 'raise ValueError("boom")\n        return'
    )
    study.optuna.enqueue_trial({})  # harmless; the broken candidate comes from a strategy
    study.objective.strategies["optoprime"].propose = lambda context: to.Proposal(  # type: ignore[method-assign]
        broken, [0], 1.0, "fine"
    )
    study.optimize(n_trials=2)
    record = study.record(1)
    assert record.value == -1.0
    assert record.error.startswith("The candidate's code raised")
    assert record.candidate_error == record.error  # remembered
    # The feedback is the exception's message, as Trace sends it; the traceback is apart.
    assert record.feedback == "(ValueError) boom"
    assert "Traceback" in record.traceback and "boom" in record.traceback


def test_code_that_raises_is_repaired_in_the_trial(sqlite_url: str, study_name: str) -> None:
    """As in Trace's loops: the exception node and its message go to OptoPrime, which
    proposes a fix; the fix is evaluated in the same trial, the failed attempt kept."""
    study = make_study(sqlite_url, study_name)
    broken = dict(study.objective.initial_snapshot)
    broken["decorate"] = broken["decorate"].replace(
        "return", 'raise ValueError("boom")\n        return'
    )
    study.objective.strategies["optoprime"].propose = lambda context: to.Proposal(  # type: ignore[method-assign]
        broken, [0], 0.0, "x"
    )
    study.optimize(n_trials=2)
    assert study.trials[1].state == TrialState.COMPLETE
    record = study.record(1)
    assert record.repairs == 1
    assert "raise" not in record.snapshot["decorate"]  # the repaired candidate is the trial's
    [attempt] = record.evaluated
    assert attempt["error"].startswith("The candidate's code raised: (ValueError) boom")
    assert attempt["changes"]["decorate"] == broken["decorate"] and not attempt["transient"]
    assert record.llm["calls"] == 1 and "(ValueError) boom" in record.llm_calls[0]["user"]
    assert record.candidate_error is None and record.error is None


def test_code_error_without_error_score_fails_the_trial(sqlite_url: str, study_name: str) -> None:
    study = make_study(sqlite_url, study_name, repairs=0)
    broken = dict(study.objective.initial_snapshot)
    broken["decorate"] = "def decorate(self, text, excitement):\n    return text + 1\n"
    study.objective.strategies["optoprime"].propose = lambda context: to.Proposal(  # type: ignore[method-assign]
        broken, [0], 0.0, "x"
    )
    study.optimize(n_trials=2)
    assert study.trials[1].state == TrialState.FAIL
    record = study.record(1)
    assert "can only concatenate" in record.feedback or "TypeError" in record.feedback
    assert record.snapshot["decorate"] == broken["decorate"]
