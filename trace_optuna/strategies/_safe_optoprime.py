"""``SafeOptoPrime``: Trace's ``OptoPrime`` with the parsing bugs of trace-opt 0.1.3.8 fixed,
and a canonical prompt.

A module of its own because Trace's ``opto.optimizers`` imports litellm and openai, which take
seconds: :mod:`trace_optuna.strategies.optoprime` imports this module when a step first runs
(see its docstring for the bugs fixed), so ``import trace_optuna`` does not pay for them.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from typing import Any

from trace_optuna import graph
from trace_optuna.llm._imports import import_litellm
from trace_optuna.strategies.base import without_addresses
from trace_optuna.strategies.optoprime import SuggestionError
from trace_optuna.strategies.optoprime import cast_suggestion

# opto.optimizers imports litellm: through import_litellm first, so it is configured as the
# library configures it (offline cost map, no debug banners).
import_litellm()
# trace-opt prints "Using LiteLLM as the default LLM backend." on import, unconditionally;
# that line would end up in every CLI output and log of ours.
with contextlib.redirect_stdout(io.StringIO()):
    from opto.optimizers import OptoPrime

# The name the warnings were logged under before this class had a module of its own.
_logger = logging.getLogger("trace_optuna.strategies.optoprime")


_NAME = re.compile(r"[A-Za-z_]\w*")
_DIGITS = re.compile(r"(\d+)")


class SafeOptoPrime(OptoPrime):
    """Trace's OptoPrime with the suggestion-parsing bugs of trace-opt 0.1.3.8 fixed, and node
    names made distinct before a prompt (:func:`trace_optuna.graph.distinct_names`).

    The prompt is canonical: the same program, parameters and feedback give the same prompt
    text in every process. Trace lists the nodes of ``#Variables``, ``#Inputs``, ``#Others``,
    ``#Outputs`` and ``#Documentation`` in the order its backward pass met them, which breaks
    ties between nodes of one level by ``id()`` (memory addresses, so it changes from process
    to process); here they are listed in the order ``#Code`` (which Trace sorts) first uses
    them, and object addresses in values are left out.

    After :meth:`propose`, ``last_response`` holds the LLM's raw answer and ``rejected`` the
    suggestions that could not be cast (``{py_name: reason}``).

    ``max_tokens=None`` sends no ``max_tokens``, so the LLM's own setting applies (Trace's
    OptoPrime sends 4096 with every call, overriding ``LLM(..., max_tokens=...)``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.last_response: str | None = None
        self.rejected: dict[str, str] = {}

    def summarize(self) -> Any:
        # The prompt shows every node of the feedback's graph by name and suggestions come back
        # by name: names must be distinct first (GRAPH.clear() in evaluate makes them repeat).
        trainable = [node for node in self.parameters if node.trainable]
        shown = [
            node
            for parameter in trainable
            for _, node in self.propagator.aggregate(parameter.feedback).graph
        ]
        graph.distinct_names(trainable, shown)
        summary = super().summarize()
        first_use: dict[str, int] = {}
        for _, line in sorted(summary.graph):
            for name in _NAME.findall(line):
                first_use.setdefault(name, len(first_use))

        def ordered(named: dict[str, Any]) -> dict[str, Any]:
            def key(name: str) -> tuple[int, list[Any]]:
                natural = [int(p) if p.isdigit() else p for p in _DIGITS.split(name)]
                return first_use.get(name, len(first_use)), natural

            return {name: named[name] for name in sorted(named, key=key)}

        for section in ("variables", "inputs", "others", "output", "roots", "documentation"):
            setattr(summary, section, ordered(getattr(summary, section)))
        return summary

    @staticmethod
    def repr_node_value(node_dict: dict[str, Any]) -> str:
        return without_addresses(OptoPrime.repr_node_value(node_dict))

    def call_llm(
        self,
        system_prompt: str,
        user_prompt: str,
        verbose: bool | str = False,
        max_tokens: int | None = None,
    ) -> str:
        messages = [
            {"role": "system", "content": system_prompt},
            {"role": "user", "content": user_prompt},
        ]
        options = {} if max_tokens is None else {"max_tokens": max_tokens}
        response = self.llm(messages=messages, response_format={"type": "json_object"}, **options)
        content = response.choices[0].message.content
        self.last_response = content if isinstance(content, str) else ""
        return self.last_response

    def construct_update_dict(self, suggestion: dict[str, Any]) -> dict[Any, Any]:
        update = {}
        self.rejected = {}
        for node in self.parameters:
            if not node.trainable or node.py_name not in suggestion:
                continue
            try:
                update[node] = cast_suggestion(node._data, suggestion[node.py_name])
            except SuggestionError as error:
                self.rejected[node.py_name] = str(error)
                _logger.warning("Ignoring the suggestion for %s: %s", node.py_name, error)
        return update
