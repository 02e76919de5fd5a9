"""Compiled cells (cellgen.compile / cellgen.compile_stack) vs the hand-written references.

The references live in tests/reference_cells.py and are written straight from the gate
equations; they share no code with cellgen. Every comparison is in fp32 with a max
absolute difference of 1e-5 (rtol = 0), for outputs, every state, and gradients of every
parameter (by name) and of the input frames.

cellgen is imported lazily inside the tests, so this file collects (and the
reference-only tests run) even when the compiler is missing.
"""

import functools
import math
import os
import sys

import pytest
import torch

_TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_TESTS_DIR)
for _p in (_TESTS_DIR, _ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import reference_cells as ref  # noqa: E402

SPECS = ("convlstm", "convlstm_peephole", "predrnn")
OPT_LEVELS = (0, 1, 2)

B, CIN, HIDDEN, K, H, W = 2, 3, 8, 3, 10, 10
T_CELL = 3
T_STACK = 5
LAYERS = 2
ATOL = 1e-5

# Loss weights are drawn at this scale so that parameter gradients are O(1): an absolute
# tolerance of 1e-5 is then a relative one of ~1e-5, which an exact rewrite (e.g. fused
# convs, which only reorder fp32 sums) meets and a wrong one does not.
LOSS_WEIGHT_SCALE = 0.05


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def cellgen_module():
    import cellgen  # noqa: WPS433  (lazy: the compiler may not exist yet)
    return cellgen


def spec_kwargs(spec):
    kw = dict(in_channels=CIN, hidden=HIDDEN, k=K)
    if spec == "convlstm_peephole":
        kw.update(height=H, width=W)
    return kw


def ref_params(spec, in_channels=CIN):
    kw = spec_kwargs(spec)
    kw["in_channels"] = in_channels
    return ref.make_params(spec, **kw)


@functools.lru_cache(maxsize=None)  # one compile per (spec, level): every test loads its own weights
def compile_cell(spec, opt_level):
    return cellgen_module().compile(spec, opt_level=opt_level, **spec_kwargs(spec))


def max_abs(a, b):
    return (a.detach() - b.detach()).abs().max().item()


def assert_close(actual, expected, what):
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    d = max_abs(actual, expected)
    assert d <= ATOL, f"{what}: max abs diff {d:.3e} > {ATOL:.0e}"


def loss_weights(shapes, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g) * LOSS_WEIGHT_SCALE for s in shapes]


def weighted_sum(tensors, weights):
    assert len(tensors) == len(weights)
    return sum((w * t).sum() for t, w in zip(tensors, weights))


def leaf_copy(d):
    return {k: v.detach().clone().requires_grad_(True) for k, v in d.items()}


def flatten_cell_run(spec, outs, states):
    """[h_1, s_1[h], s_1[c], (s_1[m]), h_2, ...] in a fixed order."""
    flat = []
    for h, s in zip(outs, states):
        flat.append(h)
        flat.extend(s[n] for n in ref.state_names(spec))
    return flat


def run_compiled_cell(cell, xs, state0=None):
    state = state0
    outs, states = [], []
    for t in range(xs.shape[1]):
        h, state = cell(xs[:, t], state)
        assert isinstance(state, dict), f"state must be a dict, got {type(state)}"
        outs.append(h)
        states.append(dict(state))
    return outs, states


def run_ref_cell(spec, p, xs, state0=None):
    state = state0 if state0 is not None else ref.zero_state(spec, xs.shape[0], HIDDEN, H, W)
    outs, states = [], []
    for t in range(xs.shape[1]):
        h, state = ref.cell_step(spec, p, xs[:, t], state)
        outs.append(h)
        states.append(state)
    return outs, states


def compare_grads(named_grads_actual, named_grads_expected, what):
    assert set(named_grads_actual) == set(named_grads_expected), (
        f"{what}: gradient names differ: "
        f"{sorted(set(named_grads_actual) ^ set(named_grads_expected))}")
    nontrivial = 0
    for name, ge in named_grads_expected.items():
        ga = named_grads_actual[name]
        assert ga is not None, f"{what}: no gradient reached {name} (unused parameter?)"
        assert_close(ga, ge, f"{what}: grad of {name}")
        if ge.abs().max().item() > 1e-3:
            nontrivial += 1
    # guard against a vacuous comparison (all-zero gradients on both sides)
    assert nontrivial >= len(named_grads_expected) // 2, f"{what}: gradients suspiciously small"


