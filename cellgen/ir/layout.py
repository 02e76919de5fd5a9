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

from cellgen.errors import Span, TypeMismatchError, span_text
from cellgen.ir.analysis import AXES, analyze  # noqa: F401  (AXES: the axes a spec may name)
from cellgen.ir.graph import CellGraph
from cellgen.ir.ops import KEPT, NO_TIME_AXIS, OPS, Length, Size


def _size_text(axis: str, value: Optional[Fraction], frames: Optional[int]) -> str:
    """`is 2·W wide`, `is W/2 wide`, `is 3 frames long`, `is 1 wide (…)`."""
    if value is KEPT:
        return f"is 1 {'wide' if axis == 'W' else 'high' if axis == 'H' else 'frame long'} " \
               f"(a reduction over {axis} keeps it at size 1)"
    if axis == "T" and frames:
        count = value * frames
        return f"is {count} frame{'s' * (count != 1)} long"
    if isinstance(value, Size):  # a conv without "same" padding: `H−4`
        scale = _size_text(axis, value.scale, None).split(" ")[1]
        offset = value.offset
        sign = "+" if offset > 0 else "−"
        return f"is {scale}{sign}{abs(offset)} {'wide' if axis == 'W' else 'high' if axis == 'H' else 'long'}"
    size = axis if value == 1 else f"{value.numerator}·{axis}" if value.denominator == 1 else \
        f"{axis}/{value.denominator}" if value.numerator == 1 else f"{value}·{axis}"
    return f"is {size} {'wide' if axis == 'W' else 'high' if axis == 'H' else 'long'}"


def _holds(length: Length) -> str:
    if isinstance(length, int):
        return f"has {length} entries"
    if length[1] is None:
        return "holds every past value (one more each step)"
    return f"holds the last {length[1]} values (fewer in the first steps)"


class Layout:
    """What validation knows of a graph (its facts, in sets), and how it words a value in a
    message; an op's own rules (`OpDef.check`) are given one."""

    def __init__(self, graph: CellGraph, spans: Mapping[str, Span], order: list[str]):
        self.graph, self.spans = graph, spans
        facts = {node: data["facts"] for node, data in analyze(graph, order).nx.nodes(data=True)}
        self.stacked = {node for node, f in facts.items() if f.stacked}
        self.lengths = {node: f.length for node, f in facts.items() if f.stacked}
        self.maps = {node for node, f in facts.items() if f.map}
        self.extents = {node: f.extent for node, f in facts.items() if f.map}
        first_input = next(iter(graph.inputs), None)
        self.frames = graph.input_windows.get(first_input) if first_input else None

    def sizes(self, a: str, b: str) -> Optional[str]:
        """How two maps' sizes differ, in words, or None if they are the same size."""
        extents = self.extents
        for axis in extents[a]:
            if KEPT in (extents[a][axis], extents[b][axis]):
                continue  # a reduction kept the axis at size 1: it broadcasts
            if extents[a][axis] != extents[b][axis]:
                return (f"{self.written(a)} {_size_text(axis, extents[a][axis], self.frames)}, "
                        f"{self.written(b)} {_size_text(axis, extents[b][axis], self.frames)}")
        return None

    def size_hint(self, a: str, b: str) -> str:
        frames_a, frames_b = self.extents[a].get("T"), self.extents[b].get("T")
        if frames_a != frames_b and None not in (frames_a, frames_b) and \
                len(set(self.graph.input_windows.values())) > 1:
            return "every input of a 3D cell should read the same window of frames (`window T`)"
        if any(self.graph[n].get("geometry") is not None for n in self.graph.ops("conv")):
            return ("a conv with `pad valid` (or a padding other than `same`, or a stride) changes a map's "
                    "size: `resize nearest` brings its result back to its input's size, `pad same` keeps it")
        return ("`cat(…, along=W)` and `split(…, along=W)` change a map's size along an axis; maps meet "
                "only at equal sizes")

    def written(self, node: str) -> str:
        """A value as the user wrote it: its equation's name, else its text."""
        data = self.graph[node]
        if data["kind"] in ("input", "state") or (data["kind"] == "op" and data.get("name")):
            return f"`{data['name']}`"
        return f"`{span_text(self.spans.get(node) or data.get('span'))}`"

    def not_a_map(self, node: str) -> str:
        kind = self.graph[node]["kind"]
        if kind == "const":
            return "a number"
        if kind == "weight" or self.graph[node].get("op") == "channel_view":
            return "a weight"
        return "computed from weights and numbers only"

    holds = staticmethod(lambda length: _holds(length))


