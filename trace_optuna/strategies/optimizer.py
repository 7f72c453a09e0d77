"""Any Trace optimizer as a strategy: one step of it from the best trial.

:class:`OptimizerStrategy` runs one step of a subclass of Trace's ``Optimizer``
(``opto.optimizers.optimizer.Optimizer``) the way Trace's loop does (``zero_feedback``,
``backward`` from the best trial's re-run output with its feedback, ``propose``), with the
study's LLM (:class:`~trace_optuna.llm._optimizer_llm.OptimizerLLM`: metered, every call in
the trial's record) and the study's optimizer settings (the objective, when the optimizer takes
one, and ``max_tokens``). The built-in ``opro``, ``textgrad`` and ``optoprime_multi``
strategies are made this way (:mod:`trace_optuna.strategies.trace_optimizers`), and so is a
user's own optimizer, in a few lines (:func:`from_optimizer`).

Settings are the optimizer's constructor arguments (plus ``temperature``, the LLM's
temperature for the step): each is either fixed (a value) or sampled by Optuna in every trial
(an ``optuna.distributions`` object), as the parameter ``<strategy name>.<setting>``.

Every trial records ``trace:optimizer``: the optimizer's class, the trace-opt version and the
settings it ran with (fixed and sampled).
"""

from __future__ import annotations

from collections.abc import Mapping
import contextlib
import importlib.metadata
import inspect
import io
import logging
from typing import TYPE_CHECKING
from typing import Any
from typing import ClassVar

from optuna.distributions import BaseDistribution
from optuna.distributions import CategoricalDistribution
from optuna.distributions import FloatDistribution
from optuna.distributions import IntDistribution

from trace_optuna import graph
from trace_optuna.exceptions import ConfigurationError
from trace_optuna.exceptions import LLMError
from trace_optuna.exceptions import NoCompletedTrialError
from trace_optuna.strategies.base import ParentEvaluation
from trace_optuna.strategies.base import Proposal
from trace_optuna.strategies.base import StepContext
from trace_optuna.strategies.base import Strategy
from trace_optuna.strategies.optoprime import SuggestionError
from trace_optuna.strategies.optoprime import cast_suggestion

if TYPE_CHECKING:
    import optuna

    from trace_optuna.llm._optimizer_llm import OptimizerLLM

_logger = logging.getLogger(__name__)

OPTIMIZER_ATTR = "trace:optimizer"
"""The trial attribute recording the optimizer's class, the trace-opt version and settings."""

TEMPERATURE = "temperature"
"""The setting that is the LLM's temperature for the step, not a constructor argument."""


def trace_opt_version() -> str:
    """The installed trace-opt's version ("not installed" without it)."""
    try:
        return importlib.metadata.version("trace-opt")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


