"""The cell as a graph: lowering from the AST, channel inference, validation.

The names below are loaded at first use, so that `cellgen.ir.ops` (the op registry, which the
parser and printer read for the functions' spellings) does not import networkx with the graph."""
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cellgen.ir.graph import CellGraph, StateInfo, WeightInfo
    from cellgen.ir.lower import lower

__all__ = ["CellGraph", "StateInfo", "WeightInfo", "lower"]


def __getattr__(name: str):
    if name in ("CellGraph", "StateInfo", "WeightInfo"):
        from cellgen.ir import graph

        return getattr(graph, name)
    if name == "lower":
        from cellgen.ir.lower import lower

        globals()["lower"] = lower  # the function, not the submodule that importing it bound
        return lower
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
