"""Trace's OPRO, OptoPrimeMulti and TextGrad with the bugs of trace-opt 0.1.3.8 worked around.

A module of its own, like :mod:`._safe_optoprime`, because Trace's ``opto.optimizers`` imports
litellm (seconds): the strategies import it when a step first runs. Nothing of trace-opt is
patched; each class overrides what it must:

* ``SafeOPRO``: OPRO with :class:`SafeOptoPrime`'s parsing (``def`` in a string, casting) and
  single LLM call, and its buffer of past solutions filled from the storage.
* ``SafeOptoPrimeMulti``: ``OptoPrimeMulti(temperature_range=...)`` kept the range only when it
  was None, so a given range raised ``AttributeError`` at the step; a failed LLM call was
  swallowed (``[]``) and surfaced as ``IndexError``. Parsing is :class:`SafeOptoPrime`'s.
* ``SafeTextGrad``: one LLM call per request (Trace retried any error once, the same request),
  each at the temperature of its kind (gradient or update), and the improved values read from
  the answers with :func:`~trace_optuna.strategies.optoprime.cast_suggestion` instead of
  ``type(old)(new)`` (``bool("False")`` is True); an answer without the tags is recorded in
  ``rejected`` instead of printed.

Both OptoPrimeMulti and TextGrad call ``llm.create(...)``, which trace-opt's LiteLLM backend
lacks: :class:`~trace_optuna.llm._optimizer_llm.OptimizerLLM` provides it.

The marker constants below are what the simulated model recognises these prompts by; they are
read from Trace's own prompt definitions, never copied.
"""

from __future__ import annotations

import contextlib
import io
import re
from typing import Any

from trace_optuna.llm._imports import import_litellm
from trace_optuna.strategies._safe_optoprime import SafeOptoPrime
from trace_optuna.strategies.optoprime import SuggestionError
from trace_optuna.strategies.optoprime import cast_suggestion

import_litellm()
with contextlib.redirect_stdout(io.StringIO()):  # trace-opt prints its LLM backend on import
    from opto.optimizers import OPRO
    from opto.optimizers import OptoPrimeMulti
    from opto.optimizers import TextGrad
    from opto.optimizers import textgrad as _textgrad


def _first_line(template: str) -> str:
    return next(line.strip() for line in template.splitlines() if line.strip())


OPRO_EXAMPLES_MARKER = _first_line(OPRO.user_prompt_template)
"""The first line of OPRO's user prompt, before its examples (JSON objects)."""

TEXTGRAD_GRADIENT_SYSTEM = _textgrad.BACKWARD_SYSTEM_PROMPT
"""TextGrad's system prompt asking for feedback ("a gradient") on one variable."""

TEXTGRAD_REDUCE_SYSTEM = _textgrad.REDUCE_MEAN_SYSTEM_PROMPT
"""TextGrad's system prompt asking to summarise several feedbacks."""

TEXTGRAD_UPDATE_SYSTEM_START = _textgrad.OPTIMIZER_SYSTEM_PROMPT.split("{", 1)[0]
"""The start of TextGrad's system prompt asking for the improved variable."""

TEXTGRAD_REDUCE_TAGS = tuple(_textgrad.construct_reduce_prompt(["\0"]).split("\0"))
"""The tags around each feedback of TextGrad's summary prompt."""

TEXTGRAD_TEMPLATES = {
    "objective": _textgrad.OBJECTIVE_INSTRUCTION_CHAIN,
    "variable": _textgrad.EVALUATE_VARIABLE_INSTRUCTION,
    "update": _textgrad.TGD_PROMPT_PREFIX,
    "suffix": _textgrad.TGD_PROMPT_SUFFIX,
    "conversation": _textgrad.CONVERSATION_TEMPLATE,
    "feedback": _textgrad.GRADIENT_TEMPLATE,
}
"""TextGrad's prompt templates (``{field}`` placeholders), for reading its prompts back."""


def template_pattern(template: str) -> re.Pattern[str]:
    """A pattern matching ``template``'s text, each ``{field}`` a named group (``{{`` is ``{``).

    Example:
        >>> template_pattern("<A> {value} </A>").search("x <A> 1 2 </A>")["value"]
        '1 2'
    """
    parts = re.split(r"(\{\{|\}\}|\{\w+\})", template)
    pattern, seen = [], set()
    for part in parts:
        if part in ("{{", "}}"):
            pattern.append(re.escape(part[0]))
        elif part.startswith("{") and part.endswith("}") and len(part) > 2:
            name = part[1:-1]
            pattern.append(f"(?P={name})" if name in seen else f"(?P<{name}>.*?)")
            seen.add(name)
        else:
            pattern.append(re.escape(part))
    return re.compile("".join(pattern), re.DOTALL)


