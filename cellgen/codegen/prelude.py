"""The weight prelude of a compiled step: what the step computes from its parameters alone.

A fused step starts by assembling its fused convs' weights (the gates' weights concatenated,
constant bias vectors such as the forget gates' +1). A rollout calls the step at every time
step with the same parameters, so that is the same work T times over.
`split_weight_prelude` cuts the step's fx graph in two: the prelude (the nodes that read no
placeholder) and the rest, which takes the prelude's results as its first argument.
`CellModule.weights_once()` runs the prelude at the first call of a block and hands its
results to every later call; gradients flow back through the concatenations once per block,
summed over the block's steps by autograd as for any tensor used several times.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Callable, Optional

from torch import fx


@dataclass(frozen=True)
class SplitStep:
    """prelude(module) → the prelude's results; step(module, prepared, *args) → the step's outputs."""

    prelude: Callable
    step: Callable


def split_weight_prelude(module: fx.GraphModule) -> Optional[SplitStep]:
    """The step of `module` cut into prelude and rest, or None when the prelude would only
    read parameters (nothing to compute once)."""
    graph = module.graph
    prelude: set[fx.Node] = set()
    for node in graph.nodes:
        if node.op == "get_attr" or (node.op in ("call_function", "call_method") and node.all_input_nodes
                                     and all(n in prelude for n in node.all_input_nodes)):
            prelude.add(node)
    results = [n for n in graph.nodes if n in prelude and n.op != "get_attr"
               and any(user not in prelude for user in n.users)]
    if not results:
        return None

    prelude_graph = fx.Graph()
    copied: dict[fx.Node, fx.Node] = {}
    for node in graph.nodes:
        if node in prelude:
            copied[node] = prelude_graph.node_copy(node, copied.__getitem__)
    prelude_graph.output(tuple(copied[n] for n in results))
    prelude_graph.eliminate_dead_code()

    step_graph = fx.Graph()
    prepared = step_graph.placeholder("prepared")
    inside: dict[fx.Node, fx.Node] = {}
    for node in graph.nodes:  # the step's own arguments after `prepared`, defaults kept
        if node.op == "placeholder":
            inside[node] = step_graph.node_copy(node, inside.__getitem__)
    for index, node in enumerate(results):
        inside[node] = step_graph.call_function(operator.getitem, (prepared, index))
    for node in graph.nodes:
        if node.op != "placeholder" and (node not in prelude or (
                node.op == "get_attr" and any(user not in prelude for user in node.users))):
            inside[node] = step_graph.node_copy(node, inside.__getitem__)
    step_graph.eliminate_dead_code()
    # GraphModule's generated forward reads parameters as `self.<name>`: called with the cell
    # itself as `self`, it reads the cell's own parameters at call time (no copies to go stale)
    return SplitStep(type(fx.GraphModule(module, prelude_graph)).forward,
                     type(fx.GraphModule(module, step_graph)).forward)
