"""Worker processes for the tests of the per-example store (``test_example_results.py``).

Each function runs in a process of its own (started with ``spawn``), opens the storage from
its URL as a worker would, starts a trial and evaluates one candidate on some examples. Every
pair a process actually runs is appended as a line ``<worker> <example id>`` to ``runs.txt`` in
the test's directory, so the test counts runs across processes. Waits on other processes are
bounded and fail loudly (:class:`BarrierTimeout`): a test of a race must not pass when nothing
ran at once.
"""

from __future__ import annotations

from collections.abc import Sequence
import json
from pathlib import Path
import time
from typing import Any

import optuna

from trace_optuna.example_results import ExampleResult
from trace_optuna.example_results import ExampleStore
from trace_optuna.storage import resolve_storage

CANDIDATE = "c" * 64
SPLIT = "val"
BARRIER_S = 60.0


class BarrierTimeout(RuntimeError):
    """The processes did not reach the same point at once: the test would test nothing."""


def wait_for_file(path: Path, what: str) -> None:
    """Wait until ``path`` exists (polling; another process creates it).

    Raises:
        BarrierTimeout: After :data:`BARRIER_S` seconds, saying ``what`` did not happen.
    """
    deadline = time.monotonic() + BARRIER_S
    while not path.exists():
        if time.monotonic() > deadline:
            raise BarrierTimeout(f"{what} did not happen within {BARRIER_S:.0f} s")
        time.sleep(0.02)


def score(example: Any) -> float:
    """The example's score: a function of the example only, so every run agrees."""
    return float(example) / 100


def results(
    pairs: Sequence[tuple[str, Any]], trial_number: int, worker: str, runs: Path
) -> list[ExampleResult]:
    """Run ``pairs`` (record each run in ``runs``) and return their results."""
    with runs.open("a") as file:
        file.write("".join(f"{worker} {example_id}\n" for example_id, _ in pairs))
    return [
        ExampleResult(
            CANDIDATE,
            SPLIT,
            example_id,
            score(example),
            "ok",
            str(example),
            0.0,
            worker,
            trial_number,
        )
        for example_id, example in pairs
    ]


def _open(url: str, study_name: str, *, heartbeat: bool = False) -> tuple[Any, optuna.Study]:
    if heartbeat:
        storage = resolve_storage(url, heartbeat_interval=1, grace_period=2)
    else:
        storage = resolve_storage(url, heartbeat_interval=None)
    return storage, optuna.load_study(study_name=study_name, storage=storage)


def overlapping_worker(
    url: str, study_name: str, name: str, other: str, ids: list[str], directory: str
) -> None:
    """Evaluate ``ids``; the first run waits until worker ``other`` runs too; write what the
    evaluation returned to ``<name>.json``."""
    folder = Path(directory)
    storage, study = _open(url, study_name)
    trial = study.ask()
    store = ExampleStore(storage, study._study_id)
    first = True

    def run_missing(pairs: Sequence[tuple[str, Any]]) -> list[ExampleResult]:
        nonlocal first
        if first:
            first = False
            (folder / f"{name}.running").touch()
            wait_for_file(folder / f"{other}.running", f"worker {other} running examples")
        return results(pairs, trial.number, name, folder / "runs.txt")

    lookup = store.evaluate(
        CANDIDATE, SPLIT, [(i, int(i)) for i in ids], run_missing, trial_number=trial.number
    )
    study.tell(trial, 0.0)
    (folder / f"{name}.json").write_text(
        json.dumps(
            {
                "ran": lookup.ran,
                "waited": lookup.waited,
                "results": [[row.example_id, row.score] for row in lookup.results],
            }
        )
    )


def holding_worker(
    url: str, study_name: str, ids: list[str], directory: str, *, heartbeat: bool
) -> None:
    """Evaluate ``ids`` and, inside ``run_missing``, hold their claims: write ``holding``
    (with the trial number), then wait for the file ``release`` (or be killed)."""
    folder = Path(directory)
    storage, study = _open(url, study_name, heartbeat=heartbeat)
    trial = study.ask()
    if heartbeat:  # a trial run outside optimize() beats only when told to
        storage.record_heartbeat(trial._trial_id)
    store = ExampleStore(storage, study._study_id)

    def run_missing(pairs: Sequence[tuple[str, Any]]) -> list[ExampleResult]:
        (folder / "holding").write_text(str(trial.number))
        wait_for_file(folder / "release", "the test's release of the holder")
        return results(pairs, trial.number, "holder", folder / "runs.txt")

    store.evaluate(
        CANDIDATE, SPLIT, [(i, int(i)) for i in ids], run_missing, trial_number=trial.number
    )
    study.tell(trial, 0.0)
