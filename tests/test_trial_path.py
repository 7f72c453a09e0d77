"""The trial path end to end: interruptions and hung evaluations recorded, plain Optuna studies
left alone, studies opened for reading, observers told in order, no UI in the core."""

from __future__ import annotations

import ast
import dataclasses
import os
from pathlib import Path
import signal
import subprocess
import sys
import time
from typing import Any

import optuna
from optuna.trial import TrialState
import pytest
from support_agents import CountingEvaluate
from support_agents import Greeter
from support_agents import make_greeter

import trace_optuna as to
from trace_optuna import observers
from trace_optuna import records

SIMULATED = "simulated/feedback-follower"
PACKAGE = Path(to.__file__).parent


def greeter_study(storage: str, study_name: str, **options: Any) -> to.TraceStudy:
    """A study of the test Greeter with the simulated model; ``options`` override."""
    return to.create_study(
        storage=storage,
        study_name=study_name,
        **{"agent": make_greeter, "evaluate": CountingEvaluate(), "llm": SIMULATED, **options},
    )


class InterruptedOnce(CountingEvaluate):
    """Sends this process a real SIGINT (Ctrl-C) during its ``call``-th evaluation."""

    def __init__(self, call: int) -> None:
        super().__init__()
        self.call = call
        self.runs = 0

    def __call__(self, agent: Greeter) -> to.Evaluation:
        self.runs += 1
        if self.runs == self.call:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the signal's KeyboardInterrupt arrives here
        return super().__call__(agent)


INTERRUPTED_RUN = """
import signal, sys
# Ctrl-C raises KeyboardInterrupt, as in a terminal, even when this test was started as a
# background job (whose shell makes it ignore SIGINT, which its children inherit).
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path.insert(0, sys.argv[3])
from test_trial_path import InterruptedOnce, greeter_study

study = greeter_study(sys.argv[1], sys.argv[2], evaluate=InterruptedOnce(call=2), seed=0)
study.optimize(n_trials=3)
"""


def test_an_interrupted_trial_keeps_its_record_and_is_rerun_on_resume(
    storage_url: str, study_name: str
) -> None:
    # Call 1: the baseline. Call 2: trial 1's candidate, after its LLM call: Ctrl-C. In a
    # process of its own: a fresh process's simulated model proposes the same candidates
    # whichever tests ran before (Trace's node names count every node a process made).
    tests = str(Path(__file__).parent)
    run = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_RUN, storage_url, study_name, tests],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([*sys.path])},
    )
    assert "KeyboardInterrupt" in run.stderr, run.stderr[-2000:]
    study = greeter_study(storage_url, study_name, seed=0, load_if_exists=True)
    interrupted = study.trials[1]
    assert interrupted.state == TrialState.FAIL
    record = study.record(1)
    assert interrupted.user_attrs[records.INTERRUPTED] is True
    assert record.error is not None and record.error.startswith("KeyboardInterrupt")
    assert record.llm["calls"] == 1 and record.llm["prompt_tokens"] > 0  # what was paid
    assert record.diff and record.changed  # the candidate it was evaluating
    assert record.snapshot != study.record(0).snapshot

    study.optimize(n_trials=1)  # resume: the interrupted trial is queued again first
    retry = study.trials[2]
    assert retry.state == TrialState.COMPLETE
    assert retry.system_attrs["failed_trial"] == 1
    assert retry.user_attrs[records.RETRY_OF] == 1
    assert retry.params == interrupted.params  # the same strategy and settings


class Hangs(CountingEvaluate):
    runs = 0

    def __call__(self, agent: Greeter) -> to.Evaluation:
        self.runs += 1
        if self.runs == 2:
            time.sleep(60)  # a hung call: the time limit must interrupt it
        return super().__call__(agent)


