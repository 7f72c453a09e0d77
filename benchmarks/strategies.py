"""Which way of choosing strategies solves a task in the fewest LLM calls.

Tasks (``benchmarks/tasks.py``; each scored in [0, 1] by a program, with a target score):
the Trace paper's numeric task (bring ``h(x)`` within 5% of ``y*`` with "larger"/"smaller"
feedback), a prompt whose grader reveals one missing requirement at a time, and a function
that must pass six hidden unit tests.

Arms, all on the same seeds (a seed fixes the task instance, the simulated model's seed and the
sampler's seed):

* ``plain``: Trace's own loop, no Optuna: ``opto.optimizers.OptoPrime(agent.parameters(),
  llm=...)`` then evaluate, ``zero_feedback``, ``backward``, ``step``. It keeps its current
  parameters whatever they score (no selection).
* one arm per registered strategy (``optoprime``, ``genetic``, ``evolutionary``, ``stop``, and
  Trace's other optimizers ``opro``, ``textgrad``, ``optoprime_multi``): a trace_optuna study
  offering that strategy alone, with the default sampler ``StrategyBandit(seed)``: with one
  strategy it has nothing to choose, and its settings are sampled by the same
  ``TPESampler(seed)`` as in the ``bandit`` arm, so the two arms differ only in which strategy
  runs.
* ``tpe``: all strategies, chosen by ``TPESampler(seed)``.
* ``bandit``: all strategies, chosen by ``trace_optuna.samplers.StrategyBandit(seed)``.

A run stops at the first candidate that reaches the target, at ``--max-trials`` trials (trial 0
is the unmodified agent; the plain loop's steps count as trials) or once it has used
``--max-calls`` LLM calls (the trial that crosses the cap finishes). LLM calls and tokens are
read from the trials' ``trace:llm`` records (``LLM.take_calls()`` for the plain loop), failed
trials included. A run that does not reach the target counts as infinitely many calls
(``inf``), so a median of ``inf`` means that half of the seeds or more did not reach it.

Every run is a fresh process forked from this one (two at a time by default), so Trace's node
names, and with them the prompts the simulated model hashes into its random draws, are the same
for every arm, and the result of a run does not depend on what ran before it.

Usage::

    python benchmarks/strategies.py                          # 10 seeds, noise 0.0 and 0.2
    python benchmarks/strategies.py --seeds 3 --tasks numeric --arms plain,optoprime,bandit
    python benchmarks/strategies.py --llm openai/gpt-4o-mini --seeds 3   # a real model

With a real model (``--llm``, its API key in the environment as litellm expects) the noise
levels do not apply; each run is paid for. Progress goes to stderr, the table and the verdicts
to stdout; the figure (median best score against LLM calls and against tokens, with the 25-75%
band) to ``--out`` (HTML with plotly.js embedded, so it opens offline) and every run as JSON
next to it.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from collections.abc import Sequence
import contextlib
import dataclasses
import datetime
import importlib
import io
import json
import logging
import math
import multiprocessing
import os
from pathlib import Path
import platform
import sys
import tempfile
import time
import traceback
from typing import Any

import optuna

import trace_optuna as to
from trace_optuna import records
from trace_optuna.strategies import base as strategies_base

with contextlib.redirect_stdout(io.StringIO()):  # trace-opt prints its LLM backend on import
    from opto.optimizers import OptoPrime
    from opto.trace import ExecutionError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tasks import TASK_NAMES  # noqa: E402
from tasks import Task  # noqa: E402
from tasks import make_task  # noqa: E402

SIMULATED = "simulated/feedback-follower"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "strategies.html"
PLAIN = "plain"
MIX_ARMS = ("tpe", "bandit")
BUILTIN_STRATEGIES = (
    "optoprime",
    "genetic",
    "evolutionary",
    "stop",
    "opro",
    "textgrad",
    "optoprime_multi",
)


# -- what is available ----------------------------------------------------------------------------


def available_strategies(notes: list[str]) -> list[str]:
    """The built-in strategies registered in trace_optuna, importing ``stop`` if it exists."""
    if "stop" not in strategies_base._REGISTRY:
        try:
            importlib.import_module("trace_optuna.strategies.stop")  # registers on import
        except Exception as error:  # being written: skip it, say why
            notes.append(f"strategy 'stop' is not available ({type(error).__name__}: {error})")
    found = [name for name in BUILTIN_STRATEGIES if name in strategies_base._REGISTRY]
    if "stop" not in found and not any("'stop'" in note for note in notes):
        notes.append("strategy 'stop' is not registered; runs without it")
    return found


def bandit_available(notes: list[str]) -> bool:
    """Whether ``trace_optuna.samplers.StrategyBandit`` imports (if not, says why in notes)."""
    try:
        from trace_optuna.samplers import StrategyBandit  # noqa: F401
    except Exception as error:
        notes.append(f"arm 'bandit' skipped: {type(error).__name__}: {error}")
        return False
    return True


def make_sampler(arm: str, seed: int) -> optuna.samplers.BaseSampler:
    """The sampler of a trace_optuna arm: TPE over all strategies, or the default bandit.

    A one-strategy arm gets the bandit too: it has nothing to choose there, and its settings
    come from the same ``TPESampler(seed)`` as the ``bandit`` arm's.
    """
    if arm == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    from trace_optuna.samplers import StrategyBandit

    return StrategyBandit(seed=seed)


# -- one run --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One (task, noise, arm, seed) run.

    Attributes:
        task: Task name.
        noise: The simulated model's noise, or None for a real model.
        arm: ``plain``, a strategy name, ``tpe`` or ``bandit``.
        seed: Seed of the task instance, the simulated model and the sampler.
        strategies: The strategies the mix arms choose from.
        llm: The litellm model string.
        max_trials: Trials per run, trial 0 (the starting agent) included.
        max_calls: LLM calls after which a run stops.
        repairs: The studies' ``repairs`` (None: the library's default).
    """

    task: str
    noise: float | None
    arm: str
    seed: int
    strategies: tuple[str, ...]
    llm: str
    max_trials: int
    max_calls: int
    repairs: int | None = None


