"""What ``import trace_optuna`` costs on top of ``import optuna, opto.trace``.

What is measured:

* For each statement below, ``--runs`` fresh Python processes, interleaved (so a change in
  machine load affects every statement alike), each timing the statement alone with
  ``time.perf_counter`` (the interpreter's own start-up is left out). The table shows the
  median, min and max seconds.
* The cost of trace_optuna: the median of ``import trace_optuna`` minus the median of
  ``import optuna, opto.trace`` (trace_optuna cannot be cheaper than the two it is built on).
  Target: at most ``--target`` seconds (1.0).
* Which heavy optional modules a fresh ``import trace_optuna`` left in ``sys.modules`` (litellm,
  plotly, optuna_dashboard, multiprocessing: none should be, as they are imported when first
  used), and which of them ``import optuna, opto.trace`` imports by itself.
* ``python -X importtime -c "import trace_optuna"``: the entries with the largest cumulative
  time, and the self time that modules outside ``optuna, opto.trace`` add, by top-level package.

Usage::

    python benchmarks/import_time.py            # 7 runs of each statement (about a minute)
    python benchmarks/import_time.py --runs 3 --top 20

The table goes to stdout and progress to stderr. The exit status is 0 only when the target is
met and none of the heavy modules is imported.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
import json
import os
from pathlib import Path
import statistics
import subprocess
import sys

ROOT = Path(__file__).resolve().parent.parent

BASELINE = "import optuna, opto.trace"
STATEMENTS = ("import optuna", BASELINE, "import trace_optuna")
HEAVY = ("litellm", "plotly", "optuna_dashboard", "multiprocessing")

TIMED = """
import json, sys, time
started = time.perf_counter()
{statement}
elapsed = time.perf_counter() - started
print(json.dumps({{"seconds": elapsed, "heavy": [m for m in {heavy!r} if m in sys.modules]}}))
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _environment() -> dict[str, str]:
    # This checkout first (and it is the working directory), as the tests run it.
    environment = dict(os.environ)
    paths = [str(ROOT), *filter(None, environment.get("PYTHONPATH", "").split(os.pathsep))]
    environment["PYTHONPATH"] = os.pathsep.join(paths)
    return environment


def time_import(statement: str) -> dict:
    """Time ``statement`` in a fresh process; also list the heavy modules it left imported."""
    result = subprocess.run(
        [sys.executable, "-c", TIMED.format(statement=statement, heavy=HEAVY)],
        capture_output=True,
        text=True,
        env=_environment(),
        cwd=ROOT,  # python -c puts the working directory first on sys.path
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{statement!r} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def import_tree(statement: str) -> list[tuple[str, int, int, int]]:
    """``python -X importtime``: ``(module, depth, self us, cumulative us)`` in its order."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement],
        capture_output=True,
        text=True,
        env=_environment(),
        cwd=ROOT,  # python -c puts the working directory first on sys.path
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{statement!r} failed:\n{result.stderr[-3000:]}")
    entries = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, cumulative, name = line[len("import time:") :].split("|")
        depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
        entries.append((name.strip(), depth, int(own), int(cumulative)))
    return entries


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="fresh processes per statement")
    parser.add_argument("--top", type=int, default=15, help="importtime entries to show")
    parser.add_argument("--target", type=float, default=1.0, help="seconds over the baseline")
    args = parser.parse_args()
    log(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()}")

    seconds: dict[str, list[float]] = defaultdict(list)
    heavy: dict[str, set[str]] = defaultdict(set)
    for run in range(1, args.runs + 1):
        for statement in STATEMENTS:
            result = time_import(statement)
            seconds[statement].append(result["seconds"])
            heavy[statement].update(result["heavy"])
        log(f"run {run}/{args.runs}: " + ", ".join(f"{seconds[s][-1]:.2f}" for s in STATEMENTS))

    baseline_tree = import_tree(BASELINE)
    tree = import_tree("import trace_optuna")
    baseline_modules = {name for name, *_ in baseline_tree}

    print(
        f"\nImport time, {args.runs} fresh processes each ({os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f})\n"
    )
    print("| statement | median s | min s | max s | heavy modules imported |")
    print("|---|---|---|---|---|")
    for statement in STATEMENTS:
        values = seconds[statement]
        print(
            f"| `{statement}` | {statistics.median(values):.2f} | {min(values):.2f} | "
            f"{max(values):.2f} | {', '.join(sorted(heavy[statement])) or 'none'} |"
        )
    extra = statistics.median(seconds["import trace_optuna"]) - statistics.median(
        seconds[BASELINE]
    )
    met = extra <= args.target
    imported = sorted(heavy["import trace_optuna"] - heavy[BASELINE])
    print(
        f"\ntrace_optuna on top of `{BASELINE}`: {extra:+.2f} s (target <= {args.target:.2f} s: "
        f"{'met' if met else 'NOT met'}); heavy modules trace_optuna imports: "
        f"{', '.join(imported) or 'none'}"
    )

    print(
        f'\n`python -X importtime -c "import trace_optuna"`: the top {args.top} entries by '
        "cumulative time\n"
    )
    print("| module | depth | cumulative ms | self ms |")
    print("|---|---|---|---|")
    for name, depth, own, cumulative in sorted(tree, key=lambda e: -e[3])[: args.top]:
        print(f"| {name} | {depth} | {cumulative / 1000:.0f} | {own / 1000:.0f} |")

    added: dict[str, int] = defaultdict(int)
    for name, _, own, _ in tree:
        if name not in baseline_modules:
            added[name.split(".")[0]] += own
    print(
        f"\nSelf time of the modules `{BASELINE}` does not import, by top-level package "
        f"(one importtime run; {sum(added.values()) / 1000:.0f} ms in all)\n"
    )
    print("| package | modules | self ms |")
    print("|---|---|---|")
    counts: dict[str, int] = defaultdict(int)
    for name, *_ in tree:
        if name not in baseline_modules:
            counts[name.split(".")[0]] += 1
    for package, own in sorted(added.items(), key=lambda item: -item[1])[: args.top]:
        print(f"| {package} | {counts[package]} | {own / 1000:.0f} |")
    return 0 if met and not imported else 1


if __name__ == "__main__":
    sys.exit(main())
