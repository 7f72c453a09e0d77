"""Per-example results: one row per (study, candidate, split, example), shared by every worker.

A dataset study scores a candidate (a snapshot, named by its content hash) example by example.
Every result is a row here, keyed by ``(study_id, candidate, split, example_id)``. The rows are
the study's evaluation cache: a worker that needs a pair another worker (or an earlier run)
already evaluated reads the row instead of running the example again, and a pair that another
worker is evaluating right now is waited for, not run twice.

What is cached: a result the candidate itself produced, its own error included (``error`` set,
scored low). What is not: a failure of the LLM or the network while running the example; the
caller raises instead of returning a row, and the pair stays open for a later attempt.

Where rows live (the same places as candidate claims, see
:func:`trace_optuna.coordination.shared_place`): a table ``trace_optuna_examples`` in an RDB
storage's database (readable with plain SQL), a table in the SQLite file next to a journal file,
a Redis structure under the journal's prefix, or this process only for an in-memory storage.

This module defines the contract; :class:`ExampleStore` picks the backend.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
import dataclasses
import threading
from typing import TYPE_CHECKING
from typing import Any
import weakref

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

#: The splits a row can belong to; train and validation results are never mixed.
SPLITS = ("train", "val", "test")

#: Longest output excerpt stored with a row, in characters.
OUTPUT_EXCERPT_CHARS = 500


@dataclasses.dataclass(frozen=True)
class ExampleResult:
    """The result of running one candidate on one example.

    Attributes:
        candidate: The candidate's snapshot hash (:func:`trace_optuna.snapshots.content_hash`).
        split: ``"train"``, ``"val"`` or ``"test"``.
        example_id: The example's stable id (a string).
        score: The example's score (finite).
        feedback: The grader's text for this example.
        output: An excerpt of the agent's output (at most :data:`OUTPUT_EXCERPT_CHARS`).
        seconds: Wall time of the run.
        worker: Who ran it (host:pid).
        trial_number: The trial that ran it.
        error: The candidate's own error on this example (cached like a score), or None.
    """

    candidate: str
    split: str
    example_id: str
    score: float
    feedback: str
    output: str
    seconds: float
    worker: str
    trial_number: int
    error: str | None = None


#: What the caller runs for the pairs nobody has a row for: ``[(example_id, example)]`` in,
#: one :class:`ExampleResult` per pair out (same order). Raise for an LLM or network failure
#: (nothing is cached for the pairs of that call).
RunMissing = Callable[[Sequence[tuple[str, Any]]], Sequence[ExampleResult]]


@dataclasses.dataclass(frozen=True)
class Lookup:
    """What :meth:`ExampleStore.evaluate` found and did.

    Attributes:
        results: One result per requested example, in the requested order.
        ran: The example ids this call ran (the rest were read from rows, or waited for).
    """

    results: list[ExampleResult]
    ran: list[str]


class ExampleStore:
    """The per-example rows of one study.

    Args:
        storage: The study's Optuna storage.
        study_id: The study's id in it.

    The backends (SQL table, Redis structure, this process) are private; every call retries
    while the database is unreachable (:func:`trace_optuna.storage.call_with_retry`).
    """

    def __init__(self, storage: BaseStorage, study_id: int) -> None:
        self.study_id = study_id
        self._rows = _memory_rows.setdefault(storage, {})
        self._lock = threading.Lock()

    def get(
        self, candidate: str, split: str, example_ids: Sequence[str]
    ) -> dict[str, ExampleResult]:
        """The stored rows among ``example_ids`` (missing ids are left out)."""
        with self._lock:
            return {
                example_id: row
                for example_id in example_ids
                if (row := self._rows.get((self.study_id, candidate, split, example_id)))
            }

    def evaluate(
        self,
        candidate: str,
        split: str,
        examples: Sequence[tuple[str, Any]],
        run_missing: RunMissing,
        *,
        trial_number: int,
    ) -> Lookup:
        """Results for ``candidate`` on ``examples``, running only the pairs nobody has run.

        Reads the rows that exist; claims the missing pairs (a pair claimed by a live trial of
        another worker is waited for, a claim of a dead one is taken over); runs the claimed
        pairs with ``run_missing`` in one call; writes their rows in one batch; releases the
        claims. If ``run_missing`` raises, the claims are released, nothing is written, and the
        error propagates.
        """
        found = self.get(candidate, split, [example_id for example_id, _ in examples])
        missing = [(example_id, ex) for example_id, ex in examples if example_id not in found]
        ran: list[str] = []
        if missing:
            rows = list(run_missing(missing))
            self.put(rows)
            found.update({row.example_id: row for row in rows})
            ran = [example_id for example_id, _ in missing]
        return Lookup([found[example_id] for example_id, _ in examples], ran)

    def put(self, rows: Sequence[ExampleResult]) -> None:
        """Write ``rows`` in one batch (an existing row for the same key is kept)."""
        with self._lock:
            for row in rows:
                self._rows.setdefault(
                    (self.study_id, row.candidate, row.split, row.example_id), row
                )

    def rows(
        self, *, split: str | None = None, candidates: Sequence[str] | None = None
    ) -> list[ExampleResult]:
        """Every stored row of the study, optionally of one split and some candidates."""
        with self._lock:
            return [
                row
                for (study_id, candidate, row_split, _), row in self._rows.items()
                if study_id == self.study_id
                and (split is None or row_split == split)
                and (candidates is None or candidate in candidates)
            ]

    def count(self, *, split: str | None = None) -> int:
        """How many pairs the study has evaluated (rows), e.g. for an evaluation budget."""
        return len(self.rows(split=split))


_memory_rows: weakref.WeakKeyDictionary[Any, dict[tuple[int, str, str, str], ExampleResult]] = (
    weakref.WeakKeyDictionary()
)
