"""AST → CellGraph: resolve every name, build one node per operation, infer channels.

Equations are dataflow, not statements: they may appear in any order, and a name refers to
its one definition. A state `c` is read as `c` (the value at t-1) and written as `c'`.
"""
from __future__ import annotations

import re
import warnings
from typing import Mapping, Optional

import networkx as nx

from cellgen.errors import (ArityError, CellgenError, CellgenWarning, ChannelMismatchError, CyclicDefinitionError,
                            Note, RedefinitionError, ShapeError, Span, StateNotUpdatedError, TypeMismatchError,
                            UnknownFunctionError, UnknownSymbolError, did_you_mean, span_text)
from cellgen.ir.channels import ChannelSolver
from cellgen.ir.graph import CellGraph, StateInfo, WeightInfo, creation_order
from cellgen.ir.layout import AXES, check_layout
from cellgen.ir.ops import BINARY_OPS, ELEMENTWISE, FUNCTIONS, STRUCTURAL_FUNCTIONS
from cellgen.ir.params import bind_params, evaluate
from cellgen.language import syntax as ast


def lower(spec: ast.CellSpec, params: Optional[Mapping[str, object]] = None) -> CellGraph:
    """Build the validated, channel-annotated graph of one step of `spec` (a resolved spec:
    see cellgen.language.resolve).

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
        self.equations: dict[str, ast.Equation | ast.Unpack] = {}  # key → its defining statement
        self.part_index: dict[str, int] = {}  # key of an unpack's target → its position
        self.unpacked: dict[int, list[str]] = {}  # id(unpack) → the nodes of its parts
        self.channel_splits: list[tuple[str, list[str]]] = []  # value, its channel-chunk nodes
        self.norms: list[tuple[str, ast.NormType]] = []  # layernorm nodes and their declarations
        self.lowered: dict[str, str] = {}  # equation key → node
        self.in_progress: list[str] = []
        self.weight_nodes: dict[str, str] = {}
        self.weight_decl_used: set[int] = set()
        self.claimed_level: dict[str, int] = {}
        self.history_nodes: dict[tuple[str, Optional[int]], str] = {}
        self.expr_spans: dict[str, Span] = {}  # a node an equation names → where its expression is written

    def run(self) -> CellGraph:
        self._declare()
        self._collect_equations()
        for key, definition in self.equations.items():
            # An inherited or borrowed equation is lowered only if something uses it, so that a
            # variant drops what it no longer needs (weights included) without a word.
            if not isinstance(definition.expr, ast.PerKernel) and not definition.borrowed:
                self._lower_equation(key)
        self._bind_results()
        self._infer_channels()
        check_layout(self.graph, self.expr_spans)
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
            if tensor.window is not None:
                self.graph.input_windows[tensor.name] = evaluate(tensor.window, params,
                                                                 f"the window of input `{tensor.name}`")
            self.channels.known(node, channels, tensor.span, f"input `{tensor.name}` is declared with {channels}")
        if not self.spec.inputs:
            raise CellgenError(f"cell {self.spec.name} has no input", self.spec.span,
                               hint="declare what each step reads: `input x[C]`")
        zigzag = set(self.spec.zigzag_states)
        for tensor in self.spec.states:
            self._claim(tensor.name, tensor, "state")
            if tensor.window is not None:
                raise TypeMismatchError(f"state `{tensor.name}` has a window, but only an input has one",
                                        tensor.window.span or tensor.span,
                                        hint="`window T` says how many frames of an input a step reads; a 3D "
                                             "cell's states are NCTHW maps without one: drop it")
            channels = evaluate(tensor.channels, params, f"the channels of state `{tensor.name}`")
            node = self.graph.add("state", name=tensor.name, span=tensor.span)
            self.graph.states[tensor.name] = StateInfo(tensor.name, channels, tensor.name in zigzag)
            self.graph.state_nodes[tensor.name] = node
            self.channels.known(node, channels, tensor.span, f"state `{tensor.name}` is declared with {channels}")
        for decl in self.spec.weights:
            for pattern in decl.patterns:
                if not pattern.is_glob:
                    # a variant may declare again a weight its parent declares: its own wins
                    if self.claimed_level.get(pattern.text, decl.level) != decl.level:
                        continue
                    self._claim(pattern.text, pattern, "weight")
                    self.claimed_level[pattern.text] = decl.level

    def _collect_equations(self) -> None:
        for equation in self.spec.definitions:
            targets = [equation.target] if isinstance(equation, ast.Equation) else equation.targets
            for index, target in enumerate(targets):
                self._collect(equation, target)
                self.part_index[_key(target)] = index

    def _collect(self, equation, target: ast.Ref) -> None:
        key = _key(target)
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
        if isinstance(equation, ast.Unpack):
            node = self._unpack(equation)[self.part_index[key]]
        elif isinstance(equation.expr, ast.PerKernel):
            raise TypeMismatchError(f"`{key}` says what each kernel of a multi-kernel conv reads, so it can only "
                                    "stand on the right of `⋆`", equation.span,
                                    hint=f"write `W ⋆ {key}` with a weight declared `conv {{3×3: …, 5×5: …}}`")
        else:
            node = self._expr(equation.expr)
        self.in_progress.pop()
        if self.graph[node]["name"] is None and self.graph[node]["kind"] == "op":
            self.graph[node]["name"] = key
            self.expr_spans[node] = self.graph[node]["span"]
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
        if isinstance(expr, ast.History):
            return self._history(expr)
        if isinstance(expr, ast.PerKernel):
            raise TypeMismatchError("`{kernel: …}` says what each kernel of a multi-kernel conv reads, so it can "
                                    "only stand on the right of `⋆`", expr.span)
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
        norm = self._weight_decl(ast.Ref(name=call.func, span=call.span))
        if norm is not None and isinstance(norm.type, ast.NormType):
            return self._norm(call, norm)
        if call.func in STRUCTURAL_FUNCTIONS:
            return self._structural(call)
        function = FUNCTIONS.get(call.func)
        written = _written_function(call)
        if function is not None and call.kwargs:
            raise ArityError(f"`{written}` takes no named arguments", call.kwargs[0].span)
        if function is None:
            known = [*FUNCTIONS, *STRUCTURAL_FUNCTIONS]
            hint = did_you_mean(call.func, known) or f"known functions: {', '.join(sorted(known))}"
            raise UnknownFunctionError(f"unknown function `{written}`", _name_span(call), hint=hint)
        if len(call.args) != function.arity:
            were = "was" if len(call.args) == 1 else "were"
            raise ArityError(f"`{written}` takes {function.arity} argument{'s' * (function.arity != 1)}, "
                             f"but {len(call.args)} {were} given", call.span)
        return self._op(function.op, [self._expr(arg) for arg in call.args], call)

    # --- structure: stacks, axes, attention, norms ------------------------------------------
    def _structural(self, call: ast.Call) -> str:
        """softmax, sum, stack, attention, cat (see STRUCTURAL_FUNCTIONS); unstack and split
        make several values, so they stand only on the right of an unpack."""
        spec = STRUCTURAL_FUNCTIONS[call.func]
        if spec.unpacks:
            raise TypeMismatchError(f"`{call.func}(…)` makes several values: name them", call.span,
                                    hint=f"unpack it: `a, b = {call.func}(…)`")
        keywords = self._keywords(call, spec.keywords)
        low, high = spec.arity
        if not low <= len(call.args) <= high:
            wanted = f"{low}" if low == high else (f"at least {low}" if high > 99 else f"{low} to {high}")
            were = "was" if len(call.args) == 1 else "were"
            raise ArityError(f"`{call.func}` takes {wanted} argument{'s' * (wanted != '1')}, "
                             f"but {len(call.args)} {were} given", call.span, hint=_USAGE.get(call.func))
        operands = [self._expr(arg) for arg in call.args]
        graph, where = self.graph, f"`{span_text(call.span)}`"
        if call.func in ("softmax", "sum"):
            node = graph.add_op(call.func if call.func == "softmax" else "reduce_sum", operands, span=call.span,
                                axis=keywords["over"])
            if keywords["over"] == "C":
                raise TypeMismatchError(f"`{call.func}` over channels is not supported", call.kwargs[0].span,
                                        hint="over=stack (a history or stack()), T, H or W")
            self.channels.same(node, operands[0], call.span, where)
        elif call.func == "stack":
            node = graph.add_op("stack", operands, span=call.span)
            for operand in operands:
                self.channels.same(node, operand, call.span, f"{where} stacks values with equal channels")
        elif call.func == "cat":
            axis = keywords["along"]
            if axis in ("C", "stack"):
                hint = "[a, b] concatenates channels" if axis == "C" else "stack(a, b) makes a stack"
                raise TypeMismatchError(f"`cat` joins maps along T, H or W, not {axis}", call.span, hint=hint)
            node = graph.add_op("cat_along", operands, span=call.span, axis=axis)
            for operand in operands:
                self.channels.same(node, operand, call.span, f"{where} joins values with equal channels")
        else:  # attention
            patches = keywords.get("patches", 1)
            query, key, value = operands
            node = graph.add_op("attention", operands, span=call.span, patches=patches)
            self.channels.same(query, key, call.span, f"{where}: queries and keys must have equal channels",
                               sides=("the query", "the key"))
            self.channels.same(node, value, call.span, f"{where} has the channels of its values")
        return node

    def _keywords(self, call: ast.Call, allowed: dict[str, str]) -> dict[str, object]:
        """A call's named arguments: axis names (`over=stack`) or whole numbers (`patches=s`)."""
        values: dict[str, object] = {}
        for keyword in call.kwargs:
            kind = allowed.get(keyword.name)
            if kind is None:
                names = ", ".join(f"`{k}=`" for k in allowed) or "none"
                raise ArityError(f"`{call.func}` has no argument `{keyword.name}=`", keyword.span,
                                 hint=did_you_mean(keyword.name, allowed) or f"its named arguments: {names}")
            value = keyword.value
            if kind == "axis":
                if not (isinstance(value, ast.Ref) and not value.prime and value.name in AXES):
                    raise TypeMismatchError(f"`{keyword.name}=` takes an axis: {', '.join(AXES)}", value.span,
                                            hint=_axis_hint(span_text(value.span)) if value.span else None)
                values[keyword.name] = value.name
            else:
                values[keyword.name] = self._whole_number(value, f"`{keyword.name}=`")
        for name, kind in allowed.items():
            if kind == "axis" and name not in values:
                raise ArityError(f"`{call.func}` needs `{name}=`: which axis", call.span,
                                 hint=f"e.g. `{call.func}(…, {name}={'stack' if name == 'over' else 'W'})`")
        return values

    def _whole_number(self, expr: ast.Expr, what: str) -> int:
        if isinstance(expr, ast.Number):
            if float(expr.value).is_integer() and expr.value > 0:
                return int(expr.value)
            raise TypeMismatchError(f"{what} takes a positive whole number, not `{expr.text}`", expr.span,
                                    hint="`patches=1` (the default) attends over the whole map"
                                    if what == "`patches=`" else None)
        if isinstance(expr, ast.Ref) and not expr.prime and expr.name in self.graph.params:
            return evaluate(ast.DimName(name=expr.name, span=expr.span), self.graph.params, what)
        if isinstance(expr, ast.Ref):
            if not expr.prime and _key(expr) not in self.equations and expr.name not in self.kinds \
                    and self._weight_decl(expr) is None:
                raise UnknownSymbolError(f"unknown symbol `{expr.name}` in {what}", expr.span,
                                         hint=did_you_mean(expr.name, self.graph.params) or
                                         "a number or a param; a loop's variable is known only inside its loop")
            what_it_is, where = self._describe(expr)
            raise TypeMismatchError(f"{what} takes a whole number fixed at compile time (a number or a param), "
                                    f"but `{expr.text}` is {what_it_is}", expr.span, related=where,
                                    hint="a tensor's values are known only when the cell runs")
        raise TypeMismatchError(f"{what} takes a positive whole number or a param", expr.span)

    def _norm(self, call: ast.Call, decl: ast.WeightDecl) -> str:
        symbol, kind = call.func, decl.type
        if call.kwargs:
            raise ArityError(f"LayerNorm `{symbol}` takes no named arguments", call.kwargs[0].span,
                             hint="its shape, axes and eps are declared: `layernorm [C, H, W]`, `layernorm over C`")
        if len(call.args) != 1:
            were = "was" if len(call.args) == 1 else "were"
            raise ArityError(f"LayerNorm `{symbol}` takes one argument, but {len(call.args)} {were} given", call.span,
                             related=[Note(f"`{symbol}` is declared here", decl.span)])
        operand = self._expr(call.args[0])
        gain = self._weight(ast.Ref(name=f"{symbol}.weight", span=call.span), decl, part="norm_gain")
        bias = self._weight(ast.Ref(name=f"{symbol}.bias", span=call.span), decl, part="norm_bias")
        params = self.graph.params
        shape = tuple(evaluate(d, params, f"the shape of `{symbol}`") for d in kind.shape)
        for index, axis in enumerate(kind.over):
            if axis not in AXES or axis == "stack":
                raise TypeMismatchError(f"`{symbol}` normalises over `{axis}`, which is not an axis of a map",
                                        _word_span(decl.type.span, axis, after="over") or decl.type.span,
                                        hint=_axis_hint(axis, _MAP_AXES) or "the axes are C, T, H and W")
            if axis in kind.over[:index]:
                raise TypeMismatchError(f"`{symbol}` lists the axis `{axis}` twice", decl.type.span,
                                        hint="name each axis once: `layernorm over (C, H, W)`")
        if shape and kind.over:
            raise TypeMismatchError(f"`{symbol}`: give a shape or `over`, not both", decl.type.span,
                                    hint="a shape normalises over the trailing axes it covers")
        eps = kind.eps.value if kind.eps is not None else 1e-5
        mode = "shape" if shape else "over" if kind.over else "all"
        node = self.graph.add_op("layernorm", [operand, gain, bias], span=call.span, mode=mode, shape=shape,
                                 axes=tuple(kind.over), eps=eps, symbol=symbol)
        self.channels.same(node, operand, call.span, f"`{span_text(call.span)}`")
        self.norms.append((node, kind))
        return node

    def _history(self, expr: ast.History) -> str:
        """`c[t-τ:t-1]`: the last τ values of state c, one node per (state, τ)."""
        graph = self.graph
        if expr.state not in graph.states:
            what, where = self._describe(ast.Ref(name=expr.state, span=expr.span))
            kind = self.kinds.get(expr.state)
            hint = ("to read several frames of an input at each step, give it a window: `input x[C] window T`"
                    if kind == "input" else f"declare `{expr.state}` a state to keep its past values"
                    if kind is None else None)
            raise TypeMismatchError(f"only a state has past values, and `{expr.state}` is {what}", expr.span,
                                    related=where, hint=hint)
        bound = expr.bound
        if isinstance(bound, ast.DimName) and graph.params.get(bound.name, 0) is None:
            size = None
        else:
            size = evaluate(bound, graph.params, f"the length of `{span_text(expr.span)}`")
        node = self.history_nodes.get((expr.state, size))
        if node is None:
            bound_text = "∞" if size is None else str(size)
            node = graph.add("history", name=f"{expr.state}[t-{bound_text}:t-1]", state=expr.state, size=size,
                             span=expr.span)
            self.history_nodes[(expr.state, size)] = node
            self.channels.same(node, graph.state_nodes[expr.state], expr.span, f"the history of `{expr.state}`")
            info = graph.states[expr.state]
            sizes = [s for (state, s) in self.history_nodes if state == expr.state]
            info.history = True
            info.history_size = None if None in sizes else max(sizes)
        return node

    def _unpack(self, unpack: ast.Unpack) -> list[str]:
        """The parts of `a, b, … = expr`: stack entries (unstack), equal pieces along an axis
        (split), or channel chunks whose widths are inferred from where they are used."""
        if id(unpack) in self.unpacked:
            return self.unpacked[id(unpack)]
        graph, count, expr = self.graph, len(unpack.targets), unpack.expr
        if isinstance(expr, ast.Call) and expr.func in ("unstack", "split"):
            keywords = self._keywords(expr, {"along": "axis"} if expr.func == "split" else {})
            if len(expr.args) != 1:
                raise ArityError(f"`{expr.func}` takes one argument", expr.span)
            value = self._expr(expr.args[0])
            if expr.func == "split" and keywords["along"] in ("C", "stack"):
                hint = ("name the channel chunks directly: `a, b = expr`" if keywords["along"] == "C"
                        else "`a, b = unstack(…)` takes a stack apart")
                raise TypeMismatchError(f"`split` cuts a map along T, H or W, not {keywords['along']}", expr.span,
                                        hint=hint)
            op, attrs = ("unstack", {}) if expr.func == "unstack" else ("split_along", {"axis": keywords["along"]})
            parts = [graph.add_op(op, [value], span=unpack.span, index=i, count=count, **attrs)
                     for i in range(count)]
            for part in parts:
                self.channels.same(part, value, unpack.span, f"`{span_text(expr.span)}`")
        else:
            value = self._expr(expr)
            parts = [graph.add_op("slice", [value], span=unpack.span, start=None, stop=None) for _ in range(count)]
            names = ", ".join(t.text for t in unpack.targets)
            self.channels.split(value, parts, unpack.span, f"`{names}`")
            self.channel_splits.append((value, parts))
        self.unpacked[id(unpack)] = parts
        return parts

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
        routing = self._routing(expr.right)
        if decl.type.shares:
            return self._multi_kernel_conv(expr, decl, routing)
        if routing is not None:
            raise TypeMismatchError(f"`{symbol}` has one kernel, so it reads one input, not one per kernel",
                                    expr.right.span, related=[Note(f"`{symbol}` is declared here", decl.span)],
                                    hint="declare it multi-kernel: `conv {3×3: …, 5×5: …}`")
        weight = self._weight(expr.left, decl)
        operand = self._expr(expr.right)
        return self._conv_node(expr, symbol, weight, operand, decl)

    def _conv_node(self, expr: ast.Node, symbol: str, weight: str, operand: str, decl: ast.WeightDecl) -> str:
        info = self.graph[weight]
        node = self.graph.add_op("conv", [operand, weight], span=expr.span, kernel=info["kernel"])
        self.channels.same(node, (symbol, "out"), expr.span, f"`{symbol}` is used in convs of different widths")
        self.channels.same(operand, (symbol, "in"), expr.span, f"`{symbol}` is applied to inputs of different widths")
        if decl.type.out is not None and not decl.type.shares:  # a multi-kernel conv's: see _multi_kernel_conv
            out = evaluate(decl.type.out, self.graph.params, f"the output channels of `{symbol}`")
            self.channels.known((symbol, "out"), out, decl.type.span, f"`{symbol}` is declared with {out} outputs")
        return node

    def _routing(self, expr: ast.Expr) -> Optional[ast.PerKernel]:
        """The `{3×3: a, 5×5: b}` that `expr` is or names, if it is one."""
        if isinstance(expr, ast.PerKernel):
            return expr
        if isinstance(expr, ast.Ref) and _key(expr) in self.equations:
            definition = self.equations[_key(expr)]
            if isinstance(definition, ast.Equation) and isinstance(definition.expr, ast.PerKernel):
                self.lowered.setdefault(_key(expr), "")  # used: no "never used" warning
                return definition.expr
        return None

    def _multi_kernel_conv(self, expr: ast.Binary, decl: ast.WeightDecl, routing: Optional[ast.PerKernel]) -> str:
        """`W ⋆ x` with `W : conv {3×3: a, 5×5: b}`: a conv per kernel size (weights `W.3x3`,
        `W.5x5`), concatenated on channels in the declared order."""
        symbol, params = expr.left.name, self.graph.params
        self.weight_decl_used.add(id(decl))
        kernels = [tuple(evaluate(d, params, f"a kernel size of `{symbol}`") for d in share.kernel)
                   for share in decl.type.shares]
        for index, kernel in enumerate(kernels):
            if kernel in kernels[:index]:
                raise RedefinitionError(f"`{symbol}` lists its {'×'.join(map(str, kernel))} kernel twice",
                                        decl.type.shares[index].span,
                                        hint="give each kernel size one share of the output channels: "
                                             "`conv {3×3: C/2, 5×5: C/2}`")
        reads: dict[tuple[int, ...], ast.Expr] = {}
        if routing is not None:
            for entry in routing.entries:
                kernel = tuple(evaluate(d, params, "a kernel size") for d in entry.kernel)
                if kernel in reads:
                    raise RedefinitionError(f"this says twice what the {'×'.join(map(str, kernel))} kernel of "
                                            f"`{symbol}` reads", entry.span,
                                            hint="one entry per kernel: `{3×3: a, 5×5: b}`")
                if kernel not in kernels:
                    listed = ", ".join("×".join(map(str, k)) for k in kernels)
                    raise TypeMismatchError(f"`{symbol}` has no {'×'.join(map(str, kernel))} kernel", entry.span,
                                            related=[Note(f"`{symbol}` is declared here", decl.span)],
                                            hint=f"its kernels: {listed}")
                reads[kernel] = entry.expr
            missing = [k for k in kernels if k not in reads]
            if missing:
                raise TypeMismatchError(f"nothing says what the {'×'.join(map(str, missing[0]))} kernel of "
                                        f"`{symbol}` reads", routing.span,
                                        related=[Note(f"`{symbol}` is declared here", decl.span)],
                                        hint=f"add `{'×'.join(map(str, missing[0]))}: …` to the `{{…}}`: one "
                                             "entry per kernel")
        parts = []
        for share, kernel in zip(decl.type.shares, kernels):
            part_symbol = f"{symbol}.{'x'.join(map(str, kernel))}"
            weight = self._weight(ast.Ref(name=part_symbol, span=expr.left.span), decl, kernel=kernel)
            operand = self._expr(reads.get(kernel, expr.right))
            node = self._conv_node(expr, part_symbol, weight, operand, decl)
            channels = evaluate(share.channels, params, f"the {'×'.join(map(str, kernel))} share of `{symbol}`")
            self.channels.known(node, channels, share.span, f"`{symbol}` gives its {'×'.join(map(str, kernel))} "
                                                            f"kernel {channels} channels")
            parts.append(node)
        node = self.graph.add_op("concat", parts, span=expr.span)
        if decl.type.out is not None:  # `conv {3×3: 4, 5×5: 4} -> 8`: the shares' total, said again
            out = evaluate(decl.type.out, params, f"the output channels of `{symbol}`")
            total = sum(evaluate(share.channels, params, "a share") for share in decl.type.shares)
            if out != total:
                raise ChannelMismatchError(f"`{symbol}` is declared with {out} outputs, but its kernels' shares add "
                                           f"up to {total}", decl.type.out.span or decl.type.span,
                                           hint="the shares fix a multi-kernel conv's outputs: drop `-> …`, or "
                                                "make them add up")
        self.channels.total(node, parts, expr.span, f"`{span_text(expr.span)}`")
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
            if self._routing(ref) is not None:
                raise TypeMismatchError(f"`{key}` says what each kernel of a multi-kernel conv reads, so it can only "
                                        "stand on the right of `⋆`", ref.span,
                                        related=[Note(f"`{key}` is defined here", self.equations[key].span)],
                                        hint=f"convolve it with a multi-kernel weight: `W ⋆ {key}`")
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
            raise UnknownSymbolError(f"unknown symbol `{ref.name}`{_as_written(ref)}", ref.span,
                                     hint=self._suggest(ref.name))
        if isinstance(decl.type, ast.ConvType):
            raise TypeMismatchError(f"`{ref.name}` is a conv weight, not a tensor: it can only be applied with `⋆`",
                                    ref.span, hint=f"convolve something with it: `{ref.name} ⋆ …` (ASCII `*`)",
                                    related=[Note(f"`{ref.name}` is declared a conv weight here", decl.span)])
        if isinstance(decl.type, ast.NormType):
            raise TypeMismatchError(f"`{ref.name}` is a LayerNorm: apply it by calling it, `{ref.name}(…)`", ref.span,
                                    related=[Note(f"`{ref.name}` is declared here", decl.span)])
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
        best, best_len, best_pattern = None, (-float("inf"),), None  # level 2+: a grandparent's
        for decl in self.spec.weights:
            for pattern in decl.patterns:
                if pattern.matches(ref.name):
                    # a variant's own declarations first, then exact names, then the longest glob
                    strength = (-decl.level, 10**6 if not pattern.is_glob else len(pattern.text))
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

    def _weight(self, ref: ast.Ref, decl: ast.WeightDecl, kernel: Optional[tuple[int, ...]] = None,
                part: Optional[str] = None) -> str:
        """The node of a weight symbol: one per symbol, so the same name is the same weight.
        `kernel` picks one kernel of a multi-kernel conv; `part` one tensor of a LayerNorm."""
        symbol = ref.name
        self.weight_decl_used.add(id(decl))
        if symbol in self.weight_nodes:
            return self.weight_nodes[symbol]
        params, kind = self.graph.params, decl.type
        if part is not None:
            node = self.graph.add("weight", name=symbol, span=ref.span, weight_kind=part, decl_span=decl.span)
        elif isinstance(kind, ast.ConvType):
            if kernel is None:
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
            node = self._lower_equation(key)
            graph.next_state[name] = node
            self.channels.same(node, graph.state_nodes[name], self.equations[key].span,
                               f"`{key}` is the next value of state `{name}`", sides=(f"`{key}`", f"`{name}`"))
        outputs = self.spec.of_type(ast.OutputDecl)
        if len(outputs) > 1:
            raise RedefinitionError(f"cell {self.spec.name} declares its output twice", outputs[1].span,
                                    related=[Note("its first `output`", outputs[0].span)],
                                    hint="a cell has one output; the others leave the step as states")
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
        convs = graph.ops("conv")
        dims = {len(graph[n]["kernel"]) for n in convs}
        if len(dims) > 1:
            first = convs[0]
            other = next(n for n in convs if len(graph[n]["kernel"]) != len(graph[first]["kernel"]))
            raise ShapeError("the cell mixes 2D and 3D convs", self._conv_span(other),
                             related=[Note(f"{_conv_words(graph, first)}", self._conv_span(first)),
                                      Note(f"and {_conv_words(graph, other)}", self._conv_span(other))],
                             hint="a cell's maps are all NCHW (2D kernels, `3×3`) or all NCTHW (3D kernels, "
                                  "`2×5×5`)")
        graph.spatial_dims = dims.pop() if dims else (3 if graph.input_windows else 2)
        if graph.spatial_dims == 2 and graph.input_windows:
            name = next(iter(graph.input_windows))
            raise ShapeError(f"input `{name}` reads a window of {graph.input_windows[name]} frames (NCTHW), but "
                             "this cell's convs are 2D", self.declared[name].span,
                             related=[Note(f"{_conv_words(graph, convs[0])}", self._conv_span(convs[0]))],
                             hint="drop the `window`, or give the convs 3D kernels (`conv 2×5×5`)")
        for node, kind in self.norms:
            # `layernorm [C, H, W]` covers the channels when it spans every axis of a map
            data = graph[node]
            if data["mode"] == "shape" and len(data["shape"]) == 1 + graph.spatial_dims:
                solver.known(node, data["shape"][0], kind.span,
                             f"`{data['symbol']}` is declared with shape {list(data['shape'])}",
                             sides=("the value it normalises", "its shape"))
        solver.solve()
        for node, data in graph.nx.nodes(data=True):
            if data["kind"] == "const" or data.get("broadcast"):
                continue
            if data["kind"] == "weight" and data["weight_kind"] in ("conv", "norm_gain", "norm_bias"):
                continue
            channels = solver.value(node)
            if channels is None:
                what = f"`{span_text(data['span'])}`" if data.get("span") else "a value"
                raise ShapeError(f"cannot infer how many channels {what} has", data.get("span"),
                                 hint="a conv's output channels come from where its result goes; make it meet "
                                      "a state, an input or a declared weight, or declare them: `conv 1×1 -> C`")
            data["channels"] = channels
        self._check_shared_norms()
        for value, parts in self.channel_splits:
            start = 0
            for part in parts:
                graph[part]["start"], graph[part]["stop"] = start, start + graph[part]["channels"]
                start += graph[part]["channels"]
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
            elif data["weight_kind"] in ("norm_gain", "norm_bias"):
                norm = graph[graph.users(node)[0]]
                shape = norm["shape"] or (norm["channels"],)
                data["shape"] = shape
                info = WeightInfo(symbol, data["weight_kind"], shape)
            else:
                info = WeightInfo(symbol, "elementwise", data["shape"])
            graph.weights[symbol] = info
        graph.weights = dict(sorted(graph.weights.items(), key=lambda item: creation_order(self.weight_nodes[item[0]])))

    def _check_shared_norms(self) -> None:
        """A LayerNorm symbol applied twice is one gain and bias: both values need its width."""
        first: dict[str, str] = {}
        for node, kind in self.norms:
            data = self.graph[node]
            if data["mode"] == "shape":  # its gain and bias have the declared shape
                continue
            symbol = data["symbol"]
            if symbol not in first:
                first[symbol] = node
                continue
            earlier = self.graph[first[symbol]]
            if earlier["channels"] != data["channels"]:
                raise ChannelMismatchError(
                    f"`{symbol}` normalises values of {earlier['channels']} and {data['channels']} channels, but it "
                    "has one gain and one bias", self.expr_spans.get(node) or data["span"],
                    related=[Note(f"{earlier['channels']} channels here", self.expr_spans.get(first[symbol]) or
                                  earlier["span"])],
                    hint=f"give each its own LayerNorm: `{symbol}_a, {symbol}_b : layernorm`")

    def _conv_span(self, node: str) -> Optional[Span]:
        """Where a conv's kernel size is said: its weight's declaration."""
        weight = self.graph.operands(node)[1]
        return self.graph[weight].get("decl_span") or self.graph[node].get("span")

    def _warn_unused(self) -> None:
        graph = self.graph
        live = set(graph.results())
        for result in graph.results():
            live |= nx.ancestors(graph.nx, result)
        for key, node in self.lowered.items():
            if getattr(self.equations[key], "borrowed", False) or not node:
                continue
            if node not in live:
                warnings.warn(CellgenWarning(f"`{key}` is computed but never used", self.equations[key].span,
                                             hint="use it, or delete its equation"), stacklevel=4)
        for name, node in graph.inputs.items():
            if node not in live:
                warnings.warn(CellgenWarning(f"input `{name}` is never used", graph[node]["span"]), stacklevel=4)
        for decl in self.spec.weights:
            if id(decl) not in self.weight_decl_used and not decl.borrowed:
                names = ", ".join(p.text for p in decl.patterns)
                warnings.warn(CellgenWarning(f"weight declaration `{names}` matches no symbol in any equation",
                                             decl.span, hint="delete it, or check the names in the equations"),
                              stacklevel=4)
        graph.remove_dead()


