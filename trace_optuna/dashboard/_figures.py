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
FIGURE_COST_FACTOR = 10.0


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

    Written as ``optuna_dashboard.save_plotly_graph_object`` writes them, without its read of
    every study system attribute (all notes) per figure: the stamp remembers how many chunks
    each figure has, so the chunks a shorter figure leaves are blanked without reading.

    Returns:
        The graph object ids written (``trace-score-history``...).
    """
    from trace_optuna import visualization

    started = time.time()
    stamp = figures_stamp(study)
    written = stamp.get("chunks") if stamp is not None else None
    if not isinstance(written, dict):  # never saved, or saved by an older trace_optuna
        written = _stored_figure_chunks(study)
    storage, study_id = study._storage, study._study_id
    chunks: dict[str, int] = {}
    for figure_id, figure in visualization.figures(
        study, trial_url=dashboard_trial_url(study)
    ).items():
        graph_id = FIGURE_PREFIX + figure_id
        # optuna-dashboard draws custom figures in half-width boxes 450 px high.
        figure.update_layout(height=450, margin={"l": 60, "r": 20, "t": 60, "b": 50})
        parts = _chunks(figure.to_json())
        for index, part in enumerate(parts):
            storage.set_study_system_attr(study_id, figure_chunk_key(graph_id, index), part)
        before = int(written.get(graph_id, 0))
        for index in range(len(parts), before):
            storage.set_study_system_attr(study_id, figure_chunk_key(graph_id, index), "")
        chunks[graph_id] = max(len(parts), before)
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
    times the last save took (saving costs one storage write per 2 KB of figure JSON and grows
    with the study, so figures never take more than a tenth of the study's time). So across
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
