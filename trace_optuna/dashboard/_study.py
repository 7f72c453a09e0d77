"""What ``create_study``/``load_study`` do for optuna-dashboard: the artifact store, the
figure interval, and the study's description in its user attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
import inspect
from typing import TYPE_CHECKING
from typing import Any

import optuna

from trace_optuna import records
from trace_optuna.dashboard._artifacts import _artifact_directory
from trace_optuna.dashboard._human import HumanFeedback

if TYPE_CHECKING:
    from optuna.artifacts._protocol import ArtifactStore


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
