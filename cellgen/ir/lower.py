"""AST → CellGraph: resolve every name, build one node per operation, infer channels.

Equations are dataflow, not statements: they may appear in any order, and a name refers to
its one definition. A state `c` is read as `c` (the value at t-1) and written as `c'`.
"""
from __future__ import annotations

import warnings
from typing import Mapping, Optional

import networkx as nx

from cellgen.errors import (ArityError, CellgenError, CellgenWarning, CyclicDefinitionError, Note,
                            RedefinitionError, ShapeError, Span, StateNotUpdatedError, TypeMismatchError,
                            UnknownFunctionError, UnknownSymbolError, did_you_mean, span_text)
from cellgen.ir.channels import ChannelSolver
from cellgen.ir.graph import CellGraph, StateInfo, WeightInfo, creation_order
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
        self.kinds: dict[str, str] = {}  # every declared name → "param", "input", "state" or "weight"
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
            first, first_what = self.declared[name], self.kinds[name]
            again = "again" if what == first_what else f"again as {_a(what)}"
            raise RedefinitionError(f"`{name}` is declared twice: as {_a(first_what)}, then {again}", decl.span,
                                    related=[Note(f"`{name}` is first declared here", first.span)])
        self.declared[name] = decl
        self.kinds[name] = what

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
                                        target.span, hint=f"declare it (`state {target.name}[…]`), or "
                                                          + _prime_hint(target.name))
            if not target.prime and target.name in self.declared:
                first, what = self.declared[target.name], self.kinds[target.name]
                hint = (f"an equation defines a state's next value: write `{target.name}' = …`"
                        if what == "state" else f"rename the equation's `{target.name}`, or the {what}")
                raise RedefinitionError(f"`{target.name}` is declared as {_a(what)}, so an equation cannot define it",
                                        target.span, hint=hint,
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
            notes = [Note(f"`{step}` uses `{after}` here", self.equations[step].span)
                     for step, after in zip(cycle[1:-1], cycle[2:])]
            raise CyclicDefinitionError(f"`{key}` depends on itself: {' → '.join(cycle)}", equation.span,
                                        related=notes,
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
        written = _operand_texts(expr)
        written += [None] * (len(operands) - len(written))
        seen: list[str] = []  # the tensor operands already joined to `node`, as written
        for operand, text in zip(operands, written):
            data = self.graph[operand]
            if data.get("broadcast"):
                continue
            sides = (" and ".join(seen), text) if seen and text else None
            self.channels.same(node, operand, expr.span, why, sides=sides)
            if text and data["kind"] != "const":
                seen.append(text)
        return node

    def _call(self, call: ast.Call) -> str:
        function = FUNCTIONS.get(call.func)
        written = _written_function(call)
        if function is None:
            hint = did_you_mean(call.func, FUNCTIONS) or f"known functions: {', '.join(sorted(FUNCTIONS))}"
            raise UnknownFunctionError(f"unknown function `{written}`", _name_span(call), hint=hint)
        if len(call.args) != function.arity:
            were = "was" if len(call.args) == 1 else "were"
            raise ArityError(f"`{written}` takes {function.arity} argument{'s' * (function.arity != 1)}, "
                             f"but {len(call.args)} {were} given", call.span)
        return self._op(function.op, [self._expr(arg) for arg in call.args], call)

    def _conv(self, expr: ast.Binary) -> str:
        if not isinstance(expr.left, ast.Ref) or self._weight_decl(expr.left) is None:
            left, right = span_text(expr.left.span), span_text(expr.right.span)
            what, where = self._describe(expr.left)
            raise TypeMismatchError(f"the left side of `⋆` must be a conv weight, but `{left}` is {what}",
                                    expr.left.span, related=where,
                                    hint=f"for an elementwise product write `{left} ⊙ {right}` (ASCII `.*`)")
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
                                        ref.span, hint=_prime_hint(ref.name))
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
            raise TypeMismatchError(f"`{ref.name}` is a conv weight, not a tensor: it can only be applied with `⋆`",
                                    ref.span, hint=f"convolve something with it: `{ref.name} ⋆ …` (ASCII `*`)",
                                    related=[Note(f"`{ref.name}` is declared a conv weight here", decl.span)])
        weight = self._weight(ref, decl)
        if isinstance(decl.type, ast.BiasType):
            # A bias of shape (C,) is added to (B, C, *spatial) maps: view it as (C, 1, …, 1).
            view = self.graph.add_op("channel_view", [weight], span=ref.span)
            self.channels.same(view, weight, ref.span, f"bias `{ref.name}`")
            return view
        return weight

    def _describe(self, expr: ast.Expr) -> tuple[str, list[Note]]:
        """What a name is, in words, and where that was said: for messages about misuse."""
        if isinstance(expr, ast.Ref):
            key = _key(expr)
            if key in self.equations:
                return "computed by an equation", [Note(f"`{key}` is defined here", self.equations[key].span)]
            if expr.prime:
                return "a next value", []
            if expr.name in self.kinds:
                what = self.kinds[expr.name]
                return _a(what), [Note(f"`{expr.name}` is declared here", self.declared[expr.name].span)]
            decl = self._weight_decl(expr)
            if decl is not None:
                return f"a `{_type_word(decl.type)}` weight", [Note(f"`{expr.name}` is declared here", decl.span)]
            raise UnknownSymbolError(f"unknown symbol `{expr.name}`", expr.span, hint=self._suggest(expr.name))
        return "an expression, not a name", []

    def _suggest(self, name: str) -> Optional[str]:
        known = [*self.equations, *self.graph.inputs, *self.graph.state_nodes, *self.graph.params,
                 *(p.text for d in self.spec.weights for p in d.patterns if not p.is_glob),
                 *self.weight_nodes]
        return did_you_mean(name, known)

    def _weight_decl(self, ref: ast.Ref) -> Optional[ast.WeightDecl]:
        """The declaration covering a weight symbol: its exact name, else the longest glob."""
        if ref.prime or _key(ref) in self.equations:
            return None
        best, best_len, best_pattern = None, -1, None
        for decl in self.spec.weights:
            for pattern in decl.patterns:
                if pattern.matches(ref.name):
                    strength = 10**6 if not pattern.is_glob else len(pattern.text)
                    if strength == best_len and best is not decl:
                        # Equal strength means the same glob text: the same pattern declared twice.
                        raise RedefinitionError(
                            f"`{ref.name}` matches `{pattern.text}`, which two weight declarations declare",
                            ref.span, hint=f"declare `{pattern.text}` once",
                            related=[Note(f"`{best_pattern.text}` is declared here", best_pattern.span),
                                     Note("and again here", pattern.span)])
                    if strength > best_len:
                        best, best_len, best_pattern = decl, strength, pattern
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
                               f"`{key}` is the next value of state `{name}`", sides=(f"`{key}`", f"`{name}`"))
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
        graph.weights = dict(sorted(graph.weights.items(), key=lambda item: creation_order(self.weight_nodes[item[0]])))

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


