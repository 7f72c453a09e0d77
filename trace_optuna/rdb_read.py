"""Reads of Optuna's RDB tables with SQLAlchemy Core: what Optuna's ORM reads, faster.

A worker joining a study reads every trial once, through ``RDBStorage._get_trials``: SQLAlchemy's
ORM with five ``selectinload``s (about 23 ORM objects a trial), then each distribution's JSON
parsed twice per param. At 10,000 trials that read was 9.6 s of an 11.1 s profiled SQLite join
(4.0 s ORM rows, 2.6 s building FrozenTrials, 1.7 s JSON decoding). :func:`read_trials` returns
the same list from plain rows: ONE statement, a ``UNION ALL`` of the trials, the study's row
(so a missing study is found without a statement of its own) and the five child tables joined to
the trials by the same condition (between hosts each statement is a round trip, and one
statement is one snapshot), and each distinct distribution JSON parsed once per call.
:func:`read_trial` reads one trial, for ``get_trial``, the same way. The
same 10,000 trials (63 MB of attribute JSON) read in 0.8 s instead of 7.8 s on SQLite, 0.9 s
instead of 8.3 s on PostgreSQL with a statement per table; what is left is mostly fetching the
rows and ``json.loads``. One statement costs about a third more on a local server for a big
read (3,000 trials, 45,000 attribute rows: 0.33 s instead of 0.25 s on SQLite and PostgreSQL;
the server sorts the union), and saves six round trips on every read across a network.

:func:`read_study_attrs` does the same for a study's user or system attributes: optuna-dashboard
keeps a note per trial there (two keys a trial), so at 10,000 trials every ``study.metric_names``
or ``study.system_attrs`` read 20,000 ORM rows (0.7 s each on SQLite).

Both must stay equal to Optuna's readers: ``tests/test_rdb_read.py`` compares them on SQLite,
PostgreSQL and MariaDB. Column names and conversions are Optuna's own (its table objects and
helpers); a change to Optuna's reader itself is what the tests catch.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
import contextlib
import datetime
import functools
import json
from typing import TYPE_CHECKING
from typing import Any

from optuna import distributions
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial
from optuna.trial import TrialState
import sqlalchemy

if TYPE_CHECKING:
    from collections.abc import Container

_STUDIES = models.StudyModel.__table__
_TRIALS = models.TrialModel.__table__
_PARAMS = models.TrialParamModel.__table__
_VALUES = models.TrialValueModel.__table__
_USER_ATTRS = models.TrialUserAttributeModel.__table__
_SYSTEM_ATTRS = models.TrialSystemAttributeModel.__table__
_INTERMEDIATE_VALUES = models.TrialIntermediateValueModel.__table__
_STUDY_USER_ATTRS = models.StudyUserAttributeModel.__table__
_STUDY_SYSTEM_ATTRS = models.StudySystemAttributeModel.__table__

# More included ids than this are not sent as one IN list (SQLite allows 32,766 variables a
# statement, PostgreSQL 65,535): the trials from the smallest of them on are read and the
# chosen ones kept here instead.
MAX_LISTED_IDS = 1000


def read_trials(
    engine: sqlalchemy.engine.Engine,
    study_id: int,
    states: Container[TrialState] | None,
    included_trial_ids: set[int],
    trial_id_greater_than: int,
) -> list[FrozenTrial]:
    """What ``optuna.storages.RDBStorage._get_trials`` returns, read faster.

    Args:
        engine: The storage's engine (``RDBStorage.engine``).
        study_id: The study whose trials to read.
        states: Only trials in these states; None for all.
        included_trial_ids: Trials to read even if their id is not above
            ``trial_id_greater_than`` (ids above it are ignored, as Optuna does).
        trial_id_greater_than: Read the trials with a larger id (and the included ones); -1 for
            all trials.

    Returns:
        The trials as FrozenTrials, ordered by trial id.

    Raises:
        KeyError: If the study does not exist.
    """
    included = {trial_id for trial_id in included_trial_ids if trial_id <= trial_id_greater_than}
    chosen = _TRIALS.c.study_id == study_id
    many_ids = len(included) > MAX_LISTED_IDS
    if many_ids:
        chosen &= _TRIALS.c.trial_id >= min(included)
    elif included and trial_id_greater_than > -1:
        chosen &= (_TRIALS.c.trial_id > trial_id_greater_than) | _TRIALS.c.trial_id.in_(
            sorted(included)
        )
    elif trial_id_greater_than > -1:
        chosen &= _TRIALS.c.trial_id > trial_id_greater_than
    trial_filter = chosen
    if states is not None:
        # Optuna asserts the same: its Container must be iterable for IN.
        assert isinstance(states, Iterable)
        trial_filter = chosen & _TRIALS.c.state.in_(states)

    study_found, trials = _read(
        engine,
        trial_filter,
        study_id,
        lambda trial_id: (
            many_ids and trial_id not in included and trial_id <= trial_id_greater_than
        ),
    )
    if not study_found:
        raise KeyError(models.NOT_FOUND_MSG)  # as models.StudyModel.find_or_raise_by_id
    return trials


def read_trial(engine: sqlalchemy.engine.Engine, trial_id: int) -> FrozenTrial:
    """What ``optuna.storages.RDBStorage.get_trial`` returns, in one statement.

    Raises:
        KeyError: If the trial does not exist.
    """
    _, trials = _read(engine, _TRIALS.c.trial_id == trial_id, None, lambda trial_id: False)
    if not trials:
        raise KeyError(models.NOT_FOUND_MSG)  # as models.TrialModel.find_or_raise_by_id
    return trials[0]


def _read(
    engine: sqlalchemy.engine.Engine,
    trial_filter: sqlalchemy.ColumnElement[bool],
    study_id: int | None,
    skipped: Callable[[int], bool],
) -> tuple[bool, list[FrozenTrial]]:
    """Whether the study ``study_id`` exists, and the trials ``trial_filter`` chooses but
    ``skipped`` does not, read in one statement (so in one snapshot: a trial's rows are read
    in the state it was read in)."""
    statement = _one_statement(trial_filter, study_id, engine.dialect.name)
    with one_statement(engine) as connection:
        rows = connection.execute(statement).all()
    trials: dict[int, dict[str, Any]] = {}
    study_found = False
    parsed: dict[str, distributions.BaseDistribution] = {}
    for kind, trial_id, _, number, key, number_value, text, start, complete in rows:
        if kind == _STUDY:
            study_found = True
        elif kind == _TRIAL:
            if skipped(trial_id):
                continue
            trials[trial_id] = {
                "number": number,
                "state": TrialState[key],
                "value": None,
                "values": [],
                "datetime_start": _local_time(start),
                "datetime_complete": _local_time(complete),
                "params": {},
                "distributions": {},
                "user_attrs": {},
                "system_attrs": {},
                "intermediate_values": {},
                "trial_id": trial_id,
            }
        elif (trial := trials.get(trial_id)) is None:
            continue  # a child of a trial not chosen (its state, or not among many ids)
        elif kind == _PARAM:
            distribution = parsed.get(text)
            if distribution is None:
                distribution = distributions.json_to_distribution(text)
                parsed[text] = distribution
            trial["params"][key] = distribution.to_external_repr(number_value)
            trial["distributions"][key] = distribution
        elif kind == _VALUE:
            # Optuna places each value at its objective's index; in objective order that appends.
            trial["values"].append(
                models.TrialValueModel.stored_repr_to_value(
                    number_value, models.TrialValueModel.TrialValueType[text]
                )
            )
        elif kind in (_USER_ATTR, _SYSTEM_ATTR):
            field = "user_attrs" if kind == _USER_ATTR else "system_attrs"
            trial[field][key] = json.loads(text)
        else:
            model = models.TrialIntermediateValueModel
            trial["intermediate_values"][number] = model.stored_repr_to_intermediate_value(
                number_value, model.TrialIntermediateValueType[text]
            )
    for trial in trials.values():
        trial["values"] = trial["values"] or None
    return study_found, [FrozenTrial(**trial) for trial in trials.values()]


# The kinds of row of the one statement, in the order they are read.
_STUDY, _TRIAL, _PARAM, _VALUE, _USER_ATTR, _SYSTEM_ATTR, _INTERMEDIATE = range(7)


def _one_statement(
    trial_filter: sqlalchemy.ColumnElement[bool], study_id: int | None, dialect: str
) -> sqlalchemy.CompoundSelect[Any]:
    """The study's row (if ``study_id`` is given), the chosen trials and all their children's
    rows as one ``UNION ALL``.

    Every row has the same columns: kind, trial id, order within the trial, an integer (the
    trial's number, an intermediate value's step), a string (the state, a param's name, an
    attribute's key), a float (a param's, value's or intermediate value's stored number), a
    text (a distribution's or attribute's JSON, a value's type) and the trial's two datetimes.
    The trials' select comes first: its column types decode the rows (SQLite's datetimes).
    """
    text = sqlalchemy.Text()

    def null(type_: Any) -> Any:
        if dialect == "postgresql":  # typed, or a NULL column of the first selects is text
            return sqlalchemy.cast(sqlalchemy.null(), type_)
        return sqlalchemy.type_coerce(sqlalchemy.null(), type_)  # MySQL cannot CAST to FLOAT

    def row(
        kind: int,
        trial_id: Any,
        order: Any,
        number: Any = None,
        key: Any = None,
        value: Any = None,
        json_text: Any = None,
        start: Any = None,
        complete: Any = None,
    ) -> list[Any]:
        return [
            sqlalchemy.literal_column(str(kind), sqlalchemy.Integer()).label("kind"),
            trial_id.label("trial_id"),
            (order if order is not None else null(sqlalchemy.Integer())).label("ord"),
            (number if number is not None else null(sqlalchemy.Integer())).label("number"),
            (key if key is not None else null(text)).label("key"),
            (value if value is not None else null(sqlalchemy.Float())).label("value"),
            (json_text if json_text is not None else null(text)).label("text"),
            (start if start is not None else null(sqlalchemy.DateTime())).label("start"),
            (complete if complete is not None else null(sqlalchemy.DateTime())).label("complete"),
        ]

    def children(table: sqlalchemy.Table, kind: int, order: str, **columns: Any) -> Any:
        return (
            sqlalchemy.select(*row(kind, table.c.trial_id, table.c[order], **columns))
            .join(_TRIALS, table.c.trial_id == _TRIALS.c.trial_id)
            .where(trial_filter)
        )

    as_string = functools.partial(sqlalchemy.cast, type_=sqlalchemy.String(32))
    selects = [
        sqlalchemy.select(
            *row(
                _TRIAL,
                _TRIALS.c.trial_id,
                _TRIALS.c.trial_id,
                number=_TRIALS.c.number,
                key=as_string(_TRIALS.c.state),
                start=_TRIALS.c.datetime_start,
                complete=_TRIALS.c.datetime_complete,
            )
        ).where(trial_filter),
        children(
            _PARAMS,
            _PARAM,
            "param_id",
            key=_PARAMS.c.param_name,
            value=_PARAMS.c.param_value,
            json_text=_PARAMS.c.distribution_json,
        ),
        children(
            _VALUES,
            _VALUE,
            "objective",
            value=_VALUES.c.value,
            json_text=as_string(_VALUES.c.value_type),
        ),
        children(
            _USER_ATTRS,
            _USER_ATTR,
            "trial_user_attribute_id",
            key=_USER_ATTRS.c.key,
            json_text=_USER_ATTRS.c.value_json,
        ),
        children(
            _SYSTEM_ATTRS,
            _SYSTEM_ATTR,
            "trial_system_attribute_id",
            key=_SYSTEM_ATTRS.c.key,
            json_text=_SYSTEM_ATTRS.c.value_json,
        ),
        children(
            _INTERMEDIATE_VALUES,
            _INTERMEDIATE,
            "trial_intermediate_value_id",
            number=_INTERMEDIATE_VALUES.c.step,
            value=_INTERMEDIATE_VALUES.c.intermediate_value,
            json_text=as_string(_INTERMEDIATE_VALUES.c.intermediate_value_type),
        ),
    ]
    if study_id is not None:  # the study's existence, without a statement of its own
        selects.insert(
            1,
            sqlalchemy.select(*row(_STUDY, _STUDIES.c.study_id, None)).where(
                _STUDIES.c.study_id == study_id
            ),
        )
    return sqlalchemy.union_all(*selects).order_by(
        sqlalchemy.literal_column("kind"),
        sqlalchemy.literal_column("trial_id"),
        sqlalchemy.literal_column("ord"),
    )


@contextlib.contextmanager
def one_statement(engine: sqlalchemy.engine.Engine) -> Iterator[sqlalchemy.engine.Connection]:
    """A connection for work done in one statement, committed at the end.

    On PostgreSQL in autocommit: a transaction would cost two more round trips (``BEGIN``,
    ``COMMIT``) and one statement is atomic and one snapshot anyway. PyMySQL sends no
    ``BEGIN`` (only ``COMMIT``) but would send a statement each to switch autocommit on and
    off; SQLite has no round trips.
    """
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            yield connection.execution_options(isolation_level="AUTOCOMMIT")
    else:
        with engine.begin() as connection:
            yield connection


def read_study_attrs(
    engine: sqlalchemy.engine.Engine, study_id: int, *, system: bool
) -> dict[str, Any]:
    """What ``RDBStorage.get_study_system_attrs`` (``system``) or ``get_study_user_attrs``
    returns, read faster.

    Raises:
        KeyError: If the study does not exist.
    """
    table = _STUDY_SYSTEM_ATTRS if system else _STUDY_USER_ATTRS
    with engine.connect() as connection:
        _check_study(connection, study_id)
        rows = connection.execute(
            sqlalchemy.select(table.c.key, table.c.value_json).where(table.c.study_id == study_id)
        )
        return {key: json.loads(value_json) for key, value_json in rows}


def _check_study(connection: sqlalchemy.engine.Connection, study_id: int) -> None:
    study = sqlalchemy.select(_STUDIES.c.study_id).where(_STUDIES.c.study_id == study_id)
    if connection.execute(study).first() is None:
        raise KeyError(models.NOT_FOUND_MSG)  # as models.StudyModel.find_or_raise_by_id


def _local_time(utc: datetime.datetime | None) -> datetime.datetime | None:
    """Optuna's naive UTC column as naive local time, as ``TrialModel.datetime_start`` does."""
    if utc is None:
        return None
    return utc.replace(tzinfo=datetime.timezone.utc).astimezone().replace(tzinfo=None)
