"""Simplify: tidy the slices, concats and weight concatenations the fusions leave behind.

    before                                  after
    i = σ([F[:, 0:4], F[:, 4:8]])           i = σ(F[:, 0:8])
    bias = cat([b_i[0:4], b_i[4:8], …])     bias = cat([b_i, …])
    cat([zeros(4), zeros(4)])               zeros(8)

Rules (each exact: it only re-expresses which channels are read, not their values):
  T[:, 0:C]                          →  T                        guard: C = channels of T
  T[:, a:b][:, c:d]                  →  T[:, a+c : a+d]
  [p₁, …, pₙ][:, a:b]                →  pⱼ[:, a-oⱼ : b-oⱼ]        guard: [a, b) lies inside part j
  cat([P₁ … Pₙ], 0)[a:b]            →  cat([each Pⱼ's rows in [a, b)], 0)   (weights only)
  [… T[:, a:b], T[:, b:c] …]         →  [… T[:, a:c] …]          (adjacent slices of one tensor)
  [… [q₁, q₂] …]                     →  [… q₁, q₂ …]             guard: the inner concat feeds only this
  [p]                                →  p
  the same four rules for weight-side cat/slice on dim 0, and
  cat([fill(v, n), fill(v, m)])      →  fill(v, n + m)
"""
from __future__ import annotations

from typing import Optional

from cellgen.ir.graph import CellGraph
from cellgen.ir.ops import number_key
from cellgen.passes.rules import (Rule, channels, concat, fill, is_op, is_weight_side, replace, rewrite,
                                  single_use, slice_of, weight_cat, weight_slice, wshape)


def _full_slice(g, n):
    return is_op(g, n, "slice", "weight_slice") and (g[n]["start"], g[n]["stop"]) == (0, _width(g, g.operands(n)[0]))


def _width(g, n):
    return wshape(g, n)[0] if is_weight_side(g, n) else channels(g, n)


def _match_full(g, n):
    return n if _full_slice(g, n) else None


def _apply_full(g, n):
    replace(g, n, g.operands(n)[0])


def _match_nested(g, n):
    inner = g.operands(n)[0]
    if is_op(g, inner, g[n]["op"]):
        return n, inner
    if _part_of(g, n) is not None or (is_op(g, inner, "weight_cat") and g[inner]["dim"] == 0):
        return n, None
    return None


def _part_of(g, n) -> Optional[tuple[str, int]]:
    """If slice `n` reads a concat (dim 0 for weights) within one of its parts: (part, offset)."""
    inner = g.operands(n)[0]
    if not (is_op(g, inner, "concat") or (is_op(g, inner, "weight_cat") and g[inner]["dim"] == 0)):
        return None
    at = 0
    for part in g.operands(inner):
        width = _width(g, part)
        if at <= g[n]["start"] and g[n]["stop"] <= at + width:
            return part, at
        at += width
    return None


def _apply_nested(g, match):
    n, inner = match
    make = _slice_maker(g, n)
    if inner is not None:
        start = g[inner]["start"]
        replace(g, n, make(g.operands(inner)[0], start + g[n]["start"], start + g[n]["stop"]))
    elif _part_of(g, n) is not None:
        part, offset = _part_of(g, n)
        replace(g, n, make(part, g[n]["start"] - offset, g[n]["stop"] - offset))
    else:  # rows [a, b) of a weight concatenation: the rows of each part it overlaps
        pieces, at = [], 0
        for part in g.operands(g.operands(n)[0]):
            width = _width(g, part)
            lo, hi = max(g[n]["start"], at), min(g[n]["stop"], at + width)
            if lo < hi:
                pieces.append(make(part, lo - at, hi - at))
            at += width
        replace(g, n, weight_cat(g, pieces, 0))


def _slice_maker(g, n):
    if is_op(g, n, "slice"):
        return lambda t, a, b: slice_of(g, t, a, b)
    return lambda t, a, b: weight_slice(g, t, a, b)


def _mergeable(g, a, b) -> bool:
    for op in ("slice", "weight_slice"):
        if is_op(g, a, op) and is_op(g, b, op):
            return g.operands(a) == g.operands(b) and g[a]["stop"] == g[b]["start"]
    if is_op(g, a, "fill") and is_op(g, b, "fill"):
        return number_key(g[a]["value"]) == number_key(g[b]["value"])  # the operand gives dtype and device
    return False


def _flattenable(g, cat, part) -> bool:
    if g[cat]["op"] == "concat":
        return is_op(g, part, "concat") and single_use(g, part)
    return is_op(g, part, "weight_cat") and g[part]["dim"] == g[cat]["dim"] and single_use(g, part)


def _match_cat(g, n):
    parts = g.operands(n)
    if is_op(g, n, "concat") or g[n]["dim"] == 0:
        if (len(parts) == 1 or any(_mergeable(g, a, b) for a, b in zip(parts, parts[1:]))
                or any(_flattenable(g, n, p) for p in parts)):
            return n
    elif any(_flattenable(g, n, p) for p in parts):
        return n
    return None


def _apply_cat(g, n):
    parts: list[str] = []
    for part in g.operands(n):
        parts.extend(g.operands(part) if _flattenable(g, n, part) else [part])
    merged = [parts[0]]
    for part in parts[1:]:
        last = merged[-1]
        if _mergeable(g, last, part):
            if is_op(g, part, "fill"):
                merged[-1] = fill(g, g.operands(part)[0], g[part]["value"], g[last]["size"] + g[part]["size"])
            else:
                merged[-1] = _slice_maker(g, part)(g.operands(part)[0], g[last]["start"], g[part]["stop"])
        else:
            merged.append(part)
    replace(g, n, concat(g, merged) if g[n]["op"] == "concat" else weight_cat(g, merged, g[n]["dim"]))


_SLICES = ("slice", "weight_slice")
RULES = [
    Rule("T[:, 0:C] → T", "C = all of T's channels", _SLICES, _match_full, _apply_full),
    Rule("T[a:b][c:d] → T[a+c:a+d];  [p…][a:b] → pⱼ[…]", "the range lies inside one part", _SLICES,
         _match_nested, _apply_nested),
    Rule("[… T[a:b], T[b:c] …] → [… T[a:c] …];  [[q…]] → [q…];  [p] → p",
         "adjacent ranges of one tensor; inner concat feeds only the outer", ("concat", "weight_cat"), _match_cat,
         _apply_cat),
]


def simplify(graph: CellGraph, *, in_place: bool = False) -> tuple[CellGraph, list[str]]:
    before = sum(1 for n in graph.ops() if graph[n]["op"] in _TIDIED)
    g, _ = rewrite(graph, RULES, in_place=in_place)
    after = sum(1 for n in g.ops() if g[n]["op"] in _TIDIED)
    return g, ([f"{before} slices/concats -> {after}"] if before != after else [])


_TIDIED = {"slice", "concat", "weight_slice", "weight_cat", "fill"}
