"""STOP end to end: real storages, the demo agent, the simulated model, real sandboxes."""

from __future__ import annotations

import json
import textwrap

import optuna
from optuna.trial import TrialState
import pytest
from support_agents import CountingEvaluate
from support_agents import Greeter
from support_agents import make_greeter

import trace_optuna as to
from trace_optuna import demo
from trace_optuna import records
from trace_optuna.exceptions import ConfigurationError
from trace_optuna.storage import resolve_storage
from trace_optuna.strategies.stop import SEED_IMPROVER
from trace_optuna.strategies.stop import StopStrategy
from trace_optuna.strategies.stop import check_improver_source
from trace_optuna.strategies.stop import improver_versions

SIMULATED = demo.DEMO_LLM
FAST = {"num_candidates": (2, 2), "meta_budget": 1, "timeout_s": 20}
HEADER = "def improve(solution, feedback, utility, llm, budget):\n"

# Lazy on solutions (it never improves one); on its own source it returns STOP's seed improver.
LAZY_THEN_SEED = (
    HEADER
    + "    if isinstance(solution, str):\n        return SEED\n    return solution\n\n\n"
    + f"SEED = {SEED_IMPROVER!r}\n"
)


def seed_then(meta_body: str) -> str:
    """STOP's seed improver on solutions, ``meta_body`` on its own source."""
    return (
        SEED_IMPROVER.replace("def improve(", "def seed_improve(")
        + "\n\n"
        + HEADER
        + "    if isinstance(solution, str):\n"
        + textwrap.indent(meta_body, "        ")
        + "    return seed_improve(solution, feedback, utility, llm, budget)\n"
    )


LAZY = HEADER + "    return solution\n"
SEED_THEN_LAZY = seed_then(f"return {LAZY!r}\n")
RAISING = HEADER + "    raise RuntimeError(budget)\n"
SEED_THEN_RAISING = seed_then(f"return {RAISING!r}\n")


def stop_study(storage: str, name: str, strategy: StopStrategy, **kwargs: object) -> to.TraceStudy:
    """A STOP study of the Greeter, whose first steps each improve the score by 0.5."""
    options: dict = dict(
        study_name=name,
        storage=storage,
        agent=make_greeter,
        evaluate=CountingEvaluate(),
        llm=SIMULATED,
        strategies=[strategy],
        load_if_exists=True,
        seed=0,
    )
    options.update(kwargs)
    return to.create_study(**options)


def versions_used(study: to.TraceStudy) -> list[str | None]:
    return [trial.user_attrs.get("trace:stop_version") for trial in study.trials]


