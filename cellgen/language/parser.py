"""Spec text → AST, with errors that quote the line and say what was expected.

The grammar is `grammars/cell.lark` (LALR). A small postlexer drops line breaks inside
brackets so that long equations may wrap.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterator

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError
from lark.lexer import PatternStr

from cellgen.errors import CellgenError, CellgenSyntaxError, Note, Source, Span, did_you_mean, span_text
from cellgen.language import limits
from cellgen.language import syntax as ast
from cellgen.language.spellings import FUNCTION_SPELLINGS, next_values, state_names
from cellgen.resources import grammar_path

# What a terminal is called in an error message. String terminals are quoted as written.
_HUMAN_TERMINALS = {
    "NAME": "a name",
    "GLOB": "a name or glob (`W_x*`)",
    "NUMBER": "a number",
    "INT": "an integer",
    "STRING": 'a quoted citation ("Author, Venue Year")',
    "KERNEL_LITERAL": "a kernel size (`3×3`)",
    "_NL": "end of line",
    "$END": "end of file",
    "_HADAMARD": "`⊙`",
    "_CONV": "`⋆`",
    "_MINUS": "`-`",
    "_TIMES": "`×`",
    "PRIME": "`'`",
    "ZIGZAG": "`zigzag`",
}


class _BracketNewlines:
    """Postlexer: inside (…), […] and {…} a line break is only white space."""

    always_accept = ("_NL",)

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        depth = 0
        for token in stream:
            if token.type == "_NL" and depth > 0:
                continue
            if token.value in ("(", "[", "{"):
                depth += 1
            elif token.value in (")", "]", "}"):
                depth = max(0, depth - 1)
            yield token


@lru_cache(maxsize=1)
def _lark() -> Lark:
    # cache=True: Lark keeps the analysed LALR tables in the temp directory, keyed by a hash of
    # the grammar text, these options and Lark's version, so a changed grammar is rebuilt; it
    # halves the start-up cost of every command (an unwritable temp dir only costs the rebuild).
    return Lark(grammar_path().read_text(encoding="utf-8"), parser="lalr", lexer="contextual",
                postlex=_BracketNewlines(), propagate_positions=True, maybe_placeholders=False, cache=True)


def parse(text: str, filename: str = "<string>") -> ast.CellSpec:
    """Parse spec text into a `CellSpec`, or raise `CellgenSyntaxError`."""
    text = text[1:] if text.startswith("\ufeff") else text  # a byte-order mark some editors write
    source = Source(filename, text)
    limits.check_text(source)
    try:
        tree = _lark().parse(text if text.endswith("\n") else text + "\n")
    except UnexpectedInput as error:
        raise _syntax_error(error, source) from None
    limits.check_tree(tree, source)  # before the transformer, which recurses as deep as the tree
    try:
        spec = _ToAst(source).transform(tree)
    except VisitError as error:
        if isinstance(error.orig_exc, CellgenError):
            raise error.orig_exc from None
        raise
    return spec.copy_with(statements=next_values(spec.statements, state_names(spec.statements)))


def _span(source: Source, item) -> Span:
    return Span(source, item.line, item.column, item.end_line, item.end_column)


class _ToAst(Transformer):
    """Lark tree → AST; every node gets the span of the text it came from."""

    def __init__(self, source: Source):
        super().__init__()
        self.source = source

    def _at(self, meta):
        return _span(self.source, meta) if not getattr(meta, "empty", False) else None

    # header and statements
    @v_args(meta=True)
    def start(self, meta, children):
        header, *statements = children
        statements = [s for s in statements if s is not None]
        name, citation, extends, span = header
        # The spec's span is its header line (`cell NAME … extends P`): what a message about the
        # spec as a whole (its parent, its output) should point at, not a comment above it.
        return ast.CellSpec(name=name, citation=citation, extends=extends, statements=statements,
                            span=span or self._at(meta))

    @v_args(meta=True)
    def header(self, meta, children):
        name, rest = str(children[0]), children[1:]
        citation = next((str(c)[1:-1] for c in rest if isinstance(c, Token) and c.type == "STRING"), None)
        extends = next((c for c in rest if isinstance(c, tuple) and c[0] == "extends"), (None, None))[1]
        return name, citation, extends, self._at(meta)

    def extends(self, children):
        return ("extends", str(children[0]))

    @v_args(meta=True)
    def param_decl(self, meta, children):
        default = None
        if len(children) > 1 and children[1].type == "NONE":
            return ast.ParamDecl(name=str(children[0]), nullable=True, span=self._at(meta))
        if len(children) > 1:
            token = children[1]
            if not str(token).isdigit():
                raise CellgenSyntaxError(f"param `{children[0]}` must default to a whole number, not `{token}`",
                                         _span(self.source, token), hint="params are channel counts and sizes")
            default = int(token)
        return ast.ParamDecl(name=str(children[0]), default=default, span=self._at(meta))

    @v_args(meta=True)
    def tensor_decl(self, meta, children):
        history = children[-1] if isinstance(children[-1], tuple) else None
        children = children[:-1] if history else children
        window = children[2] if len(children) > 2 else None
        length, zeros = history if history else (None, False)
        return ast.TensorDecl(name=str(children[0]), channels=children[1], window=window, history=length,
                              zeros=zeros, span=self._at(meta))

    def history_decl(self, children):
        return (children[0], len(children) > 1)

    @v_args(meta=True)
    def input_decl(self, meta, children):
        return ast.InputDecl(tensors=children, span=self._at(meta))

    @v_args(meta=True)
    def state_decl(self, meta, children):
        tensors = [c for c in children if isinstance(c, ast.TensorDecl)]
        zigzag = any(c == "zigzag" for c in children if isinstance(c, str))
        return ast.StateDecl(tensors=tensors, zigzag=zigzag, span=self._at(meta))

    def state_option(self, children):
        return str(children[0])

    @v_args(meta=True)
    def output_decl(self, meta, children):
        return ast.OutputDecl(refs=list(children), span=self._at(meta))

    def weights_header(self, children):
        return None  # `weights` only groups the declarations below it for the reader

    @v_args(meta=True)
    def weight_decl(self, meta, children):
        *targets, kind = children
        patterns = []
        for target in targets:
            if isinstance(target, ast.Ref):
                if target.prime:
                    raise CellgenSyntaxError(f"`{target.text}` is a state's next value, not a weight symbol",
                                             target.span,
                                             hint=f"drop the `'`; a prime marks a state's next value, so a paper's "
                                                  f"primed weight (`{target.text}`) needs another name, such as "
                                                  f"`{target.name}_2`")
                target = ast.WeightPattern(text=target.name, span=target.span)
            patterns.append(target)
        return ast.WeightDecl(patterns=patterns, type=kind, span=self._at(meta))

    @v_args(meta=True)
    def target(self, meta, children):
        token = children[0]
        if token.type == "GLOB":
            return ast.WeightPattern(text=str(token), span=self._at(meta))
        return ast.Ref(name=str(token), prime=len(children) > 1, span=self._at(meta))

    @v_args(meta=True)
    def conv_type(self, meta, children):
        shape, *rest = children
        geometry = [c for c in rest if isinstance(c, ast.ConvOption)]
        out = next((c[1] for c in rest if isinstance(c, tuple)), None)
        if shape and isinstance(shape[0], ast.KernelShare):
            return ast.ConvType(shares=shape, out=out, geometry=geometry, span=self._at(meta))
        return ast.ConvType(kernel=shape, out=out, geometry=geometry, span=self._at(meta))

    @v_args(meta=True)
    def conv_pad(self, meta, children):
        return ast.ConvOption(kind="pad", values=list(children), span=self._at(meta))

    @v_args(meta=True)
    def conv_stride(self, meta, children):
        return ast.ConvOption(kind="stride", values=list(children), span=self._at(meta))

    @v_args(meta=True)
    def conv_resize(self, meta, children):
        return ast.ConvOption(kind="resize", word=str(children[0]), span=self._at(meta))

    def kernel_shares(self, children):
        return list(children)

    @v_args(meta=True)
    def kernel_share(self, meta, children):
        return ast.KernelShare(kernel=children[0], channels=children[1], span=self._at(meta))

    def conv_out(self, children):
        return ("out", children[0])

    @v_args(meta=True)
    def norm_type(self, meta, children):
        fields = dict(children)
        return ast.NormType(**fields, span=self._at(meta))

    def norm_shape(self, children):
        return ("shape", list(children))

    def norm_over(self, children):
        return ("over", [str(c) for c in children])

    def norm_eps(self, children):
        token = children[0]
        return ("eps", ast.Number(value=float(token), text=str(token), span=_span(self.source, token)))

    # blocks, loops, borrowing
    @v_args(meta=True)
    def block_def(self, meta, children):
        name, *rest = children
        inputs = [str(c) for c in rest if isinstance(c, Token)]
        body = [c for c in rest if isinstance(c, ast.Node)]
        return ast.BlockDef(name=str(name), inputs=inputs, body=body, span=self._at(meta))

    @v_args(meta=True)
    def return_stmt(self, meta, children):
        return ast.Return(refs=children, span=self._at(meta))

    @v_args(meta=True)
    def use_decl(self, meta, children):
        *blocks, source = children
        return ast.UseDecl(blocks=[str(b) for b in blocks], source=str(source), span=self._at(meta))

    @v_args(meta=True)
    def loop(self, meta, children):
        var, values, *body = children
        body = [c for c in body if c is not None]
        return ast.Loop(var=str(var), values=values, body=body, span=self._at(meta))

    def int_tuple(self, children):
        return [int(c) for c in children]

    @v_args(meta=True)
    def bias_type(self, meta, children):
        return ast.BiasType(span=self._at(meta))

    @v_args(meta=True)
    def elementwise_type(self, meta, children):
        return ast.ElementwiseType(shape=children, span=self._at(meta))

    def kernel(self, children):
        if len(children) == 1 and isinstance(children[0], Token):  # KERNEL_LITERAL: 3×3, 2x5x5
            token = children[0]
            sizes = str(token).replace("×", "x").split("x")
            return [ast.DimInt(value=int(s), span=_span(self.source, token)) for s in sizes]
        return list(children)

    # integer expressions
    @v_args(meta=True)
    def dim_int(self, meta, children):
        return ast.DimInt(value=int(children[0]), span=self._at(meta))

    @v_args(meta=True)
    def dim_name(self, meta, children):
        return ast.DimName(name=str(children[0]), span=self._at(meta))

    def _dim_binary(op):
        @v_args(meta=True)
        def build(self, meta, children):
            return ast.DimBinary(op=op, left=children[0], right=children[1], span=self._at(meta))
        return build

    dim_add, dim_sub, dim_mul, dim_div = _dim_binary("+"), _dim_binary("-"), _dim_binary("*"), _dim_binary("/")

    # equations and tensor expressions
    @v_args(meta=True)
    def equation(self, meta, children):
        *targets, expr = children
        for target in targets:
            if isinstance(target, ast.WeightPattern):
                raise CellgenSyntaxError(f"an equation defines names, not a glob like `{target.text}`", target.span,
                                         hint="a glob (`W_x*`) only declares weights: `W_x* : conv k×k`")
        if len(targets) == 1:
            return ast.Equation(target=targets[0], expr=expr, span=self._at(meta))
        return ast.Unpack(targets=targets, expr=expr, span=self._at(meta))

    @v_args(meta=True)
    def ref(self, meta, children):
        return ast.Ref(name=str(children[0]), prime=len(children) > 1, span=self._at(meta))

    @v_args(meta=True)
    def number(self, meta, children):
        return ast.Number(value=float(children[0]), text=str(children[0]), span=self._at(meta))

    @v_args(meta=True)
    def call(self, meta, children):
        args = [c for c in children[1:] if not isinstance(c, ast.KeywordArg)]
        kwargs = [c for c in children[1:] if isinstance(c, ast.KeywordArg)]
        seen = set()
        for keyword in kwargs:
            if keyword.name in seen:
                raise CellgenSyntaxError(f"`{keyword.name}=` is given twice", keyword.span)
            seen.add(keyword.name)
        first_keyword = next((c for c in children[1:] if isinstance(c, ast.KeywordArg)), None)
        if first_keyword is not None and children[1:].index(first_keyword) < len(args):
            late = children[1:][len(children[1:]) - 1]
            raise CellgenSyntaxError("a plain argument follows a named one", late.span,
                                     hint=f"put the named arguments (`{first_keyword.name}=…`) last")
        func = FUNCTION_SPELLINGS.get(str(children[0]), str(children[0]))
        return ast.Call(func=func, args=args, kwargs=kwargs, span=self._at(meta))

    @v_args(meta=True)
    def keyword_arg(self, meta, children):
        return ast.KeywordArg(name=str(children[0]), value=children[1], span=self._at(meta))

    @v_args(meta=True)
    def keyword_axes(self, meta, children):
        axes = ast.Axes(names=[str(c) for c in children[1:]], span=self._at(meta))
        return ast.KeywordArg(name=str(children[0]), value=axes, span=self._at(meta))

    @v_args(meta=True)
    def history(self, meta, children):
        state, t_start, bound, t_end, one = children
        for token in (t_start, t_end):
            if str(token) != "t":
                raise CellgenSyntaxError(f"a history is written `{state}[t-τ:t-1]`, with `t`, not `{token}`",
                                         _span(self.source, token),
                                         hint=f"`t` is the current step: `{state}[t-τ:t-1]` holds the values of "
                                              f"`{state}` at the τ steps before it")
        if str(one) != "1":
            raise CellgenSyntaxError(f"a history ends at the previous step: `{state}[t-τ:t-1]`, not `t-{one}`",
                                     _span(self.source, one),
                                     hint="the values of a state before t-1 are all in its history")
        return ast.History(state=str(state), bound=bound, span=self._at(meta))

    @v_args(meta=True)
    def comprehension(self, meta, children):
        item, var, values = children
        return ast.Comprehension(item=item, var=str(var), values=values, span=self._at(meta))

    @v_args(meta=True)
    def per_kernel(self, meta, children):
        return ast.PerKernel(entries=children, span=self._at(meta))

    @v_args(meta=True)
    def kernel_operand(self, meta, children):
        return ast.KernelOperand(kernel=children[0], expr=children[1], span=self._at(meta))

    def _binary(op):
        @v_args(meta=True)
        def build(self, meta, children):
            return ast.Binary(op=op, left=children[0], right=children[1], span=self._at(meta))
        return build

    add, sub, hadamard = _binary("add"), _binary("sub"), _binary("hadamard")
    conv, div = _binary("conv"), _binary("div")

    @v_args(meta=True)
    def neg(self, meta, children):
        return ast.Neg(operand=children[0], span=self._at(meta))

    @v_args(meta=True)
    def scale(self, meta, children):
        token = children[0]
        factor = ast.Number(value=float(token), text=str(token), span=_span(self.source, token))
        return ast.Scale(factor=factor, operand=children[1], span=self._at(meta))

    @v_args(meta=True)
    def concat(self, meta, children):
        return ast.Concat(items=children, span=self._at(meta))

    def __default__(self, data, children, meta):
        raise AssertionError(f"grammar rule {data!r} has no AST builder")


# --- syntax errors -----------------------------------------------------------------------

def _terminal_name(name: str) -> str:
    if name in _HUMAN_TERMINALS:
        return _HUMAN_TERMINALS[name]
    for terminal in _lark().terminals:
        if terminal.name == name and isinstance(terminal.pattern, PatternStr):
            return f"`{terminal.pattern.value}`"
    return name.lower().strip("_")


# Terminals that a message names as a group: a list of five operators says less than this.
_OPERATORS = {"PLUS", "_MINUS", "_HADAMARD", "_CONV", "SLASH"}
_LINE_ENDS = {"_NL", "$END"}


def _expected_text(names) -> str:
    names = set(names)
    shown = []
    if _OPERATORS <= names:
        names -= _OPERATORS
        shown.append("an operator (`+`, `-`, `⊙`, `⋆`, `/`)")
    ends = names & _LINE_ENDS
    names -= _LINE_ENDS
    if "GLOB" in names:  # "a name or glob" says "a name" already
        names.discard("NAME")
    shown = sorted({_terminal_name(n) for n in names}) + shown
    if ends:  # the end of the file is also the end of the last line: one way to say "stop here"
        shown.append(_terminal_name("_NL") if "_NL" in ends else _terminal_name("$END"))
    if len(shown) > 8:
        shown = shown[:8] + ["…"]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]


def _accepted(error: UnexpectedInput) -> set[str]:
    """The tokens that could come next. Lark's own `expected` also lists lookaheads of LALR
    default reductions that fail one step later (`)` where no bracket is open), and the
    contextual lexer's `allowed` does the same; the parser itself knows exactly."""
    parser = getattr(error, "interactive_parser", None)
    if parser is not None:
        return set(parser.accepts())
    return set(getattr(error, "expected", None) or getattr(error, "allowed", None) or ())


