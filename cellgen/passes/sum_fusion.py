"""Sum fusion: convs whose results are only added together become one conv over the
channel-concatenation of their inputs, with the weights side by side on the input axis.

    before                                  after
    i = σ(W_xi ⋆ x + W_hi ⋆ h + b_i)        i = σ(conv([x, h], cat([W_xi, W_hi], dim=1)) + b_i)

Rule:  W₁ ⋆ a₁ + … + Wₙ ⋆ aₙ + rest  →  cat([W₁ … Wₙ], 1) ⋆ [a₁, …, aₙ] + rest
       (a source that appears twice is read once, with its weights added: W₁⋆a + W₂⋆a = (W₁+W₂)⋆a)
Guard: every conv feeds ONLY this sum — a conv with any other user (say a normalisation
that couples its output channels, or a second gate) is left alone, so this never fuses
across a LayerNorm placed between a conv and the sum; the convs share a kernel (different
kernels are fused only after kernel-embedding has zero-padded them to one size) and have
no bias yet; their inputs are at the same *stage* (number of convs upstream, see rules.py).
Exact: Σⱼ Wⱼ ⋆ aⱼ is, per output element, one sum over (source, channel, tap) products;
the fused conv computes the same sum, only in another order (fp32 reassociation).

The concatenation is not materialised as its own op in the generated step: codegen hands the
parts to `conv_of_concat` (cellgen/runtime/ops.py), whose backward computes input gradients
only for the parts that need one. Without it a first layer's fused step would compute the
gradient of x, which is data, and train slower than the two convs it replaced.

Grouping by stage is a choice, not needed for exactness: in PredRNN's output gate
`W_xo ⋆ x + W_ho ⋆ h + W_o ⋆ [c', m']` it fuses the x and h convs (stage 0), which then join
the other gates' conv over [x, h], and leaves `W_o ⋆ [c', m']` (stage 1) to share a conv
with `W_1x1 ⋆ [c', m']`, instead of one conv over [x, h, c', m'] that shares nothing.
"""
from __future__ import annotations

from collections import defaultdict

from cellgen.ir.graph import CellGraph
from cellgen.passes.rules import (Rule, concat, conv_bias, conv_key, conv_label, conv_source, conv_weight,
                                  enclosing_sum, is_op, is_sum_root, label, new_conv, new_weight_op, owner,
                                  replace_sum, rewrite, stage, sum_of, sum_terms, weight_cat, wshape)


def _match(g: CellGraph, root: str):
    if not is_sum_root(g, root):
        return None
    groups: dict[tuple, list[str]] = defaultdict(list)
    for term in sum_terms(g, root):
        if is_op(g, term, "conv") and conv_bias(g, term) is None and sum_of(g, root, term):
            groups[(conv_key(g, term), stage(g, conv_source(g, term)))].append(term)
    return next(((root, convs) for convs in groups.values() if len(convs) >= 2), None)


def _apply(g: CellGraph, match) -> str:
    root, convs = match
    note = owner(g, root) + ": " + " + ".join(f"{conv_label(g, c)}⋆{label(g, conv_source(g, c))}" for c in convs)
    by_source: dict[str, list[str]] = {}
    for conv in convs:
        by_source.setdefault(conv_source(g, conv), []).append(conv_weight(g, conv))
    weights = []
    for parts in by_source.values():
        weight = parts[0]
        for other in parts[1:]:
            weight = new_weight_op(g, "weight_add", [weight, other], wshape(g, weight))
        weights.append(weight)
    fused = new_conv(g, concat(g, list(by_source)), weight_cat(g, weights, dim=1), None, like=convs[0])
    terms = sum_terms(g, root)
    terms = [fused if t == convs[0] else t for t in terms if t not in convs[1:]]
    replace_sum(g, root, terms)
    return note


RULES = [Rule("W₁ ⋆ a₁ + … + Wₙ ⋆ aₙ  →  cat([W₁ … Wₙ], 1) ⋆ [a₁, …, aₙ]",
              "each conv feeds only this sum; same kernel; no bias; inputs at the same stage",
              ("add",), _match, _apply, revisit=enclosing_sum)]


def sum_fusion(graph: CellGraph, *, in_place: bool = False) -> tuple[CellGraph, list[str]]:
    count = graph.count("conv")
    g, notes = rewrite(graph, RULES, in_place=in_place)
    if not notes:
        return g, []
    return g, [f"{count} convs -> {g.count('conv')} (" + "; ".join(notes) + ")"]
