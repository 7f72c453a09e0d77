"""Long LLM texts in the study's artifact store: which store, offloading a trial's long
prompts and responses, and reading them back.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
import tempfile
from typing import TYPE_CHECKING
from typing import Any

import optuna

from trace_optuna import records
from trace_optuna.exceptions import ConfigurationError

if TYPE_CHECKING:
    from optuna.artifacts._protocol import ArtifactStore
    from optuna.trial import FrozenTrial

_logger = logging.getLogger(__name__)

LONG_TEXT_CHARS = 2_000
"""LLM prompts and responses longer than this go to the artifact store, when there is one."""
HEAD_CHARS = 500
"""How much of an offloaded text its attribute keeps."""


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


def _artifact_directory(artifact_store: Any) -> str | None:
    if artifact_store is None:
        return None  # and optuna.artifacts (it imports boto3) stays unimported
    from optuna.artifacts import FileSystemArtifactStore

    if isinstance(artifact_store, FileSystemArtifactStore):
        # Optuna keeps the directory as ``_base_path``; it is the only way to name it.
        base = getattr(artifact_store, "_base_path", None)
        return str(base) if base is not None else None
    return None


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