def test_a_hung_evaluate_is_interrupted_and_the_study_goes_on(
    sqlite_url: str, study_name: str
) -> None:
    study = greeter_study(sqlite_url, study_name, evaluate=Hangs(), seed=0, evaluate_timeout=1.0)
    started = time.monotonic()
    study.optimize(n_trials=3)
    assert time.monotonic() - started < 30
    states = [trial.state for trial in study.trials]
    assert states[1] == TrialState.FAIL and states.count(TrialState.COMPLETE) == 2
    assert study.record(1).error.startswith(
        "EvaluationTimeout: evaluate() ran longer than evaluate_timeout=1.0 s"
    )


def test_a_plain_optuna_study_is_never_added_to(sqlite_url: str, study_name: str) -> None:
    plain = optuna.create_study(study_name=study_name, storage=sqlite_url)
    plain.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=3)
    with pytest.raises(to.ConfigurationError, match="holds 3 trial.*trace_optuna did not make"):
        to.load_study(
            study_name=study_name,
            storage=sqlite_url,
            agent=make_greeter,
            evaluate=CountingEvaluate(),
            llm=SIMULATED,
        )
    with pytest.raises(to.ConfigurationError, match="holds 3 trial"):
        greeter_study(sqlite_url, study_name, load_if_exists=True)
    assert len(optuna.load_study(study_name=study_name, storage=sqlite_url).trials) == 3
    with pytest.raises(to.ConfigurationError, match="holds 3 trial"):
        plain.optimize(to.TraceObjective(make_greeter, CountingEvaluate(), SIMULATED), n_trials=1)


def test_a_study_opens_for_reading_with_its_name_and_storage_alone(
    sqlite_url: str, study_name: str
) -> None:
    study = greeter_study(sqlite_url, study_name, seed=0)
    study.optimize(n_trials=3)
    reader = to.load_study(study_name=study_name, storage=sqlite_url)
    assert reader.best_snapshot == study.best_snapshot
    assert reader.record(2).snapshot == study.record(2).snapshot
    with pytest.raises(to.ConfigurationError, match="opened for reading only"):
        reader.optimize(n_trials=1)
    with pytest.raises(to.ConfigurationError, match="pass agent="):
        reader.load_best()
    best = to.load_study(study_name=study_name, storage=sqlite_url, agent=make_greeter).load_best()
    assert to.snapshot(best) == study.best_snapshot
    assert len(study.trials) == 3  # reading ran nothing


class Recorder(observers.TrialObserver):
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def study_ready(self, study: optuna.Study, **parts: Any) -> None:
        self.log.append(f"ready {sorted(parts)}")

    def trial_started(self, trial: optuna.Trial, record: dict[str, Any]) -> None:
        self.log.append(f"started {trial.number}")

    def before_write(self, trial: optuna.Trial, record: dict[str, Any]) -> None:
        record["trace:observed"] = True  # an observer may add to the record before its write
        self.log.append(f"before {trial.number}")

    def record_written(self, trial: optuna.Trial, record: Any) -> None:
        stored = trial.study._storage.get_trial(trial._trial_id).user_attrs
        self.log.append(f"written {trial.number} {stored.get('trace:observed')}")

    def optimize_finished(self, study: optuna.Study) -> None:
        self.log.append("finished")


def test_observers_are_told_in_order_and_a_failing_one_fails_nothing(
    sqlite_url: str, study_name: str
) -> None:
    log: list[str] = []

    class Broken(observers.TrialObserver):
        def trial_started(self, trial: optuna.Trial, record: dict[str, Any]) -> None:
            raise RuntimeError("a broken view")

    def factory(config: to.Config) -> observers.TrialObserver:
        return Recorder(log)

    def broken(config: to.Config) -> observers.TrialObserver:
        return Broken()

    observers.register(factory)
    observers.register(broken)
    try:
        study = greeter_study(sqlite_url, study_name)
        study.optimize(n_trials=2)
    finally:
        observers._FACTORIES.remove(factory)
        observers._FACTORIES.remove(broken)
    assert log == [
        "ready ['agent', 'coordinator', 'evaluate', 'make_agent', 'strategies']",
        "started 0",
        "before 0",
        "written 0 True",
        "started 1",
        "before 1",
        "written 1 True",
        "finished",
    ]
    assert [trial.state for trial in study.trials] == [TrialState.COMPLETE] * 2


