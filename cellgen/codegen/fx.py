"""CellGraph → torch.fx GraphModule computing one time step.

The generated forward is plain, printable PyTorch whose variables carry the spec's names::

    def forward(self, x, state = None):
        initial_state = cellgen_runtime_state_initial_state(state, x, ('h', 'c'), (8, 8))
        h = initial_state[0];  c = initial_state[1]
        W_xi = self.W_xi
        conv_W_xi = torch.conv2d(x, W_xi, None, 1, (1, 1))
        ...
        return (h_next, {'h': h_next, 'c': c_next})

Parameters live on the module under their spec symbols (`W_xi`), so `state_dict()` keys are
the spec's names.
"""
from __future__ import annotations

import operator
import re
from typing import Callable

import torch
from torch import fx

from cellgen.codegen.identifiers import argument_names
from cellgen.ir.graph import CellGraph
from cellgen.ir.layout import axis_dim, stacked_values
from cellgen.runtime import ops as runtime_ops
from cellgen.runtime.state import initial_state

_FUNCTIONS: dict[str, Callable] = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv, "neg": operator.neg,
    "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
}


def python_name(name: str) -> str:
    """A spec name as a Python identifier: `c'` → `c_next`, `SE.i` → `SE_i`, `c[t-5:t-1]` → `c_t_5_t_1`."""
    name = name.replace("'", "_next").replace("∞", "all")
    return re.sub(r"\W+", "_", name).strip("_") or "value"


def build_fx_graph(graph: CellGraph) -> fx.Graph:
    out = fx.Graph()
    values: dict[str, object] = {}
    arguments = argument_names(graph.inputs)  # `lambda` → `lambda_`: see cellgen/codegen/identifiers.py
    for name in graph.inputs:
        values[graph.inputs[name]] = out.placeholder(arguments[name])
    state_arg = out.placeholder("state", default_value=None)
    names = tuple(graph.states)
    if names:
        first_input = values[next(iter(graph.inputs.values()))]
        channels = tuple(graph.states[s].channels for s in names)
        read = out.create_node("call_function", initial_state, (state_arg, first_input, names, channels),
                               name="initial_state")
        for index, name in enumerate(names):
            values[graph.state_nodes[name]] = out.create_node("call_function", operator.getitem, (read, index),
                                                              name=name)
    histories = {}
    for name, info in graph.states.items():
        if info.history:
            histories[name] = out.create_node("call_function", runtime_ops.read_history,
                                              (state_arg, name, values[graph.state_nodes[name]]),
                                              name=f"{python_name(name)}_history")
    emitter = _Emitter(out, graph)
    for node in graph.order():
        data = graph[node]
        if node in values:
            continue
        if data["kind"] == "const":
            values[node] = data["value"]
            continue
        if data["kind"] == "weight":
            values[node] = out.create_node("get_attr", data["name"], name=python_name(data["name"]))
            continue
        if data["kind"] == "history":
            buffer = histories[data["state"]]
            size, kept = data["size"], graph.states[data["state"]].history_size
            values[node] = buffer if size == kept else out.create_node(
                "call_function", runtime_ops.latest, (buffer, size), name=python_name(data["name"]))
            continue
        args = [values[o] for o in graph.operands(node)]
        values[node] = emitter.emit(node, data, args)
    result = values[graph.output]
    next_state = {name: values[n] for name, n in graph.next_state.items()}
    for name, buffer in histories.items():
        next_state[f"{name}.history"] = out.create_node(
            "call_function", runtime_ops.push_history, (buffer, next_state[name], graph.states[name].history_size),
            name=f"{python_name(name)}_history_next")
    out.output((result, next_state))
    out.lint()
    return out


