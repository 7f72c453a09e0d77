"""Plotly figures of a trace_optuna study, and a self-contained HTML report of them all.

Each ``plot_*`` function reads the study's stored trials (through :mod:`trace_optuna.records`
and Optuna's public API, so it works on any study a trace_optuna process wrote, from any
storage) and returns a :class:`plotly.graph_objects.Figure`. As in ``optuna.visualization``, a
small data object is gathered first and then rendered:

=================================  ===============================================================
:func:`plot_score_history`         each trial's score, coloured by strategy, and the best so far
:func:`plot_strategy_usage`        share of trials per strategy and their mean improvement over
                                   time: what the sampler learned
:func:`plot_lineage`               the genealogy of candidates (parent to child), the best
                                   candidate's path highlighted, each node labelled with (and
                                   optionally linked to) its trial
:func:`plot_cost`                  LLM tokens and USD per trial and cumulative, per strategy
:func:`plot_parameter_sensitivity` per parameter path: how often a step changed it and the score
                                   change that followed
:func:`plot_stop_versions`         STOP: the meta-utility of each improver version
:func:`plot_registry_history`      shared parameters: which study changed each parameter, at
                                   which registry version (the lineage marks each trial that
                                   published)
:func:`plot_example_scores`        dataset studies: the candidates x examples score matrix of a
                                   split, and the per-example Pareto front
=================================  ===============================================================

:func:`write_report` writes the figures of :data:`FIGURES` (all but the per-study-kind
``plot_registry_history``; ``plot_example_scores`` only for a dataset study) into one HTML
page with plotly.js embedded, so it opens offline (``trace-optuna report``).

Each figure has its own private module (``_history``, ``_strategy``, ``_lineage``, ``_cost``,
``_sensitivity``, ``_stop``, ``_registry``, ``_examples``), built from the data ``_data`` (or,
for ``_examples``, the per-example store) gathers with the helpers of ``_common``; ``_report``
holds :data:`FIGURES` and the report.

A multi-objective study's figures show its **first objective** only (scores, best so far,
improvements), and every label naming the metric says so (``score[0] (objective 1 of 2)``);
for the trade-offs use Optuna's ``optuna.visualization.plot_pareto_front(study.optuna)``.

Example:
    >>> import trace_optuna as to
    >>> from trace_optuna import demo, visualization
    >>> study = to.create_study(agent=demo.make_agent, evaluate=demo.evaluate,
    ...                         llm=demo.DEMO_LLM, storage="sqlite:///:memory:")
    >>> study.optimize(n_trials=3)
    >>> figure = visualization.plot_score_history(study)
    >>> sorted(trace.name for trace in figure.data)
    ['baseline', 'best so far', 'optoprime']
"""

from __future__ import annotations

from trace_optuna.visualization._cost import plot_cost
from trace_optuna.visualization._examples import plot_example_scores
from trace_optuna.visualization._history import plot_score_history
from trace_optuna.visualization._lineage import plot_lineage
from trace_optuna.visualization._registry import plot_registry_history
from trace_optuna.visualization._report import FIGURES
from trace_optuna.visualization._report import figures
from trace_optuna.visualization._report import report_html
from trace_optuna.visualization._report import write_report
from trace_optuna.visualization._sensitivity import plot_parameter_sensitivity
from trace_optuna.visualization._stop import plot_stop_versions
from trace_optuna.visualization._strategy import plot_strategy_usage

__all__ = [
    "FIGURES",
    "figures",
    "plot_cost",
    "plot_example_scores",
    "plot_lineage",
    "plot_parameter_sensitivity",
    "plot_registry_history",
    "plot_score_history",
    "plot_stop_versions",
    "plot_strategy_usage",
    "report_html",
    "write_report",
]
