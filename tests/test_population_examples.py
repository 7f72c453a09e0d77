"""Per-example scores through the population view (issue 14): ``Population.example_scores``
and ``example_leaders``, and genetic's complementary second parent; on real SQLite files."""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
from typing import Any

import optuna
import pytest
import sqlalchemy
from test_datasets import CountingRun
from test_datasets import Scripted
from test_datasets import dataset_study

import trace_optuna as to
from trace_optuna import demo
from trace_optuna.coordination import shared_place
from trace_optuna.example_results import EXAMPLES_TABLE
from trace_optuna.population import Population
from trace_optuna.strategies import GeneticStrategy
from trace_optuna.strategies import Proposal

# From the baseline: trial 1 fixes the "order number" validation examples (2 of 6), trials 2
# and 3 (two texts, the same scores) the "tracking link" ones (4 of 6).
GREETINGS = ["Hello. order number", "Hello. tracking link", "Hi. tracking link"]


@contextlib.contextmanager
def example_reads(study: optuna.Study) -> Iterator[list[str]]:
    """The SQL statements on the per-example table while the block runs."""
    engine = shared_place(study._storage).engine
    assert engine is not None
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if EXAMPLES_TABLE in statement:
            statements.append(statement)

    sqlalchemy.event.listen(engine, "before_cursor_execute", seen)
    try:
        yield statements
    finally:
        sqlalchemy.event.remove(engine, "before_cursor_execute", seen)


def scripted_study(url: str, strategy: to.Strategy, n_trials: int) -> to.TraceStudy:
    study = dataset_study(url, CountingRun(), strategies=strategy, minibatch_size=10)
    study.optimize(n_trials=n_trials)
    return study


def test_example_scores_are_the_stored_rows_of_the_trials_candidate(sqlite_url: str) -> None:
    study = scripted_study(sqlite_url, Scripted(GREETINGS[:2], from_baseline=True), 3)
    population = Population(study.optuna)
    population.refresh()
    assert population.dataset
    for number in range(3):
        for split in ("val", "train"):
            rows = study.examples(trial=number, split=split)
            assert population.example_scores(number, split) == {
                row.example_id: row.score for row in rows
            }
    validation = population.example_scores(1)
    assert len(validation) == 6 and sum(validation.values()) == 2.0  # "order number" fixed
    assert {e for e, s in validation.items() if s == 1.0} == {
        e for e, s in population.example_scores(2).items() if s == 0.0
    }
    assert population.example_leaders() == {
        example_id: [1] if score == 1.0 else [2] for example_id, score in validation.items()
    }
    with pytest.raises(to.ConfigurationError, match="never read by a strategy"):
        population.example_scores(1, "test")


def test_rows_are_read_once_and_validated_candidates_rows_are_kept(sqlite_url: str) -> None:
    study = scripted_study(sqlite_url, Scripted(GREETINGS[:2], from_baseline=True), 3)
    population = Population(study.optuna)
    population.refresh()
    with example_reads(study.optuna) as reads:
        leaders = population.example_leaders()
        assert len(reads) == 1  # every candidate's rows in one query
        scores = [population.example_scores(number) for number in range(3)]
        assert len(reads) == 1  # cached
        population.refresh()
        assert population.example_leaders() == leaders
        assert [population.example_scores(number) for number in range(3)] == scores
        assert len(reads) == 1  # validated candidates' validation rows never change
        population.example_scores(1, "train")
        population.example_scores(1, "train")
        assert len(reads) == 2  # once until the next refresh
        population.refresh()
        population.example_scores(1, "train")
        assert len(reads) == 3  # training rows grow: read again after a refresh


def test_a_study_without_a_dataset_has_no_example_scores_and_reads_no_rows(
    sqlite_url: str,
) -> None:
    study = to.create_study(
        storage=sqlite_url,
        agent=demo.make_agent,
        evaluate=demo.evaluate,
        llm=demo.DEMO_LLM,
        seed=0,
        figure_interval=None,
    )
    study.optimize(n_trials=2)
    population = Population(study.optuna)
    population.refresh()
    with example_reads(study.optuna) as reads:
        assert not population.dataset
        assert population.example_scores(1) == {}
        assert population.example_leaders() == {}
    assert reads == []


class ScriptedThenGenetic(to.Strategy):
    """Trials 1 to 3 propose :data:`GREETINGS` from the baseline; then genetic crossovers of
    parents drawn from every candidate (tournaments as large as the population)."""

    name = "scripted_genetic"

    def __init__(self) -> None:
        self.scripted = Scripted(GREETINGS, from_baseline=True)
        self.genetic = GeneticStrategy(tournament_size=10, mutation_rate=0.0)

    def suggest_settings(self, trial: optuna.Trial) -> dict[str, Any]:
        return self.genetic.suggest_settings(trial)

    def propose(self, context: to.StepContext) -> Proposal:
        if context.trial.number <= len(GREETINGS):
            return self.scripted.propose(context)
        return self.genetic.propose(context)


def test_genetic_crosses_the_first_parent_with_the_candidate_leading_where_it_does_not(
    sqlite_url: str,
) -> None:
    study = scripted_study(sqlite_url, ScriptedThenGenetic(), 5)
    assert [t.value for t in study.trials[:4]] == [
        0.0,
        pytest.approx(1 / 3),
        pytest.approx(2 / 3),
        pytest.approx(2 / 3),
    ]
    # The first tournament draws trial 3 (the best, the newest of equal scores). A second
    # tournament would draw trial 2 (the best of the rest), which leads where 3 does; trial 1
    # leads on the two examples where 3 is not best, so it is the second parent.
    genetic = study.trials[4].user_attrs["trace:genetic"]
    assert genetic == {
        "parents": [3, 1],
        "selection": "complement",
        "complement_examples": 2,
        "mutated": False,
    }
    record = study.record(4)
    assert record.parents == [3, 1]
    prompt = record.llm_calls[0]["user"]
    assert prompt.startswith("#Crossover") and GREETINGS[0] in prompt and GREETINGS[2] in prompt


def test_genetic_draws_the_second_parent_by_tournament_when_the_first_leads_everywhere(
    sqlite_url: str,
) -> None:
    # Trials 1 to 3 all fix the "tracking link" examples only; the first parent (trial 3)
    # leads on every example any candidate leads on, so nothing complements it.
    greetings = ["Hello. tracking link", "Hey. tracking link", "Hi. tracking link"]

    class Same(ScriptedThenGenetic):
        def __init__(self) -> None:
            super().__init__()
            self.scripted = Scripted(greetings, from_baseline=True)

    study = scripted_study(sqlite_url, Same(), 5)
    genetic = study.trials[4].user_attrs["trace:genetic"]
    assert genetic["selection"] == "tournament" and genetic["parents"] == [3, 2]
