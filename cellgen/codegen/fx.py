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
the spec's names. A cell with several outputs (`output h', delta_c, delta_m`) returns the others
as a third element, a dict by their written names: `return (h_next, {…states…}, {'delta_c': …})`.
"""
from __future__ import annotations

import operator
import re
from typing import Optional

import torch
from torch import fx

from cellgen.codegen.identifiers import argument_names
from cellgen.ir.analysis import axis_dim, ensure_analyzed
from cellgen.ir.graph import CellGraph
from cellgen.ir.ops import OPS
from cellgen.runtime import ops as runtime_ops
from cellgen.runtime.state import initial_state


def python_name(name: str) -> str:
    """A spec name as a Python identifier: `c'` → `c_next`, `SE.i` → `SE_i`, `c[t-5:t-1]` → `c_t_5_t_1`."""
    name = name.replace("'", "_next").replace("∞", "all")
    return re.sub(r"\W+", "_", name).strip("_") or "value"


def build_fx_graph(graph: CellGraph) -> fx.Graph:
    """One fx node (or a few) per op of `graph`, in order: each op's registry emitter. Codegen
    only translates: every choice of what to compute was made by a pass."""
    ensure_analyzed(graph)
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
    histories, pushed = {}, {}  # name → the history read; → the value pushed and the length kept
    for name, info in graph.states.items():
        if info.history and info.zeros is not None:
            histories[name] = out.create_node("call_function", runtime_ops.read_full_history,
                                              (state_arg, name, values[graph.state_nodes[name]], info.zeros, False),
                                              name=f"{python_name(name)}_history")
        elif info.history:
            histories[name] = out.create_node("call_function", runtime_ops.read_history,
                                              (state_arg, name, values[graph.state_nodes[name]]),
                                              name=f"{python_name(name)}_history")
    for name, size in graph.input_histories.items():
        histories[name] = out.create_node("call_function", runtime_ops.read_full_history,
                                          (state_arg, name, values[graph.inputs[name]], size, True),
                                          name=f"{python_name(name)}_history")
        pushed[name] = (values[graph.inputs[name]], size)
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
            size = data["size"]
            kept = graph.input_histories[data["state"]] if data.get("input") else \
                graph.states[data["state"]].history_size
            values[node] = buffer if size == kept else out.create_node(
                "call_function", runtime_ops.latest, (buffer, size), name=python_name(data["name"]))
            continue
        args = [values[o] for o in graph.operands(node)]
        values[node] = emitter.emit(node, data, args)
    result = values[graph.output]
    next_state = {name: values[n] for name, n in graph.next_state.items()}
    for name, buffer in histories.items():
        value, size = pushed.get(name) or (next_state[name], graph.states[name].history_size)
        next_state[f"{name}.history"] = out.create_node(
            "call_function", runtime_ops.push_history, (buffer, value, size),
            name=f"{python_name(name)}_history_next")
    if graph.extra_outputs:  # `output h', delta_c, delta_m`: the others beside h (docs/outputs.md)
        out.output((result, next_state, {name: values[n] for name, n in graph.extra_outputs.items()}))
    else:
        out.output((result, next_state))
    out.lint()
    return out


class _Emitter:
    """The codegen context an op's emitter (cellgen/ir/ops.py: `OpDef.emit`) builds its fx
    node(s) with: torch and the runtime ops are reached through it, so the op registry needs
    neither at import. Ops on stacks find their axes one further along (`dim`), and a map
    meeting a stack is broadcast over it (`elementwise`)."""

    torch, F, runtime, operator = torch, torch.nn.functional, runtime_ops, operator

    def __init__(self, out: fx.Graph, graph: CellGraph):
        self.out, self.graph = out, graph
        self._facts = {node: data["facts"] for node, data in graph.nx.nodes(data=True)}

    def emit(self, node: str, data: dict, args: list) -> fx.Node:
        return OPS[data["op"]].emit(self, node, data, args)

    # --- what emitters read ---
    def stacked(self, node: str) -> bool:
        return self._facts[node].stacked

    def dim(self, axis: str, stacked: bool) -> int:
        return axis_dim(axis, stacked, self.graph.spatial_dims)

    # --- what emitters build ---
    def call(self, function, args, name: str) -> fx.Node:
        return self.out.create_node("call_function", function, tuple(args), name=python_name(name))

    def method(self, method: str, args, name: str) -> fx.Node:
        return self.out.create_node("call_method", method, tuple(args), name=python_name(name))

    def elementwise(self, node: str, function, args) -> fx.Node:
        """`function(*args)`, a map meeting a stack given the stack's axis (of length 1)."""
        if self.stacked(node):
            operands = self.graph.operands(node)
            args = [self.method("unsqueeze", (arg, 1), "as_stack")
                    if self._facts[o].map and not self._facts[o].stacked else arg for o, arg in zip(operands, args)]
        return self.call(function, args, self.graph[node]["name"] or self.graph[node]["op"])

    def conv_padding(self, kernel: tuple[int, ...], source, geometry_pads: Optional[tuple] = None):
        """A conv's padding, and its source (or sources) padded first for an even kernel, as
        torch's "same" pads (once, explicitly). `geometry_pads`: per axis "same", "valid" or
        a number (cellgen.ir.ops.conv_geometry)."""
        if geometry_pads is not None:
            return self._geometry_padding(kernel, source, geometry_pads)
        padding = _padding(kernel)
        if padding != "same":
            return padding, source
        pads = _same_pads(kernel)
        pad = lambda t: self.call(torch.nn.functional.pad, (t, pads), "padded")  # noqa: E731
        return (0,) * len(kernel), [pad(part) for part in source] if isinstance(source, list) else pad(source)


    def _geometry_padding(self, kernel, source, geometry_pads):
        symmetric = [0 if p == "valid" else p if p != "same" else size // 2 if size % 2 else None
                     for size, p in zip(kernel, geometry_pads)]
        if None not in symmetric:
            return tuple(symmetric), source
        pads: list[int] = []  # an even kernel's "same" axis: padded first, the others by the conv
        for size, p in reversed(list(zip(kernel, geometry_pads))):
            before = (size - 1) // 2 if p == "same" else 0
            pads += [before, size - 1 - before] if p == "same" else [0, 0]
        padding = tuple(0 if s is None else s for s in symmetric)
        pad = lambda t: self.call(torch.nn.functional.pad, (t, tuple(pads)), "padded")  # noqa: E731
        return padding, [pad(part) for part in source] if isinstance(source, list) else pad(source)


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
