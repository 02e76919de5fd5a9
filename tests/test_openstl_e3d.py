"""E3D-LSTM as OpenSTL computes it: `e3d_lstm_openstl` and `e3d_lstm_openstl_ln` against the
hand-written Eidetic3DLSTMCell of tests/reference_openstl.py (OpenSTL's module names, so its
state_dict has OpenSTL's keys), loaded into the cell by `cellgen.load_openstl`.

Outputs, every state and the gradients w.r.t. every parameter, every input frame window and
the initial states equal the reference's over several steps, from zero and from random states,
LayerNorm off and on, at -O0 and -O2, in float64. What the spec says with constructs of its
own — tf_Conv3d as `pad (valid, same, same) resize nearest`, RECALL's tokens as
`attention(…, tokens=reshape)` over `cat(c[t-tau:t-1], along=C)` — is checked by these and
by the construct tests of tests/test_conv_modes.py.
"""
from __future__ import annotations

import math
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
import reference_openstl as ref  # noqa: E402

import cellgen  # noqa: E402
from cellgen.errors import CellgenError  # noqa: E402

DT = torch.float64
ATOL = 1e-9
B, CIN, HID, T, H, W = 2, 3, 4, 2, 5, 6
STEPS = 4
SPECS = {"e3d_lstm_openstl": False, "e3d_lstm_openstl_ln": True}

pytestmark = pytest.mark.usefixtures("one_thread")


def _params(spec):
    return dict(in_channels=CIN, hidden=HID, k=5, height=H, width=W)


