"""optuna-dashboard glue: a Markdown note per trial, figures saved into the study, artifacts for
long texts, human feedback typed into the dashboard's forms, and the ``trace-optuna dashboard``
and ``trace-optuna report`` commands.

Everything here needs the ``dashboard`` extra (``pip install trace-optuna[dashboard]``) except
the study description and the report. Without it, trials run as before and simply carry no note
and no saved figures (logged once); :class:`HumanFeedback` and ``trace-optuna dashboard`` refuse
to start and name the extra.

What a trial's note shows (written with ``optuna_dashboard.save_note`` before the trial is
told, so while it runs; rewritten by :class:`HumanFeedback` while it waits):

* the strategy and its sampled settings, the parent trial(s) and their score;
* the score and the improvement over the parent, or why the trial failed;
* the feedback that drove the step and the feedback on the candidate;
* a ``diff`` block per changed parameter;
* the LLM calls, tokens, cost and where each prompt and response is stored.

Long prompts and responses (over :data:`LONG_TEXT_CHARS` characters) go to the study's
artifact store when it has one (``create_study(artifact_dir=...)`` or ``artifact_store=...``);
the attribute then keeps the start of the text and ``trace:artifacts`` says where the rest is
(:func:`read_text` reads it back). Without a store they stay in chunked attributes.

optuna-dashboard has no authentication and its write endpoints are open: ``trace-optuna
dashboard`` binds it to 127.0.0.1 only. Do not expose it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from collections.abc import Mapping
import contextvars
import dataclasses
import datetime
import importlib.util
import inspect
import logging
import math
import os
from pathlib import Path
import socket
import sys
import tempfile
import threading
import time
from typing import TYPE_CHECKING
from typing import Any
import warnings

import optuna
from optuna.trial import TrialState

from trace_optuna import records
from trace_optuna import snapshots
from trace_optuna.evaluation import Evaluation
from trace_optuna.exceptions import ConfigurationError
from trace_optuna.exceptions import TraceOptunaError

if TYPE_CHECKING:
    from optuna.artifacts._protocol import ArtifactStore
    from optuna.trial import FrozenTrial

    from trace_optuna.coordination import Coordinator

_logger = logging.getLogger(__name__)

EXTRA = "trace-optuna[dashboard]"
LONG_TEXT_CHARS = 2_000
"""LLM prompts and responses longer than this go to the artifact store, when there is one."""
HEAD_CHARS = 500
"""How much of an offloaded text its attribute keeps."""
NOTE_DIFF_CHARS = 6_000
"""The longest diff block a note shows per parameter; ``trace:diff`` keeps all of it."""
NOTE_TEXT_CHARS = 3_000
"""The longest feedback or output a note shows; the attributes keep all of it."""
FIGURE_PREFIX = "trace-"
"""Figures saved into a study have ids ``trace-<figure id>`` (see ``visualization.FIGURES``)."""
DEFAULT_FIGURE_INTERVAL = 60.0
FIGURE_COST_FACTOR = 10.0


def _optuna_dashboard() -> Any:
    """Import optuna_dashboard, or fail naming the extra that installs it."""
    try:
        import optuna_dashboard
    except ImportError as error:
        raise ImportError(
            f"This needs optuna-dashboard: pip install {EXTRA} ({error})."
        ) from error
    return optuna_dashboard


_installed: bool | None = None


def _dashboard_installed() -> bool:
    """Whether optuna-dashboard is installed, found without importing it: its import pulls in
    its web app and scikit-learn (about a second), which no trial should pay."""
    global _installed
    if _installed is None:
        _installed = importlib.util.find_spec("optuna_dashboard") is not None
        if not _installed:
            _logger.info(
                "optuna-dashboard is not installed: trials get no note and no figures are saved "
                "(pip install %s).",
                EXTRA,
            )
    return _installed


# optuna-dashboard keeps notes and figures in study system attributes, in chunks of this many
# characters, under the keys below (optuna_dashboard/_note.py, _custom_plot_data.py). They are
# written here without importing optuna-dashboard; tests/test_dashboard.py checks them against
# optuna-dashboard's own key builders, and reads what is written through its REST API.
DASHBOARD_CHUNK_CHARS = 2045


def note_version_key(trial_id: int) -> str:
    """optuna-dashboard's key of a trial note's version."""
    return f"dashboard:{trial_id}:note_ver"


def note_chunk_key(trial_id: int, index: int) -> str:
    """optuna-dashboard's key of chunk ``index`` of a trial's note."""
    return f"dashboard:{trial_id}:note_str:{index}"


_PLOT_DATA = "dashboard:plot_data:"


def figure_chunk_key(graph_object_id: str, index: int) -> str:
    """optuna-dashboard's key of chunk ``index`` of a saved plotly figure's JSON."""
    return f"{_PLOT_DATA}{graph_object_id}:{index}"


def _chunks(text: str) -> list[str]:
    return [
        text[start : start + DASHBOARD_CHUNK_CHARS]
        for start in range(0, len(text), DASHBOARD_CHUNK_CHARS)
    ]


# -- the study: metric name, description, artifact store --------------------------------------


def resolve_artifact_store(
    artifact_dir: str | os.PathLike[str] | None, artifact_store: ArtifactStore | None
) -> ArtifactStore | None:
    """The artifact store of ``create_study(artifact_dir=..., artifact_store=...)``.

    Raises:
        ConfigurationError: If both are given.
    """
    if artifact_dir is not None and artifact_store is not None:
        raise ConfigurationError(
            "Give artifact_dir= (a directory, for a FileSystemArtifactStore) or "
            "artifact_store= (any Optuna artifact store), not both."
        )
    if artifact_dir is not None:
        from optuna.artifacts import FileSystemArtifactStore

        path = Path(artifact_dir).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return FileSystemArtifactStore(str(path))
    return artifact_store


def stored_artifact_store(study: optuna.Study) -> ArtifactStore | None:
    """The FileSystemArtifactStore whose directory the study recorded, if any."""
    directory = study.user_attrs.get(records.STUDY_ARTIFACT_DIR)
    if not isinstance(directory, str):
        return None
    return resolve_artifact_store(directory, None)


def wire(
    study: Any,
    artifact_dir: str | os.PathLike[str] | None,
    artifact_store: ArtifactStore | None,
    figure_interval: float | None,
) -> Any:
    """What ``create_study``/``load_study`` do for optuna-dashboard: give the step its artifact
    store (the one the study recorded when none is given), set how often figures are saved,
    and describe the study in its user attributes.

    Args:
        study: The ``TraceStudy``.
        artifact_dir: ``create_study(artifact_dir=...)``.
        artifact_store: ``create_study(artifact_store=...)``.
        figure_interval: ``create_study(figure_interval=...)``.

    Returns:
        ``study``.
    """
    FigureRefresher(figure_interval)  # validates it
    store = resolve_artifact_store(artifact_dir, artifact_store)
    if store is None:
        store = stored_artifact_store(study.optuna)
    objective = study.objective
    objective.artifact_store = store
    study.figure_interval = figure_interval
    describe_study(
        study.optuna,
        agent=objective.agent,
        make_agent=objective.make_agent,
        evaluate=objective.evaluate,
        strategies=objective.strategies,
        artifact_store=store,
    )
    return study


def describe_study(
    study: optuna.Study,
    *,
    agent: Any,
    make_agent: Any,
    evaluate: Any,
    strategies: Mapping[str, Any],
    artifact_store: ArtifactStore | None,
) -> None:
    """Say in the study's user attributes what the agent, the evaluation and the strategies are,
    and where its artifacts are; only what changed is written.

    Args:
        study: The Optuna study.
        agent: The agent instance.
        make_agent: The function that built it.
        evaluate: The ``evaluate`` callable (a :class:`HumanFeedback` describes itself).
        strategies: ``{name: Strategy}``.
        artifact_store: The study's artifact store, or None.
    """
    # @trace.model wraps the user's class in a local ModelWrapper: describe the user's class.
    agent_class = next(
        (cls for cls in type(agent).__mro__ if not cls.__module__.startswith("opto.")),
        type(agent),
    )
    agent_text = _describe(agent_class)
    if inspect.isfunction(make_agent) and make_agent.__name__ != "<lambda>":
        agent_text = f"{agent_text} (built by {make_agent.__module__}.{make_agent.__qualname__})"
    values: dict[str, Any] = {
        records.STUDY_AGENT: agent_text,
        records.STUDY_EVALUATION: _describe(evaluate),
        records.STUDY_STRATEGY_DOCS: {
            name: _first_line(inspect.getdoc(type(strategy)) or "")
            for name, strategy in strategies.items()
        },
    }
    directory = _artifact_directory(artifact_store)
    if directory is not None:
        values[records.STUDY_ARTIFACT_DIR] = directory
    stored = study.user_attrs
    changed = {key: value for key, value in values.items() if stored.get(key) != value}
    if changed:
        records.write(study.set_user_attr, changed)


def _artifact_directory(artifact_store: Any) -> str | None:
    if artifact_store is None:
        return None  # and optuna.artifacts (it imports boto3) stays unimported
    from optuna.artifacts import FileSystemArtifactStore

    if isinstance(artifact_store, FileSystemArtifactStore):
        # Optuna keeps the directory as ``_base_path``; it is the only way to name it.
        base = getattr(artifact_store, "_base_path", None)
        return str(base) if base is not None else None
    return None


def _describe(obj: Any) -> str:
    describe = getattr(obj, "describe", None)
    if isinstance(obj, HumanFeedback) and callable(describe):
        return str(describe())
    target = obj if (inspect.isfunction(obj) or inspect.isclass(obj)) else type(obj)
    name = f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', target)}"
    doc = _first_line(inspect.getdoc(target) or "")
    return f"{name}: {doc}" if doc else name


def _first_line(text: str) -> str:
    return text.strip().split("\n\n", 1)[0].replace("\n", " ").strip()


# -- the running trial ------------------------------------------------------------------------


@dataclasses.dataclass
class _Running:
    trial: optuna.Trial
    attrs: dict[str, Any]
    asked: bool = False


_RUNNING: contextvars.ContextVar[_Running | None] = contextvars.ContextVar(
    "trace_optuna_running_trial", default=None
)


def enter_trial(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    """Called by the step when a trial starts: what :class:`HumanFeedback` shows and where."""
    _RUNNING.set(_Running(trial, attrs))


def before_write(
    trial: optuna.Trial, attrs: dict[str, Any], artifact_store: ArtifactStore | None
) -> None:
    """Called by the step just before it writes the record: offload long texts."""
    if artifact_store is not None:
        offload_long_texts(trial, attrs, artifact_store)


def after_write(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    """Called by the step after it wrote the record (the trial still runs): write the note."""
    _RUNNING.set(None)
    if not _dashboard_installed():
        return
    try:
        write_note(trial, trial_note(trial.number, attrs, dict(trial.params)))
    except Exception:  # a note is a view: never fail the trial over it
        _logger.warning(
            "Trial#%d: could not save its dashboard note.", trial.number, exc_info=True
        )


_note_versions: dict[int, tuple[int, int]] = {}  # trial id -> (version, chunks) written here


def write_note(trial: optuna.Trial, body: str) -> None:
    """Save ``body`` as the trial's optuna-dashboard note, at a constant cost.

    ``optuna_dashboard.save_note`` reads every study system attribute (all notes and figures
    of the study) twice per call, so its cost grows with the study. A trial's note is written
    only by the process running it (and by a person, in the dashboard, usually later), so this
    writes optuna-dashboard's keys without reading (and without importing optuna-dashboard):
    the version and the chunks, and blanks for chunks a longer earlier note of this process left.
    """
    trial_id = trial._trial_id
    storage, study_id = trial.storage, trial.study._study_id
    version, chunks_before = _note_versions.get(trial_id, (0, 0))
    chunks = _chunks(body)
    storage.set_study_system_attr(study_id, note_version_key(trial_id), version + 1)
    for index, chunk in enumerate(chunks):
        storage.set_study_system_attr(study_id, note_chunk_key(trial_id, index), chunk)
    for index in range(len(chunks), chunks_before):
        storage.set_study_system_attr(study_id, note_chunk_key(trial_id, index), "")
    _note_versions[trial_id] = (version + 1, max(len(chunks), chunks_before))
    if len(_note_versions) > 10_000:  # only running trials matter; forget old ones
        _note_versions.pop(next(iter(_note_versions)))


# -- notes ------------------------------------------------------------------------------------


def trial_note(number: int, attrs: Mapping[str, Any], params: Mapping[str, Any]) -> str:
    """The Markdown note of a trial, from the record attributes the step wrote.

    Args:
        number: The trial number.
        attrs: Logical record attributes (``records`` keys, values not chunked).
        params: The trial's Optuna parameters (the strategy and its settings).

    Returns:
        Markdown for optuna-dashboard.
    """
    strategy = attrs.get(records.STRATEGY, "?")
    score = attrs.get(records.SCORE)
    error = attrs.get(records.ERROR)
    if score is None and error:
        headline = "failed"
    elif score is None:
        headline = "running"
    else:
        headline = f"score {_number(score)}"
        improvement = attrs.get(records.IMPROVEMENT)
        if improvement is not None:
            headline += f" ({_signed(improvement)})"
    lines = [f"## Trial {number}: `{strategy}`, {headline}", ""]

    settings = {
        name: value
        for name, value in params.items()
        if name != "strategy" and name.startswith(f"{strategy}.")
    }
    lines.append(
        f"- **Strategy:** `{strategy}`" + (f" ({_settings(settings)})" if settings else "")
    )
    parents = list(attrs.get(records.PARENTS) or [])
    if parents:
        parent_score = attrs.get(records.PARENT_SCORE)
        text = ", ".join(f"trial {parent}" for parent in parents)
        if parent_score is not None:
            text += f" (score {_number(parent_score)})"
        lines.append(f"- **Parents:** {text}")
    elif strategy == records.BASELINE:
        lines.append("- **Parents:** none: the unmodified agent")
    if score is not None:
        improvement = attrs.get(records.IMPROVEMENT)
        text = _number(score)
        if improvement is not None:
            text += f", improvement {_signed(improvement)} over the parent"
        lines.append(f"- **Score:** {text}")
    duplicate = attrs.get(records.DUPLICATE_OF)
    if duplicate is not None:
        lines.append(
            f"- **Same candidate as trial {duplicate}:** its score was reused, nothing re-run"
        )
    stop_version = attrs.get("trace:stop_version")  # strategies.stop.VERSION_ATTR
    if stop_version is not None:
        lines.append(f"- **STOP improver version:** `{stop_version}`")
    lines.append("")

    if error:
        lines += ["### Error", "", _fenced(str(error), "text"), ""]
    parent_feedback = attrs.get(records.PARENT_FEEDBACK)
    if parent_feedback:
        lines += ["### Feedback that drove this step", "", _fenced(parent_feedback, "text"), ""]
    feedback = attrs.get(records.FEEDBACK)
    if feedback is not None:
        lines += ["### Feedback on this candidate", "", _fenced(feedback, "text"), ""]
    human = attrs.get(records.HUMAN_FEEDBACK)
    if human is not None and human != feedback:
        lines += ["### Feedback from a person", "", _fenced(str(human), "text"), ""]

    # Without a parent (the baseline) every path counts as changed and there is no diff.
    changed = list(attrs.get(records.CHANGED) or []) if parents else []
    diff_text = attrs.get(records.DIFF) or ""
    if changed:
        lines += ["### Changes", ""]
        blocks = split_diff(diff_text, changed)
        for path in changed:
            lines += [f"#### `{path}`", "", _fenced(blocks.get(path, ""), "diff", NOTE_DIFF_CHARS)]
            lines.append("")
    elif strategy != records.BASELINE and score is not None:
        lines += ["### Changes", "", "No parameter changed.", ""]

    llm = attrs.get(records.LLM)
    if isinstance(llm, dict) and llm.get("calls"):
        cost = llm.get("cost_usd")
        lines += [
            "### LLM",
            "",
            "| model | calls | prompt tokens | completion tokens | cost (USD) | latency (s) |",
            "|---|---|---|---|---|---|",
            f"| `{llm.get('model')}` | {llm.get('calls')} | {llm.get('prompt_tokens', 0):,} | "
            f"{llm.get('completion_tokens', 0):,} | "
            f"{'unknown' if cost is None else f'{cost:.6g}'} | {llm.get('latency_s', 0):.3g} |",
            "",
        ]
        offloaded = attrs.get(records.ARTIFACTS) or {}
        where = []
        for index, _ in enumerate(records.llm_calls(attrs)):
            parts, kept = [], []
            for part in records.LLM_PARTS:
                key = records.llm_call_key(index, part)
                if key in offloaded:
                    parts.append(f"{part}: artifact `{offloaded[key]['filename']}`")
                elif key in attrs:  # schema 1: an attribute per text
                    parts.append(f"{part}: `{key}`")
                else:
                    kept.append(part)
            if kept:
                parts.insert(0, f"{', '.join(kept)} in `{records.LLM_CALLS}`")
            where.append(f"- call {index}: " + ", ".join(parts))
        if where:
            lines += ["Prompts and responses:", "", *where, ""]
    timing = attrs.get(records.TIME)
    if isinstance(timing, dict) and timing:
        lines.append(
            f"*Time: evaluate {timing.get('evaluate_s', 0):.3g} s, LLM "
            f"{timing.get('llm_s', 0):.3g} s, total {timing.get('total_s', 0):.3g} s.*"
        )
    return "\n".join(lines).rstrip() + "\n"


def split_diff(diff_text: str, paths: list[str]) -> dict[str, str]:
    """Split ``trace:diff`` (see ``snapshots.diff``) into one unified diff per parameter path."""
    headers = {f"--- {path} (parent)": path for path in paths}
    blocks: dict[str, list[str]] = {}
    current: str | None = None
    lines = diff_text.splitlines()
    for index, line in enumerate(lines):
        path = headers.get(line)
        if (
            path is not None
            and index + 1 < len(lines)
            and lines[index + 1] == f"+++ {path} (candidate)"
        ):
            current = path
            blocks[current] = []
        if current is not None:
            blocks[current].append(line)
    return {path: "\n".join(block) for path, block in blocks.items()}


def _settings(settings: Mapping[str, Any]) -> str:
    return ", ".join(f"`{name}` = {_number(value)}" for name, value in settings.items())


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):  # a multi-objective score: one number per direction
        return "[" + ", ".join(_number(item) for item in value) + "]"
    return str(value)


def _signed(value: Any) -> str:
    if isinstance(value, (int, float)):
        return f"{value:+.4g}"
    if isinstance(value, list):  # per objective, in a multi-objective study
        return "[" + ", ".join(_signed(item) for item in value) + "]"
    return str(value)


def _fenced(text: str, language: str, limit: int = NOTE_TEXT_CHARS) -> str:
    """A fenced code block that no backtick run inside ``text`` can close early."""
    if len(text) > limit:
        text = text[:limit] + f"\n... ({len(text) - limit:,} more characters in the attributes)"
    longest = run = 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text}\n{fence}"


# -- long texts in artifacts ------------------------------------------------------------------


def offload_long_texts(
    trial: optuna.Trial, attrs: dict[str, Any], artifact_store: ArtifactStore
) -> None:
    """Upload LLM prompts and responses longer than :data:`LONG_TEXT_CHARS` as artifacts of the
    trial; ``trace:llm_calls`` keeps their first :data:`HEAD_CHARS` characters and
    ``trace:artifacts`` maps each text's name (``trace:llm:<i>:<part>``) to its artifact. An
    upload that fails leaves the text in the record (chunked as usual)."""
    from optuna.artifacts import upload_artifact

    offloaded: dict[str, Any] = dict(attrs.get(records.ARTIFACTS) or {})
    calls = attrs.get(records.LLM_CALLS) or []
    texts = [(index, call, part) for index, call in enumerate(calls) for part in records.LLM_PARTS]
    with tempfile.TemporaryDirectory(prefix="trace-optuna-") as directory:
        for index, call, part in texts:
            text = call.get(part)
            if not isinstance(text, str) or len(text) <= LONG_TEXT_CHARS:
                continue
            key = records.llm_call_key(index, part)
            filename = (
                f"trial{trial.number}-{key.removeprefix(records.PREFIX).replace(':', '-')}.txt"
            )
            path = Path(directory) / filename
            path.write_text(text, encoding="utf-8")
            try:
                artifact_id = upload_artifact(
                    artifact_store=artifact_store,
                    file_path=str(path),
                    study_or_trial=trial,
                    mimetype="text/plain",
                    encoding="utf-8",
                )
            except Exception:
                _logger.warning(
                    "Trial#%d: could not upload %s to the artifact store; it stays in the "
                    "attributes.",
                    trial.number,
                    key,
                    exc_info=True,
                )
                continue
            offloaded[key] = {"artifact_id": artifact_id, "filename": filename, "chars": len(text)}
            call[part] = (
                text[:HEAD_CHARS]
                + f"\n... [{len(text) - HEAD_CHARS:,} more characters: artifact {filename} "
                f"({artifact_id})]"
            )
    if offloaded:
        attrs[records.ARTIFACTS] = offloaded


def read_text(
    trial: FrozenTrial, key: str, artifact_store: ArtifactStore | None = None
) -> str | None:
    """The whole text stored under ``key`` (e.g. ``trace:llm:0:user``), from the artifact store
    when it was offloaded there.

    Args:
        trial: A trial of the study.
        key: A record key holding text.
        artifact_store: The study's artifact store (needed for offloaded texts).

    Raises:
        RecordError: If the text was offloaded and no ``artifact_store`` is given.
    """
    from trace_optuna.exceptions import RecordError

    offloaded = (trial.user_attrs.get(records.ARTIFACTS) or {}).get(key)
    if offloaded is None:
        return records.decode(trial.user_attrs, key)
    if artifact_store is None:
        raise RecordError(
            f"Trial#{trial.number}'s {key!r} is in artifact {offloaded['artifact_id']}; pass "
            "the study's artifact_store to read it."
        )
    with artifact_store.open_reader(offloaded["artifact_id"]) as reader:
        return bytes(reader.read()).decode("utf-8")


# -- figures in the study ---------------------------------------------------------------------


def dashboard_trial_url(study: optuna.Study) -> Callable[[int], str]:
    """Links to optuna-dashboard's page of a trial, relative to the dashboard's root."""
    # optuna-dashboard addresses studies by their storage id; optuna_dashboard's own helpers
    # read it the same way.
    study_id = study._study_id
    return lambda number: f"/dashboard/studies/{study_id}/trials?numbers={number}"


def save_figures(study: optuna.Study) -> list[str]:
    """Save every figure of :mod:`trace_optuna.visualization` into the study, so
    optuna-dashboard shows them; each is overwritten under its fixed id. The study's
    ``trace:figures`` attribute then says when they were saved (see :class:`FigureRefresher`).

    Written as ``optuna_dashboard.save_plotly_graph_object`` writes them, without its read of
    every study system attribute (all notes) per figure: the stamp remembers how many chunks
    each figure has, so the chunks a shorter figure leaves are blanked without reading.

    Returns:
        The graph object ids written (``trace-score-history``...).
    """
    from trace_optuna import visualization

    started = time.time()
    stamp = figures_stamp(study)
    written = stamp.get("chunks") if stamp is not None else None
    if not isinstance(written, dict):  # never saved, or saved by an older trace_optuna
        written = _stored_figure_chunks(study)
    storage, study_id = study._storage, study._study_id
    chunks: dict[str, int] = {}
    for figure_id, figure in visualization.figures(
        study, trial_url=dashboard_trial_url(study)
    ).items():
        graph_id = FIGURE_PREFIX + figure_id
        # optuna-dashboard draws custom figures in half-width boxes 450 px high.
        figure.update_layout(height=450, margin={"l": 60, "r": 20, "t": 60, "b": 50})
        parts = _chunks(figure.to_json())
        for index, part in enumerate(parts):
            storage.set_study_system_attr(study_id, figure_chunk_key(graph_id, index), part)
        before = int(written.get(graph_id, 0))
        for index in range(len(parts), before):
            storage.set_study_system_attr(study_id, figure_chunk_key(graph_id, index), "")
        chunks[graph_id] = max(len(parts), before)
    study.set_user_attr(
        records.STUDY_FIGURES,
        {
            "saved_at": time.time(),
            "took_s": round(time.time() - started, 3),
            "worker": f"{socket.gethostname()}:{os.getpid()}",
            "chunks": chunks,
        },
    )
    return list(chunks)


def figures_stamp(study: optuna.Study) -> dict[str, Any] | None:
    """The study's ``trace:figures`` attribute: when its figures were saved (``saved_at``, unix
    time), how long that took (``took_s``), by which worker, and each figure's chunk count."""
    stamp = study.user_attrs.get(records.STUDY_FIGURES)
    return stamp if isinstance(stamp, dict) else None


