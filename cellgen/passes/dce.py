"""Dead-code elimination: drop every op and constant that no result of the step depends on.

    before                          after
    a  = σ(W_a ⋆ x)                 h' = tanh(W_h ⋆ x)
    h' = tanh(W_h ⋆ x)

Rule:  node with no path to the output or a next state  →  removed
Guard: only ops and constants go; parameters stay (state_dict keys are the spec's symbols
at every opt level), inputs and states stay (they are the step's signature).

This is the rewrite driver's own sweep (`CellGraph.remove_dead`, which every rule-based pass
ends with), run as a pass of its own after the passes that are not rule-based.
"""
from __future__ import annotations

from cellgen.ir.graph import CellGraph


def dce(graph: CellGraph, *, in_place: bool = False) -> tuple[CellGraph, list[str]]:
    g = graph if in_place else graph.copy()
    convs = g.count("conv")
    removed = g.remove_dead()
    if not removed:
        return g, []
    dropped = convs - g.count("conv")
    return g, [f"removed {removed} dead nodes" + (f" ({dropped} convs)" if dropped else "")]
