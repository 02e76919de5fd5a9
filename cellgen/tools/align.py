"""Which node of cell A is which node of cell B: the alignment `cellgen diff` reports on.

Nodes are matched in stages, each trusting the pairs found before it (its "anchors"):

1. name        the same input, state, weight symbol or equation name on both sides;
               and the next values of two matched states (`c'` of `c`).
2. structure   Weisfeiler-Lehman colours at the stable round (see wl.py): a node whose place
               in the whole graph is unique and the same on both sides. This matches every
               node of a copy whose gates (or weights) were renamed.
3. expression  the same operation on the same (matched) operands, bottom-up: `σ(W_xi ⋆ x + …)`
               is the same value whatever the gate is called.
4. neighbours  for named values left over: the same kind of value that references and is
               used by mostly the same anchors (Jaccard similarity ≥ 1/2, the best match for
               both and unambiguous). This matches a renamed gate in an otherwise changed cell.
5. position    for anonymous ops and constants: the operand at the same port of two matched
               ops, if it is the same op. This only colours pictures; it never renames.

Stages 2–5 repeat until no new pair is found. Whatever is left is added (B) or removed (A).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Optional

from cellgen.ir.graph import NOT_COMPUTED, CellGraph
from cellgen.tools import wl

NAMED = ("input", "state", "weight", "gate")  # categories whose nodes carry a spec name

# Node attributes that are not part of what an operation computes: where it came from, and
# sizes that the declarations (and channel inference) fix and the diff reports on their own.
# A LayerNorm's settings (mode, axes, eps) are of that kind too: the diff reports them as
# attributes of the norm, and its gain and bias weights say which norm it is; and a conv's
# geometry (pad, stride, resize), which it reports with the conv's weight, as its kernel.
_NOT_SEMANTIC = NOT_COMPUTED | {"op", "in_channels", "kernel", "shape", "broadcast", "weight_kind", "mode", "axes",
                                "eps", "symbol", "geometry"}


def category(graph: CellGraph, node: str) -> tuple:
    """What a node may be matched with: an input with an input, a bias with a bias, a named
    value (an equation's result) with a named value, an anonymous op with an anonymous op."""
    data = graph[node]
    kind = data["kind"]
    if kind == "weight":
        return ("weight", data.get("weight_kind"))
    if kind == "op":
        return ("gate",) if data.get("name") else ("op",)
    return (kind,)


def label(graph: CellGraph, node: str, *, detail: bool = False) -> tuple:
    """What a node computes, without its name: kind, op and semantic attributes (a constant's
    value, a future op's axis). `detail` adds the kernel and channels, for change colouring."""
    data = graph[node]
    extra = tuple(sorted((key, _frozen(value)) for key, value in data.items() if key not in _NOT_SEMANTIC))
    base = (data["kind"], data.get("op") or data.get("weight_kind"), extra)
    if detail:
        base += (_frozen(data.get("kernel")), data.get("channels"), _frozen(data.get("shape")),
                 _frozen(data.get("geometry")))
    return base


def _frozen(value) -> Hashable:
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


@dataclass
class Alignment:
    """A partial one-to-one map between the nodes of two cell graphs."""

    a: CellGraph
    b: CellGraph
    pairs: dict[str, str] = field(default_factory=dict)  # node of a → node of b
    how: dict[str, str] = field(default_factory=dict)  # node of a → the stage that matched it
    _reverse: dict[str, str] = field(default_factory=dict, repr=False)

    def pair(self, node_a: str, node_b: str, how: str) -> None:
        assert node_a not in self.pairs and node_b not in self._reverse, (node_a, node_b)
        self.pairs[node_a] = node_b
        self._reverse[node_b] = node_a
        self.how[node_a] = how

    def partner(self, node: str, side: str) -> Optional[str]:
        """The matched node on the other side of `node` (which is on `side`, "a" or "b")."""
        return self.pairs.get(node) if side == "a" else self._reverse.get(node)

    def unmatched(self, side: str) -> list[str]:
        graph, table = (self.a, self.pairs) if side == "a" else (self.b, self._reverse)
        return [node for node in graph.order() if node not in table]

    def renamed(self) -> list[tuple[str, str]]:
        """Matched named nodes whose names differ, in A's order."""
        return [(na, nb) for na, nb in self.pairs.items()
                if self.a[na].get("name") and self.b[nb].get("name") and self.a[na]["name"] != self.b[nb]["name"]]

    def anchor(self, node: str, side: str) -> Hashable:
        """A token that is equal for the two nodes of a pair, and unique for an unmatched node."""
        node_a = node if side == "a" else self._reverse.get(node)
        if node_a is not None and node_a in self.pairs:
            return ("pair", node_a)
        return ("unmatched", side, node)


def align(a: CellGraph, b: CellGraph) -> Alignment:
    """Match the nodes of `a` and `b` (see the module docstring for the stages)."""
    alignment = Alignment(a, b)
    _by_name(alignment)
    while True:
        found = _by_structure(alignment) + _by_expression(alignment) + _by_neighbours(alignment) + _by_position(
            alignment)
        _next_states(alignment)
        if not found:
            return alignment


# --- stage 1: names --------------------------------------------------------------------------

def _by_name(al: Alignment) -> None:
    # A weight keeps its symbol when its kind changes (bias → elementwise): that is a change, not
    # a removal and an addition; so names are matched by the coarse category only.
    named_b = {(category(al.b, n)[0], al.b[n]["name"]): n for n in al.b.order() if al.b[n].get("name")}
    for node in al.a.order():
        name = al.a[node].get("name")
        partner = named_b.get((category(al.a, node)[0], name)) if name else None
        if partner is not None and partner not in al._reverse:
            al.pair(node, partner, "name")
    _next_states(al)


def _next_states(al: Alignment) -> None:
    """The next values of matched states are each other's, whatever they are called; so are
    their histories (`c[t-5:t-1]` and `c[t-∞:t-1]`: the state's history, a different length)."""
    for state, node_a in al.a.state_nodes.items():
        node_b = al.pairs.get(node_a)
        if node_b is None:
            continue
        state_b = al.b[node_b]["name"]
        next_a, next_b = al.a.next_state.get(state), al.b.next_state.get(state_b)
        if next_a and next_b and next_a not in al.pairs and next_b not in al._reverse \
                and category(al.a, next_a) == category(al.b, next_b):
            al.pair(next_a, next_b, "name")
        histories_a, histories_b = _histories(al.a, state, al.pairs), _histories(al.b, state_b, al._reverse)
        if len(histories_a) == 1 and len(histories_b) == 1:
            al.pair(histories_a[0], histories_b[0], "name")


def _histories(graph: CellGraph, state: str, matched: dict) -> list[str]:
    """The unmatched history nodes of one state."""
    return [n for n in graph.order() if graph[n]["kind"] == "history" and graph[n].get("state") == state
            and n not in matched]


# --- stage 2: Weisfeiler-Lehman colours --------------------------------------------------------

def _by_structure(al: Alignment) -> int:
    seeds = []
    for graph, side in ((al.a, "a"), (al.b, "b")):
        seeds.append({n: al.anchor(n, side) if al.partner(n, side) else (category(graph, n), label(graph, n))
                      for n in graph.nx})
    history_a, history_b = wl.refine([(al.a, seeds[0]), (al.b, seeds[1])])
    return _pair_unique(al, history_a[-1], history_b[-1], "structure")


def _pair_unique(al: Alignment, key_a: dict, key_b: dict, how: str, only: tuple = ()) -> int:
    """Pair unmatched nodes whose (category, key) occurs exactly once on each side."""
    groups: dict[Hashable, tuple[list[str], list[str]]] = {}
    for index, (graph, keys, side) in enumerate(((al.a, key_a, "a"), (al.b, key_b, "b"))):
        for node in al.unmatched(side):
            if node in keys and (not only or category(graph, node)[0] in only):
                groups.setdefault((category(graph, node), keys[node]), ([], []))[index].append(node)
    found = 0
    for nodes_a, nodes_b in groups.values():
        if len(nodes_a) == 1 and len(nodes_b) == 1:
            al.pair(nodes_a[0], nodes_b[0], how)
            found += 1
    return found


# --- stage 3: same expression over matched operands --------------------------------------------

def _by_expression(al: Alignment) -> int:
    keys = []
    for graph, side in ((al.a, "a"), (al.b, "b")):
        memo: dict[str, Hashable] = {}
        keys.append({n: _expression(al, graph, side, n, memo, root=True)
                     for n in al.unmatched(side) if graph[n]["kind"] == "op"})
    return _pair_unique(al, keys[0], keys[1], "expression")


def _expression(al: Alignment, graph: CellGraph, side: str, node: str, memo: dict, root: bool = False) -> Hashable:
    """A node's value as a tree over anchors: operands that are matched (or named, or leaves)
    are tokens; anonymous unmatched ops are expanded."""
    if not root:
        if al.partner(node, side) or graph[node].get("name") or graph[node]["kind"] in ("input", "state", "weight"):
            return al.anchor(node, side)
        if node in memo:
            return memo[node]
    operands = [_expression(al, graph, side, operand, memo) for operand in graph.operands(node)]
    if not wl.ordered(graph, node):
        operands = sorted(operands, key=repr)
    key = (label(graph, node), tuple(operands))
    if not root:
        memo[node] = key
    return key


# --- stage 4: similar neighbourhoods -----------------------------------------------------------

def _by_neighbours(al: Alignment) -> int:
    tokens_a, tokens_b = _tokens(al, al.a, "a"), _tokens(al, al.b, "b")
    scores: list[tuple[float, str, str]] = []
    for node_a, ta in tokens_a.items():
        for node_b, tb in tokens_b.items():
            if category(al.a, node_a) == category(al.b, node_b) and ta & tb:
                scores.append((len(ta & tb) / len(ta | tb), node_a, node_b))
    best_a: dict[str, list] = {}
    best_b: dict[str, list] = {}
    for score, node_a, node_b in scores:
        for best, node in ((best_a, node_a), (best_b, node_b)):
            if node not in best or score > best[node][0]:
                best[node] = [score, (node_a, node_b), 1]
            elif score == best[node][0]:
                best[node][2] += 1  # a tie: ambiguous
    found = 0
    for node_a, (score, pair, ties) in best_a.items():
        node_b = pair[1]
        if score >= 0.5 and ties == 1 and best_b[node_b][1] == pair and best_b[node_b][2] == 1:
            al.pair(node_a, node_b, "neighbours")
            found += 1
    return found


def _tokens(al: Alignment, graph: CellGraph, side: str) -> dict[str, set]:
    """For each unmatched named node: the anchors it references, is used by, and sits beside."""
    named = [n for n in graph.order() if category(graph, n)[0] in NAMED]
    refs = {n: references(graph, n) for n in named}
    used_by: dict[str, set] = {n: set() for n in named}
    for user, referenced in refs.items():
        for node in referenced:
            used_by[node].add(user)
    result = {}
    for node in al.unmatched(side):
        if category(graph, node)[0] not in NAMED:
            continue
        tokens = {("ref", al.anchor(r, side)) for r in refs[node]}
        tokens |= {("use", al.anchor(u, side)) for u in used_by[node]}
        tokens |= {("beside", al.anchor(s, side)) for s in _siblings(graph, node)}
        if tokens:
            result[node] = tokens
    return result


def references(graph: CellGraph, node: str) -> set[str]:
    """The named values and leaves a node's expression reads, looking through anonymous ops."""
    found, stack, seen = set(), list(graph.operands(node)), set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        if category(graph, current)[0] in NAMED:
            found.add(current)
        else:
            stack.extend(graph.operands(current))
    return found


def _siblings(graph: CellGraph, node: str) -> set[str]:
    """Named operands of the ops that use `node` directly (x for W_xi in `W_xi ⋆ x`)."""
    users = list(graph.users(node))
    while any(graph[u].get("op") == "channel_view" for u in users):  # a bias is used through its view
        users = [w for u in users for w in (graph.users(u) if graph[u].get("op") == "channel_view" else [u])]
    return {operand for user in users for operand in graph.operands(user)
            if operand != node and category(graph, operand)[0] in NAMED}


# --- stage 5: same position under matched ops ----------------------------------------------------

def _by_position(al: Alignment) -> int:
    found = 0
    for node_a, node_b in list(al.pairs.items()):
        if al.a[node_a]["kind"] != "op" or al.b[node_b]["kind"] != "op":
            continue
        operands_a, operands_b = al.a.operands(node_a), al.b.operands(node_b)
        if len(operands_a) != len(operands_b):
            continue
        for operand_a, operand_b in zip(operands_a, operands_b):
            if operand_a in al.pairs or operand_b in al._reverse:
                continue
            cat_a, cat_b = category(al.a, operand_a), category(al.b, operand_b)
            if cat_a == cat_b and cat_a[0] in ("op", "const") and \
                    al.a[operand_a].get("op") == al.b[operand_b].get("op"):
                al.pair(operand_a, operand_b, "position")
                found += 1
    return found
