"""STOP, the Self-Taught Optimizer (Zelikman, Lorch, Mackey, Kalai 2023), as a strategy.

The *improver* is Python source defining ``improve(solution, feedback, utility, llm, budget)
-> solution``:

* ``solution``: a snapshot ``{parameter path: JSON value}`` (or, during a meta-step, a
  program's source as a str);
* ``feedback``: the parent's feedback text;
* ``utility(solution) -> float``: HIGHER IS BETTER, always (a minimize study's scores are
  negated); a candidate whose code raises scores ``-inf``;
* ``llm(prompt, temperature=None) -> str``: ``prompt`` is a str or a list of chat messages;
* ``budget``: the number of ``llm`` calls allowed (the caller stops the improver at the next).

A STOP trial takes the best trial as parent, runs the current improver version on its snapshot
and feedback in a sandbox (:mod:`trace_optuna.strategies.sandbox`), and proposes what the
improver returns. Every utility call is ``context.evaluate`` in the worker, so each candidate
is recorded in ``trace:evaluated`` and no snapshot is evaluated twice.
The study's optimizer settings (``Config(optimizer=...)``) apply to every LLM call the
improver makes: ``max_tokens``, and the objective as a system message (``#Objective``) before
each solution prompt (a meta-step's prompts about the improver's own source get none).

Self-improvement. Every ``meta_every`` (K) STOP trials of the current version, a *meta-step*
runs the current improver on its own source and, if it returns a different valid program,
stores it as a new version that is *trialled* by the next K STOP trials, then compared with the
version it came from by **meta-utility**: the mean ``trace:improvement`` (score minus parent
score, sign-flipped in a minimize study so higher is better) over the COMPLETE trials that used
the version, read from the storage. It is *accepted* (and becomes the current version) only if
its meta-utility is strictly better than its parent's over the parent's trials up to the
meta-step; it is *reverted* if it is not, or as soon as one of its trials fails because the
improver raised, timed out, broke its budget or returned an unusable solution. A meta-step whose
improver itself fails, returns the same source or a program without a valid ``improve`` is
recorded as a reverted version at once.

The meta-step's ``utility(program)`` is a **sandboxed smoke run**: ``-inf`` unless the program
compiles and defines ``improve`` with five parameters (a static check that costs nothing);
otherwise the program is run, in its own sandbox with the same time and memory limits, on the
parent's snapshot and feedback with a budget of ``smoke_budget`` LLM calls (1 by default), and
the utility is the improvement of its returned solution over the parent (``-inf`` if it fails or
returns something unusable). It measures exactly what the meta-utility later measures -- the
improvement one step makes -- at the cost of one LLM call and a few evaluations per program, and
it runs the proposed program under the same caller-enforced limits, so a program that loops,
overspends or raises is scored lowest before it is ever trialled. A static check alone would let
any program that parses through.

State lives in the storage, never in a process: any worker continues any lineage. Study user
attributes (long sources chunked by :func:`trace_optuna.records.write`):

===================================  ===========================================================
``trace:stop:version:<id>``          {id, parent, created_by (trial number; None for the seed),
                                     source_hash}; written last, so a reader that sees it sees
                                     the source and a status
``trace:stop:source:<id>``           str, the improver's source (absent when a meta-step
                                     produced no program)
``trace:stop:status:<id>``           {status: accepted | trialled | reverted, reason,
                                     meta_utility, trials, parent_meta_utility, decided_by}
===================================  ===========================================================

Version ids are ``seed`` and ``t<number of the trial whose meta-step created it>``, so
concurrent workers never collide. Trial user attributes: ``trace:stop_version`` (the version the
trial used; written when the trial starts, so running and failed trials show it too),
``trace:stop_run`` (LLM and utility calls, seconds, the improver's printed output, and
``failure``/``details`` when it failed), ``trace:stop_isolation`` ({option: the study's
``stop_isolation``, layers: the isolation layers active in the improver's process}),
``trace:stop_meta`` (what a meta-step did) and
``trace:stop_decisions`` (versions this trial accepted or reverted).

Concurrency: two workers may start a meta-step from the same version at once; both versions are
kept and trialled in turn. Two workers deciding the same trialled version at once write the
same kind of record; the last write wins.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import math
from typing import TYPE_CHECKING
from typing import Any

from optuna.trial import TrialState

from trace_optuna import records
from trace_optuna import snapshots
from trace_optuna.exceptions import ConfigurationError
from trace_optuna.exceptions import ImproverFailed
from trace_optuna.exceptions import NoCompletedTrialError
from trace_optuna.exceptions import Rejected
from trace_optuna.exceptions import SnapshotError
from trace_optuna.strategies import sandbox
from trace_optuna.strategies.base import Proposal
from trace_optuna.strategies.base import RunResult
from trace_optuna.strategies.base import StepContext
from trace_optuna.strategies.base import Strategy
from trace_optuna.strategies.base import check_int
from trace_optuna.strategies.base import register
from trace_optuna.strategies.sandbox import SandboxLimits
from trace_optuna.strategies.sandbox import run_improver

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

SEED_VERSION = "seed"
ACCEPTED = "accepted"
TRIALLED = "trialled"
REVERTED = "reverted"

VERSION_ATTR = "trace:stop_version"
RUN_ATTR = "trace:stop_run"
META_ATTR = "trace:stop_meta"
DECISIONS_ATTR = "trace:stop_decisions"
ISOLATION_ATTR = "trace:stop_isolation"

_OUTPUT_TAIL = 2000

# The section lines of the seed improver's prompts, as its make_prompt writes them: #Improve
# first, then #Feedback, then #Solution (a JSON snapshot) or #Program (a python block), then
# #Answer. The seed's source below spells them out (it is stored and hashed as written);
# tests/llm checks that the two agree.
IMPROVE_MARKER = "#Improve"
FEEDBACK_SECTION = "#Feedback"
SOLUTION_SECTION = "#Solution"
PROGRAM_SECTION = "#Program"
ANSWER_SECTION = "#Answer"

SEED_IMPROVER = '''"""STOP's seed improver (Zelikman et al. 2023), as trace_optuna runs it.

