"""Checks after the equations are lowered: every state updated, the outputs named once, channels inferred for
every value (and 2D and 3D convs not mixed), LayerNorms shared at one width, unused values warned of."""
from __future__ import annotations

import warnings
from typing import Optional

from cellgen.errors import (CellgenError, CellgenWarning, ChannelMismatchError, Note, RedefinitionError, ShapeError,
                            Span, StateNotUpdatedError, span_text)
from cellgen.ir.lowering.messages import article, conv_words
from cellgen.language import syntax as ast


class Checks:
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
                                    hint="name every output on one line, the first first: "
                                         f"`output {', '.join(r.text for o in outputs for r in o.refs)}`")
        declared = self.spec.output
        if declared is not None:
            graph.output = self._tensor_ref(declared.ref)
            graph.extra_outputs = self._extra_outputs(declared)
        elif "h" in graph.states:
            graph.output = graph.next_state["h"]
        else:
            raise CellgenError(f"cell {self.spec.name} does not say what it outputs", self.spec.span,
                               hint="declare `output NAME` (a state with no `output` line must be called `h`)")

    def _extra_outputs(self, declared: ast.OutputDecl) -> dict[str, str]:
        """`output h', delta_c, delta_m`: delta_c and delta_m by their written names, each named once."""
        extra: dict[str, str] = {}
        seen = {declared.refs[0].text: declared.refs[0]}
        for ref in declared.refs[1:]:
            if ref.text in seen:
                raise RedefinitionError(f"`{ref.text}` is output twice", ref.span,
                                        related=[Note(f"`{ref.text}` is already an output here",
                                                      seen[ref.text].span)],
                                        hint=f"name each output once: drop this `{ref.text}`")
            seen[ref.text] = ref
            extra[ref.text] = self._tensor_ref(ref)
        return extra

    def _infer_channels(self) -> None:
        graph, solver = self.graph, self.channels
        # in creation order (the graph's node order), which is the spec's; no sort needed
        convs = [n for n, data in graph.nx.nodes(data=True) if data["kind"] == "op" and data["op"] == "conv"]
        dims = {len(graph[n]["kernel"]) for n in convs}
        if len(dims) > 1:
            first = convs[0]
            other = next(n for n in convs if len(graph[n]["kernel"]) != len(graph[first]["kernel"]))
            raise ShapeError("the cell mixes 2D and 3D convs", self._conv_span(other),
                             related=[Note(f"{conv_words(graph, first)}", self._conv_span(first)),
                                      Note(f"and {conv_words(graph, other)}", self._conv_span(other))],
                             hint="a cell's maps are all NCHW (2D kernels, `3×3`) or all NCTHW (3D kernels, "
                                  "`2×5×5`)")
        graph.spatial_dims = dims.pop() if dims else (3 if graph.input_windows else 2)
        if graph.spatial_dims == 2 and graph.input_windows:
            name = next(iter(graph.input_windows))
            raise ShapeError(f"input `{name}` reads a window of {graph.input_windows[name]} frames (NCTHW), but "
                             "this cell's convs are 2D", self.declared[name].span,
                             related=[Note(f"{conv_words(graph, convs[0])}", self._conv_span(convs[0]))],
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
        self._weight_infos()

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
                    hint=f"give each its own LayerNorm: `{symbol}article, {symbol}_b : layernorm`")

    def _conv_span(self, node: str) -> Optional[Span]:
        """Where a conv's kernel size is said: its weight's declaration."""
        weight = self.graph.operands(node)[1]
        return self.graph[weight].get("decl_span") or self.graph[node].get("span")

    def _warn_unused(self) -> None:
        graph = self.graph
        live = graph.live()
        for key, node in self.lowered.items():
            if getattr(self.equations[key], "borrowed", False) or not node:
                continue
            if node not in live:
                warnings.warn(CellgenWarning(f"`{key}` is computed but never used", self.equations[key].span,
                                             hint="use it, or delete its equation"), stacklevel=4)
        for name, node in graph.inputs.items():
            if node not in live:
                warnings.warn(CellgenWarning(f"input `{name}` is never used", graph[node]["span"]), stacklevel=4)
        for decl in self.weight_decls:
            if id(decl) not in self.weight_decl_used and not decl.borrowed:
                names = ", ".join(p.text for p in decl.patterns)
                warnings.warn(CellgenWarning(f"weight declaration `{names}` matches no symbol in any equation",
                                             decl.span, hint="delete it, or check the names in the equations"),
                              stacklevel=4)
        graph.remove_dead()
        graph.provenance = {key: node for key, node in graph.provenance.items() if node in graph.nx}


# How each structural function is called, for a call with the wrong number of arguments.
