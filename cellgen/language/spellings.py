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

from cellgen.ir.ops import OPS
from cellgen.language import syntax as ast
from cellgen.language.walk import transform


def _kept(spellings: tuple[str, ...], symbol) -> str:
    """Of an op's spellings, the one the AST keeps: its symbol, if a spec may write it (`σ`)."""
    return symbol if symbol in spellings else spellings[0]


# From the op registry's `spellings`: each other spelling of a function → the one the AST keeps
# (`sigmoid` → `σ`), and each kept spelling that is not ASCII → the ASCII one the printer writes.
FUNCTION_SPELLINGS = {spelling: _kept(d.spellings, d.symbol) for d in OPS.values() for spelling in d.spellings
                      if spelling != _kept(d.spellings, d.symbol)}
ASCII_FUNCTIONS = {_kept(d.spellings, d.symbol): next(s for s in d.spellings if s.isascii())
                   for d in OPS.values() if d.spellings and not _kept(d.spellings, d.symbol).isascii()
                   and any(s.isascii() for s in d.spellings)}

_NEXT = "_next"


def next_values(statements: list, states: Iterable[str]) -> list:
    """`statements` with each `c_next` (a state `c` among `states`) spelt `c'`."""
    states = set(states)

    def rule(node):
        if isinstance(node, ast.Ref) and not node.prime and node.name.endswith(_NEXT) \
                and node.name[: -len(_NEXT)] in states:
            return node.copy_with(name=node.name[: -len(_NEXT)], prime=True)
        return None

    return transform(statements, rule)


def state_names(statements: list) -> set[str]:
    """The states the statements declare."""
    return {t.name for s in statements if isinstance(s, ast.StateDecl) for t in s.tensors}
