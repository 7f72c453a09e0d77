"""Multi-objective studies: ``Evaluation(score=[accuracy, cost])``, the Pareto front as parents.

The agent is the tests' Greeter: accuracy is the share of required phrases its reply mentions
(maximize), cost the reply's length (minimize). The simulated model adds the phrase the
feedback asks for, so each step trades cost for accuracy and the Pareto front grows.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial
from optuna.trial import TrialState
import pytest
from support_agents import REQUIRED
from support_agents import Greeter
from support_agents import make_greeter

import trace_optuna as to
from trace_optuna import dashboard
from trace_optuna import records
from trace_optuna import visualization
from trace_optuna.cli import main
from trace_optuna.population import Population
from trace_optuna.samplers import StrategyBandit
from trace_optuna.storage import resolve_storage

SIMULATED = "simulated/feedback-follower"
DIRECTIONS = ["maximize", "minimize"]

optuna.logging.set_verbosity(optuna.logging.WARNING)


class ParetoEvaluate:
    """``[accuracy, cost]`` of a Greeter's reply; feedback asks for the first missing phrase."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, agent: Greeter) -> to.Evaluation:
        self.calls += 1
        out = agent.reply()
        missing = [phrase for phrase in REQUIRED if phrase not in out.data.lower()]
        accuracy = (len(REQUIRED) - len(missing)) / len(REQUIRED)
        feedback = (
            f'The reply should mention "{missing[0]}". Add "{missing[0]}" to greeting.'
            if missing
            else "The reply is perfect."
        )
        return to.Evaluation(score=[accuracy, len(out.data)], feedback=feedback, output=out)


def make_study(storage_url: str, study_name: str, **kwargs: Any) -> to.TraceStudy:
    options: dict[str, Any] = dict(
        study_name=study_name,
        storage=storage_url,
        agent=make_greeter,
        evaluate=ParetoEvaluate(),
        llm=SIMULATED,
        directions=DIRECTIONS,
        load_if_exists=True,
        seed=0,
        figure_interval=None,
    )
    options.update(kwargs)
    return to.create_study(**options)


def dominates(a: list[float], b: list[float]) -> bool:
    """Pareto dominance for (maximize, minimize), written out independently of the library."""
    no_worse = a[0] >= b[0] and a[1] <= b[1]
    return no_worse and (a[0] > b[0] or a[1] < b[1])


def candidates_before(trials: list[FrozenTrial], number: int) -> list[FrozenTrial]:
    return [
        t
        for t in trials
        if t.number < number
        and t.state == TrialState.COMPLETE
        and records.DUPLICATE_OF not in t.user_attrs
    ]


def front_of(trials: list[FrozenTrial]) -> list[int]:
    return sorted(
        t.number for t in trials if not any(dominates(o.values, t.values) for o in trials)
    )


def expected_parent(trials: list[FrozenTrial], number: int) -> int:
    """The documented rule: the front member fewest completed trials started from; newest."""
    front = front_of(candidates_before(trials, number))
    completed = [t for t in trials if t.number < number and t.state == TrialState.COMPLETE]

    def children(member: int) -> int:
        return sum(member in (t.user_attrs.get(records.PARENTS) or []) for t in completed)

    return min(front, key=lambda member: (children(member), -member))


def test_a_multi_objective_study_runs_and_reads_back(storage_url: str, study_name: str) -> None:
    study = make_study(storage_url, study_name)
    study.optimize(n_trials=6)

    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    assert study.optuna.directions == [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]
    assert study.optuna.metric_names == ["score[0]", "score[1]"]
    for trial in trials:
        assert len(trial.values) == 2
        assert trial.user_attrs[records.SCORE] == trial.values
    # Accuracy went up at a price in length: the front holds more than one trade-off.
    assert max(t.values[0] for t in trials) == 1.0
    assert len(front_of(trials)) >= 2

    # Read back by a new process: records, the front, and no single best.
    reopened = to.load_study(
        study_name=study_name,
        storage=storage_url,
        agent=make_greeter,
        evaluate=ParetoEvaluate(),
        llm=SIMULATED,
        figure_interval=None,
    )
    assert [t.number for t in reopened.best_trials] == front_of(candidates_before(trials, 6))
    for trial in trials[1:]:
        record = reopened.record(trial.number)
        (parent,) = record.parents
        parent_values = trials[parent].values
        assert record.parent_score == parent_values
        assert record.improvement == pytest.approx(
            [trial.values[0] - parent_values[0], trial.values[1] - parent_values[1]]
        )
        assert record.snapshot["greeting"]
    for name in ("best_trial", "best_value", "best_snapshot"):
        with pytest.raises(to.ConfigurationError, match=r"2 objectives.*study\.best_trials"):
            getattr(reopened, name)
    reopened.optimize(n_trials=1)  # and it continues
    assert reopened.trials[-1].state == TrialState.COMPLETE


