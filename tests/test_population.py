"""Population: the queries a step asks of the stored trials (best, top-k, tournament, lineage,
the Pareto front, where a value is held), on trials written as the step writes them.

The trials here carry only the record keys Population reads (snapshot references, values,
parents, duplicates), so each test states exactly which stored trials exist. Most run on a
SQLite file: they test the queries' rules. The one about what another worker's population
sees runs on every storage, since Optuna's per-process trial cache differs between them.
"""

from __future__ import annotations

from collections.abc import Sequence
import random
from typing import Any

import optuna
from optuna.trial import TrialState
import pytest

from trace_optuna import records
from trace_optuna.exceptions import RecordError
from trace_optuna.population import Population
from trace_optuna.snapshots import snapshot_hash
from trace_optuna.snapshots import value_hash
from trace_optuna.storage import resolve_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _held(study: optuna.Study) -> dict[tuple[str, str], int]:
    """Which trial introduced each (path, value hash) so far, as the step keeps track."""
    held: dict[tuple[str, str], int] = {}
    for trial in study.get_trials(deepcopy=False):
        for path, (digest, holder) in records.snapshot_refs(trial).items():
            held.setdefault((path, digest), holder)
    return held


def add(
    study: optuna.Study,
    value: float | list[float] | None,
    snapshot: dict[str, Any],
    parents: Sequence[int] = (),
    *,
    state: TrialState = TrialState.COMPLETE,
    duplicate_of: int | None = None,
) -> int:
    """Store one finished trial with the record keys a step writes; return its number.

    A value not held by an earlier trial is stored in this trial (``trace:value:<path>``);
    a known one is referenced, as the step stores each distinct value once per study.
    """
    trial = study.ask()
    held = _held(study)
    refs: dict[str, list[Any]] = {}
    for path, item in snapshot.items():
        digest = value_hash(item)
        holder = held.get((path, digest), trial.number)
        if holder == trial.number:
            trial.set_user_attr(records.value_key(path), item)
        refs[path] = [digest, holder]
    trial.set_user_attr(records.SNAPSHOT, refs)
    trial.set_user_attr(records.SNAPSHOT_HASH, snapshot_hash(snapshot))
    trial.set_user_attr(records.PARENTS, list(parents))
    if duplicate_of is not None:
        trial.set_user_attr(records.DUPLICATE_OF, duplicate_of)
    if state == TrialState.PRUNED and value is not None:
        trial.report(float(value), 0)  # a pruned trial keeps its last reported value
    study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
    return trial.number


def population(study: optuna.Study) -> Population:
    found = Population(study)
    found.refresh()
    return found


def numbers(trials: list[optuna.trial.FrozenTrial]) -> list[int]:
    return [trial.number for trial in trials]


@pytest.fixture
def study(sqlite_url: str) -> optuna.Study:
    return optuna.create_study(storage=sqlite_url, direction="maximize")


# -- best, top-k, tournament ------------------------------------------------------------------


def test_best_is_the_highest_score_and_the_newest_among_equal_scores(study: optuna.Study) -> None:
    assert population(study).best() is None
    add(study, 0.5, {"prompt": "a"})
    add(study, 0.9, {"prompt": "b"}, [0])
    add(study, 0.7, {"prompt": "c"}, [1])
    assert population(study).best().number == 1
    add(study, 0.9, {"prompt": "d"}, [1])  # a sideways move: the newest wins the tie
    assert population(study).best().number == 3


def test_best_follows_the_direction_when_minimizing(sqlite_url: str) -> None:
    study = optuna.create_study(storage=sqlite_url, direction="minimize")
    add(study, 0.5, {"prompt": "a"})
    add(study, 0.2, {"prompt": "b"}, [0])
    add(study, 0.9, {"prompt": "c"}, [1])
    found = population(study)
    assert found.best().number == 1
    assert numbers(found.top_k(3)) == [1, 0, 2]
    assert found.better(0.1, 0.2) and not found.better(0.2, 0.1)