def _stored_figure_chunks(study: optuna.Study) -> dict[str, int]:
    """How many chunks each saved figure has, read from the study system attributes."""
    counts: dict[str, int] = {}
    for key in study._storage.get_study_system_attrs(study._study_id):
        if key.startswith(_PLOT_DATA + FIGURE_PREFIX):
            graph_id, _, index = key.removeprefix(_PLOT_DATA).rpartition(":")
            if index.isdigit():
                counts[graph_id] = max(counts.get(graph_id, 0), int(index) + 1)
    return counts


class FigureRefresher:
    """An Optuna callback that keeps the figures saved in the study fresh, for all its workers.

    The study's ``trace:figures`` attribute says when its figures were last saved, by any
    worker, and how long that took. After a trial (from ``interval`` seconds after
    ``optimize`` started) and when ``optimize`` returns (:meth:`refresh`), they are saved again
    only when they are older than ``interval`` seconds and than :data:`FIGURE_COST_FACTOR`
    times the last save took (saving costs one storage write per 2 KB of figure JSON and grows
    with the study, so figures never take more than a tenth of the study's time). So across
    all workers the figures are saved at most once per interval: a worker that finds them
    stale claims the refresh through the storage
    (:meth:`~trace_optuna.coordination.Coordinator.claim_once`), and workers that find them
    stale at the same moment leave it to the one that claimed it. A worker joining a study
    whose figures are fresh saves none. ``TraceStudy.optimize`` uses it.

    Args:
        interval: Seconds between refreshes; None disables saving figures.
        coordinator: The study's coordinator, through which workers claim a refresh; None
            when only this process runs the study.
    """

    def __init__(
        self,
        interval: float | None = DEFAULT_FIGURE_INTERVAL,
        coordinator: Coordinator | None = None,
    ) -> None:
        if interval is not None and (not isinstance(interval, (int, float)) or interval < 0):
            raise ConfigurationError(
                f"figure_interval must be a number of seconds >= 0 or None, got {interval!r}."
            )
        self.interval = interval
        self.coordinator = coordinator
        self._started = time.time()
        self._fresh_until = 0.0  # unix time until which the stored figures are known fresh

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        # Not right after the first trials: a short run saves once, when it returns.
        if self.interval is not None and time.time() >= self._started + self.interval:
            self.refresh(study)

    def refresh(self, study: optuna.Study) -> bool:
        """Save the figures if the study's are stale and no other worker claimed the refresh.

        Returns:
            Whether this call saved them.
        """
        if self.interval is None or time.time() < self._fresh_until:
            return False
        if not _dashboard_installed():
            return False
        stamp = figures_stamp(study)
        wait = max(self.interval, FIGURE_COST_FACTOR * float((stamp or {}).get("took_s", 0.0)))
        now = time.time()
        if stamp is not None and now < float(stamp.get("saved_at", 0.0)) + wait:
            self._fresh_until = float(stamp["saved_at"]) + wait
            return False
        # One claim per stretch of `wait` seconds: of the workers that find the figures stale
        # at the same moment, one saves them.
        key = f"figures:{int(now // max(wait, 1.0))}"
        if self.coordinator is not None and not self.coordinator.claim_once(study, key):
            self._fresh_until = now + wait  # another worker is saving them
            return False
        self.save(study)
        return True

    def save(self, study: optuna.Study) -> None:
        """Save the figures now (nothing when disabled or optuna-dashboard is missing)."""
        if self.interval is None or not _dashboard_installed():
            return
        started = time.time()
        try:
            save_figures(study)
        except Exception:  # figures are a view: never fail the study over them
            _logger.warning("Could not save the figures into the study.", exc_info=True)
        took = time.time() - started
        self._fresh_until = time.time() + max(self.interval, FIGURE_COST_FACTOR * took)


