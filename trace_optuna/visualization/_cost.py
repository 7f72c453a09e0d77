"""plot_cost: LLM tokens and USD per trial and cumulative, per strategy."""

from __future__ import annotations

from typing import TYPE_CHECKING

import optuna

from trace_optuna.visualization._common import _colours
from trace_optuna.visualization._common import _empty
from trace_optuna.visualization._common import _make_subplots
from trace_optuna.visualization._common import _plotly
from trace_optuna.visualization._data import _gather
from trace_optuna.visualization._data import _Trial

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from trace_optuna.study import TraceStudy


def plot_cost(study: optuna.Study | TraceStudy) -> go.Figure:
    """LLM tokens (prompt + completion) and USD, per trial and cumulative, per strategy.

    A trial's calls are the optimizer's and, with ``agent_llm``, the agent's own. Failed trials
    count: their LLM calls were paid for. A trial whose models have no price in litellm's table
    counts 0 USD (its hover text says the cost is unknown).

    Args:
        study: A trace_optuna study, or its ``optuna.Study``.

    Returns:
        A 2 x 2 figure: tokens per trial and cumulative tokens (top), USD per trial and
        cumulative USD (bottom); bars and lines per strategy, and a ``total`` line.
    """
    go = _plotly()
    data = _gather(study)
    title = f"LLM cost: {data.name}"
    if not data.trials:
        return _empty(title, "No finished trial yet.")
    colours = _colours(data)
    figure = _make_subplots(
        rows=2,
        cols=2,
        vertical_spacing=0.14,
        horizontal_spacing=0.08,
        subplot_titles=(
            "Tokens per trial",
            "Cumulative tokens",
            "USD per trial",
            "Cumulative USD",
        ),
    )
    used = [name for name in data.strategies if any(t.strategy == name for t in data.trials)]
    for metric, row in (("tokens", 1), ("usd", 2)):
        for strategy in used:
            points = [trial for trial in data.trials if trial.strategy == strategy]
            per_trial = [_cost_of(trial, metric) for trial in points]
            unknown = [
                "cost unknown" if metric == "usd" and trial.cost_usd is None else ""
                for trial in points
            ]
            figure.add_trace(
                go.Bar(
                    x=[trial.number for trial in points],
                    y=per_trial,
                    name=strategy,
                    legendgroup=strategy,
                    showlegend=row == 1,
                    marker_color=colours[strategy],
                    customdata=unknown,
                    hovertemplate=(
                        f"Trial %{{x}} · {strategy}: %{{y:,.6g}} {metric} "
                        "%{customdata}<extra></extra>"
                    ),
                    meta=f"{metric} per trial",
                ),
                row=row,
                col=1,
            )
            figure.add_trace(
                go.Scatter(
                    x=[trial.number for trial in points],
                    y=_cumulative(per_trial),
                    mode="lines",
                    line={"shape": "hv", "color": colours[strategy]},
                    name=strategy,
                    legendgroup=strategy,
                    showlegend=False,
                    hovertemplate=(
                        f"Trial %{{x}}: {strategy} so far %{{y:,.6g}} {metric}<extra></extra>"
                    ),
                    meta=f"cumulative {metric}",
                ),
                row=row,
                col=2,
            )
        figure.add_trace(
            go.Scatter(
                x=[trial.number for trial in data.trials],
                y=_cumulative([_cost_of(trial, metric) for trial in data.trials]),
                mode="lines",
                line={"shape": "hv", "color": "black", "dash": "dash"},
                name="total",
                legendgroup="total",
                showlegend=row == 1,
                hovertemplate=f"Trial %{{x}}: total so far %{{y:,.6g}} {metric}<extra></extra>",
                meta=f"cumulative {metric}",
            ),
            row=row,
            col=2,
        )
    figure.update_yaxes(title_text="tokens", row=1, col=1)
    figure.update_yaxes(title_text="USD", row=2, col=1)
    figure.update_xaxes(title_text="Trial", row=2, col=1)
    figure.update_xaxes(title_text="Trial", row=2, col=2)
    figure.update_layout(title=title, barmode="stack", legend_title="strategy", height=650)
    return figure


def _cost_of(trial: _Trial, metric: str) -> float:
    if metric == "tokens":
        return float(trial.tokens)
    return trial.cost_usd or 0.0


def _cumulative(values: list[float]) -> list[float]:
    total, out = 0.0, []
    for value in values:
        total += value
        out.append(total)
    return out