class SafeOPRO(OPRO, SafeOptoPrime):  # type: ignore[misc]
    """Trace's OPRO with :class:`SafeOptoPrime`'s parsing and call, and a given buffer.

    Args:
        memory: Earlier ``(variables, feedback)`` pairs shown as examples before the current
            one, oldest first (OPRO keeps them in ``buffer``, in process only).
    """

    def __init__(self, *args: Any, memory: list[tuple[dict, str]] = (), **kwargs: Any) -> None:  # type: ignore[assignment]
        super().__init__(*args, **kwargs)
        self.buffer = list(memory)


class SafeOptoPrimeMulti(OptoPrimeMulti, SafeOptoPrime):  # type: ignore[misc]
    """Trace's OptoPrimeMulti with its ``temperature_range`` kept and LLM errors raised.

    After :meth:`propose`, ``candidates`` holds every candidate's update (``{}`` for an answer
    without one), ``rejected`` the suggestions of any candidate that could not be cast.
    """

    def __init__(
        self, *args: Any, temperature_range: list[float] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, temperature_range=temperature_range, **kwargs)
        if temperature_range is not None:  # trace-opt keeps it only when it is None
            self.temperature_range = list(temperature_range)
        self.all_rejected: dict[str, str] = {}

    def construct_update_dict(self, suggestion: dict[str, Any]) -> dict[Any, Any]:
        update = super().construct_update_dict(suggestion)
        self.all_rejected.update(self.rejected)
        return update

    def call_llm(  # type: ignore[override]
        self,
        system_prompt: str,
        user_prompt: str,
        verbose: bool | str = False,
        max_tokens: int | None = None,
        num_responses: int = 1,
        temperature: float = 0.0,
    ) -> list[str]:
        messages = [
            {"role": "system", "content": system_prompt},
            {"role": "user", "content": user_prompt},
        ]
        # As Trace calls it (llm.create), but an error is raised, not swallowed into [].
        response = self.llm.create(
            messages=messages,
            response_format={"type": "json_object"},
            max_tokens=max_tokens,
            n=num_responses,
            temperature=temperature,
        )
        return [choice.message.content or "" for choice in response.choices]


class SafeTextGrad(TextGrad):
    """Trace's TextGrad with one call per request, a temperature per kind, and safe parsing.

    Args:
        gradient_temperature: The temperature of the feedback ("gradient") and summary calls;
            None: the LLM's own.
        update_temperature: The temperature of the calls writing the improved variables;
            None: the LLM's own.

    After :meth:`propose`, ``rejected`` holds ``{py_name: reason}`` for each parameter whose
    answer could not be used, and ``update_responses`` the raw answers of the update calls.
    """

    def __init__(
        self,
        *args: Any,
        gradient_temperature: float | None = None,
        update_temperature: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.gradient_temperature = gradient_temperature
        self.update_temperature = update_temperature
        self.update_responses: list[str] = []
        self.rejected: dict[str, str] = {}

    def call_llm(self, system_prompt: str, user_prompt: str, verbose: bool | str = False) -> str:
        updating = system_prompt == self.optimizer_system_prompt
        temperature = self.update_temperature if updating else self.gradient_temperature
        messages = [
            {"role": "system", "content": system_prompt},
            {"role": "user", "content": user_prompt},
        ]
        response = self.llm.create(
            messages=messages, max_tokens=self.max_tokens, temperature=temperature
        )
        content = response.choices[0].message.content
        content = content if isinstance(content, str) else ""
        if updating:
            self.update_responses.append(content)
        return content

    def _step(self, verbose: bool = False) -> dict[Any, Any]:  # type: ignore[override]
        self.update_responses = []
        self.rejected = {}
        # Trace prints a failed parse and casts with type(old)(new): its update is replaced
        # below by the answers read again, one update call per parameter, in order.
        with contextlib.redirect_stdout(io.StringIO()):
            super()._step(verbose=verbose)
        start, end = self.new_variable_tags
        update = {}
        for node, response in zip(self.parameters, self.update_responses, strict=False):
            if start not in response or end not in response.split(start, 1)[1]:
                self.rejected[node.py_name] = f"the answer has no {start}...{end}"
                continue
            text = response.split(start, 1)[1].split(end, 1)[0].strip()
            try:
                update[node] = cast_suggestion(node._data, text)
            except SuggestionError as error:
                self.rejected[node.py_name] = str(error)
        return update
