"""Reading a step's incoming state: the user's dict, or zeros at t = 0.

Generated code calls `initial_state` first thing; the standalone module file carries a copy
of it (it must need nothing but torch).
"""
import torch


def initial_state(state, x, names, channels):
    """The tensors of `names` from `state`, or zeros shaped like `x` with `channels` when None."""
    if state is None:
        return tuple(x.new_zeros((x.shape[0], c) + tuple(x.shape[2:])) for c in channels)
    return tuple(state[name] for name in names)
