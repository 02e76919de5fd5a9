"""The op registry: everything about one op of a cell graph, in one entry (as JAX keeps a
primitive's abstract evaluation, derivative and lowering together).

    OPS["tanh"] = OpDef("tanh", arity=(1, 1), groups={"elementwise", "activation"},
                        spellings=("tanh",), doc="hyperbolic tangent",
                        emit=unary("tanh"))

Every stage asks the table, never an op's name:

    lowering        `spellings` (a spec function's names), `operator` (a binary operator of the
                    language), `arity`, `groups` ("elementwise": channels equal, broadcast)
    analysis        `stack` (is the result a stack, and how long), `extent` (its size along T,
                    H, W): cellgen/ir/analysis.py runs them once and writes facts on the nodes
    validation      `needs_maps` and `role` (which operands must be maps, said how)
    stats, cost     `macs` (multiply-accumulates per step), `cost` ("values": writes its result,
                    "dispatch": a call only, a view or a weight-side op; a function for more)
    codegen         `emit`: the fx node(s) of one op, given the codegen context (torch arrives
                    through it, so this module never imports torch)
    render, diff    `symbol` (how a picture and a report write it), groups "arithmetic" (not a
                    "function" diff reports), "chain" (drawn as a run of small ops),
                    "ordered" (operand order drawn on the edges), "commutative"

Adding an op is one entry here and its tests; no other module learns its name, unless a pass
rewrites it (passes match ops by name, as rules anchored on an op do).

An op node's operands are ordered (port 0, 1, …). Elementwise ops broadcast their operands
against each other (scalars and per-channel biases included) and keep channels.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Optional, Union

from cellgen.errors import ArityError, Note, TypeMismatchError

# --- facts the analysis records (see cellgen/ir/analysis.py) -------------------------------------

# How many maps a stack holds: a fixed count (`stack(h, c)`: 2), or ("history", τ) for a
# history, which holds one more past value each step until it holds τ (τ None: no limit).
Length = Union[int, tuple]
# The size of a map along its own axes, relative to the first input's (a state's size is the
# first input's): `cat(a, b, along=W)` is 2 along W, a half of `split` 1/2; KEPT where a
# reduction kept the axis at size 1. Convs pad to keep the size ("same") unless their geometry
# says otherwise (`Size`).
Extent = dict[str, Optional[Fraction]]


@dataclass(frozen=True)
class Facts:
    """What the analysis knows of one value of the step."""

    map: bool  # a value of the step (from an input, a state or a history), not a weight or a number
    stacked: bool = False  # a stack of maps, (B, N, C, …)
    length: Optional[Length] = None  # a stack's length (see `Length`)
    extent: Optional[Extent] = None  # a map's size (see `Extent`)


# --- rules ---------------------------------------------------------------------------------------
# A stack rule: (node data, the operands' facts) → the result's stack length, None for a map.
# An extent rule: (node data, the facts of the operands that are maps) → the result's extent.

def stack_of_any(data: dict, operands: list[Facts]) -> Optional[Length]:
    """A stack when an operand is (a map meeting a stack is broadcast over it): its length."""
    return next((o.length for o in operands if o.stacked), None)


def stack_of_first(data: dict, operands: list[Facts]) -> Optional[Length]:
    """The result is shaped like the first operand (attention: its queries)."""
    return operands[0].length if operands[0].stacked else None


def makes_stack(data: dict, operands: list[Facts]) -> Optional[Length]:
    return len(operands)


def ends_stack(data: dict, operands: list[Facts]) -> Optional[Length]:
    return None


def extent_of_first(data: dict, maps: list[Facts]) -> Extent:
    return dict(maps[0].extent)


def _extent_cat(data: dict, maps: list[Facts]) -> Extent:
    extent, axis = dict(maps[0].extent), data["axis"]
    if axis in extent:
        parts = [m.extent[axis] for m in maps]
        extent[axis] = sum(parts)
    return extent


def _extent_split(data: dict, maps: list[Facts]) -> Extent:
    extent, axis = dict(maps[0].extent), data["axis"]
    if extent.get(axis) is not None:
        extent[axis] = extent[axis] / data["count"]
    return extent


class _Kept:
    """The extent of an axis a reduction kept at size 1 (`sum(…, over=(C, H, W))`): it
    broadcasts against a map of any size along that axis."""

    def __repr__(self) -> str:
        return "KEPT"


KEPT = _Kept()


def extent_broadcast(data: dict, maps: list[Facts]) -> Extent:
    """An elementwise result: each axis as large as its operands' that a reduction did not keep at 1."""
    extent = dict(maps[0].extent)
    for other in maps[1:]:
        for axis, value in other.extent.items():
            if extent.get(axis) is KEPT:
                extent[axis] = value
    return extent


def _extent_reduce(data: dict, maps: list[Facts]) -> Extent:
    extent = dict(maps[0].extent)
    for axis in data["axes"]:
        if axis in extent:
            extent[axis] = KEPT
    return extent


def _stack_of_reduce(data: dict, operands: list[Facts]) -> Optional[Length]:
    return None if "stack" in data["axes"] else stack_of_any(data, operands)


