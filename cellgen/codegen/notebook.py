"""How a compiled cell shows itself in a REPL or a notebook.

    >>> cell = cellgen.compile("convlstm", in_channels=1, hidden=16, k=3)
    >>> cell
    ConvLSTM(in_channels=1, hidden=16, k=3, O2, 12 weights, 9,344 parameters)
    >>> cell.summary()            # the table of `cellgen compile --emit summary`
    >>> cell                      # in Jupyter: the picture of `cellgen show` (needs Graphviz's dot)

The summary counts the spec's own graph (weights grouped by the gates they feed, as written),
which `cellgen.compile` keeps beside the optimised one; the picture draws the graph the
module runs, at its opt level, as `cellgen show SPEC -O LEVEL` does.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence


class Text(str):
    """Text that a REPL and IPython print as itself (a table), not as a quoted string."""

    def __repr__(self) -> str:
        return str(self)

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(str(self))


def describe(module) -> str:
    graph = module.cell_graph
    params = ", ".join(f"{name}={value}" for name, value in graph.params.items())
    count = sum(math.prod(info.shape) for info in graph.weights.values())
    weights = len(graph.weights)
    outputs = f"also outputs {', '.join(graph.extra_outputs)}" if graph.extra_outputs else ""
    parts = [p for p in (params, outputs, f"O{module.opt_level}", f"{weights} weight{'s' if weights != 1 else ''}",
                         f"{count:,} parameters") if p]
    return f"{graph.name}(" + ", ".join(parts) + ")"


def summary(module, size: Optional[Sequence[int]] = None) -> Text:
    from cellgen.errors import CellgenError
    from cellgen.tools import stats

    source = getattr(module, "source_graph", None)
    if source is None:
        raise CellgenError("this module does not carry its spec's graph (only `cellgen.compile` keeps it)",
                           hint="compile the spec again with cellgen.compile(…) and call summary() on that")
    return Text(stats.format_summary(stats.summarize(source, size), optimized_convs=stats.conv_count(module.cell_graph),
                                     opt_level=module.opt_level))


def svg(module) -> Optional[str]:
    """The `cellgen show` picture as SVG text, or None where Graphviz is not installed (the
    notebook then prints the repr)."""
    from cellgen.errors import CellgenError
    from cellgen.tools.render import graph_dot, picture_title, run_dot

    try:
        return run_dot(graph_dot(module.cell_graph, picture_title(module.cell_graph, None, module.opt_level)),
                       "svg").decode("utf-8")
    except CellgenError:
        return None
