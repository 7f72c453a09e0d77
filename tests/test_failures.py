"""Failed candidates (issue 18, 1-3): a candidate whose code or ``evaluate`` raises is recorded
with its error as feedback, remembered by the study (never evaluated again, by any worker,
unless the failure was transient), never ranked above a working candidate, and one failing
offspring does not throw away its siblings."""

from __future__ import annotations

import collections

import optuna
from optuna.trial import TrialState
import pytest
from support_agents import CountingEvaluate
from support_agents import make_greeter

import trace_optuna as to
from trace_optuna import demo
from trace_optuna.population import Population
from trace_optuna.strategies import EvolutionaryStrategy


class OddWordsCrash:
    """The demo's grader, except that it raises on an odd ``max_words``; counts each value.

    ``transient``: only the first odd value the run meets raises, with a ``ConnectionError``
    (one blip of a grading service), and everything after it is scored. Which values the
    simulated model proposes depends on Trace's node names, which count every node the
    process made before (other tests included), so the test must not need a given value.
    """

    def __init__(self, transient: bool = False) -> None:
        self.seen: collections.Counter[int] = collections.Counter()
        self.transient = transient
        self.blipped = False

    def __call__(self, agent: demo.SupportAgent) -> to.Evaluation:
        words = agent.max_words._data
        self.seen[words] += 1
        if words % 2 == 1:
            if self.transient and not self.blipped:
                self.blipped = True
                raise ConnectionError("grading service unreachable")
            if not self.transient:
                raise RuntimeError(f"grader cannot score {words} words")
        return demo.evaluate(agent)


def evolutionary_study(storage_url: str, study_name: str, evaluate, **options) -> to.TraceStudy:
    return to.create_study(
        study_name=study_name,
        storage=storage_url,
        agent=demo.make_agent,
        evaluate=evaluate,
        llm=to.LLM(demo.DEMO_LLM, simulated_seed=1),
        strategies=[EvolutionaryStrategy(mu=1, offspring=4)],
        sampler=optuna.samplers.RandomSampler(seed=0),
        seed=0,
        load_if_exists=True,
        **options,
    )


def test_one_failing_offspring_does_not_discard_the_others(
    storage_url: str, study_name: str
) -> None:
    evaluate = OddWordsCrash()
    study = evolutionary_study(storage_url, study_name, evaluate)
    study.optimize(n_trials=4)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    record = study.record(1)
    failed = [entry for entry in record.evaluated if entry["error"]]
    working = [entry for entry in record.evaluated if not entry["error"]]
    assert failed and working  # both kinds were evaluated in the trial
    for entry in failed:
        assert entry["error"].startswith("evaluate() raised RuntimeError: grader cannot score")
        assert entry["feedback"] == entry["error"] and entry["score"] is None
        assert entry["changes"]["max_words"] % 2 == 1 and not entry["transient"]
    assert record.value == max(entry["score"] for entry in working)
    assert record.snapshot["max_words"] % 2 == 0 and record.parents == [0]
    # Each failed candidate is remembered: no later trial evaluated it again.
    assert all(count == 1 for words, count in evaluate.seen.items() if words % 2 == 1)


def test_all_offspring_failing_fail_the_trial_with_every_one_recorded(
    sqlite_url: str, study_name: str
) -> None:
    def evaluate(agent: demo.SupportAgent) -> to.Evaluation:
        if agent.max_words._data != 8:  # only the starting values can be graded
            raise RuntimeError("grader cannot score this")
        return demo.evaluate(agent)

    study = evolutionary_study(sqlite_url, study_name, evaluate)
    study.optimize(n_trials=2)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL]
    record = study.record(1)
    assert len(record.evaluated) >= 2 and all(entry["error"] for entry in record.evaluated)
    assert record.parents == [0] and record.snapshot["max_words"] != 8
    assert (
        record.error
        == record.candidate_error
        == "evaluate() raised RuntimeError: grader cannot score this"
    )
    assert study.optuna.trials[1].user_attrs["trace:evolutionary"]["offspring"] >= 2


def test_a_failed_candidate_is_not_evaluated_again_by_another_worker(
    storage_url: str, study_name: str
) -> None:
    calls = collections.Counter()

    def evaluate(agent) -> to.Evaluation:
        text = agent.greeting._data
        calls[text] += 1
        if "tracking link" in text:
            raise RuntimeError("grader crashed on this reply")
        return CountingEvaluate()(agent)

    options = dict(
        study_name=study_name,
        storage=storage_url,
        agent=make_greeter,
        evaluate=evaluate,
        llm=to.LLM(demo.DEMO_LLM),
        seed=0,
    )
    first = to.create_study(**options)
    first.optimize(n_trials=3)  # baseline, order number, then tracking link: fails
    assert first.trials[2].state == TrialState.FAIL
    broken = first.record(2).snapshot["greeting"]
    assert calls[broken] == 1
    # Another worker (its own objects, reading the storage) proposes the same candidate.
    second = to.load_study(**options)
    second.optimize(n_trials=2)
    for number in (3, 4):
        again = second.record(number)
        assert again.snapshot["greeting"] == broken and again.duplicate_of == 2
        assert (
            again.candidate_error == "evaluate() raised RuntimeError: grader crashed on this reply"
        )
    assert calls[broken] == 1  # never evaluated twice


