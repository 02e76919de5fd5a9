"""How big a spec may be, checked before anything walks it.

The parse tree, the AST and the graph passes are walked recursively, and lowering grows with
the spec; a spec far past anything a paper needs would end in a RecursionError, a minute of
lowering, or a literal Python cannot convert. These limits refuse such a spec first, with a
positioned error that names the limit (they are documented in docs/limits.md):

    MAX_STATEMENTS   10,000  statements in a spec, as written and after loops are unrolled
                             (the largest shipped spec has under 60)
    MAX_DEPTH           200  nesting of one expression: operators, calls and brackets
                             (a sum of 200 terms nests 200 deep)
    MAX_CHAIN           500  nesting of an expression with the earlier equations it reads
                             put in place (`a2 = a1 + x`, `a3 = a2 + x`, …: the passes see
                             one expression that deep)
    MAX_DIGITS          100  digits of a number literal
    a number literal must be finite: `1e999` is refused, not read as infinity

Each check is one linear pass (the text's lines, the parse tree with an explicit stack, the
resolved statements in order), so refusing costs no more than reading.
"""
from __future__ import annotations

import math
import re

from lark import Token, Tree

from cellgen.errors import CellgenSyntaxError, Source, Span
from cellgen.language import syntax as ast
from cellgen.language.walk import children

MAX_STATEMENTS = 10_000
MAX_DEPTH = 200
MAX_CHAIN = 500
MAX_DIGITS = 100

_DOCS = "see docs/limits.md"
_STATEMENT_LINE = re.compile(r"[ \t]*[^\s#]")


class LimitError(CellgenSyntaxError):
    """A spec past one of cellgen's documented size limits: text cellgen does not read."""


def check_text(source: Source) -> None:
    """Before parsing: at most MAX_STATEMENTS lines that hold a statement (a wrapped equation's
    lines count each, so this bounds the statements from above and costs one scan)."""
    count = 0
    for lineno, line in enumerate(source.text.splitlines(), start=1):
        if _STATEMENT_LINE.match(line):
            count += 1
            if count > MAX_STATEMENTS:
                raise LimitError(f"this spec has more than {MAX_STATEMENTS:,} statements; cellgen reads at most "
                                 f"{MAX_STATEMENTS:,}", Span(source, lineno, 1, lineno, len(line) + 1),
                                 hint=f"statement {MAX_STATEMENTS + 1:,} is here; {_DOCS}")


def check_tree(tree: Tree, source: Source) -> None:
    """After lark, before the (recursive) transformer: expression depth and number literals."""
    stack = [(child, 1, child) for child in tree.children]  # (node, depth, the statement it is in)
    while stack:
        node, depth, statement = stack.pop()
        if isinstance(node, Token):
            if node.type in ("NUMBER", "INT", "KERNEL_LITERAL"):
                _check_number(node, source)
            continue
        if depth > MAX_DEPTH:
            raise LimitError(f"this expression nests more than {MAX_DEPTH} deep (operators, calls and brackets); "
                             f"cellgen reads at most {MAX_DEPTH}", _first_word(statement, source),
                             hint=f"name parts of it in equations of their own (`s1 = a + b + …` then "
                                  f"`s = s1 + …`); {_DOCS}")
        for child in node.children:
            stack.append((child, depth + 1, statement))


def _first_word(statement, source: Source) -> Span:
    """The first word of a statement: where a message about all of it points (its line may
    run on for thousands of characters)."""
    meta = statement.meta if isinstance(statement, Tree) else statement
    line = source.line(meta.line)
    word = re.match(r"\S+", line[meta.column - 1:])
    return Span(source, meta.line, meta.column, meta.line, meta.column + (len(word.group()) if word else 1))


def _check_number(token: Token, source: Source) -> None:
    text = str(token)
    span = Span(source, token.line, token.column, token.end_line, token.end_column)
    digits = sum(ch.isdigit() for ch in text)
    if digits > MAX_DIGITS:
        raise LimitError(f"a number of {digits:,} digits; cellgen reads at most {MAX_DIGITS}", span,
                         hint=f"sizes and constants this large cannot be meant; {_DOCS}")
    if token.type == "NUMBER" and not math.isfinite(float(text)):
        raise LimitError(f"`{text}` is too large for a float (the largest is about 1.8e308): it would be read "
                         f"as infinity", span, hint="write a finite number")


def check_resolved(spec: ast.CellSpec) -> None:
    """After loops are unrolled and blocks inlined: the number of statements, and how deep an
    expression gets with the earlier equations it reads put in place."""
    definitions = spec.definitions
    if len(definitions) > MAX_STATEMENTS:
        raise LimitError(f"this spec unrolls to {len(definitions):,} equations; cellgen reads at most "
                         f"{MAX_STATEMENTS:,}", definitions[MAX_STATEMENTS].span or spec.span,
                         hint=f"this equation is number {MAX_STATEMENTS + 1:,}; {_DOCS}")
    chain: dict[str, int] = {}  # name → depth of its value with what it reads in place
    for definition in definitions:
        depth = _depth_with_reads(definition.expr, chain)
        if depth > MAX_CHAIN:
            raise LimitError(f"this equation nests {depth} deep with the equations it reads put in place; "
                             f"cellgen reads at most {MAX_CHAIN}",
                             _first_word(definition.span, definition.span.source) if definition.span else spec.span,
                             hint=f"a chain of equations each reading the one before adds up; {_DOCS}")
        targets = [definition.target] if isinstance(definition, ast.Equation) else definition.targets
        for target in targets:
            chain[target.name + ("'" if target.prime else "")] = depth


def _depth_with_reads(expr: ast.Node, chain: dict[str, int]) -> int:
    deepest, stack = 0, [(expr, 0)]  # (node, depth of its parent)
    while stack:
        node, depth = stack.pop()
        # a name read is as deep as the value it names; anything else is one level
        depth += chain.get(node.name + ("'" if node.prime else ""), 0) if isinstance(node, ast.Ref) else 1
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in children(node))
    return deepest