def grads_by_name(loss, named):
    names = list(named)
    gs = torch.autograd.grad(loss, [named[n] for n in names], allow_unused=True)
    return dict(zip(names, gs))


# ---------------------------------------------------------------------------
# single cell: names and shapes
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("opt_level", OPT_LEVELS)
@pytest.mark.parametrize("spec", SPECS)
def test_cell_state_dict_matches_reference(spec, opt_level):
    torch.manual_seed(0)
    cell = compile_cell(spec, opt_level)
    expected = ref.param_shapes(spec, **spec_kwargs(spec))
    actual = {k: tuple(v.shape) for k, v in cell.state_dict().items()}
    assert set(actual) == set(expected), (
        f"missing {sorted(set(expected) - set(actual))}, extra {sorted(set(actual) - set(expected))}")
    for name, shape in expected.items():
        assert actual[name] == tuple(shape), f"{name}: {actual[name]} != {shape}"
    # parameters (not buffers), directly on the module, named by the spec symbols
    assert {n for n, _ in cell.named_parameters()} == set(expected)


# ---------------------------------------------------------------------------
# single cell: forward and gradients over 3 steps
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("opt_level", OPT_LEVELS)
@pytest.mark.parametrize("spec", SPECS)
def test_cell_forward_matches_reference(spec, opt_level):
    torch.manual_seed(1234)
    params = ref_params(spec)
    xs = torch.randn(B, T_CELL, CIN, H, W)

    cell = compile_cell(spec, opt_level)
    cell.load_state_dict(params, strict=True)

    with torch.no_grad():
        outs_a, states_a = run_compiled_cell(cell, xs, None)
        outs_e, states_e = run_ref_cell(spec, params, xs)

    names = ref.state_names(spec)
    for t in range(T_CELL):
        assert set(states_a[t]) == set(names), f"step {t}: state keys {sorted(states_a[t])}"
        assert_close(outs_a[t], outs_e[t], f"{spec} O{opt_level} step {t} output h")
        for n in names:
            assert_close(states_a[t][n], states_e[t][n], f"{spec} O{opt_level} step {t} state {n}")
        assert_close(outs_a[t], states_a[t]["h"], f"{spec} O{opt_level} step {t} returned h vs state['h']")
    # not vacuous: the states actually evolve and are non-zero
    for n in names:
        assert states_e[-1][n].abs().max() > 1e-2
        assert max_abs(states_e[-1][n], states_e[0][n]) > 1e-3


@pytest.mark.parametrize("opt_level", OPT_LEVELS)
@pytest.mark.parametrize("spec", SPECS)
def test_cell_nonzero_initial_state(spec, opt_level):
    """An explicit state dict (not None) at t=0 is used as given."""
    torch.manual_seed(99)
    params = ref_params(spec)
    xs = torch.randn(B, T_CELL, CIN, H, W)
    state0 = {n: torch.randn(B, HIDDEN, H, W) * 0.5 for n in ref.state_names(spec)}

    cell = compile_cell(spec, opt_level)
    cell.load_state_dict(params, strict=True)
    with torch.no_grad():
        outs_a, states_a = run_compiled_cell(cell, xs, dict(state0))
        outs_e, states_e = run_ref_cell(spec, params, xs, dict(state0))
    for t in range(T_CELL):
        assert_close(outs_a[t], outs_e[t], f"{spec} O{opt_level} step {t} output h")
        for n in ref.state_names(spec):
            assert_close(states_a[t][n], states_e[t][n], f"{spec} O{opt_level} step {t} state {n}")


