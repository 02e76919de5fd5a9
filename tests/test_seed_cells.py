"""The seed cells (E3D-LSTM and its variants, ASTM, CMS-LSTM, PredRNN+CE+SE, the multi-kernel
ConvLSTMs) compiled by cellgen vs the hand-written references of tests/reference_seed_cells.py,
which are written from /work/shared/design/cells.md and the papers and share no code with
cellgen.

* Equivalence: every spec at -O0 and -O2, small sizes, float64, every parameter re-randomised
  (the compiled module's own init may be trivial, e.g. LayerNorm gains of 1), 5 steps (more
  than τ, so the history ring buffer wraps), from the zero state and from a random one:
  outputs and every state at every step, then the gradients of a weighted sum of all of them
  w.r.t. every parameter (by name), the inputs and the initial state. max abs diff <= 1e-8.
* state_dict: keys and shapes identical at -O0 and -O2 and equal to the reference's.
* The "must show" properties, black-box through cellgen.compile:
  (a) RECALL against an explicit per-position loop (a probe spec and the e3d cell itself);
  (b) EIFAG's softmax runs over the history axis (loop, locality, weights summing to 1);
  (c) the history holds τ DISTINCT past states (`state["c.history"]`);
  (d) CMS SE attention is local to its s×s patch (autograd);
  (e) the multi-kernel conv is gate-major: channel j of every gate comes from exactly one
      kernel's row, at -O0 and at -O2 (which groups/interleaves the kernels).
Small probe specs are compiled from text; they use the language features of the seed specs.

The reference-only self-checks at the bottom run without the compiler.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, Tuple

import pytest
import torch
import torch.nn.functional as F

_TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

import reference_cells as base_ref  # noqa: E402
import reference_seed_cells as ref  # noqa: E402

DT = torch.float64
ATOL = 1e-8
B = 2
STEPS = 5
OPT_LEVELS = (0, 2)

# cells.md ("Official code": "its output gate is tanh(...) then σ") and google/e3d_lstm's
# rnn_cell.py have NO LayerNorm on the output gate; specs/e3d_lstm_official.cell has LN_o.
# The reference follows cells.md.
E3D_OFFICIAL_OUTPUT_GATE_LN = False


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------
# the cases
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    spec: str
    params: Tuple[Tuple[str, object], ...]          # cellgen.compile(**params)
    make_ref: Callable[[], ref.RefCell]
    inputs: Tuple[Tuple[int, ...], ...]             # per-step input shapes (x[, flow])

    @property
    def kwargs(self):
        return dict(self.params)


X3D = (B, 2, 2, 6, 6)          # (B, C, T=2, H, W) windows
X2D = (B, 2, 8, 8)
XMK = (B, 3, 8, 8)

CASES: Dict[str, Case] = {
    "e3d_lstm-tau2": Case("e3d_lstm", (("in_channels", 2), ("hidden", 8), ("tau", 2)),
                          lambda: ref.E3DLSTM(2, 8, tau=2), (X3D,)),
    "e3d_lstm-unbounded": Case("e3d_lstm", (("in_channels", 2), ("hidden", 8)),
                               lambda: ref.E3DLSTM(2, 8, tau=None), (X3D,)),
    "e3d_lstm_official": Case("e3d_lstm_official", (("in_channels", 2), ("hidden", 8)),
                              lambda: ref.E3DLSTMOfficial(2, 8, tau=None,
                                                          output_gate_norm=E3D_OFFICIAL_OUTPUT_GATE_LN), (X3D,)),
    "e3d_lstm_official-tau2": Case("e3d_lstm_official", (("in_channels", 2), ("hidden", 8), ("tau", 2)),
                                   lambda: ref.E3DLSTMOfficial(2, 8, tau=2,
                                                               output_gate_norm=E3D_OFFICIAL_OUTPUT_GATE_LN), (X3D,)),
    "e3d_lstm_no_attention": Case("e3d_lstm_no_attention", (("in_channels", 2), ("hidden", 8)),
                                  lambda: ref.E3DLSTMNoAttention(2, 8), (X3D,)),
    "e3d_lstm_2d-tau2": Case("e3d_lstm_2d", (("in_channels", 2), ("hidden", 8), ("tau", 2)),
                             lambda: ref.E3DLSTM2D(2, 8, tau=2), (X2D,)),
    "e3d_lstm_2d-unbounded": Case("e3d_lstm_2d", (("in_channels", 2), ("hidden", 8)),
                                  lambda: ref.E3DLSTM2D(2, 8, tau=None), (X2D,)),
    "astm-tau3": Case("astm", (("in_channels", 2), ("hidden", 8), ("tau", 3)),
                      lambda: ref.ASTM(2, 8, tau=3), (X3D,)),
    "astm-tau2": Case("astm", (("in_channels", 2), ("hidden", 8), ("tau", 2)),
                      lambda: ref.ASTM(2, 8, tau=2), (X3D,)),
    "cms_lstm": Case("cms_lstm", (("in_channels", 2), ("hidden", 8), ("height", 8), ("width", 8)),
                     lambda: ref.CMSLSTM(2, 8, k=5, height=8, width=8), (X2D,)),
    "predrnn_ce_se": Case("predrnn_ce_se", (("in_channels", 2), ("hidden", 8), ("k", 3), ("height", 8), ("width", 8)),
                          lambda: ref.PredRNNCESE(2, 8, k=3, height=8, width=8), (X2D,)),
    "mk_convlstm": Case("mk_convlstm", (("in_channels", 3), ("hidden", 8)),
                        lambda: ref.MKConvLSTM(3, 8), (XMK,)),
    "mk_convlstm_1x1": Case("mk_convlstm_1x1", (("in_channels", 3), ("hidden", 8)),
                            lambda: ref.MKConvLSTM1x1(3, 8), (XMK,)),
    "mk_convlstm_inception": Case("mk_convlstm_inception", (("in_channels", 3), ("hidden", 8), ("bottleneck", 4)),
                                  lambda: ref.MKConvLSTMInception(3, 8, bottleneck=4), (XMK,)),
    "mk_convlstm_flow": Case("mk_convlstm_flow", (("in_channels", 3), ("hidden", 8), ("flow_channels", 2)),
                             lambda: ref.MKConvLSTMFlow(3, 8, flow_channels=2), (XMK, (B, 2, 8, 8))),
}


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def cellgen_module():
    import cellgen  # lazy: the references' self-checks run without the compiler
    return cellgen


@functools.lru_cache(maxsize=None)
def _compiled(spec: str, opt_level: int, params: Tuple[Tuple[str, object], ...]):
    return cellgen_module().compile(spec, opt_level=opt_level, **dict(params)).to(DT)


def compile_case(name: str, opt_level: int):
    case = CASES[name]
    return _compiled(case.spec, opt_level, case.params)


def compile_text(text: str, opt_level: int, **params):
    return _compiled(text, opt_level, tuple(sorted(params.items())))


def randomize_(module: torch.nn.Module, seed: int) -> Dict[str, torch.Tensor]:
    """Fill EVERY parameter with random values: conv weights ~ N(0, 1)·1.5/√fan_in (gates
    neither saturated nor linear), LayerNorm gains 1 + 0.3·N(0, 1), everything else 0.5·N(0, 1).
    Returns the state_dict."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            t = torch.randn(p.shape, generator=gen, dtype=DT)
            if "LN" in name and name.endswith(".weight"):
                t = 1.0 + 0.3 * t
            elif p.dim() >= 4:
                t = t * 1.5 / math.sqrt(math.prod(p.shape[1:]))
            else:
                t = t * 0.5
            p.copy_(t.to(p.dtype))
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def make_pair(name: str, opt_level: int, seed: int):
    """(compiled cell, reference) in float64 with the same random parameters."""
    reference = CASES[name].make_ref().to(DT)
    params = randomize_(reference, seed)
    cell = compile_case(name, opt_level)
    cell.load_state_dict(params, strict=True)
    return cell, reference


