"""How often each Optuna sampler picks the best strategy: StrategyBandit against the stock ones.

A simulated study of 100 trials samples only ``strategy`` from four arms. Each trial's
improvement over its parent is drawn from its arm's normal distribution (sd ``--noise``) and
stored as ``trace:improvement``; the trial's value is its parent's score plus that improvement.
The table gives the share of trials ``--window`` (default 50-99) that picked the arm with the
best mean improvement at that trial, averaged over ``--seeds`` seeds (with the spread over
seeds). Problems:

* ``stationary``: the parent score stays 0, so the value is the improvement; means
  0.00, 0.05, 0.10, 0.20. Every sampler sees the true reward.
* ``drift``: the same improvements, but the parent score rises by ``--drift`` per trial, as a
  population's does, whatever arm ran. The value then says mostly *when* a trial ran: the case
  that misleads samplers ranking trials by value.
* ``switch``: stationary, but the best and the worst arm swap at trial 50 (with ``--all``).

Usage::

    python benchmarks/bandit.py                 # the four samplers on stationary and drift
    python benchmarks/bandit.py --all           # plus the switch problem and bandit variants

The table goes to stdout. Nothing is stored: every study is in memory.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import dataclasses
import functools
import statistics
import sys
import time
from typing import Any

import numpy as np
import optuna

from trace_optuna import records
from trace_optuna.samplers import StrategyBandit

ARMS = ("optoprime", "genetic", "evolutionary", "stop")
MEANS = (0.00, 0.05, 0.10, 0.20)


@dataclasses.dataclass(frozen=True)
class Problem:
    name: str
    means: Callable[[int], tuple[float, ...]]  # mean improvement of each arm at a trial number
    level: Callable[[int], float]  # the parent's score at a trial number


def problems(drift: float, include_switch: bool) -> list[Problem]:
    found = [
        Problem("stationary", lambda n: MEANS, lambda n: 0.0),
        Problem("drift", lambda n: MEANS, lambda n: drift * n),
    ]
    if include_switch:
        swapped = (MEANS[3], MEANS[1], MEANS[2], MEANS[0])
        found.append(Problem("switch", lambda n: MEANS if n < 50 else swapped, lambda n: 0.0))
    return found


def _bandit(seed: int, **kwargs: Any) -> StrategyBandit:
    return StrategyBandit(seed=seed, **kwargs)


def samplers(include_variants: bool) -> dict[str, Callable[[int], optuna.samplers.BaseSampler]]:
    found: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {
        "StrategyBandit": lambda seed: StrategyBandit(seed=seed),
        "StrategyBandit(prior_reward=None)": lambda seed: StrategyBandit(
            seed=seed, prior_reward=None
        ),
        "TPE": lambda seed: optuna.samplers.TPESampler(seed=seed),
        "Random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
        "NSGA-II(mutation_prob=0.05)": lambda seed: optuna.samplers.NSGAIISampler(
            seed=seed, mutation_prob=0.05
        ),
    }
    if include_variants:
        for exploration in (0.1, 0.5, 1.0):
            found[f"StrategyBandit(exploration={exploration})"] = functools.partial(
                _bandit, exploration=exploration
            )
        found["StrategyBandit(clip_negative=False)"] = lambda seed: StrategyBandit(
            seed=seed, clip_negative=False
        )
        found["StrategyBandit(decay=1.0)"] = lambda seed: StrategyBandit(seed=seed, decay=1.0)
        found["TPE(multivariate=True)"] = lambda seed: optuna.samplers.TPESampler(
            seed=seed, multivariate=True
        )
        found["NSGA-II(default)"] = lambda seed: optuna.samplers.NSGAIISampler(seed=seed)
        found["NSGA-II(mutation_prob=0.05, population_size=10)"] = lambda seed: (
            optuna.samplers.NSGAIISampler(seed=seed, mutation_prob=0.05, population_size=10)
        )
        found["QMC"] = lambda seed: optuna.samplers.QMCSampler(seed=seed)
    return found


def share_of_best(
    problem: Problem,
    make_sampler: Callable[[int], optuna.samplers.BaseSampler],
    seed: int,
    n_trials: int,
    window: range,
    noise: float,
) -> float:
    rng = np.random.default_rng(seed)
    study = optuna.create_study(direction="maximize", sampler=make_sampler(seed))
    hits = 0
    for number in range(n_trials):
        trial = study.ask()
        arm = ARMS.index(str(trial.suggest_categorical("strategy", ARMS)))
        means = problem.means(number)
        improvement = float(rng.normal(means[arm], noise))
        trial.set_user_attr(records.IMPROVEMENT, improvement)
        study.tell(trial, problem.level(number) + improvement)
        if number in window:
            hits += int(means[arm] == max(means))
    return hits / len(window)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--window", default="50-99", help="trial numbers scored, inclusive")
    parser.add_argument("--noise", type=float, default=0.1, help="sd of an improvement")
    parser.add_argument("--drift", type=float, default=0.02, help="parent score rise per trial")
    parser.add_argument("--all", action="store_true", help="the switch problem and variants")
    args = parser.parse_args(argv)
    low, high = (int(part) for part in args.window.split("-"))
    window = range(low, high + 1)

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    chosen_problems = problems(args.drift, args.all)
    rows = []
    for sampler_name, make_sampler in samplers(args.all).items():
        started = time.perf_counter()
        cells = []
        for problem in chosen_problems:
            shares = [
                share_of_best(problem, make_sampler, seed, args.trials, window, args.noise)
                for seed in range(args.seeds)
            ]
            cells.append((statistics.mean(shares), statistics.pstdev(shares)))
        rows.append((sampler_name, cells))
        print(f"{sampler_name}: {time.perf_counter() - started:.1f} s", file=sys.stderr)

    print(
        f"Share of picks of the best arm in trials {low}-{high} of {args.trials}, "
        f"mean (sd) over {args.seeds} seeds; improvement sd {args.noise}, arm means "
        f"{', '.join(f'{m:.2f}' for m in MEANS)}, drift {args.drift}/trial.\n"
    )
    width = max(len(name) for name, _ in rows)
    header = f"| {'sampler':<{width}} | " + " | ".join(f"{p.name:>12}" for p in chosen_problems)
    print(header + " |")
    print(f"|{'-' * (width + 2)}|" + "|".join("-" * 14 for _ in chosen_problems) + "|")
    for name, cells in rows:
        values = " | ".join(f"{mean:.2f} ({sd:.2f})".rjust(12) for mean, sd in cells)
        print(f"| {name:<{width}} | {values} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
