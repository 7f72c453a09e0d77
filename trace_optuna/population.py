"""Pure queries over the trials a study has stored: best, top-k, lineage, snapshots.

A :class:`Population` reads the study through Optuna, whose storage caches finished trials per
process, so each :meth:`Population.refresh` only indexes trials that finished since the last one.
Everything a step needs to continue a lineage (parents, snapshots, feedback) comes from storage,
never from one process's memory, so any worker can continue any lineage.

Multi-objective studies (``directions=[...]``): a score is a list, one number per direction,
and "better" is Pareto dominance (:meth:`Population.better`). The candidates no other candidate
dominates form the Pareto front (:meth:`Population.pareto_front`). There is no single best
candidate, so :meth:`Population.best` (where a greedy step starts) is the front member the
fewest completed trials have started from, the newest among ties: a new front member is tried
next, and the greedy steps go round the front instead of all starting from one end of it.
Ranked queries (:meth:`Population.top_k`, :meth:`Population.tournament`) rank by Pareto layer
(the front first, then the front of what is left, ...), the newest first within a layer.

Failed candidates. A candidate whose code raised, or on which ``evaluate`` raised, is a
*failure* (``trace:candidate_error``, or an entry of ``trace:evaluated`` with an ``error``),
whether its trial failed or completed with the study's ``error_score``. The study remembers
every failure (:meth:`Population.failure`), so no worker evaluates that candidate again; and a
failed candidate completed with ``error_score`` never ranks above a working one, whatever the
scores (:meth:`Population.best` and the ranked queries put working candidates first).

Per-example scores. In a dataset study (``trainset=``, see :mod:`trace_optuna.dataset`) every
candidate's score on each example is a row of the study's
:class:`~trace_optuna.example_results.ExampleStore`. :meth:`Population.example_scores` reads one
candidate's and :meth:`Population.example_leaders` which candidates lead on each example, so a
strategy can combine candidates that are good on different examples. The rows are read at most
once per call and kept until the next :meth:`Population.refresh` (a validated candidate's
validation rows, which are complete and never change, for the life of the view). In a study
without a dataset they are empty, and no row is ever read.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from collections.abc import Collection
import dataclasses
import numbers
import random
from typing import TYPE_CHECKING
from typing import Any

from optuna.study import StudyDirection
from optuna.trial import TrialState

from trace_optuna import records
from trace_optuna.exceptions import ConfigurationError
from trace_optuna.exceptions import RecordError

if TYPE_CHECKING:
    from datetime import datetime

    import optuna
    from optuna.trial import FrozenTrial

    from trace_optuna.evaluation import Score
    from trace_optuna.example_results import ExampleStore

_FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
_SNAPSHOT_CACHE_SIZE = 256


@dataclasses.dataclass(frozen=True)
class Failure:
    """A candidate the study evaluated and that failed (see the module docstring).

    Attributes:
        number: The trial that evaluated it.
        error: Why it failed.
        feedback: The feedback its run gave (the error's message).
    """

    number: int
    error: str
    feedback: str


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
        # +1 per maximized objective, -1 per minimized one: "better" is sign * value larger.
        self._signs = [1.0 if d == StudyDirection.MAXIMIZE else -1.0 for d in study.directions]
        self._maximize = self._signs[0] > 0.0
        self._trials: list[FrozenTrial] = []
        self._scan_from = 0  # every trial before this number is finished and indexed
        self._indexed: set[int] = set()  # indexed trials at or after _scan_from
        self._completed: list[int] = []
        self._best: FrozenTrial | None = None
        self._best_failed: FrozenTrial | None = None  # best() only when nothing works
        self._failed: set[int] = set()  # completed trials whose candidate failed
        # snapshot hash -> (trial, index in its trace:evaluated, or None for its candidate)
        self._failures: dict[str, tuple[int, int | None]] = {}
        self._failed_children: dict[int, list[int]] = {}
        self._front: list[FrozenTrial] = []  # multi-objective: candidates none dominates
        self._holders: dict[tuple[str, str], int] = {}
        self._snapshots: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._by_hash: dict[str, int] = {}
        self._children: dict[int, list[int]] = {}
        self._dataset: bool | None = None  # whether the study has a trainset; None: not read
        self._example_store: ExampleStore | None = None
        # split -> snapshot hash -> {example id: score}; "final": validated candidates' val rows
        # (complete and never rewritten), kept for the life of the view; "fresh": this refresh's
        self._final_scores: dict[str, dict[str, float]] = {}
        self._fresh_scores: dict[tuple[str, str], dict[str, float]] = {}
        #: Where greedy steps start instead of the best, when set: ``rule(population)``
        #: (a dataset study's ``parent_selection="pareto"``); None from it means the best.
        self.parent_rule: Callable[[Population], FrozenTrial | None] | None = None

    def refresh(self) -> None:
        """Index the trials that finished since the last refresh."""
        self._fresh_scores = {}  # rows may have been added since (a running trial's)
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
        failed = self._index_failures(trial, snapshot_hash)
        if trial.state != TrialState.COMPLETE or records.SNAPSHOT not in trial.user_attrs:
            return
        if snapshot_hash is not None and trial.user_attrs.get(records.VALIDATED) is not False:
            self._by_hash.setdefault(snapshot_hash, trial.number)
        self._completed.append(trial.number)
        for parent in trial.user_attrs.get(records.PARENTS) or []:
            self._children.setdefault(int(parent), []).append(trial.number)
        if records.DUPLICATE_OF in trial.user_attrs:
            return  # a reused score of an earlier candidate is not a new candidate
        if trial.user_attrs.get(records.VALIDATED) is False:
            return  # worse than its parent on its minibatch: its value is no validation mean
        if failed:  # completed with error_score: ranked after every working candidate
            self._failed.add(trial.number)
            best_failed = self._best_failed
            if best_failed is None or len(self._signs) > 1:  # multi-objective: the newest
                self._best_failed = trial
            elif _better(trial, best_failed, self._maximize):
                self._best_failed = trial
            return
        if len(self._signs) > 1:  # no single best: keep the Pareto front; best() picks there
            score = score_of(trial)
            # Dominance is transitive: what a removed member dominated, the newcomer does too.
            if not any(self.better(score_of(member), score) for member in self._front):
                self._front = [m for m in self._front if not self.better(score, score_of(m))]
                self._front.append(trial)
            return
        if self._best is None or _better(trial, self._best, self._maximize):
            self._best = trial

    def _index_failures(self, trial: FrozenTrial, snapshot_hash: str | None) -> bool:
        """Remember the failed candidates a finished trial holds; whether its own failed."""
        attrs = trial.user_attrs
        failed = records.CANDIDATE_ERROR in attrs
        if failed and snapshot_hash is not None:
            self._failures.setdefault(snapshot_hash, (trial.number, None))
            if trial.state == TrialState.FAIL:  # a completed one is among _children
                for parent in attrs.get(records.PARENTS) or []:
                    self._failed_children.setdefault(int(parent), []).append(trial.number)
        if records.EVALUATED in attrs:  # candidates a strategy evaluated, failed repairs
            for index, entry in enumerate(records.decode(attrs, records.EVALUATED) or []):
                error = entry.get("error") or entry.get("code_error")  # schema 2 had only code's
                if error and not entry.get("transient", False) and entry.get("snapshot_hash"):
                    self._failures.setdefault(entry["snapshot_hash"], (trial.number, index))
        return failed

    def failure(self, snapshot_hash: str) -> Failure | None:
        """How the candidate with this snapshot hash failed, if the study evaluated it and it
        failed (not transiently); None otherwise."""
        found = self._failures.get(snapshot_hash)
        if found is None:
            return None
        number, index = found
        attrs = self.trial(number).user_attrs
        if index is None:
            error = str(records.decode(attrs, records.CANDIDATE_ERROR))
            return Failure(number, error, records.decode(attrs, records.FEEDBACK) or error)
        entry = (records.decode(attrs, records.EVALUATED) or [])[index]
        error = str(entry.get("error") or entry.get("code_error"))
        return Failure(number, error, entry.get("feedback") or error)

    def failed(self, number: int) -> bool:
        """Whether completed trial ``number``'s candidate failed (scored with error_score)."""
        return number in self._failed

    def trial(self, number: int) -> FrozenTrial:
        """The trial with this number, as last read.

        Raises:
            ConfigurationError: If ``number`` is not an int.
            RecordError: If the study holds no trial with this number (a negative one
                included: trial numbers count from 0); the error names the numbers it holds.
        """
        if isinstance(number, bool) or not isinstance(number, numbers.Integral):
            raise ConfigurationError(
                f"A trial number must be an int; got {number!r} ({type(number).__name__})."
            )
        number = int(number)  # a negative index must not count from the end
        if not 0 <= number < len(self._trials):
            self.refresh()
        if not 0 <= number < len(self._trials):
            held = (
                f"its trials are numbered 0 to {len(self._trials) - 1}"
                if self._trials
                else "it holds no trial yet"
            )
            raise RecordError(f"Study {self._study.study_name!r} has no Trial#{number}: {held}.")
        return self._trials[number]

    def completed(self) -> list[FrozenTrial]:
        """Completed trials that hold a trace_optuna snapshot, in trial order."""
        return [self._trials[number] for number in sorted(self._completed)]

    @property
    def multi_objective(self) -> bool:
        """Whether the study has several directions (scores are lists)."""
        return len(self._signs) > 1

    def better(self, a: Score, b: Score) -> bool:
        """Whether score ``a`` is better than ``b`` in the study's direction(s).

        Single-objective: strictly larger when maximizing, smaller when minimizing.
        Multi-objective: ``a`` dominates ``b`` (Pareto): no objective worse, at least one
        strictly better.

        Raises:
            ConfigurationError: If a score does not have the study's shape (one number per
                direction).
        """
        if isinstance(a, list) and isinstance(b, list):
            if len(a) != len(self._signs) or len(b) != len(self._signs):
                raise ConfigurationError(
                    f"Scores {a} and {b} must have one number per direction ({len(self._signs)})."
                )
            pairs = [(sign * x, sign * y) for sign, x, y in zip(self._signs, a, b, strict=True)]
            return all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)
        if isinstance(a, list) or isinstance(b, list):
            kind = f"lists of {len(self._signs)} numbers" if len(self._signs) > 1 else "numbers"
            raise ConfigurationError(
                f"Cannot compare a score list with a number: {a!r}, {b!r}; this study's scores "
                f"are {kind}."
            )
        return a > b if self._maximize else a < b

    def best(self) -> FrozenTrial | None:
        """The completed trial a greedy step starts from, or None.

        Single-objective: the best score. Among equal scores the newest candidate wins, so a
        greedy search accepts sideways moves and can cross a plateau instead of restarting
        from the same trial forever. Multi-objective: the member of the Pareto front that the
        fewest completed trials name as a parent (:meth:`children`), the newest among ties.
        Trials that reused an earlier candidate's score do not count as new candidates, and a
        failed candidate (completed with ``error_score``) is chosen only when none works.
        """
        if self.parent_rule is not None:
            chosen = self.parent_rule(self)
            if chosen is not None:
                return chosen
        if len(self._signs) == 1:
            return self._best or self._best_failed
        if not self._front:
            return self._best_failed
        return min(self._front, key=lambda t: (len(self._children.get(t.number, ())), -t.number))

    def pareto_front(self) -> list[FrozenTrial]:
        """The candidates no other candidate dominates, in trial order.

        In a single-objective study: every candidate with the best score. Trials that reused
        an earlier candidate's score are left out (their candidate is already counted).
        """
        if len(self._signs) == 1:
            best = self._best
            if best is None:
                return []
            return [
                trial
                for trial in self.candidates()
                if trial.value == best.value and trial.number not in self._failed
            ]
        return sorted(self._front, key=lambda trial: trial.number)

    def candidates(self) -> list[FrozenTrial]:
        """Completed trials that evaluated a new candidate (reused duplicates left out, and a
        dataset study's candidates that were not validated)."""
        return [
            trial
            for trial in self.completed()
            if records.DUPLICATE_OF not in trial.user_attrs
            and trial.user_attrs.get(records.VALIDATED) is not False
        ]

    def top_k(self, k: int) -> list[FrozenTrial]:
        """The ``k`` best candidates, best first (newest first among equal scores).

        Multi-objective: by Pareto layer, the newest first within a layer.
        """
        if len(self._signs) > 1 and len(self._front) >= k:
            return sorted(self._front, key=lambda trial: trial.number, reverse=True)[:k]
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
        """The ``k`` best of the given trials, best first.

        Multi-objective: by Pareto layer among the given trials, the newest first within a
        layer.
        """
        ranked = sorted(trials, key=lambda trial: trial.number, reverse=True)
        working = [trial for trial in ranked if trial.number not in self._failed]
        failed = [trial for trial in ranked if trial.number in self._failed]
        if len(self._signs) > 1:
            return (self._pareto_layers(working, k) + self._pareto_layers(failed, k))[:k]
        working.sort(key=lambda trial: _value(trial), reverse=self._maximize)
        failed.sort(key=lambda trial: _value(trial), reverse=self._maximize)
        return (working + failed)[:k]

    def _pareto_layers(self, trials: list[FrozenTrial], k: int) -> list[FrozenTrial]:
        """The first ``k`` of ``trials`` (newest first) ordered by Pareto layer."""
        ranked: list[FrozenTrial] = []
        remaining = trials
        while remaining and len(ranked) < k:
            layer: list[FrozenTrial] = []
            for trial in remaining:
                score = score_of(trial)
                if not any(self.better(score_of(member), score) for member in layer):
                    layer = [m for m in layer if not self.better(score, score_of(m))]
                    layer.append(trial)
            chosen = {trial.number for trial in layer}
            ranked += layer  # newest first: ``remaining`` is, and removals keep the order
            remaining = [trial for trial in remaining if trial.number not in chosen]
        return ranked[:k]

    def children(self, number: int) -> list[int]:
        """Completed trials that name trial ``number`` among their parents, in trial order."""
        return sorted(self._children.get(number, ()))

    def tried_from(self, number: int) -> list[int]:
        """Every candidate proposed from trial ``number`` and evaluated, in trial order: its
        completed children and the failed trials whose candidate failed (their feedback is
        the error), so a step from it sees what broke as well as what scored."""
        return sorted({*self._children.get(number, ()), *self._failed_children.get(number, ())})

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

    @property
    def dataset(self) -> bool:
        """Whether the study optimizes over a dataset (it was given ``trainset=``), so its
        candidates have per-example rows. Read from the study's recorded splits
        (``trace:splits``), once the study is bound (they are fixed from then on)."""
        if self._dataset is not None:
            return self._dataset
        attrs = self._study.user_attrs
        dataset = (attrs.get(records.STUDY_SPLITS) or {}).get("trainset") is not None
        if dataset or records.SCHEMA in attrs:
            self._dataset = dataset
        return dataset

    def example_scores(self, number: int, split: str = "val") -> dict[str, float]:
        """Trial ``number``'s candidate's per-example scores in a dataset study.

        The scores are the study's stored rows of the candidate (by its
        ``trace:snapshot_hash``), whichever trial ran them: a candidate pruned during
        validation has the rows of the chunks it was scored on. At most one read of the
        store per call (none when cached since the last :meth:`refresh`).

        Args:
            number: A trial number.
            split: ``"val"`` (the validation set) or ``"train"`` (the minibatches it ran on).
                The test set is never read by a strategy.

        Returns:
            ``{example id: score}``; empty in a study without a dataset, or for a trial with
            no candidate or whose candidate has no rows of ``split``.

        Raises:
            ConfigurationError: If ``split`` is not ``"val"`` or ``"train"``.
            RecordError: If the study holds no trial ``number``.

        Example: the validation examples a strategy's parent gets wrong::

            scores = context.population.example_scores(parent.number)
            failing = sorted(example for example, score in scores.items() if score < 1.0)
        """
        _check_strategy_split(split)
        snapshot_hash = self.trial(number).user_attrs.get(records.SNAPSHOT_HASH)
        if snapshot_hash is None or not self.dataset:
            return {}
        return dict(self._scores_of([snapshot_hash], split)[snapshot_hash])

    def example_leaders(self, split: str = "val") -> dict[str, list[int]]:
        """Which candidates lead on each example: GEPA's per-example view of the population.

        For every example of ``split`` some candidate has a row for, the candidates with the
        best score on it (ties lead together), among the working candidates
        (:meth:`candidates`, failed ones left out; one trial per candidate, its first). One
        read of the store for the candidates not cached since the last :meth:`refresh`.

        Args:
            split: ``"val"`` or ``"train"`` (see :meth:`example_scores`).

        Returns:
            ``{example id: [trial numbers, in trial order]}``; empty in a study without a
            dataset.

        Raises:
            ConfigurationError: If ``split`` is not ``"val"`` or ``"train"``.
        """
        _check_strategy_split(split)
        if not self.dataset:
            return {}
        by_hash: dict[str, int] = {}
        for trial in self.candidates():
            snapshot_hash = trial.user_attrs.get(records.SNAPSHOT_HASH)
            if snapshot_hash is not None and trial.number not in self._failed:
                by_hash.setdefault(snapshot_hash, trial.number)
        leaders: dict[str, tuple[float, list[int]]] = {}
        for snapshot_hash, scores in self._scores_of(list(by_hash), split).items():
            number = by_hash[snapshot_hash]
            for example_id, score in scores.items():
                best = leaders.get(example_id)
                if best is None or self.better(score, best[0]):
                    leaders[example_id] = (score, [number])
                elif score == best[0]:
                    best[1].append(number)
        return {example_id: sorted(led) for example_id, (_, led) in leaders.items()}

    def _scores_of(self, hashes: list[str], split: str) -> dict[str, dict[str, float]]:
        """``{hash: {example id: score}}`` for these candidates; reads the missing ones at
        once."""
        found: dict[str, dict[str, float]] = {}
        missing = []
        for snapshot_hash in hashes:
            cached = self._fresh_scores.get((split, snapshot_hash))
            if cached is None and split == "val":
                cached = self._final_scores.get(snapshot_hash)
            if cached is None:
                missing.append(snapshot_hash)
            else:
                found[snapshot_hash] = cached
        if missing:
            if self._example_store is None:
                from trace_optuna.example_results import ExampleStore  # imports population

                # Optuna offers no public handle on a study's storage.
                self._example_store = ExampleStore(self._study._storage, self._study._study_id)
            read: dict[str, dict[str, float]] = {snapshot_hash: {} for snapshot_hash in missing}
            for row in self._example_store.rows(split=split, candidates=missing):
                read[row.candidate][row.example_id] = row.score
            for snapshot_hash, scores in read.items():
                # A validated candidate's validation rows are complete: they cannot change.
                number = self._by_hash.get(snapshot_hash)
                if split == "val" and number is not None and number not in self._failed:
                    self._final_scores[snapshot_hash] = scores
                else:
                    self._fresh_scores[(split, snapshot_hash)] = scores
            found.update(read)
        return found

    def lineage(self, number: int) -> list[int]:
        """Trial numbers from the root to ``number``, following each trial's first parent."""
        chain = [number]
        while True:
            parents = self.trial(chain[-1]).user_attrs.get(records.PARENTS) or []
            if not parents or parents[0] in chain:
                return chain[::-1]
            chain.append(int(parents[0]))


def _check_strategy_split(split: object) -> None:
    if split not in ("val", "train"):
        raise ConfigurationError(
            f"Per-example scores are read for split 'val' or 'train', got {split!r} (the test "
            "set is scored once at the end and never read by a strategy)."
        )


def _finished_by(trial: FrozenTrial, moment: datetime) -> bool:
    return trial.datetime_complete is not None and trial.datetime_complete <= moment


def score_of(trial: FrozenTrial) -> Score:
    """A completed trial's score: its value, or its list of values in a multi-objective study.

    Raises:
        RecordError: If the trial has no value (it did not complete).
    """
    values = trial.values
    if values is None:
        raise RecordError(f"Trial#{trial.number} has no score (state {trial.state.name}).")
    return float(values[0]) if len(values) == 1 else [float(value) for value in values]


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
