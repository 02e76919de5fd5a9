"""Workers of a torchrun launch stop when their agent dies.

torchrun's agent starts the worker processes and is the only one that stops them. If the agent
is killed (kill -9, an OOM kill, a lost ssh session), the workers are re-parented and train on
as orphans: holding the devices, writing the run directory, and waiting on peers that may be
gone. Each worker started by torchrun (TORCHELASTIC_RUN_ID is set) runs a daemon thread that
checks once a second whether its parent is still the process that started it, and exits the
worker (status 1, a message on stderr) when it is not.
"""
from __future__ import annotations

import os
import sys
import threading
import time

INTERVAL = 1.0  # seconds between checks


def watch_parent(interval: float = INTERVAL) -> threading.Thread | None:
    """Start the watchdog if this process was launched by torchrun; returns its thread."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return None
    parent = os.getppid()

    def watch():
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                print(f"error: torchrun's agent (pid {parent}) is gone; worker {os.getpid()} stops",
                      file=sys.stderr, flush=True)
                os._exit(1)  # no cleanup can wait on peers that are gone

    thread = threading.Thread(target=watch, name="cellgen-parent-watchdog", daemon=True)
    thread.start()
    return thread
