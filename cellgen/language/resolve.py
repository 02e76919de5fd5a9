"""A spec as written → one flat spec: variants merged, blocks inlined, loops unrolled.

What the lowering reads has only params, inputs, states, an output, weight declarations and
equations (single or unpacking). Four things are compile-time sugar over that:

    cell V extends P             P's statements, then V's: a param, input, state, output,
                                 block or equation of V replaces P's of the same name; V's
                                 weight declarations beat P's (`level`)
    use CE, SE from cms_lstm     the blocks CE and SE of another spec
    for s in (1, 2, 4) … end     the body once per value: `Y_s` becomes `Y_1`, …; `s` itself
                                 is the number (`patches=s`, or a size `s*hidden`)
    a, b = CE(x, h)              CE's equations, with its inputs bound to the arguments, its
                                 own names prefixed `CE.` and its weights `CE.W_H` (one set of
                                 weights per block, shared by every call of it)

Before, a variant three lines long::

    cell E3DNoAttention extends e3d_lstm
      c' = i ⊙ g + LN_c(c)

after: e3d_lstm's statements with that one equation replaced; `r`, `R` and the recall
weights are still there but marked `borrowed`, so that the lowering drops them unused
without a warning (the variant's author did not write them).
"""
from __future__ import annotations

from typing import Callable, Optional, Union

from cellgen.errors import (ArityError, CellgenError, CyclicDefinitionError, Note, RedefinitionError,
                            SpecNotFoundError, TypeMismatchError, UnknownSymbolError, did_you_mean)
from cellgen.language import syntax as ast
from cellgen.language.spellings import next_values, state_names
from cellgen.language.walk import transform, transform_children, walk

# name of a spec, the spec that names it → that spec, parsed (not yet resolved)
Loader = Callable[[str, ast.CellSpec], ast.CellSpec]

_Definition = Union[ast.Equation, ast.Unpack]


def resolve(spec: ast.CellSpec, load: Loader) -> ast.CellSpec:
    """The flat spec of `spec`; `load` finds the specs it extends or borrows from."""
    merged = _inherit(spec, load, chain=[], borrowing=[_identity(spec)])
    blocks = {block.name: block for block in merged.of_type(ast.BlockDef)}
    flat: list = []
    weight_decls: list[ast.WeightDecl] = []
    tensors = {t.name for t in merged.inputs + merged.states} | {
        t.name for d in merged.definitions for t in ([d.target] if isinstance(d, ast.Equation) else d.targets)}
    inliner = _Inliner(blocks, weight_decls, tensors)
    for statement in merged.statements:
        if isinstance(statement, ast.BlockDef):
            continue
        if isinstance(statement, _Definition.__args__):
            flat += inliner.inline(statement)
        elif isinstance(statement, (ast.Return, ast.Loop)):
            raise CellgenError("`return` belongs inside a block", statement.span)
        else:
            flat.append(statement)
    return merged.copy_with(statements=flat + weight_decls, extends=None)


# --- variants -------------------------------------------------------------------------------

def _identity(spec: ast.CellSpec) -> tuple[Optional[str], str]:
    """What tells two loaded specs apart: the file each came from (a cell's name need not be
    its file's: `cell E3DLSTM` is specs/e3d_lstm.cell), and its name."""
    return (spec.path or spec.origin, spec.name)


def _inherit(spec: ast.CellSpec, load: Loader, chain: list[ast.CellSpec], borrowing: list) -> ast.CellSpec:
    """`spec` with its parent's statements merged in (recursively, to any depth), the blocks it
    borrows copied in, its loops unrolled and its ASCII next values (`c_next`) spelt `c'`.

    Each spec's own statements are read against that spec: its `use … from` finds specs beside
    it, and its `c_next` is `c'` if `c` is a state of it or of any spec it extends (the parser
    spelt those of its own states; a parent's it cannot know, see spellings.py)."""
    _check_blocks(spec.statements)
    own = _borrow_blocks(spec, _unroll_all(spec.statements), load, borrowing)
    if spec.extends is None:
        return spec.copy_with(statements=own)
    parent_spec = load(spec.extends, spec)
    chain = [*chain, spec]
    seen = [_identity(s) for s in chain]
    if _identity(parent_spec) in seen:
        cycle = chain[seen.index(_identity(parent_spec)):]
        names = " → ".join([s.name for s in cycle] + [cycle[0].name])
        raise CyclicDefinitionError(f"spec {cycle[0].name} extends itself: {names}", cycle[0].span,
                                    related=[Note(f"{s.name} extends `{s.extends}` here", s.span) for s in cycle[1:]],
                                    hint="a variant's parent must not extend the variant, directly or through "
                                         "another spec")
    parent = _inherit(parent_spec, load, chain, [*borrowing, _identity(parent_spec)])
    own = next_values(own, state_names(parent.statements))  # its own states' the parser has spelt
    return spec.copy_with(statements=_merge(_borrowed(parent.statements), own))