def _syntax_error(error: UnexpectedInput, source: Source) -> CellgenSyntaxError:
    line, column = error.line, error.column
    expected = _accepted(error)
    at_end = False
    if isinstance(error, UnexpectedCharacters):
        char = source.text[error.pos_in_stream] if error.pos_in_stream < len(source.text) else ""
        span = Span(source, line, column, line, column + 1)
        message = f"unexpected character `{char}`"
        hint = _hint_for_character(char, source.line(line), column)
    elif isinstance(error, UnexpectedEOF) or (isinstance(error, UnexpectedToken) and error.token.type == "$END"):
        line = max(1, len(source.text.rstrip("\n").splitlines()))
        column = len(source.line(line)) + 1
        span = Span(source, line, column, line, column + 1)
        message, hint, at_end = "unexpected end of file", None, True
    else:
        assert isinstance(error, UnexpectedToken)
        token, glued = error.token, None
        if token.type == "_NL":
            span = Span(source, line, column, line, column + 1)
            message = "unexpected end of line"
        else:
            span = _span(source, token)
            message = f"unexpected {_token_text(token)}"
            glued = _glued_word(source, token)
            if glued:  # `nonee`: the lexer read the keyword `none`, then stumbled over `e`
                span, message = glued, f"unexpected `{span_text(glued)}`"
        hint = _hint_for_token(token, expected, source.line(line))
        if glued:
            hint = did_you_mean(span_text(glued), _keywords()) or hint
        decimal = _decimal_for_whole(source, token)
        if decimal:
            expected = {"INT"}  # what stood there: a whole number, not what may follow its digits
            span, message, hint = decimal, f"`{span_text(decimal)}` is not a whole number", \
                _LOOP_VALUES if _LOOP_VALUES_AT.search(source.line(line)[: decimal.column - 1]) else \
                "channel counts, kernel sizes and shapes are whole numbers (or params)"
    related, bracket_hint = _bracket_notes(source, line, column, span, at_end)
    if at_end and not related:
        related, bracket_hint = _unclosed_block_notes(source)
    return CellgenSyntaxError(message, span, expected=_expected_text(expected), hint=hint or bracket_hint,
                              related=related)


