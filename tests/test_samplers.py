"""StrategyBandit on real Optuna studies in a SQLite file, driven by ask/tell.

Arms are simulated: each trial picks ``strategy``, stores a seeded random improvement as
``trace:improvement`` (as trace_optuna's step does) and is told a value. The shares asserted
were measured first (the numbers are in each test) and the thresholds leave a wide margin.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
import math
from typing import Any
from typing import Literal

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.study import Study
from optuna.trial import FrozenTrial
from optuna.trial import TrialState
import pytest

from trace_optuna import records
from trace_optuna.exceptions import ConfigurationError
from trace_optuna.samplers import StrategyBandit
from trace_optuna.step import STRATEGY_PARAM

ARMS = ["optoprime", "genetic", "evolutionary", "stop"]
STATIONARY = {"optoprime": 0.0, "genetic": 0.05, "evolutionary": 0.1, "stop": 0.2}

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study(
    url: str,
    name: str,
    sampler: optuna.samplers.BaseSampler,
    direction: Literal["minimize", "maximize"] = "maximize",
) -> Study:
    return optuna.create_study(storage=url, study_name=name, sampler=sampler, direction=direction)


def _run(
    study: Study,
    means: Callable[[int], dict[str, float]],
    n_trials: int,
    rng: np.random.Generator,
    noise: float = 0.1,
    fails: Callable[[str], bool] = lambda arm: False,
) -> list[str]:
    """Ask/tell ``n_trials`` step trials; each stores an improvement drawn for its arm."""
    picks = []
    for _ in range(n_trials):
        trial = study.ask()
        arm = str(trial.suggest_categorical(STRATEGY_PARAM, ARMS))
        picks.append(arm)
        if fails(arm):
            study.tell(trial, state=TrialState.FAIL)
            continue
        improvement = float(rng.normal(means(trial.number)[arm], noise))
        trial.set_user_attr(records.IMPROVEMENT, improvement)
        study.tell(trial, improvement)
    return picks


def _tell_fixed(
    study: Study, arm: str, improvement: float | None, state: str = "complete"
) -> None:
    """A trial whose arm is fixed (enqueued), so tests can lay down an exact history."""
    study.enqueue_trial({STRATEGY_PARAM: arm})
    trial = study.ask()
    trial.suggest_categorical(STRATEGY_PARAM, ARMS)
    if state in ("fail", "pruned"):
        study.tell(trial, state=TrialState.FAIL if state == "fail" else TrialState.PRUNED)
        return
    if improvement is not None:
        trial.set_user_attr(records.IMPROVEMENT, improvement)
    study.tell(trial, 0.0 if improvement is None else improvement)


def _share(picks: Sequence[str], arm: str) -> float:
    return sum(pick == arm for pick in picks) / len(picks)


@pytest.mark.slow  # 13-64 s here: many trials
def test_best_arm_gets_the_largest_share(sqlite_url: str) -> None:
    # Classic UCB (no prior). Measured: mean share of "stop" in trials 12-23 over seeds 0-9 is
    # 0.87 (0.89-0.97 for seeds 10-19, 20-29, 30-39; uniform picks would give 0.25).
    shares: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for seed in range(10):
        study = _study(sqlite_url, f"seed-{seed}", StrategyBandit(seed=seed, prior_reward=None))
        picks = _run(study, lambda n: STATIONARY, 24, np.random.default_rng(seed))
        assert set(picks[:4]) == set(ARMS)  # every arm is tried first
        for arm in ARMS:
            shares[arm].append(_share(picks[12:], arm))
    mean_share = {arm: float(np.mean(values)) for arm, values in shares.items()}
    assert mean_share["stop"] >= 0.6, mean_share
    assert mean_share["stop"] == max(mean_share.values())


@pytest.mark.slow  # 13-64 s here: many trials
def test_untried_arms_wait_their_turn_in_listed_order(sqlite_url: str) -> None:
    # The default prior: the first listed arm runs first, the others are tried later (in the
    # listed order) and the best still wins. Measured over seeds 0-9: "stop" (listed last) is
    # first tried at trials 3-37 and holds a mean 0.87 of trials 30-59.
    shares = []
    for seed in range(10):
        study = _study(sqlite_url, f"prior-{seed}", StrategyBandit(seed=seed))
        picks = _run(study, lambda n: STATIONARY, 60, np.random.default_rng(seed))
        assert picks[0] == "optoprime", picks[:10]
        first = [picks.index(arm) for arm in ARMS]
        assert first == sorted(first), picks[:40]  # tried in the order listed
        shares.append(_share(picks[30:], "stop"))
    assert float(np.mean(shares)) >= 0.6, shares


def test_a_steadily_improving_first_arm_is_kept(sqlite_url: str) -> None:
    # The first arm improves 0.2 a trial, the others nothing: with the prior, no trial is spent
    # on them while it does (classic UCB spends three of the first four).
    bandit = StrategyBandit(seed=0)
    study = _study(sqlite_url, "steady", bandit)
    means = {"optoprime": 0.2, "genetic": 0.0, "evolutionary": 0.0, "stop": 0.0}
    picks = _run(study, lambda n: means, 12, np.random.default_rng(0), noise=0.0)
    assert picks == ["optoprime"] * 12
    classic = _study(sqlite_url, "steady-classic", StrategyBandit(seed=0, prior_reward=None))
    picks = _run(classic, lambda n: means, 12, np.random.default_rng(0), noise=0.0)
    assert set(picks[:4]) == set(ARMS)


def test_a_stalled_first_arm_hands_over(sqlite_url: str) -> None:
    # The first arm improves 0.2 a trial for 5 trials, then nothing: the next listed arm is
    # tried once the discounted mean has faded (measured: at trial 13, 8 trials after the
    # stall, with the default decay 0.95 and exploration 0.3), and then kept.
    study = _study(sqlite_url, "stall", StrategyBandit(seed=0))

    def means(number: int) -> dict[str, float]:
        gain = 0.2 if number < 5 else 0.0
        return {"optoprime": gain, "genetic": 0.1, "evolutionary": 0.0, "stop": 0.0}

    picks = _run(study, means, 20, np.random.default_rng(0), noise=0.0)
    assert picks[:5] == ["optoprime"] * 5
    assert "genetic" in picks[5:16], picks
    assert picks[-4:] == ["genetic"] * 4, picks


@pytest.mark.slow  # 13-64 s here: many trials
def test_a_new_best_arm_takes_over_within_bounded_trials(sqlite_url: str) -> None:
    # "stop" is best until trial 25, then "optoprime" (which was worst). Measured over seeds
    # 0-11: "optoprime" is picked again 2-13 trials after the switch and holds 0.92-1.0 of
    # trials 37-49; "stop" held 0.77-1.0 of trials 12-24.
    def means(number: int) -> dict[str, float]:
        if number < 25:
            return STATIONARY
        return {"optoprime": 0.2, "genetic": 0.05, "evolutionary": 0.1, "stop": 0.0}

    for seed in range(2):
        study = _study(sqlite_url, f"switch-{seed}", StrategyBandit(seed=seed, prior_reward=None))
        picks = _run(study, means, 50, np.random.default_rng(seed), noise=0.05)
        assert _share(picks[12:25], "stop") >= 0.6, picks[:25]
        assert "optoprime" in picks[25:40], picks[25:]
        assert _share(picks[37:], "optoprime") >= 0.6, picks[25:]


def test_minimize_negates_the_improvement(sqlite_url: str) -> None:
    bandit = StrategyBandit(seed=0)
    study = _study(sqlite_url, "minimize", bandit, direction="minimize")
    _tell_fixed(study, "optoprime", -0.3)  # lower score: good when minimizing
    _tell_fixed(study, "genetic", 0.3)
    _tell_fixed(study, "evolutionary", 0.0)
    _tell_fixed(study, "stop", 0.0)
    statistics = bandit.arm_statistics(study, ARMS)
    assert statistics["optoprime"].mean_reward == pytest.approx(0.3)
    assert statistics["genetic"].mean_reward == 0.0  # a regression counts as no gain
    unclipped = StrategyBandit(seed=0, clip_negative=False).arm_statistics(study, ARMS)
    assert unclipped["genetic"].mean_reward == pytest.approx(-0.3)
    means = {"optoprime": -0.2, "genetic": 0.2, "evolutionary": 0.0, "stop": 0.0}
    picks = _run(study, lambda n: means, 16, np.random.default_rng(0))
    assert _share(picks, "optoprime") >= 0.6, picks


def test_fail_trials_penalise_their_arm(sqlite_url: str) -> None:
    study = _study(sqlite_url, "failures", StrategyBandit(seed=0))
    _tell_fixed(study, "optoprime", None, state="fail")
    _tell_fixed(study, "optoprime", None, state="fail")
    _tell_fixed(study, "genetic", 0.1)
    _tell_fixed(study, "evolutionary", None)  # completed without an improvement: ignored
    default = StrategyBandit().arm_statistics(study, ARMS)
    assert (default["optoprime"].pulls, default["optoprime"].failures) == (2, 2)
    assert default["optoprime"].mean_reward == 0.0
    assert default["evolutionary"].pulls == 0 and default["evolutionary"].mean_reward is None
    harsh = StrategyBandit(failure_reward=-1.0).arm_statistics(study, ARMS)
    assert harsh["optoprime"].mean_reward == -1.0
    lenient = StrategyBandit(failure_reward=None).arm_statistics(study, ARMS)
    assert lenient["optoprime"].pulls == 0

    # "optoprime" gains 0.2 when it works but fails 4 times in 5 (expected reward 0.04);
    # "genetic" always gains 0.1. Counting failures, genetic wins; ignoring them, optoprime.
    means = {"optoprime": 0.2, "genetic": 0.1, "evolutionary": 0.0, "stop": 0.0}
    outcomes: dict[float | None, list[str]] = {}
    for failure_reward in (0.0, None):
        bandit = StrategyBandit(seed=1, failure_reward=failure_reward)
        study = _study(sqlite_url, f"fail-{failure_reward}", bandit)
        fail_rng = np.random.default_rng(1)

        def fails(arm: str, fail_rng: np.random.Generator = fail_rng) -> bool:
            return arm == "optoprime" and fail_rng.random() < 0.8

        picks = _run(study, lambda n: means, 24, np.random.default_rng(1), 0.02, fails)
        outcomes[failure_reward] = picks[12:]
    assert _share(outcomes[0.0], "genetic") > 2 * _share(outcomes[0.0], "optoprime")
    assert _share(outcomes[None], "optoprime") > _share(outcomes[None], "genetic")


def test_pruned_trials_are_pulls_that_improved_nothing(sqlite_url: str) -> None:
    study = _study(sqlite_url, "pruned", StrategyBandit(seed=0))
    _tell_fixed(study, "genetic", 0.3)
    for _ in range(3):
        _tell_fixed(study, "optoprime", None, state="pruned")
    _tell_fixed(study, "optoprime", 0.3)
    statistics = StrategyBandit().arm_statistics(study, ARMS)
    # Four pulls, one of which gained 0.3: the pruned ones drag the mean down, unlike a
    # genetic arm that gained 0.3 once; neither counts them as failures.
    assert (statistics["optoprime"].pulls, statistics["optoprime"].failures) == (4, 0)
    assert statistics["genetic"].pulls == 1
    optoprime_mean = statistics["optoprime"].mean_reward
    genetic_mean = statistics["genetic"].mean_reward
    assert optoprime_mean is not None and genetic_mean is not None
    assert 0.0 < optoprime_mean < genetic_mean / 2


class _RecordingSampler(optuna.samplers.TPESampler):
    """A real multivariate TPE that remembers what StrategyBandit handed it."""

    def __init__(self) -> None:
        super().__init__(seed=0, multivariate=True, n_startup_trials=3)
        self.independent: list[str] = []
        self.relative_spaces: list[dict[str, BaseDistribution]] = []
        self.calls = {"before_trial": 0, "after_trial": 0, "reseed_rng": 0}

    def sample_independent(
        self, study: Study, trial: FrozenTrial, name: str, distribution: BaseDistribution
    ) -> Any:
        self.independent.append(name)
        return super().sample_independent(study, trial, name, distribution)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        self.relative_spaces.append(dict(search_space))
        return super().sample_relative(study, trial, search_space)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self.calls["before_trial"] += 1
        super().before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: Any, values: Any) -> None:
        self.calls["after_trial"] += 1
        super().after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.calls["reseed_rng"] += 1
        super().reseed_rng()


def test_other_parameters_are_delegated_to_the_base_sampler(sqlite_url: str) -> None:
    base = _RecordingSampler()
    bandit = StrategyBandit(seed=0, base_sampler=base)
    assert bandit.base_sampler is base
    study = _study(sqlite_url, "delegation", bandit)
    for _ in range(12):
        trial = study.ask()
        arm = trial.suggest_categorical(STRATEGY_PARAM, ARMS)
        rate = trial.suggest_float("genetic.mutation_rate", 0.1, 0.5)
        width = trial.suggest_int("width", 1, 8)
        assert 0.1 <= rate <= 0.5 and 1 <= width <= 8
        trial.set_user_attr(records.IMPROVEMENT, rate if arm == "genetic" else 0.0)
        study.tell(trial, rate)
    bandit.reseed_rng()

    assert STRATEGY_PARAM not in base.independent
    assert "genetic.mutation_rate" in base.independent  # TPE's startup trials
    assert base.relative_spaces and all(STRATEGY_PARAM not in s for s in base.relative_spaces)
    assert any({"genetic.mutation_rate", "width"} <= set(s) for s in base.relative_spaces)
    trial = study.ask()
    assert STRATEGY_PARAM in base.infer_relative_search_space(study, study.trials[-1])
    assert STRATEGY_PARAM not in bandit.infer_relative_search_space(study, study.trials[-1])
    study.tell(trial, state=TrialState.FAIL)
    assert base.calls == {"before_trial": 13, "after_trial": 13, "reseed_rng": 1}


def test_same_seed_same_picks(sqlite_url: str) -> None:
    runs = []
    for name in ("first", "second"):
        study = _study(sqlite_url, name, StrategyBandit(seed=7))
        rng = np.random.default_rng(3)
        picks = []
        for _ in range(12):
            trial = study.ask()
            arm = str(trial.suggest_categorical(STRATEGY_PARAM, ARMS))
            setting = trial.suggest_float(f"{arm}.temperature", 0.0, 1.0)
            picks.append((arm, setting))
            trial.set_user_attr(records.IMPROVEMENT, float(rng.normal(STATIONARY[arm], 0.1)))
            study.tell(trial, setting)
        runs.append(picks)
    assert runs[0] == runs[1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seed": -1}, "seed must be None or a non-negative int"),
        ({"seed": 1.5}, "seed must be None or a non-negative int"),
        ({"decay": 0.0}, r"decay must be a number in \(0, 1\]"),
        ({"decay": 1.5}, r"decay must be a number in \(0, 1\]"),
        ({"decay": math.nan}, r"decay must be a number in \(0, 1\]"),
        ({"exploration": -0.1}, "exploration must be a finite number >= 0"),
        ({"exploration": math.inf}, "exploration must be a finite number >= 0"),
        ({"param_name": ""}, "param_name must be a non-empty str"),
        ({"failure_reward": math.nan}, "failure_reward must be a finite number or None"),
        ({"clip_negative": 1}, "clip_negative must be a bool"),
    ],
)
def test_invalid_arguments_name_the_argument_and_rule(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message) as raised:
        StrategyBandit(**kwargs)
    assert isinstance(raised.value, ValueError)


def test_invalid_uses_are_explained(sqlite_url: str) -> None:
    with pytest.raises(TypeError, match="base_sampler must be an optuna.samplers.BaseSampler"):
        StrategyBandit(base_sampler="tpe")  # type: ignore[arg-type]
    study = _study(sqlite_url, "not-categorical", StrategyBandit())
    trial = study.ask()
    with pytest.raises(ConfigurationError, match="must be suggested with suggest_categorical"):
        trial.suggest_int(STRATEGY_PARAM, 0, 3)


# -- multi-objective studies: trace:improvement is a list, one difference per objective -------

MULTI = ["maximize", "minimize"]


def _tell_multi(study: Study, arm: str, improvement: Any, calls: int | None = None) -> None:
    """A trial of a (maximize, minimize) study with this arm and ``trace:improvement``."""
    study.enqueue_trial({STRATEGY_PARAM: arm})
    trial = study.ask()
    trial.suggest_categorical(STRATEGY_PARAM, ARMS)
    if improvement is not None:
        trial.set_user_attr(records.IMPROVEMENT, improvement)
    if calls is not None:
        trial.set_user_attr(records.LLM, {"calls": calls})
    study.tell(trial, [0.0, 0.0])


def test_multi_objective_reward_is_one_when_the_step_improves_some_objective(
    sqlite_url: str,
) -> None:
    bandit = StrategyBandit(seed=0, decay=1.0)
    study = optuna.create_study(
        storage=sqlite_url, study_name="multi-reward", directions=MULTI, sampler=bandit
    )
    _tell_multi(study, "optoprime", None)  # the baseline: no improvement, not counted
    _tell_multi(study, "optoprime", [0.1, 0.0])  # accuracy up
    _tell_multi(study, "optoprime", [0.0, -2.0])  # cost down
    _tell_multi(study, "optoprime", [0.2, 3.0])  # a trade-off: not dominated by the parent
    _tell_multi(study, "genetic", [-0.1, 0.0])  # the parent dominates it
    _tell_multi(study, "genetic", [0.0, 0.0])  # the same scores
    _tell_multi(study, "genetic", [0.0, 1.0])  # cost up only
    _tell_multi(study, "evolutionary", [0.3, 0.0], calls=3)  # per LLM call: 1/3
    _tell_multi(study, "stop", [0.3])  # not one number per objective: ignored
    statistics = bandit.arm_statistics(study, ARMS)
    assert statistics["optoprime"].pulls == 3
    assert statistics["optoprime"].mean_reward == 1.0
    assert statistics["genetic"].pulls == 3
    assert statistics["genetic"].mean_reward == 0.0
    assert statistics["evolutionary"].mean_reward == pytest.approx(1 / 3)
    assert statistics["stop"].pulls == 0


@pytest.mark.slow  # 13-64 s here: many trials
def test_multi_objective_best_arm_gets_the_largest_share(sqlite_url: str) -> None:
    # Each arm's step improves some objective with its own probability. Measured: the share
    # of "stop" in trials 20-39 is 0.95, 1.0, 1.0, 0.6, 0.85 for seeds 0-4 (mean 0.88; 0.92
    # over seeds 0-9 in trials 30-59); uniform picks would give 0.25.
    chance = {"optoprime": 0.1, "genetic": 0.2, "evolutionary": 0.3, "stop": 0.8}
    shares = []
    for seed in range(5):
        rng = np.random.default_rng(seed)
        study = optuna.create_study(
            storage=sqlite_url,
            study_name=f"multi-share-{seed}",
            directions=MULTI,
            sampler=StrategyBandit(seed=seed),
        )
        picks = []
        for _ in range(40):
            trial = study.ask()
            arm = str(trial.suggest_categorical(STRATEGY_PARAM, ARMS))
            picks.append(arm)
            improved = rng.random() < chance[arm]
            # Improved: accuracy up at a higher cost (a trade-off); else dominated by the parent.
            improvement = [0.1, 1.0] if improved else [-0.1, 1.0]
            trial.set_user_attr(records.IMPROVEMENT, improvement)
            study.tell(trial, [0.5, 10.0])
        shares.append(_share(picks[20:], "stop"))
    assert float(np.mean(shares)) >= 0.6, shares


def test_workers_share_the_bandit_state_through_storage(sqlite_url: str) -> None:
    _study(sqlite_url, "shared", optuna.samplers.RandomSampler())
    bandits = [StrategyBandit(seed=0), StrategyBandit(seed=1)]
    workers = [
        optuna.load_study(study_name="shared", storage=sqlite_url, sampler=bandit)
        for bandit in bandits
    ]
    # Four workers asking at once, none finished: every running trial counts as a pull of
    # its arm, so the four pick four different arms instead of all starting with one.
    running = [workers[i % 2].ask() for i in range(4)]
    assert {t.suggest_categorical(STRATEGY_PARAM, ARMS) for t in running} == set(ARMS)
    assert bandits[0].arm_statistics(workers[0], ARMS)["stop"].running == 1
    for trial in running:
        arm = trial.params[STRATEGY_PARAM]
        trial.set_user_attr(records.IMPROVEMENT, STATIONARY[arm])
        workers[0].tell(trial, STATIONARY[arm])

    # The workers alternate: each pick uses rewards the other worker stored.
    picks = []
    rng = np.random.default_rng(0)
    for number in range(4, 30):
        worker, bandit = workers[number % 2], bandits[number % 2]
        other = bandits[(number + 1) % 2]
        mine = bandit.arm_statistics(worker, ARMS)
        theirs = other.arm_statistics(workers[(number + 1) % 2], ARMS)
        for arm in ARMS:
            assert mine[arm].pulls == theirs[arm].pulls
            assert mine[arm].discounted_pulls == pytest.approx(theirs[arm].discounted_pulls)
            assert mine[arm].index == pytest.approx(theirs[arm].index)
        picks += _run(worker, lambda n: STATIONARY, 1, rng, noise=0.05)
    assert sum(s.pulls for s in bandits[0].arm_statistics(workers[0], ARMS).values()) == 30
    assert _share(picks[10:], "stop") >= 0.6, picks


def test_rewards_are_per_llm_call_so_cheap_steps_can_win(sqlite_url: str) -> None:
    """Two arms improve equally per trial, but one spends five LLM calls for it."""

    def history(study: Study) -> None:
        for _ in range(4):
            for arm, calls in (("optoprime", 1), ("evolutionary", 5)):
                study.enqueue_trial({STRATEGY_PARAM: arm})
                trial = study.ask()
                trial.suggest_categorical(STRATEGY_PARAM, ARMS)
                trial.set_user_attr(records.IMPROVEMENT, 0.1)
                trial.set_user_attr(records.LLM, {"calls": calls})
                study.tell(trial, 0.1)

    per_call = StrategyBandit(seed=0)
    study = _study(sqlite_url, "per-call", per_call)
    history(study)
    stats = per_call.arm_statistics(study, ARMS)
    assert stats["optoprime"].mean_reward == pytest.approx(5 * stats["evolutionary"].mean_reward)

    per_trial = StrategyBandit(seed=0, per_llm_call=False)
    other = _study(sqlite_url, "per-trial", per_trial)
    history(other)
    stats = per_trial.arm_statistics(other, ARMS)
    assert stats["optoprime"].mean_reward == pytest.approx(stats["evolutionary"].mean_reward)
