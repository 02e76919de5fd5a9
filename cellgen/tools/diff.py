"""`cellgen diff A B`: what differs between two cells, as a reader of their papers would say it.

The two cells are resolved (a variant's parent merged in, blocks inlined, loops unrolled), so a
variant is compared with its parent by what it computes, then lowered to graphs and aligned
(cellgen/tools/align.py): by names first, then by structure, so a gate renamed in a copy is
still the same gate. `diff_cells` turns the alignment into a `CellDiff`: states (zigzag,
history), inputs (window), gates, weights and attributes (kernels, fused convs, LayerNorms,
functions, constants, …) added, removed or changed; the resolved definitions as a unified diff
of their canonical text; and the totals (parameters, MACs and convs per step) of both cells. Text, JSON and pictures (render.py) are views of a
`CellDiff`; the JSON schema is documented in docs/diff.md.

Two cells are *equivalent* when they compute the same values from the same weights, inputs and
states, up to the names of intermediate values (gates) and the order of terms in sums and
products. The exit status follows diff(1): 0 equivalent, 1 different, 2 trouble.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

from cellgen.errors import CellgenError, ParamError
from cellgen.ir.graph import CellGraph
from cellgen.ir.ops import OPS, geometry_text, in_group
from cellgen.language import syntax as ast
from cellgen.language.printer import format_expr
from cellgen.language.walk import transform, walk
from cellgen.table import align as _table
from cellgen.tools import render, stats, wl
from cellgen.tools.align import Alignment, align, category, label, references

SCHEMA = "cellgen-diff"
VERSION = 1

# Ops that are the arithmetic of an equation; everything else (σ, tanh, a norm, a softmax…)
# is a "function" whose appearance or disappearance is reported as an attribute change.
# Ops that only move values (a channel chunk, a stack's entry) are not functions either.
_ARITHMETIC = in_group("arithmetic")


# --- the result --------------------------------------------------------------------------------

@dataclass
class CellSide:
    """One of the two cells, and its totals."""

    origin: str  # the path or `specs/NAME.cell` it was read from
    name: str
    citation: Optional[str]
    params: dict[str, int]  # every param's value, as lowered
    spatial_dims: int
    size: tuple[int, ...]  # the spatial size MACs are counted at
    parameters: int
    macs: int  # conv multiply-accumulates per step and batch element at `size`
    convs: dict[str, int]  # "O0" → convs per step as written, "O2" → after optimisation


@dataclass
class Rename:
    """A value matched across the cells although its name differs."""

    kind: str  # "gate" | "weight" | "state" | "input"
    a: str
    b: str
    how: str  # the alignment stage that matched it: "structure" | "expression" | "neighbours"


@dataclass
class TensorChange:
    """A state or input added, removed, or declared differently."""

    status: str  # "added" | "removed" | "changed"
    a: Optional[str]  # its name in A (None if added)
    b: Optional[str]  # its name in B (None if removed)
    before: Optional[dict]  # {"channels": 64, "zigzag": False, …}
    after: Optional[dict]
    fields: list[str] = field(default_factory=list)  # what changed


@dataclass
class WeightChange:
    status: str  # "added" | "removed" | "changed"
    a: Optional[str]
    b: Optional[str]
    before: Optional[dict]  # {"kind", "shape", "kernel", "parameters", "gate"}
    after: Optional[dict]
    fields: list[str] = field(default_factory=list)


@dataclass
class AttributeChange:
    """A change in how something is computed: conv dims, a kernel, a gate's functions."""

    what: str  # "conv_dims" | "kernel" | "weight_kind" | "functions" | "constants" | "output" | "outputs"
    where: Optional[str]  # the weight symbol or equation (A's name), None for the whole cell
    before: Any
    after: Any


@dataclass
class EquationDiff:
    changed: list[str]  # equations (A's names) that compute something else
    added: list[str]  # equations only in B (B's names)
    removed: list[str]  # equations only in A
    unified: list[str]  # the unified diff of the canonical equations, one line per item


@dataclass
class CellDiff:
    a: CellSide
    b: CellSide
    renames: list[Rename]
    inputs: list[TensorChange]
    states: list[TensorChange]
    gates_added: list[str]
    gates_removed: list[str]
    weights: list[WeightChange]
    attributes: list[AttributeChange]
    equations: EquationDiff
    # For pictures: every node's status, "same" | "changed" | "added" | "removed".
    status_a: dict[str, str] = field(default_factory=dict, repr=False)
    status_b: dict[str, str] = field(default_factory=dict, repr=False)
    alignment: Optional[Alignment] = field(default=None, repr=False)

    @property
    def equivalent(self) -> bool:
        """Same computation from the same weights, inputs and states; gates may be renamed."""
        return not (self.inputs or self.states or self.gates_added or self.gates_removed or self.weights
                    or self.attributes or self.equations.changed or self.equations.added
                    or self.equations.removed or any(r.kind != "gate" for r in self.renames))

    @property
    def identical(self) -> bool:
        """Equivalent, with every name the same."""
        return self.equivalent and not self.renames

    @property
    def exit_status(self) -> int:
        return 0 if self.equivalent else 1

    def to_json(self) -> dict:
        """The documented JSON form (docs/diff.md, schema `cellgen-diff` version 1)."""
        def side(s: CellSide) -> dict:
            return {**asdict(s), "size": list(s.size)}

        def delta(get) -> dict:
            before, after = get(self.a), get(self.b)
            return {"a": before, "b": after, "delta": after - before}

        return _plain({
            "schema": SCHEMA,
            "version": VERSION,
            "equivalent": self.equivalent,
            "identical": self.identical,
            "a": side(self.a),
            "b": side(self.b),
            "renames": [asdict(r) for r in self.renames],
            "inputs": [asdict(c) for c in self.inputs],
            "states": [asdict(c) for c in self.states],
            "gates": {"added": self.gates_added, "removed": self.gates_removed},
            "weights": [asdict(c) for c in self.weights],
            "attributes": [asdict(c) for c in self.attributes],
            "equations": {"changed": self.equations.changed, "added": self.equations.added,
                          "removed": self.equations.removed, "unified": "\n".join(self.equations.unified)},
            "totals": {
                "parameters": delta(lambda s: s.parameters),
                "macs": delta(lambda s: s.macs),
                "convs_O0": delta(lambda s: s.convs["O0"]),
                "convs_O2": delta(lambda s: s.convs["O2"]),
            },
        })