def _check_blocks(statements: list) -> None:
    """One spec's own blocks: each name defined (or borrowed with `use`) once, each input named once."""
    where: dict[str, ast.Node] = {}
    for statement in statements:
        if isinstance(statement, ast.UseDecl):
            names = [(name, statement) for name in statement.blocks]
        elif isinstance(statement, ast.BlockDef):
            names = [(statement.name, statement)]
            repeated = [n for i, n in enumerate(statement.inputs) if n in statement.inputs[:i]]
            if repeated:
                raise RedefinitionError(f"block `{statement.name}` names its input `{repeated[0]}` twice",
                                        statement.span, hint="give each input its own name")
        else:
            continue
        for name, node in names:
            if name in where:
                first = where[name]
                how = "borrowed" if isinstance(first, ast.UseDecl) else "defined"
                raise RedefinitionError(f"block `{name}` is defined twice", node.span,
                                        related=[Note(f"`{name}` is first {how} here", first.span)],
                                        hint="rename one of them")
            where[name] = node


def _borrowed(statements: list) -> list:
    out = []
    for statement in statements:
        if isinstance(statement, ast.WeightDecl):
            statement = statement.copy_with(level=statement.level + 1, borrowed=True)
        elif isinstance(statement, (ast.Equation, ast.Unpack)):
            statement = statement.copy_with(borrowed=True)
        elif isinstance(statement, ast.BlockDef):
            statement = _mark_block_borrowed(statement)
        out.append(statement)
    return out


def _mark_block_borrowed(block: ast.BlockDef) -> ast.BlockDef:
    return block.copy_with(body=[
        s.copy_with(borrowed=True) if isinstance(s, (ast.WeightDecl, ast.Equation, ast.Unpack)) else s
        for s in block.body])


def _merge(parent: list, child: list) -> list:
    """The parent's statements with the child's replacing those of the same name; the child's
    other statements follow."""
    replaced = {}
    for statement in child:
        for key in _keys(statement):
            replaced[key] = statement
    out, placed = [], set()
    for statement in parent:
        keys = _keys(statement)
        if isinstance(statement, (ast.InputDecl, ast.StateDecl)):
            kept = [t for t in statement.tensors if ("tensor", t.name) not in replaced]
            if kept:
                out.append(statement.copy_with(tensors=kept))
            continue
        hits = [replaced[k] for k in keys if k in replaced]
        if not hits:
            out.append(statement)
            continue
        if isinstance(statement, ast.Unpack) and len(hits) < len(keys):
            names = ", ".join(t.text for t in statement.targets)
            raise RedefinitionError(f"this replaces only part of the inherited `{names} = …`", hits[0].span,
                                    hint=f"replace all of `{names}` in one unpack",
                                    related=[Note("the inherited unpack", statement.span)])
        for hit in hits:
            if id(hit) not in placed and not isinstance(hit, (ast.InputDecl, ast.StateDecl)):
                out.append(hit)
                placed.add(id(hit))
    out += [s for s in child if id(s) not in placed]
    return out


def _keys(statement) -> list[tuple[str, str]]:
    if isinstance(statement, ast.ParamDecl):
        return [("param", statement.name)]
    if isinstance(statement, (ast.InputDecl, ast.StateDecl)):
        return [("tensor", t.name) for t in statement.tensors]
    if isinstance(statement, ast.OutputDecl):
        return [("output", "")]
    if isinstance(statement, ast.BlockDef):
        return [("block", statement.name)]
    if isinstance(statement, ast.Equation):
        return [("value", statement.target.text)]
    if isinstance(statement, ast.Unpack):
        return [("value", t.text) for t in statement.targets if not t.discards]
    return []


# --- blocks ---------------------------------------------------------------------------------

