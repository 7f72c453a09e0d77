"""plot_lineage: the genealogy of candidates, the best candidate's path highlighted."""

from __future__ import annotations

from collections.abc import Callable
import html
from typing import TYPE_CHECKING

import optuna

from trace_optuna.visualization._common import _BEST_COLOUR
from trace_optuna.visualization._common import _colours
from trace_optuna.visualization._common import _empty
from trace_optuna.visualization._common import _plotly
from trace_optuna.visualization._common import _short
from trace_optuna.visualization._data import _best
from trace_optuna.visualization._data import _gather
from trace_optuna.visualization._data import _Trial

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from trace_optuna.study import TraceStudy


def plot_lineage(
    study: optuna.Study | TraceStudy, *, trial_url: Callable[[int], str] | None = None
) -> go.Figure:
    """The genealogy of candidates: every completed trial, placed at (trial number, score),
    joined to its parents; the path from the root to the best candidate is highlighted.

    Solid grey lines join a child to its first parent (the one its diff is against), dotted
    lines to further parents (a genetic crossover's second parent). Each node is labelled with
    its trial number; with ``trial_url`` the label is a link to that trial.

    Args:
        study: A trace_optuna study, or its ``optuna.Study``.
        trial_url: Builds the link of a trial number, e.g. its optuna-dashboard page.

    Returns:
        The figure: ``first parent`` and ``other parents`` edge traces, a ``best path`` trace,
        and one node trace per strategy whose ``customdata`` holds the trial numbers.
    """
    go = _plotly()
    data = _gather(study)
    title = f"Lineage of candidates: {data.name}"
    nodes = {trial.number: trial for trial in data.completed()}
    if not nodes:
        return _empty(title, "No completed trial yet.")
    colours = _colours(data)
    figure = go.Figure()
    for kind, index_filter, dash in (
        ("first parent", lambda index: index == 0, "solid"),
        ("other parents", lambda index: index > 0, "dot"),
    ):
        xs: list[float | None] = []
        ys: list[float | None] = []
        for trial in nodes.values():
            for index, parent in enumerate(trial.parents):
                if index_filter(index) and parent in nodes:
                    xs += [parent, trial.number, None]
                    ys += [nodes[parent].value, trial.value, None]
        if xs:
            figure.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="lines",
                    name=kind,
                    line={"color": "#b0b0b0", "width": 1, "dash": dash},
                    hoverinfo="skip",
                )
            )
    best = _best(data, nodes)
    path = _first_parent_path(best.number, nodes)
    figure.add_trace(
        go.Scatter(
            x=path,
            y=[nodes[number].value for number in path],
            mode="lines",
            name="best path",
            line={"color": _BEST_COLOUR, "width": 4},
            opacity=0.6,
            hoverinfo="skip",
        )
    )
    on_path = set(path)
    for strategy in data.strategies:
        points = [trial for trial in nodes.values() if trial.strategy == strategy]
        if not points:
            continue
        labels = []
        for trial in points:
            label = f"#{trial.number}"
            if trial_url is not None:
                label = f'<a href="{html.escape(trial_url(trial.number))}">{label}</a>'
            labels.append(label)
        figure.add_trace(
            go.Scatter(
                x=[trial.number for trial in points],
                y=[trial.value for trial in points],
                mode="markers+text",
                name=strategy,
                text=labels,
                textposition="top center",
                textfont={"size": 10},
                marker={
                    "color": colours[strategy],
                    "size": [13 if trial.number in on_path else 9 for trial in points],
                    "line": {
                        "color": [
                            _BEST_COLOUR if t.number in on_path else "white" for t in points
                        ],
                        "width": 2,
                    },
                },
                customdata=[
                    [trial.number, _parents_text(trial.parents), _short(trial.feedback)]
                    for trial in points
                ],
                hovertemplate=(
                    f"Trial %{{customdata[0]}} · {strategy}<br>{data.metric} %{{y:.4g}} · "
                    "parents %{customdata[1]}<br>%{customdata[2]}<extra></extra>"
                ),
            )
        )
    published = [trial for trial in nodes.values() if trial.published is not None]
    if published:  # a study over shared parameters: what it published to the registry
        figure.add_trace(
            go.Scatter(
                x=[trial.number for trial in published],
                y=[trial.value for trial in published],
                mode="markers",
                name="published to the registry",
                marker={"symbol": "star-open", "size": 18, "color": _BEST_COLOUR},
                customdata=[[trial.number, trial.published] for trial in published],
                hovertemplate=(
                    "Trial %{customdata[0]} published registry version %{customdata[1]}"
                    "<extra></extra>"
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


def _first_parent_path(number: int, nodes: dict[int, _Trial]) -> list[int]:
    path = [number]
    while True:
        parents = nodes[path[-1]].parents
        if not parents or parents[0] not in nodes or parents[0] in path:
            return path[::-1]
        path.append(parents[0])


def _parents_text(parents: list[int]) -> str:
    return ", ".join(f"#{parent}" for parent in parents) if parents else "none"
