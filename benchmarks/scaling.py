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
* CPU busy, CPU ms/trial: the whole machine's CPU use in the window (``/proc/stat``: the
  workers, the database server and anything else running), as a share of all cores and per
  completed trial. With ``cores x 1000 / CPU ms/trial`` trials/s the machine is saturated:
  beyond that no number of workers helps.
* duplicates: completed trials that evaluated a candidate an earlier completed trial had
  evaluated (trials that reused a stored score, ``trace:duplicate_of``, are not duplicates).
* lost: trials left RUNNING or failed by anything but the step itself.
* join: a study of ``--join-trials`` trials of the demo agent (its grader, once satisfied, asks
  for one more word, so every trial stores a new candidate): 30 trials run by trace_optuna, then
  copies of them, each with the same params, user attributes and optuna-dashboard note as the
  trial it copies, added with ``optuna.trial.create_trial`` and ``Study.add_trials`` in batches
  (minutes, where running 10,000 real trials took hours). Then ``--join-repeat`` fresh processes,
  one after another (imports done before the clock starts), each open the study as a worker
  does and run ``optimize(n_trials=1)``: seconds to open, until the trial is told (finished),
  and until ``optimize`` returned (it may save the figures after the trial); and, the number
  a user waits for, from the process's launch (interpreter start-up and imports included) until
  its first trial is told. The first joiner finds no figures saved; later ones find the figures
  the first saved, while they are fresh.
  ``--join-profile DIR`` writes a cProfile of the last join per storage and prints its top.

Usage::

    python benchmarks/scaling.py --quick     # 1, 2, 4 workers, 20 s, SQLite/PostgreSQL/Redis
    python benchmarks/scaling.py             # 1, 2, 4, 8 workers, 60 s; join at 10,000 trials
    python benchmarks/scaling.py --join      # the join alone (also: --storages "")
    python benchmarks/scaling.py --join --join-trials 1000 --join-storages sqlite
    python benchmarks/scaling.py --join --join-profile /tmp/join   # with a cProfile

The storages are the test servers (``TRACE_OPTUNA_TEST_POSTGRESQL``, ``TRACE_OPTUNA_TEST_REDIS``,
each in a fresh database/prefix dropped afterwards) and SQLite files in a temporary directory.
Tables go to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
from collections import Counter
import datetime
import json
import os
from pathlib import Path
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any
import uuid

from opto import trace
import optuna
from optuna.trial import TrialState

import trace_optuna as to
from trace_optuna import demo
from trace_optuna import records
from trace_optuna import testing
from trace_optuna.storage import resolve_storage
from trace_optuna.workers import App

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


