"""Counting a cell: parameters per weight and per gate, convs, and multiply-accumulates.

These functions read only a `CellGraph`, so `cellgen compile --emit summary`, `cellgen diff`
and `cellgen bench` count the same way, from one place.

**Sizes.** Every value of a step is a map, or a stack of maps (a history `c[t-τ:t-1]`,
`stack(h, c)`); `extents` follows each value's spatial size and stack length from the input
size through the graph (a `cat(…, along=W)` doubles W, a `split` halves it), so a conv on a
stack of two maps costs twice a conv on one, and a conv after a concatenation along W costs
what its wider input costs.

**MACs** (multiply-accumulates per step and batch element) are counted for
    convs        entries · out · in · prod(kernel) · prod(size of its input)   ("same", stride 1;
                 a 3D kernel's T is part of the size, so it counts × T)
    attention    Nq · Nk · C for q·kᵀ, and Nq · Nk · C_v for the product with v, where N is the
                 number of tokens (stack entries × T × H × W); with `patches=s` the tokens
                 attend within each of s×s patches, which divides both by s²
and nothing else: LayerNorm, softmax, sums, activations and elementwise products are each
a few operations per element, noise next to the convs, and not what papers compare. A history
whose length is unbounded (`tau = none`) is counted at `history` past values (default 1, i.e.
per past value: the attention over it grows by that much every step).

**Gates.** A weight is credited to the named values (equations) its result reaches first,
walking forward through anonymous ops:
    one named value            all of it to that gate;
    the chunks of one unpack   `i_x, g_x, … = LN_x(W_x ⋆ x + b_x)`: split among the chunks in
                               proportion to their channels (equal pieces for `split`/`unstack`),
                               each chunk's share going to the gate the chunk feeds (`i_x` → i);
    several named values       a shared weight (CMS-LSTM's CE.W_H feeds x_1, x_2 and x_3):
                               listed once, under "shared by …", never split.
A weight's MACs follow its parameters; an attention's MACs go to the value it computes.
"""
from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Optional, Sequence

from cellgen.table import align as _align
from cellgen.errors import CellgenError
from cellgen.ir.analysis import absolute_size, ensure_analyzed
from cellgen.ir.graph import CellGraph
from cellgen.ir.ops import OPS, conv_operands, in_group

DEFAULT_SIDE = 64  # the input's H and W when no size is given
_PART_OPS = in_group("part")  # the values an unpack makes
_KERNEL_SUFFIX = re.compile(r"^(?P<base>.+)\.(?P<kernel>\d+(?:x\d+)+)$")  # W_xi.3x3: one kernel of W_xi


# --- sizes ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Extent:
    """How big a value of the step is, per batch element and channel."""

    entries: int  # maps in its stack; 1 for a map
    spatial: tuple[int, ...]  # (H, W), or (T, H, W) for a 3D cell

    @property
    def positions(self) -> int:
        """Tokens of attention: every position of every map of the stack."""
        return self.entries * math.prod(self.spatial)


def window(graph: CellGraph) -> int:
    """Frames per step of a 3D cell's input (the `window` of its inputs; 1 without one)."""
    return max(graph.input_windows.values(), default=1)


def input_size(graph: CellGraph, size: Optional[Sequence[int]] = None) -> tuple[int, ...]:
    """The input size counts are taken at: H W for a 2D cell; T H W for a 3D cell, where
    `H W` alone means T = the input window. Default 64×64 (and the window's T)."""
    if not size:
        size = (DEFAULT_SIDE, DEFAULT_SIDE)
    size = tuple(size)
    if graph.spatial_dims == 3 and len(size) == 2:
        size = (window(graph), *size)
    if len(size) != graph.spatial_dims or any(not isinstance(n, int) or n < 1 for n in size):
        want = "H W" if graph.spatial_dims == 2 else "T H W (or H W, T being the input window)"
        raise CellgenError(f"{graph.name} is a {graph.spatial_dims}D cell: its input size is {want} "
                           f"(positive whole numbers), not {' '.join(map(str, size)) or 'nothing'}")
    return size


