"""The quick start with a real model through litellm. Needs an API key; nothing else changes.

    export OPENAI_API_KEY=sk-...            # read by litellm; never stored by trace_optuna
    python examples/real_llm.py [--model openai/gpt-4o-mini] [--trials 10]

Any litellm model string works (``anthropic/claude-3-5-haiku-latest``, ``azure/<deployment>``,
``ollama/llama3`` with a local server...). Tokens and cost per trial are stored in
``trace:llm``; the prompts and raw responses in ``trace:llm_calls``.
"""

from __future__ import annotations

import argparse

from quickstart import SupportAgent
from quickstart import evaluate

import trace_optuna as to


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="openai/gpt-4o-mini")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--storage", default="sqlite:///real_llm.db")
    args = parser.parse_args()

    study = to.create_study(
        study_name=f"support-agent-{args.model.replace('/', '-')}",
        storage=args.storage,
        agent=SupportAgent,
        evaluate=evaluate,
        llm=to.LLM(args.model, temperature=0.7, max_tokens=2048, num_retries=3, timeout=120),
        load_if_exists=True,
    )
    study.optimize(n_trials=args.trials, show_progress_bar=True)
    best = study.record(study.best_trial.number)
    spent = sum((study.record(t.number).llm.get("cost_usd") or 0.0) for t in study.trials)
    print(f"best score {best.value:.2f} at trial {best.number}; spent ${spent:.4f}")
    print(best.snapshot)


if __name__ == "__main__":
    main()