# -- human feedback ---------------------------------------------------------------------------


class HumanFeedbackTimeout(TraceOptunaError):
    """Nobody answered :class:`HumanFeedback`'s form in time; the trial fails, its candidate
    stays in its record."""


class HumanFeedback:
    """An ``evaluate`` answered by a person in optuna-dashboard: the feedback they type becomes
    Trace feedback for the next step.

    Each trial runs the candidate with ``run(agent)``, shows the output in the trial's note
    (with the diff against the parent and the feedback that drove the step), and waits until a
    person submits the trial's form in optuna-dashboard: a score (a slider from ``low`` to
    ``high``, or the given ``choices``) and the feedback text. The trial then completes with
    that score, the text is the candidate's feedback (``trace:feedback``), and the next step
    starts from it. The form is optuna-dashboard's user-attribute form
    (``register_user_attr_form_widgets``), writing ``trace:human_score`` and
    ``trace:human_feedback`` on the running trial; the objective form is not used because it
    would finish the trial before its record is written.

    A candidate the study already judged (the parent, evaluated again to rebuild its Trace
    graph in a new process) is not asked again: its stored score and feedback are reused.

    After ``timeout`` seconds without an answer the trial FAILs with
    :class:`HumanFeedbackTimeout`; the candidate stays in its record (``trace:snapshot``,
    ``trace:diff``, ``trace:human_output``) and the note says so. Use it with the
    ``optoprime`` strategy (one candidate per trial); strategies that evaluate several
    candidates in one trial are refused at their second candidate.

    Args:
        run: ``run(agent) -> Node``: runs the agent and returns the Trace node of its output.
        low: The lowest score of the slider.
        high: The highest score of the slider.
        step: The slider's step.
        choices: Instead of a slider, ``{label: score}`` radio buttons.
        question: What the form asks.
        timeout: Seconds to wait for an answer; None waits forever.
        poll_interval: Seconds between reads of the trial while waiting.
        render: ``render(output) -> str``: the output shown to the person (default: its data).

    Raises:
        ConfigurationError: On invalid arguments.

    Example:
        >>> import trace_optuna as to
        >>> from trace_optuna import demo
        >>> from trace_optuna.dashboard import HumanFeedback
        >>> evaluate = HumanFeedback(lambda agent: agent.reply(demo.QUESTION), timeout=3600)
        >>> # to.create_study(agent=demo.make_agent, evaluate=evaluate, llm=..., storage=...)
    """

    def __init__(
        self,
        run: Callable[[Any], Any],
        *,
        low: float = 0.0,
        high: float = 1.0,
        step: float | None = 0.1,
        choices: Mapping[str, float] | None = None,
        question: str = "Score the candidate's output shown in the note",
        timeout: float | None = 3600.0,
        poll_interval: float = 1.0,
        render: Callable[[Any], str] | None = None,
    ) -> None:
        if not callable(run):
            raise ConfigurationError(
                f"HumanFeedback needs run(agent) -> Trace node, got {type(run).__name__}."
            )
        if choices is not None and (
            not choices or not all(isinstance(v, (int, float)) for v in choices.values())
        ):
            raise ConfigurationError(
                f"HumanFeedback choices must map labels to numbers, got {choices!r}."
            )
        if not low < high:
            raise ConfigurationError(f"HumanFeedback needs low < high, got {low} and {high}.")
        if timeout is not None and timeout <= 0:
            raise ConfigurationError(f"HumanFeedback timeout must be > 0 or None, got {timeout}.")
        if poll_interval <= 0:
            raise ConfigurationError(f"poll_interval must be > 0, got {poll_interval}.")
        self.run = run
        self.low, self.high, self.step = float(low), float(high), step
        self.choices = dict(choices) if choices is not None else None
        self.question = question
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.render = render or (lambda output: str(getattr(output, "data", output)))
        self._registered: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def describe(self) -> str:
        """What the study's ``trace:evaluation`` attribute says about this evaluation."""
        target = getattr(self.run, "__qualname__", type(self.run).__qualname__)
        scale = (
            ", ".join(f"{label}={value:g}" for label, value in self.choices.items())
            if self.choices
            else f"{self.low:g}..{self.high:g}"
        )
        return (
            f"HumanFeedback: a person scores ({scale}) the output of {target} and types the "
            "feedback in optuna-dashboard"
        )

    def widgets(self) -> list[Any]:
        """The optuna-dashboard form widgets: the score and the feedback text."""
        module = _optuna_dashboard()
        if self.choices is not None:
            score_widget = module.ChoiceWidget(
                choices=list(self.choices),
                values=[float(value) for value in self.choices.values()],
                description=self.question,
                user_attr_key=records.HUMAN_SCORE,
            )
        else:
            score_widget = module.SliderWidget(
                min=self.low,
                max=self.high,
                step=self.step,
                description=self.question,
                user_attr_key=records.HUMAN_SCORE,
            )
        feedback_widget = module.TextInputWidget(
            description="Feedback for the optimizer: what should change, and why",
            user_attr_key=records.HUMAN_FEEDBACK,
        )
        return [score_widget, feedback_widget]

    def register(self, study: optuna.Study) -> None:
        """Register the form on the study (done by the first trial that asks)."""
        module = _optuna_dashboard()
        key = (study.study_name, repr(self.widgets()))
        with self._lock:
            if key in self._registered:
                return
            module.register_user_attr_form_widgets(study, self.widgets())
            self._registered.add(key)

    def __call__(self, agent: Any) -> Evaluation:
        running = _RUNNING.get()
        if running is None or running.trial.study is None:
            raise ConfigurationError(
                "HumanFeedback is an evaluate for trace_optuna studies: it asks in the running "
                "trial's dashboard form, so call it through study.optimize()."
            )
        trial = running.trial
        output = self.run(agent)
        known = self._judged(trial.study, snapshots.snapshot_hash(snapshots.snapshot(agent)))
        if known is not None:
            score, feedback = known
            return Evaluation(
                score=score, feedback=feedback, output=output, details={"human": True}
            )
        if running.asked:
            raise ConfigurationError(
                f"Trial#{trial.number}'s strategy evaluated a second candidate; HumanFeedback "
                "asks one question per trial. Use it with strategies=['optoprime']."
            )
        running.asked = True
        _optuna_dashboard()  # fails here, naming the extra, when it is missing
        self.register(trial.study)
        shown = self.render(output)
        asked_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        records.write(
            trial.set_user_attr,
            {
                records.HUMAN_OUTPUT: shown,
                records.HUMAN: {
                    "status": "waiting",
                    "asked_at": asked_at,
                    "timeout_s": self.timeout,
                },
            },
        )
        write_note(trial, self._waiting_note(trial.number, running.attrs, shown))
        answer = self._wait(trial)
        if answer is None:
            trial.set_user_attr(
                records.HUMAN,
                {"status": "timed out", "asked_at": asked_at, "timeout_s": self.timeout},
            )
            raise HumanFeedbackTimeout(
                f"Nobody scored Trial#{trial.number} in optuna-dashboard within {self.timeout} s; "
                "the trial fails and keeps its candidate (trace:snapshot, trace:diff, "
                "trace:human_output)."
            )
        score, feedback = answer
        trial.set_user_attr(
            records.HUMAN, {"status": "answered", "asked_at": asked_at, "timeout_s": self.timeout}
        )
        return Evaluation(score=score, feedback=feedback, output=output, details={"human": True})

    def _judged(self, study: optuna.Study, snapshot_hash: str) -> tuple[float, str] | None:
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if (
                frozen.user_attrs.get(records.SNAPSHOT_HASH) == snapshot_hash
                and frozen.value is not None
            ):
                return frozen.value, records.decode(frozen.user_attrs, records.FEEDBACK) or ""
        return None

    def _wait(self, trial: optuna.Trial) -> tuple[float, str] | None:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            attrs = _fresh_attrs(trial)
            if records.HUMAN_SCORE in attrs and records.HUMAN_FEEDBACK in attrs:
                score = _as_score(attrs[records.HUMAN_SCORE])
                if score is not None:
                    return score, str(attrs[records.HUMAN_FEEDBACK])
                _logger.warning(
                    "Trial#%d: the form's score %r is not a number; waiting for another.",
                    trial.number,
                    attrs[records.HUMAN_SCORE],
                )
            if deadline is not None and time.monotonic() >= deadline:
                return None
            remaining = self.poll_interval if deadline is None else deadline - time.monotonic()
            time.sleep(max(0.0, min(self.poll_interval, remaining)))

    def _waiting_note(self, number: int, attrs: Mapping[str, Any], shown: str) -> str:
        scale = (
            " / ".join(f"{label} ({value:g})" for label, value in (self.choices or {}).items())
            or f"from {self.low:g} to {self.high:g}"
        )
        until = "" if self.timeout is None else f" (the trial waits {self.timeout:g} s)"
        body = trial_note(number, attrs, {})
        head, _, rest = body.partition("\n")
        return "\n".join(
            [
                f"## Trial {number}: waiting for your score and feedback",
                "",
                f"Read the candidate's output below, then use the **Set User Attributes Form** "
                f"at the bottom of this page: a score {scale}, and feedback telling the "
                f"optimizer what to change{until}.",
                "",
                "### The candidate's output",
                "",
                _fenced(shown, "text"),
                "",
                rest.strip(),
                "",
            ]
        )


