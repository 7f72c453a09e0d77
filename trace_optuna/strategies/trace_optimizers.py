"""Trace's own optimizers besides OptoPrime as strategies: ``opro``, ``textgrad``,
``optoprime_multi``.

Each runs one step of the real Trace class (``opto.optimizers.OPRO``, ``TextGrad``,
``OptoPrimeMulti``, through the subclasses of :mod:`._safe_optimizers` that work around
trace-opt 0.1.3.8's bugs) from the best completed trial, with the study's LLM, and samples its
own settings as conditional Optuna parameters unless they are fixed here. See
:class:`~trace_optuna.strategies.optimizer.OptimizerStrategy` for what one step does and
records.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any

from optuna.distributions import CategoricalDistribution
from optuna.distributions import FloatDistribution
from optuna.distributions import IntDistribution

from trace_optuna.exceptions import ConfigurationError
from trace_optuna.snapshots import snapshot_hash
from trace_optuna.strategies.base import ParentEvaluation
from trace_optuna.strategies.base import Proposal
from trace_optuna.strategies.base import StepContext
from trace_optuna.strategies.base import check_int
from trace_optuna.strategies.base import check_number
from trace_optuna.strategies.base import register
from trace_optuna.strategies.optimizer import OptimizerStrategy
from trace_optuna.strategies.optoprime import step_memory

if TYPE_CHECKING:
    from trace_optuna.llm._optimizer_llm import OptimizerLLM

_UNIT = FloatDistribution(0.0, 1.0)


def _setting(value: Any, distribution: Any) -> Any:
    return distribution if value is None else value


@register
class OPROStrategy(OptimizerStrategy):
    """OPRO (Yang et al. 2023, Trace's ``OPRO``): the LLM sees past solutions with their
    feedback, then the current one, and writes a new one.

    The past solutions are rebuilt from the storage as OptoPrime's memory is (the proposals
    already tried from the parent that did not beat it, then its ancestors), so any worker
    continues any lineage.

    Args:
        temperature: The LLM temperature, a number in [0, 2]. None: sampled as
            ``opro.temperature`` in [0, 1].
        memory_size: How many past solutions are shown before the current one, an int >= 0.
            None: sampled as ``opro.memory_size`` in [0, 4].

    Raises:
        ConfigurationError: If a setting is of the wrong type or out of its range.
    """

    name = "opro"
    own_settings = ("memory_size",)

    def __init__(self, temperature: float | None = None, memory_size: int | None = None) -> None:
        check_number("OPROStrategy", "temperature", temperature, 0.0, 2.0, sampled=True)
        check_int("OPROStrategy", "memory_size", memory_size, 0, sampled=True)
        super().__init__(
            {
                "temperature": _setting(temperature, _UNIT),
                "memory_size": _setting(memory_size, IntDistribution(0, 4)),
            }
        )

    def optimizer_type(self) -> type:
        from trace_optuna.strategies._safe_optimizers import SafeOPRO

        return SafeOPRO

    def make_optimizer(
        self, context: StepContext, llm: OptimizerLLM, parent: ParentEvaluation
    ) -> Any:
        memory = step_memory(context, parent.number, int(context.settings["memory_size"]))
        return self.optimizer_type()(
            list(context.parameters.values()),
            llm=llm,
            objective=context.optimizer.objective,
            max_tokens=context.optimizer.max_tokens,
            memory=memory,
        )


@register
class TextGradStrategy(OptimizerStrategy):
    """TextGrad (Yuksekgonul et al. 2024, Trace's ``TextGrad``): the LLM writes feedback
    ("gradients") for every node of the graph, backward from the output, then an improved
    value for each parameter.

    One step makes one LLM call per edge of the graph, a summary call where a node gets
    several feedbacks, and one call per parameter. Trace's ``TextGrad`` has no place for an
    objective in its prompts: the study's ``objective`` does not reach them.

    Args:
        gradient_temperature: The temperature of the feedback calls, a number in [0, 2].
            None: sampled as ``textgrad.gradient_temperature`` in [0, 1].
        update_temperature: The temperature of the calls writing the improved values, a
            number in [0, 2]. None: sampled as ``textgrad.update_temperature`` in [0, 1].

    Raises:
        ConfigurationError: If a setting is of the wrong type or out of its range.
    """

    name = "textgrad"

    def __init__(
        self, gradient_temperature: float | None = None, update_temperature: float | None = None
    ) -> None:
        for key, value in (
            ("gradient_temperature", gradient_temperature),
            ("update_temperature", update_temperature),
        ):
            check_number("TextGradStrategy", key, value, 0.0, 2.0, sampled=True)
        super().__init__(
            {
                "gradient_temperature": _setting(gradient_temperature, _UNIT),
                "update_temperature": _setting(update_temperature, _UNIT),
            }
        )

    def optimizer_type(self) -> type:
        from trace_optuna.strategies._safe_optimizers import SafeTextGrad

        return SafeTextGrad


SELECTORS = ("last", "best")
"""``optoprime_multi``'s selectors: Trace's default (the last candidate, made at the lowest
temperature), or the best of all candidates, each evaluated."""


@register
class OptoPrimeMultiStrategy(OptimizerStrategy):
    """OptoPrimeMulti (Trace's ``OptoPrimeMulti``): one OptoPrime prompt answered several
    times at temperatures spread over a range, then one candidate selected.

    Args:
        num_responses: How many candidates (LLM calls), an int >= 1. None: sampled as
            ``optoprime_multi.num_responses`` in [2, 4].
        selector: ``"last"``: Trace's default, the candidate made at the lowest temperature;
            ``"best"``: every distinct candidate is evaluated and the best (by score, or the
            study's ``selector="llm"`` judge) becomes the trial's, all of them kept in
            ``trace:evaluated``. None: sampled as ``optoprime_multi.selector``.
        temperature_range: The highest and lowest temperature of the candidates, two numbers
            in [0, 2] (Trace's default: 1.3 down to 0).

    Raises:
        ConfigurationError: If a setting is of the wrong type or out of its range.
    """

    name = "optoprime_multi"
    own_settings = ("selector",)

    def __init__(
        self,
        num_responses: int | None = None,
        selector: str | None = None,
        temperature_range: Sequence[float] = (1.3, 0.0),
    ) -> None:
        check_int("OptoPrimeMultiStrategy", "num_responses", num_responses, 1, sampled=True)
        if selector is not None and selector not in SELECTORS:
            raise ConfigurationError(
                f"OptoPrimeMultiStrategy: selector must be one of {list(SELECTORS)}, or None to "
                f"let Optuna sample it in each trial; got {selector!r}."
            )
        if not (
            isinstance(temperature_range, (list, tuple))
            and len(temperature_range) == 2
            and all(
                isinstance(t, (int, float)) and not isinstance(t, bool) and 0.0 <= t <= 2.0
                for t in temperature_range
            )
        ):
            raise ConfigurationError(
                "OptoPrimeMultiStrategy: temperature_range must be two numbers in [0, 2] "
                f"(highest, lowest); got {temperature_range!r}."
            )
        super().__init__(
            {
                "num_responses": _setting(num_responses, IntDistribution(2, 4)),
                "selector": _setting(selector, CategoricalDistribution(SELECTORS)),
                "temperature_range": [float(t) for t in temperature_range],
            }
        )

    def optimizer_type(self) -> type:
        from trace_optuna.strategies._safe_optimizers import SafeOptoPrimeMulti

        return SafeOptoPrimeMulti

    def make_optimizer(
        self, context: StepContext, llm: OptimizerLLM, parent: ParentEvaluation
    ) -> Any:
        settings = context.optimizer
        best = context.settings["selector"] == "best"
        return self.optimizer_type()(
            list(context.parameters.values()),
            llm=llm,
            num_responses=int(context.settings["num_responses"]),
            temperature_range=list(context.settings["temperature_range"]),
            # "best": Trace's hook picks the last usable candidate; all are evaluated below.
            selector=_last_usable if best else None,
            objective=settings.objective,
            include_example=settings.include_example,
            max_tokens=settings.max_tokens,
        )

    def choose(
        self,
        context: StepContext,
        parent: ParentEvaluation,
        update: dict[str, Any],
        optimizer: Any,
    ) -> Proposal:
        proposal = super().choose(context, parent, update, optimizer)
        candidates = [self._paths(context, c) for c in optimizer.candidates]
        record: dict[str, Any] = {
            "candidates": len(candidates),
            "usable": sum(map(bool, candidates)),
        }
        if context.settings["selector"] == "best":
            children: dict[str, dict[str, Any]] = {}
            for candidate in candidates:
                if candidate:
                    child = {**parent.snapshot, **candidate}
                    children.setdefault(snapshot_hash(child), child)
            evaluated = [(child, context.evaluate(child)) for child in children.values()]
            winner = context.select(evaluated)
            record.update(evaluated=len(evaluated), winner=winner)
            proposal.snapshot, proposal.result = evaluated[winner]
        context.attrs["trace:optoprime_multi"] = record
        return proposal

    @staticmethod
    def _paths(context: StepContext, candidate: dict[Any, Any]) -> dict[str, Any]:
        path_of = {id(node): path for path, node in context.parameters.items()}
        return {
            path_of[id(node)]: value for node, value in candidate.items() if id(node) in path_of
        }


def _last_usable(candidates: list[dict[Any, Any]]) -> dict[Any, Any]:
    return next((candidate for candidate in reversed(candidates) if candidate), {})
