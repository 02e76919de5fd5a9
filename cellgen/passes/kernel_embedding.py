"""Kernel embedding: zero-pad smaller kernels into the largest one, so that convs of different
kernel sizes (a multi-kernel ConvLSTM's 3×3 and 5×5 chunks) can become ONE conv.

    before                                  after
    [W_x3i ⋆ x, W_x5i ⋆ x]                  [pad(W_x3i, 5×5) ⋆₅ x, W_x5i ⋆₅ x]
    (3×3 and 5×5: two fused convs)          (all 5×5: sum and same-operand fusion make one)

Rule:  W ⋆ₖ a  →  pad(W, K) ⋆_K a   for every conv of a *kernel group*, K = the group's largest kernel
A kernel group links convs that read the same tensor or are terms of the same sum (the
convs that same-operand and sum fusion could merge if only their kernels agreed).
Guard: every kernel size of the group is odd in every dim (then "same" padding centres the
small kernel inside the large one; for even sizes torch's "same" padding is asymmetric); no
conv has a bias yet. Exact: the padded taps multiply zeros, so each output is the same sum
of the same products plus exact zeros.

Embedding trades multiply-accumulates (a 3×3 kernel costs 25/9 as much as a 5×5) for fewer
convs and no interleave; kernel-grouping is the alternative. At -O2 the cost model
(cellgen/passes/cost.py) decides per group by compiling the rest of the pipeline both ways;
`enable=["kernel-embedding"]` embeds every group, `enable=["kernel-grouping"]` none.
"""
from __future__ import annotations

from typing import Callable, Optional

from cellgen.ir.graph import CellGraph
from cellgen.passes.cost import CostModel, DEFAULT_COST
from cellgen.passes.rules import (conv_bias, conv_source, conv_weight, new_conv, new_weight_op, replace, sum_of,
                                  sum_roots, sum_terms, weight_symbols, wshape)


def kernel_groups(g: CellGraph) -> list[list[str]]:
    """Groups of linked convs (see above) with more than one kernel size, all of them odd."""
    convs = [c for c in g.ops("conv") if conv_bias(g, c) is None]
    parent = {c: c for c in convs}

    def root(c):
        while parent[c] != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    def link(links: dict[str, list[str]]):
        for members in links.values():
            for other in members[1:]:
                parent[root(other)] = root(members[0])

    by_source: dict[str, list[str]] = {}
    for c in convs:
        by_source.setdefault(conv_source(g, c), []).append(c)
    link(by_source)
    by_sum = {r: [t for t in sum_terms(g, r) if t in parent and sum_of(g, r, t)] for r in sum_roots(g)}
    link(by_sum)
    groups: dict[str, list[str]] = {}
    for c in convs:
        groups.setdefault(root(c), []).append(c)
    return [members for members in groups.values()
            if len({g[c]["kernel"] for c in members}) > 1
            and all(size % 2 == 1 for c in members for size in g[c]["kernel"])]


def _target(g: CellGraph, group: list[str]) -> tuple[int, ...]:
    return tuple(max(sizes) for sizes in zip(*(g[c]["kernel"] for c in group)))


def embed(graph: CellGraph, groups: list[list[str]]) -> CellGraph:
    g = graph.copy()
    for group in groups:
        kernel = _target(g, group)
        for conv in group:
            have = tuple(g[conv]["kernel"])
            if have == kernel:
                continue
            out, inp = wshape(g, conv_weight(g, conv))[:2]
            weight = new_weight_op(g, "pad_kernel", [conv_weight(g, conv)], (out, inp, *kernel), kernel=kernel,
                                   from_kernel=have)
            replace(g, conv, new_conv(g, conv_source(g, conv), weight, None, kernel))
    g.remove_dead()
    return g


def _convs(g: CellGraph) -> str:
    count = g.count("conv")
    return f"{count} conv{'s' * (count != 1)}"


def _describe(g: CellGraph, group: list[str]) -> str:
    """`3×3 + 5×5 (pad W_x3i W_h3i … 8 convs to 5×5)`: the group's kernels and what would grow."""
    target = _target(g, group)
    kernels = sorted({g[c]["kernel"] for c in group})
    padded = [s for c in group if tuple(g[c]["kernel"]) != target for s in weight_symbols(g, conv_weight(g, c))]
    shown = " ".join(padded[:4]) + (f" … {len(padded)} weights" if len(padded) > 4 else "")
    return f"{' + '.join('×'.join(map(str, k)) for k in kernels)} (pad {shown} to {'×'.join(map(str, target))})"


def kernel_embedding(graph: CellGraph, *, in_place: bool = False) -> tuple[CellGraph, list[str]]:
    """Embed every kernel group (the forced choice: `enable=["kernel-embedding"]`)."""
    groups = kernel_groups(graph)
    if not groups:
        return (graph if in_place else graph.copy()), []
    g = embed(graph, groups)
    return g, ["embedded " + "; ".join(_describe(graph, grp) for grp in groups)]


def choose_kernel_embedding(graph: CellGraph, finish: Callable[[CellGraph], CellGraph],
                            model: Optional[CostModel] = None) -> tuple[CellGraph, list[str]]:
    """The cost model's choice, group by group: embed a group only if the finished graph
    (the rest of the pipeline run on it) is estimated cheaper than without embedding it."""
    model = model or DEFAULT_COST
    groups = kernel_groups(graph)
    if not groups:
        return graph.copy(), []
    base = finish(graph)
    base_cost = model.cost(base)
    chosen, notes = [], []
    for group in groups:
        alternative = finish(embed(graph, [group]))
        cost = model.cost(alternative)
        pick = cost < base_cost
        if pick:
            chosen.append(group)
        notes.append(f"{_describe(graph, group)}: grouping {_convs(base)} {base_cost:.0f} µs vs "
                     f"embedding {_convs(alternative)} {cost:.0f} µs "
                     f"({model.describe()}) -> {'embedding' if pick else 'grouping'}")
    return embed(graph, chosen), notes
