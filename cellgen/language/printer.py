"""AST → spec text in one canonical layout, so that two cells can be compared (and diffed) as text.

The canonical form is the order a paper reads in: the header, params, inputs and states, the
output, a `weights` section with its `:` aligned, then the equations with their `=` aligned.
Operators are Unicode (`σ`, `⋆`, `⊙`, `×`) by default and plain ASCII (`sigmoid`, `*`, `.*`,
`k x k`) with `ascii=True`; minus is always `-`, and a state's next value is `c'` either way.
Parentheses appear only where precedence needs them, numbers print as written, and functions
print by the name in the AST (the parser reads `sigmoid` as `σ`, as it reads `c_next` as `c'`).

Comments and blank lines are not part of the AST; given the comments that
`cellgen.language.comments` tied to its statements, the printer keeps them (`cellgen fmt`):
each comment moves with its statement, end-of-line comments are aligned in a column within a
paragraph, and a blank line between two statements of a section stays (one). Without them
(`diff`, `show`), the text is the bare canonical form. Every section keeps its statements in
their original order: the order of equations decides the order in which weights are created,
so only whole sections move.

Printing round-trips: `parse(format_spec(s, ascii=a))` is `s` again, ignoring spans, for both
spellings (tests/test_roundtrip.py).
"""
from __future__ import annotations

from typing import Optional

from cellgen.ir.ops import OPS
from cellgen.language import syntax as ast
from cellgen.language.comments import Notes, SpecComments
from cellgen.language.spellings import ASCII_FUNCTIONS  # from the registry's spellings

_UNICODE_OPS = {"add": "+", "sub": "-", "hadamard": "⊙", "conv": "⋆", "div": "/"}
_ASCII_OPS = {"add": "+", "sub": "-", "hadamard": ".*", "conv": "*", "div": "/"}

# Binding strength of expressions, loosest first: `a + b`, then `a ⊙ b` (also ⋆ and /), then
# `-a` and `2σ(a)`, then atoms (names, numbers, calls, (…), […]).
_SUM, _PRODUCT, _UNARY, _ATOM = range(4)
_LEVEL = {d.operator: d.precedence - 1 for d in OPS.values() if d.operator}  # the op registry's precedences

# Section order of the canonical layout, by statement type.
_DEFINITIONS = (ast.Equation, ast.Unpack, ast.Loop)
_SECTIONS = (ast.UseDecl, ast.ParamDecl, (ast.InputDecl, ast.StateDecl, ast.OutputDecl), ast.WeightDecl,
             ast.BlockDef, _DEFINITIONS)
_BLOCK_SECTIONS = (ast.ParamDecl, ast.WeightDecl, _DEFINITIONS, ast.Return)


# A line's end-of-line comment travels after this mark until `_render` sets it in its column.
_TRAIL = "\0"


def format_spec(spec: ast.CellSpec, ascii: bool = False, comments: Optional[SpecComments] = None) -> str:
    """The canonical text of a spec; sections are separated by one blank line. With `comments`
    (`collect_comments(spec, text)`), the comments and paragraph breaks of `text` are kept."""
    comments = comments or SpecComments()
    blocks = [[*comments.preamble, *([""] if comments.preamble_blank_after else []),
               _header(spec) + _trail(comments.header)]]
    blocks += _sections(spec.statements, _SECTIONS, ascii, "  ", comments)
    closing = comments.of(spec).closing
    if closing:
        blocks.append([f"  {text}" for text in closing])
    return _render("\n\n".join("\n".join(lines) for lines in blocks)) + "\n"


def _trail(comment: Optional[str]) -> str:
    return f"{_TRAIL}{comment}" if comment else ""


def _render(text: str) -> str:
    """Set end-of-line comments in one column per paragraph (lines between blank lines), two
    spaces after the longest line that carries one."""
    out, paragraph = [], []

    def flush():
        width = max((len(line.split(_TRAIL)[0].rstrip()) for line in paragraph if _TRAIL in line), default=0)
        for line in paragraph:
            code, _, comment = line.partition(_TRAIL)
            out.append(f"{code.rstrip().ljust(width)}  {comment}" if comment else code.rstrip())
        paragraph.clear()

    for line in text.split("\n"):
        if line.strip():
            paragraph.append(line)
        else:
            flush()
            out.append("")
    flush()
    return "\n".join(out)