improve(solution, feedback, utility, llm, budget) asks the language model for improved versions
of `solution` and returns the best one by `utility` (higher is better), the incumbent included,
so a step never returns something scored worse than what it was given. `solution` is a dict
{parameter path: value}, or the source of a program (a str). At most `budget` LLM calls.
"""

import json
import re

NUM_CANDIDATES = 6
TEMPERATURE = 0.7

INSTRUCTION = (
    "Improve this {kind}. You will be scored by a utility function (higher is better); the "
    "feedback below is what was said about the current {kind}. Be creative: first propose an "
    "idea, then implement it."
)


def make_prompt(solution, feedback):
    """STOP's prompt: improve this solution; you will be scored; propose an idea, implement it."""
    if isinstance(solution, str):
        return (
            "#Improve\\n" + INSTRUCTION.format(kind="program") + "\\n\\n#Feedback\\n" + feedback
            + "\\n\\n#Program\\n```python\\n" + solution.rstrip() + "\\n```\\n\\n#Answer\\n"
            + "Answer with your idea in one or two sentences, then the complete improved "
            + "program in one ```python block."
        )
    return (
        "#Improve\\n" + INSTRUCTION.format(kind="solution") + "\\n\\n#Feedback\\n" + feedback
        + "\\n\\n#Solution\\n" + json.dumps(solution, indent=2, sort_keys=True)
        + "\\n\\n#Answer\\n"
        + 'Answer with JSON only: {"idea": "<one or two sentences>", "solution": {<every key '
        + "of the solution with its improved value; keep each value's type>}}"
    )


def parse(answer, solution):
    """The candidate in an LLM answer (same kind as `solution`), or None."""
    if isinstance(solution, str):
        # From the first fence to the last: the program may hold fences in its strings.
        block = re.search(r"```(?:python|py)?[ \\t]*\\n(.*)```", answer, re.DOTALL)
        return block.group(1).strip() + "\\n" if block else None
    start = answer.find("{")
    if start < 0:
        return None
    try:
        data = json.JSONDecoder().raw_decode(answer[start:])[0]
    except ValueError:
        return None
    proposed = data.get("solution") if isinstance(data, dict) else None
    if not isinstance(proposed, dict):
        return None
    candidate = dict(solution)
    candidate.update({key: value for key, value in proposed.items() if key in solution})
    return candidate


