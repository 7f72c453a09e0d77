"""The improver sandbox: a real child process, real limits, the parent serving LLM and utility."""

from __future__ import annotations

import json
import os
from pathlib import Path
import time
from typing import Any

import pytest

from trace_optuna.exceptions import ConfigurationError
from trace_optuna.exceptions import LLMError
from trace_optuna.strategies.sandbox import DISABLE_ENV
from trace_optuna.strategies.sandbox import ImproverFailed
from trace_optuna.strategies.sandbox import Rejected
from trace_optuna.strategies.sandbox import SandboxLimits
from trace_optuna.strategies.sandbox import run_improver

HEADER = "def improve(solution, feedback, utility, llm, budget):\n"
LIMITS = SandboxLimits(timeout_s=2.0, memory_bytes=256 * 1024 * 1024, max_utility_calls=4)


class Parent:
    """The parent's side: an echoing model and a utility that scores ``solution["n"]``."""

    def __init__(self) -> None:
        self.prompts: list[list[dict[str, str]]] = []
        self.temperatures: list[float | None] = []
        self.scored: list[Any] = []

    def llm(self, messages: list[dict[str, str]], temperature: float | None) -> str:
        self.prompts.append(messages)
        self.temperatures.append(temperature)
        return json.dumps({"n": len(self.prompts) * 10})

    def utility(self, solution: Any) -> float:
        if not isinstance(solution, dict) or "n" not in solution:
            raise Rejected("a solution is a dict with 'n'")
        self.scored.append(solution)
        return float(solution["n"])


def run(
    body: str,
    budget: int = 2,
    limits: SandboxLimits = LIMITS,
    parent: Parent | None = None,
    isolation: str = "required",
):
    parent = parent or Parent()
    return run_improver(
        HEADER + body,
        {"n": 1},
        "make n larger",
        budget,
        llm=parent.llm,
        utility=parent.utility,
        limits=limits,
        isolation=isolation,
    )


def failure(body: str, **kwargs: Any) -> ImproverFailed:
    with pytest.raises(ImproverFailed) as caught:
        run(body, **kwargs)
    return caught.value


@pytest.mark.slow  # 13 s here
def test_a_well_behaved_improver_talks_to_the_parent_only_through_llm_and_utility() -> None:
    parent = Parent()
    body = (
        "    import json\n"
        "    print('thinking out loud')  # printed output must not break the protocol\n"
        "    best, best_score = solution, utility(solution)\n"
        "    for _ in range(budget):\n"
        "        candidate = json.loads(llm([{'role': 'user', 'content': feedback}], 0.5))\n"
        "        score = utility(candidate)\n"
        "        if score > best_score:\n"
        "            best, best_score = candidate, score\n"
        "    return best\n"
    )
    result = run(body, budget=2, parent=parent)
    assert result.solution == {"n": 20}
    assert (result.llm_calls, result.utility_calls) == (2, 3) == (2, len(parent.scored))
    assert parent.prompts[0] == [{"role": "user", "content": "make n larger"}]
    assert parent.temperatures == [0.5, 0.5]
    assert "thinking out loud" in result.output
    assert 0 < result.elapsed_s < LIMITS.timeout_s


def test_a_str_prompt_becomes_one_user_message() -> None:
    parent = Parent()
    run("    llm('hello')\n    return solution\n", parent=parent)
    assert parent.prompts == [[{"role": "user", "content": "hello"}]]
    assert parent.temperatures == [None]


def test_exceeding_the_llm_budget_kills_the_improver() -> None:
    error = failure("    return [llm('again') for _ in range(budget + 1)]\n", budget=3)
    assert error.kind == "budget" and error.llm_calls == 3
    assert "LLM call 4 with a budget of 3" in str(error)


def test_catching_the_refusal_does_not_buy_more_calls() -> None:
    body = (
        "    for _ in range(budget + 5):\n"
        "        try:\n"
        "            llm('again')\n"
        "        except BaseException:\n"
        "            pass\n"
        "    return solution\n"
    )
    assert failure(body, budget=1).kind == "budget"


def test_exceeding_the_utility_limit_kills_the_improver() -> None:
    error = failure("    while True:\n        utility(solution)\n")
    assert error.kind == "utility_budget" and error.utility_calls == LIMITS.max_utility_calls


def test_an_infinite_loop_is_killed_at_the_timeout() -> None:
    limits = SandboxLimits(timeout_s=0.5)
    started = time.monotonic()
    error = failure("    while True:\n        pass\n", limits=limits)
    assert error.kind == "timeout"
    assert time.monotonic() - started < 5


def test_time_spent_serving_the_improver_does_not_count() -> None:
    class SlowModel(Parent):
        def llm(self, messages: list[dict[str, str]], temperature: float | None) -> str:
            time.sleep(0.4)  # a slow model, not synchronisation
            return super().llm(messages, temperature)

    limits = SandboxLimits(timeout_s=0.5)
    result = run("    return [llm('x') for _ in range(budget)]\n", 3, limits, SlowModel())
    assert result.llm_calls == 3 and result.elapsed_s < 0.5


