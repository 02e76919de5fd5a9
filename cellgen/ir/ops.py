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

# How binary operators of the language lower, and their symbols (used by error messages).
BINARY_OPS = {"add": "add", "sub": "sub", "hadamard": "mul", "div": "div", "conv": "conv"}
OPERATOR_SYMBOLS = {"add": "+", "sub": "-", "mul": "⊙", "hadamard": "⊙", "div": "/", "conv": "⋆"}