def _fresh_attrs(trial: optuna.Trial) -> dict[str, Any]:
    """The running trial's user attributes as stored now (``Trial.user_attrs`` is a copy taken
    when the trial started; the dashboard's form writes to the storage)."""
    for frozen in trial.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if frozen.number == trial.number:
            return dict(frozen.user_attrs)
    return {}


def _as_score(value: Any) -> float | None:
    try:
        score = float(value)
    except (TypeError, ValueError):
        return None
    return score if math.isfinite(score) else None


# -- the command line -------------------------------------------------------------------------


def add_commands(
    commands: Any, storage_argument: Callable[[argparse.ArgumentParser], None]
) -> None:
    """Register ``trace-optuna dashboard`` and ``trace-optuna report`` (called by ``cli.py``)."""
    dashboard = commands.add_parser(
        "dashboard",
        help="start optuna-dashboard on 127.0.0.1 for a storage (no authentication: local only)",
    )
    storage_argument(dashboard)
    dashboard.add_argument(
        "--port", type=int, default=8080, help="port (default: 8080; 0 picks a free one)"
    )
    dashboard.add_argument(
        "--artifact-dir",
        default=None,
        help="artifact directory (default: the one the storage's studies recorded)",
    )
    dashboard.set_defaults(run=run_dashboard)

    report = commands.add_parser(
        "report", help="write a study's figures into one self-contained HTML page"
    )
    storage_argument(report)
    report.add_argument("--study", required=True, help="study name")
    report.add_argument("--out", required=True, help="the HTML file to write")
    report.add_argument(
        "--dashboard-url",
        default=None,
        help="link lineage nodes to this optuna-dashboard (e.g. http://127.0.0.1:8080)",
    )
    report.set_defaults(run=run_report)


