"""Validation of stacks and axes: the rules a spec can break about which values are stacks,
how long they are and how large maps are, checked on the facts the analysis wrote
(cellgen/ir/analysis.py).

A value of a step is a map, (B, C, H, W) or (B, C, T, H, W), or a *stack* of maps with one
more axis after the batch, (B, N, C, …): a state's history `c[t-τ:t-1]`, or `stack(h, c)`.
Elementwise ops broadcast a map against a stack (every entry of the stack meets the map);
convs and LayerNorms apply to each entry.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Mapping, Optional

from cellgen.errors import ArityError, Note, Span, TypeMismatchError, span_text
from cellgen.ir.analysis import AXES, analyze  # noqa: F401  (AXES: the axes a spec may name)
from cellgen.ir.graph import CellGraph
from cellgen.ir.ops import OPS, Length


def _size_text(axis: str, value: Optional[Fraction], frames: Optional[int]) -> str:
    """`is 2·W wide`, `is W/2 wide`, `is 3 frames long`, `has no W axis (…)`."""
    if value is None:
        return f"has no {axis} axis (`sum(…, over={axis})` removed it)"
    if axis == "T" and frames:
        count = value * frames
        return f"is {count} frame{'s' * (count != 1)} long"
    size = axis if value == 1 else f"{value.numerator}·{axis}" if value.denominator == 1 else \
        f"{axis}/{value.denominator}" if value.numerator == 1 else f"{value}·{axis}"
    return f"is {size} {'wide' if axis == 'W' else 'high' if axis == 'H' else 'long'}"


def _holds(length: Length) -> str:
    if isinstance(length, int):
        return f"has {length} entries"
    if length[1] is None:
        return "holds every past value (one more each step)"
    return f"holds the last {length[1]} values (fewer in the first steps)"


def check_layout(graph: CellGraph, spans: Optional[Mapping[str, Span]] = None) -> None:
    """Stack and axis rules a spec can break: a stack where a map must stand, or the reverse;
    stacks of different lengths meeting; axes a map does not have. `spans` gives, for a node
    that an equation names, where the expression itself was written (a caret under the call,
    not the whole equation)."""
    spans = spans or {}
    facts = {node: data["facts"] for node, data in analyze(graph).nx.nodes(data=True)}
    stacked = {node for node, f in facts.items() if f.stacked}
    lengths = {node: f.length for node, f in facts.items() if f.stacked}
    maps = {node for node, f in facts.items() if f.map}
    extents = {node: f.extent for node, f in facts.items() if f.map}
    first_input = next(iter(graph.inputs), None)
    frames = graph.input_windows.get(first_input) if first_input else None

    def sizes(a: str, b: str) -> Optional[str]:
        """How two maps' sizes differ, in words, or None if they are the same size."""
        for axis in extents[a]:
            if extents[a][axis] != extents[b][axis]:
                return (f"{written(a)} {_size_text(axis, extents[a][axis], frames)}, "
                        f"{written(b)} {_size_text(axis, extents[b][axis], frames)}")
        return None

    def size_hint(a: str, b: str) -> str:
        frames_a, frames_b = extents[a].get("T"), extents[b].get("T")
        if frames_a != frames_b and None not in (frames_a, frames_b) and len(set(graph.input_windows.values())) > 1:
            return "every input of a 3D cell should read the same window of frames (`window T`)"
        return ("`cat(…, along=W)` and `split(…, along=W)` change a map's size along an axis, and "
                "`sum(…, over=W)` removes the axis; maps meet only at equal sizes")

    def written(node: str) -> str:
        """A value as the user wrote it: its equation's name, else its text."""
        data = graph[node]
        if data["kind"] in ("input", "state") or (data["kind"] == "op" and data.get("name")):
            return f"`{data['name']}`"
        return f"`{span_text(spans.get(node) or data.get('span'))}`"

    def not_a_map(node: str) -> str:
        kind = graph[node]["kind"]
        if kind == "const":
            return "a number"
        if kind == "weight" or graph[node].get("op") == "channel_view":
            return "a weight"
        return "computed from weights and numbers only"

    for node in graph.ops():
        data, operands = graph[node], graph.operands(node)
        op, span = data["op"], spans.get(node) or data.get("span")
        definition = OPS[op]
        if definition.needs_maps != ():
            positions = definition.needs_maps if definition.needs_maps is not None else range(len(operands))
            bad = [operands[i] for i in positions if operands[i] not in maps]
            if bad:
                raise TypeMismatchError(f"{definition.role} maps, but {written(bad[0])} is {not_a_map(bad[0])}", span,
                                        hint="a map is a value of the step: an input, a state, or something "
                                             "computed from them")
        meeting = [o for o in (operands[1:] if op == "attention" else operands) if o in maps]
        if op not in ("cat_along", "conv", "layernorm") and len(meeting) > 1:
            other = next((o for o in meeting[1:] if sizes(meeting[0], o)), None)
            if other is not None:
                raise TypeMismatchError(f"maps of different sizes meet here: {sizes(meeting[0], other)}", span,
                                        hint=size_hint(meeting[0], other))
        if op == "cat_along":
            others = {a: v for a, v in extents[meeting[0]].items() if a != data["axis"]}
            for o in meeting[1:]:
                if {a: v for a, v in extents[o].items() if a != data["axis"]} != others:
                    raise TypeMismatchError(f"`cat` joins maps of equal size across its axis, but "
                                            f"{sizes(meeting[0], o)}", span)
        meeting = [o for o in (operands[1:] if op == "attention" else operands) if o in stacked and op != "stack"]
        different = [o for o in meeting if lengths[o] != lengths[meeting[0]]]
        if different:
            first, other = meeting[0], different[0]
            histories = [o for o in (first, other) if not isinstance(lengths[o], int)]
            raise TypeMismatchError(
                f"stacks of different lengths meet here: {written(first)} {_holds(lengths[first])}, "
                f"{written(other)} {_holds(lengths[other])}", span,
                hint=("stacks meet entry by entry; a history grows one value a step up to its τ, so it only ever "
                      "matches a history of the same τ" if histories else "stacks meet entry by entry"))
        if op == "unstack" and data["index"] == 0 and operands[0] in stacked:
            length = lengths[operands[0]]
            if not isinstance(length, int):
                raise TypeMismatchError(f"`unstack` needs a stack of a fixed length, but {written(operands[0])} "
                                        f"{_holds(length)}", span,
                                        hint="reduce a history with sum(…, over=stack) or softmax(…, over=stack), "
                                             "or unstack a stack(…) of maps")
            if length != data["count"]:
                names = ", ".join("abcdefghijklmnopqrstuvwxyz"[i] if i < 26 else f"e{i}" for i in range(length))
                raise ArityError(f"{written(operands[0])} has {length} entries, but {data['count']} names "
                                 "receive them", span, hint=f"one name per entry: `{names} = unstack(…)`")
        if op in ("softmax", "reduce_sum", "unstack") and (op == "unstack" or data.get("axis") == "stack"):
            if operands[0] not in stacked:
                what = {"softmax": "softmax over the stack", "reduce_sum": "sum over the stack",
                        "unstack": "unstack"}[op]
                raise TypeMismatchError(f"{what} needs a stack (a history `c[t-τ:t-1]` or `stack(…)`), "
                                        "but this is a single map", span,
                                        hint=None if op == "unstack" else
                                        "pass it a stack, or name an axis of the map: `over=H`, `over=W`")
        if op == "stack" and any(o in stacked for o in operands):
            raise TypeMismatchError("stack() of a stack: a value has at most one stack axis", span,
                                    hint="stack maps only; reduce a stack first (`sum(…, over=stack)`), or take its "
                                         "entries apart with `unstack`")
        if op == "concat" and len({o in stacked for o in operands}) > 1:
            raise TypeMismatchError("[…] joins the channels of maps or of stacks, not of both", span,
                                    hint="unstack the stack first, or stack the maps")
        if op == "attention" and len({o in stacked for o in operands[1:]}) > 1:
            raise TypeMismatchError("attention's keys and values must both be stacks or both maps", span)
        axis, related = data.get("axis"), []
        if op == "layernorm":  # point at the declaration, which says the axes and the shape
            related = [Note(f"`{data['symbol']}` is applied here", span)]
            span = graph[operands[1]].get("decl_span") or span
        if (axis == "T" or "T" in data.get("axes", ())) and graph.spatial_dims != 3:
            what = f"`{data['symbol']}` normalises over T, but" if op == "layernorm" else "axis T:"
            raise TypeMismatchError(f"{what} this cell's maps have no time axis (NCHW; T exists only in "
                                    "3D cells, NCTHW)", span, related=related,
                                    hint="a cell is 3D when its convs are (`conv 2×5×5`) or an input reads a "
                                         "window of frames (`input x[C] window T`)")
        if op == "layernorm" and data["mode"] == "shape" and len(data["shape"]) > 1 + graph.spatial_dims:
            axes = "C, T, H, W" if graph.spatial_dims == 3 else "C, H, W"
            raise TypeMismatchError(f"`{data['symbol']}` has a shape of {len(data['shape'])} axes, "
                                    f"{list(data['shape'])}, but this cell's maps have {1 + graph.spatial_dims} "
                                    f"({axes})", span, related=related,
                                    hint="the shape covers the trailing axes of a map: `layernorm [C, H, W]`")
        if op == "attention" and data["patches"] > 1 and graph.spatial_dims not in (2, 3):
            raise TypeMismatchError("patches need a map with H and W", span)
    for name, node in graph.next_state.items():
        if node not in maps:
            raise TypeMismatchError(f"`{name}'` is {not_a_map(node)}, but a state holds a map of the step",
                                    spans.get(node) or graph[node].get("span"),
                                    hint="compute it from the inputs and states")
        different = sizes(node, graph.state_nodes[name])
        if different:
            raise TypeMismatchError(f"the next value of state `{name}` must be as large as `{name}`, but {different}",
                                    spans.get(node) or graph[node].get("span"),
                                    hint="a state keeps its size from step to step: cut a `cat(…, along=…)` back "
                                         "with `split`")
        if node in stacked:
            raise TypeMismatchError(f"`{name}'` is a stack, which {_holds(lengths[node])}, "
                                    "but a state holds a single map", spans.get(node) or graph[node].get("span"),
                                    hint="reduce it, `sum(…, over=stack)`, or take its entries apart: "
                                         "`a, b = unstack(…)`")
    if graph.output and graph.output not in graph.next_state.values() and graph.output not in maps:
        raise TypeMismatchError(f"the cell's output {written(graph.output)} is {not_a_map(graph.output)}, but a "
                                "cell outputs a map", spans.get(graph.output) or graph[graph.output].get("span"))
    if graph.output and graph.output in maps:
        removed = [axis for axis, value in extents[graph.output].items() if value is None]
        if removed:
            raise TypeMismatchError(f"the cell's output {written(graph.output)} has no {removed[0]} axis "
                                    f"(`sum(…, over={removed[0]})` removed it), but a cell outputs a map",
                                    spans.get(graph.output) or graph[graph.output].get("span"))
    if graph.output and graph.output in stacked and graph.output not in graph.next_state.values():
        node = graph.output
        raise TypeMismatchError(f"the cell's output {written(node)} is a stack, but a cell outputs a single map",
                                spans.get(node) or graph[node].get("span"),
                                hint="reduce it, `sum(…, over=stack)`, or output one map")