def test_greedy_steps_start_from_the_pareto_front_by_the_documented_rule(
    sqlite_url: str, study_name: str
) -> None:
    study = make_study(sqlite_url, study_name)
    study.optimize(n_trials=6)

    trials = study.trials
    for trial in trials[1:]:
        assert trial.params["strategy"] == "optoprime"
        assert trial.user_attrs[records.PARENTS] == [expected_parent(trials, trial.number)]
    # Some step started from an older front member with fewer children than the newest one,
    # so this scenario tells the rule from "the newest member of the front".
    assert any(
        trial.user_attrs[records.PARENTS][0]
        != max(front_of(candidates_before(trials, trial.number)))
        for trial in trials[1:]
    )


def _tell(
    study: optuna.Study, values: list[float], parents: list[int], duplicate: int | None = None
) -> int:
    """A finished trial carrying the record keys Population reads (snapshot, parents)."""
    trial = study.ask()
    trial.set_user_attr(records.SNAPSHOT, {})
    trial.set_user_attr(records.PARENTS, parents)
    if duplicate is not None:
        trial.set_user_attr(records.DUPLICATE_OF, duplicate)
    study.tell(trial, values)
    return trial.number


def test_population_pareto_front_parent_rule_and_ranking(sqlite_url: str) -> None:
    study = optuna.create_study(storage=sqlite_url, directions=DIRECTIONS)
    population = Population(study)
    history = [
        ([0.5, 5.0], []),  # 0
        ([0.8, 8.0], [0]),  # 1: a trade-off against 0
        ([0.4, 6.0], [0]),  # 2: dominated by 0
        ([0.9, 9.0], [1]),  # 3: a trade-off
        ([0.9, 9.5], [3]),  # 4: dominated by 3
        ([0.85, 8.5], [3]),  # 5: between 1 and 3, dominated by neither
    ]
    expected_best = [0, 1, 1, 3, 3, 5]  # fewest children, newest among ties
    for (values, parents), best in zip(history, expected_best, strict=True):
        _tell(study, values, parents)
        population.refresh()
        assert population.best() is not None and population.best().number == best
    assert [t.number for t in population.pareto_front()] == [0, 1, 3, 5]

    # Children: 0 has 2, 1 has 1, 3 has 2, 5 has 0 -> 5. Two more children of 5 -> 1 (an
    # older member with fewer children wins over the newest).
    _tell(study, [0.8, 9.0], [5])
    population.refresh()
    assert population.best().number == 5  # ties with 1 at one child: the newest
    _tell(study, [0.8, 9.0], [5])
    population.refresh()
    assert population.best().number == 1

    # A duplicate (reused score) and a failed trial are no candidates and never on the front.
    _tell(study, [1.0, 1.0], [0], duplicate=0)
    failed = study.ask()
    failed.set_user_attr(records.SNAPSHOT, {})
    study.tell(failed, state=TrialState.FAIL)
    population.refresh()
    assert [t.number for t in population.pareto_front()] == [0, 1, 3, 5]

    # Ranking by Pareto layer, the newest first within a layer.
    assert [t.number for t in population.top_k(4)] == [5, 3, 1, 0]
    # The second layer: 2, 4, 6 and 7 trade off against each other (6 and 7 are equal).
    assert [t.number for t in population.top_k(9)] == [5, 3, 1, 0, 7, 6, 4, 2]
    layered = population.top_k_of([study.trials[n] for n in (2, 4, 0)], 3)
    assert [t.number for t in layered] == [4, 0, 2]  # 4 and 0 trade off; 2 is dominated by 0
    assert population.better([0.9, 8.0], [0.8, 8.0])
    assert not population.better([0.9, 9.0], [0.8, 8.0])  # a trade-off: neither is better
    assert not population.better([0.8, 8.0], [0.8, 8.0])
    with pytest.raises(ValueError, match="one number per direction"):
        population.better([0.8], [0.8, 8.0])


