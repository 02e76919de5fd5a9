"""`cellgen fmt`: rewrite spec files in the canonical layout, comments kept.

    cellgen fmt FILE…              print the formatted text (FILE is left alone)
    cellgen fmt --check FILE…      exit 1 and name each file that is not formatted
    cellgen fmt --diff FILE…       print what would change, as a unified diff
    cellgen fmt --write FILE…      (-w) rewrite the files that are not formatted, in place

A formatter that rewrites files when run bare (black does) would overwrite a user's file the
first time they try it to see what it does; cellgen never overwrites a file unasked, so the
bare command prints, like gofmt and clang-format, and `--write` is the asking. A file is
rewritten atomically (cellgen/files.py) with its permissions, and only after the new text has
been parsed back to the same cell with every comment in it, so a formatter bug can fail the
command but never change what a spec means or lose a comment.

The layout is the printer's (cellgen/language/printer.py) with the comments and paragraph
breaks that cellgen/language/comments.py ties to the statements. A file keeps its spelling:
one whose code is plain ASCII stays ASCII (`sigmoid`, `*`), anything else is printed with
the Unicode operators; `--ascii` / `--unicode` choose. Formatting formatted text changes nothing.
"""
from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path
from typing import Optional

from cellgen.errors import CellgenError


def register_with_cli() -> None:
    from cellgen.cli import register

    register("fmt", "format spec files in the canonical layout, keeping comments (prints; --write rewrites)",
             configure, run)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help=".cell files")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--check", action="store_true", help="exit 1 if a file is not formatted; change nothing")
    what.add_argument("--diff", action="store_true", help="print a unified diff of what would change")
    what.add_argument("-w", "--write", action="store_true", help="rewrite the files in place (atomically)")
    spelling = parser.add_mutually_exclusive_group()
    spelling.add_argument("--ascii", dest="ascii", action="store_const", const=True,
                          help="print ASCII operators (sigmoid, *, .*, x)")
    spelling.add_argument("--unicode", dest="ascii", action="store_const", const=False,
                          help="print Unicode operators (σ, ⋆, ⊙, ×)")


def format_text(text: str, filename: str = "<string>", ascii: Optional[bool] = None) -> str:
    """The formatted text of a spec, checked to be the same cell with the same comments."""
    from cellgen.language.comments import collect_comments
    from cellgen.language.parser import parse
    from cellgen.language.printer import format_spec
    from cellgen.language.syntax import same_cell

    if "\0" in text:
        raise CellgenError(f"{filename} contains a NUL character; a spec is text")
    spec = parse(text, filename)
    comments = collect_comments(spec, text)
    if ascii is None:
        ascii = _code_is_ascii(text)
    formatted = format_spec(spec, ascii=ascii, comments=comments)
    again = parse(formatted, filename)
    if not same_cell(spec, again) or sorted(collect_comments(again, formatted).texts) != sorted(comments.texts):
        raise CellgenError(f"{filename}: the formatter would change this spec's meaning or lose a comment; "
                           "the file is left as it was (this is a bug in cellgen fmt: please report it)")
    return formatted


def _code_is_ascii(text: str) -> bool:
    """Whether the spec's code (not its comments or citation) is ASCII."""
    import re

    from cellgen.language.comments import scan_comments

    lines = text.splitlines()
    for comment in scan_comments(text):
        lines[comment.line - 1] = lines[comment.line - 1][:comment.column]
    return re.sub(r'"[^"\n]*"', "", "\n".join(lines)).isascii()


def _read_and_format(path: Path, ascii: Optional[bool]) -> tuple[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise CellgenError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise CellgenError(f"cannot read {path}: {error.strerror}") from None
    return text, format_text(text, str(path), ascii)


def run(args: argparse.Namespace) -> int:
    from cellgen.files import write_output_file

    status = 0
    for path in args.files:
        try:
            text, formatted = _read_and_format(path, args.ascii)
        except CellgenError as error:  # one bad file: say so, and go on with the others
            print(error.render(), file=sys.stderr)
            status = 1
            continue
        changed = formatted != text
        if args.check:
            if changed:
                print(f"would reformat {path}", file=sys.stderr)
                status = 1
        elif args.diff:
            sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), formatted.splitlines(True),
                                                       f"{path} (now)", f"{path} (formatted)"))
        elif args.write:
            if changed:  # --write is the asking: replace it (through a symlink, the file it names)
                write_output_file(path.resolve(), formatted, force=True)
                print(f"reformatted {path}", file=sys.stderr)
        else:
            sys.stdout.write(formatted)
    if args.check and status == 0:
        count = len(args.files)
        print(f"{count} file{'s' if count != 1 else ''} already formatted", file=sys.stderr)
    if status and args.write:
        print("the files named above were left as they were", file=sys.stderr)
    sys.stdout.flush()
    return status

