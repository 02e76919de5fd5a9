"""Several outputs per step (`output h', delta_c, delta_m`, docs/outputs.md) and PredRNN-V2.

* The construct: a single-output cell still returns `(h, state)`; a multi-output one
  `(h, state, outputs)`; outputs that are a state's next value or an input are fine; the
  printer round-trips the line; `show`, `diff` and the notebook repr name the outputs; a
  variant's `output` line replaces its base's. (Misuse errors: tests/bad_specs/output_*.cell.)
* predrnnv2 / predrnnv2_ln against OpenSTL's SpatioTemporalLSTMCellv2 written by hand
  (tests/reference_openstl.py): h', delta_c, delta_m, every state, over 4 steps from zero and
  from a random state, then the gradients of a weighted sum of all of them w.r.t. every
  parameter, input and initial state; -O0 and -O2; float64 to 1e-9, float32 to 1e-5.
* The stack passes the outputs on (against the cells run by hand).
* PredRNN-V2's model (tests/reference_predrnnv2.py, from OpenSTL's semantics): predictions,
  decoupling loss, total loss (TrainStep's) and every gradient equal, with teacher forcing and
  with a reverse scheduled-sampling mask; `load_openstl` of a PredRNNv2_Model state_dict loads
  the adapter; the reverse schedule's probabilities as OpenSTL's formula gives them.
"""
from __future__ import annotations

import math
import os
import sys

import pytest
import torch

_TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

import reference_openstl as ref  # noqa: E402
import reference_predrnnv2 as ref_v2  # noqa: E402

import cellgen  # noqa: E402
from cellgen.errors import CellgenError  # noqa: E402
from tests.cli_runner import run_in_process  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

B, H, W, HID, STEPS = 2, 6, 6, 4, 4


def _randomize(module: torch.nn.Module, seed: int) -> None:
    """Every parameter random (LayerNorm gains about 1, biases and the rest about 0.5)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            t = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            if p.dim() == 4:
                t = t * 1.5 / math.sqrt(math.prod(p.shape[1:]))
            elif name.endswith(".1.weight"):
                t = 1.0 + 0.3 * t
            else:
                t = 0.5 * t
            p.copy_(t.to(p.dtype))


def _close(actual, expected, what, atol):
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    diff = (actual.detach() - expected.detach()).abs().max().item()
    assert diff <= atol, f"{what}: max abs diff {diff:.3e} > {atol:.0e}"


# ---------------------------------------------------------------------------------------------
# the construct
# ---------------------------------------------------------------------------------------------

TWO = """
cell Two
  param hidden = 4
  input x[hidden]
  state h[hidden], c[hidden]
  output h', c', x, gate

  gate = σ(x + h)
  c'   = gate ⊙ c + x
  h'   = tanh(c')
