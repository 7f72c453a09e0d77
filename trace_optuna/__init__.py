"""trace_optuna: every Microsoft Trace optimizer step stored as an Optuna trial.

Example:
    >>> import trace_optuna as to
    >>> from trace_optuna import demo
    >>> study = to.create_study(agent=demo.make_agent, evaluate=demo.evaluate,
    ...                         llm=demo.DEMO_LLM, storage="sqlite:///:memory:")
    >>> study.optimize(n_trials=2)
    >>> sorted(study.best_snapshot) == sorted(to.snapshot(demo.make_agent()))
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any

# Trace first: each of its operators, as it is defined, makes inspect.getmodule scan every module
# loaded so far, so opto.trace costs about half as much before optuna and sqlalchemy as after.
import opto.trace  # noqa: F401

# trace_optuna.dashboard registers its observer (trial notes, long texts to artifacts, saved
# figures) when imported; that takes milliseconds: optuna-dashboard and plotly come when used.
from trace_optuna import dashboard  # noqa: F401
from trace_optuna import samplers
from trace_optuna import sandbox
from trace_optuna import strategies
from trace_optuna._version import __version__
from trace_optuna.budget import Budget
from trace_optuna.config import Config
from trace_optuna.dataset import Dataset
from trace_optuna.evaluation import Evaluation
from trace_optuna.example_rows import ExampleRow
from trace_optuna.exceptions import BudgetExhausted
from trace_optuna.exceptions import ConfigurationError
from trace_optuna.exceptions import EvaluationTimeout
from trace_optuna.exceptions import HumanFeedbackTimeout
from trace_optuna.exceptions import ImproverFailed
from trace_optuna.exceptions import IsolationUnavailable
from trace_optuna.exceptions import LLMError
from trace_optuna.exceptions import NoCompletedTrialError
from trace_optuna.exceptions import RecordError
from trace_optuna.exceptions import SnapshotError
from trace_optuna.exceptions import SuggestionError
from trace_optuna.exceptions import TraceOptunaError
from trace_optuna.exceptions import TrialFailed
from trace_optuna.llm import LLM
from trace_optuna.records import TrialRecord
from trace_optuna.registry import ParameterSet
from trace_optuna.registry import registry_history
from trace_optuna.snapshots import restore
from trace_optuna.snapshots import snapshot
from trace_optuna.step import TraceObjective
from trace_optuna.strategies import OptimizerSettings
from trace_optuna.strategies import Proposal
from trace_optuna.strategies import StepContext
from trace_optuna.strategies import Strategy
from trace_optuna.study import TraceStudy
from trace_optuna.study import create_study
from trace_optuna.study import load_study
from trace_optuna.workers import App

if TYPE_CHECKING:
    from trace_optuna.dashboard import HumanFeedback

__all__ = [
    "App",
    "Budget",
    "BudgetExhausted",
    "Config",
    "ConfigurationError",
    "Dataset",
    "Evaluation",
    "EvaluationTimeout",
    "ExampleRow",
    "HumanFeedback",
    "HumanFeedbackTimeout",
    "ImproverFailed",
    "IsolationUnavailable",
    "LLM",
    "LLMError",
    "NoCompletedTrialError",
    "OptimizerSettings",
    "ParameterSet",
    "Proposal",
    "RecordError",
    "SnapshotError",
    "SuggestionError",
    "StepContext",
    "Strategy",
    "TraceObjective",
    "TraceOptunaError",
    "TraceStudy",
    "TrialFailed",
    "TrialRecord",
    "__version__",
    "create_study",
    "load_study",
    "registry_history",
    "restore",
    "samplers",
    "sandbox",
    "snapshot",
    "strategies",
]


def __getattr__(name: str) -> Any:
    # Optional parts, resolved when first named (as optuna and httpx do).
    if name == "HumanFeedback":
        from trace_optuna.dashboard import HumanFeedback

        return HumanFeedback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
