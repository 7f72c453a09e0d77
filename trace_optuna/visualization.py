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
=================================  ===============================================================

:func:`write_report` writes all of them into one HTML page with plotly.js embedded, so it opens
offline (``trace-optuna report``).

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

from collections.abc import Callable
import dataclasses
import datetime
import html
import math
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import TrialState

from trace_optuna import records

if TYPE_CHECKING:
    from collections.abc import Sequence

    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial
    import plotly.graph_objects as go

    from trace_optuna.study import TraceStudy

__all__ = [
    "FIGURES",
    "figures",
    "plot_cost",
    "plot_lineage",
    "plot_parameter_sensitivity",
    "plot_score_history",
    "plot_stop_versions",
    "plot_strategy_usage",
    "report_html",
    "write_report",
]

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


# -- gathering --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Trial:
    """What the figures need of one finished trial that carries a trace_optuna record."""

    number: int
    state: str
    value: float | None
    strategy: str
    parents: list[int]
    improvement: float | None
    changed: list[str]
    feedback: str
    error: str
    tokens: int
    cost_usd: float | None
    duplicate_of: int | None
    stop_version: str | None
    published: int | None = None  # the registry version it published (shared parameters)


@dataclasses.dataclass(frozen=True)
class _StudyData:
    name: str
    maximize: bool
    metric: str
    strategies: list[str]  # baseline first, then the study's strategies, then any others
    trials: list[_Trial]

    @property
    def sign(self) -> float:
        """+1 when higher scores are better, -1 when the study minimizes."""
        return 1.0 if self.maximize else -1.0

    def completed(self) -> list[_Trial]:
        return [trial for trial in self.trials if trial.state == "COMPLETE"]


def _optuna_study(study: optuna.Study | TraceStudy) -> optuna.Study:
    inner = getattr(study, "optuna", study)
    if not isinstance(inner, optuna.Study):
        raise TypeError(
            f"Expected an optuna.Study or a trace_optuna TraceStudy, got {type(study).__name__}."
        )
    return inner


def _gather(study: optuna.Study | TraceStudy) -> _StudyData:
    inner = _optuna_study(study)
    states = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
    trials = []
    for frozen in inner.get_trials(deepcopy=False, states=states):
        if records.SCHEMA not in frozen.user_attrs:
            continue  # not written by trace_optuna
        trials.append(_read(frozen))
    strategies = [records.BASELINE]
    for name in [*(inner.user_attrs.get(records.STUDY_STRATEGIES) or [])] + [
        trial.strategy for trial in trials
    ]:
        if name not in strategies:
            strategies.append(name)
    metric = (inner.metric_names or ["score"])[0] or "score"
    directions = inner.directions
    if len(directions) > 1:  # the figures show the first objective, and say so
        metric = f"{metric} (objective 1 of {len(directions)})"
    return _StudyData(
        name=inner.study_name,
        maximize=directions[0] == StudyDirection.MAXIMIZE,
        metric=metric,
        strategies=strategies,
        trials=trials,
    )


def _read(frozen: FrozenTrial) -> _Trial:
    record = records.build_record(frozen, {})
    llm = record.llm
    cost = llm.get("cost_usd")
    stop_version = frozen.user_attrs.get("trace:stop_version")  # strategies.stop.VERSION_ATTR
    # A multi-objective trial: its first objective (the figures say so in their labels).
    values = frozen.values if frozen.state == TrialState.COMPLETE else None
    improvement = record.improvement
    if isinstance(improvement, list):
        improvement = improvement[0] if improvement else None
    return _Trial(
        number=record.number,
        state=record.state,
        value=values[0] if values else record.value,
        strategy=record.strategy or "unknown",
        parents=[int(parent) for parent in record.parents],
        improvement=improvement,
        changed=record.changed,
        feedback=record.feedback or "",
        error=record.error or "",
        tokens=int(llm.get("prompt_tokens") or 0) + int(llm.get("completion_tokens") or 0),
        cost_usd=float(cost) if isinstance(cost, (int, float)) else None,
        duplicate_of=record.duplicate_of,
        stop_version=stop_version if isinstance(stop_version, str) else None,
        published=_published_version(frozen),
    )


def _published_version(frozen: FrozenTrial) -> int | None:
    publish = frozen.user_attrs.get(records.PUBLISH)
    if isinstance(publish, dict) and publish.get("status") == "published":
        return int(publish["version"])
    return None


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


# -- score over trials ------------------------------------------------------------------------


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


# -- strategy usage ---------------------------------------------------------------------------


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


# -- lineage ----------------------------------------------------------------------------------


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


def _best(data: _StudyData, nodes: dict[int, _Trial]) -> _Trial:
    """The best candidate; among equal scores the newest (as trace_optuna's Population)."""
    candidates = [trial for trial in nodes.values() if trial.duplicate_of is None] or list(
        nodes.values()
    )
    return max(candidates, key=lambda trial: (data.sign * (trial.value or 0.0), trial.number))


def _first_parent_path(number: int, nodes: dict[int, _Trial]) -> list[int]:
    path = [number]
    while True:
        parents = nodes[path[-1]].parents
        if not parents or parents[0] not in nodes or parents[0] in path:
            return path[::-1]
        path.append(parents[0])