def test_the_bandit_picks_strategies_in_a_multi_objective_study(
    sqlite_url: str, study_name: str
) -> None:
    strategies = ["optoprime", "genetic", "evolutionary"]
    study = make_study(sqlite_url, study_name, strategies=strategies)
    assert isinstance(study.optuna.sampler, StrategyBandit)
    study.optimize(n_trials=7)

    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 7
    picked = [t.params["strategy"] for t in trials[1:]]
    assert set(picked) <= set(strategies)
    bandit = study.optuna.sampler
    statistics = bandit.arm_statistics(study.optuna, strategies)
    # Every finished step is a pull with reward 0 or 1 / LLM calls: 1 when it improved some
    # objective over its parent.
    assert sum(s.pulls for s in statistics.values()) == 6
    for arm, stats in statistics.items():
        if stats.pulls:
            assert stats.mean_reward is not None and 0.0 <= stats.mean_reward <= 1.0, arm
    first = trials[1]
    improvement = first.user_attrs[records.IMPROVEMENT]
    assert isinstance(improvement, list) and improvement[0] > 0  # it added a phrase


def test_genetic_and_evolutionary_steps_compare_by_pareto_dominance(
    sqlite_url: str, study_name: str
) -> None:
    for name in ("genetic", "evolutionary"):
        study = make_study(sqlite_url, f"{study_name}-{name}", strategies=[name])
        study.optimize(n_trials=5)
        trials = study.trials
        assert [t.state for t in trials] == [TrialState.COMPLETE] * 5, name
        for trial in trials[1:]:
            parents = trial.user_attrs[records.PARENTS]
            assert trial.user_attrs[records.PARENT_SCORE] == trials[parents[0]].values
        if name == "genetic":
            crossovers = [t for t in trials if "parents" in t.user_attrs.get("trace:genetic", {})]
            assert crossovers, "no crossover ran: the test would not cover the tournament"
            for trial in crossovers:
                better, other = trial.user_attrs["trace:genetic"]["parents"]
                # The first parent is not dominated by the second.
                assert not dominates(trials[other].values, trials[better].values)
                prompt = records.decode(trial.user_attrs, records.llm_call_key(0, "user"))
                assert '"directions": [' in prompt and "to maximize, minimize" in prompt
        else:
            for trial in trials[1:]:
                entries = trial.user_attrs.get(records.EVALUATED, [])
                scores = [e["score"] for e in entries if e["score"] is not None]
                chosen = trial.values
                assert not any(dominates(score, chosen) for score in scores)


def test_a_strategy_needing_one_number_is_refused(sqlite_url: str, study_name: str) -> None:
    with pytest.raises(to.ConfigurationError, match="Strategy 'stop' needs a single-objective"):
        make_study(sqlite_url, study_name, strategies=["optoprime", "stop"])
    # Through a study of the user's own, at its first trial.
    study = optuna.create_study(storage=sqlite_url, study_name=study_name, directions=DIRECTIONS)
    objective = to.TraceObjective(
        make_greeter, ParetoEvaluate(), SIMULATED, strategies=["optoprime", "stop"]
    )
    with pytest.raises(to.ConfigurationError, match="Strategy 'stop' needs a single-objective"):
        study.optimize(objective, n_trials=1, catch=(to.TrialFailed,))


def test_direction_and_directions_are_checked(sqlite_url: str, study_name: str) -> None:
    with pytest.raises(
        to.ConfigurationError, match="Give direction= .* or directions= .*not both"
    ):
        make_study(sqlite_url, study_name, direction="maximize")
    with pytest.raises(to.ConfigurationError, match="directions must be a non-empty list"):
        make_study(sqlite_url, study_name, directions=[])
    with pytest.raises(to.ConfigurationError, match="'maximize' or 'minimize' for each objective"):
        make_study(sqlite_url, study_name, directions=["maximize", "smaller"])
    with pytest.raises(to.ConfigurationError, match=r"error_score gave 1 score\(s\)"):
        make_study(sqlite_url, study_name, error_score=-1.0)
    # One direction in a list is a single-objective study.
    single = make_study(
        sqlite_url, study_name, directions=["minimize"], evaluate=CostOnly(), figure_interval=None
    )
    single.optimize(n_trials=2)
    assert single.optuna.direction == StudyDirection.MINIMIZE
    assert single.best_value == min(t.value for t in single.trials)