def random_steps(case: Case, seed: int):
    gen = torch.Generator().manual_seed(seed)
    return [tuple(torch.randn(s, generator=gen, dtype=DT) for s in case.inputs) for _ in range(STEPS)]


def run_compiled(cell, steps, state0=None):
    state = state0
    outs, states = [], []
    for inputs in steps:
        out, state = cell(*inputs, state)
        assert isinstance(state, dict), f"state must be a dict, got {type(state)}"
        outs.append(out)
        states.append(state)
    return outs, states


def assert_close(actual, expected, what, atol=ATOL):
    assert actual is not None, f"{what}: missing"
    assert tuple(actual.shape) == tuple(expected.shape), f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    d = (actual.detach() - expected.detach()).abs().max().item()
    assert d <= atol, f"{what}: max abs diff {d:.3e} > {atol:.0e}"


def weighted_loss(outs, states, names, seed):
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    for out, st in zip(outs, states):
        for t in [out] + [st[n] for n in names]:
            total = total + (torch.randn(t.shape, generator=gen, dtype=DT) * 0.1 * t).sum()
    return total


def torch_conv_same(x, w):
    """torch's own conv3d(padding="same") (not the reference's `conv`), without its warning
    about even kernel lengths."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return F.conv3d(x, w, padding="same")


def leaves(tensors):
    return [t.detach().clone().requires_grad_(True) for t in tensors]


def check_case(name, opt_level, nonzero_state: bool, seed: int):
    case = CASES[name]
    cell, reference = make_pair(name, opt_level, seed)
    steps = random_steps(case, seed + 1)
    names = reference.STATES

    state0 = None
    if nonzero_state:
        gen = torch.Generator().manual_seed(seed + 2)
        shape = (B, reference.hidden, *case.inputs[0][2:])
        state0 = {n: 0.5 * torch.randn(shape, generator=gen, dtype=DT) for n in names}

    # compiled side (leaf copies of inputs / initial state)
    steps_a = [tuple(leaves(s)) for s in steps]
    state0_a = {n: t.detach().clone().requires_grad_(True) for n, t in state0.items()} if state0 else None
    outs_a, states_a = run_compiled(cell, steps_a, dict(state0_a) if state0_a else None)
    # reference side
    steps_e = [tuple(leaves(s)) for s in steps]
    state0_e = {n: t.detach().clone().requires_grad_(True) for n, t in state0.items()} if state0 else None
    outs_e, states_e, _ = reference.run(steps_e, state0_e)

    what = f"{name} O{opt_level}{' (random initial state)' if nonzero_state else ''}"
    for t in range(STEPS):
        assert set(names) <= set(states_a[t]), f"{what} step {t}: state keys {sorted(states_a[t])}"
        assert_close(outs_a[t], outs_e[t], f"{what} step {t}: output")
        for n in names:
            assert_close(states_a[t][n], states_e[t][n], f"{what} step {t}: state {n}")
    # not vacuous: the output evolves
    assert (outs_e[-1] - outs_e[0]).abs().max() > 1e-3

    # gradients of one scalar over all steps w.r.t. every parameter, input and initial state
    loss_a = weighted_loss(outs_a, states_a, names, seed + 3)
    loss_e = weighted_loss(outs_e, states_e, names, seed + 3)
    params_a, params_e = dict(cell.named_parameters()), dict(reference.named_parameters())
    assert set(params_a) == set(params_e), (
        f"{what}: parameter names differ: {sorted(set(params_a) ^ set(params_e))}")
    keys = sorted(params_e)
    wrt_a = [params_a[k] for k in keys] + [t for s in steps_a for t in s]
    wrt_e = [params_e[k] for k in keys] + [t for s in steps_e for t in s]
    labels = keys + [f"input {j} of step {t}" for t, s in enumerate(steps) for j in range(len(s))]
    if state0:
        wrt_a += [state0_a[n] for n in names]
        wrt_e += [state0_e[n] for n in names]
        labels += [f"initial {n}" for n in names]
    grads_a = torch.autograd.grad(loss_a, wrt_a, allow_unused=True)
    grads_e = torch.autograd.grad(loss_e, wrt_e, allow_unused=True)
    nontrivial = 0
    for label, ga, ge in zip(labels, grads_a, grads_e):
        if ge is None:       # e.g. the initial m of e3d_lstm_official reaches nothing but m'
            ge = torch.zeros_like(wrt_e[labels.index(label)])
        if ga is None:
            ga = torch.zeros_like(ge)
        assert_close(ga, ge, f"{what}: grad of {label}")
        nontrivial += int(ge.abs().max().item() > 1e-6)
    assert nontrivial >= len(labels) * 3 // 4, f"{what}: gradients suspiciously small"


# ---------------------------------------------------------------------------------------------
# equivalence with the references
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CASES))
def test_state_dict_keys_and_shapes(name):
    expected = CASES[name].make_ref().shapes()
    shapes = {}
    for level in OPT_LEVELS:
        cell = compile_case(name, level)
        shapes[level] = {k: tuple(v.shape) for k, v in cell.state_dict().items()}
        assert {k for k, _ in cell.named_parameters()} == set(shapes[level]), \
            f"O{level}: state_dict holds non-parameters"
    assert shapes[0] == shapes[2], "state_dict differs between -O0 and -O2"
    actual = shapes[0]
    assert set(actual) == set(expected), (
        f"missing {sorted(set(expected) - set(actual))}, extra {sorted(set(actual) - set(expected))}")
    bad = {k: (actual[k], expected[k]) for k in expected if actual[k] != expected[k]}
    assert not bad, f"shape mismatches (compiled, reference): {bad}"


@pytest.mark.parametrize("opt_level", OPT_LEVELS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_reference_from_zero_state(name, opt_level):
    check_case(name, opt_level, nonzero_state=False, seed=10)


@pytest.mark.parametrize("opt_level", OPT_LEVELS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_reference_from_random_state(name, opt_level):
    check_case(name, opt_level, nonzero_state=True, seed=20)


def test_state_dict_saved_at_o0_loads_at_o2_with_equal_outputs():
    """The contract: a state_dict saved at one level loads at the other, outputs equal."""
    for name in ("e3d_lstm-tau2", "cms_lstm", "mk_convlstm_inception"):
        case = CASES[name]
        c0 = compile_case(name, 0)
        randomize_(c0, 5)
        c2 = compile_case(name, 2)
        c2.load_state_dict(c0.state_dict(), strict=True)
        steps = random_steps(case, 6)
        with torch.no_grad():
            outs0, st0 = run_compiled(c0, steps)
            outs2, st2 = run_compiled(c2, steps)
        for t in range(STEPS):
            assert_close(outs2[t], outs0[t], f"{name} step {t}: O2 vs O0")


# ---------------------------------------------------------------------------------------------
# (a) RECALL = an explicit per-position softmax over every history position
# ---------------------------------------------------------------------------------------------

RECALL_PROBE = """
cell RecallProbe "RECALL probe (tests/test_seed_cells.py)"
  param hidden = 3
  param T = 2
  param tau = none

  input x[hidden] window T
  state c[hidden]

  weights
    W : conv 1×1×1

  C  = c[t-tau:t-1]
  R  = attention(x, C, C)
  c' = tanh(W ⋆ x)
  output R
