"""The plotly figures and the HTML report, checked for content against the stored trials."""

from __future__ import annotations

from collections.abc import Iterator
import math
from pathlib import Path
import re
import shutil

import optuna
from optuna.trial import TrialState
import plotly.graph_objects as go
import pytest

import trace_optuna as to
from trace_optuna import demo
from trace_optuna import records
from trace_optuna import visualization
from trace_optuna.cli import main
from trace_optuna.strategies import EvolutionaryStrategy
from trace_optuna.strategies import GeneticStrategy
from trace_optuna.strategies import StopStrategy

STRATEGIES = ["optoprime", "genetic", "evolutionary", "stop"]
FAILING_CALL = 9  # the evaluate call that raises, so the study has a FAIL trial


class FailOnce:
    """The demo grader, losing its connection on one call: a transient error ends that trial
    FAIL (a candidate's own error would be feedback and the trial would complete)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, agent: object) -> to.Evaluation:
        self.calls += 1
        if self.calls == FAILING_CALL:
            raise ConnectionError("the grader lost its connection")
        return demo.evaluate(agent)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def mixed_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('viz') / 'study.db'}"


@pytest.fixture(scope="module")
def mixed(mixed_url: str) -> Iterator[optuna.Study]:
    """One study that ran every strategy (chosen at random), with a failed trial."""
    url = mixed_url
    study = to.create_study(
        study_name="mixed",
        storage=url,
        agent=demo.make_agent,
        evaluate=FailOnce(),
        llm=to.LLM(demo.DEMO_LLM, simulated_seed=1, simulated_noise=0.2),
        strategies=[
            "optoprime",
            GeneticStrategy(),
            EvolutionaryStrategy(mu=2, offspring=2),
            StopStrategy(meta_every=1, num_candidates=(2, 2), meta_budget=1, timeout_s=20),
        ],
        sampler=optuna.samplers.RandomSampler(seed=3),
        seed=0,
        error_score=0.0,
        figure_interval=None,
    )
    study.optimize(n_trials=16)
    yield study.optuna


def _trials(study: optuna.Study, *states: TrialState) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(states=states) if records.SCHEMA in t.user_attrs]


def _by_name(figure: go.Figure, name: str) -> list:
    return [trace for trace in figure.data if trace.name == name]


def test_the_fixture_study_has_what_the_figures_show(mixed: optuna.Study) -> None:
    used = {t.user_attrs[records.STRATEGY] for t in _trials(mixed, TrialState.COMPLETE)}
    assert set(STRATEGIES) <= used | {"stop"}  # each strategy completed (stop may only fail)
    assert {t.user_attrs[records.STRATEGY] for t in mixed.trials} >= set(STRATEGIES)
    assert _trials(mixed, TrialState.FAIL), "the fixture should have a failed trial"


def test_score_history_shows_each_trial_by_strategy_and_the_running_best(
    mixed: optuna.Study,
) -> None:
    figure = visualization.plot_score_history(mixed)
    completed = _trials(mixed, TrialState.COMPLETE)
    for strategy in {t.user_attrs[records.STRATEGY] for t in completed}:
        (trace,) = _by_name(figure, strategy)
        expected = [
            (t.number, t.value) for t in completed if t.user_attrs[records.STRATEGY] == strategy
        ]
        assert list(zip(trace.x, trace.y, strict=True)) == expected
        assert trace.mode == "markers"
    (best,) = _by_name(figure, "best so far")
    assert list(best.x) == [t.number for t in completed]
    assert list(best.y) == [
        max(t.value for t in completed[: index + 1]) for index in range(len(completed))
    ]
    (failed,) = _by_name(figure, "failed")
    assert list(failed.x) == [t.number for t in _trials(mixed, TrialState.FAIL)]
    assert figure.layout.xaxis.title.text == "Trial"
    assert figure.layout.yaxis.title.text == "score"
    assert "mixed" in figure.layout.title.text


def test_strategy_usage_shares_add_up_and_improvements_are_means(mixed: optuna.Study) -> None:
    figure = visualization.plot_strategy_usage(mixed, window=4)
    shares = [trace for trace in figure.data if trace.meta == "share"]
    steps = [t for t in _trials(mixed, TrialState.COMPLETE, TrialState.FAIL) if t.number > 0]
    assert {trace.name for trace in shares} == {t.user_attrs[records.STRATEGY] for t in steps}
    for index in range(len(steps)):
        assert math.isclose(sum(trace.y[index] for trace in shares), 1.0)
    recent = steps[-4:]
    for trace in shares:
        expected = sum(1 for t in recent if t.user_attrs[records.STRATEGY] == trace.name) / 4
        assert math.isclose(trace.y[-1], expected)
    for trace in (trace for trace in figure.data if trace.meta == "improvement"):
        gains = [
            t.user_attrs[records.IMPROVEMENT]
            for t in steps
            if t.state == TrialState.COMPLETE and t.user_attrs[records.STRATEGY] == trace.name
        ]
        assert len(trace.y) == len(gains)
        if gains:
            assert math.isclose(trace.y[-1], sum(gains[-4:]) / len(gains[-4:]))
    with pytest.raises(ValueError, match="window"):
        visualization.plot_strategy_usage(mixed, window=0)


def test_lineage_joins_children_to_parents_and_highlights_the_best_path(
    mixed: optuna.Study,
) -> None:
    figure = visualization.plot_lineage(mixed, trial_url=lambda n: f"/trials/{n}")
    completed = {t.number: t for t in _trials(mixed, TrialState.COMPLETE)}
    (edges,) = _by_name(figure, "first parent")
    segments = {
        (edges.x[i], edges.x[i + 1]) for i in range(0, len(edges.x), 3) if edges.x[i] is not None
    }
    expected = {
        (t.user_attrs[records.PARENTS][0], n)
        for n, t in completed.items()
        if t.user_attrs[records.PARENTS] and t.user_attrs[records.PARENTS][0] in completed
    }
    assert segments == expected
    second = {
        (t.user_attrs[records.PARENTS][1], n)
        for n, t in completed.items()
        if len(t.user_attrs[records.PARENTS]) > 1
    }
    if second:
        (others,) = _by_name(figure, "other parents")
        assert {(others.x[i], others.x[i + 1]) for i in range(0, len(others.x), 3)} >= {
            pair for pair in second if pair[0] in completed
        }
    # The best candidate (newest among equal scores, reused duplicates aside), back to the root.
    candidates = [t for t in completed.values() if records.DUPLICATE_OF not in t.user_attrs]
    best = max(candidates, key=lambda t: (t.value, t.number))
    (path,) = _by_name(figure, "best path")
    assert path.x[-1] == best.number and path.x[0] == 0
    for parent, child in zip(path.x, path.x[1:], strict=False):
        assert completed[child].user_attrs[records.PARENTS][0] == parent
    nodes = [trace for trace in figure.data if trace.customdata is not None]
    numbers = sorted(int(row[0]) for trace in nodes for row in trace.customdata)
    assert numbers == sorted(completed)
    labels = [label for trace in nodes for label in trace.text]
    assert '<a href="/trials/0">#0</a>' in labels


def test_cost_per_trial_and_cumulative_match_the_llm_records(mixed: optuna.Study) -> None:
    figure = visualization.plot_cost(mixed)
    finished = _trials(mixed, TrialState.COMPLETE, TrialState.FAIL)

    def tokens(trial: optuna.trial.FrozenTrial) -> int:
        llm = trial.user_attrs[records.LLM]
        return llm["prompt_tokens"] + llm["completion_tokens"]

    totals = [trace for trace in figure.data if trace.name == "total"]
    assert [trace.meta for trace in totals] == ["cumulative tokens", "cumulative usd"]
    assert totals[0].y[-1] == sum(tokens(t) for t in finished) > 0
    usd = sum(t.user_attrs[records.LLM]["cost_usd"] or 0.0 for t in finished)
    assert math.isclose(totals[1].y[-1], usd) and usd > 0
    bars = [trace for trace in figure.data if trace.meta == "tokens per trial"]
    per_trial = {x: y for trace in bars for x, y in zip(trace.x, trace.y, strict=True)}
    assert per_trial == {t.number: tokens(t) for t in finished}
    for trace in (trace for trace in figure.data if trace.meta == "cumulative usd"):
        if trace.name == "total":
            continue
        mine = [t for t in finished if t.user_attrs[records.STRATEGY] == trace.name]
        assert math.isclose(
            trace.y[-1], sum(t.user_attrs[records.LLM]["cost_usd"] or 0.0 for t in mine)
        )
    titles = [annotation.text for annotation in figure.layout.annotations]
    assert titles == ["Tokens per trial", "Cumulative tokens", "USD per trial", "Cumulative USD"]


def test_parameter_sensitivity_counts_changes_and_the_improvements_after(
    mixed: optuna.Study,
) -> None:
    figure = visualization.plot_parameter_sensitivity(mixed)
    steps = [
        t
        for t in _trials(mixed, TrialState.COMPLETE, TrialState.FAIL)
        if t.user_attrs[records.STRATEGY] != records.BASELINE
    ]
    (completed_bars,) = _by_name(figure, "changed, completed")
    (failed_bars,) = _by_name(figure, "changed, failed")
    counted = dict(zip(completed_bars.y, completed_bars.x, strict=True))
    for path in snapshot_paths(mixed):
        changed = [t for t in steps if path in (t.user_attrs.get(records.CHANGED) or [])]
        done = [t for t in changed if t.state == TrialState.COMPLETE]
        assert counted.get(path, 0) == len(done)
        assert dict(zip(failed_bars.y, failed_bars.x, strict=True)).get(path, 0) == len(
            changed
        ) - len(done)
        boxes = _by_name(figure, path)
        if done:
            (box,) = boxes
            assert sorted(box.x) == sorted(t.user_attrs[records.IMPROVEMENT] for t in done)
            assert sorted(box.customdata) == sorted(t.number for t in done)
    assert sum(counted.values()) > 0


def snapshot_paths(study: optuna.Study) -> list[str]:
    return list(study.user_attrs[records.STUDY_PARAMETERS])


def test_stop_versions_show_each_version_meta_utility(mixed: optuna.Study) -> None:
    from trace_optuna.strategies.stop import improver_versions

    figure = visualization.plot_stop_versions(mixed)
    versions = improver_versions(mixed)
    (bars,) = _by_name(figure, "meta-utility")
    assert list(bars.x)[: len(versions)] == list(versions)
    assert "seed" in bars.x
    for version_id, utility, text in zip(bars.x, bars.y, bars.text, strict=True):
        gains = [
            t.user_attrs[records.IMPROVEMENT]
            for t in _trials(mixed, TrialState.COMPLETE)
            if t.user_attrs.get("trace:stop_version") == version_id
        ]
        expected = sum(gains) / len(gains) if gains else 0.0
        assert math.isclose(utility, expected, abs_tol=1e-12)
        assert versions[version_id].status in text and f"{len(gains)} trials" in text
    (dots,) = _by_name(figure, "improvement of each trial")
    assert sorted(dots.customdata) == sorted(
        t.number
        for t in _trials(mixed, TrialState.COMPLETE)
        if t.user_attrs.get("trace:stop_version") is not None
    )


def test_figures_of_a_minimize_study_and_of_an_empty_one(tmp_path: Path) -> None:
    def cost(agent: object) -> to.Evaluation:
        graded = demo.evaluate(agent)  # type: ignore[arg-type]
        return to.Evaluation(1.0 - graded.score, graded.feedback, graded.output)

    study = to.create_study(
        storage=f"sqlite:///{tmp_path / 'min.db'}",
        agent=demo.make_agent,
        evaluate=cost,
        llm=demo.DEMO_LLM,
        direction="minimize",
        figure_interval=None,
    )
    for figure in visualization.figures(study).values():  # no trial yet: messages, no data
        assert isinstance(figure, go.Figure) and not figure.data
        assert figure.layout.annotations[0].text
    study.optimize(n_trials=4)
    figure = visualization.plot_score_history(study)
    (best,) = _by_name(figure, "best so far")
    values = [t.value for t in study.trials if t.state == TrialState.COMPLETE]
    assert list(best.y) == [min(values[: i + 1]) for i in range(len(values))]
    usage = visualization.plot_strategy_usage(study)
    assert "sign-flipped" in usage.layout.annotations[1].text
    stop = visualization.plot_stop_versions(study)
    assert not stop.data and "No STOP trial" in stop.layout.annotations[0].text


def test_report_embeds_every_figure_and_loads_nothing_from_the_network(
    mixed: optuna.Study, mixed_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "report.html"
    # Through the command line, as a person would run it.
    assert main(["report", "--storage", mixed_url, "--study", "mixed", "--out", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    for figure_id in visualization.FIGURES:
        assert f'id="trace-{figure_id}"' in page
    assert page.count("Plotly.newPlot(") == len(visualization.FIGURES)
    # plotly.js itself is inline; no script, stylesheet or font is fetched.
    assert "plotly.js v" in page or "plotly.js" in page
    assert not re.search(r"<script[^>]+src=", page)
    assert not re.search(r"<link[^>]+href=\"https?:", page)
    assert "best score" in page and "mixed" in page


@pytest.mark.browser  # kaleido renders through the system's Chromium
def test_figures_render_to_png(mixed: optuna.Study, tmp_path: Path) -> None:
    """Renders every figure once with kaleido (through the system's chromium)."""
    pytest.importorskip("kaleido", reason="kaleido renders PNGs: pip install trace-optuna[test]")
    if shutil.which("chromium") is None and shutil.which("google-chrome") is None:
        pytest.skip("kaleido needs a Chrome/Chromium: apt-get install chromium")
    for figure_id, figure in visualization.figures(mixed).items():
        path = tmp_path / f"{figure_id}.png"
        figure.write_image(path, width=1100, height=650)
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(data) > 20_000, f"{figure_id}: a nearly empty image"


def test_the_figures_saved_together_read_the_trials_once(
    mixed_url: str, mixed: optuna.Study
) -> None:
    import sqlalchemy

    study = optuna.load_study(study_name="mixed", storage=mixed_url)
    engine = study._storage._backend.engine
    reads: list[str] = []

    def on_statement(connection: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM trials" in statement:
            reads.append(statement)

    sqlalchemy.event.listen(engine, "before_cursor_execute", on_statement)
    try:
        visualization.plot_cost(study)
        one_figure = len(reads)
        reads.clear()
        built = visualization.figures(study)
        all_figures = len(reads)
    finally:
        sqlalchemy.event.remove(engine, "before_cursor_execute", on_statement)
    assert len(built) == 6 and one_figure > 0
    assert all_figures == one_figure  # six figures, one read of the trials