@pytest.mark.slow  # 9-15 s here
def test_stop_improves_and_its_lineage_lives_in_the_storage(
    storage_url: str, study_name: str
) -> None:
    strategy = StopStrategy(meta_every=1, seed_source=LAZY_THEN_SEED, **FAST)
    study = stop_study(storage_url, study_name, strategy)
    study.optimize(n_trials=7)

    trials = study.trials
    assert all(trial.state == TrialState.COMPLETE for trial in trials)
    # Every STOP trial records its version: the lazy seed; its child t2 (STOP's seed improver,
    # which the lazy one returns for its own source) trialled in trial 3, accepted by trial 4;
    # t2's own rewrite t4 (through the simulated model) trialled in trial 5, reverted by 6.
    assert versions_used(study) == [None, "seed", "seed", "t2", "t2", "t4", "t2"]
    improvements = [study.record(n).improvement for n in range(1, 7)]
    assert improvements == [0.0, 0.0, 0.5, 0.5, 0.0, 0.0]
    assert study.best_value == 1.0  # STOP trials improved the agent

    assert "stop.num_candidates" in study.record(3).params
    assert trials[2].user_attrs["trace:stop_meta"]["from"] == "seed"
    assert trials[2].user_attrs["trace:stop_meta"]["outcome"] == "created"
    assert trials[4].user_attrs["trace:stop_meta"]["from"] == "t2"
    decisions = [trials[n].user_attrs["trace:stop_decisions"] for n in (4, 6)]
    assert [(d[0]["version"], d[0]["status"]) for d in decisions] == [
        ("t2", "accepted"),
        ("t4", "reverted"),
    ]

    # A fresh reader (another storage object, as another process would have) sees it all.
    loaded = optuna.load_study(study_name=study_name, storage=resolve_storage(storage_url))
    versions = improver_versions(loaded)
    assert list(versions) == ["seed", "t2", "t4", "t6"]
    seed, child, grandchild = versions["seed"], versions["t2"], versions["t4"]
    assert (seed.parent, child.parent, grandchild.parent) == (None, "seed", "t2")
    assert seed.source == LAZY_THEN_SEED and child.source.strip() == SEED_IMPROVER.strip()
    assert check_improver_source(grandchild.source) is None
    assert grandchild.source != child.source
    assert (seed.status, child.status, grandchild.status) == ("accepted", "accepted", "reverted")
    assert seed.meta_utility == 0.0 and seed.trials == [1, 2]
    assert child.parent_meta_utility == 0.0 and "beats its parent's 0" in child.reason
    assert child.meta_utility == 0.5 and child.trials == [3, 4]
    assert grandchild.meta_utility == 0.0 and grandchild.trials == [5]
    assert "does not beat its parent's 0.5" in grandchild.reason
    assert (child.created_by, child.decided_by) == (2, 4)
    assert (grandchild.created_by, grandchild.decided_by) == (4, 6)
    assert versions["t6"].parent == "t2"  # trial 6 ran the next meta-step from t2


def test_a_trialled_version_that_scores_worse_is_reverted(
    sqlite_url: str, study_name: str
) -> None:
    strategy = StopStrategy(meta_every=1, seed_source=SEED_THEN_LAZY, **FAST)
    study = stop_study(sqlite_url, study_name, strategy)
    study.optimize(n_trials=5)
    assert versions_used(study) == [None, "seed", "seed", "t2", "seed"]
    assert study.record(3).improvement == 0.0 and study.record(3).duplicate_of == 2
    lazy = improver_versions(study.optuna)["t2"]
    assert lazy.source == LAZY and lazy.parent == "seed"
    assert lazy.status == "reverted" and lazy.meta_utility == 0.0 and lazy.trials == [3]
    assert lazy.parent_meta_utility == 0.5 and "does not beat its parent's 0.5" in lazy.reason
    assert study.trials[4].user_attrs["trace:stop_decisions"][0]["status"] == "reverted"


def test_a_trialled_version_that_fails_is_reverted_and_the_study_goes_on(
    sqlite_url: str, study_name: str
) -> None:
    strategy = StopStrategy(meta_every=1, seed_source=SEED_THEN_RAISING, **FAST)
    study = stop_study(sqlite_url, study_name, strategy)
    study.optimize(n_trials=5)
    states = [trial.state for trial in study.trials]
    assert states == [TrialState.COMPLETE] * 3 + [TrialState.FAIL, TrialState.COMPLETE]
    assert versions_used(study) == [None, "seed", "seed", "t2", "seed"]
    failed = study.record(3)
    assert failed.error.startswith("ImproverFailed: The improver failed (error)")
    assert "RuntimeError" in failed.error
    assert study.trials[3].user_attrs["trace:stop_run"]["failure"] == "error"
    broken = improver_versions(study.optuna)["t2"]
    assert broken.status == "reverted" and broken.reason.startswith("Trial#3: ImproverFailed")


