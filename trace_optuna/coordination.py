"""What workers sharing a study agree on beyond Optuna's trials: candidate claims.

**Candidate claims.** Before a worker evaluates a candidate snapshot it claims the snapshot's
hash in the storage with one atomic write: a row under a unique key in the table
``trace_optuna_claims`` of an RDB storage's database, a ``SET NX`` key on Redis, a row in a
SQLite file next to a journal file. A claim is held while the claiming trial is RUNNING. A
worker that finds a live claim waits for that trial to finish and then reuses its stored score
(``trace:duplicate_of``) instead of evaluating the same candidate at the same time; a claim
whose trial ended without storing that candidate (it failed, or its worker died) is taken over
with a compare-and-set.

**Dead workers.** Their trials are failed and re-queued by Optuna's heartbeat, which the
storages opened from URLs have on every backend (RDB: Optuna's own; journals:
:class:`~trace_optuna.storage.HeartbeatJournalStorage`). Optuna checks before each ``ask()``;
a worker waiting for a claim checks too, since the trial it waits for may be a dead one.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import logging
import secrets
import threading
import time
from typing import TYPE_CHECKING
from typing import Any
import warnings

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage
from optuna.storages import RDBStorage
from optuna.trial import TrialState
import sqlalchemy

from trace_optuna import records
from trace_optuna import snapshots
from trace_optuna.population import score_of
from trace_optuna.storage import RETRY_TIMEOUT_S
from trace_optuna.storage import call_with_retry
from trace_optuna.strategies.base import RunResult

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from trace_optuna.population import Population

_logger = logging.getLogger(__name__)

CLAIMS_TABLE = "trace_optuna_claims"

_metadata = sqlalchemy.MetaData()
_claims = sqlalchemy.Table(
    CLAIMS_TABLE,
    _metadata,
    sqlalchemy.Column("study_id", sqlalchemy.Integer, primary_key=True, autoincrement=False),
    sqlalchemy.Column("snapshot_hash", sqlalchemy.String(64), primary_key=True),
    sqlalchemy.Column("trial_id", sqlalchemy.Integer, nullable=False),
)


def create_tables(metadata: sqlalchemy.MetaData, engine: sqlalchemy.engine.Engine) -> None:
    """Create ``metadata``'s tables in ``engine``'s database unless they exist.

    Workers starting together may race to create them: if one's ``CREATE`` fails because
    another's won, checking again finds them.
    """
    try:
        metadata.create_all(engine, checkfirst=True)
    except sqlalchemy.exc.SQLAlchemyError:
        metadata.create_all(engine, checkfirst=True)


class _ClaimTable:
    """Where claims live: ``insert`` is atomic, ``replace`` a compare-and-set.

    Backends implement ``_insert`` and ``_replace``; the public calls retry them while the
    database is unreachable.
    """

    retry_timeout = RETRY_TIMEOUT_S

    def insert(self, study_id: int, snapshot_hash: str, trial_id: int) -> int:
        """Claim the hash for ``trial_id`` unless claimed; return the holder's trial id."""
        return call_with_retry(
            self._insert,
            study_id,
            snapshot_hash,
            trial_id,
            what="claim a candidate",
            timeout=self.retry_timeout,
        )

    def replace(self, study_id: int, snapshot_hash: str, old: int, new: int) -> bool:
        """Move the claim from trial ``old`` to ``new``; False if it no longer was ``old``'s."""
        return call_with_retry(
            self._replace,
            study_id,
            snapshot_hash,
            old,
            new,
            what="take over a claim",
            timeout=self.retry_timeout,
        )

    def _insert(self, study_id: int, snapshot_hash: str, trial_id: int) -> int:
        raise NotImplementedError

    def _replace(self, study_id: int, snapshot_hash: str, old: int, new: int) -> bool:
        raise NotImplementedError


