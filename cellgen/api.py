"""The public entry points: find a spec, compile it, stack it."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional, Union

from cellgen.errors import CellgenError, SpecNotFoundError, did_you_mean
from cellgen.language import limits
from cellgen.language import syntax as ast
from cellgen.language.parser import parse
from cellgen.language.resolve import resolve
from cellgen.resources import shipped_specs

if TYPE_CHECKING:  # torch (and the passes) are imported by compiling, networkx by lowering, not by loading
    from cellgen.codegen.module import CellModule
    from cellgen.ir.graph import CellGraph
    from cellgen.passes import Report
    from cellgen.runtime.stack import CellStack

SpecLike = Union[str, Path]


@dataclass
class LoadedSpec:
    ast: ast.CellSpec  # as written; it carries its origin and path too
    origin: str  # a path, `specs/NAME.cell`, or `<string>`
    text: str

    @property
    def resolved(self) -> ast.CellSpec:
        """The flat spec: parents merged, blocks inlined, loops unrolled (see `resolved_spec`)."""
        return resolved_spec(self)


def load_spec(spec: SpecLike) -> LoadedSpec:
    """A spec from a path, the name of a shipped spec (`"convlstm"`), or spec text."""
    if not isinstance(spec, (str, Path)):
        raise CellgenError(f"a spec is a path, a shipped spec's name or spec text, not {type(spec).__name__} "
                           f"{spec!r:.60}")
    if isinstance(spec, str) and ("\n" in spec or spec.lstrip().startswith("cell ")):
        return _loaded(spec, "<string>", None)
    path = Path(spec)
    if path.is_file():
        return _loaded(_read(path), str(path), path)
    shipped = shipped_specs()
    name = str(spec)
    if name in shipped:
        return _loaded(shipped[name].read_text(encoding="utf-8"), f"specs/{name}.cell", shipped[name])
    if path.suffix == ".cell" or "/" in name:
        raise SpecNotFoundError(f"no such spec file: {name}")
    hint = did_you_mean(name, shipped) or f"shipped specs: {', '.join(shipped)} (see `cellgen list`)"
    raise SpecNotFoundError(f"no spec named `{name}`", hint=hint)


def _loaded(text: str, origin: str, path: Optional[Path]) -> LoadedSpec:
    return LoadedSpec(_parse(text, origin, str(path.resolve()) if path is not None else None), origin, text)


@lru_cache(maxsize=256)
def _parse(text: str, origin: str, path: Optional[str]) -> ast.CellSpec:
    """The AST of one spec file (frozen, so shared by every load of the same text)."""
    return parse(text, origin).copy_with(origin=origin, path=path)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise CellgenError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise CellgenError(f"cannot read {path}: {error.strerror}") from None


def _find(name: str, referrer: ast.CellSpec) -> LoadedSpec:
    """The spec `referrer` names (`extends name`, `use … from name`): `name.cell` beside the
    referrer's file, else the shipped spec `name`."""
    if referrer.path is not None:
        sibling = Path(referrer.path).parent / f"{name}.cell"
        if sibling.is_file():
            return _loaded(_read(sibling), str(Path(referrer.origin or ".").parent / f"{name}.cell"), sibling)
    if name in shipped_specs():
        return load_spec(name)
    hint = did_you_mean(name, shipped_specs()) or "name a shipped spec or a .cell file beside this one"
    raise SpecNotFoundError(f"spec {referrer.name} names `{name}`, but there is no such spec", referrer.span,
                            hint=hint)


# (text, origin, path) of a spec → its resolved spec, and the (path, text) of every spec file
# resolution read: a hit is good while each of those files still holds the same text.
_RESOLVED: dict[tuple, tuple[ast.CellSpec, tuple[tuple[str, str], ...]]] = {}
_RESOLVED_MAX = 256


