"""Hybrid search, offline: Trace tunes the agent's prompt while Optuna's TPE tunes two knobs.

Each trial is one Trace step (the simulated model follows the grader's feedback to rewrite the
prompt, the length limit and the sign-off code) and, in the same trial, TPE samples the agent's
numeric knobs that ``evaluate`` asks for with ``trial.suggest_*``. The study is a plain
``optuna.create_study``: your own sampler, storage and callbacks.

    python examples/hybrid_knobs.py
    optuna-dashboard sqlite:///hybrid_knobs.db

It uses the simulated model (``simulated/feedback-follower``), a rule-following simulation for
demos and tests, not a language model; the knobs' effect on the score is simulated too.
"""

from __future__ import annotations

import optuna

import trace_optuna as to
from trace_optuna import demo

# The simulated effect of the knobs: a best temperature, and a retriever top-k that matters less.
BEST_TEMPERATURE = 0.3
BEST_TOP_K = 4


def evaluate(agent: demo.SupportAgent, trial: optuna.Trial) -> to.Evaluation:
    temperature = trial.suggest_float("agent.temperature", 0.0, 1.0)
    top_k = trial.suggest_int("retriever.top_k", 1, 10)
    graded = demo.evaluate(agent)  # the prompt's score and feedback, from the demo's grader
    knob_quality = 1.0 - abs(temperature - BEST_TEMPERATURE) - 0.01 * abs(top_k - BEST_TOP_K)
    return to.Evaluation(
        score=0.7 * graded.score + 0.3 * knob_quality,
        feedback=graded.feedback,
        output=graded.output,
        details={"prompt_score": graded.score, "knob_quality": round(knob_quality, 4)},
    )


def main() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage="sqlite:///hybrid_knobs.db",
        study_name="hybrid-knobs",
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5),
        load_if_exists=True,
    )
    objective = to.TraceObjective(demo.make_agent, evaluate, demo.DEMO_LLM, seed=0)
    study.optimize(objective, n_trials=30, catch=(to.TrialFailed,))

    best = study.best_trial
    print(f"best score {best.value:.3f} at trial {best.number}: {best.params}")
    print(f"prompt score of the best trial: {best.user_attrs['trace:details']['prompt_score']}")
    print("param importances (fANOVA):")
    importances = optuna.importance.get_param_importances(
        study,
        params=["agent.temperature", "retriever.top_k"],
        evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
    )
    for name, importance in importances.items():
        print(f"  {name:<20} {importance:.2f}")


if __name__ == "__main__":
    main()
