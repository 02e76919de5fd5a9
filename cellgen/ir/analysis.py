"""The analysis: layout facts of every value of a step, computed once and written on the nodes
(as torch.fx's ShapeProp records each node's tensor metadata).

    analyze(graph)                 every node gets `facts` (cellgen.ir.ops.Facts):
        map       a value of the step (made from an input, a state or a history), not a weight
                  or a number
        stacked   a stack of maps, (B, N, C, …): a history `c[t-τ:t-1]`, `stack(h, c)`, and what
                  is computed from one (a map meeting a stack is broadcast over it)
        length    a stack's length (`Length`)
        extent    a map's size along T, H, W relative to the first input's (`Extent`)

Each op's rules come from the registry (`OpDef.stack`, `OpDef.extent`); channels are on the
nodes already (lowering infers them, passes keep them). Validation (cellgen/ir/layout.py),
stats, the cost model, codegen and diff read these facts; nothing else propagates them.

The lowering analyses the graph it builds; `optimize` analyses the nodes the passes made
(the others keep theirs: every rewrite is exact), so the facts always describe the graph
that is compiled. `ensure_analyzed` serves a consumer handed a graph from elsewhere (a
test's hand-built graph, a pass run alone).
"""
from __future__ import annotations

from fractions import Fraction
from typing import Optional

from cellgen.ir.graph import CellGraph
from cellgen.ir.ops import KEPT, OPS, Facts

# The axes `over=` / `along=` may name: the stack axis, channels, and the map's own axes.
AXES = ("stack", "C", "T", "H", "W")
_NOT_A_MAP = Facts(map=False)


def analyze(graph: CellGraph, order: Optional[list[str]] = None, *, keep: bool = False) -> CellGraph:
    """Write `facts` on every node of `graph` (in place; returns it). `order`: the graph's
    topological order, when the caller has it already. `keep=True`, for a graph the passes
    rewrote: a node that has facts keeps them, and only the nodes the passes made are analysed
    (every rewrite is exact, so a value it leaves in place has the facts it had)."""
    axes = ("T", "H", "W")[3 - graph.spatial_dims:]
    windows = [graph.input_windows.get(name) for name in graph.inputs]
    first = windows[0] if windows and windows[0] else None
    nodes = graph.nx.nodes
    for node in order if order is not None else graph.order():
        data = nodes[node]
        if keep and "facts" in data:
            continue
        kind = data["kind"]
        if kind in ("input", "state", "history"):
            extent = {axis: Fraction(1) for axis in axes}
            window = graph.input_windows.get(data.get("name")) if kind == "input" else None
            if "T" in extent and window and first:
                extent["T"] = Fraction(window, first)
            history = kind == "history"
            # a history that starts full (an input's, a state's `init zeros`) always holds `size`
            length = (data["size"] if data.get("full") else ("history", data["size"])) if history else None
            data["facts"] = Facts(True, history, length, extent)
        elif kind == "op":
            data["facts"] = _op_facts(data, [nodes[o]["facts"] for o in graph.operands(node)])
        else:
            data["facts"] = _NOT_A_MAP
    return graph


def _op_facts(data: dict, operands: list[Facts]) -> Facts:
    maps = [o for o in operands if o.map]
    if not maps:
        return _NOT_A_MAP  # computed from weights and numbers alone (a fused weight, a bias's view)
    definition = OPS[data["op"]]
    length = definition.stack(data, operands)
    return Facts(True, length is not None, length, definition.extent(data, maps))


def ensure_analyzed(graph: CellGraph) -> CellGraph:
    """`graph` with facts on every node: analysed again only when a node lacks them."""
    nodes = graph.nx.nodes
    if not all("facts" in nodes[n] for n in graph.nx):
        analyze(graph)
    return graph


def facts(graph: CellGraph, node: str) -> Facts:
    return graph[node]["facts"]


def axis_dim(axis: str, stacked: bool, spatial_dims: int) -> int:
    """The tensor dimension of a named axis, counted from the end for the map's own axes so
    that it holds for maps and stacks alike."""
    if axis == "stack":
        return 1
    if axis == "C":
        return 2 if stacked else 1
    return {"W": -1, "H": -2, "T": -3}[axis]


def absolute_size(graph: CellGraph, node: str, spatial: tuple[int, ...], history: int = 1
                  ) -> Optional[tuple[int, tuple[int, ...]]]:
    """(entries, spatial size) of a map at input size `spatial`: a stack's entries (an unbounded
    history counted at `history` past values), and each axis scaled by its extent (an axis a
    reduction kept counts as 1). None for a weight or a number."""
    f = graph[node]["facts"]
    if not f.map:
        return None
    entries = 1
    if f.stacked:
        entries = f.length if isinstance(f.length, int) else (f.length[1] if f.length[1] is not None else history)
    axes = ("T", "H", "W")[3 - len(spatial):]
    sizes = tuple(1 if f.extent.get(a) is KEPT else int(n * f.extent[a])
                  for a, n in zip(axes, spatial))
    return entries, sizes
