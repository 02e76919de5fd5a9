"""Weisfeiler-Lehman colour refinement on cell graphs: a node's colour summarises its neighbourhood.

Round 0 gives every node a seed colour (its kind and op, or an anchor shared with its partner
in the other graph). In each round a node's new colour is a hash of its old colour, the colours
of its operands and the colours of its users. Where the order of operands matters (`a - b`,
`W ⋆ x`, `[a, b]`) the port is part of the hash; for `+` and `⊙` it is not, so `a + b` and
`b + a` get the same colour. After enough rounds two nodes share a colour only if the whole
graph looks the same from both: that is what lets `cellgen diff` match a gate renamed in a copy.

Colours are hex digests (blake2b), so they agree between graphs, processes and runs.
"""
from __future__ import annotations

import hashlib
from typing import Hashable, Mapping, Sequence

from cellgen.ir.graph import CellGraph
from cellgen.ir.ops import COMMUTATIVE

_ANY_PORT = -1

Colours = dict[str, str]


def ordered(graph: CellGraph, user: str) -> bool:
    """Whether the operands of `user` are told apart by position."""
    data = graph[user]
    return not (data["kind"] == "op" and data.get("op") in COMMUTATIVE)


def refine(graphs: Sequence[tuple[CellGraph, Mapping[str, Hashable]]], max_rounds: int | None = None
           ) -> list[list[Colours]]:
    """Colour refinement of several graphs together, from their seeds to a stable partition.

    Returns, for each graph, its colours after round 0 (the seeds), 1, 2, …; every graph gets
    the same number of rounds. Refinement stops at the first round that splits no colour class
    of the joint partition (all graphs' nodes together), or after `max_rounds`.
    """
    history = [[{node: _digest(("seed", seeds[node])) for node in graph.nx}] for graph, seeds in graphs]
    classes = _class_count(history)
    limit = max_rounds if max_rounds is not None else max(1, sum(len(g.nx) for g, _ in graphs))
    for _ in range(limit):
        for (graph, _), rounds in zip(graphs, history):
            rounds.append(_round(graph, rounds[-1]))
        new_classes = _class_count(history)
        if new_classes == classes:
            for rounds in history:  # the last round split nothing: drop it
                rounds.pop()
            break
        classes = new_classes
    return history


def _round(graph: CellGraph, colour: Colours) -> Colours:
    result = {}
    for node in graph.nx:
        operands = sorted((port if ordered(graph, node) else _ANY_PORT, colour[source])
                          for source, _, port in graph.nx.in_edges(node, keys=True))
        users = sorted((port if ordered(graph, user) else _ANY_PORT, colour[user])
                       for _, user, port in graph.nx.out_edges(node, keys=True))
        result[node] = _digest((colour[node], operands, users))
    return result


def _class_count(history: list[list[Colours]]) -> int:
    return len({colour for rounds in history for colour in rounds[-1].values()})


def _digest(value) -> str:
    return hashlib.blake2b(repr(value).encode("utf-8"), digest_size=10).hexdigest()
