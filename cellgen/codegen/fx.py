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
        hint = "conv_" + (graph[graph.operands(node)[1]]["name"] or "")
    elif op == "channel_view":
        kind, target, args, hint = "call_method", "view", (args[0], -1) + (1,) * graph.spatial_dims, "view"
    elif op == "concat":
        kind, target, args, hint = "call_function", torch.cat, (list(args), 1), "cat"
    else:
        kind, target, args, hint = "call_function", _FUNCTIONS[op], tuple(args), op
    return out.create_node(kind, target, args, name=python_name(data["name"] or hint))


def _padding(kernel: tuple[int, ...]):
    """"same" padding; a tuple when every size is odd (the fast, symmetric case)."""
    if all(size % 2 == 1 for size in kernel):
        return tuple(size // 2 for size in kernel)
    return "same"
