"""A staging place for a result that is checked before it replaces its target (`cellgen export`).

The result is written into a directory beside the target (so the final `os.replace` is an
atomic rename on one file system) named `.NAME.cellgen-stage-PID-RANDOM`, which no user file
is: the exporter may write there whatever it likes (its own temp files, an ONNX file's external
data) without touching the user's. The directory is removed when the block ends, however it
ends (an error, Ctrl-C, SIGTERM via signals.terminate_raises). Only kill -9 can orphan one; the
next staging in the same directory removes the orphans whose process is gone.
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Iterator

_MARK = "cellgen-stage-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphans(target: Path) -> list[Path]:
    """Delete the staging directories beside `target` (of any target there) left by processes
    that no longer exist."""
    removed = []
    pattern = re.compile(r"\..+\." + re.escape(_MARK) + r"(\d+)-[0-9a-f]{8}$")
    for candidate in target.parent.glob(f".*.{_MARK}*"):
        match = pattern.match(candidate.name)
        if match and candidate.is_dir() and not candidate.is_symlink() and not _alive(int(match.group(1))):
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
    return removed


@contextlib.contextmanager
def staged(target: Path) -> Iterator[Path]:
    """A path to write `target`'s new content to; nothing of the staging is left after the block."""
    target = Path(target)
    remove_orphans(target)
    directory = target.parent / f".{target.name}.{_MARK}{os.getpid()}-{secrets.token_hex(4)}"
    directory.mkdir(mode=0o700)
    try:
        yield directory / target.name
    finally:
        shutil.rmtree(directory, ignore_errors=True)