def extents(graph: CellGraph, spatial: Sequence[int], history: int = 1) -> dict[str, Extent]:
    """Node → the extent of its value at input size `spatial` (weights and constants have
    none: they broadcast), read off the analysis (cellgen/ir/analysis.py). `history` is how
    many past values an unbounded history holds."""
    ensure_analyzed(graph)
    spatial = tuple(spatial)
    result: dict[str, Extent] = {}
    for node in graph.nx:
        size = absolute_size(graph, node, spatial, history)
        if size is not None:
            result[node] = Extent(*size)
    return result


def size_notes(graph: CellGraph, spatial: Sequence[int], history: int = 1) -> list[str]:
    """Where the spec fixes the map size (a LayerNorm's or an elementwise weight's declared
    shape) and `spatial` disagrees: the cell would not run at that size."""
    sizes = extents(graph, spatial, history)
    dims = graph.spatial_dims
    notes = []
    for node in graph.ops("layernorm"):
        data = graph[node]
        shape = tuple(data.get("shape") or ())
        if len(shape) == 1 + dims and node in sizes and shape[1:] != sizes[node].spatial:
            notes.append(f"{data['symbol']} is declared for {_x(shape[1:])} maps, but at this size it gets "
                         f"{_x(sizes[node].spatial)}")
    for symbol, info in graph.weights.items():
        if info.kind != "elementwise" or len(info.shape) != 1 + dims:
            continue
        users = [u for u in graph.users(graph.weight_node(symbol)) if u in sizes]
        if users and tuple(info.shape[1:]) != sizes[users[0]].spatial:
            notes.append(f"{symbol} is declared {_x(info.shape)}, but at this size it meets "
                         f"{_x(sizes[users[0]].spatial)} maps")
    return notes


def _x(values) -> str:
    return "x".join(map(str, values))


# --- MACs -------------------------------------------------------------------------------------

def op_macs(graph: CellGraph, spatial: Sequence[int], history: int = 1) -> dict[str, int]:
    """Op node → its multiply-accumulates per step and batch element, for every op whose
    registry entry counts them (`OpDef.macs`: convs, attention)."""
    spatial = _check_spatial(graph, spatial)
    sizes = extents(graph, spatial, history)

    def size(node: str) -> tuple[int, tuple[int, ...]]:
        extent = sizes.get(node, Extent(1, spatial))
        return extent.entries, extent.spatial

    return {node: OPS[graph[node]["op"]].macs(graph, node, size) for node in graph.ops()
            if OPS[graph[node]["op"]].macs is not None}


def conv_macs(graph: CellGraph, spatial: Sequence[int], history: int = 1) -> dict[str, int]:
    """Conv node → its multiply-accumulates per step and batch element.

    Channels are read off the graph (the conv's own and its input's), so this holds for the
    fused convs of an optimised graph too; a conv on a stack runs once per entry.
    """
    return {node: macs for node, macs in op_macs(graph, spatial, history).items()
            if graph[node]["op"] != "attention"}


@dataclass(frozen=True)
class AttentionCount:
    """One attention op and what it costs: softmax(q kᵀ) v over tokens of `channels` features."""

    node: str
    queries: int  # Nq: tokens of q (stack entries × T × H × W)
    keys: int  # Nk
    channels: int  # C of q and k
    value_channels: int  # C of v (and of the result)
    patches: int  # s: tokens attend within each of s×s patches
    macs: int  # (Nq · Nk · C + Nq · Nk · C_v) / s²


def attention_counts(graph: CellGraph, spatial: Sequence[int], history: int = 1) -> list[AttentionCount]:
    """Every attention op of the step with its token counts and MACs."""
    spatial = _check_spatial(graph, spatial)
    sizes = extents(graph, spatial, history)
    macs = op_macs(graph, spatial, history)
    counts = []
    for node in graph.ops("attention"):
        query, key, value = graph.operands(node)
        if graph[key].get("op") == "cat_entries":  # tokens=reshape: C values of every entry a token
            key = graph.operands(key)[0]
        counts.append(AttentionCount(node, sizes[query].positions, sizes[key].positions, graph[query]["channels"],
                                     graph[value]["channels"], graph[node].get("patches", 1), macs[node]))
    return counts


def macs_per_step(graph: CellGraph, spatial: Sequence[int], history: int = 1) -> int:
    """Multiply-accumulates of one step for one batch element at input size `spatial`: convs
    and attention (see the module docstring for what is not counted)."""
    return sum(op_macs(graph, spatial, history).values())