@pytest.mark.parametrize("opt_level", OPT_LEVELS)
@pytest.mark.parametrize("spec", SPECS)
def test_cell_gradients_match_reference(spec, opt_level):
    torch.manual_seed(4321)
    params = ref_params(spec)
    xs = torch.randn(B, T_CELL, CIN, H, W)
    n_terms = T_CELL * (1 + len(ref.state_names(spec)))
    weights = loss_weights([(B, HIDDEN, H, W)] * n_terms, seed=7)

    # compiled side
    cell = compile_cell(spec, opt_level)
    cell.load_state_dict(params, strict=True)
    named_a = dict(cell.named_parameters())
    for p in named_a.values():
        p.requires_grad_(True)
    xs_a = xs.clone().requires_grad_(True)
    outs_a, states_a = run_compiled_cell(cell, xs_a, None)
    loss_a = weighted_sum(flatten_cell_run(spec, outs_a, states_a), weights)
    grads_a = grads_by_name(loss_a, {**named_a, "<input frames>": xs_a})

    # reference side
    named_e = leaf_copy(params)
    xs_e = xs.clone().requires_grad_(True)
    outs_e, states_e = run_ref_cell(spec, named_e, xs_e)
    loss_e = weighted_sum(flatten_cell_run(spec, outs_e, states_e), weights)
    grads_e = grads_by_name(loss_e, {**named_e, "<input frames>": xs_e})

    assert abs(loss_a.item() - loss_e.item()) <= ATOL * max(1.0, abs(loss_e.item()))
    compare_grads(grads_a, grads_e, f"{spec} O{opt_level}")


# ---------------------------------------------------------------------------
# stacks
# ---------------------------------------------------------------------------

STACKS = {
    # spec -> reference unroll(layer_params, xs) -> (ys, states)
    "convlstm": ref.convlstm_stack_unroll,
    "predrnn": ref.predrnn_unroll,
}


def stack_layer_params(spec):
    return [ref_params(spec, in_channels=CIN if l == 0 else HIDDEN) for l in range(LAYERS)]


def stack_state_dict(layer_params):
    return {f"layers.{l}.{name}": t for l, p in enumerate(layer_params) for name, t in p.items()}


@functools.lru_cache(maxsize=None)
def compile_stack(spec, opt_level):
    return cellgen_module().compile_stack(spec, layers=LAYERS, opt_level=opt_level,
                                          in_channels=CIN, hidden=HIDDEN, k=K)


def flatten_stack_run(spec, ys, states):
    flat = [ys]
    for s in states:
        flat.extend(s[n] for n in ref.state_names(spec))
    return flat


def check_stack_states(spec, states_a, states_e, what):
    assert isinstance(states_a, (list, tuple)) and len(states_a) == LAYERS, (
        f"{what}: states must be a list of {LAYERS} dicts, got {type(states_a)}")
    for l in range(LAYERS):
        assert set(states_a[l]) == set(ref.state_names(spec)), f"{what}: layer {l} keys {sorted(states_a[l])}"
        for n in ref.state_names(spec):
            assert_close(states_a[l][n], states_e[l][n], f"{what}: layer {l} final state {n}")


@pytest.mark.parametrize("opt_level", OPT_LEVELS)
@pytest.mark.parametrize("spec", sorted(STACKS))
def test_stack_state_dict_matches_reference(spec, opt_level):
    stack = compile_stack(spec, opt_level)
    expected = {}
    for l in range(LAYERS):
        kw = spec_kwargs(spec)
        kw["in_channels"] = CIN if l == 0 else HIDDEN
        for name, shape in ref.param_shapes(spec, **kw).items():
            expected[f"layers.{l}.{name}"] = tuple(shape)
    actual = {k: tuple(v.shape) for k, v in stack.state_dict().items()}
    assert actual == expected, (
        f"missing {sorted(set(expected) - set(actual))}, extra {sorted(set(actual) - set(expected))}, "
        f"shape mismatches {sorted(k for k in set(actual) & set(expected) if actual[k] != expected[k])}")


@pytest.mark.parametrize("opt_level", OPT_LEVELS)
@pytest.mark.parametrize("spec", sorted(STACKS))
def test_stack_forward_matches_reference(spec, opt_level):
    torch.manual_seed(2024)
    layer_params = stack_layer_params(spec)
    xs = torch.randn(B, T_STACK, CIN, H, W)

    stack = compile_stack(spec, opt_level)
    stack.load_state_dict(stack_state_dict(layer_params), strict=True)
    with torch.no_grad():
        ys_a, states_a = stack(xs)
        ys_e, states_e = STACKS[spec](layer_params, xs)
        ys_a2, states_a2 = stack(xs, states=None)

    what = f"{spec} stack O{opt_level}"
    assert_close(ys_a, ys_e, f"{what}: ys")
    check_stack_states(spec, states_a, states_e, what)
    assert_close(ys_a2, ys_e, f"{what}: ys with states=None")
    check_stack_states(spec, states_a2, states_e, what + " (states=None)")
    # the last output is the top layer's final h
    assert_close(ys_a[:, -1], states_a[-1]["h"], f"{what}: ys[:, -1] vs states[-1]['h']")


