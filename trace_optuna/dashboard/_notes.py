"""A trial's Markdown note in optuna-dashboard: what it says, and writing it at a constant
cost.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna

from trace_optuna import records
from trace_optuna.dashboard._keys import _chunks
from trace_optuna.dashboard._keys import note_chunk_key
from trace_optuna.dashboard._keys import note_version_key

NOTE_DIFF_CHARS = 6_000
"""The longest diff block a note shows per parameter; ``trace:diff`` keeps all of it."""
NOTE_TEXT_CHARS = 3_000
"""The longest feedback or output a note shows; the attributes keep all of it."""
NOTE_CELL_CHARS = 200
"""The longest feedback a minibatch table cell shows (``trace:minibatch_feedback`` keeps it)."""


_note_versions: dict[int, tuple[int, int]] = {}  # trial id -> (version, chunks) written here


def write_note(trial: optuna.Trial, body: str) -> None:
    """Save ``body`` as the trial's optuna-dashboard note, at a constant cost.

    ``optuna_dashboard.save_note`` reads every study system attribute (all notes and figures
    of the study) twice per call, so its cost grows with the study. A trial's note is written
    only by the process running it (and by a person, in the dashboard, usually later), so this
    writes optuna-dashboard's keys without reading (and without importing optuna-dashboard).
    """
    storage, study_id = trial.storage, trial.study._study_id
    for key, value in note_attrs(trial, body).items():
        storage.set_study_system_attr(study_id, key, value)


def note_attrs(trial: optuna.Trial, body: str) -> dict[str, Any]:
    """The study system attributes that make ``body`` the trial's note: the version and the
    chunks, and blanks for chunks a longer earlier note of this process left. Write them all
    (the record's one write takes them along)."""
    trial_id = trial._trial_id
    version, chunks_before = _note_versions.get(trial_id, (0, 0))
    chunks = _chunks(body)
    attrs: dict[str, Any] = {note_version_key(trial_id): version + 1}
    for index, chunk in enumerate(chunks):
        attrs[note_chunk_key(trial_id, index)] = chunk
    for index in range(len(chunks), chunks_before):
        attrs[note_chunk_key(trial_id, index)] = ""
    _note_versions[trial_id] = (version + 1, max(len(chunks), chunks_before))
    if len(_note_versions) > 10_000:  # only running trials matter; forget old ones
        _note_versions.pop(next(iter(_note_versions)))
    return attrs


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
        if attrs.get(records.VALIDATED) is False:
            headline += ", not validated"
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
        validated = attrs.get(records.VALIDATED)
        if validated is not None:  # a dataset study: which mean the score is
            text += " (validation mean)" if validated else " (minibatch mean, not validated)"
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
    isolation = attrs.get("trace:stop_isolation")  # strategies.stop.ISOLATION_ATTR
    if isinstance(isolation, dict):
        layers = ", ".join(isolation.get("layers") or []) or "none"
        text = f"layers {layers}"
        if isolation.get("option") == "none":
            missing = ", ".join(isolation.get("missing") or []) or "none"
            text += f"; **opted out** (`stop_isolation='none'`), missing: {missing}"
        lines.append(f"- **STOP improver isolation:** {text}")
    lines.append("")

    if error:
        lines += ["### Error", "", _fenced(str(error), "text"), ""]
    lines += _dataset_lines(attrs)
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
        lines += ["### LLM", "", *_usage_table(llm), ""]
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
    agent_llm = attrs.get(records.AGENT_LLM)
    if isinstance(agent_llm, dict) and agent_llm.get("calls"):
        lines += ["### The agent's LLM", "", *_usage_table(agent_llm), ""]
        lines += [f"Prompts and responses in `{records.AGENT_LLM_CALLS}`.", ""]
    timing = attrs.get(records.TIME)
    if isinstance(timing, dict) and timing:
        lines.append(
            f"*Time: evaluate {timing.get('evaluate_s', 0):.3g} s, LLM "
            f"{timing.get('llm_s', 0):.3g} s, total {timing.get('total_s', 0):.3g} s.*"
        )
    return "\n".join(lines).rstrip() + "\n"


def _dataset_lines(attrs: Mapping[str, Any]) -> list[str]:
    """A dataset study's step: the minibatch examples' scores and feedback before (the parent)
    and after (the candidate), whether it was accepted and validated, the validation mean."""
    minibatch = attrs.get(records.MINIBATCH)
    if not minibatch:
        return []
    scores = attrs.get(records.MINIBATCH_SCORES) or {}
    feedback = attrs.get(records.MINIBATCH_FEEDBACK) or {}
    parent_mean = attrs.get(records.PARENT_MINIBATCH_SCORE)
    candidate_mean = attrs.get(records.MINIBATCH_SCORE)
    accepted = attrs.get(records.ACCEPTED)
    validated = attrs.get(records.VALIDATED)
    validation = attrs.get(records.VALIDATION)
    lines = [f"### Minibatch: {len(minibatch)} training examples", ""]
    if candidate_mean is not None:
        if accepted is None:
            verdict = "a root candidate (no parent to compare with)"
        elif accepted:
            verdict = "**accepted**: not worse than its parent there"
        else:
            verdict = "**rejected**: worse than its parent there, so it was not validated"
        means = _number(candidate_mean)
        if parent_mean is not None:
            means = f"{_number(parent_mean)} → {means}"
        lines.append(f"- **Minibatch mean:** {means}; {verdict}")
    if isinstance(validation, dict):
        text = (
            f"{_number(validation.get('mean'))} over {validation.get('scored')} of "
            f"{validation.get('total')} examples ({validation.get('ran')} run now, the rest "
            "read from stored rows)"
        )
        if validation.get("pruned"):
            text += "; **stopped by the study's pruner**"
        lines.append(f"- **Validation mean:** {text}")
    elif validated is False:
        lines.append("- **Validation:** none; the trial's value is its minibatch mean")
    elif validated and candidate_mean is not None:
        lines.append("- **Validation:** not finished")
    lines.append("")
    before = scores.get("parent") or []
    after = scores.get("candidate") or []
    if not after:  # the step ended before the candidate was scored
        examples = ", ".join(f"`{_cell(str(example_id))}`" for example_id in minibatch)
        return [*lines, f"Examples: {examples} (not scored)", ""]
    before_text = feedback.get("parent") or []
    after_text = feedback.get("candidate") or []
    if before:
        lines += [
            "| example | parent | candidate | change | parent's feedback | candidate's feedback |",
            "|---|---|---|---|---|---|",
        ]
    else:
        lines += ["| example | score | feedback |", "|---|---|---|"]
    for index, example_id in enumerate(minibatch):
        after_score = _item(after, index)
        row = [f"`{_cell(str(example_id))}`"]
        if before:
            before_score = _item(before, index)
            change = ""
            if isinstance(before_score, (int, float)) and isinstance(after_score, (int, float)):
                difference = after_score - before_score
                change = "=" if difference == 0 else _signed(difference)
            row += [_number(before_score), _number(after_score), change]
            row += [_cell(_item(before_text, index)), _cell(_item(after_text, index))]
        else:
            row += [_number(after_score), _cell(_item(after_text, index))]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    return lines


def _item(values: list[Any], index: int) -> Any:
    return values[index] if index < len(values) else ""


def _cell(value: Any) -> str:
    """Text for a Markdown table cell: one line, pipes escaped, at most NOTE_CELL_CHARS."""
    text = " ".join(str(value).split())
    if len(text) > NOTE_CELL_CHARS:
        text = text[: NOTE_CELL_CHARS - 1] + "…"
    return text.replace("|", "\\|")


def _usage_table(llm: dict[str, Any]) -> list[str]:
    """A markdown table of one model's calls in a trial (``trace:llm``, ``trace:agent_llm``)."""
    cost = llm.get("cost_usd")
    return [
        "| model | calls | prompt tokens | completion tokens | cost (USD) | latency (s) |",
        "|---|---|---|---|---|---|",
        f"| `{llm.get('model')}` | {llm.get('calls')} | {llm.get('prompt_tokens', 0):,} | "
        f"{llm.get('completion_tokens', 0):,} | "
        f"{'unknown' if cost is None else f'{cost:.6g}'} | {llm.get('latency_s', 0):.3g} |",
    ]


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
