"""Expressions → nodes: one node per operation of an equation, channels constrained as the op's
registry entry says (elementwise: equal); structural functions, norms, histories, unpacks and convs."""
from __future__ import annotations

import math
import operator
from typing import Optional

from cellgen.errors import (ArityError, ChannelMismatchError, CyclicDefinitionError, Note, RedefinitionError,
                            TypeMismatchError, UnknownFunctionError, UnknownSymbolError, did_you_mean, span_text)
from cellgen.ir.analysis import AXES
from cellgen.ir.lowering.messages import (MAP_AXES, USAGE, axis_hint, key_of, name_span, operand_texts, type_word,
                                          word_span, written_function)
from cellgen.ir.ops import BINARY_OPS, FUNCTIONS, OPS, STRUCTURAL_FUNCTIONS, TOKEN_LAYOUTS
from cellgen.ir.params import evaluate
from cellgen.language import syntax as ast


# The binary operators between numbers and params, folded at lowering: `*` parses as a conv (`⋆`),
# which between params multiplies.
_PARAM_ARITHMETIC = {"add": operator.add, "sub": operator.sub, "hadamard": operator.mul, "conv": operator.mul,
                     "div": operator.truediv}


class Expressions:
    # --- equations --------------------------------------------------------------------------
    def _lower_equation(self, key: str) -> str:
        if key in self.lowered:
            return self.lowered[key]
        equation = self.equations[key]
        if key in self.in_progress:
            stack = list(self.in_progress)
            cycle = stack[stack.index(key):] + [key]
            notes = [Note(f"`{step}` uses `{after}` here", self.equations[step].span)
                     for step, after in zip(cycle[1:-1], cycle[2:])]
            raise CyclicDefinitionError(f"`{key}` depends on itself: {' → '.join(cycle)}", equation.span,
                                        related=notes,
                                        hint="a value at t may only depend on states at t-1 (`c`) and values "
                                             "defined without going through itself")
        self.in_progress[key] = None
        if isinstance(equation, ast.Unpack):
            node = self._unpack(equation)[self.part_index[key]]
        elif isinstance(equation.expr, ast.PerKernel):
            raise TypeMismatchError(f"`{key}` says what each kernel of a multi-kernel conv reads, so it can only "
                                    "stand on the right of `⋆`", equation.span,
                                    hint=f"write `W ⋆ {key}` with a weight declared `conv {{3×3: …, 5×5: …}}`")
        else:
            node = self._expr(equation.expr)
        del self.in_progress[key]
        if self.graph[node]["name"] is None and self.graph[node]["kind"] == "op":
            self.graph[node]["name"] = key
            self.expr_spans[node] = self.graph[node]["span"]
            self.graph[node]["span"] = equation.span
        self.lowered[key] = node
        self.graph.provenance[key] = node
        return node

    def _expr(self, expr: ast.Expr) -> str:
        graph = self.graph
        if isinstance(expr, ast.Number):
            return graph.add("const", name=None, value=expr.value, span=expr.span)
        if isinstance(expr, (ast.Ref, ast.Binary, ast.Call, ast.Neg)):
            value = self._constant(expr)
            if value is not None:
                return graph.add("const", name=None, value=value, span=expr.span)
        if isinstance(expr, ast.Ref):
            return self._tensor_ref(expr)
        if isinstance(expr, ast.Neg):
            return self._op("neg", [self._expr(expr.operand)], expr)
        if isinstance(expr, ast.Scale):
            return self._op("mul", [self._expr(expr.factor), self._expr(expr.operand)], expr)
        if isinstance(expr, ast.Concat):
            parts = [self._expr(item) for item in expr.items]
            node = graph.add_op("concat", parts, span=expr.span)
            self._constrain(node, parts, expr.span)
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

    def _constant(self, expr: ast.Expr) -> Optional[float]:
        """The value of an expression of numbers and params alone, folded at lowering
        (`1/sqrt(hidden*height*width)`, MAU's scale; `*` between params multiplies), else None.
        Memoised by node, so that a deep expression is visited once."""
        key = id(expr)
        if key not in self.constants:
            self.constants[key] = self._fold(expr)
        return self.constants[key]

    def _fold(self, expr: ast.Expr) -> Optional[float]:
        if isinstance(expr, ast.Number):
            return float(expr.value)
        if isinstance(expr, ast.Ref):
            if expr.prime or expr.name not in self.graph.params or key_of(expr) in self.equations:
                return None
            value = self.graph.params[expr.name]
            if value is None:
                raise TypeMismatchError(f"param `{expr.name}` is `none` here, so it has no value to compute with",
                                        expr.span, hint=f"give it a value: `-p {expr.name}=…`")
            return float(value)
        if isinstance(expr, ast.Neg):
            value = self._constant(expr.operand)
            return None if value is None else -value
        if isinstance(expr, ast.Binary):
            left = self._constant(expr.left)
            right = self._constant(expr.right) if left is not None else None
            if left is None or right is None:
                return None
            if expr.op == "div" and right == 0:
                raise TypeMismatchError("this divides by zero", expr.span, hint="check the params it is made of")
            return _PARAM_ARITHMETIC[expr.op](left, right)
        if isinstance(expr, ast.Call) and expr.func == "sqrt" and len(expr.args) == 1 and not expr.kwargs:
            value = self._constant(expr.args[0])
            if value is not None and value < 0:
                raise TypeMismatchError(f"`{span_text(expr.span)}` is the square root of {value:g}, a negative "
                                        "number", expr.span, hint="check the params it is made of")
            return None if value is None else math.sqrt(value)
        return None

    def _op(self, op: str, operands: list[str], expr: ast.Node) -> str:
        """An elementwise op of a spec's expression (an operator or a function)."""
        node = self.graph.add_op(op, operands, span=expr.span)
        self._constrain(node, operands, expr.span, operand_texts(expr))
        return node

    def _constrain(self, node: str, operands: list[str], span, written=()) -> None:
        """The channel constraints of an op's node, as its registry entry says."""
        OPS[self.graph[node]["op"]].channels(self.channels, self.graph, node, operands, span,
                                             f"`{span_text(span)}`", written)

    def _call(self, call: ast.Call) -> str:
        norm = self._weight_decl(ast.Ref(name=call.func, span=call.span))
        if norm is not None and isinstance(norm.type, ast.NormType):
            return self._norm(call, norm)
        if call.func in STRUCTURAL_FUNCTIONS:
            return self._structural(call)
        function = FUNCTIONS.get(call.func)
        written = written_function(call)
        if function is not None and call.kwargs:
            raise ArityError(f"`{written}` takes no named arguments", call.kwargs[0].span)
        if function is None:
            known = [*FUNCTIONS, *STRUCTURAL_FUNCTIONS]
            hint = did_you_mean(call.func, known) or f"known functions: {', '.join(sorted(known))}"
            raise UnknownFunctionError(f"unknown function `{written}`", name_span(call), hint=hint)
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
                             f"but {len(call.args)} {were} given", call.span, hint=USAGE.get(call.func))
        operands = [self._expr(arg) for arg in call.args]
        graph = self.graph
        if call.func in ("sum", "mean"):  # over map axes kept at size 1, over the stack gone (docs/reductions.md)
            node = graph.add_op("reduce", operands, span=call.span, how=call.func, axes=keywords["over"])
        elif call.func == "softmax":
            node = graph.add_op(call.func, operands, span=call.span, axis=keywords["over"])
            if keywords["over"] == "C":
                raise TypeMismatchError(f"`{call.func}` over channels is not supported", call.kwargs[0].span,
                                        hint="over=stack (a history or stack()), T, H or W")
        elif call.func == "stack":
            node = graph.add_op("stack", operands, span=call.span)
        elif call.func == "cat" and keywords["along"] == "C" and len(operands) == 1:
            node = graph.add_op("cat_entries", operands, span=call.span)
        elif call.func == "cat":
            axis = keywords["along"]
            if len(operands) == 1:
                raise ArityError(f"`cat` along {axis} joins two or more maps, but 1 was given", call.span,
                                 hint="`cat(s, along=C)` joins the entries of one stack on channels")
            if axis in ("C", "stack"):
                hint = "[a, b] concatenates channels" if axis == "C" else "stack(a, b) makes a stack"
                raise TypeMismatchError(f"`cat` joins maps along T, H or W, not {axis}", call.span, hint=hint)
            node = graph.add_op("cat_along", operands, span=call.span, axis=axis)
        else:  # attention
            tokens = {"tokens": "reshape"} if keywords.get("tokens") == "reshape" else {}
            node = graph.add_op("attention", operands, span=call.span, patches=keywords.get("patches", 1), **tokens)
        self._constrain(node, operands, call.span)
        return node

    def _axes(self, call: ast.Call, keyword: ast.KeywordArg) -> tuple[str, ...]:
        """`over=C` or `over=(C, H, W)`: map axes each once, or the stack alone."""
        value = keyword.value
        if isinstance(value, ast.Axes):
            for index, name in enumerate(value.names):
                if name not in AXES:
                    raise TypeMismatchError(f"`{keyword.name}=` takes axes: {', '.join(AXES)}, not `{name}`",
                                            word_span(value.span, name) or value.span,
                                            hint=axis_hint(name) or "e.g. `over=(C, H, W)`")
                if name in value.names[:index]:
                    raise TypeMismatchError(f"`{keyword.name}=` lists the axis `{name}` twice", value.span,
                                            hint="name each axis once: `over=(C, H, W)`")
            if "stack" in value.names:
                raise TypeMismatchError(f"`{call.func}` over the stack and map axes at once is not supported",
                                        value.span, hint=f"reduce in two steps: `{call.func}({call.func}(e, "
                                                         f"over=stack), over=(…))`")
            return tuple(value.names)
        return (self._keywords(call, {keyword.name: "axis"})[keyword.name],)

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
            if kind == "axes":
                values[keyword.name] = self._axes(call, keyword)
                continue
            if isinstance(value, ast.Axes):
                raise TypeMismatchError(f"`{keyword.name}=` of `{call.func}` takes one value, not several",
                                        value.span, hint=USAGE.get(call.func))
            if kind == "axis":
                if not (isinstance(value, ast.Ref) and not value.prime and value.name in AXES):
                    raise TypeMismatchError(f"`{keyword.name}=` takes an axis: {', '.join(AXES)}", value.span,
                                            hint=axis_hint(span_text(value.span)) if value.span else None)
                values[keyword.name] = value.name
            elif kind == "tokens":
                values[keyword.name] = self._token_layout(value)
            else:
                values[keyword.name] = self._whole_number(value, f"`{keyword.name}=`")
        for name, kind in allowed.items():
            if kind in ("axis", "axes") and name not in values:
                raise ArityError(f"`{call.func}` needs `{name}=`: which axis", call.span,
                                 hint=f"e.g. `{call.func}(…, {name}={'stack' if name == 'over' else 'W'})`")
        return values

    def _token_layout(self, value: ast.Expr) -> str:
        """`tokens=positions` (the default) or `tokens=reshape` (OpenSTL's E3D RECALL)."""
        if isinstance(value, ast.Ref) and not value.prime and value.name in TOKEN_LAYOUTS:
            return value.name
        written = span_text(value.span)
        raise TypeMismatchError(f"`tokens=` takes a token layout: {', '.join(TOKEN_LAYOUTS)}, not `{written}`",
                                value.span, hint=did_you_mean(written, TOKEN_LAYOUTS) or
                                "`tokens=positions`: a token per position; `tokens=reshape`: OpenSTL's (B, −1, C)")

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
            if not expr.prime and key_of(expr) not in self.equations and expr.name not in self.kinds \
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
                                        word_span(decl.type.span, axis, after="over") or decl.type.span,
                                        hint=axis_hint(axis, MAP_AXES) or "the axes are C, T, H and W")
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
        self._constrain(node, [operand], call.span)
        self.norms.append((node, kind))
        return node

    def _history(self, expr: ast.History) -> str:
        """`c[t-τ:t-1]`: the last τ values of state c, one node per (state, τ)."""
        graph = self.graph
        if expr.state in graph.input_histories:
            return self._input_history(expr)
        if expr.state not in graph.states:
            what, where = self._describe(ast.Ref(name=expr.state, span=expr.span))
            kind = self.kinds.get(expr.state)
            hint = (f"declare its history to keep its past values: `input {expr.state}[C] history τ`; to read "
                    "several frames at each step, give it a window: `input x[C] window T`"
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
            if info.zeros is not None:  # `history τ init zeros`: τ entries kept, every read full
                self._within_declared(expr, size, info.zeros, f"state `{expr.state}`")
                info.history_size = info.zeros
                graph[node]["full"] = True
        return node

    def _within_declared(self, expr: ast.History, size: Optional[int], declared: int, what: str) -> None:
        if size is None or size > declared:
            raise TypeMismatchError(f"`{span_text(expr.span)}` reads {'every past value' if size is None else size} "
                                    f"of {what}, whose history is declared {declared} long", expr.span,
                                    related=[Note(f"{what} is declared here", self.declared[expr.state].span)],
                                    hint=f"read at most {declared}: `{expr.state}[t-{declared}:t-1]`")

    def _input_history(self, expr: ast.History) -> str:
        """`S[t-τ:t-1]` of an input declared `history τ`: its τ previous values, zero maps
        before the first step (always τ entries)."""
        graph = self.graph
        declared = graph.input_histories[expr.state]
        bound = expr.bound
        size = None if isinstance(bound, ast.DimName) and graph.params.get(bound.name, 0) is None else \
            evaluate(bound, graph.params, f"the length of `{span_text(expr.span)}`")
        self._within_declared(expr, size, declared, f"input `{expr.state}`")
        node = self.history_nodes.get((expr.state, size))
        if node is None:
            node = graph.add("history", name=f"{expr.state}[t-{size}:t-1]", state=expr.state, size=size,
                             span=expr.span, input=True, full=True)
            self.history_nodes[(expr.state, size)] = node
            self.channels.same(node, graph.inputs[expr.state], expr.span, f"the history of `{expr.state}`")
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
                OPS[op].channels(self.channels, graph, part, [value], unpack.span, f"`{span_text(expr.span)}`", ())
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
            raise TypeMismatchError(f"`{symbol}` is declared `{type_word(decl.type)}`, not `conv`", expr.left.span,
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
        geometry = {"geometry": info["geometry"]} if info.get("geometry") is not None else {}
        node = self.graph.add_op("conv", [operand, weight], span=expr.span, kernel=info["kernel"], **geometry)
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
        if isinstance(expr, ast.Ref) and key_of(expr) in self.equations:
            definition = self.equations[key_of(expr)]
            if isinstance(definition, ast.Equation) and isinstance(definition.expr, ast.PerKernel):
                self.lowered.setdefault(key_of(expr), "")  # used: no "never used" warning
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