@dataclasses.dataclass
class Progress:
    """The trials of one run as they finish, and when the target was first reached."""

    target: float
    calls: int = 0
    tokens: int = 0
    trials: int = 0
    failed: int = 0
    best: float = -math.inf
    calls_to_target: int | None = None
    tokens_to_target: int | None = None
    trials_to_target: int | None = None
    curve: list[list[float]] = dataclasses.field(default_factory=list)
    steps: list[list[Any]] = dataclasses.field(default_factory=list)
    strategy_trials: dict[str, int] = dataclasses.field(default_factory=dict)
    strategy_calls: dict[str, int] = dataclasses.field(default_factory=dict)

    def add(
        self,
        score: float | None,
        calls: int,
        tokens: int,
        strategy: str,
        improvement: float | None = None,
    ) -> None:
        """Account one finished trial (``score`` None when it failed)."""
        self.trials += 1
        self.calls += calls
        self.tokens += tokens
        self.strategy_trials[strategy] = self.strategy_trials.get(strategy, 0) + 1
        self.strategy_calls[strategy] = self.strategy_calls.get(strategy, 0) + calls
        if score is None:
            self.failed += 1
        else:
            self.best = max(self.best, score)
        if self.calls_to_target is None and self.best >= self.target:
            self.calls_to_target = self.calls
            self.tokens_to_target = self.tokens
            self.trials_to_target = self.trials
        self.curve.append([self.calls, self.tokens, self.best])
        self.steps.append([strategy, calls, tokens, score, improvement])

    @property
    def done(self) -> bool:
        return self.calls_to_target is not None


