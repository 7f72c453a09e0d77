"""The figures of :mod:`trace_optuna.visualization` saved into the study for
optuna-dashboard, and :class:`FigureRefresher`, which keeps them fresh for all workers.
"""

from __future__ import annotations

from collections.abc import Callable
import logging
import os
import socket
import time
from typing import TYPE_CHECKING
from typing import Any

import optuna

from trace_optuna import records
from trace_optuna.attribute_writes import write_study_system_attrs
from trace_optuna.dashboard._imports import _dashboard_installed
from trace_optuna.dashboard._keys import _PLOT_DATA
from trace_optuna.dashboard._keys import _chunks
from trace_optuna.dashboard._keys import figure_chunk_key
from trace_optuna.exceptions import ConfigurationError

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from trace_optuna.coordination import Coordinator

_logger = logging.getLogger(__name__)

FIGURE_PREFIX = "trace-"
"""Figures saved into a study have ids ``trace-<figure id>`` (see ``visualization.FIGURES``)."""
DEFAULT_FIGURE_INTERVAL = 60.0
FIGURE_COST_FACTOR = 20.0
"""Figures are saved again no sooner than this many times the last save took, so saving them
takes at most about 1/21 of the time of the worker that saves them (5%), however big the
study grows (a save reads every trial: about 2 s at 3,000 trials on SQLite)."""


def dashboard_trial_url(study: optuna.Study) -> Callable[[int], str]:
    """Links to optuna-dashboard's page of a trial, relative to the dashboard's root."""
    # optuna-dashboard addresses studies by their storage id; optuna_dashboard's own helpers
    # read it the same way.
    study_id = study._study_id
    return lambda number: f"/dashboard/studies/{study_id}/trials?numbers={number}"


def save_figures(study: optuna.Study) -> list[str]:
    """Save every figure of :mod:`trace_optuna.visualization` into the study, so
    optuna-dashboard shows them; each is overwritten under its fixed id. The study's
    ``trace:figures`` attribute then says when they were saved (see :class:`FigureRefresher`).

    Stored as ``optuna_dashboard.save_plotly_graph_object`` stores them, but every chunk of
    every figure in one write (:func:`~trace_optuna.attribute_writes.write_study_system_attrs`:
    one transaction, where that function writes one per chunk, about 570 at 3,000 trials) and
    without its read of every study system attribute (all notes) per figure: the stamp
    remembers how many chunks each figure has, so the chunks a shorter figure leaves are
    blanked without reading.

    Returns:
        The graph object ids written (``trace-score-history``...).
    """
    from trace_optuna import visualization

    started = time.time()
    stamp = figures_stamp(study)
    written = stamp.get("chunks") if stamp is not None else None
    if not isinstance(written, dict):  # never saved, or saved by an older trace_optuna
        written = _stored_figure_chunks(study)
    chunks: dict[str, int] = {}
    attrs: dict[str, str] = {}
    for figure_id, figure in visualization.figures(
        study, trial_url=dashboard_trial_url(study)
    ).items():
        graph_id = FIGURE_PREFIX + figure_id
        # optuna-dashboard draws custom figures in half-width boxes 450 px high.
        figure.update_layout(height=450, margin={"l": 60, "r": 20, "t": 60, "b": 50})
        parts = _chunks(figure.to_json())
        before = int(written.get(graph_id, 0))
        parts += [""] * (before - len(parts))  # blank what a longer earlier figure left
        attrs.update((figure_chunk_key(graph_id, i), part) for i, part in enumerate(parts))
        chunks[graph_id] = len(parts)
    # Every chunk in one write (one transaction; one append on a journal storage).
    write_study_system_attrs(study._storage, study._study_id, attrs)
    study.set_user_attr(
        records.STUDY_FIGURES,
        {
            "saved_at": time.time(),
            "took_s": round(time.time() - started, 3),
            "worker": f"{socket.gethostname()}:{os.getpid()}",
            "chunks": chunks,
        },
    )
    return list(chunks)