def conv_count(graph: CellGraph) -> int:
    """How many conv ops one step runs (fewer after fusion than in the spec)."""
    return graph.count("conv")


def parameter_count(graph: CellGraph) -> int:
    """Learnable scalars of the cell: what `sum(p.numel() for p in cell.parameters())` gives."""
    return sum(math.prod(info.shape) for info in graph.weights.values())


def _check_spatial(graph: CellGraph, spatial: Sequence[int]) -> tuple[int, ...]:
    """A size with one positive entry per spatial dim of the cell (H W, or T H W for 3D)."""
    spatial = tuple(spatial)
    if len(spatial) != graph.spatial_dims or any(size < 1 for size in spatial):
        want = "H W" if graph.spatial_dims == 2 else "T H W"
        raise CellgenError(f"{graph.name} is a {graph.spatial_dims}D cell: its input size is {want} "
                           f"(positive whole numbers), not {' '.join(map(str, spatial)) or 'nothing'}")
    return spatial


# --- gates ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Share:
    """A part of a weight's parameters (and MACs) credited to a gate, or to several together."""

    gates: tuple[str, ...]  # one gate; several: shared by all of them, not split
    fraction: Fraction
    via: Optional[str] = None  # the chunk of a fused value it is credited through (`i_x`)


def first_named(graph: CellGraph, node: str) -> list[str]:
    """The named values `node`'s result reaches first, walking forward through anonymous ops
    (breadth-first, so in order of distance, then of creation)."""
    seen, found = {node}, []
    queue = deque(_by_creation(graph.users(node)))
    while queue:
        current = queue.popleft()
        if graph[current].get("name"):
            found.append(current)
            continue
        for user in _by_creation(graph.users(current)):
            if user not in seen:
                seen.add(user)
                queue.append(user)
    return list(dict.fromkeys(found))


def shares(graph: CellGraph, node: str) -> list[Share]:
    """Who is credited with `node` (a weight, or an op such as an attention): see the module
    docstring. An empty list: it feeds no named value."""
    if graph[node]["kind"] == "op" and graph[node].get("name"):
        return [Share((graph[node]["name"],), Fraction(1))]
    reached = first_named(graph, node)
    if not reached:
        return []
    if len(reached) == 1:
        return [Share((graph[reached[0]]["name"],), Fraction(1))]
    if _parts_of_one_value(graph, reached):
        return _merged([Share(_gates_of(graph, part), fraction, graph[part]["name"])
                        for part, fraction in _part_fractions(graph, reached)])
    return [Share(tuple(graph[n]["name"] for n in reached), Fraction(1))]


def _merged(parts: list[Share]) -> list[Share]:
    """One share per gate (or group): pieces that all end up in one gate (`A_H, A_C = split(…)`,
    both feeding A) are that gate's whole weight, not two halves."""
    merged: dict[tuple[str, ...], list[Share]] = {}
    for share in parts:
        merged.setdefault(share.gates, []).append(share)
    result = []
    for gates, members in merged.items():
        fraction = sum((m.fraction for m in members), Fraction(0))
        via = ", ".join(m.via for m in members if m.via) if fraction < 1 else None
        result.append(Share(gates, fraction, via or None))
    return result


def _parts_of_one_value(graph: CellGraph, nodes: list[str]) -> bool:
    """Whether `nodes` are the pieces one unpack cut from one value (`a, b = …`)."""
    return (all(graph[n].get("op") in _PART_OPS for n in nodes)
            and len({graph.operands(n)[0] for n in nodes}) == 1)


def chunks_of_one_value(graph: CellGraph, nodes: list[str]) -> bool:
    """Whether `nodes` are channel chunks of one value (`i_x, g_x, … = LN_x(W_x ⋆ x)`)."""
    return _parts_of_one_value(graph, nodes) and all(graph[n]["op"] == "slice" for n in nodes)


def _part_fractions(graph: CellGraph, parts: list[str]) -> list[tuple[str, Fraction]]:
    """Each piece's part of the whole: channel chunks by their channels, equal pieces equally."""
    if all(graph[p]["op"] == "slice" and graph[p].get("stop") is not None for p in parts):
        widths = {p: graph[p]["stop"] - graph[p]["start"] for p in parts}
        total = sum(widths.values())
        return [(p, Fraction(widths[p], total)) for p in parts]
    return [(p, Fraction(1, len(parts))) for p in parts]


