"""A long-running worker: memory, descriptors, connections and time per trial over 2,000 trials.

One worker process runs ``--trials`` trials of the demo agent (``trace_optuna.demo``) with the
simulated model, on a fresh SQLite file and a fresh PostgreSQL database. The demo's grader is
satisfied after about ten steps, after which every step would be a "no change" answer; so that
each of the 2,000 trials runs the agent, builds a Trace graph and stores a new candidate, the
soak's grader then keeps asking for one more word (``Increase max_words by 1.``, with a score that
grows by 1e-4 per word). At trials 100, 200, 500, 1,000 and 2,000 the worker reads:

* ``rss``: its resident memory (``/proc/self/status``, VmRSS), after a ``gc.collect()``;
* ``fds``: its open file descriptors (``/proc/self/fd``);
* ``db conns``: its database connections: sockets to PostgreSQL in ``pg_stat_activity`` whose
  client port is one of this process's, or descriptors open on the SQLite files;
* ``trace nodes``: nodes Trace's registry holds (``trace_optuna.graph.registered_nodes``);
* ``ms/trial``: mean wall time of the 100 trials before the checkpoint.

Part of a worker's memory grows with the study, by design: Optuna's storage caches every finished
trial in the process (``get_trials`` is served from it), and trace_optuna's population indexes
them. After the run a fresh process loads the finished study and reads all its trials once;
the Python memory that keeps (``tracemalloc``), per 1,000 trials, is printed as ``study
cache``, and the verdict compares the worker's growth after trial 200 with and without it.
Target (issue 8): RSS at trial 2,000 within 10% (or 20 MB, whichever is larger) of RSS at trial
200; descriptors and connections flat.

Usage::

    python benchmarks/soak.py                                # 2,000 trials, SQLite and PostgreSQL
    python benchmarks/soak.py --trials 500 --storages sqlite # quicker

The table goes to stdout, progress to stderr, every reading as JSON to
``benchmarks/results/soak.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import logging
import multiprocessing
import os
from pathlib import Path
import platform
import sys
import tempfile
import time
import tracemalloc
from typing import Any
import uuid

import optuna
import sqlalchemy

DEFAULT_POSTGRESQL_URL = "postgresql://postgres@127.0.0.1:5432/test"
RESULTS = Path(__file__).resolve().parent / "results" / "soak.json"
CHECKPOINTS = (100, 200, 500, 1000, 2000)


# -- the worker (a spawned process) --------------------------------------------------------------


def soak_evaluate(agent: Any) -> Any:
    """The demo grader; once it is satisfied, ask for one more word, forever."""
    from trace_optuna import demo
    from trace_optuna.evaluation import Evaluation

    result = demo.evaluate(agent)
    if result.score < 1.0:
        return result
    words = int(agent.max_words.data)
    return Evaluation(
        score=1.0 + words * 1e-4,
        feedback="The reply is good. Increase max_words by 1.",
        output=result.output,
        details=result.details,
    )


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _fds() -> list[str]:
    links = []
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            links.append(os.readlink(f"/proc/self/fd/{name}"))
    return links


def _local_ports() -> set[int]:
    """Local TCP ports of this process's sockets (from /proc/self/net/tcp and the fd inodes)."""
    inodes = {link[8:-1] for link in _fds() if link.startswith("socket:[")}
    ports = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _connections(kind: str, url: str, admin: sqlalchemy.engine.Engine | None) -> int:
    if kind == "sqlite":
        path = sqlalchemy.engine.make_url(url).database or ""
        return sum(link.startswith(path) for link in _fds())
    assert admin is not None
    ports = _local_ports()
    with admin.connect() as connection:
        rows = connection.execute(
            sqlalchemy.text("SELECT client_port FROM pg_stat_activity WHERE datname = :name"),
            {"name": sqlalchemy.engine.make_url(url).database},
        ).fetchall()
    return sum(1 for (port,) in rows if port in ports) - 1  # minus the admin connection


