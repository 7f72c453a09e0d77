"""Trace parameters <-> JSON, keyed by stable paths in the agent.

A *snapshot* is ``{path: value}`` for every trainable parameter of an agent. Paths are attribute
paths (``instructions``, ``tools.0.prompt``, ``reply`` for a trainable method's code), never Trace
node names: those come from a process-wide counter and differ between processes.

An agent is one of:

* a ``@trace.model`` instance or a ``trace.Module`` (parameters found through its attributes),
* a dict ``{name: ParameterNode | trainable bundled function | Module | list | dict}``.

Values are read with ``node._data`` (no use recorded in the graph) and written with
``node._set(value)``; they must be JSON values (str, int, float, bool, None, lists and dicts with
str keys), because snapshots are stored as JSON in a shared database and never pickled.
"""

from __future__ import annotations

from collections import UserDict
from collections import UserList
from collections.abc import Iterator
from collections.abc import Mapping
import difflib
import hashlib
import json
import math
from typing import Any

from opto.trace.bundle import FunModule
from opto.trace.containers import ParameterContainer
from opto.trace.nodes import ParameterNode

from trace_optuna.exceptions import SnapshotError

Snapshot = dict[str, Any]

_MAX_PATH_LENGTH = 200


def parameters(agent: Any) -> dict[str, ParameterNode]:
    """Find the trainable parameters of an agent, keyed by stable attribute path.

    Args:
        agent: A ``@trace.model`` instance, a ``trace.Module``, or a dict of parameters.

    Returns:
        ``{path: ParameterNode}`` in a deterministic (sorted) order.

    Raises:
        SnapshotError: If the agent holds no trainable parameter, or a path is too long.

    Example:
        >>> from opto import trace
        >>> sorted(parameters({"prompt": trace.node("Hi", trainable=True)}))
        ['prompt']
    """
    found: dict[str, ParameterNode] = {}
    seen: set[int] = set()
    for path, node in _walk(agent, "", seen):
        if node.trainable and path not in found:
            _declared_kind(node)  # remembered at first sight: what restore() checks against
            if len(path) > _MAX_PATH_LENGTH:
                raise SnapshotError(
                    f"Parameter path {path[:60]!r}... is {len(path)} characters long; paths are "
                    f"stored as attribute keys and must be at most {_MAX_PATH_LENGTH}."
                )
            found[path] = node
    if not found:
        raise SnapshotError(
            f"The agent ({type(agent).__name__}) has no trainable parameter. Give it "
            "trace.node(..., trainable=True) attributes or @trace.bundle(trainable=True) methods."
        )
    return dict(sorted(found.items()))


def _walk(obj: Any, prefix: str, seen: set[int]) -> Iterator[tuple[str, ParameterNode]]:
    if id(obj) in seen:
        return
    if isinstance(obj, ParameterNode):
        yield prefix, obj
        return
    if isinstance(obj, FunModule):
        if obj.parameter is not None:
            yield prefix, obj.parameter
        return
    seen.add(id(obj))
    if isinstance(obj, (Mapping, UserDict)):
        for key, value in obj.items():
            yield from _walk(value, _join(prefix, str(key)), seen)
    elif isinstance(obj, (list, tuple, UserList)):
        for index, value in enumerate(obj):
            yield from _walk(value, _join(prefix, str(index)), seen)
    elif isinstance(obj, ParameterContainer):
        # parameters_dict() resolves trainable methods to their per-instance code parameter.
        for name, value in obj.parameters_dict().items():
            yield from _walk(value, _join(prefix, name), seen)
        # Plain lists and dicts of parameters are invisible to parameters_dict().
        for name, value in sorted(vars(obj).items()):
            if not name.startswith("_") and isinstance(value, (list, tuple, Mapping)):
                yield from _walk(value, _join(prefix, name), seen)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def snapshot(agent: Any) -> Snapshot:
    """Read every trainable parameter's current value.

    Args:
        agent: An agent as accepted by :func:`parameters`.

    Returns:
        ``{path: value}``, JSON-able, sorted by path.

    Raises:
        SnapshotError: If a value is not a JSON value; the error names the parameter path.

    Example:
        >>> from opto import trace
        >>> snapshot({"prompt": trace.node("Hi", trainable=True)})
        {'prompt': 'Hi'}
    """
    values = {path: node._data for path, node in parameters(agent).items()}
    for path, value in values.items():
        check_json_value(path, value)
    return values