def _gates_of(graph: CellGraph, part: str) -> tuple[str, ...]:
    """The gate a chunk of a fused value counts for: the named value it feeds (the chunk itself
    if it feeds none, or every one if it feeds several)."""
    reached = first_named(graph, part)
    return tuple(graph[n]["name"] for n in reached) or (graph[part]["name"],)


def weight_gate(graph: CellGraph, symbol: str) -> Optional[str]:
    """The gate a weight counts for, as one string: `i`; `i, g, r, …` for a fused weight
    whose chunks feed several gates or a weight shared by several; None if it feeds none."""
    names = [g for share in shares(graph, graph.weight_node(symbol)) for g in share.gates]
    return ", ".join(dict.fromkeys(names)) or None


# --- the summary --------------------------------------------------------------------------------

@dataclass(frozen=True)
class WeightRow:
    """One learnable tensor (a `state_dict` entry) of the cell."""

    symbol: str
    kind: str  # "conv" | "bias" | "elementwise" | "norm_gain" | "norm_bias"
    shape: tuple[int, ...]
    parameters: int
    gate: Optional[str]  # see `weight_gate`
    macs: int = 0  # of the convs that use it, per step and batch element (a shared weight: every use)
    kernel: tuple[int, ...] = ()
    shares: tuple[Share, ...] = ()


@dataclass(frozen=True)
class GateLine:
    """One weight's part in one gate group of the summary."""

    symbol: str  # a weight symbol, or "attention" for an attention op
    kind: str
    shape: tuple[int, ...]
    parameters: int  # credited to this group
    macs: int  # credited to this group
    note: str = ""  # how it was credited (`chunk i_x: 64 of 448 channels`), or an attention's sizes


@dataclass(frozen=True)
class Gate:
    """The weights (and attention) that feed one named value, or a group that shares weights."""

    title: str  # the gate's name, or `shared by a, b, c`
    gates: tuple[str, ...]
    parameters: int
    macs: int
    lines: tuple[GateLine, ...]


@dataclass
class Summary:
    """What `cellgen compile --emit summary` prints, as data (`asdict` gives plain JSON types)."""

    name: str
    citation: Optional[str]
    params: dict
    spatial_dims: int
    size: tuple[int, ...]
    history: int  # past values assumed for an unbounded history
    unbounded_histories: list[str]  # the states whose history has no bound
    inputs: dict  # name → {"channels", "window"}
    states: dict  # name → {"channels", "zigzag", "history", "history_size"}
    weights: list[WeightRow]
    gates: list[Gate]
    multi_kernel: dict  # symbol → {"kernels": [...], "parameters": total over its kernels}
    attention: list[AttentionCount]
    parameters: int
    conv_macs: int
    attention_macs: int
    convs: int
    notes: list[str] = field(default_factory=list)

    @property
    def macs(self) -> int:
        return self.conv_macs + self.attention_macs

    def to_json(self) -> dict:
        data = asdict(self)
        data["macs"] = self.macs
        return _plain(data)


def weight_table(graph: CellGraph, spatial: Optional[Sequence[int]] = None, history: int = 1) -> list[WeightRow]:
    """Every weight symbol with its kind, shape, parameter count, gate and credits, in spec
    order. With `spatial`, each conv weight also carries the MACs of the convs that use it."""
    macs_by_symbol: dict[str, int] = {}
    if spatial is not None:
        for node, macs in conv_macs(graph, spatial, history).items():
            symbol = graph[conv_operands(graph, node)[1]].get("name")
            macs_by_symbol[symbol] = macs_by_symbol.get(symbol, 0) + macs
    rows = []
    for symbol, info in graph.weights.items():
        credit = tuple(shares(graph, graph.weight_node(symbol)))
        gate = ", ".join(dict.fromkeys(g for s in credit for g in s.gates)) or None
        rows.append(WeightRow(symbol, info.kind, tuple(info.shape), math.prod(info.shape), gate,
                              macs_by_symbol.get(symbol, 0), tuple(info.kernel), credit))
    return rows