def check_layout(graph: CellGraph, spans: Optional[Mapping[str, Span]] = None) -> None:
    """Stack and axis rules a spec can break: a stack where a map must stand, or the reverse;
    stacks of different lengths meeting; axes a map does not have. `spans` gives, for a node
    that an equation names, where the expression itself was written (a caret under the call,
    not the whole equation). The rules every op keeps are here; an op's own are its registry
    entry's `check`."""
    spans = spans or {}
    order = graph.order()
    layout = Layout(graph, spans, order)
    maps, stacked, lengths, extents = layout.maps, layout.stacked, layout.lengths, layout.extents
    written, sizes, not_a_map = layout.written, layout.sizes, layout.not_a_map

    for node in (n for n in order if graph[n]["kind"] == "op"):
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
        meeting = [o for o in operands[definition.meets:] if o in maps]
        if "sizes_own" not in definition.groups and len(meeting) > 1:
            other = next((o for o in meeting[1:] if sizes(meeting[0], o)), None)
            if other is not None:
                raise TypeMismatchError(f"maps of different sizes meet here: {sizes(meeting[0], other)}", span,
                                        hint=layout.size_hint(meeting[0], other))
        meeting = [o for o in operands[definition.meets:] if o in stacked and "stacks_own" not in definition.groups]
        different = [o for o in meeting if lengths[o] != lengths[meeting[0]]]
        if different:
            first, other = meeting[0], different[0]
            histories = [o for o in (first, other) if not isinstance(lengths[o], int)]
            raise TypeMismatchError(
                f"stacks of different lengths meet here: {written(first)} {_holds(lengths[first])}, "
                f"{written(other)} {_holds(lengths[other])}", span,
                hint=("stacks meet entry by entry; a history grows one value a step up to its τ, so it only ever "
                      "matches a history of the same τ" if histories else "stacks meet entry by entry"))
        if definition.check is not None:
            definition.check(layout, node, data, operands, span)
        if data.get("axis") == "T" and graph.spatial_dims != 3:
            raise TypeMismatchError("axis T: this cell's maps have no time axis (NCHW; T exists only in "
                                    "3D cells, NCTHW)", span, hint=NO_TIME_AXIS)
    for name, node in graph.next_state.items():
        if node not in maps:
            raise TypeMismatchError(f"`{name}'` is {not_a_map(node)}, but a state holds a map of the step",
                                    spans.get(node) or graph[node].get("span"),
                                    hint="compute it from the inputs and states")
        state_channels = graph[graph.state_nodes[name]].get("channels")
        if graph[node].get("broadcast") and state_channels != 1:  # one channel that broadcasts meets any width
            raise TypeMismatchError(f"the next value of state `{name}` must have `{name}`'s {state_channels} "
                                    f"channels, but {written(node)} has 1 (a reduction over C keeps it at size 1)",
                                    spans.get(node) or graph[node].get("span"),
                                    hint="a reduction's result broadcasts back when it meets a full map: "
                                         "`x ⊙ sum(…, over=C)`")
        kept = [axis for axis, value in extents[node].items() if value is KEPT]
        if kept:  # a kept axis meets any size, so `sizes` below lets it pass: a state keeps its size
            raise TypeMismatchError(f"the next value of state `{name}` must be as large as `{name}`, but "
                                    f"{written(node)} {_size_text(kept[0], KEPT, None)}",
                                    spans.get(node) or graph[node].get("span"),
                                    hint="a reduction's result broadcasts back when it meets a full map: "
                                         f"`x ⊙ sum(…, over={kept[0]})`")
        different = sizes(node, graph.state_nodes[name])
        if different:
            raise TypeMismatchError(f"the next value of state `{name}` must be as large as `{name}`, but {different}",
                                    spans.get(node) or graph[node].get("span"),
                                    hint=layout.size_hint(node, graph.state_nodes[name])
                                    if any(graph[n].get("geometry") is not None for n in graph.ops("conv"))
                                    else "a state keeps its size from step to step: cut a `cat(…, along=…)` back "
                                         "with `split`")
        if node in stacked:
            raise TypeMismatchError(f"`{name}'` is a stack, which {_holds(lengths[node])}, "
                                    "but a state holds a single map", spans.get(node) or graph[node].get("span"),
                                    hint="reduce it, `sum(…, over=stack)`, or take its entries apart: "
                                         "`a, b = unstack(…)`")
    for output in dict.fromkeys([graph.output, *graph.extra_outputs.values()]):  # `output h', delta_c, …`: each
        if output and output not in graph.next_state.values() and output not in maps:
            raise TypeMismatchError(f"the cell's output {written(output)} is {not_a_map(output)}, but a "
                                    "cell outputs a map", spans.get(output) or graph[output].get("span"))
        if output and output in maps:
            if graph[output].get("broadcast"):
                raise TypeMismatchError(f"the cell's output {written(output)} has 1 channel that broadcasts (a "
                                        "reduction over C keeps it at size 1), but a cell outputs the maps it "
                                        "computes", spans.get(output) or graph[output].get("span"),
                                        hint="a reduction's result broadcasts back when it meets a full map: "
                                             "`x ⊙ sum(…, over=C)`")
            kept = [axis for axis, value in extents[output].items() if value is KEPT]
            if kept:
                raise TypeMismatchError(f"the cell's output {written(output)} {_size_text(kept[0], KEPT, None)}, "
                                        "but a cell outputs a map as large as its input",
                                        spans.get(output) or graph[output].get("span"),
                                        hint="a reduction's result broadcasts back when it meets a full map: "
                                             f"`x ⊙ sum(…, over={kept[0]})`")
        if output and output in stacked and output not in graph.next_state.values():
            raise TypeMismatchError(f"the cell's output {written(output)} is a stack, but a cell outputs a single "
                                    "map", spans.get(output) or graph[output].get("span"),
                                    hint="reduce it, `sum(…, over=stack)`, or output one map")