"""


def expected_history(cs, tau):
    return cs[-tau:] if tau is not None else list(cs)


@pytest.mark.parametrize("tau", [2, None])
@pytest.mark.parametrize("opt_level", OPT_LEVELS)
def test_recall_probe_matches_per_position_loop(opt_level, tau):
    params = {"hidden": 3} if tau is None else {"hidden": 3, "tau": tau}
    cell = compile_text(RECALL_PROBE, opt_level, **params)
    randomize_(cell, 1)
    gen = torch.Generator().manual_seed(2)
    xs = [torch.randn(B, 3, 2, 3, 3, generator=gen, dtype=DT) for _ in range(4)]
    c0 = torch.randn(B, 3, 2, 3, 3, generator=gen, dtype=DT)
    state = {"c": c0}
    cs = [c0]                                          # c_0, c_1, ... as the cell produced them
    with torch.no_grad():
        for t, x in enumerate(xs):
            R, state = cell(x, state)
            expected = ref.recall_loop(x, expected_history(cs, tau))
            assert_close(R, expected, f"step {t}: RECALL vs per-position loop (tau={tau})")
            cs.append(state["c"])


def test_e3d_cell_recall_against_loop():
    """Inside the e3d_lstm cell itself: with g ≡ 0 (W_xg = W_hg = 0, b_g = 0) and LN_c's gain 1,
    bias 0, c' = LayerNorm(c + RECALL(r, c[t-τ:t-1])); r is recomputed with torch's own
    conv3d(padding="same"), RECALL by the per-position loop."""
    for level in OPT_LEVELS:
        cell = compile_text("e3d_lstm", level, in_channels=2, hidden=3, tau=2)
        params = randomize_(cell, 3)
        for n in ("W_xg", "W_hg", "b_g", "LN_c.bias"):
            params[n] = torch.zeros_like(params[n])
        params["LN_c.weight"] = torch.ones_like(params["LN_c.weight"])
        cell.load_state_dict(params)
        gen = torch.Generator().manual_seed(4)
        state = {n: 0.5 * torch.randn(B, 3, 2, 3, 3, generator=gen, dtype=DT) for n in ("h", "c", "m")}
        cs = [state["c"]]
        with torch.no_grad():
            for t in range(4):
                x = torch.randn(B, 2, 2, 3, 3, generator=gen, dtype=DT)
                r = torch.sigmoid(torch_conv_same(x, params["W_xr"])
                                  + torch_conv_same(state["h"], params["W_hr"])
                                  + params["b_r"].view(1, -1, 1, 1, 1))
                v = state["c"] + ref.recall_loop(r, cs[-2:])
                mean = v.mean(dim=(1, 2, 3, 4), keepdim=True)
                var = v.var(dim=(1, 2, 3, 4), unbiased=False, keepdim=True)
                expected = (v - mean) / torch.sqrt(var + 1e-5)
                _, state = cell(x, state)
                assert_close(state["c"], expected, f"O{level} step {t}: e3d c' vs loop")
                cs.append(state["c"])


# ---------------------------------------------------------------------------------------------
# (b) EIFAG: softmax over the history axis, elementwise
# ---------------------------------------------------------------------------------------------

EIFAG_PROBE = """
cell EifagProbe "EIFAG probe (tests/test_seed_cells.py)"
  param hidden = 3
  param tau = 3

  input x[hidden]
  state c[hidden]

  weights
    W : conv 1×1

  S   = c[t-tau:t-1]
  T_c = sum(softmax(S ⊙ x, over=stack) ⊙ S, over=stack)
  c'  = tanh(W ⋆ x)
  output T_c
