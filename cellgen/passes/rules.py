"""The vocabulary the passes are written in: rules anchored on an op, the driver that applies
them, and the shared patterns (sums, chunks of tensors, bias-like terms, weight-side expressions).

A pass is a list of `Rule`s, each a small declarative pattern rooted at one op, with an
explicit guard (the condition under which the rewrite is exact)::

    Rule("W₁⋆a₁ + W₂⋆a₂  →  [W₁ W₂] ⋆ [a₁, a₂]",
         guard="each conv feeds only this sum; same kernel",
         anchor=("add",), match=…, apply=…)

`match(graph, node)` is called only on nodes whose op is one of the rule's anchors and
returns the match rooted there that satisfies the guard, or None; `apply(graph, match)`
rewrites the graph in place (adding nodes and re-pointing uses) and returns a short note for
the report. The driver (`rewrite`) owns the traversal, in the manner of tinygrad's
PatternMatcher: each rule has a worklist, holding at first every node it is anchored on;
a node tried without a match leaves it, and after a rewrite only what the rewrite changed
is queued again (the nodes it created or whose operands or users changed, their users, and
whatever a rule's `revisit` names). Each step applies the first rule that matches at the
first node in topological order — the match a driver restarting from scratch after every
rewrite would find, so both reach the same fixed point by the same steps — but without
rescanning the graph: the graph's order is sorted once per rewrite (`CellGraph.order` is
cached until the graph changes), and only queued nodes are tried.

Dead nodes: a value whose last user a rewrite took away is dropped at once, with whatever
only it used (`CellGraph.drop_unused`, local to the rewrite) — the guards count users, and a
dead user would block a fusion. The whole-graph sweep (`remove_dead`) runs once per pass.

Vocabulary:
  sum tree   a maximal tree of `add` nodes whose inner adds each feed only their parent;
             its leaves are the sum's *terms* (a conv result, a bias, a constant, …)
  single use a node with exactly one user edge that is not a result of the step (output or
             next state): rewriting its only user cannot change anything else
  stage      how many convs lie on the longest path from the step's inputs/states to a node:
             x, h are stage 0; c' (computed from gate convs) is stage 1
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

from cellgen.ir.graph import CellGraph, creation_order
from cellgen.ir.ops import WEIGHT_OPS

# --- rules and the driver ----------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    pattern: str  # before → after, for docs and error messages
    guard: str  # when the rewrite is exact
    anchor: tuple[str, ...]  # the ops (or node kinds: "const") a match is rooted at
    match: Callable[[CellGraph, str], Any]  # the match rooted at this node, guard satisfied, or None
    apply: Callable[[CellGraph, Any], Optional[str]]
    # Nodes whose match a change at `node` may alter, beyond the node and its users (for a rule
    # whose pattern reaches from its anchor down to operands: a conv whose chunk a sum adds to).
    revisit: Optional[Callable[[CellGraph, str], Iterable[str]]] = None


ANY = "*"  # the anchor of a rule tried on every node


def anchor_of(g: CellGraph, node: str) -> str:
    """What a rule anchors on: the op of an op node, else the node's kind."""
    data = g[node]
    return data["op"] if data["kind"] == "op" else data["kind"]


def rewrite(graph: CellGraph, rules: list[Rule], *, in_place: bool = False, sweep: bool = False,
            by_creation: bool = False, limit: int = 10_000) -> tuple[CellGraph, list[str]]:
    """Apply `rules` until none matches; return the graph and the rules' notes.

    Works on a copy of `graph` unless `in_place`. Each step applies the first rule, in list
    order, that matches anywhere, at the first node in topological order where it matches —
    the match that restarting from the first rule and node after every rewrite would find.
    The driver finds it by trying only the nodes queued for that rule: at first every node
    the rule is anchored on, then only what a rewrite changed (see the module docstring).
    A node tried without a match leaves the queue until a rewrite touches it again.

    `sweep=True` keeps the order the graph had at the start instead (a node created since goes
    right after the node whose rewrite created it): one pass over the graph in that order, for
    a rule that only ever re-points users to a node before them (cse), where it is the same.
    `by_creation=True` tries nodes in the order they were created instead, for rules that are
    local and need no order (runtime_forms).
    """
    g = graph if in_place else graph.copy()
    anchors = [None if ANY in rule.anchor else rule.anchor for rule in rules]  # None: every node

    def queue(nodes: Iterable[str]) -> None:
        for n in nodes:
            anchor = anchor_of(g, n)
            for index, wanted in enumerate(anchors):
                if wanted is None or anchor in wanted:
                    queued[index].add(n)

    revisits = list(dict.fromkeys(rule.revisit for rule in rules if rule.revisit is not None))
    queued: list[set] = [set() for _ in rules]
    queue(g.nx)
    notes: list[str] = []
    initial = {n: (i, 0) for i, n in enumerate(g.order())} if sweep else None
    for _ in range(limit):
        if sweep:
            place = initial
        elif by_creation:
            place = _Creation()
        else:  # the order only where two queued nodes are to be sorted: most steps queue one
            place = _Topological(g)
        step = _first_match(g, rules, queued, place)
        if step is None:
            g.remove_dead()
            return g, notes
        node, rule, match = step
        with g.recording() as changed:
            note = rule.apply(g, match)
            g.drop_unused([n for n in list(changed) if n in g.nx])
        if note:
            notes.append(note)
        again = {n for n in changed | {node} if n in g.nx}
        again |= {u for n in list(again) for u in g.users(n)}
        for revisit in revisits:
            again |= {r for n in list(again) for r in revisit(g, n) if r in g.nx}
        queue(again)
        if sweep:
            for n in again:
                initial.setdefault(n, (initial[node][0], creation_order(n)))
    raise RuntimeError(f"rewriting {graph.name} did not reach a fixed point after {limit} steps")