# How each structural function is called, for a call with the wrong number of arguments.
_USAGE = {"softmax": "e.g. `softmax(e, over=stack)`", "sum": "e.g. `sum(e, over=stack)`",
          "stack": "e.g. `stack(h, c)`", "cat": "e.g. `cat(a, b, along=W)`",
          "attention": "attention(queries, keys, values), e.g. `attention(r, C, C)` or "
                       "`attention(q, k, v, patches=s)`"}


_MAP_AXES = ("C", "T", "H", "W")  # what a LayerNorm may normalise over


def _axis_hint(written: str, axes=AXES) -> Optional[str]:
    """`did you mean `W`?` for `w`, and `did you mean `stack`?` for `stak`."""
    by_lower = {axis.lower(): axis for axis in axes}
    if written.lower() in by_lower:
        return f"did you mean `{by_lower[written.lower()]}`?"
    return did_you_mean(written, axes)


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


def _as_written(ref: ast.Ref) -> str:
    """` (`Y_s` with s = 4)` for `Y_4`, a loop's name as the user wrote it; else nothing."""
    written = span_text(ref.span) if ref.span else ref.text
    found = re.fullmatch(r"(.*)_([^\W\d]\w*)", written)
    if written == ref.text or not found or not ref.name.startswith(found.group(1) + "_"):
        return ""
    return f" (`{written}` with {found.group(2)} = {ref.name[len(found.group(1)) + 1:]})"


def _word_span(span: Optional[Span], word: str, after: str = "") -> Optional[Span]:
    """The span of `word` (a whole word) in the first line of `span`, after the word `after`:
    the `Q` of `layernorm over (C, Q)`, whose declaration keeps only the text."""
    if span is None:
        return None
    line = span.source.line(span.line)
    start = span.column - 1
    if after:
        found = re.compile(rf"\b{re.escape(after)}\b").search(line, start)
        if not found:
            return None
        start = found.end()
    found = re.compile(rf"(?<!\w){re.escape(word)}(?!\w)").search(line, start)
    if not found:
        return None
    return Span(span.source, span.line, found.start() + 1, span.line, found.end() + 1)


def _conv_words(graph: CellGraph, node: str) -> str:
    weight = graph[graph.operands(node)[1]]
    kernel = graph[node]["kernel"]
    return f"`{weight['name']}` has a {len(kernel)}D kernel, {'×'.join(map(str, kernel))}"


def _type_word(kind: ast.WeightType) -> str:
    return {ast.ConvType: "conv", ast.BiasType: "bias", ast.ElementwiseType: "elementwise",
            ast.NormType: "layernorm"}[type(kind)]
