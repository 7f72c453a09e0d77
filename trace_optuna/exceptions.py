"""Exceptions raised by trace_optuna.

The tree::

    TraceOptunaError             base class of everything raised on purpose here
    ├── ConfigurationError       bad input to a public function (also a ValueError)
    ├── SnapshotError            a parameter value cannot be stored or restored (also ValueError)
    ├── RecordError              stored attributes are missing, corrupt or of a newer schema
    ├── LLMError                 the LLM failed after its retries, or answered unusably
    ├── ImproverFailed           a STOP improver broke a sandbox rule or raised
                                 (defined in trace_optuna.strategies.sandbox)
    └── TrialFailed              one trial failed; the study records the reason and goes on

Input validation raises ``ConfigurationError``/``SnapshotError``, which are also ``ValueError``
so that ``except ValueError`` works as with any other library.
"""

from __future__ import annotations


class TraceOptunaError(Exception):
    """Base class of every exception trace_optuna raises on purpose."""


class ConfigurationError(TraceOptunaError, ValueError):
    """An argument to a public function breaks a documented rule."""


class SnapshotError(TraceOptunaError, ValueError):
    """A Trace parameter's value cannot be stored as JSON or restored into an agent."""


class RecordError(TraceOptunaError):
    """Attributes stored for a trial or study are missing, corrupt or from a newer schema."""


class LLMError(TraceOptunaError):
    """The LLM call failed after its retries, or its answer had no usable suggestion.

    Attributes:
        response: The raw text the model answered, when there was one.
    """

    def __init__(self, message: str, *, response: str | None = None) -> None:
        super().__init__(message)
        self.response = response


class TrialFailed(TraceOptunaError):
    """A trial could not produce a score. Optuna marks it FAIL; the study goes on.

    The reason, the traceback and whatever the trial produced before failing are already
    stored in the trial's attributes when this is raised.
    """


class EvaluationTimeout(TraceOptunaError):
    """One run of ``evaluate`` took longer than ``evaluate_timeout`` and was interrupted.

    Raised inside ``evaluate`` (so its ``finally`` blocks run); the trial fails with it as its
    reason and the study goes on.
    """
