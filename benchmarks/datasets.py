"""Dataset studies (issue 14): what the per-example cache, minibatch acceptance, Pareto parents
and more workers cost and give, on ``examples/dataset.py``'s task.

The task: 60 orders (30 train, 18 validation, 12 test, split seed 0), an agent with a trainable
function, a number and a prompt; the grader says what is wrong, never the fix (``expected "96.00
EUR", got "120.00": the total is too large; the currency is missing.``). The optimizer is the
simulated model (``simulated/feedback-follower``): a rule-following simulation, not a language
model, so the numbers measure the machinery, not what a real model would do. Each run is a
fresh study of ``--trials`` trials (minibatch ``--minibatch``) on a fresh SQLite file (or a
fresh PostgreSQL database, ``--storage postgresql``), in its own process; seeds 0..N-1 seed the
study (its minibatches, its sampler) and the simulated model.

Arms (each changes one thing from ``cache``):

* ``cache``: one worker, the per-example cache, GEPA's acceptance, ``parent_selection="best"``.
* ``no-cache``: the store never reads a row for a score: every (candidate, example) a step asks
  a score for is run again (a benchmark-local ``ExampleStore`` whose ``evaluate`` runs every
  pair; the store has no switch for this, so it is run for real, not computed from the rows).
  The examples are deterministic, but the search is not the same as ``cache``'s: running more
  examples creates more Trace nodes, so the prompts differ in their node names (``eval44``
  for ``eval41``), and the simulated model seeds its step sizes by the prompt; a difference in
  the final scores is one more draw, like another seed.
* ``no-acceptance``: every candidate is validated, also when it is worse than its parent on the
  minibatch (a benchmark-local wrapper of ``trace_optuna.dataset.acceptance``; no option).
* ``pareto``: ``parent_selection="pareto"`` (GEPA's instance front).
* ``4 workers``: four worker processes on one study (the same total of trials, stopped by
  ``optuna.study.MaxTrialsCallback``). With today's in-process ``ExampleStore`` backend each
  worker has its own rows, so pairs are repeated across workers; the shared SQL/Redis backend
  (the issue-14-store branch) removes them.

Columns (sums over the run; medians over seeds in the table, all values in the JSON):

* ``trials``: trials the study ran (the 4-worker arm may run a few more, already started).
* ``run() calls``: every call of the task's ``run(agent, example)``: examples actually run.
* ``val runs``: the validation examples among them.
* ``repeats``: (candidate, split, example) pairs run for a score more than once (the cache's
  target: 0), over all workers.
* ``rejected``: candidates worse than their parent on the minibatch (not validated, unless the
  arm is ``no-acceptance``).
* ``graph re-runs``: the parent's minibatch re-run live in each step for its Trace graph (the
  backward pass needs it; the cache still serves its scores). ``run() calls`` = pairs run for a
  score + graph re-runs.
* ``LLM calls``: the optimizer's calls (``trace:llm``).
* ``val``, ``test``: the best trial's validation mean and its test-set mean (``trace:test``).

Usage::

    python benchmarks/datasets.py --quick      # 2 seeds (about 2 minutes)
    python benchmarks/datasets.py              # 5 seeds
    python benchmarks/datasets.py --arms cache,no-cache --seeds 3 --storage postgresql

The table goes to stdout, progress to stderr, every run as JSON to
``benchmarks/results/datasets.json``.
"""

from __future__ import annotations

import argparse
from collections import Counter
import importlib.util
import json
import os
from pathlib import Path
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any
import uuid

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "dataset.py"
RESULTS = HERE / "results" / "datasets.json"
ARMS = ("cache", "no-cache", "no-acceptance", "pareto", "4 workers")
WORKERS = 4
LLM = "simulated/feedback-follower"


# -- one run, in its own process -------------------------------------------------------------


class Counters:
    """What one process ran: every ``run`` call, and each pair run for a score."""

    def __init__(self) -> None:
        self.run_calls = 0
        self.pairs: Counter[tuple[str, str, str]] = Counter()

    def as_json(self) -> dict[str, Any]:
        return {"run_calls": self.run_calls, "pairs": [[*key, n] for key, n in self.pairs.items()]}


