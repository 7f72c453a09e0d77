"""Several studies over shared parameters: ownership, publish and pick-up through the registry,
compare-and-set conflicts and their policies, history queries, concurrent workers of two
studies, and a crash of one study's worker."""

from __future__ import annotations

from collections import Counter
import os
from pathlib import Path
import signal
import subprocess
import sys
from typing import Any
import uuid

import optuna
from optuna.trial import FrozenTrial
from optuna.trial import TrialState
import pytest
import sqlalchemy
from support_concurrency import assert_ran_at_once
from support_concurrency import by_worker
from support_shared import Member
from test_faults import wait_until

import trace_optuna as to
from trace_optuna import records
from trace_optuna import testing
from trace_optuna.registry import Registry
from trace_optuna.registry import State
from trace_optuna.registry import Version
from trace_optuna.storage import resolve_storage

TESTS = Path(__file__).parent
SIMULATED = "simulated/feedback-follower"


def make_team() -> dict:
    return {"a": Member("a"), "b": Member("b")}


class Evaluate:
    """Score ``a.x + b.x`` (feedback: larger). Remembers what each run saw; ``before`` runs
    first in a chosen run (to publish as another study would, mid-trial)."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.feedback_at_start: list[bool] = []
        self.before: dict[int, Any] = {}

    def __call__(self, team: dict) -> to.Evaluation:
        action = self.before.pop(len(self.seen), None)
        if action is not None:
            action()
        self.feedback_at_start.append(any(member.x.feedback for member in team.values()))
        self.seen.append(to.snapshot(team))
        out = team["a"].act(team["b"].x)
        return to.Evaluation(
            score=float(out.data),
            feedback="x should be larger.",
            output=out,
            details={"seen": self.seen[-1]},
        )


def shared_study(
    url: str, name: str, team: to.ParameterSet, pattern: str, evaluate: Any, **kwargs: Any
) -> to.TraceStudy:
    return to.create_study(
        study_name=name,
        storage=url,
        parameters=team.select(pattern),
        evaluate=evaluate,
        llm=to.LLM(SIMULATED, simulated_seed=0, temperature=0),
        seed=0,
        load_if_exists=True,
        figure_interval=None,
        **kwargs,
    )


def state_at(versions: list[Version], number: int) -> State:
    values: dict[str, Any] = {}
    set_by: dict[str, int] = {}
    for version in versions[: number + 1]:
        values.update(version.values)
        set_by.update(dict.fromkeys(version.values, version.number))
    return State(number, values, set_by)


def check_log(versions: list[Version]) -> None:
    """The registry's log is whole and every publish was a successful compare-and-set."""
    assert [version.number for version in versions] == list(range(len(versions)))
    assert versions[0].study is None and versions[0].base is None
    for version in versions[1:]:
        assert version.values and set(version.values) <= set(version.owned)
        assert version.base is not None and version.base < version.number
        between = versions[version.base + 1 : version.number]
        # No version after the base changed a path the publisher selects: nothing lost.
        assert not [w.number for w in between if set(w.values) & set(version.owned)]


def check_published(trials: list[FrozenTrial], versions: list[Version], study: str) -> int:
    """Every trial that says it published is in the log as itself; return how many."""
    count = 0
    for trial in trials:
        publish = trial.user_attrs.get(records.PUBLISH)
        if not publish or publish["status"] != "published":
            continue
        version = versions[publish["version"]]
        assert (version.study, version.trial) == (study, trial.number)
        assert version.score == publish["score"] and version.base == publish["base"]
        assert sorted(version.values) == publish["paths"]
        count += 1
    return count


# -- one process: publish, pick up, history -----------------------------------------------------


