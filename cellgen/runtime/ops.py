"""The few operations generated code calls that are more than one torch call.

Each is plain torch with no cellgen imports, because `cellgen compile --emit module` copies
them into a standalone file. A *stack* is a tensor with one extra axis after the batch,
(B, N, C, …): a state's history, or `stack(h, c)` (see cellgen/ir/layout.py).
"""
import contextlib
from itertools import groupby

import torch
import torch.nn.functional as F


def read_history(state, name, current):
    """The past values of state `name` the step reads, oldest first, as a stack (B, N, C, …).

    The entry `NAME.history` of the incoming state holds them, the newest being `current`
    (the state's value at t-1); at t = 0, or when a caller's state dict lacks the entry, the
    history is just `current`.
    """
    if state is None or f"{name}.history" not in state:
        return current.unsqueeze(1)
    return state[f"{name}.history"]


def read_full_history(state, name, current, size, before):
    """A history that holds `size` entries from the first step (docs/histories.md): the state
    dict's `NAME.history`, else zero maps — `size` of them before an input's first value
    (`before` True: the entries are past inputs), `size` − 1 and then the state's value for a
    state's `history τ init zeros`."""
    if state is not None and f"{name}.history" in state:
        return state[f"{name}.history"]
    zeros = current.new_zeros((current.shape[0], size - (not before)) + tuple(current.shape[1:]))
    return zeros if before else torch.cat([zeros, current.unsqueeze(1)], 1)


def push_history(history, value, size):
    """The history handed to the next step: `value` appended, the oldest dropped beyond
    `size` entries (None: keep every one). `cat` copies, so every entry is its own tensor."""
    history = torch.cat([history, value.unsqueeze(1)], 1)
    # a negative start clamps to 0 when fewer are kept: no branch on a shape, so a traced
    # (jit.trace, ONNX) step stays right as the history grows
    return history if size is None else history[:, -size:]


def latest(history, size):
    """The newest `size` entries of a history (all of them when it holds fewer)."""
    return history[:, -size:]


def stacked_conv(x, weight, bias, padding, stride=1):
    """A conv applied to every map of a stack (B, N, C, …) → (B, N, C', …)."""
    y = _conv(x.flatten(0, 1), weight, bias, padding, stride)
    return y.unflatten(0, (x.shape[0], x.shape[1]))


def resize_nearest(y, like, dims, stacked):
    """`y` resized (nearest) to the size of `like` along its last `dims` axes, as OpenSTL's
    tf_Conv3d resizes a conv's result back to its input's (T, H, W); a stack map by map."""
    size = like.shape[-dims:]
    if stacked:
        return F.interpolate(y.flatten(0, 1), size=size, mode="nearest").unflatten(0, y.shape[:2])
    return F.interpolate(y, size=size, mode="nearest")


def attention(q, k, v, q_stacked, kv_stacked, patches):
    """softmax(q kᵀ) v with one token per position, channels as features; no scaling.

    Tokens are every position of the map (T, H, W) and of the stack when there is one, so a
    query map attends over all N·T·H·W positions of a stack of keys (E3D-LSTM's RECALL).
    With `patches` = s the H×W plane is cut into s×s patches and tokens attend only within
    their own patch (CMS-LSTM's SE block). The result has the query's positions and the
    values' channels (queries and keys may be narrower than values: SA-ConvLSTM's Ĉ).
    """
    q = q if q_stacked else q.unsqueeze(1)
    k = k if kv_stacked else k.unsqueeze(1)
    v = v if kv_stacked else v.unsqueeze(1)
    shape = (*q.shape[:2], v.shape[2], *q.shape[3:])  # the queries' positions, the values' channels
    q, k, v = (_patch_tokens(t, patches) for t in (q, k, v))
    weights = torch.softmax(q @ k.transpose(1, 2), dim=-1)
    out = _untokens(weights @ v, shape, patches)
    return out if q_stacked else out.squeeze(1)