class CostOnly:
    def __call__(self, agent: Greeter) -> to.Evaluation:
        out = agent.reply()
        return to.Evaluation(score=[len(out.data)], feedback="Shorter, please.", output=out)


@pytest.mark.parametrize(
    ("score", "message"),
    [
        ([], "Evaluation.score must not be an empty list"),
        ([0.5, float("nan")], r"Evaluation.score\[1\] must not be NaN"),
        ([float("inf"), 0.5], r"Evaluation.score\[0\] must be finite, got inf"),
        ([0.5, "cheap"], r"Evaluation.score\[1\] must be a number"),
        ((True, 1.0), r"Evaluation.score\[0\] must be a number"),
        ("0.5", "Evaluation.score must be a number"),
    ],
)
def test_evaluation_scores_are_validated(score: Any, message: str) -> None:
    with pytest.raises(to.ConfigurationError, match=message):
        to.Evaluation(score=score, feedback="")


def test_a_score_count_other_than_the_directions_stops_optimize_saying_why(
    sqlite_url: str, study_name: str
) -> None:
    def one_number(agent: Greeter) -> to.Evaluation:
        return to.Evaluation(score=0.5, feedback="", output=agent.reply())

    def three_numbers(agent: Greeter) -> to.Evaluation:
        return to.Evaluation(score=[0.5, 1, 2], feedback="", output=agent.reply())

    multi = optuna.create_study(storage=sqlite_url, study_name=study_name, directions=DIRECTIONS)
    with pytest.raises(to.ConfigurationError, match=r"gave 1 score\(s\)"):  # stops at once
        multi.optimize(
            to.TraceObjective(make_greeter, one_number, SIMULATED),
            n_trials=3,
            catch=(to.TrialFailed,),
        )
    single = optuna.create_study(storage=sqlite_url, study_name=f"{study_name}-single")
    with pytest.raises(to.ConfigurationError, match=r"gave 3 score\(s\)"):
        single.optimize(
            to.TraceObjective(make_greeter, three_numbers, SIMULATED),
            n_trials=3,
            catch=(to.TrialFailed,),
        )

    (failed,) = multi.trials
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs[records.ERROR] == (
        f"ConfigurationError: Study {study_name!r} has 2 objective(s) (directions ['maximize', "
        "'minimize']), but evaluate() gave 1 score(s): 0.5. Give a list of 2 numbers, one per "
        "direction."
    )
    (failed,) = single.trials
    assert failed.state == TrialState.FAIL
    assert (
        "has 1 objective(s) (directions ['minimize']), but evaluate() gave 3 score(s)"
        in (failed.user_attrs[records.ERROR])
    )


def test_figures_show_the_first_objective_and_say_so(sqlite_url: str, study_name: str) -> None:
    study = make_study(sqlite_url, study_name)
    study.optimize(n_trials=3)

    figures = visualization.figures(study)
    assert set(figures) == set(visualization.FIGURES)
    history = figures["score-history"]
    assert history.layout.yaxis.title.text == "score[0] (objective 1 of 2)"
    points = {
        number: value
        for trace in history.data
        if trace.mode == "markers"
        for number, value in zip(trace.x, trace.y, strict=True)
    }
    assert points == {t.number: t.values[0] for t in study.trials}
    assert "objective 1 of 2" in visualization.report_html(study)


def test_the_dashboard_note_shows_list_scores() -> None:
    note = dashboard.trial_note(
        3,
        {
            records.STRATEGY: "optoprime",
            records.PARENTS: [1],
            records.SCORE: [1.0, 40.0],
            records.PARENT_SCORE: [0.5, 25.0],
            records.IMPROVEMENT: [0.5, 15.0],
        },
        {},
    )
    assert "## Trial 3: `optoprime`, score [1, 40] ([+0.5, +15])" in note
    assert "trial 1 (score [0.5, 25])" in note
    assert "improvement [+0.5, +15] over the parent" in note