_OPENS_BODY = re.compile(r"\s*(for|block)\b")
_ENDS_BODY = re.compile(r"\s*end\s*(#.*)?$")


def _unclosed_block_notes(source: Source) -> tuple[list[Note], str | None]:
    """At the end of the file, the `for` or `block` whose body no `end` closes."""
    opened: list[tuple[str, int, int]] = []
    for lineno, content in enumerate(source.text.splitlines(), start=1):
        start = _OPENS_BODY.match(content)
        if start:
            opened.append((start.group(1), lineno, start.start(1) + 1))
        elif _ENDS_BODY.match(content) and opened:
            opened.pop()
    if not opened:
        return [], None
    word, open_line, open_column = opened[-1]
    note = Note(f"this `{word}` is never closed", Span(source, open_line, open_column, open_line,
                                                         open_column + len(word)))
    return [note], "close its body with `end` on a line of its own"


def _decimal_for_whole(source: Source, token: Token) -> Span | None:
    """The span of `2.5` in `h[2.5]`. Where only whole numbers may stand, the lexer reads `2`
    and then trips over `.5`: the message should quote what the user wrote, not its tail."""
    if token.type != "NUMBER" or not str(token).startswith("."):
        return None
    digits = re.search(r"\d+$", source.line(token.line)[: token.column - 1])
    if not digits:
        return None
    return Span(source, token.line, token.column - len(digits.group()), token.end_line, token.end_column)


