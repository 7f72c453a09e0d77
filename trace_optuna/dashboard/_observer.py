"""The dashboard's :class:`~trace_optuna.observers.TrialObserver`: a note per trial, long texts
to artifacts, the study's description, and figures saved into the study.

``trace_optuna.dashboard`` registers :class:`DashboardObserver` when it is imported (``import
trace_optuna`` imports it), so every study gets one; the core never imports this package.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from typing import TYPE_CHECKING
from typing import Any

from trace_optuna.dashboard._artifacts import resolve_artifact_store
from trace_optuna.dashboard._artifacts import stored_artifact_store
from trace_optuna.dashboard._figures import FigureRefresher
from trace_optuna.dashboard._hooks import before_write
from trace_optuna.dashboard._hooks import enter_trial
from trace_optuna.dashboard._study import describe_study
from trace_optuna.observers import OptunaCallback
from trace_optuna.observers import TrialObserver

if TYPE_CHECKING:
    import optuna
    from optuna.artifacts._protocol import ArtifactStore

    from trace_optuna.config import Config
    from trace_optuna.coordination import Coordinator


class DashboardObserver(TrialObserver):
    """optuna-dashboard's view of one study.

    Args:
        config: The study's options (``artifact_dir``/``artifact_store``, ``figure_interval``).

    Attributes:
        artifact_store: Where long texts go: the configured store, else the one the study
            recorded (known once the study is ready), else None.
    """

    def __init__(self, config: Config) -> None:
        self.figure_interval = config.figure_interval
        self.notes = config.dashboard_notes
        self.artifact_store: ArtifactStore | None = resolve_artifact_store(
            config.artifact_dir, config.artifact_store
        )
        self._coordinator: Coordinator | None = None
        self._refresher: FigureRefresher | None = None

    def study_ready(
        self,
        study: optuna.Study,
        *,
        agent: Any,
        make_agent: Callable[[], Any],
        evaluate: Any,
        strategies: Mapping[str, Any],
        coordinator: Coordinator,
    ) -> None:
        if self.artifact_store is None:
            self.artifact_store = stored_artifact_store(study)
        self._coordinator = coordinator
        describe_study(
            study,
            agent=agent,
            make_agent=make_agent,
            evaluate=evaluate,
            strategies=strategies,
            artifact_store=self.artifact_store,
        )

    def callbacks(self) -> list[OptunaCallback]:
        # A new refresher per optimize(): figures are not saved right after its first trials.
        self._refresher = FigureRefresher(self.figure_interval, self._coordinator)
        return [self._refresher]

    def trial_started(self, trial: optuna.Trial, record: dict[str, Any]) -> None:
        enter_trial(trial, record)

    def before_write(self, trial: optuna.Trial, record: dict[str, Any]) -> dict[str, Any]:
        # The note, in the same write.
        return before_write(trial, record, self.artifact_store, notes=self.notes)

    def optimize_finished(self, study: optuna.Study) -> None:
        if self._refresher is not None:
            self._refresher.refresh(study)  # unless a worker saved them within the interval