def worker(kind: str, url: str, trials: int, checkpoints: list[int], out: Any) -> None:
    """Run the soak study in this (fresh) process; send readings through ``out``."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("LiteLLM").setLevel(logging.ERROR)
    import trace_optuna as to
    from trace_optuna import demo
    from trace_optuna import graph

    admin = None
    if kind == "postgresql":
        admin = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    study = to.create_study(
        study_name="soak",
        storage=url,
        agent=demo.make_agent,
        evaluate=soak_evaluate,
        llm=demo.DEMO_LLM,
        strategies=["optoprime"],
        seed=0,
    )
    readings = []
    started = time.perf_counter()
    marks = {0: started}
    done = 0
    for checkpoint in checkpoints:
        study.optimize(n_trials=checkpoint - done)
        done = checkpoint
        marks[checkpoint] = time.perf_counter()
        gc.collect()
        window = study.optuna.get_trials(deepcopy=False)[max(0, checkpoint - 100) : checkpoint]
        durations = [
            (t.datetime_complete - t.datetime_start).total_seconds()
            for t in window
            if t.datetime_complete is not None and t.datetime_start is not None
        ]
        reading = {
            "trial": checkpoint,
            "rss_mb": round(_rss_mb(), 1),
            "fds": len(_fds()),
            "db_connections": _connections(kind, url, admin),
            "trace_nodes": graph.registered_nodes(),
            "ms_per_trial": round(1000 * sum(durations) / max(1, len(durations)), 1),
            "best": study.best_trial.value,
        }
        readings.append(reading)
        print(f"[{kind}] {reading}", file=sys.stderr, flush=True)
    out.send(readings)
    out.close()


def cache_cost(url: str, out: Any) -> None:
    """In a fresh process: the memory Optuna's cache of the finished study costs."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from trace_optuna.population import Population

    # Warm up on a one-trial study (SQLAlchemy's and Optuna's first-query costs), not on the
    # soak study: any read of a study fills Optuna's cache with all its finished trials.
    warm_up = optuna.create_study(study_name="warm-up", storage=url)
    warm_up.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    Population(optuna.load_study(study_name="warm-up", storage=url)).refresh()
    study = optuna.load_study(study_name="soak", storage=url)
    gc.collect()
    tracemalloc.start()
    population = Population(study)  # reads every trial through Optuna's cache, and indexes it
    population.refresh()
    gc.collect()
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    out.send({"trials": len(population.completed()), "mb": round(held / 2**20, 2)})
    out.close()


# -- the driver ----------------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_database(kind: str, postgresql_url: str) -> Any:
    """A fresh SQLite file or PostgreSQL database, removed afterwards."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            yield f"sqlite:///{directory}/soak.db"
        return
    admin = sqlalchemy.create_engine(postgresql_url, isolation_level="AUTOCOMMIT")
    name = f"soak_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        yield (
            sqlalchemy.engine.make_url(postgresql_url)
            .set(database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run_in_process(target: Any, *args: Any) -> Any:
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=target, args=(*args, send))
    process.start()
    send.close()
    result = receive.recv()
    process.join()
    return result


def verdict(readings: list[dict[str, Any]], cache_mb_per_trial: float) -> str:
    by_trial = {r["trial"]: r for r in readings}
    if 200 not in by_trial or len(by_trial) < 2:
        return "n/a (needs trial 200 and a later checkpoint)"
    base, last = by_trial[200], readings[-1]
    allowed = max(0.10 * base["rss_mb"], 20.0)
    growth = last["rss_mb"] - base["rss_mb"]
    study_growth = cache_mb_per_trial * (last["trial"] - 200)
    flat = all(r["fds"] == base["fds"] for r in readings if r["trial"] >= 200) and all(
        r["db_connections"] <= base["db_connections"] for r in readings if r["trial"] >= 200
    )
    return (
        f"RSS +{growth:.1f} MB from trial 200 to {last['trial']} (allowed {allowed:.1f} MB): "
        f"{'met' if growth <= allowed else 'MISSED'}; without the study cache "
        f"(+{study_growth:.1f} MB): +{growth - study_growth:.1f} MB: "
        f"{'met' if growth - study_growth <= allowed else 'MISSED'}; "
        f"descriptors and connections {'flat' if flat else 'NOT flat'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--storages", default="sqlite,postgresql")
    parser.add_argument("--postgresql-url", default=DEFAULT_POSTGRESQL_URL)
    args = parser.parse_args()
    checkpoints = [c for c in CHECKPOINTS if c < args.trials] + [args.trials]
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, optuna {optuna.__version__}",
        "date": datetime.date.today().isoformat(),
        "load_average": os.getloadavg(),
        "storages": {},
    }
    for kind in args.storages.split(","):
        with fresh_database(kind, args.postgresql_url) as url:
            readings = run_in_process(worker, kind, url, args.trials, checkpoints)
            cache = run_in_process(cache_cost, url)
        per_trial = cache["mb"] / max(1, cache["trials"])
        results["storages"][kind] = {
            "readings": readings,
            "study_cache_mb_per_1000_trials": round(per_trial * 1000, 1),
            "verdict": verdict(readings, per_trial),
        }
    load = ", ".join(f"{value:.1f}" for value in results["load_average"])
    print(f"Soak: {args.trials} trials, one worker; {results['machine']}; load {load}")
    print()
    print("| storage | trial | RSS MB | fds | db conns | Trace nodes held | ms/trial |")
    print("|---|---|---|---|---|---|---|")
    for kind, result in results["storages"].items():
        for r in result["readings"]:
            print(
                f"| {kind} | {r['trial']} | {r['rss_mb']} | {r['fds']} | {r['db_connections']} "
                f"| {r['trace_nodes']} | {r['ms_per_trial']} |"
            )
    print()
    for kind, result in results["storages"].items():
        print(
            f"{kind}: study cache {result['study_cache_mb_per_1000_trials']} MB per 1,000 "
            f"trials; {result['verdict']}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
