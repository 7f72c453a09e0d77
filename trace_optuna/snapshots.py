"""Trace parameters <-> JSON, keyed by stable paths in the agent.

A *snapshot* is ``{path: value}`` for every trainable parameter of an agent. Paths are attribute
paths (``instructions``, ``tools.0.prompt``, ``reply`` for a trainable method's code), never Trace
node names: those come from a process-wide counter and differ between processes.

An agent is one of:

* a ``@trace.model`` instance or a ``trace.Module`` (parameters found through its attributes),
* a dict ``{name: ParameterNode | trainable bundled function | Module | list | dict}``.

Values are read with ``node._data`` (no use recorded in the graph) and written with
``node._set(value)``; they must be JSON values (str, int, float, bool, None, lists and dicts with
str keys), because snapshots are stored as JSON in a shared database and never pickled. NumPy's
scalars (``np.int64``, ``np.float32``, ``np.bool_``...) are taken as the Python number or bool
they hold.

A trainable function defined at module level (``@trace.bundle(trainable=True)`` on a ``def`` at
the top of a module, as in Trace's quick start) is one object shared by everyone who calls it,
and Trace runs a candidate by setting that object's code parameter. :func:`module_functions`
finds such functions in an agent, :func:`keep_module_functions` puts their code back when a run
of steps ends, and :func:`detach_module_functions` gives an agent private copies of them.
"""

from __future__ import annotations

from collections import UserDict
from collections import UserList
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
import copy
import difflib
import hashlib
import json
import math
import sys
from typing import Any

import numpy as np
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
    for path, node, _ in _walk(agent, "", seen):
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


def _walk(
    obj: Any, prefix: str, seen: set[int]
) -> Iterator[tuple[str, ParameterNode, FunModule | None]]:
    """``(path, parameter, the bundled function whose code it is, or None)`` of ``obj``."""
    if id(obj) in seen:
        return
    if isinstance(obj, ParameterNode):
        yield prefix, obj, None
        return
    if isinstance(obj, FunModule):
        if obj.parameter is not None:
            yield prefix, obj.parameter, obj
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
        functions = {
            id(value.parameter): value for value in vars(obj).values() if _is_function(value)
        }
        for name, value in obj.parameters_dict().items():
            if isinstance(value, ParameterNode) and id(value) in functions:
                value = functions[id(value)]  # an attribute holding a bundled function
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
    values = {path: plain(node._data) for path, node in parameters(agent).items()}
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
    values = {path: plain(value) for path, value in values.items()}
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
        setattr(node, _DECLARED_KIND, _kind(plain(node._data)))
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


def plain(value: Any) -> Any:
    """``value`` with NumPy's scalars (also inside lists and dicts) as Python's int, float, bool.

    Example:
        >>> import numpy as np
        >>> plain({"k": [np.int64(3), np.float32(0.5), np.bool_(True)]})
        {'k': [3, 0.5, True]}
    """
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value


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


def _is_function(value: Any) -> bool:
    return isinstance(value, FunModule) and value.parameter is not None


def _is_module_level(function: FunModule) -> bool:
    """Whether ``function`` is a global of the module that defined it (not a per-agent copy)."""
    module = sys.modules.get(getattr(function._fun, "__module__", None) or "")
    return module is not None and any(value is function for value in vars(module).values())


def module_functions(agent: Any) -> dict[str, FunModule]:
    """The trainable functions defined at module level that ``agent`` holds, by parameter path.

    Each is one object shared by the agent and by every caller of the module's function, so
    restoring a snapshot into the agent changes what the module's function runs.
    """
    found: dict[str, FunModule] = {}
    for path, node, function in _walk(agent, "", set()):
        if function is not None and node.trainable and _is_module_level(function):
            found.setdefault(path, function)
    return found


def keep_module_functions(agent: Any) -> Callable[[], None]:
    """Remember the code of ``agent``'s module-level trainable functions, to put it back later.

    Runs restore candidates into those functions (Trace runs a candidate through the function's
    code parameter, so code calling the module's function by name runs the candidate too).

    Returns:
        A function that puts the remembered code back into the module's functions.
    """
    kept = [(function, function.parameter._data) for function in module_functions(agent).values()]

    def put_back() -> None:
        for function, code in kept:
            function.parameter._set(code)

    return put_back


def detach_module_functions(agent: Any) -> Any:
    """``agent`` with each module-level trainable function replaced by a private copy.

    Restoring a snapshot into the result leaves the module's functions as they are; the copies
    run the restored code when called through the agent. Dicts and lists holding such a
    function are copied (the caller's stay as they were); a ``trace.Module`` gets the copy as
    its attribute.

    Example:
        >>> from opto import trace
        >>> agent = {"prompt": trace.node("Hi", trainable=True)}
        >>> detach_module_functions(agent) is agent  # nothing module-level: the same agent
        True
    """
    functions = module_functions(agent).values()
    if not functions:
        return agent
    copies = {id(function): _private_copy(function) for function in functions}
    return _replace_functions(agent, copies, set())


def _private_copy(function: FunModule) -> FunModule:
    # Trace copies a bundled method per instance with deepcopy; the dict of the defining
    # scope's names (a module's globals here, modules among them) is shared, not copied.
    return copy.deepcopy(function, {id(function._ldict): function._ldict})


def _replace_functions(obj: Any, copies: dict[int, FunModule], seen: set[int]) -> Any:
    if id(obj) in copies:
        return copies[id(obj)]
    if id(obj) in seen or isinstance(obj, (ParameterNode, FunModule)):
        return obj
    seen.add(id(obj))
    if type(obj) in (dict, list, tuple):
        items = obj.items() if isinstance(obj, dict) else enumerate(obj)
        replaced = {key: _replace_functions(value, copies, seen) for key, value in items}
        if all(replaced[key] is value for key, value in items):
            return obj
        return replaced if isinstance(obj, dict) else type(obj)(replaced.values())
    if isinstance(obj, (ParameterContainer, UserDict, UserList)):
        for name, value in list(vars(obj).items()):
            new = _replace_functions(value, copies, seen)
            if new is not value:
                setattr(obj, name, new)
    return obj


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
