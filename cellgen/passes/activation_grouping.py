"""Activation grouping: gates that apply the same activation to neighbouring channels of one
fused conv share ONE activation call; the fused conv's gate chunks are first reordered so
that gates with the same activation are neighbours.

    before                                  after
    F = conv(a, cat([W_i, W_f, W_c, W_o]))  F = conv(a, cat([W_i, W_f, W_o, W_c]))
    i = σ(F[:, 0:C])                        s = σ(F[:, 0:3C])
    f = σ(F[:, C:2C])                       i = s[:, 0:C];  f = s[:, C:2C];  o = s[:, 2C:3C]
    g = tanh(F[:, 2C:3C])                   g = tanh(F[:, 3C:4C])
    o = σ(F[:, 3C:4C])

Rule 1 (reorder): conv F whose readers are slices tiling its channels exactly  →  the same
       conv with its chunks permuted (weight and bias rows permuted alike, the slices
       re-pointed), stably grouping chunks that feed the same activation.
Guard: every user of F is a slice, the slices tile [0, C) without gaps or overlaps, and the
permutation makes more same-activation chunks adjacent. Exact: output channel k of a conv
depends only on row k of its weight and bias, so permuting rows permutes channels.
Rule 2 (merge): act(T[:, a:b]), act(T[:, b:c])  →  s = act(T[:, a:c]); s[:, 0:b-a], s[:, b-a:c-a]
Guard: the same activation (σ, tanh, relu) of the same tensor on adjacent ranges. Exact:
an activation is elementwise.

Off by default (enable it by name): measured on CPU eager (ConvLSTM, 1 thread), one σ over
3C channels made the step 0–9 % slower than three σ over C — i, f and o become strided
views of the shared output, and the elementwise tail (f ⊙ c + i ⊙ g, o ⊙ tanh(c')) runs
slower on strided views than it saves in calls. It may pay under torch.compile or on GPU.
"""
from __future__ import annotations

from cellgen.ir.graph import CellGraph
from cellgen.ir.ops import ACTIVATIONS
from cellgen.passes.rules import (Rule, channels, conv_bias, conv_source, conv_weight, is_op, new_conv, new_op,
                                  only_user, owner, replace, rewrite, slice_of, weight_cat, weight_slice)


def _activation(g: CellGraph, chunk: str):
    user = only_user(g, chunk)
    return g[user]["op"] if user is not None and is_op(g, user, *ACTIVATIONS) else None


def _tiles(g: CellGraph, conv: str):
    users = g.users(conv)
    if conv in g.results() or len(users) < 2 or not all(is_op(g, u, "slice") for u in users):
        return None
    spans = sorted((g[u]["start"], g[u]["stop"], u) for u in users)
    at = 0
    for start, stop, _ in spans:
        if start != at:
            return None
        at = stop
    return spans if at == channels(g, conv) else None


def _adjacent_pairs(acts: list) -> int:
    return sum(1 for a, b in zip(acts, acts[1:]) if a is not None and a == b)


def _match_reorder(g: CellGraph, conv: str):
    spans = _tiles(g, conv)
    if spans is None:
        return None
    acts = [_activation(g, u) for _, _, u in spans]
    first = {}
    for index, act in enumerate(acts):
        first.setdefault(act, index)
    order = sorted(range(len(spans)), key=lambda k: (first[acts[k]] if acts[k] is not None else len(acts), k))
    if _adjacent_pairs([acts[k] for k in order]) > _adjacent_pairs(acts):
        return conv, [spans[k] for k in order]
    return None


def _apply_reorder(g: CellGraph, match) -> str:
    conv, spans = match
    weight, bias = conv_weight(g, conv), conv_bias(g, conv)
    new_weight = weight_cat(g, [weight_slice(g, weight, a, b) for a, b, _ in spans], dim=0)
    new_bias = None if bias is None else weight_cat(g, [weight_slice(g, bias, a, b) for a, b, _ in spans], dim=0)
    fused = new_conv(g, conv_source(g, conv), new_weight, new_bias, like=conv)
    names = [name for _, _, chunk in spans for name in _gate_names(g, chunk)]
    at = 0
    for start, stop, chunk in spans:
        replace(g, chunk, slice_of(g, fused, at, at + stop - start))
        at += stop - start
    return f"gate order {' '.join(names)}"


def _gate_names(g: CellGraph, chunk: str) -> list[str]:
    """The gates a chunk computes: `i`, or `i f` for a chunk already under one shared activation."""
    user = only_user(g, chunk)
    if user is not None and is_op(g, user, *ACTIVATIONS) and not g[user].get("name"):
        return [owner(g, u) for u in sorted(g.users(user), key=lambda u: g[u].get("start", 0))]
    return [owner(g, chunk)]


def _sliced_activations(g: CellGraph, tensor: str, op: str) -> list[tuple[int, int, str]]:
    """(start, stop, node) for each activation `op` of a slice of `tensor`, by range."""
    return sorted((g[piece]["start"], g[piece]["stop"], act) for piece in g.users(tensor) if is_op(g, piece, "slice")
                  for act in g.users(piece) if is_op(g, act, op) and g.operands(act) == [piece])


def _match_merge(g: CellGraph, node: str):
    (operand,) = g.operands(node)
    if not is_op(g, operand, "slice"):
        return None
    op, tensor = g[node]["op"], g.operands(operand)[0]
    acts = _sliced_activations(g, tensor, op)
    run = [acts[0]]
    for act in acts[1:]:
        if act[0] == run[-1][1]:
            run.append(act)
        elif len(run) > 1:
            break
        else:
            run = [act]
    return (op, tensor, run) if len(run) > 1 else None


def _revisit(g: CellGraph, node: str):
    """Merging reads the activations of every slice of a tensor, reordering the activations
    of every slice of a conv: a change at a tensor or a slice revisits both ends."""
    if is_op(g, node, "slice"):
        yield g.operands(node)[0]
    for piece in g.users(node):
        if is_op(g, piece, "slice"):
            yield from (act for act in g.users(piece) if is_op(g, act, *ACTIVATIONS))


def _apply_merge(g: CellGraph, match) -> str:
    op, tensor, run = match
    start, stop = run[0][0], run[-1][1]
    merged = new_op(g, op, [slice_of(g, tensor, start, stop)], channels=stop - start)
    names = []
    for a, b, node in run:
        names += [g[node]["name"]] if g[node]["name"] else [owner(g, u) for u in g.users(node)]
        replace(g, node, slice_of(g, merged, a - start, b - start))
    return f"{op}({' '.join(names)})"


RULES = [
    Rule("act(T[a:b]), act(T[b:c])  →  act(T[a:c]) sliced", "same activation, same tensor, adjacent ranges",
         tuple(sorted(ACTIVATIONS)), _match_merge, _apply_merge, revisit=_revisit),
    Rule("conv rows permuted so that same-activation chunks are adjacent",
         "readers are slices tiling the conv's channels; more adjacent same-activation chunks", ("conv",),
         _match_reorder, _apply_reorder, revisit=_revisit),
]


def activation_grouping(graph: CellGraph, *, in_place: bool = False) -> tuple[CellGraph, list[str]]:
    g, notes = rewrite(graph, RULES, in_place=in_place)
    return g, (["; ".join(notes)] if notes else [])