"""


@pytest.mark.parametrize("level", [0, 2])
def test_outputs_beside_the_state_and_single_output_cells_unchanged(level):
    cell = cellgen.compile(TWO, opt_level=level)
    x = torch.randn(2, 4, 5, 5)
    h, state, outputs = cell(x, None)
    assert list(outputs) == ["c'", "x", "gate"] == cell.extra_outputs
    assert torch.equal(outputs["c'"], state["c"]) and torch.equal(outputs["x"], x)
    assert torch.allclose(outputs["gate"], torch.sigmoid(x))          # h = 0 at t = 0
    assert torch.allclose(h, torch.tanh(x))
    assert "also outputs c', x, gate" in repr(cell)
    single = cellgen.compile("convlstm", opt_level=level, in_channels=3, hidden=4, k=3)
    result = single(torch.randn(2, 3, 5, 5), None)
    assert len(result) == 2 and single.extra_outputs == []
    assert single.code.rstrip().splitlines()[-1].strip().startswith("return (h_next, {")
    assert "also outputs" not in repr(single)


def test_the_output_line_round_trips():
    from cellgen.language.parser import parse
    from cellgen.language.printer import format_spec

    text = format_spec(parse(TWO))
    assert "output h', c', x, gate" in text
    assert format_spec(parse(text)) == text


def test_a_variant_output_line_replaces_the_base_one(tmp_path):
    (tmp_path / "base.cell").write_text(TWO.replace("cell Two", "cell Base"))
    (tmp_path / "child.cell").write_text("cell Child extends base\n  output h', gate\n")
    cell = cellgen.compile(tmp_path / "child.cell", opt_level=2)
    assert cell.extra_outputs == ["gate"]
    (tmp_path / "plain.cell").write_text("cell Plain extends base\n  output h'\n")
    assert cellgen.compile(tmp_path / "plain.cell").extra_outputs == []


def test_show_and_diff_name_the_outputs():
    shown = run_in_process("show", "predrnnv2", "--param", "in_channels=3", "--param", "hidden=4", "--param", "k=3",
                           "-f", "dot")
    assert shown.returncode == 0 and shown.stdout.count("(output)") == 3
    diffed = run_in_process("diff", "predrnn_openstl", "predrnnv2", "--param", "in_channels=3")
    assert "further outputs: none → delta_c, delta_m" in diffed.stdout


# ---------------------------------------------------------------------------------------------
# predrnnv2(_ln) against OpenSTL's SpatioTemporalLSTMCellv2
# ---------------------------------------------------------------------------------------------

def _pair(ln: bool, level: int, dtype, seed: int):
    spec = "predrnnv2_ln" if ln else "predrnnv2"
    size = dict(height=H, width=W) if ln else {}
    cell = cellgen.compile(spec, opt_level=level, in_channels=3, hidden=HID, k=3, **size).to(dtype)
    reference = ref.SpatioTemporalLSTMCellv2(3, HID, H, W, 3, 1, ln).to(dtype)
    _randomize(reference, seed)
    cellgen.load_openstl(cell, reference.state_dict())
    return cell, reference


@pytest.mark.parametrize("ln", [False, True])
@pytest.mark.parametrize("level", [0, 2])
@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-9), (torch.float32, 1e-5)])
@pytest.mark.parametrize("from_random_state", [False, True])
def test_predrnnv2_outputs_states_and_gradients_equal_openstl(ln, level, dtype, atol, from_random_state):
    cell, reference = _pair(ln, level, dtype, seed=5 + level + 2 * ln)
    gen = torch.Generator().manual_seed(7)
    xs_a = [torch.randn(B, 3, H, W, generator=gen, dtype=torch.float64).to(dtype).requires_grad_(True)
            for _ in range(STEPS)]
    xs_e = [x.detach().clone().requires_grad_(True) for x in xs_a]
    init = {n: (0.5 * torch.randn(B, HID, H, W, generator=gen, dtype=torch.float64)).to(dtype)
            if from_random_state else torch.zeros(B, HID, H, W, dtype=dtype) for n in ("h", "c", "m")}
    init_a = {n: t.clone().requires_grad_(True) for n, t in init.items()}
    init_e = {n: t.clone().requires_grad_(True) for n, t in init.items()}

    state = dict(init_a) if from_random_state else None
    h_e, c_e, m_e = init_e["h"], init_e["c"], init_e["m"]
    gen = torch.Generator().manual_seed(8)
    loss_a = loss_e = 0.0
    for t in range(STEPS):
        h_a, state, outputs = cell(xs_a[t], state)
        h_e, c_e, m_e, dc_e, dm_e = reference(xs_e[t], h_e, c_e, m_e)
        pairs = {"h'": (h_a, h_e), "delta_c": (outputs["delta_c"], dc_e), "delta_m": (outputs["delta_m"], dm_e),
                 "c": (state["c"], c_e), "m": (state["m"], m_e), "h": (state["h"], h_e)}
        for what, (a, e) in pairs.items():
            _close(a, e, f"O{level} ln={ln} step {t}: {what}", atol)
            weight = (0.1 * torch.randn(a.shape, generator=gen, dtype=torch.float64)).to(dtype)
            loss_a = loss_a + (weight * a).sum()
            loss_e = loss_e + (weight * e).sum()
        assert (dc_e - dm_e).abs().max() > 1e-3
    wrt_a = xs_a + ([init_a[n] for n in ("h", "c", "m")] if from_random_state else [])
    wrt_e = xs_e + ([init_e[n] for n in ("h", "c", "m")] if from_random_state else [])
    params = dict(cell.named_parameters())
    grads_a = torch.autograd.grad(loss_a, wrt_a + list(params.values()))
    grads_e = torch.autograd.grad(loss_e, wrt_e + list(reference.parameters()))
    for index, (ga, ge) in enumerate(zip(grads_a[:len(wrt_a)], grads_e[:len(wrt_e)])):
        _close(ga, ge, f"O{level} ln={ln}: gradient of leaf {index}", atol)
    holder = cellgen.compile("predrnnv2_ln" if ln else "predrnnv2", opt_level=0, in_channels=3, hidden=HID, k=3,
                             **(dict(height=H, width=W) if ln else {})).to(dtype)
    cellgen.load_openstl(holder, dict(zip(dict(reference.named_parameters()), grads_e[len(wrt_e):])))
    expected = dict(holder.named_parameters())
    for (name, _), ga in zip(params.items(), grads_a[len(wrt_a):]):
        _close(ga, expected[name], f"O{level} ln={ln}: gradient of {name}", atol)
        assert expected[name].abs().max() > 1e-6, f"{name}: a vacuous gradient"


def test_the_stack_passes_the_outputs_on():
    stack = cellgen.compile_stack("predrnnv2", 3, opt_level=2, in_channels=3, hidden=HID, k=3).double()
    xs = torch.randn(B, 5, 3, H, W, dtype=torch.float64)
    ys, states, outputs = stack(xs)
    assert len(outputs) == 3 and all(set(o) == {"delta_c", "delta_m"} for o in outputs)
    state = [None] * 3
    memory = None
    for t in range(5):
        below = xs[:, t]
        for layer, cell in enumerate(stack.layers):
            given = None if state[layer] is None else {**state[layer], "m": memory}
            if given is None and memory is not None:
                given = {**{n: torch.zeros_like(memory) for n in ("h", "c")}, "m": memory}
            below, state[layer], extra = cell(below, given)
            memory = state[layer]["m"]
            for name in ("delta_c", "delta_m"):
                _close(outputs[layer][name][:, t], extra[name], f"layer {layer} step {t}: {name}", 1e-12)
        _close(ys[:, t], below, f"step {t}: top output", 1e-12)
    y, _, step_outputs = stack.step(xs[:, 0])
    assert len(step_outputs) == 3
    assert len(cellgen.compile_stack("predrnn_openstl", 2, in_channels=3, hidden=HID, k=3)(xs.float())) == 2


# ---------------------------------------------------------------------------------------------
# PredRNN-V2's model: decoupling loss, reverse scheduled sampling, load_openstl's adapter
# ---------------------------------------------------------------------------------------------

PATCH, FRAME, LAYERS, CONTEXT, LENGTH = 2, 12, 3, 3, 6


def _models(ln: bool, level: int, seed: int):
    from cellgen.sequence import SequenceConfig, SequenceModel

    maps = FRAME // PATCH
    params = {"hidden": HID, "k": 3}
    reference = ref_v2.PredRNNv2Model(PATCH * PATCH, [HID] * LAYERS, maps, maps, 3, layer_norm=ln).double()
    _randomize(reference, seed)
    spec = "predrnnv2_ln" if ln else "predrnnv2"
    model = SequenceModel(SequenceConfig.for_spec(spec, params=params, layers=LAYERS, patch=PATCH,
                                                  frame_size=(FRAME, FRAME), opt_level=level)).double()
    cellgen.load_openstl(model, reference.state_dict())
    assert torch.equal(model.adapter.weight, reference.adapter.weight)
    return model, reference


def _holder_grads(model, reference, grads):
    """The reference's gradients, placed where load_openstl puts its parameters."""
    import copy

    holder = copy.deepcopy(model)
    cellgen.load_openstl(holder, dict(zip(dict(reference.named_parameters()), grads)))
    return dict(holder.named_parameters())