def make_llm(spec: RunSpec) -> to.LLM:
    """The run's model: the simulated one with the run's noise and seed, or the real one."""
    if spec.noise is None:
        return to.LLM(spec.llm)
    return to.LLM(spec.llm, simulated_noise=spec.noise, simulated_seed=spec.seed)


def run_plain(task: Task, llm: to.LLM, spec: RunSpec, progress: Progress) -> None:
    """Trace's own OptoPrime loop: evaluate, zero_feedback, backward, step; no selection."""
    agent = task.make_agent()
    optimizer = OptoPrime(agent.parameters(), llm=llm)
    result = _plain_evaluate(task, agent)
    progress.add(result.score, 0, 0, "baseline")
    previous = result.score
    while (
        not progress.done and progress.trials < spec.max_trials and progress.calls < spec.max_calls
    ):
        optimizer.zero_feedback()
        optimizer.backward(result.output, result.feedback)
        optimizer.step()
        calls = llm.take_calls()
        result = _plain_evaluate(task, agent)
        tokens = sum(call.prompt_tokens + call.completion_tokens for call in calls)
        progress.add(result.score, len(calls), tokens, PLAIN, result.score - previous)
        previous = result.score


def _plain_evaluate(task: Task, agent: Any) -> to.Evaluation:
    """``task.evaluate``, with what Trace's own loops do when the agent's code raises: the
    exception node is the output and its message the feedback (score 0). An error of the
    grader itself stops the plain loop, as it would stop the user's."""
    try:
        return task.evaluate(agent)
    except ExecutionError as error:
        node = error.exception_node
        return to.Evaluation(score=0.0, feedback=str(node.data), output=node)