def _before(notes: Notes, indent: str, first: bool) -> list[str]:
    """A statement's leading comments, after a blank line if one came before it in the source."""
    return ([""] if notes.blank_before and not first else []) + [f"{indent}{text}" for text in notes.leading]


def _sections(statements: list, order: tuple, ascii: bool, indent: str, comments: SpecComments) -> list[list[str]]:
    blocks = []
    for kinds in order:
        chosen = [s for s in statements if isinstance(s, kinds)]
        if not chosen:
            continue
        if kinds is ast.BlockDef:
            blocks += [_block(b, ascii, indent, comments) for b in chosen]
        else:
            blocks.append(_section(chosen, ascii, indent, comments))
    return blocks


def _block(block: ast.BlockDef, ascii: bool, indent: str, comments: SpecComments) -> list[str]:
    notes = comments.of(block)
    inner = _sections(block.body, _BLOCK_SECTIONS, ascii, indent + "  ", comments)
    lines = _before(notes, indent, True) + \
        [f"{indent}block {block.name}(" + ", ".join(block.inputs) + ")" + _trail(notes.opening)]
    for number, section in enumerate(inner):
        lines += ([""] if number else []) + section
    return lines + [f"{indent}  {text}" for text in notes.closing] + [f"{indent}end" + _trail(notes.trailing)]


def format_expr(expr: ast.Expr, ascii: bool = False) -> str:
    """One tensor expression, parenthesized only where precedence requires it."""
    return _Printer(ascii).expr(expr)


def format_dim(dim: ast.Dim) -> str:
    """An integer expression over params (`hidden`, `2*hidden + 1`)."""
    return _dim(dim)


# --- statements --------------------------------------------------------------------------

def _header(spec: ast.CellSpec) -> str:
    line = f"cell {spec.name}"
    if spec.citation is not None:
        if '"' in spec.citation or "\n" in spec.citation:
            raise ValueError(f"a citation cannot contain a quote or a line break: {spec.citation!r}")
        line += f' "{spec.citation}"'
    if spec.extends is not None:
        line += f" extends {spec.extends}"
    return line


def _section(statements: list, ascii: bool, indent: str, comments: SpecComments) -> list[str]:
    first = statements[0]
    if isinstance(first, ast.WeightDecl):
        # The first declaration's leading comments introduce the section: above `weights`.
        notes = comments.of(first)
        head = _before(notes, indent, True) + [f"{indent}weights"]
        rows = [(", ".join(p.text for p in d.patterns), _weight_type(d.type, ascii)) for d in statements]
        return head + _aligned_statements(statements, rows, " : ", indent + "  ", comments, skip_first=True)
    if isinstance(first, _DEFINITIONS):
        return _definitions(statements, ascii, indent, comments)
    if isinstance(first, ast.Return):
        return _each(statements, lambda s: "return " + ", ".join(_ref(r) for r in s.refs), indent, comments)
    return _each(statements, lambda s: _declaration(s, ascii), indent, comments)


def _each(statements: list, text, indent: str, comments: SpecComments) -> list[str]:
    lines = []
    for number, statement in enumerate(statements):
        notes = comments.of(statement)
        lines += _before(notes, indent, number == 0) + [f"{indent}{text(statement)}" + _trail(notes.trailing)]
    return lines


def _aligned_statements(statements: list, rows: list[tuple[str, str]], separator: str, indent: str,
                        comments: SpecComments, skip_first: bool = False, section_start: bool = True) -> list[str]:
    """`rows` of `statements` aligned on `separator`, paragraph by paragraph (a blank line
    before a statement starts a new one), each with its comments. `skip_first`: the first
    statement's leading comments are already printed; `section_start`: no blank line before it."""
    lines, start = [], 0
    for end in range(1, len(statements) + 1):
        if end < len(statements) and not comments.of(statements[end]).blank_before:
            continue
        for i, text in zip(range(start, end), _aligned(rows[start:end], separator)):
            notes = comments.of(statements[i])
            leading = [] if skip_first and i == 0 else _before(notes, indent, i == 0 and section_start)
            lines += leading + [f"{indent}{text}" + _trail(notes.trailing)]
        start = end
    return lines


