"""Hand-written video predictors, the ground truth for the sequence model's tests.

Written from predrnn-pytorch's `RNN.forward` (core/models/predrnn.py) and `reshape_patch`
(core/utils/preprocess.py), with the ST-LSTM and ConvLSTM steps of tests/reference_cells.py
(themselves written from the gate equations in cells.md). Nothing here comes from `cellgen`.

The papers' code works channels-last on patched frames:

    frames (B, T, H, W, C) --reshape_patch--> (B, T, H/p, W/p, p·p·C) --permute--> NCHW
    for t in 0 … T-2:
        net = frames[:, t]                                  if t < input_length
              mask[:, t-input_length] · frames[:, t]
              + (1 − mask[:, t-input_length]) · x_gen       otherwise
        layer 0 reads net; layer l reads layer l-1's new h; m goes up the stack, and the top
        layer's m at t-1 comes back to layer 0 at t
        x_gen = conv_last(h of the top layer)               (1×1 conv, no bias)
    next_frames (B, T-1, H/p, W/p, p·p·C) --reshape_patch_back--> (B, T-1, H, W, C)
"""
import torch
import torch.nn.functional as F

from reference_cells import convlstm_step, stlstm_step


def reshape_patch(img, patch):
    """predrnn-pytorch's numpy reshape_patch, on a torch tensor: (B, T, H, W, C) → (B, T, H/p, W/p, p·p·C)."""
    b, t, h, w, c = img.shape
    a = img.reshape(b, t, h // patch, patch, w // patch, patch, c)
    a = a.permute(0, 1, 2, 4, 3, 5, 6)
    return a.reshape(b, t, h // patch, w // patch, patch * patch * c)


def reshape_patch_back(patches, patch):
    """The inverse: (B, T, H/p, W/p, p·p·C) → (B, T, H, W, C)."""
    b, t, hp, wp, channels = patches.shape
    c = channels // (patch * patch)
    a = patches.reshape(b, t, hp, wp, patch, patch, c)
    a = a.permute(0, 1, 2, 4, 3, 5, 6)
    return a.reshape(b, t, hp * patch, wp * patch, c)


def predrnn_forward(layer_params, w_last, frames_nchw, input_length, patch, mask=None, embed=None):
    """The papers' PredRNN over a whole sequence; returns predictions of frames 1 … T-1 as (B, T-1, C, H, W).

    layer_params: one dict of ST-LSTM weights per layer (symbols as in specs/predrnn.cell);
    w_last: conv_last's weight (patch²·C, hidden, 1, 1); mask: (B, T-1-input_length) of 0/1;
    embed: optional (weight, bias) of a 1×1 conv applied to every frame the bottom layer reads.
    """
    frames = reshape_patch(frames_nchw.permute(0, 1, 3, 4, 2), patch).permute(0, 1, 4, 2, 3)
    batch, total, _, height, width = frames.shape
    hidden = layer_params[0]["W_hi"].shape[0]
    zeros = lambda: frames.new_zeros(batch, hidden, height, width)  # noqa: E731
    h_t = [zeros() for _ in layer_params]
    c_t = [zeros() for _ in layer_params]
    memory = zeros()
    next_frames, x_gen = [], None
    for t in range(total - 1):
        if t < input_length:
            net = frames[:, t]
        elif mask is None:
            net = x_gen
        else:
            m = mask[:, t - input_length].view(-1, 1, 1, 1)
            net = m * frames[:, t] + (1 - m) * x_gen
        if embed is not None:
            net = F.conv2d(net, embed[0], embed[1])
        h_t[0], c_t[0], memory = stlstm_step(layer_params[0], net, h_t[0], c_t[0], memory)
        for i in range(1, len(layer_params)):
            h_t[i], c_t[i], memory = stlstm_step(layer_params[i], h_t[i - 1], h_t[i], c_t[i], memory)
        x_gen = F.conv2d(h_t[-1], w_last)
        next_frames.append(x_gen)
    out = torch.stack(next_frames, dim=1).permute(0, 1, 3, 4, 2)
    return reshape_patch_back(out, patch).permute(0, 1, 4, 2, 3)


def convlstm_forward(layer_params, w_last, frames_nchw, input_length, patch, mask=None):
    """The same predictor with stacked ConvLSTM layers (h, c per layer, no zigzag memory)."""
    frames = reshape_patch(frames_nchw.permute(0, 1, 3, 4, 2), patch).permute(0, 1, 4, 2, 3)
    batch, total, _, height, width = frames.shape
    hidden = layer_params[0]["W_hi"].shape[0]
    h_t = [frames.new_zeros(batch, hidden, height, width) for _ in layer_params]
    c_t = [frames.new_zeros(batch, hidden, height, width) for _ in layer_params]
    next_frames, x_gen = [], None
    for t in range(total - 1):
        if t < input_length:
            net = frames[:, t]
        elif mask is None:
            net = x_gen
        else:
            m = mask[:, t - input_length].view(-1, 1, 1, 1)
            net = m * frames[:, t] + (1 - m) * x_gen
        for i, p in enumerate(layer_params):
            h_t[i], c_t[i] = convlstm_step(p, net if i == 0 else h_t[i - 1], h_t[i], c_t[i])
        x_gen = F.conv2d(h_t[-1], w_last)
        next_frames.append(x_gen)
    out = torch.stack(next_frames, dim=1).permute(0, 1, 3, 4, 2)
    return reshape_patch_back(out, patch).permute(0, 1, 4, 2, 3)
