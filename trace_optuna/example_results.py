"""Per-example results: one row per (study, candidate, split, example), shared by every worker.

A dataset study scores a candidate (a snapshot, named by its content hash) example by example.
Every result is a row here, keyed by ``(study_id, candidate, split, example_id)``. The rows are
the study's evaluation cache: a worker that needs a pair another worker (or an earlier run)
already evaluated reads the row instead of running the example again, and a pair that another
worker is evaluating right now is waited for, not run twice.

What is cached: a result the candidate itself produced, its own error included (``error`` set,
scored low). What is not: a failure of the LLM or the network while running the example; the
caller raises instead of returning a row, and the pair stays open for a later attempt.

**In-progress pairs.** :meth:`ExampleStore.evaluate` claims the pairs it is about to run, one
atomic write for all of them; a claim records the holding trial's number, its worker and a
token of the call. A pair claimed by another call is waited for (polling with backoff until its
row appears) while the holder's trial is RUNNING; a claim whose trial has ended (it failed, or
its worker died and Optuna's heartbeat failed it) is taken over with a compare-and-set. While
waiting, the waiter runs Optuna's stale-trial check, since the holder may be dead; a wait
longer than ``wait_timeout`` takes the claim over (a hung holder must not stop the study). A
call runs its own claims before it waits for anyone's, and holds no claim while waiting, so
two calls never wait for each other.

**Where rows live** (the same places as candidate claims, see
:func:`trace_optuna.coordination.shared_place`):

* an RDB storage's database (SQLite, PostgreSQL, MySQL/MariaDB), or the SQLite file next to a
  journal file: the table ``trace_optuna_examples``, one row per pair, readable with plain SQL::

      study_id      int       Optuna's study id (studies.study_id)        } primary
      candidate     str(64)   the candidate's snapshot hash               } key
      split         str(8)    train | val | test                          }
      example_id    str(255)  the example's id                            }
      score         float     the example's score
      feedback      text      the grader's text
      output        text      the start of the agent's output (500 characters)
      seconds       float     wall time of the run
      worker        str(255)  host:pid that ran it
      trial_number  int       the trial that ran it
      error         text      the candidate's own error on the example, or NULL
      created_at    datetime  when it was written (UTC)

  with an index on ``(study_id, split, candidate)``. Claims of pairs being evaluated are rows
  of ``trace_optuna_example_claims`` (the same key, plus ``holder``, ``trial_number``,
  ``worker``, ``claimed_at``), deleted when their rows are written.
* a Redis journal: under the journal's key prefix, one hash per (study, split, candidate),
  ``trace_optuna:examples:<study_id>:<split>:<candidate>``, mapping each example id to its row
  as JSON (the fields above); a counter per split ``trace_optuna:example_count:<study_id>:
  <split>``; a set of the candidates per split ``trace_optuna:example_candidates:<study_id>:
  <split>``; claims in hashes ``trace_optuna:example_claims:<study_id>:<split>:<candidate>``.
* an in-memory storage: this process.

Writes are batched: one multi-row insert (rows already present are kept) in one transaction
per :meth:`ExampleStore.put`, one pipeline on Redis.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
import dataclasses
import datetime
import json
import logging
import math
import os
import secrets
import socket
import threading
import time
from typing import TYPE_CHECKING
from typing import Any
import warnings
import weakref

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.trial import TrialState
import sqlalchemy
from sqlalchemy.dialects import mysql
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite

from trace_optuna.coordination import create_tables
from trace_optuna.coordination import shared_place
from trace_optuna.exceptions import ConfigurationError
from trace_optuna.storage import call_with_retry

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

_logger = logging.getLogger(__name__)

#: The splits a row can belong to; train and validation results are never mixed.
SPLITS = ("train", "val", "test")

#: Longest output excerpt stored with a row, in characters.
OUTPUT_EXCERPT_CHARS = 500

#: Longest example id, in characters (the SQL key column's width).
MAX_EXAMPLE_ID_CHARS = 255

EXAMPLES_TABLE = "trace_optuna_examples"
EXAMPLE_CLAIMS_TABLE = "trace_optuna_example_claims"

#: How long :meth:`ExampleStore.evaluate` waits for another live trial's pairs, by default.
WAIT_TIMEOUT_S = 1800.0

_POLL_S = (0.05, 2.0)  # first and longest wait between looks at pairs another trial holds
_ROWS_PER_STATEMENT = 200  # 12 parameters a row: far below every database's limit
_IDS_PER_QUERY = 500


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
        waited: The example ids another call was running when this one needed them (their
            rows are that call's).
    """

    results: list[ExampleResult]
    ran: list[str]
    waited: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class _Holder:
    """Who holds a claim: one :meth:`ExampleStore.evaluate` call (``token``) of a trial."""

    token: str
    trial_number: int
    worker: str

    def encode(self) -> str:
        return f"{self.token}|{self.trial_number}|{self.worker}"

    @classmethod
    def decode(cls, text: str | bytes) -> _Holder:
        if isinstance(text, bytes):
            text = text.decode()
        token, number, worker = text.split("|", 2)
        return cls(token, int(number), worker)