def test_studies_publish_improvements_and_pick_up_each_others(
    storage_url: str, study_name: str
) -> None:
    team = to.ParameterSet(make_team, name=f"team-{uuid.uuid4().hex[:8]}")
    evaluate_left, evaluate_both = Evaluate(), Evaluate()
    left = shared_study(storage_url, f"{study_name}-left", team, "a.*", evaluate_left)
    both = shared_study(storage_url, f"{study_name}-both", team, "*", evaluate_both)
    left.optimize(n_trials=3)
    both.optimize(n_trials=3)
    left.optimize(n_trials=3)

    registry = Registry(resolve_storage(storage_url), team.name)
    versions = registry.versions()
    check_log(versions)
    assert versions[0].values == {"a.x": 1, "b.x": 1}
    published = {
        name: check_published(study.trials, versions, study.study_name)
        for name, study in (("left", left), ("both", both))
    }
    assert published["left"] >= 2 and published["both"] >= 1
    assert len(versions) == 1 + published["left"] + published["both"]

    for study in (left, both):
        assert [t.state for t in study.trials] == [TrialState.COMPLETE] * len(study.trials)
        for trial in study.trials:
            seen = records.decode(trial.user_attrs, records.DETAILS)["seen"]
            ran_with = trial.user_attrs[records.REGISTRY]
            assert ran_with["name"] == team.name
            # Every parameter the study does not select had the registry's value of the
            # version the trial recorded; its own came from its candidate.
            state = state_at(versions, ran_with["version"])
            candidate = study.record(trial.number).snapshot
            assert seen == {**state.values, **candidate}
            assert sorted(candidate) == sorted(study.objective.parameters)

    # ``both`` published a.x after left's first trials: left picked it up as it was.
    pickups = [t for t in left.trials if t.user_attrs[records.STRATEGY] == "registry"]
    assert pickups, [t.user_attrs[records.STRATEGY] for t in left.trials]
    for pickup in pickups:
        state = state_at(versions, pickup.user_attrs[records.REGISTRY]["version"])
        assert left.record(pickup.number).snapshot == {"a.x": state.values["a.x"]}
        assert versions[state.set_by["a.x"]].study == both.study_name
    # And ``both`` started from the registry, which left had already changed.
    both_first = both.record(0).snapshot
    assert (
        both_first["a.x"]
        == state_at(versions, both.trials[0].user_attrs[records.REGISTRY]["version"]).values["a.x"]
        != 1
    )

    history = to.registry_history(storage_url, "a.x", registry=team.name)
    assert [change.version for change in history] == [
        version.number for version in versions if "a.x" in version.values
    ]
    assert history[0].old is None and history[0].new == 1 and history[0].study is None
    for before, change in zip(history, history[1:], strict=False):
        assert change.old == before.new
        record = (left if change.study == left.study_name else both).record(change.trial)
        assert record.snapshot["a.x"] == change.new and record.value == change.score
    assert {change.study for change in history[1:]} == {left.study_name, both.study_name}
    assert [c.version for c in team.history(storage_url, "b.x")][0] == 0


def test_history_finds_the_registry_when_the_storage_holds_one(
    storage_url: str, study_name: str, tmp_path: Path
) -> None:
    common = {"evaluate": Evaluate(), "llm": SIMULATED, "seed": 0}
    alone = f"sqlite:///{tmp_path / 'alone.db'}"
    team = to.ParameterSet(make_team, name="only-team")
    to.create_study(
        study_name="s", parameters=team.select("a.*"), storage=alone, **common
    ).optimize(n_trials=3)
    assert to.registry_history(alone, "a.x") == to.registry_history(
        alone, "a.x", registry="only-team"
    )

    # On a server the session's other tests made registries too: all of them are listed.
    names = [f"{study_name}-{n}" for n in (1, 2)]
    for name in names:
        other = to.ParameterSet(make_team, name=name)
        to.create_study(
            study_name=name, parameters=other.select("*"), storage=storage_url, **common
        ).optimize(n_trials=1)
    with pytest.raises(to.ConfigurationError, match="give registry=") as error:
        to.registry_history(storage_url, "a.x")
    assert all(repr(name) in str(error.value) for name in names)

    missing = tmp_path / "never.db"
    with pytest.raises(to.ConfigurationError, match="holds no study yet"):
        to.registry_history(f"sqlite:///{missing}", "a.x")
    with pytest.raises(to.ConfigurationError, match="holds no study yet"):
        team.current(f"sqlite:///{missing}")
    assert not missing.exists()  # reading did not create an empty database
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    optuna.create_study(storage=empty)
    with pytest.raises(to.ConfigurationError, match="holds no parameter registry"):
        to.registry_history(empty, "a.x")


