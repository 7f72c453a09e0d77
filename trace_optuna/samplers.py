"""The strategy-choosing sampler: a discounted bandit over ``strategy``, Optuna for the rest.

Every trace_optuna step trial samples ``trial.suggest_categorical("strategy", names)`` and then
that strategy's own settings (``genetic.mutation_rate``, ``optoprime.temperature``...).
:class:`StrategyBandit` picks ``strategy`` with a non-stationary multi-armed bandit and hands every
other parameter to a base sampler (TPE by default).

Why reward the improvement and not the trial's value
    A step's score is its parent's score plus what the step added. As the population improves,
    every strategy's scores rise, so the raw value mostly says *when* a strategy ran, not how good
    it is: TPE, which ranks trials by value, ends up favouring whatever it picked lately. The
    bandit is rewarded by ``trace:improvement`` (score minus parent score; negated for minimize
    studies), which measures what the strategy itself contributed. This follows ShinkaEvolve,
    whose LLM-choosing bandit is rewarded by improvement over the parent with decay 0.95.

The algorithm: discounted UCB (Garivier and Moulines, 2011), scale-free
    * Reward of a finished trial that picked arm ``a``: its improvement (negated when minimizing;
      for multi-objective studies see below),
      with regressions counted as 0 (``clip_negative``): the search keeps its best candidates, so
      a step worse than its parent costs one trial, not a loss of that size, and one broken
      candidate scored at a study's ``error_score`` cannot sink an arm for hundreds of trials.
      A FAIL trial is a pull with reward ``failure_reward`` (0 by default, the same as a
      regression, so an arm that keeps failing loses share). A PRUNED trial is a pull with
      reward 0: the study's pruner stopped its candidate as not promising, so an arm whose
      candidates keep being pruned loses share like one that regresses. Other trials without
      ``trace:improvement`` (the baseline, trials that failed before scoring when
      ``failure_reward=None``) are ignored.
    * Discount: at trial ``n``, the reward of trial ``t`` weighs ``decay ** (n - t)``; trial
      numbers are the clock, so every worker shares it. ``W_a`` is an arm's discounted number of
      pulls, ``mean_a`` its discounted mean reward, ``N`` the sum of ``W_a``, ``sigma`` the
      discounted standard deviation of all rewards (so the bonus is in the rewards' own units,
      whatever the score's scale).
    * The pick is the arm with the largest ``mean_a + exploration * sigma * sqrt(2 *
      ln(max(N, e)) / W_a)``; near-ties are broken at random. An arm left alone sees ``W_a``
      decay, its bonus grow, and gets re-tried: that is how a strategy that became good later
      is noticed.
    * An arm not tried yet counts as one pull of reward ``prior_reward`` (0 by default: "it
      improves nothing") made at trial 0 and discounted like every other pull, and untried
      arms are taken in the order the study lists them. So the first listed strategy runs
      while it improves; the next is tried when the ones tried so far stall, or, as its prior
      pull fades and its bonus grows, after a while anyway. LLM calls go to exploring when
      exploiting stops paying, which matters when one exploratory trial of an expensive
      strategy costs as much as the whole task (``benchmarks/strategies.py``). With
      ``prior_reward=None`` every arm is tried once first, in a seeded random order (classic
      UCB).
    * ``sigma`` is the discounted standard deviation of all rewards; when they are all equal
      it is their absolute mean (1 if that is 0), so a steady improvement is not mistaken for
      uncertainty.
    * Trials that other workers are running count as pulls of their arm at its current mean,
      so workers asking at the same moment spread over arms instead of all taking the leader.

Multi-objective studies (``directions=[...]``)
    ``trace:improvement`` is then a list (score minus parent score, per objective), and there
    is no one number to add up. A step's reward is 1 when its candidate improves on its first
    parent in at least one objective (in that objective's direction): the child is then not
    dominated by its parent and differs from it, so it dominates the parent or trades one
    objective for another, which is how the Pareto front grows. It is 0 when the parent
    dominates the child or they score the same. In a single-objective study this is exactly
    "improvement > 0", the case the clipped reward pays for. ``per_llm_call`` divides it by
    the trial's LLM calls as usual; ``clip_negative`` has nothing to clip. FAIL trials count
    with ``failure_reward`` as in a single-objective study.

State lives in storage only
    Rewards are read from the study's trials on every pick, so every worker (every
    ``optuna.load_study`` handle) sees the same bandit. Optuna's storage caches finished trials
    per process, and the sampler folds in only the trials that finished since its last pick.
    It stores nothing itself: Optuna stores the sampled ``strategy`` as a trial parameter.
    Random choices are seeded per trial from ``(seed, trial.number)``, so workers created with
    the same seed do not make the same random choices, and a run is reproducible.

Which Optuna samplers suit this search space
    One categorical ``strategy`` plus conditional per-strategy settings. Share of picks of the
    best of four arms in trials 50-99 of 100, mean of 10 seeds (``benchmarks/bandit.py``;
    "drift": the same improvements while every score rises 0.02 per trial)::

        sampler                                       stationary  drift  best arm swaps at 50
        StrategyBandit (defaults)                           0.89   0.89                  0.58
        StrategyBandit(prior_reward=None)                   0.90   0.90                  0.67
        TPESampler                                          0.80   0.09                  0.33
        RandomSampler, QMCSampler                           0.24   0.24                  0.24
        NSGAIISampler(mutation_prob=0.05)                   0.34   0.30                  0.21
        NSGAIISampler(mutation_prob=0.05,
                      population_size=10)                   0.82   0.85                  0.05

    TPE is fine for a stationary choice but follows whatever ran lately once scores drift.
    RandomSampler and QMCSampler pick uniformly; CmaEsSampler does not model categoricals (it
    samples them at random). NSGAIISampler needs ``mutation_prob`` about 0.05 (its default,
    1 / number of params, is 1.0 with one categorical: random) and a population small enough
    to run several generations; it then locks onto one arm and does not notice a change. For
    the settings (``base_sampler``) any sampler works; TPE's default independent mode handles
    conditional parameters, ``TPESampler(multivariate=True)`` wants ``group=True`` for them.

Example:
    >>> import optuna
    >>> from trace_optuna.samplers import StrategyBandit
    >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
    >>> study = optuna.create_study(direction="maximize", sampler=StrategyBandit(seed=0))
    >>> mean_improvement = {"optoprime": 0.02, "genetic": 0.10, "evolutionary": 0.0}
    >>> for _ in range(40):
    ...     trial = study.ask()
    ...     name = trial.suggest_categorical("strategy", list(mean_improvement))
    ...     rate = trial.suggest_float(f"{name}.rate", 0.0, 1.0)  # sampled by TPE
    ...     trial.set_user_attr("trace:improvement", mean_improvement[name])
    ...     _ = study.tell(trial, rate)
    >>> picks = [t.params["strategy"] for t in study.trials[20:]]
    >>> picks.count("genetic") > picks.count("optoprime") + picks.count("evolutionary")
    True
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import logging
import math
import numbers
import threading
from typing import TYPE_CHECKING
from typing import Any

import numpy as np
from optuna.distributions import CategoricalDistribution
from optuna.samplers import BaseSampler
from optuna.samplers import TPESampler
from optuna.study import StudyDirection
from optuna.trial import TrialState

from trace_optuna import records
from trace_optuna.exceptions import ConfigurationError

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.distributions import CategoricalChoiceType
    from optuna.study import Study
    from optuna.trial import FrozenTrial

__all__ = ["ArmStatistics", "StrategyBandit"]

_logger = logging.getLogger(__name__)

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
# Indices closer than this (relative) are ties: two workers summing the same rewards in a
# different order must not break a tie differently by a rounding error.
_TIE_TOLERANCE = 1e-9
_MISSING = object()


@dataclasses.dataclass(frozen=True)
class ArmStatistics:
    """What the bandit knows about one arm (one strategy), read from storage.

    Attributes:
        pulls: Finished trials that picked the arm and were counted (failures included).
        failures: How many of those trials were FAIL.
        running: Trials picking the arm that are still running (other workers' steps).
        discounted_pulls: ``W_a``, the pulls weighted by ``decay ** age``.
        mean_reward: The discounted mean reward, or None if the arm has no counted pull.
        index: The UCB index the next pick compares (for an arm not tried yet: from its
            ``prior_reward`` pull, or ``inf`` when the bandit has no prior).
    """

    pulls: int
    failures: int
    running: int
    discounted_pulls: float
    mean_reward: float | None
    index: float


@dataclasses.dataclass
class _Sums:
    weight: float = 0.0
    reward: float = 0.0
    square: float = 0.0
    pulls: int = 0
    failures: int = 0

    def scale(self, factor: float) -> None:
        self.weight *= factor
        self.reward *= factor
        self.square *= factor


class _Rewards:
    """Discounted reward sums of one study, folded in incrementally, trial by trial.

    Sums are kept relative to a clock (a trial number): moving the clock forward multiplies
    them all by ``decay ** step``; a trial ``t`` joins with weight ``decay ** (clock - t)``.
    Workers finish out of order, so every finished trial is folded in once, whenever it
    appears, and ``scan_from`` marks the oldest trial not yet finished.
    """

    def __init__(self, storage: object, study_id: int, signs: list[float]) -> None:
        self.storage = storage
        self.study_id = study_id
        self.signs = signs  # +1 per maximized objective, -1 per minimized one
        self.clock = 0
        self.scan_from = 0
        self.folded: set[int] = set()  # folded trials numbered at or after scan_from
        self.sums: dict[Any, _Sums] = {}

    def advance(self, number: int, decay: float) -> None:
        if number > self.clock:
            factor = decay ** (number - self.clock)
            for sums in self.sums.values():
                sums.scale(factor)
            self.clock = number

    def add(self, arm: Any, reward: float, age: int, decay: float, failed: bool) -> None:
        weight = decay**age
        sums = self.sums.setdefault(arm, _Sums())
        sums.weight += weight
        sums.reward += weight * reward
        sums.square += weight * reward * reward
        sums.pulls += 1
        sums.failures += int(failed)


class StrategyBandit(BaseSampler):
    """Optuna sampler: a discounted UCB bandit picks ``strategy``; a base sampler does the rest.

    The default sampler of trace_optuna studies. The module docstring describes the algorithm,
    why it is rewarded by ``trace:improvement`` rather than by trial values, the reward of a
    multi-objective study (1 when the step improved some objective over its parent, else 0),
    and which other Optuna samplers suit this search space.

    Args:
        seed: Seeds the bandit's random choices (per trial, from ``(seed, trial.number)``) and
            the default base sampler. A non-negative int, or None for fresh randomness.
        decay: Weight kept per trial by a past reward, in (0, 1]. 0.95 (ShinkaEvolve's value)
            lets roughly the last 20 trials decide; 1.0 never forgets (stationary UCB). With
            1.0 an untried arm's prior pull never fades either, so it is tried only when the
            arms tried so far stall: pair it with ``prior_reward=None``.
        exploration: Multiplies the UCB bonus, which is in units of the rewards' discounted
            standard deviation; >= 0. 0 is greedy after every arm was tried once.
        base_sampler: Samples every parameter but ``param_name``, relative and independent.
            Default ``TPESampler(seed=seed)``.
        param_name: The categorical parameter the bandit picks.
        failure_reward: Reward of a FAIL trial that picked an arm, in the units of rewards
            (improvement toward the study's direction; below 0 is worse than a regression when
            ``clip_negative``). The trial counts as a pull. None ignores FAIL trials.
        clip_negative: Count a negative reward (a step worse than its parent) as 0.
        prior_reward: The reward an arm that was never tried counts with, as one pull made at
            trial 0, in the units of rewards. None: every arm is tried once before any arm is
            tried twice.
        per_llm_call: Divide a trial's reward by its LLM calls (``trace:llm``, plus the agent's
            own in ``trace:agent_llm``; at least 1), so the bandit ranks strategies by
            improvement per call: an evolutionary trial making five proposals must improve five
            times as much as a one-call greedy step to rank equal. False ranks by improvement
            per trial.

    Raises:
        ConfigurationError: (a ValueError) an argument breaks the rule its description states.
        TypeError: ``base_sampler`` is not an Optuna sampler.
    """

    def __init__(
        self,
        *,
        seed: int | None = None,
        decay: float = 0.95,
        exploration: float = 0.3,
        base_sampler: BaseSampler | None = None,
        param_name: str = "strategy",
        failure_reward: float | None = 0.0,
        clip_negative: bool = True,
        per_llm_call: bool = True,
        prior_reward: float | None = 0.0,
    ) -> None:
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0
        ):
            raise ConfigurationError(f"seed must be None or a non-negative int, got {seed!r}.")
        if not _is_real(decay) or not 0.0 < decay <= 1.0:
            raise ConfigurationError(f"decay must be a number in (0, 1], got {decay!r}.")
        if not _is_real(exploration) or not 0.0 <= exploration < math.inf:
            raise ConfigurationError(
                f"exploration must be a finite number >= 0, got {exploration!r}."
            )
        if base_sampler is not None and not isinstance(base_sampler, BaseSampler):
            raise TypeError(
                "base_sampler must be an optuna.samplers.BaseSampler or None, got "
                f"{type(base_sampler).__name__}."
            )
        if not isinstance(param_name, str) or not param_name:
            raise ConfigurationError(f"param_name must be a non-empty str, got {param_name!r}.")
        if failure_reward is not None and (
            not _is_real(failure_reward) or not math.isfinite(failure_reward)
        ):
            raise ConfigurationError(
                f"failure_reward must be a finite number or None, got {failure_reward!r}."
            )
        if not isinstance(clip_negative, bool):
            raise ConfigurationError(f"clip_negative must be a bool, got {clip_negative!r}.")
        self._seed = None if seed is None else int(seed)
        self._decay = float(decay)
        self._exploration = float(exploration)
        self._base_sampler = TPESampler(seed=self._seed) if base_sampler is None else base_sampler
        self._param_name = param_name
        self._failure_reward = None if failure_reward is None else float(failure_reward)
        self._clip_negative = clip_negative
        if not isinstance(per_llm_call, bool):
            raise ConfigurationError(f"per_llm_call must be a bool, got {per_llm_call!r}.")
        self._per_llm_call = per_llm_call
        if prior_reward is not None and (
            not _is_real(prior_reward) or not math.isfinite(prior_reward)
        ):
            raise ConfigurationError(
                f"prior_reward must be a finite number or None, got {prior_reward!r}."
            )
        self._prior_reward = None if prior_reward is None else float(prior_reward)
        self._rng = np.random.default_rng()  # used only when seed is None
        self._rewards: _Rewards | None = None
        self._lock = threading.Lock()  # Optuna's n_jobs > 1 shares one sampler across threads

    @property
    def base_sampler(self) -> BaseSampler:
        """The sampler of every parameter other than ``param_name``."""
        return self._base_sampler

    # -- delegation ----------------------------------------------------------------------------

    def reseed_rng(self) -> None:
        # A seeded bandit already draws from (seed, trial number), distinct for every trial.
        self._rng = np.random.default_rng()
        self._base_sampler.reseed_rng()

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        search_space = self._base_sampler.infer_relative_search_space(study, trial)
        return {name: d for name, d in search_space.items() if name != self._param_name}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        search_space = {n: d for n, d in search_space.items() if n != self._param_name}
        return self._base_sampler.sample_relative(study, trial, search_space)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._base_sampler.before_trial(study, trial)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._base_sampler.after_trial(study, trial, state, values)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        if param_name != self._param_name:
            return self._base_sampler.sample_independent(
                study, trial, param_name, param_distribution
            )
        if not isinstance(param_distribution, CategoricalDistribution):
            raise ConfigurationError(
                f"StrategyBandit picks {param_name!r} with a bandit, so it must be suggested "
                f"with suggest_categorical, not as {type(param_distribution).__name__}."
            )
        return self._pick(study, trial.number, param_distribution.choices)

    # -- the bandit ----------------------------------------------------------------------------

    def arm_statistics(
        self, study: Study, choices: Sequence[CategoricalChoiceType] | None = None
    ) -> dict[CategoricalChoiceType, ArmStatistics]:
        """What the bandit would weigh if it picked for the next trial of ``study``.

        Args:
            study: The study; its trials are read from storage.
            choices: The arms to report; default every arm some trial has picked.

        Returns:
            The statistics of each arm, in the order of ``choices``.
        """
        with self._lock:
            trials = study.get_trials(deepcopy=False)
            running = self._refresh(study, trials, current=len(trials))
            rewards = self._rewards
            assert rewards is not None
            if choices is None:
                choices = list(dict.fromkeys([*rewards.sums, *running]))
            return self._statistics(rewards, running, list(choices))

    def _pick(
        self, study: Study, number: int, choices: Sequence[CategoricalChoiceType]
    ) -> CategoricalChoiceType:
        with self._lock:
            trials = study.get_trials(deepcopy=False)
            running = self._refresh(study, trials, current=number)
            assert self._rewards is not None
            statistics = self._statistics(self._rewards, running, list(choices))
        rng = self._rng if self._seed is None else np.random.default_rng([self._seed, number])
        indices = [s.index for s in statistics.values()]
        best = max(indices)
        if math.isinf(best):
            ties = [i for i, index in enumerate(indices) if math.isinf(index)]
        else:
            tolerance = _TIE_TOLERANCE * max(1.0, abs(best))
            ties = [i for i, index in enumerate(indices) if index >= best - tolerance]
        untried = [i for i in ties if _untried(list(statistics.values())[i])]
        if untried and self._prior_reward is not None:
            choice = choices[untried[0]]  # untried arms in the order the study lists them
        else:
            choice = choices[ties[int(rng.integers(len(ties)))] if len(ties) > 1 else ties[0]]
        if _logger.isEnabledFor(logging.DEBUG):
            _logger.debug(
                "Trial#%d: %s=%r; %s",
                number,
                self._param_name,
                choice,
                ", ".join(
                    f"{arm!r}: mean {s.mean_reward}, W {s.discounted_pulls:.3g}, "
                    f"index {s.index:.4g}"
                    for arm, s in statistics.items()
                ),
            )
        return choice

    def _refresh(self, study: Study, trials: list[FrozenTrial], current: int) -> dict[Any, int]:
        """Fold newly finished trials into the sums; return the running pulls per arm."""
        rewards = self._rewards
        if (
            rewards is None
            or rewards.storage is not study._storage
            or (rewards.study_id != study._study_id)
        ):
            signs = [1.0 if d == StudyDirection.MAXIMIZE else -1.0 for d in study.directions]
            rewards = self._rewards = _Rewards(study._storage, study._study_id, signs)
        rewards.advance(current, self._decay)
        start = rewards.scan_from
        if not (start < len(trials) and trials[start].number == start):
            start = 0  # numbers are not list positions (never seen in Optuna): scan everything
        running: dict[Any, int] = {}
        for trial in trials[start:]:
            if trial.number == current:
                continue
            arm = trial.params.get(self._param_name, _MISSING)
            if trial.state == TrialState.RUNNING:
                if arm is not _MISSING:
                    running[arm] = running.get(arm, 0) + 1
            elif trial.state in _FINISHED and trial.number not in rewards.folded:
                rewards.folded.add(trial.number)
                if arm is not _MISSING:
                    self._fold(rewards, trial, arm)
        while rewards.scan_from in rewards.folded:
            rewards.folded.discard(rewards.scan_from)
            rewards.scan_from += 1
        return running

    def _fold(self, rewards: _Rewards, trial: FrozenTrial, arm: Any) -> None:
        failed = trial.state == TrialState.FAIL
        if failed:
            if self._failure_reward is None:
                return
            reward = self._failure_reward
        elif trial.state == TrialState.PRUNED:
            reward = 0.0  # stopped as not promising: like a regression, clipped
        else:
            stored = trial.user_attrs.get(records.IMPROVEMENT)
            if len(rewards.signs) > 1:
                improvements = _finite_list(stored, len(rewards.signs))
                if improvements is None:
                    return  # the baseline, or a trial that never scored
                # Not dominated by its parent and not equal to it: better in some objective.
                signed = zip(rewards.signs, improvements, strict=True)
                improved = any(sign * improvement > 0.0 for sign, improvement in signed)
                reward = 1.0 if improved else 0.0
            else:
                improvement = _finite(stored)
                if improvement is None:
                    return  # the baseline, or a trial that never scored
                reward = rewards.signs[0] * improvement
                if self._clip_negative:
                    reward = max(reward, 0.0)
            if self._per_llm_call:
                reward /= _llm_calls(trial)
        rewards.advance(trial.number, self._decay)
        rewards.add(arm, reward, rewards.clock - trial.number, self._decay, failed)

    def _statistics(
        self, rewards: _Rewards, running: dict[Any, int], choices: list[Any]
    ) -> dict[Any, ArmStatistics]:
        total_weight = sum(s.weight for s in rewards.sums.values())
        pooled_mean, sigma = 0.0, 1.0
        if total_weight > 0.0:
            pooled_mean = sum(s.reward for s in rewards.sums.values()) / total_weight
            variance = sum(s.square for s in rewards.sums.values()) / total_weight
            variance -= pooled_mean**2
            if variance > 1e-24 * max(1.0, pooled_mean**2):
                sigma = math.sqrt(variance)
            elif pooled_mean != 0.0:
                sigma = abs(pooled_mean)
        # A running trial is a pull at the arm's current mean (the pooled mean for an arm with
        # no finished pull): it narrows that arm's bonus, so workers asking together spread.
        n_total = total_weight + sum(running.values())
        log_term = 2.0 * math.log(max(n_total, math.e))
        statistics = {}
        for arm in choices:
            sums = rewards.sums.get(arm, _Sums())
            count = running.get(arm, 0)
            weight = sums.weight + count
            mean_reward = sums.reward / sums.weight if sums.weight > 0.0 else None
            if sums.pulls + count == 0 and self._prior_reward is not None:
                prior_weight = max(self._decay**rewards.clock, 1e-300)  # one pull at trial 0
                bonus = math.sqrt(log_term / prior_weight)
                index = self._prior_reward + self._exploration * sigma * bonus
            elif sums.pulls + count == 0 or weight <= 0.0:
                index = math.inf
            else:
                mean = pooled_mean if mean_reward is None else mean_reward
                index = mean + self._exploration * sigma * math.sqrt(log_term / weight)
            statistics[arm] = ArmStatistics(
                pulls=sums.pulls,
                failures=sums.failures,
                running=count,
                discounted_pulls=sums.weight,
                mean_reward=mean_reward,
                index=index,
            )
        return statistics


def _untried(statistics: ArmStatistics) -> bool:
    return statistics.pulls + statistics.running == 0


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _finite(value: object) -> float | None:
    """``value`` as a float if it is a finite real number (not a bool), else None."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
        if math.isfinite(number):
            return number
    return None


def _finite_list(value: object, count: int) -> list[float] | None:
    """``value`` as ``count`` finite floats if it is a list of them, else None."""
    if not isinstance(value, list) or len(value) != count:
        return None
    result = []
    for item in value:
        number = _finite(item)
        if number is None:
            return None
        result.append(number)
    return result


def _llm_calls(trial: FrozenTrial) -> int:
    """The LLM calls a trial made, the optimizer's (``trace:llm``) and the agent's own
    (``trace:agent_llm``); at least 1."""
    return max(1, records.usage_total(trial.user_attrs)["calls"])
