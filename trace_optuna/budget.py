"""Budgets across all workers of a study: USD, evaluations of examples, LLM calls.

A :class:`Budget` is a set of study-wide limits. What the study has spent (:func:`spent`) is
read from the database, so it is every worker's spend, not this process's:

* **evaluations**: the rows of the study's per-example store (:class:`~trace_optuna.
  example_results.ExampleStore`): each (candidate, split, example) pair run once, by any
  worker (a cache hit costs nothing and counts nothing);
* **LLM calls** and **USD**: summed over the study's trials from their stored LLM records
  (``trace:llm``, the optimizer's model, and ``trace:agent_llm``, the agent's own; see
  :func:`trace_optuna.records.usage_total`), trials of every state.

A running trial writes its LLM record when it ends, so its spend so far is not counted yet:
the total can pass a limit by at most the trials in progress. Calls of a model with no known
price count no dollars; :attr:`Spend.unpriced_trials` says how many trials had such calls.

Callers check ``budget.exhausted(spent(study))`` before each trial and before each chunk of
validation; when it returns a reason they stop, raising :class:`~trace_optuna.exceptions.
BudgetExhausted` with it.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from typing import Any

import optuna

from trace_optuna import records
from trace_optuna.example_results import ExampleStore
from trace_optuna.exceptions import ConfigurationError

_LIMITS = ("usd", "evaluations", "llm_calls")


@dataclasses.dataclass(frozen=True)
class Spend:
    """What a study has spent, across all its workers.

    Attributes:
        usd: Dollars of the LLM calls with a known price.
        evaluations: Example evaluations run (rows of the per-example store, every split).
        llm_calls: LLM calls, the optimizer's and the agents' own.
        unpriced_trials: Trials whose LLM calls had no known price (not in ``usd``).
    """

    usd: float = 0.0
    evaluations: int = 0
    llm_calls: int = 0
    unpriced_trials: int = 0


class Budget:
    """Study-wide limits on what a dataset study may spend; any limit reached stops it.

    Args:
        usd: Dollars of LLM calls (a positive finite number), or None for no limit.
        evaluations: Example evaluations (a positive int), or None.
        llm_calls: LLM calls (a positive int), or None.

    Raises:
        ConfigurationError: If a limit is not a positive finite number (an int for
            ``evaluations`` and ``llm_calls``), or no limit is set.

    Example:
        >>> budget = Budget(usd=5.0, evaluations=5000)
        >>> budget.exhausted(Spend(usd=1.25, evaluations=5000))
        'evaluations budget spent: 5000 example evaluations of at most 5000'
        >>> budget.exhausted(Spend(usd=1.25, evaluations=10)) is None
        True
    """

    def __init__(
        self,
        usd: float | None = None,
        evaluations: int | None = None,
        llm_calls: int | None = None,
    ) -> None:
        if usd is not None and (
            isinstance(usd, bool)
            or not isinstance(usd, (int, float))
            or not math.isfinite(usd)
            or usd <= 0
        ):
            raise ConfigurationError(
                f"Budget usd must be a positive finite number of dollars, got {usd!r}."
            )
        for name, value in (("evaluations", evaluations), ("llm_calls", llm_calls)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value <= 0
            ):
                raise ConfigurationError(f"Budget {name} must be a positive int, got {value!r}.")
        if usd is None and evaluations is None and llm_calls is None:
            raise ConfigurationError(
                "Budget needs at least one limit: usd=, evaluations= or llm_calls=."
            )
        self.usd = None if usd is None else float(usd)
        self.evaluations = evaluations
        self.llm_calls = llm_calls

    def exhausted(self, spend: Spend) -> str | None:
        """Why the budget is spent (every limit reached, with the numbers), or None."""
        reasons = []
        if self.usd is not None and spend.usd >= self.usd:
            unpriced = (
                f" (and {spend.unpriced_trials} trial(s) of calls without a known price)"
                if spend.unpriced_trials
                else ""
            )
            reasons.append(
                f"usd budget spent: ${spend.usd:.4f} of LLM calls{unpriced} of at most "
                f"${self.usd:.4f}"
            )
        if self.evaluations is not None and spend.evaluations >= self.evaluations:
            reasons.append(
                f"evaluations budget spent: {spend.evaluations} example evaluations of at "
                f"most {self.evaluations}"
            )
        if self.llm_calls is not None and spend.llm_calls >= self.llm_calls:
            reasons.append(
                f"llm_calls budget spent: {spend.llm_calls} LLM calls of at most {self.llm_calls}"
            )
        return "; ".join(reasons) or None

    def remaining_evaluations(self, spend: Spend) -> int | None:
        """Example evaluations left before the limit (0 when spent), or None without one."""
        if self.evaluations is None:
            return None
        return max(0, self.evaluations - spend.evaluations)

    def to_dict(self) -> dict[str, Any]:
        """The limits as JSON (e.g. for a study attribute); :meth:`from_dict` reads it."""
        return {name: getattr(self, name) for name in _LIMITS}

    @classmethod
    def from_dict(cls, limits: dict[str, Any]) -> Budget:
        """The budget :meth:`to_dict` wrote.

        Raises:
            ConfigurationError: If ``limits`` has another key or breaks a rule.
        """
        unknown = sorted(set(limits) - set(_LIMITS))
        if unknown:
            raise ConfigurationError(
                f"Budget limits are {list(_LIMITS)}; got the unknown {unknown}."
            )
        return cls(**limits)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Budget) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(tuple(self.to_dict().values()))

    def __repr__(self) -> str:
        limits = ", ".join(
            f"{name}={value!r}" for name, value in self.to_dict().items() if value is not None
        )
        return f"Budget({limits})"


def spent(study: Any) -> Spend:
    """What ``study`` has spent so far, every worker's spend, read from its storage.

    Args:
        study: An ``optuna.Study`` or a :class:`~trace_optuna.TraceStudy`.

    Returns:
        The study's :class:`Spend`: evaluations counted with one query, LLM calls and dollars
        summed over its trials' stored LLM records.
    """
    optuna_study: optuna.Study = getattr(study, "optuna", study)
    evaluations = ExampleStore(optuna_study._storage, optuna_study._study_id).count()
    usd = 0.0
    calls = unpriced = 0
    for trial in optuna_study.get_trials(deepcopy=False):
        usage = records.usage_total(trial.user_attrs)
        calls += usage["calls"]
        if usage["cost_usd"] is not None:
            usd += usage["cost_usd"]
        elif usage["calls"]:
            unpriced += 1
    return Spend(usd=usd, evaluations=evaluations, llm_calls=calls, unpriced_trials=unpriced)


def record_exhausted(study: optuna.Study, reason: str) -> None:
    """Say in the study why its workers stopped: the study user attribute
    ``trace:budget_exhausted`` (``{"reason": ..., "at": ISO time}``), read by
    :func:`exhausted_record` and shown by ``trace-optuna status``-like readers."""
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    study.set_user_attr(records.STUDY_BUDGET_EXHAUSTED, {"reason": reason, "at": stamp})


def exhausted_record(study: optuna.Study) -> dict[str, Any] | None:
    """Why the study's workers stopped on its budget (:func:`record_exhausted`), or None."""
    return study.user_attrs.get(records.STUDY_BUDGET_EXHAUSTED)