@pytest.mark.parametrize("ln,level", [(False, 0), (False, 2), (True, 2)])
@pytest.mark.parametrize("reverse", [False, True])
def test_predrnnv2_model_loss_and_gradients_equal_a_hand_written_unroll(ln, level, reverse):
    from cellgen.sequence import ReverseScheduledSampling
    from cellgen.sequence.patch import reshape_patch
    from cellgen.training.precision import TrainStep, resolve_precision

    model, reference = _models(ln, level, seed=40 + level)
    gen = torch.Generator().manual_seed(41)
    video = torch.rand(B, LENGTH, 1, FRAME, FRAME, generator=gen, dtype=torch.float64)
    beta = 0.7
    if reverse:   # mid-schedule: both kinds of columns mixed
        mask = ReverseScheduledSampling(2, 10, 3.0).mask(5, B, CONTEXT, LENGTH - CONTEXT, seed=3).double()
        assert mask.shape == (B, LENGTH - 2) and 0 < mask.sum() < mask.numel()
        start = 1
    else:
        mask, start = None, None
    predicted, decoupling = model(video, CONTEXT, mask, start, decoupling=True)
    expected, decoupling_e, total_e = reference(reshape_patch(video, PATCH), CONTEXT, mask, reverse=reverse,
                                                beta=beta)
    from cellgen.sequence.patch import reshape_patch_back

    _close(predicted, reshape_patch_back(expected, PATCH), "predictions", 1e-9)
    _close(decoupling, decoupling_e, "decoupling loss", 1e-10)
    assert 0.01 < decoupling_e.item() < 1.0
    total = torch.nn.functional.mse_loss(predicted, video[:, 1:]) + beta * decoupling
    _close(total, total_e, "total loss", 1e-10)
    grads = torch.autograd.grad(total, list(model.parameters()))
    grads_e = torch.autograd.grad(total_e, list(reference.parameters()))
    expected_grads = _holder_grads(model, reference, grads_e)
    for (name, _), g in zip(model.named_parameters(), grads):
        _close(g, expected_grads[name], f"gradient of {name}", 1e-9)
    assert expected_grads["adapter.weight"].abs().max() > 1e-6

    # the training step takes the same loss (fp32 MSE + β · decoupling): one step with lr 0
    step = TrainStep(model, torch.optim.SGD(model.parameters(), lr=0.0), resolve_precision("fp32", torch.device("cpu")),
                     CONTEXT, decouple_beta=beta)
    _close(step(video, mask, start).double(), total_e, "TrainStep's loss", 1e-6)