def test_a_publish_whose_answer_was_lost_is_recognised_as_its_own(sqlite_url: str) -> None:
    from trace_optuna.coordination import shared_place
    from trace_optuna.registry import _SQLLog

    class AnswerLostOnce(_SQLLog):
        """Commits the version, then fails as a dropped connection would, once."""

        lost = False

        def _append(self, registry: str, number: int, record: str) -> bool:
            appended = super()._append(registry, number, record)
            if number > 0 and not self.lost:
                self.lost = True
                raise sqlalchemy.exc.OperationalError("INSERT", {}, ConnectionError("dropped"))
            return appended

    storage = resolve_storage(sqlite_url)
    registry = Registry(storage, f"lost-{uuid.uuid4().hex[:8]}")
    place = shared_place(storage)
    registry._log = AnswerLostOnce(place.engine, retry_timeout=5)
    state = registry.initialize({"a.x": 1, "b.x": 1})
    published = registry.publish(
        {"a.x": 2}, base=state.version, owned=["a.x"], study="s", trial=1, score=1.0, worker={}
    )
    # The retry found its own version 1 (committed before the error): published, no conflict.
    assert published.version == 1 and published.conflicting_versions == ()
    assert [v.number for v in registry.versions()] == [0, 1]
    assert registry._log.lost


def test_a_lambda_parameter_set_needs_a_name() -> None:
    with pytest.raises(to.ConfigurationError, match="ParameterSet of a lambda needs name="):
        to.ParameterSet(lambda: make_team())
    assert to.ParameterSet(lambda: make_team(), name="team").name == "team"


# -- conflicts ----------------------------------------------------------------------------------


def _intrude(url: str, name: str, values: dict[str, Any], owned: tuple[str, ...]) -> None:
    """Publish as another study would, while a trial of the study under test runs."""
    registry = Registry(resolve_storage(url), name)
    result = registry.publish(
        values,
        base=registry.state().version,
        owned=owned,
        study="intruder",
        trial=0,
        score=0.0,
        worker={"host": "elsewhere", "pid": 1},
    )
    assert result.version is not None


# The compare-and-set that detects the conflict runs on every storage; what each policy does
# with a detected conflict is the same logic everywhere, so the other outcomes run on SQLite.
@pytest.mark.parametrize(
    ("storage_url", "policy", "intrusion", "status"),
    [
        *[
            pytest.param(kind, "reevaluate", {"a.x": 100}, "published", id=f"{kind}-published")
            for kind in testing.STORAGE_KINDS
        ],
        pytest.param(
            "sqlite",
            "reevaluate",
            {"a.x": 100, "b.x": -1000},
            "conflict_rejected",
            id="sqlite-conflict_rejected",
        ),
        pytest.param("sqlite", "skip", {"a.x": 100}, "conflict_skipped", id="sqlite-skipped"),
    ],
    indirect=["storage_url"],
)
def test_a_conflicting_publish_is_detected_recorded_and_resolved(
    storage_url: str, study_name: str, policy: str, intrusion: dict[str, Any], status: str
) -> None:
    team = to.ParameterSet(make_team, name=f"team-{uuid.uuid4().hex[:8]}")
    evaluate = Evaluate()
    left = shared_study(storage_url, study_name, team, "a.*", evaluate, on_conflict=policy)
    left.optimize(n_trials=1)  # the baseline
    # While trial 1 evaluates its candidate, another study publishes a.x (and maybe b.x):
    # trial 1's publish finds a.x changed since the trial started.
    evaluate.before[1] = lambda: _intrude(storage_url, team.name, intrusion, ("a.x", "b.x"))
    left.optimize(n_trials=1)
    assert not evaluate.before  # it ran

    trial = left.trials[1]
    assert trial.state == TrialState.COMPLETE and trial.value > left.trials[0].value
    publish = trial.user_attrs[records.PUBLISH]
    assert publish["status"] == status
    (conflict,) = publish["conflicts"]
    assert conflict == {"base": 0, "newest": 1, "paths": ["a.x"], "versions": [1]}
    versions = Registry(resolve_storage(storage_url), team.name).versions()
    check_log(versions)
    assert versions[1].study == "intruder"
    if status == "published":
        # Re-evaluated on version 1 (a.x is the trial's own value again, b.x unchanged), still
        # better than the study's best: published on top of the intruder, saying so.
        assert evaluate.seen[2] == {"a.x": left.record(1).snapshot["a.x"], "b.x": 1}
        assert len(versions) == 3
        assert (versions[2].study, versions[2].trial, versions[2].base) == (study_name, 1, 1)
        assert versions[2].conflicts == (1,) and versions[2].values == {
            "a.x": evaluate.seen[2]["a.x"]
        }
        assert publish["version"] == 2 and publish["base"] == 1
        history = to.registry_history(storage_url, "a.x", registry=team.name)
        assert [(c.study, c.new) for c in history[1:]] == [
            ("intruder", 100),
            (study_name, evaluate.seen[2]["a.x"]),
        ]
    elif status == "conflict_rejected":
        # The re-evaluation ran with b.x = -1000: no longer better, so nothing was published.
        assert evaluate.seen[2]["b.x"] == -1000
        assert publish["score"] < left.trials[0].value
        assert len(versions) == 2
    else:
        assert len(evaluate.seen) == 2  # skipped: no re-evaluation
        assert len(versions) == 2
    if status != "published":
        # The next trial picks up the intruder's a.x and evaluates it as it is.
        left.optimize(n_trials=1)
        assert left.trials[2].user_attrs[records.STRATEGY] == "registry"
        assert left.record(2).snapshot == {"a.x": 100}


