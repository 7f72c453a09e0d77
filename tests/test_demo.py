"""The demo agent and its grader, tuned by Trace's real OptoPrime and the simulated model."""

from __future__ import annotations

import json
import subprocess
import sys

from opto import trace
from opto.optimizers import OptoPrime
import pytest

from trace_optuna import demo
from trace_optuna.llm import LLM
from trace_optuna.testing import simulated


@pytest.fixture(autouse=True)
def _fresh_simulation() -> None:
    simulated.reset_simulated_model()


def optimize(agent: demo.SupportAgent, llm: LLM, max_steps: int) -> list[float]:
    """A plain greedy loop: evaluate, backward, step. Returns the scores seen."""
    optimizer = OptoPrime(agent.parameters(), llm=llm)
    scores = []
    for _ in range(max_steps + 1):
        result = demo.evaluate(agent)
        scores.append(result.score)
        if result.score == 1.0:
            break
        optimizer.zero_feedback()
        optimizer.backward(result.output, result.feedback)
        optimizer.step()
    return scores


def test_baseline_is_below_one_and_names_the_first_problem() -> None:
    result = demo.evaluate(demo.make_agent())
    assert 0.0 <= result.score < 1.0
    assert result.feedback == "The reply is cut off: max_words should be larger."
    assert result.details is not None and result.details["met"]["complete"] is False


def test_output_graph_reaches_all_three_parameters() -> None:
    agent = demo.make_agent()
    assert sorted(agent.parameters_dict()) == ["format_reply", "instructions", "max_words"]
    llm = LLM(demo.DEMO_LLM)
    optimizer = OptoPrime(agent.parameters(), llm=llm)
    result = demo.evaluate(agent)
    optimizer.zero_feedback()
    optimizer.backward(result.output, result.feedback)
    prompt = optimizer.construct_prompt(optimizer.summarize())[1]
    variables = prompt.split("#Variables", 1)[1].split("#Constraints", 1)[0]
    for parameter in agent.parameters():
        assert parameter.py_name in variables


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noise_free_simulated_model_reaches_a_perfect_score(seed: int) -> None:
    scores = optimize(demo.make_agent(), LLM(demo.DEMO_LLM, simulated_seed=seed), max_steps=15)
    assert scores[-1] == 1.0
    assert 5 <= len(scores) - 1 <= 15


def test_noisy_simulated_model_usually_gets_there_in_thirty_steps() -> None:
    finished = 0
    for seed in range(10):
        llm = LLM(demo.DEMO_LLM, simulated_noise=0.2, simulated_seed=seed)
        finished += optimize(demo.make_agent(), llm, max_steps=30)[-1] == 1.0
    assert finished >= 8


def test_perfect_agent_gets_feedback_that_stops_the_optimizer() -> None:
    agent = demo.make_agent()
    optimize(agent, LLM(demo.DEMO_LLM), max_steps=15)
    result = demo.evaluate(agent)
    assert (result.score, result.feedback) == (1.0, "The reply is perfect.")
    assert str(result.output.data).endswith(demo.SIGN_OFF)
    assert LLM(demo.DEMO_LLM).complete(_optoprime_messages(agent, result)) == "TERMINATE"


def _optoprime_messages(agent: demo.SupportAgent, result) -> list[dict[str, str]]:
    optimizer = OptoPrime(agent.parameters(), llm=LLM(demo.DEMO_LLM))
    optimizer.zero_feedback()
    optimizer.backward(result.output, result.feedback)
    system, user = optimizer.construct_prompt(optimizer.summarize())
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def test_broken_code_is_graded_zero_and_repaired() -> None:
    agent = demo.make_agent()
    code = agent.format_reply.parameter
    source = code._data.replace('"""\n', '"""\n        raise RuntimeError("simulated bug")\n', 1)
    code._set(source)
    result = demo.evaluate(agent)
    assert result.score == 0.0
    assert "RuntimeError" in result.feedback
    assert isinstance(result.output, trace.Node)
    optimizer = OptoPrime(agent.parameters(), llm=LLM(demo.DEMO_LLM))
    optimizer.zero_feedback()
    optimizer.backward(result.output, result.feedback)
    optimizer.step()
    assert "raise" not in code.data
    assert demo.evaluate(agent).feedback == "The reply is cut off: max_words should be larger."


_RUN = """
import json
from opto.optimizers import OptoPrime
from trace_optuna import demo
from trace_optuna.llm import LLM
agent = demo.make_agent()
llm = LLM(demo.DEMO_LLM, simulated_noise=0.2, simulated_seed=4)
optimizer = OptoPrime(agent.parameters(), llm=llm)
trajectory = []
for _ in range(12):
    result = demo.evaluate(agent)
    trajectory.append([result.score, agent.max_words._data, agent.instructions._data])
    optimizer.zero_feedback()
    optimizer.backward(result.output, result.feedback)
    optimizer.step()
print(json.dumps(trajectory))
"""


@pytest.mark.slow  # starts Python processes that import trace_optuna
def test_a_rerun_in_a_fresh_process_is_identical() -> None:
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", _RUN], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=120)[0] for run in runs]
    assert all(run.returncode == 0 for run in runs)
    trajectories = [json.loads(output.decode().strip().splitlines()[-1]) for output in outputs]
    assert trajectories[0] == trajectories[1]
    assert len({row[1] for row in trajectories[0]}) > 1  # it did move
