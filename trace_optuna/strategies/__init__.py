"""Candidate-generation strategies: the contract and the built-ins."""

from __future__ import annotations

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
from trace_optuna.strategies.optoprime import OptoPrimeStrategy
from trace_optuna.strategies.optoprime import SafeOptoPrime
from trace_optuna.strategies.stop import StopStrategy

__all__ = [
    "EvolutionaryStrategy",
    "GeneticStrategy",
    "OptoPrimeStrategy",
    "ParentEvaluation",
    "Proposal",
    "RunResult",
    "SafeOptoPrime",
    "Selector",
    "StepContext",
    "StopStrategy",
    "Strategy",
    "check_int",
    "check_number",
    "register",
    "resolve",
]
