"""Trace's global node registry, released between trials without reusing names; names made
distinct before a prompt.

Trace registers every node it creates in the process-wide ``opto.trace.nodes.GRAPH`` and keeps a
strong reference to it forever: a worker running thousands of steps would keep every node of
every run alive (100,000 operations left 300,000 nodes). Each node also links to its children,
so a parameter that lives on keeps every graph ever computed from it alive too.
``GRAPH.clear()`` frees the registry's share, but it also resets the per-name counters that make
node names unique (``x:0``, ``x:1``...), so a node created afterwards can take the name of a
parameter that is still alive, and OptoPrime, which keys its suggestions by those names, would
then hand both the same suggestion.

:func:`release` drops the registry's references and the child links made since the last
release (child lists, and feedback, which is keyed by the child that sent it: both per-step
state that Trace makes users zero by hand; backpropagation follows parent links only, and
nothing in trace-opt 0.1.3.8 reads child lists but ``Node.is_leaf``), and keeps the counters:
each name's list is replaced by one that remembers how many nodes it has seen. Nodes still
referenced elsewhere (the agent's parameters, the last run's graph that the next step
backpropagates through) stay alive with their names; the rest become garbage. Trace looks nodes
up in the registry only by name (``GRAPH.get("x:3")``), which nothing in trace-opt 0.1.3.8
calls; for a released node it raises a ``LookupError`` that says so.

A user's own ``GRAPH.clear()`` (Trace's loops call it every iteration, so evaluate functions
ported from them do) still restarts the counters, and nodes made in ``evaluate`` then take the
names of live parameters. :func:`distinct_names`, which ``SafeOptoPrime`` calls before it
builds a prompt, renames such nodes, so each node is shown under a name of its own and every
suggestion goes to the parameter it was made for.

Trace records which nodes an operator reads in one process-wide stack (``USED_NODES``), so in
trace-opt 0.1.3.8 agents run in a thread pool (as OpenTrace's trainer runs examples) read into
each other's records, and an operator fails with ``TraceMissingInputsError`` naming another
thread's nodes. :func:`release` replaces that stack with one kept per thread and per asyncio
task (a context variable, as later OpenTrace versions do); in a single thread it behaves as
Trace's.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Iterator
import contextvars
from typing import Any
from typing import SupportsIndex

from opto.trace import bundle as trace_bundle
from opto.trace import nodes as trace_nodes
from opto.trace.nodes import GRAPH
from opto.trace.nodes import Node

__all__ = ["distinct_names", "registered_nodes", "release"]


class _UsedNodes(list):  # type: ignore[type-arg]
    """Trace's ``USED_NODES`` stack, one per thread and asyncio task (a context variable).

    Trace only appends, pops, takes ``len()`` and reads ``[-1]``; a new thread starts empty.
    """

    def __init__(self, inherited: Iterable[Any]) -> None:
        super().__init__()
        self._stack: contextvars.ContextVar[tuple[Any, ...]] = contextvars.ContextVar(
            "trace_optuna_used_nodes", default=()
        )
        self._stack.set(tuple(inherited))

    def append(self, item: Any) -> None:
        self._stack.set((*self._stack.get(), item))

    def pop(self, index: SupportsIndex = -1) -> Any:
        stack = list(self._stack.get())
        item = stack.pop(index)
        self._stack.set(tuple(stack))
        return item

    def __len__(self) -> int:
        return len(self._stack.get())

    def __getitem__(self, index: Any) -> Any:
        return self._stack.get()[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._stack.get())


def _used_nodes_per_thread() -> None:
    """Put a :class:`_UsedNodes` in place of Trace's ``USED_NODES`` (once)."""
    if isinstance(trace_nodes.USED_NODES, _UsedNodes):
        return
    used_nodes = _UsedNodes(trace_nodes.USED_NODES)
    # nodes.py reads it as its own global, bundle.py as the name it imported.
    trace_nodes.USED_NODES = used_nodes
    trace_bundle.USED_NODES = used_nodes


