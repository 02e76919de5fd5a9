"""The abstract syntax of a cell spec: frozen dataclasses that remember where they came from.

Every node has a `span` into the source; two ASTs are the same cell when they are equal
ignoring spans (`same_cell`), which is what the pretty-printer round trip checks.
"""
from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Literal, Optional, Union

from cellgen.errors import Span

WHERE_FIELDS = frozenset({"span", "origin", "path"})  # where a node came from, not what it says


@dataclasses.dataclass(frozen=True, kw_only=True)
class Node:
    # Plain dataclasses, not pydantic models: the parser builds every node from values it has
    # already checked, so validation found nothing, and building the models' schemas cost
    # `cellgen check` more than parsing and lowering the spec.
    span: Optional[Span] = field(default=None, repr=False)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        dataclasses.dataclass(frozen=True, kw_only=True)(cls)
        # what the walkers visit and equality-ignoring-spans compares, asked for per node
        cls._content_fields = tuple(f.name for f in dataclasses.fields(cls) if f.name not in WHERE_FIELDS)

    def copy_with(self, **changes):
        """This node with some fields changed (nodes are frozen)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def content_fields(cls) -> tuple[str, ...]:
        """The fields that say what the node is, in order: all but WHERE_FIELDS."""
        return cls._content_fields


# --- integer expressions over params (channels, kernel sizes, shapes) -------------------

class DimInt(Node):
    value: int


class DimName(Node):
    name: str


class DimBinary(Node):
    op: Literal["+", "-", "*", "/"]
    left: "Dim"
    right: "Dim"


Dim = Union[DimInt, DimName, DimBinary]


# --- tensor expressions ------------------------------------------------------------------

class Number(Node):
    value: float
    text: str  # as written, so that `1.0` prints back as `1.0`


DISCARD = "_"  # the target that names no value


class Ref(Node):
    """A name; `prime` marks a state's next value (`c'`, also spelled `c_next`)."""

    name: str
    prime: bool = False

    @property
    def text(self) -> str:
        return self.name + ("'" if self.prime else "")

    @property
    def discards(self) -> bool:
        """`_` among an unpack's targets: a chunk computed and thrown away (docs/unpacks.md)."""
        return self.name == DISCARD and not self.prime


class Call(Node):
    func: str
    args: list["Expr"]
    kwargs: list["KeywordArg"] = field(default_factory=list)


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


class KeywordArg(Node):
    """`over=stack`, `along=W`, `patches=s`: a call's named argument."""

    name: str
    value: "Expr"


class Axes(Node):
    """`(C, H, W)` as a named argument's value: several axes at once (`over=(H, W)`)."""

    names: list[str]


class History(Node):
    """`c[t-τ:t-1]`: the last τ values of state `c`, a stack (`bound` None: `tau = none`)."""

    state: str
    bound: "Dim"


class Comprehension(Node):
    """`[Y_s for s in (1, 2, 4)]`: a channel concat of one item per value of `var`."""

    item: "Expr"
    var: str
    values: list[int]


class KernelOperand(Node):
    kernel: list[Dim]
    expr: "Expr"


class PerKernel(Node):
    """`{3×3: x, 5×5: m ⊙ x}`: what each kernel of a multi-kernel conv reads."""

    entries: list[KernelOperand]


Expr = Union[Number, Ref, Call, Binary, Neg, Scale, Concat, History, Comprehension, PerKernel, Axes]


# --- declarations and equations ----------------------------------------------------------

class ParamDecl(Node):
    name: str
    default: Optional[int] = None
    nullable: bool = False  # `param tau = none`: may be left unset


class TensorDecl(Node):
    name: str
    channels: Dim
    window: Optional[Dim] = None  # `input x[C] window T`: T frames per step
    history: Optional[Dim] = None  # `history tau`: the length of its history (docs/histories.md)
    zeros: bool = False  # `init zeros`: a state's history starts full, zeros before the state


class InputDecl(Node):
    tensors: list[TensorDecl]


class StateDecl(Node):
    tensors: list[TensorDecl]
    zigzag: bool = False


class OutputDecl(Node):
    """`output h', delta_c, delta_m`: what the step returns, the first output first."""

    refs: list[Ref]

    @property
    def ref(self) -> Ref:
        """The first output: the `h` of `h, state = cell(x, state)`."""
        return self.refs[0]


