"""The public entry points: find a spec, compile it, stack it."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Union

from cellgen.codegen.module import CellModule, build_module
from cellgen.errors import CellgenError, SpecNotFoundError, did_you_mean
from cellgen.ir.graph import CellGraph
from cellgen.ir.lower import lower
from cellgen.language import limits
from cellgen.language import syntax as ast
from cellgen.language.parser import parse
from cellgen.language.resolve import resolve
from cellgen.passes import Report, optimize
from cellgen.resources import shipped_specs
from cellgen.runtime.stack import CellStack

SpecLike = Union[str, Path]


@dataclass
class LoadedSpec:
    ast: ast.CellSpec  # as written
    origin: str  # a path, `specs/NAME.cell`, or `<string>`
    text: str

    @property
    def resolved(self) -> ast.CellSpec:
        """The flat spec: parents merged, blocks inlined, loops unrolled (see `resolved_spec`)."""
        if not hasattr(self, "_resolved"):
            self._resolved = resolved_spec(self)
        return self._resolved


def load_spec(spec: SpecLike) -> LoadedSpec:
    """A spec from a path, the name of a shipped spec (`"convlstm"`), or spec text."""
    if not isinstance(spec, (str, Path)):
        raise CellgenError(f"a spec is a path, a shipped spec's name or spec text, not {type(spec).__name__} "
                           f"{spec!r:.60}")
    if isinstance(spec, str) and ("\n" in spec or spec.lstrip().startswith("cell ")):
        return LoadedSpec(parse(spec, "<string>"), "<string>", spec)
    path = Path(spec)
    if path.is_file():
        text = _read(path)
        return LoadedSpec(parse(text, str(path)), str(path), text)
    shipped = shipped_specs()
    name = str(spec)
    if name in shipped:
        text = shipped[name].read_text(encoding="utf-8")
        return LoadedSpec(parse(text, f"specs/{name}.cell"), f"specs/{name}.cell", text)
    if path.suffix == ".cell" or "/" in name:
        raise SpecNotFoundError(f"no such spec file: {name}")
    hint = did_you_mean(name, shipped) or f"shipped specs: {', '.join(shipped)} (see `cellgen list`)"
    raise SpecNotFoundError(f"no spec named `{name}`", hint=hint)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise CellgenError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise CellgenError(f"cannot read {path}: {error.strerror}") from None


def resolved_spec(loaded: LoadedSpec) -> ast.CellSpec:
    """`loaded` with its parent specs merged, borrowed blocks inlined and loops unrolled. A
    spec named by `extends` or `use … from` is looked up next to the spec that names it,
    then among the shipped specs."""
    origins = {id(loaded.ast): loaded.origin}

    def load(name: str, referrer: ast.CellSpec) -> ast.CellSpec:
        origin = origins.get(id(referrer), "<string>")
        sibling = Path(origin).parent / f"{name}.cell"
        if origin not in ("<string>",) and not origin.startswith("specs/") and sibling.is_file():
            found = load_spec(sibling)
        else:
            try:
                found = load_spec(name) if name in shipped_specs() else None
            except SpecNotFoundError:
                found = None
            if found is None:
                hint = did_you_mean(name, shipped_specs()) or "name a shipped spec or a .cell file beside this one"
                raise SpecNotFoundError(f"spec {referrer.name} names `{name}`, but there is no such spec",
                                        referrer.span, hint=hint)
        origins[id(found.ast)] = found.origin
        return found.ast

    resolved = resolve(loaded.ast, load)
    limits.check_resolved(resolved)  # unrolled loops and chains of equations: see cellgen/language/limits.py
    return resolved


def lower_spec(spec: SpecLike, **params) -> CellGraph:
    """The unoptimised, validated graph of one step of `spec`."""
    return lower(load_spec(spec).resolved, params)


def compile(spec: SpecLike, *, opt_level: int = 2, enable: Iterable[str] = (), disable: Iterable[str] = (),
            report: Optional[Report] = None, **params) -> CellModule:
    """Compile a spec into a torch module computing one time step: `h, state = cell(x, state)`.

    `spec` is a path, a shipped spec's name (`"convlstm"`) or spec text; `params` set the
    spec's `param`s. Parameters are named by the spec's weight symbols at every opt level.
    """
    graph = optimize(lower_spec(spec, **params), opt_level, enable=enable, disable=disable, report=report)
    return build_module(graph, opt_level)


def compile_stack(spec: SpecLike, layers: int = 2, *, opt_level: int = 2, **params) -> CellStack:
    """`layers` copies of a cell stacked: layer 0 reads the input, layer l > 0 reads layer l-1's
    output. Parameters are named `layers.{l}.{symbol}`."""
    if not isinstance(layers, int) or layers < 1:
        raise CellgenError(f"a stack needs a positive number of layers, not {layers!r}")
    loaded = load_spec(spec)
    inputs = loaded.resolved.inputs
    if len(inputs) != 1 or not isinstance(inputs[0].channels, ast.DimName):
        raise CellgenError(f"cell {loaded.ast.name} cannot be stacked: it needs exactly one input whose channels "
                           "are a param (`input x[in_channels]`)", loaded.ast.span)
    channel_param = inputs[0].channels.name
    source = loaded.text if loaded.origin == "<string>" else spec
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the first layer already said it
        first = compile(source, opt_level=opt_level, **params)
        upper = {**params, channel_param: first.out_channels}
        cells = [first] + [compile(source, opt_level=opt_level, **upper) for _ in range(layers - 1)]
    return CellStack(cells)
