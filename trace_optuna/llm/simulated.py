"""The simulated model's old address: it is :mod:`trace_optuna.testing.simulated` now.

The simulated model is a test double, so it moved under :mod:`trace_optuna.testing`; this alias
keeps ``from trace_optuna.llm import simulated`` working (every name is looked up there, when
used). The model string ``simulated/feedback-follower`` is unchanged.
"""

from __future__ import annotations

from typing import Any

from trace_optuna.testing import simulated as _simulated

__all__ = list(_simulated.__all__)


def __getattr__(name: str) -> Any:
    return getattr(_simulated, name)
