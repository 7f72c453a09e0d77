"""``LLM``: the one way trace_optuna talks to a language model, through litellm.

Every call is recorded as an :class:`LLMCall` (tokens, cost, latency, error) so that a trial can
store what its optimizer step spent. API keys are read by litellm from the environment (or given
as ``api_key=...``); they never appear in :meth:`LLM.settings`, in logs or in an ``LLMCall``.

Retries are litellm's: ``num_retries`` retries rate limits (429), server errors (5xx), timeouts
and connection errors with backoff. For providers that litellm drives through the OpenAI SDK
(``openai/...`` and OpenAI-compatible servers), litellm retries in two layers -- the SDK's
``max_retries`` (exponential backoff honouring ``Retry-After``) and then litellm's own retry
loop -- so a server that always fails receives up to ``2 * num_retries + 1`` requests.
litellm's outer retry loop needs the ``tenacity`` package.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import threading
import time
from typing import TYPE_CHECKING
from typing import Any

from trace_optuna.exceptions import ConfigurationError
from trace_optuna.exceptions import LLMError
from trace_optuna.llm._imports import import_litellm

if TYPE_CHECKING:
    import litellm

_logger = logging.getLogger("trace_optuna.llm")

_SECRET_WORDS = ("key", "token", "secret", "password", "credential", "auth")
_REDACTED = "***"


def is_secret_name(name: str) -> bool:
    """Whether a keyword argument's name marks a secret (API keys, tokens, passwords).

    Names ending in ``tokens`` (``max_tokens``, ``max_completion_tokens``) are counts, not
    secrets.
    """
    lowered = name.lower()
    if lowered.endswith("tokens"):
        return False
    return any(word in lowered for word in _SECRET_WORDS)


def _public(value: Any) -> Any:
    """``value`` with secret-named dict entries removed, or a placeholder if not JSON-able."""
    if isinstance(value, dict):
        return {
            str(key): _public(item) for key, item in value.items() if not is_secret_name(str(key))
        }
    if isinstance(value, (list, tuple)):
        return [_public(item) for item in value]
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return f"<{type(value).__name__}>"
    return value


@dataclasses.dataclass
class LLMCall:
    """One call to the model, successful or not.

    Attributes:
        model: The litellm model string.
        messages: The messages as sent (role/content dicts).
        response: The answer's text; None on failure.
        prompt_tokens: Input tokens as reported by the provider (0 on failure).
        completion_tokens: Output tokens as reported by the provider (0 on failure).
        cost_usd: ``litellm.completion_cost`` of the answer, or None when litellm does not
            know the price (or the call failed).
        latency_s: Wall-clock seconds of the call, retries included.
        error: ``"ExceptionType: message"`` when the call failed, else None.
    """

    model: str
    messages: list[dict[str, Any]]
    response: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    latency_s: float
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the call."""
        data = dataclasses.asdict(self)
        data["messages"] = _public(data["messages"])
        return data


