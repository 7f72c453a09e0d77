"""plot_stop_versions: STOP's meta-utility of each improver version."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import optuna

from trace_optuna.visualization._common import _BASELINE_COLOUR
from trace_optuna.visualization._common import _STATUS_COLOURS
from trace_optuna.visualization._common import _empty
from trace_optuna.visualization._common import _plotly
from trace_optuna.visualization._common import _short
from trace_optuna.visualization._data import _gather
from trace_optuna.visualization._data import _optuna_study
from trace_optuna.visualization._data import _Trial

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from trace_optuna.study import TraceStudy


def plot_stop_versions(study: optuna.Study | TraceStudy) -> go.Figure:
    """STOP: the meta-utility of each improver version, coloured by its status.

    The meta-utility is what STOP compares versions by: the mean improvement over the parent
    (higher is better) of the COMPLETE trials that ran the version, computed from the stored
    trials now; each of those trials' improvements is drawn as a dot.

    Args:
        study: A trace_optuna study, or its ``optuna.Study``.

    Returns:
        The figure: a ``meta-utility`` bar trace (one bar per version, in creation order) and an
        ``improvement of each trial`` marker trace.
    """
    go = _plotly()
    from trace_optuna.strategies.stop import improver_versions

    inner = _optuna_study(study)
    data = _gather(inner)
    title = f"STOP improver versions: {data.name}"
    versions = improver_versions(inner)
    uses: dict[str, list[_Trial]] = {}
    for trial in data.trials:
        if trial.stop_version is not None:
            uses.setdefault(trial.stop_version, []).append(trial)
    ids = list(versions) + [version_id for version_id in uses if version_id not in versions]
    if not ids:
        return _empty(title, "No STOP trial in this study.")
    utilities, texts, colours, hovers = [], [], [], []
    dots_x, dots_y, dots_number = [], [], []
    for version_id in ids:
        version = versions.get(version_id)
        gains = [
            (trial.number, data.sign * trial.improvement)
            for trial in uses.get(version_id, [])
            if trial.state == "COMPLETE"
            and trial.improvement is not None
            and math.isfinite(trial.improvement)
        ]
        failed = sum(1 for trial in uses.get(version_id, []) if trial.state == "FAIL")
        utility = sum(gain for _, gain in gains) / len(gains) if gains else None
        utilities.append(utility if utility is not None else 0.0)
        status = version.status if version is not None else "unknown"
        texts.append(f"{status}<br>{len(gains)} trials" + (f", {failed} failed" if failed else ""))
        colours.append(_STATUS_COLOURS.get(status, _BASELINE_COLOUR))
        parent = version.parent if version is not None else None
        reason = version.reason if version is not None else ""
        hovers.append(
            [
                status,
                "none" if utility is None else f"{utility:+.4g}",
                parent or "none",
                _short(reason),
            ]
        )
        for number, gain in gains:
            dots_x.append(version_id)
            dots_y.append(gain)
            dots_number.append(number)
    figure = go.Figure()
    figure.add_trace(
        go.Bar(
            x=ids,
            y=utilities,
            name="meta-utility",
            marker_color=colours,
            text=texts,
            textposition="outside",
            customdata=hovers,
            hovertemplate=(
                "Version %{x} (%{customdata[0]})<br>meta-utility %{customdata[1]} · parent "
                "%{customdata[2]}<br>%{customdata[3]}<extra></extra>"
            ),
        )
    )
    figure.add_trace(
        go.Scatter(
            x=dots_x,
            y=dots_y,
            mode="markers",
            name="improvement of each trial",
            marker={"color": "black", "size": 6, "opacity": 0.6},
            customdata=dots_number,
            hovertemplate="Trial %{customdata}: %{y:+.4g}<extra>%{x}</extra>",
        )
    )
    figure.add_hline(y=0, line={"color": "#888", "dash": "dot"})
    flipped = "" if data.maximize else " (sign-flipped: the study minimizes)"
    figure.update_layout(
        title=title,
        xaxis_title="improver version (creation order)",
        yaxis_title=f"mean improvement over the parent{flipped}",
    )
    return figure
