"""Checks that work meant to run at once did: a test of a race must fail loudly, not pass
vacuously, when one worker finished before the other started.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
import itertools

from optuna.trial import FrozenTrial

from trace_optuna import records


def overlap(first: tuple[float, float], second: tuple[float, float]) -> bool:
    """Whether two ``(start, end)`` intervals share a moment.

    MySQL/MariaDB store Optuna's timestamps in whole seconds: there, two intervals within the
    same second cannot be told apart, and each end is taken as the end of its second.
    """
    whole_seconds = all(float(moment).is_integer() for moment in (*first, *second))
    resolution = 1.0 if whole_seconds else 0.0
    return first[0] < second[1] + resolution and second[0] < first[1] + resolution


def running_interval(trial: FrozenTrial) -> tuple[float, float]:
    """When a finished trial was RUNNING, as storage timestamps (seconds)."""
    assert trial.datetime_start is not None and trial.datetime_complete is not None, (
        f"Trial#{trial.number} has not finished ({trial.state.name})"
    )
    return trial.datetime_start.timestamp(), trial.datetime_complete.timestamp()


def by_worker(trials: Iterable[FrozenTrial]) -> dict[str, list[FrozenTrial]]:
    """Finished trials grouped by the worker process that ran them (``trace:worker``)."""
    groups: dict[str, list[FrozenTrial]] = {}
    for trial in trials:
        worker = trial.user_attrs.get(records.WORKER)
        if worker and trial.datetime_complete is not None:
            groups.setdefault(f"{worker['host']}:{worker['pid']}", []).append(trial)
    return groups


def assert_ran_at_once(
    groups: Mapping[str, Sequence[FrozenTrial]], what: str, *, every_pair: bool = True
) -> None:
    """Fail unless, for every two groups, a trial of one ran while a trial of the other ran.

    Args:
        groups: Finished trials by who ran them (a worker, a study).
        what: What should have happened at once, for the failure message.
        every_pair: False: one pair of groups that ran at once is enough.
    """
    assert len(groups) >= 2, f"{what}: only {sorted(groups)} ran trials; nothing ran at once"
    apart = []
    for (name_a, trials_a), (name_b, trials_b) in itertools.combinations(groups.items(), 2):
        if any(
            overlap(running_interval(a), running_interval(b)) for a in trials_a for b in trials_b
        ):
            if not every_pair:
                return
        else:
            apart.append(
                f"no trial of {name_a} ran while a trial of {name_b} ran "
                f"({_intervals(trials_a)} vs {_intervals(trials_b)})"
            )
    if apart and (every_pair or len(apart) == len(groups) * (len(groups) - 1) // 2):
        raise AssertionError(
            f"{what}: {'; '.join(apart)}; the concurrency this test is about did not happen"
        )


def _intervals(trials: Sequence[FrozenTrial]) -> str:
    return ", ".join(
        f"#{trial.number} {trial.datetime_start:%H:%M:%S.%f}-{trial.datetime_complete:%H:%M:%S.%f}"
        for trial in trials
    )
