"""Optuna's importance analysis sees the strategy and its settings as ordinary parameters."""

from __future__ import annotations

import optuna
import pytest

import trace_optuna as to
from trace_optuna import demo


@pytest.mark.slow  # 16 s here
@pytest.mark.filterwarnings("ignore::UserWarning")  # PED-ANOVA warns on small regimes
def test_importance_ranks_strategy_and_settings(sqlite_url: str, study_name: str) -> None:
    study = to.create_study(
        study_name=study_name,
        storage=sqlite_url,
        agent=demo.make_agent,
        evaluate=demo.evaluate,
        llm=to.LLM(demo.DEMO_LLM, simulated_seed=0, simulated_noise=0.2),
        strategies=["optoprime", "genetic", "evolutionary"],
        seed=0,
        error_score=0.0,
    )
    assert isinstance(study.optuna.sampler, to.samplers.StrategyBandit)
    study.optimize(n_trials=24)
    used = {trial.params.get("strategy") for trial in study.trials[1:]}
    assert used == {"optoprime", "genetic", "evolutionary"}  # every arm is tried

    importances = optuna.importance.get_param_importances(study.optuna)
    assert "strategy" in importances
    assert any(
        name.startswith(("genetic.", "evolutionary.", "optoprime.")) for name in importances
    )
    assert abs(sum(importances.values()) - 1.0) < 1e-6
    # Each step records its improvement, which is what the bandit is rewarded by.
    assert all(
        "trace:improvement" in trial.user_attrs
        for trial in study.trials[1:]
        if trial.state == optuna.trial.TrialState.COMPLETE
    )