def _definitions(statements: list, ascii: bool, indent: str, comments: SpecComments) -> list[str]:
    """Equations with their `=` aligned, run by run; a loop is its own run."""
    printer, lines, run = _Printer(ascii), [], []

    def flush():
        if run:
            lines.extend(_aligned_statements([s for s, _ in run], [row for _, row in run], " = ", indent, comments,
                                             section_start=not lines))
        run.clear()

    for statement in statements:
        if isinstance(statement, ast.Loop):
            flush()
            notes = comments.of(statement)
            values = ", ".join(str(v) for v in statement.values)
            lines.extend(_before(notes, indent, not lines))
            lines.append(f"{indent}for {statement.var} in ({values})" + _trail(notes.opening))
            lines += _definitions(statement.body, ascii, indent + "  ", comments)
            lines += [f"{indent}  {text}" for text in notes.closing]
            lines.append(f"{indent}end" + _trail(notes.trailing))
            continue
        targets = [statement.target] if isinstance(statement, ast.Equation) else statement.targets
        run.append((statement, (", ".join(_ref(t) for t in targets), printer.expr(statement.expr))))
    flush()
    return lines


def _aligned(rows: list[tuple[str, str]], separator: str) -> list[str]:
    """`left separator right` with every separator in one column, as a paper's equations are set."""
    width = max(len(left) for left, _ in rows)
    return [f"{left.ljust(width)}{separator}{right}" for left, right in rows]


def _declaration(statement, ascii: bool) -> str:
    if isinstance(statement, ast.ParamDecl):
        default = "" if statement.default is None else f" = {statement.default}"
        default = " = none" if statement.nullable else default
        return f"param {statement.name}{default}"
    if isinstance(statement, ast.UseDecl):
        return "use " + ", ".join(statement.blocks) + f" from {statement.source}"
    if isinstance(statement, ast.InputDecl):
        return "input " + ", ".join(_tensor(t) for t in statement.tensors)
    if isinstance(statement, ast.StateDecl):
        return "state " + ", ".join(_tensor(t) for t in statement.tensors) + (" zigzag" if statement.zigzag else "")
    if isinstance(statement, ast.OutputDecl):
        return "output " + ", ".join(_ref(r) for r in statement.refs)
    raise AssertionError(f"unhandled statement {statement!r}")


def _tensor(tensor: ast.TensorDecl) -> str:
    window = f" window {_dim(tensor.window)}" if tensor.window is not None else ""
    if tensor.history is not None:
        window += f" history {_dim(tensor.history)}" + (" init zeros" if tensor.zeros else "")
    return f"{tensor.name}[{_dim(tensor.channels)}]{window}"


def _ref(ref: ast.Ref) -> str:
    return ref.text


def _weight_type(kind: ast.WeightType, ascii: bool) -> str:
    if isinstance(kind, ast.ConvType):
        if kind.shares:
            shape = "{" + ", ".join(f"{_kernel(s.kernel, ascii)}: {_dim(s.channels)}" for s in kind.shares) + "}"
        else:
            shape = _kernel(kind.kernel, ascii)
        out = f" -> {_dim(kind.out)}" if kind.out is not None else ""
        return f"conv {shape}{out}" + "".join(_conv_option(option) for option in kind.geometry)
    if isinstance(kind, ast.BiasType):
        return "bias"
    if isinstance(kind, ast.ElementwiseType):
        return "elementwise [" + ", ".join(_dim(d) for d in kind.shape) + "]"
    if isinstance(kind, ast.NormType):
        text = "layernorm"
        if kind.shape:
            text += " [" + ", ".join(_dim(d) for d in kind.shape) + "]"
        if kind.over:
            text += " over " + (kind.over[0] if len(kind.over) == 1 else "(" + ", ".join(kind.over) + ")")
        if kind.eps is not None:
            text += f" eps {kind.eps.text}"
        return text
    raise AssertionError(f"unhandled weight type {kind!r}")


def _conv_option(option: ast.ConvOption) -> str:
    """` pad (valid, same, same)`, ` stride 2`, ` resize nearest`."""
    if option.kind == "resize":
        return f" resize {option.word}"
    values = [_dim(v) for v in option.values]
    return f" {option.kind} " + (values[0] if len(values) == 1 else "(" + ", ".join(values) + ")")


# --- integer expressions -------------------------------------------------------------------

