"""Weights: one node per weight symbol (the same name is the same weight), and each weight's shape
once channels are inferred."""
from __future__ import annotations

from typing import Optional

from cellgen.errors import ShapeError
from cellgen.ir.graph import WeightInfo, creation_order
from cellgen.ir.lowering.geometry import conv_geometry
from cellgen.ir.params import evaluate
from cellgen.language import syntax as ast


class Weights:
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
                                  decl_span=decl.span, geometry=conv_geometry(kind, kernel, params, symbol))
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

    def _weight_infos(self) -> None:
        """Each weight's shape, once channels are known: `graph.weights`, in spec order."""
        graph, solver = self.graph, self.channels
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
