"""OpenSTL's cells in cellgen: the specs against hand-written references with OpenSTL's
state_dict layout (tests/reference_openstl.py, which shares no code with cellgen), and
`cellgen.load_openstl` on state_dicts with OpenSTL's exact keys and shapes.

* Key layout: each reference's state_dict has the keys and shapes OpenSTL's module has
  (written out below from OpenSTL's __init__s), so the references stand in for OpenSTL
  checkpoints.
* Equivalence: every spec at -O0 and -O2, float64, the reference's parameters random (LayerNorm
  gains and biases too, MIM's peepholes too), loaded into the cell by `load_openstl` (or
  `load_state_dict` for ConvGRU / SA-ConvLSTM, which OpenSTL does not have); 4 steps from the
  zero state and from a random one: outputs and every state at every step, then the gradients
  of a weighted sum of all of them w.r.t. every parameter, every input and the initial state.
  Parameter gradients are compared through the same key layout (the forward already proves
  that layout right: a wrong chunk order changes the outputs). Also once in float32 at 1e-5.
* load_openstl: the paper-style specs (`predrnn`, `convlstm`) take OpenSTL's fused convs cut
  in its chunk order; errors for unknown / missing keys, shapes, a layer_norm mismatch, cells
  without an OpenSTL counterpart, and nothing written when it fails.
* Model level: an OpenSTL ConvLSTM_Model / PredRNN_Model state_dict (cell_list.{l}.…,
  conv_last.weight) into a SequenceModel, predictions equal to the reference model's rollout.
"""
from __future__ import annotations

import functools
import math
import os
import sys
from dataclasses import dataclass
from typing import Callable, Dict, Tuple

import pytest
import torch

_TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

import reference_openstl as ref  # noqa: E402

DT = torch.float64
ATOL = 1e-9
B = 2
STEPS = 4
H = W = 6
OPT_LEVELS = (0, 2)

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------
# the cases: spec, its params, the reference, the per-step input channels
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    spec: str
    params: Tuple[Tuple[str, int], ...]
    make_ref: Callable[[], ref.OpenSTLCell]
    inputs: Tuple[int, ...]              # channels of each per-step input
    openstl: bool = True                 # loaded by load_openstl (else load_state_dict by symbol)

    @property
    def kwargs(self):
        return dict(self.params)


def _p(**kw):
    return tuple(sorted(kw.items()))


HID = 4

# SA-ConvLSTM with the paper's Ĉ < C (attention whose queries and keys are narrower than its values)
SA_NARROW_QK = """
cell SAConvLSTMNarrowQK "SA-ConvLSTM with the paper's narrower queries and keys" extends sa_convlstm
  weights
    W_q, W_kh, W_km : conv 1×1 -> hidden/2
"""