class LLM:
    """A litellm model with fixed settings that records every call it makes.

    It is a plain callable with the signature Trace's ``OptoPrime`` expects
    (``llm(messages=..., **kwargs)`` returning a response with ``choices[0].message.content``).

    Args:
        model: A litellm model string with its provider, e.g. ``"openai/gpt-4o-mini"``, a model
            litellm knows (``"gpt-4o"``), or ``"simulated/feedback-follower"`` (the offline
            simulation in :mod:`trace_optuna.testing.simulated`, registered automatically).
        temperature: Sampling temperature in [0, 2]; None leaves the provider's default.
        max_tokens: Most output tokens per answer; None leaves the provider's default.
        num_retries: How often litellm retries a failed call (429, 5xx, timeouts).
        timeout: Seconds before one request times out.
        cache: Pass ``caching=True`` to litellm; only effective once a litellm cache is
            configured (``litellm.cache = litellm.Cache(...)``).
        **completion_kwargs: More ``litellm.completion`` arguments (``api_base``, ``api_key``,
            ``simulated_noise``, ...). Per-call keyword arguments override all of these.

    Raises:
        ConfigurationError: If a setting breaks its rule.

    Example:
        >>> llm = LLM("simulated/feedback-follower", temperature=0.0)
        >>> text = llm.complete([{"role": "user", "content": "Hello"}])
        >>> [call.model for call in llm.take_calls()]
        ['simulated/feedback-follower']
    """

    def __init__(
        self,
        model: str,
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        num_retries: int = 3,
        timeout: float = 120.0,
        cache: bool = False,
        **completion_kwargs: Any,
    ) -> None:
        _validate(model, temperature, max_tokens, num_retries, timeout, cache, completion_kwargs)
        self._model = model
        self._temperature = temperature
        self._max_tokens = max_tokens
        self._num_retries = num_retries
        self._timeout = float(timeout)
        self._cache = cache
        self._completion_kwargs = dict(completion_kwargs)
        self._calls: list[LLMCall] = []
        self._lock = threading.Lock()

    @property
    def model(self) -> str:
        """The litellm model string."""
        return self._model

    def __repr__(self) -> str:
        return f"LLM({self._model!r}, settings={self.settings()!r})"

    def missing_keys(self) -> list[str]:
        """The API key variables the provider needs that the environment does not set.

        Asks ``litellm.validate_environment``; empty for the simulated model, when an
        ``api_key`` was given, and for what litellm cannot tell. Only ``*_KEY``/``*_TOKEN``
        names count: a missing base URL (``OLLAMA_API_BASE``) has a default.
        """
        if self._model.startswith("simulated/") or self._completion_kwargs.get("api_key"):
            return []
        try:
            report = import_litellm().validate_environment(model=self._model)
        except Exception:  # litellm does not know the model: the first call will say so
            return []
        return [
            name for name in report.get("missing_keys") or [] if name.endswith(("_KEY", "_TOKEN"))
        ]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        _register_if_simulated(self._model)  # a fresh worker process needs it too

    def _request(
        self, messages: list[dict[str, Any]], overrides: dict[str, Any]
    ) -> dict[str, Any]:
        if "model" in overrides:
            raise ConfigurationError(
                f"LLM({self._model!r}) cannot change its model per call; "
                "use with_options(model=...)."
            )
        request: dict[str, Any] = dict(self._completion_kwargs)
        if self._temperature is not None:
            request["temperature"] = self._temperature
        if self._max_tokens is not None:
            request["max_tokens"] = self._max_tokens
        request.update(num_retries=self._num_retries, timeout=self._timeout, caching=self._cache)
        request.update(overrides)
        request.update(model=self._model, messages=messages)
        return request

    def __call__(self, messages: list[dict[str, Any]], **kwargs: Any) -> litellm.ModelResponse:
        """Call the model once (litellm retries inside) and record the call.

        Args:
            messages: Chat messages, e.g. ``[{"role": "user", "content": "..."}]``.
            **kwargs: ``litellm.completion`` arguments for this call only.

        Returns:
            litellm's ``ModelResponse``.

        Raises:
            LLMError: If the call failed after litellm's retries. The call is recorded first.
        """
        request = self._request(messages, kwargs)
        sent = [dict(message) for message in messages]
        start = time.perf_counter()
        try:
            response = import_litellm().completion(**request)
        except Exception as error:
            latency = time.perf_counter() - start
            cause = self._redact(f"{type(error).__name__}: {error}")
            self._record(LLMCall(self._model, sent, None, 0, 0, None, latency, error=cause))
            _logger.warning(
                "LLM call to %r failed after %.2f s (num_retries=%d): %s",
                self._model,
                latency,
                request["num_retries"],
                cause,
            )
            raise LLMError(
                f"The LLM call to {self._model!r} failed (num_retries={request['num_retries']}): "
                f"{cause}"
            ) from None
        latency = time.perf_counter() - start
        content = _content(response)
        usage = getattr(response, "usage", None)
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        cost = _cost(response)
        self._record(
            LLMCall(self._model, sent, content, prompt_tokens, completion_tokens, cost, latency)
        )
        _logger.debug(
            "LLM call to %r: %d prompt + %d completion tokens, cost %s, %.3f s.",
            self._model,
            prompt_tokens,
            completion_tokens,
            "unknown" if cost is None else f"${cost:.6f}",
            latency,
        )
        return response

    def complete(self, messages: list[dict[str, Any]], **kwargs: Any) -> str:
        """Call the model and return the answer's text.

        Raises:
            LLMError: If the call failed, or the answer has no text.
        """
        content = _content(self(messages, **kwargs))
        if content is None:
            raise LLMError(f"The LLM {self._model!r} answered without text content.")
        return content

    def _record(self, call: LLMCall) -> None:
        with self._lock:
            self._calls.append(call)

    def _redact(self, text: str) -> str:
        for name, value in self._completion_kwargs.items():
            if is_secret_name(name) and isinstance(value, str) and value:
                text = text.replace(value, _REDACTED)
        return text

    def take_calls(self) -> list[LLMCall]:
        """Return the calls made since the last ``take_calls()`` and forget them.

        The list is shared with every ``LLM`` made by :meth:`with_options` from this one.
        """
        with self._lock:
            calls = list(self._calls)
            self._calls.clear()
        return calls

    def settings(self) -> dict[str, Any]:
        """The settings as a JSON-able dict, without anything secret.

        Keyword arguments whose names contain "key", "token", "secret", "password",
        "credential" or "auth" (case-insensitive; counts ending in "tokens" excepted) are left
        out, also inside nested dicts such as ``extra_headers``.
        """
        settings: dict[str, Any] = {
            "model": self._model,
            "temperature": self._temperature,
            "max_tokens": self._max_tokens,
            "num_retries": self._num_retries,
            "timeout": self._timeout,
            "cache": self._cache,
        }
        settings.update(_public(self._completion_kwargs))
        return settings

    def with_options(self, **overrides: Any) -> LLM:
        """A new ``LLM`` with some settings changed that records into this one's call list.

        Args:
            **overrides: Constructor arguments to change (``temperature=0.9``, ...).

        Returns:
            The new ``LLM``; its calls appear in this one's :meth:`take_calls` and vice versa.

        Raises:
            ConfigurationError: If a changed setting breaks its rule.
        """
        arguments: dict[str, Any] = {
            "temperature": self._temperature,
            "max_tokens": self._max_tokens,
            "num_retries": self._num_retries,
            "timeout": self._timeout,
            "cache": self._cache,
            **self._completion_kwargs,
        }
        arguments.update(overrides)
        model = arguments.pop("model", self._model)
        other = LLM(model, **arguments)
        other._calls = self._calls
        other._lock = self._lock
        return other