@pytest.mark.parametrize("opt_level", OPT_LEVELS)
@pytest.mark.parametrize("spec", sorted(STACKS))
def test_stack_gradients_match_reference(spec, opt_level):
    torch.manual_seed(77)
    layer_params = stack_layer_params(spec)
    xs = torch.randn(B, T_STACK, CIN, H, W)
    shapes = [(B, T_STACK, HIDDEN, H, W)] + [(B, HIDDEN, H, W)] * (LAYERS * len(ref.state_names(spec)))
    weights = loss_weights(shapes, seed=11)

    stack = compile_stack(spec, opt_level)
    stack.load_state_dict(stack_state_dict(layer_params), strict=True)
    named_a = dict(stack.named_parameters())
    for p in named_a.values():
        p.requires_grad_(True)
    xs_a = xs.clone().requires_grad_(True)
    ys_a, states_a = stack(xs_a)
    loss_a = weighted_sum(flatten_stack_run(spec, ys_a, states_a), weights)
    grads_a = grads_by_name(loss_a, {**named_a, "<input frames>": xs_a})

    leaves = [leaf_copy(p) for p in layer_params]
    xs_e = xs.clone().requires_grad_(True)
    ys_e, states_e = STACKS[spec](leaves, xs_e)
    loss_e = weighted_sum(flatten_stack_run(spec, ys_e, states_e), weights)
    named_e = {f"layers.{l}.{n}": t for l, p in enumerate(leaves) for n, t in p.items()}
    grads_e = grads_by_name(loss_e, {**named_e, "<input frames>": xs_e})

    compare_grads(grads_a, grads_e, f"{spec} stack O{opt_level}")


# ---------------------------------------------------------------------------
# the references themselves (run without cellgen)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("spec", SPECS)
def test_reference_shapes(spec):
    torch.manual_seed(0)
    p = ref_params(spec)
    for name, shape in ref.param_shapes(spec, **spec_kwargs(spec)).items():
        assert tuple(p[name].shape) == tuple(shape)
    outs, states = run_ref_cell(spec, p, torch.randn(B, T_CELL, CIN, H, W))
    for h, s in zip(outs, states):
        assert h.shape == (B, HIDDEN, H, W)
        assert set(s) == set(ref.state_names(spec))
        assert all(v.shape == (B, HIDDEN, H, W) for v in s.values())
        assert torch.isfinite(h).all()


def test_reference_peephole_with_zero_peepholes_is_convlstm():
    torch.manual_seed(3)
    p = ref_params("convlstm_peephole")
    x, h, c = torch.randn(B, CIN, H, W), torch.randn(B, HIDDEN, H, W), torch.randn(B, HIDDEN, H, W)
    plain = {k: v for k, v in p.items() if not k.startswith("W_c")}
    zero_peep = {**plain, **{k: torch.zeros_like(v) for k, v in p.items() if k.startswith("W_c")}}
    for a, b in zip(ref.convlstm_peephole_step(zero_peep, x, h, c), ref.convlstm_step(plain, x, h, c)):
        assert torch.equal(a, b)
    # and the peepholes matter when non-zero
    assert max_abs(ref.convlstm_peephole_step(p, x, h, c)[0], ref.convlstm_step(plain, x, h, c)[0]) > 1e-3


