"""The agent's own knobs: the Optuna params ``evaluate(agent, trial)`` suggests in a step.

``evaluate`` may take the running ``optuna.Trial`` as a second argument. The knobs it suggests
(``trial.suggest_float("agent.temperature", 0, 1)``) are ordinary Optuna params of the trial,
next to the ``strategy`` param and its settings, so samplers tune them and importances, plots
and the dashboard show them. A parent re-run for its feedback gets a :class:`ParentTrial`,
whose ``suggest_*`` return the parent's own stored values, so its feedback matches its stored
score. Knob names must not be ``strategy`` or start with a strategy's name and a dot: those are
the step's own params (:func:`check_names`).
"""

from __future__ import annotations

from collections.abc import Iterable
import inspect
import logging
from typing import TYPE_CHECKING
from typing import Any

from optuna.trial import FixedTrial

from trace_optuna.exceptions import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Sequence

    import optuna
    from optuna.distributions import CategoricalChoiceType
    from optuna.trial import FrozenTrial

_logger = logging.getLogger(__name__)

STRATEGY_PARAM = "strategy"


class ParentTrial(FixedTrial):
    """The trial ``evaluate(agent, trial)`` gets when the step re-runs a parent for feedback.

    Its ``suggest_*`` return the values the parent trial ran with (its stored Optuna params),
    so the feedback that drives the step comes from the configuration that earned the parent's
    stored score. A knob the parent never suggested (it ran before the knob existed) is
    suggested on the running trial instead, with a warning. ``report`` does nothing and
    ``should_prune`` is False: this run is not the running trial's evaluation, and a pruner
    must not judge the running trial by it. ``number`` is the parent's trial number; ``study``
    is the running trial's study (a plain ``FixedTrial`` has none).

    Args:
        parent: The parent's finished trial.
        running: The running trial, for knobs the parent does not have.
    """

    def __init__(self, parent: FrozenTrial, running: optuna.Trial) -> None:
        super().__init__(dict(parent.params), number=parent.number)
        self._stored = dict(parent.params)
        self._running = running
        self.not_in_parent: dict[str, Any] = {}

    @property
    def study(self) -> optuna.Study:
        """The study of the running trial (and of the parent)."""
        return self._running.study

    @property
    def knobs(self) -> dict[str, Any]:
        """The knob values this run used: the parent's, then any taken from the running trial."""
        return {**self.params, **self.not_in_parent}

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        if name in self._stored:
            return super().suggest_float(name, low, high, step=step, log=log)
        return self._from_running(
            name, self._running.suggest_float(name, low, high, step=step, log=log)
        )

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int:
        if name in self._stored:
            return super().suggest_int(name, low, high, step=step, log=log)
        return self._from_running(
            name, self._running.suggest_int(name, low, high, step=step, log=log)
        )

    def suggest_categorical(  # type: ignore[override]
        self, name: str, choices: Sequence[CategoricalChoiceType]
    ) -> Any:
        if name in self._stored:
            return super().suggest_categorical(name, choices)
        return self._from_running(name, self._running.suggest_categorical(name, choices))

    def _from_running(self, name: str, value: Any) -> Any:
        _logger.warning(
            "Trial#%d: its parent Trial#%d has no param %r; its re-run for feedback uses the "
            "running trial's value %r.",
            self._running.number,
            self.number,
            name,
            value,
        )
        self.not_in_parent[name] = value
        return value


def takes_trial(evaluate: Any, form: str | None = None) -> bool:
    """Whether ``evaluate`` is called as ``evaluate(agent, trial)`` (True) or ``evaluate(agent)``.

    ``form`` (``Config.evaluate_form``) decides when given. Otherwise one rule, never a guess
    from names: the trial is passed only when ``evaluate`` requires a second positional
    parameter (one without a default). So ``evaluate(agent, verbose=False)`` gets the agent
    alone; give ``evaluate_form="agent_trial"`` to pass the trial to a parameter with a default.

    Raises:
        ConfigurationError: If ``evaluate`` is not callable, requires no positional parameter
            or more than two, or cannot take the form ``form`` names.
    """
    if not callable(evaluate):
        raise ConfigurationError(
            f"evaluate must be a function evaluate(agent) or evaluate(agent, trial) -> "
            f"Evaluation, got {type(evaluate).__name__}."
        )
    try:
        signature = inspect.signature(evaluate)
    except (TypeError, ValueError):
        return form == "agent_trial"  # builtins without a signature: only the form can say
    name = getattr(evaluate, "__name__", repr(evaluate))
    if form is not None:
        arguments = (object(), object()) if form == "agent_trial" else (object(),)
        try:
            signature.bind(*arguments)
        except TypeError:
            raise ConfigurationError(
                f"evaluate_form={form!r} calls evaluate with {len(arguments)} positional "
                f"argument(s), but {name!r} has signature {signature}."
            ) from None
        return form == "agent_trial"
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = [
        parameter
        for parameter in signature.parameters.values()
        if parameter.kind in positional and parameter.default is inspect.Parameter.empty
    ]
    if len(required) == 2:
        return True
    try:
        signature.bind(object())  # the agent alone: one required parameter, or *args
    except TypeError:
        pass
    else:
        return False
    raise ConfigurationError(
        f"evaluate must accept the agent, and optionally the Optuna trial, as positional "
        f"arguments: evaluate(agent) or evaluate(agent, trial) -> Evaluation; "
        f"{name!r} has signature {signature}. (evaluate_form='agent' or 'agent_trial' says "
        "which to call.)"
    )


def check_names(names: Iterable[str], strategy_names: Iterable[str]) -> None:
    """Refuse knobs named like the step's own params: ``strategy`` and ``<strategy>.<setting>``.

    Raises:
        ConfigurationError: Naming the knob and the reserved names.
    """
    prefixes = tuple(f"{name}." for name in strategy_names)
    for name in sorted(names):
        if name == STRATEGY_PARAM or name.startswith(prefixes):
            raise ConfigurationError(
                f"evaluate() suggested the knob {name!r}, a name the step uses for its own "
                f"params: {STRATEGY_PARAM!r} and '<strategy>.<setting>' for the strategies "
                f"{sorted(strategy_names)}. Give the knob another name (e.g. 'agent.{name}')."
            )