def figures_stamp(study: optuna.Study) -> dict[str, Any] | None:
    """The study's ``trace:figures`` attribute: when its figures were saved (``saved_at``, unix
    time), how long that took (``took_s``), by which worker, and each figure's chunk count."""
    stamp = study.user_attrs.get(records.STUDY_FIGURES)
    return stamp if isinstance(stamp, dict) else None


def _stored_figure_chunks(study: optuna.Study) -> dict[str, int]:
    """How many chunks each saved figure has, read from the study system attributes."""
    counts: dict[str, int] = {}
    for key in study._storage.get_study_system_attrs(study._study_id):
        if key.startswith(_PLOT_DATA + FIGURE_PREFIX):
            graph_id, _, index = key.removeprefix(_PLOT_DATA).rpartition(":")
            if index.isdigit():
                counts[graph_id] = max(counts.get(graph_id, 0), int(index) + 1)
    return counts


class FigureRefresher:
    """An Optuna callback that keeps the figures saved in the study fresh, for all its workers.

    The study's ``trace:figures`` attribute says when its figures were last saved, by any
    worker, and how long that took. After a trial (from ``interval`` seconds after
    ``optimize`` started) and when ``optimize`` returns (:meth:`refresh`), they are saved again
    only when they are older than ``interval`` seconds and than :data:`FIGURE_COST_FACTOR`
    times the last save took (a save reads every trial and grows with the study; this keeps it
    to at most about 5% of the saving worker's time). So across
    all workers the figures are saved at most once per interval: a worker that finds them
    stale claims the refresh through the storage
    (:meth:`~trace_optuna.coordination.Coordinator.claim_once`), and workers that find them
    stale at the same moment leave it to the one that claimed it. A worker joining a study
    whose figures are fresh saves none. ``TraceStudy.optimize`` uses it.

    Args:
        interval: Seconds between refreshes; None disables saving figures.
        coordinator: The study's coordinator, through which workers claim a refresh; None
            when only this process runs the study.
    """

    def __init__(
        self,
        interval: float | None = DEFAULT_FIGURE_INTERVAL,
        coordinator: Coordinator | None = None,
    ) -> None:
        if interval is not None and (not isinstance(interval, (int, float)) or interval < 0):
            raise ConfigurationError(
                f"figure_interval must be a number of seconds >= 0 or None, got {interval!r}."
            )
        self.interval = interval
        self.coordinator = coordinator
        self._started = time.time()
        self._fresh_until = 0.0  # unix time until which the stored figures are known fresh

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        # Not right after the first trials: a short run saves once, when it returns.
        if self.interval is not None and time.time() >= self._started + self.interval:
            self.refresh(study)

    def refresh(self, study: optuna.Study) -> bool:
        """Save the figures if the study's are stale and no other worker claimed the refresh.

        Returns:
            Whether this call saved them.
        """
        if self.interval is None or time.time() < self._fresh_until:
            return False
        if not _dashboard_installed():
            return False
        stamp = figures_stamp(study)
        wait = max(self.interval, FIGURE_COST_FACTOR * float((stamp or {}).get("took_s", 0.0)))
        now = time.time()
        if stamp is not None and now < float(stamp.get("saved_at", 0.0)) + wait:
            self._fresh_until = float(stamp["saved_at"]) + wait
            return False
        # One claim per stretch of `wait` seconds: of the workers that find the figures stale
        # at the same moment, one saves them.
        key = f"figures:{int(now // max(wait, 1.0))}"
        if self.coordinator is not None and not self.coordinator.claim_once(study, key):
            self._fresh_until = now + wait  # another worker is saving them
            return False
        self.save(study)
        return True

    def save(self, study: optuna.Study) -> None:
        """Save the figures now (nothing when disabled or optuna-dashboard is missing)."""
        if self.interval is None or not _dashboard_installed():
            return
        started = time.time()
        try:
            save_figures(study)
        except Exception:  # figures are a view: never fail the study over them
            _logger.warning("Could not save the figures into the study.", exc_info=True)
        took = time.time() - started
        self._fresh_until = time.time() + max(self.interval, FIGURE_COST_FACTOR * took)
