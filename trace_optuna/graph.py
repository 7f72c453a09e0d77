"""Trace's global node registry, released between trials without reusing names.

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
"""

from __future__ import annotations

from typing import Any
from typing import SupportsIndex

from opto.trace.nodes import GRAPH

__all__ = ["registered_nodes", "release"]


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
    still references stay alive and keep their names; new nodes get new names.

    Returns:
        How many registry references were dropped.
    """
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
