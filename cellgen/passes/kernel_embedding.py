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
(cellgen/passes/cost.py) decides per group by running the rest of the pipeline both ways,
on the group's region (its convs, their sums and what reads them, `affected_region`) or on
the whole step (see `choose_kernel_embedding`); `enable=["kernel-embedding"]` embeds every
group, `enable=["kernel-grouping"]` none.
"""
from __future__ import annotations

import itertools
import math
from typing import Callable, Optional

from cellgen.ir.graph import CellGraph, creation_order
from cellgen.ir.ops import OPS
from cellgen.passes.cost import CostModel, DEFAULT_COST
from cellgen.passes.rules import (channels, conv_bias, conv_source, conv_weight, enclosing_sum,
                                  is_inner_add, is_op, new_conv, new_weight_op, owner, replace, stage, sum_of,
                                  sum_roots, sum_terms, weight_symbols, wshape)


def kernel_groups(g: CellGraph) -> list[list[str]]:
    """Groups of linked convs (see above) with more than one kernel size, all of them odd."""
    # a conv with its own geometry keeps its kernel: padding a `valid` kernel changes its output
    convs = [c for c in g.ops("conv") if conv_bias(g, c) is None and g[c].get("geometry") is None]
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


def embed(graph: CellGraph, groups: list[list[str]], *, in_place: bool = False) -> CellGraph:
    """`graph` with the convs of `groups` padded to each group's largest kernel. Not a rule
    driven to a fixed point: the convs to rewrite are known, and each is rewritten once."""
    g = graph if in_place else graph.copy()
    for group in groups:
        kernel = _target(g, group)
        for conv in group:
            have = tuple(g[conv]["kernel"])
            if have == kernel:
                continue
            out, inp = wshape(g, conv_weight(g, conv))[:2]
            weight = new_weight_op(g, "pad_kernel", [conv_weight(g, conv)], (out, inp, *kernel), kernel=kernel,
                                   from_kernel=have)
            replace(g, conv, new_conv(g, conv_source(g, conv), weight, None, like=conv, kernel=kernel))
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
    note = "embedded " + "; ".join(_describe(graph, grp) for grp in groups)
    return embed(graph, groups, in_place=in_place), [note]


# How close (in weight-side ops: fills, slices and concatenations of parameters) the two
# estimates on a group's region may come before the whole step is finished both ways instead:
# the order in which bias folding and simplify visit the region's nodes can differ from the
# order in the whole graph, which changes how many such ops the passes leave. Measured on
# 536 groups (every shipped spec at hidden 4, 16, 64 × in_channels 1, 3, 64, the multi-kernel
# test spec at 12 sizes, 4 cost models, with and without activation grouping): the region's
# margin was off the whole step's by at most 51 µs (≈ 10 ops at the default model); with this
# bound every choice was the whole-step choice, and 10 of the default model's 134 groups
# (192 of all 536) needed the whole step.
CLOSE_OPS = 25


def choose_kernel_embedding(graph: CellGraph, finish: Callable[[CellGraph], CellGraph],
                            model: Optional[CostModel] = None, *,
                            in_place: bool = False) -> tuple[CellGraph, list[str]]:
    """The cost model's choice, group by group: embed a group only if the rest of the pipeline
    (`finish`) makes the step cheaper with the group embedded than without.

    Where the multiply-accumulates the padding adds outweigh every other cost of the unfinished
    step (`_padding_outweighs`: a 1×1 conv padded to 5×5 beside 5×5 convs), or once the whole
    step has been finished for an earlier group, the group is decided on the whole step: it is
    finished without embedding, and with the group embedded only if the multiply-accumulates
    embedding would leave do not already cost more (`_embedding_floor`). Otherwise a group whose
    region (`affected_region`) is less than half the graph is decided on its region, unless the
    two estimates there are within CLOSE_OPS weight-side ops: then, and for a larger region, on
    the whole step.
    `finish` runs anyway: the caller may keep what `finish` returned for the graph this returns
    (`optimize` does), so that the graph without embedding — or with the one group embedded —
    is finished once, not again after the choice.
    """
    model = model or DEFAULT_COST
    groups = kernel_groups(graph)
    if not groups:
        return (graph if in_place else graph.copy()), []
    chosen, notes, whole, embedded = [], [], None, {}

    def decided(index: int, group: list[str], cost_without: float, cost_with: float, without: CellGraph,
                with_: CellGraph, scope: str) -> None:
        pick = cost_with < cost_without
        if pick:
            chosen.append(index)
        notes.append(f"{_describe(graph, group)}: grouping {_convs(without)} {cost_without:.0f} µs vs "
                     f"embedding {_convs(with_)} {cost_with:.0f} µs "
                     f"({model.describe()}{scope}) -> {'embedding' if pick else 'grouping'}")

    for index, group in enumerate(groups):
        scope = ""
        if whole is None and not _padding_outweighs(graph, group, model):
            region = affected_region(graph, group)
            if 2 * len(region.nx) < len(graph.nx):
                base, alternative = finish(region), finish(embed(region, [group]))
                base_cost, cost = model.cost(base), model.cost(alternative)
                if abs(cost - base_cost) >= CLOSE_OPS * model.ns_per_op / 1000:
                    decided(index, group, base_cost, cost, base, alternative, ", the convs and what reads them")
                    continue
                scope = ", the whole step: too close on its convs alone"
        whole = whole or finish(graph)
        base_cost, floor = model.cost(whole), _embedding_floor(graph, group, whole, model)
        if floor is not None and floor >= base_cost:  # no need to finish it: it cannot be cheaper
            notes.append(f"{_describe(graph, group)}: grouping {_convs(whole)} {base_cost:.0f} µs vs "
                         f"embedding ≥ {floor:.0f} µs in its convs' multiply-accumulates alone "
                         f"({model.describe()}{scope}) -> grouping")
            continue
        embedded[index] = embed(graph, [group])
        alternative = finish(embedded[index])
        decided(index, group, base_cost, model.cost(alternative), whole, alternative, scope)
    if whole is not None:  # hand back a graph `finish` has seen, unchanged, where there is one
        if not chosen:
            return graph, notes
        if len(chosen) == 1 and chosen[0] in embedded:
            return embedded[chosen[0]], notes
        return embed(graph, [groups[i] for i in chosen]), notes
    return embed(graph, [groups[i] for i in chosen], in_place=in_place), notes


def _padding_outweighs(g: CellGraph, group: list[str], model: CostModel) -> bool:
    """Does embedding `group` add multiply-accumulates that cost more than every op of the
    unfinished step does beyond its own multiply-accumulates? Then embedding rarely pays: the
    passes after it fuse and drop ops, so they seldom save more than that."""
    floor = _embedding_floor(g, group, g, model)
    return floor is not None and floor >= model.cost(g)


def _embedding_floor(g: CellGraph, group: list[str], finished: CellGraph, model: CostModel) -> Optional[float]:
    """A lower bound on the cost of the step finished with `group` embedded, from `finished`
    (the step finished without): its multiply-accumulates, plus those the padding adds — if
    no rewrite can drop any. Fusion keeps the multiply-accumulates of the convs it fuses
    (their inputs or outputs are stacked), except where two convs of one sum read the same
    tensor ((W₁ + W₂) ⋆ a) or two convs are the same (cse); where that could happen: None."""
    if g.derived("convs could merge", _convs_could_merge):
        return None
    target = _target(g, group)
    added = sum(channels(g, c) * channels(g, conv_source(g, c)) * (math.prod(target) - math.prod(g[c]["kernel"]))
                for c in group)
    macs = sum(OPS["conv"].macs(finished, c, lambda _: (1, ())) for c in finished.ops("conv")) + added
    return macs * model.pixels * model.ns_per_mac / 1000


def _convs_could_merge(g: CellGraph) -> bool:
    """Could a rewrite drop multiply-accumulates of `g`'s convs: two convs the same, or two
    terms of one sum reading the same tensor? (Asked of one graph for each of its groups.)"""
    convs = g.ops("conv")
    if len({(conv_source(g, c), conv_weight(g, c)) for c in convs}) < len(convs):
        return True
    for root in sum_roots(g):
        sources = [conv_source(g, t) for t in sum_terms(g, root) if is_op(g, t, "conv")]
        if len(set(sources)) < len(sources):
            return True
    return False


def affected_region(g: CellGraph, group: list[str]) -> CellGraph:
    """The part of `g` that the passes after kernel embedding can rewrite differently when
    `group` is embedded, as a graph of its own. It holds the group's convs and, until nothing
    is added: the sum trees they are terms of, whole; every conv that is a term of those sums
    or reads the same tensor as a conv held; the readers of the sums and convs held and the
    readers of those (the concats of chunks and the activations over them); and, whole, the
    parameter-only values they read (biases and their views, constants). Every other value
    they read is a leaf: an input of the region that keeps its stage (see rules.stage).
    Every value read outside the region is one of its results, so no guard sees fewer users
    than in `g`, and is named after its equation, so equations are read in the same order."""
    core: set[str] = set()
    frontier = list(group)
    while frontier:
        node = frontier.pop()
        if node in core:
            continue
        core.add(node)
        if is_op(g, node, "add"):
            frontier.extend(_sum_nodes(g, node))
            for term in sum_terms(g, (enclosing_sum(g, node) or [node])[0]):
                if is_op(g, term, "slice") and is_op(g, g.operands(term)[0], "conv"):
                    term = g.operands(term)[0]  # a chunk of a conv: bias folding may pick that conv
                if is_op(g, term, "conv"):
                    frontier.append(term)
        if is_op(g, node, "conv"):
            frontier.extend(c for c in g.users(conv_source(g, node)) if is_op(g, c, "conv"))
            frontier.extend(u for u in g.users(node) if is_op(g, u, "add"))
    for _ in range(2):
        core |= {u for n in list(core) for u in g.users(n)}
    for node in list(core):  # each sum whole: every add of its tree
        if is_op(g, node, "add"):
            core |= set(_sum_nodes(g, node))
    static = _static(g)
    weight_side = set()
    stack = [o for n in core for o in g.operands(n) if static[o]]
    while stack:
        node = stack.pop()
        if node not in weight_side:
            weight_side.add(node)
            stack.extend(g.operands(node))
    core -= weight_side
    leaves = {o for n in core for o in g.operands(n)} - core - weight_side
    region = CellGraph(f"{g.name} (region)", params=dict(g.params), weights=g.weights,
                       spatial_dims=g.spatial_dims)
    for node in sorted(core | weight_side | leaves, key=creation_order):
        data = dict(g[node])
        if node in leaves:
            data = {"kind": "input", "name": data.get("name"), "channels": data.get("channels"),
                    "stage": stage(g, node)}
        region.nx.add_node(node, **data)
    for node in core | weight_side:
        for source, _, port in g.nx.in_edges(node, keys=True):
            region.nx.add_edge(source, node, key=port)
    outside = [n for n in sorted(core, key=creation_order)
               if any(u not in core for u in g.users(n)) or n in g.results()]
    region.next_state = {f"read outside: {n}": n for n in outside}
    for node in outside:  # named as in `g`, so that the equations are read in the same order
        region[node]["name"] = region[node]["name"] or owner(g, node)
    region.output = outside[0]
    region._ids = itertools.count(max(creation_order(n) for n in g.nx) + 1)
    return region


def _static(g: CellGraph) -> dict[str, bool]:
    """Node → is it computed from parameters and constants only (a bias, its slices and views)?"""
    static: dict[str, bool] = {}
    for node in g.order():
        kind = g[node]["kind"]
        static[node] = kind in ("weight", "const") or (kind == "op" and bool(g.operands(node))
                                                      and all(static[o] for o in g.operands(node)))
    return static


def _sum_nodes(g: CellGraph, add: str) -> list[str]:
    """The adds of the sum tree `add` belongs to."""
    root = (enclosing_sum(g, add) or [add])[0]
    found, stack = [], [root]
    while stack:
        node = stack.pop()
        found.append(node)
        stack.extend(o for o in g.operands(node) if is_inner_add(g, o))
    return found
