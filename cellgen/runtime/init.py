"""How a fresh cell's weights are initialised (shared by compiled and standalone modules)."""
import contextlib
import math

import torch


def init_weight_(tensor, kind):
    """In place: conv weights Kaiming-uniform (a = √5) as torch.nn.Conv*; biases uniform ±1/√C;
    elementwise weights (peepholes) zeros, so that they start out neutral; a LayerNorm's gain
    ones and its bias zeros, as torch.nn.LayerNorm."""
    with torch.no_grad():
        if kind == "norm_gain":
            torch.nn.init.ones_(tensor)
        elif kind == "norm_bias":
            torch.nn.init.zeros_(tensor)
        elif kind == "conv":
            torch.nn.init.kaiming_uniform_(tensor, a=math.sqrt(5))
        elif kind == "bias":
            bound = 1 / math.sqrt(tensor.shape[0])
            torch.nn.init.uniform_(tensor, -bound, bound)
        else:
            torch.nn.init.zeros_(tensor)
    return tensor


@contextlib.contextmanager
def one_thread():
    """Within the block torch runs on one thread. Initialising a cell is a few dozen fills and
    RNG draws of at most a few MB: on a busy machine waking torch's thread pool for each costs
    far more (a 1 MB fill: ~8 ms of CPU on two threads, 0.05 ms on one) than the work, and
    the values are the same (torch's CPU uniform_ draws serially whatever the thread count)."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
