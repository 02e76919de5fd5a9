"""Comments and blank lines of a spec, found beside the AST and tied to its statements, so that
the printer can keep them (`cellgen fmt`).

The grammar ignores comments, and the AST holds no trace of them; rather than teach the parser
about them, this module reads them off the text (a `#` outside the header's citation starts
one, to the end of the line) and ties each to a statement by the statements' spans:

* a comment on a line of its own goes with the statement after it (`leading`), or, after the
  last statement of a block, a loop or the file, with that container (`closing`);
* a comment at the end of a line goes with the statement that line belongs to (`trailing`);
  a statement printed on one line has room for one, so the other comments inside a statement
  that was wrapped over several lines join its leading comments, in their order;
* a comment on a line that is no statement's (`weights`, a block's first line) goes with the
  next statement, or is the block's `opening` comment;
* comments above the header are the file's `preamble`; one on the header line trails it.

A statement also remembers whether a blank line came before it (and its leading comments):
the printer keeps one there, so that paragraphs of equations stay paragraphs. Ties are keyed
by `id()` of the AST nodes, so they hold for the AST they were made from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from cellgen.language import syntax as ast


@dataclass(frozen=True)
class Comment:
    line: int          # 1-based
    column: int        # 0-based, of the `#`
    text: str          # from `#` to the end of the line, trailing blanks dropped
    own_line: bool     # nothing but blanks before it


@dataclass
class Notes:
    """What goes around one statement (or container) when it is printed."""

    leading: list[str] = field(default_factory=list)
    trailing: Optional[str] = None
    blank_before: bool = False
    opening: Optional[str] = None               # a block's or loop's first line
    closing: list[str] = field(default_factory=list)  # before a container's `end` (or the file's end)


@dataclass
class SpecComments:
    preamble: list[str] = field(default_factory=list)
    preamble_blank_after: bool = False
    header: Optional[str] = None
    notes: dict[int, Notes] = field(default_factory=dict)   # id(statement or spec) → notes

    def of(self, node) -> Notes:
        return self.notes.get(id(node)) or Notes()

    @property
    def texts(self) -> list[str]:
        """Every comment kept, in no particular order (a check that none was lost)."""
        out = list(self.preamble) + ([self.header] if self.header else [])
        for notes in self.notes.values():
            out += notes.leading + notes.closing + [c for c in (notes.trailing, notes.opening) if c]
        return out


def scan_comments(text: str) -> list[Comment]:
    """Every comment of a spec: a `#` outside a "…" string, to the end of its line."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        quoted = False
        for column, char in enumerate(line):
            if char == '"':
                quoted = not quoted
            elif char == "#" and not quoted:
                found.append(Comment(number, column, line[column:].rstrip(), not line[:column].strip()))
                break
    return found


def collect_comments(spec: ast.CellSpec, text: str) -> SpecComments:
    """Tie every comment of `text` (the source of `spec`) to the header or a statement."""
    lines = text.splitlines()
    result = SpecComments()
    header = spec.span.line
    comments = scan_comments(text)
    for comment in comments:
        if comment.line < header:
            result.preamble.append(comment.text)
        elif comment.line == header:
            result.header = comment.text
    result.preamble_blank_after = bool(result.preamble) and any(
        not line.strip() for line in lines[max(c.line for c in comments if c.line < header):header - 1])
    body = [c for c in comments if c.line > header]
    _tie(spec.statements, body, result, container=spec, lines=lines)
    return result


def _children(statement) -> Optional[list]:
    if isinstance(statement, ast.BlockDef):
        return statement.body
    if isinstance(statement, ast.Loop):
        return statement.body
    return None


def _tie(statements: list, comments: list[Comment], result: SpecComments, container, lines: list[str]) -> None:
    ordered = sorted(statements, key=lambda s: s.span.line)
    inner: dict[int, list[Comment]] = {}
    starts = {id(s): s.span.line for s in ordered}   # first line of a statement with its leading comments
    inside: dict[int, list[Comment]] = {}             # comments on the lines of a (wrapped) statement
    for comment in comments:
        owner = next((s for s in ordered if s.span.line <= comment.line <= s.span.end_line), None)
        if owner is not None and _children(owner) is not None:
            if comment.line == owner.span.line and not comment.own_line:
                _notes(result, owner).opening = comment.text
            elif comment.line == owner.span.end_line and not comment.own_line:
                _notes(result, owner).trailing = comment.text
            else:
                inner.setdefault(id(owner), []).append(comment)
        elif owner is not None:
            inside.setdefault(id(owner), []).append(comment)
        else:
            following = next((s for s in ordered if s.span.line > comment.line), None)
            if following is None:
                _notes(result, container).closing.append(comment.text)
            else:
                _notes(result, following).leading.append(comment.text)
                starts[id(following)] = min(starts[id(following)], comment.line)
    for statement in ordered:
        within = inside.get(id(statement), [])
        if within:
            # Printed on one line, a statement has room for one end-of-line comment: the last,
            # if it ends a line; the others go above it, in their order.
            notes = _notes(result, statement)
            if not within[-1].own_line:
                notes.trailing = within.pop().text
            notes.leading += [c.text for c in within]
        first = starts[id(statement)]
        if first >= 2 and not lines[first - 2].strip():
            _notes(result, statement).blank_before = True
        children = _children(statement)
        if children is not None:
            _tie(children, inner.get(id(statement), []), result, container=statement, lines=lines)


def _notes(result: SpecComments, node) -> Notes:
    return result.notes.setdefault(id(node), Notes())
