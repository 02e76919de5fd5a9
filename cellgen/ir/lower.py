"""AST → CellGraph: resolve every name, build one node per operation, infer channels.

Equations are dataflow, not statements: they may appear in any order, and a name refers to
its one definition. A state `c` is read as `c` (the value at t-1) and written as `c'`.
"""
from __future__ import annotations

import warnings
from typing import Mapping, Optional

import networkx as nx

from cellgen.errors import (ArityError, CellgenError, CellgenWarning, CyclicDefinitionError, Note,
                            RedefinitionError, ShapeError, StateNotUpdatedError, TypeMismatchError,
                            UnknownFunctionError, UnknownSymbolError, did_you_mean, span_text)
from cellgen.ir.channels import ChannelSolver
from cellgen.ir.graph import CellGraph, StateInfo, WeightInfo
from cellgen.ir.ops import BINARY_OPS, ELEMENTWISE, FUNCTIONS
from cellgen.ir.params import bind_params, evaluate
from cellgen.language import syntax as ast


def lower(spec: ast.CellSpec, params: Optional[Mapping[str, object]] = None) -> CellGraph:
    """Build the validated, channel-annotated graph of one step of `spec`.

    Raises a `CellgenError` for any mistake; emits a `CellgenWarning` for unused gates,
    weights and inputs.
    """
    return _Lowering(spec, bind_params(spec, params or {})).run()


def _key(ref: ast.Ref) -> str:
    return ref.text