def _bracket_notes(source: Source, line: int, column: int, span: Span,
                   at_end: bool) -> tuple[list[Note], str | None]:
    """Where a bracket mistake really is. A `(` left open swallows the line breaks after it, so
    the parser only stumbles lines later (or at the end of the file): point back at the `(`.
    A `)` with no `(` is named."""
    still_open = _open_brackets(source.text, line, column)
    if still_open and (at_end or still_open[-1][1] < span.line):
        char, open_line, open_column = still_open[-1]
        note = Note(f"this `{char}` is never closed", Span(source, open_line, open_column, open_line, open_column + 1))
        return [note], (f"close it with `{_PAIRS[char]}`; inside (…), […] and {{…}} a line break does not "
                        "end the equation")
    found = span_text(span)
    if found in _OPENER_OF and not still_open:
        return [], f"this `{found}` closes no `{_OPENER_OF[found]}`"
    return [], None


_PAIRS = {"(": ")", "[": "]", "{": "}"}
_OPENER_OF = {")": "(", "]": "[", "}": "{"}


def _open_brackets(text: str, line: int, column: int) -> list[tuple[str, int, int]]:
    """The brackets opened before (line, column) and not closed, as (char, line, column);
    comments and citations are skipped, as the lexer skips them."""
    stack: list[tuple[str, int, int]] = []
    for lineno, content in enumerate(text.splitlines(), start=1):
        if lineno > line:
            break
        in_string = False
        for col, char in enumerate(content, start=1):
            if lineno == line and col >= column:
                break
            if char == '"':
                in_string = not in_string
            elif in_string:
                continue
            elif char == "#":
                break
            elif char in _PAIRS:
                stack.append((char, lineno, col))
            elif char in _OPENER_OF and stack:
                stack.pop()
    return stack


