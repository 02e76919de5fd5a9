"""Where the grammar and the shipped specs live, in a source checkout and when installed.

In the repository they sit at the top level (`grammars/`, `specs/`); a wheel carries them
inside the package as `cellgen/grammars` and `cellgen/specs` (see pyproject.toml).
"""
from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _data_dir(name: str) -> Path:
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"cellgen is installed without its {name}/ folder (looked in {_PACKAGE})")


def grammar_path() -> Path:
    return _data_dir("grammars") / "cell.lark"


def specs_dir() -> Path:
    return _data_dir("specs")


def shipped_specs() -> dict[str, Path]:
    """Shipped spec name (file stem, e.g. `convlstm`) → path."""
    return {p.stem: p for p in sorted(specs_dir().glob("*.cell"))}