def worker_name() -> str:
    """This process as rows name their worker: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


class ExampleStore:
    """The per-example rows of one study.

    Args:
        storage: The study's Optuna storage.
        study_id: The study's id in it.
        wait_timeout: Seconds :meth:`evaluate` waits for pairs a live trial of another call
            holds before it takes them over and runs them itself.

    The backends (SQL table, Redis structure, this process) are private; every call retries
    while the database is unreachable (:func:`trace_optuna.storage.call_with_retry`).
    Creating a store touches no database.

    Example:
        >>> import optuna
        >>> study = optuna.create_study()
        >>> store = ExampleStore(study._storage, study._study_id)
        >>> row = ExampleResult("c0ffee", "val", "q1", 1.0, "correct", "42", 0.1, "me", 0)
        >>> store.put([row])
        >>> store.count(split="val"), store.get("c0ffee", "val", ["q1", "q2"]) == {"q1": row}
        (1, True)
    """

    def __init__(
        self, storage: BaseStorage, study_id: int, *, wait_timeout: float = WAIT_TIMEOUT_S
    ) -> None:
        if not (isinstance(wait_timeout, (int, float)) and wait_timeout >= 0):
            raise ConfigurationError(
                f"ExampleStore wait_timeout must be a number of seconds >= 0, got "
                f"{wait_timeout!r}."
            )
        self.study_id = study_id
        self.storage = storage
        self.wait_timeout = float(wait_timeout)
        self._backend = _backend_for(storage)
        self._study: optuna.Study | None = None

    # -- reading --------------------------------------------------------------------------

    def get(
        self, candidate: str, split: str, example_ids: Sequence[str]
    ) -> dict[str, ExampleResult]:
        """The stored rows among ``example_ids`` (missing ids are left out)."""
        _check_split(split)
        if not example_ids:
            return {}
        return self._backend.call(
            "get", "read example results", self.study_id, candidate, split, list(example_ids)
        )

    def rows(
        self, *, split: str | None = None, candidates: Sequence[str] | None = None
    ) -> list[ExampleResult]:
        """Every stored row of the study, optionally of one split and some candidates.

        Sorted by split, candidate and example id.
        """
        if split is not None:
            _check_split(split)
        if candidates is not None and not candidates:
            return []
        rows: list[ExampleResult] = self._backend.call(
            "rows",
            "read example results",
            self.study_id,
            split,
            None if candidates is None else list(candidates),
        )
        return sorted(rows, key=lambda row: (row.split, row.candidate, row.example_id))

    def count(self, *, split: str | None = None) -> int:
        """How many pairs the study has evaluated (rows), e.g. for an evaluation budget.

        One query (a ``COUNT``; on Redis one read of the per-split counters).
        """
        if split is not None:
            _check_split(split)
        return int(self._backend.call("count", "count example results", self.study_id, split))

    def claimed(self, candidate: str, split: str) -> dict[str, int]:
        """The pairs of ``candidate`` some call is evaluating now: ``{example_id: the holding
        trial's number}`` (a claim left by a dead trial stays until it is taken over)."""
        _check_split(split)
        holders: dict[str, _Holder] = self._backend.call(
            "claimed", "read example claims", self.study_id, candidate, split
        )
        return {example_id: holder.trial_number for example_id, holder in holders.items()}

    # -- writing --------------------------------------------------------------------------

    def put(self, rows: Sequence[ExampleResult]) -> None:
        """Write ``rows`` in one batch (an existing row for the same key is kept).

        Raises:
            ConfigurationError: If a row breaks a rule (its split, a finite score, an example
                id of at most :data:`MAX_EXAMPLE_ID_CHARS` characters); nothing is written.
        """
        checked = [_checked(row) for row in rows]
        if checked:
            self._backend.call("put", "write example results", self.study_id, checked)

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
        claims. It calls ``run_missing`` again only for pairs it takes over after waiting (or
        whose holder gave them up), so a pair is never in two calls. If ``run_missing``
        raises, the claims of that call are released, nothing of it is written, and the error
        propagates.

        Args:
            candidate: The candidate's snapshot hash.
            split: ``"train"``, ``"val"`` or ``"test"``.
            examples: ``[(example_id, example)]`` (ids unique).
            run_missing: Runs the pairs nobody has a row for (see :data:`RunMissing`).
            trial_number: The running trial that asks (it holds the claims). Claims of a trial
                that is not RUNNING are taken over by any other call at once, so call this
                from a running trial.

        Raises:
            ConfigurationError: If an example id breaks :func:`check_example_id`'s rule or
                ``examples`` repeats one, or ``run_missing`` returned rows that do not answer
                the pairs it was given (one per pair, same order, same candidate and split).
        """
        _check_split(split)
        wanted: dict[str, Any] = {}
        for example_id, example in examples:
            check_example_id(example_id)
            if example_id in wanted:
                raise ConfigurationError(
                    f"evaluate() got the example id {example_id!r} twice; example ids must be "
                    "unique."
                )
            wanted[example_id] = example
        order = [example_id for example_id, _ in examples]
        found = self.get(candidate, split, order)
        me = _Holder(secrets.token_hex(8), trial_number, worker_name()[:255])
        ran: list[str] = []
        held_by_others: set[str] = set()
        delay = _POLL_S[0]
        waiting_since: float | None = None
        while True:
            missing = [example_id for example_id in order if example_id not in found]
            if not missing:
                break
            holders: dict[str, _Holder] = self._backend.call(
                "claim", "claim examples", self.study_id, candidate, split, missing, me
            )
            mine = [
                example_id
                for example_id in missing
                if (holder := holders.get(example_id)) is not None and holder.token == me.token
            ]
            if mine:
                # A row written between the read above and the claim (its writer released
                # the claim after writing it) must not be run again.
                late = self.get(candidate, split, mine)
                if late:
                    found.update(late)
                    self._release(candidate, split, list(late), me)
                    mine = [example_id for example_id in mine if example_id not in late]
            if mine:
                found.update(self._run(candidate, split, mine, wanted, run_missing, me))
                ran.extend(mine)
                delay, waiting_since = _POLL_S[0], None
                continue
            others: dict[_Holder, list[str]] = {}
            for example_id in missing:
                holder = holders.get(example_id)
                if holder is not None:  # None: released since; the next claim takes it
                    others.setdefault(holder, []).append(example_id)
                    held_by_others.add(example_id)
            if not others:
                continue
            if waiting_since is None:
                waiting_since = time.monotonic()
                _logger.info(
                    "Trial#%d: waiting for %d example(s) of candidate %s (%s) that Trial(s) "
                    "%s are evaluating.",
                    trial_number,
                    sum(map(len, others.values())),
                    candidate[:12],
                    split,
                    sorted({holder.trial_number for holder in others}),
                )
            overdue = time.monotonic() - waiting_since > self.wait_timeout
            taken = False
            for holder, example_ids in others.items():
                if overdue or not self._is_running(holder.trial_number):
                    if overdue:
                        _logger.warning(
                            "Trial#%d: Trial#%d has held %d example(s) of candidate %s for "
                            "over %.0f s; taking them over.",
                            trial_number,
                            holder.trial_number,
                            len(example_ids),
                            candidate[:12],
                            self.wait_timeout,
                        )
                    self._backend.call(
                        "take_over",
                        "take over example claims",
                        self.study_id,
                        candidate,
                        split,
                        example_ids,
                        holder,
                        me,
                    )
                    taken = True
            if taken:
                continue
            time.sleep(delay)  # a poll of the storage: another process owns the answer
            delay = min(2 * delay, _POLL_S[1])
            self._fail_stale()
            found.update(self.get(candidate, split, missing))
        waited = held_by_others - set(ran)
        return Lookup(
            [found[example_id] for example_id in order],
            ran,
            [example_id for example_id in order if example_id in waited],
        )

    def _run(
        self,
        candidate: str,
        split: str,
        mine: list[str],
        wanted: dict[str, Any],
        run_missing: RunMissing,
        me: _Holder,
    ) -> dict[str, ExampleResult]:
        try:
            results = list(run_missing([(example_id, wanted[example_id]) for example_id in mine]))
            answered = [(row.candidate, row.split, row.example_id) for row in results]
            asked = [(candidate, split, example_id) for example_id in mine]
            if answered != asked:
                raise ConfigurationError(
                    f"run_missing must return one ExampleResult per pair it was given, in the "
                    f"same order, for candidate {candidate[:12]} on split {split!r}; it was "
                    f"given {mine[:5]}{'...' if len(mine) > 5 else ''} and returned "
                    f"{[key[2] for key in answered][:5]} ({len(results)} rows)."
                )
            checked = [_checked(row) for row in results]
            self._backend.call("put", "write example results", self.study_id, checked)
        finally:
            self._release(candidate, split, mine, me)
        return {row.example_id: row for row in checked}

    def _release(self, candidate: str, split: str, example_ids: list[str], me: _Holder) -> None:
        self._backend.call(
            "release", "release example claims", self.study_id, candidate, split, example_ids, me
        )

    def _is_running(self, trial_number: int) -> bool:
        try:
            trial_id = self.storage.get_trial_id_from_study_id_trial_number(
                self.study_id, trial_number
            )
            return self.storage.get_trial(trial_id).state == TrialState.RUNNING
        except KeyError:  # no such trial: nobody can be evaluating for it
            return False

    def _fail_stale(self) -> None:
        """Fail the trials of dead workers, as Optuna does before ``ask()`` (a holder may be
        one of them)."""
        try:
            if self._study is None:
                name = self.storage.get_study_name_from_id(self.study_id)
                self._study = optuna.load_study(study_name=name, storage=self.storage)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                optuna.storages.fail_stale_trials(self._study)
        except Exception:  # someone else's dead trial must not fail this one
            _logger.exception("Could not look for trials of dead workers.")


def pareto_front(rows: Sequence[ExampleResult], *, maximize: bool = True) -> dict[str, list[str]]:
    """The per-example Pareto front: each candidate that is best on at least one example,
    with the examples it leads (GEPA's instance front).

    On each example, the candidates with a row for it are compared; every candidate with the
    best score leads it (ties lead together). A candidate leading no example is not on the
    front. Pass the rows of one split (``store.rows(split="val")``).

    Args:
        rows: Per-example results.
        maximize: Whether a higher score is better (the study's direction).

    Returns:
        ``{candidate: [example ids it leads, sorted]}``, most examples led first (then by
        candidate hash).

    Example:
        >>> def row(candidate, example_id, score):
        ...     return ExampleResult(candidate, "val", example_id, score, "", "", 0.0, "w", 0)
        >>> pareto_front([row("a", "1", 1.0), row("b", "1", 0.0), row("c", "1", 0.5),
        ...               row("b", "2", 1.0), row("c", "2", 1.0),
        ...               row("a", "3", 0.0), row("c", "3", 0.5)])
        {'c': ['2', '3'], 'a': ['1'], 'b': ['2']}
    """
    best: dict[tuple[str, str], float] = {}
    for row in rows:
        key = (row.split, row.example_id)
        if key not in best or (row.score > best[key] if maximize else row.score < best[key]):
            best[key] = row.score
    led: dict[str, set[str]] = {}
    for row in rows:
        if row.score == best[(row.split, row.example_id)]:
            led.setdefault(row.candidate, set()).add(row.example_id)
    ordered = sorted(led.items(), key=lambda item: (-len(item[1]), item[0]))
    return {candidate: sorted(example_ids) for candidate, example_ids in ordered}


def as_dataframe(rows: Sequence[ExampleResult], columns: Sequence[str] | None = None) -> Any:
    """``rows`` as a ``pandas.DataFrame`` for analysis, one row per result and one column per
    :class:`ExampleResult` field, or per name in ``columns`` (as
    ``optuna.Study.trials_dataframe``, it needs pandas).

    Raises:
        ImportError: If pandas is not installed (the message says how to install it).
    """
    try:
        import pandas
    except ImportError as error:
        raise ImportError(
            f"as_dataframe needs pandas, as optuna's trials_dataframe does: pip install pandas "
            f"({error})."
        ) from error
    if columns is None:
        columns = [field.name for field in dataclasses.fields(ExampleResult)]
    return pandas.DataFrame(
        [[getattr(row, column) for column in columns] for row in rows], columns=list(columns)
    )


def _check_split(split: object) -> None:
    if split not in SPLITS:
        raise ConfigurationError(f"split must be one of {list(SPLITS)}, got {split!r}.")


def check_example_id(example_id: object) -> None:
    """Refuse an id the store cannot keep apart from others.

    Raises:
        ConfigurationError: Unless ``example_id`` is a non-empty str of at most
            :data:`MAX_EXAMPLE_ID_CHARS` characters that does not end with a space (MySQL and
            MariaDB compare ``"a "`` equal to ``"a"``).
    """
    if (
        not isinstance(example_id, str)
        or not 0 < len(example_id) <= MAX_EXAMPLE_ID_CHARS
        or example_id.endswith(" ")
    ):
        raise ConfigurationError(
            f"Example id {example_id!r}: an example id must be a non-empty str of at most "
            f"{MAX_EXAMPLE_ID_CHARS} characters, not ending with a space."
        )


def _checked(row: ExampleResult) -> ExampleResult:
    """``row`` as stored: checked, its output cut to :data:`OUTPUT_EXCERPT_CHARS`."""
    if not isinstance(row, ExampleResult):
        raise ConfigurationError(f"Expected an ExampleResult, got {type(row).__name__}.")
    _check_split(row.split)
    check_example_id(row.example_id)
    if not isinstance(row.candidate, str) or not 0 < len(row.candidate) <= 64:
        raise ConfigurationError(
            f"Example {row.example_id!r}: the candidate must be a snapshot hash (a str of at "
            f"most 64 characters), got {row.candidate!r}."
        )
    if isinstance(row.score, bool) or not isinstance(row.score, (int, float)):
        raise ConfigurationError(
            f"Example {row.example_id!r}: the score must be a finite number, got {row.score!r}."
        )
    if not math.isfinite(row.score):
        raise ConfigurationError(
            f"Example {row.example_id!r}: the score must be a finite number, got {row.score!r}."
        )
    return dataclasses.replace(
        row,
        score=float(row.score),
        feedback=str(row.feedback),
        output=str(row.output)[:OUTPUT_EXCERPT_CHARS],
        seconds=float(row.seconds),
        worker=str(row.worker)[:255],
        trial_number=int(row.trial_number),
        error=None if row.error is None else str(row.error),
    )


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


# -- backends ---------------------------------------------------------------------------------


class _Backend:
    """Where rows and claims live. Subclasses implement the ``_<name>`` methods:

    * ``_get(study_id, candidate, split, ids) -> {id: row}``
    * ``_rows(study_id, split | None, candidates | None) -> [row]``
    * ``_count(study_id, split | None) -> int``
    * ``_put(study_id, rows)``: insert, keeping rows already present
    * ``_claim(study_id, candidate, split, ids, holder) -> {id: holder}``: claim the unclaimed
      ids for ``holder``, atomically per id; return every id's holder now
    * ``_take_over(study_id, candidate, split, ids, old, new)``: compare-and-set per id
    * ``_release(study_id, candidate, split, ids, holder)``: drop ``holder``'s claims
    * ``_claimed(study_id, candidate, split) -> {id: holder}``
    """

    retry_timeout = 0.0

    def call(self, name: str, what: str, *args: Any) -> Any:
        return call_with_retry(
            getattr(self, f"_{name}"), *args, what=what, timeout=self.retry_timeout
        )


_metadata = sqlalchemy.MetaData()
_long_text = sqlalchemy.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


def _key_columns() -> list[sqlalchemy.Column[Any]]:
    return [
        sqlalchemy.Column("study_id", sqlalchemy.Integer, primary_key=True, autoincrement=False),
        sqlalchemy.Column("candidate", sqlalchemy.String(64), primary_key=True),
        sqlalchemy.Column("split", sqlalchemy.String(8), primary_key=True),
        sqlalchemy.Column("example_id", sqlalchemy.String(MAX_EXAMPLE_ID_CHARS), primary_key=True),
    ]


# On MySQL/MariaDB the tables are utf8mb4_bin: example ids that differ only in case are
# different examples.
_examples = sqlalchemy.Table(
    EXAMPLES_TABLE,
    _metadata,
    *_key_columns(),
    sqlalchemy.Column("score", sqlalchemy.Double, nullable=False),
    sqlalchemy.Column("feedback", _long_text, nullable=False),
    sqlalchemy.Column("output", sqlalchemy.Text, nullable=False),
    sqlalchemy.Column("seconds", sqlalchemy.Double, nullable=False),
    sqlalchemy.Column("worker", sqlalchemy.String(255), nullable=False),
    sqlalchemy.Column("trial_number", sqlalchemy.Integer, nullable=False),
    sqlalchemy.Column("error", _long_text, nullable=True),
    sqlalchemy.Column("created_at", sqlalchemy.DateTime, nullable=False),
    sqlalchemy.Index("ix_trace_optuna_examples_study_split", "study_id", "split", "candidate"),
    mysql_charset="utf8mb4",
    mysql_collate="utf8mb4_bin",
)
_claims = sqlalchemy.Table(
    EXAMPLE_CLAIMS_TABLE,
    _metadata,
    *_key_columns(),
    sqlalchemy.Column("holder", sqlalchemy.String(32), nullable=False),
    sqlalchemy.Column("trial_number", sqlalchemy.Integer, nullable=False),
    sqlalchemy.Column("worker", sqlalchemy.String(255), nullable=False),
    sqlalchemy.Column("claimed_at", sqlalchemy.DateTime, nullable=False),
    mysql_charset="utf8mb4",
    mysql_collate="utf8mb4_bin",
)
_ROW_FIELDS = [field.name for field in dataclasses.fields(ExampleResult)]


class _SQL(_Backend):
    def __init__(self, engine: sqlalchemy.engine.Engine, retry_timeout: float) -> None:
        self._engine = engine
        self.retry_timeout = retry_timeout
        self._ready = False

    def _create(self) -> None:
        if not self._ready:
            create_tables(_metadata, self._engine)
            self._ready = True

    def _exists(self) -> bool:
        """Whether the tables exist; reads create nothing (a report may read a study
        that never had a dataset, from a read-only file)."""
        if not self._ready:
            inspector = sqlalchemy.inspect(self._engine)
            self._ready = all(inspector.has_table(table) for table in _metadata.tables)
        return self._ready

    def _insert_ignore(
        self, connection: sqlalchemy.Connection, table: sqlalchemy.Table, values: list[dict]
    ) -> None:
        """One multi-row insert per chunk; a row whose key exists is left as it is."""
        dialect = self._engine.dialect.name
        # In key order: two writers of overlapping keys then lock them in the same order
        # (PostgreSQL and InnoDB could deadlock otherwise; a deadlock is retried anyway).
        values = sorted(
            values, key=lambda value: (value["candidate"], value["split"], value["example_id"])
        )
        for chunk in _chunks(values, _ROWS_PER_STATEMENT):
            statement: Any
            if dialect == "sqlite":
                statement = sqlite.insert(table).values(list(chunk)).on_conflict_do_nothing()
            elif dialect == "postgresql":
                statement = postgresql.insert(table).values(list(chunk)).on_conflict_do_nothing()
            elif dialect in ("mysql", "mariadb"):
                # Not INSERT IGNORE, which would also turn a too-long value into a warning.
                statement = mysql.insert(table).values(list(chunk))
                statement = statement.on_duplicate_key_update(study_id=table.c.study_id)
            else:
                for value in chunk:
                    try:
                        with connection.begin_nested():
                            connection.execute(table.insert().values(value))
                    except sqlalchemy.exc.IntegrityError:
                        pass
                continue
            connection.execute(statement)

    def _key(
        self,
        table: sqlalchemy.Table,
        study_id: int,
        candidate: str,
        split: str,
        ids: Sequence[str],
    ) -> Any:
        return (
            (table.c.study_id == study_id)
            & (table.c.candidate == candidate)
            & (table.c.split == split)
            & table.c.example_id.in_(list(ids))
        )

    def _get(
        self, study_id: int, candidate: str, split: str, ids: list[str]
    ) -> dict[str, ExampleResult]:
        found: dict[str, ExampleResult] = {}
        if not self._exists():
            return found
        columns = [_examples.c[name] for name in _ROW_FIELDS]
        with self._engine.connect() as connection:
            for chunk in _chunks(ids, _IDS_PER_QUERY):
                query = sqlalchemy.select(*columns).where(
                    self._key(_examples, study_id, candidate, split, chunk)
                )
                for row in connection.execute(query):
                    result = ExampleResult(*row)
                    found[result.example_id] = result
        return found

    def _rows(
        self, study_id: int, split: str | None, candidates: list[str] | None
    ) -> list[ExampleResult]:
        if not self._exists():
            return []
        condition = _examples.c.study_id == study_id
        if split is not None:
            condition &= _examples.c.split == split
        rows: list[ExampleResult] = []
        with self._engine.connect() as connection:
            for chunk in [None] if candidates is None else _chunks(candidates, _IDS_PER_QUERY):
                where = (
                    condition if chunk is None else condition & _examples.c.candidate.in_(chunk)
                )
                query = sqlalchemy.select(*(_examples.c[name] for name in _ROW_FIELDS))
                rows.extend(ExampleResult(*row) for row in connection.execute(query.where(where)))
        return rows

    def _count(self, study_id: int, split: str | None) -> int:
        if not self._exists():
            return 0
        condition = _examples.c.study_id == study_id
        if split is not None:
            condition &= _examples.c.split == split
        query = sqlalchemy.select(sqlalchemy.func.count()).select_from(_examples).where(condition)
        with self._engine.connect() as connection:
            return int(connection.execute(query).scalar() or 0)

    def _put(self, study_id: int, rows: list[ExampleResult]) -> None:
        self._create()
        now = _now()
        values = [
            {"study_id": study_id, **dataclasses.asdict(row), "created_at": now} for row in rows
        ]
        with self._engine.begin() as connection:
            self._insert_ignore(connection, _examples, values)

    def _holders(
        self,
        connection: sqlalchemy.Connection,
        study_id: int,
        candidate: str,
        split: str,
        ids: Sequence[str] | None,
    ) -> dict[str, _Holder]:
        holders: dict[str, _Holder] = {}
        columns = (
            _claims.c.example_id,
            _claims.c.holder,
            _claims.c.trial_number,
            _claims.c.worker,
        )
        for chunk in [None] if ids is None else _chunks(ids, _IDS_PER_QUERY):
            if chunk is None:
                where = (
                    (_claims.c.study_id == study_id)
                    & (_claims.c.candidate == candidate)
                    & (_claims.c.split == split)
                )
            else:
                where = self._key(_claims, study_id, candidate, split, chunk)
            for example_id, token, number, worker in connection.execute(
                sqlalchemy.select(*columns).where(where)
            ):
                holders[example_id] = _Holder(token, int(number), worker)
        return holders

    def _claim(
        self, study_id: int, candidate: str, split: str, ids: list[str], holder: _Holder
    ) -> dict[str, _Holder]:
        self._create()
        now = _now()
        values = [
            {
                "study_id": study_id,
                "candidate": candidate,
                "split": split,
                "example_id": example_id,
                "holder": holder.token,
                "trial_number": holder.trial_number,
                "worker": holder.worker[:255],
                "claimed_at": now,
            }
            for example_id in ids
        ]
        with self._engine.begin() as connection:
            self._insert_ignore(connection, _claims, values)
        with self._engine.connect() as connection:
            return self._holders(connection, study_id, candidate, split, ids)

    def _take_over(
        self,
        study_id: int,
        candidate: str,
        split: str,
        ids: list[str],
        old: _Holder,
        new: _Holder,
    ) -> None:
        with self._engine.begin() as connection:
            for chunk in _chunks(ids, _IDS_PER_QUERY):
                connection.execute(
                    _claims.update()
                    .where(
                        self._key(_claims, study_id, candidate, split, chunk)
                        & (_claims.c.holder == old.token)
                    )
                    .values(
                        holder=new.token,
                        trial_number=new.trial_number,
                        worker=new.worker[:255],
                        claimed_at=_now(),
                    )
                )

    def _release(
        self, study_id: int, candidate: str, split: str, ids: list[str], holder: _Holder
    ) -> None:
        with self._engine.begin() as connection:
            for chunk in _chunks(ids, _IDS_PER_QUERY):
                connection.execute(
                    _claims.delete().where(
                        self._key(_claims, study_id, candidate, split, chunk)
                        & (_claims.c.holder == holder.token)
                    )
                )

    def _claimed(self, study_id: int, candidate: str, split: str) -> dict[str, _Holder]:
        if not self._exists():
            return {}
        with self._engine.connect() as connection:
            return self._holders(connection, study_id, candidate, split, None)


_REDIS_PUT = """
local added = 0
for i = 2, #ARGV, 2 do
  added = added + redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
end
if added > 0 then
  redis.call('INCRBY', KEYS[2], added)
  redis.call('SADD', KEYS[3], ARGV[1])
end
return added
"""

_REDIS_CLAIM = """
local holders = {}
for i = 2, #ARGV do
  redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[1])
  holders[#holders + 1] = redis.call('HGET', KEYS[1], ARGV[i])
end
return holders
"""

_REDIS_TAKE_OVER = """
for i = 3, #ARGV do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[1] then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[2])
  end
end
return 0
"""

_REDIS_RELEASE = """
for i = 2, #ARGV do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return 0
"""


class _Redis(_Backend):
    """Rows as JSON in one hash per (study, split, candidate); see the module docstring."""

    def __init__(self, url: str, prefix: str, retry_timeout: float) -> None:
        import redis

        self._client = redis.Redis.from_url(url)
        self._prefix = f"{prefix}trace_optuna:"
        self.retry_timeout = retry_timeout

    def _rows_key(self, study_id: int, split: str, candidate: str) -> str:
        return f"{self._prefix}examples:{study_id}:{split}:{candidate}"

    def _count_key(self, study_id: int, split: str) -> str:
        return f"{self._prefix}example_count:{study_id}:{split}"

    def _candidates_key(self, study_id: int, split: str) -> str:
        return f"{self._prefix}example_candidates:{study_id}:{split}"

    def _claims_key(self, study_id: int, split: str, candidate: str) -> str:
        return f"{self._prefix}example_claims:{study_id}:{split}:{candidate}"

    @staticmethod
    def _encode(row: ExampleResult) -> str:
        fields = {**dataclasses.asdict(row), "created_at": _now().isoformat()}
        return json.dumps(fields, sort_keys=True, allow_nan=False)

    @staticmethod
    def _decode(text: str | bytes) -> ExampleResult:
        fields = json.loads(text)
        return ExampleResult(**{name: fields[name] for name in _ROW_FIELDS})

    def _get(
        self, study_id: int, candidate: str, split: str, ids: list[str]
    ) -> dict[str, ExampleResult]:
        key = self._rows_key(study_id, split, candidate)
        found: dict[str, ExampleResult] = {}
        for chunk in _chunks(ids, _IDS_PER_QUERY):
            for example_id, text in zip(chunk, self._client.hmget(key, list(chunk)), strict=True):
                if text is not None:
                    found[example_id] = self._decode(text)
        return found

    def _rows(
        self, study_id: int, split: str | None, candidates: list[str] | None
    ) -> list[ExampleResult]:
        splits = SPLITS if split is None else (split,)
        pipeline = self._client.pipeline(transaction=False)
        for each in splits:
            pipeline.smembers(self._candidates_key(study_id, each))
        keys: list[str] = []
        for each, members in zip(splits, pipeline.execute(), strict=True):
            names = sorted(member.decode() for member in members)
            keys.extend(
                self._rows_key(study_id, each, name)
                for name in names
                if candidates is None or name in candidates
            )
        pipeline = self._client.pipeline(transaction=False)
        for key in keys:
            pipeline.hvals(key)
        return [self._decode(text) for values in pipeline.execute() for text in values]

    def _count(self, study_id: int, split: str | None) -> int:
        splits = SPLITS if split is None else (split,)
        counts = self._client.mget([self._count_key(study_id, each) for each in splits])
        return sum(int(count) for count in counts if count is not None)

    def _put(self, study_id: int, rows: list[ExampleResult]) -> None:
        groups: dict[tuple[str, str], list[str]] = {}
        for row in rows:
            groups.setdefault((row.split, row.candidate), []).extend(
                [row.example_id, self._encode(row)]
            )
        pipeline = self._client.pipeline(transaction=True)
        for (split, candidate), pairs in groups.items():
            keys = (
                self._rows_key(study_id, split, candidate),
                self._count_key(study_id, split),
                self._candidates_key(study_id, split),
            )
            pipeline.eval(_REDIS_PUT, len(keys), *keys, candidate, *pairs)
        pipeline.execute()

    def _claim(
        self, study_id: int, candidate: str, split: str, ids: list[str], holder: _Holder
    ) -> dict[str, _Holder]:
        key = self._claims_key(study_id, split, candidate)
        holders: dict[str, _Holder] = {}
        for chunk in _chunks(ids, _IDS_PER_QUERY):
            values = self._client.eval(_REDIS_CLAIM, 1, key, holder.encode(), *chunk)
            holders.update(zip(chunk, map(_Holder.decode, values), strict=True))
        return holders

    def _take_over(
        self,
        study_id: int,
        candidate: str,
        split: str,
        ids: list[str],
        old: _Holder,
        new: _Holder,
    ) -> None:
        key = self._claims_key(study_id, split, candidate)
        for chunk in _chunks(ids, _IDS_PER_QUERY):
            self._client.eval(_REDIS_TAKE_OVER, 1, key, old.encode(), new.encode(), *chunk)

    def _release(
        self, study_id: int, candidate: str, split: str, ids: list[str], holder: _Holder
    ) -> None:
        key = self._claims_key(study_id, split, candidate)
        for chunk in _chunks(ids, _IDS_PER_QUERY):
            self._client.eval(_REDIS_RELEASE, 1, key, holder.encode(), *chunk)

    def _claimed(self, study_id: int, candidate: str, split: str) -> dict[str, _Holder]:
        stored = self._client.hgetall(self._claims_key(study_id, split, candidate))
        return {
            (key.decode() if isinstance(key, bytes) else key): _Holder.decode(value)
            for key, value in stored.items()
        }


class _Memory(_Backend):
    """Rows and claims in this process, for storages that only this process sees."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stored: dict[tuple[int, str, str, str], ExampleResult] = {}
        self._holders: dict[tuple[int, str, str, str], _Holder] = {}

    def _get(
        self, study_id: int, candidate: str, split: str, ids: list[str]
    ) -> dict[str, ExampleResult]:
        with self._lock:
            return {
                example_id: row
                for example_id in ids
                if (row := self._stored.get((study_id, candidate, split, example_id)))
            }

    def _rows(
        self, study_id: int, split: str | None, candidates: list[str] | None
    ) -> list[ExampleResult]:
        with self._lock:
            return [
                row
                for (row_study, candidate, row_split, _), row in self._stored.items()
                if row_study == study_id
                and (split is None or row_split == split)
                and (candidates is None or candidate in candidates)
            ]

    def _count(self, study_id: int, split: str | None) -> int:
        return len(self._rows(study_id, split, None))

    def _put(self, study_id: int, rows: list[ExampleResult]) -> None:
        with self._lock:
            for row in rows:
                self._stored.setdefault((study_id, row.candidate, row.split, row.example_id), row)

    def _claim(
        self, study_id: int, candidate: str, split: str, ids: list[str], holder: _Holder
    ) -> dict[str, _Holder]:
        with self._lock:
            return {
                example_id: self._holders.setdefault(
                    (study_id, candidate, split, example_id), holder
                )
                for example_id in ids
            }

    def _take_over(
        self,
        study_id: int,
        candidate: str,
        split: str,
        ids: list[str],
        old: _Holder,
        new: _Holder,
    ) -> None:
        with self._lock:
            for example_id in ids:
                key = (study_id, candidate, split, example_id)
                if self._holders.get(key) == old:
                    self._holders[key] = new

    def _release(
        self, study_id: int, candidate: str, split: str, ids: list[str], holder: _Holder
    ) -> None:
        with self._lock:
            for example_id in ids:
                key = (study_id, candidate, split, example_id)
                if self._holders.get(key) == holder:
                    del self._holders[key]

    def _claimed(self, study_id: int, candidate: str, split: str) -> dict[str, _Holder]:
        with self._lock:
            return {
                key[3]: holder
                for key, holder in self._holders.items()
                if key[:3] == (study_id, candidate, split)
            }


# One backend per storage object: stores made per trial share its engine, client or rows.
_backends: weakref.WeakKeyDictionary[Any, _Backend] = weakref.WeakKeyDictionary()
_backends_lock = threading.Lock()


def _backend_for(storage: BaseStorage) -> _Backend:
    place = shared_place(storage)
    with _backends_lock:
        backend = _backends.get(place.storage)
        if backend is None:
            if place.engine is not None:
                backend = _SQL(place.engine, place.retry_timeout)
            elif place.redis is not None:
                backend = _Redis(*place.redis, place.retry_timeout)
            else:
                backend = _Memory()
            _backends[place.storage] = backend
        return backend
