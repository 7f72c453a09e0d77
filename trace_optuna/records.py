"""Every attribute key trace_optuna stores, in one place, and how values are chunked.

Optuna keeps trial and study attributes as ``json.dumps(value)`` in ``Text`` columns. MySQL and
MariaDB cap those at 65,535 bytes (and in non-strict mode truncate silently, poisoning the whole
study), so no single attribute value written here exceeds :data:`MAX_ATTR_BYTES` bytes of JSON.
A longer value is split: the first part stays under its key (so a person still reads the start of
it), the rest goes to ``<key>:chunk:1``, ``<key>:chunk:2``..., and ``<key>:chunks`` says how many
parts there are and whether they join into a string or into JSON text.

Trial user attributes (schema 2; ``<path>`` is a parameter path such as ``instructions``):

=============================  ===========================================================
``trace:schema``               int, the layout version of this record
``trace:strategy``             str, what produced the candidate (``baseline``, ``optoprime``)
``trace:parents``              list[int], parent trial numbers (empty for the baseline)
``trace:score``                float, the candidate's score (also the trial's value)
``trace:feedback``             str, the candidate's feedback from ``evaluate``
``trace:parent_score``         float | None, the parent's score the step started from
``trace:parent_feedback``      str | None, the feedback that drove the step
``trace:improvement``          float | None, score minus parent score
``trace:changed``              list[str], parameter paths whose value changed
``trace:diff``                 str, unified diff of every changed parameter against the parent
``trace:value:<path>``         the new value of a parameter this trial introduced
``trace:snapshot``             {path: [value hash, trial number holding the value]}
``trace:snapshot_hash``        str, content hash of the whole candidate snapshot
``trace:llm``                  {model, calls, prompt_tokens, completion_tokens, cost_usd,
                               latency_s}
``trace:llm_calls``            list, one {system, user, response} per LLM call: the prompts
                               sent and the raw response (or its error); chunked as one value
``trace:agent_llm``            as ``trace:llm``, for the agent's own model (``agent_llm``):
                               the calls the agent made while ``evaluate`` ran
``trace:agent_llm_calls``      as ``trace:llm_calls``, for those calls
``trace:time``                 {evaluate_s, llm_s, total_s}
``trace:worker``               {host, pid}
``trace:duplicate_of``         int, the trial that already evaluated this exact candidate
                               (its score is reused; nothing is evaluated twice)
``trace:evaluated``            list, every candidate a strategy evaluated during the trial,
                               and every failed attempt a repair replaced:
                               {snapshot_hash, score, changes (vs the first parent), feedback,
                               code_error, error (code or evaluate), transient, reused_from}
``trace:genetic``              what the genetic strategy did (parents drawn, mutated)
``trace:evolutionary``         what the evolutionary strategy did (parent, offspring, winner)
``trace:stop_version``         the STOP improver version the trial ran (written at its start)
``trace:stop_run``             the improver run: calls, budget, output, or the failure kind
``trace:stop_meta``            what a STOP meta-step did (the new version, its smoke runs)
``trace:stop_decisions``       improver versions this trial accepted or reverted
``trace:details``              dict, ``Evaluation.details`` of the candidate
``trace:error``                str, why the trial failed (or why the candidate failed)
``trace:traceback``            str, the traceback of that error
``trace:candidate_error``      str, why the trial's candidate failed (its code raised, or
                               ``evaluate`` raised on it), when the failure was not transient:
                               the study remembers it and never evaluates that candidate again
``trace:repairs``              int, how many repair steps the trial took from candidates whose
                               code raised (each failed attempt is in ``trace:evaluated``)
``trace:retry_of``             int, the trial whose worker died; this trial re-ran its step
``trace:knobs``                {param: value}, the Optuna params ``evaluate(agent, trial)``
                               suggested in this trial (the agent's own knobs)
``trace:parent_knobs``         {parent trial number: {param: value}}, the knob values each
                               parent re-run for its feedback used: the parent's own
``trace:registry``             {name, version}: the shared-parameter registry version the
                               trial ran with (studies over a ParameterSet selection only)
``trace:publish``              {status, version, base, paths, score, conflicts}: what the
                               trial published to the registry; status ``published``,
                               ``conflict_skipped`` (also after 3 conflicts),
                               ``conflict_rejected`` or ``unchanged``; each conflict
                               {base, newest, paths, versions} (see trace_optuna.registry)
``trace:artifacts``            {attribute key: {artifact_id, filename, chars}}: long LLM
                               texts uploaded to the study's artifact store; the attribute
                               keeps their start (see :mod:`trace_optuna.dashboard`)
``trace:minibatch``            list[str], the ids of the training examples the step ran on
                               (dataset studies, ``trainset=``; see trace_optuna.dataset)
``trace:minibatch_scores``     {parent: [float], candidate: [float]}: per-example scores on
                               the minibatch, in ``trace:minibatch``'s order
``trace:minibatch_feedback``   {parent: [str] | None, candidate: [str]}: each minibatch
                               example's feedback, in the same order (the trial's note shows
                               them before/after)
``trace:minibatch_score``      float, the candidate's mean on the minibatch
``trace:parent_minibatch_score``  float | None, the parent's mean on the same minibatch
``trace:accepted``             bool | None, whether the candidate was not worse than its
                               parent on the minibatch (None: a root candidate, no parent)
``trace:validated``            bool, whether it was scored on the validation set; False: the
                               trial's value is the minibatch mean and it is never a parent
``trace:validation``           {mean, scored, total, ran, pruned}: the validation mean over
                               ``scored`` of ``total`` examples (``ran`` of them run now, the
                               rest read from the study's per-example rows); ``pruned``: the
                               study's pruner stopped it (its rows stay)
``trace:human``                {status: waiting | answered | timed out, asked_at, timeout_s}
                               while :class:`~trace_optuna.dashboard.HumanFeedback` waits
``trace:human_output``         str, the candidate's output shown to the person
``trace:human_score``          the score a person entered in optuna-dashboard's form
``trace:human_feedback``       str, the feedback text a person entered there
=============================  ===========================================================

Schema history. Every reader here reads every earlier schema (``tests/data/record_v<n>.json``
freeze a sample of each):

* 2: an LLM call's three texts are entries of ``trace:llm_calls`` instead of three attributes
  ``trace:llm:<i>:system|user|response``. Optuna's first read of a study builds one object per
  stored attribute, so a worker joining a big study paid for three per call: at 10,000 trials
  of the demo agent that read is most of the join. :func:`decode` of ``trace:llm:<i>:<part>``
  (:func:`llm_call_key`, the name ``trace:artifacts`` uses) reads either layout.
* 1: the first layout.

Study user attributes: ``trace:test`` (the test set's score of the best candidate:
{trial, snapshot_hash, mean, examples, ran, at}; written by ``TraceStudy.evaluate_test``, read
by nothing that chooses), ``trace:splits`` (a dataset study's splits, written on first use and
checked on every reopening: {trainset|valset|testset: {examples, ids_sha256} or None}; None for
a study without ``trainset``), ``trace:schema``, ``trace:versions`` (python, trace-optuna,
trace-opt, optuna, litellm, sqlalchemy), ``trace:llm_settings`` (model and settings, never keys),
``trace:parameters`` (the agent's parameter paths; the selected ones for a study over shared
parameters, with ``trace:registry``: {name, on_conflict}), ``trace:strategies`` (fixed for the
life of the study), ``trace:seed``, ``trace:error_score``, ``trace:agent`` and ``trace:evaluation``
(qualified name and first docstring line of each), ``trace:strategy_docs`` ({strategy: what it
does}), ``trace:artifact_dir`` (for ``trace-optuna dashboard``), ``trace:figures`` (when the
figures were last saved into the study, by which worker, how long that took, and each figure's
chunk count; see :class:`~trace_optuna.dashboard.FigureRefresher`), ``trace:stop_isolation``
(written when a process opted out of STOP's isolation); STOP's improver versions:
``trace:stop:version:<id>`` (id, parent, creating trial, source hash; written last),
``trace:stop:source:<id>`` (the source, chunked) and ``trace:stop:status:<id>`` (accepted,
trialled or reverted, why, and the meta-utility), with ids ``seed`` and ``t<trial number>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
import dataclasses
import json
from typing import TYPE_CHECKING
from typing import Any

from trace_optuna.exceptions import RecordError
from trace_optuna.snapshots import value_hash

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from trace_optuna.llm import LLMCall

SCHEMA_VERSION = 2
MAX_ATTR_BYTES = 60_000

PREFIX = "trace:"
SCHEMA = "trace:schema"
STRATEGY = "trace:strategy"
PARENTS = "trace:parents"
SCORE = "trace:score"
FEEDBACK = "trace:feedback"
PARENT_SCORE = "trace:parent_score"
PARENT_FEEDBACK = "trace:parent_feedback"
IMPROVEMENT = "trace:improvement"
CHANGED = "trace:changed"
DIFF = "trace:diff"
SNAPSHOT = "trace:snapshot"
SNAPSHOT_HASH = "trace:snapshot_hash"
LLM = "trace:llm"
LLM_CALLS = "trace:llm_calls"
LLM_PARTS = ("system", "user", "response")
AGENT_LLM = "trace:agent_llm"  # the agent's own model (Config.agent_llm), as LLM
AGENT_LLM_CALLS = "trace:agent_llm_calls"  # its calls' texts, as LLM_CALLS
TIME = "trace:time"
WORKER = "trace:worker"
DUPLICATE_OF = "trace:duplicate_of"
EVALUATED = "trace:evaluated"
DETAILS = "trace:details"
ERROR = "trace:error"
TRACEBACK = "trace:traceback"
CANDIDATE_ERROR = "trace:candidate_error"  # the candidate's own failure, remembered by the study
REPAIRS = "trace:repairs"
RETRY_OF = "trace:retry_of"
KNOBS = "trace:knobs"
PARENT_KNOBS = "trace:parent_knobs"
REGISTRY = "trace:registry"
PUBLISH = "trace:publish"
INTERRUPTED = "trace:interrupted"  # the trial was interrupted (Ctrl-C) and is re-run on resume
# Dataset studies (trainset=): the step on a minibatch, acceptance, validation.
MINIBATCH = "trace:minibatch"
MINIBATCH_SCORES = "trace:minibatch_scores"
MINIBATCH_FEEDBACK = "trace:minibatch_feedback"
MINIBATCH_SCORE = "trace:minibatch_score"
PARENT_MINIBATCH_SCORE = "trace:parent_minibatch_score"
ACCEPTED = "trace:accepted"
VALIDATED = "trace:validated"
VALIDATION = "trace:validation"
DATASET_KEYS = (
    MINIBATCH,
    MINIBATCH_SCORES,
    MINIBATCH_FEEDBACK,
    MINIBATCH_SCORE,
    PARENT_MINIBATCH_SCORE,
    ACCEPTED,
    VALIDATED,
    VALIDATION,
)

STUDY_VERSIONS = "trace:versions"
STUDY_LLM_SETTINGS = "trace:llm_settings"
STUDY_PARAMETERS = "trace:parameters"
STUDY_STRATEGIES = "trace:strategies"
# {option: "none", layers}: written when a process opts out of the STOP sandbox's isolation.
STUDY_STOP_ISOLATION = "trace:stop_isolation"
STUDY_SEED = "trace:seed"
STUDY_ERROR_SCORE = "trace:error_score"
STUDY_TEST = "trace:test"  # the test set's score of the best candidate (evaluate_test)
STUDY_SPLITS = "trace:splits"  # a dataset study's splits (fixed; checked on reopening)
STUDY_BUDGET_EXHAUSTED = "trace:budget_exhausted"  # why workers stopped: the budget's reason

# Browsing in optuna-dashboard (trace_optuna.dashboard): long texts in artifacts, the study's
# description, and the human judgement HumanFeedback waits for.
ARTIFACTS = "trace:artifacts"
HUMAN = "trace:human"
HUMAN_OUTPUT = "trace:human_output"
HUMAN_SCORE = "trace:human_score"
HUMAN_FEEDBACK = "trace:human_feedback"
STUDY_ARTIFACT_DIR = "trace:artifact_dir"
STUDY_AGENT = "trace:agent"
STUDY_EVALUATION = "trace:evaluation"
STUDY_STRATEGY_DOCS = "trace:strategy_docs"
STUDY_FIGURES = "trace:figures"  # when the figures were last saved, by any worker

# Trial system attribute: a journal storage's heartbeat, renewed by the worker running the trial
# (storage.HeartbeatJournalStorage): {until: unix time it expires, worker: "host:pid"}.
LEASE = "trace:lease"

BASELINE = "baseline"
REGISTRY_PICKUP = "registry"  # the strategy of a trial evaluating values another study published

# Keys of the trial record itself; strategies store their own under other ``trace:`` keys.
RESERVED = frozenset(
    {
        SCHEMA,
        STRATEGY,
        PARENTS,
        SCORE,
        FEEDBACK,
        PARENT_SCORE,
        PARENT_FEEDBACK,
        IMPROVEMENT,
        CHANGED,
        DIFF,
        SNAPSHOT,
        SNAPSHOT_HASH,
        LLM,
        LLM_CALLS,
        AGENT_LLM,
        AGENT_LLM_CALLS,
        TIME,
        WORKER,
        DUPLICATE_OF,
        EVALUATED,
        DETAILS,
        ERROR,
        TRACEBACK,
        CANDIDATE_ERROR,
        REPAIRS,
        RETRY_OF,
        KNOBS,
        PARENT_KNOBS,
        REGISTRY,
        PUBLISH,
        INTERRUPTED,
        *DATASET_KEYS,
    }
)


def value_key(path: str) -> str:
    """The attribute key holding a parameter value introduced by a trial."""
    return f"trace:value:{path}"


def llm_call_key(index: int, part: str) -> str:
    """The name of one text (``system``, ``user``, ``response``) of LLM call ``index``.

    Its own attribute in schema 1; since schema 2 an entry of ``trace:llm_calls``, which
    :func:`decode` reads under this name too. ``trace:artifacts`` names offloaded texts so.
    """
    return f"trace:llm:{index}:{part}"


def _llm_call_of(key: str) -> tuple[int, str] | None:
    """``(index, part)`` when ``key`` names an LLM call's text (see :func:`llm_call_key`)."""
    index, _, part = key.removeprefix("trace:llm:").partition(":")
    if key.startswith("trace:llm:") and index.isdigit() and part in LLM_PARTS:
        return int(index), part
    return None