def _borrow_blocks(spec: ast.CellSpec, statements: list, load: Loader, borrowing: list) -> list:
    """`statements` with each `use A, B from S` replaced by S's blocks A and B (marked
    borrowed), S being looked for beside `spec`: from here on a borrowed block is a block."""
    out = []
    for statement in statements:
        if not isinstance(statement, ast.UseDecl):
            out.append(statement)
            continue
        use = statement
        try:
            source = load(use.source, spec)
        except SpecNotFoundError as error:  # point at the `use` line, not at the spec's header
            raise SpecNotFoundError(f"`use … from {use.source}`: there is no spec `{use.source}`", use.span,
                                    hint=error.hint) from None
        if _identity(source) in borrowing:
            raise CyclicDefinitionError(f"spec {source.name} borrows blocks from itself", use.span,
                                        hint="a spec's own blocks need no `use`"
                                        if _identity(source) == _identity(spec) else
                                        "specs that borrow blocks from each other go round in a circle")
        lender = _inherit(source, load, chain=[], borrowing=[*borrowing, _identity(source)])
        available = {block.name: block for block in lender.of_type(ast.BlockDef)}
        for name in use.blocks:
            if name not in available:
                hint = did_you_mean(name, available) or (
                    f"{use.source} defines: {', '.join(available)}" if available else f"{use.source} has no blocks")
                raise UnknownSymbolError(f"spec {use.source} has no block `{name}`", use.span, hint=hint)
            out.append(_mark_block_borrowed(available[name]))
    return out


class _Inliner:
    """Replaces each `targets = BLOCK(args)` with the block's equations."""

    def __init__(self, blocks: dict[str, ast.BlockDef], weight_decls: list, tensors: set[str]):
        self.blocks = blocks
        self.weight_decls = weight_decls
        self.instances: dict[str, int] = {}
        self.tensors = tensors  # the spec's inputs, states and values: never a block's param

    def inline(self, statement: _Definition, depth: int = 0) -> list:
        expr = statement.expr
        if not (isinstance(expr, ast.Call) and expr.func in self.blocks):
            self._no_nested_calls(expr)
            return [statement]
        if depth > 20:
            raise CyclicDefinitionError(f"block `{expr.func}` calls itself", expr.span,
                                        related=[Note(f"`{expr.func}` is defined here", self.blocks[expr.func].span)],
                                        hint="a block may call other blocks, but never itself, directly or "
                                             "through another block")
        block = self.blocks[expr.func]
        targets = [statement.target] if isinstance(statement, ast.Equation) else statement.targets
        return self._expand(block, expr, targets, statement.span, depth)

    def _no_nested_calls(self, expr) -> None:
        for node in walk(expr):
            if isinstance(node, ast.Call) and node.func in self.blocks:
                raise TypeMismatchError(f"block `{node.func}` is called inside an expression", node.span,
                                        hint=f"give its results names first: `a, b = {node.func}(…)`, then use them")

    def _expand(self, block: ast.BlockDef, call: ast.Call, targets: list[ast.Ref], span, depth: int) -> list:
        if len(call.args) != len(block.inputs):
            were = "was" if len(call.args) == 1 else "were"
            raise ArityError(f"block `{block.name}` takes {len(block.inputs)} input{'s' * (len(block.inputs) != 1)} "
                             f"({', '.join(block.inputs)}), but {len(call.args)} {were} given", call.span,
                             related=[Note(f"`{block.name}` is defined here", block.span)])
        count = self.instances[block.name] = self.instances.get(block.name, 0) + 1
        instance = block.name if count == 1 else f"{block.name}_{count}"
        dims = self._block_params(block, call)
        body = _unroll_all(block.body, {name: dim for name, dim in dims.items()})
        returns = [s for s in body if isinstance(s, ast.Return)]
        if not returns:
            raise CellgenError(f"block `{block.name}` returns nothing", block.span,
                               hint="end its body with `return a, b`: the values a call receives")
        if len(returns) > 1:
            raise CellgenError(f"block `{block.name}` has {len(returns)} `return`s", returns[1].span,
                               related=[Note("the first `return`", returns[0].span)],
                               hint="a block has one `return`, its last line: `return a, b`")
        outputs = returns[0].refs
        if len(outputs) != len(targets):
            names = ", ".join(r.text for r in outputs)
            raise ArityError(f"block `{block.name}` returns {len(outputs)} value{'s' * (len(outputs) != 1)}, but "
                             f"{len(targets)} name{'s' * (len(targets) != 1)} receive them", span,
                             related=[Note("its `return`", returns[0].span)],
                             hint=f"name each value it returns: `{names} = {block.name}(…)`")
        decls = [s for s in body if isinstance(s, ast.WeightDecl)]
        local = set(block.inputs) | {t.name for s in body if isinstance(s, _Definition.__args__)
                                     for t in ([s.target] if isinstance(s, ast.Equation) else s.targets)}
        renamer = _BlockNames(block, instance, local, decls)
        if count == 1:
            self.weight_decls += [renamer.weight_decl(d) for d in decls]
        out: list = []
        for name, arg in zip(block.inputs, call.args):
            out.append(ast.Equation(target=ast.Ref(name=f"{instance}.{name}", span=arg.span), expr=arg,
                                    span=call.span))
        for statement in body:
            if isinstance(statement, _Definition.__args__):
                renamed = renamer.statement(statement)
                out += self.inline(renamed, depth + 1)
        for target, result in zip(targets, outputs):
            if not target.discards:  # `a, _ = CE(x, h)`: the block's second result is not kept
                out.append(ast.Equation(target=target, expr=renamer.ref(result), span=span))
        return out

    def _block_params(self, block: ast.BlockDef, call: ast.Call) -> dict[str, ast.Dim]:
        declared = {p.name: p for p in block.body if isinstance(p, ast.ParamDecl)}
        dims: dict[str, ast.Dim] = {}
        for keyword in call.kwargs:
            if keyword.name not in declared:
                hint = did_you_mean(keyword.name, declared) or (
                    f"its params: {', '.join(declared)}" if declared else f"`{block.name}` has no params")
                raise UnknownSymbolError(f"block `{block.name}` has no param `{keyword.name}`", keyword.span,
                                         hint=hint)
            value = keyword.value
            if isinstance(value, ast.Ref) and value.name in self.tensors:
                raise TypeMismatchError(f"`{keyword.name}=` sets a param of block `{block.name}`, a whole number "
                                        f"fixed at compile time, but `{value.text}` is a tensor", value.span,
                                        hint=f"pass a number or a param: `{keyword.name}=3`")
            dims[keyword.name] = _as_dim(value)
        for name, decl in declared.items():
            if name not in dims:
                if decl.default is None:
                    raise CellgenError(f"block `{block.name}` needs its param `{name}`", call.span,
                                       hint=f"pass it: `{block.name}(…, {name}=…)`")
                dims[name] = ast.DimInt(value=decl.default, span=decl.span)
        return dims


