"""Registering the simulated model with litellm (which is imported then, not before)."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from trace_optuna.llm._imports import import_litellm
from trace_optuna.testing.simulated._core import INPUT_COST_PER_TOKEN
from trace_optuna.testing.simulated._core import MODELS
from trace_optuna.testing.simulated._core import OUTPUT_COST_PER_TOKEN
from trace_optuna.testing.simulated._core import PROVIDER

if TYPE_CHECKING:
    from trace_optuna.testing.simulated._handler import SimulatedLLM

_logger = logging.getLogger("trace_optuna.testing.simulated")

_registration_lock = threading.Lock()


def register_simulated_provider() -> SimulatedLLM:
    """Make ``simulated/<model>`` usable in litellm; safe to call any number of times.

    Registers the handler in ``litellm.custom_provider_map`` under the provider name
    ``simulated`` and the made-up prices with ``litellm.register_model``.

    Returns:
        The registered handler (the same object on every call).

    Example:
        >>> handler = register_simulated_provider()
        >>> handler is register_simulated_provider()
        True
    """
    litellm = import_litellm()
    from trace_optuna.testing.simulated._handler import SimulatedLLM

    with _registration_lock:
        for item in litellm.custom_provider_map:
            if item["provider"] == PROVIDER:
                return item["custom_handler"]  # type: ignore[return-value]
        handler = SimulatedLLM()
        litellm.custom_provider_map.append({"provider": PROVIDER, "custom_handler": handler})
        litellm.utils.custom_llm_setup()  # adds the provider to litellm.provider_list
        litellm.register_model(
            {
                f"{PROVIDER}/{name}": {
                    "litellm_provider": PROVIDER,
                    "mode": "chat",
                    "input_cost_per_token": INPUT_COST_PER_TOKEN,
                    "output_cost_per_token": OUTPUT_COST_PER_TOKEN,
                    "cache_creation_input_token_cost": 0.0,
                    "cache_read_input_token_cost": 0.0,
                    "max_input_tokens": 1_000_000,
                    "max_output_tokens": 1_000_000,
                }
                for name in MODELS
            }
        )
        _logger.debug("Registered the simulated litellm provider %r.", PROVIDER)
        return handler


def reset_simulated_model() -> None:
    """Restart the simulated model's per-prompt call counters (for reproducible tests)."""
    register_simulated_provider().reset()