def test_grandchildren_are_killed_with_the_improver(monkeypatch: pytest.MonkeyPatch) -> None:
    # Isolated, the improver cannot start a process at all (tests/test_sandbox.py); without
    # the seccomp layer it can, and the timeout still kills what it started.
    monkeypatch.setenv(DISABLE_ENV, "seccomp")
    body = (
        "    import subprocess, sys\n"
        "    child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "    print('grandchild', child.pid, flush=True)\n"
        "    while True:\n"
        "        pass\n"
    )
    error = failure(body, limits=SandboxLimits(timeout_s=1.0), isolation="none")
    assert error.kind == "timeout" and "seccomp" not in error.layers
    pid = int(error.details.split("grandchild", 1)[1].split()[0])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)  # waiting for the kernel to deliver SIGKILL, bounded
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status  # a zombie is dead, only not yet reaped


def test_the_improver_sees_no_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-parent-secret")
    monkeypatch.setenv("DATABASE_URL", "postgresql://user:pw@db/prod")
    error = failure("    import os\n    print(os.environ['OPENAI_API_KEY'])\n")
    assert error.kind == "error" and "KeyError: 'OPENAI_API_KEY'" in str(error)
    leaked = run("    import os\n    return dict(os.environ)\n").solution
    assert "OPENAI_API_KEY" not in leaked and "DATABASE_URL" not in leaked
    assert "sk-parent-secret" not in json.dumps(leaked)


def test_the_improver_runs_in_a_fresh_temporary_directory() -> None:
    workdir = run("    import os\n    return os.getcwd()\n").solution
    assert workdir != os.getcwd() and "trace-optuna-improver-" in workdir
    assert not os.path.exists(workdir)  # removed afterwards


def test_a_memory_bomb_hits_the_memory_limit() -> None:
    error = failure("    hog = bytearray(2 * 1024 ** 3)\n    return solution\n")
    assert error.kind == "memory" and "256 MiB" in str(error)


@pytest.mark.parametrize(
    "source, expected",
    [
        (HEADER + "    return (\n", "SyntaxError"),
        (HEADER + "    raise ValueError('no idea')\n", "ValueError: no idea"),
        ("def improve(solution):\n    return solution\n", "TypeError"),
        ("x = 1\n", "defines no function improve"),
        (HEADER + "    import sys\n    sys.exit(0)\n", "SystemExit"),
    ],
)
def test_an_improver_that_raises_fails_with_its_traceback(source: str, expected: str) -> None:
    parent = Parent()
    with pytest.raises(ImproverFailed) as caught:
        run_improver(
            source, {"n": 1}, "", 1, llm=parent.llm, utility=parent.utility, limits=LIMITS
        )
    assert caught.value.kind == "error" and expected in str(caught.value)
    assert "Traceback" in caught.value.details


def test_a_result_that_is_not_json_is_a_failure() -> None:
    error = failure("    return {1, 2}\n")
    assert error.kind == "result" and "set" in str(error)


def test_a_process_that_dies_is_a_failure() -> None:
    assert failure("    import os\n    os._exit(0)\n").kind == "crashed"
    error = failure("    import os, signal\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    assert error.kind == "crashed" and "SIGKILL" in str(error)


def test_refused_requests_reach_the_improver_as_exceptions() -> None:
    body = (
        "    seen = []\n"
        "    for bad in ('not a dict', {'m': 1}):\n"
        "        try:\n"
        "            utility(bad)\n"
        "        except ValueError as error:\n"
        "            seen.append(str(error))\n"
        "    try:\n"
        "        llm(42)\n"
        "    except RuntimeError as error:\n"
        "        seen.append(str(error))\n"
        "    return seen\n"
    )
    seen = run(body).solution
    assert seen[:2] == ["a solution is a dict with 'n'"] * 2
    assert "prompt must be a str" in seen[2]


def test_a_failing_model_is_an_error_the_improver_may_handle() -> None:
    def broken_model(messages: list[dict[str, str]], temperature: float | None) -> str:
        raise LLMError("rate limited")

    body = "    try:\n        return llm('x')\n    except RuntimeError as error:\n"
    body += "        return str(error)\n"
    result = run_improver(HEADER + body, {}, "", 1, llm=broken_model, utility=float, limits=LIMITS)
    assert result.solution == "LLMError: rate limited" and result.llm_calls == 1


def test_a_failure_of_the_parent_propagates_and_the_child_is_killed() -> None:
    def crashing_utility(solution: Any) -> float:
        raise RuntimeError("the grader crashed")

    with pytest.raises(RuntimeError, match="the grader crashed"):
        run_improver(
            HEADER + "    return utility(solution)\n",
            {},
            "",
            0,
            llm=Parent().llm,
            utility=crashing_utility,
            limits=LIMITS,
        )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"timeout_s": 0},
        {"timeout_s": float("inf")},  # the CPU backstop would overflow
        {"timeout_s": True},
        {"memory_bytes": 10},
        {"max_utility_calls": -1},
        {"max_file_bytes": 1.5},
    ],
)
def test_limits_are_validated(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match=next(iter(kwargs))):
        SandboxLimits(**kwargs)


@pytest.mark.parametrize("budget", [-1, 1.5, True, "2"])
def test_the_budget_is_validated_before_anything_runs(budget: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"budget must be an int >= 0"):
        run_improver(HEADER + "    return solution\n", 1, "", budget, llm=_no_llm, utility=float)


def _no_llm(messages: Any, temperature: Any) -> str:
    raise AssertionError("never called")
