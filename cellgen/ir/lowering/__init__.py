"""AST → CellGraph: resolve every name, build one node per operation, infer channels.

Equations are dataflow, not statements: they may appear in any order, and a name refers to
its one definition. A state `c` is read as `c` (the value at t-1) and written as `c'`.

One lowering is one `_Lowering`, its concerns in their own modules:

    declarations.py   what each name is, claimed once; the node a reference stands for
    expressions.py    expressions → nodes (the op registry says which function is which op)
    weights.py        a node per weight symbol; each weight's shape
    checks.py         results bound, channels inferred, LayerNorms shared at one width, warnings
    messages.py       how the messages word things

It returns the validated graph with its provenance (`graph.provenance`: each definition's name
→ the node of its value) and the analysis's facts on every node.
"""
from __future__ import annotations

from typing import Mapping, Optional

from cellgen import collector
from cellgen.errors import CellgenError, CellgenWarning, Span
from cellgen.ir.channels import ChannelSolver
from cellgen.ir.graph import CellGraph
from cellgen.ir.layout import check_layout
from cellgen.ir.lowering.checks import Checks
from cellgen.ir.lowering.declarations import Declarations
from cellgen.ir.lowering.expressions import Expressions
from cellgen.ir.lowering.weights import Weights
from cellgen.ir.params import bind_params
from cellgen.language import syntax as ast


def lower(spec: ast.CellSpec, params: Optional[Mapping[str, object]] = None) -> CellGraph:
    """Build the validated, channel-annotated graph of one step of `spec` (a resolved spec:
    see cellgen.language.resolve).

    Raises a `CellgenError` for any mistake; emits a `CellgenWarning` for unused gates,
    weights and inputs.
    """
    # Paused, lowering is linear in the spec's length (bench/lowering_scale.py): see cellgen/collector.py.
    with collector.paused():
        return _Lowering(spec, bind_params(spec, params or {})).run()


class _Lowering(Declarations, Expressions, Weights, Checks):
    def __init__(self, spec: ast.CellSpec, params: dict[str, int]):
        self.spec = spec
        self.graph = CellGraph(spec.name, spec.citation, params)
        self.channels = ChannelSolver()
        self.declared: dict[str, ast.Node] = {}  # every declared name → its declaration
        self.kinds: dict[str, str] = {}  # every declared name → "param", "input", "state" or "weight"
        self.equations: dict[str, ast.Equation | ast.Unpack] = {}  # key → its defining statement
        self.part_index: dict[str, int] = {}  # key of an unpack's target → its position
        self.unpacked: dict[int, list[str]] = {}  # id(unpack) → the nodes of its parts
        self.constants: dict[int, Optional[float]] = {}  # id(expr) → its folded value (see `_constant`)
        self.channel_splits: list[tuple[str, list[str]]] = []  # value, its channel-chunk nodes
        self.norms: list[tuple[str, ast.NormType]] = []  # layernorm nodes and their declarations
        self.lowered: dict[str, str] = {}  # equation key → node
        self.in_progress: dict[str, None] = {}  # the equations being lowered, outermost first (a set, ordered)
        self.weight_nodes: dict[str, str] = {}
        self.weight_decl_used: set[int] = set()
        self.claimed_level: dict[str, int] = {}
        self.history_nodes: dict[tuple[str, Optional[int]], str] = {}
        self.expr_spans: dict[str, Span] = {}  # a node an equation names → where its expression is written
        # spec.weights scans every statement; a lowering asks for them once per symbol it meets
        self.weight_decls: list[ast.WeightDecl] = spec.weights
        self.weight_decl_of: dict[str, Optional[ast.WeightDecl]] = {}  # symbol → its declaration (_weight_decl)

    def run(self) -> CellGraph:
        self._declare()
        self._collect_equations()
        for key, definition in self.equations.items():
            # An inherited or borrowed equation is lowered only if something uses it, so that a
            # variant drops what it no longer needs (weights included) without a word.
            if not isinstance(definition.expr, ast.PerKernel) and not definition.borrowed:
                self._lower_equation(key)
        self._bind_results()
        self._infer_channels()
        check_layout(self.graph, self.expr_spans)
        self._warn_unused()
        return self.graph

