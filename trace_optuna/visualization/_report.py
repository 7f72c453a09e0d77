"""Every figure by a stable id (:data:`FIGURES`), and the self-contained HTML report of them
all.
"""

from __future__ import annotations

from collections.abc import Callable
import datetime
import html
from pathlib import Path
from typing import TYPE_CHECKING

import optuna

from trace_optuna import records
from trace_optuna.exceptions import ConfigurationError
from trace_optuna.visualization._cost import plot_cost
from trace_optuna.visualization._data import _best
from trace_optuna.visualization._data import _gather
from trace_optuna.visualization._data import _optuna_study
from trace_optuna.visualization._data import _StudyData
from trace_optuna.visualization._data import one_reading
from trace_optuna.visualization._examples import plot_example_scores
from trace_optuna.visualization._history import plot_score_history
from trace_optuna.visualization._lineage import plot_lineage
from trace_optuna.visualization._sensitivity import plot_parameter_sensitivity
from trace_optuna.visualization._stop import plot_stop_versions
from trace_optuna.visualization._strategy import plot_strategy_usage

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from trace_optuna.study import TraceStudy


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
    """All figures of the study, ``{figure id: Figure}`` in :data:`FIGURES` order; a dataset
    study's (``trainset=``) also ``"example-scores"`` (:func:`plot_example_scores` of its
    validation rows), last.

    Args:
        study: A trace_optuna study, or its ``optuna.Study``.
        trial_url: Passed to :func:`plot_lineage` to link nodes to trial pages.
    """
    built = {}
    with one_reading():  # the study's trials are read once for all of them
        for figure_id, plot in FIGURES.items():
            if plot is plot_lineage:
                built[figure_id] = plot_lineage(study, trial_url=trial_url)
            else:
                built[figure_id] = plot(study)
    inner = _optuna_study(study)
    if (inner.user_attrs.get(records.STUDY_SPLITS) or {}).get("trainset") is not None:
        built["example-scores"] = plot_example_scores(study)
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

    Raises:
        ConfigurationError: If the study was not made by trace_optuna (a plain Optuna study
            has no Trace steps: every figure would be empty beside its trial counts).
    """
    inner = _optuna_study(study)
    if records.SCHEMA not in inner.user_attrs:
        raise ConfigurationError(
            f"Study {inner.study_name!r} was not made by trace_optuna: it has no "
            f"{records.SCHEMA!r} attribute, so its {len(inner.get_trials(deepcopy=False))} "
            "trials hold no Trace steps to plot. Use optuna.visualization for a plain Optuna "
            "study."
        )
    with one_reading():  # the summary and the figures share one read of the trials
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

    Raises:
        ConfigurationError: As :func:`report_html`.

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
    if any(trial.agent_tokens for trial in data.trials):  # agent_llm: its share of the above
        agent_known = [t.agent_cost_usd for t in data.trials if t.agent_cost_usd is not None]
        rows.append(
            (
                "of which the agent's LLM",
                f"{sum(trial.agent_tokens for trial in data.trials):,} tokens, "
                + (f"{sum(agent_known):.6g} USD" if agent_known else "cost unknown"),
            )
        )
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
