"""``AgentLLM``: the agent's own model (``Config.agent_llm``), metered apart from the optimizer's.

A Trace agent calls a model through :mod:`opto.utils.llm`: ``call_llm`` builds ``LLM()`` at each
call, and an agent may build ``LLM()`` once, in ``__init__``, or hold any other backend
(``LiteLLM``, ``CustomLLM``, ``AutoGenLLM``). All of them are ``AbstractModel``\\ s whose calls go
through ``AbstractModel.__call__``. While ``evaluate`` runs, :meth:`AgentLLM.installed` makes
that method answer with the configured :class:`~trace_optuna.LLM`, and makes
``opto.utils.llm.LLM`` build a :class:`TraceModel` of it, so every Trace model the agent calls
(however and whenever it was built) is the configured one, and each call is recorded for the
trial as the optimizer's are. Both are restored when ``evaluate`` returns or raises.

Only calls through Trace's model classes are routed; an agent that calls litellm or a provider's
SDK itself is not seen.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
import contextlib
import copy
import functools
import threading
from typing import Any
from typing import TypeVar

from trace_optuna.exceptions import ConfigurationError
from trace_optuna.llm._litellm import LLM
from trace_optuna.llm._litellm import LLMCall

T = TypeVar("T")

# The LLMs installed, innermost last (an evaluate inside an evaluate installs again).
_installed: list[LLM] = []


class AgentLLM:
    """The agent's model: routes Trace's LLM calls inside ``evaluate`` to ``llm``, metered.

    Args:
        llm: The configured model. Its calls are recorded in a call list of this object's
            own, so an ``llm`` that is also the optimizer's never mixes the two.
    """

    def __init__(self, llm: LLM) -> None:
        self.llm = _with_own_calls(llm)

    @property
    def model(self) -> str:
        """The litellm model string."""
        return self.llm.model

    def take_calls(self) -> list[LLMCall]:
        """The agent's calls since the last ``take_calls()``, forgotten here."""
        return self.llm.take_calls()

    def routing(self, evaluate: Callable[..., T]) -> Callable[..., T]:
        """``evaluate`` run with this model installed (its signature kept, for inspection)."""

        @functools.wraps(evaluate)
        def routed(*args: Any, **kwargs: Any) -> T:
            with self.installed():
                return evaluate(*args, **kwargs)

        return routed

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Answer every Trace model call in this process with :attr:`llm` inside the block."""
        from opto.utils import llm as opto_llm  # imports litellm: only when a run starts

        base = opto_llm.AbstractModel
        saved_call = base.__dict__["__call__"]
        saved_class = opto_llm.LLM
        _installed.append(self.llm)
        base.__call__ = _routed_call  # type: ignore[method-assign]
        opto_llm.LLM = _trace_model_class()
        try:
            yield
        finally:
            _installed.pop()
            if not _installed:  # the outermost block restores Trace's own
                base.__call__ = saved_call  # type: ignore[method-assign]
                opto_llm.LLM = saved_class


def agent_llm_for(value: str | LLM | None) -> AgentLLM | None:
    """The :class:`AgentLLM` of ``Config.agent_llm``; None leaves the agent's calls alone.

    Raises:
        ConfigurationError: If the model string is not one litellm knows (naming ``agent_llm``).
    """
    if value is None:
        return None
    if isinstance(value, LLM):
        return AgentLLM(value)
    try:
        return AgentLLM(LLM(value))
    except ConfigurationError as error:
        raise ConfigurationError(f"agent_llm={value!r}: {error}") from None


def _with_own_calls(llm: LLM) -> LLM:
    """A copy of ``llm`` recording into a call list of its own (the optimizer's may be ``llm``;
    ``with_options`` would share the list)."""
    own = copy.copy(llm)
    own._calls = []
    own._lock = threading.Lock()
    return own


def _answer(llm: LLM, *args: Any, **kwargs: Any) -> Any:
    """Call ``llm`` as Trace calls its models: ``model(messages=..., **completion kwargs)``.

    A model the agent names per call is replaced: the configured one answers.
    """
    kwargs.pop("model", None)
    messages = kwargs.pop("messages") if "messages" in kwargs else args[0]
    return llm(list(messages), **kwargs)


def _answer_unrecorded(llm: LLM, *args: Any, **kwargs: Any) -> Any:
    try:
        return _answer(llm, *args, **kwargs)
    finally:
        llm.take_calls()


def _routed_call(model: Any, *args: Any, **kwargs: Any) -> Any:
    """``AbstractModel.__call__`` while an :class:`AgentLLM` is installed."""
    return _answer(_installed[-1], *args, **kwargs)


@functools.cache
def _trace_model_class() -> type:
    """:class:`TraceModel`, made on first use: its base class comes with litellm."""
    from opto.utils.llm import AbstractModel

    class TraceModel(AbstractModel):  # type: ignore[misc]
        """What ``opto.utils.llm.LLM(...)`` builds while an :class:`AgentLLM` is installed.

        It takes ``LiteLLM``'s arguments and ignores them: the installed model answers. Called
        after ``evaluate`` returned (an agent kept by the user), it still answers with that
        model, but its calls belong to no trial and are not kept.
        """

        def __init__(self, model: str | None = None, *args: Any, **kwargs: Any) -> None:
            if not _installed:
                raise ConfigurationError(
                    "TraceModel answers with the agent_llm of a running evaluate; none runs. "
                    "Build Trace's models with opto.utils.llm.LLM() instead."
                )
            llm = _installed[-1]
            self.model_name = llm.model
            super().__init__(functools.partial(_identity, _with_own_calls(llm)))

        @property
        def model(self) -> Callable[..., Any]:
            return functools.partial(_answer_unrecorded, self._model)

    TraceModel.__module__ = __name__
    TraceModel.__qualname__ = "TraceModel"
    return TraceModel


def _identity(llm: LLM) -> LLM:
    return llm


def __getattr__(name: str) -> Any:
    # TraceModel is made on first use; named here so that a pickled one finds its class.
    if name == "TraceModel":
        return _trace_model_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