# -- the workflow: several studies, feedbacks and frequencies on the same nodes -------


def test_studies_alternating_in_one_process_on_one_agent_need_no_backward_bookkeeping(
    sqlite_url: str, study_name: str
) -> None:
    # The pitfall: one agent object whose nodes every optimizer touches, feedback left
    # from the last backward. Here the studies even share the agent instance itself.
    shared_team = make_team()
    team = to.ParameterSet(shared_team, name="one-team")
    studies = {
        pattern: (shared_study(sqlite_url, f"{study_name}-{i}", team, pattern, evaluate), evaluate)
        for i, (pattern, evaluate) in enumerate(
            [("a.*", Evaluate()), ("b.*", Evaluate()), ("*", Evaluate())]
        )
    }
    for round_ in range(4):
        for pattern, (study, _) in studies.items():
            if pattern != "*" or round_ % 2 == 1:  # the workflow study every other round
                study.optimize(n_trials=1)
    for study, evaluate in studies.values():
        assert [t.state for t in study.trials] == [TrialState.COMPLETE] * len(study.trials)
        # Every run started with no feedback left on any parameter by an earlier backward.
        assert evaluate.feedback_at_start and not any(evaluate.feedback_at_start)
    check_log(Registry(resolve_storage(sqlite_url), "one-team").versions())


# -- errors --------------------------------------------------------------------------------------


def test_wrong_use_gets_errors_that_name_the_rule(sqlite_url: str, study_name: str) -> None:
    team = to.ParameterSet(make_team, name="team")
    with pytest.raises(to.ConfigurationError, match=r"'c\.\*' selects no parameter.*'a\.x'"):
        team.select("c.*")
    with pytest.raises(to.ConfigurationError, match="at least one path pattern"):
        team.select()
    with pytest.raises(to.ConfigurationError, match="function that builds the agent"):
        to.ParameterSet(42)
    common = {"evaluate": Evaluate(), "llm": SIMULATED, "storage": sqlite_url}
    with pytest.raises(to.ConfigurationError, match="not both"):
        to.create_study(agent=make_team, parameters=team.select("*"), **common)
    with pytest.raises(to.ConfigurationError, match="Give agent= .* or parameters="):
        to.create_study(**common)
    with pytest.raises(
        to.ConfigurationError, match=r"on_conflict must be one of \['reevaluate', 'skip'\]"
    ):
        to.create_study(parameters=team.select("*"), on_conflict="overwrite", **common)
    with pytest.raises(
        to.ConfigurationError, match="must be a selection of a trace_optuna.ParameterSet"
    ):
        to.create_study(parameters=["a.x"], **common)
    with pytest.raises(to.ConfigurationError, match=r"on_conflict must be one of"):
        to.create_study(agent=make_team, on_conflict="overwrite", **common)  # not only if shared
    with pytest.raises(to.ConfigurationError, match="publishes its best by one score"):
        to.create_study(
            parameters=team.select("a.*"), directions=["maximize", "minimize"], **common
        )

    study = to.create_study(study_name=study_name, parameters=team.select("a.*"), **common)
    study.optimize(n_trials=1)
    with pytest.raises(to.ConfigurationError, match="over the shared parameters 'team'"):
        to.load_study(study_name=study_name, agent=make_team, **common)
    with pytest.raises(
        to.ConfigurationError,
        match=r"created over the paths \['a\.x'\] of ParameterSet 'team'; this selection has",
    ):
        to.load_study(study_name=study_name, parameters=team.select("*"), **common)

    # Another team under the same registry name: refused, the registry is left as it was.
    def other_team() -> dict:
        return {"c": Member("c")}

    other = to.ParameterSet(other_team, name="team")
    clash = to.create_study(study_name=f"{study_name}-2", parameters=other.select("*"), **common)
    with pytest.raises(to.ConfigurationError, match=r"holds the paths \['a\.x', 'b\.x'\]"):
        clash.optimize(n_trials=3)  # a broken contract stops optimize at its first trial
    assert [trial.state for trial in clash.trials] == [TrialState.FAIL]
    assert "holds the paths ['a.x', 'b.x']" in clash.trials[0].user_attrs[records.ERROR]
    assert list(Registry(resolve_storage(sqlite_url), "team").state().values) == ["a.x", "b.x"]
    with pytest.raises(to.ConfigurationError, match="no parameter 'c.x'"):
        to.registry_history(sqlite_url, "c.x", registry="team")
    with pytest.raises(to.ConfigurationError, match="'nobody' is empty"):
        to.registry_history(sqlite_url, "a.x", registry="nobody")


