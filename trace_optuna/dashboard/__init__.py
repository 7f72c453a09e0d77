"""optuna-dashboard glue: a Markdown note per trial, figures saved into the study, artifacts for
long texts, human feedback typed into the dashboard's forms, and the ``trace-optuna dashboard``
and ``trace-optuna report`` commands.

Everything here needs the ``dashboard`` extra (``pip install trace-optuna[dashboard]``) except
the study description and the report. Without it, trials run as before and simply carry no note
and no saved figures (logged once); :class:`HumanFeedback` and ``trace-optuna dashboard`` refuse
to start and name the extra.

What a trial's note shows (written in ``optuna_dashboard.save_note``'s storage format, without
its read of every study system attribute, before the trial is told, so while it runs;
rewritten by :class:`HumanFeedback` while it waits):

* the strategy and its sampled settings, the parent trial(s) and their score;
* the score and the improvement over the parent, or why the trial failed;
* the feedback that drove the step and the feedback on the candidate;
* a ``diff`` block per changed parameter;
* the LLM calls, tokens, cost and where each prompt and response is stored.

Long prompts and responses (over :data:`LONG_TEXT_CHARS` characters) go to the study's
artifact store when it has one (``create_study(artifact_dir=...)`` or ``artifact_store=...``);
the attribute then keeps the start of the text and ``trace:artifacts`` says where the rest is
(:func:`read_text` reads it back). Without a store they stay in chunked attributes.

optuna-dashboard has no authentication and its write endpoints are open: ``trace-optuna
dashboard`` serves it behind :class:`Guard` (``_guard``): only its own ``Host`` names, a
per-start token, writes from its own page only, no framing, and a read-only mode.

One part per private module: ``_notes`` (the trial's note), ``_artifacts`` (long texts),
``_figures`` (figures saved into the study, :class:`FigureRefresher`), ``_human``
(:class:`HumanFeedback`), ``_guard`` (:class:`Guard`, the WSGI checks in front of
optuna-dashboard), ``_study`` (the study's description), ``_hooks`` (what happens
around a trial), ``_observer`` (:class:`DashboardObserver`, which the core calls through
:mod:`trace_optuna.observers`; registered when this package is imported), ``_commands`` (the
two commands), ``_keys`` (optuna-dashboard's
storage keys) and ``_imports`` (optuna-dashboard as an optional dependency).
"""

from __future__ import annotations

from trace_optuna import observers as _observers
from trace_optuna.dashboard._artifacts import HEAD_CHARS
from trace_optuna.dashboard._artifacts import LONG_TEXT_CHARS
from trace_optuna.dashboard._artifacts import offload_long_texts
from trace_optuna.dashboard._artifacts import read_text
from trace_optuna.dashboard._artifacts import resolve_artifact_store
from trace_optuna.dashboard._artifacts import stored_artifact_store
from trace_optuna.dashboard._commands import add_commands
from trace_optuna.dashboard._commands import run_dashboard
from trace_optuna.dashboard._commands import run_report
from trace_optuna.dashboard._figures import DEFAULT_FIGURE_INTERVAL
from trace_optuna.dashboard._figures import FIGURE_COST_FACTOR
from trace_optuna.dashboard._figures import FIGURE_PREFIX
from trace_optuna.dashboard._figures import FigureRefresher
from trace_optuna.dashboard._figures import dashboard_trial_url
from trace_optuna.dashboard._figures import figures_stamp
from trace_optuna.dashboard._figures import save_figures
from trace_optuna.dashboard._guard import Guard
from trace_optuna.dashboard._guard import GuardSettings
from trace_optuna.dashboard._hooks import before_write
from trace_optuna.dashboard._hooks import enter_trial
from trace_optuna.dashboard._human import HumanFeedback
from trace_optuna.dashboard._human import HumanFeedbackTimeout
from trace_optuna.dashboard._imports import EXTRA
from trace_optuna.dashboard._keys import DASHBOARD_CHUNK_CHARS
from trace_optuna.dashboard._keys import figure_chunk_key
from trace_optuna.dashboard._keys import note_chunk_key
from trace_optuna.dashboard._keys import note_version_key
from trace_optuna.dashboard._notes import NOTE_DIFF_CHARS
from trace_optuna.dashboard._notes import NOTE_TEXT_CHARS
from trace_optuna.dashboard._notes import split_diff
from trace_optuna.dashboard._notes import trial_note
from trace_optuna.dashboard._notes import write_note
from trace_optuna.dashboard._observer import DashboardObserver
from trace_optuna.dashboard._study import describe_study

__all__ = [
    "DashboardObserver",
    "DASHBOARD_CHUNK_CHARS",
    "DEFAULT_FIGURE_INTERVAL",
    "EXTRA",
    "FIGURE_COST_FACTOR",
    "FIGURE_PREFIX",
    "FigureRefresher",
    "Guard",
    "GuardSettings",
    "HEAD_CHARS",
    "HumanFeedback",
    "HumanFeedbackTimeout",
    "LONG_TEXT_CHARS",
    "NOTE_DIFF_CHARS",
    "NOTE_TEXT_CHARS",
    "add_commands",
    "before_write",
    "dashboard_trial_url",
    "describe_study",
    "enter_trial",
    "figure_chunk_key",
    "figures_stamp",
    "note_chunk_key",
    "note_version_key",
    "offload_long_texts",
    "read_text",
    "resolve_artifact_store",
    "run_dashboard",
    "run_report",
    "save_figures",
    "split_diff",
    "stored_artifact_store",
    "trial_note",
    "write_note",
]

_observers.register(DashboardObserver)
