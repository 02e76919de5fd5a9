"""Where cellgen may write a file it was asked to write (`-o FILE`, `bench --json FILE`, …).

A target is written by renaming a finished temp file over it (cellgen/files.py). That is right
for a regular file and wrong for anything else: renamed over `/dev/null` (as root) it replaces
the device node with a regular file; over a FIFO, the reader never sees the data; over a
symlink, the link is replaced and the file it pointed at keeps its old content. So:

- a directory, device, FIFO or socket is refused, with or without --force;
- an existing regular file is replaced only with --force;
- a symlink to a regular file is followed: the file it points at is replaced (atomically,
  beside itself) and the link stays a link; a dangling link, or one to anything else, is refused.

Checked before the work that produces the content, so a wrong target fails in a second, not
after a benchmark.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from cellgen.errors import CellgenError

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def check_target(path: Path, force: bool, flag: str = "--force") -> Path:
    """The file to write for target `path` (the file a symlink points at), or a CellgenError."""
    path = Path(path)
    if not os.path.lexists(path):
        if not path.parent.is_dir():
            raise CellgenError(f"cannot write {path}: {path.parent} is not a directory")
        return path
    real = path
    if path.is_symlink():
        real = Path(os.path.realpath(path))
        if not real.exists():
            raise CellgenError(f"cannot write {path}: it is a symlink to {real}, which does not exist")
    mode = os.stat(real).st_mode
    if not stat.S_ISREG(mode):
        where = f"{path} (a symlink to {real})" if real != path else str(path)
        raise CellgenError(f"cannot write {where}: it is {_kind(mode)}, not a regular file",
                           hint="cellgen writes a file by replacing it whole; name a regular file")
    if not force:
        raise CellgenError(f"{path} already exists; not overwriting it", hint=f"pass {flag} to replace it")
    return real
