"""A conv declaration's geometry: `pad`, `stride` and `resize` (docs/conv_modes.md) evaluated
into the conv node's `geometry` attr (cellgen.ir.ops.conv_geometry), or None for the default
("same" padding, stride 1, no resize), which keeps every existing graph as it was."""
from __future__ import annotations

from typing import Optional

from cellgen.errors import ArityError, ParamError, RedefinitionError, TypeMismatchError, did_you_mean
from cellgen.ir.params import evaluate
from cellgen.language import syntax as ast

PAD_WORDS = ("same", "valid")
RESIZE_MODES = ("nearest",)


def conv_geometry(kind: ast.ConvType, kernel: tuple[int, ...], params, symbol: str) -> Optional[tuple]:
    """(pads, strides, resize) of a conv weight's declaration, one pad and stride per kernel
    axis; None when it says nothing but the default."""
    if not kind.geometry:
        return None
    if kind.shares:
        raise TypeMismatchError(f"`{symbol.rsplit('.', 1)[0]}` is a multi-kernel conv: its kernels keep \"same\" padding and "
                                "stride 1", kind.geometry[0].span,
                                hint="declare the kernels as separate convs to give them a geometry")
    seen: dict[str, ast.ConvOption] = {}
    for option in kind.geometry:
        if option.kind in seen:
            raise RedefinitionError(f"`{symbol}` says `{option.kind}` twice", option.span,
                                    hint=f"one `{option.kind}` per conv; per axis: `{option.kind} (…, …)`")
        seen[option.kind] = option
    axes = len(kernel)
    pads = _per_axis(seen.get("pad"), kernel, symbol, _pad_value, params) or ("same",) * axes
    strides = _per_axis(seen.get("stride"), kernel, symbol, _stride_value, params) or (1,) * axes
    resize = None
    if "resize" in seen:
        resize = seen["resize"].word
        if resize not in RESIZE_MODES:
            raise TypeMismatchError(f"`resize {resize}`: the one resize mode is `nearest` (OpenSTL's tf_Conv3d)",
                                    seen["resize"].span,
                                    hint=did_you_mean(resize, RESIZE_MODES) or "`resize nearest`")
    if pads == ("same",) * axes and strides == (1,) * axes and resize is None:
        return None
    return pads, strides, resize


def _per_axis(option: Optional[ast.ConvOption], kernel, symbol, value_of, params) -> Optional[tuple]:
    if option is None:
        return None
    values = option.values
    if len(values) == 1:
        values = values * len(kernel)
    elif len(values) != len(kernel):
        shown = "×".join(map(str, kernel))
        raise ArityError(f"`{symbol}` has a {len(kernel)}-axis kernel ({shown}), but `{option.kind}` gives "
                         f"{len(values)} values", option.span,
                         hint=f"one value for every axis, or one per axis: "
                              f"`{option.kind} ({', '.join(['…'] * len(kernel))})`")
    return tuple(value_of(value, size, symbol, params) for value, size in zip(values, kernel))


def _pad_value(value: ast.Dim, size: int, symbol: str, params):
    if isinstance(value, ast.DimName) and value.name in PAD_WORDS:
        return value.name
    if isinstance(value, ast.DimInt) and value.value == 0:
        return "valid"
    if isinstance(value, ast.DimName) and value.name not in params:
        guess = did_you_mean(value.name, [*PAD_WORDS, *params])
        raise TypeMismatchError(f"`pad {value.name}`: a padding is `same`, `valid` or a number of positions",
                                value.span, hint=guess or "`pad same` (the default), `pad valid`, `pad 2`")
    return evaluate(value, params, f"the padding of `{symbol}`")


def _stride_value(value: ast.Dim, size: int, symbol: str, params) -> int:
    if isinstance(value, ast.DimName) and value.name in PAD_WORDS:
        raise TypeMismatchError(f"`stride {value.name}`: a stride is a whole number", value.span,
                                hint=f"did you mean `pad {value.name}`?")
    stride = evaluate(value, params, f"the stride of `{symbol}`")
    if stride < 1:
        raise ParamError(f"the stride of `{symbol}` must be positive", value.span)
    return stride