def _content(response: Any) -> str | None:
    try:
        return response.choices[0].message.content
    except (AttributeError, IndexError, TypeError):
        return None


def _cost(response: Any) -> float | None:
    try:
        cost = import_litellm().completion_cost(completion_response=response)
    except Exception:  # litellm raises for models it has no price for
        return None
    return float(cost) if cost is not None and math.isfinite(cost) else None


def _register_if_simulated(model: str) -> bool:
    """Register the simulated model with litellm if ``model`` names it; return whether it does.

    The simulated model is a test double in :mod:`trace_optuna.testing.simulated`, imported
    here, when first named.
    """
    from trace_optuna.testing.simulated import PROVIDER
    from trace_optuna.testing.simulated import register_simulated_provider

    if not model.startswith(PROVIDER + "/"):
        return False
    register_simulated_provider()
    return True


def _is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _validate(
    model: object,
    temperature: object,
    max_tokens: object,
    num_retries: object,
    timeout: object,
    cache: object,
    completion_kwargs: dict[str, Any],
) -> None:
    if not isinstance(model, str) or not model.strip():
        raise ConfigurationError(f"LLM model must be a non-empty str, got {model!r}.")
    if temperature is not None and not (_is_number(temperature) and 0 <= temperature <= 2):  # type: ignore[operator]
        raise ConfigurationError(
            f"LLM temperature must be a number in [0, 2] or None, got {temperature!r}."
        )
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens <= 0
    ):
        raise ConfigurationError(
            f"LLM max_tokens must be a positive int or None, got {max_tokens!r}."
        )
    if isinstance(num_retries, bool) or not isinstance(num_retries, int) or num_retries < 0:
        raise ConfigurationError(f"LLM num_retries must be an int >= 0, got {num_retries!r}.")
    if not (_is_number(timeout) and timeout > 0):  # type: ignore[operator]
        raise ConfigurationError(f"LLM timeout must be a number > 0 (seconds), got {timeout!r}.")
    if not isinstance(cache, bool):
        raise ConfigurationError(f"LLM cache must be a bool, got {cache!r}.")
    for reserved in ("messages", "caching"):
        if reserved in completion_kwargs:
            raise ConfigurationError(
                f"LLM does not take {reserved!r} as a setting; "
                + ("pass messages per call." if reserved == "messages" else "use cache=...")
            )

    if _register_if_simulated(model):
        from trace_optuna.testing.simulated import MODELS
        from trace_optuna.testing.simulated import PROVIDER
        from trace_optuna.testing.simulated import SimulatedOptions

        name = model.split("/", 1)[1]
        if name not in MODELS:
            known = ", ".join(f"{PROVIDER}/{m}" for m in MODELS)
            raise ConfigurationError(f"Unknown simulated model {model!r}; known: {known}.")
        SimulatedOptions.from_params(completion_kwargs)
        return
    try:
        import_litellm().get_llm_provider(
            model,
            custom_llm_provider=completion_kwargs.get("custom_llm_provider"),
            api_base=completion_kwargs.get("api_base"),
        )
    except Exception:
        raise ConfigurationError(
            f"LLM model {model!r} names no provider litellm knows; write it as "
            "'provider/model', e.g. 'openai/gpt-4o-mini' or 'anthropic/claude-3-5-haiku-latest'."
        ) from None