def load_task() -> Any:
    spec = importlib.util.spec_from_file_location("orders_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    task = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(task)
    return task


def instrument(arm: str, counters: Counters) -> None:
    """Count the pairs the study's store runs; for ``no-cache`` and ``no-acceptance``, install
    the benchmark-local variants (see the module docstring)."""
    from trace_optuna import dataset
    from trace_optuna import records
    from trace_optuna.example_results import ExampleStore
    from trace_optuna.example_results import Lookup

    class CountingStore(ExampleStore):
        def evaluate(self, candidate, split, examples, run_missing, *, trial_number):  # type: ignore[no-untyped-def]
            lookup = super().evaluate(
                candidate, split, examples, run_missing, trial_number=trial_number
            )
            for example_id in lookup.ran:
                counters.pairs[(candidate, split, example_id)] += 1
            return lookup

    class NoCacheStore(ExampleStore):
        def evaluate(self, candidate, split, examples, run_missing, *, trial_number):  # type: ignore[no-untyped-def]
            rows = list(run_missing(list(examples)))  # every pair, whatever is stored
            self.put(rows)
            ran = [example_id for example_id, _ in examples]
            for example_id in ran:
                counters.pairs[(candidate, split, example_id)] += 1
            return Lookup(rows, ran)

    dataset.ExampleStore = NoCacheStore if arm == "no-cache" else CountingStore  # type: ignore[misc]
    if arm == "no-acceptance":
        acceptance = dataset.acceptance

        def accept_all(parent, candidate, better):  # type: ignore[no-untyped-def]
            attrs = acceptance(parent, candidate, better)
            attrs[records.VALIDATED] = True  # trace:accepted still says what the rule said
            attrs.pop(records.IMPROVEMENT, None)  # the step sets it from the validation mean
            return attrs

        dataset.acceptance = accept_all  # type: ignore[assignment]


def open_study(task: Any, arm: str, seed: int, url: str, args: argparse.Namespace) -> Any:
    import trace_optuna as to

    data = to.Dataset(task.make_orders(), id=lambda order: order["id"])
    train, val, test = data.split(0.5, 0.3, 0.2, seed=0)
    counting_run = getattr(task, "counting_run", task.run)
    return to.create_study(
        study_name="orders",
        storage=url,
        agent=task.OrderAgent,
        evaluate=counting_run,
        llm=to.LLM(LLM, simulated_seed=seed, simulated_noise=args.noise),
        trainset=train,
        valset=val,
        testset=test,
        minibatch_size=args.minibatch,
        parent_selection="pareto" if arm == "pareto" else "best",
        error_score=0.0,
        seed=seed,
        figure_interval=None,
        load_if_exists=True,
    )


def optimize(arm: str, seed: int, url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run this process's trials of the study; return its counters."""
    from optuna.study import MaxTrialsCallback

    counters = Counters()
    instrument(arm, counters)
    task = load_task()

    def counting_run(agent: Any, order: Any) -> Any:
        counters.run_calls += 1
        return task.run(agent, order)

    task.counting_run = counting_run
    study = open_study(task, arm, seed, url, args)
    stop = MaxTrialsCallback(args.trials, states=None)
    study.optimize(n_trials=args.trials, callbacks=[stop])
    return counters.as_json()


def run_arm(arm: str, seed: int, url: str, args: argparse.Namespace) -> dict[str, Any]:
    """One run of an arm: its study, and what it measured."""
    started = time.perf_counter()
    if arm == "4 workers":
        open_study(load_task(), arm, seed, url, args)  # created and bound once, then joined
        outputs = []
        with tempfile.TemporaryDirectory() as directory:
            processes = []
            for index in range(WORKERS):
                out = Path(directory) / f"worker-{index}.json"
                outputs.append(out)
                command = [sys.executable, __file__, "--worker", arm, "--seed", str(seed)]
                command += ["--url", url, "--out", str(out), *forwarded(args)]
                processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL))
            for process in processes:
                if process.wait(timeout=900) != 0:
                    raise RuntimeError(f"a worker of {arm!r} (seed {seed}) failed")
            parts = [json.loads(out.read_text()) for out in outputs]
    else:
        parts = [optimize(arm, seed, url, args)]
    seconds = time.perf_counter() - started
    return summarize(arm, seed, url, parts, seconds)


def summarize(
    arm: str, seed: int, url: str, parts: list[dict[str, Any]], seconds: float
) -> dict[str, Any]:
    import optuna

    import trace_optuna as to
    from trace_optuna import records

    pairs: Counter[tuple[str, str, str]] = Counter()
    for part in parts:
        for candidate, split, example_id, count in part["pairs"]:
            pairs[(candidate, split, example_id)] += count
    run_calls = sum(part["run_calls"] for part in parts)
    scored = sum(pairs.values())
    study = optuna.load_study(study_name="orders", storage=url)
    trials = study.get_trials(deepcopy=False)
    llm_calls = sum((t.user_attrs.get(records.LLM) or {}).get("calls", 0) for t in trials)
    validated = sum(1 for t in trials if t.user_attrs.get(records.VALIDATED))
    reader = to.load_study(study_name="orders", storage=url)  # the study's own best rule
    test = reader.test_result or {}
    return {
        "arm": arm,
        "seed": seed,
        "seconds": round(seconds, 1),
        "trials": len(trials),
        "states": dict(Counter(t.state.name for t in trials)),
        "run_calls": run_calls,
        "val_runs": sum(n for (_, split, _), n in pairs.items() if split == "val"),
        "repeats": sum(n - 1 for n in pairs.values() if n > 1),
        "graph_reruns": run_calls - scored,
        "llm_calls": llm_calls,
        "validated": validated,
        "rejected": sum(1 for t in trials if t.user_attrs.get(records.ACCEPTED) is False),
        "val": reader.best_value,
        "test": test.get("mean"),
    }