def ask(llm, prompt, solution):
    """One LLM sample, parsed; None if the model failed or wrote nothing usable."""
    try:
        return parse(llm(prompt, temperature=TEMPERATURE), solution)
    except RuntimeError:
        return None


def score_of(utility, candidate):
    """The utility of a candidate; -inf if the utility refused it."""
    try:
        return utility(candidate)
    except ValueError:
        return float("-inf")


def improve(solution, feedback, utility, llm, budget):
    """The best of the incumbent and min(NUM_CANDIDATES, budget) samples, by utility."""
    n = min(NUM_CANDIDATES, budget)
    best, best_score = solution, utility(solution)
    prompt = make_prompt(solution, feedback)
    for _ in range(n):
        candidate = ask(llm, prompt, solution)
        if candidate is not None and candidate != solution:
            score = score_of(utility, candidate)
            if score >= best_score:  # a sideways move is taken, to cross plateaus
                best, best_score = candidate, score
    return best
'''
"""The seed improver's source: STOP's, keeping the incumbent among the candidates."""


# ---------------------------------------------------------------------------------------------
# Improver versions in the storage


def version_key(version_id: str) -> str:
    """The study attribute that marks a version and holds its lineage."""
    return f"trace:stop:version:{version_id}"


def source_key(version_id: str) -> str:
    """The study attribute holding a version's source (chunked when long)."""
    return f"trace:stop:source:{version_id}"


def status_key(version_id: str) -> str:
    """The study attribute holding a version's status, reason and meta-utility."""
    return f"trace:stop:status:{version_id}"


@dataclasses.dataclass
class ImproverVersion:
    """One improver version, as stored.

    Attributes:
        id: ``seed`` or ``t<trial number>`` (the trial whose meta-step created it).
        parent: The version it was derived from (None for the seed).
        created_by: The trial number of the meta-step that created it (None for the seed).
        source: Its source, or None when the meta-step produced no program.
        status: ``accepted``, ``trialled`` or ``reverted``.
        reason: Why it has that status.
        meta_utility: Mean improvement (higher is better) over the COMPLETE trials that used
            it, as last computed; None before any.
        parent_meta_utility: The parent's meta-utility it was compared with, once decided.
        trials: The trials its meta-utility was computed over.
        decided_by: The trial that accepted or reverted it.
    """

    id: str
    parent: str | None
    created_by: int | None
    source: str | None
    status: str
    reason: str
    meta_utility: float | None = None
    parent_meta_utility: float | None = None
    trials: list[int] = dataclasses.field(default_factory=list)
    decided_by: int | None = None

    @property
    def order(self) -> int:
        """Creation order: the seed first, then by creating trial number."""
        return -1 if self.created_by is None else self.created_by


def improver_versions(study: optuna.Study) -> dict[str, ImproverVersion]:
    """Read every STOP improver version stored in a study, in creation order.

    Args:
        study: The Optuna study (e.g. ``optuna.load_study(...)`` or ``TraceStudy.optuna``).

    Returns:
        ``{version id: ImproverVersion}``; empty before the first STOP trial.
    """
    attrs = study.user_attrs
    prefix = version_key("")
    versions = []
    for key, lineage in attrs.items():
        if not key.startswith(prefix) or not isinstance(lineage, dict):
            continue
        version_id = key[len(prefix) :]
        status = attrs.get(status_key(version_id)) or {}
        versions.append(
            ImproverVersion(
                id=version_id,
                parent=lineage.get("parent"),
                created_by=lineage.get("created_by"),
                source=records.decode(attrs, source_key(version_id)),
                status=status.get("status", TRIALLED),
                reason=status.get("reason", ""),
                meta_utility=status.get("meta_utility"),
                parent_meta_utility=status.get("parent_meta_utility"),
                trials=list(status.get("trials") or []),
                decided_by=status.get("decided_by"),
            )
        )
    versions.sort(key=lambda version: (version.order, version.id))
    return {version.id: version for version in versions}


def _write_version(study: optuna.Study, version: ImproverVersion) -> None:
    values: dict[str, Any] = {}
    if version.source is not None:
        values[source_key(version.id)] = version.source
    values[status_key(version.id)] = _status_record(version)
    values[version_key(version.id)] = {
        "id": version.id,
        "parent": version.parent,
        "created_by": version.created_by,
        "source_hash": None if version.source is None else _source_hash(version.source),
    }
    records.write(study.set_user_attr, values)  # in order: the version key comes last


def _write_status(study: optuna.Study, version: ImproverVersion) -> None:
    records.write(study.set_user_attr, {status_key(version.id): _status_record(version)})


def _status_record(version: ImproverVersion) -> dict[str, Any]:
    return {
        "status": version.status,
        "reason": version.reason,
        "meta_utility": version.meta_utility,
        "parent_meta_utility": version.parent_meta_utility,
        "trials": version.trials,
        "decided_by": version.decided_by,
    }


def _source_hash(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]


def check_improver_source(source: Any) -> str | None:
    """Why ``source`` is not an improver program, or None when it is one.

    An improver compiles and defines, at module level, ``improve`` taking five positional
    parameters ``(solution, feedback, utility, llm, budget)``. Nothing is run.
    """
    if not isinstance(source, str):
        return f"it is a {type(source).__name__}, not Python source"
    try:
        tree = ast.parse(source)
    except SyntaxError as error:
        return f"it does not compile: {error.msg} (line {error.lineno})"
    functions = [
        node
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "improve"
    ]
    if not functions:
        return "it defines no module-level function improve(...)"
    arguments = functions[-1].args
    if isinstance(functions[-1], ast.AsyncFunctionDef):
        return "improve must be a plain function, not async"
    positional = len(arguments.posonlyargs) + len(arguments.args)
    if positional < 5 and arguments.vararg is None:
        return "improve must take (solution, feedback, utility, llm, budget)"
    return None


@dataclasses.dataclass
class _Lineage:
    """The versions and the trials that used them, as read at the start of one trial."""

    study: optuna.Study
    versions: dict[str, ImproverVersion]
    uses: dict[str, list[FrozenTrial]]
    sign: float  # +1 when the study maximizes, -1 when it minimizes

    @classmethod
    def load(cls, study: optuna.Study, seed_source: str, sign: float) -> _Lineage:
        versions = improver_versions(study)
        if SEED_VERSION not in versions:
            seed = ImproverVersion(
                id=SEED_VERSION,
                parent=None,
                created_by=None,
                source=seed_source,
                status=ACCEPTED,
                reason="the seed improver",
            )
            _write_version(study, seed)  # concurrent first trials write the same record
            versions = {SEED_VERSION: seed, **versions}
        uses: dict[str, list[FrozenTrial]] = {}
        states = (TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING)
        for trial in study.get_trials(deepcopy=False, states=states):
            version_id = trial.user_attrs.get(VERSION_ATTR)
            if isinstance(version_id, str):
                uses.setdefault(version_id, []).append(trial)
        return cls(study, versions, uses, sign)

    def started(self, version_id: str) -> list[FrozenTrial]:
        return self.uses.get(version_id, [])

    def finished(self, version_id: str) -> list[FrozenTrial]:
        return [trial for trial in self.started(version_id) if trial.state.is_finished()]

    def meta_utility(
        self, version_id: str, up_to: int | None = None
    ) -> tuple[float | None, list[int]]:
        """Mean improvement (higher is better) over the version's COMPLETE trials."""
        values, numbers = [], []
        for trial in self.started(version_id):
            if trial.state != TrialState.COMPLETE or (up_to is not None and trial.number > up_to):
                continue
            improvement = trial.user_attrs.get(records.IMPROVEMENT)
            if isinstance(improvement, (int, float)) and math.isfinite(improvement):
                values.append(self.sign * improvement)
                numbers.append(trial.number)
        return (sum(values) / len(values) if values else None), numbers

    def improver_failure(self, version_id: str) -> FrozenTrial | None:
        """The first trial of the version that failed because of the improver, if any."""
        for trial in self.finished(version_id):
            run = trial.user_attrs.get(RUN_ATTR)
            if trial.state == TrialState.FAIL and isinstance(run, dict) and run.get("failure"):
                return trial
        return None

    def current(self) -> ImproverVersion:
        accepted = [v for v in self.versions.values() if v.status == ACCEPTED]
        return max(accepted, key=lambda version: version.order)

    def trialled(self) -> list[ImproverVersion]:
        return [v for v in self.versions.values() if v.status == TRIALLED]

    def attempts(self, version_id: str) -> int:
        return sum(1 for v in self.versions.values() if v.parent == version_id)

    def settle(self, meta_every: int, trial_number: int) -> list[dict[str, Any]]:
        """Accept or revert every trialled version whose trial period is over."""
        decisions = []
        for version in self.trialled():
            failed = self.improver_failure(version.id)
            finished = self.finished(version.id)
            if failed is None and len(finished) < meta_every:
                continue
            parent = self.versions.get(version.parent or "")
            up_to = version.created_by
            parent_utility, parent_trials = (
                self.meta_utility(parent.id, up_to) if parent else (None, [])
            )
            utility, trials = self.meta_utility(version.id)
            version.meta_utility, version.trials = utility, trials
            version.parent_meta_utility = parent_utility
            version.decided_by = trial_number
            if failed is not None:
                error = records.decode(failed.user_attrs, records.ERROR, "the improver failed")
                version.status, version.reason = REVERTED, f"Trial#{failed.number}: {error}"
            elif utility is None:
                version.status = REVERTED
                version.reason = f"none of its {len(finished)} trials completed"
            elif utility > (parent_utility if parent_utility is not None else 0.0):
                version.status = ACCEPTED
                version.reason = (
                    f"meta-utility {utility:.6g} over {len(trials)} trials beats its parent's "
                    f"{_show(parent_utility)}"
                )
            else:
                version.status = REVERTED
                version.reason = (
                    f"meta-utility {utility:.6g} over {len(trials)} trials does not beat its "
                    f"parent's {_show(parent_utility)}"
                )
            _write_status(self.study, version)
            if parent is not None and parent_utility is not None:
                parent.meta_utility, parent.trials = parent_utility, parent_trials
                _write_status(self.study, parent)
            decisions.append(
                {
                    "version": version.id,
                    "status": version.status,
                    "reason": version.reason,
                    "meta_utility": utility,
                    "parent_meta_utility": parent_utility,
                }
            )
        return decisions

    def version_for_trial(self) -> ImproverVersion:
        """A trialled version while there is one (the least tried first), else the current."""
        trialled = self.trialled()
        if trialled:
            return min(trialled, key=lambda v: (len(self.started(v.id)), v.order))
        return self.current()

    def meta_due(self, version: ImproverVersion, meta_every: int) -> bool:
        """Whether this trial of the current version also runs a meta-step from it."""
        if version.status != ACCEPTED or version.id != self.current().id:
            return False
        return len(self.started(version.id)) >= meta_every * (1 + self.attempts(version.id))


def _show(value: float | None) -> str:
    return "none (no completed trial)" if value is None else f"{value:.6g}"


# ---------------------------------------------------------------------------------------------
# The strategy


@register
class StopStrategy(Strategy):
    """STOP: a self-improving improver program proposes the candidate (see the module docs).

    Args:
        meta_every: K, an int >= 1: a meta-step runs every K STOP trials of the current
            version, and a new version is trialled for K STOP trials before it is compared.
        num_candidates: A (low, high) pair of ints, 1 <= low <= high: the range in which Optuna
            samples ``stop.num_candidates`` in every trial, the LLM calls (so, for the seed
            improver, the candidate solutions) one STOP step may use; it is the improver's
            ``budget``. ``(n, n)`` fixes it at n.
        meta_budget: LLM calls a meta-step's improver may make on its own source, an int >= 1.
        smoke_budget: LLM calls of the smoke run that scores a proposed program, an int >= 1.
        timeout_s: Wall-clock seconds an improver run may take on its own (LLM and utility
            calls served by the worker do not count), a finite number > 0.
        memory_mb: Memory (address space) limit of an improver process in MiB, an int >= 16.
        seed_source: The first improver version, Python source defining ``improve`` with five
            parameters; stored at the first STOP trial of the study, after which the stored
            lineage is used.

    All settings but ``num_candidates`` are fixed: they are not Optuna parameters.

    Single-objective only: the utility and the meta-utility are one number per candidate, so
    a multi-objective study refuses this strategy (``multi_objective = False``).

    Raises:
        ConfigurationError: If an argument breaks its rule.
    """

    name = "stop"
    multi_objective = False
    sandboxed = True

    def __init__(
        self,
        meta_every: int = 5,
        *,
        num_candidates: tuple[int, int] = (2, 6),
        meta_budget: int = 2,
        smoke_budget: int = 1,
        timeout_s: float = 60.0,
        memory_mb: int = 1024,
        seed_source: str = SEED_IMPROVER,
    ) -> None:
        for name, value, least in (
            ("meta_every", meta_every, 1),
            ("meta_budget", meta_budget, 1),
            ("smoke_budget", smoke_budget, 1),
            ("memory_mb", memory_mb, 16),
        ):
            check_int("StopStrategy", name, value, least)
        low, high = _range(num_candidates)
        if (
            isinstance(timeout_s, bool)
            or not isinstance(timeout_s, (int, float))
            or not 0 < timeout_s < math.inf
        ):
            raise ConfigurationError(
                f"StopStrategy: timeout_s must be a finite number > 0; got {timeout_s!r} "
                f"({type(timeout_s).__name__})."
            )
        if not isinstance(seed_source, str):
            raise ConfigurationError(
                "StopStrategy: seed_source must be Python source (a str) defining improve("
                f"solution, feedback, utility, llm, budget); got {type(seed_source).__name__}."
            )
        problem = check_improver_source(seed_source)
        if problem is not None:
            raise ConfigurationError(f"StopStrategy: seed_source is not an improver: {problem}.")
        self.meta_every = meta_every
        self.num_candidates = (low, high)
        self.meta_budget = meta_budget
        self.smoke_budget = smoke_budget
        self.timeout_s = float(timeout_s)
        self.memory_mb = memory_mb
        self.seed_source = seed_source

    def limits(self, budget: int) -> SandboxLimits:
        """The sandbox limits of a run with this LLM budget (utility calls: 2 per LLM call + 2)."""
        return SandboxLimits(
            timeout_s=self.timeout_s,
            memory_bytes=self.memory_mb * 1024 * 1024,
            max_utility_calls=2 * budget + 2,
        )

    def suggest_settings(self, trial: optuna.Trial) -> dict[str, Any]:
        low, high = self.num_candidates
        return {"num_candidates": trial.suggest_int("stop.num_candidates", low, high)}

    def propose(self, context: StepContext) -> Proposal:
        best = context.population.best()
        if best is None or best.value is None:
            raise NoCompletedTrialError(
                "stop needs a completed trial to start from; there is none yet."
            )
        study = context.trial.study
        sign = 1.0 if context.better(1.0, 0.0) else -1.0
        lineage = _Lineage.load(study, self.seed_source, sign)
        decisions = lineage.settle(self.meta_every, context.trial.number)
        version = lineage.version_for_trial()
        meta_due = lineage.meta_due(version, self.meta_every)
        # Written now, not with the record at the end: running and failed trials show it too,
        # and other workers count this trial as a use of the version.
        context.trial.set_user_attr(VERSION_ATTR, version.id)
        context.attrs[VERSION_ATTR] = version.id
        if decisions:
            context.attrs[DECISIONS_ATTR] = decisions

        step = _Step(context, best, sign)
        budget = int(context.settings.get("num_candidates", self.num_candidates[1]))
        assert version.source is not None  # accepted and trialled versions have a source
        try:
            run = run_improver(
                version.source,
                step.parent_snapshot,
                step.parent_feedback,
                budget,
                llm=step.llm,
                utility=step.utility,
                limits=self.limits(budget),
                isolation=context.isolation,
            )
            context.attrs[ISOLATION_ATTR] = _isolation_record(context.isolation, run.layers)
            candidate = step.validated(run.solution, "improve() returned")
        except ImproverFailed as error:
            if error.layers or ISOLATION_ATTR not in context.attrs:
                context.attrs[ISOLATION_ATTR] = _isolation_record(context.isolation, error.layers)
            failure = {
                "version": version.id,
                "budget": budget,
                "failure": error.kind,
                "llm_calls": error.llm_calls,
                "utility_calls": error.utility_calls,
                "details": error.details[-_OUTPUT_TAIL:],
            }
            context.attrs[RUN_ATTR] = failure  # stored with the failed trial's record
            raise
        context.attrs[RUN_ATTR] = {
            "version": version.id,
            "budget": budget,
            "llm_calls": run.llm_calls,
            "utility_calls": run.utility_calls,
            "elapsed_s": run.elapsed_s,
            "output": run.output[-_OUTPUT_TAIL:],
        }
        if meta_due:
            meta = self._meta_step(context, lineage, version, step)
            context.attrs[META_ATTR] = meta
        return Proposal(
            snapshot=candidate,
            parents=[best.number],
            parent_score=best.value,
            parent_feedback=step.parent_feedback,
            result=step.results.get(snapshots.snapshot_hash(candidate)),
        )

    # -- the meta-step --------------------------------------------------------------------

    def _meta_step(
        self,
        context: StepContext,
        lineage: _Lineage,
        version: ImproverVersion,
        step: _Step,
    ) -> dict[str, Any]:
        """Run ``version`` on its own source; store what came of it as a new version."""
        assert version.source is not None
        smoke_runs: list[dict[str, Any]] = []

        def program_utility(program: Any) -> float:
            problem = check_improver_source(program)
            if problem is not None:
                smoke_runs.append({"failure": f"invalid: {problem}"})
                return -math.inf
            try:
                smoke = run_improver(
                    program,
                    step.parent_snapshot,
                    step.parent_feedback,
                    self.smoke_budget,
                    llm=step.llm,
                    utility=step.utility,
                    limits=self.limits(self.smoke_budget),
                    isolation=context.isolation,
                )
                candidate = step.validated(smoke.solution, "improve() returned")
            except ImproverFailed as error:
                smoke_runs.append({"failure": str(error)[:500]})
                return -math.inf
            improvement = step.utility(candidate) - step.sign * step.parent_score
            smoke_runs.append({"improvement": improvement})
            return improvement

        meta_utility, meta_trials = lineage.meta_utility(version.id)
        feedback = _meta_feedback(
            version, meta_utility, len(meta_trials), self.smoke_budget, self.timeout_s
        )
        new_id = f"t{context.trial.number}"
        record: dict[str, Any] = {"from": version.id, "version": new_id}
        source: str | None = None
        try:
            run = run_improver(
                version.source,
                version.source,
                feedback,
                self.meta_budget,
                llm=step.program_llm,  # the program is improved, not a solution
                utility=program_utility,
                limits=self.limits(self.meta_budget),
                isolation=context.isolation,
            )
        except ImproverFailed as error:
            outcome, reason = "failed", f"the meta-step failed: {error}"
            record.update(llm_calls=error.llm_calls, utility_calls=error.utility_calls)
        else:
            record.update(llm_calls=run.llm_calls, utility_calls=run.utility_calls)
            problem = check_improver_source(run.solution)
            if isinstance(run.solution, str):
                source = run.solution
            if problem is not None:
                outcome, reason = "invalid", f"the meta-step returned no improver: {problem}"
            elif source is not None and source.strip() == version.source.strip():
                outcome, reason, source = "unchanged", "the meta-step kept the source", None
            else:
                outcome, reason = "created", f"derived from {version.id}; to be trialled"
        created = ImproverVersion(
            id=new_id,
            parent=version.id,
            created_by=context.trial.number,
            source=source,
            status=TRIALLED if outcome == "created" else REVERTED,
            reason=reason,
            decided_by=None if outcome == "created" else context.trial.number,
        )
        _write_version(lineage.study, created)
        record.update(
            outcome=outcome,
            reason=reason,
            parent_meta_utility=meta_utility,
            smoke_runs=smoke_runs[:20],
        )
        return record


class _Step:
    """The worker's side of one trial's improver runs: the LLM proxy and the utility."""

    def __init__(self, context: StepContext, best: FrozenTrial, sign: float) -> None:
        self.context = context
        self.sign = sign
        self.parent_number = best.number
        assert best.value is not None
        self.parent_score: float = best.value
        self.parent_snapshot = context.population.snapshot(best.number)
        self.parent_feedback = context.population.feedback(best.number)
        self.results: dict[str, RunResult] = {}

    def llm(self, messages: list[dict[str, str]], temperature: float | None) -> str:
        """One solution prompt through the study's LLM (accounted to the trial).

        The study's objective (its optimizer settings) comes first, as a system message, so
        every improver version's prompts carry it, whatever it writes.
        """
        objective = self.context.optimizer.objective_section()
        if objective is not None:
            messages = [{"role": "system", "content": objective}, *messages]
        return self.program_llm(messages, temperature)

    def program_llm(self, messages: list[dict[str, str]], temperature: float | None) -> str:
        """One LLM call of a meta-step's improver on its own source: no objective added."""
        options = dict(self.context.optimizer.call_options())
        if temperature is not None:
            options["temperature"] = temperature
        return self.context.llm.complete(messages, **options)

    def utility(self, solution: Any) -> float:
        """Evaluate a candidate in this process; higher is better; -inf if its code raised."""
        candidate = self.validated(solution, "utility() got")
        key = snapshots.snapshot_hash(candidate)
        result = self.results.get(key)
        if result is None:
            result = self.context.evaluate(candidate)
            self.results[key] = result
        if result.failed or result.score is None:
            return -math.inf
        assert not isinstance(result.score, list)  # multi_objective = False: one number
        return self.sign * result.score

    def validated(self, solution: Any, what: str) -> dict[str, Any]:
        """``solution`` if it is a full snapshot of this agent, else an error.

        Raises:
            Rejected: From :meth:`utility` (the improver sees the error).
            ImproverFailed: For a returned solution (kind ``result``).
        """
        problem = _snapshot_problem(solution, self.parent_snapshot)
        if problem is None:
            return dict(solution)
        if what.startswith("utility"):
            raise Rejected(f"{what} an invalid solution: {problem}")
        raise ImproverFailed("result", f"{what} an invalid solution: {problem}")


def _isolation_record(option: str, layers: list[str]) -> dict[str, Any]:
    """What the trial records of its improver's isolation."""
    return {
        "option": option,
        "layers": list(layers),
        "missing": [layer for layer in sandbox.LAYERS if layer not in layers],
    }


def _snapshot_problem(solution: Any, parent: dict[str, Any]) -> str | None:
    if not isinstance(solution, dict):
        return f"a {type(solution).__name__}, not a dict {{parameter path: value}}"
    missing = sorted(set(parent) - set(solution))
    extra = sorted(set(solution) - set(parent))
    if missing or extra:
        return f"its paths differ from the agent's: missing {missing}, unknown {extra}"
    for path, value in solution.items():
        try:
            snapshots.check_json_value(path, value)
        except SnapshotError as error:
            return str(error)
        problem = _type_problem(parent[path], value)
        if problem is not None:
            return f"{path!r}: {problem}"
    return None


def _type_problem(current: Any, value: Any) -> str | None:
    """Whether ``value`` may replace ``current`` (a parameter keeps its kind of value)."""
    if current is None:
        return None
    if isinstance(current, bool):
        ok = isinstance(value, bool)
    elif isinstance(current, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(current, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, type(current))
    if ok:
        return None
    return f"a {type(value).__name__} cannot replace a {type(current).__name__}"


def _meta_feedback(
    version: ImproverVersion,
    meta_utility: float | None,
    trials: int,
    smoke_budget: int,
    timeout_s: float,
) -> str:
    so_far = (
        f"mean improvement {meta_utility:.6g} of the score over {trials} completed trials"
        if meta_utility is not None
        else "no completed trial yet"
    )
    return (
        f"This program is improver version {version.id} of a Self-Taught Optimizer. "
        "improve(solution, feedback, utility, llm, budget) gets a solution (a dict {parameter "
        "path: value}, or a program's source as a str), the feedback on it, utility(solution) "
        "-> float (higher is better), llm(prompt, temperature=None) -> str, and budget, the "
        "number of llm calls it may make; the caller stops it at the first call beyond the "
        f"budget and after {timeout_s:g} s. Its meta-utility so far: {so_far}. The utility of "
        "a program you propose: it is run on the current best solution with a budget of "
        f"{smoke_budget} LLM call(s) and scored by the improvement it makes (-inf if it fails "
        "or breaks a rule)."
    )


def _range(value: Any) -> tuple[int, int]:
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        and 1 <= value[0] <= value[1]
    ):
        return value[0], value[1]
    raise ConfigurationError(
        "StopStrategy: num_candidates must be a (low, high) pair of ints with 1 <= low <= high; "
        f"got {value!r} ({type(value).__name__})."
    )
