"""plot_registry_history: which study changed each shared parameter, at which
registry version.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from trace_optuna.visualization._common import _empty
from trace_optuna.visualization._common import _plotly
from trace_optuna.visualization._common import _short

if TYPE_CHECKING:
    from collections.abc import Sequence

    from optuna.storages import BaseStorage
    import plotly.graph_objects as go


def plot_registry_history(
    storage: str | BaseStorage | None, registry: str, paths: Sequence[str] | None = None
) -> go.Figure:
    """Who changed each shared parameter, and when: one row per parameter path, one marker per
    registry version that set it, coloured by the publishing study (hover: the change, the
    trial and its score). See :mod:`trace_optuna.registry`.

    Args:
        storage: The storage URL or object the studies use.
        registry: The :class:`~trace_optuna.ParameterSet`'s name.
        paths: The parameter paths to show; None: all of them.
    """
    from trace_optuna.registry import Registry
    from trace_optuna.storage import resolve_storage

    go = _plotly()
    versions = Registry(resolve_storage(storage), registry).versions()
    title = f"Registry {registry!r}: who changed each parameter"
    if not versions:
        return _empty(title, "The registry is empty.")
    shown = list(paths) if paths is not None else sorted(versions[0].values)
    figure = go.Figure()
    by_study: dict[str, list[tuple[int, str, str]]] = {}
    current = dict(versions[0].values)
    for version in versions:
        who = version.study or "initial values"
        for path, value in version.values.items():
            change = f"{_short(str(current.get(path)), 60)} → {_short(str(value), 60)}"
            if version.number == 0:
                change = _short(str(value), 60)
            elif version.trial is not None:
                change += f"<br>trial {version.trial}, score {version.score:.4g}"
            if path in shown:
                by_study.setdefault(who, []).append((version.number, path, change))
        current.update(version.values)
    for who, points in by_study.items():
        figure.add_trace(
            go.Scatter(
                x=[number for number, _, _ in points],
                y=[path for _, path, _ in points],
                mode="markers",
                name=who,
                marker={"size": 11, "symbol": "circle" if who != "initial values" else "square"},
                customdata=[[number, text] for number, _, text in points],
                hovertemplate=(
                    f"{html.escape(who)} · version %{{customdata[0]}}<br>%{{y}}: "
                    "%{customdata[1]}<extra></extra>"
                ),
            )
        )
    figure.update_layout(
        title=title,
        xaxis_title="Registry version",
        yaxis={"title": "parameter", "categoryorder": "array", "categoryarray": shown[::-1]},
        legend_title="published by",
    )
    return figure