class _SQLClaims(_ClaimTable):
    def __init__(self, engine: sqlalchemy.engine.Engine, retry_timeout: float) -> None:
        self._engine = engine
        self.retry_timeout = retry_timeout
        self._ready = False

    def _create(self) -> None:
        if not self._ready:
            create_tables(_metadata, self._engine)
            self._ready = True

    def _insert(self, study_id: int, snapshot_hash: str, trial_id: int) -> int:
        self._create()
        key = (_claims.c.study_id == study_id) & (_claims.c.snapshot_hash == snapshot_hash)
        try:
            with self._engine.begin() as connection:
                connection.execute(
                    _claims.insert().values(
                        study_id=study_id, snapshot_hash=snapshot_hash, trial_id=trial_id
                    )
                )
            return trial_id
        except sqlalchemy.exc.IntegrityError:
            with self._engine.connect() as connection:
                holder = connection.execute(sqlalchemy.select(_claims.c.trial_id).where(key))
                value = holder.scalar()
        return trial_id if value is None else int(value)  # None: released meanwhile; retry

    def _replace(self, study_id: int, snapshot_hash: str, old: int, new: int) -> bool:
        with self._engine.begin() as connection:
            result = connection.execute(
                _claims.update()
                .where(
                    (_claims.c.study_id == study_id)
                    & (_claims.c.snapshot_hash == snapshot_hash)
                    & (_claims.c.trial_id == old)
                )
                .values(trial_id=new)
            )
            return result.rowcount == 1


_REDIS_REPLACE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


class _RedisClaims(_ClaimTable):
    def __init__(self, url: str, prefix: str, retry_timeout: float) -> None:
        import redis

        self._client = redis.Redis.from_url(url)
        self._prefix = f"{prefix}trace_optuna:claim:"
        self.retry_timeout = retry_timeout

    def _key(self, study_id: int, snapshot_hash: str) -> str:
        return f"{self._prefix}{study_id}:{snapshot_hash}"

    def _insert(self, study_id: int, snapshot_hash: str, trial_id: int) -> int:
        key = self._key(study_id, snapshot_hash)
        if self._client.set(key, trial_id, nx=True):
            return trial_id
        holder = self._client.get(key)
        return trial_id if holder is None else int(holder)

    def _replace(self, study_id: int, snapshot_hash: str, old: int, new: int) -> bool:
        key = self._key(study_id, snapshot_hash)
        return bool(self._client.eval(_REDIS_REPLACE, 1, key, str(old), str(new)))


class _LocalClaims(_ClaimTable):
    """Claims in this process's memory, for storages that only one process uses."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders: dict[tuple[int, str], int] = {}

    def _insert(self, study_id: int, snapshot_hash: str, trial_id: int) -> int:
        with self._lock:
            return self._holders.setdefault((study_id, snapshot_hash), trial_id)

    def _replace(self, study_id: int, snapshot_hash: str, old: int, new: int) -> bool:
        with self._lock:
            if self._holders.get((study_id, snapshot_hash)) != old:
                return False
            self._holders[(study_id, snapshot_hash)] = new
            return True


@dataclasses.dataclass(frozen=True)
class Claim:
    """The outcome of :meth:`Coordinator.claim`.

    Attributes:
        held: True when this trial now holds the claim and may evaluate the candidate.
        holder: The number of the RUNNING trial holding it when ``held`` is False.
        taken_over: True when the claim was taken from a trial that has ended; the caller
            should look again whether that trial stored the candidate.
    """

    held: bool
    holder: int | None = None
    taken_over: bool = False


class Coordinator:
    """Candidate claims for one storage. Build it with :func:`coordinator_for`.

    Args:
        storage: The Optuna storage (as given to ``optuna.create_study``).
        claims: Where claims live.
    """

    def __init__(self, storage: BaseStorage, claims: _ClaimTable) -> None:
        self.storage = storage
        self._claims = claims
        self._study_ids: dict[str, int] = {}
        # Holds this coordinator's claim_once claims; negative, so never a trial id.
        self._token = -1 - secrets.randbelow(2**31 - 1)

    def study_id(self, study: optuna.Study) -> int:
        name = study.study_name
        if name not in self._study_ids:
            self._study_ids[name] = self.storage.get_study_id_from_name(name)
        return self._study_ids[name]

    # -- claims ---------------------------------------------------------------------------

    def claim(self, study: optuna.Study, trial_id: int, snapshot_hash: str) -> Claim:
        """Claim a candidate's hash for a running trial before evaluating it."""
        study_id = self.study_id(study)
        while True:
            holder_id = self._claims.insert(study_id, snapshot_hash, trial_id)
            if holder_id == trial_id:
                return Claim(held=True)
            holder = self._trial(holder_id)
            if holder is not None and holder.state == TrialState.RUNNING:
                return Claim(held=False, holder=holder.number)
            if self._claims.replace(study_id, snapshot_hash, holder_id, trial_id):
                return Claim(held=True, taken_over=True)

    def claim_once(self, study: optuna.Study, key: str) -> bool:
        """Claim ``key`` in the study for this coordinator, once among all workers.

        True for the first caller in all processes sharing the storage, False for every other
        (such claims are never released). The key shares the candidate claims' table: keep it
        under 64 characters and unlike a snapshot hash (``figures:...``).
        """
        return self._claims.insert(self.study_id(study), key, self._token) == self._token

    def is_running(self, study: optuna.Study, number: int) -> bool:
        """Whether trial ``number`` of ``study`` is still RUNNING in the storage."""
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(
            self.study_id(study), number
        )
        trial = self._trial(trial_id)
        return trial is not None and trial.state == TrialState.RUNNING

    def _trial(self, trial_id: int) -> FrozenTrial | None:
        try:
            return self.storage.get_trial(trial_id)
        except KeyError:
            return None  # a claim left by a deleted study

    # -- dead workers ---------------------------------------------------------------------

    def fail_stale(self, study: optuna.Study) -> None:
        """Fail the trials of dead workers and re-queue them, as Optuna does before ``ask()``.

        Does nothing on a storage without Optuna's heartbeat.
        """
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)


