"""Run untrusted Python (code an LLM wrote) in an isolated child process.

The runner the ``stop`` strategy uses for its improvers, for your own untrusted code. The
child is a fresh ``python -I`` with an empty environment, resource limits and a wall-clock
timeout, and, on Linux, isolation layers it sets up on itself before it reads your source and
that nothing it runs can undo (:data:`LAYERS`):

* ``user_namespace``: it holds no privilege, even when your process runs as root;
* ``network_namespace``: no network at all, not even this machine's loopback (so no database
  on 127.0.0.1, no cloud metadata endpoint);
* ``landlock``: it reads only the Python installation and the system libraries and writes
  only its own temporary directory (deleted afterwards); it sees no ``/proc``, no home
  directory, no project files, no ``/tmp``, no unix socket under ``/run``; no TCP; no signal
  or ptrace to any process outside it;
* ``seccomp``: no socket, no new process, no namespace or mount call.

Its only channel to your process is a pair of pipes: the code may call ``llm(prompt,
temperature=None)`` and ``utility(value)``, both served by your process (your ``llm`` and
``utility`` functions), metered (``budget``; ``SandboxLimits.max_utility_calls``).

By default every layer is required: where one cannot be set up the run raises
:class:`~trace_optuna.exceptions.IsolationUnavailable` before your source is sent, saying what
is missing and how to enable it; ``isolation="none"`` runs anyway with the layers the machine
has. :func:`supported_layers` (or ``trace-optuna doctor``) tells what a machine supports;
``TRACE_OPTUNA_SANDBOX_DISABLE=landlock,seccomp`` (or ``all``) turns layers off, as if the
machine lacked them, to see what your program does there.

Example:
    >>> from trace_optuna import sandbox
    >>> run = sandbox.run("def main(n):\\n    return n + 1\\n", "main", [41])
    >>> run.value, run.layers == list(sandbox.LAYERS)
    (42, True)
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

from trace_optuna.exceptions import ConfigurationError
from trace_optuna.exceptions import ImproverFailed
from trace_optuna.exceptions import IsolationUnavailable
from trace_optuna.exceptions import Rejected
from trace_optuna.strategies.sandbox import DISABLE_ENV
from trace_optuna.strategies.sandbox import ISOLATION_CHOICES
from trace_optuna.strategies.sandbox import LAYERS
from trace_optuna.strategies.sandbox import SandboxLimits
from trace_optuna.strategies.sandbox import SandboxRun
from trace_optuna.strategies.sandbox import require_isolation
from trace_optuna.strategies.sandbox import run_sandboxed
from trace_optuna.strategies.sandbox import supported_layers

__all__ = [
    "DISABLE_ENV",
    "ISOLATION_CHOICES",
    "ImproverFailed",
    "IsolationUnavailable",
    "LAYERS",
    "Rejected",
    "SandboxLimits",
    "SandboxRun",
    "require_isolation",
    "run",
    "supported_layers",
]


def _no_llm(messages: list[dict[str, str]], temperature: float | None) -> str:
    raise Rejected("this sandboxed run was given no llm")


def _no_utility(value: Any) -> float:
    raise Rejected("this sandboxed run was given no utility")


def run(
    source: str,
    function: str = "main",
    args: Sequence[Any] = (),
    *,
    llm: Callable[[list[dict[str, str]], float | None], str] | None = None,
    utility: Callable[[Any], float] | None = None,
    budget: int = 0,
    limits: SandboxLimits | None = None,
    isolation: str = "required",
) -> SandboxRun:
    """Run ``function(*args)`` from ``source`` in an isolated child; return what it returned.

    Args:
        source: Python source defining ``function``.
        function: The name of the function to call.
        args: Its arguments, JSON values.
        llm: Serves the code's ``llm(prompt, temperature=None)`` calls in this process, as
            ``llm(messages, temperature)`` (a str prompt arrives as one user message); raise
            :class:`~trace_optuna.exceptions.Rejected` to refuse one (the code sees a
            ``RuntimeError``). None: every call is refused.
        utility: Serves the code's ``utility(value) -> float`` calls; raise ``Rejected`` to
            refuse one (the code sees a ``ValueError``). None: every call is refused.
        budget: LLM calls the code may make; the next one kills it.
        limits: Timeout, memory, file size and call limits (:class:`SandboxLimits`).
        isolation: ``"required"`` (every layer, else ``IsolationUnavailable``) or ``"none"``.

    Returns:
        The run: ``value`` (a JSON value), the calls served, seconds, printed output and the
        active ``layers``.

    Raises:
        ConfigurationError: On a bad argument.
        IsolationUnavailable: If a required layer cannot be set up here.
        ImproverFailed: If the code raised, broke a limit or returned something not JSON
            (``kind`` says which).
    """
    if not isinstance(source, str):
        raise ConfigurationError(
            f"source must be Python source (a str), got {type(source).__name__}."
        )
    if not isinstance(function, str) or not function.isidentifier():
        raise ConfigurationError(f"function must be a function name, got {function!r}.")
    if isinstance(args, (str, bytes)) or not isinstance(args, Sequence):
        raise ConfigurationError(f"args must be a list of JSON values, got {args!r}.")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
        raise ConfigurationError(f"budget must be an int >= 0, got {budget!r}.")
    return run_sandboxed(
        source,
        function,
        [["value", value] for value in args],
        budget=budget,
        llm=llm or _no_llm,
        utility=utility or _no_utility,
        limits=limits,
        isolation=isolation,
    )