def test_pruned_and_failed_trials_are_never_parents(study: optuna.Study) -> None:
    add(study, 0.5, {"prompt": "a"})
    # Both store a candidate, and the pruned one even a value above every completed score.
    add(study, 5.0, {"prompt": "pruned"}, [0], state=TrialState.PRUNED)
    add(study, None, {"prompt": "failed"}, [0], state=TrialState.FAIL)
    add(study, 0.4, {"prompt": "b"}, [0])
    assert study.trials[1].state == TrialState.PRUNED and study.trials[1].value == 5.0
    found = population(study)
    assert found.best().number == 0
    assert numbers(found.completed()) == [0, 3]
    assert numbers(found.top_k(10)) == [0, 3]
    assert numbers(found.pareto_front()) == [0]
    rng = random.Random(0)
    drawn = {found.tournament(4, rng).number for _ in range(20)}
    assert drawn <= {0, 3}
    assert found.children(0) == [3]  # only completed trials count as children
    # Their stored candidates still resolve (the record of a pruned trial is readable).
    assert found.snapshot(1) == {"prompt": "pruned"}


def test_a_reused_score_is_not_a_new_candidate(study: optuna.Study) -> None:
    add(study, 0.5, {"prompt": "a"})
    add(study, 0.8, {"prompt": "b"}, [0])
    add(study, 0.8, {"prompt": "b"}, [1], duplicate_of=1)  # the same candidate, score reused
    found = population(study)
    assert found.best().number == 1  # not the newer duplicate
    assert numbers(found.candidates()) == [0, 1]
    assert numbers(found.completed()) == [0, 1, 2]
    assert numbers(found.top_k(5)) == [1, 0]
    assert found.trial_with_snapshot(snapshot_hash({"prompt": "b"})) == 1


def test_top_k_ranks_best_first_and_the_newest_first_among_equal_scores(
    study: optuna.Study,
) -> None:
    for value, prompt in [(0.3, "a"), (0.6, "b"), (0.6, "c"), (0.1, "d"), (0.6, "e")]:
        add(study, value, {"prompt": prompt})
    found = population(study)
    assert numbers(found.top_k(3)) == [4, 2, 1]
    assert numbers(found.top_k(10)) == [4, 2, 1, 0, 3]
    assert numbers(found.top_k_of([study.trials[n] for n in (0, 3, 1)], 2)) == [1, 0]


def test_a_tournament_is_the_best_of_a_seeded_draw(study: optuna.Study) -> None:
    for value in [0.3, 0.9, 0.5, 0.7, 0.1, 0.6]:
        add(study, value, {"x": value})
    found = population(study)
    candidates = found.candidates()
    for seed in range(10):
        drawn = random.Random(seed).sample(candidates, 3)
        expected = max(drawn, key=lambda trial: (trial.value, trial.number))
        assert found.tournament(3, random.Random(seed)).number == expected.number
    # A tournament of the whole pool is the best; excluded trials never win.
    assert found.tournament(99, random.Random(0)).number == 1
    assert found.tournament(99, random.Random(0), exclude={1, 3}).number == 5
    assert found.tournament(2, random.Random(0), exclude=range(6)) is None


# -- lineage, children, snapshots --------------------------------------------------------------


def test_lineage_follows_first_parents_to_the_root(study: optuna.Study) -> None:
    add(study, 0.1, {"x": 0})
    add(study, 0.2, {"x": 1}, [0])
    add(study, 0.3, {"x": 2}, [0])
    add(study, 0.4, {"x": 3}, [2, 1])  # a crossover: the first parent is the lineage
    add(study, 0.5, {"x": 4}, [3])
    found = population(study)
    assert found.lineage(4) == [0, 2, 3, 4]
    assert found.lineage(0) == [0]
    assert found.children(0) == [1, 2]
    assert found.children(1) == [3] and found.children(2) == [3]


def test_a_value_is_stored_once_and_resolved_through_its_holder(study: optuna.Study) -> None:
    add(study, 0.1, {"prompt": "Hello.", "n": 1})
    add(study, 0.2, {"prompt": "Hello.", "n": 2}, [0])  # only n changed
    add(study, 0.3, {"prompt": "Hi.", "n": 2}, [1])  # only prompt changed
    trials = study.trials
    assert records.value_key("prompt") not in trials[1].user_attrs
    assert records.value_key("n") not in trials[2].user_attrs
    found = population(study)
    assert found.holder("prompt", value_hash("Hello.")) == 0
    assert found.holder("n", value_hash(2)) == 1
    assert found.holder("prompt", value_hash("never stored")) is None
    assert found.snapshot(2) == {"prompt": "Hi.", "n": 2}
    assert found.snapshot(1) == {"prompt": "Hello.", "n": 2}
    found.snapshot(2)["prompt"] = "changed by a caller"
    assert found.snapshot(2)["prompt"] == "Hi."  # callers get copies