_CLAIM_POLL_S = (0.05, 1.0)  # first and longest wait between looks at a claim's holder


class TrialClaims:
    """One running trial's candidates, each evaluated once across all workers.

    Before a candidate is evaluated its hash is claimed in the storage. A candidate some trial
    already stored is not evaluated again: its stored score and feedback are reused. While
    another worker's running trial holds the claim, this trial waits for it to finish and
    reuses its result. A trial that already holds a claim does not wait (two trials could wait
    for each other); it evaluates.

    Args:
        coordinator: The storage's coordinator.
        trial: The running trial.
    """

    def __init__(self, coordinator: Coordinator, trial: optuna.Trial) -> None:
        self.coordinator = coordinator
        self.trial = trial
        self.held = False  # whether this trial holds a claim

    def evaluate_once(
        self,
        population: Population,
        values: dict[str, Any],
        run: Callable[[dict[str, Any]], RunResult],
    ) -> RunResult:
        """``run(values)``, unless an identical candidate was (or is being) evaluated: then
        its stored result, a score or a remembered failure (nothing is evaluated twice)."""
        trial = self.trial
        candidate_hash = snapshots.snapshot_hash(values)
        while True:
            stored = _stored_result(population, candidate_hash)
            if stored is not None:
                return stored
            claim = self.coordinator.claim(trial.study, trial._trial_id, candidate_hash)
            if claim.held:
                self.held = True
                if claim.taken_over:  # its last holder ended: did it store the candidate?
                    population.refresh()
                    if _stored_result(population, candidate_hash) is not None:
                        continue
                return run(values)
            assert claim.holder is not None
            if self.held:
                _logger.info(
                    "Trial#%d: Trial#%d holds the same candidate, but this trial holds claims "
                    "itself and does not wait.",
                    trial.number,
                    claim.holder,
                )
                return run(values)
            self._wait_for(claim.holder)
            population.refresh()

    def _wait_for(self, holder: int) -> None:
        _logger.info(
            "Trial#%d: Trial#%d is evaluating the same candidate; waiting for it.",
            self.trial.number,
            holder,
        )
        delay, longest = _CLAIM_POLL_S
        while self.coordinator.is_running(self.trial.study, holder):
            time.sleep(delay)  # a poll of the storage: another process owns the answer
            delay = min(2 * delay, longest)
            try:  # its worker may have died
                self.coordinator.fail_stale(self.trial.study)
            except Exception:  # someone else's dead trial must not fail this one
                _logger.exception("Could not look for trials of dead workers.")


