"""The per-example store: rows in the study's own storage, shared by worker processes as an
evaluation cache (each pair run once), waited for while a live trial runs them, taken over
from a dead one, never cached when the run fails, readable with plain SQL.

Every test runs on a SQLite file and the real PostgreSQL, MariaDB and Redis servers; the
worker processes are separate Python processes (``tests/support_examples.py``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
import dataclasses
import json
import multiprocessing
from pathlib import Path
import threading
from typing import Any

import optuna
from optuna.trial import TrialState
import pytest
import sqlalchemy

from trace_optuna import records
from trace_optuna import visualization
from trace_optuna.coordination import shared_place
from trace_optuna.example_results import EXAMPLES_TABLE
from trace_optuna.example_results import ExampleResult
from trace_optuna.example_results import ExampleStore
from trace_optuna.example_results import as_dataframe
from trace_optuna.example_results import pareto_front
from trace_optuna.exceptions import ConfigurationError
from trace_optuna.storage import resolve_storage

import support_examples  # isort: skip
from support_examples import CANDIDATE  # isort: skip
from support_examples import SPLIT  # isort: skip

_spawn = multiprocessing.get_context("spawn")


class Study:
    """A study on ``url`` with one RUNNING trial, and its store (as one worker sees them)."""

    def __init__(self, url: str, study_name: str) -> None:
        self.url = url
        self.storage = resolve_storage(url, heartbeat_interval=None)
        self.study = optuna.create_study(
            study_name=study_name, storage=self.storage, load_if_exists=True
        )
        self.trial = self.study.ask()
        self.store = ExampleStore(self.storage, self.study._study_id)

    def reopened(self) -> ExampleStore:
        """The store as a new process sees it: a new storage object, a new store."""
        storage = resolve_storage(self.url, heartbeat_interval=None)
        return ExampleStore(storage, storage.get_study_id_from_name(self.study.study_name))


@pytest.fixture
def study(storage_url: str, study_name: str) -> Study:
    return Study(storage_url, study_name)


class Runner:
    """A ``run_missing`` that counts the pairs it runs (and can fail, or give errors)."""

    def __init__(self, trial_number: int, *, fail: bool = False, error: str | None = None):
        self.trial_number = trial_number
        self.fail = fail
        self.error = error
        self.runs: Counter[str] = Counter()

    def __call__(self, pairs: Sequence[tuple[str, Any]]) -> list[ExampleResult]:
        if self.fail:
            raise ConnectionError("the LLM endpoint is unreachable")
        self.runs.update(example_id for example_id, _ in pairs)
        return [
            ExampleResult(
                CANDIDATE,
                SPLIT,
                example_id,
                0.0 if self.error else support_examples.score(example),
                f"feedback for {example_id} ✓",
                f"output {example}",
                0.25,
                "test:1",
                self.trial_number,
                self.error,
            )
            for example_id, example in pairs
        ]


def examples(numbers: range) -> list[tuple[str, int]]:
    return [(str(number), number) for number in numbers]


def _start(target: Any, *args: Any, **kwargs: Any) -> Any:
    process = _spawn.Process(target=target, args=args, kwargs=kwargs)
    process.start()
    return process


def _finish(process: Any, what: str) -> None:
    process.join(120)
    if process.is_alive():
        process.kill()
        process.join()
    assert process.exitcode == 0, f"{what} failed (exit code {process.exitcode}); see stderr"


def _runs(directory: Path) -> Counter[str]:
    path = directory / "runs.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    return Counter(line.split(" ", 1)[1] for line in lines)


# -- across worker processes ------------------------------------------------------------------


def test_two_processes_run_every_overlapping_pair_once_and_both_get_every_result(
    study: Study, tmp_path: Path
) -> None:
    first_ids = [str(number) for number in range(0, 30)]
    second_ids = [str(number) for number in range(10, 40)]
    workers = [
        _start(
            support_examples.overlapping_worker,
            study.url,
            study.study.study_name,
            name,
            other,
            ids,
            str(tmp_path),
        )
        for name, other, ids in (("a", "b", first_ids), ("b", "a", second_ids))
    ]
    for worker in workers:
        _finish(worker, "a worker process")
    runs = _runs(tmp_path)
    assert runs == Counter({str(number): 1 for number in range(40)}), "a pair ran twice or never"
    for name, ids in (("a", first_ids), ("b", second_ids)):
        got = json.loads((tmp_path / f"{name}.json").read_text())
        assert got["results"] == [[i, support_examples.score(int(i))] for i in ids]
    ran = [json.loads((tmp_path / f"{name}.json").read_text())["ran"] for name in "ab"]
    assert sorted(ran[0] + ran[1], key=int) == [str(number) for number in range(40)]
    assert study.reopened().count() == 40


def test_a_pair_a_live_trial_holds_is_waited_for_not_run_again(
    study: Study, tmp_path: Path
) -> None:
    holder = _start(
        support_examples.holding_worker,
        study.url,
        study.study.study_name,
        [str(number) for number in range(0, 10)],
        str(tmp_path),
        heartbeat=False,
    )
    try:
        support_examples.wait_for_file(tmp_path / "holding", "the holder holding its claims")
        holder_number = int((tmp_path / "holding").read_text())
        assert set(study.store.claimed(CANDIDATE, SPLIT)) == {str(n) for n in range(10)}
        assert set(study.store.claimed(CANDIDATE, SPLIT).values()) == {holder_number}

        def run_missing(pairs: Sequence[tuple[str, Any]]) -> list[ExampleResult]:
            # Its own pairs are claimed before it runs them, after the holder's were: let
            # the holder finish now; this call must then wait for it, not run its pairs.
            (tmp_path / "release").touch()
            return support_examples.results(pairs, study.trial.number, "waiter", runs_path)

        runs_path = tmp_path / "runs.txt"
        lookup = study.store.evaluate(
            CANDIDATE, SPLIT, examples(range(5, 15)), run_missing, trial_number=study.trial.number
        )
    finally:
        (tmp_path / "release").touch()
        _finish(holder, "the holding worker")
    assert lookup.ran == [str(number) for number in range(10, 15)]
    assert lookup.waited == [str(number) for number in range(5, 10)]
    assert [row.trial_number for row in lookup.results[:5]] == [holder_number] * 5
    assert _runs(tmp_path) == Counter({str(number): 1 for number in range(15)})
    assert study.store.claimed(CANDIDATE, SPLIT) == {}


def test_a_dead_holders_claim_is_taken_over_once_its_trial_is_failed(
    storage_url: str, study_name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    study = Study(storage_url, study_name)
    holder = _start(
        support_examples.holding_worker,
        storage_url,
        study_name,
        [str(number) for number in range(0, 10)],
        str(tmp_path),
        heartbeat=True,
    )
    try:
        support_examples.wait_for_file(tmp_path / "holding", "the holder holding its claims")
    finally:
        holder.kill()  # the worker dies holding its claims; its trial stays RUNNING
        holder.join()
    holder_number = int((tmp_path / "holding").read_text())
    holder_trial = study.study.get_trials(deepcopy=False)[holder_number]
    assert holder_trial.state == TrialState.RUNNING

    # A worker whose storage beats: while it waits, Optuna's stale-trial check fails the dead
    # trial once its lease runs out, and the claims are taken over.
    waiter_storage = resolve_storage(storage_url, heartbeat_interval=1, grace_period=2)
    store = ExampleStore(waiter_storage, study.study._study_id, wait_timeout=30)
    runner = Runner(study.trial.number)
    lookup = store.evaluate(
        CANDIDATE, SPLIT, examples(range(0, 12)), runner, trial_number=study.trial.number
    )
    assert waiter_storage.get_trial(holder_trial._trial_id).state == TrialState.FAIL
    # Taken over because its trial ended, not because the wait ran out.
    assert not [record for record in caplog.records if "taking them over" in record.message]
    assert runner.runs == Counter({str(number): 1 for number in range(12)})
    assert sorted(lookup.ran, key=int) == [str(number) for number in range(12)]
    assert store.claimed(CANDIDATE, SPLIT) == {}


# -- in one process ---------------------------------------------------------------------------


def test_a_failed_run_caches_nothing_and_releases_its_claims(study: Study) -> None:
    failing = Runner(study.trial.number, fail=True)
    with pytest.raises(ConnectionError):
        study.store.evaluate(
            CANDIDATE, SPLIT, examples(range(5)), failing, trial_number=study.trial.number
        )
    assert study.store.count() == 0
    assert study.store.claimed(CANDIDATE, SPLIT) == {}
    runner = Runner(study.trial.number)
    lookup = study.store.evaluate(
        CANDIDATE, SPLIT, examples(range(5)), runner, trial_number=study.trial.number
    )
    assert lookup.ran == [str(number) for number in range(5)]
    assert study.store.count() == 5


def test_a_candidates_own_error_is_cached(study: Study) -> None:
    erring = Runner(study.trial.number, error="ZeroDivisionError: division by zero")
    study.store.evaluate(
        CANDIDATE, SPLIT, examples(range(3)), erring, trial_number=study.trial.number
    )
    again = Runner(study.trial.number)
    lookup = study.reopened().evaluate(
        CANDIDATE, SPLIT, examples(range(3)), again, trial_number=study.trial.number
    )
    assert lookup.ran == [] and not again.runs
    assert {row.error for row in lookup.results} == {"ZeroDivisionError: division by zero"}
    assert {row.score for row in lookup.results} == {0.0}


def test_resume_runs_nothing_again_and_keeps_splits_and_candidates_apart(
    study: Study,
) -> None:
    runner = Runner(study.trial.number)
    study.store.evaluate(
        CANDIDATE, SPLIT, examples(range(6)), runner, trial_number=study.trial.number
    )
    study.store.put(
        [
            ExampleResult(CANDIDATE, "train", "0", 1.0, "", "", 0.0, "w", 0),
            ExampleResult("d" * 64, SPLIT, "0", 0.5, "", "", 0.0, "w", 0),
        ]
    )
    resumed = study.reopened()
    again = Runner(study.trial.number)
    lookup = resumed.evaluate(
        CANDIDATE, SPLIT, examples(range(6)), again, trial_number=study.trial.number
    )
    assert lookup.ran == [] and not again.runs and lookup.waited == []
    assert [row.score for row in lookup.results] == [support_examples.score(n) for n in range(6)]
    assert lookup.results[0].feedback == "feedback for 0 ✓"
    assert resumed.count() == 8
    assert resumed.count(split=SPLIT) == 7
    assert resumed.count(split="train") == 1
    assert resumed.count(split="test") == 0
    assert [row.example_id for row in resumed.rows(split="train")] == ["0"]
    assert len(resumed.rows(candidates=["d" * 64])) == 1
    assert resumed.get(CANDIDATE, "train", ["0", "1"]).keys() == {"0"}


def test_put_keeps_the_first_row_of_a_key(study: Study) -> None:
    first = ExampleResult(CANDIDATE, SPLIT, "Case", 1.0, "first", "", 0.0, "w", 0)
    study.store.put([first])
    study.store.put(
        [
            ExampleResult(CANDIDATE, SPLIT, "Case", 0.0, "second", "", 0.0, "w", 1),
            ExampleResult(CANDIDATE, SPLIT, "case", 0.5, "other id", "", 0.0, "w", 1),
        ]
    )
    stored = study.reopened().get(CANDIDATE, SPLIT, ["Case", "case"])
    assert stored["Case"] == first
    assert stored["case"].feedback == "other id"  # ids differing in case are two examples


def test_a_live_holder_is_waited_for_only_up_to_wait_timeout(study: Study) -> None:
    release = threading.Event()
    holding = threading.Event()
    holder_trial = study.study.ask()

    def hold(pairs: Sequence[tuple[str, Any]]) -> list[ExampleResult]:
        holding.set()
        assert release.wait(60), "the test never released the holder"
        return Runner(holder_trial.number)(pairs)

    thread = threading.Thread(
        target=study.store.evaluate,
        args=(CANDIDATE, SPLIT, examples(range(3)), hold),
        kwargs={"trial_number": holder_trial.number},
    )
    thread.start()
    try:
        assert holding.wait(60), "the holder never ran"
        impatient = ExampleStore(study.storage, study.study._study_id, wait_timeout=0.2)
        runner = Runner(study.trial.number)
        lookup = impatient.evaluate(
            CANDIDATE, SPLIT, examples(range(3)), runner, trial_number=study.trial.number
        )
    finally:
        release.set()
        thread.join()
    assert lookup.ran == ["0", "1", "2"]
    assert {row.trial_number for row in study.store.rows()} == {study.trial.number}


def test_pairs_a_holder_gives_up_are_run_by_the_waiter(
    study: Study, caplog: pytest.LogCaptureFixture
) -> None:
    holding, give_up = threading.Event(), threading.Event()
    holder_trial = study.study.ask()
    failures: list[BaseException] = []

    def hold_then_fail(pairs: Sequence[tuple[str, Any]]) -> list[ExampleResult]:
        holding.set()
        assert give_up.wait(60), "the test never let the holder fail"
        raise ConnectionError("the LLM endpoint went away")

    def holder() -> None:
        try:
            study.store.evaluate(
                CANDIDATE,
                SPLIT,
                examples(range(3)),
                hold_then_fail,
                trial_number=holder_trial.number,
            )
        except ConnectionError as error:
            failures.append(error)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert holding.wait(60), "the holder never ran"

        def run_missing(pairs: Sequence[tuple[str, Any]]) -> list[ExampleResult]:
            give_up.set()  # its own pair is claimed: the holder's three must now be waited for
            return runner(pairs)

        runner = Runner(study.trial.number)
        waiter = ExampleStore(study.storage, study.study._study_id, wait_timeout=30)
        lookup = waiter.evaluate(
            CANDIDATE, SPLIT, examples(range(4)), run_missing, trial_number=study.trial.number
        )
    finally:
        give_up.set()
        thread.join()
    assert len(failures) == 1  # the holder's call failed, and cached nothing
    assert runner.runs == Counter({str(number): 1 for number in range(4)})
    assert lookup.waited == [] and sorted(lookup.ran) == ["0", "1", "2", "3"]
    assert study.store.count() == 4 and study.store.claimed(CANDIDATE, SPLIT) == {}
    # Run because the holder released them, not because the wait ran out.
    assert not [record for record in caplog.records if "taking them over" in record.message]


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"split": "validation"}, "split must be one of"),
        ({"score": float("nan")}, "finite number"),
        ({"example_id": "x" * 256}, "at most 255 characters"),
        ({"example_id": "x "}, "not ending with a space"),
        ({"example_id": 7}, "must be a non-empty str"),
    ],
)
def test_put_refuses_a_row_that_breaks_a_rule(
    sqlite_url: str, study_name: str, change: dict[str, Any], rule: str
) -> None:
    study = Study(sqlite_url, study_name)
    row = ExampleResult(CANDIDATE, SPLIT, "0", 1.0, "", "", 0.0, "w", 0)
    with pytest.raises(ConfigurationError, match=rule):
        study.store.put([row, ExampleResult(**{**row.__dict__, **change})])
    assert study.store.count() == 0


def test_evaluate_refuses_repeated_ids_and_rows_that_do_not_answer(
    sqlite_url: str, study_name: str
) -> None:
    study = Study(sqlite_url, study_name)
    with pytest.raises(ConfigurationError, match="example id '1' twice"):
        study.store.evaluate(
            CANDIDATE, SPLIT, [("1", 1), ("1", 1)], Runner(0), trial_number=study.trial.number
        )

    def wrong(pairs: Sequence[tuple[str, Any]]) -> list[ExampleResult]:
        return list(reversed(Runner(0)(pairs)))

    with pytest.raises(ConfigurationError, match="one ExampleResult per pair"):
        study.store.evaluate(
            CANDIDATE, SPLIT, examples(range(2)), wrong, trial_number=study.trial.number
        )
    assert study.store.count() == 0
    assert study.store.claimed(CANDIDATE, SPLIT) == {}


# -- readable without trace_optuna --------------------------------------------------------------


def test_rows_are_readable_with_plain_sql_or_redis_commands(study: Study) -> None:
    study.store.evaluate(
        CANDIDATE,
        SPLIT,
        examples(range(2)),
        Runner(study.trial.number),
        trial_number=study.trial.number,
    )
    place = shared_place(study.storage)
    if place.redis is not None:
        import redis

        url, prefix = place.redis
        key = f"{prefix}trace_optuna:examples:{study.study._study_id}:{SPLIT}:{CANDIDATE}"
        stored = redis.Redis.from_url(url).hgetall(key)
        rows = {name.decode(): json.loads(value) for name, value in stored.items()}
        got = [(i, rows[i]["score"], rows[i]["feedback"], rows[i]["error"]) for i in sorted(rows)]
    else:
        engine = sqlalchemy.create_engine(study.url)
        with engine.connect() as connection:
            got = [
                tuple(row)
                for row in connection.execute(
                    sqlalchemy.text(
                        f"SELECT example_id, score, feedback, error FROM {EXAMPLES_TABLE} "
                        "WHERE study_id = :study AND split = 'val' AND candidate = :candidate "
                        "ORDER BY example_id"
                    ),
                    {"study": study.study._study_id, "candidate": CANDIDATE},
                )
            ]
        engine.dispose()
    assert got == [("0", 0.0, "feedback for 0 ✓", None), ("1", 0.01, "feedback for 1 ✓", None)]


def test_a_journal_files_rows_live_in_the_sqlite_file_beside_it(
    tmp_path: Path, study_name: str
) -> None:
    study = Study(f"journal://{tmp_path / 'study.log'}", study_name)
    study.store.evaluate(
        CANDIDATE,
        SPLIT,
        examples(range(3)),
        Runner(study.trial.number),
        trial_number=study.trial.number,
    )
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'study.log'}.claims.sqlite3")
    with engine.connect() as connection:
        count = connection.execute(sqlalchemy.text(f"SELECT COUNT(*) FROM {EXAMPLES_TABLE}"))
        assert count.scalar() == 3
    engine.dispose()
    assert study.reopened().count(split=SPLIT) == 3


# -- reading for analysis -----------------------------------------------------------------------


def _row(candidate: str, example_id: str, score: float, split: str = SPLIT) -> ExampleResult:
    return ExampleResult(candidate, split, example_id, score, f"on {example_id}", "", 0.0, "w", 0)


def test_reading_a_study_without_rows_creates_no_table(sqlite_url: str, study_name: str) -> None:
    study = Study(sqlite_url, study_name)
    assert study.store.rows() == [] and study.store.count() == 0
    assert study.store.get(CANDIDATE, SPLIT, ["1"]) == {}
    engine = sqlalchemy.create_engine(sqlite_url)
    assert not sqlalchemy.inspect(engine).has_table(EXAMPLES_TABLE)
    engine.dispose()


def test_pareto_front_holds_the_candidates_best_on_some_example() -> None:
    rows = [
        _row("a", "1", 1.0),
        _row("b", "1", 0.0),
        _row("b", "2", 0.5),
        _row("c", "2", 0.5),
        _row("c", "3", 0.9),
        _row("a", "3", 0.1),
        _row("d", "1", 0.2),  # best nowhere
    ]
    assert pareto_front(rows) == {"c": ["2", "3"], "a": ["1"], "b": ["2"]}
    lowest = pareto_front(rows, maximize=False)
    assert lowest == {"a": ["3"], "b": ["1", "2"], "c": ["2"]}


def test_as_dataframe_has_one_column_per_field() -> None:
    frame = as_dataframe([_row("a", "1", 1.0), _row("b", "2", 0.5)])
    assert list(frame.columns) == [
        "candidate",
        "split",
        "example_id",
        "score",
        "feedback",
        "output",
        "seconds",
        "worker",
        "trial_number",
        "error",
    ]
    assert frame["score"].tolist() == [1.0, 0.5]


def test_the_example_figure_shows_the_score_matrix_and_the_pareto_front(
    sqlite_url: str, study_name: str
) -> None:
    study = Study(sqlite_url, study_name)
    empty = visualization.plot_example_scores(study.study)
    assert "No per-example results" in empty.layout.annotations[0].text
    for candidate in ("b" * 64, "a" * 64):  # trials 1 and 2 (trial 0 is the fixture's)
        trial = study.study.ask()
        trial.set_user_attr(records.SNAPSHOT_HASH, candidate)
        study.study.tell(trial, 0.0)
    study.store.put(
        [
            _row("a" * 64, "1", 1.0),
            _row("a" * 64, "2", 0.0),
            _row("b" * 64, "1", 0.0),
            _row("b" * 64, "2", 1.0),
            # No finished trial holds it yet: ordered by the trial that ran it.
            dataclasses.replace(_row("e" * 64, "1", 0.5), trial_number=5),
            _row("a" * 64, "9", 1.0, split="train"),
        ]
    )
    figure = visualization.plot_example_scores(study.study)
    heatmap, bars = figure.data
    assert list(heatmap.y) == [
        f"★ Trial#1 · {'b' * 8}",
        f"★ Trial#2 · {'a' * 8}",
        "e" * 8,
    ]
    assert list(heatmap.x) == ["1", "2"]
    assert [list(row) for row in heatmap.z] == [[0.0, 1.0], [1.0, 0.0], [0.5, None]]
    assert list(bars.x) == [1, 1, 0]
    train = visualization.plot_example_scores(study.study, split="train")
    assert list(train.data[0].x) == ["9"]
