"""`CellGraph`: one time step of a cell as a dataflow graph on networkx.

Nodes are identified by short strings and carry a dict of attributes:

    kind       "input" | "state" | "history" | "weight" | "const" | "op"
    name       the spec's name for the value (`x`, `c`, `W_xi`, `i`, `c'`) or None
    op         for op nodes: "conv", "add", "mul", "sigmoid", "concat", … (see ops.py)
    channels   channel count, filled in by channel inference
    span       where in the spec the value comes from (for errors)
    …          op-specific attributes (a conv's `kernel`, a const's `value`, …)

Edges run from operand to user; the edge key is the operand's position (port). The graph
also records which node is each state's next value and which node is the cell's output.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

import networkx as nx


@dataclass
class StateInfo:
    name: str
    channels: int
    zigzag: bool = False
    history: bool = False  # some equation reads its past values `c[t-τ:t-1]`
    history_size: Optional[int] = None  # how many past values it keeps (None: every one)


@dataclass
class WeightInfo:
    """A learnable tensor of the cell: its symbol, what it is, and its shape."""

    symbol: str
    kind: str  # "conv" | "bias" | "elementwise" | "norm_gain" | "norm_bias"
    shape: tuple[int, ...]
    kernel: tuple[int, ...] = ()


@dataclass
class CellGraph:
    name: str
    citation: Optional[str] = None
    params: dict[str, Optional[int]] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)  # input name → node
    input_windows: dict[str, int] = field(default_factory=dict)  # input name → frames per step (3D)
    states: dict[str, StateInfo] = field(default_factory=dict)
    state_nodes: dict[str, str] = field(default_factory=dict)  # state name → node of its current value
    next_state: dict[str, str] = field(default_factory=dict)  # state name → node of its next value
    output: str = ""  # node of the cell's output
    weights: dict[str, WeightInfo] = field(default_factory=dict)  # symbol → info
    spatial_dims: int = 2
    nx: nx.MultiDiGraph = field(default_factory=nx.MultiDiGraph)
    _ids: Any = field(default_factory=itertools.count, repr=False)
    # Provenance, from lowering: each name a definition of the spec defines (`i`, `c'`, each
    # target of an unpack) → the node of its value (for an alias, `C = c[t-τ:t-1]`, the node
    # it names). It describes the lowered graph; passes move a value's `name`, not this map.
    provenance: dict[str, str] = field(default_factory=dict)

    # --- building ---------------------------------------------------------------------------
    def add(self, kind: str, operands: Iterable[str] = (), *, name: Optional[str] = None, **attrs) -> str:
        node = f"{kind[0]}{next(self._ids)}"
        self.nx.add_node(node, kind=kind, name=name, channels=None, **attrs)
        for port, operand in enumerate(operands):
            self.nx.add_edge(operand, node, key=port)
        return node

    def add_op(self, op: str, operands: Iterable[str], **attrs) -> str:
        return self.add("op", operands, op=op, **attrs)

    # --- reading ----------------------------------------------------------------------------
    def __getitem__(self, node: str) -> dict:
        return self.nx.nodes[node]

    def operands(self, node: str) -> list[str]:
        edges = sorted(self.nx.in_edges(node, keys=True), key=lambda edge: edge[2])
        return [source for source, _, _ in edges]

    def users(self, node: str) -> list[str]:
        return list(dict.fromkeys(target for _, target in self.nx.out_edges(node)))

    def weight_node(self, symbol: str) -> str:
        return next(n for n, d in self.nx.nodes(data=True) if d["kind"] == "weight" and d["name"] == symbol)

    def ops(self, op: Optional[str] = None) -> list[str]:
        return [n for n in self.order() if self[n]["kind"] == "op" and (op is None or self[n]["op"] == op)]

    def results(self) -> list[str]:
        """Nodes whose values leave the step: the output and every state's next value."""
        return list(dict.fromkeys([self.output, *self.next_state.values()]))

    def order(self) -> list[str]:
        """Nodes in a deterministic topological order (operands before users)."""
        return list(nx.lexicographical_topological_sort(self.nx, key=creation_order))

    # --- rewriting (used by the optimizer) --------------------------------------------------
    def replace_uses(self, old: str, new: str) -> None:
        """Make every user of `old` (and the step's results) read `new` instead."""
        for _, user, port in list(self.nx.out_edges(old, keys=True)):
            self.nx.remove_edge(old, user, key=port)
            self.nx.add_edge(new, user, key=port)
        self.output = new if self.output == old else self.output
        self.next_state = {s: new if n == old else n for s, n in self.next_state.items()}

    def remove_dead(self) -> int:
        """Drop op and const nodes that no result depends on; return how many were dropped."""
        live = set(self.results())
        for result in list(live):
            live |= nx.ancestors(self.nx, result)
        dead = [n for n in self.nx if n not in live and self[n]["kind"] in ("op", "const")]
        self.nx.remove_nodes_from(dead)
        return len(dead)

    def copy(self) -> "CellGraph":
        clone = CellGraph(self.name, self.citation, dict(self.params), dict(self.inputs), dict(self.input_windows),
                          {k: StateInfo(**vars(v)) for k, v in self.states.items()}, dict(self.state_nodes),
                          dict(self.next_state), self.output,
                          {k: WeightInfo(**vars(v)) for k, v in self.weights.items()}, self.spatial_dims,
                          self.nx.copy(), provenance=dict(self.provenance))
        clone._ids = itertools.count(max((creation_order(n) for n in self.nx), default=0) + 1)
        return clone

    def count(self, op: str) -> int:
        return len(self.ops(op))


def creation_order(node: str) -> int:
    return int(node[1:])