# What a token of a terminal with many spellings is called: `unexpected name `σ``.
_TOKEN_NOUNS = {"NAME": "name", "GLOB": "glob", "NUMBER": "number", "INT": "number", "STRING": "citation",
                "KERNEL_LITERAL": "kernel size"}


def _token_text(token: Token) -> str:
    if token.type in _TOKEN_NOUNS:
        return f"{_TOKEN_NOUNS[token.type]} `{token}`"
    described = _terminal_name(token.type)
    return described if described.startswith("`") else f"`{token}`"


def _hint_for_character(char: str, line: str, column: int):
    if char and char in "·•×":
        return "write `⊙` (or `.*`) for the elementwise product and `⋆` (or `*`) for a convolution"
    if char == "@":
        return "matrix products are not part of the language yet"
    if char == "\t":
        return None
    return None


_STATEMENT_KEYWORDS = ("param", "input", "state", "output", "weights", "block", "use")


def _misspelt_keyword(token: Token, expected, line: str) -> str | None:
    """`did you mean `zigzag`?` for a name where a keyword may stand, and `did you mean `param`?`
    for `parm k = 5`: the parser reads `parm` as the start of an equation and only trips over
    `k` (or the end of the line), so the misspelt word is the line's first, not the unexpected one."""
    keywords = [name.strip("`") for name in map(_terminal_name, expected) if name.strip("`").isalpha()]
    hint = did_you_mean(str(token), keywords) if keywords and token.type == "NAME" else None
    if hint:
        return hint
    first = re.match(r"\s*([^\W\d]\w*)\s*$", line[: token.column - 1])
    if first and first.group(1) not in _STATEMENT_KEYWORDS:
        return did_you_mean(first.group(1), _STATEMENT_KEYWORDS)
    return None