class _Emitter:
    """One fx node per graph op. Ops on stacks (see cellgen/ir/layout.py) find their axes
    one further along, and a map meeting a stack is broadcast over it."""

    def __init__(self, out: fx.Graph, graph: CellGraph):
        self.out, self.graph = out, graph
        self.stacked = stacked_values(graph)
        self.pieces: dict[str, dict] = {}  # source node → its pieces by (start, stop), see `_piece`

    def node(self, kind, target, args, name) -> fx.Node:
        return self.out.create_node(kind, target, tuple(args), name=python_name(name))

    def emit(self, node: str, data: dict, args: list) -> fx.Node:
        op, graph = data["op"], self.graph
        name = data["name"]
        stacked = node in self.stacked
        operands = graph.operands(node)
        if op == "conv":
            source, weight = args[:2]
            bias = args[2] if len(args) > 2 else None
            hint = "conv_" + (graph[operands[1]]["name"] or "fused")
            padding = _padding(data["kernel"])
            if padding == "same":  # an even kernel: pad as torch's "same" does, once, explicitly
                pads = _same_pads(data["kernel"])
                pad = lambda t: self.node("call_function", torch.nn.functional.pad, (t, pads), "padded")  # noqa: E731
                source = [pad(part) for part in source] if isinstance(source, list) else pad(source)
                padding = (0,) * len(data["kernel"])
            if isinstance(source, list):  # see `_joins_conv_inputs`
                return self.node("call_function", runtime_ops.conv_of_concat, (source, weight, bias, padding),
                                 name or hint)
            if operands[0] in self.stacked:
                return self.node("call_function", runtime_ops.stacked_conv, (source, weight, bias, padding),
                                 name or hint)
            conv = torch.conv2d if len(data["kernel"]) == 2 else torch.conv3d
            return self.node("call_function", conv, (source, weight, bias, 1, padding), name or hint)
        if op == "channel_view":
            return self.node("call_method", "view", (args[0], -1) + (1,) * graph.spatial_dims, name or "view")
        if op == "concat":
            if self._joins_conv_inputs(node):
                return list(args)
            return self.node("call_function", torch.cat, (list(args), 1 + stacked), name or "cat")
        if op == "slice" and (piece := self._piece(operands[0], args[0], data, 1 + stacked)) is not None:
            return piece
        if op in _OPTIMIZER_OPS:
            return _OPTIMIZER_OPS[op](self.out, graph, data, args, 1 + stacked)
        if op in _STRUCTURAL:
            return _STRUCTURAL[op](self, node, data, args)
        if stacked:  # a map meeting a stack: give it the stack's axis, of length 1
            args = [self.node("call_method", "unsqueeze", (arg, 1), "as_stack")
                    if o not in self.stacked and self._is_map(o) else arg for o, arg in zip(operands, args)]
        return self.node("call_function", _FUNCTIONS[op], args, name or op)

    def _piece(self, source: str, value: fx.Node, data: dict, dim: int):
        """A slice of a tensor that other slices cut too (a fused conv's gates): one
        `split` of the tensor serves them all. Its backward joins the pieces' gradients with
        one cat, where a `narrow` per slice would each build a zero tensor of the whole size
        (measured ConvLSTM at O2: 4 % of forward+backward). None for a lone or overlapping
        slice, which `narrow` serves."""
        if source not in self.pieces:
            self.pieces[source] = self._split(source, value, dim)
        return self.pieces[source].get((data["start"], data["stop"]))

    def _split(self, source: str, value: fx.Node, dim: int) -> dict[tuple[int, int], fx.Node]:
        """Cut `source` at every boundary of its slices, once; each slice's piece by (start, stop)."""
        slices = {(self.graph[u]["start"], self.graph[u]["stop"]): self.graph[u]
                  for u in self.graph.users(source) if self.graph[u].get("op") == "slice"}
        spans = sorted(slices)
        total = self.graph[source].get("channels")
        disjoint = all(stop <= next_start for (_, stop), (next_start, _) in zip(spans, spans[1:]))
        if len(spans) < 2 or total is None or not disjoint or spans[-1][1] > total:
            return {}
        sizes, index, at = [], {}, 0
        for start, stop in spans:
            if start > at:  # a gap no slice reads
                sizes.append(start - at)
            index[(start, stop)] = len(sizes)
            sizes.append(stop - start)
            at = stop
        if at < total:
            sizes.append(total - at)
        split = self.node("call_method", "split", (value, sizes, dim), "pieces")
        return {span: self.node("call_function", operator.getitem, (split, i), _name(slices[span], "chunk"))
                for span, i in index.items()}

    def _joins_conv_inputs(self, node: str) -> bool:
        """Whether a concat only gathers the inputs of convs (sum fusion's `[x, h]`). Such a
        concat is not emitted: each conv gets the parts and joins them itself
        (`runtime_ops.conv_of_concat`), so that its backward can skip the parts that need no
        gradient."""
        users = self.graph.users(node)
        return bool(users) and node not in self.stacked and node not in self.graph.results() and all(
            self.graph[u].get("op") == "conv" and self.graph.operands(u)[0] == node
            and node not in self.graph.operands(u)[1:] for u in users)

    def _is_map(self, node: str) -> bool:
        """Whether a value is a (B, C, …) map, rather than a weight, a bias view or a number."""
        data = self.graph[node]
        if data["kind"] in ("input", "state"):
            return True
        return data["kind"] == "op" and data["op"] not in _WEIGHT_SIDE