def randomize_(module: torch.nn.Module, seed: int) -> None:
    """Conv weights N(0, 1)·1.5/√fan_in; LayerNorm gains 1 + 0.3·N, their biases 0.5·N."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            t = torch.randn(p.shape, generator=gen, dtype=DT)
            if "conv3d" in name:
                t = t * 1.5 / math.sqrt(math.prod(p.shape[1:]))
            elif name.endswith("weight"):
                t = 1.0 + 0.3 * t
            else:
                t = t * 0.5
            p.copy_(t)


def make_pair(spec: str, opt_level: int, seed: int):
    reference = ref.Eidetic3DLSTMCell(CIN, HID, T, H, W, (2, 5, 5), 1, SPECS[spec]).to(DT)
    randomize_(reference, seed)
    cell = cellgen.compile(spec, opt_level=opt_level, **_params(spec)).to(DT)
    cellgen.load_openstl(cell, reference.state_dict())
    return cell, reference


def leaves(tensors):
    return [t.detach().clone().requires_grad_(True) for t in tensors]


def close(actual, expected, what):
    assert tuple(actual.shape) == tuple(expected.shape), f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    d = (actual.detach() - expected.detach()).abs().max().item()
    assert d <= ATOL, f"{what}: max abs diff {d:.3e}"


@pytest.mark.parametrize("opt_level", (0, 2))
@pytest.mark.parametrize("random_state", (False, True), ids=("zero-state", "random-state"))
@pytest.mark.parametrize("spec", list(SPECS))
def test_matches_openstl_eidetic3dlstmcell(spec, opt_level, random_state):
    cell, reference = make_pair(spec, opt_level, seed=11)
    gen = torch.Generator().manual_seed(12)
    frames = [torch.randn(B, CIN, T, H, W, generator=gen, dtype=DT) for _ in range(STEPS)]
    names = ("h", "c", "m")
    init = {n: 0.5 * torch.randn(B, HID, T, H, W, generator=gen, dtype=DT) for n in names} if random_state \
        else {n: torch.zeros(B, HID, T, H, W, dtype=DT) for n in names}
    xs_a, xs_e = leaves(frames), leaves(frames)
    init_a = dict(zip(names, leaves([init[n] for n in names])))
    init_e = dict(zip(names, leaves([init[n] for n in names])))

    state_a, state_e = dict(init_a), dict(init_e)
    outs_a, outs_e, states_a, states_e = [], [], [], []
    for x_a, x_e in zip(xs_a, xs_e):
        out_a, state_a = cell(x_a, state_a)
        out_e, state_e = reference.step((x_e,), state_e)
        outs_a.append(out_a), outs_e.append(out_e), states_a.append(state_a), states_e.append(state_e)
    what = f"{spec} O{opt_level}"
    for t in range(STEPS):
        close(outs_a[t], outs_e[t], f"{what} step {t}: h")
        for n in names:
            close(states_a[t][n], states_e[t][n], f"{what} step {t}: state {n}")
        # the eidetic history, joined on channels by the reference, stacked by cellgen
        close(states_a[t]["c.history"].flatten(1, 2), states_e[t]["c.history"], f"{what} step {t}: c's history")
    assert (outs_e[-1] - outs_e[0]).abs().max() > 1e-3, "outputs do not evolve: a vacuous comparison"
    assert torch.equal(states_e[-1]["m"], init_e["m"]), "OpenSTL returns the old global memory"

    wgen = torch.Generator().manual_seed(13)
    weights = [torch.randn(o.shape, generator=wgen, dtype=DT) for o in outs_e for _ in range(3)]

    def loss(outs, states):
        terms = [t for o, s in zip(outs, states) for t in (o, s["h"], s["c"])]
        return sum((w * t).sum() for w, t in zip(weights, terms))

    params_a = dict(cell.named_parameters())
    wrt_a = xs_a + [init_a[n] for n in names]
    grads_a = torch.autograd.grad(loss(outs_a, states_a), wrt_a + list(params_a.values()), allow_unused=True)
    wrt_e = xs_e + [init_e[n] for n in names]
    loss(outs_e, states_e).backward(inputs=wrt_e + list(reference.parameters()))
    labels = [f"frames of step {t}" for t in range(STEPS)] + [f"initial {n}" for n in names]
    for label, ga, leaf in zip(labels, grads_a, wrt_e):
        ge = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
        close(ga if ga is not None else torch.zeros_like(ge), ge, f"{what}: grad of {label}")
    holder = cellgen.compile(spec, opt_level=0, **_params(spec)).to(DT)
    cellgen.load_openstl(holder, {k: p.grad for k, p in reference.named_parameters()})
    expected = dict(holder.named_parameters())
    nontrivial = 0
    for (pname, _), ga in zip(params_a.items(), grads_a[len(wrt_a):]):
        ge = expected[pname].detach()
        close(ga if ga is not None else torch.zeros_like(ge), ge, f"{what}: grad of {pname}")
        nontrivial += int(ge.abs().max().item() > 1e-6)
    # m' = m: from a zero state m stays zero, so W_gm convolves zeros (and LN_gm's gain scales
    # zeros) — no gradient, as in OpenSTL; from a random state every parameter has one
    idle = 0 if random_state else 1 + SPECS[spec]
    assert nontrivial == len(params_a) - idle, f"{what}: {len(params_a) - nontrivial} parameters without a gradient"


@pytest.mark.parametrize("spec", list(SPECS))
def test_load_openstl_takes_eidetic3dlstmcell_keys(spec):
    reference = ref.Eidetic3DLSTMCell(CIN, HID, T, H, W, (2, 5, 5), 1, SPECS[spec])
    keys = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    expected = {"_norm_c_t.weight": (HID, T, H, W), "_norm_c_t.bias": (HID, T, H, W),
                "conv_last.conv3d.weight": (HID, 2 * HID, 1, 1, 1)}
    for name, cin, cout in (("conv_x", CIN, 7 * HID), ("conv_h", HID, 4 * HID), ("conv_gm", HID, 4 * HID),
                            ("conv_new_cell", HID, HID), ("conv_new_gm", HID, HID)):
        expected[f"{name}.0.conv3d.weight"] = (cout, cin, 2, 5, 5)
        if SPECS[spec]:
            expected.update({f"{name}.1.weight": (cout, T, H, W), f"{name}.1.bias": (cout, T, H, W)})
    assert keys == expected
    cell = cellgen.compile(spec, **_params(spec))
    cellgen.load_openstl(cell, reference.state_dict())
    assert torch.equal(dict(cell.named_parameters())["W_x"], reference.conv_x[0].conv3d.weight)


def test_load_openstl_tells_which_e3d_spec_fits():
    reference = ref.Eidetic3DLSTMCell(CIN, HID, T, H, W, (2, 5, 5), 1, True)
    cell = cellgen.compile("e3d_lstm_openstl", **_params("e3d_lstm_openstl"))
    with pytest.raises(CellgenError, match="e3d_lstm_openstl_ln"):
        cellgen.load_openstl(cell, reference.state_dict())
    wide = ref.Eidetic3DLSTMCell(CIN, HID + 1, T, H, W, (2, 5, 5), 1, False)
    with pytest.raises(CellgenError, match="shape"):
        cellgen.load_openstl(cell, wide.state_dict())
