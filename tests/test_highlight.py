"""Editors: the Pygments lexer (registered by entry point) and the VS Code TextMate grammar
colour every shipped spec without an error token or an uncoloured character."""
import json
import re
from pathlib import Path

import pytest

pygments = pytest.importorskip("pygments")
from pygments.lexers import get_lexer_by_name, get_lexer_for_filename  # noqa: E402
from pygments.token import Comment, Error, Keyword, Name, Number, String  # noqa: E402

from cellgen.language.highlight import DECLARATIONS, TYPE_WORDS, CellLexer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.cell")) + sorted((ROOT / "docs" / "examples").glob("*.cell"))
GRAMMAR = ROOT / "editors" / "vscode" / "syntaxes" / "cell.tmLanguage.json"


def test_the_entry_point_finds_the_lexer():
    assert isinstance(get_lexer_by_name("cell"), CellLexer)
    assert isinstance(get_lexer_for_filename("convlstm.cell"), CellLexer)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_every_shipped_spec_lexes_without_an_error_token(path):
    text = path.read_text(encoding="utf-8")
    tokens = list(get_lexer_by_name("cell").get_tokens(text))
    errors = [value for kind, value in tokens if kind in Error]
    assert not errors, f"{path.name}: error tokens {errors[:10]}"
    assert "".join(value for _, value in tokens) == text if text.endswith("\n") else text + "\n"


def test_tokens_are_what_they_look_like():
    text = ('cell ConvLSTM "Shi et al."  # a comment\n  param k = 5\n  weights\n    W_x* : conv 3×3\n'
            "  c' = σ(W_x ⋆ x) ⊙ c + 1.5e3\n")
    kinds = {value: kind for kind, value in get_lexer_by_name("cell").get_tokens(text)}
    assert kinds["cell"] in Keyword and kinds["param"] in Keyword and kinds["conv"] in Keyword
    assert kinds['"Shi et al."'] in String and kinds["# a comment"] in Comment
    assert kinds["W_x*"] in Name and kinds["3×3"] in Number and kinds["1.5e3"] in Number
    assert kinds["σ"] in Name.Builtin


def test_a_character_no_token_allows_is_an_error_token():
    tokens = list(get_lexer_by_name("cell").get_tokens("h' = tanh($x)\n"))
    assert [value for kind, value in tokens if kind in Error] == ["$"]


# --- the TextMate grammar (editors/vscode) ------------------------------------------------------

def _patterns(grammar: dict) -> list[tuple[str, re.Pattern]]:
    """The top-level patterns in order, includes resolved, as Python regexes (the grammar uses
    only syntax that Oniguruma and Python read alike)."""
    out = []

    def add(pattern):
        if "include" in pattern:
            add(grammar["repository"][pattern["include"].lstrip("#")])
        elif "patterns" in pattern:
            for inner in pattern["patterns"]:
                add(inner)
        else:
            out.append((pattern.get("name") or pattern["captures"]["1"]["name"], re.compile(pattern["match"])))

    for pattern in grammar["patterns"]:
        add(pattern)
    return out


def test_the_textmate_grammar_knows_the_lexers_words():
    grammar = json.loads(GRAMMAR.read_text(encoding="utf-8"))
    words = lambda key: set(re.search(r"\\b\((.*)\)\\b", grammar["repository"][key]["match"]).group(1).split("|"))  # noqa: E731
    assert words("keyword") == set(DECLARATIONS) and words("type") == set(TYPE_WORDS)
    package = json.loads((GRAMMAR.parent.parent / "package.json").read_text(encoding="utf-8"))
    assert package["contributes"]["grammars"][0]["scopeName"] == grammar["scopeName"]


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_the_textmate_grammar_colours_every_character_of_a_shipped_spec(path):
    """A line-by-line TextMate scan (the first pattern matching at each position wins):
    every character that is not white space gets a scope, and each comment is one."""
    patterns = _patterns(json.loads(GRAMMAR.read_text(encoding="utf-8")))
    uncoloured, comments = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        position = 0
        while position < len(line):
            for scope, regex in patterns:
                match = regex.match(line, position)
                if match and match.end() > position:
                    if scope.startswith("comment"):
                        comments.append(match.group())
                    position = match.end()
                    break
            else:
                if not line[position].isspace():
                    uncoloured.append(f"{number}:{position + 1} {line[position]!r}")
                position += 1
    assert not uncoloured, f"{path.name}: {uncoloured[:10]}"
    assert len(comments) == path.read_text(encoding="utf-8").count("#")
