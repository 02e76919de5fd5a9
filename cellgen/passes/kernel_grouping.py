"""Kernel grouping: the multi-kernel ConvLSTM's gates, read gate-major from one conv per kernel size.

Same-operand fusion already groups all gates' convs of one input by kernel size, one conv
per size (F3: [i₃ f₃ g₃ o₃], F5: [i₅ f₅ g₅ o₅]); each gate then concatenates its chunk of
every size. This pass replaces those per-gate concats by ONE interleave (Fig. 4b of the
multi-kernel ConvLSTM paper): view each conv's output as (B, G, C_k, H, W), concatenate on
the C_k axis, flatten to (B, G·ΣC_k, H, W). Each gate then reads one contiguous slice, which
takes its channels from every kernel.

    before                                  after
    i = σ([F3[:, 0:4], F5[:, 0:4]])         I = interleave(F3, F5; groups=4)
    f = σ([F3[:, 4:8], F5[:, 4:8]])         i = σ(I[:, 0:8])
    …                                       f = σ(I[:, 8:16]) …

Rule:  [T₁[:, g·w₁ : (g+1)·w₁], …, Tₙ[:, g·wₙ : (g+1)·wₙ]]  for g = 0…G-1
       →  I = interleave(T₁ … Tₙ; G);  gate g = I[:, g·W : (g+1)·W],  W = Σ wⱼ
Guard: G ≥ 2 concats read the same tensors T₁…Tₙ (n ≥ 2) in the same order, chunk j has the
same width wⱼ in every concat, and the concats' chunks tile each Tⱼ exactly (Tⱼ has G·wⱼ
channels; the g-th concat reads the g-th chunk of every Tⱼ). Exact: a permutation of channels.

The alternative, kernel-embedding, zero-pads the small kernels into the largest so that one
conv computes everything; the cost model (cost.py) picks one of the two, overridable by
enabling either pass by name.
"""
from __future__ import annotations

from cellgen.ir.graph import CellGraph
from cellgen.passes.rules import Rule, channels, is_op, label, new_op, replace, rewrite, slice_of


def _sliced(g: CellGraph, cat: str):
    """The distinct tensors a concat of ≥ 2 slices reads, in order, or None."""
    parts = g.operands(cat)
    tensors = tuple(g.operands(p)[0] for p in parts if is_op(g, p, "slice"))
    if len(parts) >= 2 and len(tensors) == len(parts) and len(set(tensors)) == len(tensors):
        return tensors
    return None


def _match(g: CellGraph, cat: str):
    tensors = _sliced(g, cat)
    if tensors is None:
        return None
    # the other concats of the same tensors: users of slices of the first one, in the graph's order
    cats = {c for piece in g.users(tensors[0]) if is_op(g, piece, "slice")
            for c in g.users(piece) if is_op(g, c, "concat") and _sliced(g, c) == tensors}
    if len(cats) < 2:
        return None
    position = {n: i for i, n in enumerate(g.order())}
    gates = _gates(g, tensors, sorted(cats, key=position.__getitem__))
    return (tensors, gates) if gates is not None else None


def _gates(g: CellGraph, tensors: tuple, cats: list[str]):
    """{gate index: concat} if the concats tile every tensor gate by gate, else None."""
    count = len(cats)
    if count < 2:
        return None
    widths = [g[p]["stop"] - g[p]["start"] for p in g.operands(cats[0])]
    gates = {}
    for cat in cats:
        ranks = set()
        for part, tensor, width in zip(g.operands(cat), tensors, widths):
            start, stop = g[part]["start"], g[part]["stop"]
            if stop - start != width or start % width or channels(g, tensor) != count * width:
                return None
            ranks.add(start // width)
        if len(ranks) != 1:
            return None
        gates[ranks.pop()] = cat
    return gates if sorted(gates) == list(range(count)) else None


def _apply(g: CellGraph, match) -> str:
    tensors, gates = match
    total = sum(channels(g, t) for t in tensors)
    interleaved = new_op(g, "interleave", list(tensors), channels=total, groups=len(gates))
    width = total // len(gates)
    for rank, cat in gates.items():
        replace(g, cat, slice_of(g, interleaved, rank * width, (rank + 1) * width))
    kernels = " + ".join(f"{'×'.join(map(str, g[t]['kernel'])) if is_op(g, t, 'conv') else label(g, t)}: "
                         f"{channels(g, t) // len(gates)}" for t in tensors)
    return f"{len(gates)} gates × ({kernels}) channels, gate-major"


RULES = [Rule("[T₁[g-th chunk], …, Tₙ[g-th chunk]] for every g  →  interleave(T₁ … Tₙ)[g-th chunk]",
              "≥ 2 concats tile T₁…Tₙ chunk by chunk, equal widths, same order", ("concat",), _match, _apply)]


def kernel_grouping(graph: CellGraph, *, in_place: bool = False) -> tuple[CellGraph, list[str]]:
    g, notes = rewrite(graph, RULES, in_place=in_place)
    return g, (["interleaved " + "; ".join(notes)] if notes else [])