def run_study(
    task: Task,
    llm: to.LLM,
    spec: RunSpec,
    progress: Progress,
    sampler: optuna.samplers.BaseSampler,
    strategies: Sequence[str],
) -> None:
    """A trace_optuna study on a fresh SQLite file, stopped at the target or the call cap."""

    def account(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        usage = records.decode(trial.user_attrs, records.LLM, {}) or {}
        tokens = int(usage.get("prompt_tokens", 0)) + int(usage.get("completion_tokens", 0))
        strategy = str(trial.user_attrs.get(records.STRATEGY, trial.params.get("strategy")))
        improvement = trial.user_attrs.get(records.IMPROVEMENT)
        progress.add(trial.value, int(usage.get("calls", 0)), tokens, strategy, improvement)
        if progress.done or progress.calls >= spec.max_calls:
            study.stop()

    with tempfile.TemporaryDirectory(prefix="trace-optuna-bench-") as directory:
        study = to.create_study(
            agent=task.make_agent,
            evaluate=task.evaluate,
            llm=llm,
            study_name=f"{spec.task}-{spec.arm}-{spec.seed}",
            storage=f"sqlite:///{directory}/study.db",
            strategies=list(strategies),
            sampler=sampler,
            seed=spec.seed,
            **({} if spec.repairs is None else {"repairs": spec.repairs}),
        )
        study.optimize(n_trials=spec.max_trials, callbacks=[account])


EVALUATIONS = [0]  # runs of the task's evaluate in this (forked, one-run) process


def counted(task: Task) -> Task:
    """``task`` with an ``evaluate`` that counts its runs in :data:`EVALUATIONS`."""

    def evaluate(agent: Any) -> to.Evaluation:
        EVALUATIONS[0] += 1
        return task.evaluate(agent)

    return dataclasses.replace(task, evaluate=evaluate)


def run_one(spec: RunSpec) -> dict[str, Any]:
    """Run one spec (in a fresh worker process) and return its result as plain data."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("trace_optuna").setLevel(logging.ERROR)
    started = time.perf_counter()
    task = counted(make_task(spec.task, spec.seed))
    progress = Progress(target=task.target)
    error = None
    try:
        llm = make_llm(spec)
        if spec.arm == PLAIN:
            run_plain(task, llm, spec, progress)
        else:
            strategies = spec.strategies if spec.arm in MIX_ARMS else (spec.arm,)
            sampler = make_sampler(spec.arm, spec.seed)
            run_study(task, llm, spec, progress, sampler, strategies)
    except Exception:
        error = traceback.format_exc()
    return {
        **dataclasses.asdict(spec),
        "target": task.target,
        "description": task.description,
        "reached": progress.done,
        "calls_to_target": progress.calls_to_target,
        "tokens_to_target": progress.tokens_to_target,
        "trials_to_target": progress.trials_to_target,
        "best_score": None if progress.best == -math.inf else progress.best,
        "calls": progress.calls,
        "evaluations": EVALUATIONS[0],
        "tokens": progress.tokens,
        "trials": progress.trials,
        "failed_trials": progress.failed,
        "strategy_trials": progress.strategy_trials,
        "strategy_calls": progress.strategy_calls,
        "curve": progress.curve,
        "steps": progress.steps,
        "seconds": round(time.perf_counter() - started, 3),
        "error": error,
    }


def run_all(specs: Sequence[RunSpec], jobs: int) -> list[dict[str, Any]]:
    """Run every spec, each in a fresh process forked from this one, ``jobs`` at a time."""
    context = multiprocessing.get_context("fork")
    results = []
    started = time.perf_counter()
    with context.Pool(processes=jobs, maxtasksperchild=1) as pool:
        for done, result in enumerate(pool.imap_unordered(run_one, specs, chunksize=1), 1):
            results.append(result)
            status = "ERROR" if result["error"] else ("reached" if result["reached"] else "-")
            log(
                f"{done}/{len(specs)} {result['task']} noise={result['noise']} "
                f"{result['arm']} seed={result['seed']}: {status}, {result['calls']} calls, "
                f"{result['seconds']:.1f} s (elapsed {time.perf_counter() - started:.0f} s)"
            )
            if result["error"]:
                log(result["error"])
    return results


# -- summary --------------------------------------------------------------------------------------


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (linear interpolation) of values that may include ``inf``."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    weight = position - low
    if weight == 0 or ordered[low] == ordered[high]:
        return ordered[low]
    if math.isinf(ordered[high]):
        return math.inf
    return ordered[low] + (ordered[high] - ordered[low]) * weight


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the table: an arm on a task at a noise level, over its seeds."""

    task: str
    noise: float | None
    arm: str
    runs: int
    reached: int
    errors: int
    calls: tuple[float, float, float]  # calls to target: p25, median, p75 (inf: not reached)
    tokens: float  # median tokens to target
    best: float  # median best score
    spent: float  # median LLM calls used by the run
    evaluations: float  # median runs of evaluate by the run
    failed: float  # median failed trials of the run
    mix: dict[str, float]  # share of trials per strategy (mix arms)


def summarise(results: Iterable[dict[str, Any]], arms: Sequence[str]) -> list[Row]:
    """One row per (task, noise, arm), in the order of the tasks, noise levels and arms."""
    groups: dict[tuple[str, float | None, str], list[dict[str, Any]]] = {}
    for result in results:
        groups.setdefault((result["task"], result["noise"], result["arm"]), []).append(result)
    rows = []
    for (task, noise, arm), runs in sorted(
        groups.items(),
        key=lambda item: (
            TASK_NAMES.index(item[0][0]),
            -1 if item[0][1] is None else item[0][1],
            arms.index(item[0][2]),
        ),
    ):
        calls = [math.inf if r["calls_to_target"] is None else r["calls_to_target"] for r in runs]
        tokens = [
            math.inf if r["tokens_to_target"] is None else r["tokens_to_target"] for r in runs
        ]
        best = [r["best_score"] if r["best_score"] is not None else 0.0 for r in runs]
        trials: dict[str, int] = {}
        for run in runs:
            for name, count in run["strategy_trials"].items():
                if name not in ("baseline", PLAIN):
                    trials[name] = trials.get(name, 0) + count
        total = sum(trials.values()) or 1
        rows.append(
            Row(
                task=task,
                noise=noise,
                arm=arm,
                runs=len(runs),
                reached=sum(r["reached"] for r in runs),
                errors=sum(1 for r in runs if r["error"]),
                calls=(quantile(calls, 0.25), quantile(calls, 0.5), quantile(calls, 0.75)),
                tokens=quantile(tokens, 0.5),
                best=quantile(best, 0.5),
                spent=quantile([r["calls"] for r in runs], 0.5),
                evaluations=quantile([r.get("evaluations", math.nan) for r in runs], 0.5),
                failed=quantile([r["failed_trials"] for r in runs], 0.5),
                mix={name: count / total for name, count in sorted(trials.items())}
                if arm in MIX_ARMS
                else {},
            )
        )
    return rows


def _number(value: float) -> str:
    if math.isinf(value):
        return "inf"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def _noise(noise: float | None) -> str:
    return "real" if noise is None else f"{noise:g}"


def format_table(rows: Sequence[Row]) -> str:
    """The table: reached, calls to target (median [p25-p75]), tokens, best score, the mix."""
    header = (
        f"{'task':<11} {'noise':>5} {'arm':<13} {'reached':>7} {'calls to target':>19} "
        f"{'tokens':>8} {'best':>6} {'spent':>6} {'evals':>6} {'failed':>6}  "
        "mix (share of trials)"
    )
    lines = [
        "Calls to target: median [25th-75th percentile] over seeds; a run that did not reach the "
        "target counts as inf. spent: median LLM calls of a run; evals: median runs of "
        "evaluate; failed: median failed trials.",
        header,
        "-" * len(header),
    ]
    previous = None
    for row in rows:
        if previous is not None and (row.task, row.noise) != previous:
            lines.append("")
        previous = (row.task, row.noise)
        low, median, high = row.calls
        calls = f"{_number(median)} [{_number(low)}-{_number(high)}]"
        mix = " ".join(f"{name}:{share:.0%}" for name, share in row.mix.items())
        if row.errors:
            mix = f"{row.errors} run(s) crashed; " + mix
        lines.append(
            f"{row.task:<11} {_noise(row.noise):>5} {row.arm:<13} "
            f"{f'{row.reached}/{row.runs}':>7} {calls:>19} {_number(row.tokens):>8} "
            f"{row.best:>6.3f} {_number(row.spent):>6} {_number(row.evaluations):>6} "
            f"{_number(row.failed):>6}  {mix}"
        )
    return "\n".join(lines)


def verdicts(rows: Sequence[Row], singles: Sequence[str]) -> list[dict[str, Any]]:
    """For each task and noise: does each mix arm need no more calls than the best single
    strategy, and fewer than the plain loop (medians of calls to target)?"""
    found = []
    by_group: dict[tuple[str, float | None], dict[str, Row]] = {}
    for row in rows:
        by_group.setdefault((row.task, row.noise), {})[row.arm] = row
    for (task, noise), arms in by_group.items():
        single_rows = [arms[name] for name in singles if name in arms]
        if not single_rows:
            continue
        best_single = min(single_rows, key=lambda row: (row.calls[1], -row.reached, row.calls[2]))
        plain = arms.get(PLAIN)
        for mix in MIX_ARMS:
            if mix not in arms:
                continue
            median = arms[mix].calls[1]
            found.append(
                {
                    "task": task,
                    "noise": noise,
                    "mix": mix,
                    "mix_calls": median,
                    "best_single": best_single.arm,
                    "best_single_calls": best_single.calls[1],
                    "plain_calls": None if plain is None else plain.calls[1],
                    "no_more_than_best_single": not math.isinf(median)
                    and median <= best_single.calls[1],
                    "fewer_than_plain": None
                    if plain is None
                    else (not math.isinf(median) and median < plain.calls[1]),
                }
            )
    return found


def format_efficiency(results: Iterable[dict[str, Any]]) -> str:
    """Per task, noise and strategy (over every arm that ran it): LLM calls per trial, the
    mean improvement over the parent per trial (regressions count 0) and per LLM call."""
    totals: dict[tuple[str, float | None, str], list[float]] = {}
    for result in results:
        for strategy, calls, _, _, improvement in result["steps"]:
            if strategy == "baseline":
                continue
            key = (result["task"], result["noise"], strategy)
            total = totals.setdefault(key, [0, 0, 0.0])
            total[0] += 1
            total[1] += calls
            total[2] += max(improvement or 0.0, 0.0)
    header = (
        f"{'task':<8} {'noise':>5} {'strategy':<13} {'trials':>6} {'calls/trial':>11} "
        f"{'gain/trial':>10} {'gain/call':>9}"
    )
    lines = ["Efficiency of each strategy (gain: improvement over the parent, >= 0)", header]
    previous = None
    for key in sorted(
        totals,
        key=lambda k: (TASK_NAMES.index(k[0]), -1 if k[1] is None else k[1], k[2] != PLAIN, k[2]),
    ):
        task, noise, strategy = key
        trials, calls, gain = totals[key]
        if previous is not None and (task, noise) != previous:
            lines.append("")
        previous = (task, noise)
        lines.append(
            f"{task:<8} {_noise(noise):>5} {strategy:<13} {trials:>6.0f} {calls / trials:>11.2f} "
            f"{gain / trials:>10.3f} {gain / max(calls, 1):>9.3f}"
        )
    return "\n".join(lines)


def format_verdicts(found: Sequence[dict[str, Any]]) -> str:
    """One line per task, noise and mix arm: met or missed, with the numbers."""
    lines = ["Targets (median LLM calls to target; inf: not reached by half the seeds or more):"]
    for item in found:
        single = "met" if item["no_more_than_best_single"] else "MISSED"
        plain = {True: "met", False: "MISSED", None: "n/a"}[item["fewer_than_plain"]]
        plain_calls = "n/a" if item["plain_calls"] is None else _number(item["plain_calls"])
        lines.append(
            f"  {item['task']:<8} noise={_noise(item['noise']):<4} {item['mix']:<7}"
            f"{_number(item['mix_calls']):>4} calls | <= best single "
            f"({item['best_single']} {_number(item['best_single_calls'])}): {single:<6} | "
            f"< plain ({plain_calls}): {plain}"
        )
    return "\n".join(lines)


# -- figure ---------------------------------------------------------------------------------------

_COLOURS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
)


