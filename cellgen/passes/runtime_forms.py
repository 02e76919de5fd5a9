"""Runtime forms: two rewrites into ops that run faster than what they replace, made as a pass
(not by codegen) so that `show -O2`, stats and the cost model see the code that runs.

    before                                  after
    F = [W_xi W_hi …] ⋆ [x, h]              F = [W_xi W_hi …] ⋆ (x, h)   (a conv of 2 parts)
    i = σ(F[:, 0:8]); f = σ(F[:, 8:16]) …   P = split(F, [8, 8, 8, 8]); i = σ(P[0]); f = σ(P[1]) …

Rules (each exact: the same values, computed with other torch calls):
  W ⋆ [a₁, …, aₙ]  →  W ⋆ (a₁, …, aₙ): a conv that joins its `parts` itself
      guard: the concat feeds only convs, and only as their input (not a weight or bias); it is
             not a stack and not a result of the step
      why:   cellgen.runtime.ops.conv_of_concat joins the parts inside the conv, so its backward
             computes input gradients only for the parts that need one (a first layer's x needs
             none: the plain conv of a concatenation made the fused step slower to train)
  T[:, a₁:b₁], …, T[:, aₙ:bₙ]  →  the pieces of one split(T, sizes)
      guard: two or more slices read T; they do not overlap and lie within T's channels
      why:   a split's backward joins the pieces' gradients with one cat, where a narrow per
             slice builds a zero tensor of T's whole size each (ConvLSTM at O2: 4 % of a
             forward + backward step)

Both run last (after dce): every other pass matches `concat` and `slice`.
"""
from __future__ import annotations

from cellgen.ir.analysis import analyze
from cellgen.ir.graph import CellGraph
from cellgen.passes.rules import Rule, conv_bias, conv_weight, is_op, new_op, replace, rewrite


def _joins_conv_inputs(g: CellGraph, concat: str) -> bool:
    users = g.users(concat)
    return (bool(users) and not g[concat]["facts"].stacked and concat not in g.results()
            and all(is_op(g, u, "conv") and g[u].get("parts", 1) == 1 and g.operands(u)[0] == concat
                    and concat not in g.operands(u)[1:] for u in users))


def _match_conv_of_concat(g: CellGraph, conv: str):
    source = g.operands(conv)[0]
    geometry = g[conv].get("geometry")
    if geometry is not None and set(geometry[1]) != {1}:  # conv_of_concat's backward is stride 1's
        return None
    if g[conv].get("parts", 1) == 1 and is_op(g, source, "concat") and _joins_conv_inputs(g, source):
        return conv
    return None


def _apply_conv_of_concat(g: CellGraph, conv: str) -> str:
    parts = g.operands(g.operands(conv)[0])
    bias = conv_bias(g, conv)
    operands = [*parts, conv_weight(g, conv)] + ([bias] if bias is not None else [])
    extra = {"geometry": g[conv]["geometry"]} if g[conv].get("geometry") is not None else {}
    joined = new_op(g, "conv", operands, channels=g[conv]["channels"], kernel=g[conv]["kernel"],
                    parts=len(parts), **extra)
    g[joined]["facts"] = g[conv]["facts"]
    replace(g, conv, joined)
    return f"conv of {len(parts)} parts joined inside the conv"


def _slices_to_split(g: CellGraph, source: str):
    """The slices of `source`, by (start, stop), if one split can serve them all; else None."""
    slices: dict[tuple[int, int], list[str]] = {}
    for user in g.users(source):
        if is_op(g, user, "slice"):
            slices.setdefault((g[user]["start"], g[user]["stop"]), []).append(user)
    spans = sorted(slices)
    total = g[source].get("channels")
    disjoint = all(stop <= next_start for (_, stop), (next_start, _) in zip(spans, spans[1:]))
    if len(spans) < 2 or total is None or not disjoint or spans[-1][1] > total:
        return None
    return slices


def _match_split(g: CellGraph, piece: str):
    source = g.operands(piece)[0]
    return source if _slices_to_split(g, source) is not None else None


def _apply_split(g: CellGraph, source: str) -> str:
    slices = _slices_to_split(g, source)
    sizes, index, at = [], {}, 0
    for start, stop in sorted(slices):
        if start > at:  # a gap no slice reads
            sizes.append(start - at)
        index[(start, stop)] = len(sizes)
        sizes.append(stop - start)
        at = stop
    if at < g[source]["channels"]:
        sizes.append(g[source]["channels"] - at)
    split = new_op(g, "split", [source], channels=g[source]["channels"], sizes=tuple(sizes))
    g[split]["facts"] = g[source]["facts"]
    for span, nodes in slices.items():
        piece = new_op(g, "piece", [split], channels=span[1] - span[0], index=index[span])
        g[piece]["facts"] = g[nodes[0]]["facts"]
        for node in nodes:
            replace(g, node, piece)
    return f"{len(slices)} slices of one tensor cut by one split"


RULES = [
    Rule("W ⋆ [a₁, …, aₙ]  →  W ⋆ (a₁, …, aₙ)",
         guard="the concat feeds only convs, as their input; not a stack, not a result",
         anchor=("conv",), match=_match_conv_of_concat, apply=_apply_conv_of_concat),
    Rule("T[:, a₁:b₁], …, T[:, aₙ:bₙ]  →  pieces of split(T)",
         guard="two or more slices of T, disjoint, within T's channels",
         anchor=("slice",), match=_match_split, apply=_apply_split),
]


def runtime_forms(graph: CellGraph, *, in_place: bool = False) -> tuple[CellGraph, list[str]]:
    return rewrite(analyze(graph if in_place else graph.copy(), keep=True), RULES, in_place=True, by_creation=True)