@dataclass(frozen=True)
class Size:
    """A size along one axis that a conv without "same" padding changed by a number of
    positions: `scale`·N + `offset`, N the first input's size (a `valid` 5×5 conv: H − 4).
    Sizes that are only a multiple of N stay Fractions; this meets them unequal, so maps of
    H and H − 4 meet at check time as different sizes."""

    scale: Fraction
    offset: Fraction

    @staticmethod
    def of(scale, offset) -> Union[Fraction, "Size"]:
        return Fraction(scale) if offset == 0 else Size(Fraction(scale), Fraction(offset))

    @staticmethod
    def _parts(other) -> tuple[Fraction, Fraction]:
        return (other.scale, other.offset) if isinstance(other, Size) else (Fraction(other), Fraction(0))

    def __add__(self, other):
        scale, offset = Size._parts(other)
        return Size.of(self.scale + scale, self.offset + offset)

    __radd__ = __add__

    def __truediv__(self, count):
        return Size.of(self.scale / count, self.offset / count)

    def __mul__(self, n):
        return self.scale * n + self.offset

    __rmul__ = __mul__


# A conv's geometry (node attr `geometry`, None for the default): per kernel axis a padding
# ("same", "valid" or a number of positions each side) and a stride, and `resize` ("nearest":
# the result resized back to its input's size, OpenSTL's tf_Conv3d; None).
def conv_geometry(data: dict) -> tuple[tuple, tuple, Optional[str]]:
    """(pads, strides, resize) of a conv node, the default spelled out."""
    geometry, axes = data.get("geometry"), len(data["kernel"])
    return geometry if geometry is not None else (("same",) * axes, (1,) * axes, None)


def geometry_text(geometry: Optional[tuple]) -> str:
    """A conv's geometry as a declaration writes it (`pad (valid, same, same) resize nearest`,
    `pad 1`, `stride 2`); "" for the default. For reports: diff's weights, show's labels."""
    if geometry is None:
        return ""
    pads, strides, resize = geometry

    def axes(values):
        return str(values[0]) if len(set(values)) == 1 else f"({', '.join(map(str, values))})"

    words = [] if set(pads) == {"same"} else [f"pad {axes(pads)}"]
    words += [] if set(strides) == {1} else [f"stride {axes(strides)}"]
    words += [] if resize is None else [f"resize {resize}"]
    return " ".join(words)


def conv_size(kernel: int, pad, stride: int, size):
    """A conv's output size along one axis from its input's (an int or an extent): "same"
    keeps it (divided by the stride), else (size + 2·pad − kernel) / stride + 1 — exact when
    the stride divides it, as torch's floor then is."""
    if pad == "same":
        return size / stride if stride != 1 else size
    pad = 0 if pad == "valid" else pad
    if isinstance(size, int):
        return (size + 2 * pad - kernel) // stride + 1
    scale, offset = Size._parts(size)  # an extent: positions change the offset, not the scale
    return Size.of(scale / stride, (offset + 2 * pad - kernel + stride) / Fraction(stride))


def _extent_conv(data: dict, maps: list[Facts]) -> Extent:
    extent = dict(maps[0].extent)
    pads, strides, resize = conv_geometry(data)
    if resize is not None:
        return extent
    axes = ("T", "H", "W")[3 - len(data["kernel"]):]
    for axis, kernel, pad, stride in zip(axes, data["kernel"], pads, strides):
        if extent.get(axis) is not None:
            extent[axis] = conv_size(kernel, pad, stride, extent[axis])
    return extent


# --- MACs ------------------------------------------------------------------------------------------
# A MACs rule: (graph, node, size) → multiply-accumulates per step and batch element, where
# `size(node)` is the absolute size of a value, (entries, (T,) H, W), from the analysis.

def _conv_macs(graph, node: str, size) -> int:
    data, (sources, _, _) = graph[node], conv_operands(graph, node)
    entries, spatial = size(sources[0])
    if data.get("geometry") is not None:  # the positions the conv computes (before a resize)
        pads, strides, _ = conv_geometry(data)
        spatial = [conv_size(k, p, s, n) for k, p, s, n in zip(data["kernel"], pads, strides, spatial)]
    inputs = sum(graph[source]["channels"] for source in sources)
    return entries * data["channels"] * inputs * _prod(data["kernel"]) * _prod(spatial)


def _attention_macs(graph, node: str, size) -> int:
    query, key, value = graph.operands(node)[:3]
    patches = graph[node].get("patches", 1)
    if graph[key].get("op") == "cat_entries":  # tokens=reshape: a token per C values of every entry
        key = graph.operands(key)[0]
    nq, nk = _positions(size(query)), _positions(size(key))
    return nq * nk * (graph[query]["channels"] + graph[value]["channels"]) // (patches * patches)


def _positions(size) -> int:
    """Tokens of attention: every position of every map of the stack."""
    entries, spatial = size
    return entries * _prod(spatial)


def _prod(values) -> int:
    result = 1
    for value in values:
        result *= value
    return result


# --- emitters --------------------------------------------------------------------------------------
# An emitter: (e, node, data, args) → the fx value of the op, where `e` is the codegen context
# (cellgen/codegen/fx.py: `_Emitter`): e.torch, e.F (torch.nn.functional), e.runtime
# (cellgen/runtime/ops.py), e.operator; e.call(fn, args, name), e.method(name, args, hint);
# e.stacked(node), e.dim(axis, stacked) (the tensor dim of a named axis), e.graph.

def unary(function: str, module: str = "torch") -> Callable:
    """The emitter of an elementwise function of torch (`torch.tanh`; module "F":
    `torch.nn.functional.gelu`), named after the value."""
    def emit(e, node, data, args):
        return e.elementwise(node, getattr(getattr(e, module), function), args)
    emit.__doc__ = f"{module}.{function}"
    return emit


def binary(operator_name: str) -> Callable:
    """The emitter of a Python operator (`operator.add`): prints as `a + b`."""
    def emit(e, node, data, args):
        return e.elementwise(node, getattr(e.operator, operator_name), args)
    emit.__doc__ = f"operator.{operator_name}"
    return emit


