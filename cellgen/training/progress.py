"""A progress bar for training: steps, loss, speed, time left, on stderr.

Speed is measured over the last `WINDOW` steps, so that it says how fast the run goes now
(another job on the machine, an evaluation) rather than on average since the start.

On a terminal the line redraws in place every step; otherwise (a log file, a test's pipe) a
full line is printed every `every` steps and at the end, so that logs stay readable.
"""
from __future__ import annotations

import sys
import time
from collections import deque
from typing import Optional, TextIO


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Progress:
    WIDTH = 24
    WINDOW = 20

    def __init__(self, total: int, start: int = 0, *, sequences_per_step: int = 1, every: Optional[int] = None,
                 stream: Optional[TextIO] = None, enabled: bool = True):
        self.total, self.start = total, start
        self.sequences_per_step = sequences_per_step
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.live = enabled and self.stream.isatty()
        self.every = every or max(1, (total - start) // 20)
        self.began = time.perf_counter()
        self.recent: deque[tuple[float, int]] = deque([(self.began, start)], maxlen=self.WINDOW + 1)
        self.recent_step = start
        self.drawn = False

    def line(self, step: int, loss: float) -> str:
        filled = int(self.WIDTH * step / max(1, self.total))
        now, (then, before) = time.perf_counter(), self.recent[0]
        elapsed = now - self.began
        rate = (step - before) / (now - then) if now > then else 0.0
        left = (self.total - step) / rate if rate > 0 else 0.0
        return (f"step {step:>{len(str(self.total))}}/{self.total} [{'#' * filled}{'.' * (self.WIDTH - filled)}] "
                f"loss {loss:.5f}  {rate:.2f} step/s  {rate * self.sequences_per_step:.1f} seq/s  "
                f"{'eta ' + format_duration(left) if step < self.total else 'in ' + format_duration(elapsed)}")

    def update(self, step: int, loss: float) -> None:
        if not self.enabled:
            return
        self.recent.append((time.perf_counter(), step))
        self.recent_step = step
        if self.live:
            self.stream.write("\r\033[K" + self.line(step, loss))
            self.drawn = True
        elif step == self.total or (step - self.start) % self.every == 0:
            self.stream.write(self.line(step, loss) + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        """A line of its own (an evaluation's result) without breaking the bar."""
        if not self.enabled:
            return
        if self.live and self.drawn:
            self.stream.write("\r\033[K")
        self.stream.write(text + "\n")
        self.stream.flush()
        # what came before the message (an evaluation) is not training speed
        self.recent.clear()
        self.recent.append((time.perf_counter(), self.recent_step))

    def close(self) -> None:
        if self.enabled and self.live and self.drawn:
            self.stream.write("\n")
            self.stream.flush()