def summarize(graph: CellGraph, size: Optional[Sequence[int]] = None, *, history: int = 1) -> Summary:
    """Parameters per weight and per gate, and MACs per step, of an (unoptimised) cell graph
    at input size `size` (see `input_size`)."""
    spatial = input_size(graph, size)
    if history < 1:
        raise CellgenError(f"an unbounded history is counted at 1 or more past values, not {history}")
    rows = weight_table(graph, spatial, history)
    attention = attention_counts(graph, spatial, history)
    return Summary(
        name=graph.name, citation=graph.citation, params=dict(graph.params), spatial_dims=graph.spatial_dims,
        size=spatial, history=history,
        unbounded_histories=[s for s, info in graph.states.items() if info.history and info.history_size is None],
        inputs={name: {"channels": graph[node]["channels"], "window": graph.input_windows.get(name)}
                for name, node in graph.inputs.items()},
        states={name: {k: v for k, v in vars(info).items() if k != "name"} for name, info in graph.states.items()},
        weights=rows, gates=_gate_groups(graph, rows, attention), multi_kernel=_multi_kernel(rows),
        attention=attention, parameters=parameter_count(graph),
        conv_macs=sum(conv_macs(graph, spatial, history).values()), attention_macs=sum(a.macs for a in attention),
        convs=conv_count(graph), notes=size_notes(graph, spatial, history))


def _gate_groups(graph: CellGraph, rows: list[WeightRow], attention: list[AttentionCount]) -> list[Gate]:
    """Weights grouped by the gate (or the set of gates sharing them) they are credited to."""
    groups: dict[tuple[str, ...], list[GateLine]] = {}
    for row in rows:
        if not row.shares:
            groups.setdefault((), []).append(GateLine(row.symbol, row.kind, row.shape, row.parameters, row.macs,
                                                      "feeds no gate"))
            continue
        fractions = [s.fraction for s in row.shares]
        for share, parameters, macs in zip(row.shares, _apportion(row.parameters, fractions),
                                           _apportion(row.macs, fractions)):
            note = ""
            if share.via is not None:
                note = f"chunk {share.via}: {share.fraction.numerator}/{share.fraction.denominator} of it"
            groups.setdefault(share.gates, []).append(GateLine(row.symbol, row.kind, row.shape, parameters, macs,
                                                               note))
    for count in attention:
        credit = shares(graph, count.node)
        gates = credit[0].gates if credit else ()
        note = (f"q {count.queries} tokens, k/v {count.keys} tokens, C {count.channels}/{count.value_channels}"
                + (f", {count.patches}x{count.patches} patches" if count.patches > 1 else ""))
        groups.setdefault(gates, []).append(GateLine("attention", "attention", (), 0, count.macs, note))
    result = []
    for gates, lines in groups.items():
        title = gates[0] if len(gates) == 1 else (f"shared by {', '.join(gates)}" if gates else "(feeds no gate)")
        result.append(Gate(title, gates, sum(line.parameters for line in lines), sum(line.macs for line in lines),
                           tuple(lines)))
    return result


def _apportion(total: int, fractions: list[Fraction]) -> list[int]:
    """Whole numbers in proportion to `fractions` that add up to `total` (largest remainder),
    so that the gates' parameters always sum to the cell's."""
    exact = [total * f for f in fractions]
    parts = [math.floor(e) for e in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: exact[i] - parts[i], reverse=True)
    for i in by_remainder[:total - sum(parts)]:
        parts[i] += 1
    return parts


def _multi_kernel(rows: list[WeightRow]) -> dict:
    """Symbols of multi-kernel convs (`W_xi` of `W_xi.3x3`, `W_xi.5x5`) and their totals."""
    totals: dict[str, dict] = {}
    for row in rows:
        match = _KERNEL_SUFFIX.match(row.symbol)
        if match and row.kind == "conv":
            entry = totals.setdefault(match["base"], {"kernels": [], "parameters": 0, "macs": 0})
            entry["kernels"].append(match["kernel"])
            entry["parameters"] += row.parameters
            entry["macs"] += row.macs
    return {symbol: entry for symbol, entry in totals.items() if len(entry["kernels"]) > 1}


def _plain(value):
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, Fraction):
        return str(value)
    return value


def _by_creation(nodes: list[str]) -> list[str]:
    return sorted(nodes, key=lambda node: int(node[1:]))