def resolved_spec(loaded: LoadedSpec) -> ast.CellSpec:
    """`loaded` with its parent specs merged, borrowed blocks inlined and loops unrolled. A
    spec named by `extends` or `use … from` is looked up next to the spec that names it,
    then among the shipped specs. Resolved once per text and origin (a stack's layers, a
    test's opt levels, `diff`'s two sides share it), and again only if a spec it read changed."""
    key = (loaded.text, loaded.origin, loaded.ast.path)
    hit = _RESOLVED.get(key)
    if hit is not None and all(_text_now(path) == text for path, text in hit[1]):
        return hit[0]
    read: list[tuple[str, str]] = []

    def load(name: str, referrer: ast.CellSpec) -> ast.CellSpec:
        found = _find(name, referrer)
        if found.ast.path is not None:
            read.append((found.ast.path, found.text))
        return found.ast

    resolved = resolve(loaded.ast, load)
    limits.check_resolved(resolved)  # unrolled loops and chains of equations: see cellgen/language/limits.py
    if len(_RESOLVED) >= _RESOLVED_MAX:
        _RESOLVED.pop(next(iter(_RESOLVED)))
    _RESOLVED[key] = (resolved, tuple(read))
    return resolved


def _text_now(path: str) -> Optional[str]:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def lower_spec(spec: SpecLike, **params) -> "CellGraph":
    """The unoptimised, validated graph of one step of `spec`."""
    from cellgen.ir.lower import lower

    return lower(load_spec(spec).resolved, params)


def compile(spec: SpecLike, *, opt_level: int = 2, enable: Iterable[str] = (), disable: Iterable[str] = (),
            report: Optional["Report"] = None, **params) -> "CellModule":
    """Compile a spec into a torch module computing one time step: `h, state = cell(x, state)`.

    `spec` is a path, a shipped spec's name (`"convlstm"`) or spec text; `params` set the
    spec's `param`s. Parameters are named by the spec's weight symbols at every opt level.
    A cell with several outputs (`output h', delta_c, delta_m`) returns the others after the
    state: `h, state, outputs = cell(x, state)` (docs/outputs.md).
    """
    from cellgen import collector
    from cellgen.codegen.module import build_module
    from cellgen.passes import optimize

    with collector.paused():
        source = lower_spec(spec, **params)
        module = build_module(optimize(source, opt_level, enable=enable, disable=disable, report=report), opt_level)
    module.source_graph = source  # for module.summary(): the spec's gates as written
    return module


def compile_stack(spec, layers: int = 2, *, opt_level: int = 2, between: Optional[dict] = None,
                  diff_chain: Optional[str] = None, **params) -> "CellStack":
    """`layers` copies of a cell stacked: layer 0 reads the input, layer l > 0 reads layer l-1's
    output. Parameters are named `layers.{l}.{symbol}`.

    A list of specs is a heterogeneous stack (docs/stacks.md), one spec per layer, bottom
    first: `compile_stack(["predrnnpp"] * 4, between={0: "ghu"}, in_channels=16, hidden=64)`
    puts a GHU after layer 0 (layer 1 reads its output; parameters `between.0.…`);
    `diff_chain="mimn"` gives layers ≥ 1 MIM's MIM-N chain as their second input
    (`diff_chain.{i}.…`). Each cell takes the params its spec declares; input channels follow
    from what it reads."""
    if isinstance(spec, (list, tuple)):
        return _compile_plan(list(spec), between, diff_chain, opt_level, params)
    if between or diff_chain:
        raise CellgenError("between= and diff_chain= are for a heterogeneous stack: give the spec of every layer",
                           hint=f"compile_stack([{str(spec)!r}] * {layers}, between=…)")
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
    from cellgen.runtime.stack import CellStack

    return CellStack(cells)


def _compile_plan(specs: list, between: Optional[dict], diff_chain: Optional[str], opt_level: int,
                  params: dict) -> "CellStack":
    from cellgen.sequence.cells import spec_interface
    from cellgen.sequence.stacks import StackPlan, build_plan, check_plan_shape

    plan = StackPlan(tuple(specs), dict(between or {}), diff_chain)
    check_plan_shape(plan)
    channel_param = spec_interface(specs[0]).channel_param
    if channel_param not in params:
        raise CellgenError(f"compile_stack needs {channel_param}=…: the channels layer 0 ({specs[0]}) reads")
    rest = {k: v for k, v in params.items() if k != channel_param}
    return build_plan(plan, {}, rest, params[channel_param], None, opt_level).stack
