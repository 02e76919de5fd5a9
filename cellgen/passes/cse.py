"""Common-subexpression elimination: two nodes that compute the same thing become one.

    before                                  after
    xh   = [x, h]                           xh = [x, h]
    xh_1 = [x, h]                           i  = σ(conv(xh, [W_xi W_hi]) + b_i)
    i = σ(conv(xh,   [W_xi W_hi]) + b_i)    f  = σ(conv(xh, [W_xf W_hf]) + b_f)
    f = σ(conv(xh_1, [W_xf W_hf]) + b_f)

Rule:  op(a…; attrs) and op(a…; attrs)  →  one node      (constants: equal values)
Guard: same op, same attributes, same operands in the same order — or in any order for the
commutative `add` and `mul` (IEEE addition and multiplication commute exactly). Every op
of a cell is pure, so the merge is exact. Nodes are visited in topological order, so
operands are already merged when their users are compared.
"""
from __future__ import annotations

from collections import Counter

from cellgen.ir.graph import CellGraph
from cellgen.ir.ops import COMMUTATIVE
from cellgen.passes.rules import replace

_IGNORED = {"kind", "name", "span", "channels", "decl_span"}


def _key(graph: CellGraph, node: str):
    data = graph[node]
    if data["kind"] == "const":
        return ("const", float(data["value"]))
    if data["kind"] != "op":
        return None
    operands = tuple(graph.operands(node))
    if data["op"] in COMMUTATIVE:
        operands = tuple(sorted(operands))
    attrs = tuple(sorted((k, repr(v)) for k, v in data.items() if k not in _IGNORED))
    return (data["op"], attrs, operands)


def cse(graph: CellGraph) -> tuple[CellGraph, list[str]]:
    g = graph.copy()
    seen: dict[object, str] = {}
    merged: Counter = Counter()
    for node in g.order():
        key = _key(g, node)
        if key is None:
            continue
        if key in seen:
            what = g[node]["op"] if g[node]["kind"] == "op" else "const"
            replace(g, node, seen[key])
            merged[what] += 1
        else:
            seen[key] = node
    g.remove_dead()
    if not merged:
        return g, []
    total = sum(merged.values())
    return g, [f"merged {total} duplicate{'s' * (total > 1)} (" + ", ".join(f"{op} ×{n}" for op, n in merged.items())
               + ")"]