def _parents_text(parents: list[int]) -> str:
    return ", ".join(f"#{parent}" for parent in parents) if parents else "none"


# -- cost -------------------------------------------------------------------------------------


def plot_cost(study: optuna.Study | TraceStudy) -> go.Figure:
    """LLM tokens (prompt + completion) and USD, per trial and cumulative, per strategy.

    Failed trials count: their LLM calls were paid for. A trial whose model has no price in
    litellm's table counts 0 USD (its hover text says the cost is unknown).

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


# -- parameter sensitivity --------------------------------------------------------------------


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


# -- STOP -------------------------------------------------------------------------------------


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


# -- all figures and the report ---------------------------------------------------------------

FIGURES: dict[str, Callable[..., go.Figure]] = {
    "score-history": plot_score_history,
    "strategy-usage": plot_strategy_usage,
    "lineage": plot_lineage,
    "cost": plot_cost,
    "parameter-sensitivity": plot_parameter_sensitivity,
    "stop-versions": plot_stop_versions,
}
"""Every figure, by a stable id (used as the figure's id in optuna-dashboard)."""


def figures(
    study: optuna.Study | TraceStudy, *, trial_url: Callable[[int], str] | None = None
) -> dict[str, go.Figure]:
    """All figures of the study, ``{figure id: Figure}`` in :data:`FIGURES` order.

    Args:
        study: A trace_optuna study, or its ``optuna.Study``.
        trial_url: Passed to :func:`plot_lineage` to link nodes to trial pages.
    """
    built = {}
    for figure_id, plot in FIGURES.items():
        if plot is plot_lineage:
            built[figure_id] = plot_lineage(study, trial_url=trial_url)
        else:
            built[figure_id] = plot(study)
    return built


def report_html(
    study: optuna.Study | TraceStudy, *, trial_url: Callable[[int], str] | None = None
) -> str:
    """One self-contained HTML page with a summary and every figure; plotly.js is embedded.

    Args:
        study: A trace_optuna study, or its ``optuna.Study``.
        trial_url: Passed to :func:`plot_lineage` to link nodes to trial pages.

    Returns:
        The page's HTML text. It loads nothing from the network.
    """
    inner = _optuna_study(study)
    data = _gather(inner)
    built = figures(inner, trial_url=trial_url)
    sections = []
    for index, (figure_id, figure) in enumerate(built.items()):
        body = figure.to_html(
            full_html=False,
            include_plotlyjs=index == 0,  # embedded once, inline: the page opens offline
            div_id=f"trace-{figure_id}",
            config={"displaylogo": False, "responsive": True},
        )
        sections.append(f'<section id="{figure_id}">{body}</section>')
    generated = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return _PAGE.format(
        title=html.escape(f"trace_optuna report: {data.name}"),
        summary=_summary(inner, data),
        generated=generated,
        sections="\n".join(sections),
    )


def write_report(
    study: optuna.Study | TraceStudy,
    path: str | Path,
    *,
    trial_url: Callable[[int], str] | None = None,
) -> Path:
    """Write :func:`report_html` to ``path`` (UTF-8) and return the path.

    Example:
        >>> import tempfile, trace_optuna as to
        >>> from trace_optuna import demo, visualization
        >>> study = to.create_study(agent=demo.make_agent, evaluate=demo.evaluate,
        ...                         llm=demo.DEMO_LLM, storage="sqlite:///:memory:")
        >>> study.optimize(n_trials=2)
        >>> out = visualization.write_report(study, tempfile.mkdtemp() + "/report.html")
        >>> "plotly" in out.read_text()
        True
    """
    target = Path(path)
    target.write_text(report_html(study, trial_url=trial_url), encoding="utf-8")
    return target


def _summary(inner: optuna.Study, data: _StudyData) -> str:
    states: dict[str, int] = {}
    for trial in inner.get_trials(deepcopy=False):
        states[trial.state.name] = states.get(trial.state.name, 0) + 1
    completed = data.completed()
    rows = [
        ("study", data.name),
        ("direction", "maximize" if data.maximize else "minimize"),
        ("trials", ", ".join(f"{count} {state}" for state, count in sorted(states.items()))),
        ("strategies", ", ".join(name for name in data.strategies if name != records.BASELINE)),
    ]
    if completed:
        nodes = {trial.number: trial for trial in completed}
        best = _best(data, nodes)
        rows.append((f"best {data.metric}", f"{best.value:.6g} (trial {best.number})"))
    known = [trial.cost_usd for trial in data.trials if trial.cost_usd is not None]
    rows.append(("LLM tokens", f"{sum(trial.tokens for trial in data.trials):,}"))
    rows.append(("LLM cost", f"{sum(known):.6g} USD" if known else "unknown"))
    return "\n".join(
        f"<tr><th>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>"
        for name, value in rows
    )


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5rem; }}
th, td {{ text-align: left; padding: 0.2rem 1rem 0.2rem 0; }}
section {{ margin-bottom: 2rem; }}
footer {{ color: #777; font-size: 0.85rem; }}
</style>
</head>
<body>
<h1>{title}</h1>
<table>
{summary}
</table>
{sections}
<footer>Written by trace_optuna on {generated}. Everything on this page is embedded; it
opens offline.</footer>
</body>
</html>
"""