def _plain(value):
    """Tuples as lists, recursively: what json.dumps would do, made explicit for comparisons."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


# --- loading -----------------------------------------------------------------------------------

@dataclass
class LoadedCell:
    origin: str
    spec: ast.CellSpec
    graph: CellGraph


def load_cells(specs: Sequence, params: Optional[dict] = None) -> list[LoadedCell]:
    """Parse and lower each spec. A param applies to every spec that declares it; a param that
    none declares is an error (a typo would otherwise pass unnoticed)."""
    from cellgen.api import load_spec
    from cellgen.ir.lower import lower

    params = dict(params or {})
    loaded = [load_spec(spec) for spec in specs]
    declared = {p.name for item in loaded for p in item.resolved.params}
    for name in params:
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise ParamError(f"no cell here has a param `{name}`", hint=f"their params are: {known}")
    cells = []
    for item in loaded:
        own = {p.name for p in item.resolved.params}
        cells.append(LoadedCell(item.origin, item.resolved, lower(item.resolved, {k: v for k, v in params.items() if k in own})))
    return cells


def spatial_size(graph: CellGraph, size: Optional[Sequence[int]]) -> tuple[int, ...]:
    """The input size to count MACs at: the last `spatial_dims` numbers of `size` (so that
    `--size 2 64 64` serves a 2D cell and a 3D one; a 3D cell given H W takes T from its input
    window), or 64×64 (and the window's T) by default; see stats.input_size."""
    if not size:
        return stats.input_size(graph)
    if len(size) < graph.spatial_dims and not (graph.spatial_dims == 3 and len(size) == 2):
        want = "H W" if graph.spatial_dims == 2 else "T H W"
        raise CellgenError(f"{graph.name} is a {graph.spatial_dims}D cell: --size needs {want}, "
                           f"not {' '.join(map(str, size))}")
    return stats.input_size(graph, tuple(size[-graph.spatial_dims:]))


def _side(cell: LoadedCell, size: Optional[Sequence[int]]) -> CellSide:
    from cellgen.passes import optimize

    graph = cell.graph
    spatial = spatial_size(graph, size)
    optimized = optimize(graph.copy(), 2)
    return CellSide(cell.origin, graph.name, graph.citation, dict(graph.params), graph.spatial_dims, spatial,
                    stats.parameter_count(graph), stats.macs_per_step(graph, spatial),
                    {"O0": stats.conv_count(graph), "O2": stats.conv_count(optimized)})


# --- computing the diff ----------------------------------------------------------------------------

def diff_cells(a, b, params: Optional[dict] = None, *, size: Optional[Sequence[int]] = None,
               context: int = 3) -> CellDiff:
    """Compare two specs (paths, shipped names or text) with the same `params`.

    Both are resolved first (a variant's parent merged in, blocks inlined, loops unrolled), so
    a variant is compared with its parent by what it computes. `size` is the input size for
    MACs (see `spatial_size`); `context` the number of unchanged equations around each change
    in the unified diff.
    """
    cell_a, cell_b = load_cells([a, b], params)
    return diff_loaded(cell_a, cell_b, size=size, context=context)


def diff_loaded(cell_a: LoadedCell, cell_b: LoadedCell, *, size: Optional[Sequence[int]] = None,
                context: int = 3) -> CellDiff:
    ga, gb = cell_a.graph, cell_b.graph
    al = align(ga, gb)
    eq = _Equations(al, cell_a, cell_b)
    result = CellDiff(
        a=_side(cell_a, size), b=_side(cell_b, size),
        renames=_renames(al),
        inputs=_tensors(al, ga.inputs, gb.inputs, _describe_input),
        states=_tensors(al, ga.state_nodes, gb.state_nodes, _describe_state),
        gates_added=eq.gates("b"),
        gates_removed=eq.gates("a"),
        weights=_weights(al),
        attributes=_attributes(al, eq),
        equations=EquationDiff(eq.changed(), eq.only("b"), eq.only("a"), eq.unified(context)),
        alignment=al,
    )
    result.status_a, result.status_b = _statuses(al, eq)
    return result


def _is_state_update(graph: CellGraph, key: str) -> bool:
    return key.endswith("'") and key[:-1] in graph.states


def _renames(al: Alignment) -> list[Rename]:
    """Named values matched under another name. Next values (`c'` of a renamed `c`) are
    reported as their state's rename, and a history (`c[t-5:t-1]`) as a change of its state."""
    result = []
    next_a, next_b = set(al.a.next_state.values()), set(al.b.next_state.values())
    for node_a, node_b in al.renamed():
        kind = category(al.a, node_a)[0]
        if node_a in next_a or node_b in next_b or kind not in ("gate", "weight", "state", "input"):
            continue
        result.append(Rename(kind, al.a[node_a]["name"], al.b[node_b]["name"], al.how[node_a]))
    return result


def _describe_input(graph: CellGraph, name: str) -> dict:
    return {"channels": graph[graph.inputs[name]]["channels"], "window": graph.input_windows.get(name)}


def _describe_state(graph: CellGraph, name: str) -> dict:
    # `zeros` (a history started full) only where a spec says `init zeros`
    return {k: v for k, v in vars(graph.states[name]).items() if k != "name" and not (k == "zeros" and v is None)}


def _tensors(al: Alignment, nodes_a: dict, nodes_b: dict, describe) -> list[TensorChange]:
    changes = []
    for name, node in nodes_a.items():
        partner = al.pairs.get(node)
        before = describe(al.a, name)
        if partner is None:
            changes.append(TensorChange("removed", name, None, before, None))
            continue
        name_b = al.b[partner]["name"]
        after = describe(al.b, name_b)
        fields = [key for key in dict.fromkeys([*before, *after]) if before.get(key) != after.get(key)]
        if fields:
            changes.append(TensorChange("changed", name, name_b, before, after, fields))
    for name, node in nodes_b.items():
        if al.partner(node, "b") is None:
            changes.append(TensorChange("added", None, name, None, describe(al.b, name)))
    return changes


def _weight_row(graph: CellGraph, symbol: str) -> dict:
    info = graph.weights[symbol]
    row = {"kind": info.kind, "shape": tuple(info.shape), "kernel": tuple(info.kernel),
           "parameters": math.prod(info.shape), "gate": stats.weight_gate(graph, symbol)}
    geometry = graph[graph.weight_node(symbol)].get("geometry") if info.kind == "conv" else None
    if geometry is not None:  # a conv with its own pad, stride or resize (docs/conv_modes.md), as written
        row["geometry"] = geometry_text(geometry)
    return row


def _weights(al: Alignment) -> list[WeightChange]:
    changed, removed, added = [], [], []
    for symbol in al.a.weights:
        partner = al.pairs.get(al.a.weight_node(symbol))
        before = _weight_row(al.a, symbol)
        if partner is None:
            removed.append(WeightChange("removed", symbol, None, before, None))
            continue
        symbol_b = al.b[partner]["name"]
        after = _weight_row(al.b, symbol_b)
        fields = [key for key in ("kind", "shape", "kernel", "geometry") if before.get(key) != after.get(key)]
        if fields:
            changed.append(WeightChange("changed", symbol, symbol_b, before, after, fields))
    for symbol in al.b.weights:
        if al.partner(al.b.weight_node(symbol), "b") is None:
            added.append(WeightChange("added", None, symbol, None, _weight_row(al.b, symbol)))
    return changed + removed + added


# --- attributes --------------------------------------------------------------------------------------

def _attributes(al: Alignment, eq: "_Equations") -> list[AttributeChange]:
    ga, gb = al.a, al.b
    changes = []
    if ga.spatial_dims != gb.spatial_dims:
        changes.append(AttributeChange("conv_dims", None, ga.spatial_dims, gb.spatial_dims))
    for symbol, info in ga.weights.items():
        partner = al.pairs.get(ga.weight_node(symbol))
        if partner is None:
            continue
        other = gb.weights[gb[partner]["name"]]
        if info.kind != other.kind:
            changes.append(AttributeChange("weight_kind", symbol, info.kind, other.kind))
        elif info.kernel != other.kernel:
            changes.append(AttributeChange("kernel", symbol, list(info.kernel), list(other.kernel)))
    changes += _fused_convs(al)
    changes += _layer_norms(al)
    # A value only one cell names (PredRNN's `g = tanh(…)`) is looked into, so that a tanh that
    # moved into a new gate is not reported as gone from the equation that uses the gate.
    new_a, new_b = _inlinable(ga, al.unmatched("a")), _inlinable(gb, al.unmatched("b"))
    for row_a, row_b in eq.matched():
        if not (row_a.computes and row_b.computes):
            continue
        for what, collect in (("functions", _functions), ("constants", _constants)):
            before, after = collect(ga, row_a.node, new_a), collect(gb, row_b.node, new_b)
            if before != after:
                changes.append(AttributeChange(what, row_a.key, before, after))
    changes += _replacements(al, eq)
    changes += _frozen_states(al)
    output_b = al.pairs.get(ga.output)
    if output_b != gb.output:
        changes.append(AttributeChange("output", None, _value_name(ga, ga.output), _value_name(gb, gb.output)))
    extra_a, extra_b = _extra_output_names(ga), _extra_output_names(gb)
    if extra_a != extra_b:  # `output h', delta_c, delta_m`: the further outputs, by name
        changes.append(AttributeChange("outputs", None, extra_a, extra_b))
    return changes


def _extra_output_names(graph: CellGraph) -> str:
    return ", ".join(graph.extra_outputs) or "none"


def _fused_convs(al: Alignment) -> list[AttributeChange]:
    """Convs of one operand merged into one conv that an unpack cuts into gate chunks (E3D's
    official code: `i_x, g_x, … = LN_x(W_x ⋆ x + b_x)` for the paper's W_xi ⋆ x, W_xg ⋆ x, …),
    or such a conv split into one conv per gate. `where` is the operand (A's name); `before`
    and `after` the conv weights on each side."""
    changes = []
    for side, other in (("b", "a"), ("a", "b")):
        graph, other_graph = (al.b, al.a) if side == "b" else (al.a, al.b)
        for symbol, info in graph.weights.items():
            node = graph.weight_node(symbol)
            convs = [u for u in graph.users(node) if graph[u].get("op") == "conv"]
            if info.kind != "conv" or al.partner(node, side) or len(convs) != 1:
                continue
            chunks = stats.first_named(graph, convs[0])
            if len(chunks) < 2 or not stats.chunks_of_one_value(graph, chunks):
                continue
            operand = al.partner(graph.operands(convs[0])[0], side)
            if operand is None:
                continue
            separate = [s for s, w in other_graph.weights.items() if w.kind == "conv"
                        and al.partner(other_graph.weight_node(s), other) is None
                        and any(other_graph[u].get("op") == "conv" and other_graph.operands(u)[0] == operand
                                for u in other_graph.users(other_graph.weight_node(s)))]
            if not separate:
                continue
            where = (al.a if other == "a" else al.b)[operand].get("name") or "an unnamed value"
            before, after = (separate, [symbol]) if side == "b" else ([symbol], separate)
            changes.append(AttributeChange("fused_conv", where, before, after))
    return changes


def _norm_settings(graph: CellGraph) -> dict[str, dict]:
    """LayerNorm symbol → how it normalises: `mode` (all: every axis but the batch, jointly;
    over: the `axes` named; shape: the trailing axes of `shape`) and `eps`."""
    settings = {}
    for node in graph.ops("layernorm"):
        data = graph[node]
        settings.setdefault(data["symbol"], {"mode": data["mode"], "axes": list(data.get("axes") or ()),
                                             "shape": list(data.get("shape") or ()), "eps": data["eps"]})
    return settings


def _layer_norms(al: Alignment) -> list[AttributeChange]:
    """LayerNorms added, removed, or normalising otherwise (axes, shape, eps); a LayerNorm is
    followed through its gain weight `SYMBOL.weight`, so a renamed one is still the same."""
    norms_a, norms_b = _norm_settings(al.a), _norm_settings(al.b)
    changes, seen_b = [], set()
    for symbol, before in norms_a.items():
        partner = al.pairs.get(_gain_node(al.a, symbol))
        symbol_b = al.b[partner]["name"].rsplit(".", 1)[0] if partner else None
        if symbol_b not in norms_b:
            changes.append(AttributeChange("layernorm", symbol, before, None))
            continue
        seen_b.add(symbol_b)
        after = norms_b[symbol_b]
        fields = [key for key in before if before[key] != after[key]]
        if fields:
            changes.append(AttributeChange("layernorm", symbol, {k: before[k] for k in fields},
                                           {k: after[k] for k in fields}))
    changes += [AttributeChange("layernorm", symbol, None, after) for symbol, after in norms_b.items()
                if symbol not in seen_b]
    return changes


def _gain_node(graph: CellGraph, symbol: str) -> Optional[str]:
    return graph.weight_node(f"{symbol}.weight") if f"{symbol}.weight" in graph.weights else None


def _replacements(al: Alignment, eq: "_Equations") -> list[AttributeChange]:
    """For an equation that computes something else: the values of A only that it read, and
    the values of B only that it reads now (PredRNN's c' read the forget gate f; E3D's reads
    the recall R, which reads r and the history C). Reported only when both are there."""
    changes = []
    names_a, names_b = eq.display_names("a"), eq.display_names("b")
    for row_a, row_b in eq.matched():
        if not (row_a.computes and row_b.computes) or eq.same(row_a, row_b):
            continue
        before = _new_values(al, al.a, "a", row_a.node, names_a)
        after = _new_values(al, al.b, "b", row_b.node, names_b)
        if before and after:
            changes.append(AttributeChange("replaced", row_a.key, before, after))
    return changes


def _new_values(al: Alignment, graph: CellGraph, side: str, root: str, names: dict[str, str]) -> list[str]:
    """Unmatched gates and histories `root` reads, and those they read in turn, in spec order."""
    found, stack, seen = set(), list(graph.operands(root)), {root}
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        data = graph[node]
        named = data["kind"] == "history" or (data["kind"] == "op" and data.get("name"))
        if named and al.partner(node, side):
            continue
        if named:
            found.add(node)
        stack.extend(graph.operands(node))
    return [names.get(n, graph[n]["name"]) for n in graph.order() if n in found]


def _frozen_states(al: Alignment) -> list[AttributeChange]:
    """States whose next value is the state itself (`m' = m`: never updated, as E3D's official
    code does with its global memory) on one side only."""
    changes = []
    for state, node_a in al.a.state_nodes.items():
        node_b = al.pairs.get(node_a)
        if node_b is None:
            continue
        state_b = al.b[node_b]["name"]
        before = al.a.next_state.get(state) == node_a
        after = al.b.next_state.get(state_b) == node_b
        if before != after:
            changes.append(AttributeChange("frozen", state, before, after))
    return changes


def _inlinable(graph: CellGraph, unmatched: list[str]) -> set[str]:
    """Named values of one cell only that name a part of a single equation: used by exactly one
    other named value, and neither a state's next value nor the output."""
    named = [n for n in graph.nx if graph[n].get("name") and graph[n]["kind"] == "op"]
    users: dict[str, int] = {}
    for node in named:
        for used in references(graph, node):
            users[used] = users.get(used, 0) + 1
    results = set(graph.results())
    return {n for n in unmatched if n in named and n not in results and users.get(n) == 1}


def _value_name(graph: CellGraph, node: str) -> Optional[str]:
    return graph[node].get("name")


def _own_nodes(graph: CellGraph, root: str, enter: set = frozenset()) -> list[str]:
    """The nodes of one equation's expression, outermost first (pre-order): not entering other
    named values (except those in `enter`) or leaves."""
    order, stack, seen = [], [root], set()
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        order.append(node)
        stack.extend(reversed([o for o in graph.operands(node) if graph[o]["kind"] in ("op", "const")
                               and (not graph[o].get("name") or o in enter)]))
    return order


def _functions(graph: CellGraph, root: str, enter: set = frozenset()) -> list[str]:
    """The functions an equation applies, outermost first, each once (`σ(LN(a) + LN(b))`: σ, LN)."""
    return list(dict.fromkeys(graph[n]["op"] for n in _own_nodes(graph, root, enter)
                              if graph[n]["kind"] == "op" and graph[n]["op"] not in _ARITHMETIC))


def _constants(graph: CellGraph, root: str, enter: set = frozenset()) -> list[float]:
    return [graph[n]["value"] for n in _own_nodes(graph, root, enter) if graph[n]["kind"] == "const"]


# --- equations ---------------------------------------------------------------------------------------

@dataclass
class _Row:
    """One definition of the resolved spec, as the diff compares and prints it."""

    key: str  # its target (`i`, `c'`), or an unpack's targets joined (`i_x, g_x, o_x`)
    targets: list[str]
    statement: Any  # ast.Equation | ast.Unpack
    node: Optional[str]  # the node of its value (an unpack's: the value it cuts); None for `{3×3: …}`
    parts: dict[str, str] = field(default_factory=dict)  # an unpack's target → the node of that piece
    own: bool = False  # the node was made for this definition (False: it only names another value)

    @property
    def unpack(self) -> bool:
        return isinstance(self.statement, ast.Unpack)

    @property
    def computes(self) -> bool:
        """Whether the row has an expression of its own to look into (not an alias, not a
        per-kernel routing, not an unpack of a named value)."""
        return self.own and self.node is not None

    def own_nodes(self) -> list[str]:
        """The nodes the alignment may match this row by."""
        if self.unpack:
            return list(self.parts.values())
        return [self.node] if self.own and self.node is not None else []


def _rows(graph: CellGraph, spec: ast.CellSpec) -> list[_Row]:
    """The definitions of `spec` that are part of the lowered cell, in spec order, each with
    its nodes as the lowering recorded them (`graph.provenance`).

    A variant's inherited definitions (`borrowed`) count only where something uses them, as
    the lowering drops them otherwise; a definition the lowering dropped as dead is not there.
    """
    rows = {}
    for statement in spec.definitions:
        refs = [statement.target] if isinstance(statement, ast.Equation) else statement.targets
        targets = [ref.text for ref in refs]
        key = ", ".join(targets)
        row = _row(graph, statement, key, targets)
        if row is not None:
            rows[key] = row
    return [rows[key] for key in _included(rows, spec, graph)]


def _row(graph: CellGraph, statement, key: str, targets: list[str]) -> Optional[_Row]:
    """The row of one definition, or None if its value is not in the graph (dropped unused)."""
    made = graph.provenance
    if isinstance(statement, ast.Unpack):
        parts = {t: made[t] for t in targets if t in made}
        if not parts:
            return None
        return _Row(key, targets, statement, graph.operands(next(iter(parts.values())))[0], parts, own=True)
    if isinstance(statement.expr, ast.PerKernel):
        return _Row(key, targets, statement, None)
    node = made.get(key)
    if node is None:
        return None
    return _Row(key, targets, statement, node, own=graph[node].get("name") == key and graph[node]["kind"] == "op")


def _included(rows: dict[str, _Row], spec: ast.CellSpec, graph: CellGraph) -> list[str]:
    """Keys of the rows that are part of the cell: the spec's own definitions, next values, the
    output, and every inherited definition one of these reads (transitively)."""
    target_row = {target: key for key, row in rows.items() for target in row.targets}
    wanted = [key for key, row in rows.items() if not row.statement.borrowed
              or any(_is_state_update(graph, t) for t in row.targets)]
    for ref in spec.output.refs if spec.output is not None else ():
        if ref.text in target_row:
            wanted.append(target_row[ref.text])
    keep: set[str] = set()
    while wanted:
        key = wanted.pop()
        if key in keep:
            continue
        keep.add(key)
        wanted += [target_row[name] for name in _names_read(rows[key].statement.expr) if name in target_row]
    return [key for key in rows if key in keep]


def _names_read(expr) -> list[str]:
    """Every name an expression refers to (`c'` as `c'`)."""
    return [node.text for node in walk(expr) if isinstance(node, ast.Ref)]


class _Equations:
    """The definitions of both cells, matched (same target; else through the alignment),
    compared by what they compute, and printed canonically (B's with A's names for renamed
    values)."""

    def __init__(self, al: Alignment, cell_a: LoadedCell, cell_b: LoadedCell):
        self.al = al
        self.rows_a = _rows(al.a, cell_a.spec)
        self.rows_b = _rows(al.b, cell_b.spec)
        self.partner: dict[str, str] = {}  # key in A → key in B
        self._match()
        self.by_key_a = {row.key: row for row in self.rows_a}
        self.by_key_b = {row.key: row for row in self.rows_b}
        # B's names → A's names, for everything matched under another name
        self.to_a_names = {al.b[nb]["name"]: al.a[na]["name"] for na, nb in al.renamed()
                           if not al.a[na]["name"].endswith("'") and "[" not in al.a[na]["name"]
                           and category(al.a, na)[0] in ("gate", "weight", "state", "input")}
        for key_a, key_b in self.partner.items():
            row_a, row_b = self.by_key_a[key_a], self.by_key_b[key_b]
            if not row_a.unpack and not row_b.unpack and key_a != key_b and not key_a.endswith("'"):
                self.to_a_names.setdefault(key_b, key_a)

    # --- matching ---
    def _match(self) -> None:
        al, taken = self.al, set()

        def pair(row_a: _Row, row_b: _Row) -> None:
            self.partner[row_a.key] = row_b.key
            taken.add(row_b.key)

        keys_b = {row.key: row for row in self.rows_b}
        for row in self.rows_a:  # 1. the same target(s)
            if row.key in keys_b:
                pair(row, keys_b[row.key])
        for row in self.rows_a:  # 2. an unpack that keeps one of its targets' names
            if row.key in self.partner or not row.unpack:
                continue
            found = [b for b in self.rows_b if b.unpack and b.key not in taken and set(b.targets) & set(row.targets)]
            if len(found) == 1:
                pair(row, found[0])
        for own_only in (True, False):  # 3. values matched by the alignment: own values, then aliases
            owners_b: dict[str, list[_Row]] = {}
            for row in self.rows_b:
                if row.key not in taken:
                    for node in (row.own_nodes() if own_only else [row.node] if row.node and not row.own else []):
                        owners_b.setdefault(node, []).append(row)
            for row in self.rows_a:
                if row.key in self.partner:
                    continue
                nodes = row.own_nodes() if own_only else [row.node] if row.node and not row.own else []
                found = {id(b): b for n in nodes for b in owners_b.get(al.pairs.get(n), [])}
                if len(found) == 1:
                    candidate = next(iter(found.values()))
                    if candidate.key not in taken:
                        pair(row, candidate)

    def matched(self) -> list[tuple[_Row, _Row]]:
        return [(self.by_key_a[a], self.by_key_b[b]) for a, b in self.partner.items()]

    def only(self, side: str) -> list[str]:
        if side == "a":
            return [row.key for row in self.rows_a if row.key not in self.partner]
        taken = set(self.partner.values())
        return [row.key for row in self.rows_b if row.key not in taken]

    def gates(self, side: str) -> list[str]:
        """Named values (not next values of states) that only this side defines: the targets
        of unmatched definitions, and unpack targets without a counterpart."""
        graph = self.al.a if side == "a" else self.al.b
        only = set(self.only(side))
        rows = self.rows_a if side == "a" else self.rows_b
        names = []
        for row in rows:
            if row.key in only:
                names += row.targets
            elif row.unpack:
                names += self._unpaired_targets(row, side)
        return [name for name in names if not _is_state_update(graph, name)]

    def _unpaired_targets(self, row: _Row, side: str) -> list[str]:
        other_key = self.partner.get(row.key) if side == "a" else \
            next(a for a, b in self.partner.items() if b == row.key)
        other = (self.by_key_b if side == "a" else self.by_key_a)[other_key]
        pieces = set(other.parts.values())
        return [t for t in row.targets if t not in other.targets
                and not (t in row.parts and self.al.partner(row.parts[t], side) in pieces)]

    # --- comparing ---
    def same(self, row_a: _Row, row_b: _Row) -> bool:
        return self._signature(row_a, "a") == self._signature(row_b, "b")

    def _signature(self, row: _Row, side: str):
        al = self.al
        graph = al.a if side == "a" else al.b
        statement = row.statement
        if isinstance(statement, ast.Equation) and isinstance(statement.expr, ast.PerKernel):
            expr = _rename(statement.expr, self.to_a_names) if side == "b" else statement.expr
            return ("per kernel", format_expr(expr))
        if row.unpack:
            data = graph[row.node]
            value = (al.anchor(row.node, side) if data.get("name") or data["kind"] != "op"
                     else _signature(al, graph, side, row.node))
            return ("unpack", value, tuple(label(graph, row.parts[t]) if t in row.parts else None
                                           for t in row.targets))
        if row.own:
            return _signature(al, graph, side, row.node)
        if graph[row.node]["kind"] == "const":
            return ("alias", label(graph, row.node))
        return ("alias", al.anchor(row.node, side))

    def changed(self) -> list[str]:
        return [row_a.key for row_a, row_b in self.matched() if not self.same(row_a, row_b)]

    def changed_nodes(self) -> set[str]:
        """A's nodes of the definitions that compute something else (for pictures)."""
        return {node for row_a, row_b in self.matched() if not self.same(row_a, row_b) for node in row_a.own_nodes()}

    def display_names(self, side: str) -> dict[str, str]:
        """Node → the name a reader knows it by: the definition that names it (`C` for the
        history `c[t-τ:t-1]`), its own name otherwise."""
        names = {}
        for row in (self.rows_a if side == "a" else self.rows_b):
            if row.node is not None and not row.unpack:
                names.setdefault(row.node, row.key)
            for target, node in row.parts.items():
                names[node] = target
        return names

    # --- printing ---
    def _text(self, row: _Row, side: str) -> tuple[str, str]:
        statement = _rename(row.statement, self.to_a_names) if side == "b" else row.statement
        if isinstance(statement, ast.Unpack):
            return ", ".join(t.text for t in statement.targets), format_expr(statement.expr)
        return statement.target.text, format_expr(statement.expr)

    def rows(self) -> list[tuple[str, Optional[str], Optional[str]]]:
        """(status, A's line, B's line) per definition, in A's order; a definition only in B
        comes after the nearest definition before it in B that A has too. B's lines use A's
        names for renamed values, and an unchanged definition shows A's text (whatever B's
        order of terms)."""
        key_a_of = {kb: ka for ka, kb in self.partner.items()}
        texts_a = {row.key: self._text(row, "a") for row in self.rows_a}
        texts_b = {row.key: self._text(row, "b") for row in self.rows_b}
        after: dict[Optional[str], list[str]] = {}  # A's key (None: the start) → B-only keys after it
        anchor = None
        for row in self.rows_b:
            if row.key in key_a_of:
                anchor = key_a_of[row.key]
            else:
                after.setdefault(anchor, []).append(row.key)
        single = [t for t, _ in (*texts_a.values(), *texts_b.values()) if ", " not in t]
        width = max((len(t) for t in single), default=0)

        def line(pair):
            return f"{pair[0].ljust(width)} = {pair[1]}"

        rows = [("added", None, line(texts_b[key])) for key in after.get(None, [])]
        for row_a in self.rows_a:
            key = row_a.key
            if key not in self.partner:
                rows.append(("removed", line(texts_a[key]), None))
            elif self.same(row_a, self.by_key_b[self.partner[key]]):
                rows.append(("same", line(texts_a[key]), line(texts_a[key])))
            else:
                rows.append(("changed", line(texts_a[key]), line(texts_b[self.partner[key]])))
            rows += [("added", None, line(texts_b[k])) for k in after.get(key, [])]
        return rows

    def unified(self, context: int) -> list[str]:
        """A unified diff (as `diff -u` prints it) of the rows, each changed equation's old line
        right above its new one."""
        rows = self.rows()
        changes = [index for index, row in enumerate(rows) if row[0] != "same"]
        if not changes:
            return []
        hunks: list[list[int]] = []  # [first row, last row]
        for index in changes:
            low, high = max(0, index - context), min(len(rows) - 1, index + context)
            if hunks and low <= hunks[-1][1] + 1:
                hunks[-1][1] = high
            else:
                hunks.append([low, high])
        out = [f"--- {self.al.a.name}", f"+++ {self.al.b.name}"]
        for low, high in hunks:
            lines_before_a = sum(1 for row in rows[:low] if row[1] is not None)
            lines_before_b = sum(1 for row in rows[:low] if row[2] is not None)
            body = []
            for status, text_a, text_b in rows[low:high + 1]:
                if status == "same":
                    body.append(" " + text_a)
                    continue
                if text_a is not None:
                    body.append("-" + text_a)
                if text_b is not None:
                    body.append("+" + text_b)
            count_a = sum(1 for row in rows[low:high + 1] if row[1] is not None)
            count_b = sum(1 for row in rows[low:high + 1] if row[2] is not None)
            out.append(f"@@ -{_range(lines_before_a, count_a)} +{_range(lines_before_b, count_b)} @@")
            out += body
        return out


def _range(before: int, count: int) -> str:
    """A hunk range of `diff -u`: first line and count; an empty range names the line before."""
    return f"{before + 1 if count else before},{count}"


def _signature(al: Alignment, graph: CellGraph, side: str, root: str):
    """What an equation computes, as a tree over matched names: equal on both sides iff the
    equations are the same up to names and the order of terms in `+` and `⊙` chains."""
    def walk(node: str, top: bool = False):
        data = graph[node]
        if not top and (data.get("name") or data["kind"] in ("input", "state", "weight", "history")):
            return al.anchor(node, side)
        if data["kind"] != "op":
            return label(graph, node)
        op = data["op"]
        if not wl.ordered(graph, node):
            terms = sorted((walk(t) for t in _chain(graph, node, op)), key=repr)
            return (label(graph, node), tuple(terms))
        return (label(graph, node), tuple(walk(o) for o in graph.operands(node)))
    return walk(root, top=True)


def _chain(graph: CellGraph, node: str, op: str) -> list[str]:
    """The terms of `a + b + c` (anonymous nested ops of the same commutative kind)."""
    terms = []
    for operand in graph.operands(node):
        data = graph[operand]
        if data["kind"] == "op" and data.get("op") == op and not data.get("name"):
            terms.extend(_chain(graph, operand, op))
        else:
            terms.append(operand)
    return terms


def _rename(node, names: dict[str, str]):
    """A copy of an AST with every reference to a key of `names` renamed."""
    return transform(node, lambda n: n.copy_with(name=names[n.name])
                     if isinstance(n, ast.Ref) and n.name in names else None)


# --- node statuses (for pictures) ------------------------------------------------------------------

def _statuses(al: Alignment, eq: _Equations) -> tuple[dict[str, str], dict[str, str]]:
    status_a = {node: "removed" for node in al.a.nx}
    status_b = {node: "added" for node in al.b.nx}
    changed_eqs = eq.changed_nodes()
    for node_a, node_b in al.pairs.items():
        data_a, data_b = al.a[node_a], al.b[node_b]
        if data_a.get("name") and data_a["kind"] == "op":
            different = node_a in changed_eqs
        else:
            different = label(al.a, node_a, detail=True) != label(al.b, node_b, detail=True) or \
                _mapped_operands(al, node_a) != _operands(al.b, node_b)
        if data_a["kind"] in ("weight", "state", "input") and data_a["name"] != data_b["name"]:
            different = True
        if data_a["kind"] == "weight":
            info_a, info_b = al.a.weights[data_a["name"]], al.b.weights[data_b["name"]]
            different = different or (info_a.kind, info_a.shape) != (info_b.kind, info_b.shape)
        if data_a["kind"] == "state":
            different = different or _describe_state(al.a, data_a["name"]) != _describe_state(al.b, data_b["name"])
        if data_a["kind"] == "input":
            different = different or _describe_input(al.a, data_a["name"]) != _describe_input(al.b, data_b["name"])
        status_a[node_a] = status_b[node_b] = "changed" if different else "same"
    return status_a, status_b


def _operands(graph: CellGraph, node: str) -> list:
    operands = graph.operands(node)
    return sorted(operands) if not wl.ordered(graph, node) else operands


def _mapped_operands(al: Alignment, node: str) -> list:
    mapped = [al.pairs.get(o, ("unmatched", o)) for o in al.a.operands(node)]
    return sorted(mapped, key=repr) if not wl.ordered(al.a, node) else mapped


# --- text ------------------------------------------------------------------------------------------

class _Paint:
    """ANSI colours, or none."""

    CODES = {"added": "32", "removed": "31", "changed": "33", "head": "1", "hunk": "36", "dim": "2"}

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __call__(self, text: str, style: str) -> str:
        return f"\033[{self.CODES[style]}m{text}\033[0m" if self.enabled and text else text


_MARK = {"added": "+", "removed": "-", "changed": "~"}


def format_text(diff: CellDiff, color: bool = False) -> str:
    """The report `cellgen diff` prints: empty for identical cells, as diff(1) prints nothing."""
    if diff.identical and _header_same(diff):
        return ""
    paint = _Paint(color)
    out = [paint(f"--- {diff.a.origin}  {diff.a.name}", "removed"),
           paint(f"+++ {diff.b.origin}  {diff.b.name}", "added")]
    if diff.a.params != diff.b.params:
        out.append(f"params: {_params(diff.a.params)}  |  {_params(diff.b.params)}")
    else:
        out.append(f"params: {_params(diff.a.params)}")
    if diff.a.citation != diff.b.citation:
        out.append(f'citation: "{diff.a.citation or ""}" → "{diff.b.citation or ""}"')

    def section(title: str, lines: list[str]) -> None:
        if lines:
            out.extend(["", paint(title, "head"), *lines])

    def mark(status: str, text: str) -> str:
        return paint(f"  {_MARK[status]} {text}", status)

    section("renamed (aligned by structure, not by name)",
            [f"  {r.a} → {r.b}  ({r.kind}, by {r.how})" for r in diff.renames])
    section("inputs", [mark(c.status, _tensor_line(c)) for c in diff.inputs])
    section("states", [mark(c.status, _tensor_line(c)) for c in diff.states])
    section("gates", [mark(status, ", ".join(names)) for status, names in
                      (("removed", diff.gates_removed), ("added", diff.gates_added)) if names])
    if diff.weights:
        rows = [["weights", "kind", "shape", "parameters"]]
        styles = ["head"]
        for change in diff.weights:
            rows.append(_weight_cells(change))
            styles.append(change.status)
        lines = _table(rows, right={3})
        out.append("")
        out.extend(paint(line, style) for line, style in zip(lines, styles))
    section("attributes", [mark("changed", line) for line in _attribute_lines(diff.attributes)])
    if diff.equations.unified:
        out.extend(["", paint("equations", "head")])
        for line in diff.equations.unified:
            style = ("hunk" if line.startswith("@@") else "removed" if line.startswith("-")
                     else "added" if line.startswith("+") else None)
            out.append(paint(line, style) if style else line)
    if diff.equivalent:
        renamed = f"; only the names of {_count(len(diff.renames), 'intermediate value')} differ" \
            if diff.renames else ""
        out.extend(["", paint(f"equivalent: the cells compute the same values from the same weights{renamed}",
                              "head")])
    else:
        out.extend(["", *_totals(diff, paint), "", paint(f"different: {summary(diff)}", "head")])
    return "\n".join(out) + "\n"


def summary(diff: CellDiff) -> str:
    """One line: what differs, counted (`1 state added; 4 gates added; …`)."""
    parts = []

    def add(count: int, what: str, status: str) -> None:
        if count:
            parts.append(f"{_count(count, what)} {status}")

    for what, changes in (("input", diff.inputs), ("state", diff.states)):
        for status in ("added", "removed", "changed"):
            add(sum(1 for c in changes if c.status == status), what, status)
    add(len(diff.gates_added), "gate", "added")
    add(len(diff.gates_removed), "gate", "removed")
    for status in ("added", "removed", "changed"):
        add(sum(1 for c in diff.weights if c.status == status), "weight", status)
    add(len(diff.equations.changed), "equation", "changed")
    add(len(_attribute_lines(diff.attributes)), "attribute", "changed")
    for what in ("input", "state", "weight"):
        add(sum(1 for r in diff.renames if r.kind == what), what, "renamed")
    delta = diff.b.parameters - diff.a.parameters
    if delta:
        parts.append(f"parameters {delta:+d}")
    return "; ".join(parts)


def _count(number: int, word: str) -> str:
    return f"{number} {word}{'' if number == 1 else 's'}"


def _header_same(diff: CellDiff) -> bool:
    return (diff.a.name, diff.a.citation, diff.a.params) == (diff.b.name, diff.b.citation, diff.b.params)


def _params(params: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items()) or "none"


def _tensor_line(change: TensorChange) -> str:
    if change.status == "added":
        return _declaration(change.b, change.after)
    if change.status == "removed":
        return _declaration(change.a, change.before)
    return f"{_declaration(change.a, change.before)} → {_declaration(change.b, change.after)}"


def _declaration(name: str, info: dict) -> str:
    """A state or input as a reader would declare it: `m[64] zigzag`, `x[1] window 2`,
    `c[64] history of 5`, `c[64] history (every past value)`."""
    extras = []
    for key, value in info.items():
        if key in ("channels", "history_size") or value in (False, None, 0, ()):
            continue
        if key == "history":
            size = info.get("history_size")
            extras.append(f"history of {size}" if size else "history (every past value)")
        else:
            extras.append(key if value is True else f"{key} {value}")
    return f"{name}[{info['channels']}]" + "".join(f" {e}" for e in extras)


def _weight_cells(change: WeightChange) -> list[str]:
    def kind(row):
        if row["kind"] != "conv":
            return row["kind"]
        return f"conv {'×'.join(map(str, row['kernel']))}" + (f" {row['geometry']}" if "geometry" in row else "")

    def shape(row):
        return "×".join(map(str, row["shape"]))

    mark = _MARK[change.status]
    if change.status == "added":
        row = change.after
        return [f"  {mark} {change.b}", kind(row), shape(row), str(row["parameters"])]
    if change.status == "removed":
        row = change.before
        return [f"  {mark} {change.a}", kind(row), shape(row), str(row["parameters"])]
    before, after = change.before, change.after
    name = change.a if change.a == change.b else f"{change.a} → {change.b}"

    def pair(text_a, text_b):
        return text_a if text_a == text_b else f"{text_a} → {text_b}"

    return [f"  {mark} {name}", pair(kind(before), kind(after)), pair(shape(before), shape(after)),
            pair(str(before["parameters"]), str(after["parameters"]))]


def _attribute_lines(changes: list[AttributeChange]) -> list[str]:
    """One line per change; the same change in several places (every conv's kernel 5×5 → 2×5×5)
    is one line naming them all."""
    groups: dict[tuple, list[AttributeChange]] = {}
    for change in changes:
        groups.setdefault((change.what, repr(change.before), repr(change.after)), []).append(change)
    lines = []
    for members in groups.values():
        first = members[0]
        where = ", ".join(c.where for c in members if c.where) or None
        lines.append(_attribute_line(AttributeChange(first.what, where, first.before, first.after)))
    return lines


def _attribute_line(change: AttributeChange) -> str:
    what, where, before, after = change.what, change.where, change.before, change.after
    if what == "conv_dims":
        return f"convs: {before}D → {after}D"
    if what == "kernel":
        return f"{where}: kernel {'×'.join(map(str, before))} → {'×'.join(map(str, after))}"
    if what == "weight_kind":
        return f"{where}: {before} → {after}"
    if what == "functions":
        def spell(ops):
            return ", ".join(OPS[op].shown if op in OPS else op for op in ops) or "none"
        return f"{where}: functions {spell(before)} → {spell(after)}"
    if what == "constants":
        def spell(values):
            return ", ".join(f"{v:g}" if float(v) != int(v) else f"{v:.1f}" for v in values) or "none"
        return f"{where}: constants {spell(before)} → {spell(after)}"
    if what == "replaced":
        return f"{where}: reads {', '.join(before)} → reads {', '.join(after)} instead"
    if what == "fused_conv":
        if len(after) == 1:
            return f"convs of {where}: {', '.join(before)} → one conv {after[0]}, cut into gate chunks"
        return f"convs of {where}: one conv {before[0]}, cut into gate chunks → {', '.join(after)}"
    if what == "layernorm":
        if before is None:
            return f"{where}: LayerNorm added ({_norm_text(after)})"
        if after is None:
            return f"{where}: LayerNorm removed (was {_norm_text(before)})"
        return f"{where}: LayerNorm {_norm_text(before)} → {_norm_text(after)}"
    if what == "frozen":
        kept = f"{where}' = {where}"
        return f"{where}: never updated ({kept})" if after else f"{where}: updated again (was {kept})"
    if what == "output":
        return f"output: {before} → {after}"
    if what == "outputs":
        return f"further outputs: {before} → {after}"
    return f"{where or 'cell'}: {what} {before} → {after}"


def _norm_text(settings: dict) -> str:
    """How a LayerNorm normalises, in words (only the settings given)."""
    words = []
    mode = settings.get("mode")
    if mode == "all":
        words.append("over every axis but the batch, jointly")
    elif mode == "over":
        words.append("over " + ", ".join(settings.get("axes") or ()))
    elif mode == "shape":
        words.append(f"shape {list(settings.get('shape') or ())}")
    elif "axes" in settings:
        words.append("over " + (", ".join(settings["axes"]) or "every axis"))
    elif "shape" in settings:
        words.append(f"shape {list(settings['shape'])}")
    if "eps" in settings:
        words.append(f"eps {settings['eps']:g}")
    return ", ".join(words)


def _totals(diff: CellDiff, paint: _Paint) -> list[str]:
    size_a, size_b = "×".join(map(str, diff.a.size)), "×".join(map(str, diff.b.size))
    size = size_a if size_a == size_b else f"{size_a} | {size_b}"
    rows = [["totals", diff.a.name, diff.b.name, "Δ"]]
    for title, get in (("parameters", lambda s: s.parameters), (f"MACs per step at {size}", lambda s: s.macs),
                       ("convs per step (-O0)", lambda s: s.convs["O0"]),
                       ("convs per step (-O2)", lambda s: s.convs["O2"])):
        before, after = get(diff.a), get(diff.b)
        rows.append([f"  {title}", str(before), str(after), f"{after - before:+d}" if after != before else "0"])
    lines = _table(rows, right={1, 2, 3})
    return [paint(lines[0], "head"), *lines[1:]]




def format_json(diff: CellDiff) -> str:
    """Indented JSON; a short list of numbers or names stays on one line (`[64, 3, 5, 5]`)."""
    return _json(diff.to_json(), "") + "\n"


def _json(value, indent: str) -> str:
    inner = indent + "  "
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(key, ensure_ascii=False)}: {_json(item, inner)}" for key, item in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    if isinstance(value, list) and value:
        flat = json.dumps(value, ensure_ascii=False)
        if all(not isinstance(item, (dict, list)) for item in value) and len(flat) <= 80:
            return flat
        return "[\n" + ",\n".join(inner + _json(item, inner) for item in value) + f"\n{indent}]"
    return json.dumps(value, ensure_ascii=False)