"""


@pytest.mark.parametrize("opt_level", OPT_LEVELS)
def test_eifag_probe_matches_elementwise_loop(opt_level):
    cell = compile_text(EIFAG_PROBE, opt_level, hidden=3, tau=3)
    randomize_(cell, 1)
    gen = torch.Generator().manual_seed(2)
    c0 = torch.randn(B, 3, 4, 4, generator=gen, dtype=DT)
    state, cs = {"c": c0}, [c0]
    with torch.no_grad():
        for t in range(6):
            x = 2.0 * torch.randn(B, 3, 4, 4, generator=gen, dtype=DT)
            T_c, state = cell(x, state)
            assert_close(T_c, ref.eifag_loop(x, cs[-3:]), f"O{opt_level} step {t}: EIFAG vs loop")
            if t == 0:
                # one history entry: softmax over the history axis is 1, so T = c_0 whatever x
                assert_close(T_c, c0, "first step: T_c = c_0")
            cs.append(state["c"])


@pytest.mark.parametrize("opt_level", OPT_LEVELS)
def test_eifag_weights_sum_to_one_over_the_history_axis(opt_level):
    """If every history entry is the same map v, Σ_n w_n v = v iff the weights sum to 1 over
    the history axis at every element (a softmax over channels or pixels would not give v)."""
    cell = compile_text(EIFAG_PROBE, opt_level, hidden=3, tau=3)
    params = randomize_(cell, 7)
    gen = torch.Generator().manual_seed(8)
    x = 2.0 * torch.randn(B, 3, 4, 4, generator=gen, dtype=DT)
    v = torch.tanh(torch.einsum("oi,bihw->bohw", params["W"][:, :, 0, 0], x))    # = c' for this x
    state = {"c": v.clone()}
    with torch.no_grad():
        for t in range(5):
            T_c, state = cell(x, state)
            assert_close(state["c"], v, f"step {t}: c' = tanh(W ⋆ x)")
            assert_close(T_c, v, f"O{opt_level} step {t}: all history entries equal v, so T_c = v")


@pytest.mark.parametrize("opt_level", OPT_LEVELS)
def test_eifag_is_elementwise(opt_level):
    """d T_c[b, ch, y, x] / d (x, every history entry) is non-zero only at that same element."""
    cell = compile_text(EIFAG_PROBE, opt_level, hidden=3, tau=3)
    randomize_(cell, 9)
    gen = torch.Generator().manual_seed(10)
    c0 = torch.randn(B, 3, 4, 4, generator=gen, dtype=DT).requires_grad_(True)
    state = {"c": c0}
    for _ in range(2):                     # build a 3-entry history [c_0, c_1, c_2]
        _, state = cell(torch.randn(B, 3, 4, 4, generator=gen, dtype=DT), state)
    x = torch.randn(B, 3, 4, 4, generator=gen, dtype=DT).requires_grad_(True)
    T_c, _ = cell(x, state)
    gx, gc0 = torch.autograd.grad(T_c[1, 2, 3, 0], [x, c0])
    for g, what in ((gx, "x (the forget gate)"), (gc0, "c_0 (a history entry)")):
        mask = torch.zeros_like(g, dtype=torch.bool)
        mask[1, 2, 3, 0] = True
        assert g[~mask].abs().max().item() == 0.0, f"T_c depends on {what} outside its own element"
        assert g[mask].abs().item() > 1e-6, f"T_c does not depend on {what} at its own element"


def test_astm_cell_eifag_against_loop():
    """Inside the astm cell: with g ≡ 0 (W_xg = W_hg = 0, b_g = 0), c' = f ⊙ EIFAG(f, history);
    f is recomputed with torch's conv3d(padding="same"), EIFAG by the elementwise loop."""
    for level in OPT_LEVELS:
        cell = compile_text("astm", level, in_channels=2, hidden=3, tau=2)
        params = randomize_(cell, 3)
        for n in ("W_xg", "W_hg", "b_g"):
            params[n] = torch.zeros_like(params[n])
        cell.load_state_dict(params)
        gen = torch.Generator().manual_seed(4)
        state = {n: 0.5 * torch.randn(B, 3, 2, 3, 3, generator=gen, dtype=DT) for n in ("h", "c", "m")}
        cs = [state["c"]]
        with torch.no_grad():
            for t in range(4):
                x = torch.randn(B, 2, 2, 3, 3, generator=gen, dtype=DT)
                f = torch.sigmoid(torch_conv_same(x, params["W_xf"])
                                  + torch_conv_same(state["h"], params["W_hf"])
                                  + params["b_f"].view(1, -1, 1, 1, 1))
                expected = f * ref.eifag_loop(f, cs[-2:])
                _, state = cell(x, state)
                assert_close(state["c"], expected, f"O{level} step {t}: astm c' vs loop")
                cs.append(state["c"])


# ---------------------------------------------------------------------------------------------
# (c) the history holds τ DISTINCT past states
# ---------------------------------------------------------------------------------------------

HISTORY_CASES = {
    "astm-tau3": (dict(in_channels=2, hidden=3, tau=3), "astm", (B, 2, 2, 4, 4)),
    "e3d_lstm-tau2": (dict(in_channels=2, hidden=3, tau=2), "e3d_lstm", (B, 2, 2, 4, 4)),
    "e3d_lstm-unbounded": (dict(in_channels=2, hidden=3), "e3d_lstm", (B, 2, 2, 4, 4)),
    "e3d_lstm_2d-tau3": (dict(in_channels=2, hidden=3, tau=3), "e3d_lstm_2d", (B, 2, 4, 4)),
}


@pytest.mark.parametrize("opt_level", OPT_LEVELS)
@pytest.mark.parametrize("name", sorted(HISTORY_CASES))
def test_history_holds_tau_distinct_past_states(name, opt_level):
    params, spec, xshape = HISTORY_CASES[name]
    tau = params.get("tau")
    cell = compile_text(spec, opt_level, **params)
    randomize_(cell, 11)
    gen = torch.Generator().manual_seed(12)
    sshape = (B, 3, *xshape[2:])
    state = {n: 0.5 * torch.randn(sshape, generator=gen, dtype=DT) for n in ("h", "c", "m")}
    cs = [state["c"].clone()]
    received = []                                   # (tensor as returned, clone at receipt)
    with torch.no_grad():
        for t in range(1, 7):
            _, state = cell(torch.randn(xshape, generator=gen, dtype=DT), state)
            cs.append(state["c"].clone())
            hist = state["c.history"]
            expected = expected_history(cs, tau)     # most recent <= τ of [c_0 … c_t], oldest first
            assert tuple(hist.shape) == (B, len(expected), *sshape[1:]), (
                f"step {t}: c.history shape {tuple(hist.shape)}, expected n = {len(expected)}")
            for j, e in enumerate(expected):
                assert torch.equal(hist[:, j], e), f"step {t}: history entry {j} is not c_{t + 1 - len(expected) + j}"
            for j in range(len(expected)):
                for k in range(j + 1, len(expected)):
                    assert hist[:, j].data_ptr() != hist[:, k].data_ptr(), f"step {t}: entries {j}, {k} alias"
                    assert (hist[:, j] - hist[:, k]).abs().max() > 1e-6, f"step {t}: entries {j}, {k} equal"
            received.append((hist, hist.clone(), state["c"], state["c"].clone()))
    # nothing handed out earlier was overwritten in place by a later step (ring buffer)
    for t, (hist, hist_copy, c, c_copy) in enumerate(received, start=1):
        assert torch.equal(hist, hist_copy), f"the history returned at step {t} was modified later"
        assert torch.equal(c, c_copy), f"the c returned at step {t} was modified later"