def _cases() -> Dict[str, Case]:
    cases: Dict[str, Case] = {}
    for ln in (0, 1):
        sfx = "_ln" if ln else ""
        size = dict(height=H, width=W) if ln else {}
        for spec, module in (("convlstm_openstl", ref.ConvLSTMCell), ("predrnn_openstl", ref.SpatioTemporalLSTMCell),
                             ("predrnnv2", ref.SpatioTemporalLSTMCellv2), ("predrnnpp", ref.CausalLSTMCell)):
            cases[spec + sfx] = Case(spec + sfx, _p(in_channels=3, hidden=HID, k=3, **size),
                                     lambda ln=ln, module=module: module(3, HID, H, W, 3, 1, ln), (3,))
        # OpenSTL's MIMN and MIMBlock read h with an in_channel-input conv: in_channels = hidden
        cases[f"mimn{sfx}"] = Case(
            f"mimn{sfx}", _p(in_channels=HID, hidden=HID, k=3, height=H, width=W),
            lambda ln=ln: ref.MIMN(HID, HID, H, W, 3, 1, ln), (HID,))
        cases[f"mim{sfx}"] = Case(
            f"mim{sfx}", _p(in_channels=HID, hidden=HID, k=3, height=H, width=W),
            lambda ln=ln: ref.MIMBlock(HID, HID, H, W, 3, 1, ln, detach_n=True), (HID, HID))
    # MAU (always LayerNorm, convs with biases); OpenSTL's MAUCell needs in_channel = num_hidden
    cases["mau"] = Case("mau", _p(in_channels=HID, hidden=HID, k=3, height=H, width=W, tau=3),
                        lambda: ref.MAUCell(HID, HID, H, W, 3, 1, 3, "normal"), (HID,))
    cases["ghu"] = Case("ghu", _p(in_channels=HID, hidden=HID, k=3),
                        lambda: ref.GHU(HID, HID, H, W, 3, 1, False), (HID,))
    cases["convgru"] = Case("convgru", _p(in_channels=3, hidden=HID, k=3),
                            lambda: ref.ConvGRU(3, HID, 3), (3,), openstl=False)
    cases["sa_convlstm"] = Case("sa_convlstm", _p(in_channels=3, hidden=HID, k=3),
                                lambda: ref.SAConvLSTM(3, HID, 3), (3,), openstl=False)
    # the paper's Ĉ < C: queries and keys half as wide as the values
    cases["sa_convlstm<-narrower_qk"] = Case(SA_NARROW_QK, _p(in_channels=3, hidden=HID, k=3),
                                             lambda: ref.SAConvLSTM(3, HID, 3, qk=HID // 2), (3,), openstl=False)
    # the paper-style specs, loaded from OpenSTL's fused convs
    cases["predrnn<-SpatioTemporalLSTMCell"] = Case(
        "predrnn", _p(in_channels=3, hidden=HID, k=3),
        lambda: ref.SpatioTemporalLSTMCell(3, HID, H, W, 3, 1, False), (3,))
    cases["convlstm<-ConvLSTMCell"] = Case(
        "convlstm", _p(in_channels=3, hidden=HID, k=3),
        lambda: ref.ConvLSTMCell(3, HID, H, W, 3, 1, False), (3,))
    return cases


CASES = _cases()


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def cellgen_module():
    import cellgen  # lazy: the reference self-checks run without the compiler
    return cellgen


@functools.lru_cache(maxsize=None)
def _compiled(spec, opt_level, params, dtype):
    return cellgen_module().compile(spec, opt_level=opt_level, **dict(params)).to(dtype)


def randomize_(module: torch.nn.Module, seed: int, dtype=DT) -> None:
    """Every parameter random: conv weights ~ N(0, 1)·1.5/√fan_in, LayerNorm gains 1 + 0.3·N,
    everything else (LayerNorm biases, peepholes, biases) 0.5·N."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            t = torch.randn(p.shape, generator=gen, dtype=DT)
            is_norm = name.endswith(".1.weight") or name.endswith(".1.bias")
            if is_norm and name.endswith("weight"):
                t = 1.0 + 0.3 * t
            elif p.dim() == 4 and not is_norm:
                t = t * 1.5 / math.sqrt(math.prod(p.shape[1:]))
            else:
                t = t * 0.5
            p.copy_(t.to(dtype))


def make_pair(name: str, opt_level: int, seed: int, dtype=DT):
    case = CASES[name]
    reference = case.make_ref().to(dtype)
    randomize_(reference, seed, dtype)
    cell = _compiled(case.spec, opt_level, case.params, dtype)
    if case.openstl:
        cellgen_module().load_openstl(cell, reference.state_dict())
    else:
        cell.load_state_dict(reference.state_dict(), strict=True)
    return cell, reference


def grads_as_cell_params(name: str, cell, reference) -> Dict[str, torch.Tensor]:
    """The reference's parameter gradients, placed where load_openstl puts the parameters."""
    case = CASES[name]
    grads = {k: (p.grad if p.grad is not None else torch.zeros_like(p)) for k, p in reference.named_parameters()}
    if not case.openstl:
        return grads
    holder = _compiled(case.spec, 0, case.params, DT).__deepcopy__({})   # a fresh copy: the cached module stays as it is
    cellgen_module().load_openstl(holder, grads)
    return {k: p.detach() for k, p in holder.named_parameters()}


def random_steps(case: Case, seed: int, dtype=DT):
    gen = torch.Generator().manual_seed(seed)
    return [tuple(torch.randn(B, c, H, W, generator=gen, dtype=DT).to(dtype) for c in case.inputs)
            for _ in range(STEPS)]


def run_cell(cell, steps, state0):
    state = state0
    outs, states = [], []
    for inputs in steps:
        out, state, *_ = cell(*inputs, state)   # predrnnv2 also returns its increments (tests/test_outputs.py)
        outs.append(out)
        states.append(state)
    return outs, states


def assert_close(actual, expected, what, atol=ATOL):
    assert tuple(actual.shape) == tuple(expected.shape), f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    d = (actual.detach() - expected.detach()).abs().max().item()
    assert d <= atol, f"{what}: max abs diff {d:.3e} > {atol:.0e}"


def weighted_loss(outs, states, names, seed, dtype):
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    for out, st in zip(outs, states):
        for t in [out] + [st[n] for n in names]:
            total = total + (torch.randn(t.shape, generator=gen, dtype=DT).to(dtype) * 0.1 * t).sum()
    return total


def leaves(tensors):
    return [t.detach().clone().requires_grad_(True) for t in tensors]


def check_case(name, opt_level, nonzero_state, seed, dtype=DT, atol=ATOL):
    case = CASES[name]
    cell, reference = make_pair(name, opt_level, seed, dtype)
    names = reference.STATES
    steps = random_steps(case, seed + 1, dtype)
    state0 = None
    if nonzero_state:
        gen = torch.Generator().manual_seed(seed + 2)
        state0 = {n: (0.5 * torch.randn(B, HID, H, W, generator=gen, dtype=DT)).to(dtype) for n in names}

    steps_a = [tuple(leaves(s)) for s in steps]
    steps_e = [tuple(leaves(s)) for s in steps]
    init_a = {n: leaves([t])[0] for n, t in state0.items()} if state0 else None
    init_e = {n: leaves([t])[0] for n, t in state0.items()} if state0 else reference.zero_state(steps_e[0][0])
    outs_a, states_a = run_cell(cell, steps_a, dict(init_a) if init_a else None)
    outs_e, states_e = reference.run(steps_e, dict(init_e))

    what = f"{name} O{opt_level}{' from a random state' if nonzero_state else ''}"
    for t in range(STEPS):
        assert_close(outs_a[t], outs_e[t], f"{what} step {t}: output", atol)
        for n in names:
            assert_close(states_a[t][n], states_e[t][n], f"{what} step {t}: state {n}", atol)
    assert (outs_e[-1] - outs_e[0]).abs().max() > 1e-3, "outputs do not evolve: a vacuous comparison"

    loss_a = weighted_loss(outs_a, states_a, names, seed + 3, dtype)
    loss_e = weighted_loss(outs_e, states_e, names, seed + 3, dtype)
    cell.zero_grad(set_to_none=True)
    reference.zero_grad(set_to_none=True)
    wrt_a = [t for s in steps_a for t in s] + ([init_a[n] for n in names] if init_a else [])
    wrt_e = [t for s in steps_e for t in s] + ([init_e[n] for n in names] if init_a else [])
    labels = [f"input {j} of step {t}" for t, s in enumerate(steps) for j in range(len(s))]
    labels += [f"initial {n}" for n in names] if init_a else []
    params_a = dict(cell.named_parameters())
    grads_a = torch.autograd.grad(loss_a, wrt_a + list(params_a.values()), allow_unused=True)
    loss_e.backward(inputs=wrt_e + list(reference.parameters()))
    for label, ga, leaf in zip(labels, grads_a, wrt_e):
        ge = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
        assert_close(ga if ga is not None else torch.zeros_like(ge), ge, f"{what}: grad of {label}", atol)
    expected = grads_as_cell_params(name, cell, reference)
    # biases a paper-style spec has and OpenSTL lacks (zero after loading) have no reference gradient
    from cellgen.openstl import layout_for

    zero_params = set(layout_for(cell).zeros) if case.openstl else set()
    nontrivial = 0
    for (pname, _), ga in zip(params_a.items(), grads_a[len(wrt_a):]):
        if pname in zero_params:
            continue
        ge = expected[pname]
        assert_close(ga if ga is not None else torch.zeros_like(ge), ge, f"{what}: grad of {pname}", atol)
        nontrivial += int(ge.abs().max().item() > 1e-6)
    assert nontrivial >= len(params_a) - len(zero_params) - 1, f"{what}: parameter gradients suspiciously small"


# ---------------------------------------------------------------------------------------------
# OpenSTL's key layout (reference self-checks, no compiler)
# ---------------------------------------------------------------------------------------------

def openstl_keys(module: str, ln: bool, cin=3, C=HID, k=3, h=H, w=W) -> Dict[str, Tuple[int, ...]]:
    """The state_dict OpenSTL's module declares (its __init__), for these sizes."""
    def conv(name, i, o):
        keys = {f"{name}.0.weight": (o, i, k, k)}
        if ln:
            keys.update({f"{name}.1.weight": (o, h, w), f"{name}.1.bias": (o, h, w)})
        return keys

    last = {"conv_last.weight": (C, 2 * C, 1, 1)}
    if module == "ConvLSTMCell":
        return {**conv("conv_x", cin, 4 * C), **conv("conv_h", C, 4 * C), **conv("conv_o", 2 * C, C), **last}
    if module == "SpatioTemporalLSTMCell":
        return {**conv("conv_x", cin, 7 * C), **conv("conv_h", C, 4 * C), **conv("conv_m", C, 3 * C),
                **conv("conv_o", 2 * C, C), **last}
    if module == "CausalLSTMCell":
        return {**conv("conv_x", cin, 7 * C), **conv("conv_h", C, 4 * C), **conv("conv_c", C, 3 * C),
                **conv("conv_m", C, 3 * C), **conv("conv_o", 2 * C, C), **conv("conv_c2m", C, 4 * C),
                **conv("conv_om", C, C), **last}
    if module == "GHU":
        return {"z_concat.0.weight": (2 * C, cin, k, k), "x_concat.0.weight": (2 * C, cin, k, k)}
    peep = {"ct_weight": (2 * C, h, w), "oc_weight": (C, h, w)}
    if module == "MIMN":
        return {**peep, **conv("conv_h_concat", cin, 4 * C), **conv("conv_x_concat", cin, 4 * C), **last}
    if module == "MIMBlock":
        return {**peep, **conv("conv_t_cc", cin, 3 * C), **conv("conv_s_cc", C, 4 * C), **conv("conv_x_cc", C, 4 * C),
                **conv("conv_h_concat", C, 4 * C), **conv("conv_x_concat", C, 4 * C), **last}
    raise KeyError(module)


@pytest.mark.parametrize("ln", [False, True])
@pytest.mark.parametrize("module,make", [
    ("ConvLSTMCell", lambda ln: ref.ConvLSTMCell(3, HID, H, W, 3, 1, ln)),
    ("SpatioTemporalLSTMCell", lambda ln: ref.SpatioTemporalLSTMCell(3, HID, H, W, 3, 1, ln)),
    ("SpatioTemporalLSTMCell", lambda ln: ref.SpatioTemporalLSTMCellv2(3, HID, H, W, 3, 1, ln)),
    ("CausalLSTMCell", lambda ln: ref.CausalLSTMCell(3, HID, H, W, 3, 1, ln)),
    ("MIMN", lambda ln: ref.MIMN(3, HID, H, W, 3, 1, ln)),
    ("MIMBlock", lambda ln: ref.MIMBlock(3, HID, H, W, 3, 1, ln)),
])
def test_reference_state_dicts_have_openstl_keys_and_shapes(module, make, ln):
    shapes = {k: tuple(v.shape) for k, v in make(ln).state_dict().items()}
    assert shapes == openstl_keys(module, ln)


def test_reference_ghu_keys_and_its_broken_layer_norm():
    assert {k: tuple(v.shape) for k, v in ref.GHU(HID, HID, H, W, 3).state_dict().items()} == openstl_keys("GHU", False, cin=HID)
    with pytest.raises(AssertionError):
        ref.GHU(HID, HID, H, W, 3, 1, True)


def test_reference_mim_block_detaches_n_as_openstl():
    """detach_n only changes gradients: same forward, no gradient into the incoming n."""
    a = ref.MIMBlock(HID, HID, H, W, 3, detach_n=True).to(DT)
    randomize_(a, 1)
    b = ref.MIMBlock(HID, HID, H, W, 3, detach_n=False).to(DT)
    b.load_state_dict(a.state_dict())
    gen = torch.Generator().manual_seed(2)
    x, d, h, c, m, n = (torch.randn(B, HID, H, W, generator=gen, dtype=DT) for _ in range(6))
    n_a, n_b = n.clone().requires_grad_(True), n.clone().requires_grad_(True)
    out_a = a(x, d, h, c, m, n_a)
    out_b = b(x, d, h, c, m, n_b)
    for ya, yb in zip(out_a, out_b):
        assert torch.equal(ya, yb)
    sum(y.sum() for y in out_b).backward()
    assert n_b.grad.abs().max() > 1e-6
    assert not any(y.requires_grad and y.grad_fn is not None and _reaches(y, n_a) for y in out_a)


def _reaches(y, leaf) -> bool:
    try:
        (g,) = torch.autograd.grad(y.sum(), leaf, allow_unused=True, retain_graph=True)
    except RuntimeError:
        return False
    return g is not None


def test_reference_e3d_and_mau_keys_are_openstl_s():
    """E3D (e3d_lstm_openstl, checked against this reference in tests/test_openstl_e3d.py) and MAU
    (which no spec can express yet): their references define OpenSTL's layout."""
    C, T = HID, 2
    e3d = {"_norm_c_t.weight": (C, T, H, W), "_norm_c_t.bias": (C, T, H, W), "conv_last.conv3d.weight": (C, 2 * C, 1, 1, 1)}
    for name, cin, cout in (("conv_x", 3, 7 * C), ("conv_h", C, 4 * C), ("conv_gm", C, 4 * C),
                            ("conv_new_cell", C, C), ("conv_new_gm", C, C)):
        e3d.update({f"{name}.0.conv3d.weight": (cout, cin, 2, 5, 5), f"{name}.1.weight": (cout, T, H, W),
                    f"{name}.1.bias": (cout, T, H, W)})
    got = ref.Eidetic3DLSTMCell(3, C, T, H, W, (2, 5, 5), 1, True).state_dict()
    assert {k: tuple(v.shape) for k, v in got.items()} == e3d
    mau = {}
    for name, cin, cout in (("conv_t", C, 3 * C), ("conv_t_next", C, C), ("conv_s", C, 3 * C), ("conv_s_next", C, C)):
        mau.update({f"{name}.0.weight": (cout, cin, 3, 3), f"{name}.0.bias": (cout,),
                    f"{name}.1.weight": (cout, H, W), f"{name}.1.bias": (cout, H, W)})
    got = ref.MAUCell(C, C, H, W, 3, 1, 5, "normal").state_dict()
    assert {k: tuple(v.shape) for k, v in got.items()} == mau


def test_reference_e3d_attention_tokens_are_a_plain_reshape():
    """OpenSTL's E3D attention: token j is entries j·C … (j+1)·C − 1 of the flattened map (no
    permute), the history's entries concatenated on channels first; checked in Python floats."""
    gen = torch.Generator().manual_seed(0)
    C = 2
    q = torch.randn(1, C, 2, 2, 2, generator=gen, dtype=DT)
    hist = torch.cat([torch.randn(1, C, 2, 2, 2, generator=gen, dtype=DT) for _ in range(2)], dim=1)
    flat_q, flat_k = q.flatten().tolist(), hist.flatten().tolist()
    tokens_q = [flat_q[i:i + C] for i in range(0, len(flat_q), C)]
    tokens_k = [flat_k[i:i + C] for i in range(0, len(flat_k), C)]
    out = []
    for tq in tokens_q:
        scores = [sum(a * b for a, b in zip(tq, tk)) for tk in tokens_k]
        top = max(scores)
        e = [math.exp(s - top) for s in scores]
        out.extend(sum(ej / sum(e) * tk[ch] for ej, tk in zip(e, tokens_k)) for ch in range(C))
    expected = torch.tensor(out, dtype=DT).reshape(q.shape)
    assert_close(ref.Eidetic3DLSTMCell.attn(q, hist, hist), expected, "E3D attention")


def test_reference_e3d_keeps_its_global_memory_and_grows_its_history_on_channels():
    cell = ref.Eidetic3DLSTMCell(3, HID, 2, H, W).to(DT)
    randomize_(cell, 5)
    gen = torch.Generator().manual_seed(6)
    state = {n: torch.randn(B, HID, 2, H, W, generator=gen, dtype=DT) for n in ("h", "c", "m")}
    m0 = state["m"]
    for t in range(3):
        _, state = cell.step((torch.randn(B, 3, 2, H, W, generator=gen, dtype=DT),), state)
        assert torch.equal(state["m"], m0)
        assert state["c.history"].shape == (B, HID * (t + 2), 2, H, W)


def test_reference_mau_residual_mode_adds_the_spatial_input():
    normal = ref.MAUCell(HID, HID, H, W, 3, 1, 3, "normal").to(DT)
    randomize_(normal, 7)
    residual = ref.MAUCell(HID, HID, H, W, 3, 1, 3, "residual").to(DT)
    residual.load_state_dict(normal.state_dict())
    gen = torch.Generator().manual_seed(8)
    T_t, S_t = (torch.randn(B, HID, H, W, generator=gen, dtype=DT) for _ in range(2))
    t_att, s_att = (torch.randn(3, B, HID, H, W, generator=gen, dtype=DT) for _ in range(2))
    (T_a, S_a), (T_b, S_b) = normal(T_t, S_t, t_att, s_att), residual(T_t, S_t, t_att, s_att)
    assert torch.equal(T_a, T_b)
    assert_close(S_b - S_a, S_t, "residual S")


def test_reference_patching_round_trips_and_orders_channels_as_openstl():
    frames = torch.arange(2 * 3 * 2 * 4 * 4, dtype=DT).reshape(2, 3, 2, 4, 4)
    patched = ref.reshape_patch(frames, 2)
    assert patched.shape == (2, 3, 8, 2, 2)
    assert torch.equal(ref.reshape_patch_back(patched, 2), frames)
    # channel (ph·p + pw)·C + c of patch (i, j) is pixel (i·p + ph, j·p + pw) of image channel c
    for ph in range(2):
        for pw in range(2):
            for c in range(2):
                assert torch.equal(patched[:, :, (ph * 2 + pw) * 2 + c], frames[:, :, c, ph::2, pw::2])


# ---------------------------------------------------------------------------------------------
# equivalence
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("opt_level", OPT_LEVELS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_reference_from_zero_state(name, opt_level):
    check_case(name, opt_level, nonzero_state=False, seed=10)


@pytest.mark.parametrize("opt_level", OPT_LEVELS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_reference_from_random_state(name, opt_level):
    check_case(name, opt_level, nonzero_state=True, seed=20)


@pytest.mark.parametrize("name", ["predrnn_openstl_ln", "predrnnpp_ln", "mim_ln", "mau"])
def test_matches_reference_in_float32_at_o2(name):
    check_case(name, 2, nonzero_state=True, seed=30, dtype=torch.float32, atol=1e-5)


def test_mim_forward_equals_openstl_with_its_detached_n():
    """OpenSTL's MIMBlock detaches n, and so does the spec (`detach(n)`): forward equal from a
    zero n (the gradients: `check_case`); the undetached variant has the same forward."""
    case = CASES["mim"]
    for level in OPT_LEVELS:
        cell, _ = make_pair("mim", level, 40)
        openstl = ref.MIMBlock(HID, HID, H, W, 3, 1, False, detach_n=False).to(DT)
        randomize_(openstl, 40)
        steps = random_steps(case, 41)
        with torch.no_grad():
            outs_a, states_a = run_cell(cell, steps, None)
            outs_e, states_e = openstl.run(steps)
        for t in range(STEPS):
            assert_close(outs_a[t], outs_e[t], f"O{level} step {t}")
            assert_close(states_a[t]["n"], states_e[t]["n"], f"O{level} step {t}: n")


def test_predrnnv2_is_predrnn_openstl_step_for_step():
    """V2's cell computes V1's step (its extra outputs aside): same state_dict, same outputs."""
    a = _compiled("predrnn_openstl", 2, CASES["predrnn_openstl"].params, DT)
    b = _compiled("predrnnv2", 2, CASES["predrnnv2"].params, DT)
    randomize_(a, 3)
    b.load_state_dict(a.state_dict(), strict=True)
    steps = random_steps(CASES["predrnnv2"], 4)
    with torch.no_grad():
        for (ya, sa), (yb, sb) in zip(zip(*run_cell(a, steps, None)), zip(*run_cell(b, steps, None))):
            assert torch.equal(ya, yb)


# ---------------------------------------------------------------------------------------------
# load_openstl: errors, and nothing written when it fails
# ---------------------------------------------------------------------------------------------

def _cell(name, level=0):
    return _compiled(CASES[name].spec, level, CASES[name].params, DT).__deepcopy__({})


def _expect_error(cell, state_dict, *fragments):
    cellgen = cellgen_module()
    before = {k: v.clone() for k, v in cell.state_dict().items()}
    with pytest.raises(cellgen.CellgenError) as info:
        cellgen.load_openstl(cell, state_dict)
    text = info.value.render()
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in:\n{text}"
    assert all(torch.equal(before[k], v) for k, v in cell.state_dict().items()), "a failed load changed the cell"
    return text


def _openstl_state(make):
    module = make().to(DT)
    randomize_(module, 7)
    return dict(module.state_dict())


def test_unknown_key_is_named_with_a_suggestion():
    sd = _openstl_state(CASES["predrnn_openstl"].make_ref)
    sd["conv_xx.0.weight"] = sd.pop("conv_x.0.weight")
    _expect_error(_cell("predrnn_openstl"), sd, "unknown key conv_xx.0.weight", "did you mean conv_x.0.weight",
                  "missing key conv_x.0.weight")


def test_missing_key_is_named():
    sd = _openstl_state(CASES["predrnnpp"].make_ref)
    del sd["conv_c2m.0.weight"]
    _expect_error(_cell("predrnnpp"), sd, "missing key conv_c2m.0.weight", "CausalLSTMCell")


def test_shape_mismatch_names_the_key_and_the_param_to_change():
    wide = ref.SpatioTemporalLSTMCell(3, HID + 2, H, W, 3).to(DT)
    _expect_error(_cell("predrnn_openstl"), wide.state_dict(), "conv_x.0.weight has shape (42, 3, 3, 3)",
                  "needs (28, 3, 3, 3)", "hidden")
    big_k = ref.SpatioTemporalLSTMCell(3, HID, H, W, 5).to(DT)
    _expect_error(_cell("predrnn_openstl"), big_k.state_dict(), "(28, 3, 5, 5)", "k")
    other_map = ref.ConvLSTMCell(3, HID, H + 2, W, 3, 1, True).to(DT)
    _expect_error(_cell("convlstm_openstl_ln"), other_map.state_dict(), "conv_x.1.weight", "height, width")


def test_layer_norm_mismatch_points_at_the_other_spec():
    with_ln = _openstl_state(CASES["convlstm_openstl_ln"].make_ref)
    _expect_error(_cell("convlstm_openstl"), with_ln, "unknown keys", "convlstm_openstl_ln")
    without = _openstl_state(CASES["predrnnpp"].make_ref)
    _expect_error(_cell("predrnnpp_ln"), without, "missing keys", "predrnnpp:")


def test_cells_without_an_openstl_counterpart_are_refused():
    _expect_error(_cell("convgru"), {"conv_x.0.weight": torch.zeros(1)}, "no OpenSTL counterpart",
                  "predrnn_openstl")
    cellgen = cellgen_module()
    with pytest.raises(cellgen.CellgenError, match="state_dict"):
        cellgen.load_openstl(_cell("ghu"), [("x_concat.0.weight", torch.zeros(1))])
    with pytest.raises(cellgen.CellgenError, match="compiled cell or a SequenceModel"):
        cellgen.load_openstl("ghu", {})


def test_unused_openstl_keys_are_optional_and_ignored():
    """conv_o / conv_last of ConvLSTMCell are never read by its forward: with or without
    them the loaded cell is the same."""
    full = _openstl_state(CASES["convlstm_openstl_ln"].make_ref)
    trimmed = {k: v for k, v in full.items() if not k.startswith(("conv_o.", "conv_last."))}
    a, b = _cell("convlstm_openstl_ln"), _cell("convlstm_openstl_ln")
    cellgen_module().load_openstl(a, full)
    cellgen_module().load_openstl(b, trimmed)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert a.state_dict()["W_x"].data_ptr() != full["conv_x.0.weight"].data_ptr()   # copied, not aliased


def test_paper_style_specs_take_the_fused_convs_cut_in_openstl_chunk_order():
    sd = _openstl_state(CASES["predrnn<-SpatioTemporalLSTMCell"].make_ref)
    cell = _cell("predrnn<-SpatioTemporalLSTMCell")
    cellgen_module().load_openstl(cell, sd)
    P = cell.state_dict()
    C = HID
    for index, name in enumerate(("W_xi", "W_xf", "W_xg", "W_xi_m", "W_xf_m", "W_xg_m", "W_xo")):
        assert torch.equal(P[name], sd["conv_x.0.weight"][index * C:(index + 1) * C])
    for index, name in enumerate(("W_mi", "W_mf", "W_mg")):
        assert torch.equal(P[name], sd["conv_m.0.weight"][index * C:(index + 1) * C])
    assert torch.equal(P["W_1x1"], sd["conv_last.weight"])
    convlstm = _cell("convlstm<-ConvLSTMCell")
    randomize_(convlstm, 3)
    cellgen_module().load_openstl(convlstm, _openstl_state(CASES["convlstm<-ConvLSTMCell"].make_ref))
    for b in ("b_i", "b_f", "b_c", "b_o"):
        assert torch.count_nonzero(convlstm.state_dict()[b]) == 0


# ---------------------------------------------------------------------------------------------
# model level: OpenSTL's ConvLSTM_Model / PredRNN_Model / PredRNNv2_Model into a SequenceModel
# ---------------------------------------------------------------------------------------------

def _sequence_model(spec, layers, patch, frame, params):
    from cellgen.sequence import SequenceConfig, SequenceModel

    return SequenceModel(SequenceConfig.for_spec(spec, params=params, layers=layers, patch=patch,
                                                 frame_size=(frame, frame), opt_level=2)).to(DT)


@pytest.mark.parametrize("spec,cell_class,ln", [
    ("predrnn_openstl", ref.SpatioTemporalLSTMCell, False),
    ("predrnn_openstl_ln", ref.SpatioTemporalLSTMCell, True),
    ("convlstm_openstl", ref.ConvLSTMCell, False),
    ("predrnnv2", ref.SpatioTemporalLSTMCellv2, False),
])
def test_an_openstl_model_checkpoint_runs_in_a_sequence_model(spec, cell_class, ln):
    patch, frame, layers, hidden = 2, 8, 3, 4
    openstl = ref.StackModel(cell_class, patch * patch, [hidden] * layers, frame // patch, frame // patch, 3,
                             layer_norm=ln).to(DT)
    randomize_(openstl, 11)
    state = dict(openstl.state_dict())
    if cell_class is ref.SpatioTemporalLSTMCellv2:
        state["adapter.weight"] = torch.randn(hidden, hidden, 1, 1, dtype=DT)   # the decoupling loss's
    model = _sequence_model(spec, layers, patch, frame, {"hidden": hidden, "k": 3})
    cellgen_module().load_openstl(model, state)
    video = torch.rand(2, 5, 1, frame, frame, generator=torch.Generator().manual_seed(12), dtype=DT)
    with torch.no_grad():
        got = model(video, context=4)                           # every frame read: teacher forcing
        expected = ref.reshape_patch_back(openstl(ref.reshape_patch(video, patch)), patch)
    assert_close(got, expected, f"{spec}: predictions")
    assert (expected[:, -1] - expected[:, 0]).abs().max() > 1e-4


def test_model_level_errors():
    patch, frame, hidden = 2, 8, 4
    openstl = ref.StackModel(ref.SpatioTemporalLSTMCell, patch * patch, [hidden] * 3, 4, 4, 3).to(DT)
    state = dict(openstl.state_dict())
    cellgen = cellgen_module()
    two = _sequence_model("predrnn_openstl", 2, patch, frame, {"hidden": hidden, "k": 3})
    with pytest.raises(cellgen.CellgenError, match="3 layers"):
        cellgen.load_openstl(two, state)
    three = _sequence_model("predrnn_openstl", 3, patch, frame, {"hidden": hidden, "k": 3})
    ghu = dict(state, **{"gradient_highway.x_concat.0.weight": torch.zeros(8, 4, 3, 3, dtype=DT)})
    with pytest.raises(cellgen.CellgenError, match="gradient_highway"):
        cellgen.load_openstl(three, ghu)
    broken = dict(state)
    broken["cell_list.2.conv_h.0.weight"] = torch.zeros(5, 4, 3, 3, dtype=DT)
    before = {k: v.clone() for k, v in three.state_dict().items()}
    with pytest.raises(cellgen.CellgenError, match="cell_list.2: conv_h.0.weight has shape"):
        cellgen.load_openstl(three, broken)
    assert all(torch.equal(before[k], v) for k, v in three.state_dict().items()), "a failed load changed the model"


# ---------------------------------------------------------------------------------------------
# PredRNN++ and MIM: OpenSTL model checkpoints run by compiled cells wired by hand, against
# the reference models' unroll — the cells alone; the heterogeneous sequence models that wire
# them (`SequenceConfig.for_model("predrnnpp" | "mim")`) are tests/test_stacks.py's
# ---------------------------------------------------------------------------------------------

def _sub(state, prefix):
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _cells_for(spec_in_first, spec, count, hidden, frame_channel, extra=None):
    extra = extra or {}
    first = cellgen_module().compile(spec_in_first, in_channels=frame_channel, hidden=hidden, k=3, **extra).to(DT)
    rest = [cellgen_module().compile(spec, in_channels=hidden, hidden=hidden, k=3, **extra).to(DT)
            for _ in range(count - 1)]
    return [first] + rest


def _patched_video(frame_channel, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(2, 5, frame_channel, H, W, generator=gen, dtype=DT).requires_grad_(True)


def test_an_openstl_predrnnpp_checkpoint_runs_in_cellgen_cells_with_its_ghu():
    L, hidden, fc = 3, HID, 2
    openstl = ref.PredRNNppModel(fc, [hidden] * L, H, W, 3).to(DT)
    randomize_(openstl, 21)
    state = openstl.state_dict()
    cells = _cells_for("predrnnpp", "predrnnpp", L, hidden, fc)
    ghu = cellgen_module().compile("ghu", in_channels=hidden, hidden=hidden, k=3).to(DT)
    for index, cell in enumerate(cells):
        cellgen_module().load_openstl(cell, _sub(state, f"cell_list.{index}."))
    cellgen_module().load_openstl(ghu, _sub(state, "gradient_highway."))
    head = state["conv_last.weight"]

    video_a, video_e = _patched_video(fc, 22), _patched_video(fc, 22)
    preds = []
    B_, T = video_a.shape[:2]
    zero = video_a.new_zeros(B_, hidden, H, W)
    layer_states = [{"h": zero, "c": zero} for _ in range(L)]
    memory, z_state = zero, {"z": zero}
    for t in range(T - 1):
        x = video_a[:, t]
        for index, cell in enumerate(cells):
            if index == 1:
                x, z_state = ghu(x, z_state)             # layer 1 reads the highway, not h⁰
            x, new = cell(x, {**layer_states[index], "m": memory})
            layer_states[index], memory = {"h": new["h"], "c": new["c"]}, new["m"]
        preds.append(torch.nn.functional.conv2d(x, head))
    got = torch.stack(preds, dim=1)
    expected = openstl(video_e)
    assert_close(got, expected, "PredRNN++ predictions")
    (grad_a,) = torch.autograd.grad((got * got).sum(), video_a)
    (grad_e,) = torch.autograd.grad((expected * expected).sum(), video_e)
    assert_close(grad_a, grad_e, "PredRNN++ gradient w.r.t. the frames")


@pytest.mark.parametrize("detach_n", [True, False])
def test_an_openstl_mim_checkpoint_runs_in_cellgen_cells_with_its_mimn(detach_n):
    """Forward equal to OpenSTL's (detached n) and to the undetached variant; gradients equal to
    OpenSTL's (the spec detaches n as OpenSTL does) and differ from the undetached variant's."""
    L, hidden, fc = 3, HID, 2
    openstl = ref.MIMModel(fc, [hidden] * L, H, W, 3, detach_n=detach_n).to(DT)
    randomize_(openstl, 31)
    state = openstl.state_dict()
    size = dict(height=H, width=W)
    layer0 = cellgen_module().compile("predrnn_openstl", in_channels=fc, hidden=hidden, k=3).to(DT)
    blocks = [cellgen_module().compile("mim", in_channels=hidden, hidden=hidden, k=3, **size).to(DT) for _ in range(L - 1)]
    diffs = [cellgen_module().compile("mimn", in_channels=hidden, hidden=hidden, k=3, **size).to(DT) for _ in range(L - 1)]
    cellgen_module().load_openstl(layer0, _sub(state, "stlstm_layer.0."))
    for index, cell in enumerate(blocks, start=1):
        cellgen_module().load_openstl(cell, _sub(state, f"stlstm_layer.{index}."))
    for index, cell in enumerate(diffs):
        cellgen_module().load_openstl(cell, _sub(state, f"stlstm_layer_diff.{index}."))
    head = state["conv_last.weight"]

    video_a, video_e = _patched_video(fc, 32), _patched_video(fc, 32)
    B_, T = video_a.shape[:2]
    zero = video_a.new_zeros(B_, hidden, H, W)
    s0 = {"h": zero, "c": zero}
    block_states = [{"h": zero, "c": zero, "n": zero} for _ in blocks]
    diff_states = [None] * len(diffs)
    diff_out = [zero] * len(diffs)                      # OpenSTL's diff_h = None → zeros at t = 0
    memory = zero
    preds = []
    for t in range(T - 1):
        preh = s0["h"]
        h, new = layer0(video_a[:, t], {**s0, "m": memory})
        s0, memory = {"h": new["h"], "c": new["c"]}, new["m"]
        below = h
        for i, block in enumerate(blocks):
            if t > 0:
                source = h - preh if i == 0 else diff_out[i - 1]
                diff_out[i], diff_states[i] = diffs[i](source, diff_states[i])
            below, new = block(below, diff_out[i], {**block_states[i], "m": memory})
            block_states[i], memory = {k: new[k] for k in ("h", "c", "n")}, new["m"]
        preds.append(torch.nn.functional.conv2d(below, head))
    got = torch.stack(preds, dim=1)
    expected = openstl(video_e)
    assert_close(got, expected, "MIM predictions")
    (grad_a,) = torch.autograd.grad((got * got).sum(), video_a)
    (grad_e,) = torch.autograd.grad((expected * expected).sum(), video_e)
    if detach_n:
        assert_close(grad_a, grad_e, "MIM gradient w.r.t. the frames")
    else:
        assert (grad_a - grad_e).abs().max() > 1e-6, "the detach of n changes no gradient: a weak test"


def test_a_cell_stack_takes_an_openstl_cell_list():
    cellgen = cellgen_module()
    stack = cellgen.compile_stack("convlstm_openstl", layers=2, in_channels=3, hidden=HID, k=3).to(DT)
    openstl = ref.StackModel(ref.ConvLSTMCell, 3, [HID, HID], H, W, 3).to(DT)
    randomize_(openstl, 60)
    cell_list = {k: v for k, v in openstl.state_dict().items() if k.startswith("cell_list.")}
    cellgen.load_openstl(stack, cell_list)
    for index, layer in enumerate(stack.layers):
        assert torch.equal(layer.state_dict()["W_h"], cell_list[f"cell_list.{index}.conv_h.0.weight"])
    with pytest.raises(cellgen.CellgenError, match="conv_last.weight"):
        cellgen.load_openstl(stack, openstl.state_dict())          # a stack has no head
    three = ref.StackModel(ref.ConvLSTMCell, 3, [HID] * 3, H, W, 3).to(DT).state_dict()
    with pytest.raises(cellgen.CellgenError, match="3 layers"):
        cellgen.load_openstl(stack, {k: v for k, v in three.items() if k.startswith("cell_list.")})
