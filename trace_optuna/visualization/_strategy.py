"""plot_strategy_usage: the share of trials per strategy and their mean improvement:
what the sampler learned.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import optuna

from trace_optuna import records
from trace_optuna.visualization._common import _colours
from trace_optuna.visualization._common import _empty
from trace_optuna.visualization._common import _make_subplots
from trace_optuna.visualization._common import _plotly
from trace_optuna.visualization._data import _gather

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from trace_optuna.study import TraceStudy


def plot_strategy_usage(study: optuna.Study | TraceStudy, window: int = 10) -> go.Figure:
    """What the sampler learned: the share of trials per strategy, and their improvement.

    Top: among the last ``window`` finished trials (failed ones included), the share that each
    strategy ran. Bottom: each strategy's mean improvement over its parent across its last
    ``window`` completed trials (sign-flipped when the study minimizes, so higher is better).

    Args:
        study: A trace_optuna study, or its ``optuna.Study``.
        window: How many trials each point looks back over.

    Returns:
        The figure: per strategy, a stacked-area ``share`` trace and an ``improvement`` trace.

    Raises:
        ValueError: If ``window`` is not a positive integer.
    """
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive integer, got {window!r}.")
    go = _plotly()
    data = _gather(study)
    title = f"Strategy usage and mean improvement: {data.name}"
    steps = [trial for trial in data.trials if trial.strategy != records.BASELINE]
    if not steps:
        return _empty(title, "No optimizer step yet (only the baseline).")
    colours = _colours(data)
    flipped = "" if data.maximize else ", sign-flipped: the study minimizes"
    figure = _make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.12,
        subplot_titles=(
            f"Share of the last {window} trials per strategy",
            f"Mean improvement over the parent, last {window} completed trials{flipped}",
        ),
    )
    numbers = [trial.number for trial in steps]
    used = [name for name in data.strategies if any(t.strategy == name for t in steps)]
    for strategy in used:
        shares = []
        for index in range(len(steps)):
            recent = steps[max(0, index - window + 1) : index + 1]
            shares.append(sum(1 for t in recent if t.strategy == strategy) / len(recent))
        figure.add_trace(
            go.Scatter(
                x=numbers,
                y=shares,
                mode="lines",
                stackgroup="share",
                name=strategy,
                legendgroup=strategy,
                line={"color": colours[strategy], "width": 0.5},
                hovertemplate=f"Trial %{{x}}: {strategy} ran %{{y:.0%}}<extra></extra>",
                meta="share",
            ),
            row=1,
            col=1,
        )
        gains = [
            (trial.number, data.sign * trial.improvement)
            for trial in steps
            if trial.strategy == strategy
            and trial.state == "COMPLETE"
            and trial.improvement is not None
            and math.isfinite(trial.improvement)
        ]
        means = []
        for index in range(len(gains)):
            last = gains[max(0, index - window + 1) : index + 1]
            means.append(sum(gain for _, gain in last) / len(last))
        figure.add_trace(
            go.Scatter(
                x=[number for number, _ in gains],
                y=means,
                mode="lines+markers",
                name=strategy,
                legendgroup=strategy,
                showlegend=False,
                line={"color": colours[strategy]},
                hovertemplate=(
                    f"Trial %{{x}}: {strategy} mean improvement %{{y:+.4g}}<extra></extra>"
                ),
                meta="improvement",
            ),
            row=2,
            col=1,
        )
    figure.update_yaxes(title_text="share", tickformat=".0%", range=[0, 1], row=1, col=1)
    figure.update_yaxes(title_text="improvement", row=2, col=1)
    figure.update_xaxes(title_text="Trial", row=2, col=1)
    figure.update_layout(title=title, legend_title="strategy", height=650)
    return figure
