"""What happens around a running trial: which trial runs (for :class:`HumanFeedback`), long
texts offloaded and the note built just before the record is written (in the same write).
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
from typing import TYPE_CHECKING
from typing import Any

import optuna

from trace_optuna.dashboard._artifacts import offload_long_texts
from trace_optuna.dashboard._imports import _dashboard_installed
from trace_optuna.dashboard._notes import note_attrs
from trace_optuna.dashboard._notes import trial_note

if TYPE_CHECKING:
    from optuna.artifacts._protocol import ArtifactStore

_logger = logging.getLogger(__name__)


@dataclasses.dataclass
class _Running:
    trial: optuna.Trial
    attrs: dict[str, Any]
    asked: bool = False


_RUNNING: contextvars.ContextVar[_Running | None] = contextvars.ContextVar(
    "trace_optuna_running_trial", default=None
)


def enter_trial(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    """Called by the step when a trial starts: what :class:`HumanFeedback` shows and where."""
    _RUNNING.set(_Running(trial, attrs))


def before_write(
    trial: optuna.Trial,
    attrs: dict[str, Any],
    artifact_store: ArtifactStore | None,
    *,
    notes: bool = True,
) -> dict[str, Any]:
    """Called just before the record is written: offload long texts, and return the trial's
    note (as study system attributes) to be written with the record (none unless
    ``notes``).

    A note that cannot be built is left out (logged): a note is a view and never fails the
    trial.
    """
    if artifact_store is not None:
        offload_long_texts(trial, attrs, artifact_store)
    _RUNNING.set(None)
    if not notes or not _dashboard_installed():
        return {}
    try:
        return note_attrs(trial, trial_note(trial.number, attrs, dict(trial.params)))
    except Exception:
        _logger.warning(
            "Trial#%d: could not build its dashboard note.", trial.number, exc_info=True
        )
        return {}
