"""SIGINT and SIGTERM as requests to stop cleanly, not as deaths mid-write.

During training (`stop_requests`), the first SIGINT or SIGTERM only sets a flag: the step in
flight finishes, the trainer writes a checkpoint at that step, says so, and the command exits
with 128 + the signal's number (130, 143), as a shell expects of a process a signal stopped.
Because the handler raises nothing, a signal that arrives while a checkpoint is being written
cannot tear it or print a traceback; the write completes and the run stops after it. A second
signal means "now": it raises `Interrupted` (a KeyboardInterrupt), whatever is being written
is abandoned through its temp file (cellgen/files.py), and the last whole checkpoint stays.

Elsewhere (`terminate_raises`, for export), SIGTERM raises `Interrupted` at once, so that
`finally` blocks run and remove the temp files they own, as they do for Ctrl-C.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator, Optional

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A stop by signal; the CLI exits with 128 + `signum`."""

    def __init__(self, signum: int, message: str = ""):
        super().__init__(message or f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


class StopRequest:
    """Set by the first SIGINT/SIGTERM of a training run; read by the trainer after every step."""

    def __init__(self):
        self.signum: Optional[int] = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""


_current = StopRequest()  # no handlers installed: never requested


def current() -> StopRequest:
    return _current


@contextlib.contextmanager
def stop_requests() -> Iterator[StopRequest]:
    """Within: the first SIGINT/SIGTERM sets the flag, a second raises Interrupted."""
    global _current
    if threading.current_thread() is not threading.main_thread():  # handlers can only live there
        yield _current
        return
    request = StopRequest()

    def handle(signum, frame):
        if request.requested:
            raise Interrupted(signum)
        request.signum = signum

    previous = {s: signal.signal(s, handle) for s in SIGNALS}
    saved, _current = _current, request
    try:
        yield request
    finally:
        _current = saved
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def terminate_raises() -> Iterator[None]:
    """Within: SIGTERM raises Interrupted, as SIGINT raises KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum, frame):
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stop_agreed(dist) -> bool:
    """Whether the run stops after this step: a signal reached this process (or, under torchrun,
    any process; all must stop at the same step, or the others wait for it forever)."""
    asked = _current.requested
    return not dist.agree(not asked) if dist.active else asked


def stopped_at(step: int, checkpoint) -> Interrupted:
    """The exception that ends a run stopped by a signal after `step`, its checkpoint written."""
    signum = _current.signum or signal.SIGTERM  # under torchrun, a peer may have been the one signalled
    return Interrupted(signum, f"stopped after step {step}; wrote {checkpoint} at that step "
                               f"(continue with `cellgen train … --resume`)")