def attention_reshape(q, k, v):
    """OpenSTL's E3D RECALL: q, k, v (B, C_·, …) each reshaped to (B, −1, C) as they lie in
    memory — no permute, so a token mixes channels and positions; k and v may hold several
    maps joined on channels. softmax(q kᵀ) over keys, no scaling; the result in q's shape."""
    b, c = q.shape[:2]
    tokens = [t.reshape(b, -1, c) for t in (q, k, v)]
    weights = torch.softmax(tokens[0] @ tokens[1].transpose(1, 2), dim=-1)
    return (weights @ tokens[2]).reshape(q.shape)


def _patch_tokens(x, s):
    """(B, N, C, *S, H, W) → (B·s·s, N·prod(S)·(H/s)·(W/s), C): the tokens of each patch."""
    b, n, c = x.shape[:3]
    *rest, h, w = x.shape[3:]
    x = x.reshape(b, n, c, *rest, s, h // s, s, w // s)
    dims = len(rest)
    # (B, s_h, s_w, N, *S, h, w, C)
    order = [0, 3 + dims, 5 + dims, 1, *range(3, 3 + dims), 4 + dims, 6 + dims, 2]
    x = x.permute(order)
    return x.reshape(b * s * s, -1, c)


def _untokens(tokens, shape, s):
    b, n, c = shape[:3]
    *rest, h, w = shape[3:]
    dims = len(rest)
    x = tokens.reshape(b, s, s, n, *rest, h // s, w // s, c)
    # back to (B, N, C, *S, s_h, h, s_w, w)
    order = [0, 3, 6 + dims, *range(4, 4 + dims), 1, 4 + dims, 2, 5 + dims]
    return x.permute(order).reshape(shape)


def layer_norm(x, gain, bias, dims, eps, channel_dim):
    """Normalise over `dims` jointly (biased variance), then a gain and bias per channel —
    TensorFlow's layer_norm over (C, T, H, W) as E3D-LSTM's code uses it."""
    variance, mean = torch.var_mean(x, dim=dims, unbiased=False, keepdim=True)
    view = [1] * x.dim()
    view[channel_dim] = -1
    return (x - mean) * torch.rsqrt(variance + eps) * gain.view(view) + bias.view(view)


def chunk(x, count, index, dim):
    """Piece `index` of `count` equal pieces of `x` along `dim`."""
    if x.shape[dim] % count:
        raise ValueError(f"cannot cut {x.shape[dim]} positions along dim {dim} into {count} equal pieces")
    size = x.shape[dim] // count
    return x.narrow(dim, index * size, size)


def conv_of_concat(parts, weight, bias, padding):
    """conv(cat(parts), weight, bias): the conv sum fusion makes of `W_x ⋆ x + W_h ⋆ h`.

    Its backward computes an input gradient only for the parts that need one. A plain conv of
    the concatenation would compute the gradient of all of it, x's share included, although a
    first layer's x needs none: that waste made the fused step slower to train than the two
    convs it replaces. Traced or exported steps take the plain conv, which has no Python op.

    Under `torch.autocast` it computes as autocast's conv would (inputs, weight and bias cast
    to the autocast dtype, output in it) and its backward in that dtype too, each gradient
    returned in its input's own dtype (fp32 master weights get fp32 gradients). It also
    runs under torch.func (grad, vjp, vmap): the vmap rule is generated from the ops.
    """
    if not torch.is_grad_enabled() or torch.jit.is_tracing() or torch.compiler.is_exporting():
        return _conv(torch.cat(parts, 1), weight, bias, padding)
    return _ConvOfConcat.apply(weight, bias, tuple(padding), _autocast_dtype(weight), *parts)


def _autocast_dtype(tensor):
    """The dtype autocast computes a conv in on this tensor's device, or None outside autocast."""
    device = tensor.device.type
    if device not in ("cpu", "cuda", "xpu", "mps") or not torch.is_autocast_enabled(device):
        return None
    return torch.get_autocast_dtype(device)


def _cast(tensor, dtype):
    return tensor if dtype is None or tensor is None or not tensor.is_floating_point() else tensor.to(dtype)


def _conv(x, weight, bias, padding, stride=1):
    """A 2D or 3D conv, as the weight says (stride 1 unless given)."""
    return (F.conv2d if weight.dim() == 4 else F.conv3d)(x, weight, bias, stride, padding)


@contextlib.contextmanager
def casts_once():
    """Within the block, the fused conv's forward casts each weight and bias to the autocast
    dtype once and reuses the copy: a rollout's steps share their parameters, and autocast's
    own cache of casts does not reach a custom function's forward. The cast is the same, and
    the backward (which runs after the block) casts as before and returns each gradient in its
    weight's own dtype, so values and gradients are unchanged: fp32 master weights still sum
    fp32 gradients over the steps."""
    if _ParameterCasts.active is not None:
        yield
        return
    _ParameterCasts.active = {}
    try:
        yield
    finally:
        _ParameterCasts.active = None


class _ParameterCasts:
    # While a `casts_once()` block runs: {(id of a weight or bias, dtype): (it, its cast)}.
    # A class attribute, not a module global, so the standalone file's copy of this class
    # carries it. Keyed by identity and checked against the tensor itself, so an id reused by
    # a new tensor is never served a stale cast.
    active = None

    @staticmethod
    def cast(tensor, dtype):
        casts = _ParameterCasts.active
        if casts is None or dtype is None or tensor is None or not tensor.is_floating_point():
            return _cast(tensor, dtype)
        known = casts.get((id(tensor), dtype))
        if known is None or known[0] is not tensor:
            known = casts[(id(tensor), dtype)] = (tensor, _cast(tensor, dtype))
        return known[1]


class _ConvOfConcat(torch.autograd.Function):
    # forward without ctx + setup_context: the form torch.func transforms accept
    generate_vmap_rule = True

    @staticmethod
    def forward(weight, bias, padding, dtype, *parts):
        # the join is cast part by part (a part autocast already made bf16 is not copied twice)
        joined = torch.cat([_cast(part, dtype) for part in parts], 1)
        return _conv(joined, _ParameterCasts.cast(weight, dtype), _ParameterCasts.cast(bias, dtype), padding)

    @staticmethod
    def setup_context(ctx, inputs, output):
        weight, bias, padding, dtype, *parts = inputs
        # the parts, not their join: they are alive anyway (states, inputs), so the step keeps
        # no copy of its inputs for backward, which joins them again (one cheap cat)
        ctx.save_for_backward(weight, *parts)
        ctx.widths, ctx.padding, ctx.dtype = [p.shape[1] for p in parts], padding, dtype
        ctx.bias_dtype = None if bias is None else bias.dtype

    @staticmethod
    def backward(ctx, grad):
        weight, *parts = ctx.saved_tensors
        dtype = ctx.dtype
        joined = torch.cat([_cast(part, dtype) for part in parts], 1)
        compute_weight = _cast(weight, dtype)
        grad = grad.to(joined.dtype)
        needs = ctx.needs_input_grad
        spatial = weight.dim() - 2
        has_bias = ctx.bias_dtype is not None

        def backward_of(x, w, mask):  # aten's conv backward; mask: (input, weight, bias)
            return torch.ops.aten.convolution_backward(
                grad, x, w, [w.shape[0]] if mask[2] else None, [1] * spatial, list(ctx.padding),
                [1] * spatial, False, [0] * spatial, 1, list(mask))

        grad_weight = grad_bias = None
        if needs[0] or (needs[1] and has_bias):
            _, grad_weight, grad_bias = backward_of(joined, compute_weight, (False, needs[0], needs[1] and has_bias))
            grad_weight = None if grad_weight is None else grad_weight.to(weight.dtype)
            grad_bias = None if grad_bias is None else grad_bias.to(ctx.bias_dtype)
        # one backward per run of adjacent parts that need a gradient: all of them at once
        # when every part does (an upper layer), h alone when x needs none (the first layer)
        part_grads, offset = [], 0
        for needed, run in groupby(zip(ctx.widths, needs[4:]), key=lambda width_need: width_need[1]):
            widths = [width for width, _ in run]
            if needed:
                x, w = joined.narrow(1, offset, sum(widths)), compute_weight.narrow(1, offset, sum(widths))
                part_grads += backward_of(x, w, (True, False, False))[0].split(widths, 1)
            else:
                part_grads += [None] * len(widths)
            offset += sum(widths)
        part_grads = [None if g is None else g.to(part.dtype) for g, part in zip(part_grads, parts)]
        return (grad_weight, grad_bias, None, None, *part_grads)
