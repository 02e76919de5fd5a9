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
from typing import Callable

import torch
from torch import fx

from cellgen.ir.graph import CellGraph
from cellgen.runtime.state import initial_state

_FUNCTIONS: dict[str, Callable] = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv, "neg": operator.neg,
    "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
}


def python_name(name: str) -> str:
    """A spec name as a Python identifier: `c'` → `c_next`."""
    return name.replace("'", "_next")


def build_fx_graph(graph: CellGraph) -> fx.Graph:
    out = fx.Graph()
    values: dict[str, object] = {}
    for name in graph.inputs:
        values[graph.inputs[name]] = out.placeholder(name)
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
    for node in graph.order():
        data = graph[node]
        if node in values:
            continue
        if data["kind"] == "const":
            values[node] = data["value"]
            continue
        if data["kind"] == "weight":
            values[node] = out.create_node("get_attr", data["name"], name=data["name"])
            continue
        args = [values[o] for o in graph.operands(node)]
        values[node] = _emit(out, graph, node, data, args)
    result = values[graph.output]
    out.output((result, {name: values[n] for name, n in graph.next_state.items()}))
    out.lint()
    return out


def _emit(out: fx.Graph, graph: CellGraph, node: str, data: dict, args: list) -> fx.Node:
    op = data["op"]
    if op == "conv":
        source, weight = args[:2]
        bias = args[2] if len(args) > 2 else None
        conv = torch.conv2d if len(data["kernel"]) == 2 else torch.conv3d
        kind, target, args = "call_function", conv, (source, weight, bias, 1, _padding(data["kernel"]))
        hint = "conv_" + (graph[graph.operands(node)[1]]["name"] or "fused")
    elif op == "channel_view":
        kind, target, args, hint = "call_method", "view", (args[0], -1) + (1,) * graph.spatial_dims, "view"
    elif op == "concat":
        kind, target, args, hint = "call_function", torch.cat, (list(args), 1), "cat"
    elif op in _OPTIMIZER_OPS:
        return _OPTIMIZER_OPS[op](out, graph, data, args)
    else:
        kind, target, args, hint = "call_function", _FUNCTIONS[op], tuple(args), op
    return out.create_node(kind, target, args, name=python_name(data["name"] or hint))


# --- ops the optimizer introduces (cellgen/ir/ops.py: WEIGHT_OPS, LAYOUT_OPS) -------------------
def _name(data: dict, hint: str) -> str:
    return python_name(data["name"] or hint)


def _weight_cat(out, graph, data, args):
    return out.create_node("call_function", torch.cat, (list(args), data["dim"]), name=_name(data, "w_cat"))


def _weight_slice(out, graph, data, args):
    start, stop = data["start"], data["stop"]
    return out.create_node("call_function", torch.narrow, (args[0], 0, start, stop - start),
                           name=_name(data, "w_slice"))


def _weight_add(out, graph, data, args):
    return out.create_node("call_function", operator.add, tuple(args), name=_name(data, "w_add"))


def _weight_view(out, graph, data, args):
    return out.create_node("call_method", "reshape", (args[0], -1), name=_name(data, "w_vec"))


def _pad_kernel(out, graph, data, args):
    pads: list[int] = []
    for have, want in reversed(list(zip(data["from_kernel"], data["kernel"]))):  # F.pad: last dim first
        pads += [(want - have) // 2] * 2
    return out.create_node("call_function", torch.nn.functional.pad, (args[0], tuple(pads)),
                           name=_name(data, "w_pad"))


def _fill(out, graph, data, args):
    if data["value"] == 0:
        return out.create_node("call_method", "new_zeros", (args[0], (data["size"],)), name=_name(data, "zeros"))
    return out.create_node("call_method", "new_full", (args[0], (data["size"],), float(data["value"])),
                           name=_name(data, "full"))


def _slice(out, graph, data, args):
    start, stop = data["start"], data["stop"]
    return out.create_node("call_function", torch.narrow, (args[0], 1, start, stop - start), name=_name(data, "chunk"))


def _interleave(out, graph, data, args):
    """Gate-major interleave (multi-kernel ConvLSTM, Fig. 4b): view each (B, G·C_j, …) tensor as
    (B, G, C_j, …), concatenate on the C axis, flatten back to (B, G·ΣC_j, …)."""
    groups = data["groups"]
    views = [out.create_node("call_method", "unflatten", (arg, 1, (groups, -1)), name="gates") for arg in args]
    joined = out.create_node("call_function", torch.cat, (views, 2), name="gates_cat")
    return out.create_node("call_method", "flatten", (joined, 1, 2), name=_name(data, "interleaved"))


_OPTIMIZER_OPS = {"weight_cat": _weight_cat, "weight_slice": _weight_slice, "weight_add": _weight_add,
                  "weight_view": _weight_view, "pad_kernel": _pad_kernel, "fill": _fill, "slice": _slice,
                  "interleave": _interleave}


def _padding(kernel: tuple[int, ...]):
    """"same" padding; a tuple when every size is odd (the fast, symmetric case)."""
    if all(size % 2 == 1 for size in kernel):
        return tuple(size // 2 for size in kernel)
    return "same"
