"""Bias folding: a bias (or constant) added to a conv's output becomes the conv's own bias.

    before                                  after
    F = conv([x, h], W)                     F = conv([x, h], W, cat([b_i, b_f, zeros(C), 1.0…]))
    i = σ(F[:, 0:C] + b_i)                  i = σ(F[:, 0:C])
    f = σ(F[:, C:2C] + b_f)                 f = σ(F[:, C:2C])
    g = tanh(F[:, 2C:3C])                   g = tanh(F[:, 2C:3C])
    o = σ(F[:, 3C:4C] + 1.0)                o = σ(F[:, 3C:4C])

Rule:  conv(a, W) + b + rest  →  conv(a, W, b) + rest      (several bias terms: their sum)
       F[:, oⱼ:oⱼ+Cⱼ] + bⱼ + rest  →  conv(a, W, [b₁ | 0 | b₃ …])[:, oⱼ:oⱼ+Cⱼ] + rest
Guard: the conv has no bias yet; the conv (or each chunk folded into it) feeds only the sum
it is folded from, and when chunks are folded every user of the conv is a slice and the
slices do not overlap (so a bias added to one chunk can reach no other reader); the term is
bias-like for the chunk's width C: a `bias` (C,), an elementwise weight (C, 1, …, 1), or a
scalar constant (PredRNN's +1.0 forget bias, filled to C). A chunk nobody biases gets zeros.
Exact: the conv adds its bias to every output pixel of each channel, which is what the
separate add did (the sum is reassociated, as fp32 allows).
"""
from __future__ import annotations

from cellgen.ir.graph import CellGraph
from cellgen.passes.rules import (Rule, bias_vector, channels, conv_bias, conv_source, conv_weight,
                                  enclosing_sum, fill, is_inner_add, is_op, is_weight_side, new_conv, new_weight_op, only_user, owner,
                                  replace, replace_sum, rewrite, sum_terms, weight_cat, weight_symbols, wshape)


def _bias_like(g: CellGraph, term: str, width: int) -> bool:
    data = g[term]
    if data["kind"] == "const":
        return True
    if is_op(g, term, "channel_view"):
        return wshape(g, g.operands(term)[0]) == (width,)
    if is_weight_side(g, term):
        shape = wshape(g, term)
        return len(shape) == g.spatial_dims + 1 and shape[0] == width and all(d == 1 for d in shape[1:])
    return False


def _root(g: CellGraph, chunk: str):
    user = only_user(g, chunk)
    if user is None or not is_op(g, user, "add"):
        return None
    while is_inner_add(g, user):
        user = only_user(g, user)
    return user


def _chunks(g: CellGraph, conv: str):
    """(chunk, start, stop) for the parts of `conv`'s output that are read, or None if a
    reader could see a bias folded for another."""
    users = g.users(conv)
    if conv not in g.results() and users and all(is_op(g, u, "slice") for u in users):
        spans = sorted((g[u]["start"], g[u]["stop"], u) for u in users)
        if any(a[1] > b[0] for a, b in zip(spans, spans[1:])):
            return None
        return [(u, start, stop) for start, stop, u in spans]
    if only_user(g, conv) is not None:
        return [(conv, 0, channels(g, conv))]
    return None


def _match(g: CellGraph, conv: str):
    if conv_bias(g, conv) is not None:
        return None
    chunks = _chunks(g, conv)
    if not chunks:
        return None
    folds, roots = [], set()  # one chunk per sum: a sum of two chunks keeps the biases on the first
    for chunk, start, stop in chunks:
        root = _root(g, chunk)
        if root is None or root in roots:
            continue
        terms = [t for t in sum_terms(g, root) if t != chunk and _bias_like(g, t, stop - start)]
        if terms:
            roots.add(root)
            folds.append((chunk, start, stop, root, terms))
    return (conv, folds) if folds else None


def _revisit(g: CellGraph, node: str):
    """The match reaches from the conv down its chunks to their sums: a change inside a sum
    revisits the convs whose chunks are its terms."""
    if is_op(g, node, "slice"):
        yield g.operands(node)[0]
    for root in enclosing_sum(g, node) or ([node] if is_op(g, node, "add") else []):
        for term in sum_terms(g, root):
            if is_op(g, term, "conv"):
                yield term
            elif is_op(g, term, "slice"):
                yield g.operands(term)[0]


def _describe(g: CellGraph, term: str) -> str:
    if g[term]["kind"] == "const":
        return f"{g[term]['value']:g}"
    return " ".join(weight_symbols(g, term)) or g[term].get("name") or "bias"


def _apply(g: CellGraph, match) -> str:
    conv, folds = match
    weight, width = conv_weight(g, conv), channels(g, conv)
    pieces, at = [], 0
    for _, start, stop, _, terms in folds:
        if start > at:
            pieces.append(fill(g, weight, 0.0, start - at))
        vector = bias_vector(g, terms[0], stop - start, weight)
        for term in terms[1:]:
            vector = new_weight_op(g, "weight_add", [vector, bias_vector(g, term, stop - start, weight)],
                                   (stop - start,))
        pieces.append(vector)
        at = stop
    if at < width:
        pieces.append(fill(g, weight, 0.0, width - at))
    note = (f"{owner(g, folds[0][3]) if len(folds) == 1 else 'conv of ' + ' '.join(weight_symbols(g, weight))}"
            f" ← {' '.join('+'.join(_describe(g, t) for t in f[4]) for f in folds)}")
    fused = new_conv(g, conv_source(g, conv), weight, weight_cat(g, pieces, dim=0), like=conv)
    replace(g, conv, fused)
    for chunk, _, _, root, folded in folds:
        terms = sum_terms(g, root)
        for term in folded:
            terms.remove(term)
        replace_sum(g, root, terms)
    return note


RULES = [Rule("conv(a, W)[:, o:o+C] + b  →  conv(a, W, [… | b | …])[:, o:o+C]",
              "no bias yet; each folded chunk feeds only its sum; readers are disjoint slices; b is a (C,) bias, "
              "a (C, 1, …, 1) weight or a scalar", ("conv",), _match, _apply, revisit=_revisit)]


def bias_folding(graph: CellGraph, *, in_place: bool = False) -> tuple[CellGraph, list[str]]:
    g, notes = rewrite(graph, RULES, in_place=in_place)
    if not notes:
        return g, []
    return g, ["folded into conv biases: " + "; ".join(notes)]
