"""Faults survived with nothing lost: workers killed mid-trial, the database restarting, the
LLM endpoint failing. Worker processes run as users run them: ``trace-optuna workers``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
import dataclasses
import os
from pathlib import Path
import re
import signal
import subprocess
import sys
import time
from typing import Any
import warnings

import optuna
from optuna.trial import FrozenTrial
from optuna.trial import TrialState
import pytest
from support_concurrency import assert_ran_at_once
from support_openai_server import OpenAIServer
from support_openai_server import Reply
import support_workers

import trace_optuna as to
from trace_optuna import records
from trace_optuna.storage import HeartbeatJournalStorage
from trace_optuna.storage import resolve_storage
from trace_optuna.workers import run_worker

TESTS = Path(__file__).parent
FAST_RETRY = {"retry-after-ms": "10"}


# -- helpers ------------------------------------------------------------------------------


def start_workers(
    url: str, study_name: str, log: Path, *args: str, latency: float, processes: int = 4
) -> subprocess.Popen:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")])),
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        TRACE_OPTUNA_TEST_LATENCY=str(latency),
        # The first evaluation waits until every worker runs a trial: their baselines race.
        TRACE_OPTUNA_TEST_BARRIER=f"{processes} {url} {study_name}",
    )
    command = [sys.executable, "-m", "trace_optuna", "workers", "--processes", str(processes)]
    command += ["--storage", url, "--study", study_name, "--app", "support_workers:app", *args]
    with log.open("w") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 180.0) -> Any:
    """Poll ``condition`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.2)  # polls what other processes stored
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def open_study(url: str, study_name: str) -> optuna.Study:
    storage = resolve_storage(url, heartbeat_interval=None)

    def load() -> optuna.Study | None:
        try:
            return optuna.load_study(study_name=study_name, storage=storage)
        except KeyError:
            return None

    return wait_until(load, f"study {study_name!r}")


def states(study: optuna.Study) -> Counter:
    return Counter(trial.state for trial in study.get_trials(deepcopy=False))


def double_evaluations(trials: list[FrozenTrial]) -> int:
    """Completed trials that evaluated a candidate an earlier completed trial had evaluated."""
    evaluated = Counter(
        trial.user_attrs[records.SNAPSHOT_HASH]
        for trial in trials
        if trial.state == TrialState.COMPLETE and records.DUPLICATE_OF not in trial.user_attrs
    )
    return sum(count - 1 for count in evaluated.values())


def best_before(trials: list[FrozenTrial], moment: Any) -> int:
    """The best new candidate among trials completed by ``moment`` (newest wins a tie)."""
    done = [
        trial
        for trial in trials
        if trial.state == TrialState.COMPLETE
        and records.DUPLICATE_OF not in trial.user_attrs
        and trial.datetime_complete is not None
        and trial.datetime_complete <= moment
    ]
    return max(done, key=lambda trial: (trial.value, trial.number)).number


def check_records(url: str, study_name: str, trials: list[FrozenTrial]) -> None:
    """Every completed trial's record is whole: readable, with its snapshot and score."""
    study = support_workers.app.study(study_name=study_name, storage=url)
    for trial in trials:
        if trial.state != TrialState.COMPLETE:
            continue
        record = study.record(trial.number)
        assert isinstance(record.snapshot["x"], int)
        assert record.value == trial.value == trial.user_attrs[records.SCORE]
        assert record.strategy in ("baseline", "optoprime")
        assert record.worker["pid"] > 0 and record.time["total_s"] > 0


# -- a worker killed mid-trial --------------------------------------------------------------


def _inside_a_step(study: optuna.Study) -> tuple[int, int] | None:
    """(trial number, worker pid) of a trial that is inside its optimizer step (LLM call)."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(records.WORKER)
        if worker and "strategy" in trial.params:
            return trial.number, int(worker["pid"])
    return None


@pytest.mark.slow  # worker processes
@pytest.mark.parametrize("storage_url", ["postgresql", "mysql", "redis"], indirect=True)
def test_a_killed_worker_loses_nothing(storage_url: str, study_name: str, tmp_path: Path) -> None:
    log = tmp_path / "workers.log"
    # The simulated model takes 0.5 s a call: a trial found inside its step is still there
    # when the signal arrives. Workers run for a time, not a count of trials, so trials start
    # after the dead trial's grace period (4 s) has passed, whenever the kill lands: the
    # replacement worker alone runs for the whole timeout.
    workers = start_workers(storage_url, study_name, log, "--timeout", "15", latency=0.5)
    try:
        study = open_study(storage_url, study_name)
        killed, pid = wait_until(lambda: _inside_a_step(study), "a worker inside a step")
        os.kill(pid, signal.SIGKILL)
        assert workers.wait(timeout=300) == 0, log.read_text()
    finally:
        if workers.poll() is None:
            workers.kill()
    output = log.read_text()
    assert f"(pid {pid}) died (killed by SIGKILL)" in output
    assert f"Trial#{killed} was left RUNNING" in output
    finished = re.search(r"Workers finished (\d+) trials", output)
    assert finished is not None, output

    all_trials = study.get_trials()
    # Nothing lost: every trial the workers finished is COMPLETE, the dead one is FAIL and was
    # re-run, and nothing is left RUNNING or WAITING.
    assert states(study) == {TrialState.COMPLETE: int(finished.group(1)), TrialState.FAIL: 1}, [
        t.user_attrs.get(records.ERROR) for t in all_trials if t.state == TrialState.FAIL
    ]
    dead = all_trials[killed]
    assert dead.state == TrialState.FAIL
    (retry,) = [t for t in all_trials if t.system_attrs.get("failed_trial") == killed]
    assert retry.state == TrialState.COMPLETE
    # The same strategy and the settings the dead trial had chosen (the kill may land between
    # the strategy's suggest and its settings': the retry then samples those afresh).
    assert "strategy" in dead.params
    assert {name: retry.params[name] for name in dead.params} == dead.params
    assert retry.user_attrs[records.RETRY_OF] == killed
    assert retry.user_attrs[records.PARENTS] == [best_before(all_trials, dead.datetime_start)]
    # Nothing duplicated: the four baselines raced, one was evaluated and three reused it.
    baselines = [t for t in all_trials if t.user_attrs.get(records.STRATEGY) == "baseline"]
    assert len(baselines) == 4
    # They ran at once (the barrier held each until all four were running): a race, not a
    # queue of workers each finding the candidate already stored.
    assert_ran_at_once({f"Trial#{t.number}": [t] for t in baselines}, "the four baselines")
    # Whichever baseline claimed the candidate first evaluated it; the others point to it.
    (evaluated,) = [t for t in baselines if records.DUPLICATE_OF not in t.user_attrs]
    reused = [t.user_attrs[records.DUPLICATE_OF] for t in baselines if t is not evaluated]
    assert reused == [evaluated.number] * 3
    assert double_evaluations(all_trials) == 0
    check_records(storage_url, study_name, all_trials)


def test_a_dead_workers_trial_is_rerun_from_the_same_parent(
    tmp_path: Path, study_name: str
) -> None:
    # A journal file: Optuna has no heartbeat for journals; HeartbeatJournalStorage adds one.
    url = f"journal://{tmp_path / 'study.log'}"
    study = support_workers.app.study(study_name=study_name, storage=url)
    storage = study.objective.coordinator.storage  # type: ignore[union-attr]
    assert isinstance(storage, HeartbeatJournalStorage)
    study.optimize(n_trials=3)
    # A worker died inside a step: it took a trial and chose the strategy; its lease is live.
    dead = study.optuna.ask()
    dead.suggest_categorical("strategy", ["optoprime"])
    study.objective.strategies["optoprime"].suggest_settings(dead)
    lease = {"until": time.time() + 3600, "worker": "gone:1"}
    storage.set_trial_system_attr(dead._trial_id, records.LEASE, lease)
    parent = study.best_trial.number

    study.optimize(n_trials=1)  # the lease is live: the trial is left alone
    assert study.trials[dead.number].state == TrialState.RUNNING
    improved = study.trials[dead.number + 1]
    assert improved.value > study.trials[parent].value  # the best moved on after the death...

    storage.set_trial_system_attr(dead._trial_id, records.LEASE, {**lease, "until": 0.0})
    study.optimize(n_trials=1)  # fails the dead trial before it asks, and runs the retry at once
    trials = study.trials
    assert [trial.state for trial in trials[dead.number :]] == [
        TrialState.FAIL,
        TrialState.COMPLETE,
        TrialState.COMPLETE,
    ]
    retry = trials[dead.number + 2]
    assert retry.system_attrs["failed_trial"] == dead.number
    record = study.record(retry.number)
    assert record.parents == [parent]  # ...but the re-run starts where the dead trial did
    assert record.params == trials[dead.number].params
    assert retry.user_attrs[records.RETRY_OF] == dead.number


def test_a_journal_lease_is_renewed_by_the_running_worker(tmp_path: Path) -> None:
    storage = resolve_storage(
        f"journal://{tmp_path / 'study.log'}", heartbeat_interval=2, grace_period=7
    )
    assert isinstance(storage, HeartbeatJournalStorage)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    before = time.time()
    storage.record_heartbeat(trial._trial_id)
    lease = storage.get_trial(trial._trial_id).system_attrs[records.LEASE]
    assert before + 7 <= lease["until"] <= time.time() + 7
    assert lease["worker"].endswith(f":{os.getpid()}")
    assert storage._get_stale_trial_ids(study._study_id) == []
    study.tell(trial, 1.0)
    storage.record_heartbeat(trial._trial_id)  # a late beat of a finished trial is harmless
    assert storage.get_trial(trial._trial_id).state == TrialState.COMPLETE


# -- a worker killed before its trial's first heartbeat --------------------------------------

_TAKE_A_TRIAL_AND_DIE = """
import os, signal, sys
import optuna
from trace_optuna.storage import resolve_storage
storage = resolve_storage(sys.argv[1], heartbeat_interval=1, grace_period=2)
study = optuna.load_study(study_name=sys.argv[2], storage=storage)
study.ask()  # Optuna's trial creation (or a queued trial taken); no heartbeat thread yet
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("queued", [False, True], ids=["created", "queued"])
@pytest.mark.parametrize("storage_url", ["sqlite", "postgresql", "mysql", "redis"], indirect=True)
def test_a_trial_whose_worker_died_before_its_first_heartbeat_is_retried(
    storage_url: str, study_name: str, queued: bool
) -> None:
    storage = resolve_storage(storage_url, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name=study_name, storage=storage)
    if queued:
        study.enqueue_trial({"x": 0.5})
    died = subprocess.run(
        [sys.executable, "-c", _TAKE_A_TRIAL_AND_DIE, storage_url, study_name],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert died.returncode == -signal.SIGKILL, died.stderr
    assert [trial.state for trial in study.trials] == [TrialState.RUNNING]

    def failed() -> bool:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        return study.trials[0].state == TrialState.FAIL

    wait_until(failed, "the dead trial to be failed", timeout=30)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)  # runs the retry
    dead, retry = study.trials
    assert retry.system_attrs["failed_trial"] == dead.number == 0
    assert retry.state == TrialState.COMPLETE
    if queued:  # the queued parameters went with the retry
        assert retry.params == {"x": 0.5}


# -- the database restarting ------------------------------------------------------------------


def _postgresql(action: str) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
        check=True,
        capture_output=True,
        timeout=120,
    )


def _postgresql_is_up() -> bool:
    return subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"], timeout=30).returncode == 0


@pytest.mark.slow  # worker processes
@pytest.mark.destructive  # stops the PostgreSQL server every other test and person uses
@pytest.mark.parametrize("storage_url", ["postgresql"], indirect=True)
def test_workers_ride_out_a_database_restart(
    storage_url: str, study_name: str, tmp_path: Path
) -> None:
    if not os.path.isdir("/etc/postgresql"):
        pytest.skip("needs a local PostgreSQL cluster managed by pg_ctlcluster")
    trials = 20
    log = tmp_path / "workers.log"
    # A grace period longer than the outage: live trials must not look dead afterwards.
    workers = start_workers(
        storage_url,
        study_name,
        log,
        "--trials",
        str(trials),
        "--heartbeat-interval",
        "2",
        "--grace-period",
        "60",
        latency=0.5,
    )
    try:
        study = open_study(storage_url, study_name)
        wait_until(lambda: states(study)[TrialState.COMPLETE] >= 6, "six completed trials")
        _postgresql("stop")
        try:
            time.sleep(4)  # the outage itself, not a synchronisation
        finally:
            _postgresql("start")
        assert workers.wait(timeout=300) == 0, log.read_text()
    finally:
        if not _postgresql_is_up():
            _postgresql("start")
        if workers.poll() is None:
            workers.kill()
    output = log.read_text()
    assert "Storage unreachable or busy during" in output and "Storage reachable again" in output

    wait_until(_postgresql_is_up, "PostgreSQL")
    all_trials = study.get_trials()
    assert states(study) == {TrialState.COMPLETE: trials}
    assert double_evaluations(all_trials) == 0
    check_records(storage_url, study_name, all_trials)


# -- the LLM endpoint failing -----------------------------------------------------------------


def test_llm_failures_fail_their_trials_and_the_worker_goes_on(
    sqlite_url: str, study_name: str
) -> None:
    phases = [
        Reply.error(429, headers={"Retry-After": "0.1"}),
        Reply.error(500, headers=FAST_RETRY),
        Reply.slow("too late", delay_s=10.0),
        Reply.malformed(),
        Reply.ok("TERMINATE"),  # the endpoint is back
    ]
    with OpenAIServer() as server:
        llm = to.LLM(
            "openai/test-model",
            api_base=server.base_url,
            api_key="sk-test",
            num_retries=1,
            timeout=0.5,
        )
        app = dataclasses.replace(support_workers.app, llm=llm)
        requests: list[int] = []

        def next_phase(study: optuna.Study, trial: FrozenTrial) -> None:
            requests.append(len(server.requests))
            if phases:
                server.default = phases.pop(0)

        finished = run_worker(
            app, study_name=study_name, storage=sqlite_url, n_trials=6, callbacks=[next_phase]
        )
    assert finished == 6  # the worker lived through every failure
    study = app.study(study_name=study_name, storage=sqlite_url)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] + [TrialState.FAIL] * 4 + [
        TrialState.COMPLETE
    ]
    errors = [study.record(number).error or "" for number in range(1, 5)]
    for error in errors:
        assert error.startswith("LLMError: The LLM call to 'openai/test-model' failed")
    assert "RateLimitError" in errors[0]
    assert "InternalServerError" in errors[1] or "500" in errors[1]
    assert "Timeout" in errors[2] or "timed out" in errors[2]
    assert requests[0] == 0  # the baseline asks no LLM
    per_trial = [after - before for before, after in zip(requests[:-1], requests[1:], strict=True)]
    # Retried, and bounded: at most the SDK's and litellm's retries (2 * num_retries + 1).
    for count in per_trial[:4]:
        assert 2 <= count <= 3
    assert per_trial[4] == 1
    assert study.record(5).duplicate_of == 0  # TERMINATE: the parent again, not re-evaluated