@pytest.mark.parametrize("opt_level", OPT_LEVELS)
def test_astm_reads_the_history_it_is_given(opt_level):
    """Dropping `c.history` from the state (a fresh history [c]) changes the next step:
    the cell really reads the distinct past states, not just c_{t-1}."""
    cell = compile_text("astm", opt_level, in_channels=2, hidden=3, tau=3)
    randomize_(cell, 13)
    gen = torch.Generator().manual_seed(14)
    xs = [torch.randn(B, 2, 2, 4, 4, generator=gen, dtype=DT) for _ in range(4)]
    with torch.no_grad():
        state = None
        for x in xs[:3]:
            _, state = cell(x, state)
        h_full, _ = cell(xs[3], state)
        h_fresh, _ = cell(xs[3], {n: state[n] for n in ("h", "c", "m")})
    assert (h_full - h_fresh).abs().max() > 1e-6


# ---------------------------------------------------------------------------------------------
# (d) CMS SE: attention at scale s is local to its s×s patch
# ---------------------------------------------------------------------------------------------

PATCH_PROBE = """
cell PatchProbe "SE patch-attention probe (tests/test_seed_cells.py)"
  param hidden = 3

  input x[hidden]
  state h[hidden], c[hidden]

  weights
    Q, K, V       : conv 1×1 -> hidden
    b_Q, b_K, b_V : bias

  S        = stack(h, c)
  Y        = attention(Q ⋆ S + b_Q, K ⋆ S + b_K, V ⋆ S + b_V, patches={s}) + S
  Y_h, Y_c = unstack(Y)
  h'       = Y_h + x
  c'       = Y_c
"""


def probe_reference(params, x, h, c, s):
    def proj(n, t):
        return ref.conv(t, params[n], params[f"b_{n}"])
    y_h, y_c = ref.patch_attention((proj("Q", h), proj("Q", c)), (proj("K", h), proj("K", c)),
                                   (proj("V", h), proj("V", c)), s)
    return y_h + h + x, y_c + c