class KernelShare(Node):
    """`3×3: 128` in a multi-kernel conv: 128 of the output channels come from a 3×3 kernel."""

    kernel: list[Dim]
    channels: Dim


class ConvType(Node):
    kernel: list[Dim] = field(default_factory=list)
    shares: list[KernelShare] = field(default_factory=list)  # a multi-kernel conv (then `kernel` is empty)
    out: Optional[Dim] = None  # `-> C`: output channels fixed by the declaration
    geometry: list["ConvOption"] = field(default_factory=list)  # `pad …`, `stride …`, `resize …`, as written (docs/conv_modes.md)


class ConvOption(Node):
    """`pad (valid, same, same)`, `stride 2`, `resize nearest`: one geometry option of a conv.
    A pad value is a Dim; the words `same` and `valid` are DimNames the lowering reads."""

    kind: Literal["pad", "stride", "resize"]
    values: list[Dim] = field(default_factory=list)
    word: Optional[str] = None  # resize's mode


class BiasType(Node):
    pass


class ElementwiseType(Node):
    shape: list[Dim]


class NormType(Node):
    """`layernorm [shape] over AXES eps E` — see grammars/cell.lark."""

    shape: list[Dim] = field(default_factory=list)
    over: list[str] = field(default_factory=list)
    eps: Optional[Number] = None


WeightType = Union[ConvType, BiasType, ElementwiseType, NormType]


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
    # Set by resolution, never written: 0 for the spec's own declarations, 1 for its parent's, …
    # (a variant's declaration beats its parent's), and whether it came from elsewhere (a parent
    # or a block), so that one going unused is not the variant author's mistake.
    level: int = 0
    borrowed: bool = False


class Equation(Node):
    target: Ref
    expr: Expr
    borrowed: bool = False  # set by resolution: inherited from a parent spec


class Unpack(Node):
    """`a, b, c = expr`: the parts of one value (channel chunks, or a block's results)."""

    targets: list[Ref]
    expr: Expr
    borrowed: bool = False


class Return(Node):
    refs: list[Ref]


class Loop(Node):
    """`for s in (1, 2, 4) … end`, unrolled at compile time."""

    var: str
    values: list[int]
    body: list["Statement"]


class BlockDef(Node):
    name: str
    inputs: list[str]
    body: list["Statement"]


class UseDecl(Node):
    """`use CE, SE from cms_lstm`: borrow blocks defined in another spec."""

    blocks: list[str]
    source: str


Statement = Union[ParamDecl, InputDecl, StateDecl, OutputDecl, WeightDecl, Equation, Unpack, Return, Loop,
                  BlockDef, UseDecl]


class CellSpec(Node):
    name: str
    citation: Optional[str] = None
    extends: Optional[str] = None
    statements: list[Statement]
    # Where the spec was found (set by its loader, cellgen.api.load_spec; `<string>` and no path
    # for text): what
    # messages call it (`specs/e3d_lstm.cell`, a path as given) and the file itself, beside
    # which the specs it names (`extends P`, `use … from S`) are looked for first.
    origin: Optional[str] = field(default=None, repr=False)
    path: Optional[str] = field(default=None, repr=False)

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
    def definitions(self) -> list[Union[Equation, Unpack]]:
        """Every statement that defines values, in order: equations and unpacks."""
        return [s for s in self.statements if isinstance(s, (Equation, Unpack))]

    @property
    def output(self) -> Optional[OutputDecl]:
        outputs = self.of_type(OutputDecl)
        return outputs[0] if outputs else None


def without_spans(node):
    """A plain-data view of an AST with every span (and origin) dropped: what two equal cells share."""
    if isinstance(node, Node):
        fields = {k: without_spans(getattr(node, k)) for k in node.content_fields()}
        return (type(node).__name__, fields)
    if isinstance(node, list):
        return [without_spans(x) for x in node]
    return node


def same_cell(a: Node, b: Node) -> bool:
    return without_spans(a) == without_spans(b)
