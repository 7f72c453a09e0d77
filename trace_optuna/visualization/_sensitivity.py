"""plot_parameter_sensitivity: per parameter path, how often a step changed it and
the score change that followed.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import optuna

from trace_optuna import records
from trace_optuna.visualization._common import _FAILED_COLOUR
from trace_optuna.visualization._common import _empty
from trace_optuna.visualization._common import _make_subplots
from trace_optuna.visualization._common import _plotly
from trace_optuna.visualization._data import _gather

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from trace_optuna.study import TraceStudy


def plot_parameter_sensitivity(study: optuna.Study | TraceStudy) -> go.Figure:
    """Which parameter matters: per parameter path, how often a step changed it, and the
    score change (improvement over the parent) of the trials that changed it.

    A trial that changed several parameters counts for each of them. Improvements are
    sign-flipped when the study minimizes, so higher is better.

    Args:
        study: A trace_optuna study, or its ``optuna.Study``.

    Returns:
        A 1 x 2 figure: stacked bars of ``changed, completed`` / ``changed, failed`` per path
        (left), and a box per path of the improvements that followed (right).
    """
    go = _plotly()
    data = _gather(study)
    title = f"Parameter sensitivity: {data.name}"
    steps = [
        trial for trial in data.trials if trial.strategy != records.BASELINE and trial.changed
    ]
    if not steps:
        return _empty(title, "No step has changed a parameter yet.")
    paths = sorted({path for trial in steps for path in trial.changed})
    completed = {path: 0 for path in paths}
    failed = {path: 0 for path in paths}
    gains: dict[str, list[tuple[int, float]]] = {path: [] for path in paths}
    for trial in steps:
        for path in trial.changed:
            if trial.state == "COMPLETE":
                completed[path] += 1
                if trial.improvement is not None and math.isfinite(trial.improvement):
                    gains[path].append((trial.number, data.sign * trial.improvement))
            else:
                failed[path] += 1
    # Most often changed at the top (plotly draws the first category at the bottom).
    paths.sort(key=lambda path: (completed[path] + failed[path], path))
    flipped = "" if data.maximize else " (sign-flipped: the study minimizes)"
    figure = _make_subplots(
        rows=1,
        cols=2,
        shared_yaxes=True,
        horizontal_spacing=0.04,
        subplot_titles=("Times changed", f"Improvement after the change{flipped}"),
    )
    for name, counts, colour in (
        ("changed, completed", completed, "#1f77b4"),
        ("changed, failed", failed, _FAILED_COLOUR),
    ):
        figure.add_trace(
            go.Bar(
                y=paths,
                x=[counts[path] for path in paths],
                orientation="h",
                name=name,
                marker_color=colour,
                hovertemplate="%{y}: %{x} trials<extra>" + name + "</extra>",
            ),
            row=1,
            col=1,
        )
    for path in paths:
        if not gains[path]:
            continue
        figure.add_trace(
            go.Box(
                x=[gain for _, gain in gains[path]],
                y=[path] * len(gains[path]),
                name=path,
                orientation="h",
                boxpoints="all",
                boxmean=True,
                jitter=0.4,
                marker={"color": "#2ca02c", "size": 6},
                line={"color": "#2ca02c"},
                customdata=[number for number, _ in gains[path]],
                hovertemplate="Trial %{customdata}: %{x:+.4g}<extra>" + path + "</extra>",
                showlegend=False,
            ),
            row=1,
            col=2,
        )
    figure.add_vline(x=0, line={"color": "#888", "dash": "dot"}, row=1, col=2)
    figure.update_xaxes(title_text="trials", row=1, col=1)
    figure.update_xaxes(title_text="improvement over the parent", row=1, col=2)
    figure.update_layout(title=title, barmode="stack", height=max(350, 120 + 60 * len(paths)))
    return figure
