"""A dataset study's per-example rows for analysis: :meth:`TraceStudy.examples
<trace_optuna.TraceStudy.examples>`.

Each stored :class:`~trace_optuna.example_results.ExampleResult` (one candidate on one example
of one split) is returned with the trials that scored its candidate, as a list or, like
``optuna.Study.trials_dataframe``, as a pandas DataFrame when pandas is installed.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Sequence
import dataclasses
from typing import TYPE_CHECKING
from typing import Any

from trace_optuna import example_results
from trace_optuna import records
from trace_optuna.example_results import SPLITS
from trace_optuna.example_results import ExampleResult
from trace_optuna.example_results import ExampleStore

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

#: The DataFrame's columns, in order: the trials first, then the row's own fields.
COLUMNS = (
    "trials",
    "candidate",
    "split",
    "example_id",
    "score",
    "feedback",
    "output",
    "error",
    "trial_number",
    "worker",
    "seconds",
)


@dataclasses.dataclass(frozen=True)
class ExampleRow(ExampleResult):
    """A stored per-example result with the trials that scored its candidate.

    Attributes:
        trials: The numbers of the trials whose candidate it is (``trace:snapshot_hash``) or
            that evaluated it while proposing (``trace:evaluated``), ascending; empty for a
            candidate no trial records (e.g. one whose trial is still running). The row's own
            ``trial_number`` is the trial that ran it (a cached row is run once, by one trial).
    """

    trials: tuple[int, ...] = ()


def example_rows(
    study: optuna.Study, trial: int | None = None, split: str | None = None
) -> list[ExampleRow]:
    """The study's per-example rows, each with the trials that scored its candidate.

    Args:
        study: The study.
        trial: Only the rows of this trial's candidate (on every split, whoever ran them).
        split: Only the rows of this split: ``"train"``, ``"val"`` or ``"test"``.

    Returns:
        The rows, ordered by their candidate's first trial, split and example id.

    Raises:
        ValueError: For an unknown split, or a trial number the study does not have.
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)} or None, got {split!r}.")
    trials = study.get_trials(deepcopy=False)
    by_candidate = _trials_by_candidate(trials)
    candidates = None
    if trial is not None:
        chosen = next((frozen for frozen in trials if frozen.number == trial), None)
        if chosen is None:
            raise ValueError(
                f"Study {study.study_name!r} has no Trial#{trial} (it has {len(trials)} "
                "trials, numbered from 0)."
            )
        candidate = chosen.user_attrs.get(records.SNAPSHOT_HASH)
        if candidate is None:  # it failed or stopped before it had a candidate
            return []
        candidates = [candidate]
    store = ExampleStore(study._storage, study._study_id)  # Optuna has no public handle
    rows = [
        ExampleRow(
            **{field.name: getattr(row, field.name) for field in dataclasses.fields(row)},
            trials=tuple(sorted(by_candidate.get(row.candidate, ()))),
        )
        for row in store.rows(split=split, candidates=candidates)
    ]
    last = len(trials)  # a candidate no trial records sorts after the others

    def order(row: ExampleRow) -> tuple[int, str, int, str]:
        first = row.trials[0] if row.trials else last
        return first, row.candidate, SPLITS.index(row.split), row.example_id

    return sorted(rows, key=order)


def _trials_by_candidate(trials: Iterable[FrozenTrial]) -> dict[str, set[int]]:
    """``{snapshot hash: trial numbers}``: each trial's candidate, and those it evaluated."""
    found: dict[str, set[int]] = {}
    for frozen in trials:
        attrs = frozen.user_attrs
        candidate = attrs.get(records.SNAPSHOT_HASH)
        if candidate is not None:
            found.setdefault(candidate, set()).add(frozen.number)
        if records.EVALUATED in attrs:
            for entry in records.decode(attrs, records.EVALUATED) or []:
                found.setdefault(entry["snapshot_hash"], set()).add(frozen.number)
    return found


def as_dataframe(rows: Sequence[ExampleRow]) -> Any:
    """The rows as a pandas DataFrame, one row each, columns :data:`COLUMNS`.

    Raises:
        ImportError: If pandas is not installed (naming how to install it).
    """
    return example_results.as_dataframe(rows, COLUMNS)