def test_a_transient_failure_fails_the_trial_and_is_evaluated_again(
    sqlite_url: str, study_name: str
) -> None:
    """A transient error says nothing about the candidate: no strategy may choose among
    offspring by it, so the trial fails with the reason, and a later trial evaluates the
    same candidate again."""
    evaluate = OddWordsCrash(transient=True)
    study = evolutionary_study(sqlite_url, study_name, evaluate)
    study.optimize(n_trials=4)
    states = [t.state for t in study.trials]
    assert states[1] == TrialState.FAIL and TrialState.COMPLETE in states[2:]
    record = study.record(1)
    assert record.error == "evaluate() raised ConnectionError: grading service unreachable"
    transient = [entry for entry in record.evaluated if entry["error"]]
    assert len(transient) == 1 and transient[0]["transient"]
    assert transient[0]["error"] == record.error
    population = Population(study.optuna)
    population.refresh()
    assert population.failure(transient[0]["snapshot_hash"]) is None
    assert evaluate.seen[transient[0]["changes"]["max_words"]] >= 2  # tried again, later


def test_a_failed_candidate_never_outranks_a_working_one(
    storage_url: str, study_name: str
) -> None:
    """With error_score equal to the baseline's score, the newest of equal scores used to win:
    the broken candidate became every next step's parent."""
    study = to.create_study(
        study_name=study_name,
        storage=storage_url,
        agent=make_greeter,
        evaluate=CountingEvaluate(),
        llm=to.LLM(demo.DEMO_LLM),
        seed=0,
        error_score=0.0,
        repairs=0,
    )
    broken = dict(study.objective.initial_snapshot)
    broken["decorate"] = broken["decorate"].replace("return", "return 1 +")
    study.objective.strategies["optoprime"].propose = lambda context: to.Proposal(  # type: ignore[method-assign]
        broken, [context.population.best().number], 0.0, "x"
    )
    study.optimize(n_trials=3)
    assert [t.value for t in study.trials] == [0.0, 0.0, 0.0]
    assert study.record(1).candidate_error.startswith("The candidate's code raised")
    # Trial 2 started from the working baseline, not from the failed Trial#1 ...
    assert study.record(2).parents == [0] and study.record(2).duplicate_of == 1
    population = Population(study.optuna)
    population.refresh()
    assert population.best().number == 0 and population.failed(1)
    assert [trial.number for trial in population.top_k(2)] == [0, 1]


def test_starting_values_that_cannot_be_evaluated_stop_optimize(
    storage_url: str, study_name: str
) -> None:
    calls = []

    def evaluate(agent) -> to.Evaluation:
        calls.append(1)
        raise KeyError("score")

    study = to.create_study(
        study_name=study_name,
        storage=storage_url,
        agent=make_greeter,
        evaluate=evaluate,
        llm=to.LLM(demo.DEMO_LLM),
    )
    with pytest.raises(
        to.ConfigurationError,
        match=r"starting values cannot be evaluated: "
        r"evaluate\(\) raised KeyError: 'score'",
    ):
        study.optimize(n_trials=5)
    assert len(calls) == 1 and len(study.trials) == 1
    record = study.record(0)
    assert (
        record.state == "FAIL" and record.candidate_error == "evaluate() raised KeyError: 'score'"
    )
    assert "KeyError" in record.traceback


def test_an_offspring_that_is_a_known_failure_costs_no_second_call(
    sqlite_url: str, study_name: str
) -> None:
    """Evolutionary samples several offspring: one that repeats a remembered failure is taken
    as that failure (reused, not evaluated) instead of asking the model again, as a single
    OptoPrime step does."""
    crashed = []
    inner = CountingEvaluate()

    def evaluate(agent) -> to.Evaluation:
        result = inner(agent)
        if "tracking link" in agent.greeting._data:  # the only way up: it always fails
            crashed.append(agent.greeting._data)
            raise RuntimeError("grader crashed on this reply")
        return result

    study = to.create_study(
        study_name=study_name,
        storage=sqlite_url,
        agent=make_greeter,
        evaluate=evaluate,
        llm="simulated/feedback-follower",
        strategies=[EvolutionaryStrategy(mu=1, offspring=2)],
        error_score=0.0,
        seed=0,
    )
    study.optimize(n_trials=5)
    later = [study.record(number) for number in range(3, 5)]
    for record in later:
        assert record.llm["calls"] == 2  # one per offspring, none asked again
        assert not any("already evaluated" in call["user"] for call in record.llm_calls)
        assert any(entry["error"] for entry in record.evaluated)
    assert len(crashed) == 1  # remembered: never evaluated again
