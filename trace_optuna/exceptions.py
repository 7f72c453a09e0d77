"""Exceptions raised by trace_optuna, all defined here.

The tree::

    TraceOptunaError             base class of everything raised on purpose here
    ├── ConfigurationError       bad input to a public function or constructor, a value of the
    │   │                        wrong type included (also a ValueError)
    │   └── IsolationUnavailable this machine cannot isolate LLM-written code as required
    │                            (the message says what is missing and how to enable it)
    ├── SnapshotError            a parameter value cannot be stored or restored (also ValueError)
    ├── RecordError              stored attributes are missing, corrupt or of a newer schema; a
    │                            trial number the study does not hold; a trial that
    │                            trace_optuna did not write
    ├── NoCompletedTrialError    the study holds no completed trace_optuna trial yet, so there
    │                            is no best candidate to start from (also a ValueError, as
    │                            Optuna's ``best_trial`` raises)
    ├── LLMError                 the LLM failed after its retries, or answered unusably
    │   └── SuggestionError      an LLM suggestion does not express a value of the
    │                            parameter's type (also a ValueError)
    ├── TrialFailed              one trial failed; the study records the reason and goes on
    ├── EvaluationTimeout        one run of evaluate took longer than evaluate_timeout
    ├── HumanFeedbackTimeout     nobody answered HumanFeedback's form in time
    ├── BudgetExhausted          the study's Budget (USD, evaluations, LLM calls; every
    │                            worker's spend) is spent: workers stop cleanly
    ├── ImproverFailed           a STOP improver broke a sandbox rule or raised
    └── Rejected                 an improver's LLM or utility request refused by the worker;
                                 the improver sees it (also a ValueError)

Input validation raises ``ConfigurationError`` (``SnapshotError`` for snapshots), never a bare
``ValueError``, ``TypeError`` or ``assert``. A value of the wrong type is a
``ConfigurationError`` too: a rule such as "an int in [2, 10]" is one rule, so one ``except
trace_optuna.ConfigurationError`` (or ``except ValueError``, as with any other library) catches
every refused argument, and the message names the argument, the rule and the value given.

Older import paths keep working: ``trace_optuna.strategies.sandbox.ImproverFailed`` and
``Rejected``, ``trace_optuna.strategies.optoprime.SuggestionError`` and
``trace_optuna.dashboard.HumanFeedbackTimeout`` are these classes.
"""

from __future__ import annotations


class TraceOptunaError(Exception):
    """Base class of every exception trace_optuna raises on purpose."""


class ConfigurationError(TraceOptunaError, ValueError):
    """An argument to a public function breaks a documented rule (its type included)."""


class SnapshotError(TraceOptunaError, ValueError):
    """A Trace parameter's value cannot be stored as JSON or restored into an agent."""


class RecordError(TraceOptunaError):
    """Attributes stored for a trial or study are missing, corrupt or from a newer schema.

    Also raised for a trial number the study does not hold, and for a trial that holds no
    trace_optuna record (a plain Optuna trial).
    """


class NoCompletedTrialError(TraceOptunaError, ValueError):
    """The study holds no completed trace_optuna trial, so there is no candidate to start from.

    A ``ValueError`` too, as Optuna's ``Study.best_trial`` raises in the same situation.
    """


class LLMError(TraceOptunaError):
    """The LLM call failed after its retries, or its answer had no usable suggestion.

    Attributes:
        response: The raw text the model answered, when there was one.
    """

    def __init__(self, message: str, *, response: str | None = None) -> None:
        super().__init__(message)
        self.response = response


class SuggestionError(LLMError, ValueError):
    """An LLM suggestion cannot be turned into a value of the parameter's type."""


class TrialFailed(TraceOptunaError):
    """A trial could not produce a score. Optuna marks it FAIL; the study goes on.

    The reason, the traceback and whatever the trial produced before failing are already
    stored in the trial's attributes when this is raised.
    """


class HumanFeedbackTimeout(TraceOptunaError):
    """Nobody answered :class:`~trace_optuna.dashboard.HumanFeedback`'s form in time.

    The trial fails; its candidate stays in its record.
    """


class BudgetExhausted(TraceOptunaError):
    """The study's :class:`~trace_optuna.Budget` is spent, counting every worker's spend.

    Workers stop before the next trial (or validation chunk) and say why.

    Attributes:
        reason: Which limit was reached, with the numbers (:meth:`Budget.exhausted`).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"The study's budget is spent ({reason}).")
        self.reason = reason


class ImproverFailed(TraceOptunaError):
    """A STOP improver run broke a rule or raised; the child process has been killed.

    Attributes:
        kind: One of ``trace_optuna.strategies.sandbox.FAILURE_KINDS``: ``timeout``,
            ``budget`` (an LLM call beyond the budget), ``utility_budget``, ``memory``,
            ``error`` (the improver raised, also a syntax error), ``crashed`` (the process
            died), ``protocol`` (a malformed message), ``result`` (what ``improve`` returned
            is unusable).
        details: The improver's traceback or the tail of its stderr, if any.
        llm_calls: LLM calls the parent served before the failure.
        utility_calls: Utility calls the parent served before the failure.
        layers: The isolation layers that were active in the improver's process.
    """

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        details: str = "",
        llm_calls: int = 0,
        utility_calls: int = 0,
        layers: list[str] | None = None,
    ) -> None:
        super().__init__(f"The improver failed ({kind}): {message}")
        self.kind = kind
        self.details = details
        self.llm_calls = llm_calls
        self.utility_calls = utility_calls
        self.layers = list(layers or [])


class IsolationUnavailable(ConfigurationError):
    """The sandbox for LLM-written code cannot be isolated here as required.

    Raised where a study or worker starts with the ``stop`` strategy (and by a sandboxed run)
    when a layer of :data:`trace_optuna.sandbox.LAYERS` cannot be set up and
    ``stop_isolation`` (or ``isolation``) is ``"required"``. The message names each missing
    layer, why, how to enable it, and the explicit opt-out.
    """


class Rejected(TraceOptunaError, ValueError):
    """Raised by an improver's LLM or utility handler to refuse one request.

    The improver sees the error (as a ``ValueError`` from ``utility``, a ``RuntimeError``
    from ``llm``) and may go on. Anything else a handler raises is a failure of the caller
    (for example the user's ``evaluate`` crashing): the improver is killed and the exception
    propagates. See :func:`trace_optuna.strategies.sandbox.run_improver`.
    """


class EvaluationTimeout(TraceOptunaError):
    """One run of ``evaluate`` took longer than ``evaluate_timeout`` and was interrupted.

    Raised inside ``evaluate`` (so its ``finally`` blocks run); the trial fails with it as its
    reason and the study goes on.
    """
