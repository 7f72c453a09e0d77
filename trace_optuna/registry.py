"""Shared parameters: one agent's parameters optimized by several studies, through a registry.

A :class:`ParameterSet` is the shared agent (or team of agents): one function that builds it,
and so one set of parameter paths. Each study optimizes the paths it selects
(``create_study(parameters=team.select("agent1.*"), ...)``) and runs with every other
parameter at its current value in the set's **registry**, an append-only log of versions kept
in the study's own storage:

* version 0 holds every parameter's initial value (written by the first study to use the set);
* version ``n`` holds the values one trial published, with where they came from (study, trial,
  score, the version the trial ran against, its worker, the time).

The flow, per trial of a study that selects some paths:

1. Read the registry's newest version ``B`` (``trace:registry`` records it) and run with its
   values of the paths the study does not select.
2. If the registry holds values of the study's own paths that the study never evaluated
   (another study published them), the trial evaluates them as they are (strategy
   ``registry``): they join the study's population, and its strategies can build on them.
   Not twice in a row: where other studies publish often, every other trial takes a step.
3. Otherwise the study's strategy proposes a candidate for its paths, as in any study.
4. When the candidate beats the study's best score, the trial publishes the values it changed
   (``trace:publish`` records what happened). Publishing is a compare-and-set: it succeeds only
   if no other version since ``B`` changed any path the study selects, checked and appended in
   one atomic write of version ``newest + 1`` (a row under a unique key in the table
   ``trace_optuna_registry``, ``SET NX`` on Redis). Otherwise it is a **conflict**, resolved by
   the study's ``on_conflict`` policy:

   * ``"reevaluate"`` (the default): run the candidate's changed values on top of the newer
     registry values, in the same trial; publish them (compare-and-set again, on the newer
     version) if that run still beats the study's best, else record the conflict as rejected.
   * ``"skip"``: record the conflict and publish nothing; the next trial starts from the newer
     values.

   Either way the conflict is stored with the trial (``trace:publish``: the versions and paths
   it collided with), never a silent lost update.

:func:`registry_history` answers which study changed a parameter, when, from what, to what, and
with which score.

Studies over disjoint paths never conflict. A study's scores are measured with the other
parameters' values of its trial's registry version; they change as other studies publish, so a
study's best is a moving target, and an old best is not re-evaluated.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
import dataclasses
import datetime
import fnmatch
import json
import logging
import threading
from typing import TYPE_CHECKING
from typing import Any
import weakref

import sqlalchemy
from sqlalchemy.dialects import mysql

from trace_optuna import snapshots
from trace_optuna.coordination import create_tables
from trace_optuna.coordination import shared_place
from trace_optuna.exceptions import ConfigurationError
from trace_optuna.exceptions import RecordError
from trace_optuna.storage import call_with_retry
from trace_optuna.storage import open_existing

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

    from trace_optuna.coordination import SharedPlace

_logger = logging.getLogger(__name__)

REGISTRY_TABLE = "trace_optuna_registry"
CONFLICT_POLICIES = ("reevaluate", "skip")

_metadata = sqlalchemy.MetaData()
_versions = sqlalchemy.Table(
    REGISTRY_TABLE,
    _metadata,
    sqlalchemy.Column("registry", sqlalchemy.String(255), primary_key=True),
    sqlalchemy.Column("version", sqlalchemy.Integer, primary_key=True, autoincrement=False),
    # MySQL's TEXT holds 64 KB; one version may hold several 60,000-byte code parameters.
    sqlalchemy.Column(
        "record",
        sqlalchemy.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb"),
        nullable=False,
    ),
)


# -- the parameter set and what a study selects of it -----------------------------------------


class ParameterSet:
    """Parameters that several studies optimize: an agent (or a team of agents) and its paths.

    Args:
        agent: A function that builds the agent(s) (each study's objective calls it once per
            process), or the agent itself: a ``@trace.model`` instance, a trace Module, or a
            dict of them. Parameter paths are attribute paths (``"agent1.prompt"``).
        name: The registry's name in the storage; studies that share parameters use the same
            name. None: the agent function's ``__qualname__`` (or the class name of an agent);
            a lambda needs a name.

    Raises:
        ConfigurationError: If ``agent`` is neither a function nor an agent.
        SnapshotError: If the agent has no trainable parameter or a value is not JSON.

    Example:
        >>> from opto import trace
        >>> team = ParameterSet(lambda: {"a": trace.node(1.0, trainable=True),
        ...                              "b": trace.node(2.0, trainable=True)}, name="team")
        >>> team.select("a*").paths
        ('a',)
    """

    def __init__(self, agent: Any, *, name: str | None = None) -> None:
        if _is_agent(agent):
            self.make: Callable[[], Any] = lambda: agent
            built = agent
        elif callable(agent):
            self.make = agent
            built = agent()
        else:
            raise ConfigurationError(
                "ParameterSet needs a function that builds the agent(s), or an agent (a trace "
                f"Module/@trace.model instance or a dict of them); got {type(agent).__name__}."
            )
        if name is None:
            name = getattr(agent, "__qualname__", None) or type(built).__name__
            if "<lambda>" in name:  # every lambda has this name: their registries would clash
                raise ConfigurationError(
                    "ParameterSet of a lambda needs name=: the registry is found by name, and "
                    f"every lambda's name is {name!r}."
                )
        if not isinstance(name, str) or not 0 < len(name) <= 200:
            raise ConfigurationError(
                f"ParameterSet name must be a non-empty str of at most 200 characters, got "
                f"{name!r}."
            )
        self.name = name
        self.initial: dict[str, Any] = snapshots.snapshot(built)
        self.paths: tuple[str, ...] = tuple(self.initial)

    def select(self, *patterns: str) -> Selection:
        """The parameters a study optimizes: paths matching any of the glob ``patterns``.

        ``"*"`` selects every path, ``"agent1.*"`` every path under ``agent1``; a pattern
        without wildcards selects that path.

        Raises:
            ConfigurationError: If no pattern is given, or a pattern selects nothing (the
                error lists the set's paths).
        """
        if not patterns:
            raise ConfigurationError(
                f"select() needs at least one path pattern; the paths of {self.name!r} are "
                f"{list(self.paths)}."
            )
        selected: list[str] = []
        for pattern in patterns:
            if not isinstance(pattern, str):
                raise ConfigurationError(f"A path pattern must be a str, got {pattern!r}.")
            matched = [path for path in self.paths if fnmatch.fnmatchcase(path, pattern)]
            if not matched:
                raise ConfigurationError(
                    f"The pattern {pattern!r} selects no parameter of {self.name!r}; its paths "
                    f"are {list(self.paths)}."
                )
            selected.extend(path for path in matched if path not in selected)
        return Selection(self, tuple(sorted(selected)))

    def current(self, storage: str | BaseStorage | None) -> dict[str, Any]:
        """Every parameter's newest value in this set's registry in ``storage``.

        Raises:
            ConfigurationError: If no study over this set has run in ``storage``.
        """
        return dict(Registry(open_existing(storage), self.name).state().values)

    def history(self, storage: str | BaseStorage | None, path: str) -> list[Change]:
        """Every change of ``path`` in this set's registry in ``storage``; see
        :func:`registry_history`."""
        return registry_history(storage, path, registry=self.name)

    def __repr__(self) -> str:
        return f"ParameterSet(name={self.name!r}, paths={list(self.paths)})"


@dataclasses.dataclass(frozen=True)
class Selection:
    """The paths of a :class:`ParameterSet` that one study optimizes (``team.select(...)``).

    Attributes:
        parameter_set: The set the paths belong to.
        paths: The selected paths, sorted.
    """

    parameter_set: ParameterSet
    paths: tuple[str, ...]

    def __repr__(self) -> str:
        return f"Selection({self.parameter_set.name!r}, {list(self.paths)})"


def _is_agent(obj: Any) -> bool:
    try:
        snapshots.parameters(obj)
    except Exception:
        return False
    return True


# -- what the registry holds ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Version:
    """One version of a registry: the values one publish changed (version 0: every value).

    Attributes:
        number: The version number (0, 1, 2, ...).
        values: ``{path: value}`` this version set.
        study: The publishing study's name (None for version 0).
        trial: The publishing trial's number.
        score: The score of the published values, as the publishing study measured them.
        base: The registry version the published values were evaluated against.
        owned: The paths the publishing study selects (the compare-and-set covers them all).
        conflicts: Versions this publish collided with before it succeeded (after a
            re-evaluation on a newer version); empty when it succeeded at once.
        time: When it was published (UTC, ISO 8601).
        worker: ``{"host", "pid"}`` of the publishing process.
    """

    number: int
    values: dict[str, Any]
    study: str | None = None
    trial: int | None = None
    score: float | None = None
    base: int | None = None
    owned: tuple[str, ...] = ()
    conflicts: tuple[int, ...] = ()
    time: str = ""
    worker: dict[str, Any] | None = None

    def to_json(self) -> str:
        fields = dataclasses.asdict(self)
        return json.dumps(fields, sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, text: str, registry: str) -> Version:
        try:
            fields = json.loads(text)
            fields["owned"] = tuple(fields.get("owned") or ())
            fields["conflicts"] = tuple(fields.get("conflicts") or ())
            return cls(**fields)
        except (TypeError, ValueError) as error:
            raise RecordError(
                f"Registry {registry!r} holds an unreadable version: {error}: {text[:200]!r}"
            ) from None


@dataclasses.dataclass(frozen=True)
class State:
    """A registry at one version: every parameter's value and the version that set it."""

    version: int
    values: dict[str, Any]
    set_by: dict[str, int]

    def changed_since(self, base: int, paths: Iterable[str]) -> list[str]:
        """Which of ``paths`` a version newer than ``base`` changed."""
        return [path for path in paths if self.set_by[path] > base]


@dataclasses.dataclass(frozen=True)
class Change:
    """One change of one parameter, as :func:`registry_history` reports it."""

    path: str
    version: int
    old: Any
    new: Any
    study: str | None
    trial: int | None
    score: float | None
    base: int | None
    time: str
    conflicts: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Published:
    """The outcome of :meth:`Registry.publish`.

    Attributes:
        version: The new version's number, or None on a conflict.
        state: The registry as the publish left it or found it (on a conflict: the newest
            version, to re-evaluate on).
        conflicting_paths: The paths other versions changed since the base (on a conflict).
        conflicting_versions: The numbers of every version since the base that changed them.
    """

    version: int | None
    state: State
    conflicting_paths: tuple[str, ...] = ()
    conflicting_versions: tuple[int, ...] = ()


# -- where versions live: append-if-absent logs -----------------------------------------------


class _Log:
    """An append-only log of versions: ``append`` writes version ``n`` only if it is absent.

    Subclasses implement ``_append`` and ``_read``; calls are retried while the database is
    unreachable (see :func:`~trace_optuna.storage.call_with_retry`).
    """

    retry_timeout = 0.0

    def append(self, registry: str, number: int, record: str) -> bool:
        return call_with_retry(
            self._append,
            registry,
            number,
            record,
            what="publish to the parameter registry",
            timeout=self.retry_timeout,
        )

    def read(self, registry: str, after: int) -> list[str]:
        """The records of versions ``after + 1, after + 2, ...``, in order."""
        return call_with_retry(
            self._read,
            registry,
            after,
            what="read the parameter registry",
            timeout=self.retry_timeout,
        )

    def names(self) -> list[str]:
        """The names of the registries in the log, sorted."""
        return sorted(call_with_retry(self._names, what="list the parameter registries"))

    def _append(self, registry: str, number: int, record: str) -> bool:
        raise NotImplementedError

    def _read(self, registry: str, after: int) -> list[str]:
        raise NotImplementedError

    def _names(self) -> list[str]:
        raise NotImplementedError


class _SQLLog(_Log):
    def __init__(self, engine: sqlalchemy.engine.Engine, retry_timeout: float) -> None:
        self._engine = engine
        self.retry_timeout = retry_timeout
        self._ready = False

    def _create(self) -> None:
        if not self._ready:
            create_tables(_metadata, self._engine)
            self._ready = True

    def _append(self, registry: str, number: int, record: str) -> bool:
        self._create()
        try:
            with self._engine.begin() as connection:
                connection.execute(
                    _versions.insert().values(registry=registry, version=number, record=record)
                )
        except sqlalchemy.exc.IntegrityError:
            return False
        return True

    def _read(self, registry: str, after: int) -> list[str]:
        self._create()
        query = (
            sqlalchemy.select(_versions.c.record)
            .where((_versions.c.registry == registry) & (_versions.c.version > after))
            .order_by(_versions.c.version)
        )
        with self._engine.connect() as connection:
            return [str(row[0]) for row in connection.execute(query)]

    def _names(self) -> list[str]:
        self._create()
        query = sqlalchemy.select(_versions.c.registry).where(_versions.c.version == 0)
        with self._engine.connect() as connection:
            return [str(row[0]) for row in connection.execute(query)]


class _RedisLog(_Log):
    """Versions as keys ``<prefix>trace_optuna:registry:<name>:<n>``, written with ``SET NX``.

    Versions are appended one after another (version ``n + 1`` only by a writer that read
    version ``n``), so they have no gaps and a reader stops at the first missing number.
    """

    _BATCH = 64

    def __init__(self, url: str, prefix: str, retry_timeout: float) -> None:
        import redis

        self._client = redis.Redis.from_url(url)
        self._prefix = f"{prefix}trace_optuna:registry:"
        self.retry_timeout = retry_timeout

    def _key(self, registry: str, number: int) -> str:
        return f"{self._prefix}{registry}:{number}"

    def _append(self, registry: str, number: int, record: str) -> bool:
        return bool(self._client.set(self._key(registry, number), record, nx=True))

    def _read(self, registry: str, after: int) -> list[str]:
        records: list[str] = []
        while True:
            first = after + 1 + len(records)
            keys = [self._key(registry, n) for n in range(first, first + self._BATCH)]
            for value in self._client.mget(keys):
                if value is None:
                    return records
                records.append(value.decode() if isinstance(value, bytes) else str(value))

    def _names(self) -> list[str]:
        first_versions = self._client.scan_iter(match=f"{self._prefix}*:0", count=1000)
        return [
            (key.decode() if isinstance(key, bytes) else str(key))[len(self._prefix) : -2]
            for key in first_versions
        ]


class _MemoryLog(_Log):
    """Versions in this process, for storages only this process sees (in-memory ones)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, list[str]] = {}

    def _append(self, registry: str, number: int, record: str) -> bool:
        with self._lock:
            log = self._records.setdefault(registry, [])
            if number != len(log):
                return False
            log.append(record)
            return True

    def _read(self, registry: str, after: int) -> list[str]:
        with self._lock:
            return list(self._records.get(registry, [])[after + 1 :])

    def _names(self) -> list[str]:
        with self._lock:
            return [name for name, log in self._records.items() if log]


_memory_logs: weakref.WeakKeyDictionary[Any, _MemoryLog] = weakref.WeakKeyDictionary()


def _log_for(place: SharedPlace) -> _Log:
    if place.engine is not None:
        return _SQLLog(place.engine, place.retry_timeout)
    if place.redis is not None:
        return _RedisLog(*place.redis, place.retry_timeout)
    return _memory_logs.setdefault(place.storage, _MemoryLog())


# -- the registry -----------------------------------------------------------------------------


class Registry:
    """The versions of one :class:`ParameterSet` in one storage.

    Reads are incremental (versions never change once written), so reading the newest state
    before each trial costs one small query.

    Args:
        storage: The Optuna storage the studies use.
        name: The registry's name (``ParameterSet.name``).
    """

    def __init__(self, storage: BaseStorage, name: str) -> None:
        self.name = name
        self._log = _log_for(shared_place(storage))
        self._versions: list[Version] = []
        self._state: State | None = None

    def versions(self) -> list[Version]:
        """Every version, oldest first."""
        self._read()
        return list(self._versions)

    def state(self) -> State:
        """The newest version's values.

        Raises:
            ConfigurationError: If the registry has no version 0 yet (no study used it).
        """
        self._read()
        if self._state is None:
            raise ConfigurationError(
                f"The parameter registry {self.name!r} is empty in this storage: no study with "
                f"parameters=ParameterSet(..., name={self.name!r}).select(...) has run here."
            )
        return self._state

    def initialize(self, initial: dict[str, Any]) -> State:
        """Write version 0 with ``initial`` unless a version 0 exists; return the newest state.

        Raises:
            ConfigurationError: If the registry was started with other parameter paths.
        """
        self._read()
        if not self._versions:
            version = Version(0, dict(initial), time=_now())
            if not self._log.append(self.name, 0, version.to_json()):
                _logger.debug("Registry %r: another process wrote version 0 first.", self.name)
        state = self.state()
        if sorted(state.values) != sorted(initial):
            raise ConfigurationError(
                f"The parameter registry {self.name!r} in this storage holds the paths "
                f"{sorted(state.values)}; this ParameterSet has {sorted(initial)}. Use the "
                "same agent function, or another ParameterSet name."
            )
        return state

    def publish(
        self,
        values: dict[str, Any],
        *,
        base: int,
        owned: Iterable[str],
        study: str,
        trial: int,
        score: float,
        worker: dict[str, Any],
        conflicts: Iterable[int] = (),
    ) -> Published:
        """Append ``values`` as a new version unless a version after ``base`` changed an
        ``owned`` path (compare-and-set).

        Returns:
            The new version's number, or the conflict with the newest state.
        """
        owned = tuple(sorted(owned))
        unknown = sorted(set(values) - set(owned))
        if unknown:
            raise ConfigurationError(
                f"Study {study!r} tried to publish {unknown}, which it does not select."
            )
        while True:
            state = self.state()
            clashing = state.changed_since(base, owned)
            if clashing:
                versions = [
                    version.number
                    for version in self._versions[base + 1 :]
                    if not set(version.values).isdisjoint(owned)
                ]
                return Published(None, state, tuple(clashing), tuple(versions))
            version = Version(
                state.version + 1,
                dict(values),
                study=study,
                trial=trial,
                score=score,
                base=base,
                owned=owned,
                conflicts=tuple(conflicts),
                time=_now(),
                worker=worker,
            )
            appended = self._log.append(self.name, version.number, version.to_json())
            self._read()
            mine = len(self._versions) > version.number and self._versions[version.number]
            if appended or mine == version:
                # (mine == version: the append committed but its answer was lost, and the
                # retry found the very record this call wrote.)
                return Published(version.number, self.state())
            # Someone appended that version first: check again against it.

    def history(self, path: str) -> list[Change]:
        """Every change of ``path``, oldest first (version 0 is the initial value)."""
        self._read()
        if not self._versions:
            raise ConfigurationError(f"The parameter registry {self.name!r} is empty.")
        if path not in self._versions[0].values:
            raise ConfigurationError(
                f"The parameter registry {self.name!r} has no parameter {path!r}; its paths "
                f"are {sorted(self._versions[0].values)}."
            )
        changes: list[Change] = []
        old: Any = None
        for version in self._versions:
            if path not in version.values:
                continue
            new = version.values[path]
            changes.append(
                Change(
                    path=path,
                    version=version.number,
                    old=old,
                    new=new,
                    study=version.study,
                    trial=version.trial,
                    score=version.score,
                    base=version.base,
                    time=version.time,
                    conflicts=version.conflicts,
                )
            )
            old = new
        return changes

    def _read(self) -> None:
        for text in self._log.read(self.name, len(self._versions) - 1):
            version = Version.from_json(text, self.name)
            if version.number != len(self._versions):
                raise RecordError(
                    f"Registry {self.name!r}: expected version {len(self._versions)}, "
                    f"read {version.number}."
                )
            self._versions.append(version)
            if self._state is None:
                values = dict(version.values)
                set_by = dict.fromkeys(values, 0)
            else:
                values = {**self._state.values, **version.values}
                set_by = {**self._state.set_by, **dict.fromkeys(version.values, version.number)}
            self._state = State(version.number, values, set_by)


def registry_history(
    storage: str | BaseStorage | None, path: str, *, registry: str | None = None
) -> list[Change]:
    """Which study changed a shared parameter, when, from what, to what, with which score.

    Args:
        storage: The storage URL or object the studies use.
        path: The parameter's path (``"agent1.prompt"``).
        registry: The :class:`ParameterSet`'s name; None when the storage holds one registry.

    Returns:
        One :class:`Change` per version that set ``path``, oldest first; the first is the
        initial value (version 0, no study).

    Raises:
        ConfigurationError: If the storage (a SQLite or journal file) does not exist, the
            registry is empty or has no such path, or ``registry`` is None and the storage
            holds no registry or several (the error lists them).
    """
    opened = open_existing(storage)
    if registry is None:
        names = _log_for(shared_place(opened)).names()
        if len(names) != 1:
            raise ConfigurationError(
                "This storage holds "
                + (f"the parameter registries {names}" if names else "no parameter registry")
                + ": give registry= (a ParameterSet's name)."
            )
        registry = names[0]
    return Registry(opened, registry).history(path)


def changed_values(candidate: dict[str, Any], state: State) -> dict[str, Any]:
    """The values of ``candidate`` that differ from the registry's ``state``."""
    return {
        path: value
        for path, value in candidate.items()
        if snapshots.value_hash(value) != snapshots.value_hash(state.values[path])
    }


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