def conv_operands(graph, node: str) -> tuple[list[str], str, Optional[str]]:
    """A conv's sources, weight and bias. A conv reads one source, `W ⋆ x`, or — after the
    runtime-forms pass — the `parts` of a concatenation it joins itself, `W ⋆ [x, h]`:
    operands x₁…xₙ, W[, b]."""
    operands = graph.operands(node)
    parts = graph[node].get("parts", 1)
    return operands[:parts], operands[parts], operands[parts + 1] if len(operands) > parts + 1 else None


def _emit_conv(e, node, data, args):
    if data.get("geometry") is not None:
        return _emit_conv_geometry(e, node, data, args)
    parts = data.get("parts", 1)
    sources, weight = args[:parts], args[parts]
    bias = args[parts + 1] if len(args) > parts + 1 else None
    hint = "conv_" + (e.graph[e.graph.operands(node)[parts]]["name"] or "fused")
    padding, sources = e.conv_padding(data["kernel"], sources)
    if parts > 1:  # cellgen.runtime.ops.conv_of_concat: see cellgen/passes/runtime_forms.py
        return e.call(e.runtime.conv_of_concat, (sources, weight, bias, padding), data["name"] or hint)
    if e.stacked(e.graph.operands(node)[0]):
        return e.call(e.runtime.stacked_conv, (sources[0], weight, bias, padding), data["name"] or hint)
    conv = e.torch.conv2d if len(data["kernel"]) == 2 else e.torch.conv3d
    return e.call(conv, (sources[0], weight, bias, 1, padding), data["name"] or hint)


def _emit_detach(e, node, data, args):
    return e.method("detach", (args[0],), data["name"] or "detached")


def _emit_conv_geometry(e, node, data, args):
    """A conv with its own padding, stride or resize (docs/conv_modes.md): explicit numbers for
    torch (a "same" axis of an even kernel padded first, as torch's "same" pads), then
    `runtime.resize_nearest` back to the input's size when the declaration says `resize`."""
    parts = data.get("parts", 1)
    sources, weight = args[:parts], args[parts]
    bias = args[parts + 1] if len(args) > parts + 1 else None
    hint = "conv_" + (e.graph[e.graph.operands(node)[parts]]["name"] or "fused")
    pads, strides, resize = conv_geometry(data)
    padding, sources = e.conv_padding(data["kernel"], sources, pads)
    stacked = e.stacked(e.graph.operands(node)[0])
    name = (data["name"] or hint) if resize is None else hint
    if parts > 1:  # the runtime-forms pass joins parts only at stride 1
        out = e.call(e.runtime.conv_of_concat, (sources, weight, bias, padding), name)
    elif stacked:
        out = e.call(e.runtime.stacked_conv, (sources[0], weight, bias, padding, tuple(strides)), name)
    else:
        conv = e.torch.conv2d if len(data["kernel"]) == 2 else e.torch.conv3d
        out = e.call(conv, (sources[0], weight, bias, tuple(strides), padding), name)
    if resize is None:
        return out
    return e.call(e.runtime.resize_nearest, (out, args[0], len(data["kernel"]), stacked), data["name"] or "resized")


def _emit_channel_view(e, node, data, args):
    return e.method("view", (args[0], -1) + (1,) * e.graph.spatial_dims, data["name"] or "view")


def _emit_concat(e, node, data, args):
    return e.call(e.torch.cat, (list(args), 1 + e.stacked(node)), data["name"] or "cat")


def _emit_slice(e, node, data, args):
    start, stop = data["start"], data["stop"]
    return e.call(e.torch.narrow, (args[0], 1 + e.stacked(node), start, stop - start), data["name"] or "chunk")


def _emit_split(e, node, data, args):
    return e.method("split", (args[0], list(data["sizes"]), 1 + e.stacked(node)), data["name"] or "pieces")


def _emit_piece(e, node, data, args):
    return e.call(e.operator.getitem, (args[0], data["index"]), data["name"] or "chunk")


def _emit_interleave(e, node, data, args):
    """Gate-major interleave (multi-kernel ConvLSTM, Fig. 4b): view each (B, G·C_j, …) tensor as
    (B, G, C_j, …), concatenate on the C axis, flatten back to (B, G·ΣC_j, …)."""
    groups, dim = data["groups"], 1 + e.stacked(node)
    views = [e.method("unflatten", (arg, dim, (groups, -1)), "gates") for arg in args]
    joined = e.call(e.torch.cat, (views, dim + 1), "gates_cat")
    return e.method("flatten", (joined, dim, dim + 1), data["name"] or "interleaved")


def _emit_weight_cat(e, node, data, args):
    return e.call(e.torch.cat, (list(args), data["dim"]), data["name"] or "w_cat")


def _emit_weight_slice(e, node, data, args):
    start, stop = data["start"], data["stop"]
    return e.call(e.torch.narrow, (args[0], 0, start, stop - start), data["name"] or "w_slice")


def _emit_weight_add(e, node, data, args):
    return e.call(e.operator.add, tuple(args), data["name"] or "w_add")


def _emit_weight_view(e, node, data, args):
    return e.method("reshape", (args[0], -1), data["name"] or "w_vec")


