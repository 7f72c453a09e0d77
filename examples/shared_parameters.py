"""Several optimizers over shared parameters, offline: the three-agent workflow of Trace issue #17.

Three agents each hold two numbers and call one shared function; they run as a chain. Six
studies optimize overlapping parts of the team, each with its own feedback and frequency:

* ``agent1``, ``agent2``, ``agent3``: one agent's two numbers, judged by that agent's own output;
* ``agent1+agent2``, ``agent2+agent3``: a pair's four numbers, judged by the pair's output;
* ``workflow``: all six numbers, judged by the chain's final result.

Each study reads the numbers it does not own from the team's registry (in the same storage),
and publishes its own when a trial beats its best; the others pick them up at their next trial.
Nobody zeroes feedback or retains graphs by hand: each trial runs the agents afresh.

    python examples/shared_parameters.py                 # the studies take turns, one process
    python examples/shared_parameters.py --parallel      # one process per study, at once
    optuna-dashboard sqlite:///shared_parameters.db

It uses the simulated model (``simulated/feedback-follower``), a rule-following simulation for
demos and tests, not a language model: it moves numbers the way the feedback says.
"""

from __future__ import annotations

import argparse
from collections import Counter
import concurrent.futures
import logging
import multiprocessing

from opto import trace
import optuna

import trace_optuna as to

INPUT = 10.0
LLM = to.LLM("simulated/feedback-follower", simulated_seed=0)
# What each study wants, and how often it runs (every n-th round), as in the loop.
STUDIES = {
    "agent1": ("agent1.*", 1),
    "agent2": ("agent2.*", 1),
    "agent3": ("agent3.*", 1),
    "agent1+agent2": (("agent1.*", "agent2.*"), 2),
    "agent2+agent3": (("agent2.*", "agent3.*"), 2),
    "workflow": ("*", 3),
}
TARGETS = {"agent": 50.0, "pair": 300.0, "workflow": 1000.0}


@trace.bundle()
def shared_function(data, param):
    """Shared function processes data with parameter adjustments."""
    return data * param + 1


@trace.model
class AgentMonitoring:
    def __init__(self, name: str, param1: float, param2: float) -> None:
        self.name = name
        self.param1 = trace.node(param1, trainable=True, name="param", description="step 1")
        self.param2 = trace.node(param2, trainable=True, name="param", description="step 2")

    def process(self, input_data):
        """Complete processing pipeline for the agent."""
        intermediate = shared_function(input_data, self.param1)
        return shared_function(intermediate, self.param2)


def make_team() -> dict[str, AgentMonitoring]:
    return {
        "agent1": AgentMonitoring("Agent1", 1.0, 1.5),
        "agent2": AgentMonitoring("Agent2", 2.0, 2.5),
        "agent3": AgentMonitoring("Agent3", 3.0, 3.5),
    }


team = to.ParameterSet(make_team, name="agent-team")


def judged(output, target: float, agents: int) -> to.Evaluation:
    """Score the output's relative distance to ``target``; say which way to go, and how far
    (each of the ``agents`` in the chain moves its numbers, so each moves a share)."""
    error = (output.data - target) / target
    step = round(min(0.5, abs(error) / (2 * agents)), 3)
    said = f"The output {output.data:.1f} (target {target})"
    if abs(error) < 0.02:
        feedback = "The output is correct."
    elif error < 0:
        feedback = f"{said} is too small: larger by {step}."
    else:
        feedback = f"{said} is too large: smaller by {step}."
    return to.Evaluation(score=-abs(error), feedback=feedback, output=output)


def evaluator(study: str):
    """The evaluate function of one study: its own part of the chain, its own target."""
    names = ["agent1", "agent2", "agent3"]

    def evaluate(agents: dict[str, AgentMonitoring]) -> to.Evaluation:
        data = trace.node(INPUT)
        if study == "workflow":
            for name in names:
                data = agents[name].process(data)
            return judged(data, TARGETS["workflow"], len(names))
        members = study.split("+")
        for name in members:
            data = agents[name].process(data)
        return judged(data, TARGETS["pair" if len(members) == 2 else "agent"], len(members))

    return evaluate


def open_study(name: str, storage: str) -> to.TraceStudy:
    patterns, _ = STUDIES[name]
    patterns = (patterns,) if isinstance(patterns, str) else patterns
    return to.create_study(
        study_name=name,
        storage=storage,
        parameters=team.select(*patterns),
        evaluate=evaluator(name),
        llm=LLM,
        seed=0,
        load_if_exists=True,
    )


def run_one(name: str, storage: str, trials: int) -> None:
    """Run one study's trials in this process (``--parallel`` runs one per process)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("trace_optuna").setLevel(logging.ERROR)
    open_study(name, storage).optimize(n_trials=trials)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--storage", default="sqlite:///shared_parameters.db")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--parallel", action="store_true", help="one process per study")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("trace_optuna").setLevel(logging.ERROR)

    if args.parallel:
        context = multiprocessing.get_context("spawn")  # Trace's graph is per process
        with concurrent.futures.ProcessPoolExecutor(len(STUDIES), mp_context=context) as pool:
            jobs = [
                pool.submit(run_one, name, args.storage, args.rounds // every)
                for name, (_, every) in STUDIES.items()
            ]
            for job in jobs:
                job.result()
    else:
        studies = {name: open_study(name, args.storage) for name in STUDIES}
        for round_ in range(1, args.rounds + 1):
            for name, (_, every) in STUDIES.items():
                if round_ % every == 0:
                    studies[name].optimize(n_trials=1)

    report(args.storage)


def report(storage: str) -> None:
    studies = {name: open_study(name, storage) for name in STUDIES}
    print(f"{'study':<15} {'trials':>6} {'best score':>10} {'published':>9} {'conflicts':>9}")
    for name, study in studies.items():
        publishes = [t.user_attrs.get("trace:publish") or {} for t in study.trials]
        published = sum(p.get("status") == "published" for p in publishes)
        conflicts = sum(len(p.get("conflicts", [])) for p in publishes)
        best = study.best_value
        print(f"{name:<15} {len(study.trials):>6} {best:>10.3f} {published:>9} {conflicts:>9}")

    history = team.history(storage, "agent2.param1")
    print(f"\nregistry {team.name!r}: who changed agent2.param1 ({len(history) - 1} changes):")
    for change in history[-4:]:
        who = "initial value" if change.study is None else f"{change.study} trial {change.trial}"
        score = "" if change.score is None else f", score {change.score:.3f}"
        old = "-" if change.old is None else f"{change.old:.4g}"
        print(f"  version {change.version}: {old} -> {change.new:.4g} by {who}{score}")
    changed_by = Counter(
        change.study for path in team.paths for change in team.history(storage, path)[1:]
    )
    print(f"changes per study: {dict(sorted(changed_by.items()))}")
    final = team.current(storage)
    print("registry values now: " + ", ".join(f"{p}={v:.3g}" for p, v in final.items()))


if __name__ == "__main__":
    main()