@pytest.mark.parametrize(
    "meta_body, outcome, reason",
    [
        ("raise ValueError('no better idea')\n", "failed", "ValueError: no better idea"),
        ("while True:\n    pass\n", "failed", "(timeout)"),
        ("return [llm('x') for _ in range(budget + 1)]\n", "failed", "(budget)"),
        ("return 'def improve(:'\n", "invalid", "does not compile"),
        ("return solution\n", "unchanged", "kept the source"),
    ],
)
def test_a_meta_step_that_goes_wrong_reverts_at_once(
    sqlite_url: str, study_name: str, meta_body: str, outcome: str, reason: str
) -> None:
    strategy = StopStrategy(
        meta_every=1, timeout_s=0.5, num_candidates=(2, 2), seed_source=seed_then(meta_body)
    )
    study = stop_study(sqlite_url, study_name, strategy)
    study.optimize(n_trials=3)
    assert all(trial.state == TrialState.COMPLETE for trial in study.trials)
    meta = study.trials[2].user_attrs["trace:stop_meta"]
    assert meta["outcome"] == outcome and reason in meta["reason"]
    version = improver_versions(study.optuna)["t2"]
    assert version.status == "reverted" and reason in version.reason
    assert version.parent == "seed" and version.decided_by == 2


SOLUTION_FAILURES = [
    pytest.param("return [llm('x') for _ in range(budget + 1)]\n", "budget", id="budget"),
    pytest.param("while True:\n    pass\n", "timeout", id="infinite-loop"),
    pytest.param(
        "import os\nprint(os.environ['OPENAI_API_KEY'])\n", "error", id="reads-environment"
    ),
    pytest.param("hog = bytearray(4 * 1024 ** 3)\n", "memory", id="memory-bomb"),
    pytest.param("return undefined_name\n", "error", id="name-error"),
    pytest.param("raise KeyError('boom')\n", "error", id="exception"),
    pytest.param("return {'excitement': 3}\n", "result", id="missing-paths"),
    pytest.param("return dict(solution, excitement='many')\n", "result", id="wrong-type"),
    pytest.param("return {1, 2}\n", "result", id="not-json"),
]