def _chunk_key(key: str, index: int) -> str:
    return f"{key}:chunk:{index}"


def _chunks_key(key: str) -> str:
    return f"{key}:chunks"


def encode(key: str, value: Any) -> dict[str, Any]:
    """Turn one logical attribute into stored attributes, each at most ``MAX_ATTR_BYTES``.

    Args:
        key: The logical key.
        value: Any JSON value.

    Returns:
        ``{stored key: stored value}``; a single item unless the value had to be chunked.
    """
    if len(json.dumps(value)) <= MAX_ATTR_BYTES:
        return {key: value}
    kind = "str" if isinstance(value, str) else "json"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    parts = _split(text)
    stored: dict[str, Any] = {key: parts[0]}
    for index, part in enumerate(parts[1:], start=1):
        stored[_chunk_key(key, index)] = part
    stored[_chunks_key(key)] = {"count": len(parts), "kind": kind}
    return stored


def _split(text: str) -> list[str]:
    """Split text so that ``json.dumps`` of each part is at most ``MAX_ATTR_BYTES`` bytes.

    Optuna stores ``json.dumps(value)`` with ASCII escaping, so a non-ASCII character costs up
    to 12 bytes (a surrogate pair); the cut is found by measuring, not by counting characters.
    """
    parts = []
    start = 0
    while start < len(text):
        length = min(len(text) - start, MAX_ATTR_BYTES - 2)
        while True:
            size = len(json.dumps(text[start : start + length]))
            if size <= MAX_ATTR_BYTES:
                break
            length = max(1, length * (MAX_ATTR_BYTES - 2) // size - 1)
        parts.append(text[start : start + length])
        start += length
    return parts


def decode(attrs: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """Read one logical attribute back, joining chunks.

    ``trace:llm:<i>:<part>`` (:func:`llm_call_key`) is read from either schema's layout.

    Raises:
        RecordError: If chunks are missing (a write was interrupted) or do not parse.
    """
    if key not in attrs:
        call = _llm_call_of(key)
        if call is None or LLM_CALLS not in attrs:
            return default
        index, part = call
        calls = llm_calls(attrs)
        return calls[index][part] if index < len(calls) else default
    meta = attrs.get(_chunks_key(key))
    if meta is None:
        return attrs[key]
    try:
        count, kind = int(meta["count"]), meta["kind"]
        text = attrs[key] + "".join(attrs[_chunk_key(key, i)] for i in range(1, count))
        return text if kind == "str" else json.loads(text)
    except (KeyError, TypeError, ValueError) as error:
        raise RecordError(
            f"Attribute {key!r} is chunked but its chunks are broken: {error!r}"
        ) from None


def llm_calls(attrs: Mapping[str, Any]) -> list[dict[str, str]]:
    """Each LLM call's ``{system, user, response}`` texts of a trial record, in call order.

    Raises:
        RecordError: If ``trace:llm_calls`` is chunked and its chunks are broken.
    """
    if LLM_CALLS in attrs:
        stored = decode(attrs, LLM_CALLS) or []
        return [{part: str(call.get(part) or "") for part in LLM_PARTS} for call in stored]
    summary = attrs.get(LLM) or {}
    return [  # schema 1: one attribute per text
        {part: decode(attrs, llm_call_key(index, part), "") for part in LLM_PARTS}
        for index in range(int(summary.get("calls", 0)))
        if llm_call_key(index, "response") in attrs
    ]


def llm_usage(model: str, calls: Sequence[LLMCall], agent: bool = False) -> dict[str, Any]:
    """A model's calls in a trial: ``{trace:llm: summary, trace:llm_calls: texts}``, or with
    ``agent`` the agent's own model's (``trace:agent_llm``, ``trace:agent_llm_calls``)."""
    cost = [call.cost_usd for call in calls if call.cost_usd is not None]
    summary = {
        "model": model,
        "calls": len(calls),
        "prompt_tokens": sum(call.prompt_tokens for call in calls),
        "completion_tokens": sum(call.completion_tokens for call in calls),
        "cost_usd": round(sum(cost), 8) if cost else None,
        "latency_s": round(sum(call.latency_s for call in calls), 6),
    }
    # All calls' texts in one attribute (schema 2): Optuna reads a study one attribute row
    # at a time, and a joining worker reads every trial's.
    texts = []
    for call in calls:
        system = [m.get("content") for m in call.messages if m.get("role") == "system"]
        user = [m.get("content") for m in call.messages if m.get("role") != "system"]
        response = call.response if call.error is None else f"[error] {call.error}"
        texts.append(
            {"system": _joined(system), "user": _joined(user), "response": response or ""}
        )
    if agent:
        return {AGENT_LLM: summary, AGENT_LLM_CALLS: texts or None}
    return {LLM: summary, LLM_CALLS: texts or None}


def _joined(contents: list[Any]) -> str:
    """Messages' contents as one text (a content that is not text, e.g. parts, as JSON)."""
    return "\n\n".join(
        content if isinstance(content, str) else json.dumps(content, default=str)
        for content in contents
    )


def usage_total(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """What a trial's LLM calls add up to, the optimizer's and the agent's own:
    ``{calls, tokens, cost_usd}`` (``cost_usd`` None when no call had a known price)."""
    calls = tokens = 0
    costs = []
    for key in (LLM, AGENT_LLM):
        summary = attrs.get(key)
        if not isinstance(summary, dict):
            continue
        calls += int(summary.get("calls") or 0)
        tokens += int(summary.get("prompt_tokens") or 0) + int(
            summary.get("completion_tokens") or 0
        )
        cost = summary.get("cost_usd")
        if isinstance(cost, (int, float)) and not isinstance(cost, bool):
            costs.append(float(cost))
    return {"calls": calls, "tokens": tokens, "cost_usd": sum(costs) if costs else None}


def write(set_attr: Any, values: Mapping[str, Any]) -> None:
    """Store logical attributes through ``set_attr(key, value)`` (e.g. ``trial.set_user_attr``).

    The key itself is written last, after its chunks and their marker: a reader that sees the
    key sees the whole value (and :func:`decode` ignores a marker whose key is not written).
    """
    for stored_key, stored_value in stored_form(values).items():
        set_attr(stored_key, stored_value)


def stored_form(values: Mapping[str, Any]) -> dict[str, Any]:
    """The stored attributes of logical ``values``, in writing order: each key after its
    chunks and their marker."""
    stored: dict[str, Any] = {}
    for key, value in values.items():
        stored.update(reversed(list(encode(key, value).items())))
    return stored


def write_trial(
    trial: Any, record: Mapping[str, Any], study_system_attrs: Mapping[str, Any] | None = None
) -> None:
    """Write a running trial's record in one write: every logical attribute that is not None,
    chunked, and ``study_system_attrs`` (e.g. its dashboard note) with it.

    One transaction on RDB storages, one round trip on Redis
    (:func:`trace_optuna.attribute_writes.write_attrs`); each key is stored after its chunks.

    Args:
        trial: The running ``optuna.Trial``.
        record: ``{logical key: value}``.
        study_system_attrs: ``{key: value}`` for the trial's study, or None.
    """
    from trace_optuna.attribute_writes import write_attrs  # imports storage, which imports us

    present = {key: value for key, value in record.items() if value is not None}
    write_attrs(trial, stored_form(present), study_system_attrs=study_system_attrs or None)


@dataclasses.dataclass(frozen=True)
class TrialRecord:
    """What one trial holds, decoded. ``study.record(number)`` returns this.

    Attributes:
        number: The trial number.
        state: The Optuna state name (``COMPLETE``, ``FAIL``, ``RUNNING``...).
        value: The trial's value (the candidate's score); None when it has none, or has
            several (a multi-objective study: see ``values``).
        values: The trial's values, one per direction (``[value]`` in a single-objective
            study), or None.
        strategy: What produced the candidate (``baseline``, ``optoprime``...).
        parents: Parent trial numbers.
        snapshot: The full candidate snapshot ``{path: value}`` (values another trial
            introduced are resolved through the study).
        changed: Paths whose value differs from the first parent.
        diff: Unified diff against the first parent.
        feedback: The candidate's feedback.
        parent_score: The parent's score.
        parent_feedback: The feedback that drove the step.
        improvement: Score minus parent score.
        llm: Usage summary (model, calls, tokens, cost, latency).
        llm_calls: Each call's ``system``, ``user`` and ``response`` text.
        agent_llm: The agent's own model's usage summary (``Config.agent_llm``); empty when
            the study has none.
        agent_llm_calls: Each of the agent's calls' texts, as ``llm_calls``.
        time: Wall times of evaluation and LLM.
        worker: Host and pid of the process that ran the trial.
        duplicate_of: The trial whose score was reused because it evaluated the same candidate.
        evaluated: Every candidate the strategy evaluated during the trial.
        details: ``Evaluation.details`` of the candidate.
        error: Why the trial failed, or why the candidate failed.
        traceback: The traceback of that error.
        candidate_error: Why the candidate failed (its code or ``evaluate`` raised on it),
            when the study remembers it: that candidate is never evaluated again.
        repairs: How many repair steps the trial took from candidates whose code raised.
        params: The trial's Optuna parameters.
        knobs: The params ``evaluate(agent, trial)`` suggested (the agent's own knobs).
        parent_knobs: ``{parent number: {param: value}}``, the knob values each parent
            re-run for its feedback used (the parent's own).
        dataset: A dataset study's step (``trainset=``): ``{minibatch, minibatch_scores,
            minibatch_feedback, minibatch_score, parent_minibatch_score, accepted, validated,
            validation}`` as stored under their ``trace:`` keys; empty for other studies.
        schema: The record's layout version.
    """

    number: int
    state: str
    value: float | None
    values: list[float] | None
    strategy: str | None
    parents: list[int]
    snapshot: dict[str, Any]
    changed: list[str]
    diff: str
    feedback: str | None
    parent_score: float | None
    parent_feedback: str | None
    improvement: float | None
    llm: dict[str, Any]
    llm_calls: list[dict[str, str]]
    agent_llm: dict[str, Any]
    agent_llm_calls: list[dict[str, str]]
    time: dict[str, float]
    worker: dict[str, Any]
    duplicate_of: int | None
    evaluated: list[dict[str, Any]]
    details: dict[str, Any] | None
    error: str | None
    traceback: str | None
    candidate_error: str | None
    repairs: int
    params: dict[str, Any]
    knobs: dict[str, Any]
    parent_knobs: dict[int, dict[str, Any]]
    schema: int
    dataset: dict[str, Any] = dataclasses.field(default_factory=dict)


def check_schema(attrs: Mapping[str, Any], owner: str) -> int:
    """Return the schema version of a record, refusing ones newer than this library knows."""
    schema = attrs.get(SCHEMA, SCHEMA_VERSION)
    if not isinstance(schema, int) or schema > SCHEMA_VERSION:
        raise RecordError(
            f"{owner} was written with record schema {schema!r}; this trace_optuna reads up "
            f"to schema {SCHEMA_VERSION}. Upgrade trace_optuna to read it."
        )
    return schema


def snapshot_refs(trial: FrozenTrial) -> dict[str, tuple[str, int]]:
    """``{path: (value hash, trial number holding the value)}`` of a finished trial."""
    refs = trial.user_attrs.get(SNAPSHOT) or {}
    return {path: (ref[0], int(ref[1])) for path, ref in refs.items()}


def read_value(trial: FrozenTrial, path: str, expected_hash: str) -> Any:
    """Read the value a trial introduced for ``path``, checking its content hash.

    Raises:
        RecordError: If the value is missing or does not match its hash (corrupt storage).
    """
    key = value_key(path)
    if key not in trial.user_attrs:
        raise RecordError(
            f"Trial#{trial.number} should hold the value of {path!r} but has no {key!r} "
            "attribute; the study's records are incomplete."
        )
    value = decode(trial.user_attrs, key)
    if value_hash(value) != expected_hash:
        raise RecordError(
            f"Trial#{trial.number}'s value of {path!r} does not match its hash "
            f"{expected_hash}; the stored record is corrupt."
        )
    return value


def build_record(trial: FrozenTrial, snapshot: dict[str, Any]) -> TrialRecord:
    """Decode a frozen trial into a :class:`TrialRecord` (``snapshot`` resolved by the caller).

    Raises:
        RecordError: If the trial holds no ``trace:`` attribute (trace_optuna did not write
            it), or was written with a newer record schema.
    """
    attrs = trial.user_attrs
    if not any(key.startswith(PREFIX) for key in attrs):
        # A trace_optuna trial writes trace:worker first of all, so a trial without any
        # trace: attribute is a plain Optuna trial (or one whose step has not started yet).
        raise RecordError(
            f"Trial#{trial.number} ({trial.state.name}) holds no trace_optuna record: it was "
            "not written by trace_optuna (a plain Optuna trial, e.g. of study.optuna.optimize "
            "or of a study created without trace_optuna), so it has no snapshot, feedback or "
            "LLM calls to read."
        )
    schema = check_schema(attrs, f"Trial#{trial.number}")
    summary = attrs.get(LLM) or {}
    calls = llm_calls(attrs)
    return TrialRecord(
        number=trial.number,
        state=trial.state.name,
        value=trial.value if trial.values is not None and len(trial.values) == 1 else None,
        values=None if trial.values is None else list(trial.values),
        strategy=attrs.get(STRATEGY),
        parents=list(attrs.get(PARENTS) or []),
        snapshot=snapshot,
        changed=list(attrs.get(CHANGED) or []),
        diff=decode(attrs, DIFF, ""),
        feedback=decode(attrs, FEEDBACK),
        parent_score=attrs.get(PARENT_SCORE),
        parent_feedback=decode(attrs, PARENT_FEEDBACK),
        improvement=attrs.get(IMPROVEMENT),
        llm=dict(summary),
        llm_calls=calls,
        agent_llm=dict(attrs.get(AGENT_LLM) or {}),
        agent_llm_calls=[
            {part: str(call.get(part) or "") for part in LLM_PARTS}
            for call in decode(attrs, AGENT_LLM_CALLS) or []
        ],
        time=dict(attrs.get(TIME) or {}),
        worker=dict(attrs.get(WORKER) or {}),
        duplicate_of=attrs.get(DUPLICATE_OF),
        evaluated=list(decode(attrs, EVALUATED) or []),
        details=decode(attrs, DETAILS),
        error=decode(attrs, ERROR),
        traceback=decode(attrs, TRACEBACK),
        candidate_error=decode(attrs, CANDIDATE_ERROR),
        repairs=int(attrs.get(REPAIRS) or 0),
        params=dict(trial.params),
        knobs=dict(decode(attrs, KNOBS) or {}),
        parent_knobs={
            int(number): dict(knobs)
            for number, knobs in (decode(attrs, PARENT_KNOBS) or {}).items()
        },
        dataset={
            key.removeprefix(PREFIX): decode(attrs, key) for key in DATASET_KEYS if key in attrs
        },
        schema=schema,
    )
