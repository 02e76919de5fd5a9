"""Same-operand fusion: convs that read the same tensor with the same kernel become one conv
whose output channels are theirs stacked; each reads its own channels back as a slice.

    before                                  after
    i = σ(W_xi ⋆ x + …)                     F = conv(x, cat([W_xi, W_xf, W_xc, W_xo], dim=0))
    f = σ(W_xf ⋆ x + …)                     i = σ(F[:, 0:C] + …)
    g = tanh(W_xc ⋆ x + …)                  f = σ(F[:, C:2C] + …)
    o = σ(W_xo ⋆ x + …)                     …

Rule:  W₁ ⋆ a, …, Wₙ ⋆ a  →  F = cat([W₁ … Wₙ], 0) ⋆ a;  Wⱼ ⋆ a = F[:, oⱼ : oⱼ + Cⱼ]
       (biases, if any conv has one, stack the same way; a conv without one gets zeros)
Guard: the same input node, the same kernel and geometry (padding, stride, resize: rules.conv_key).
Exact: each output channel of a conv depends only on its own filter, so stacking filters
computes every channel exactly as before. Chunks are stacked in the order the equations
use the convs (rules.evaluation_order), so a multi-kernel gate's chunks end up adjacent
and read back as one slice; "gate order inside a fused conv is an implementation
detail" (cells.md), and parameters stay per symbol, so the order is invisible outside.

ConvLSTM ends with ONE conv (all gates over [x, h]). PredRNN (ST-LSTM) ends with four:
[x, h] → i f g and o's x, h part (4C); [x, m] → i_m f_m g_m (3C); W_o ⋆ [c', m'] (k×k) and
W_1x1 ⋆ [c', m'] (1×1) — three if kernel-embedding pads the 1×1 into k×k (k² times its MACs;
the cost model declines at its reference size). Two is the floor: the [c', m'] convs read
the first convs' results. Reaching it would take one conv over [x, h, m] whose h-gates
have zero weights on m and m-gates zero weights on h: exact, but 7C² · k² extra MACs per
pixel (+50 % when in_channels = hidden), so no pass does it.
"""
from __future__ import annotations

from cellgen.ir.graph import CellGraph
from cellgen.passes.rules import (Rule, channels, conv_bias, conv_key, conv_label, conv_source, conv_weight,
                                  evaluation_order, fill, is_op, label, new_conv, replace, rewrite, slice_of,
                                  weight_cat)


def _match(g: CellGraph, conv: str):
    source, key = conv_source(g, conv), conv_key(g, conv)
    convs = [u for u in g.users(source) if is_op(g, u, "conv") and conv_source(g, u) == source
             and conv_key(g, u) == key]
    if len(convs) < 2:
        return None
    position = evaluation_order(g)
    return source, sorted(convs, key=position.__getitem__)


def _apply(g: CellGraph, match) -> str:
    source, convs = match
    weight = weight_cat(g, [conv_weight(g, c) for c in convs], dim=0)
    bias = None
    if any(conv_bias(g, c) is not None for c in convs):
        bias = weight_cat(g, [conv_bias(g, c) if conv_bias(g, c) is not None
                              else fill(g, conv_weight(g, c), 0.0, channels(g, c)) for c in convs], dim=0)
    fused = new_conv(g, source, weight, bias, like=convs[0])
    start = 0
    for conv in convs:
        stop = start + channels(g, conv)
        replace(g, conv, slice_of(g, fused, start, stop))
        start = stop
    return f"{label(g, source)}: " + " ".join(conv_label(g, c) for c in convs)


RULES = [Rule("W₁ ⋆ a, …, Wₙ ⋆ a  →  cat([W₁ … Wₙ], 0) ⋆ a, read back through channel slices",
              "same input node; same kernel and geometry", ("conv",), _match, _apply)]


def same_operand_fusion(graph: CellGraph, *, in_place: bool = False) -> tuple[CellGraph, list[str]]:
    count = graph.count("conv")
    g, notes = rewrite(graph, RULES, in_place=in_place)
    if not notes:
        return g, []
    return g, [f"{count} convs -> {g.count('conv')} (" + "; ".join(notes) + ")"]