CORE = (
    "step.py",
    "study.py",
    "runner.py",
    "binding.py",
    "config.py",
    "coordination.py",
    "records.py",
    "population.py",
    "observers.py",
    "sharing.py",
    "snapshots.py",
)


@pytest.mark.parametrize("module", CORE)
def test_the_core_imports_no_ui(module: str) -> None:
    tree = ast.parse((PACKAGE / module).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    ui = sorted(
        name
        for name in imported
        if name.startswith(
            ("trace_optuna.dashboard", "trace_optuna.visualization", "optuna_dashboard", "plotly")
        )
    )
    assert ui == [], f"{module} imports {ui}"


def test_an_output_that_depends_on_no_parameter_stops_before_any_llm_call(
    sqlite_url: str, study_name: str
) -> None:
    from opto import trace

    def detached(agent: Greeter) -> to.Evaluation:
        # The reply built from .data: a fresh node, with no path back to the parameters.
        out = trace.node(agent.greeting.data + "!")
        return to.Evaluation(score=0.0, feedback="Mention the order number.", output=out)

    study = greeter_study(sqlite_url, study_name, evaluate=detached)
    with pytest.raises(to.ConfigurationError, match="depends on none of the agent's trainable"):
        study.optimize(n_trials=5)
    assert [trial.state for trial in study.trials] == [TrialState.COMPLETE, TrialState.FAIL]
    assert study.record(1).llm["calls"] == 0  # nothing paid for
    assert "depends on none" in study.record(1).error


class Verbose(CountingEvaluate):
    """Feedback of 10 MB: the whole log of a run, say."""

    def __call__(self, agent: Greeter) -> to.Evaluation:
        evaluation = super().__call__(agent)
        return dataclasses.replace(evaluation, feedback=evaluation.feedback + "x" * 10_000_000)


def test_huge_feedback_is_cut_before_it_is_stored_or_sent(
    sqlite_url: str, study_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    study = greeter_study(
        sqlite_url, study_name, evaluate=Verbose(), max_feedback_chars=5_000, figure_interval=None
    )
    study.optimize(n_trials=2)
    feedback = study.record(1).feedback
    assert len(feedback) < 5_200 and feedback.endswith("limited to max_feedback_chars=5000]")
    prompt = study.record(1).llm_calls[0]["user"]
    assert len(prompt) < 40_000  # the cut feedback, not 10 MB, reached the LLM
    assert Path(sqlite_url.removeprefix("sqlite:///")).stat().st_size < 2_000_000
    assert "10000" in caplog.text and "max_feedback_chars" in caplog.text


def test_a_study_deleted_under_a_live_object_says_so(sqlite_url: str, study_name: str) -> None:
    study = greeter_study(sqlite_url, study_name)
    study.optimize(n_trials=1)
    optuna.delete_study(study_name=study_name, storage=sqlite_url)
    with pytest.raises(to.ConfigurationError, match="no longer in the storage"):
        study.optimize(n_trials=1)


class Perfect(CountingEvaluate):
    """Every reply is perfect: the study is at its target from the baseline on."""

    def __call__(self, agent: Greeter) -> to.Evaluation:
        evaluation = super().__call__(agent)
        return dataclasses.replace(evaluation, score=1.0, feedback="The reply is perfect.")


def test_a_study_at_its_target_stops_every_worker(storage_url: str, study_name: str) -> None:
    def worker(evaluate: CountingEvaluate) -> to.TraceStudy:
        return greeter_study(
            storage_url,
            study_name,
            evaluate=evaluate,
            load_if_exists=True,
            target=1.0,
            figure_interval=None,
        )

    first = worker(Perfect())
    first.optimize(n_trials=8)
    assert len(first.trials) == 1  # the baseline reached it: no step, no LLM call
    second = worker(Perfect())
    second.optimize(n_trials=8)  # another worker of the same study runs nothing
    assert len(second.trials) == 1


def test_a_study_stops_when_a_step_reaches_its_target(sqlite_url: str, study_name: str) -> None:
    study = greeter_study(sqlite_url, study_name, target=0.5, seed=0, figure_interval=None)
    study.optimize(n_trials=10)
    values = [trial.value for trial in study.trials]
    assert values[-1] >= 0.5 and all(value < 0.5 for value in values[:-1])
    assert len(values) < 10


@pytest.mark.parametrize(
    ("target", "extra", "message"),
    [
        ([1.0], {}, "target must be one number"),
        (1.0, {"directions": ["maximize", "minimize"]}, "target needs a single-objective"),
        ("high", {}, "target"),
    ],
)
def test_a_wrong_target_is_refused(target: Any, extra: dict[str, Any], message: str) -> None:
    with pytest.raises(to.ConfigurationError, match=message):
        to.Config(target=target, **extra)


def make_edited_greeter() -> Greeter:
    agent = Greeter()
    agent.greeting._data = "Hi there."  # the user edited the program's starting prompt
    return agent


def test_an_edited_program_is_evaluated_as_a_new_root_or_refused(
    storage_url: str, study_name: str
) -> None:
    def open_study(make: Any, **extra: Any) -> to.TraceStudy:
        return greeter_study(
            storage_url,
            study_name,
            agent=make,
            load_if_exists=True,
            seed=0,
            figure_interval=None,
            **extra,
        )

    open_study(make_greeter).optimize(n_trials=2)
    with pytest.raises(to.ConfigurationError, match="program was edited since the study began"):
        open_study(make_edited_greeter, edited_start="refuse")
    edited = open_study(make_edited_greeter)
    edited.optimize(n_trials=2)
    root = edited.record(2)
    assert root.strategy == "baseline" and root.parents == []
    assert root.snapshot["greeting"] == "Hi there."
    assert edited.record(3).strategy == "optoprime"  # then the study steps on as before
    # Reopened again, the edited start is a trial now: no further root.
    open_study(make_edited_greeter, edited_start="refuse").optimize(n_trials=1)
    assert edited.record(4).strategy == "optoprime"


def test_a_missing_api_key_is_one_message_before_any_trial(
    sqlite_url: str, study_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    study = greeter_study(sqlite_url, study_name, llm="openai/gpt-4o-mini")
    with pytest.raises(to.ConfigurationError, match="'openai/gpt-4o-mini' needs OPENAI_API_KEY"):
        study.optimize(n_trials=20)
    assert study.trials == []  # not 20 failed trials full of tracebacks
    # A key given to the LLM itself is enough (the call would then say whether it works).
    keyed = to.LLM("openai/gpt-4o-mini", api_key="sk-test")
    assert keyed.missing_keys() == []
    assert to.LLM(SIMULATED).missing_keys() == []
    # The agent's own model is checked the same way, before any trial.
    agent_keyless = greeter_study(
        sqlite_url, study_name + "-agent", agent_llm="openai/gpt-4o-mini"
    )
    with pytest.raises(to.ConfigurationError, match="agent_llm 'openai/gpt-4o-mini' needs OPENAI"):
        agent_keyless.optimize(n_trials=5)
    assert agent_keyless.trials == []


def test_the_best_of_a_plain_study_says_it_is_not_trace_optunas(
    sqlite_url: str, study_name: str
) -> None:
    plain = optuna.create_study(study_name=study_name, storage=sqlite_url)
    plain.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=3)
    reader = to.load_study(study_name=study_name, storage=sqlite_url)
    with pytest.raises(to.RecordError, match="not made by trace_optuna: its 3 COMPLETE trial"):
        _ = reader.best_snapshot