class _Lowering:
    def __init__(self, spec: ast.CellSpec, params: dict[str, int]):
        self.spec = spec
        self.graph = CellGraph(spec.name, spec.citation, params)
        self.channels = ChannelSolver()
        self.declared: dict[str, ast.Node] = {}  # every declared name → its declaration
        self.equations: dict[str, ast.Equation] = {}
        self.lowered: dict[str, str] = {}  # equation key → node
        self.in_progress: list[str] = []
        self.weight_nodes: dict[str, str] = {}
        self.weight_decl_used: set[int] = set()

    def run(self) -> CellGraph:
        self._declare()
        self._collect_equations()
        for key in self.equations:
            self._lower_equation(key)
        self._bind_results()
        self._infer_channels()
        self._warn_unused()
        return self.graph

    # --- declarations -----------------------------------------------------------------------
    def _claim(self, name: str, decl: ast.Node, what: str) -> None:
        if name in self.declared:
            first = self.declared[name]
            raise RedefinitionError(f"`{name}` is declared twice", decl.span,
                                    related=[Note(f"`{name}` is first declared here", first.span)])
        self.declared[name] = decl

    def _declare(self) -> None:
        params = self.graph.params
        for decl in self.spec.params:
            self._claim(decl.name, decl, "param")
        for tensor in self.spec.inputs:
            self._claim(tensor.name, tensor, "input")
            channels = evaluate(tensor.channels, params, f"the channels of input `{tensor.name}`")
            node = self.graph.add("input", name=tensor.name, span=tensor.span)
            self.graph.inputs[tensor.name] = node
            self.channels.known(node, channels, tensor.span, f"input `{tensor.name}` is declared with {channels}")
        zigzag = set(self.spec.zigzag_states)
        for tensor in self.spec.states:
            self._claim(tensor.name, tensor, "state")
            channels = evaluate(tensor.channels, params, f"the channels of state `{tensor.name}`")
            node = self.graph.add("state", name=tensor.name, span=tensor.span)
            self.graph.states[tensor.name] = StateInfo(tensor.name, channels, tensor.name in zigzag)
            self.graph.state_nodes[tensor.name] = node
            self.channels.known(node, channels, tensor.span, f"state `{tensor.name}` is declared with {channels}")
        for decl in self.spec.weights:
            for pattern in decl.patterns:
                if not pattern.is_glob:
                    self._claim(pattern.text, pattern, "weight")

    def _collect_equations(self) -> None:
        for equation in self.spec.equations:
            target, key = equation.target, _key(equation.target)
            if target.prime and target.name not in self.graph.states:
                raise TypeMismatchError(f"`{key}`: only a state has a next value, and `{target.name}` is not a state",
                                        target.span, hint=f"declare it (`state {target.name}[…]`) or drop the `'`")
            if not target.prime and target.name in self.declared:
                first = self.declared[target.name]
                hint = (f"`{target.name}` is a state: its next value is `{target.name}'`"
                        if target.name in self.graph.states else None)
                raise RedefinitionError(f"`{target.name}` is already declared", target.span, hint=hint,
                                        related=[Note(f"`{target.name}` is declared here", first.span)])
            if key in self.equations:
                raise RedefinitionError(f"`{key}` is defined twice", equation.span,
                                        related=[Note(f"first definition of `{key}`", self.equations[key].span)])
            self.equations[key] = equation

    # --- equations --------------------------------------------------------------------------
    def _lower_equation(self, key: str) -> str:
        if key in self.lowered:
            return self.lowered[key]
        equation = self.equations[key]
        if key in self.in_progress:
            cycle = self.in_progress[self.in_progress.index(key):] + [key]
            raise CyclicDefinitionError(f"`{key}` depends on itself: {' → '.join(cycle)}", equation.span,
                                        hint="a value at t may only depend on states at t-1 (`c`) and values "
                                             "defined without going through itself")
        self.in_progress.append(key)
        node = self._expr(equation.expr)
        self.in_progress.pop()
        if self.graph[node]["name"] is None and self.graph[node]["kind"] == "op":
            self.graph[node]["name"] = key
            self.graph[node]["span"] = equation.span
        self.lowered[key] = node
        return node

    def _expr(self, expr: ast.Expr) -> str:
        graph = self.graph
        if isinstance(expr, ast.Number):
            return graph.add("const", name=None, value=expr.value, span=expr.span)
        if isinstance(expr, ast.Ref):
            return self._tensor_ref(expr)
        if isinstance(expr, ast.Neg):
            return self._op("neg", [self._expr(expr.operand)], expr)
        if isinstance(expr, ast.Scale):
            return self._op("mul", [self._expr(expr.factor), self._expr(expr.operand)], expr)
        if isinstance(expr, ast.Concat):
            parts = [self._expr(item) for item in expr.items]
            node = graph.add_op("concat", parts, span=expr.span)
            self.channels.total(node, parts, expr.span, f"`{span_text(expr.span)}`")
            return node
        if isinstance(expr, ast.Call):
            return self._call(expr)
        if isinstance(expr, ast.Binary):
            if expr.op == "conv":
                return self._conv(expr)
            return self._op(BINARY_OPS[expr.op], [self._expr(expr.left), self._expr(expr.right)], expr)
        raise AssertionError(f"unhandled expression {expr!r}")

    def _op(self, op: str, operands: list[str], expr: ast.Node) -> str:
        node = self.graph.add_op(op, operands, span=expr.span)
        assert op in ELEMENTWISE
        why = f"`{span_text(expr.span)}` needs operands with equal channels"
        for operand in operands:
            if not self.graph[operand].get("broadcast"):
                self.channels.same(node, operand, expr.span, why)
        return node

    def _call(self, call: ast.Call) -> str:
        function = FUNCTIONS.get(call.func)
        if function is None:
            hint = did_you_mean(call.func, FUNCTIONS) or f"known functions: {', '.join(sorted(FUNCTIONS))}"
            raise UnknownFunctionError(f"unknown function `{call.func}`", call.span, hint=hint)
        if len(call.args) != function.arity:
            raise ArityError(f"`{call.func}` takes {function.arity} argument{'s' * (function.arity != 1)}, "
                             f"but {len(call.args)} were given", call.span)
        return self._op(function.op, [self._expr(arg) for arg in call.args], call)

    def _conv(self, expr: ast.Binary) -> str:
        if not isinstance(expr.left, ast.Ref) or self._weight_decl(expr.left) is None:
            what = self._describe(expr.left)
            raise TypeMismatchError(f"the left side of `⋆` must be a conv weight, but `{span_text(expr.left.span)}` "
                                    f"is {what}", expr.left.span,
                                    hint="for an elementwise product write `⊙` (ASCII `.*`)")
        symbol = expr.left.name
        decl = self._weight_decl(expr.left)
        if not isinstance(decl.type, ast.ConvType):
            raise TypeMismatchError(f"`{symbol}` is declared `{_type_word(decl.type)}`, not `conv`", expr.left.span,
                                    related=[Note(f"`{symbol}` is declared here", decl.span)])
        weight = self._weight(expr.left, decl)
        operand = self._expr(expr.right)
        info = self.graph[weight]
        node = self.graph.add_op("conv", [operand, weight], span=expr.span, kernel=info["kernel"])
        self.channels.same(node, (symbol, "out"), expr.span, f"`{symbol}` is used in convs of different widths")
        self.channels.same(operand, (symbol, "in"), expr.span, f"`{symbol}` is applied to inputs of different widths")
        return node

    # --- names ------------------------------------------------------------------------------
    def _tensor_ref(self, ref: ast.Ref) -> str:
        key = _key(ref)
        if ref.prime:
            if ref.name not in self.graph.states:
                raise TypeMismatchError(f"`{key}`: only a state has a next value, and `{ref.name}` is not a state",
                                        ref.span)
            if key not in self.equations:
                raise StateNotUpdatedError(f"`{key}` is used, but no equation defines it", ref.span,
                                           hint=f"add `{key} = …`")
            return self._lower_equation(key)
        if key in self.equations:
            return self._lower_equation(key)
        if ref.name in self.graph.inputs:
            return self.graph.inputs[ref.name]
        if ref.name in self.graph.state_nodes:
            return self.graph.state_nodes[ref.name]
        if ref.name in self.graph.params:
            raise TypeMismatchError(f"`{ref.name}` is a param (a whole number fixed at compile time), not a tensor",
                                    ref.span)
        decl = self._weight_decl(ref)
        if decl is None:
            raise UnknownSymbolError(f"unknown symbol `{ref.name}`", ref.span, hint=self._suggest(ref.name))
        if isinstance(decl.type, ast.ConvType):
            raise TypeMismatchError(f"`{ref.name}` is a conv weight; apply it with `⋆`: `{ref.name} ⋆ tensor`",
                                    ref.span)
        weight = self._weight(ref, decl)
        if isinstance(decl.type, ast.BiasType):
            # A bias of shape (C,) is added to (B, C, *spatial) maps: view it as (C, 1, …, 1).
            view = self.graph.add_op("channel_view", [weight], span=ref.span)
            self.channels.same(view, weight, ref.span, f"bias `{ref.name}`")
            return view
        return weight

    def _describe(self, expr: ast.Expr) -> str:
        if isinstance(expr, ast.Ref):
            if _key(expr) in self.equations:
                return "an equation's value"
            for table, word in ((self.graph.inputs, "an input"), (self.graph.state_nodes, "a state")):
                if expr.name in table:
                    return word
            decl = self._weight_decl(expr)
            if decl is not None:
                return f"a `{_type_word(decl.type)}` weight"
            if expr.name not in self.graph.params:
                raise UnknownSymbolError(f"unknown symbol `{expr.name}`", expr.span, hint=self._suggest(expr.name))
            return "a param"
        return "an expression"

    def _suggest(self, name: str) -> Optional[str]:
        known = [*self.equations, *self.graph.inputs, *self.graph.state_nodes, *self.graph.params,
                 *(p.text for d in self.spec.weights for p in d.patterns if not p.is_glob),
                 *self.weight_nodes]
        return did_you_mean(name, known)

    def _weight_decl(self, ref: ast.Ref) -> Optional[ast.WeightDecl]:
        """The declaration covering a weight symbol: its exact name, else the longest glob."""
        if ref.prime or _key(ref) in self.equations:
            return None
        best, best_len = None, -1
        for index, decl in enumerate(self.spec.weights):
            for pattern in decl.patterns:
                if pattern.matches(ref.name):
                    strength = 10**6 if not pattern.is_glob else len(pattern.text)
                    if strength == best_len and best is not decl:
                        raise TypeMismatchError(f"`{ref.name}` matches two weight declarations equally well",
                                                ref.span, related=[Note("one", best.span), Note("the other", decl.span)])
                    if strength > best_len:
                        best, best_len = decl, strength
        return best

    def _weight(self, ref: ast.Ref, decl: ast.WeightDecl) -> str:
        """The node of a weight symbol: one per symbol, so the same name is the same weight."""
        symbol = ref.name
        self.weight_decl_used.add(id(decl))
        if symbol in self.weight_nodes:
            return self.weight_nodes[symbol]
        params, kind = self.graph.params, decl.type
        if isinstance(kind, ast.ConvType):
            kernel = tuple(evaluate(d, params, f"the kernel size of `{symbol}`") for d in kind.kernel)
            node = self.graph.add("weight", name=symbol, span=ref.span, weight_kind="conv", kernel=kernel,
                                  decl_span=decl.span)
        elif isinstance(kind, ast.BiasType):
            node = self.graph.add("weight", name=symbol, span=ref.span, weight_kind="bias", decl_span=decl.span)
        else:
            shape = tuple(evaluate(d, params, f"the shape of `{symbol}`") for d in kind.shape)
            node = self.graph.add("weight", name=symbol, span=ref.span, weight_kind="elementwise", shape=shape,
                                  decl_span=decl.span, broadcast=shape[0] == 1)
            if shape[0] != 1:
                self.channels.known(node, shape[0], decl.span, f"`{symbol}` is declared with shape {list(shape)}")
        self.weight_nodes[symbol] = node
        return node

    # --- results, channels, warnings --------------------------------------------------------
    def _bind_results(self) -> None:
        graph = self.graph
        for name, state in graph.states.items():
            key = f"{name}'"
            if key not in self.equations:
                decl = self.declared[name]
                raise StateNotUpdatedError(f"state `{name}` is never updated", decl.span,
                                           hint=f"add an equation `{key} = …`")
            node = self.lowered[key]
            graph.next_state[name] = node
            self.channels.same(node, graph.state_nodes[name], self.equations[key].span,
                               f"`{key}` is the next value of state `{name}`")
        declared = self.spec.output
        if declared is not None:
            graph.output = self._tensor_ref(declared.ref)
        elif "h" in graph.states:
            graph.output = graph.next_state["h"]
        else:
            raise CellgenError(f"cell {self.spec.name} does not say what it outputs", self.spec.span,
                               hint="declare `output NAME` (a state with no `output` line must be called `h`)")

    def _infer_channels(self) -> None:
        graph, solver = self.graph, self.channels
        solver.solve()
        for node, data in graph.nx.nodes(data=True):
            if data["kind"] == "const" or data.get("broadcast"):
                continue
            if data["kind"] == "weight" and data["weight_kind"] == "conv":
                continue
            channels = solver.value(node)
            if channels is None:
                what = f"`{span_text(data['span'])}`" if data.get("span") else "a value"
                raise ShapeError(f"cannot infer how many channels {what} has", data.get("span"),
                                 hint="a conv's output channels come from where its result goes; "
                                      "make it meet a state, an input or a declared weight")
            data["channels"] = channels
        dims = {len(graph[n]["kernel"]) for n in graph.ops("conv")}
        if len(dims) > 1:
            raise ShapeError("the cell mixes 2D and 3D convs", graph[graph.ops("conv")[0]]["span"])
        graph.spatial_dims = dims.pop() if dims else 2
        for symbol, node in self.weight_nodes.items():
            data = graph[node]
            if data["weight_kind"] == "conv":
                out, inp = solver.value((symbol, "out")), solver.value((symbol, "in"))
                if out is None:
                    raise ShapeError(f"cannot infer the output channels of `{symbol}`", data["span"])
                data["channels"] = out
                data["in_channels"] = inp
                info = WeightInfo(symbol, "conv", (out, inp, *data["kernel"]), data["kernel"])
            elif data["weight_kind"] == "bias":
                info = WeightInfo(symbol, "bias", (data["channels"],))
            else:
                info = WeightInfo(symbol, "elementwise", data["shape"])
            graph.weights[symbol] = info
        graph.weights = dict(sorted(graph.weights.items(), key=lambda item: _creation(self.weight_nodes[item[0]])))

    def _warn_unused(self) -> None:
        graph = self.graph
        live = set(graph.results())
        for result in graph.results():
            live |= nx.ancestors(graph.nx, result)
        for key, node in self.lowered.items():
            if node not in live:
                warnings.warn(CellgenWarning(f"`{key}` is computed but never used", self.equations[key].span,
                                             hint="use it, or delete its equation"), stacklevel=4)
        for name, node in graph.inputs.items():
            if node not in live:
                warnings.warn(CellgenWarning(f"input `{name}` is never used", graph[node]["span"]), stacklevel=4)
        for decl in self.spec.weights:
            if id(decl) not in self.weight_decl_used:
                names = ", ".join(p.text for p in decl.patterns)
                warnings.warn(CellgenWarning(f"weight declaration `{names}` matches no symbol in any equation",
                                             decl.span, hint="delete it, or check the names in the equations"),
                              stacklevel=4)
        graph.remove_dead()


def _type_word(kind: ast.WeightType) -> str:
    return {ast.ConvType: "conv", ast.BiasType: "bias", ast.ElementwiseType: "elementwise"}[type(kind)]


def _creation(node: str) -> int:
    return int(node[1:])