def _stored_result(population: Population, candidate_hash: str) -> RunResult | None:
    """The study's result of this candidate: the score of the trial that completed it, or
    how it failed (a remembered failure is never evaluated again); None if it has none."""
    earlier = population.trial_with_snapshot(candidate_hash)
    if earlier is not None and not population.failed(earlier):
        stored = population.trial(earlier)
        return RunResult(
            score=score_of(stored),
            feedback=records.decode(stored.user_attrs, records.FEEDBACK, ""),
            details=records.decode(stored.user_attrs, records.DETAILS),
            reused_from=earlier,
        )
    failure = population.failure(candidate_hash)
    if failure is None:
        return None
    _logger.info(
        "Trial#%d's candidate failed before (%s); it is not evaluated again.",
        failure.number,
        failure.error,
    )
    # Which way it failed matters not here: the error's text says it.
    return RunResult(
        score=None,
        feedback=failure.feedback,
        evaluate_error=failure.error,
        reused_from=failure.number,
    )


def coordinator_for(storage: BaseStorage) -> Coordinator:
    """The coordinator of a storage, keeping claims where the storage's data lives.

    Args:
        storage: An Optuna storage (possibly wrapped in Optuna's trial cache).
    """
    place = shared_place(storage)
    claims: _ClaimTable
    if place.engine is not None:
        claims = _SQLClaims(place.engine, place.retry_timeout)
    elif place.redis is not None:
        claims = _RedisClaims(*place.redis, place.retry_timeout)
    else:
        claims = _LocalClaims()
    return Coordinator(storage, claims)


@dataclasses.dataclass(frozen=True)
class SharedPlace:
    """Where the workers of one storage keep what Optuna's trials do not hold.

    Attributes:
        engine: The SQL database to put tables in: an RDB storage's own database, or a SQLite
            file next to a journal file. None when ``redis`` is set or nothing is shared.
        redis: ``(url, key prefix)`` of a Redis journal.
        retry_timeout: How long to retry a call while the database is unreachable.
        storage: The storage, unwrapped from Optuna's trial cache; when neither ``engine`` nor
            ``redis`` is set, only this process sees it, and state is kept per storage object.
    """

    engine: sqlalchemy.engine.Engine | None
    redis: tuple[str, str] | None
    retry_timeout: float
    storage: BaseStorage


def shared_place(storage: BaseStorage) -> SharedPlace:
    """Where claims and the parameter registry of ``storage`` live."""
    backend = _unwrap(storage)
    retry_timeout = getattr(backend, "retry_timeout", RETRY_TIMEOUT_S)
    engine: sqlalchemy.engine.Engine | None = None
    redis: tuple[str, str] | None = None
    if isinstance(backend, RDBStorage) and backend.engine.url.database not in (
        None,
        "",
        ":memory:",
    ):
        engine = backend.engine
    elif isinstance(backend, optuna.storages.JournalStorage):
        engine, redis = _journal_place(backend)
    return SharedPlace(engine, redis, retry_timeout, backend)


def _unwrap(storage: BaseStorage) -> BaseStorage:
    # Optuna wraps an RDBStorage in its trial cache when a study is made from it.
    inner = getattr(storage, "_backend", None)
    return inner if isinstance(inner, RDBStorage) else storage


def _journal_place(
    storage: optuna.storages.JournalStorage,
) -> tuple[sqlalchemy.engine.Engine | None, tuple[str, str] | None]:
    # Optuna has no public accessor for a journal's backend; read it, and fall back to
    # this process for a backend we do not know.
    from optuna.storages.journal import JournalFileBackend
    from optuna.storages.journal import JournalRedisBackend

    backend = getattr(storage, "_backend", None)
    if isinstance(backend, JournalRedisBackend):
        return None, (backend._url, backend._prefix)
    if isinstance(backend, JournalFileBackend):
        engine = sqlalchemy.create_engine(
            f"sqlite:///{backend._file_path}.claims.sqlite3", connect_args={"timeout": 30}
        )
        return engine, None
    _logger.warning(
        "Candidate claims and the parameter registry for %s are kept in this process only: "
        "several processes may evaluate the same candidate at the same time.",
        type(backend).__name__,
    )
    return None, None