class _Topological:
    """Every node's place in `g.order()`, computed at the first question."""

    def __init__(self, g: CellGraph):
        self.g, self.places = g, None

    def __contains__(self, node) -> bool:
        return node in self.g.nx

    def __getitem__(self, node: str) -> int:
        if self.places is None:
            self.places = {n: i for i, n in enumerate(self.g.order())}
        return self.places[node]


class _Creation(dict):
    """Every node's place is its creation order."""

    def __contains__(self, node) -> bool:
        return True

    def __getitem__(self, node: str) -> int:
        return creation_order(node)


def _first_match(g: CellGraph, rules: list[Rule], queued: list[set], place: dict) -> Optional[tuple[str, Rule, Any]]:
    """The first rule's first match in `place` order among the queued nodes (consuming the
    nodes tried), or None if no queued node matches."""
    for rule, nodes in zip(rules, queued):
        candidates = [n for n in nodes if n in place and n in g.nx]
        if len(candidates) > 1:
            candidates.sort(key=place.__getitem__)
        for node in candidates:
            nodes.discard(node)
            match = rule.match(g, node)
            if match is not None:
                return node, rule, match
        nodes.clear()  # the rest were removed
    return None


# --- reading the graph -------------------------------------------------------------------------


def is_op(g: CellGraph, node: str, *ops: str) -> bool:
    data = g.nx._node[node]  # the passes' most frequent question: networkx's dict read directly
    return data["kind"] == "op" and (not ops or data["op"] in ops)


def single_use(g: CellGraph, node: str) -> bool:
    """Exactly one user edge, and not a value that leaves the step."""
    users = g.nx._succ[node]
    return len(users) == 1 and len(next(iter(users.values()))) == 1 and node not in g.result_set()


def only_user(g: CellGraph, node: str) -> Optional[str]:
    return next(iter(g.nx._succ[node])) if single_use(g, node) else None


def channels(g: CellGraph, node: str) -> Optional[int]:
    return g[node].get("channels")


def is_weight_side(g: CellGraph, node: str) -> bool:
    """A parameter, or a tensor computed from parameters only (a fused weight or bias)."""
    data = g[node]
    return data["kind"] == "weight" or (data["kind"] == "op" and data["op"] in WEIGHT_OPS)


def wshape(g: CellGraph, node: str) -> tuple[int, ...]:
    """The shape of a weight-side tensor."""
    data = g[node]
    if data["kind"] == "weight":
        return tuple(g.weights[data["name"]].shape)
    return tuple(data["shape"])


def conv_weight(g: CellGraph, conv: str) -> str:
    return g.operands(conv)[1]


def conv_source(g: CellGraph, conv: str) -> str:
    return g.operands(conv)[0]


def conv_bias(g: CellGraph, conv: str) -> Optional[str]:
    operands = g.operands(conv)
    return operands[2] if len(operands) > 2 else None


def conv_key(g: CellGraph, conv: str) -> tuple:
    """What two convs must share to be one conv: kernel and geometry (padding, stride, resize;
    None: "same", 1, none) — convs of other geometries compute other positions."""
    return (tuple(g[conv]["kernel"]), g[conv].get("geometry"))


def stage(g: CellGraph, node: str) -> int:
    """The number of convs on the longest path into `node` (see the module docstring).
    Computed for `node` and its ancestors only, remembered until the graph changes. A leaf
    standing for a value computed elsewhere (kernel_embedding.affected_region) says its own."""
    known = g.derived("stages", lambda _: {})
    stack = [node]
    while stack:
        top = stack[-1]
        if top in known:
            stack.pop()
            continue
        operands = g.operands(top)
        missing = [o for o in operands if o not in known]
        if missing:
            stack.extend(missing)
            continue
        stack.pop()
        known[top] = max((known[o] + is_op(g, o, "conv") for o in operands), default=g[top].get("stage", 0))
    return known[node]