class OptimizerStrategy(Strategy):
    """One step of a Trace optimizer from the best completed trial.

    Subclasses set ``name`` and ``optimizer_class`` (or override :meth:`optimizer_type` to
    import it when first used), and may override :meth:`make_optimizer` (what the optimizer is
    built with) and :meth:`choose` (what becomes of its proposal); :func:`from_optimizer` makes
    one for a user's optimizer.

    Args:
        settings: ``{setting: value or optuna distribution}``: the optimizer's constructor
            arguments, and ``temperature`` (the LLM's). A distribution is sampled by Optuna in
            every trial as ``<name>.<setting>``; a value is fixed. None: the class's
            ``default_settings``.

    Raises:
        ConfigurationError: If a setting's name is not an argument of the optimizer, or
            ``parameters``/``llm`` (the strategy gives those).
    """

    optimizer_class: ClassVar[type | None] = None
    default_settings: ClassVar[Mapping[str, Any]] = {}
    #: Settings the strategy uses itself, passed to neither the optimizer nor the LLM.
    own_settings: ClassVar[tuple[str, ...]] = ()

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        given = dict(self.default_settings if settings is None else settings)
        owner = type(self).__name__
        for key, value in given.items():
            if not isinstance(key, str) or not key:
                raise ConfigurationError(
                    f"{owner}: setting names must be non-empty str; got {key!r}."
                )
            if isinstance(value, BaseDistribution) and not isinstance(
                value, (FloatDistribution, IntDistribution, CategoricalDistribution)
            ):
                raise ConfigurationError(
                    f"{owner}: setting {key!r} must be a value or a FloatDistribution, "
                    f"IntDistribution or CategoricalDistribution; got {type(value).__name__}."
                )
        self.settings = given

    def optimizer_type(self) -> type:
        """The optimizer class this strategy steps."""
        if self.optimizer_class is None:
            raise ConfigurationError(f"{type(self).__name__}.optimizer_class is not set.")
        return self.optimizer_class

    def check_settings(self) -> None:
        """Refuse settings the optimizer does not take (called where its class is known)."""
        check_arguments(type(self).__name__, self.optimizer_type(), self._constructor_keys())

    def _constructor_keys(self) -> list[str]:
        return [key for key in self.settings if key not in (TEMPERATURE, *self.own_settings)]

    def suggest_settings(self, trial: optuna.Trial) -> dict[str, Any]:
        return {
            key: suggest(trial, f"{self.name}.{key}", value)
            if isinstance(value, BaseDistribution)
            else value
            for key, value in self.settings.items()
        }

    def make_optimizer(
        self, context: StepContext, llm: OptimizerLLM, parent: ParentEvaluation
    ) -> Any:
        """Build the optimizer for one step: its constructor settings, the study's objective
        (when it takes ``objective`` and none was set), the adapted LLM."""
        optimizer_class = self.optimizer_type()
        arguments = {key: context.settings[key] for key in self._constructor_keys()}
        objective = context.optimizer.objective
        if (
            objective is not None
            and "objective" not in arguments
            and accepts(optimizer_class, "objective")
        ):
            arguments["objective"] = objective
        return optimizer_class(list(context.parameters.values()), llm=llm, **arguments)

    def propose(self, context: StepContext) -> Proposal:
        from trace_optuna.llm._optimizer_llm import OptimizerLLM

        best = context.population.best()
        if best is None:
            raise NoCompletedTrialError(
                f"{self.name} needs a completed trial to start from; there is none yet."
            )
        parent = context.evaluate_parent(best.number)
        context.attrs[OPTIMIZER_ATTR] = {
            **optimizer_classes(self.optimizer_type()),
            "trace-opt": trace_opt_version(),
            "settings": dict(context.settings),
        }
        llm = OptimizerLLM(
            context.llm,
            max_tokens=context.optimizer.max_tokens,
            temperature=context.settings.get(TEMPERATURE),
        )
        # Trace shows nodes by name and maps suggestions back by name: names must be distinct.
        graph.distinct_names(context.parameters.values(), [parent.output])
        optimizer = self.make_optimizer(context, llm, parent)
        optimizer.zero_feedback()
        optimizer.backward(parent.output, parent.feedback, retain_graph=True)
        with contextlib.redirect_stdout(io.StringIO()):  # Trace's optimizers print as they go
            proposed = optimizer.propose()
        update = self.read_update(context, optimizer, proposed or {}, llm)
        return self.choose(context, parent, update, optimizer)

    def read_update(
        self, context: StepContext, optimizer: Any, proposed: dict[Any, Any], llm: OptimizerLLM
    ) -> dict[str, Any]:
        """The optimizer's proposal ``{ParameterNode: value}`` as ``{path: value}``, each value
        of its parameter's type.

        Raises:
            LLMError: If nothing usable was proposed and no answer said ``TERMINATE``, or a
                value could not be used and the study's ``ignore_extraction_error`` is False.
        """
        path_of = {id(node): path for path, node in context.parameters.items()}
        rejected = dict(getattr(optimizer, "rejected", None) or {})
        update: dict[str, Any] = {}
        for node, value in proposed.items():
            path = path_of.get(id(node))
            if path is None:
                continue
            try:
                update[path] = cast_suggestion(context.parameters[path]._data, value)
            except SuggestionError as error:
                rejected[path] = str(error)
        response = "\n\n".join(llm.responses)
        if rejected and not context.optimizer.ignore_extraction_error:
            raise LLMError(
                "The LLM's suggestion could not be used ("
                + "; ".join(f"{key}: {why}" for key, why in rejected.items())
                + "), and the optimizer settings say ignore_extraction_error=False.",
                response=response,
            )
        for key, why in rejected.items():
            _logger.warning("Ignoring the suggestion for %s: %s", key, why)
        if not update and not any("TERMINATE" in text for text in llm.responses):
            reason = "; ".join(f"{key}: {why}" for key, why in rejected.items())
            raise LLMError(
                f"{self.name}: the LLM's answer held no usable suggestion for any parameter"
                + (f" ({reason})." if reason else "."),
                response=response,
            )
        return update

    def choose(
        self,
        context: StepContext,
        parent: ParentEvaluation,
        update: dict[str, Any],
        optimizer: Any,
    ) -> Proposal:
        """The trial's candidate: the parent with the update applied."""
        return Proposal(
            snapshot={**parent.snapshot, **update},
            parents=[parent.number],
            parent_score=parent.score,
            parent_feedback=parent.feedback,
        )


