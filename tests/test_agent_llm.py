"""``agent_llm``: the agent's own model calls answered by the configured model, and recorded
per trial apart from the optimizer's; costs count both."""

from __future__ import annotations

from pathlib import Path

import opto.utils.llm as opto_llm
import optuna
import pytest
from support_agent_llm import QUERY
from support_agent_llm import SYSTEM_PROMPT
from support_agent_llm import HeldModelAgent
from support_agent_llm import SalesAgent
from support_agent_llm import evaluate_greeting
from support_agent_llm import evaluate_held

import trace_optuna as to
from trace_optuna import cli
from trace_optuna import visualization

SIMULATED = "simulated/feedback-follower"
TRACE_MODEL = opto_llm.LLM  # Trace's own backend class, as this process imported it
TRACE_CALL = opto_llm.AbstractModel.__call__


@pytest.fixture(autouse=True)
def trace_model_unusable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Trace's default model fails at once here: only the configured model can answer."""
    monkeypatch.setenv("TRACE_LITELLM_MODEL", "openai/gpt-4o-mini")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def test_the_agents_calls_are_recorded_per_trial_apart_from_the_optimizers(
    storage_url: str, study_name: str
) -> None:
    model = to.LLM(SIMULATED)  # one object for both: their calls still stay apart
    study = to.create_study(
        storage=storage_url,
        study_name=study_name,
        agent=SalesAgent,
        evaluate=evaluate_greeting,
        llm=model,
        agent_llm=model,
        seed=0,
    )
    study.optimize(n_trials=3)

    assert study.record(1).duplicate_of is None  # trial 1 ran its candidate
    baseline = study.record(0)
    assert baseline.state == "COMPLETE" and baseline.error is None
    assert baseline.llm["calls"] == 0  # the optimizer made none
    # Trace's greeting agent calls call_llm twice per run; the baseline runs it once.
    assert baseline.agent_llm["model"] == SIMULATED
    assert baseline.agent_llm["calls"] == 2
    assert baseline.agent_llm["prompt_tokens"] > 0 and baseline.agent_llm["cost_usd"] > 0
    assert [call["system"] for call in baseline.agent_llm_calls] == [SYSTEM_PROMPT] * 2
    assert baseline.agent_llm_calls[0]["user"] == f"Decide the language\n\n{QUERY}"
    assert baseline.agent_llm_calls[1]["user"] == f"Extract name if it's there\n\n{QUERY}"
    assert all(call["response"] for call in baseline.agent_llm_calls)

    for number in (1, 2):
        step = study.record(number)
        assert step.state == "COMPLETE" and step.error is None, step.error
        assert step.llm["calls"] >= 1
        if step.duplicate_of is None:  # a duplicate candidate is not run again: no calls
            assert step.agent_llm["calls"] >= 2
        assert len(step.llm_calls) == step.llm["calls"]
        assert len(step.agent_llm_calls) == step.agent_llm["calls"]
        assert all(call["system"] == SYSTEM_PROMPT for call in step.agent_llm_calls)
        assert all(SYSTEM_PROMPT not in call["system"] for call in step.llm_calls)
    assert model.take_calls() == []  # every call went to a trial's record
    # optuna-dashboard's note of the trial shows both.
    from optuna_dashboard import get_note

    note = str(get_note(optuna.Trial(study.optuna, study.trials[0]._trial_id)))
    assert "### The agent's LLM" in note and f"| `{SIMULATED}` | 2 |" in note
    # Outside evaluate, Trace's own model is back.
    assert opto_llm.LLM is TRACE_MODEL and opto_llm.AbstractModel.__call__ is TRACE_CALL


def test_a_model_the_agent_built_when_it_was_made_answers_with_agent_llm(
    storage_url: str, study_name: str
) -> None:
    study = to.create_study(
        storage=storage_url,
        study_name=study_name,
        agent=HeldModelAgent,
        evaluate=evaluate_held,
        llm=SIMULATED,
        agent_llm=SIMULATED,
        seed=0,
    )
    assert isinstance(study.objective.agent.llm, TRACE_MODEL)  # built before any run
    study.optimize(n_trials=2)
    for number in (0, 1):
        record = study.record(number)
        assert record.error is None, record.error
        assert record.agent_llm["calls"] >= 1
        assert record.agent_llm_calls[0] == {
            "system": "Greet the user." if number == 0 else record.agent_llm_calls[0]["system"],
            "user": QUERY,
            "response": record.agent_llm_calls[0]["response"],
        }
    assert study.record(0).llm["calls"] == 0 and study.record(1).llm["calls"] == 1