def restore(agent: Any, values: Mapping[str, Any]) -> None:
    """Write a snapshot's values into an agent's parameters, in place.

    Every trainable parameter of the agent must have a value in ``values``, every value must
    belong to a parameter, and every value must be of the kind its parameter held when
    trace_optuna first saw it (a study's agent: when it was built): a str for a str (a
    trainable method's code is its source, a str), an int for an int, an int or a float for a
    float (stored as a float), a bool for a bool, a list for a list, a dict for a dict. None
    fits any parameter, and a parameter first seen holding None takes any value. So a snapshot
    of another agent, or a hand-edited one with a wrong type, is refused instead of applied
    halfway: on any error no parameter has changed.

    Args:
        agent: An agent as accepted by :func:`parameters`.
        values: A snapshot, as returned by :func:`snapshot` or ``TraceStudy.best_snapshot``.

    Raises:
        SnapshotError: If ``values`` is not a mapping, the paths do not match the agent's, a
            value is not JSON, or a value's type does not fit its parameter (the error names
            the path, the type the parameter holds and the type given).

    Example:
        >>> from opto import trace
        >>> agent = {"prompt": trace.node("Hi", trainable=True)}
        >>> restore(agent, {"prompt": "Hello"})
        >>> try:
        ...     restore(agent, {"prompt": 5})
        ... except SnapshotError as error:
        ...     print(error)  # doctest: +NORMALIZE_WHITESPACE
        Cannot restore this snapshot: 'prompt' holds a str and the snapshot gives an int (5).
        Was it edited by hand, or taken of another agent?
    """
    if not isinstance(values, Mapping):
        raise SnapshotError(
            "A snapshot must be a mapping {parameter path: value} (see trace_optuna.snapshot); "
            f"got {type(values).__name__}."
        )
    nodes = parameters(agent)
    missing = sorted(set(nodes) - set(values))
    unknown = sorted(set(values) - set(nodes), key=str)
    if missing or unknown:
        raise SnapshotError(
            "The snapshot does not fit this agent: "
            + "; ".join(
                part
                for part in (
                    f"missing values for {missing}" if missing else "",
                    f"no parameter at {unknown}" if unknown else "",
                )
                if part
            )
            + ". Was the study created with a different agent?"
        )
    for path, value in values.items():
        check_json_value(path, value)
    problems = [
        problem
        for path, node in nodes.items()
        if (problem := _kind_problem(path, node, values[path])) is not None
    ]
    if problems:
        raise SnapshotError(
            "Cannot restore this snapshot: "
            + "; ".join(problems)
            + ". Was it edited by hand, or taken of another agent?"
        )
    for path, node in nodes.items():
        value = values[path]
        if _declared_kind(node) is float and type(value) is int:
            value = float(value)  # a float parameter stays a float
        node._set(value)


# The JSON kind of value a parameter held when trace_optuna first saw it (when the agent was
# built, for a study's agent). restore() checks against it rather than against the current
# value: a parameter built holding None takes any value, and keeps taking any value after a
# restore has put, say, a list in it.
_DECLARED_KIND = "_trace_optuna_declared_kind"
_KINDS: tuple[type, ...] = (bool, int, float, str, list, dict)  # bool before int: a subclass


def _kind(value: Any) -> type | None:
    return next((kind for kind in _KINDS if isinstance(value, kind)), None)


def _declared_kind(node: ParameterNode) -> type | None:
    if _DECLARED_KIND not in vars(node):
        setattr(node, _DECLARED_KIND, _kind(node._data))
    return vars(node)[_DECLARED_KIND]


def _kind_problem(path: str, node: ParameterNode, value: Any) -> str | None:
    """Why ``value`` may not be restored into ``node``, or None when it may."""
    declared, given = _declared_kind(node), _kind(value)
    if declared is None or value is None or given is declared:
        return None
    if declared is float and given is int:
        return None
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    holds = _a(declared)
    if node.name.split(":")[0] == "__code":  # a trainable method: its source code
        holds = "a str (the method's source code)"
    return f"{path!r} holds {holds} and the snapshot gives {_a(type(value))} ({shown})"


def _a(kind: type) -> str:
    name = kind.__name__
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


def check_json_value(path: str, value: Any) -> None:
    """Raise ``SnapshotError`` naming ``path`` unless ``value`` is a plain JSON value."""
    problem = _json_problem(value)
    if problem is not None:
        raise SnapshotError(
            f"Parameter {path!r} holds {problem}; only JSON values (str, int, float, bool, "
            "None, list, dict with str keys) can be stored."
        )


def _json_problem(value: Any) -> str | None:
    if value is None or isinstance(value, (str, bool, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"the non-finite float {value!r}"
    if isinstance(value, list):
        for item in value:
            problem = _json_problem(item)
            if problem is not None:
                return problem
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"a dict with a {type(key).__name__} key {key!r}"
            problem = _json_problem(item)
            if problem is not None:
                return problem
        return None
    return f"a value of type {type(value).__name__}"


def canonical_json(value: Any) -> str:
    """The one JSON text of a value that hashing and storing agree on."""
    return json.dumps(value, sort_keys=True, ensure_ascii=True, separators=(",", ":"))


def value_hash(value: Any) -> str:
    """A short content hash of a JSON value (16 hex digits of SHA-256)."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:16]


def snapshot_hash(values: Mapping[str, Any]) -> str:
    """A content hash of a whole snapshot; equal snapshots hash equally."""
    return value_hash(dict(values))


def changed_paths(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The paths whose value differs between two snapshots of the same agent."""
    return sorted(
        path
        for path in set(old) | set(new)
        if canonical_json(old.get(path)) != canonical_json(new.get(path))
    )


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """A unified diff of every changed parameter, readable as plain text.

    Strings (prompts, code) are diffed line by line; other values by their JSON text.

    Example:
        >>> print(diff({"n": 1}, {"n": 2}))
        --- n (parent)
        +++ n (candidate)
        @@ -1 +1 @@
        -1
        +2
    """
    blocks = []
    for path in changed_paths(old, new):
        before = _as_text(old.get(path)).splitlines()
        after = _as_text(new.get(path)).splitlines()
        lines = difflib.unified_diff(
            before, after, f"{path} (parent)", f"{path} (candidate)", lineterm=""
        )
        blocks.append("\n".join(lines))
    return "\n".join(blocks)


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
