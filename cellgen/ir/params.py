"""Binding a spec's `param`s to values, and evaluating integer expressions over them."""
from __future__ import annotations

from typing import Mapping, Optional

from cellgen.errors import ParamError, UnknownSymbolError, did_you_mean
from cellgen.language import syntax as ast


def bind_params(spec: ast.CellSpec, given: Mapping[str, object]) -> dict[str, Optional[int]]:
    """The spec's defaults overridden by `given`; every param ends up a positive int, except
    that a param declared `= none` may stay None (unset)."""
    declared = {p.name: p for p in spec.params}
    for name in given:
        if name not in declared:
            names = ", ".join(declared) or "none"
            hint = did_you_mean(name, declared) or f"the params of {spec.name} are: {names}"
            raise ParamError(f"{spec.name} has no param `{name}`", hint=hint)
    values: dict[str, int] = {}
    for name, decl in declared.items():
        if name in given:
            unset = given[name] is None or (isinstance(given[name], str) and given[name].strip() == "none")
            if unset and decl.nullable:
                values[name] = None
            else:
                values[name] = _as_int(name, given[name])
        elif decl.default is not None or decl.nullable:
            values[name] = decl.default
        else:
            raise ParamError(f"param `{name}` of {spec.name} has no default and was not given", decl.span,
                             hint=f"pass it: cellgen.compile(..., {name}=…) or `--param {name}=…`")
    return values


def _as_int(name: str, value: object) -> int:
    if isinstance(value, bool):
        raise ParamError(f"param `{name}` must be a whole number, not {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ParamError(f"param `{name}` must be a whole number, not {value!r}")


def evaluate(dim: ast.Dim, params: Mapping[str, int], what: str) -> int:
    """The value of an integer expression such as `hidden` or `2*hidden`; must be positive."""
    value = _evaluate(dim, params)
    if value <= 0:
        raise ParamError(f"{what} must be positive, but is {value}", dim.span)
    return value


def _evaluate(dim: ast.Dim, params: Mapping[str, int]) -> int:
    if isinstance(dim, ast.DimInt):
        return dim.value
    if isinstance(dim, ast.DimName):
        if dim.name not in params:
            raise UnknownSymbolError(f"unknown param `{dim.name}`", dim.span,
                                     hint=did_you_mean(dim.name, params) or "declare it: `param NAME = VALUE`")
        if params[dim.name] is None:
            raise ParamError(f"param `{dim.name}` is none (unset) here, so it has no size", dim.span,
                             hint=f"only a history's length may be none: `c[t-{dim.name}:t-1]`; "
                                  f"give it a value (`{dim.name}=…`)")
        return params[dim.name]
    left, right = _evaluate(dim.left, params), _evaluate(dim.right, params)
    if dim.op == "/":
        if right == 0 or left % right:
            raise ParamError(f"`{_text(dim)}` is {left}/{right}, which is not a whole number", dim.span,
                             hint="sizes split by `/` must divide exactly")
        return left // right
    return {"+": left + right, "-": left - right, "*": left * right}[dim.op]


def _text(dim: ast.Dim) -> str:
    from cellgen.language.printer import format_dim
    return format_dim(dim)
