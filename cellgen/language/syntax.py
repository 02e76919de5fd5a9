"""The abstract syntax of a cell spec: pydantic models that remember where they came from.

Every node has a `span` into the source; two ASTs are the same cell when they are equal
ignoring spans (`same_cell`), which is what the pretty-printer round trip checks.
"""
from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from cellgen.errors import Span


class Node(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)
    span: Optional[Span] = Field(default=None, repr=False)


# --- integer expressions over params (channels, kernel sizes, shapes) -------------------

class DimInt(Node):
    value: int


class DimName(Node):
    name: str


class DimBinary(Node):
    op: Literal["+", "-", "*"]
    left: "Dim"
    right: "Dim"


Dim = Union[DimInt, DimName, DimBinary]


# --- tensor expressions ------------------------------------------------------------------

class Number(Node):
    value: float
    text: str  # as written, so that `1.0` prints back as `1.0`


class Ref(Node):
    """A name; `prime` marks a state's next value (`c'`, also spelled `c_next`)."""

    name: str
    prime: bool = False

    @property
    def text(self) -> str:
        return self.name + ("'" if self.prime else "")


class Call(Node):
    func: str
    args: list["Expr"]


BinaryOp = Literal["add", "sub", "hadamard", "conv", "div"]


class Binary(Node):
    op: BinaryOp
    left: "Expr"
    right: "Expr"


class Neg(Node):
    operand: "Expr"


class Scale(Node):
    """A number written before a term: `2σ(x)`."""

    factor: Number
    operand: "Expr"


class Concat(Node):
    """`[a, b]`: concatenation on the channel axis."""

    items: list["Expr"]


Expr = Union[Number, Ref, Call, Binary, Neg, Scale, Concat]


# --- declarations and equations ----------------------------------------------------------

class ParamDecl(Node):
    name: str
    default: Optional[int] = None


class TensorDecl(Node):
    name: str
    channels: Dim


class InputDecl(Node):
    tensors: list[TensorDecl]


class StateDecl(Node):
    tensors: list[TensorDecl]
    zigzag: bool = False


class OutputDecl(Node):
    ref: Ref


class ConvType(Node):
    kernel: list[Dim]


class BiasType(Node):
    pass


class ElementwiseType(Node):
    shape: list[Dim]


WeightType = Union[ConvType, BiasType, ElementwiseType]


class WeightPattern(Node):
    """A symbol name, or a glob ending in `*` (`W_x*`)."""

    text: str

    @property
    def is_glob(self) -> bool:
        return self.text.endswith("*")

    def matches(self, name: str) -> bool:
        return name.startswith(self.text[:-1]) if self.is_glob else name == self.text


class WeightDecl(Node):
    patterns: list[WeightPattern]
    type: WeightType


class Equation(Node):
    target: Ref
    expr: Expr


Statement = Union[ParamDecl, InputDecl, StateDecl, OutputDecl, WeightDecl, Equation]


class CellSpec(Node):
    name: str
    citation: Optional[str] = None
    extends: Optional[str] = None
    statements: list[Statement]

    def of_type(self, kind):
        return [s for s in self.statements if isinstance(s, kind)]

    @property
    def params(self) -> list[ParamDecl]:
        return self.of_type(ParamDecl)

    @property
    def inputs(self) -> list[TensorDecl]:
        return [t for d in self.of_type(InputDecl) for t in d.tensors]

    @property
    def states(self) -> list[TensorDecl]:
        return [t for d in self.of_type(StateDecl) for t in d.tensors]

    @property
    def zigzag_states(self) -> list[str]:
        return [t.name for d in self.of_type(StateDecl) if d.zigzag for t in d.tensors]

    @property
    def weights(self) -> list[WeightDecl]:
        return self.of_type(WeightDecl)

    @property
    def equations(self) -> list[Equation]:
        return self.of_type(Equation)

    @property
    def output(self) -> Optional[OutputDecl]:
        outputs = self.of_type(OutputDecl)
        return outputs[0] if outputs else None


for _model in (DimBinary, Call, Binary, Neg, Scale, Concat, Equation, CellSpec, ElementwiseType, ConvType,
               TensorDecl, OutputDecl):
    _model.model_rebuild()


def without_spans(node):
    """A plain-data view of an AST with every span dropped: what two equal cells share."""
    if isinstance(node, Node):
        fields = {k: without_spans(getattr(node, k)) for k in type(node).model_fields if k != "span"}
        return (type(node).__name__, fields)
    if isinstance(node, list):
        return [without_spans(x) for x in node]
    return node


def same_cell(a: Node, b: Node) -> bool:
    return without_spans(a) == without_spans(b)
