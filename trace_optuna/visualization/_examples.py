"""plot_example_scores: the candidates x examples score matrix of a dataset study, and its
per-example Pareto front (the candidates best on at least one example)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import optuna

from trace_optuna import records
from trace_optuna.example_results import ExampleResult
from trace_optuna.example_results import ExampleStore
from trace_optuna.example_results import pareto_front
from trace_optuna.visualization._common import _BEST_COLOUR
from trace_optuna.visualization._common import _empty
from trace_optuna.visualization._common import _make_subplots
from trace_optuna.visualization._common import _plotly
from trace_optuna.visualization._common import _short
from trace_optuna.visualization._data import _optuna_study

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from trace_optuna.study import TraceStudy


@dataclasses.dataclass(frozen=True)
class _ExampleMatrix:
    """What the figure draws, gathered from the study's per-example rows.

    Attributes:
        name: The study's name.
        split: The split shown.
        candidates: Candidate hashes, in the order of the first trial that evaluated each.
        labels: One label per candidate (``Trial#n · hash``; the hash alone without a trial).
        example_ids: The example ids, sorted.
        scores: ``scores[i][j]``: candidate ``i`` on example ``j`` (None: no row).
        feedback: The feedback of each cell, shortened ("" without a row).
        front: The per-example Pareto front, ``{candidate: examples it leads}``.
        maximize: Whether higher scores are better.
    """

    name: str
    split: str
    candidates: list[str]
    labels: list[str]
    example_ids: list[str]
    scores: list[list[float | None]]
    feedback: list[list[str]]
    front: dict[str, list[str]]
    maximize: bool


def _gather_examples(study: optuna.Study | TraceStudy, split: str) -> _ExampleMatrix:
    inner = _optuna_study(study)
    rows = ExampleStore(inner._storage, inner._study_id).rows(split=split)
    maximize = inner.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    first_trial: dict[str, int] = {}
    for trial in inner.get_trials(deepcopy=False):
        snapshot_hash = trial.user_attrs.get(records.SNAPSHOT_HASH)
        if isinstance(snapshot_hash, str):
            first_trial.setdefault(snapshot_hash, trial.number)
    by_cell: dict[tuple[str, str], ExampleResult] = {
        (row.candidate, row.example_id): row for row in rows
    }
    run_by = {row.candidate: row.trial_number for row in rows}
    candidates = sorted(
        {row.candidate for row in rows},
        key=lambda candidate: (first_trial.get(candidate, run_by[candidate]), candidate),
    )
    example_ids = sorted({row.example_id for row in rows})
    labels = [
        f"Trial#{first_trial[candidate]} · {candidate[:8]}"
        if candidate in first_trial
        else candidate[:8]
        for candidate in candidates
    ]
    scores = [
        [
            cell.score if (cell := by_cell.get((candidate, example_id))) else None
            for example_id in example_ids
        ]
        for candidate in candidates
    ]
    feedback = [
        [
            _short(cell.error or cell.feedback, 120)
            if (cell := by_cell.get((candidate, example_id)))
            else ""
            for example_id in example_ids
        ]
        for candidate in candidates
    ]
    return _ExampleMatrix(
        name=inner.study_name,
        split=split,
        candidates=candidates,
        labels=labels,
        example_ids=example_ids,
        scores=scores,
        feedback=feedback,
        front=pareto_front(rows, maximize=maximize),
        maximize=maximize,
    )


def plot_example_scores(study: optuna.Study | TraceStudy, *, split: str = "val") -> go.Figure:
    """Which examples each candidate gets right: the candidates x examples score matrix of
    one split, and the per-example Pareto front.

    Read from the study's per-example rows (:class:`~trace_optuna.example_results.
    ExampleStore`), so it works from any worker or process. Going down a column shows which
    candidate fixed an example and which broke it again; a gap is a pair never evaluated
    (a candidate rejected on its minibatch, or pruned during validation).

    Args:
        study: A trace_optuna study, or its ``optuna.Study``.
        split: ``"val"`` (the default), ``"train"`` or ``"test"``.

    Returns:
        A 1 x 2 figure: a heatmap of scores, one row per candidate (labelled with the first
        trial that evaluated it; candidates on the Pareto front marked ★) and one column per
        example (left); per front candidate, how many examples it leads (right).
    """
    go = _plotly()
    data = _gather_examples(study, split)
    title = f"Per-example scores ({split}): {data.name}"
    if not data.candidates:
        return _empty(title, f"No per-example results on the {split!r} split yet.")
    labels = [
        f"★ {label}" if candidate in data.front else label
        for candidate, label in zip(data.candidates, data.labels, strict=True)
    ]
    figure = _make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.78, 0.22],
        shared_yaxes=True,
        horizontal_spacing=0.03,
        subplot_titles=("Score per example", "Examples led (Pareto front)"),
    )
    figure.add_trace(
        go.Heatmap(
            z=data.scores,
            x=data.example_ids,
            y=labels,
            customdata=data.feedback,
            colorscale="RdYlGn" if data.maximize else "RdYlGn_r",
            colorbar={"title": "score", "x": 0.76},
            hoverongaps=False,
            hovertemplate=("%{y}<br>example %{x}: %{z:.4g}<br>%{customdata}<extra></extra>"),
            name="scores",
            meta="scores",
        ),
        row=1,
        col=1,
    )
    led = [len(data.front.get(candidate, [])) for candidate in data.candidates]
    figure.add_trace(
        go.Bar(
            x=led,
            y=labels,
            orientation="h",
            marker_color=_BEST_COLOUR,
            name="examples led",
            hovertemplate="%{y}: best on %{x} example(s)<extra></extra>",
            meta="front",
        ),
        row=1,
        col=2,
    )
    figure.update_xaxes(title_text="example", type="category", row=1, col=1)
    figure.update_xaxes(title_text="examples led", row=1, col=2)
    figure.update_yaxes(type="category", autorange="reversed", row=1, col=1)
    figure.update_layout(
        title=title, showlegend=False, height=max(400, 120 + 22 * len(data.candidates))
    )
    return figure
