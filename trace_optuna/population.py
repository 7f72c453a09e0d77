"""Pure queries over the trials a study has stored: best, top-k, lineage, snapshots.

A :class:`Population` reads the study through Optuna, whose storage caches finished trials per
process, so each :meth:`Population.refresh` only indexes trials that finished since the last one.
Everything a step needs to continue a lineage (parents, snapshots, feedback) comes from storage,
never from one process's memory, so any worker can continue any lineage.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection
import random
from typing import TYPE_CHECKING
from typing import Any

from optuna.study import StudyDirection
from optuna.trial import TrialState

from trace_optuna import records
from trace_optuna.exceptions import RecordError

if TYPE_CHECKING:
    from datetime import datetime

    import optuna
    from optuna.trial import FrozenTrial

_FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
_SNAPSHOT_CACHE_SIZE = 256


class Population:
    """A view of a study's finished trials that carry trace_optuna records.

    Args:
        study: The Optuna study.
        finished_before: Only see trials that finished at or before this time (the
            population a trial saw when it started; a retried trial replays that view).
    """

    def __init__(self, study: optuna.Study, *, finished_before: datetime | None = None) -> None:
        self._study = study
        self._finished_before = finished_before
        self._maximize = study.direction == StudyDirection.MAXIMIZE
        self._trials: list[FrozenTrial] = []
        self._scan_from = 0  # every trial before this number is finished and indexed
        self._indexed: set[int] = set()  # indexed trials at or after _scan_from
        self._completed: list[int] = []
        self._best: FrozenTrial | None = None
        self._holders: dict[tuple[str, str], int] = {}
        self._snapshots: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._by_hash: dict[str, int] = {}
        self._children: dict[int, list[int]] = {}

    def refresh(self) -> None:
        """Index the trials that finished since the last refresh."""
        self._trials = self._study.get_trials(deepcopy=False)
        # Workers finish out of order: index every newly finished trial, and remember where
        # the oldest unfinished one is so the next refresh starts there.
        for trial in self._trials[self._scan_from :]:
            if trial.state in _FINISHED and trial.number not in self._indexed:
                if self._finished_before is None or _finished_by(trial, self._finished_before):
                    self._index(trial)
                self._indexed.add(trial.number)
        while self._scan_from in self._indexed:
            self._indexed.discard(self._scan_from)
            self._scan_from += 1

    def _index(self, trial: FrozenTrial) -> None:
        for path, (value_hash, holder) in records.snapshot_refs(trial).items():
            self._holders.setdefault((path, value_hash), holder)
        snapshot_hash = trial.user_attrs.get(records.SNAPSHOT_HASH)
        if trial.state != TrialState.COMPLETE or records.SNAPSHOT not in trial.user_attrs:
            return
        if snapshot_hash is not None:
            self._by_hash.setdefault(snapshot_hash, trial.number)
        self._completed.append(trial.number)
        for parent in trial.user_attrs.get(records.PARENTS) or []:
            self._children.setdefault(int(parent), []).append(trial.number)
        if records.DUPLICATE_OF in trial.user_attrs:
            return  # a reused score of an earlier candidate is not a new candidate
        if self._best is None or _better(trial, self._best, self._maximize):
            self._best = trial

    def trial(self, number: int) -> FrozenTrial:
        """The trial with this number, as last read."""
        if not 0 <= number < len(self._trials):
            self.refresh()
        try:
            return self._trials[number]
        except IndexError:
            raise RecordError(f"The study has no Trial#{number}.") from None

    def completed(self) -> list[FrozenTrial]:
        """Completed trials that hold a trace_optuna snapshot, in trial order."""
        return [self._trials[number] for number in sorted(self._completed)]

    def best(self) -> FrozenTrial | None:
        """The completed trial with the best score, or None.

        Among equal scores the newest candidate wins, so a greedy search accepts sideways
        moves and can cross a plateau instead of restarting from the same trial forever.
        Trials that reused an earlier candidate's score do not count as new candidates.
        """
        return self._best

    def candidates(self) -> list[FrozenTrial]:
        """Completed trials that evaluated a new candidate (reused duplicates left out)."""
        return [
            trial for trial in self.completed() if records.DUPLICATE_OF not in trial.user_attrs
        ]

    def top_k(self, k: int) -> list[FrozenTrial]:
        """The ``k`` best candidates, best first (newest first among equal scores)."""
        return self.top_k_of(self.candidates(), k)

    def tournament(
        self, size: int, rng: random.Random, exclude: Collection[int] = ()
    ) -> FrozenTrial | None:
        """The best of ``size`` candidates drawn at random (without replacement), or None."""
        pool = [trial for trial in self.candidates() if trial.number not in exclude]
        if not pool:
            return None
        drawn = rng.sample(pool, min(size, len(pool)))
        return self.top_k_of(drawn, 1)[0]

    def top_k_of(self, trials: list[FrozenTrial], k: int) -> list[FrozenTrial]:
        """The ``k`` best of the given trials, best first."""
        ranked = sorted(trials, key=lambda trial: trial.number, reverse=True)
        ranked.sort(key=lambda trial: _value(trial), reverse=self._maximize)
        return ranked[:k]

    def children(self, number: int) -> list[int]:
        """Completed trials that name trial ``number`` among their parents, in trial order."""
        return sorted(self._children.get(number, ()))

    def feedback(self, number: int) -> str:
        """The feedback stored with a trial's candidate ("" when there is none)."""
        return records.decode(self.trial(number).user_attrs, records.FEEDBACK) or ""

    def holder(self, path: str, value_hash: str) -> int | None:
        """The number of a finished trial that stores this value of ``path``, if any."""
        return self._holders.get((path, value_hash))

    def trial_with_snapshot(self, snapshot_hash: str) -> int | None:
        """The first completed trial whose candidate had this snapshot hash, if any."""
        return self._by_hash.get(snapshot_hash)

    def snapshot(self, number: int) -> dict[str, Any]:
        """The full candidate snapshot of a trial, resolving values other trials hold.

        Raises:
            RecordError: If the trial has no snapshot or a referenced value is missing/corrupt.
        """
        cached = self._snapshots.get(number)
        if cached is not None:
            self._snapshots.move_to_end(number)
            return dict(cached)
        trial = self.trial(number)
        refs = records.snapshot_refs(trial)
        if not refs:
            raise RecordError(
                f"Trial#{number} holds no trace_optuna snapshot (state {trial.state.name})."
            )
        values = {
            path: records.read_value(
                trial if holder == number else self.trial(holder), path, value_hash
            )
            for path, (value_hash, holder) in refs.items()
        }
        if trial.state.is_finished():
            self._snapshots[number] = values
            if len(self._snapshots) > _SNAPSHOT_CACHE_SIZE:
                self._snapshots.popitem(last=False)
        return dict(values)

    def lineage(self, number: int) -> list[int]:
        """Trial numbers from the root to ``number``, following each trial's first parent."""
        chain = [number]
        while True:
            parents = self.trial(chain[-1]).user_attrs.get(records.PARENTS) or []
            if not parents or parents[0] in chain:
                return chain[::-1]
            chain.append(int(parents[0]))


def _finished_by(trial: FrozenTrial, moment: datetime) -> bool:
    return trial.datetime_complete is not None and trial.datetime_complete <= moment


def _value(trial: FrozenTrial) -> float:
    assert trial.value is not None  # completed single-objective trials have one
    return trial.value


def _better(trial: FrozenTrial, incumbent: FrozenTrial, maximize: bool) -> bool:
    """Whether ``trial`` beats ``incumbent``; ties go to the newer trial."""
    value, best = trial.value, incumbent.value
    assert value is not None and best is not None  # completed single-objective trials have one
    if value == best:
        return trial.number > incumbent.number
    return value > best if maximize else value < best