def evaluation_order(g: CellGraph) -> dict[str, int]:
    """Node → its position when the equations are evaluated in the order they were written,
    each one operand by operand, left to right (a depth-first post-order from every named
    value, in creation order). Within `[W₃ ⋆ x, W₅ ⋆ x]` the 3×3 conv comes first."""
    return g.derived("evaluation_order", _evaluation_order)


def _evaluation_order(g: CellGraph) -> dict[str, int]:
    position: dict[str, int] = {}
    operands = g.operands
    named = sorted((n for n, data in g.nx._node.items() if data["kind"] == "op" and data.get("name")),
                   key=creation_order)
    for start in named + g.results():
        if start in position:
            continue
        # each entry: a node and the operands of it not yet looked at; a node is placed when
        # the last of its operands is (half the time of a stack of (node, expanded) pairs)
        stack = [(start, iter(operands(start)))]
        while stack:
            node, rest = stack[-1]
            for operand in rest:
                if operand not in position:
                    stack.append((operand, iter(operands(operand))))
                    break
            else:
                stack.pop()
                position[node] = len(position)
    return position


# --- sums --------------------------------------------------------------------------------------


def is_inner_add(g: CellGraph, node: str) -> bool:
    if not is_op(g, node, "add"):
        return False
    user = only_user(g, node)
    return user is not None and is_op(g, user, "add")


def sum_roots(g: CellGraph) -> list[str]:
    return [n for n in g.ops("add") if not is_inner_add(g, n)]


def is_sum_root(g: CellGraph, node: str) -> bool:
    return is_op(g, node, "add") and not is_inner_add(g, node)


def enclosing_sum(g: CellGraph, node: str) -> list[str]:
    """The root of the sum tree `node` is an inner add of (as a one-element list), else [].
    A rule anchored on a sum root revisits it when anything inside its tree changes."""
    if not is_inner_add(g, node):
        return []
    while is_inner_add(g, node):
        node = only_user(g, node)
    return [node]


def sum_terms(g: CellGraph, root: str) -> list[str]:
    """The leaves of the sum tree rooted at `root`, left to right (a node may repeat)."""
    terms: list[str] = []
    for operand in g.operands(root):
        if is_inner_add(g, operand):
            terms.extend(sum_terms(g, operand))
        else:
            terms.append(operand)
    return terms


def sum_of(g: CellGraph, root: str, node: str) -> bool:
    """Is `node` a term of the sum rooted at `root` that feeds nothing else?"""
    user = only_user(g, node)
    while user is not None and user != root and is_inner_add(g, user):
        user = only_user(g, user)
    return user == root


def build_sum(g: CellGraph, terms: list[str], width: Optional[int]) -> str:
    """A left-nested chain of adds over `terms` (full-width tensors first, broadcasts last)."""
    ordered = [t for t in terms if channels(g, t) is not None] + [t for t in terms if channels(g, t) is None]
    node = ordered[0]
    for term in ordered[1:]:
        node = new_op(g, "add", [node, term], channels=width)
    return node


def replace_sum(g: CellGraph, root: str, terms: list[str]) -> str:
    """Make the sum rooted at `root` read `terms` instead; returns the new root."""
    new = build_sum(g, terms, channels(g, root))
    replace(g, root, new)
    return new


# --- building ----------------------------------------------------------------------------------


def new_op(g: CellGraph, op: str, operands: list[str], *, channels: Optional[int] = None, **attrs) -> str:
    node = g.add_op(op, operands, **attrs)
    g[node]["channels"] = channels
    return node


def new_weight_op(g: CellGraph, op: str, operands: list[str], shape: tuple[int, ...], **attrs) -> str:
    """A weight-side op; conv weights also get `in_channels` and `kernel` (as weight nodes have)."""
    node = new_op(g, op, operands, channels=shape[0], shape=tuple(shape), **attrs)
    if len(shape) > 2 and "kernel" not in attrs:
        g[node]["kernel"] = tuple(shape[2:])
    if len(shape) > 1:
        g[node]["in_channels"] = shape[1]
    return node


def weight_cat(g: CellGraph, parts: list[str], dim: int) -> str:
    if len(parts) == 1:
        return parts[0]
    shapes = [wshape(g, p) for p in parts]
    shape = list(shapes[0])
    shape[dim] = sum(s[dim] for s in shapes)
    return new_weight_op(g, "weight_cat", parts, tuple(shape), dim=dim)


def weight_slice(g: CellGraph, weight: str, start: int, stop: int) -> str:
    shape = wshape(g, weight)
    if (start, stop) == (0, shape[0]):
        return weight
    return new_weight_op(g, "weight_slice", [weight], (stop - start, *shape[1:]), start=start, stop=stop)


