"""Running untrusted improver code (written or rewritten by an LLM) in a separate process.

STOP's improvers are Python source that an LLM may have written, so everything that keeps them
in bounds is enforced here, by the caller, and never by the improver's own code:

* The improver runs in a child process: the base interpreter (not a venv's) with ``-I``
  (isolated mode: no ``PYTHON*`` variables, no user site directory, no script directory on
  ``sys.path``), started with an
  EMPTY environment (no inherited variable, so no API key or database URL), in a fresh
  temporary working directory that is deleted afterwards, with no file descriptor of the parent
  but its three pipes, in its own session so that the whole process group can be killed.
* ``resource.setrlimit`` (in ``preexec_fn``, before the child runs any Python) caps its address
  space (:attr:`SandboxLimits.memory_bytes`), CPU seconds, the size of files it writes and core
  dumps.
* A wall-clock timeout (:attr:`SandboxLimits.timeout_s`) counts the time the child runs on its
  own; the time the parent spends serving its LLM and utility calls does not count, so a slow
  model does not kill a well-behaved improver. On timeout the process group is killed.
* The child gets exactly two capabilities, both served by the parent: ``llm(prompt,
  temperature=None) -> str`` and ``utility(solution) -> float``. The parent meters them: the
  first LLM call beyond ``budget`` (or utility call beyond ``max_utility_calls``) kills the
  child and fails the run. The child holds no storage handle, no credentials and no LLM client.

* Isolation (:mod:`trace_optuna.strategies._isolate`, run by the child on itself before it
  reads the untrusted source; nothing it runs afterwards can undo it): a user namespace (no
  privilege, even under a root worker), a network namespace (no network at all, not even the
  host's loopback), Landlock (read-only access to the Python installation and the system
  libraries, read-write to its temporary directory, nothing else: no ``/proc``, no home, no
  project, no ``/tmp``; no TCP; no signal or ptrace beyond itself) and a seccomp filter (no
  socket, no new process, no namespace or mount call). The child reports which layers are
  active; with ``isolation="required"`` (the default) a missing one is
  :class:`~trace_optuna.exceptions.IsolationUnavailable` before the source is sent.
  :func:`supported_layers` probes the machine; ``TRACE_OPTUNA_SANDBOX_DISABLE`` turns layers
  off to see what happens where they are missing.

Protocol: JSON lines. The child first reports ``{"type": "ready", "layers", "missing"}``. The
parent writes one ``{"type": "start", "source", "function", "args"}`` line to the child's
stdin (``args``: ``["value", json]``, ``["llm"]`` or ``["utility"]``). The child answers with
request lines on its stdout: ``{"type": "llm", "prompt", "temperature"}`` (the parent replies
``{"type": "llm", "text"}``), ``{"type": "utility", "solution"}`` (reply ``{"type":
"utility", "value"}``) -- either may be answered ``{"type": "error", "message"}``, which the
child raises as an exception the code may catch -- and ends with ``{"type": "done",
"solution"}`` or ``{"type": "failed", "error", "traceback", "memory"}``. The child's own
``print`` output and stderr go to a file in its working directory (the last few KB are kept
for the failure report), never into the protocol stream. The only channel between the two
processes is this pair of pipes.

Not isolated here: the worker itself. Code that Trace runs in the worker (trainable functions
an LLM rewrote, ``evaluate``) is not sandboxed: run workers in a container or as an
unprivileged user for that.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
import dataclasses
import functools
import importlib.resources
import json
import logging
import math
import os
import resource
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from trace_optuna.exceptions import ConfigurationError
from trace_optuna.exceptions import ImproverFailed
from trace_optuna.exceptions import IsolationUnavailable
from trace_optuna.exceptions import Rejected
from trace_optuna.exceptions import TraceOptunaError

_logger = logging.getLogger(__name__)

FAILURE_KINDS = (
    "timeout",
    "budget",
    "utility_budget",
    "memory",
    "error",
    "crashed",
    "protocol",
    "result",
)
"""What :attr:`~trace_optuna.exceptions.ImproverFailed.kind` can be."""

LAYERS = ("user_namespace", "network_namespace", "landlock", "seccomp")
"""The isolation layers, in the order the child sets them up (see the module docs)."""

REQUIRED = "required"
NONE = "none"
ISOLATION_CHOICES = (REQUIRED, NONE)
"""The values of ``isolation`` (``Config.stop_isolation``)."""

DISABLE_ENV = "TRACE_OPTUNA_SANDBOX_DISABLE"
"""Layers named here (comma-separated, or ``all``) are not set up, as if the machine lacked
them: to see what a study does on such a machine. It never weakens a run silently: with
``isolation="required"`` a disabled layer is a refusal."""

HOW_TO_ENABLE = {
    "user_namespace": (
        "Allow unprivileged user namespaces: sysctl user.max_user_namespaces=15000 (and "
        "kernel.unprivileged_userns_clone=1 on Debian kernels, "
        "kernel.apparmor_restrict_unprivileged_userns=0 on Ubuntu 23.10+); in Docker or "
        "Kubernetes the default seccomp profile forbids unshare: use a profile that allows it"
    ),
    "network_namespace": "Needs user namespaces (see user_namespace)",
    "landlock": (
        "Use Linux 6.12 or later with Landlock enabled (CONFIG_SECURITY_LANDLOCK=y and "
        "'landlock' in CONFIG_LSM or the lsm= boot parameter)"
    ),
    "seccomp": "Needs Linux with CONFIG_SECCOMP_FILTER on x86_64",
}
"""How to enable each layer, for the refusal's message."""

