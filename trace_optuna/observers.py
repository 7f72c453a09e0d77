"""What the core tells others about a study's trials: the observer interface.

The trial path (:mod:`trace_optuna.step`) and the study (:mod:`trace_optuna.study`) know nothing
of optuna-dashboard or of figures. Anything that wants to see trials (the dashboard's notes,
artifacts and saved figures, a user's own logger) implements :class:`TrialObserver` and
registers a factory with :func:`register`; every study made afterwards builds one observer per
factory from its :class:`~trace_optuna.Config`. ``import trace_optuna`` registers the
dashboard's (:mod:`trace_optuna.dashboard`).

The order of the calls for one study::

    study_ready(study, agent, ..., coordinator)  create_study/load_study, or a first trial
    callbacks()                                 Optuna callbacks added to every optimize()
    per trial: trial_started(trial, record)     the record is filled as the trial runs
               before_write(trial, record)      may rewrite the record (long texts out) and
                                                add study attributes to its one write (a note)
               record_written(trial, record)    the trial still runs; its values are not told
    optimize_finished(study)                    when optimize() returns

An observer must not fail a trial: exceptions from ``trial_started``, ``record_written`` and
``optimize_finished`` are logged and ignored; ``before_write`` may raise (the record would be
wrong), and the trial then fails with that reason.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
import logging
from typing import TYPE_CHECKING
from typing import Any

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from trace_optuna.config import Config
    from trace_optuna.coordination import Coordinator

_logger = logging.getLogger(__name__)

OptunaCallback = Callable[["optuna.Study", "FrozenTrial"], None]


class TrialObserver:
    """Hooks called around a study's trials; each does nothing unless overridden."""

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
        """The study is bound (its trace attributes written or checked); trials may start.

        ``coordinator`` is the study's: claims through it are shared by every worker.
        """

    def callbacks(self) -> list[OptunaCallback]:
        """Optuna callbacks to add to each ``optimize`` of the study."""
        return []

    def trial_started(self, trial: optuna.Trial, record: dict[str, Any]) -> None:
        """A trial starts; ``record`` is the dict its attributes are collected in."""

    def before_write(
        self, trial: optuna.Trial, record: dict[str, Any]
    ) -> Mapping[str, Any] | None:
        """The record is complete and about to be written; it may be changed in place.

        Returns:
            Study system attributes to write in the same write as the record (e.g. the
            dashboard's note of the trial), or None.
        """
        return None

    def record_written(self, trial: optuna.Trial, record: Mapping[str, Any]) -> None:
        """The record is in the storage; the trial has not been told its values yet."""

    def optimize_finished(self, study: optuna.Study) -> None:
        """``optimize`` returns (normally or not)."""


ObserverFactory = Callable[["Config"], "TrialObserver | None"]
_FACTORIES: list[ObserverFactory] = []


def register(factory: ObserverFactory) -> ObserverFactory:
    """Build an observer with ``factory(config)`` for every study made from now on.

    ``factory`` may return None to observe nothing for that config. Registering the same
    factory twice has no effect.

    Returns:
        ``factory`` (so it can be used as a decorator).
    """
    if factory not in _FACTORIES:
        _FACTORIES.append(factory)
    return factory


def observers_for(config: Config) -> list[TrialObserver]:
    """One observer per registered factory for a study with ``config``."""
    built = (factory(config) for factory in _FACTORIES)
    return [observer for observer in built if observer is not None]


def notify(observers: list[TrialObserver], hook: str, *args: Any, **kwargs: Any) -> None:
    """Call ``hook`` on every observer; log and go on when one raises (a view never fails)."""
    for observer in observers:
        try:
            getattr(observer, hook)(*args, **kwargs)
        except Exception:
            _logger.warning(
                "Observer %s failed in %s; going on.", type(observer).__name__, hook, exc_info=True
            )
