"""AST → CellGraph: the lowering's entry point (cellgen/ir/lowering/ holds its parts)."""
from cellgen.ir.lowering import lower

__all__ = ["lower"]
