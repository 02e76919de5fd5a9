"""Files cellgen writes (`-o FILE`, a run's checkpoints, metrics and pictures), written so that
a crash (or kill -9) never leaves half of one.

Every file goes to a temp file in the same directory (same file system, so `os.replace` is an
atomic rename), is flushed and fsynced, and then replaces its target. A reader sees the old
file or the new one. A temp file orphaned by a kill is named `.NAME.cellgen-*.tmp` and removed by the
next run in that directory (`remove_stale_temp_files`).
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, IO

from cellgen.errors import CellgenError

TEMP_MARK = "cellgen-"  # in every temp file name written here, so that cleaning up removes only ours


def write_atomically(path: Path, write: Callable[[IO[bytes]], None], mode: int = 0o644) -> None:
    """Call `write(handle)` on a temp file beside `path`, then rename it over `path` with
    permissions `mode`; on any failure the temp file is removed and `path` left as it was."""
    path = Path(path)
    try:
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{TEMP_MARK}", suffix=".tmp")
    except OSError as error:
        raise CellgenError(f"cannot write {path}: {error.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if isinstance(error, OSError):
            raise CellgenError(f"cannot write {path}: {error.strerror or error}") from None
        raise


def check_writable(path: Path, force: bool) -> Path:
    """That `path` may be written as a command's `-o FILE`, and the file to write for it: never a
    directory, device or FIFO, an existing file only with `force`, a symlink to a file written
    through (see cellgen/targets.py)."""
    from cellgen.targets import check_target

    return check_target(Path(path), force)


def write_output_file(path: Path, data, *, force: bool = False) -> None:
    """A command's `-o FILE` (text or bytes), written atomically (see above): an existing file is
    replaced only with `force`, and the new file gets the usual permissions (umask), or those of
    the file it replaces."""
    path = check_writable(path, force)
    data = data.encode("utf-8") if isinstance(data, str) else data
    write_atomically(path, lambda handle: handle.write(data), mode=_mode_for(path))


def _mode_for(path: Path) -> int:
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_bytes_atomically(path: Path, data: bytes) -> None:
    write_atomically(path, lambda handle: handle.write(data))


def write_json_atomically(path: Path, value) -> None:
    text = json.dumps(value, indent=2, sort_keys=False) + "\n"
    write_bytes_atomically(path, text.encode("utf-8"))


def is_own_temp_file(name: str) -> bool:
    """A temp file of `write_atomically` (`.NAME.cellgen-XXXXXXXX.tmp`), never a user's `.x.tmp`."""
    return name.startswith(".") and name.endswith(".tmp") and f".{TEMP_MARK}" in name


def remove_stale_temp_files(directory: Path) -> list[Path]:
    """Delete the `.NAME.cellgen-*.tmp` files a killed run left in `directory` (only those:
    a user's own `.notes.tmp` stays); returns what was removed."""
    removed = []
    for candidate in Path(directory).glob(f".*.{TEMP_MARK}*.tmp"):
        with contextlib.suppress(OSError):
            candidate.unlink()
            removed.append(candidate)
    return removed