@dataclasses.dataclass(frozen=True)
class Curve:
    """The median and 25-75% band of best-so-far over seeds, on a grid of calls or tokens."""

    task: str
    noise: float | None
    arm: str
    axis: str  # "calls" or "tokens"
    x: list[float]
    median: list[float]
    low: list[float]
    high: list[float]


def best_at(curve: Sequence[Sequence[float]], column: int, x: float) -> float:
    """Best score of a run once it has spent ``x`` (calls or tokens); a run that stopped
    earlier keeps its last best."""
    best = curve[0][2]
    for point in curve:
        if point[column] > x:
            break
        best = point[2]
    return best


def curves(results: Sequence[dict[str, Any]], points: int = 60) -> list[Curve]:
    """Median best-score curves against LLM calls and tokens for every (task, noise, arm)."""
    groups: dict[tuple[str, float | None, str], list[dict[str, Any]]] = {}
    for result in results:
        if result["curve"]:
            groups.setdefault((result["task"], result["noise"], result["arm"]), []).append(result)
    found = []
    for axis, column in (("calls", 0), ("tokens", 1)):
        limits: dict[tuple[str, float | None], float] = {}
        for (task, noise, _), runs in groups.items():
            top = max(run["curve"][-1][column] for run in runs)
            limits[(task, noise)] = max(limits.get((task, noise), 1.0), top)
        for (task, noise, arm), runs in groups.items():
            limit = limits[(task, noise)]
            grid = [limit * i / (points - 1) for i in range(points)]
            if axis == "calls":
                grid = sorted({round(x) for x in grid})
            values = [[best_at(run["curve"], column, x) for run in runs] for x in grid]
            found.append(
                Curve(
                    task,
                    noise,
                    arm,
                    axis,
                    grid,
                    [quantile(v, 0.5) for v in values],
                    [quantile(v, 0.25) for v in values],
                    [quantile(v, 0.75) for v in values],
                )
            )
    return found