# The text before a token, when the token stands among a loop's values or inside a history.
_LOOP_VALUES_AT = re.compile(r"\bfor\s+[^\W\d]\w*\s+in\s*(\([^)]*)?$")
_LOOP_VALUES = "a loop runs over one or more whole numbers: `for s in (1, 2, 4)`"
_HISTORY_AT = re.compile(r"[^\W\d]\w*\[\s*t\s*[-−][^\]\[]*$")
_BODY_KEYWORDS = {"PARAM", "INPUT", "STATE", "OUTPUT", "WEIGHTS", "USE", "RETURN", "BLOCK"}


@lru_cache(maxsize=1)
def _keywords() -> tuple[str, ...]:
    return tuple(t.pattern.value for t in _lark().terminals
                 if isinstance(t.pattern, PatternStr) and t.pattern.value.isalpha())


def _glued_word(source: Source, token: Token) -> Span | None:
    """The whole word when the lexer split one (`nonee` → `none`, `e`), else None."""
    line = source.line(token.line)
    start, end = token.column - 1, token.column - 1 + len(str(token))
    if start == 0 or not (line[start - 1].isalnum() or line[start - 1] == "_") or not str(token)[:1].isalnum():
        return None
    while start > 0 and (line[start - 1].isalnum() or line[start - 1] == "_"):
        start -= 1
    while end < len(line) and (line[end].isalnum() or line[end] == "_"):
        end += 1
    if not re.fullmatch(r"[^\W\d]\w*", line[start:end]):
        return None
    return Span(source, token.line, start + 1, token.line, end + 1)