def test_reference_peephole_output_gate_reads_new_c():
    """o peeks at c' (not c): check one pixel by hand (k=1, one channel, 1x1 map)."""
    torch.manual_seed(5)
    p = ref.make_params("convlstm_peephole", in_channels=1, hidden=1, k=1, height=1, width=1)
    x, h, c = torch.randn(1, 1, 1, 1), torch.randn(1, 1, 1, 1), torch.randn(1, 1, 1, 1)
    w = {name: t.reshape(()).item() for name, t in p.items()}
    xv, hv, cv = x.item(), h.item(), c.item()

    def sig(v):
        return 1.0 / (1.0 + math.exp(-v))

    i = sig(w["W_xi"] * xv + w["W_hi"] * hv + w["W_ci"] * cv + w["b_i"])
    f = sig(w["W_xf"] * xv + w["W_hf"] * hv + w["W_cf"] * cv + w["b_f"])
    c_new = f * cv + i * math.tanh(w["W_xc"] * xv + w["W_hc"] * hv + w["b_c"])
    o = sig(w["W_xo"] * xv + w["W_ho"] * hv + w["W_co"] * c_new + w["b_o"])
    h_new = o * math.tanh(c_new)
    h_ref, c_ref = ref.convlstm_peephole_step(p, x, h, c)
    assert abs(c_ref.item() - c_new) < 1e-6
    assert abs(h_ref.item() - h_new) < 1e-6


def test_reference_stlstm_forget_bias_and_no_conv_bias():
    """With all weights zero: i = o = 0.5, f = f_m = sigmoid(1), g = g_m = 0, so
    c' = sigmoid(1) c, m' = sigmoid(1) m and h' = 0.5 tanh(0) = 0."""
    p = {k: torch.zeros_like(v) for k, v in ref_params("predrnn").items()}
    x, h, c, m = (torch.randn(B, n, H, W) for n in (CIN, HIDDEN, HIDDEN, HIDDEN))
    h2, c2, m2 = ref.stlstm_step(p, x, h, c, m)
    s1 = torch.sigmoid(torch.tensor(1.0))
    torch.testing.assert_close(c2, s1 * c, atol=1e-7, rtol=0)
    torch.testing.assert_close(m2, s1 * m, atol=1e-7, rtol=0)
    assert torch.equal(h2, torch.zeros_like(h2))


def test_reference_predrnn_unroll_matches_explicit_two_layers():
    torch.manual_seed(6)
    layer_params = stack_layer_params("predrnn")
    xs = torch.randn(B, T_STACK, CIN, H, W)
    ys, states = ref.predrnn_unroll(layer_params, xs)
    ys2, states2 = ref.predrnn_unroll_2layer_explicit(layer_params[0], layer_params[1], xs)
    assert ys.shape == (B, T_STACK, HIDDEN, H, W)
    assert torch.equal(ys, ys2)
    for l in range(LAYERS):
        for n in ("h", "c", "m"):
            assert torch.equal(states[l][n], states2[l][n])
    # the zigzag link matters: a variant where layer 0 reads its OWN previous m
    # (instead of the top layer's) gives a different result
    p0, p1 = layer_params
    z = lambda: torch.zeros(B, HIDDEN, H, W)  # noqa: E731
    h0, c0, m0, h1, c1, m1 = z(), z(), z(), z(), z(), z()
    for t in range(T_STACK):
        h0, c0, m0 = ref.stlstm_step(p0, xs[:, t], h0, c0, m0)
        h1, c1, m1 = ref.stlstm_step(p1, h0, h1, c1, m0)
    assert max_abs(h1, states[1]["h"]) > 1e-4


def test_reference_predrnn_one_layer_is_the_cell():
    """With one layer the zigzag m is just the layer's own m along time."""
    torch.manual_seed(8)
    p = ref_params("predrnn")
    xs = torch.randn(B, T_STACK, CIN, H, W)
    ys, states = ref.predrnn_unroll([p], xs)
    outs, cell_states = run_ref_cell("predrnn", p, xs)
    assert torch.equal(ys, torch.stack(outs, dim=1))
    for n in ("h", "c", "m"):
        assert torch.equal(states[0][n], cell_states[-1][n])


def test_reference_convlstm_stack_layer0_is_the_cell():
    torch.manual_seed(9)
    layer_params = stack_layer_params("convlstm")
    xs = torch.randn(B, T_STACK, CIN, H, W)
    _, states = ref.convlstm_stack_unroll(layer_params, xs)
    outs, cell_states = run_ref_cell("convlstm", layer_params[0], xs)
    for n in ("h", "c"):
        assert torch.equal(states[0][n], cell_states[-1][n])
    ys1, _ = ref.convlstm_stack_unroll(layer_params[:1], xs)
    assert torch.equal(ys1, torch.stack(outs, dim=1))