@pytest.mark.parametrize("body, kind", SOLUTION_FAILURES)
def test_an_improver_that_breaks_a_rule_fails_its_trial_and_the_study_goes_on(
    sqlite_url: str, study_name: str, monkeypatch: pytest.MonkeyPatch, body: str, kind: str
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-parent-secret")
    source = HEADER + textwrap.indent(body, "    ")
    strategy = StopStrategy(
        meta_every=10, timeout_s=0.5, memory_mb=256, num_candidates=(2, 2), seed_source=source
    )
    study = stop_study(sqlite_url, study_name, strategy)
    study.optimize(n_trials=3)
    assert [trial.state for trial in study.trials] == [TrialState.COMPLETE] + [TrialState.FAIL] * 2
    for number in (1, 2):
        record = study.record(number)
        assert record.error.startswith(f"ImproverFailed: The improver failed ({kind})")
        run = study.trials[number].user_attrs["trace:stop_run"]
        assert run["failure"] == kind and run["version"] == "seed"
    stored = json.dumps([trial.user_attrs for trial in study.trials])
    assert "sk-parent-secret" not in stored + json.dumps(study.optuna.user_attrs)


def test_an_improver_cannot_smuggle_the_environment_into_a_solution(
    sqlite_url: str, study_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-parent-secret")
    body = "import json, os\nreturn dict(solution, greeting=json.dumps(dict(os.environ)))\n"
    source = HEADER + textwrap.indent(body, "    ")
    study = stop_study(sqlite_url, study_name, StopStrategy(seed_source=source))
    study.optimize(n_trials=2)
    record = study.record(1)
    assert record.state == "COMPLETE" and record.changed == ["greeting"]
    assert "OPENAI_API_KEY" not in record.snapshot["greeting"]
    assert "sk-parent-secret" not in json.dumps([trial.user_attrs for trial in study.trials])


def test_every_utility_call_is_a_recorded_evaluation_and_nothing_runs_twice(
    sqlite_url: str, study_name: str
) -> None:
    calls = []

    def evaluate(agent: demo.SupportAgent) -> to.Evaluation:
        calls.append(to.snapshot(agent))
        return demo.evaluate(agent)

    # The demo agent: its first step is a sideways move whose samples often repeat.

    strategy = StopStrategy(meta_every=10, num_candidates=(3, 3))
    study = stop_study(sqlite_url, study_name, strategy, agent=demo.make_agent, evaluate=evaluate)
    study.optimize(n_trials=2)
    record = study.record(1)
    run = study.trials[1].user_attrs["trace:stop_run"]
    assert run["llm_calls"] == 3 and record.llm["calls"] == 3
    assert run["utility_calls"] == 4  # the incumbent and three samples
    assert record.evaluated[0]["reused_from"] == 0  # the incumbent: its stored score
    hashes = [entry["snapshot_hash"] for entry in record.evaluated]
    assert len(hashes) == len(set(hashes)) >= 2  # a repeated sample is not evaluated again
    # The baseline, then each new candidate once: the chosen one was not evaluated again.
    assert len(calls) == 1 + len(record.evaluated) - 1
    assert record.duplicate_of is None and record.changed == ["max_words"]


def test_a_minimize_study_negates_the_utility(sqlite_url: str, study_name: str) -> None:
    counting = CountingEvaluate()

    def evaluate(agent: Greeter) -> to.Evaluation:
        result = counting(agent)
        return to.Evaluation(1 - result.score, result.feedback, result.output, result.details)

    strategy = StopStrategy(meta_every=1, seed_source=LAZY_THEN_SEED, **FAST)
    study = stop_study(sqlite_url, study_name, strategy, evaluate=evaluate, direction="minimize")
    study.optimize(n_trials=5)
    assert study.best_value < study.trials[0].value
    assert study.record(3).improvement == -0.5  # the trialled version lowered the score
    accepted = improver_versions(study.optuna)["t2"]
    assert accepted.status == "accepted" and accepted.meta_utility > 0  # higher is better


def test_a_long_source_is_stored_in_chunks(sqlite_url: str, study_name: str) -> None:
    long_seed = SEED_IMPROVER + "\n# " + "padding " * 10_000 + "\n"
    study = stop_study(sqlite_url, study_name, StopStrategy(seed_source=long_seed))
    study.optimize(n_trials=2)
    attrs = study.optuna.user_attrs
    assert "trace:stop:source:seed:chunks" in attrs
    assert max(len(json.dumps(value)) for value in attrs.values()) <= records.MAX_ATTR_BYTES
    assert improver_versions(study.optuna)["seed"].source == long_seed


def test_a_new_process_continues_the_lineage_from_the_storage(
    sqlite_url: str, study_name: str
) -> None:
    for n_trials in (3, 2):  # new objects each time: nothing is kept in memory between runs
        study = stop_study(sqlite_url, study_name, StopStrategy(meta_every=1, **FAST))
        study.optimize(n_trials=n_trials)
    used = versions_used(study)
    assert used[:3] == [None, "seed", "seed"]
    versions = improver_versions(study.optuna)
    assert versions["t2"].parent == "seed" and set(used[1:]) <= set(versions)
    assert used[3] == "t2"  # the second run trialled the version the first run created
    assert versions["t2"].status != "trialled" and versions["t2"].decided_by == 4


@pytest.mark.parametrize(
    "kwargs",
    [
        {"meta_every": 0},
        {"num_candidates": (3, 2)},
        {"num_candidates": 4},
        {"timeout_s": 0},
        {"memory_mb": 1},
        {"seed_source": "def improve(x):\n    return x\n"},
        {"seed_source": "improve = 1\n"},
    ],
)
def test_settings_are_validated(kwargs: dict) -> None:
    with pytest.raises(ConfigurationError):
        StopStrategy(**kwargs)


def test_the_seed_improver_is_a_valid_improver() -> None:
    assert check_improver_source(SEED_IMPROVER) is None
    assert "NUM_CANDIDATES = 6" in SEED_IMPROVER and "TEMPERATURE = 0.7" in SEED_IMPROVER