# -- worker processes of two studies at once ---------------------------------------------------


def _start(
    url: str, study: str, app: str, log: Path, registry: str, *args: str
) -> subprocess.Popen:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")])),
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        TRACE_OPTUNA_TEST_REGISTRY=registry,
        TRACE_OPTUNA_TEST_LATENCY="0.2",
    )
    command = [sys.executable, "-m", "trace_optuna", "workers", "--processes", "2"]
    command += ["--storage", url, "--study", study, "--app", f"support_shared:{app}", *args]
    with log.open("w") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def _trials(url: str, study: str) -> list[FrozenTrial]:
    storage = resolve_storage(url, heartbeat_interval=None)
    return optuna.load_study(study_name=study, storage=storage).get_trials()


def _run_two_studies(
    url: str, study_name: str, tmp_path: Path, trials: int, kill: bool = False
) -> tuple[list[Version], dict[str, list[FrozenTrial]], str]:
    registry = f"team-{uuid.uuid4().hex[:8]}"
    names = {"left": f"{study_name}-left", "both": f"{study_name}-both"}
    logs = {app: tmp_path / f"{app}.log" for app in names}
    workers = {
        app: _start(url, names[app], app, logs[app], registry, "--trials", str(trials))
        for app in names
    }
    killed = ""
    try:
        if kill:
            killed = _kill_one_inside_a_step(url, names["left"])
        for app, process in workers.items():
            assert process.wait(timeout=300) == 0, logs[app].read_text()
    finally:
        for process in workers.values():
            if process.poll() is None:
                process.kill()
    versions = Registry(resolve_storage(url, heartbeat_interval=None), registry).versions()
    return versions, {app: _trials(url, names[app]) for app in names}, killed


def _kill_one_inside_a_step(url: str, study: str) -> str:
    storage = resolve_storage(url, heartbeat_interval=None)

    def inside() -> tuple[int, int] | None:
        try:
            found = optuna.load_study(study_name=study, storage=storage)
        except KeyError:
            return None
        for trial in found.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = trial.user_attrs.get(records.WORKER)
            if worker and "strategy" in trial.params:
                return trial.number, int(worker["pid"])
        return None

    number, pid = wait_until(inside, "a worker of the left study inside a step")
    os.kill(pid, signal.SIGKILL)
    return f"{number}:{pid}"


