"""What every figure shares: plotly imported when a figure is drawn (failing with how to
install it), the colours, short hover texts, and the figure shown when there is no data.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING
from typing import Any

from trace_optuna import records

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from trace_optuna.visualization._data import _StudyData


_BASELINE_COLOUR = "#7f7f7f"
_FAILED_COLOUR = "#d62728"
_BEST_COLOUR = "#ff7f0e"
_STATUS_COLOURS = {"accepted": "#2ca02c", "trialled": "#1f77b4", "reverted": "#d62728"}
_HOVER_TEXT = 160  # characters of feedback shown when hovering a point


def _plotly() -> Any:
    try:
        import plotly.graph_objects as go
        import plotly.subplots  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "trace_optuna.visualization needs plotly: pip install trace-optuna (plotly is one "
            f"of its dependencies) or pip install plotly ({error})."
        ) from error
    return go


def _make_subplots(**kwargs: Any) -> go.Figure:
    _plotly()
    from plotly.subplots import make_subplots

    return make_subplots(**kwargs)


def _colours(data: _StudyData) -> dict[str, str]:
    _plotly()
    from plotly.colors import qualitative

    palette = list(qualitative.Plotly)
    colours = {records.BASELINE: _BASELINE_COLOUR}
    others = [name for name in data.strategies if name != records.BASELINE]
    for index, name in enumerate(others):
        colours[name] = palette[index % len(palette)]
    return colours


def _short(text: str, limit: int = _HOVER_TEXT) -> str:
    text = " ".join(text.split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return html.escape(text)


def _empty(title: str, message: str) -> go.Figure:
    go = _plotly()
    figure = go.Figure()
    figure.update_layout(
        title=title,
        xaxis={"visible": False},
        yaxis={"visible": False},
        annotations=[
            {
                "text": message,
                "showarrow": False,
                "xref": "paper",
                "yref": "paper",
                "x": 0.5,
                "y": 0.5,
                "font": {"size": 14},
            }
        ],
    )
    return figure