class _ReleasedNames(list):  # type: ignore[type-arg]
    """The nodes registered under one name, minus the first ``released`` that were let go.

    ``len()`` counts the released ones too, so Trace's ``register`` (which names a new node by
    the length of this list) keeps numbering where it left off.
    """

    def __init__(self, released: int) -> None:
        super().__init__()
        self.released = released

    def __len__(self) -> int:
        return self.released + super().__len__()

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, SupportsIndex) and not isinstance(index, bool):
            position = index.__index__()
            if 0 <= position < self.released:
                raise LookupError(
                    f"Trace node #{position} of this name was released by trace_optuna after "
                    "its trial; keep a reference to a node to keep it."
                )
            if position >= self.released:
                return super().__getitem__(position - self.released)
        return super().__getitem__(index)


def release() -> int:
    """Drop Trace's registry references to every node, keeping the name counters.

    Call it between steps (trace_optuna's step does, after every trial). Nodes that the caller
    still references stay alive and keep their names; new nodes get new names. The first call
    also makes Trace's record of the nodes an operator reads one per thread (see the module's
    docstring).

    Returns:
        How many registry references were dropped.
    """
    _used_nodes_per_thread()
    dropped = 0
    for name, nodes in list(GRAPH._nodes.items()):
        held = list.__len__(nodes)
        if not held:
            continue
        for node in list.__iter__(nodes):
            # A node links to its children twice: in its child list and as the keys of the
            # feedback they sent it. A node that outlives its trials (a parameter, a model's
            # self node) would otherwise keep every graph ever computed from it alive. Every
            # child was registered when it was made, so clearing both on the nodes registered
            # since the last release and on their parents cuts all those links. Parent links,
            # which backpropagation follows, are left as they are.
            for linked in (node, *node.parents):
                linked._children = []
                linked.zero_feedback()
        GRAPH._nodes[name] = _ReleasedNames(len(nodes))
        dropped += held
    return dropped


def registered_nodes() -> int:
    """How many nodes Trace's registry holds references to now (for soak measurements)."""
    return sum(list.__len__(nodes) for nodes in GRAPH._nodes.values())


def distinct_names(parameters: Iterable[Node], nodes: Iterable[Node] = ()) -> dict[str, str]:
    """Rename nodes so that ``parameters``, ``nodes`` and all their ancestors have distinct names.

    OptoPrime shows each node of the graph under its name and maps the LLM's suggestions back
    to the parameters by name; two nodes of one name make it show one node's value under the
    other's name and write a suggestion meant for one into the other. Names repeat after
    ``GRAPH.clear()`` (which restarts Trace's counters, so nodes made afterwards take the names
    of live ones) and in copies of nodes (``copy.deepcopy`` copies the name). The parameters
    keep their names (the first of two equal ones does), so suggestions and OptoPrime's memory,
    which are keyed by them, stay valid; any other node that repeats a name gets the next
    free one (``str:0`` -> ``str:3``). Calling it again on the same nodes renames nothing.

    Args:
        parameters: The nodes whose names must not change unless two of them are equal.
        nodes: Further nodes (a run's output, say); they and their ancestors are renamed too.

    Returns:
        ``{new name: old name}`` for every node renamed.
    """
    ordered: list[Node] = []
    seen: set[int] = set()
    stack = list(nodes)[::-1]
    for node in parameters:
        if id(node) not in seen:
            seen.add(id(node))
            ordered.append(node)
    while stack:
        node = stack.pop()
        if id(node) not in seen:
            seen.add(id(node))
            ordered.append(node)
            stack.extend(reversed(node.parents))
    # OptoPrime shows the py_name (the name without its ':'), so that is what must be distinct:
    # "x1:0" and "x:10" are two names but one py_name.
    taken = {node.py_name for node in ordered}
    kept: set[str] = set()
    renamed = {}
    for node in ordered:
        if node.py_name not in kept:
            kept.add(node.py_name)
            continue
        base = node.name.rsplit(":", 1)[0]
        index = len(GRAPH._nodes.get(base, ()))  # where Trace would number the next one
        while f"{base}{index}".replace(":", "") in taken:
            index += 1
        renamed[f"{base}:{index}"] = node.name
        node._name = f"{base}:{index}"
        taken.add(node.py_name)
        kept.add(node.py_name)
    return renamed