def _kernel(kernel: list[ast.Dim], ascii: bool) -> str:
    """`k×k`, `3×3`, `2×k×k`."""
    sizes = [_kernel_dim(d) for d in kernel]
    return (" x " if ascii else "×").join(sizes)


def _kernel_dim(dim: ast.Dim) -> str:
    """A kernel size; compound sizes get parentheses, because `3×3+k` would lex `3×3` as one
    kernel literal, and `k+1×k` reads as if `×` bound tighter than `+`."""
    return f"({_dim(dim)})" if isinstance(dim, ast.DimBinary) else _dim(dim)


def _dim(dim: ast.Dim) -> str:
    if isinstance(dim, ast.DimInt):
        return str(dim.value)
    if isinstance(dim, ast.DimName):
        return dim.name
    left, right = _dim(dim.left), _dim(dim.right)
    if dim.op in "*/":
        if _dim_level(dim.left) < 1:
            left = f"({left})"
        if _dim_level(dim.right) < 2:
            right = f"({right})"
        return f"{left}{dim.op}{right}"
    if _dim_level(dim.right) < 1:  # `a - (b + c)`: + and - are left-associative
        right = f"({right})"
    return f"{left} {dim.op} {right}"


def _dim_level(dim: ast.Dim) -> int:
    """0 for a sum, 1 for a product, 2 for an atom."""
    if isinstance(dim, ast.DimBinary):
        return 1 if dim.op in "*/" else 0
    return 2


# --- tensor expressions ----------------------------------------------------------------------

class _Printer:
    def __init__(self, ascii: bool):
        self.ascii = ascii
        self.ops = _ASCII_OPS if ascii else _UNICODE_OPS

    def expr(self, expr: ast.Expr) -> str:
        if isinstance(expr, ast.Number):
            return expr.text
        if isinstance(expr, ast.Ref):
            return _ref(expr)
        if isinstance(expr, ast.Call):
            func = ASCII_FUNCTIONS.get(expr.func, expr.func) if self.ascii else expr.func
            args = [self.expr(a) for a in expr.args] + [f"{k.name}={self.expr(k.value)}" for k in expr.kwargs]
            return f"{func}(" + ", ".join(args) + ")"
        if isinstance(expr, ast.Concat):
            return "[" + ", ".join(self.expr(item) for item in expr.items) + "]"
        if isinstance(expr, ast.Axes):
            return "(" + ", ".join(expr.names) + ")"
        if isinstance(expr, ast.History):
            bound = _dim(expr.bound)
            bound = f"({bound})" if isinstance(expr.bound, ast.DimBinary) else bound
            return f"{expr.state}[t-{bound}:t-1]"
        if isinstance(expr, ast.Comprehension):
            values = ", ".join(str(v) for v in expr.values)
            return f"[{self.expr(expr.item)} for {expr.var} in ({values})]"
        if isinstance(expr, ast.PerKernel):
            return "{" + ", ".join(f"{_kernel(e.kernel, self.ascii)}: {self.expr(e.expr)}" for e in expr.entries) + "}"
        if isinstance(expr, ast.Neg):
            return "-" + self._at_least(expr.operand, _UNARY)
        if isinstance(expr, ast.Scale):
            return self._scale(expr)
        if isinstance(expr, ast.Binary):
            level = _LEVEL[expr.op]
            # Left-associative: the left operand may sit at the same level, the right must bind tighter.
            left, right = self._at_least(expr.left, level), self._at_least(expr.right, level + 1)
            return f"{left} {self.ops[expr.op]} {right}"
        raise AssertionError(f"unhandled expression {expr!r}")

    def _scale(self, expr: ast.Scale) -> str:
        """`2σ(x)`, `2x`; a space only where the operand would otherwise run into the number
        (`2 e5`, not `2e5`, which is one number)."""
        operand = self._at_least(expr.operand, _ATOM)
        glue = " " if operand[:1] in tuple("0123456789.eE") else ""
        return f"{expr.factor.text}{glue}{operand}"

    def _at_least(self, expr: ast.Expr, level: int) -> str:
        text = self.expr(expr)
        return f"({text})" if _level(expr) < level else text


def _level(expr: ast.Expr) -> int:
    if isinstance(expr, ast.Binary):
        return _LEVEL[expr.op]
    if isinstance(expr, (ast.Neg, ast.Scale)):
        return _UNARY
    return _ATOM