def forwarded(args: argparse.Namespace) -> list[str]:
    return [
        "--trials", str(args.trials), "--minibatch", str(args.minibatch),
        "--noise", str(args.noise),
    ]  # fmt: skip


# -- the driver ------------------------------------------------------------------------------


def storage_url(kind: str, directory: Path) -> tuple[str, Any]:
    if kind == "sqlite":
        return f"sqlite:///{directory / f'datasets-{uuid.uuid4().hex[:8]}.db'}", None
    from trace_optuna import testing

    server = testing.ServerDatabase(kind)
    return server.url, server


COLUMNS = (
    ("trials", "trials"),
    ("run_calls", "run() calls"),
    ("val_runs", "val runs"),
    ("repeats", "repeats"),
    ("graph_reruns", "graph re-runs"),
    ("rejected", "rejected"),
    ("llm_calls", "LLM calls"),
    ("val", "val"),
    ("test", "test"),
)


def table(results: list[dict[str, Any]], arms: list[str]) -> str:
    lines = [
        "| arm | " + " | ".join(title for _, title in COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    for arm in arms:
        runs = [result for result in results if result["arm"] == arm]
        cells = []
        for key, _ in COLUMNS:
            values = [run[key] for run in runs if run[key] is not None]
            if not values:
                cells.append("-")
                continue
            median = statistics.median(values)
            text = f"{median:.3g}" if isinstance(median, float) else str(median)
            if key in ("val", "test") or min(values) == max(values):
                cells.append(text)
            else:
                cells.append(f"{text} [{min(values)}-{max(values)}]")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 seeds")
    parser.add_argument("--trials", type=int, default=15)
    parser.add_argument("--minibatch", type=int, default=6)
    parser.add_argument("--noise", type=float, default=0.0, help="the simulated model's noise")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--storage", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one worker process
    parser.add_argument("--run", help=argparse.SUPPRESS)  # internal: one run of an arm
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    if args.worker or args.run:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if args.worker:
            result = optimize(args.worker, args.seed, args.url, args)
        else:
            result = run_arm(args.run, args.seed, args.url, args)
        Path(args.out).write_text(json.dumps(result))
        return 0

    arms = [arm.strip() for arm in args.arms.split(",") if arm.strip()]
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        parser.error(f"unknown arms {unknown}; the arms are {list(ARMS)}")
    seeds = 2 if args.quick else args.seeds
    results: list[dict[str, Any]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory:
        for seed in range(seeds):
            for arm in arms:
                url, server = storage_url(args.storage, Path(directory))
                out = Path(directory) / "run.json"
                command = [sys.executable, __file__, "--run", arm, "--seed", str(seed)]
                command += ["--url", url, "--out", str(out), *forwarded(args)]
                try:
                    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, timeout=1800)
                finally:
                    if server is not None:
                        server.drop()
                result = json.loads(out.read_text())
                results.append(result)
                print(
                    f"seed {seed} {arm}: {result['seconds']} s, {result['run_calls']} runs, "
                    f"{result['repeats']} repeats, val {result['val']}, test {result['test']}",
                    file=sys.stderr,
                )
    seconds = time.perf_counter() - started
    machine = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average": [round(value, 1) for value in os.getloadavg()],
        "storage": args.storage,
    }
    print(
        f"Datasets: {seeds} seeds, {args.trials} trials, minibatch {args.minibatch}, noise "
        f"{args.noise}, {args.storage}, simulated model; {machine['cpus']} CPUs, load "
        f"{', '.join(map(str, machine['load_average']))}; {seconds:.0f} s. Medians over seeds "
        "[min-max]."
    )
    print(table(results, arms))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    settings = {"seeds": seeds, "trials": args.trials, "minibatch": args.minibatch}
    settings.update({"noise": args.noise, "machine": machine, "seconds": round(seconds, 1)})
    RESULTS.write_text(json.dumps({"settings": settings, "runs": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
