"""Candidate-generation strategies: the contract and the built-ins."""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any

from trace_optuna.strategies.base import ParentEvaluation
from trace_optuna.strategies.base import Proposal
from trace_optuna.strategies.base import RunResult
from trace_optuna.strategies.base import StepContext
from trace_optuna.strategies.base import Strategy
from trace_optuna.strategies.base import check_int
from trace_optuna.strategies.base import check_number
from trace_optuna.strategies.base import register
from trace_optuna.strategies.base import resolve
from trace_optuna.strategies.evolutionary import EvolutionaryStrategy
from trace_optuna.strategies.genetic import GeneticStrategy
from trace_optuna.strategies.judge import Selector
from trace_optuna.strategies.optimizer import OptimizerStrategy
from trace_optuna.strategies.optimizer import from_optimizer
from trace_optuna.strategies.optimizer_settings import OptimizerSettings
from trace_optuna.strategies.optoprime import OptoPrimeStrategy
from trace_optuna.strategies.stop import StopStrategy
from trace_optuna.strategies.trace_optimizers import OPROStrategy
from trace_optuna.strategies.trace_optimizers import OptoPrimeMultiStrategy
from trace_optuna.strategies.trace_optimizers import TextGradStrategy

if TYPE_CHECKING:
    from trace_optuna.strategies._safe_optoprime import SafeOptoPrime

__all__ = [
    "EvolutionaryStrategy",
    "GeneticStrategy",
    "OPROStrategy",
    "OptimizerSettings",
    "OptimizerStrategy",
    "OptoPrimeMultiStrategy",
    "OptoPrimeStrategy",
    "ParentEvaluation",
    "Proposal",
    "RunResult",
    "SafeOptoPrime",
    "Selector",
    "StepContext",
    "StopStrategy",
    "Strategy",
    "TextGradStrategy",
    "check_int",
    "check_number",
    "from_optimizer",
    "register",
    "resolve",
]


def __getattr__(name: str) -> Any:
    # Trace's OptoPrime, which SafeOptoPrime extends, imports litellm (seconds): on first use.
    if name == "SafeOptoPrime":
        from trace_optuna.strategies._safe_optoprime import SafeOptoPrime

        return SafeOptoPrime
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
