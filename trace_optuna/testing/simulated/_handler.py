"""The litellm custom handler behind ``simulated/<model>``: it answers through
:func:`~trace_optuna.testing.simulated.respond`, reports about ``len(text) / 4`` tokens, and
seeds each answer so that a rerun gives the same answers (see the package docstring).

Importing this module imports litellm; :func:`register_simulated_provider` imports the module
when it is first called.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import hashlib
import json
import random
import re
import threading
import time
from typing import Any

from trace_optuna.exceptions import ConfigurationError
from trace_optuna.llm._imports import import_litellm
from trace_optuna.testing.simulated._core import MODELS
from trace_optuna.testing.simulated._core import PROVIDER
from trace_optuna.testing.simulated._core import SimulatedOptions
from trace_optuna.testing.simulated._core import approximate_tokens
from trace_optuna.testing.simulated._respond import respond

# litellm's first import goes through import_litellm, configured as the library configures it.
import_litellm()
import litellm  # noqa: E402


def _message_text(messages: list[dict[str, Any]]) -> str:
    parts = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):  # content blocks
            content = "\n".join(str(block.get("text", "")) for block in content)
        parts.append("" if content is None else str(content))
    return "\n".join(parts)


def _suggestion(answer: str) -> dict[str, Any]:
    """The values an answer suggests: OptoPrime's ``suggestion`` or STOP's ``solution``."""
    try:
        parsed = json.loads(answer)
    except ValueError:
        return {}
    if not isinstance(parsed, dict):
        return {}
    values = parsed.get("suggestion", parsed.get("solution"))
    return values if isinstance(values, dict) else {}


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


class SimulatedLLM(litellm.CustomLLM):
    """The litellm handler behind ``simulated/<model>`` (see the package docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._seen: collections.Counter[tuple[int, str]] = collections.Counter()
        # What was suggested for each prompt: a prompt sent again means it was not kept.
        self._suggested: dict[tuple[int, str], dict[str, list[Any]]] = {}

    def reset(self) -> None:
        """Forget how often each prompt was seen, so answers repeat from the start."""
        with self._lock:
            self._seen.clear()
            self._suggested.clear()

    def _answer(
        self, model: str, messages: list[dict[str, Any]], optional_params: dict[str, Any]
    ) -> tuple[str, str, SimulatedOptions]:
        name = model.split("/", 1)[1] if model.startswith(PROVIDER + "/") else model
        if name not in MODELS:
            raise ConfigurationError(
                f"Unknown simulated model {model!r}; known: "
                + ", ".join(f"{PROVIDER}/{m}" for m in MODELS)
                + "."
            )
        options = SimulatedOptions.from_params(optional_params)
        prompt = _message_text(messages)
        # Object reprs in the prompt (``<... object at 0x7f...>``) differ between processes.
        stable = _ADDRESS.sub(" at 0x0", prompt)
        digest = hashlib.sha256(stable.encode()).hexdigest()
        key = (options.seed, digest)
        temperature = optional_params.get("temperature")
        with self._lock:
            index = self._seen[key]
            self._seen[key] += 1
            # At temperature 0 a model repeats itself: the same prompt, the same answer.
            tried = {} if temperature == 0 else copy.deepcopy(self._suggested.get(key, {}))
        rng = random.Random(f"{options.seed}:{digest}:{index}:{temperature}")
        answer = respond(prompt, rng, options, temperature, tried)
        with self._lock:
            suggested = self._suggested.setdefault(key, {})
            for name, value in _suggestion(answer).items():
                suggested.setdefault(name, []).append(value)
        return prompt, answer, options

    @staticmethod
    def _fill(
        response: litellm.ModelResponse, model: str, prompt: str, content: str
    ) -> litellm.ModelResponse:
        response.choices[0].message.content = content  # type: ignore[union-attr]
        response.choices[0].finish_reason = "stop"
        response.model = model if model.startswith(PROVIDER + "/") else f"{PROVIDER}/{model}"
        prompt_tokens = approximate_tokens(prompt)
        completion_tokens = approximate_tokens(content)
        response.usage = litellm.Usage(  # type: ignore[attr-defined]
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )
        return response

    def completion(  # type: ignore[override]
        self,
        model: str,
        messages: list[dict[str, Any]],
        *args: Any,
        model_response: litellm.ModelResponse,
        optional_params: dict[str, Any],
        **kwargs: Any,
    ) -> litellm.ModelResponse:
        """Answer synchronously (litellm calls this for ``litellm.completion``)."""
        prompt, content, options = self._answer(model, messages, optional_params)
        if options.latency:
            time.sleep(options.latency)
        return self._fill(model_response, model, prompt, content)

    async def acompletion(  # type: ignore[override]
        self,
        model: str,
        messages: list[dict[str, Any]],
        *args: Any,
        model_response: litellm.ModelResponse,
        optional_params: dict[str, Any],
        **kwargs: Any,
    ) -> litellm.ModelResponse:
        """Answer asynchronously (litellm calls this for ``litellm.acompletion``)."""
        prompt, content, options = self._answer(model, messages, optional_params)
        if options.latency:
            await asyncio.sleep(options.latency)
        return self._fill(model_response, model, prompt, content)