def use_color(choice: str, stream=None) -> bool:
    """--color always|never|auto: auto colours a terminal, unless NO_COLOR is set (no-color.org)."""
    if choice == "always":
        return True
    if choice == "never":
        return False
    stream = stream if stream is not None else sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)()) and not os.environ.get("NO_COLOR")


# --- the command -----------------------------------------------------------------------------------

FORMATS = ("text", "json", "svg", "png", "dot")


def configure_diff(parser: argparse.ArgumentParser) -> None:
    """The arguments of `cellgen diff`."""
    parser.add_argument("spec_a", metavar="A", help="the first cell: a .cell file or a shipped spec's name")
    parser.add_argument("spec_b", metavar="B", help="the second cell")
    from cellgen.cli import add_param_argument

    add_param_argument(parser, help="set a param of every cell that declares it (repeatable), e.g. -p in_channels=3")
    parser.add_argument("--format", "-f", choices=FORMATS, default="text",
                        help="text (default), json (schema in docs/diff.md), or a picture of both graphs: "
                             "svg, png (need Graphviz) or dot")
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                        help="colour the text report: auto (default) on a terminal unless NO_COLOR is set")
    parser.add_argument("--size", type=int, nargs="+", default=None, metavar="N",
                        help="input size for MACs: H W (a 3D cell takes T H W, or H W with T its input window; "
                             "`--size 2 64 64` serves both); default 64x64")
    parser.add_argument("-U", "--context", type=int, default=3, metavar="N",
                        help="unchanged equations shown around each change (default 3)")
    parser.add_argument("-o", "--output", default=None, metavar="FILE", help="write to FILE instead of stdout")
    parser.add_argument("--force", action="store_true", help="let -o replace an existing file")


