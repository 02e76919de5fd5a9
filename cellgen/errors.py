"""What the user did wrong, said where and how to fix it.

Every mistake in a spec or on the command line is a `CellgenError`. It carries a `Span` into
the source text and renders like a compiler diagnostic::

    specs/bad.cell:7:11: error: unknown symbol `hiden`
        state h[hiden], c[hidden]
                ^^^^^
      did you mean `hidden`?

An error may point at a second place (`related`), e.g. both sides of a channel mismatch.
"""
from __future__ import annotations

import difflib
import re
import unicodedata
import functools
from dataclasses import dataclass, field
from typing import Iterable, Optional


@dataclass(frozen=True)
class Source:
    """The text of a spec and the name to show for it (a path, or `<string>`)."""

    name: str
    text: str

    def line(self, lineno: int) -> str:
        lines = self._lines
        return lines[lineno - 1] if 1 <= lineno <= len(lines) else ""

    @functools.cached_property
    def _lines(self) -> list[str]:
        # split once: lowering quotes the source in every message it prepares (a spec of N
        # lines would otherwise be split N times, quadratic in its length)
        return self.text.splitlines()


_EXCERPT_WIDTH = 160  # characters of a source line an excerpt shows


@dataclass(frozen=True)
class Span:
    """A range in a source: 1-based line and column of the start, and of the end (exclusive)."""

    source: Source
    line: int
    column: int
    end_line: int
    end_column: int

    def __repr__(self) -> str:  # short, so that ASTs print readably
        return f"Span({self.source.name}:{self.line}:{self.column})"

    @property
    def location(self) -> str:
        return f"{terminal_safe(self.source.name)}:{self.line}:{self.column}"

    def excerpt(self) -> str:
        """The source line and a caret line under the span (to the end of the line if it wraps).
        Control characters are shown escaped (`\\x1b`), and the caret counts their escapes."""
        text = self.source.line(self.line)
        start, end = self.column, self.end_column if self.end_line == self.line else len(text) + 1
        if len(text) > _EXCERPT_WIDTH:  # a line of thousands of characters: show the part around the span
            first = max(0, start - 1 - _EXCERPT_WIDTH // 4)
            last = min(len(text), first + _EXCERPT_WIDTH)
            text = ("…" if first else "") + text[first:last] + ("…" if last < len(text) else "")
            shift = first - (1 if first else 0)
            start, end = start - shift, min(end - shift, len(text) + 1)
        before = terminal_safe(text[: start - 1])
        width = max(1, len(terminal_safe(text[start - 1 : end - 1])))
        indent = "".join(ch if ch == "\t" else " " for ch in before)
        return f"    {terminal_safe(text)}\n    {indent}{'^' * width}"


@dataclass
class Note:
    """A second place that explains the first (`where the other value comes from`)."""

    message: str
    span: Optional[Span]


@dataclass
class Diagnostic:
    severity: str  # "error" | "warning"
    message: str
    span: Optional[Span] = None
    expected: Optional[str] = None
    hint: Optional[str] = None
    related: list[Note] = field(default_factory=list)

    def render(self) -> str:
        """The diagnostic as the terminal shows it. Spec text and paths in it are the user's (or
        an attacker's): control characters are escaped, so no ANSI sequence reaches the terminal."""
        head = f"{self.severity}: {terminal_safe(self.message)}"
        parts = [f"{self.span.location}: {head}" if self.span else head]
        if self.span:
            parts.append(self.span.excerpt())
        if self.expected:
            parts.append(f"  expected {terminal_safe(self.expected)}")
        for note in self.related:
            if note.span:
                parts.append(f"{note.span.location}: note: {terminal_safe(note.message)}")
                parts.append(note.span.excerpt())
            else:
                parts.append(f"  note: {terminal_safe(note.message)}")
        if self.hint:
            parts.append(f"  {terminal_safe(self.hint)}")
        parts += lookalike_notes(self.span)
        return "\n".join(parts)


class CellgenError(Exception):
    """A user mistake: bad spec text, bad parameter, bad command line."""

    def __init__(self, message: str, span: Optional[Span] = None, *, expected: Optional[str] = None,
                 hint: Optional[str] = None, related: Iterable[Note] = ()):
        self.diagnostic = Diagnostic("error", message, span, expected, hint, list(related))
        super().__init__(self.diagnostic.render())

    @property
    def message(self) -> str:
        return self.diagnostic.message

    @property
    def span(self) -> Optional[Span]:
        return self.diagnostic.span

    @property
    def hint(self) -> Optional[str]:
        return self.diagnostic.hint

    def render(self) -> str:
        return self.diagnostic.render()


class CellgenSyntaxError(CellgenError):
    """The text does not follow the grammar."""


class UnknownSymbolError(CellgenError):
    """A name that is not a param, input, state, weight or earlier equation."""


class UnknownFunctionError(CellgenError):
    """A call to a function cellgen does not know."""


class ArityError(CellgenError):
    """A function called with the wrong number of arguments."""


class RedefinitionError(CellgenError):
    """The same name declared or assigned twice."""


class CyclicDefinitionError(CellgenError):
    """Equations that depend on each other in a circle."""


class ChannelMismatchError(CellgenError):
    """Two places that demand different channel counts of the same tensor."""


class ShapeError(CellgenError):
    """A shape or channel count that cannot be inferred or does not fit."""


class StateNotUpdatedError(CellgenError):
    """A state with no equation for its next value."""


class TypeMismatchError(CellgenError):
    """An operand of the wrong kind: a conv whose left side is not a conv weight, and the like."""


class ParamError(CellgenError):
    """A bad `param` value: unknown name, missing value, not an integer."""


class SpecNotFoundError(CellgenError):
    """A spec name or path that names no spec."""


class CellgenWarning(UserWarning):
    """Something legal but probably wrong: an unused gate or weight."""

    def __init__(self, message: str, span: Optional[Span] = None, hint: Optional[str] = None):
        self.diagnostic = Diagnostic("warning", message, span, hint=hint)
        super().__init__(self.diagnostic.render())


# C0 and C1 controls (ESC starts every ANSI sequence; BEL, backspace and CR rewrite what is
# shown), DEL, and the bidirectional overrides that make text read otherwise than it runs.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def terminal_safe(text: str) -> str:
    """`text` with every control character but tab and newline written as its escape
    (`\\x1b`, `\\u202e`), so that echoing user text cannot drive the terminal."""
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


# Characters that look like ASCII (or like nothing) and so make a spec fail for no visible
# reason: the Latin letter each Greek or Cyrillic one passes for, or what an invisible one is.
_LOOKALIKES = {
    **{greek: latin for greek, latin in zip("ΑΒΕΖΗΙΚΜΝΟΡΤΥΧοινυκρ", "ABEZHIKMNOPTYXoivukp")},
    **{cyrillic: latin for cyrillic, latin in zip("АВЕКМНОРСТХаеорсухіјѕԁԛԝ", "ABEKMHOPCTXaeopcyxijsdqw")},
    "\u00a0": " ", "\u2000": " ", "\u2001": " ", "\u2002": " ", "\u2003": " ", "\u2007": " ", "\u2009": " ",
    "\u200a": " ", "\u202f": " ", "\u3000": " ", "\u200b": "", "\u200c": "", "\u200d": "", "\u2060": "",
    "\ufeff": "", "\u00ad": "", "\u2010": "-", "\u2011": "-", "\u2013": "-", "\uff1d": "=",
}


def lookalike_notes(span: Optional[Span], limit: int = 3) -> list[str]:
    """Notes naming the lookalike or invisible characters of the span's line (else of the whole
    source), so that `unknown symbol `о`` says that this `о` is Cyrillic."""
    if span is None:
        return []
    found, seen = [], set()
    lines = span.source.text.splitlines()
    if not any(char in _LOOKALIKES for char in span.source.text):  # the usual case: one scan, nothing to say
        return []
    order = [span.line] + [n for n in range(1, len(lines) + 1) if n != span.line]
    for lineno in order:
        for column, char in enumerate(lines[lineno - 1] if 1 <= lineno <= len(lines) else "", start=1):
            if char in _LOOKALIKES and char not in seen:
                seen.add(char)
                found.append((lineno, column, char))
        if found and lineno == span.line:
            break  # the line of the error explains it; other lines would only distract
        if len(found) >= limit:
            break
    notes = []
    for lineno, column, char in found[:limit]:
        name = unicodedata.name(char, f"U+{ord(char):04X}")
        looks = _LOOKALIKES[char]
        what = (f"which looks like `{looks}`" if looks.strip() else
                "a space that is not one" if looks == " " else "an invisible character")
        notes.append(f"{terminal_safe(span.source.name)}:{lineno}:{column}: note: this line holds U+{ord(char):04X} "
                     f"{name}, {what}")
    return notes


def did_you_mean(name: str, candidates: Iterable[str]) -> Optional[str]:
    """`did you mean `hidden`?` for the closest candidate, or None if nothing is close."""
    matches = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean `{matches[0]}`?" if matches else None


def span_text(span: Optional[Span]) -> str:
    """The source text a span covers (its first line if it wraps)."""
    if span is None:
        return "?"
    text = span.source.line(span.line)
    end = span.end_column if span.end_line == span.line else len(text) + 1
    return text[span.column - 1 : end - 1]
