"""How lowering words its messages: a declaration kind with its article, an operand as written,
the span of a word, the usage of a function."""
from __future__ import annotations

import re
from typing import Optional

from cellgen.errors import Span, did_you_mean, span_text
from cellgen.ir.analysis import AXES
from cellgen.ir.graph import CellGraph
from cellgen.language import syntax as ast


def key_of(ref: ast.Ref) -> str:
    return ref.text




USAGE = {"softmax": "e.g. `softmax(e, over=stack)`", "sum": "e.g. `sum(e, over=stack)`",
         "mean": "e.g. `mean(e, over=(H, W))`",
          "stack": "e.g. `stack(h, c)`", "cat": "e.g. `cat(a, b, along=W)`",
          "attention": "attention(queries, keys, values), e.g. `attention(r, C, C)` or "
                       "`attention(q, k, v, patches=s)`"}


MAP_AXES = ("C", "T", "H", "W")  # what a LayerNorm may normalise over


def axis_hint(written: str, axes=AXES) -> Optional[str]:
    """`did you mean `W`?` for `w`, and `did you mean `stack`?` for `stak`."""
    by_lower = {axis.lower(): axis for axis in axes}
    if written.lower() in by_lower:
        return f"did you mean `{by_lower[written.lower()]}`?"
    return did_you_mean(written, axes)


def article(word: str) -> str:
    """`an input`, `a state`: the article for a declaration kind."""
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def prime_hint(name: str) -> str:
    return (f"drop the `'`; a prime marks a state's next value, so a paper's primed gate "
            f"(`{name}'`) needs another name, such as `{name}_2`")


def operand_texts(expr: ast.Node) -> list[Optional[str]]:
    """The operands of an elementwise expression as written, to name them in messages."""
    if isinstance(expr, ast.Binary):
        parts = [expr.left, expr.right]
    elif isinstance(expr, ast.Call):
        parts = expr.args
    elif isinstance(expr, ast.Neg):
        parts = [expr.operand]
    elif isinstance(expr, ast.Scale):
        parts = [expr.factor, expr.operand]
    else:
        parts = []
    return [f"`{span_text(p.span)}`" if p.span else None for p in parts]


def written_function(call: ast.Call) -> str:
    """The function's name as the user wrote it (`sigmoid`), which the AST may spell `σ`."""
    if call.span is None:
        return call.func
    return span_text(call.span).split("(")[0].strip() or call.func


def name_span(call: ast.Call) -> Optional[Span]:
    """The span of just the function name of a call, for a caret under `sigmod`, not its arguments."""
    span = call.span
    if span is None:
        return None
    return Span(span.source, span.line, span.column, span.line, span.column + len(written_function(call)))


def as_written(ref: ast.Ref) -> str:
    """` (`Y_s` with s = 4)` for `Y_4`, a loop's name as the user wrote it; else nothing."""
    written = span_text(ref.span) if ref.span else ref.text
    found = re.fullmatch(r"(.*)_([^\W\d]\w*)", written)
    if written == ref.text or not found or not ref.name.startswith(found.group(1) + "_"):
        return ""
    return f" (`{written}` with {found.group(2)} = {ref.name[len(found.group(1)) + 1:]})"


def word_span(span: Optional[Span], word: str, after: str = "") -> Optional[Span]:
    """The span of `word` (a whole word) in the first line of `span`, after the word `after`:
    the `Q` of `layernorm over (C, Q)`, whose declaration keeps only the text."""
    if span is None:
        return None
    line = span.source.line(span.line)
    start = span.column - 1
    if after:
        found = re.compile(rf"\b{re.escape(after)}\b").search(line, start)
        if not found:
            return None
        start = found.end()
    found = re.compile(rf"(?<!\w){re.escape(word)}(?!\w)").search(line, start)
    if not found:
        return None
    return Span(span.source, span.line, found.start() + 1, span.line, found.end() + 1)


def conv_words(graph: CellGraph, node: str) -> str:
    weight = graph[graph.operands(node)[1]]
    kernel = graph[node]["kernel"]
    return f"`{weight['name']}` has a {len(kernel)}D kernel, {'×'.join(map(str, kernel))}"


def type_word(kind: ast.WeightType) -> str:
    return {ast.ConvType: "conv", ast.BiasType: "bias", ast.ElementwiseType: "elementwise",
            ast.NormType: "layernorm"}[type(kind)]
