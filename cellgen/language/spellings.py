"""One AST for both spellings of a thing, so that a spec and its ASCII print are the same cell.

- `sigmoid(…)` is `σ(…)`: a spelling of a token (like `.*` for `⊙`), the same whatever
  the spec around it, so the parser reads it so.
- `c_next` is `c'` when `c` is a state. That depends on which names are states: the parser
  knows the states a spec declares, but a variant's `c_next` may name its parent's state,
  which only resolution knows once `extends` has merged the parent in. So the parser spells
  the next values of its own states, and resolution those of the states it inherits.
"""
from __future__ import annotations

from typing import Iterable

from cellgen.language import syntax as ast
from cellgen.language.walk import transform

# ASCII spellings of functions, and the name the AST keeps for them (cf. printer.ASCII_FUNCTIONS).
FUNCTION_SPELLINGS = {"sigmoid": "σ"}

_NEXT = "_next"


def next_values(statements: list, states: Iterable[str]) -> list:
    """`statements` with each `c_next` (a state `c` among `states`) spelt `c'`."""
    states = set(states)

    def rule(node):
        if isinstance(node, ast.Ref) and not node.prime and node.name.endswith(_NEXT) \
                and node.name[: -len(_NEXT)] in states:
            return node.model_copy(update={"name": node.name[: -len(_NEXT)], "prime": True})
        return None

    return transform(statements, rule)


def state_names(statements: list) -> set[str]:
    """The states the statements declare."""
    return {t.name for s in statements if isinstance(s, ast.StateDecl) for t in s.tensors}