def run_diff(args: argparse.Namespace) -> int:
    """Print the diff; 0 if the cells are equivalent, 1 if not, 2 (with a message) on an error."""
    from cellgen.cli import parse_params

    try:
        if args.context < 0:
            raise CellgenError(f"-U/--context must be 0 or more, not {args.context}")
        diff = diff_cells(args.spec_a, args.spec_b, parse_params(args.params), size=args.size, context=args.context)
        if args.format in ("svg", "png", "dot"):
            render.emit(render.diff_dot(diff), args.format, args.output, force=args.force)
        elif args.format == "json":
            render.write_output(format_json(diff), args.output, force=args.force)
        else:
            color = use_color(args.color) and args.output is None
            render.write_output(format_text(diff, color=color), args.output, force=args.force)
    except CellgenError as error:
        print(error.render(), file=sys.stderr)
        return 2
    return diff.exit_status


def diff_main(argv: Optional[Sequence[str]] = None) -> int:
    """`cellgen diff A B …` as a function: parses `argv`, prints, returns the exit status."""
    parser = argparse.ArgumentParser(prog="cellgen diff", description="compare two cells")
    configure_diff(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help (0) or a usage error (2)
        return int(stop.code or 0)
    from cellgen.cli import run_reporting_warnings

    return run_reporting_warnings(run_diff, args)


HELP = "compare two cells: states, gates, weights, equations, parameters, MACs and convs (exit 0 same, 1 different)"


def register_with_cli():
    """Add `cellgen diff` to cellgen.cli's subcommand registry; call once (as for bench)."""
    from cellgen.cli import register

    return register("diff", HELP, configure_diff, run_diff)
