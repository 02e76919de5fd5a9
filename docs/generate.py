"""Regenerate the examples in docs/*.md by running the commands they show.

A Markdown file marks each generated example with a comment naming the command:

    <!-- run: cellgen diff convlstm predrnn -p in_channels=1 -->
    ```text
    $ cellgen diff convlstm predrnn -p in_channels=1
    … what the command printed …
    [exit status 1]
    ```

    <!-- picture: cellgen show convlstm -p in_channels=1 -o docs/img/convlstm.svg -->

A `run:` marker's fenced block is replaced by the command and its output; a `picture:`
marker's command is run (with --force) to write the picture it names. Commands (`cellgen diff`,
`show` and `compile`) run from the repository's root, in this process, through the same
functions as the `cellgen` command.

    python docs/generate.py            rewrite the examples and pictures
    python docs/generate.py --check    exit 1 if a text example is out of date (pictures are
                                       only checked to exist: their bytes depend on Graphviz's version)
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "docs" / "diff.md"]

# the marker, then a fenced block: lines up to the first line that starts with ```
_RUN = re.compile(r"(<!-- run: (?P<command>.+?) -->\n)```text\n(?:(?!```).*\n)*```\n")
_PICTURE = re.compile(r"<!-- picture: (?P<command>.+?) -->")


def run(command: str) -> tuple[int, str, str]:
    """Run `cellgen diff|show|compile …` in this process; its exit status, stdout and stderr."""
    import warnings

    from cellgen.cli import main as cellgen_main
    from cellgen.tools.diff import diff_main
    from cellgen.tools.show import show_main

    words = shlex.split(command)
    if words[:1] != ["cellgen"] or len(words) < 2 or words[1] not in ("diff", "show", "compile"):
        raise SystemExit(f"docs/generate.py runs `cellgen diff|show|compile …`, not `{command}`")
    main = {"diff": diff_main, "show": show_main, "compile": lambda argv: cellgen_main(["compile", *argv])}[words[1]]
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    err = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        status = main(words[2:])
    out.flush()
    return status, out.buffer.getvalue().decode("utf-8"), err.getvalue()


def example(command: str) -> str:
    status, out, err = run(command)
    if err:
        raise SystemExit(f"`{command}` wrote to stderr:\n{err}")
    body = out.rstrip("\n")
    return f"```text\n$ {command}\n{body + chr(10) if body else ''}[exit status {status}]\n```\n"


def regenerate(text: str) -> str:
    return _RUN.sub(lambda m: m.group(1) + example(m.group("command")), text)


def pictures(text: str) -> list[str]:
    return [m.group("command") for m in _PICTURE.finditer(text)]


def picture_path(command: str) -> Path:
    words = shlex.split(command)
    return ROOT / words[words.index("-o") + 1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that the docs are up to date")
    args = parser.parse_args(argv)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    here = os.getcwd()
    os.chdir(ROOT)  # the examples show paths relative to the repository
    try:
        return _generate(args.check)
    finally:
        os.chdir(here)


def _generate(check: bool) -> int:
    stale = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        new = regenerate(text)
        if check:
            if new != text:
                stale.append(f"{doc.relative_to(ROOT)}: an example's output changed")
            stale += [f"{doc.relative_to(ROOT)}: missing picture {picture_path(c).relative_to(ROOT)}"
                      for c in pictures(text) if not picture_path(c).is_file()]
            continue
        doc.write_text(new, encoding="utf-8")
        for command in pictures(text):
            picture_path(command).parent.mkdir(parents=True, exist_ok=True)
            status, _, err = run(command + " --force")
            if status not in (0, 1) or err:
                raise SystemExit(f"`{command}` failed ({status}):\n{err}")
            print(f"wrote {picture_path(command).relative_to(ROOT)}")
        print(f"wrote {doc.relative_to(ROOT)}")
    if stale:
        print("\n".join(stale) + "\nrun `python docs/generate.py` to regenerate", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