_STDERR_TAIL_BYTES = 4000
_READ_CHUNK = 65536


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
    """The limits of one improver run.

    Args:
        timeout_s: Wall-clock seconds the child may run on its own (time spent by the parent
            serving its LLM and utility calls is not counted).
        memory_bytes: Address-space limit of the child (``RLIMIT_AS``).
        max_utility_calls: Most utility calls; the next one kills the child.
        max_message_bytes: Longest protocol line the child may send.
        max_file_bytes: Largest file the child may write (``RLIMIT_FSIZE``), its captured
            output included.

    Raises:
        ConfigurationError: If a limit is of the wrong type or out of its range.
    """

    timeout_s: float = 60.0
    memory_bytes: int = 1024 * 1024 * 1024
    max_utility_calls: int = 16
    max_message_bytes: int = 8 * 1024 * 1024
    max_file_bytes: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        if not _is_number(self.timeout_s) or not 0 < self.timeout_s < math.inf:
            raise ConfigurationError(
                f"timeout_s must be a finite number > 0, got {self.timeout_s!r}."
            )
        for name in ("memory_bytes", "max_message_bytes", "max_file_bytes"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1024 * 1024:
                raise ConfigurationError(
                    f"{name} must be an int of at least 1 MiB (1048576), got {value!r}."
                )
        if not _is_int(self.max_utility_calls) or self.max_utility_calls < 0:
            raise ConfigurationError(
                f"max_utility_calls must be an int >= 0, got {self.max_utility_calls!r}."
            )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclasses.dataclass
class SandboxRun:
    """A finished sandboxed run (of an improver, or of :func:`trace_optuna.sandbox.run`).

    Attributes:
        solution: What the function returned (any JSON value; the caller validates it).
        llm_calls: LLM calls served.
        utility_calls: Utility calls served.
        elapsed_s: Seconds the child ran on its own (what the timeout counts).
        output: The tail of what the code printed.
        layers: The isolation layers that were active (see :data:`LAYERS`).
        missing: ``{layer: why}`` for the layers that could not be set up (only with
            ``isolation="none"``: a required run refuses to start without them).
    """

    solution: Any
    llm_calls: int
    utility_calls: int
    elapsed_s: float
    output: str
    layers: list[str] = dataclasses.field(default_factory=list)
    missing: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def value(self) -> Any:
        """What the function returned (the same as ``solution``)."""
        return self.solution


ImproverRun = SandboxRun


LLMHandler = Callable[[list[dict[str, str]], "float | None"], str]
UtilityHandler = Callable[[Any], float]


# The child's program, after the isolation code (_isolate.py, prepended to it): it sets up the
# layers, says which are active, and only then reads the untrusted source. It keeps the protocol
# on private copies of fds 0 and 1 and points the real ones at /dev/null and stderr, so nothing
# the sandboxed code reads or prints can corrupt it.
_RUNNER = r"""
import json, traceback

proto_in = os.fdopen(os.dup(0), "rb")
proto_out = os.fdopen(os.dup(1), "wb")
null = os.open(os.devnull, os.O_RDONLY)
os.dup2(null, 0)
os.close(null)
os.dup2(2, 1)
sys.stdout = sys.stderr


def send(message):
    proto_out.write(json.dumps(message).encode("utf-8") + b"\n")
    proto_out.flush()


def receive():
    line = proto_in.readline()
    if not line:
        os._exit(3)
    return json.loads(line.decode("utf-8"))


def llm(prompt, temperature=None):
    send({"type": "llm", "prompt": prompt, "temperature": temperature})
    reply = receive()
    if reply["type"] == "error":
        raise RuntimeError(reply["message"])
    return reply["text"]


def utility(solution):
    send({"type": "utility", "solution": solution})
    reply = receive()
    if reply["type"] == "error":
        raise ValueError(reply["message"])
    return reply["value"]


active, missing = setup(sys.argv[1], [name for name in sys.argv[2].split(",") if name])
send({"type": "ready", "layers": active, "missing": missing})
start = receive()
CAPABILITIES = {"llm": llm, "utility": utility}
try:
    namespace = {"__name__": "sandboxed", "llm": llm, "utility": utility}
    exec(compile(start["source"], "<sandboxed>", "exec"), namespace)
    function = namespace.get(start["function"])
    if not callable(function):
        raise TypeError(f"the source defines no function {start['function']}(...)")
    args = [CAPABILITIES[arg[0]] if arg[0] in CAPABILITIES else arg[1] for arg in start["args"]]
    result = function(*args)
except BaseException as error:
    send({
        "type": "failed",
        "error": f"{type(error).__name__}: {error}"[:2000],
        "traceback": traceback.format_exc()[-4000:],
        "memory": isinstance(error, MemoryError),
    })
else:
    try:
        done = json.dumps({"type": "done", "solution": result}, allow_nan=False)
    except (TypeError, ValueError) as error:
        send({"type": "failed", "error": f"{start['function']}() returned "
              f"{type(result).__name__}, which is not JSON: {error}"[:2000], "result": True})
    else:
        proto_out.write(done.encode("utf-8") + b"\n")
        proto_out.flush()
"""


def run_improver(
    source: str,
    solution: Any,
    feedback: str,
    budget: int,
    *,
    llm: LLMHandler,
    utility: UtilityHandler,
    limits: SandboxLimits | None = None,
    isolation: str = REQUIRED,
) -> ImproverRun:
    """Run ``improve(solution, feedback, utility, llm, budget)`` from ``source`` in a sandbox.

    Args:
        source: Python source defining ``improve``.
        solution: The solution to improve (a JSON value).
        feedback: Text passed as ``feedback``.
        budget: LLM calls the improver may make; the next one kills it.
        llm: Serves the improver's LLM calls in this process: ``llm(messages, temperature)``
            with chat messages (a str prompt arrives as one user message). Raise
            :class:`Rejected` to refuse a call.
        utility: Serves utility calls in this process: ``utility(solution) -> float``, higher
            is better. Raise :class:`Rejected` to refuse a solution.
        limits: Timeout, memory and call limits.
        isolation: ``"required"``: every layer of :data:`LAYERS` must be set up, else
            :class:`IsolationUnavailable` is raised before the source is sent; ``"none"``:
            the layers this machine supports are used, the run goes on without the others.

    Returns:
        The run, once ``improve`` returned a JSON value; ``layers`` says which were active.

    Raises:
        ConfigurationError: If ``budget`` is not an int >= 0 or ``isolation`` is unknown.
        IsolationUnavailable: If ``isolation="required"`` and a layer could not be set up.
        ImproverFailed: If the improver raised, broke a limit or the protocol.
        Exception: Whatever ``llm`` or ``utility`` raised other than :class:`Rejected`.

    Example:
        >>> run = run_improver(
        ...     "def improve(solution, feedback, utility, llm, budget):\\n"
        ...     "    return solution + 1 if utility(solution + 1) > 0 else solution\\n",
        ...     1, "", 0, llm=lambda messages, temperature: "", utility=float,
        ... )
        >>> run.solution, run.utility_calls
        (2, 1)
    """
    if not _is_int(budget) or budget < 0:
        raise ConfigurationError(f"budget must be an int >= 0, got {budget!r}.")
    arguments = [["value", solution], ["value", feedback], ["utility"], ["llm"], ["value", budget]]
    return run_sandboxed(
        source,
        "improve",
        arguments,
        budget=budget,
        llm=llm,
        utility=utility,
        limits=limits,
        isolation=isolation,
    )


def run_sandboxed(
    source: str,
    function: str,
    arguments: list[list[Any]],
    *,
    budget: int,
    llm: LLMHandler,
    utility: UtilityHandler,
    limits: SandboxLimits | None = None,
    isolation: str = REQUIRED,
) -> SandboxRun:
    """Run ``function(*arguments)`` from ``source`` in an isolated child (see the module docs).

    ``arguments`` are ``["value", json value]``, ``["llm"]`` or ``["utility"]`` (the proxies);
    the source also sees ``llm`` and ``utility`` as globals. The public face is
    :func:`trace_optuna.sandbox.run`.
    """
    check_isolation_option(isolation)
    limits = limits or SandboxLimits()
    disabled = disabled_layers()
    with tempfile.TemporaryDirectory(prefix="trace-optuna-improver-") as workdir:
        output_path = os.path.join(workdir, ".output")
        with open(output_path, "wb") as output_file:
            process = subprocess.Popen(
                [_interpreter(), "-I", "-c", _child_program(), workdir, ",".join(disabled)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=output_file,
                cwd=workdir,
                env={},  # nothing inherited: no credentials, no database URLs
                close_fds=True,
                start_new_session=True,
                preexec_fn=functools.partial(_apply_limits, limits),
            )
        session = _Session(process, limits, budget, llm, utility, output_path)
        try:
            session.layers = session.ready(isolation)
            return session.run(source, function, arguments)
        finally:
            session.close()


# -- isolation: what this machine supports, the option, the refusal ---------------------------


def check_isolation_option(isolation: Any, name: str = "isolation") -> str:
    """``isolation`` if it is ``"required"`` or ``"none"``.

    Raises:
        ConfigurationError: Naming ``name`` and the choices.
    """
    if not isinstance(isolation, str) or isolation not in ISOLATION_CHOICES:
        raise ConfigurationError(
            f"{name} must be one of {list(ISOLATION_CHOICES)}, got {isolation!r}: 'required' "
            "refuses to run LLM-written code unless every isolation layer can be set up; "
            "'none' opts out (the layers this machine supports are still used)."
        )
    return isolation


def disabled_layers() -> list[str]:
    """The layers named in ``TRACE_OPTUNA_SANDBOX_DISABLE`` (comma-separated; ``all``).

    Raises:
        ConfigurationError: On a name that is not a layer.
    """
    text = os.environ.get(DISABLE_ENV, "")
    names = [name.strip() for name in text.split(",") if name.strip()]
    if names == ["all"]:
        return list(LAYERS)
    unknown = [name for name in names if name not in LAYERS]
    if unknown:
        raise ConfigurationError(
            f"{DISABLE_ENV} names unknown layers {unknown}; the layers are {list(LAYERS)} "
            "(or 'all')."
        )
    return [layer for layer in LAYERS if layer in names]


@functools.lru_cache(maxsize=8)
def _probe(disabled: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    def no_call(*args: Any) -> Any:
        raise Rejected("the probe serves nothing")

    try:
        run = run_sandboxed(
            "def probe():\n    return None\n",
            "probe",
            [],
            budget=0,
            llm=no_call,
            utility=no_call,
            limits=SandboxLimits(timeout_s=30.0),
            isolation=NONE,
        )
    except ImproverFailed as error:
        reason = f"the probe process failed: {error}"
        return (), tuple((layer, reason) for layer in LAYERS)
    return tuple(run.layers), tuple(sorted(run.missing.items()))


def supported_layers() -> dict[str, str | None]:
    """Which isolation layers a sandboxed child can set up on this machine, now.

    A child is started and sets up every layer, as a real run does (the answer is cached per
    process and per ``TRACE_OPTUNA_SANDBOX_DISABLE``).

    Returns:
        ``{layer: None if it works, else why not}``, in the order of :data:`LAYERS`.
    """
    active, missing = _probe(tuple(disabled_layers()))
    reasons = dict(missing)
    return {layer: None if layer in active else reasons.get(layer, "unknown") for layer in LAYERS}


def require_isolation(isolation: str, what: str = "The stop strategy") -> list[str]:
    """Refuse, when ``isolation="required"``, a machine that cannot set up every layer.

    Called where a study or worker starts with a strategy that runs LLM-written code, so the
    refusal comes once, before any trial.

    Returns:
        The layers this machine supports.

    Raises:
        IsolationUnavailable: Saying what is missing, how to enable it, and how to opt out.
    """
    check_isolation_option(isolation)
    layers = supported_layers()
    missing = {layer: why for layer, why in layers.items() if why is not None}
    if missing and isolation == REQUIRED:
        raise IsolationUnavailable(_refusal(what, missing))
    return [layer for layer, why in layers.items() if why is None]


def isolation_for(strategies: Mapping[str, Any], isolation: str) -> list[str] | None:
    """The layers this machine supports, when a strategy is ``sandboxed``; None when none is.

    Raises:
        IsolationUnavailable: As :func:`require_isolation`, naming the first such strategy.
    """
    names = [name for name, strategy in strategies.items() if strategy.sandboxed]
    if not names:
        return None
    return require_isolation(isolation, f"Strategy {names[0]!r}")


def _refusal(what: str, missing: dict[str, str]) -> str:
    lines = [
        f"{what} runs LLM-written code in an isolated child process, but this machine cannot "
        "set up these isolation layers:"
    ]
    for layer, why in missing.items():
        lines.append(f"  {layer}: {why}. {HOW_TO_ENABLE[layer]}")
    lines.append(
        "`trace-optuna doctor` shows what this machine supports. To run without them anyway, "
        "opt out explicitly with stop_isolation='none' (recorded in the study and in every "
        "STOP trial); then run the workers in a container or as an unprivileged user."
    )
    return "\n".join(lines)


def _interpreter() -> str:
    """The base interpreter: a venv's site-packages are not the sandbox's business."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


@functools.lru_cache(maxsize=1)
def _child_program() -> str:
    isolate = importlib.resources.files("trace_optuna.strategies").joinpath("_isolate.py")
    return isolate.read_text(encoding="utf-8") + "\n" + _RUNNER


def _apply_limits(limits: SandboxLimits) -> None:
    """In the child, before it runs Python: cap memory, CPU, file size and core dumps."""
    cpu = max(1, math.ceil(limits.timeout_s) + 1)  # a backstop; the parent's clock is first
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.max_file_bytes, limits.max_file_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


class _Timeout(Exception):
    pass


class _Session:
    """The parent's side of one run: the clock, the meters and the two pipes."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        limits: SandboxLimits,
        budget: int,
        llm: LLMHandler,
        utility: UtilityHandler,
        output_path: str,
    ) -> None:
        self.process = process
        self.limits = limits
        self.budget = budget
        self.llm = llm
        self.utility = utility
        self.output_path = output_path
        self.llm_calls = 0
        self.utility_calls = 0
        self.elapsed = 0.0  # seconds the child ran on its own
        self.layers: list[str] = []
        self.missing: dict[str, str] = {}
        self.buffer = bytearray()
        assert process.stdin is not None and process.stdout is not None
        self.stdin_fd = process.stdin.fileno()
        self.stdout_fd = process.stdout.fileno()
        os.set_blocking(self.stdin_fd, False)
        os.set_blocking(self.stdout_fd, False)

    # -- the conversation -------------------------------------------------------------------

    def ready(self, isolation: str) -> list[str]:
        """The child's report of its isolation layers; refuse it if a required one is missing."""
        message = self.receive()
        layers, missing = message.get("layers"), message.get("missing")
        if (
            message.get("type") != "ready"
            or not isinstance(layers, list)
            or not isinstance(missing, dict)
        ):
            raise self.failure("protocol", "the child did not report its isolation layers")
        self.missing = {str(layer): str(why) for layer, why in missing.items()}
        if isolation == REQUIRED and (self.missing or set(layers) != set(LAYERS)):
            self.kill()
            absent = self.missing or {
                layer: "not reported" for layer in LAYERS if layer not in layers
            }
            raise IsolationUnavailable(_refusal("This sandboxed run", absent))
        return [layer for layer in LAYERS if layer in layers]

    def run(self, source: str, function: str, arguments: list[list[Any]]) -> SandboxRun:
        self.send({"type": "start", "source": source, "function": function, "args": arguments})
        while True:
            message = self.receive()
            kind = message.get("type")
            if kind == "llm":
                self.serve_llm(message)
            elif kind == "utility":
                self.serve_utility(message)
            elif kind == "done":
                if "solution" not in message:
                    raise self.failure("protocol", "the done message holds no solution")
                return SandboxRun(
                    solution=message["solution"],
                    llm_calls=self.llm_calls,
                    utility_calls=self.utility_calls,
                    elapsed_s=round(self.elapsed, 6),
                    output=self.output_tail(),
                    layers=self.layers,
                    missing=self.missing,
                )
            elif kind == "failed":
                error = str(message.get("error", "unknown error"))
                traceback_text = str(message.get("traceback", ""))
                if message.get("memory") is True:
                    raise self.failure(
                        "memory",
                        f"it ran out of its memory limit of "
                        f"{self.limits.memory_bytes // (1024 * 1024)} MiB ({error})",
                        traceback_text,
                    )
                if message.get("result") is True:
                    raise self.failure("result", error)
                raise self.failure("error", f"it raised {error}", traceback_text)
            else:
                raise self.failure("protocol", f"unknown message type {kind!r}")

    def serve_llm(self, message: dict[str, Any]) -> None:
        if self.llm_calls >= self.budget:
            raise self.failure(
                "budget",
                f"it asked for LLM call {self.llm_calls + 1} with a budget of {self.budget} "
                "and was stopped",
            )
        self.llm_calls += 1
        try:
            messages = _messages(message.get("prompt"))
            temperature = _temperature(message.get("temperature"))
            text = self.llm(messages, temperature)
        except Rejected as error:
            self.send({"type": "error", "message": str(error)})
            return
        except TraceOptunaError as error:  # the model failed: the improver may carry on
            self.send({"type": "error", "message": f"{type(error).__name__}: {error}"})
            return
        self.send({"type": "llm", "text": text})

    def serve_utility(self, message: dict[str, Any]) -> None:
        if self.utility_calls >= self.limits.max_utility_calls:
            raise self.failure(
                "utility_budget",
                f"it asked for utility call {self.utility_calls + 1} with a limit of "
                f"{self.limits.max_utility_calls} and was stopped",
            )
        self.utility_calls += 1
        try:
            value = float(self.utility(message.get("solution")))
        except Rejected as error:
            self.send({"type": "error", "message": str(error)})
            return
        self.send({"type": "utility", "value": value})

    # -- pipes and clock --------------------------------------------------------------------

    def remaining(self) -> float:
        return self.limits.timeout_s - self.elapsed

    def send(self, message: dict[str, Any]) -> None:
        data = memoryview(json.dumps(message).encode("utf-8") + b"\n")
        with selectors.DefaultSelector() as selector:
            selector.register(self.stdin_fd, selectors.EVENT_WRITE)
            while data:
                started = time.monotonic()
                ready = selector.select(max(self.remaining(), 0.0))
                self.elapsed += time.monotonic() - started
                if not ready:
                    raise self.timeout()
                try:
                    written = os.write(self.stdin_fd, data)
                except BrokenPipeError:
                    raise self.died() from None
                data = data[written:]

    def receive(self) -> dict[str, Any]:
        with selectors.DefaultSelector() as selector:
            selector.register(self.stdout_fd, selectors.EVENT_READ)
            while b"\n" not in self.buffer:
                if len(self.buffer) > self.limits.max_message_bytes:
                    raise self.failure(
                        "protocol",
                        f"it sent a message longer than {self.limits.max_message_bytes} bytes",
                    )
                started = time.monotonic()
                ready = selector.select(max(self.remaining(), 0.0))
                self.elapsed += time.monotonic() - started
                if not ready:
                    raise self.timeout()
                chunk = os.read(self.stdout_fd, _READ_CHUNK)
                if not chunk:
                    raise self.died()
                self.buffer += chunk
        end = self.buffer.index(b"\n")
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 1]
        if len(line) > self.limits.max_message_bytes:
            raise self.failure(
                "protocol", f"it sent a message longer than {self.limits.max_message_bytes} bytes"
            )
        try:
            message = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise self.failure("protocol", f"it sent a line that is not JSON: {error}") from None
        if not isinstance(message, dict):
            raise self.failure("protocol", "it sent a JSON line that is not an object")
        return message

    # -- endings ----------------------------------------------------------------------------

    def failure(self, kind: str, message: str, details: str = "") -> ImproverFailed:
        self.kill()
        if not details:
            details = self.output_tail()
        return ImproverFailed(
            kind,
            message,
            details=details,
            llm_calls=self.llm_calls,
            utility_calls=self.utility_calls,
            layers=self.layers,
        )

    def timeout(self) -> ImproverFailed:
        return self.failure(
            "timeout",
            f"it ran longer than {self.limits.timeout_s:g} s (wall clock, not counting the "
            "LLM and utility calls served to it) and was killed",
        )

    def died(self) -> ImproverFailed:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        if code is not None and code < 0:
            try:
                how = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
            if -code == signal.SIGXCPU:
                return self.failure("timeout", f"it used up its CPU time and {how}")
        else:
            how = f"exited with code {code}"
        return self.failure("crashed", f"the improver process {how} before it finished")

    def kill(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.process.kill()

    def close(self) -> None:
        self.kill()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        self.process.wait()

    def output_tail(self) -> str:
        try:
            with open(self.output_path, "rb") as output:
                output.seek(0, os.SEEK_END)
                output.seek(max(0, output.tell() - _STDERR_TAIL_BYTES))
                return output.read().decode("utf-8", errors="replace")
        except OSError:
            return ""


def _messages(prompt: Any) -> list[dict[str, str]]:
    """The chat messages of an improver's prompt: a str, or a list of role/content dicts."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list) and prompt:
        messages = []
        for message in prompt:
            if not (
                isinstance(message, dict)
                and message.get("role") in ("system", "user", "assistant")
                and isinstance(message.get("content"), str)
            ):
                raise Rejected(
                    "each chat message must be {'role': 'system'|'user'|'assistant', "
                    "'content': str}"
                )
            messages.append({"role": message["role"], "content": message["content"]})
        return messages
    raise Rejected("the prompt must be a str or a non-empty list of chat messages")


def _temperature(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 2:
        raise Rejected(f"temperature must be None or a number in [0, 2], got {value!r}")
    return float(value)
