"""A study's side of shared parameters: what it owns, what it runs with, what it publishes.

A study created with ``parameters=team.select("agent1.*")`` optimizes the paths it selects of a
:class:`~trace_optuna.registry.ParameterSet` and shares the rest through the set's registry
(:mod:`trace_optuna.registry`). Each of its trials:

1. reads the registry's newest version (:meth:`Share.read`) and runs with its values of the
   paths the study does not select (:meth:`Share.context_values`);
2. evaluates the values of the study's own paths another study published, when it never did
   (:func:`pickup_due`): they join its population;
3. when it beats the study's best, publishes the values it changed (:meth:`Share.publish`): a
   compare-and-set on the version it ran with; a conflict is resolved by ``on_conflict``.
"""

from __future__ import annotations

from collections.abc import Callable
import logging
from typing import TYPE_CHECKING
from typing import Any

from trace_optuna import records
from trace_optuna import snapshots
from trace_optuna.exceptions import ConfigurationError
from trace_optuna.registry import CONFLICT_POLICIES
from trace_optuna.registry import Registry
from trace_optuna.registry import Selection
from trace_optuna.registry import State
from trace_optuna.registry import changed_values

if TYPE_CHECKING:
    import optuna

    from trace_optuna.population import Population
    from trace_optuna.strategies.base import RunResult

_logger = logging.getLogger(__name__)

MAX_PUBLISH_ATTEMPTS = 3  # conflicts a trial resolves by re-evaluating before it gives up


class Share:
    """A study's selection of a :class:`~trace_optuna.registry.ParameterSet` and the registry
    it shares with other studies (bound to the study's storage at its first trial).

    Args:
        selection: The paths the study optimizes.
        on_conflict: ``"reevaluate"`` or ``"skip"`` (see :meth:`publish`).
    """

    def __init__(self, selection: Selection, on_conflict: str) -> None:
        self.selection = selection
        self.on_conflict = on_conflict
        self._registry: Registry | None = None
        self._state: State | None = None

    @property
    def registry_name(self) -> str:
        return self.selection.parameter_set.name

    @property
    def registry(self) -> Registry:
        assert self._registry is not None, "read() binds the registry first"
        return self._registry

    def check(self, values: dict[str, Any]) -> None:
        """The agent the set's function built now must have the set's paths."""
        expected = self.selection.parameter_set.paths
        if tuple(values) != expected:
            raise ConfigurationError(
                f"ParameterSet {self.registry_name!r} built an agent with parameters "
                f"{list(values)}, not {list(expected)} as before: its function must build the "
                "same agent every time."
            )

    def read(self, study: optuna.Study) -> State:
        """The registry's newest state, which the running trial then uses."""
        if self._registry is None:
            self._registry = Registry(study._storage, self.registry_name)
            return self.use(self._registry.initialize(self.selection.parameter_set.initial))
        return self.use(self._registry.state())

    def use(self, state: State) -> State:
        self._state = state
        return state

    def owned_values(self) -> dict[str, Any]:
        """The registry's values of the study's own paths, in the state in use."""
        assert self._state is not None
        return {path: self._state.values[path] for path in self.selection.paths}

    def context_values(self) -> dict[str, Any]:
        """The registry's values of every other path, in the state in use."""
        assert self._state is not None
        owned = set(self.selection.paths)
        return {path: v for path, v in self._state.values.items() if path not in owned}

    def publish(
        self,
        trial: optuna.Trial,
        candidate: dict[str, Any],
        score: float,
        state: State,
        beats_best: Callable[[float], bool],
        rerun: Callable[[dict[str, Any]], RunResult],
        worker: dict[str, Any],
    ) -> dict[str, Any] | None:
        """Publish the values the candidate changed; resolve a conflict by ``on_conflict``.

        Publishing is a compare-and-set on the version the trial ran with. On a conflict,
        ``"reevaluate"`` runs the changes again on top of the newer values (``rerun``) and
        publishes them if the score still ``beats_best``, up to :data:`MAX_PUBLISH_ATTEMPTS`
        times; ``"skip"`` gives up at once.

        Returns:
            What to store as ``trace:publish`` (see :mod:`trace_optuna.records`), or None when
            there was nothing to publish.
        """
        changed = changed_values(candidate, state)
        conflicts: list[dict[str, Any]] = []
        outcome: dict[str, Any] = {"paths": sorted(changed), "score": score}
        while changed:
            published = self.registry.publish(
                changed,
                base=state.version,
                owned=self.selection.paths,
                study=trial.study.study_name,
                trial=trial.number,
                score=score,
                worker=worker,
                conflicts=[version for conflict in conflicts for version in conflict["versions"]],
            )
            if published.version is not None:
                return {
                    "status": "published",
                    "version": published.version,
                    "base": state.version,
                    "paths": sorted(changed),
                    "score": score,
                    "conflicts": conflicts,
                }
            conflicts.append(
                {
                    "base": state.version,
                    "newest": published.state.version,
                    "paths": list(published.conflicting_paths),
                    "versions": list(published.conflicting_versions),
                }
            )
            _logger.warning(
                "Trial#%d: version(s) %s of registry %r changed %s after this trial read "
                "version %d; on_conflict=%r.",
                trial.number,
                list(published.conflicting_versions),
                self.registry_name,
                list(published.conflicting_paths),
                state.version,
                self.on_conflict,
            )
            if self.on_conflict == "skip" or len(conflicts) >= MAX_PUBLISH_ATTEMPTS:
                return {"status": "conflict_skipped", **outcome, "conflicts": conflicts}
            # Re-evaluate the changes on top of the newer values, in this trial.
            state = self.use(published.state)
            merged = {**self.owned_values(), **changed}
            run = rerun(merged)
            outcome = {"paths": sorted(changed), "score": run.score}
            if not isinstance(run.score, float) or not beats_best(run.score):
                return {"status": "conflict_rejected", **outcome, "conflicts": conflicts}
            score = run.score
            changed = changed_values(merged, state)
        # Nothing (left) to publish: the registry holds these values already.
        return {"status": "unchanged", **outcome, "conflicts": conflicts} if conflicts else None