def run_dashboard(args: argparse.Namespace) -> int:
    """``trace-optuna dashboard``: serve optuna-dashboard on 127.0.0.1 until interrupted."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler
    from wsgiref.simple_server import WSGIServer
    from wsgiref.simple_server import make_server

    from trace_optuna.storage import describe
    from trace_optuna.storage import resolve_storage

    if not args.storage:
        print("error: give --storage or set TRACE_OPTUNA_STORAGE", file=sys.stderr)
        return 2
    try:
        module = _optuna_dashboard()
    except ImportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    storage = resolve_storage(args.storage)
    artifact_store, directory = _dashboard_artifacts(storage, args.artifact_dir)
    app = module.wsgi(storage, artifact_store=artifact_store)

    class _Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class _Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            _logger.debug(format, *args)

    server = make_server("127.0.0.1", args.port, app, server_class=_Server, handler_class=_Quiet)
    address = f"http://127.0.0.1:{server.server_port}/dashboard/"
    print(f"optuna-dashboard for {describe(args.storage)}: {address}")
    print(f"artifacts: {directory}" if directory else "artifacts: none (no artifact directory)")
    print("It has no authentication: keep it on 127.0.0.1. Ctrl-C stops it.", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _dashboard_artifacts(storage: Any, artifact_dir: str | None) -> tuple[Any, str | None]:
    if artifact_dir is not None:
        return resolve_artifact_store(artifact_dir, None), str(Path(artifact_dir).resolve())
    directories = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        directory = summary.user_attrs.get(records.STUDY_ARTIFACT_DIR)
        if isinstance(directory, str) and directory not in directories:
            directories.append(directory)
    if not directories:
        return None, None
    if len(directories) > 1:
        warnings.warn(
            f"The studies in this storage use several artifact directories {directories}; "
            f"the dashboard serves {directories[0]!r} (choose with --artifact-dir).",
            stacklevel=2,
        )
    return resolve_artifact_store(directories[0], None), directories[0]


def run_report(args: argparse.Namespace) -> int:
    """``trace-optuna report``: write every figure of a study into one HTML page."""
    from trace_optuna import visualization
    from trace_optuna.storage import resolve_storage

    if not args.storage:
        print("error: give --storage or set TRACE_OPTUNA_STORAGE", file=sys.stderr)
        return 2
    storage = resolve_storage(args.storage)
    try:
        study = optuna.load_study(study_name=args.study, storage=storage)
    except KeyError:
        print(f"error: no study named {args.study!r} in that storage", file=sys.stderr)
        return 2
    trial_url = None
    if args.dashboard_url:
        relative = dashboard_trial_url(study)
        base = args.dashboard_url.rstrip("/")
        trial_url = lambda number: base + relative(number)  # noqa: E731
    path = visualization.write_report(study, args.out, trial_url=trial_url)
    print(f"wrote {path}")
    return 0