def _a(word: str) -> str:
    """`an input`, `a state`: the article for a declaration kind."""
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def _prime_hint(name: str) -> str:
    return (f"drop the `'`; a prime marks a state's next value, so a paper's primed gate "
            f"(`{name}'`) needs another name, such as `{name}_2`")


def _operand_texts(expr: ast.Node) -> list[Optional[str]]:
    """The operands of an elementwise expression as written, to name them in messages."""
    if isinstance(expr, ast.Binary):
        parts = [expr.left, expr.right]
    elif isinstance(expr, ast.Call):
        parts = expr.args
    elif isinstance(expr, ast.Neg):
        parts = [expr.operand]
    elif isinstance(expr, ast.Scale):
        parts = [expr.factor, expr.operand]
    else:
        parts = []
    return [f"`{span_text(p.span)}`" if p.span else None for p in parts]


def _written_function(call: ast.Call) -> str:
    """The function's name as the user wrote it (`sigmoid`), which the AST may spell `σ`."""
    if call.span is None:
        return call.func
    return span_text(call.span).split("(")[0].strip() or call.func


def _name_span(call: ast.Call) -> Optional[Span]:
    """The span of just the function name of a call, for a caret under `sigmod`, not its arguments."""
    span = call.span
    if span is None:
        return None
    return Span(span.source, span.line, span.column, span.line, span.column + len(_written_function(call)))


def _type_word(kind: ast.WeightType) -> str:
    return {ast.ConvType: "conv", ast.BiasType: "bias", ast.ElementwiseType: "elementwise"}[type(kind)]
