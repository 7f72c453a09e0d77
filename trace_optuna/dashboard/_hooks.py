"""The step's hooks around a running trial: which trial runs (for :class:`HumanFeedback`),
long texts offloaded before its record is written, its note written after.
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
from trace_optuna.dashboard._notes import trial_note
from trace_optuna.dashboard._notes import write_note

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
    trial: optuna.Trial, attrs: dict[str, Any], artifact_store: ArtifactStore | None
) -> None:
    """Called by the step just before it writes the record: offload long texts."""
    if artifact_store is not None:
        offload_long_texts(trial, attrs, artifact_store)


def after_write(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    """Called by the step after it wrote the record (the trial still runs): write the note."""
    _RUNNING.set(None)
    if not _dashboard_installed():
        return
    try:
        write_note(trial, trial_note(trial.number, attrs, dict(trial.params)))
    except Exception:  # a note is a view: never fail the trial over it
        _logger.warning(
            "Trial#%d: could not save its dashboard note.", trial.number, exc_info=True
        )