class CPUSampler:
    """Samples the machine's busy and total CPU time (``/proc/stat``) twice a second."""

    def __init__(self) -> None:
        self.samples: list[tuple[datetime.datetime, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CPUSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with open("/proc/stat") as stat:
                fields = [int(v) for v in stat.readline().split()[1:]]
            idle = fields[3] + fields[4]  # idle + iowait
            self.samples.append((datetime.datetime.now(), sum(fields) - idle, sum(fields)))
            if self._stop.wait(0.5):
                return

    def busy(self, start: datetime.datetime, end: datetime.datetime) -> tuple[float, float]:
        """(share of all cores busy, busy CPU seconds) between ``start`` and ``end``."""
        inside = [sample for sample in self.samples if start <= sample[0] <= end]
        if len(inside) < 2:
            return float("nan"), float("nan")
        (_, busy0, total0), (_, busy1, total1) = inside[0], inside[-1]
        ticks = os.sysconf("SC_CLK_TCK")
        return (busy1 - busy0) / max(1, total1 - total0), (busy1 - busy0) / ticks


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


def measure(url: str, study_name: str, processes: int, cpu: CPUSampler) -> dict[str, Any]:
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
    busy_share, busy_s = cpu.busy(start, end)
    return {
        "workers": processes,
        "seen_workers": len(by_worker),
        "cpu_busy": busy_share,
        "cpu_ms": 1000 * busy_s / len(inside) if inside else float("nan"),
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


def join_evaluate(agent: Any) -> to.Evaluation:
    """The demo grader; once it is satisfied, one more word forever (as ``soak.py``), so that
    every real trial of the join study stores a new candidate."""
    result = demo.evaluate(agent)
    if result.score < 1.0:
        return result
    words = int(agent.max_words.data)
    return to.Evaluation(
        score=1.0 + words * 1e-4,
        feedback="The reply is good. Increase max_words by 1.",
        output=result.output,
        details=result.details,
    )


join_app = App(
    agent=demo.make_agent,
    evaluate=join_evaluate,
    llm=to.LLM(demo.DEMO_LLM, simulated_seed=0),
    seed=0,
)


def fill(url: str, study_name: str, count: int, real: int = 30) -> None:
    """A study of ``count`` trials of the demo agent: ``real`` trials run by trace_optuna, then
    copies of them with the same params, user attributes (the same keys and sizes) and
    optuna-dashboard notes, added in batches with ``create_trial`` + ``add_trials``."""
    study = join_app.study(study_name=study_name, storage=url)
    study.figure_interval = None  # no figures yet: the first joining worker finds them stale
    study.optimize(n_trials=real)
    templates = [
        t
        for t in study.optuna.get_trials(deepcopy=False)
        if t.state == TrialState.COMPLETE and t.number > 0
    ]
    # Each trial's optuna-dashboard note: study system attributes "dashboard:<trial id>:...".
    storage, study_id = study.optuna._storage, study.optuna._study_id
    system_attrs = storage.get_study_system_attrs(study_id)
    notes = {
        template._trial_id: {
            key.removeprefix(f"dashboard:{template._trial_id}:"): value
            for key, value in system_attrs.items()
            if key.startswith(f"dashboard:{template._trial_id}:")
        }
        for template in templates
    }
    keys = statistics.mean(len(t.user_attrs) for t in templates)
    size = statistics.mean(len(json.dumps(t.user_attrs)) for t in templates)
    note_keys = statistics.mean(len(note) for note in notes.values())
    log(
        f"  {len(templates)} real trials to copy: {keys:.1f} user attributes, {size:,.0f} bytes "
        f"of JSON, {note_keys:.1f} note keys a trial"
    )
    batch = 500
    started = time.perf_counter()
    for first in range(real, count, batch):
        models = [templates[i % len(templates)] for i in range(first, min(first + batch, count))]
        study.optuna.add_trials(
            [
                optuna.trial.create_trial(
                    params=model.params,
                    distributions=model.distributions,
                    value=model.value,
                    user_attrs=model.user_attrs,
                )
                for model in models
            ]
        )
        added = study.optuna.get_trials(deepcopy=False)[first : first + len(models)]
        for trial, model in zip(added, models, strict=True):
            for suffix, value in notes[model._trial_id].items():
                storage.set_study_system_attr(
                    study_id, f"dashboard:{trial._trial_id}:{suffix}", value
                )
        log(
            f"  filled {first + len(models):,} / {count:,} ({time.perf_counter() - started:.0f} s)"
        )


JOIN_CODE = """
import sys, time
sys.path.insert(0, {here!r})
import optuna
import scaling
optuna.logging.set_verbosity(optuna.logging.WARNING)
told = []
profile = None
if {profile!r}:
    import cProfile
    profile = cProfile.Profile()
    profile.enable()
started = time.perf_counter()
study = scaling.join_app.study(study_name={name!r}, storage={url!r})
opened = time.perf_counter()
study.optimize(
    n_trials=1, callbacks=[lambda study, trial: told.append((time.perf_counter(), time.time()))]
)
done = time.perf_counter()
if profile is not None:
    profile.disable()
    profile.dump_stats({profile!r})
print("joined with", scaling.to.__file__, file=sys.stderr)
print(opened - started, told[0][0] - started, done - started, told[0][1])
"""


def join_time(url: str, study_name: str, profile: str = "") -> tuple[float, float, float, float]:
    """A fresh process joins the study: seconds to open it, to finish its first trial (told),
    until ``optimize`` returned (after what it does once the trial is told: figures), all
    counted once its imports are done; and from its launch until its first trial was told."""
    code = JOIN_CODE.format(here=str(HERE), name=study_name, url=url, profile=profile)
    launched = time.time()
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"the joining worker failed:\n{result.stderr[-3000:]}")
    log("  " + result.stderr.strip().splitlines()[-1])
    opened, told, returned, told_at = (float(v) for v in result.stdout.split()[-4:])
    return opened, told, returned, told_at - launched


def print_profile(path: str, top: int = 25) -> None:
    """The top entries of a join's cProfile, by cumulative time, to stderr."""
    import io
    import pstats

    out = io.StringIO()
    pstats.Stats(path, stream=out).sort_stats("cumulative").print_stats(top)
    log(out.getvalue())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1, 2, 4 workers; 20 s each")
    parser.add_argument("--no-join", action="store_true", help="skip the join measurement")
    parser.add_argument(
        "--join", action="store_true", help="the join measurement alone (no throughput runs)"
    )
    parser.add_argument("--storages", default="postgresql,sqlite,redis")
    parser.add_argument("--workers", default=None, help="comma-separated (default 1,2,4,8)")
    parser.add_argument("--seconds", type=float, default=None, help="per run (default 60)")
    parser.add_argument("--latency", type=float, default=0.5, help="simulated s per LLM call")
    parser.add_argument("--join-trials", type=int, default=10_000)
    parser.add_argument("--join-storages", default="sqlite,postgresql,redis")
    parser.add_argument(
        "--join-repeat", type=int, default=2, help="fresh workers joining one after another"
    )
    parser.add_argument(
        "--join-profile", default="", help="directory for a cProfile of each storage's last join"
    )
    args = parser.parse_args()
    if args.join:
        args.storages = ""
    # SIGTERM runs the cleanup below too: the databases made for the run are dropped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
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
                    with CPUSampler() as cpu:
                        run_workers(url, name, processes, seconds, args.latency)
                    row = measure(url, name, processes, cpu)
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
                name = f"scaling-join-{uuid.uuid4().hex[:6]}"
                log(f"{kind}: filling a study of {args.join_trials:,} trials ...")
                fill(url, name, args.join_trials)
                for attempt in range(1, args.join_repeat + 1):
                    profile = ""
                    if args.join_profile and attempt == args.join_repeat:
                        Path(args.join_profile).mkdir(parents=True, exist_ok=True)
                        profile = str(Path(args.join_profile) / f"join-{kind}.pstats")
                    load = os.getloadavg()[0]
                    times = join_time(url, name, profile)
                    worker = f"{attempt} (cProfile)" if profile else str(attempt)
                    join_rows.append((kind, args.join_trials, worker, *times, load))
                    log(f"  join {attempt}: {times} (load average {load:.1f})")
                    if profile:
                        print_profile(profile)
        finally:
            for server in servers:
                server.drop()
    print(
        f"\nThroughput ({args.latency} s simulated LLM latency per call, {seconds:.0f} s runs, "
        f"{os.cpu_count()} CPUs)\n"
    )
    print(
        "| storage | workers | trials/s | ratio to linear | db ms/trial | CPU busy | "
        "CPU ms/trial | duplicates | lost |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['kind']} | {row['workers']} | {row['trials_per_s']:.2f} | "
            f"{row['ratio']:.2f} | {row['db_ms']:.0f} | {row['cpu_busy']:.0%} | "
            f"{row['cpu_ms']:.0f} | {row['duplicates']} | {row['lost']} |"
        )
    print(
        "\nA fresh worker joining a big study of the demo agent (one after another; the first "
        "three times counted once its imports are done, the last from its process's launch)\n"
    )
    print(
        "| storage | trials | worker | open the study s | open + first trial told s | "
        "optimize returned s | launch to first trial told s | load average |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for kind, count, worker, opened, told, returned, launched, load in join_rows:
        print(
            f"| {kind} | {count:,} | {worker} | {opened:.2f} | {told:.2f} | {returned:.2f} | "
            f"{launched:.2f} | {load:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