def write_figure(found: Sequence[Curve], arms: Sequence[str], path: Path) -> None:
    """Rows: tasks; columns: LLM calls and tokens at each noise level. One colour per arm."""
    from plotly.subplots import make_subplots

    tasks = [name for name in TASK_NAMES if any(curve.task == name for curve in found)]
    noises = sorted({curve.noise for curve in found}, key=lambda n: -1 if n is None else n)
    columns = [(axis, noise) for noise in noises for axis in ("calls", "tokens")]
    figure = make_subplots(
        rows=len(tasks),
        cols=len(columns),
        subplot_titles=[
            f"{task}, noise {_noise(noise)}: vs LLM {axis}"
            for task in tasks
            for axis, noise in columns
        ],
        horizontal_spacing=0.04,
        vertical_spacing=0.08,
    )
    shown: set[str] = set()
    for curve in found:
        row = tasks.index(curve.task) + 1
        col = columns.index((curve.axis, curve.noise)) + 1
        colour = _COLOURS[arms.index(curve.arm) % len(_COLOURS)]
        figure.add_scatter(
            x=curve.x + curve.x[::-1],
            y=curve.high + curve.low[::-1],
            fill="toself",
            fillcolor=colour,
            opacity=0.12,
            line={"width": 0},
            hoverinfo="skip",
            legendgroup=curve.arm,
            showlegend=False,
            row=row,
            col=col,
        )
        figure.add_scatter(
            x=curve.x,
            y=curve.median,
            mode="lines",
            line={"color": colour, "shape": "hv"},
            name=curve.arm,
            legendgroup=curve.arm,
            showlegend=curve.arm not in shown,
            row=row,
            col=col,
        )
        shown.add(curve.arm)
    figure.update_yaxes(title_text="best score (median)", col=1)
    figure.update_layout(
        title="trace_optuna strategies: best score against LLM calls and tokens "
        "(median over seeds, 25-75% band)",
        height=330 * len(tasks),
        width=420 * len(columns),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.write_html(path, include_plotlyjs=True)  # embedded, so the page opens offline


# -- command line ---------------------------------------------------------------------------------


def log(message: str) -> None:
    stamp = datetime.datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


def _list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 (default 10)")
    parser.add_argument("--noise", default="0.0,0.2", help="simulated noise levels")
    parser.add_argument("--tasks", default=",".join(TASK_NAMES))
    parser.add_argument("--arms", default=None, help="default: every available arm")
    parser.add_argument("--max-trials", type=int, default=40)
    parser.add_argument("--max-calls", type=int, default=60)
    parser.add_argument("--llm", default=SIMULATED, help="litellm model string")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the HTML figure")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--repairs", type=int, default=None, help="the studies' repairs (default: the library's)"
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="report a saved run (the JSON this script wrote) again, without running",
    )
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.max_trials < 2 or args.max_calls < 1 or args.jobs < 1:
        parser.error("--seeds, --max-calls and --jobs must be >= 1, --max-trials >= 2")
    unknown = set(_list(args.tasks)) - set(TASK_NAMES)
    if unknown:
        parser.error(f"unknown tasks {sorted(unknown)}; valid: {list(TASK_NAMES)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json is not None:
        saved = json.loads(args.from_json.read_text())
        report(
            saved["runs"],
            saved["settings"]["arms"],
            saved["strategies"],
            saved["notes"],
            saved["seconds"],
            saved["settings"],
            args.out,
            write_json=False,
        )
        return 0
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    notes: list[str] = []
    singles = available_strategies(notes)
    all_arms = [PLAIN, *singles, "tpe"]
    if bandit_available(notes):
        all_arms.append("bandit")
    arms = all_arms if args.arms is None else _list(args.arms)
    unknown = [arm for arm in arms if arm not in all_arms]
    if unknown:
        print(f"Unknown or unavailable arms {unknown}; available: {all_arms}", file=sys.stderr)
        return 2
    simulated = args.llm.startswith("simulated/")
    noises: list[float | None] = [float(n) for n in _list(args.noise)] if simulated else [None]
    if not simulated:
        notes.append(f"real model {args.llm}: noise levels do not apply")
    tasks = _list(args.tasks)
    specs = [
        RunSpec(
            task,
            noise,
            arm,
            seed,
            tuple(singles),
            args.llm,
            args.max_trials,
            args.max_calls,
            args.repairs,
        )
        for seed in range(args.seeds)
        for task in tasks
        for noise in noises
        for arm in arms
    ]
    for note in notes:
        log(f"note: {note}")
    log(f"{len(specs)} runs, {args.jobs} at a time; strategies {singles}; arms {arms}")
    started = time.perf_counter()
    results = run_all(specs, args.jobs)
    seconds = time.perf_counter() - started
    settings = {
        **vars(args),
        "tasks": tasks,
        "arms": arms,
        "noise": noises,
        "out": str(args.out),
        "from_json": None,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    report(results, arms, singles, notes, seconds, settings, args.out, write_json=True)
    return 1 if any(result["error"] for result in results) else 0


def report(
    results: Sequence[dict[str, Any]],
    arms: Sequence[str],
    singles: Sequence[str],
    notes: Sequence[str],
    seconds: float,
    settings: dict[str, Any],
    out: Path,
    *,
    write_json: bool,
) -> None:
    """Print the table, the efficiency of each strategy and the verdicts; write the figure
    (and, with ``write_json``, every run as JSON next to it)."""
    rows = summarise(results, arms)
    found = verdicts(rows, [arm for arm in arms if arm in singles])
    print(format_table(rows))
    print()
    print(format_efficiency(results))
    print()
    print(format_verdicts(found))
    print()
    for note in notes:
        print(f"Note: {note}")
    print(
        f"{len(results)} runs in {seconds:.0f} s on {settings['cpus']} CPUs "
        f"({settings['jobs']} jobs); caps: {settings['max_trials']} trials, "
        f"{settings['max_calls']} LLM calls per run."
    )
    write_figure(curves(results), arms, out)
    print(f"Figure: {out}")
    if not write_json:
        return
    json_path = out.with_suffix(".json")
    json_path.write_text(
        json.dumps(
            {
                "settings": settings,
                "strategies": list(singles),
                "notes": list(notes),
                "seconds": round(seconds, 1),
                "rows": [
                    {**dataclasses.asdict(row), "calls": [_json(v) for v in row.calls]}
                    | {"tokens": _json(row.tokens)}
                    for row in rows
                ],
                "verdicts": [
                    {k: _json(v) if isinstance(v, float) else v for k, v in item.items()}
                    for item in found
                ],
                "runs": sorted(
                    results, key=lambda r: (r["task"], str(r["noise"]), r["arm"], r["seed"])
                ),
            },
            indent=1,
        )
    )
    print(f"Runs: {json_path}")


def _json(value: float) -> float | None:
    return None if math.isinf(value) or math.isnan(value) else value


if __name__ == "__main__":
    sys.exit(main())
