"""Concat split: a sum of concatenations becomes a concatenation of sums.

A multi-kernel gate adds concatenated chunks, one per kernel size; splitting the sum per
chunk puts each kernel's convs of x and h into one sum, where sum fusion can merge them:

    before                                          after
    i = σ([W_x3i ⋆ x, W_x5i ⋆ x]                    i = σ([W_x3i ⋆ x + W_h3i ⋆ h + b_i[0:4],
          + [W_h3i ⋆ h, W_h5i ⋆ h] + b_i)                  W_x5i ⋆ x + W_h5i ⋆ h + b_i[4:8]])

Rule:  [p₁, …, pₙ] + t + …  →  [p₁ + t[0:c₁] + …, …, pₙ + t[c₁+…:] + …]
Guard: the concat feeds only this sum (so it is not needed whole elsewhere), and one of its
parts is a conv or a sum with a conv term (the split exists to expose convs to fusion).
Each other term t is cut at the concat's channel boundaries: a concat with the same
boundaries gives its parts, a bias its sub-vectors (`weight_slice`), a scalar or a
broadcast weight is repeated, any other tensor is read through channel slices.
Exact: addition is elementwise, so each output element is the same sum of the same values.
"""
from __future__ import annotations

from cellgen.ir.graph import CellGraph
from cellgen.passes.rules import (Rule, build_sum, channels, concat, enclosing_sum, is_op, is_sum_root,
                                  is_weight_side, new_op, owner, replace, rewrite, single_use, slice_of, sum_terms,
                                  weight_slice)


def _has_conv(g: CellGraph, node: str) -> bool:
    if is_op(g, node, "conv"):
        return True
    return is_op(g, node, "add") and any(_has_conv(g, t) for t in sum_terms(g, node))


def _match(g: CellGraph, root: str):
    if not is_sum_root(g, root):
        return None
    for term in sum_terms(g, root):
        if (is_op(g, term, "concat") and single_use(g, term)
                and any(_has_conv(g, part) for part in g.operands(term))):
            return root, term
    return None


def _cut(g: CellGraph, term: str, bounds: list[tuple[int, int]]) -> list[str]:
    """`term` cut into the channel ranges `bounds`."""
    if channels(g, term) is None:  # a scalar or a broadcast weight: the same for every channel
        return [term] * len(bounds)
    if is_op(g, term, "concat"):
        parts = g.operands(term)
        if [channels(g, p) for p in parts] == [b - a for a, b in bounds]:
            return parts
    if is_op(g, term, "channel_view"):
        (vector,) = g.operands(term)
        return [new_op(g, "channel_view", [weight_slice(g, vector, a, b)], channels=b - a) for a, b in bounds]
    if is_weight_side(g, term):
        return [weight_slice(g, term, a, b) for a, b in bounds]
    return [slice_of(g, term, a, b) for a, b in bounds]


def _apply(g: CellGraph, match) -> str:
    root, cat = match
    parts = g.operands(cat)
    bounds, start = [], 0
    for part in parts:
        bounds.append((start, start + channels(g, part)))
        start += channels(g, part)
    others = list(sum_terms(g, root))
    others.remove(cat)
    pieces = [_cut(g, t, bounds) for t in others]
    sums = [build_sum(g, [part, *(p[j] for p in pieces)], channels(g, part)) for j, part in enumerate(parts)]
    result = concat(g, sums)
    name = owner(g, root)
    replace(g, root, result)
    return f"{name} = [{', '.join(str(b - a) for a, b in bounds)} channels]"


RULES = [Rule("[p₁, …, pₙ] + t  →  [p₁ + t[0:c₁], …, pₙ + t[…:]]",
              "the concat feeds only this sum, and one of its parts is a conv or a sum of convs",
              ("add",), _match, _apply, revisit=enclosing_sum)]


def concat_split(graph: CellGraph, *, in_place: bool = False) -> tuple[CellGraph, list[str]]:
    g, notes = rewrite(graph, RULES, in_place=in_place)
    return g, ([f"split {len(notes)} sums of concats: " + ", ".join(notes)] if notes else [])