def fill(g: CellGraph, like: str, value: float, size: int) -> str:
    return new_weight_op(g, "fill", [like], (size,), value=value, size=size)


def slice_of(g: CellGraph, tensor: str, start: int, stop: int) -> str:
    if (start, stop) == (0, channels(g, tensor)):
        return tensor
    return new_op(g, "slice", [tensor], channels=stop - start, start=start, stop=stop)


def new_conv(g: CellGraph, source: str, weight: str, bias: Optional[str], *, like: str,
             kernel: Optional[tuple[int, ...]] = None) -> str:
    """A conv node that replaces `like` (or convs of its `conv_key`): it keeps `like`'s geometry
    (ops.conv_geometry), and its kernel unless given one (kernel embedding pads it)."""
    like_kernel, geometry = conv_key(g, like)
    operands = [source, weight] + ([bias] if bias is not None else [])
    extra = {"geometry": geometry} if geometry is not None else {}
    return new_op(g, "conv", operands, channels=wshape(g, weight)[0], kernel=tuple(kernel or like_kernel), **extra)


def concat(g: CellGraph, parts: list[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    return new_op(g, "concat", parts, channels=sum(channels(g, p) for p in parts))


def replace(g: CellGraph, old: str, new: str) -> None:
    """Every use of `old` (and the step's results) reads `new`; `new` inherits `old`'s name."""
    if old == new:
        return
    if g[new].get("name") is None and g[old].get("name") is not None:
        g[new]["name"] = g[old]["name"]
        g[new]["span"] = g[old].get("span")
    g.replace_uses(old, new)


# --- bias-like terms ---------------------------------------------------------------------------


def bias_vector(g: CellGraph, term: str, width: int, like: str) -> Optional[str]:
    """If `term` adds the same value to every pixel of a `width`-channel map, the (width,)
    vector it adds (built on demand); else None. `like` is any weight (dtype and device of a fill).

    Bias-like: a bias (`channel_view` of a (C,) weight-side tensor), an elementwise weight
    of shape (C, 1, …, 1) or (1, …, 1), a scalar constant.
    """
    data = g[term]
    if data["kind"] == "const":
        return fill(g, like, data["value"], width)
    if is_op(g, term, "channel_view"):
        (vector,) = g.operands(term)
        return vector if wshape(g, vector) == (width,) else None
    if is_weight_side(g, term):
        shape = wshape(g, term)
        if len(shape) == g.spatial_dims + 1 and all(d == 1 for d in shape[1:]) and shape[0] == width:
            return new_weight_op(g, "weight_view", [term], (width,))
    return None


# --- labels for reports ------------------------------------------------------------------------


def weight_symbols(g: CellGraph, node: str) -> list[str]:
    """The parameters a weight-side expression is built from, in order."""
    data = g[node]
    if data["kind"] == "weight":
        return [data["name"]]
    if data["kind"] != "op":
        return []
    symbols: list[str] = []
    for operand in g.operands(node):
        if data["op"] == "fill":
            break
        symbols += [s for s in weight_symbols(g, operand) if s not in symbols]
    return symbols


def label(g: CellGraph, node: str) -> str:
    """A short human name for a value: its spec name, `[x, h]` for a concat, …"""
    data = g[node]
    if data.get("name"):
        return data["name"]
    if is_op(g, node, "concat"):
        return "[" + ", ".join(label(g, o) for o in g.operands(node)) + "]"
    if is_op(g, node, "slice"):
        return f"{label(g, g.operands(node)[0])}[{data['start']}:{data['stop']}]"
    if is_op(g, node, "conv"):
        return conv_label(g, node) + " ⋆ " + label(g, conv_source(g, node))
    if is_op(g, node):
        return data["op"]
    return data["kind"]


def owner(g: CellGraph, node: str) -> str:
    """The name of the equation a value is part of: its own, or the nearest named user's."""
    seen, frontier = {node}, [node]
    while frontier:
        for n in frontier:
            if g[n].get("name") and g[n]["kind"] == "op":
                return g[n]["name"]
        frontier = [u for n in frontier for u in sorted(g.users(n), key=lambda u: int(u[1:])) if u not in seen]
        seen.update(frontier)
    return label(g, node)


def conv_label(g: CellGraph, conv: str) -> str:
    return " ".join(weight_symbols(g, conv_weight(g, conv)))


def summary(before: CellGraph, after: CellGraph) -> str:
    """`ConvLSTM: 8 convs -> 1` (plus the other ops, which fusion also changes)."""
    def other(graph: CellGraph) -> int:
        return sum(1 for n in graph.ops() if graph[n]["op"] not in WEIGHT_OPS and graph[n]["op"] != "conv")
    return (f"{after.name}: {before.count('conv')} convs -> {after.count('conv')}, "
            f"{other(before)} other ops -> {other(after)}")
