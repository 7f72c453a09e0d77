"""What the figures read of a study: one small record per finished trace_optuna trial, and
the study's metric, direction and strategies.
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import contextvars
import dataclasses
from typing import TYPE_CHECKING

import optuna
from optuna.study import StudyDirection
from optuna.trial import TrialState

from trace_optuna import records

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from trace_optuna.study import TraceStudy


@dataclasses.dataclass(frozen=True)
class _Trial:
    """What the figures need of one finished trial that carries a trace_optuna record."""

    number: int
    state: str
    value: float | None
    strategy: str
    parents: list[int]
    improvement: float | None
    changed: list[str]
    feedback: str
    error: str
    tokens: int  # the optimizer's and the agent's own model's (agent_llm) together
    cost_usd: float | None  # both, too; None when no call had a known price
    duplicate_of: int | None
    stop_version: str | None
    published: int | None = None  # the registry version it published (shared parameters)
    agent_tokens: int = 0  # of ``tokens``, the agent's own model's
    agent_cost_usd: float | None = None  # of ``cost_usd``, the agent's own model's


@dataclasses.dataclass(frozen=True)
class _StudyData:
    name: str
    maximize: bool
    metric: str
    strategies: list[str]  # baseline first, then the study's strategies, then any others
    trials: list[_Trial]

    @property
    def sign(self) -> float:
        """+1 when higher scores are better, -1 when the study minimizes."""
        return 1.0 if self.maximize else -1.0

    def completed(self) -> list[_Trial]:
        return [trial for trial in self.trials if trial.state == "COMPLETE"]


def _optuna_study(study: optuna.Study | TraceStudy) -> optuna.Study:
    inner = getattr(study, "optuna", study)
    if not isinstance(inner, optuna.Study):
        raise TypeError(
            f"Expected an optuna.Study or a trace_optuna TraceStudy, got {type(study).__name__}."
        )
    return inner


# Inside one_reading(): each study's data as read the first time, by id of its optuna.Study.
_READ: contextvars.ContextVar[dict[int, _StudyData] | None] = contextvars.ContextVar(
    "trace_optuna_figures_read", default=None
)


@contextlib.contextmanager
def one_reading() -> Iterator[None]:
    """Figures built inside this block read each study once and share what they read (the
    figures saved together for optuna-dashboard: one pass over the trials, not one each)."""
    if _READ.get() is not None:  # already inside one: share its reads
        yield
        return
    token = _READ.set({})
    try:
        yield
    finally:
        _READ.reset(token)


def _gather(study: optuna.Study | TraceStudy) -> _StudyData:
    inner = _optuna_study(study)
    read = _READ.get()
    if read is None:
        return _read_study(inner)
    if id(inner) not in read:
        read[id(inner)] = _read_study(inner)
    return read[id(inner)]


def _read_study(inner: optuna.Study) -> _StudyData:
    states = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
    trials = []
    for frozen in inner.get_trials(deepcopy=False, states=states):
        if records.SCHEMA not in frozen.user_attrs:
            continue  # not written by trace_optuna
        trials.append(_read(frozen))
    strategies = [records.BASELINE]
    for name in [*(inner.user_attrs.get(records.STUDY_STRATEGIES) or [])] + [
        trial.strategy for trial in trials
    ]:
        if name not in strategies:
            strategies.append(name)
    metric = (inner.metric_names or ["score"])[0] or "score"
    directions = inner.directions
    if len(directions) > 1:  # the figures show the first objective, and say so
        metric = f"{metric} (objective 1 of {len(directions)})"
    return _StudyData(
        name=inner.study_name,
        maximize=directions[0] == StudyDirection.MAXIMIZE,
        metric=metric,
        strategies=strategies,
        trials=trials,
    )


def _read(frozen: FrozenTrial) -> _Trial:
    record = records.build_record(frozen, {})
    usage = records.usage_total(frozen.user_attrs)
    agent = record.agent_llm
    agent_cost = agent.get("cost_usd")
    stop_version = frozen.user_attrs.get("trace:stop_version")  # strategies.stop.VERSION_ATTR
    # A multi-objective trial: its first objective (the figures say so in their labels).
    values = frozen.values if frozen.state == TrialState.COMPLETE else None
    improvement = record.improvement
    if isinstance(improvement, list):
        improvement = improvement[0] if improvement else None
    return _Trial(
        number=record.number,
        state=record.state,
        value=values[0] if values else record.value,
        strategy=record.strategy or "unknown",
        parents=[int(parent) for parent in record.parents],
        improvement=improvement,
        changed=record.changed,
        feedback=record.feedback or "",
        error=record.error or "",
        tokens=usage["tokens"],
        cost_usd=usage["cost_usd"],
        duplicate_of=record.duplicate_of,
        stop_version=stop_version if isinstance(stop_version, str) else None,
        published=_published_version(frozen),
        agent_tokens=int(agent.get("prompt_tokens") or 0)
        + int(agent.get("completion_tokens") or 0),
        agent_cost_usd=float(agent_cost) if isinstance(agent_cost, (int, float)) else None,
    )


def _published_version(frozen: FrozenTrial) -> int | None:
    publish = frozen.user_attrs.get(records.PUBLISH)
    if isinstance(publish, dict) and publish.get("status") == "published":
        return int(publish["version"])
    return None


def _best(data: _StudyData, nodes: dict[int, _Trial]) -> _Trial:
    """The best candidate; among equal scores the newest (as trace_optuna's Population)."""
    candidates = [trial for trial in nodes.values() if trial.duplicate_of is None] or list(
        nodes.values()
    )
    return max(candidates, key=lambda trial: (data.sign * (trial.value or 0.0), trial.number))
