"""Workers sharing one study: the app object, the worker command, candidate claims."""

from __future__ import annotations

from collections import Counter
import itertools
from pathlib import Path
import sys
import threading
import time
import types

import optuna
from optuna.trial import TrialState
import pytest
from support_concurrency import overlap

import trace_optuna as to
from trace_optuna import cli
from trace_optuna.coordination import Claim
from trace_optuna.coordination import coordinator_for
from trace_optuna.storage import resolve_storage
from trace_optuna.workers import App
from trace_optuna.workers import load_app

TESTS = Path(__file__).parent


@pytest.fixture(autouse=True)
def _importable_apps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TESTS))


def test_load_app_finds_an_app_or_a_function_returning_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import support_workers

    assert load_app("support_workers:app") is support_workers.app
    module = types.ModuleType("made_up_apps")
    module.factory = lambda: support_workers.app  # type: ignore[attr-defined]
    module.holder = types.SimpleNamespace(app=support_workers.app)  # type: ignore[attr-defined]
    module.number = 3  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "made_up_apps", module)
    assert load_app("made_up_apps:factory") is support_workers.app
    assert load_app("made_up_apps:holder.app") is support_workers.app
    with pytest.raises(to.ConfigurationError, match="is a int, not a trace_optuna.App"):
        load_app("made_up_apps:number")


@pytest.mark.parametrize(
    "reference, message",
    [
        ("support_workers", "must look like 'package.module:app'"),
        ("no_such_module_here:app", "Cannot import 'no_such_module_here'"),
        ("support_workers:nothing", "has no 'nothing'"),
    ],
)
def test_load_app_errors_name_the_problem(reference: str, message: str) -> None:
    with pytest.raises(to.ConfigurationError, match=message):
        load_app(reference)


def test_worker_command_runs_trials_and_refuses_another_strategy_list(
    sqlite_url: str, study_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--storage", sqlite_url, "--study", study_name]
    assert cli.main(["worker", *common, "--app", "support_workers:app", "--trials", "3"]) == 0
    assert "finished 3 trials" in capsys.readouterr().out
    status = cli.main(
        ["worker", *common, "--app", "support_workers:other_strategies", "--trials", "1"]
    )
    assert status == 2
    error = capsys.readouterr().err
    assert f"Study {study_name!r} was created with strategies ['optoprime']" in error
    assert "['optoprime', 'genetic']" in error and "Traceback" not in error
    study = optuna.load_study(study_name=study_name, storage=sqlite_url)
    assert len(study.trials) == 3  # the refused worker added nothing


def test_threads_are_refused_with_a_pointer_to_processes(sqlite_url: str, study_name: str) -> None:
    import support_workers

    study = support_workers.app.study(study_name=study_name, storage=sqlite_url)
    with pytest.raises(to.ConfigurationError, match="trace-optuna workers --processes N"):
        study.optimize(n_trials=2, n_jobs=2)


def test_a_users_own_study_cannot_run_steps_in_threads(sqlite_url: str, study_name: str) -> None:
    import support_workers

    app = support_workers.app
    objective = to.TraceObjective(app.agent, app.evaluate, app.llm)
    study = optuna.create_study(study_name=study_name, storage=sqlite_url, direction="maximize")
    study.optimize(objective, n_trials=1)  # the baseline, so the next trials take steps
    with pytest.raises(to.ConfigurationError, match="Another Trace step is running in a thread"):
        study.optimize(objective, n_trials=8, n_jobs=4, catch=(to.TrialFailed,))
    study.optimize(objective, n_trials=1)  # one thread at a time is fine again
    assert study.trials[-1].state == TrialState.COMPLETE


def test_app_settings_reach_the_storage(sqlite_url: str, study_name: str) -> None:
    import support_workers

    study = support_workers.app.study(study_name=study_name, storage=sqlite_url)
    storage = study.objective.coordinator.storage  # type: ignore[union-attr]
    assert storage.heartbeat_interval == 1 and storage.grace_period == 4
    assert isinstance(support_workers.app, App)


# -- candidate claims, on every storage ---------------------------------------------------


def _study_with_running_trials(
    url: str, name: str, count: int
) -> tuple[optuna.Study, optuna.storages.BaseStorage, list[int]]:
    storage = resolve_storage(url, heartbeat_interval=None)
    study = optuna.create_study(study_name=name, storage=storage)
    study_id = storage.get_study_id_from_name(name)
    return study, storage, [storage.create_new_trial(study_id) for _ in range(count)]


def test_a_candidate_is_held_by_one_running_trial_at_a_time(
    storage_url: str, study_name: str
) -> None:
    study, storage, (first, second) = _study_with_running_trials(storage_url, study_name, 2)
    coordinator = coordinator_for(storage)
    assert coordinator.claim(study, first, "candidate-a") == Claim(held=True)
    assert coordinator.claim(study, first, "candidate-a") == Claim(held=True)  # still its own
    assert coordinator.claim(study, second, "candidate-a") == Claim(held=False, holder=0)
    assert coordinator.claim(study, second, "candidate-b") == Claim(held=True)
    assert coordinator.is_running(study, 0)

    storage.set_trial_state_values(first, TrialState.FAIL)
    assert not coordinator.is_running(study, 0)
    assert coordinator.claim(study, second, "candidate-a") == Claim(held=True, taken_over=True)
    # Claims are per study.
    other, _, (third,) = _study_with_running_trials(storage_url, study_name + "-other", 1)
    assert coordinator.claim(other, third, "candidate-a") == Claim(held=True)


def test_claims_are_atomic_when_workers_race(storage_url: str, study_name: str) -> None:
    racers = 6
    study, storage, trial_ids = _study_with_running_trials(storage_url, study_name, racers)
    coordinator = coordinator_for(storage)
    start = threading.Barrier(racers)
    outcomes: dict[int, Claim] = {}
    intervals: list[tuple[float, float]] = []

    def claim(trial_id: int) -> None:
        start.wait()
        began = time.monotonic()
        outcomes[trial_id] = coordinator.claim(study, trial_id, "contested")
        intervals.append((began, time.monotonic()))

    threads = [threading.Thread(target=claim, args=(trial_id,)) for trial_id in trial_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # A race, not a queue: some claims were in flight at the same moment.
    assert any(overlap(a, b) for a, b in itertools.combinations(intervals, 2)), (
        f"no two claims overlapped in time ({intervals}): the race did not happen"
    )
    assert Counter(outcome.held for outcome in outcomes.values()) == {True: 1, False: racers - 1}
    (winner,) = [trial_id for trial_id, outcome in outcomes.items() if outcome.held]
    holders = {outcome.holder for outcome in outcomes.values() if not outcome.held}
    assert holders == {storage.get_trial_number_from_id(winner)}
