"""A Pygments lexer for cell specs (`.cell`), registered under the name `cell`.

pyproject.toml registers it as a `pygments.lexers` entry point, so once cellgen is installed
`pygmentize -l cell specs/convlstm.cell`, Sphinx and mkdocs (```` ```cell ```` blocks) find it.
It follows grammars/cell.lark token by token: keywords are the grammar's string literals,
and every character a spec may contain is some token, so a spec that parses never lexes to
an error token (tests/test_highlight.py lexes every shipped spec); a character no token
allows (`$`, `?`) is one.

Pygments is imported here only; cellgen does not need it to run.
"""
from __future__ import annotations

from pygments.lexer import RegexLexer, bygroups, words
from pygments.token import Comment, Keyword, Name, Number, Operator, Punctuation, String, Whitespace

# Statement words of grammars/cell.lark (declarations, sections, blocks, loops) and the words
# inside weight types; `none` is a constant.
DECLARATIONS = ("cell", "extends", "param", "input", "state", "output", "weights", "block", "end", "return",
                "use", "from", "for", "in")
TYPE_WORDS = ("conv", "bias", "elementwise", "layernorm", "over", "eps", "window", "zigzag", "history", "init",
              "zeros")


class CellLexer(RegexLexer):
    name = "cellgen spec"
    aliases = ["cell", "cellgen"]
    filenames = ["*.cell"]
    mimetypes = ["text/x-cellgen"]
    url = "https://pypi.org/project/cellgen-stl/"

    tokens = {
        "root": [
            (r"[ \t\f]+", Whitespace),
            (r"\r?\n", Whitespace),
            (r"\\[ \t]*\r?\n", Whitespace),              # line continuation
            (r"#[^\n]*", Comment.Single),
            (r'"[^"\n]*"', String.Double),              # the header's citation
            (words(DECLARATIONS, suffix=r"\b"), Keyword),
            (words(TYPE_WORDS, suffix=r"\b"), Keyword.Type),
            (r"none\b", Keyword.Constant),
            # Kernel sizes: `3×3`, `2x5x5`, `k×k` (the `x` between two sizes is an operator).
            (r"\d+(?:\s*[x×]\s*\d+)+(?![\w.])", Number.Integer),
            (r"\d+(\.\d*)?[eE][+-]?\d+|\.\d+[eE][+-]?\d+|\d+\.\d*|\.\d+", Number.Float),
            (r"\d+", Number.Integer),
            # A state's next value (`c'`), a glob (`W_x*`), a call (`tanh(`), an equation's target.
            (r"([^\W\d]\w*)(')", bygroups(Name.Variable, Operator)),
            (r"[^\W\d]\w*\*", Name.Variable.Magic),
            (r"σ(?=\s*\()", Name.Builtin),
            (r"[^\W\d]\w*(?=\s*\()", Name.Function),
            (r"[^\W\d]\w*", Name),
            (r"->|\.\*|[⋆⊙∘×−+\-*/=]", Operator),
            (r"'", Operator),
            (r"[()\[\]{},:]", Punctuation),
        ],
    }

    def analyse_text(text):  # noqa: N805 (pygments calls it on the class)
        return 0.3 if text.lstrip().startswith(("cell ", "#")) and "weights" in text else 0.0
