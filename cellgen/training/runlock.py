"""One training at a time in a run directory.

Two `cellgen train … --out DIR` at once would both write DIR/checkpoint.pt and metrics.json,
each replacing the other's, and both exit 0: one run is lost without a word. The first takes
an exclusive `fcntl.flock` on `DIR/.cellgen-run.lock` for as long as it runs; the second gets
a clear error naming the first's pid. The kernel drops the lock when its holder dies, however
it dies (kill -9 included), so a crashed run never leaves a directory locked. The lock file
itself stays (removing it would race with a third run taking it) and is not "a file in the
directory" for the check that refuses to start a new run over an old one.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from cellgen.errors import CellgenError

LOCK_FILE = ".cellgen-run.lock"


@contextlib.contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold the run directory `out` (made if missing) for the duration of the block."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise CellgenError(f"cannot use --out {out}: {error.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            raise CellgenError(f"--out {out} is in use: another `cellgen train` (pid {holder}) is writing to it",
                               hint="wait for it to finish, or give this run another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
