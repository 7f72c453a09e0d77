"""selector="llm": candidates are chosen by a pairwise LLM preference judge."""

from __future__ import annotations

import optuna
import pytest

import trace_optuna as to
from trace_optuna import demo
from trace_optuna.strategies import EvolutionaryStrategy
from trace_optuna.strategies import RunResult
from trace_optuna.strategies import Selector
from trace_optuna.strategies.judge import parse_winner


def unscored(agent: demo.SupportAgent) -> to.Evaluation:
    """The demo's grader, with its score hidden: only the feedback tells good from bad."""
    result = demo.evaluate(agent)
    return to.Evaluation(score=0.0, feedback=result.feedback, output=result.output)


def test_judge_picks_the_offspring_whose_feedback_is_better(
    sqlite_url: str, study_name: str
) -> None:
    study = to.create_study(
        study_name=study_name,
        storage=sqlite_url,
        agent=demo.make_agent,
        evaluate=unscored,
        llm=to.LLM(demo.DEMO_LLM, simulated_seed=0),
        strategies=[EvolutionaryStrategy(mu=1, offspring=3)],
        sampler=optuna.samplers.RandomSampler(seed=0),
        selector="llm",
        error_score=0.0,
    )
    study.optimize(n_trials=2)
    record = study.record(1)
    judged = [call for call in record.llm_calls if "#Compare" in call["user"]]
    offspring = len(record.evaluated)
    assert len(judged) == offspring - 1  # a knock-out: one comparison per challenger
    assert record.llm["calls"] == 3 + len(judged)  # three proposals, then the judge
    winner = study.optuna.trials[1].user_attrs["trace:evolutionary"]["winner"]
    assert record.feedback == record.evaluated[winner]["feedback"]


def test_code_errors_never_win_and_scores_decide_by_default() -> None:
    selector = Selector("score", llm=None)  # type: ignore[arg-type]
    broken = RunResult(score=None, feedback="boom", code_error="raised")
    low, high = RunResult(score=0.1, feedback="a"), RunResult(score=0.9, feedback="b")
    candidates = [({}, broken), ({}, low), ({}, high)]
    assert selector.select(candidates, lambda a, b: a > b) == 2
    assert selector.select(candidates, lambda a, b: a < b) == 1


def test_unknown_selector_and_unreadable_verdicts() -> None:
    with pytest.raises(to.ConfigurationError, match=r"selector must be one of \['score', 'llm'\]"):
        Selector("vote", llm=None)  # type: ignore[arg-type]
    assert parse_winner('Thinking... {"winner": "b"}') == "B"
    with pytest.raises(to.LLMError, match="names no winner"):
        parse_winner('{"winner": "both"}')
