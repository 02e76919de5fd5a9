"""Python's cyclic garbage collector, paused while the compiler builds a cell."""
from __future__ import annotations

import contextlib
import gc


@contextlib.contextmanager
def paused():
    """Within the block the cyclic collector does not run. Each older-generation collection
    rescans every live object, and lowering, the passes and codegen make thousands of small
    long-lived ones (nodes' dicts, AST nodes, fx nodes): with it running, lowering grows
    faster than the spec (bench/lowering_scale.py) and a compile pays several ms of pauses.
    What cycles the block leaves are collected after it, at the collector's next turn."""
    running = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if running:
            gc.enable()
