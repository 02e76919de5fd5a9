"""Counting a cell: parameters per weight and per gate, convs, and multiply-accumulates.

These functions read only a `CellGraph`, so `cellgen compile --emit summary` and a diff of
two cells count the same way. Gates are found from the graph, not from the spec text: a
weight belongs to the first named value (an equation's left side) its result flows into.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Optional, Sequence

from cellgen.errors import CellgenError
from cellgen.ir.graph import CellGraph


@dataclass(frozen=True)
class WeightRow:
    """One learnable tensor as the summary table shows it."""

    symbol: str
    kind: str  # "conv" | "bias" | "elementwise"
    shape: tuple[int, ...]
    parameters: int
    gate: Optional[str]  # the equation its value feeds first (`i`, `c'`), None if it feeds none
    macs: int = 0  # multiply-accumulates per step and batch element, at the size asked for


def weight_gate(graph: CellGraph, symbol: str) -> Optional[str]:
    """The name of the first equation the weight's conv (or bias) feeds.

    A breadth-first walk over users from the weight node: the nearest node with a `name`
    is the value of the equation that the weight is part of. Ties (a weight shared by two
    equations at the same distance) go to the node created first, i.e. the earlier equation.
    """
    start = graph.weight_node(symbol)
    seen, queue = {start}, deque(_by_creation(graph.users(start)))
    while queue:
        node = queue.popleft()
        if graph[node].get("name"):
            return graph[node]["name"]
        for user in _by_creation(graph.users(node)):
            if user not in seen:
                seen.add(user)
                queue.append(user)
    return None


def conv_count(graph: CellGraph) -> int:
    """How many conv ops one step runs (fewer after fusion than in the spec)."""
    return graph.count("conv")


def conv_macs(graph: CellGraph, spatial: Sequence[int]) -> dict[str, int]:
    """Conv node → its multiply-accumulates per step and batch element.

    A conv with "same" padding and stride 1 keeps the input's size, so it costs
    out · in · prod(kernel) · prod(spatial). Channels are read off the graph (the conv's own
    and its input's), so this holds for fused convs of an optimised graph too.
    """
    spatial = _check_spatial(graph, spatial)
    macs = {}
    for node in graph.ops("conv"):
        data = graph[node]
        source = graph.operands(node)[0]
        macs[node] = data["channels"] * graph[source]["channels"] * math.prod(data["kernel"]) * math.prod(spatial)
    return macs


def macs_per_step(graph: CellGraph, spatial: Sequence[int]) -> int:
    """Conv multiply-accumulates of one step for one batch element at input size `spatial`.

    Elementwise ops are not counted: next to the convs they are noise, and a MAC count is
    what papers compare.
    """
    return sum(conv_macs(graph, spatial).values())


def weight_table(graph: CellGraph, spatial: Optional[Sequence[int]] = None) -> list[WeightRow]:
    """Every weight symbol with its kind, shape, parameter count and gate, in spec order.

    With `spatial`, each conv weight also carries the MACs of the convs that use it (a
    shared weight counts once per use).
    """
    macs_by_symbol: dict[str, int] = {}
    if spatial is not None:
        for node, macs in conv_macs(graph, spatial).items():
            symbol = graph[graph.operands(node)[1]].get("name")
            macs_by_symbol[symbol] = macs_by_symbol.get(symbol, 0) + macs
    return [WeightRow(symbol, info.kind, tuple(info.shape), math.prod(info.shape), weight_gate(graph, symbol),
                      macs_by_symbol.get(symbol, 0))
            for symbol, info in graph.weights.items()]


def parameter_count(graph: CellGraph) -> int:
    """Learnable scalars of the cell: what `sum(p.numel() for p in cell.parameters())` gives."""
    return sum(math.prod(info.shape) for info in graph.weights.values())


def _check_spatial(graph: CellGraph, spatial: Sequence[int]) -> tuple[int, ...]:
    """A size with one positive entry per spatial dim of the cell (H W, or T H W for 3D)."""
    spatial = tuple(spatial)
    if len(spatial) != graph.spatial_dims or any(size < 1 for size in spatial):
        want = "H W" if graph.spatial_dims == 2 else "T H W"
        raise CellgenError(f"{graph.name} is a {graph.spatial_dims}D cell: its input size is {want} "
                           f"(positive whole numbers), not {' '.join(map(str, spatial)) or 'nothing'}")
    return spatial


def _by_creation(nodes: list[str]) -> list[str]:
    return sorted(nodes, key=lambda node: int(node[1:]))
