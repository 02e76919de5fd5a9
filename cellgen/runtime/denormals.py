"""Flush denormal floats to zero, on every thread torch computes on.

A trained recurrent cell's states and Adam's second moments drift into denormal floats
(magnitudes below 1.2e-38 in fp32), and x86 arithmetic on them takes a slow microcode path:
a 4-layer PredRNN training step here went from 2.8 s to 22 s after a few Adam steps. Setting
the CPU's flush-to-zero and denormals-are-zero bits (`torch.set_flush_denormal(True)`) keeps
it at 2.8 s, but the bits are per thread. Threads created later inherit them from the thread
that creates them, so they must be set before torch starts its intra-op thread pool (its
first parallel op): set later, only the calling thread flushes, and every op torch splits
over its workers still runs at the slow speed on their share.

`cellgen train`, `eval`, `export` and `bench` call `flush_denormals()` first thing. Python
users call it once, before their first torch op:

    import cellgen.runtime.denormals
    cellgen.runtime.denormals.flush_denormals()   # True: every intra-op thread flushes

Plain torch, no cellgen imports: it is a process setting, not part of any model. torch is
imported inside the functions, because the CLI imports this module to build its parser.
"""
from __future__ import annotations

# a product of normal numbers that is denormal (1e-30 · 1e-9 = 1e-39 < 1.18e-38): zero where
# the computing thread flushes
_NORMAL, _FACTOR = 1e-30, 1e-9
# elements per probe: far above torch's grain size (32768), so the op is cut over every thread
_PROBE_SIZE = 1 << 20


def flush_denormals() -> bool:
    """Flush denormals to zero in this thread and in the threads torch starts from now on.

    Returns whether every intra-op thread now flushes (`threads_flush_denormals`): False when
    torch's thread pool was already running before this call, or on a CPU without the
    setting (then nothing changes).
    """
    import torch

    if not torch.set_flush_denormal(True):
        return False
    return threads_flush_denormals()


def threads_flush_denormals(threads: int | None = None) -> bool:
    """Whether an elementwise op cut over `threads` intra-op threads (default: torch's) yields
    zeros, not denormals, in every thread's share of the result."""
    import torch

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        x = torch.full((_PROBE_SIZE,), _NORMAL, dtype=torch.float32)
        return bool((torch.mul(x, _FACTOR) == 0).all())
    finally:
        if threads is not None:
            torch.set_num_threads(previous)


def flushing_denormals(run):
    """`run` (a CLI command) with denormals flushed before it starts: the commands that compute
    call it before their first torch op, so torch's thread pool starts with the setting."""
    import functools

    @functools.wraps(run)
    def wrapped(*args, **kwargs):
        flush_denormals()
        return run(*args, **kwargs)

    return wrapped