def _softmax(emitter, node, data, args):
    operand = emitter.graph.operands(node)[0]
    dim = axis_dim(data["axis"], operand in emitter.stacked, emitter.graph.spatial_dims)
    return emitter.node("call_function", torch.softmax, (args[0], dim), data["name"] or "softmax")


def _reduce_sum(emitter, node, data, args):
    operand = emitter.graph.operands(node)[0]
    dim = axis_dim(data["axis"], operand in emitter.stacked, emitter.graph.spatial_dims)
    return emitter.node("call_method", "sum", (args[0], dim), data["name"] or "sum")


def _stack(emitter, node, data, args):
    return emitter.node("call_function", torch.stack, (list(args), 1), data["name"] or "stack")


def _unstack(emitter, node, data, args):
    return emitter.node("call_method", "select", (args[0], 1, data["index"]), data["name"] or "entry")


def _cat_along(emitter, node, data, args):
    dim = axis_dim(data["axis"], node in emitter.stacked, emitter.graph.spatial_dims)
    return emitter.node("call_function", torch.cat, (list(args), dim), data["name"] or "side_by_side")


def _split_along(emitter, node, data, args):
    dim = axis_dim(data["axis"], node in emitter.stacked, emitter.graph.spatial_dims)
    return emitter.node("call_function", runtime_ops.chunk, (args[0], data["count"], data["index"], dim),
                        data["name"] or "piece")


def _attention(emitter, node, data, args):
    query, key = emitter.graph.operands(node)[:2]
    return emitter.node("call_function", runtime_ops.attention,
                        (*args, query in emitter.stacked, key in emitter.stacked, data["patches"]),
                        data["name"] or "attention")


def _layernorm(emitter, node, data, args):
    x, gain, bias = args
    stacked = emitter.graph.operands(node)[0] in emitter.stacked
    spatial = emitter.graph.spatial_dims
    name = data["name"] or f"{data['symbol']}_out"
    if data["mode"] == "shape":
        return emitter.node("call_function", torch.nn.functional.layer_norm,
                            (x, tuple(data["shape"]), gain, bias, data["eps"]), name)
    first = 2 if stacked else 1
    if data["mode"] == "all":
        dims = tuple(range(first, first + 1 + spatial))
    else:
        dims = tuple(sorted(axis_dim(a, stacked, spatial) % (first + 1 + spatial) for a in data["axes"]))
    return emitter.node("call_function", runtime_ops.layer_norm, (x, gain, bias, dims, data["eps"], first), name)


