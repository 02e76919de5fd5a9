"""Reading a step's incoming state: the user's dict, or zeros at t = 0.

Generated code calls `initial_state` first thing; the standalone module file carries a copy
of it (it must need nothing but torch, and nothing else from this module).
"""
import torch


def initial_state(state, x, names, channels):
    """The tensors of `names` from `state`, or zeros shaped like `x` with `channels` when None.

    The zeros are in x's layout: NCHW states beside a channels-last x would make every op
    that meets them convert one or the other."""
    if state is None:
        channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        layout = torch.channels_last if channels_last else torch.contiguous_format
        return tuple(x.new_zeros((x.shape[0], c) + tuple(x.shape[2:])).contiguous(memory_format=layout)
                     for c in channels)
    return tuple(state[name] for name in names)
