"""Declarations and symbols: what each name of a spec is (a param, an input, a state, a weight or an
equation's value), claimed once, and the node a reference to it stands for."""
from __future__ import annotations

from typing import Optional

from cellgen.errors import (CellgenError, Note, RedefinitionError, StateNotUpdatedError, TypeMismatchError,
                            UnknownSymbolError, did_you_mean)
from cellgen.ir.graph import StateInfo
from cellgen.ir.lowering.messages import article, as_written, key_of, prime_hint, type_word
from cellgen.ir.params import evaluate
from cellgen.language import syntax as ast


class Declarations:
    # --- declarations -----------------------------------------------------------------------
    def _claim(self, name: str, decl: ast.Node, what: str) -> None:
        if name in self.declared:
            first, first_what = self.declared[name], self.kinds[name]
            again = "again" if what == first_what else f"again as {article(what)}"
            raise RedefinitionError(f"`{name}` is declared twice: as {article(first_what)}, then {again}", decl.span,
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
            if tensor.zeros:
                raise TypeMismatchError(f"input `{tensor.name}`: `init zeros` is said of a state's history; an "
                                        "input's always starts as zero maps", tensor.span,
                                        hint=f"drop `init zeros`: `input {tensor.name}[…] history …`")
            if tensor.history is not None:
                self.graph.input_histories[tensor.name] = self._history_length(tensor, "input")
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
            if tensor.history is not None:
                if not tensor.zeros:
                    raise TypeMismatchError(f"state `{tensor.name}` declares a history without saying how it "
                                            "starts", tensor.history.span or tensor.span,
                                            hint=f"`history τ init zeros` (τ entries from the first step, zeros "
                                                 f"before `{tensor.name}`), or drop it: `{tensor.name}[t-τ:t-1]` "
                                                 "alone grows from one entry")
                self.graph.states[tensor.name].zeros = self._history_length(tensor, "state")
            self.graph.state_nodes[tensor.name] = node
            self.channels.known(node, channels, tensor.span, f"state `{tensor.name}` is declared with {channels}")
        for decl in self.weight_decls:
            for pattern in decl.patterns:
                if not pattern.is_glob:
                    # a variant may declare again a weight its parent declares: its own wins
                    if self.claimed_level.get(pattern.text, decl.level) != decl.level:
                        continue
                    self._claim(pattern.text, pattern, "weight")
                    self.claimed_level[pattern.text] = decl.level

    def _history_length(self, tensor: ast.TensorDecl, what: str) -> int:
        bound = tensor.history
        if isinstance(bound, ast.DimName) and self.graph.params.get(bound.name, 0) is None:
            raise TypeMismatchError(f"{what} `{tensor.name}` has a history of `none` entries, but a history that "
                                    "starts full needs a length", bound.span or tensor.span,
                                    hint=f"give `{bound.name}` a value: `-p {bound.name}=5`")
        size = evaluate(bound, self.graph.params, f"the history of {what} `{tensor.name}`")
        if size < 1:
            raise TypeMismatchError(f"{what} `{tensor.name}` has a history of {size} entries", bound.span or tensor.span,
                                    hint="a history holds at least one")
        return size

    def _collect_equations(self) -> None:
        for equation in self.spec.definitions:
            targets = [equation.target] if isinstance(equation, ast.Equation) else equation.targets
            for index, target in enumerate(targets):
                if target.name == ast.DISCARD:
                    self._discard(equation, target)
                    continue
                self._collect(equation, target)
                self.part_index[key_of(target)] = index

    def _discard(self, equation, target: ast.Ref) -> None:
        """`_` stands for a chunk an unpack throws away; it names nothing, so it can be neither
        a whole equation's target nor a next value."""
        if target.prime:
            raise TypeMismatchError("`_'`: `_` discards a chunk, so it has no next value", target.span,
                                    hint="write `_` among an unpack's targets, or name a state: `c' = …`")
        if isinstance(equation, ast.Equation):
            raise TypeMismatchError("`_ = …` computes a value only to throw it away", target.span,
                                    hint="`_` discards a chunk among several: `i, _, g, _ = W ⋆ x`; "
                                         "remove this equation, or name its value")
        if all(t.discards for t in equation.targets):
            raise TypeMismatchError("every target of this unpack is `_`: it computes nothing kept", equation.span,
                                    hint="name at least one chunk: `i, _ = W ⋆ x`")

    def _collect(self, equation, target: ast.Ref) -> None:
        key = key_of(target)
        if target.prime and target.name not in self.graph.states:
            raise TypeMismatchError(f"`{key}`: only a state has a next value, and `{target.name}` is not a state",
                                    target.span, hint=f"declare it (`state {target.name}[…]`), or "
                                                      + prime_hint(target.name))
        if not target.prime and target.name in self.declared:
            first, what = self.declared[target.name], self.kinds[target.name]
            hint = (f"an equation defines a state's next value: write `{target.name}' = …`"
                    if what == "state" else f"rename the equation's `{target.name}`, or the {what}")
            raise RedefinitionError(f"`{target.name}` is declared as {article(what)}, so an equation cannot define it",
                                    target.span, hint=hint,
                                    related=[Note(f"`{target.name}` is declared here", first.span)])
        if key in self.equations:
            raise RedefinitionError(f"`{key}` is defined twice", equation.span,
                                    related=[Note(f"first definition of `{key}`", self.equations[key].span)])
        self.equations[key] = equation


    # --- names ------------------------------------------------------------------------------
    def _tensor_ref(self, ref: ast.Ref) -> str:
        key = key_of(ref)
        if ref.prime:
            if ref.name not in self.graph.states:
                raise TypeMismatchError(f"`{key}`: only a state has a next value, and `{ref.name}` is not a state",
                                        ref.span, hint=prime_hint(ref.name))
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
        if decl is None and ref.discards:
            raise TypeMismatchError("`_` discards a chunk of an unpack: it has no value to read", ref.span,
                                    hint="give the chunk a name in its unpack (`i, g = W ⋆ x`) to use it")
        if decl is None:
            raise UnknownSymbolError(f"unknown symbol `{ref.name}`{as_written(ref)}", ref.span,
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
            key = key_of(expr)
            if key in self.equations:
                return "computed by an equation", [Note(f"`{key}` is defined here", self.equations[key].span)]
            if expr.prime:
                return "a next value", []
            if expr.name in self.kinds:
                what = self.kinds[expr.name]
                return article(what), [Note(f"`{expr.name}` is declared here", self.declared[expr.name].span)]
            decl = self._weight_decl(expr)
            if decl is not None:
                return f"a `{type_word(decl.type)}` weight", [Note(f"`{expr.name}` is declared here", decl.span)]
            raise UnknownSymbolError(f"unknown symbol `{expr.name}`", expr.span, hint=self._suggest(expr.name))
        return "an expression, not a name", []

    def _suggest(self, name: str) -> Optional[str]:
        known = [*self.equations, *self.graph.inputs, *self.graph.state_nodes, *self.graph.params,
                 *(p.text for d in self.weight_decls for p in d.patterns if not p.is_glob),
                 *self.weight_nodes]
        return did_you_mean(name, known)

    def _weight_decl(self, ref: ast.Ref) -> Optional[ast.WeightDecl]:
        """The declaration covering a weight symbol: its exact name, else the longest glob."""
        if ref.prime or key_of(ref) in self.equations:
            return None
        if ref.name in self.weight_decl_of:  # a symbol is met once per use: scan the declarations once
            return self.weight_decl_of[ref.name]
        best, best_len, best_pattern = None, (-float("inf"),), None  # level 2+: a grandparent's
        for decl in self.weight_decls:
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
        self.weight_decl_of[ref.name] = best
        return best

