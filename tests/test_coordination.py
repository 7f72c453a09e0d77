"""Candidate claims: held by one running trial, taken over once the holder ended, seen by
every worker of the storage; ``is_running`` and ``claim_once``.

Claims live where the storage's data lives (a table in an RDB database, keys on Redis, a SQLite
file beside a journal file), so these run on every storage, each "worker" a coordinator of its
own storage object, as separate processes would have.
"""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import TrialState
import pytest

from trace_optuna.coordination import Claim
from trace_optuna.coordination import Coordinator
from trace_optuna.coordination import coordinator_for
from trace_optuna.storage import resolve_storage


class Worker:
    """One worker's view: its own storage object, study handle and coordinator."""

    def __init__(self, url: str, study_name: str) -> None:
        self.storage = resolve_storage(url, heartbeat_interval=None)
        self.study = optuna.create_study(
            study_name=study_name, storage=self.storage, load_if_exists=True
        )
        self.coordinator: Coordinator = coordinator_for(self.storage)

    def start_trial(self) -> int:
        """A RUNNING trial of this worker; returns its trial id."""
        return self.study.ask()._trial_id

    def claim(self, trial_id: int, snapshot_hash: str) -> Claim:
        return self.coordinator.claim(self.study, trial_id, snapshot_hash)

    def number(self, trial_id: int) -> int:
        return self.storage.get_trial_number_from_id(trial_id)


@pytest.fixture
def workers(storage_url: str, study_name: str) -> tuple[Worker, Worker]:
    return Worker(storage_url, study_name), Worker(storage_url, study_name)


def test_a_claim_is_held_by_its_running_trial_against_other_workers(
    workers: tuple[Worker, Worker],
) -> None:
    first, second = workers
    mine, theirs = first.start_trial(), second.start_trial()
    assert first.claim(mine, "hash-a") == Claim(held=True)
    assert first.claim(mine, "hash-a") == Claim(held=True)  # claiming again: still its own
    assert second.claim(theirs, "hash-a") == Claim(held=False, holder=first.number(mine))
    assert second.claim(theirs, "hash-b") == Claim(held=True)  # another candidate is free
    assert first.claim(mine, "hash-b") == Claim(held=False, holder=second.number(theirs))


@pytest.mark.parametrize("ended", [TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED])
def test_a_claim_is_taken_over_once_its_holder_ended(
    workers: tuple[Worker, Worker], ended: TrialState
) -> None:
    first, second = workers
    holder, waiter = first.start_trial(), second.start_trial()
    assert first.claim(holder, "hash-a").held
    assert second.coordinator.is_running(second.study, first.number(holder))
    first.storage.set_trial_state_values(
        holder, ended, [0.5] if ended == TrialState.COMPLETE else None
    )
    assert not second.coordinator.is_running(second.study, first.number(holder))
    # Released with its trial: the waiter takes it over, told to look whether the ended
    # trial stored the candidate (a completed holder did; a failed one did not).
    assert second.claim(waiter, "hash-a") == Claim(held=True, taken_over=True)
    assert second.claim(waiter, "hash-a") == Claim(held=True)
    latecomer = first.start_trial()
    assert first.claim(latecomer, "hash-a") == Claim(held=False, holder=second.number(waiter))


def test_claims_are_per_study(storage_url: str, study_name: str) -> None:
    left = Worker(storage_url, f"{study_name}-left")
    right = Worker(storage_url, f"{study_name}-right")
    assert left.claim(left.start_trial(), "hash-a").held
    assert right.claim(right.start_trial(), "hash-a") == Claim(held=True)


def test_claim_once_goes_to_one_worker_and_is_never_released(
    workers: tuple[Worker, Worker],
) -> None:
    first, second = workers
    assert first.coordinator.claim_once(first.study, "figures:1")
    assert first.coordinator.claim_once(first.study, "figures:1")  # still its own
    assert not second.coordinator.claim_once(second.study, "figures:1")
    assert second.coordinator.claim_once(second.study, "figures:2")
    # A claim_once key never blocks a trial's claim of another key, nor is it a trial.
    trial = first.start_trial()
    assert first.claim(trial, "hash-a") == Claim(held=True)


def test_is_running_follows_the_trial_state(workers: tuple[Worker, Worker]) -> None:
    first, second = workers
    trial = first.start_trial()
    number = first.number(trial)
    assert second.coordinator.is_running(second.study, number)
    first.storage.set_trial_state_values(trial, TrialState.COMPLETE, [1.0])
    assert not second.coordinator.is_running(second.study, number)
    with pytest.raises(KeyError):
        second.coordinator.is_running(second.study, number + 1)  # no such trial


def test_journal_file_claims_live_in_a_file_beside_the_journal(
    tmp_path: Path, study_name: str
) -> None:
    url = f"journal://{tmp_path / 'study.log'}"
    first, second = Worker(url, study_name), Worker(url, study_name)
    holder, waiter = first.start_trial(), second.start_trial()
    assert first.claim(holder, "hash-a").held
    assert second.claim(waiter, "hash-a") == Claim(held=False, holder=0)
    assert (tmp_path / "study.log.claims.sqlite3").exists()