def test_reverse_scheduled_sampling_follows_openstl_schedule():
    from cellgen.sequence import ReverseScheduledSampling

    s1, s2, alpha = 100, 300, 40.0
    schedule = ReverseScheduledSampling(s1, s2, alpha)
    for step, (r_eta, eta) in {0: (0.5, 0.5), 99: (0.5, 0.5),
                               100: (0.5, 0.5), 180: (1 - 0.5 * math.exp(-80 / 40), 0.5 - 0.5 * 80 / 200),
                               299: (1 - 0.5 * math.exp(-199 / 40), 0.5 - 0.5 * 199 / 200), 300: (1.0, 0.0)}.items():
        got = schedule.probabilities(step)
        assert got == pytest.approx((r_eta, eta)), step
    late = schedule.mask(400, 64, 4, 5, seed=0)
    assert late.shape == (64, 7)
    assert torch.equal(late[:, :3], torch.ones(64, 3)) and torch.equal(late[:, 3:], torch.zeros(64, 4))
    early = schedule.mask(0, 4000, 4, 5, seed=0)
    assert abs(early.mean().item() - 0.5) < 0.02
    assert torch.equal(early, schedule.mask(0, 4000, 4, 5, seed=0))      # seeded by (seed, step)
    assert not torch.equal(early, schedule.mask(1, 4000, 4, 5, seed=0))


def test_the_decoupling_loss_needs_the_increments():
    from cellgen.sequence import SequenceConfig, SequenceModel

    model = SequenceModel(SequenceConfig.for_spec("predrnn_openstl", params={"hidden": HID, "k": 3}, layers=2,
                                                  patch=PATCH, frame_size=(FRAME, FRAME)))
    assert model.adapter is None
    with pytest.raises(CellgenError, match="memory increments"):
        model(torch.rand(1, 4, 1, FRAME, FRAME), 2, decoupling=True)
    # a PredRNNv2_Model checkpoint into predrnn_openstl cells: its adapter is accepted and unused
    reference = ref_v2.PredRNNv2Model(PATCH * PATCH, [HID] * 2, FRAME // PATCH, FRAME // PATCH, 3)
    cellgen.load_openstl(model, reference.state_dict())


def test_load_openstl_checks_the_adapter_shape():
    model, reference = _models(False, 2, seed=50)
    state = dict(reference.state_dict())
    state["adapter.weight"] = torch.zeros(HID + 1, HID + 1, 1, 1, dtype=torch.float64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CellgenError, match="adapter.weight has shape"):
        cellgen.load_openstl(model, state)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_cli_decouple_beta_errors_without_increments(tmp_path):
    done = run_in_process("train", "convlstm", "--steps", "1", "--out", tmp_path / "run", "--decouple-beta", "0.1",
                          "--frame-size", "16", "--context", "3", "--future", "3")
    assert done.returncode == 1 and "--decouple-beta needs a cell that outputs its memory increments" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "run").exists()   # before the run directory
    clash = run_in_process("train", "predrnnv2", "--steps", "1", "--out", tmp_path / "run2",
                           "--reverse-scheduled-sampling", "--scheduled-sampling", "10")
    assert clash.returncode == 1 and "pick one" in clash.stderr


def test_checkpointed_activations_and_bench_see_the_outputs():
    from cellgen.tools.bench import _named_outputs, _outputs

    model, _ = _models(False, 2, seed=60)
    video = torch.rand(B, LENGTH, 1, FRAME, FRAME, generator=torch.Generator().manual_seed(61), dtype=torch.float64)
    plain = model(video, CONTEXT, decoupling=True)
    model.set_execution(checkpoint_activations=True)
    checkpointed = model(video, CONTEXT, decoupling=True)
    _close(checkpointed[0], plain[0], "checkpointed predictions", 1e-12)
    _close(checkpointed[1], plain[1], "checkpointed decoupling loss", 1e-12)
    cell = model.stack.layers[0]
    result = cell(torch.randn(B, PATCH * PATCH, 6, 6, dtype=torch.float64), None)
    assert len(_outputs(result)) == 1 + 3 + 2
    assert list(_named_outputs(result))[-2:] == ["output delta_c", "output delta_m"]
