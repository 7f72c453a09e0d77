"""``OptimizerLLM``: the study's :class:`~trace_optuna.llm.LLM` as a Trace optimizer's ``llm``.

Trace's optimizers call their model in two forms: ``llm(messages=..., **kwargs)`` (OptoPrime,
OPRO) and ``llm.create(messages=..., **kwargs)`` (OptoPrimeMulti, TextGrad: trace-opt's
``AbstractModel.create``). trace-opt 0.1.3.8's own LiteLLM backend has no ``create``, so the
latter two fail with it; this adapter answers both forms through the study's ``LLM``, so every
call is metered and recorded in the trial like OptoPrime's.

It also applies the study's settings over what Trace hard-codes: Trace sends ``max_tokens=4096``
with every call, which would override the study's (``Config(optimizer={"max_tokens": ...})``,
else the LLM's own); arguments given as None are not sent (``max_tokens=None`` would otherwise
replace the LLM's own setting with litellm's default).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any

if TYPE_CHECKING:
    import litellm

    from trace_optuna.llm._litellm import LLM


class OptimizerLLM:
    """The model handed to a Trace optimizer: the study's LLM, in both of Trace's call forms.

    Args:
        llm: The study's LLM (its calls are the trial's).
        max_tokens: The study's ``max_tokens`` for every call, replacing the optimizer's; None
            sends none, so the LLM's own setting applies.
        temperature: The temperature of calls that give none themselves; None: the LLM's own.

    Attributes:
        responses: The text of every answer, in order (for the record of an unusable answer).

    Example:
        >>> from trace_optuna.llm import LLM
        >>> model = OptimizerLLM(LLM("simulated/feedback-follower"))
        >>> answer = model.create(messages=[{"role": "user", "content": "Hello"}], max_tokens=4096)
        >>> model.responses == [answer.choices[0].message.content]
        True
    """

    def __init__(
        self, llm: LLM, *, max_tokens: int | None = None, temperature: float | None = None
    ) -> None:
        self.llm = llm
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.responses: list[str] = []

    def __call__(self, messages: list[dict[str, Any]], **kwargs: Any) -> litellm.ModelResponse:
        """One call, as OptoPrime makes it (``llm(messages=..., **kwargs)``)."""
        options = {key: value for key, value in kwargs.items() if value is not None}
        options.pop("max_tokens", None)
        if self.max_tokens is not None:
            options["max_tokens"] = self.max_tokens
        if self.temperature is not None:
            options.setdefault("temperature", self.temperature)
        response = self.llm(messages, **options)
        for choice in getattr(response, "choices", None) or []:
            content = getattr(getattr(choice, "message", None), "content", None)
            self.responses.append(content if isinstance(content, str) else "")
        return response

    def create(self, messages: list[dict[str, Any]], **kwargs: Any) -> litellm.ModelResponse:
        """One call, as OptoPrimeMulti and TextGrad make it (``AbstractModel.create``)."""
        return self(messages, **kwargs)

    def last_response(self) -> str:
        """The text of the last answer ("" before any)."""
        return self.responses[-1] if self.responses else ""