class _BlockNames:
    """How names inside one call of a block are renamed: its own values `SE.i` (per call),
    its weights `SE.W_A` (per block)."""

    def __init__(self, block: ast.BlockDef, instance: str, local: set[str], decls: list[ast.WeightDecl]):
        self.block, self.instance, self.local, self.decls = block, instance, local, decls

    def is_weight(self, name: str) -> bool:
        return any(p.matches(name) for d in self.decls for p in d.patterns)

    def ref(self, ref: ast.Ref) -> ast.Ref:
        if ref.prime:
            raise TypeMismatchError(f"a block cannot read or update a state's next value (`{ref.text}`)", ref.span,
                                    hint="pass the value in as an input, or return it")
        if ref.name in self.local:
            return ref.copy_with(name=f"{self.instance}.{ref.name}")
        if self.is_weight(ref.name):
            return ref.copy_with(name=f"{self.block.name}.{ref.name}")
        known = sorted(self.local) + [p.text for d in self.decls for p in d.patterns if not p.is_glob]
        raise UnknownSymbolError(f"unknown symbol `{ref.name}` in block `{self.block.name}`", ref.span,
                                 hint=did_you_mean(ref.name, known) or
                                 "a block sees only its inputs, its own equations and its own weights")

    def statement(self, statement: _Definition) -> _Definition:
        expr = self.expr(statement.expr)
        if isinstance(statement, ast.Equation):
            return statement.copy_with(target=self._target(statement.target), expr=expr)
        return statement.copy_with(targets=[self._target(t) for t in statement.targets], expr=expr)

    def _target(self, ref: ast.Ref) -> ast.Ref:
        if ref.discards:
            return ref
        if ref.prime:
            raise TypeMismatchError(f"a block cannot update a state (`{ref.text}`)", ref.span,
                                    hint="return the new value, and set the state outside: `c' = …`")
        return ref.copy_with(name=f"{self.instance}.{ref.name}")

    def expr(self, node):
        return transform(node, self._rename)

    def _rename(self, node):
        if isinstance(node, ast.Ref):
            return self.ref(node)
        if isinstance(node, ast.History):
            raise TypeMismatchError(f"a block cannot read a state's history (`{node.state}[…]`)", node.span,
                                    hint="pass the history in as an input")
        if isinstance(node, ast.KeywordArg) and isinstance(node.value, ast.Ref) and node.name in ("over", "along"):
            return node  # `over=stack`, `along=W`: axis names, not values
        if isinstance(node, ast.Call) and self.is_weight(node.func):  # a LayerNorm applied by calling its symbol
            return transform_children(node.copy_with(func=f"{self.block.name}.{node.func}"),
                                      self._rename)
        return None

    def weight_decl(self, decl: ast.WeightDecl) -> ast.WeightDecl:
        patterns = [p.copy_with(text=f"{self.block.name}.{p.text}") for p in decl.patterns]
        return decl.copy_with(patterns=patterns)


