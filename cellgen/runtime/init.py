"""How a fresh cell's weights are initialised (shared by compiled and standalone modules)."""
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
