"""The operations a cell graph is made of, and the spec functions that name them.

An op node's operands are ordered (port 0, 1, …). `ELEMENTWISE` ops broadcast their
operands against each other (scalars and per-channel biases included) and keep channels.
"""
from __future__ import annotations

from dataclasses import dataclass

ELEMENTWISE = {"add", "sub", "mul", "div", "neg", "sigmoid", "tanh", "relu"}
CHANNEL_PRESERVING = ELEMENTWISE | {"channel_view"}


@dataclass(frozen=True)
class Function:
    """A function a spec may call: its op and how many tensor arguments it takes."""

    op: str
    arity: int
    doc: str


FUNCTIONS: dict[str, Function] = {
    "sigmoid": Function("sigmoid", 1, "logistic sigmoid"),
    "σ": Function("sigmoid", 1, "logistic sigmoid"),
    "tanh": Function("tanh", 1, "hyperbolic tangent"),
    "relu": Function("relu", 1, "max(x, 0)"),
}

@dataclass(frozen=True)
class StructuralFunction:
    """A function that moves axes rather than values: `arity` (min, max) tensor arguments,
    its named arguments (`"axis"` or `"int"`), and whether it makes several values."""

    arity: tuple[int, int]
    keywords: dict
    doc: str
    unpacks: bool = False


STRUCTURAL_FUNCTIONS: dict[str, StructuralFunction] = {
    "softmax": StructuralFunction((1, 1), {"over": "axis"}, "softmax over one axis (`over=stack`: a history)"),
    "sum": StructuralFunction((1, 1), {"over": "axis"}, "sum over one axis, which disappears"),
    "stack": StructuralFunction((1, 999), {}, "a stack of maps (a new axis, `stack`)"),
    "attention": StructuralFunction((3, 3), {"patches": "int"},
                                    "softmax(q kᵀ) v over every position of the maps (and stack); "
                                    "`patches=s`: within each of s×s patches"),
    "cat": StructuralFunction((2, 999), {"along": "axis"}, "maps side by side along T, H or W"),
    "unstack": StructuralFunction((1, 1), {}, "a stack's maps, one per name: `a, b = unstack(s)`", unpacks=True),
    "split": StructuralFunction((1, 1), {"along": "axis"}, "equal pieces along T, H or W: `a, b = split(…)`",
                                unpacks=True),
}

# How binary operators of the language lower, and their symbols (used by error messages).
BINARY_OPS = {"add": "add", "sub": "sub", "hadamard": "mul", "div": "div", "conv": "conv"}
OPERATOR_SYMBOLS = {"add": "+", "sub": "-", "mul": "⊙", "hadamard": "⊙", "div": "/", "conv": "⋆"}

# --- ops only the optimizer introduces (a spec never writes them) --------------------------
# Weight-side ops compute a parameter-shaped tensor from parameters, once per step: fused
# conv weights and biases are built from the per-symbol parameters, so that `state_dict()`
# keeps the spec's symbols at every opt level. Their nodes carry `shape` (the result's).
#   weight_cat    operands W_1…W_n; attr `dim`: 0 stacks output channels, 1 input channels
#   weight_slice  operand W; attrs `start`, `stop`: W[start:stop] on dim 0
#   weight_add    operands W_1, W_2: their sum (one conv weight applied to one tensor twice)
#   weight_view   operand W: W.reshape(-1) (an elementwise (C, 1, …, 1) weight used as a bias)
#   pad_kernel    operand W; attr `kernel`: W zero-padded (centred) to a larger odd kernel
#   fill          operand R (any weight, for dtype/device); attrs `value`, `size`: a (size,) vector
WEIGHT_OPS = {"weight_cat", "weight_slice", "weight_add", "weight_view", "pad_kernel", "fill"}
# Layout ops on activations: channels [start, stop) of a tensor (a view), and the gate-major
# interleave of several gate-grouped tensors (multi-kernel ConvLSTM, Fig. 4b).
#   slice         operand T; attrs `start`, `stop`
#   interleave    operands T_1…T_n, each G chunks of C_j channels; attr `groups` = G;
#                 result: G chunks of ΣC_j channels, chunk g = [T_1 chunk g, …, T_n chunk g]
LAYOUT_OPS = {"slice", "interleave"}
# Ops of the structural functions above and of LayerNorm (see cellgen/ir/layout.py for the axes):
#   softmax     attr `axis`          reduce_sum  attr `axis` (the axis disappears)
#   stack       operands T_1…T_n     unstack     attrs `index`, `count`
#   cat_along   attr `axis`          split_along attrs `axis`, `index`, `count`
#   attention   operands q, k, v; attr `patches`
#   layernorm   operands x, gain, bias; attrs `mode` ("all" | "over" | "shape"), `axes`, `shape`, `eps`
STRUCTURAL_OPS = {"softmax", "reduce_sum", "stack", "unstack", "cat_along", "split_along", "attention", "layernorm"}
ACTIVATIONS = {"sigmoid", "tanh", "relu"}
COMMUTATIVE = {"add", "mul"}