# --- loops ----------------------------------------------------------------------------------

def _unroll_all(statements: list, dims: Optional[dict[str, ast.Dim]] = None) -> list:
    """Statements with every loop unrolled and every comprehension expanded; `dims` binds
    names in integer expressions (a block's params)."""
    dims = dims or {}
    out = []
    for statement in statements:
        if isinstance(statement, ast.Loop):
            _check_loop(statement)
            for value in statement.values:
                bound = {**dims, statement.var: ast.DimInt(value=value, span=statement.span)}
                body = [_substitute(s, statement.var, value) for s in statement.body]
                out += _unroll_all(body, bound)
        elif isinstance(statement, ast.BlockDef):
            out.append(statement)  # a block's loops unroll when it is called
        else:
            out.append(_bind_dims(_expand_comprehensions(statement), dims))
    return out


def _check_loop(loop: ast.Loop) -> None:
    """Every pass of a loop defines its own values: `Y_s` is `Y_1`, `Y_2`, …; a plain `Y` (or a
    value listed twice) would be defined more than once."""
    values = loop.values
    repeated = [v for i, v in enumerate(values) if v in values[:i]]
    if repeated:
        listed = ", ".join(map(str, values))
        raise RedefinitionError(f"`for {loop.var} in ({listed})` runs over {repeated[0]} twice", loop.span,
                                hint=f"list each value once: each pass defines its own `…_{loop.var}`")
    if len(values) < 2:
        return
    for statement in loop.body:
        if not isinstance(statement, _Definition.__args__):
            continue
        for target in [statement.target] if isinstance(statement, ast.Equation) else statement.targets:
            if target.discards:
                continue
            if target.prime or not target.name.endswith(f"_{loop.var}"):
                raise RedefinitionError(
                    f"`{target.text}` would be defined {len(values)} times, once on every pass of "
                    f"`for {loop.var} …`", target.span,
                    hint=(f"name one value per pass: `{target.name}_{loop.var}` (`{target.name}_{values[0]}`, "
                          f"`{target.name}_{values[1]}`, …), or move it out of the loop") if not target.prime else
                    "set a state's next value once, outside the loop")


def _substitute(node, var: str, value: int):
    """`Y_s` → `Y_4`, `s` → 4 (in expressions and sizes) inside one iteration of `for s …`."""
    suffix = f"_{var}"

    def rule(node):
        if isinstance(node, ast.Ref):
            if node.name == var:
                return ast.Number(value=float(value), text=str(value), span=node.span)
            if node.name.endswith(suffix):
                return node.copy_with(name=node.name[: -len(suffix)] + f"_{value}")
            return node
        if isinstance(node, ast.DimName) and node.name == var:
            return ast.DimInt(value=value, span=node.span)
        if isinstance(node, ast.Comprehension) and node.var == var:
            return node  # an inner comprehension over the same name shadows the loop's
        if isinstance(node, ast.Call) and node.func.endswith(suffix):
            return transform_children(node.copy_with(func=node.func[: -len(suffix)] + f"_{value}"),
                                      rule)
        return None

    return transform(node, rule)


def _expand_comprehensions(node):
    def rule(node):
        if isinstance(node, ast.Comprehension):
            items = [transform(_substitute(node.item, node.var, v), rule) for v in node.values]
            return ast.Concat(items=items, span=node.span)
        return None

    return transform(node, rule)


def _bind_dims(node, dims: dict[str, ast.Dim]):
    if not dims:
        return node

    def rule(node):
        if isinstance(node, ast.DimName) and node.name in dims:
            return dims[node.name]
        if isinstance(node, ast.Ref) and not node.prime and node.name in dims:
            dim = dims[node.name]
            if isinstance(dim, ast.DimInt):
                return ast.Number(value=float(dim.value), text=str(dim.value), span=node.span)
            return node
        return None

    return transform(node, rule)


def _as_dim(expr: ast.Expr) -> ast.Dim:
    """A block param given at a call (`k=3`, `size=height`) as an integer expression."""
    if isinstance(expr, ast.Number) and float(expr.value).is_integer():
        return ast.DimInt(value=int(expr.value), span=expr.span)
    if isinstance(expr, ast.Ref) and not expr.prime:
        return ast.DimName(name=expr.name, span=expr.span)
    raise TypeMismatchError("a block's param takes a whole number or a param's name", expr.span)
