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

import os

# litellm fetches its model price map from the network at import unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from trace_optuna import samplers  # noqa: E402
from trace_optuna import strategies  # noqa: E402
from trace_optuna._version import __version__  # noqa: E402
from trace_optuna.config import Config  # noqa: E402
from trace_optuna.dashboard import HumanFeedback  # noqa: E402
from trace_optuna.evaluation import Evaluation  # noqa: E402
from trace_optuna.exceptions import ConfigurationError  # noqa: E402
from trace_optuna.exceptions import EvaluationTimeout  # noqa: E402
from trace_optuna.exceptions import LLMError  # noqa: E402
from trace_optuna.exceptions import RecordError  # noqa: E402
from trace_optuna.exceptions import SnapshotError  # noqa: E402
from trace_optuna.exceptions import TraceOptunaError  # noqa: E402
from trace_optuna.exceptions import TrialFailed  # noqa: E402
from trace_optuna.llm import LLM  # noqa: E402
from trace_optuna.records import TrialRecord  # noqa: E402
from trace_optuna.registry import ParameterSet  # noqa: E402
from trace_optuna.registry import registry_history  # noqa: E402
from trace_optuna.snapshots import restore  # noqa: E402
from trace_optuna.snapshots import snapshot  # noqa: E402
from trace_optuna.step import TraceObjective  # noqa: E402
from trace_optuna.strategies import Proposal  # noqa: E402
from trace_optuna.strategies import StepContext  # noqa: E402
from trace_optuna.strategies import Strategy  # noqa: E402
from trace_optuna.study import TraceStudy  # noqa: E402
from trace_optuna.study import create_study  # noqa: E402
from trace_optuna.study import load_study  # noqa: E402
from trace_optuna.workers import App  # noqa: E402

__all__ = [
    "App",
    "Config",
    "ConfigurationError",
    "Evaluation",
    "EvaluationTimeout",
    "HumanFeedback",
    "LLM",
    "LLMError",
    "ParameterSet",
    "Proposal",
    "RecordError",
    "SnapshotError",
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
    "snapshot",
    "strategies",
]