def share_for(agent: Any, parameters: Selection | None, on_conflict: str) -> Share | None:
    """The study's :class:`Share` when it is given ``parameters``; None for its own agent.

    Raises:
        ConfigurationError: If both or neither of ``agent`` and ``parameters`` are given, or
            ``parameters`` or ``on_conflict`` is not one of the accepted values.
    """
    if on_conflict not in CONFLICT_POLICIES:
        raise ConfigurationError(
            f"on_conflict must be one of {list(CONFLICT_POLICIES)}, got {on_conflict!r}."
        )
    if parameters is None:
        if agent is None:
            raise ConfigurationError(
                "Give agent= (the agent, or a function that builds it), or parameters= (a "
                "ParameterSet's selection, to share parameters with other studies)."
            )
        return None
    if agent is not None:
        raise ConfigurationError(
            "Give agent= or parameters=, not both: parameters=team.select(...) names the agent "
            "already (the ParameterSet builds it)."
        )
    if not isinstance(parameters, Selection):
        raise ConfigurationError(
            "parameters must be a selection of a trace_optuna.ParameterSet "
            f"(team.select('agent1.*')), got {type(parameters).__name__}."
        )
    return Share(parameters, on_conflict)


def pickup_due(population: Population, registry_values: dict[str, Any]) -> bool:
    """Whether the registry holds values of the study's paths it never evaluated, and the
    study's newest trial was not a pick-up: where others publish often, every other trial
    still takes a step."""
    if population.trial_with_snapshot(snapshots.snapshot_hash(registry_values)) is not None:
        return False
    completed = population.completed()
    newest = completed[-1].user_attrs.get(records.STRATEGY) if completed else None
    return newest != records.REGISTRY_PICKUP