def test_without_agent_llm_the_agent_is_left_alone(sqlite_url: str, study_name: str) -> None:
    study = to.create_study(
        storage=sqlite_url,
        study_name=study_name,
        agent=SalesAgent,
        evaluate=evaluate_greeting,
        llm=SIMULATED,
    )
    study.optimize(n_trials=1)
    baseline = study.record(0)
    # Trace's own model (TRACE_LITELLM_MODEL, without a key here) answered: it failed.
    assert baseline.error is not None and "api_key" in baseline.error.lower()
    assert baseline.agent_llm == {} and baseline.agent_llm_calls == []


def test_cost_counts_the_agents_calls_too(
    storage_url: str, study_name: str, tmp_path: Path
) -> None:
    study = to.create_study(
        storage=storage_url,
        study_name=study_name,
        agent=SalesAgent,
        evaluate=evaluate_greeting,
        llm=SIMULATED,
        agent_llm=SIMULATED,
        seed=0,
    )
    study.optimize(n_trials=3)
    used = [study.record(t.number) for t in study.trials]
    tokens = sum(
        usage["prompt_tokens"] + usage["completion_tokens"]
        for record in used
        for usage in (record.llm, record.agent_llm)
    )
    agent_tokens = sum(
        record.agent_llm["prompt_tokens"] + record.agent_llm["completion_tokens"]
        for record in used
    )
    usd = sum(usage["cost_usd"] or 0.0 for r in used for usage in (r.llm, r.agent_llm))
    assert agent_tokens > 0 and tokens > agent_tokens

    figure = visualization.plot_cost(study)
    totals = {trace.meta: trace.y[-1] for trace in figure.data if trace.name == "total"}
    assert totals["cumulative tokens"] == tokens
    assert totals["cumulative usd"] == pytest.approx(usd)

    out = tmp_path / "report.html"
    argv = ["report", "--storage", storage_url, "--study", study_name, "--out", str(out)]
    assert cli.main(argv) == 0
    page = out.read_text(encoding="utf-8")
    assert f"<th>LLM tokens</th><td>{tokens:,}</td>" in page
    assert f"<th>LLM cost</th><td>{usd:.6g} USD</td>" in page
    assert f"<th>of which the agent&#x27;s LLM</th><td>{agent_tokens:,} tokens" in page

    # The bandit's reward per LLM call divides by both models' calls.
    bandit = to.samplers.StrategyBandit(seed=0, prior_reward=None, clip_negative=False)
    improvements = [r.improvement for r in used[1:]]
    per_call = [
        improvement / (r.llm["calls"] + r.agent_llm["calls"])
        for improvement, r in zip(improvements, used[1:], strict=True)
    ]
    statistics = bandit.arm_statistics(study.optuna)["optoprime"]
    assert statistics.pulls == pytest.approx(2.0, rel=0.1)
    assert statistics.mean_reward == pytest.approx((0.95 * per_call[0] + per_call[1]) / 1.95)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (5, r"agent_llm must be a litellm model string .* got 5"),
        ("", r"agent_llm must be a litellm model string"),
        ("simulated/nobody", r"agent_llm='simulated/nobody': Unknown simulated model"),
        ("nobody-knows-this-model", r"agent_llm='nobody-knows-this-model': LLM model .* names"),
    ],
)
def test_a_wrong_agent_llm_is_refused_before_anything_is_created(
    sqlite_url: str, study_name: str, value: object, message: str
) -> None:
    with pytest.raises(to.ConfigurationError, match=message):
        to.create_study(
            storage=sqlite_url,
            study_name=study_name,
            agent=SalesAgent,
            evaluate=evaluate_greeting,
            llm=SIMULATED,
            agent_llm=value,
        )
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()