_STRUCTURAL = {"softmax": _softmax, "reduce_sum": _reduce_sum, "stack": _stack, "unstack": _unstack,
               "cat_along": _cat_along, "split_along": _split_along, "attention": _attention,
               "layernorm": _layernorm}


# --- ops the optimizer introduces (cellgen/ir/ops.py: WEIGHT_OPS, LAYOUT_OPS) -------------------
def _name(data: dict, hint: str) -> str:
    return python_name(data["name"] or hint)


def _weight_cat(out, graph, data, args, channel_dim):
    return out.create_node("call_function", torch.cat, (list(args), data["dim"]), name=_name(data, "w_cat"))


def _weight_slice(out, graph, data, args, channel_dim):
    start, stop = data["start"], data["stop"]
    return out.create_node("call_function", torch.narrow, (args[0], 0, start, stop - start),
                           name=_name(data, "w_slice"))


def _weight_add(out, graph, data, args, channel_dim):
    return out.create_node("call_function", operator.add, tuple(args), name=_name(data, "w_add"))


def _weight_view(out, graph, data, args, channel_dim):
    return out.create_node("call_method", "reshape", (args[0], -1), name=_name(data, "w_vec"))


def _pad_kernel(out, graph, data, args, channel_dim):
    pads: list[int] = []
    for have, want in reversed(list(zip(data["from_kernel"], data["kernel"]))):  # F.pad: last dim first
        pads += [(want - have) // 2] * 2
    return out.create_node("call_function", torch.nn.functional.pad, (args[0], tuple(pads)),
                           name=_name(data, "w_pad"))


def _fill(out, graph, data, args, channel_dim):
    if data["value"] == 0:
        return out.create_node("call_method", "new_zeros", (args[0], (data["size"],)), name=_name(data, "zeros"))
    return out.create_node("call_method", "new_full", (args[0], (data["size"],), float(data["value"])),
                           name=_name(data, "full"))


def _slice(out, graph, data, args, channel_dim):
    start, stop = data["start"], data["stop"]
    return out.create_node("call_function", torch.narrow, (args[0], channel_dim, start, stop - start),
                           name=_name(data, "chunk"))


def _interleave(out, graph, data, args, channel_dim):
    """Gate-major interleave (multi-kernel ConvLSTM, Fig. 4b): view each (B, G·C_j, …) tensor as
    (B, G, C_j, …), concatenate on the C axis, flatten back to (B, G·ΣC_j, …)."""
    groups = data["groups"]
    views = [out.create_node("call_method", "unflatten", (arg, channel_dim, (groups, -1)), name="gates")
             for arg in args]
    joined = out.create_node("call_function", torch.cat, (views, channel_dim + 1), name="gates_cat")
    return out.create_node("call_method", "flatten", (joined, channel_dim, channel_dim + 1),
                           name=_name(data, "interleaved"))


_OPTIMIZER_OPS = {"weight_cat": _weight_cat, "weight_slice": _weight_slice, "weight_add": _weight_add,
                  "weight_view": _weight_view, "pad_kernel": _pad_kernel, "fill": _fill, "slice": _slice,
                  "interleave": _interleave}


_WEIGHT_SIDE = {"channel_view", "weight_cat", "weight_slice", "weight_add", "weight_view", "pad_kernel", "fill"}


def _same_pads(kernel: tuple[int, ...]) -> tuple[int, ...]:
    """F.pad's argument for "same" padding (last axis first): for an even size k, (k-1)//2
    before and the rest after, as torch's and TensorFlow's "same" do."""
    pads: list[int] = []
    for size in reversed(kernel):
        before = (size - 1) // 2
        pads += [before, size - 1 - before]
    return tuple(pads)


def _padding(kernel: tuple[int, ...]):
    """"same" padding; a tuple when every size is odd (the fast, symmetric case)."""
    if all(size % 2 == 1 for size in kernel):
        return tuple(size // 2 for size in kernel)
    return "same"