def from_optimizer(
    optimizer: type,
    *,
    name: str | None = None,
    settings: Mapping[str, Any] | None = None,
) -> OptimizerStrategy:
    """A strategy running one step of ``optimizer``, a subclass of Trace's ``Optimizer``.

    The optimizer is built in each trial as ``optimizer(parameters, llm=..., **settings)``
    (with the study's ``objective`` when it takes one and the settings give none), gets the
    best trial's feedback by ``backward`` and proposes once. Its ``llm`` is the study's, in
    both forms Trace's optimizers call (``llm(messages=...)`` and ``llm.create(messages=...)``),
    every call recorded in the trial; the values it proposes are cast to their parameters'
    types. Settings given as ``optuna.distributions`` objects are sampled per trial as
    ``<name>.<setting>``; ``temperature`` is the LLM's temperature for the step.

    Args:
        optimizer: The optimizer class (a subclass of ``opto.optimizers.optimizer.Optimizer``).
        name: The strategy's name (the trial's ``strategy`` value); None: the class name in
            lower case.
        settings: ``{setting: value or distribution}``; see above.

    Returns:
        The strategy, to give in ``strategies=[...]``.

    Raises:
        ConfigurationError: If ``optimizer`` is not a subclass of Trace's ``Optimizer``, the
            name is empty, or a setting is not an argument of ``optimizer``.

    Example:
        >>> from optuna.distributions import FloatDistribution
        >>> from opto.optimizers import OptoPrime
        >>> class Brief(OptoPrime):
        ...     default_objective = "Change as little as possible."
        >>> strategy = from_optimizer(
        ...     Brief, settings={"memory_size": 2, "temperature": FloatDistribution(0.0, 1.0)}
        ... )
        >>> strategy.name
        'brief'
    """
    with contextlib.redirect_stdout(io.StringIO()):  # trace-opt prints its LLM backend
        from opto.optimizers.optimizer import Optimizer

    if not (isinstance(optimizer, type) and issubclass(optimizer, Optimizer)):
        raise ConfigurationError(
            "from_optimizer() takes a subclass of Trace's opto.optimizers.optimizer.Optimizer "
            f"(e.g. OptoPrime or your own), got {optimizer!r}."
        )
    name = optimizer.__name__.lower() if name is None else name
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"from_optimizer(): name must be a non-empty str, got {name!r}.")
    doc = (inspect.getdoc(optimizer) or f"One step of {optimizer.__name__}.").split("\n\n")[0]
    strategy_class = type(
        f"{optimizer.__name__}Strategy",
        (OptimizerStrategy,),
        {
            "name": name,
            "optimizer_class": optimizer,
            "default_settings": dict(settings or {}),
            "__doc__": f"{doc} (Trace optimizer {qualified_name(optimizer)}, by from_optimizer)",
            "__module__": optimizer.__module__,
        },
    )
    strategy = strategy_class()
    strategy.check_settings()
    return strategy


def suggest(trial: optuna.Trial, name: str, distribution: BaseDistribution) -> Any:
    """Sample ``distribution`` as the Optuna parameter ``name`` of ``trial``."""
    if isinstance(distribution, FloatDistribution):
        return trial.suggest_float(
            name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
        )
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(
            name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
        )
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    raise ConfigurationError(f"Cannot sample {name!r} from a {type(distribution).__name__}.")


def accepts(optimizer_class: type, argument: str) -> bool:
    """Whether ``optimizer_class(...)`` takes the keyword ``argument``."""
    parameters = inspect.signature(optimizer_class).parameters
    return argument in parameters


def check_arguments(owner: str, optimizer_class: type, keys: list[str]) -> None:
    """Refuse settings that ``optimizer_class`` does not take as keyword arguments.

    An optimizer taking ``**kwargs`` passes unknown ones to Trace's ``Optimizer``, which
    ignores them: a misspelt setting would be lost silently, so the arguments that count are
    the named ones along the class's bases.

    Raises:
        ConfigurationError: Naming the unknown settings and the arguments there are.
    """
    known: set[str] = set()
    for cls in optimizer_class.__mro__:
        init = cls.__dict__.get("__init__")
        if init is not None:
            known.update(
                name
                for name, parameter in inspect.signature(init).parameters.items()
                if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
            )
    known -= {"self", "parameters", "llm", "args", "kwargs"}
    reserved = [key for key in keys if key in ("parameters", "llm")]
    unknown = [key for key in keys if key not in known and key not in reserved]
    if reserved or unknown:
        raise ConfigurationError(
            f"{owner}: {optimizer_class.__name__} takes no setting "
            f"{', '.join(repr(key) for key in reserved + unknown)}"
            + (" (the strategy gives parameters and llm)" if reserved else "")
            + f"; its settings are {TEMPERATURE!r} and {sorted(known)}."
        )


def optimizer_classes(optimizer_class: type) -> dict[str, str]:
    """``{"class": ...}``: the optimizer's class; for trace_optuna's adapters of Trace's
    optimizers, Trace's class, and the adapter as ``"adapter"``."""
    if not optimizer_class.__module__.startswith("trace_optuna."):
        return {"class": qualified_name(optimizer_class)}
    trace_class = next(
        (cls for cls in optimizer_class.__mro__ if cls.__module__.startswith("opto.")),
        optimizer_class,
    )
    return {"class": qualified_name(trace_class), "adapter": qualified_name(optimizer_class)}


def qualified_name(cls: type) -> str:
    """``module.QualifiedName`` of a class."""
    return f"{cls.__module__}.{cls.__qualname__}"