def _hint_for_token(token: Token, expected, line: str) -> str | None:
    before = line[: token.column - 1]
    if token.type in _BODY_KEYWORDS and "END" in expected and token.type not in expected:
        if token.type == "BLOCK":
            return "blocks are defined at the top level of a spec, not inside a `block` or a `for`"
        return ("a `for` body holds equations and loops; a `block` body also its `param`s, `weights` and one "
                "`return`")
    if token.type == "RETURN":
        return "`return` ends a block (`block G(a, b) … return x, y … end`); a cell says what it outputs " \
               "with `output h`"
    if token.type == "END":
        return "this `end` closes no `for` or `block`"
    if ("INT" in expected or "LPAR" in expected) and _LOOP_VALUES_AT.search(before):
        return _LOOP_VALUES
    if _HISTORY_AT.search(before):
        return "a history is written `c[t-τ:t-1]`: the last τ values of state `c`, up to the previous step"
    if "_TIMES" in expected and re.search(r"\bconv\s+[^\W\d]\w*x\w*\s*$", line.split("#")[0]):
        return "write kernel sizes with `×` or a spaced `x`: `k×k` or `k x k`"
    misspelt = _misspelt_keyword(token, expected, line)
    if misspelt:
        return misspelt
    if token.type == "NAME" and "EQUAL" in expected:
        return "an equation reads `name = expression`"
    if token.type == "NUMBER" and "INT" in expected:
        return "params are whole numbers"
    return None