# --- the summary as text -------------------------------------------------------------------------

def format_summary(summary: Summary, *, optimized_convs: Optional[int] = None,
                   opt_level: Optional[int] = None) -> str:
    """The text of `cellgen compile --emit summary`: header, inputs and states, weights
    grouped by gate, multi-kernel totals, totals and what was assumed.

    Numbers are plain integers (no separators) so that scripts can grep them; a weight's line
    is `    SYMBOL  KIND  SHAPE  PARAMETERS  MACS  [note]`, a gate's `  NAME  PARAMETERS  MACS`.
    """
    size = _x(summary.size)
    lines = [summary.name + (f"  ({summary.citation})" if summary.citation else ""),
             "params: " + (" ".join(f"{k}={v}" for k, v in summary.params.items()) or "none"), ""]
    lines += ["inputs"] + [f"  {name:<8} {_plural(info['channels'], 'channel')}"
                           + (f", window of {info['window']} frames" if info["window"] else "")
                           for name, info in summary.inputs.items()]
    lines += ["states"] + [f"  {name:<8} {_plural(info['channels'], 'channel')}" + _state_extras(info)
                           for name, info in summary.states.items()]
    table = [["weights by gate", "kind", "shape", "parameters", f"MACs at {size}", ""]]
    for gate in summary.gates:
        table.append([f"  {gate.title}", "", "", str(gate.parameters), str(gate.macs), ""])
        table += [[f"    {line.symbol}", line.kind, _x(line.shape) or "-",
                   str(line.parameters), str(line.macs) if line.kind in ("conv", "attention") else "-", line.note]
                  for line in gate.lines]
    table.append(["  total", "", "", str(summary.parameters), str(summary.macs), ""])
    lines += [""] + _align(table, right={3, 4}) + [""]
    if summary.multi_kernel:
        rows = [["multi-kernel weights", "kernels", "parameters", f"MACs at {size}"]]
        rows += [[f"  {symbol}", "+".join(entry["kernels"]), str(entry["parameters"]), str(entry["macs"])]
                 for symbol, entry in summary.multi_kernel.items()]
        lines += _align(rows, right={2, 3}) + [""]
    convs = f"convs per step: {summary.convs} in the spec"
    if optimized_convs is not None:
        convs += f", {optimized_convs} after -O{opt_level}"
    lines += [f"parameters: {summary.parameters} in {_plural(len(summary.weights), 'weight')}", convs,
              f"MACs per step: {summary.macs} ({_short(summary.macs)}) per batch element at {size}: "
              f"convs {summary.conv_macs}, attention {summary.attention_macs}"]
    lines += [f"  {line}" for line in _assumptions(summary)]
    return "\n".join(lines) + "\n"


def _state_extras(info: dict) -> str:
    extras = []
    if info.get("zigzag"):
        extras.append("zigzag")
    if info.get("history"):
        size = info.get("history_size")
        extras.append(f"history of {size} past values" if size else "history of every past value")
    return "".join(f", {e}" for e in extras)


def _assumptions(summary: Summary) -> list[str]:
    """How the numbers were counted, so that a reader can redo them."""
    dims = "T H W" if summary.spatial_dims == 3 else "H W"
    out = [f"input size {_x(summary.size)} ({dims}; set with --size H W"
           + (", T defaults to the input window" if summary.spatial_dims == 3 else "") + "; default 64x64)",
           "counted: convs (a 3D kernel's T included, a conv on a stack once per entry) and attention "
           "(Nq*Nk*C for q.k and for .v, divided by patches^2); not counted: LayerNorm, softmax, sums, "
           "activations, elementwise ops",
           "gates: a weight counts for the gate it feeds; a fused weight cut into chunks by an unpack, "
           "for each chunk's gate by its channels; a weight feeding several gates is listed as shared"]
    if summary.unbounded_histories:
        states = ", ".join(summary.unbounded_histories)
        out.append(f"history of {states} is unbounded: attention counted over {summary.history} past "
                   f"value{'s' if summary.history != 1 else ''} (it grows by that much each step; -p tau=N bounds it)")
    out += [f"note: {note}" for note in summary.notes]
    return out


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"




def _short(number: int) -> str:
    for unit, scale in (("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if number >= scale:
            return f"{number / scale:.3g} {unit}"
    return str(number)
