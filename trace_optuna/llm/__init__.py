"""The LLM layer: the litellm adapter and the simulated offline model.

``LLM`` wraps ``litellm.completion`` with fixed settings and records every call as an
``LLMCall``; ``register_simulated_provider`` makes the offline ``simulated/feedback-follower``
model available to litellm (``LLM("simulated/...")`` calls it for you).
"""

from __future__ import annotations

from trace_optuna.llm._litellm import LLM
from trace_optuna.llm._litellm import LLMCall
from trace_optuna.llm.simulated import register_simulated_provider

__all__ = ["LLM", "LLMCall", "register_simulated_provider"]
