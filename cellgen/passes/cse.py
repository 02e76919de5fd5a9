"""Common-subexpression elimination: two nodes that compute the same thing become one.

    before                                  after
    xh   = [x, h]                           xh = [x, h]
    xh_1 = [x, h]                           i  = σ(conv(xh, [W_xi W_hi]) + b_i)
    i = σ(conv(xh,   [W_xi W_hi]) + b_i)    f  = σ(conv(xh, [W_xf W_hf]) + b_f)
    f = σ(conv(xh_1, [W_xf W_hf]) + b_f)

Rule:  op(a…; attrs) and op(a…; attrs)  →  one node      (constants: the same value, sign of zero included)
Guard: same op, same attributes, same operands in the same order — or in any order for the
commutative `add` and `mul` (IEEE addition and multiplication commute exactly). Every op
of a cell is pure, so the merge is exact. Nodes are visited in topological order, so
operands are already merged when their users are compared; the first node of each key is
the one kept (a merge re-points the users, which the driver then compares again).
"""
from __future__ import annotations

from collections import Counter

from cellgen.ir.graph import NOT_COMPUTED, CellGraph
from cellgen.ir.ops import COMMUTATIVE, number_key
from cellgen.passes.rules import ANY, Rule, replace, rewrite


def _key(graph: CellGraph, node: str):
    data = graph[node]
    if data["kind"] == "const":
        return ("const", number_key(data["value"]))
    if data["kind"] != "op":
        return None
    operands = tuple(graph.operands(node))
    if data["op"] in COMMUTATIVE:
        operands = tuple(sorted(operands))
    attrs = tuple(sorted((k, repr(v)) for k, v in data.items() if k not in NOT_COMPUTED))
    return (data["op"], attrs, operands)


def _rule() -> Rule:
    first: dict[object, str] = {}  # key → the node that computes it (checked again before use)

    def match(g: CellGraph, node: str):
        key = _key(g, node)
        if key is None:
            return None
        other = first.get(key)
        if other is not None and other != node and other in g.nx and _key(g, other) == key:
            return node, other
        first[key] = node
        return None

    def apply(g: CellGraph, merge) -> str:
        node, other = merge
        what = g[node]["op"] if g[node]["kind"] == "op" else "const"
        replace(g, node, other)
        return what

    return Rule("op(a…; attrs), op(a…; attrs)  →  one node", "same op, attributes and operands (any order if "
                "commutative); constants: equal values", (ANY,), match, apply)


def cse(graph: CellGraph, *, in_place: bool = False) -> tuple[CellGraph, list[str]]:
    g, merges = rewrite(graph, [_rule()], in_place=in_place, sweep=True)
    if not merges:
        return g, []
    merged = Counter(merges)
    total = sum(merged.values())
    return g, [f"merged {total} duplicate{'s' * (total > 1)} (" + ", ".join(f"{op} ×{n}" for op, n in merged.items())
               + ")"]
