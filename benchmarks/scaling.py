"""Throughput of N worker processes on one study, and the time for a worker to join a big one.

What is measured:

* For each storage and N in ``--workers``: a fresh study, ``trace-optuna workers --processes N``
  running the app below (one number to push towards a far target, so every trial proposes a new
  candidate; the simulated model sleeps ``--latency`` seconds per call, standing for an LLM) for
  ``--seconds`` per worker. Throughput is counted in the steady window where all N workers were
  running trials: from the latest first-trial start to the earliest last-trial end, the trials
  completed inside it per second. Worker start-up (imports take seconds) is outside the window.
* ratio to linear: trials/s with N workers over N x trials/s with one.
* db ms/trial: the median of each trial's ``total_s - llm_s - evaluate_s`` (``trace:time``): the
  storage reads and writes and the framework around the step.
* duplicates: completed trials that evaluated a candidate an earlier completed trial had
  evaluated (trials that reused a stored score, ``trace:duplicate_of``, are not duplicates).
* lost: trials left RUNNING or failed by anything but the step itself.
* join: a study is filled with ``--join-trials`` copies of real trace_optuna trials; then a fresh
  process (imports done before the clock starts) opens it as a worker does and finishes one trial.

Usage::

    python benchmarks/scaling.py --quick     # 1, 2, 4 workers, 20 s, SQLite/PostgreSQL/Redis
    python benchmarks/scaling.py             # 1, 2, 4, 8 workers, 60 s; join at 10,000 trials

The storages are the test servers (``TRACE_OPTUNA_TEST_POSTGRESQL``, ``TRACE_OPTUNA_TEST_REDIS``,
each in a fresh database/prefix dropped afterwards) and SQLite files in a temporary directory.
Tables go to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
from collections import Counter
import os
from pathlib import Path
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any
import uuid

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from opto import trace  # noqa: E402
import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

import trace_optuna as to  # noqa: E402
from trace_optuna import records  # noqa: E402
from trace_optuna import testing  # noqa: E402
from trace_optuna.storage import resolve_storage  # noqa: E402
from trace_optuna.workers import App  # noqa: E402

HERE = Path(__file__).parent
TARGET = 10**9


@trace.bundle()
def reach(x):
    """The number itself."""
    return x


def make_agent() -> dict:
    return {"x": trace.node(1, name="x", trainable=True, description="a number to make larger")}


_waited = False


def _start_together() -> None:
    """The first evaluation of each worker waits until all N run a trial (or one finished)."""
    global _waited
    setting = os.environ.get("SCALING_BARRIER")
    if not setting or _waited:
        return
    _waited = True
    count, url, name = setting.split(" ", 2)
    study = optuna.load_study(
        study_name=name, storage=resolve_storage(url, heartbeat_interval=None)
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        states = [t.state for t in study.get_trials(deepcopy=False)]
        if states.count(TrialState.RUNNING) >= int(count) or TrialState.COMPLETE in states:
            return
        time.sleep(0.1)


def evaluate(agent: dict) -> to.Evaluation:
    _start_together()
    out = reach(agent["x"])
    gap = TARGET - out.data
    feedback = "x should be larger." if gap > 0 else "x should be smaller."
    return to.Evaluation(score=-abs(gap) / TARGET, feedback=feedback, output=out)


app = App(
    agent=make_agent,
    evaluate=evaluate,
    llm=to.LLM(
        "simulated/feedback-follower",
        simulated_latency=float(os.environ.get("SCALING_LATENCY", "0.5")),
    ),
    seed=0,
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_workers(url: str, study_name: str, processes: int, seconds: float, latency: float) -> None:
    env = dict(
        os.environ,
        PYTHONPATH=str(HERE),
        SCALING_LATENCY=str(latency),
        SCALING_BARRIER=f"{processes} {url} {study_name}",
    )
    # About `seconds` of work per worker once all have started (a trial is ~latency + 0.2 s).
    trials = max(processes, int(processes * seconds / (latency + 0.2)))
    command = [sys.executable, "-m", "trace_optuna", "workers", "--processes", str(processes)]
    command += ["--storage", url, "--study", study_name, "--app", "scaling:app"]
    command += ["--trials", str(trials)]
    subprocess.run(
        command, env=env, check=True, stdout=subprocess.DEVNULL, timeout=600 + seconds * 20
    )


def measure(url: str, study_name: str, processes: int) -> dict[str, Any]:
    study = optuna.load_study(
        study_name=study_name, storage=resolve_storage(url, heartbeat_interval=None)
    )
    trials = study.get_trials()
    finished = [t for t in trials if t.state.is_finished() and t.datetime_complete]
    by_worker: dict[int, list[optuna.trial.FrozenTrial]] = {}
    for trial in finished:
        by_worker.setdefault(trial.user_attrs[records.WORKER]["pid"], []).append(trial)
    start = max(min(t.datetime_start for t in group) for group in by_worker.values())
    end = min(max(t.datetime_complete for t in group) for group in by_worker.values())
    window = (end - start).total_seconds()
    inside = [
        t
        for t in finished
        if t.state == TrialState.COMPLETE
        and start <= t.datetime_start
        and t.datetime_complete <= end
    ]
    overhead = [
        t.user_attrs[records.TIME]["total_s"]
        - t.user_attrs[records.TIME]["llm_s"]
        - t.user_attrs[records.TIME]["evaluate_s"]
        for t in finished
        if records.TIME in t.user_attrs
    ]
    evaluated = Counter(
        t.user_attrs[records.SNAPSHOT_HASH]
        for t in trials
        if t.state == TrialState.COMPLETE and records.DUPLICATE_OF not in t.user_attrs
    )
    lost = sum(
        1
        for t in trials
        if t.state in (TrialState.RUNNING, TrialState.WAITING)
        or (t.state == TrialState.FAIL and records.ERROR not in t.user_attrs)
    )
    return {
        "workers": processes,
        "seen_workers": len(by_worker),
        "trials": len(trials),
        "trials_per_s": len(inside) / window if window > 0 else float("nan"),
        "window_s": window,
        "db_ms": 1000 * statistics.median(overhead) if overhead else float("nan"),
        "duplicates": sum(count - 1 for count in evaluated.values()),
        "lost": lost,
    }


def storage_url(kind: str, directory: Path) -> tuple[str, testing.ServerDatabase | None]:
    if kind == "sqlite":
        return f"sqlite:///{directory / f'scaling-{uuid.uuid4().hex[:6]}.db'}", None
    server = testing.ServerDatabase(kind)
    return server.url, server


def fill(url: str, study_name: str, count: int) -> None:
    """A study of ``count`` trials: a few real ones, then copies of them."""
    study = app.study(study_name=study_name, storage=url)
    study.optimize(n_trials=3)
    real = [t for t in study.trials if t.state == TrialState.COMPLETE]
    copies = []
    for index in range(count - len(study.trials)):
        model = real[1 + index % (len(real) - 1)]
        copies.append(
            optuna.trial.create_trial(
                params=model.params,
                distributions=model.distributions,
                value=model.value,
                user_attrs=model.user_attrs,
            )
        )
    batch = 500
    for first in range(0, len(copies), batch):
        study.optuna.add_trials(copies[first : first + batch])
        log(f"  filled {min(first + batch, len(copies)) + 3} / {count}")


JOIN_CODE = """
import sys, time
sys.path.insert(0, {here!r})
import scaling
started = time.perf_counter()
study = scaling.app.study(study_name={name!r}, storage={url!r})
opened = time.perf_counter()
study.optimize(n_trials=1)
done = time.perf_counter()
print(opened - started, done - started)
"""


def join_time(url: str, study_name: str) -> tuple[float, float]:
    code = JOIN_CODE.format(here=str(HERE), name=study_name, url=url)
    env = dict(os.environ, SCALING_LATENCY="0")
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    opened, first_trial = (float(v) for v in result.stdout.split()[-2:])
    return opened, first_trial


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1, 2, 4 workers; 20 s each")
    parser.add_argument("--no-join", action="store_true", help="skip the join measurement")
    parser.add_argument("--storages", default="postgresql,sqlite,redis")
    parser.add_argument("--workers", default=None, help="comma-separated (default 1,2,4,8)")
    parser.add_argument("--seconds", type=float, default=None, help="per run (default 60)")
    parser.add_argument("--latency", type=float, default=0.5, help="simulated s per LLM call")
    parser.add_argument("--join-trials", type=int, default=10_000)
    parser.add_argument("--join-storages", default="sqlite,postgresql")
    args = parser.parse_args()
    counts = [int(n) for n in (args.workers or ("1,2,4" if args.quick else "1,2,4,8")).split(",")]
    seconds = args.seconds or (20.0 if args.quick else 60.0)
    log(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()}")
    rows = []
    servers: list[testing.ServerDatabase] = []
    with tempfile.TemporaryDirectory() as directory:
        try:
            for kind in filter(None, args.storages.split(",")):
                base = None
                for processes in counts:
                    url, server = storage_url(kind, Path(directory))
                    if server is not None:
                        servers.append(server)
                    name = f"scaling-{kind}-{processes}"
                    log(f"{kind}: {processes} workers for {seconds:.0f} s ...")
                    run_workers(url, name, processes, seconds, args.latency)
                    row = measure(url, name, processes)
                    base = base or row["trials_per_s"]
                    row["kind"] = kind
                    row["ratio"] = row["trials_per_s"] / (processes * base)
                    rows.append(row)
                    log(f"  {row}")
            join_rows = []
            for kind in [] if args.no_join else args.join_storages.split(","):
                if not kind:
                    continue
                url, server = storage_url(kind, Path(directory))
                if server is not None:
                    servers.append(server)
                log(f"{kind}: filling a study of {args.join_trials} trials ...")
                fill(url, "scaling-join", args.join_trials)
                opened, first = join_time(url, "scaling-join")
                join_rows.append((kind, args.join_trials, opened, first))
        finally:
            for server in servers:
                server.drop()
    print(
        f"\nThroughput ({args.latency} s simulated LLM latency per call, {seconds:.0f} s runs, "
        f"{os.cpu_count()} CPUs)\n"
    )
    print("| storage | workers | trials/s | ratio to linear | db ms/trial | duplicates | lost |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['kind']} | {row['workers']} | {row['trials_per_s']:.2f} | "
            f"{row['ratio']:.2f} | {row['db_ms']:.0f} | {row['duplicates']} | {row['lost']} |"
        )
    print("\nA fresh worker joining a big study (process already started, imports done)\n")
    print("| storage | trials | open the study s | open + first trial s |")
    print("|---|---|---|---|")
    for kind, count, opened, first in join_rows:
        print(f"| {kind} | {count:,} | {opened:.2f} | {first:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
