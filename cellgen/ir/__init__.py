"""The cell as a graph: lowering from the AST, channel inference, validation."""
from cellgen.ir.graph import CellGraph, StateInfo, WeightInfo
from cellgen.ir.lower import lower

__all__ = ["CellGraph", "StateInfo", "WeightInfo", "lower"]
