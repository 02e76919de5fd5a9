"""Which values are stacks, and the axes a spec may name.

A value of a step is a map, (B, C, H, W) or (B, C, T, H, W), or a *stack* of maps with one
more axis after the batch, (B, N, C, …): a state's history `c[t-τ:t-1]`, or `stack(h, c)`.
Elementwise ops broadcast a map against a stack (every entry of the stack meets the map);
convs and LayerNorms apply to each entry. Whether a value is a stack follows from the graph,
so it is computed here, not stored: a rewrite can never leave it stale.
"""
from __future__ import annotations

from cellgen.errors import TypeMismatchError
from cellgen.ir.graph import CellGraph

# The axes `over=` / `along=` may name: the stack axis, channels, and the map's own axes.
AXES = ("stack", "C", "T", "H", "W")

# Ops whose result is a stack only when one of their operands is: the rest say for themselves.
_MAKES_STACK = {"stack"}
_ENDS_STACK = {"unstack", "reduce_sum"}


def stacked_values(graph: CellGraph) -> set[str]:
    """The nodes whose values are stacks."""
    stacked: set[str] = set()
    for node in graph.order():
        data = graph[node]
        if data["kind"] == "history":
            stacked.add(node)
        elif data["kind"] == "op":
            op = data["op"]
            if op in _MAKES_STACK:
                stacked.add(node)
            elif op in _ENDS_STACK:
                continue
            elif op == "attention":
                if graph.operands(node)[0] in stacked:  # the result has the query's shape
                    stacked.add(node)
            elif any(o in stacked for o in graph.operands(node)):
                stacked.add(node)
    return stacked


def axis_dim(axis: str, stacked: bool, spatial_dims: int) -> int:
    """The tensor dimension of a named axis, counted from the end for the map's own axes so
    that it holds for maps and stacks alike."""
    if axis == "stack":
        return 1
    if axis == "C":
        return 2 if stacked else 1
    return {"W": -1, "H": -2, "T": -3}[axis]


def check_layout(graph: CellGraph) -> None:
    """Stack and axis rules a spec can break: a stack where a map must stand, or the reverse."""
    stacked = stacked_values(graph)
    for node in graph.ops():
        data, operands = graph[node], graph.operands(node)
        op, span = data["op"], data.get("span")
        if op in ("softmax", "reduce_sum", "unstack") and (op == "unstack" or data.get("axis") == "stack"):
            if operands[0] not in stacked:
                what = {"softmax": "softmax over the stack", "reduce_sum": "sum over the stack",
                        "unstack": "unstack"}[op]
                raise TypeMismatchError(f"{what} needs a stack (a history `c[t-τ:t-1]` or `stack(…)`), "
                                        "but this is a single map", span)
        if op == "stack" and any(o in stacked for o in operands):
            raise TypeMismatchError("stack() of a stack: a value has at most one stack axis", span)
        if op == "concat" and len({o in stacked for o in operands}) > 1:
            raise TypeMismatchError("[…] joins the channels of maps or of stacks, not of both", span,
                                    hint="unstack the stack first, or stack the maps")
        if op == "attention" and len({o in stacked for o in operands[1:]}) > 1:
            raise TypeMismatchError("attention's keys and values must both be stacks or both maps", span)
        axis = data.get("axis")
        if axis == "T" and graph.spatial_dims != 3:
            raise TypeMismatchError("axis T exists only in 3D cells (NCTHW maps)", span)
        if op == "attention" and data["patches"] > 1 and graph.spatial_dims not in (2, 3):
            raise TypeMismatchError("patches need a map with H and W", span)