def test_a_user_study_keeps_its_metric_names_and_is_reopened(
    storage_url: str, study_name: str
) -> None:
    storage = resolve_storage(storage_url, heartbeat_interval=None)
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        directions=DIRECTIONS,
        sampler=optuna.samplers.NSGAIISampler(seed=0),
    )
    study.set_metric_names(["accuracy", "length"])
    seen: list[int] = []
    study.optimize(
        to.TraceObjective(make_greeter, ParetoEvaluate(), SIMULATED, seed=0),
        n_trials=3,
        catch=(to.TrialFailed,),
        callbacks=[lambda study, trial: seen.append(len(trial.values))],
    )
    assert seen == [2, 2, 2]
    reopened = to.load_study(
        study_name=study_name,
        storage=storage_url,
        agent=make_greeter,
        evaluate=ParetoEvaluate(),
        llm=SIMULATED,
        figure_interval=None,
    )
    assert reopened.optuna.metric_names == ["accuracy", "length"]
    assert [t.number for t in reopened.best_trials] == front_of(study.trials)


def test_the_best_command_names_the_front_instead(
    sqlite_url: str, study_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    study = make_study(sqlite_url, study_name)
    study.optimize(n_trials=2)

    code = main(["best", "--storage", sqlite_url, "--study", study_name])
    front = [t.number for t in study.best_trials]
    assert code == 2
    assert f"has 2 objectives: no single best trial. Its Pareto front is trials {front}." in (
        capsys.readouterr().err
    )


class Fixed(to.Strategy):
    """Proposes one given snapshot from trial 0 (an identical or a broken candidate)."""

    name = "fixed"

    def __init__(self, snapshot: dict[str, Any] | None = None) -> None:
        self.snapshot = snapshot

    def propose(self, context: to.StepContext) -> to.Proposal:
        snapshot = self.snapshot or context.population.snapshot(0)
        return to.Proposal(snapshot, [0], parent_score=context.population.trial(0).values)


def test_an_identical_candidate_reuses_the_stored_scores(sqlite_url: str, study_name: str) -> None:
    evaluate = ParetoEvaluate()
    study = make_study(sqlite_url, study_name, evaluate=evaluate, strategies=[Fixed()])
    study.optimize(n_trials=2)

    first, second = study.trials
    assert second.state == TrialState.COMPLETE and evaluate.calls == 1
    assert second.user_attrs[records.DUPLICATE_OF] == 0
    assert second.values == first.values and second.user_attrs[records.SCORE] == first.values
    assert second.user_attrs[records.IMPROVEMENT] == [0.0, 0.0]
    assert [t.number for t in study.best_trials] == [0]  # a reused score is no new candidate


def test_a_candidate_whose_code_raises_gets_the_error_scores(
    sqlite_url: str, study_name: str
) -> None:
    baseline = make_study(sqlite_url, f"{study_name}-probe").objective.initial_snapshot
    broken = {**baseline, "decorate": baseline["decorate"].replace("return", "return 1 +")}
    study = make_study(
        sqlite_url, study_name, strategies=[Fixed(broken)], error_score=[0.0, 1000.0]
    )
    study.optimize(n_trials=2)

    trial = study.trials[1]
    assert trial.state == TrialState.COMPLETE and trial.values == [0.0, 1000.0]
    assert trial.user_attrs[records.ERROR].startswith("The candidate's code raised")


def test_a_worker_app_runs_a_multi_objective_study(sqlite_url: str, study_name: str) -> None:
    from trace_optuna.workers import App
    from trace_optuna.workers import run_worker

    app = App(agent=make_greeter, evaluate=ParetoEvaluate(), llm=SIMULATED, directions=DIRECTIONS)
    assert run_worker(app, study_name=study_name, storage=sqlite_url, n_trials=3) == 3
    study = to.load_study(
        study_name=study_name,
        storage=sqlite_url,
        agent=make_greeter,
        evaluate=ParetoEvaluate(),
        llm=SIMULATED,
    )
    assert study.optuna.directions == [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]
    for trial in study.trials:
        record = study.record(trial.number)
        assert record.values == trial.values and len(record.values) == 2
        assert record.value is None  # several values: ``values`` holds them
