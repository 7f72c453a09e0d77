"""plot_score_history: each trial's score by strategy, and the best so far."""

from __future__ import annotations

from typing import TYPE_CHECKING

import optuna

from trace_optuna.visualization._common import _BEST_COLOUR
from trace_optuna.visualization._common import _FAILED_COLOUR
from trace_optuna.visualization._common import _colours
from trace_optuna.visualization._common import _empty
from trace_optuna.visualization._common import _plotly
from trace_optuna.visualization._common import _short
from trace_optuna.visualization._data import _gather

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from trace_optuna.study import TraceStudy


def plot_score_history(study: optuna.Study | TraceStudy) -> go.Figure:
    """Each trial's score, coloured by the strategy that produced it, and the best so far.

    Failed trials (no score) are marked with an ``x`` at the bottom of the plot.

    Args:
        study: A trace_optuna study, or its ``optuna.Study``.

    Returns:
        The figure: one marker trace per strategy, ``best so far`` (a step line) and, when
        there are any, ``failed``.
    """
    go = _plotly()
    data = _gather(study)
    title = f"Score over trials: {data.name}"
    completed = data.completed()
    if not completed:
        return _empty(title, "No completed trial yet.")
    colours = _colours(data)
    figure = go.Figure()
    for strategy in data.strategies:
        points = [trial for trial in completed if trial.strategy == strategy]
        if not points:
            continue
        figure.add_trace(
            go.Scatter(
                x=[trial.number for trial in points],
                y=[trial.value for trial in points],
                mode="markers",
                name=strategy,
                marker={"color": colours[strategy], "size": 9},
                customdata=[
                    [_improvement_text(trial.improvement), _short(trial.feedback)]
                    for trial in points
                ],
                hovertemplate=(
                    f"Trial %{{x}} · {strategy}<br>{data.metric} %{{y:.4g}} "
                    "(%{customdata[0]})<br>%{customdata[1]}<extra></extra>"
                ),
            )
        )
    best_x, best_y = [], []
    best: float | None = None
    for trial in completed:
        assert trial.value is not None
        if best is None or data.sign * trial.value > data.sign * best:
            best = trial.value
        best_x.append(trial.number)
        best_y.append(best)
    figure.add_trace(
        go.Scatter(
            x=best_x,
            y=best_y,
            mode="lines",
            line={"shape": "hv", "color": _BEST_COLOUR, "width": 2},
            name="best so far",
            hovertemplate=f"Trial %{{x}}: best {data.metric} %{{y:.4g}}<extra></extra>",
        )
    )
    failed = [trial for trial in data.trials if trial.state == "FAIL"]
    if failed:
        bottom = min(trial.value for trial in completed if trial.value is not None)
        figure.add_trace(
            go.Scatter(
                x=[trial.number for trial in failed],
                y=[bottom] * len(failed),
                mode="markers",
                name="failed",
                marker={"symbol": "x", "color": _FAILED_COLOUR, "size": 8},
                customdata=[[trial.strategy, _short(trial.error)] for trial in failed],
                hovertemplate=(
                    "Trial %{x} · %{customdata[0]} failed<br>%{customdata[1]}<extra></extra>"
                ),
            )
        )
    figure.update_layout(
        title=title,
        xaxis_title="Trial",
        yaxis_title=data.metric,
        legend_title="strategy",
    )
    return figure


def _improvement_text(improvement: float | None) -> str:
    if improvement is None:
        return "no parent"
    return f"{improvement:+.4g} over its parent"