def _emit_pad_kernel(e, node, data, args):
    pads: list[int] = []
    for have, want in reversed(list(zip(data["from_kernel"], data["kernel"]))):  # F.pad: last dim first
        pads += [(want - have) // 2] * 2
    return e.call(e.F.pad, (args[0], tuple(pads)), data["name"] or "w_pad")


def number_key(value) -> str:
    """A constant's or a fill's value as the step computes with it, for comparing two: 1 and 1.0
    alike, 0.0 and -0.0 apart (they compare equal, but 1 / (x ⊙ -0.0) is −∞, not ∞)."""
    return repr(float(value))


def _emit_fill(e, node, data, args):
    if number_key(data["value"]) == "0.0":  # not -0.0: that is a fill of its own
        return e.method("new_zeros", (args[0], (data["size"],)), data["name"] or "zeros")
    return e.method("new_full", (args[0], (data["size"],), float(data["value"])), data["name"] or "full")


def _operand_stacked(e, node) -> bool:
    return e.stacked(e.graph.operands(node)[0])


def _emit_softmax(e, node, data, args):
    return e.call(e.torch.softmax, (args[0], e.dim(data["axis"], _operand_stacked(e, node))),
                  data["name"] or "softmax")


def _emit_reduce(e, node, data, args):
    """sum or mean over the stack (which disappears) or over map axes (kept at size 1, so that
    the result broadcasts back against the maps it came from)."""
    stacked, name = _operand_stacked(e, node), data["name"] or data["how"]
    if data["axes"] == ("stack",):
        return e.method(data["how"], (args[0], 1), name)
    dims = tuple(sorted(e.dim(axis, stacked) for axis in data["axes"]))
    return e.method(data["how"], (args[0], dims, True), name)


def _emit_stack(e, node, data, args):
    return e.call(e.torch.stack, (list(args), 1), data["name"] or "stack")


def _emit_unstack(e, node, data, args):
    return e.method("select", (args[0], 1, data["index"]), data["name"] or "entry")


def _emit_cat_along(e, node, data, args):
    return e.call(e.torch.cat, (list(args), e.dim(data["axis"], e.stacked(node))), data["name"] or "side_by_side")


def _emit_split_along(e, node, data, args):
    dim = e.dim(data["axis"], e.stacked(node))
    return e.call(e.runtime.chunk, (args[0], data["count"], data["index"], dim), data["name"] or "piece")


def _emit_attention(e, node, data, args):
    query, key = e.graph.operands(node)[:2]
    if data.get("tokens") == "reshape":
        return e.call(e.runtime.attention_reshape, tuple(args), data["name"] or "attention")
    return e.call(e.runtime.attention, (*args, e.stacked(query), e.stacked(key), data["patches"]),
                  data["name"] or "attention")


def _emit_cat_entries(e, node, data, args):
    return e.method("flatten", (args[0], 1, 2), data["name"] or "entries")


def _emit_layernorm(e, node, data, args):
    x, gain, bias = args
    stacked, spatial = _operand_stacked(e, node), e.graph.spatial_dims
    name = data["name"] or f"{data['symbol']}_out"
    if data["mode"] == "shape":
        return e.call(e.F.layer_norm, (x, tuple(data["shape"]), gain, bias, data["eps"]), name)
    first = 2 if stacked else 1
    if data["mode"] == "all":
        dims = tuple(range(first, first + 1 + spatial))
    else:
        dims = tuple(sorted(e.dim(a, stacked) % (first + 1 + spatial) for a in data["axes"]))
    return e.call(e.runtime.layer_norm, (x, gain, bias, dims, data["eps"], first), name)


# --- costs -----------------------------------------------------------------------------------------

def _interleave_cost(model, graph, node) -> float:
    """A view per operand, a cat, a flatten."""
    return ((len(graph.operands(node)) + 2) * model.ns_per_op
            + graph[node]["channels"] * model.pixels * model.ns_per_value)


# --- channel rules ------------------------------------------------------------------------------------
# A channel rule: (solver, graph, node, operands, span, where, written) → None: the constraints
# the lowering puts on the channels of an op and its operands (cellgen/ir/channels.py), `where`
# being the expression as written (`softmax(e, over=stack)`) and `written` its operands as
# written, for messages. Convs and unpacks, whose rules involve weights and declarations, are
# the lowering's own (cellgen/ir/lowering/expressions.py: `_conv_node`, `_unpack`).

def elementwise_channels(solver, graph, node, operands, span, where, written) -> None:
    """Every operand as wide as the result, except what broadcasts (a number, a (1, …) weight)."""
    why = f"{where} needs operands with equal channels"
    written = list(written) + [None] * (len(operands) - len(written))
    seen: list[str] = []  # the tensor operands already joined to `node`, as written
    for operand, text in zip(operands, written):
        data = graph[operand]
        if data.get("broadcast"):
            continue
        sides = (" and ".join(seen), text) if seen and text else None
        solver.same(node, operand, span, why, sides=sides)
        if text and data["kind"] != "const":
            seen.append(text)
    _broadcast_if_all(graph, node, operands)


def _broadcast_if_all(graph, node, operands) -> None:
    """A result whose tensor operands all broadcast (one channel: a reduction over C, a (1, …)
    weight) broadcasts too: `w / 2` of a score w."""
    tensors = [o for o in operands if graph[o]["kind"] != "const"]
    if tensors and all(graph[o].get("broadcast") for o in tensors) and \
            any(graph[o]["kind"] == "op" for o in tensors):
        graph[node]["broadcast"] = True


def same_channels(what: str = "") -> Callable:
    """The result as wide as each operand (`what` says why, after the expression)."""
    def rule(solver, graph, node, operands, span, where, written) -> None:
        if all(graph[o].get("broadcast") for o in operands):  # softmax over the stack of scores
            graph[node]["broadcast"] = True
            return
        for operand in operands:
            solver.same(node, operand, span, f"{where}{what}")
    return rule


def _reduce_channels(solver, graph, node, operands, span, where, written) -> None:
    """Over C the result is one channel that broadcasts (a node marked `broadcast`, as a (1, …)
    weight is); otherwise as wide as its operand."""
    if "C" in graph[node]["axes"] or graph[operands[0]].get("broadcast"):
        graph[node]["broadcast"] = True
        return
    solver.same(node, operands[0], span, where)


def first_channels(solver, graph, node, operands, span, where, written) -> None:
    """The result as wide as the first operand (a LayerNorm's: the value it normalises)."""
    solver.same(node, operands[0], span, where)


def _attention_channels(solver, graph, node, operands, span, where, written) -> None:
    query, key, value = operands
    solver.same(query, key, span, f"{where}: queries and keys must have equal channels",
                sides=("the query", "the key"))
    solver.same(node, value, span, f"{where} has the channels of its values")


def _concat_channels(solver, graph, node, operands, span, where, written) -> None:
    solver.total(node, operands, span, where)


# --- validation rules of one op ---------------------------------------------------------------------
# A check: (layout, node, data, operands, span) → None, or raises the user's error; `layout` is
# cellgen/ir/layout.py's `Layout` (the facts as sets: maps, stacked, lengths, extents; and
# written(node), sizes(a, b), holds(length) to word a message). The rules every op keeps (maps
# where maps must stand, maps and stacks that meet agreeing) are check_layout's own.

NO_TIME_AXIS = ("a cell is 3D when its convs are (`conv 2×5×5`) or an input reads a window of frames "
                "(`input x[C] window T`)")


def _needs_a_stack(what: str, hint: Optional[str]):
    def check(layout, node, data, operands, span):
        if (data.get("axis", "stack") == "stack") and operands[0] not in layout.stacked:
            raise TypeMismatchError(f"{what} needs a stack (a history `c[t-τ:t-1]` or `stack(…)`), "
                                    "but this is a single map", span, hint=hint)
    return check


def _check_reduce(layout, node, data, operands, span):
    if data["axes"] == ("stack",):
        _needs_a_stack(f"{data['how']} over the stack", "pass it a stack, or name axes of the map: "
                                                        "`over=(C, H, W)`")(layout, node, data, operands, span)


def _check_unstack(layout, node, data, operands, span):
    if data["index"] == 0 and operands[0] in layout.stacked:
        length = layout.lengths[operands[0]]
        if not isinstance(length, int):
            raise TypeMismatchError(f"`unstack` needs a stack of a fixed length, but {layout.written(operands[0])} "
                                    f"{layout.holds(length)}", span,
                                    hint="reduce a history with sum(…, over=stack) or softmax(…, over=stack), "
                                         "or unstack a stack(…) of maps")
        if length != data["count"]:
            names = ", ".join("abcdefghijklmnopqrstuvwxyz"[i] if i < 26 else f"e{i}" for i in range(length))
            raise ArityError(f"{layout.written(operands[0])} has {length} entries, but {data['count']} names "
                             "receive them", span, hint=f"one name per entry: `{names} = unstack(…)`")
    _needs_a_stack("unstack", None)(layout, node, data, operands, span)


def _check_stack(layout, node, data, operands, span):
    if any(o in layout.stacked for o in operands):
        raise TypeMismatchError("stack() of a stack: a value has at most one stack axis", span,
                                hint="stack maps only; reduce a stack first (`sum(…, over=stack)`), or take its "
                                     "entries apart with `unstack`")


def _check_concat(layout, node, data, operands, span):
    if len({o in layout.stacked for o in operands}) > 1:
        raise TypeMismatchError("[…] joins the channels of maps or of stacks, not of both", span,
                                hint="unstack the stack first, or stack the maps")


def _check_cat_along(layout, node, data, operands, span):
    """`cat` changes the size along its axis: the maps must agree across it."""
    maps = [o for o in operands if o in layout.maps]
    across = {a: v for a, v in layout.extents[maps[0]].items() if a != data["axis"]}
    for other in maps[1:]:
        if {a: v for a, v in layout.extents[other].items() if a != data["axis"]} != across:
            raise TypeMismatchError(f"`cat` joins maps of equal size across its axis, but "
                                    f"{layout.sizes(maps[0], other)}", span)


def _check_attention(layout, node, data, operands, span):
    if data.get("tokens") == "reshape":
        return _check_reshape_tokens(layout, node, data, operands, span)
    if len({o in layout.stacked for o in operands[1:]}) > 1:
        raise TypeMismatchError("attention's keys and values must both be stacks or both maps", span)
    if data["patches"] > 1 and layout.graph.spatial_dims not in (2, 3):
        raise TypeMismatchError("patches need a map with H and W", span)


def _check_reshape_tokens(layout, node, data, operands, span):
    """OpenSTL's E3D RECALL: maps reshaped to (B, −1, C), so a query map and key and value
    maps (a history joined on channels by `cat(…, along=C)`)."""
    stacked = [o for o in operands if o in layout.stacked]
    if stacked:
        which = "its query" if stacked[0] == operands[0] else f"{layout.written(stacked[0])}"
        raise TypeMismatchError(f"attention with tokens=reshape reads maps, but {which} is a stack", span,
                                hint="join a history's entries on channels first: `attention(q, cat(c[t-tau:t-1], "
                                     "along=C), …, tokens=reshape)`" if stacked[0] != operands[0] else
                                "the query is one map; its result has the query's shape")
    if data.get("patches", 1) != 1:
        raise TypeMismatchError("attention with tokens=reshape has no patches", span,
                                hint="`patches=` cuts positions into patches (tokens=positions)")


def _check_cat_entries(layout, node, data, operands, span):
    """A history's entries joined on channels have as many channels as the history has entries,
    a number that grows each step: only reshape-token attention reads such a value."""
    if operands[0] not in layout.stacked:
        raise TypeMismatchError(f"`cat(…, along=C)` joins the entries of a stack on channels, but "
                                f"{layout.written(operands[0])} is a single map", span,
                                hint="[a, b] joins the channels of maps")
    graph = layout.graph
    for user in graph.users(node):
        reads = graph.operands(user)
        if not (graph[user].get("op") == "attention" and graph[user].get("tokens") == "reshape"
                and node not in reads[:1]) or node in graph.results():
            raise TypeMismatchError("`cat(…, along=C)` of a stack has as many channels as the stack has entries "
                                    "(a history: one more each step), so only the keys and values of "
                                    "`attention(…, tokens=reshape)` may read it", span,
                                    related=[Note("it is read here", graph[user].get("span"))]
                                    if graph[user].get("span") else [],
                                    hint="`attention(q, cat(c[t-tau:t-1], along=C), cat(c[t-tau:t-1], along=C), "
                                         "tokens=reshape)`")


def _check_layernorm(layout, node, data, operands, span):
    """Errors point at the declaration, which says the axes and the shape."""
    graph = layout.graph
    related = [Note(f"`{data['symbol']}` is applied here", span)]
    span = graph[operands[1]].get("decl_span") or span
    if "T" in data.get("axes", ()) and graph.spatial_dims != 3:
        raise TypeMismatchError(f"`{data['symbol']}` normalises over T, but this cell's maps have no time axis "
                                "(NCHW; T exists only in 3D cells, NCTHW)", span, related=related,
                                hint=NO_TIME_AXIS)
    if data["mode"] == "shape" and len(data["shape"]) > 1 + graph.spatial_dims:
        axes = "C, T, H, W" if graph.spatial_dims == 3 else "C, H, W"
        raise TypeMismatchError(f"`{data['symbol']}` has a shape of {len(data['shape'])} axes, "
                                f"{list(data['shape'])}, but this cell's maps have {1 + graph.spatial_dims} "
                                f"({axes})", span, related=related,
                                hint="the shape covers the trailing axes of a map: `layernorm [C, H, W]`")


# --- the table -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OpDef:
    """One op of a cell graph: see the module docstring for who reads which field."""

    name: str
    arity: tuple[int, Optional[int]]  # (min, max) operands; max None: any number
    emit: Callable[..., Any]
    doc: str = ""
    attrs: tuple[str, ...] = ()  # the node attributes the op reads
    groups: frozenset = frozenset()
    spellings: tuple[str, ...] = ()  # names a spec calls it by, as a function (`tanh(…)`, `σ(…)`)
    operator: Optional[str] = None  # the binary operator of the language it lowers (`hadamard`)
    symbol: Optional[str] = None  # how pictures and reports write it (default: its name)
    precedence: Optional[int] = None  # of its operator in the printed language (higher binds tighter)
    stack: Callable = stack_of_any
    extent: Callable = extent_of_first
    needs_maps: Optional[tuple] = ()  # operand ports that must be maps; None: every one
    role: str = ""  # what it does to those maps, for the message when one is not (`⋆ convolves`)
    channels: Optional[Callable] = None  # the lowering's channel constraints (see `same_channels`)
    meets: int = 0  # the operands from this one on meet (at equal sizes; stacks at equal lengths)
    check: Optional[Callable] = None  # the op's own validation rules (see `_check_stack`)
    macs: Optional[Callable] = None  # multiply-accumulates (None: not counted, a few per element)
    cost: Union[str, Callable] = "values"  # "values" | "dispatch" | (model, graph, node) → ns

    def __post_init__(self):
        object.__setattr__(self, "groups", frozenset(self.groups))

    @property
    def shown(self) -> str:
        return self.symbol or self.name


def _elementwise(name, arity, emit, doc, *, groups=(), **fields) -> OpDef:
    return OpDef(name, arity, emit, doc, groups={"elementwise", "chain", *groups}, channels=elementwise_channels,
                 extent=extent_broadcast, **fields)


def _activation(name: str, doc: str, *spellings: str, symbol: Optional[str] = None, module: str = "torch") -> OpDef:
    """An elementwise function of one map that a spec calls by name (`tanh(…)`)."""
    return _elementwise(name, (1, 1), unary(name, module), doc, groups={"activation"},
                        spellings=spellings or (name,), symbol=symbol)


_WEIGHT = {"weight", "arithmetic"}  # computed from parameters only, once per step

_DEFS = [
    # elementwise arithmetic: the binary operators of the language
    _elementwise("add", (2, 2), binary("add"), "a + b", groups={"commutative", "arithmetic"}, operator="add",
                 symbol="+", precedence=1),
    _elementwise("sub", (2, 2), binary("sub"), "a − b", groups={"arithmetic", "ordered"}, operator="sub",
                 symbol="−", precedence=1),
    _elementwise("mul", (2, 2), binary("mul"), "a ⊙ b", groups={"commutative", "arithmetic"}, operator="hadamard",
                 symbol="⊙", precedence=2),
    _elementwise("div", (2, 2), binary("truediv"), "a / b", groups={"arithmetic", "ordered"}, operator="div",
                 symbol="/", precedence=2),
    _elementwise("neg", (1, 1), lambda e, node, data, args: e.elementwise(node, e.operator.neg, args), "−a",
                 groups={"arithmetic"}, symbol="−", precedence=3),
    # activations: functions a spec calls
    _activation("sigmoid", "logistic sigmoid", "sigmoid", "σ", symbol="σ"),
    _activation("tanh", "hyperbolic tangent"),
    _activation("relu", "max(x, 0)"),
    _activation("silu", "x·σ(x) (swish)", module="F"),
    _elementwise("sqrt", (1, 1), unary("sqrt"), "√x (of a tensor; of params and numbers it is folded at lowering)",
                 spellings=("sqrt",)),
    # a stop-gradient (OpenSTL's MIM detaches n at every step): the value, no gradient back
    _elementwise("detach", (1, 1), _emit_detach, "the value unchanged, no gradient flowing back through it "
                 "(a stop-gradient)", spellings=("detach",), cost="dispatch"),
    # convs
    OpDef("conv", (2, None), _emit_conv,
          "W ⋆ x (+ bias), stride 1, \"same\" padding unless attr `geometry` says otherwise (`conv_geometry`): operands x, W[, b]; with attr `parts` = n, the "
          "concatenation of its first n operands (see `conv_operands`)",
          attrs=("kernel", "parts", "geometry"), groups={"arithmetic"}, operator="conv", symbol="⋆", precedence=2,
          extent=_extent_conv, needs_maps=(0,), role="`⋆` convolves", macs=_conv_macs, cost="conv"),
    # channels
    OpDef("channel_view", (1, 1), _emit_channel_view, "a (C,) bias viewed as (C, 1, …, 1) to meet maps",
          groups=_WEIGHT, cost="dispatch"),
    OpDef("concat", (2, None), _emit_concat, "[a, b]: channels side by side", groups={"arithmetic", "ordered"},
          symbol="[ , ]", needs_maps=None, role="[…] joins the channels of", check=_check_concat,
          channels=_concat_channels),
    OpDef("slice", (1, 1), _emit_slice, "channels [start, stop) of a tensor (a view)", attrs=("start", "stop"),
          groups={"arithmetic", "part"}, needs_maps=None, role="an unpack cuts the channels of", cost="dispatch"),
    OpDef("split", (1, 1), _emit_split,
          "a tensor cut on channels into pieces of `sizes` at once (one backward cat, not a zero tensor "
          "per narrow); its value is the tuple of pieces, read by `piece`", attrs=("sizes",),
          groups={"arithmetic"}, cost="dispatch"),
    OpDef("piece", (1, 1), _emit_piece, "piece `index` of a split (a tuple item)", attrs=("index",),
          groups={"arithmetic", "part"}, cost=lambda model, graph, node: 0.0),
    OpDef("interleave", (2, None), _emit_interleave,
          "gate-major interleave of gate-grouped tensors T₁…Tₙ, each G chunks of C_j channels (attr `groups` "
          "= G): G chunks of ΣC_j channels, chunk g = [T₁ chunk g, …, Tₙ chunk g]", attrs=("groups",),
          cost=_interleave_cost),
    # weight-side ops: only the optimizer makes them (fused weights built from the spec's symbols,
    # so that state_dict() keeps them at every opt level); their nodes carry `shape`
    OpDef("weight_cat", (2, None), _emit_weight_cat, "W₁…Wₙ joined on `dim` (0: outputs, 1: inputs)",
          attrs=("dim",), groups=_WEIGHT, cost="dispatch"),
    OpDef("weight_slice", (1, 1), _emit_weight_slice, "W[start:stop] on dim 0", attrs=("start", "stop"),
          groups=_WEIGHT, cost="dispatch"),
    OpDef("weight_add", (2, 2), _emit_weight_add, "W₁ + W₂ (one conv weight applied to one tensor twice)",
          groups=_WEIGHT, cost="dispatch"),
    OpDef("weight_view", (1, 1), _emit_weight_view, "W.reshape(-1): a (C, 1, …, 1) weight used as a bias",
          groups=_WEIGHT, cost="dispatch"),
    OpDef("pad_kernel", (1, 1), _emit_pad_kernel, "W zero-padded (centred) to a larger odd `kernel`",
          attrs=("kernel", "from_kernel"), groups=_WEIGHT, cost="dispatch"),
    OpDef("fill", (1, 1), _emit_fill, "a (size,) vector of `value`; the operand gives dtype and device",
          attrs=("value", "size"), groups=_WEIGHT, cost="dispatch"),
    # structure: stacks and axes (attrs name axes: stack, C, T, H, W)
    OpDef("softmax", (1, 1), _emit_softmax, "softmax over one axis", attrs=("axis",), groups={"chain"},
          needs_maps=None, role="softmax takes", channels=same_channels(),
          check=_needs_a_stack("softmax over the stack", "pass it a stack, or name an axis of the map: `over=H`, "
                                                         "`over=W`")),
    OpDef("reduce", (1, 1), _emit_reduce,
          "sum or mean (attr `how`) over `axes`: the stack, which disappears, or map axes (C, T, H, W), kept at "
          "size 1 so that the result broadcasts back (MAU's Σ_{C,H,W})", attrs=("how", "axes"), groups={"chain"},
          symbol="Σ", stack=_stack_of_reduce, extent=_extent_reduce, needs_maps=None, role="a reduction takes",
          channels=_reduce_channels, check=_check_reduce),
    OpDef("stack", (1, None), _emit_stack, "a stack of maps (a new axis after the batch)", stack=makes_stack,
          groups={"stacks_own"}, needs_maps=None, role="stack() stacks", check=_check_stack,
          channels=same_channels(" stacks values with equal channels")),
    OpDef("unstack", (1, 1), _emit_unstack, "entry `index` of a stack of `count`", attrs=("index", "count"),
          groups={"arithmetic", "part"}, stack=ends_stack, needs_maps=None, role="unstack takes apart",
          check=_check_unstack, channels=same_channels()),
    OpDef("cat_along", (2, None), _emit_cat_along, "maps side by side along T, H or W", attrs=("axis",),
          groups={"sizes_own"}, symbol="cat", extent=_extent_cat, needs_maps=None, role="cat joins",
          check=_check_cat_along, channels=same_channels(" joins values with equal channels")),
    OpDef("split_along", (1, 1), _emit_split_along, "piece `index` of `count` equal pieces along T, H or W",
          attrs=("axis", "index", "count"), groups={"arithmetic", "part"}, symbol="split", extent=_extent_split,
          needs_maps=None, role="split cuts", channels=same_channels()),
    OpDef("attention", (3, 3), _emit_attention,
          "softmax(q kᵀ) v over every position (and stack entry); attr `patches`: within s×s patches; "
          "attr `tokens` \"reshape\": OpenSTL's E3D tokens, each map reshaped to (B, −1, C) without a permute",
          attrs=("patches", "tokens"), stack=stack_of_first, needs_maps=None, role="attention reads", meets=1,
          check=_check_attention, macs=_attention_macs, channels=_attention_channels),
    OpDef("cat_entries", (1, 1), _emit_cat_entries,
          "a stack's entries side by side on channels, oldest first: (B, N, C, …) → (B, N·C, …); read only by "
          "attention(…, tokens=reshape)", symbol="cat C", stack=ends_stack, needs_maps=None,
          role="cat joins", check=_check_cat_entries, channels=same_channels(), cost="dispatch"),
    OpDef("layernorm", (3, 3), _emit_layernorm,
          "LayerNorm: operands x, gain, bias; attrs `mode` (all | over | shape), `axes`, `shape`, `eps`",
          attrs=("mode", "axes", "shape", "eps", "symbol"), symbol="LayerNorm", needs_maps=(0,),
          role="a LayerNorm normalises", check=_check_layernorm, channels=first_channels),
]


OPS: dict[str, OpDef] = {definition.name: definition for definition in _DEFS}


def op_def(op: str) -> OpDef:
    return OPS[op]


def in_group(group: str) -> frozenset[str]:
    """The names of the ops of a group."""
    return frozenset(name for name, definition in OPS.items() if group in definition.groups)


# Groups the passes read by name (each a view of the table, not a list of its own).
ELEMENTWISE = in_group("elementwise")
ACTIVATIONS = in_group("activation")
COMMUTATIVE = in_group("commutative")
WEIGHT_OPS = in_group("weight") - {"channel_view"}  # built by the optimizer from parameters
WEIGHT_SIDE = in_group("weight")  # computed from parameters only (a bias's view too)


# --- the spec's functions and operators -------------------------------------------------------------

@dataclass(frozen=True)
class Function:
    """A function a spec may call that is one op: its op and how many tensor arguments it takes."""

    op: str
    arity: int
    doc: str


FUNCTIONS: dict[str, Function] = {spelling: Function(d.name, d.arity[0], d.doc)
                                  for d in _DEFS for spelling in d.spellings}
# How the binary operators of the language lower.
BINARY_OPS = {d.operator: d.name for d in _DEFS if d.operator is not None}


@dataclass(frozen=True)
class StructuralFunction:
    """A function that moves axes rather than values: `arity` (min, max) tensor arguments,
    its named arguments (`"axis"` or `"int"`), and whether it makes several values. The
    lowering builds their nodes (cellgen/ir/lower.py: `_structural`, `_unpack`)."""

    arity: tuple[int, int]
    keywords: dict
    doc: str
    unpacks: bool = False


# The token layouts of attention (`tokens=`): every position a token of C features (the
# default), or OpenSTL's E3D RECALL, each map reshaped to (B, −1, C) as it lies in memory.
TOKEN_LAYOUTS = ("positions", "reshape")

STRUCTURAL_FUNCTIONS: dict[str, StructuralFunction] = {
    "softmax": StructuralFunction((1, 1), {"over": "axis"}, "softmax over one axis (`over=stack`: a history)"),
    "sum": StructuralFunction((1, 1), {"over": "axes"}, "sum over the stack (which disappears) or map axes "
                              "(C, T, H, W or several, `(C, H, W)`: kept at size 1)"),
    "mean": StructuralFunction((1, 1), {"over": "axes"}, "mean over the stack (which disappears) or map axes "
                               "(kept at size 1)"),
    "stack": StructuralFunction((1, 999), {}, "a stack of maps (a new axis, `stack`)"),
    "attention": StructuralFunction((3, 3), {"patches": "int", "tokens": "tokens"},
                                    "softmax(q kᵀ) v over every position of the maps (and stack); "
                                    "`patches=s`: within each of s×s patches; `tokens=reshape`: OpenSTL's "
                                    "E3D tokens (docs/attention_tokens.md)"),
    "cat": StructuralFunction((1, 999), {"along": "axis"}, "maps side by side along T, H or W; "
                                                           "`cat(s, along=C)`: a stack's entries on channels"),
    "unstack": StructuralFunction((1, 1), {}, "a stack's maps, one per name: `a, b = unstack(s)`", unpacks=True),
    "split": StructuralFunction((1, 1), {"along": "axis"}, "equal pieces along T, H or W: `a, b = split(…)`",
                                unpacks=True),
}