@pytest.mark.slow  # worker processes
@pytest.mark.parametrize("storage_url", ["postgresql", "mysql", "redis"], indirect=True)
def test_workers_of_two_studies_at_once_lose_no_update(
    storage_url: str, study_name: str, tmp_path: Path
) -> None:
    versions, trials, _ = _run_two_studies(storage_url, study_name, tmp_path, trials=12)
    # What follows is about collisions: the two studies, and each study's two workers, ran
    # trials at the same time.
    assert_ran_at_once(trials, "the two studies")
    for app in trials:
        assert_ran_at_once(by_worker(trials[app]), f"the two workers of {app!r}")
    check_log(versions)
    assert set(versions[0].values) == {"a.x", "b.x"}
    published = sum(
        check_published(trials[app], versions, f"{study_name}-{app}") for app in trials
    )
    assert published == len(versions) - 1  # every version is a trial that says so
    for app in trials:
        assert Counter(t.state for t in trials[app]) == {TrialState.COMPLETE: 12}
    # The workers collided (two studies on a.x, two workers of one study on its paths), and
    # each collision is recorded as the log shows it: the versions after the trial's base
    # that changed paths its study selects.
    owned = {"left": {"a.x"}, "both": {"a.x", "b.x"}}
    conflicts = 0
    for app in trials:
        for trial in trials[app]:
            for conflict in (trial.user_attrs.get(records.PUBLISH) or {}).get("conflicts", []):
                conflicts += 1
                newer = versions[conflict["base"] + 1 : conflict["newest"] + 1]
                clashing = [v for v in newer if set(v.values) & owned[app]]
                assert conflict["versions"] == [v.number for v in clashing]
                assert set(conflict["paths"]) == {
                    path for v in clashing for path in v.values if path in owned[app]
                }
    assert conflicts, "no conflict happened: the test did not exercise the compare-and-set"


@pytest.mark.slow  # worker processes
@pytest.mark.parametrize("storage_url", ["postgresql"], indirect=True)
def test_a_crashed_worker_of_one_study_resumes_and_the_registry_stays_whole(
    storage_url: str, study_name: str, tmp_path: Path
) -> None:
    versions, trials, killed = _run_two_studies(
        storage_url, study_name, tmp_path, trials=8, kill=True
    )
    assert_ran_at_once(trials, "the two studies")
    number = int(killed.split(":")[0])
    left = trials["left"]
    assert Counter(t.state for t in left) == {TrialState.COMPLETE: 8, TrialState.FAIL: 1}
    assert left[number].state == TrialState.FAIL
    (retry,) = [t for t in left if t.system_attrs.get("failed_trial") == number]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs[records.RETRY_OF] == number
    assert Counter(t.state for t in trials["both"]) == {TrialState.COMPLETE: 8}
    check_log(versions)
    published = sum(
        check_published(trials[app], versions, f"{study_name}-{app}") for app in trials
    )
    # The killed trial may have published before it died; nothing else is unaccounted for.
    orphans = [
        v.number
        for v in versions[1:]
        if not any(
            (t.user_attrs.get(records.PUBLISH) or {}).get("version") == v.number
            for app in trials
            for t in trials[app]
        )
    ]
    assert len(orphans) == len(versions) - 1 - published  # (check_published counted them)
    assert len(orphans) <= 1
    assert all(
        versions[n].trial == number and versions[n].study == f"{study_name}-left" for n in orphans
    )


def test_figures_show_who_changed_the_shared_parameters(sqlite_url: str, study_name: str) -> None:
    from trace_optuna import visualization

    team = to.ParameterSet(make_team, name="team")
    left = shared_study(sqlite_url, f"{study_name}-left", team, "a.*", Evaluate())
    both = shared_study(sqlite_url, f"{study_name}-both", team, "*", Evaluate())
    left.optimize(n_trials=2)
    both.optimize(n_trials=2)
    versions = Registry(resolve_storage(sqlite_url), "team").versions()

    figure = visualization.plot_registry_history(sqlite_url, "team")
    points = {trace.name: sorted(zip(trace.x, trace.y, strict=True)) for trace in figure.data}
    expected: dict[str, list[tuple[int, str]]] = {}
    for version in versions:
        for path in version.values:
            expected.setdefault(version.study or "initial values", []).append(
                (version.number, path)
            )
    assert points == {name: sorted(value) for name, value in expected.items()}
    assert set(points) == {"initial values", left.study_name, both.study_name}

    lineage = visualization.plot_lineage(left)
    (stars,) = [trace for trace in lineage.data if trace.name == "published to the registry"]
    published = [
        t.number
        for t in left.trials
        if (t.user_attrs.get(records.PUBLISH) or {}).get("status") == "published"
    ]
    assert list(stars.x) == published and published