def test_a_missing_or_corrupt_value_is_a_record_error(study: optuna.Study) -> None:
    add(study, 0.1, {"prompt": "Hello."})
    corrupt = study.ask()
    corrupt.set_user_attr(records.SNAPSHOT, {"prompt": [value_hash("Hi."), corrupt.number]})
    corrupt.set_user_attr(records.value_key("prompt"), "Not what the hash says.")
    study.tell(corrupt, 0.2)
    missing = study.ask()
    missing.set_user_attr(records.SNAPSHOT, {"prompt": [value_hash("Hey."), missing.number]})
    study.tell(missing, 0.3)
    plain = study.ask()  # a trial of plain Optuna, no record at all
    study.tell(plain, 0.4)
    found = population(study)
    with pytest.raises(RecordError, match="Trial#1's value of 'prompt' does not match its hash"):
        found.snapshot(1)
    with pytest.raises(RecordError, match="Trial#2 should hold the value of 'prompt'"):
        found.snapshot(2)
    with pytest.raises(RecordError, match="Trial#3 holds no trace_optuna snapshot"):
        found.snapshot(3)
    with pytest.raises(RecordError, match=r"has no Trial#9: its trials are numbered 0 to"):
        found.trial(9)


# -- the Pareto front in a multi-objective study -------------------------------------------------


def test_the_pareto_front_leaves_out_dominated_pruned_and_failed_trials(sqlite_url: str) -> None:
    study = optuna.create_study(storage=sqlite_url, directions=["maximize", "minimize"])
    add(study, [0.5, 5.0], {"x": 0})
    add(study, [0.8, 8.0], {"x": 1}, [0])  # a trade-off against 0
    add(study, [0.4, 6.0], {"x": 2}, [0])  # dominated by 0
    add(study, None, {"x": 3}, [0], state=TrialState.FAIL)
    add(study, [0.9, 4.0], {"x": 4}, [1], duplicate_of=1)  # would dominate all: a reused score
    found = population(study)
    assert numbers(found.pareto_front()) == [0, 1]
    assert found.best().number == 1  # front members 0 (2 children) and 1 (1): fewest children
    assert numbers(found.top_k(3)) == [1, 0, 2]  # by Pareto layer, the newest first within one
    assert found.tournament(99, random.Random(0)).number == 1  # the front, newest first
    assert found.multi_objective


def test_a_population_sees_the_view_a_trial_started_with(study: optuna.Study) -> None:
    add(study, 0.5, {"x": 0})
    moment = study.trials[0].datetime_complete
    add(study, 0.9, {"x": 1}, [0])
    earlier = Population(study, finished_before=moment)
    earlier.refresh()
    assert earlier.best().number == 0  # a retried trial replays the view its first try had
    assert population(study).best().number == 1


# -- what another worker's population sees, on every storage ------------------------------------


def test_refresh_indexes_trials_other_workers_finished_out_of_order(
    storage_url: str, study_name: str
) -> None:
    writer = optuna.create_study(
        study_name=study_name,
        storage=resolve_storage(storage_url, heartbeat_interval=None),
        direction="maximize",
    )
    reader_study = optuna.load_study(
        study_name=study_name, storage=resolve_storage(storage_url, heartbeat_interval=None)
    )
    reader = Population(reader_study)
    add(writer, 0.5, {"x": 0})
    slow = writer.ask()  # trial 1 runs long; trial 2 finishes first
    add(writer, 0.6, {"x": 2}, [0])
    reader.refresh()
    assert numbers(reader.completed()) == [0, 2] and reader.best().number == 2
    slow.set_user_attr(records.SNAPSHOT, {"x": [value_hash(1), slow.number]})
    slow.set_user_attr(records.value_key("x"), 1)
    slow.set_user_attr(records.PARENTS, [0])
    writer.tell(slow, 0.9)
    reader.refresh()
    assert numbers(reader.completed()) == [0, 1, 2] and reader.best().number == 1
    assert reader.snapshot(1) == {"x": 1} and reader.children(0) == [1, 2]