@pytest.mark.parametrize("s", [1, 2, 4])
@pytest.mark.parametrize("opt_level", OPT_LEVELS)
def test_se_attention_is_local_to_its_patch(opt_level, s):
    H = W = 8
    cell = compile_text(PATCH_PROBE.replace("{s}", str(s)), opt_level, hidden=3)
    params = randomize_(cell, 21)
    gen = torch.Generator().manual_seed(22)
    x = torch.randn(B, 3, H, W, generator=gen, dtype=DT)
    h0 = torch.randn(B, 3, H, W, generator=gen, dtype=DT).requires_grad_(True)
    c0 = torch.randn(B, 3, H, W, generator=gen, dtype=DT).requires_grad_(True)
    out, state = cell(x, {"h": h0, "c": c0})

    exp_h, exp_c = probe_reference(params, x, h0, c0, s)
    assert_close(out, exp_h, f"s={s}: h' vs reference patch attention")
    assert_close(state["c"], exp_c, f"s={s}: c' vs reference patch attention")

    ph, pw = H // s, W // s
    for part, target in (("h'", out), ("c'", state["c"])):
        for (y0, x0) in ((5, 2), (0, 7)):
            gh, gc = torch.autograd.grad(target[1, 2, y0, x0], [h0, c0], retain_graph=True)
            inside = torch.zeros(B, 3, H, W, dtype=torch.bool)
            inside[1, :, (y0 // ph) * ph:(y0 // ph + 1) * ph, (x0 // pw) * pw:(x0 // pw + 1) * pw] = True
            for g, src in ((gh, "h"), (gc, "c")):
                assert g[~inside].abs().max().item() == 0.0, (
                    f"s={s}: {part}[{y0},{x0}] depends on {src} outside its {ph}×{pw} patch")
                per_pixel = g[1].abs().sum(dim=0)[inside[1, 0]]
                assert (per_pixel > 0).all(), (
                    f"s={s}: {part}[{y0},{x0}] misses some pixel of {src} inside its patch")


# ---------------------------------------------------------------------------------------------
# (e) multi-kernel: gate-major interleave at -O0 and -O2
# ---------------------------------------------------------------------------------------------

def test_mk_convlstm_kernels_are_interleaved_gate_major():
    """Channel j of gate g comes from row j of W_·g.3x3 (j < C/2) or row j - C/2 of W_·g.5x5
    (j >= C/2), and from no other row of any gate's kernels -- at -O0, and at -O2 where the
    kernels of all gates are grouped/interleaved. O2's outputs equal O0's."""
    C = 8
    cells = {level: compile_text("mk_convlstm", level, in_channels=3, hidden=C) for level in OPT_LEVELS}
    params = randomize_(cells[0], 31)
    cells[2].load_state_dict(params)
    gen = torch.Generator().manual_seed(32)
    x = torch.randn(B, 3, 8, 8, generator=gen, dtype=DT)
    state = {n: torch.randn(B, C, 8, 8, generator=gen, dtype=DT) for n in ("h", "c")}
    results = {}
    for level, cell in cells.items():
        out, st = cell(x, dict(state))
        results[level] = (out, st)
        named = dict(cell.named_parameters())
        for j in range(C):
            for target, gates in ((st["c"], "ifc"), (out, "ifco")):
                grads = torch.autograd.grad(target[:, j].sum(), list(named.values()), retain_graph=True,
                                            allow_unused=True)
                grads = dict(zip(named, grads))
                for g in "ifco":
                    for op in "xh":
                        for kname, row in (("3x3", j), ("5x5", j - C // 2)):
                            grad = grads[f"W_{op}{g}.{kname}"]
                            grad = torch.zeros_like(named[f"W_{op}{g}.{kname}"]) if grad is None else grad
                            rows = grad.flatten(1).abs().sum(dim=1)
                            should = g in gates and 0 <= row < C // 2
                            for r in range(C // 2):
                                hit = rows[r].item() > 0
                                what = f"O{level}: channel {j} vs W_{op}{g}.{kname} row {r}"
                                assert hit == (should and r == row), what + (" missing" if not hit else " leaks")
    assert_close(results[2][0], results[0][0], "O2 vs O0: h'")
    assert_close(results[2][1]["c"], results[0][1]["c"], "O2 vs O0: c'")


# ---------------------------------------------------------------------------------------------
# the references themselves (no compiler needed)
# ---------------------------------------------------------------------------------------------

def test_ref_conv_same_padding_matches_torch_and_tf():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 2, 5, 6, generator=gen, dtype=DT)
    for ker in ((2, 5, 5), (3, 5, 5), (1, 1, 1), (2, 3, 1)):
        w = torch.randn(4, 3, *ker, generator=gen, dtype=DT)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")     # torch warns about even kernels with "same"
            expected = F.conv3d(x, w, padding="same")
        assert_close(ref.conv(x, w), expected, f"conv3d {ker}")
    # TF SAME for the even temporal kernel: the extra zero frame goes AFTER
    w = torch.randn(1, 3, 2, 1, 1, generator=gen, dtype=DT)
    manual = F.conv3d(F.pad(x, (0, 0, 0, 0, 0, 1)), w)
    assert_close(ref.conv(x, w), manual, "TF SAME")
    x2 = torch.randn(2, 3, 7, 7, generator=gen, dtype=DT)
    for k in (1, 3, 5):
        w = torch.randn(4, 3, k, k, generator=gen, dtype=DT)
        assert_close(ref.conv(x2, w), F.conv2d(x2, w, padding=k // 2), f"conv2d {k}")


def test_ref_layernorms():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 2, 3, 5, generator=gen, dtype=DT)
    w, b = torch.randn(4, generator=gen, dtype=DT), torch.randn(4, generator=gen, dtype=DT)
    plain = F.layer_norm(x, x.shape[1:], eps=1e-12)
    assert_close(ref.layernorm(x, w, b, eps=1e-12), plain * w.view(1, 4, 1, 1, 1) + b.view(1, 4, 1, 1, 1), "joint")
    x2 = torch.randn(2, 4, 3, 10, generator=gen, dtype=DT)
    ln = torch.nn.LayerNorm([4, 3, 10]).to(DT)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    assert_close(ref.layernorm_trailing(x2, ln.weight, ln.bias), ln(x2), "nn.LayerNorm")


def test_ref_recall_matches_loop_and_is_a_softmax_over_all_history_positions():
    gen = torch.Generator().manual_seed(2)
    r = torch.rand(2, 3, 2, 3, 3, generator=gen, dtype=DT)
    hist = [torch.randn(2, 3, 2, 3, 3, generator=gen, dtype=DT) for _ in range(3)]
    assert_close(ref.recall(r, hist), ref.recall_loop(r, hist), "recall vs loop")
    # a zero query attends uniformly: R = the mean of all n·T·H·W history vectors
    R0 = ref.recall(torch.zeros_like(r), hist)
    mean = torch.cat([h.flatten(2) for h in hist], dim=2).mean(dim=2)
    assert_close(R0, mean.view(2, 3, 1, 1, 1).expand_as(R0), "uniform attention")
    # 2D as well
    r2 = torch.rand(1, 2, 3, 3, generator=gen, dtype=DT)
    hist2 = [torch.randn(1, 2, 3, 3, generator=gen, dtype=DT) for _ in range(2)]
    assert_close(ref.recall(r2, hist2), ref.recall_loop(r2, hist2), "recall 2D vs loop")


def test_ref_eifag():
    gen = torch.Generator().manual_seed(3)
    f = torch.rand(2, 3, 2, 3, 3, generator=gen, dtype=DT)
    hist = [torch.randn(2, 3, 2, 3, 3, generator=gen, dtype=DT) for _ in range(3)]
    assert_close(ref.eifag(f, hist), ref.eifag_loop(f, hist), "eifag vs loop")
    assert_close(ref.eifag(f, hist[:1]), hist[0], "one entry")
    assert_close(ref.eifag(f, [hist[1]] * 3), hist[1], "equal entries")


def test_ref_patch_attention_matches_pixel_loop_and_is_local():
    gen = torch.Generator().manual_seed(4)
    q, k, v = [tuple(torch.randn(1, 2, 4, 4, generator=gen, dtype=DT) for _ in range(2)) for _ in range(3)]
    for s in (1, 2, 4):
        a = ref.patch_attention(q, k, v, s)
        e = ref.patch_attention_loop(q, k, v, s)
        assert_close(a[0], e[0], f"s={s} h-part")
        assert_close(a[1], e[1], f"s={s} c-part")
    # locality with autograd
    kk = tuple(t.clone().requires_grad_(True) for t in k)
    out = ref.patch_attention(q, kk, v, 2)
    g = torch.autograd.grad(out[1][0, 1, 3, 0], kk)
    for part in g:
        assert part[0, :, :2, :].abs().max() == 0 and part[0, :, :, 2:].abs().max() == 0
        assert (part[0, :, 2:, :2].abs().sum(dim=0) > 0).all()


def _random_ref(make, seed=0):
    m = make().to(DT)
    randomize_(m, seed)
    return m


def _steps(shape, n, seed, extra=()):
    gen = torch.Generator().manual_seed(seed)
    return [tuple(torch.randn(s, generator=gen, dtype=DT) for s in (shape, *extra)) for _ in range(n)]


@pytest.mark.parametrize("name", sorted(CASES))
def test_ref_shapes_and_finite(name):
    case = CASES[name]
    m = _random_ref(case.make_ref)
    outs, states, read = m.run(random_steps(case, 0))
    for t, (o, s) in enumerate(zip(outs, states)):
        assert o.shape == (B, m.hidden, *case.inputs[0][2:])
        assert set(s) == set(m.STATES)
        assert all(v.shape == o.shape and torch.isfinite(v).all() for v in s.values())
        if m.HISTORY:
            n = t + 1 if m.tau is None else min(t + 1, m.tau)
            assert len(read[t]) == n


def test_ref_history_is_the_last_tau_distinct_states():
    m = _random_ref(lambda: ref.ASTM(2, 3, tau=3))
    steps = _steps((1, 2, 2, 4, 4), 6, 1)
    state0 = {n: torch.randn(1, 3, 2, 4, 4, dtype=DT) for n in m.STATES}
    outs, states, read = m.run(steps, state0)
    cs = [state0["c"]] + [s["c"] for s in states]
    for t in range(6):
        exp = cs[: t + 1][-3:]
        assert len(read[t]) == len(exp) and all(a is b for a, b in zip(read[t], exp))
        assert len({id(e) for e in read[t]}) == len(read[t])


def test_ref_astm_with_tau1_is_predrnn_3d():
    """τ = 1: EIFAG over [c_{t-1}] is c_{t-1}, so c' = I ⊙ G + F ⊙ c (a 3D ST-LSTM)."""
    m = _random_ref(lambda: ref.ASTM(2, 3, tau=1))
    steps = _steps((2, 2, 2, 4, 4), 4, 2)
    outs, states, _ = m.run(steps)
    P = m.P()
    h = c = torch.zeros(2, 3, 2, 4, 4, dtype=DT)
    for (x,), st in zip(steps, states):
        i = torch.sigmoid(ref.conv(x, P["W_xi"]) + ref.conv(h, P["W_hi"]) + ref.bias(P["b_i"], x))
        g = torch.tanh(ref.conv(x, P["W_xg"]) + ref.conv(h, P["W_hg"]) + ref.bias(P["b_g"], x))
        f = torch.sigmoid(ref.conv(x, P["W_xf"]) + ref.conv(h, P["W_hf"]) + ref.bias(P["b_f"], x))
        c = i * g + f * c
        assert_close(st["c"], c, "c")
        h = st["h"]


def test_ref_e3d_unbounded_equals_large_tau_and_tau_matters():
    a = _random_ref(lambda: ref.E3DLSTM(2, 3, tau=None))
    b = ref.E3DLSTM(2, 3, tau=10).to(DT)
    b.load_state_dict(a.state_dict())
    c = ref.E3DLSTM(2, 3, tau=1).to(DT)
    c.load_state_dict(a.state_dict())
    steps = _steps((1, 2, 2, 4, 4), 4, 3)
    oa, ob, oc = a.run(steps)[0], b.run(steps)[0], c.run(steps)[0]
    assert all(torch.equal(x, y) for x, y in zip(oa, ob))
    assert (oa[-1] - oc[-1]).abs().max() > 1e-6


def test_ref_e3d_first_step_by_hand():
    """At t = 1 with zero states, the history is [c_0] = [0]: RECALL returns 0 and
    c' = i ⊙ g + LN_c(0) = i ⊙ g + LN_c.bias; m' = i_m ⊙ g_m; h' = o ⊙ tanh(W_1x1 ⋆ [c', m'])."""
    m = _random_ref(lambda: ref.E3DLSTM(2, 3, tau=2))
    P = m.P()
    (x,) = _steps((1, 2, 2, 4, 4), 1, 4)[0]
    out, st = m(x)
    cv = lambda w: torch_conv_same(x, P[w])  # noqa: E731
    b = lambda n: P[n].view(1, -1, 1, 1, 1)  # noqa: E731
    c1 = torch.sigmoid(cv("W_xi") + b("b_i")) * torch.tanh(cv("W_xg") + b("b_g")) + b("LN_c.bias")
    m1 = torch.sigmoid(cv("W_xi_m") + b("b_i_m")) * torch.tanh(cv("W_xg_m") + b("b_g_m"))
    o = torch.sigmoid(cv("W_xo") + torch_conv_same(c1, P["W_co"]) + torch_conv_same(m1, P["W_mo"]) + b("b_o"))
    h1 = o * torch.tanh(F.conv3d(torch.cat([c1, m1], 1), P["W_1x1"]))
    assert_close(st["c"], c1, "c'")
    assert_close(st["m"], m1, "m'")
    assert_close(out, h1, "h'")


def test_ref_e3d_official_returns_old_m_and_uses_eps_1e12():
    m = _random_ref(lambda: ref.E3DLSTMOfficial(2, 3, tau=None))
    steps = _steps((1, 2, 2, 4, 4), 3, 5)
    m0 = torch.randn(1, 3, 2, 4, 4, dtype=DT)
    state0 = {"h": torch.zeros_like(m0), "c": torch.zeros_like(m0), "m": m0}
    outs, states, _ = m.run(steps, state0)
    assert all(torch.equal(s["m"], m0) for s in states)
    # the LN is tf.contrib.layers.layer_norm: eps 1e-12, per-channel affine over (7C, T, H, W)
    t = torch.randn(1, 21, 2, 4, 4, dtype=DT)
    w, bb = torch.randn(21, dtype=DT), torch.randn(21, dtype=DT)
    got = m.ln({"LN_x.weight": w, "LN_x.bias": bb}, "x", t)
    mu, var = t.mean(), t.var(unbiased=False)
    assert_close(got, (t - mu) / torch.sqrt(var + 1e-12) * w.view(1, -1, 1, 1, 1) + bb.view(1, -1, 1, 1, 1), "LN")


def test_ref_cms_with_neutral_ce_is_convlstm_then_se():
    """CE with zero weights and biases gates by 2σ(0) = 1: x̂ = x, ĥ = h."""
    m = _random_ref(lambda: ref.CMSLSTM(2, 4, k=3, height=8, width=8))
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.startswith("CE."):
                p.zero_()
    P = m.P()
    p_convlstm = {f"W_x{g2}": P[f"W_x{g1}"] for g1, g2 in zip("ifgo", "ifco")}
    p_convlstm.update({f"W_h{g2}": P[f"W_h{g1}"] for g1, g2 in zip("ifgo", "ifco")})
    p_convlstm.update({f"b_{g2}": P[f"b_{g1}"] for g1, g2 in zip("ifgo", "ifco")})
    (x,) = _steps((2, 2, 8, 8), 1, 6)[0]
    h, c = torch.randn(2, 4, 8, 8, dtype=DT), torch.randn(2, 4, 8, 8, dtype=DT)
    out, st = m(x, state={"h": h, "c": c})
    h1, c1 = base_ref.convlstm_step(p_convlstm, x, h, c)
    h2, c2 = ref.se_block(P, h1, c1)
    assert_close(out, h2, "h'")
    assert_close(st["c"], c2, "c'")


def test_ref_ce_block_by_hand():
    """Five half-steps, x first, one shared pair of convs; 1×1 kernels, one channel, one pixel."""
    m = _random_ref(lambda: ref.CMSLSTM(1, 1, k=1, height=4, width=4))
    P = {n: v.reshape(-1)[0].item() for n, v in m.P().items() if n.startswith("CE.")}
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    x, h = 0.7, -1.3
    x1 = 2 * sig(P["CE.W_H"] * h + P["CE.b_H"]) * x
    h1 = 2 * sig(P["CE.W_X"] * x1 + P["CE.b_X"]) * h
    x2 = 2 * sig(P["CE.W_H"] * h1 + P["CE.b_H"]) * x1
    h2 = 2 * sig(P["CE.W_X"] * x2 + P["CE.b_X"]) * h1
    x3 = 2 * sig(P["CE.W_H"] * h2 + P["CE.b_H"]) * x2
    xo, ho = ref.ce_block(m.P(), torch.full((1, 1, 1, 1), x, dtype=DT), torch.full((1, 1, 1, 1), h, dtype=DT))
    assert abs(xo.item() - x3) < 1e-12 and abs(ho.item() - h2) < 1e-12


def test_ref_se_seam_and_layernorm_span_both_halves():
    """The 5×5 W_A runs on h|c side by side along width, so ĉ at h's right edge reads c's left
    edge (the seam), and LN_A normalises over [C, H, 2W] (both halves)."""
    m = _random_ref(lambda: ref.CMSLSTM(2, 3, k=3, height=4, width=4))
    P = m.P()
    gen = torch.Generator().manual_seed(7)
    h = torch.randn(1, 3, 4, 4, generator=gen, dtype=DT)
    c = torch.randn(1, 3, 4, 4, generator=gen, dtype=DT).requires_grad_(True)
    h_hat, c_hat = ref.se_block(P, h, c)
    (g,) = torch.autograd.grad(h_hat[0, 0, 0, 0], [c])
    assert g.abs().sum() > 0


def test_ref_predrnn_ce_se_with_neutral_ce_is_stlstm_then_se():
    m = _random_ref(lambda: ref.PredRNNCESE(2, 4, k=3, height=8, width=8))
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.startswith("CE."):
                p.zero_()
    P = m.P()
    p_st = {n: v for n, v in P.items() if "." not in n}
    (x,) = _steps((2, 2, 8, 8), 1, 8)[0]
    h, c, mm = (torch.randn(2, 4, 8, 8, dtype=DT) for _ in range(3))
    out, st = m(x, state={"h": h, "c": c, "m": mm})
    h1, c1, m1 = base_ref.stlstm_step(p_st, x, h, c, mm)
    h2, c2 = ref.se_block(P, h1, c1)
    assert_close(out, h2, "h'")
    assert_close(st["c"], c2, "c'")
    assert_close(st["m"], m1, "m'")


def _mk_as_convlstm_params(P, C):
    """A {3×3: C/2, 5×5: C/2} conv is one 5×5 conv whose first C/2 rows hold the 3×3 kernel
    zero-padded to 5×5 (cells.md: kernel embedding)."""
    out = {}
    for n, v in P.items():
        if n.endswith(".3x3"):
            base = n[:-4]
            out[base] = torch.cat([F.pad(v, (1, 1, 1, 1)), P[base + ".5x5"]], dim=0)
        elif "." not in n:
            out[n] = v
    return out


def test_ref_mk_convlstm_is_convlstm_with_embedded_kernels():
    m = _random_ref(lambda: ref.MKConvLSTM(3, 8))
    steps = _steps((2, 3, 8, 8), 3, 9)
    outs, states, _ = m.run(steps)
    p = _mk_as_convlstm_params(m.P(), 8)
    h = c = torch.zeros(2, 8, 8, 8, dtype=DT)
    for (x,), o, s in zip(steps, outs, states):
        h, c = base_ref.convlstm_step(p, x, h, c)
        assert_close(o, h, "h")
        assert_close(s["c"], c, "c")


def test_ref_mk_1x1_with_identity_is_mk():
    a = _random_ref(lambda: ref.MKConvLSTM1x1(3, 8))
    with torch.no_grad():
        for g in ref.GATES:
            getattr(a, f"W_1{g}").copy_(torch.eye(8, dtype=DT).view(8, 8, 1, 1))
    b = ref.MKConvLSTM(3, 8).to(DT)
    b.load_state_dict({k: v for k, v in a.state_dict().items() if not k.startswith("W_1")})
    steps = _steps((2, 3, 8, 8), 3, 10)
    for x, y in zip(a.run(steps)[0], b.run(steps)[0]):
        assert_close(x, y, "h")


def test_ref_mk_inception_reads_bottlenecks():
    """With bottleneck = channels and identity B_*, the inception cell is a plain
    {1×1, 3×3, 5×5} multi-kernel ConvLSTM on x and h; the kernels' channel counts are C/4, C/2, C/4."""
    a = _random_ref(lambda: ref.MKConvLSTMInception(3, 8, bottleneck=3))
    assert a.shapes()["W_xi.1x1"] == (2, 3, 1, 1) and a.shapes()["W_xi.3x3"] == (4, 3, 3, 3)
    assert a.shapes()["W_hi.5x5"] == (2, 3, 5, 5) and a.shapes()["B_h3"] == (3, 8, 1, 1)
    with torch.no_grad():
        a.B_x3.copy_(torch.eye(3, dtype=DT).view(3, 3, 1, 1))
        a.B_x5.copy_(torch.eye(3, dtype=DT).view(3, 3, 1, 1))
        a.B_h3.zero_()
        a.B_h5.zero_()
    P = a.P()
    (x,) = _steps((2, 3, 8, 8), 1, 11)[0]
    h, c = torch.randn(2, 8, 8, 8, dtype=DT), torch.randn(2, 8, 8, 8, dtype=DT)
    out, st = a(x, state={"h": h, "c": c})
    pre = {}
    for g in ref.GATES:
        xt = torch.cat([ref.conv(x, P[f"W_x{g}.1x1"]), ref.conv(x, P[f"W_x{g}.3x3"]), ref.conv(x, P[f"W_x{g}.5x5"])], 1)
        ht = torch.cat([ref.conv(h, P[f"W_h{g}.1x1"]), torch.zeros(2, 6, 8, 8, dtype=DT)], 1)
        pre[g] = xt + ht + P[f"b_{g}"].view(1, -1, 1, 1)
    c1 = torch.sigmoid(pre["f"]) * c + torch.sigmoid(pre["i"]) * torch.tanh(pre["c"])
    assert_close(st["c"], c1, "c'")
    assert_close(out, torch.sigmoid(pre["o"]) * torch.tanh(c1), "h'")


def test_ref_mk_flow_with_half_masks_is_mk_on_half_x():
    a = _random_ref(lambda: ref.MKConvLSTMFlow(3, 8, flow_channels=2))
    with torch.no_grad():
        for n in ("W_m3", "W_m5", "b_m3", "b_m5"):
            getattr(a, n).zero_()                   # masks = σ(0) = 0.5
    b = ref.MKConvLSTM(3, 8).to(DT)
    b.load_state_dict({k: v for k, v in a.state_dict().items() if k not in ("W_m3", "W_m5", "b_m3", "b_m5")})
    steps = _steps((2, 3, 8, 8), 3, 12, extra=((2, 2, 8, 8),))
    for x, y in zip(a.run(steps)[0], b.run([(s[0] * 0.5,) for s in steps])[0]):
        assert_close(x, y, "h")
    # and the masks are per kernel: the 3×3 mask does not reach the 5×5 half of the gates
    a2 = _random_ref(lambda: ref.MKConvLSTMFlow(3, 8, flow_channels=2), seed=3)
    x, flow = steps[0]
    W3 = a2.W_m3
    out, st = a2(x, flow)
    (g,) = torch.autograd.grad(st["c"][:, 4:].sum(), [W3])
    assert g.abs().max() == 0
    (g,) = torch.autograd.grad(a2(x, flow)[1]["c"][:, :4].sum(), [W3])
    assert g.abs().max() > 0
