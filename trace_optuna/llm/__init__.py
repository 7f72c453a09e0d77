"""The LLM layer: the litellm adapter.

``LLM`` wraps ``litellm.completion`` with fixed settings and records every call as an
``LLMCall``. litellm itself is imported when first needed (:func:`_imports.import_litellm`),
not with this package. ``register_simulated_provider`` makes the offline
``simulated/feedback-follower`` model available to litellm (``LLM("simulated/...")`` calls it
for you); the simulated model is a test double in :mod:`trace_optuna.testing.simulated`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any

from trace_optuna.llm._litellm import LLM
from trace_optuna.llm._litellm import LLMCall

if TYPE_CHECKING:
    from trace_optuna.testing.simulated import register_simulated_provider

__all__ = ["LLM", "LLMCall", "register_simulated_provider"]


def __getattr__(name: str) -> Any:
    # The simulated model lives in trace_optuna.testing; named here as before it moved.
    if name == "register_simulated_provider":
        from trace_optuna.testing.simulated import register_simulated_provider

        return register_simulated_provider
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
