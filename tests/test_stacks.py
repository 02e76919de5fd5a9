"""Heterogeneous stacks: OpenSTL's PredRNN++ and MIM models as cellgen sequence models.

* Equivalence: `SequenceConfig.for_model("predrnnpp" | "mim", …)` filled by `load_openstl` from
  the hand-written reference models of tests/reference_openstl.py (OpenSTL's PredRNNpp_Model
  and MIM_Model unrolls, their state_dicts with OpenSTL's keys), float64, every parameter
  random, LayerNorm on and off, at -O0 and -O2: predictions over every step, and the gradients
  of a weighted loss w.r.t. the frames and w.r.t. every parameter (compared through the key
  → parameter map `openstl_names`; every key OpenSTL's forward reads is covered).
* MIM's n: OpenSTL detaches it at every step, and so does the spec (`detach(n)`): predictions
  and gradients equal the detaching reference, and the gradients differ from those of the same
  reference without the detach (the detach is not a no-op).
* The plan's words: `for_stack` equals `for_model`; the zero carry means t = 0 (MIM's chain
  starts at t = 1 either way); `compile_stack` of a plan; the errors for plans that cannot run.
* load_openstl: the model-level refusals and hints; nothing written when a load fails.
* `cellgen train --model …` / `--layers SPEC,…` / `--between`: one step, and the CLI's errors.
"""
from __future__ import annotations

import os
import sys

import json

import pytest
import torch

_TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

import reference_openstl as ref  # noqa: E402
from cli_runner import run_in_process  # noqa: E402
from test_openstl import assert_close, randomize_  # noqa: E402

import cellgen  # noqa: E402
from cellgen.openstl import openstl_names  # noqa: E402
from cellgen.sequence import SequenceConfig, SequenceModel  # noqa: E402

DT = torch.float64
ATOL = 1e-9
PATCH, FRAME, HIDDEN, K = 2, 12, 4, 3
MAP = FRAME // PATCH
FC = PATCH * PATCH                         # patched frame channels (one image channel)

pytestmark = pytest.mark.usefixtures("one_thread")


def model_of(name: str, layers: int, opt_level: int) -> SequenceModel:
    config = SequenceConfig.for_model(name, layers=layers, params={"hidden": HIDDEN, "k": K}, patch=PATCH,
                                      frame_size=(FRAME, FRAME), opt_level=opt_level)
    return SequenceModel(config).to(DT)


def reference_of(name: str, layers: int, seed: int, **kw) -> torch.nn.Module:
    ln = name.endswith("_ln")
    make = ref.PredRNNppModel if name.startswith("predrnnpp") else ref.MIMModel
    reference = make(FC, [HIDDEN] * layers, MAP, MAP, K, layer_norm=ln, **kw).to(DT)
    randomize_(reference, seed)
    return reference


def video(seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(2, 5, 1, FRAME, FRAME, generator=gen, dtype=DT)


def weighted(predictions: torch.Tensor, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(predictions.shape, generator=gen, dtype=DT) * predictions).sum()


def run_reference(reference, frames):
    return ref.reshape_patch_back(reference(ref.reshape_patch(frames, PATCH)), PATCH)


def check_against(name, layers, opt_level, seed, grad_reference=None):
    """Predictions, frame gradients and parameter gradients of the cellgen model against the
    reference unroll (`grad_reference`: another reference with the same weights, for MIM's
    undetached gradients)."""
    reference = reference_of(name, layers, seed)
    model = model_of(name, layers, opt_level)
    cellgen.load_openstl(model, reference.state_dict())
    grad_reference = grad_reference or reference
    if grad_reference is not reference:
        grad_reference.load_state_dict(reference.state_dict())

    frames_c = video(seed + 1).requires_grad_(True)
    frames_r = frames_c.detach().clone().requires_grad_(True)
    got = model(frames_c, context=4)                         # every frame read: teacher forcing
    with torch.no_grad():
        expected = run_reference(reference, frames_c.detach())
    assert_close(got, expected, f"{name}: predictions")
    assert (expected[:, -1] - expected[:, 0]).abs().max() > 1e-4, "the predictions do not move: a weak test"

    loss_c = weighted(got, seed + 2)
    loss_r = weighted(run_reference(grad_reference, frames_r), seed + 2)
    loss_c.backward()
    loss_r.backward()
    assert_close(frames_c.grad, frames_r.grad, f"{name}: gradient w.r.t. the frames")
    params = dict(model.named_parameters())
    names = openstl_names(model)
    covered = set()
    for key, p in grad_reference.named_parameters():
        if key not in names:          # declared by OpenSTL, never read by its forward
            assert p.grad is None or not p.grad.abs().any(), f"{key} has a gradient but no cellgen parameter"
            continue
        mine = params[names[key]]
        assert_close(mine.grad, p.grad, f"{name}: gradient w.r.t. {key} ({names[key]})")
        covered.add(names[key])
    assert covered == set(params), f"parameters without an OpenSTL key: {sorted(set(params) - covered)}"
    return model, reference


@pytest.mark.parametrize("opt_level", [0, 2])
@pytest.mark.parametrize("name", ["predrnnpp", "predrnnpp_ln"])
def test_predrnnpp_model_equals_openstl_unroll(name, opt_level):
    model, _ = check_against(name, 3, opt_level, seed=40)
    assert list(model.stack.between) == ["0"] and model.stack.between["0"].cell_graph.name == "GHU"


@pytest.mark.parametrize("opt_level", [0, 2])
@pytest.mark.parametrize("name", ["mim", "mim_ln"])
def test_mim_model_equals_openstl_unroll_forward_and_gradients(name, opt_level):
    check_against(name, 3, opt_level, seed=50)


def test_mim_gradient_differs_from_an_undetached_n():
    """OpenSTL's gradients do not flow through n across steps, nor do the spec's: a reference
    that lets them flow gives other gradients (so the detach is tested, not a no-op)."""
    reference = reference_of("mim", 3, 60, detach_n=False)
    model = model_of("mim", 3, 2)
    cellgen.load_openstl(model, reference.state_dict())
    frames_c = video(61).requires_grad_(True)
    frames_r = frames_c.detach().clone().requires_grad_(True)
    weighted(model(frames_c, context=4), 62).backward()
    weighted(run_reference(reference, frames_r), 62).backward()
    assert (frames_c.grad - frames_r.grad).abs().max() > 1e-6


def test_four_layer_models_and_a_bare_plan_equal_the_named_model():
    check_against("predrnnpp", 4, 2, seed=70)
    check_against("mim", 4, 2, seed=71)
    named = SequenceConfig.for_model("predrnnpp", layers=4, params={"hidden": HIDDEN})
    bare = SequenceConfig.for_stack(["predrnnpp"] * 4, between={0: "ghu"}, params={"hidden": HIDDEN}, name="predrnnpp")
    assert named == bare
    mim = SequenceConfig.for_model("mim", layers=3)
    assert mim.layer_specs == ("predrnn_openstl", "mim", "mim") and mim.diff_chain == "mimn"
    assert SequenceConfig.from_dict(mim.to_dict()) == mim
    assert SequenceConfig.from_dict(named.to_dict()) == named              # between's keys through strings


def test_zero_carry_is_t0_for_the_difference_chain():
    """An explicit zero carry and carry=None are both t = 0: the chain is not stepped (per sample)."""
    model = model_of("mim", 3, 2)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    frames = torch.rand(2, 4, FC, MAP, MAP, dtype=DT)
    a, carry_a = model.step(frames[:, 0], None)
    b, carry_b = model.step(frames[:, 0], model.zero_carry(frames[:, 0]))
    assert_close(a, b, "t = 0 from None and from the zero carry")
    assert carry_a.keys() == carry_b.keys()
    assert not carry_a["diff_chain.0.h"].abs().any()                   # the chain has not stepped
    assert carry_a["diff_chain.source.started"].eq(1).all()
    a2, carry_a2 = model.step(frames[:, 1], carry_a)
    assert carry_a2["diff_chain.0.h"].abs().max() > 0                  # now it has
    # one sample at t = 0, the other at t = 1: each as if alone
    mixed = {k: torch.cat([carry_a[k][:1], model.zero_carry(frames[:, 0])[k][1:]]) for k in carry_a}
    m, _ = model.step(frames[:, 1], mixed)
    alone, _ = model.step(frames[1:, 1], None)
    assert_close(m[:1], a2[:1], "the started sample")
    assert_close(m[1:], alone, "the sample at t = 0")


def test_compile_stack_takes_a_plan():
    stack = cellgen.compile_stack(["predrnnpp"] * 3, between={0: "ghu"}, in_channels=FC, hidden=HIDDEN, k=K)
    model = model_of("predrnnpp", 3, 2).to(torch.float32)
    assert set(dict(stack.named_parameters())) == {n[len("stack."):] for n, _ in model.named_parameters()
                                                    if n.startswith("stack.")}
    stack.load_state_dict({k[len("stack."):]: v for k, v in model.state_dict().items() if k.startswith("stack.")})
    xs = torch.rand(2, 3, FC, MAP, MAP)
    ys, states = stack(xs)
    carry = None
    for t in range(3):
        _, carry = model.step(xs[:, t], carry)
    assert_close(ys[:, -1], carry["layers.2.h"], "compile_stack's unroll against the sequence model's", atol=1e-6)
    assert len(states) == len(stack.slots) == 4
    mim = cellgen.compile_stack(["predrnn_openstl", "mim"], diff_chain="mimn", in_channels=FC, hidden=HIDDEN, k=K,
                                height=MAP, width=MAP)
    assert mim.slots == ["layers.0", "layers.1", "diff_chain.0", "diff_chain.source"]
    mim(xs)


@pytest.mark.parametrize("layers,between,chain,fragment,hint", [
    (["predrnnpp", "predrnnpp"], {1: "ghu"}, None, "a cell between layers 1 and 2", "0 … 0"),
    (["predrnn_openstl", "mim"], {}, None, "layer 1 (MIMBlock) takes inputs x, d", "--diff-chain mimn"),
    (["predrnn_openstl", "convlstm_openstl"], {}, None, "zigzag", None),
    (["predrnn_openstl", "mim"], {}, "mim", "difference-chain cell 0 (MIMBlock) takes inputs x, d", None),
    (["predrnn_openstl", "predrnn_openstl"], {}, "mimn", "the difference chain gives layers ≥ 1 a second input",
     "--model mim"),
])
def test_plans_that_cannot_run_are_refused_clearly(layers, between, chain, fragment, hint):
    config = SequenceConfig.for_stack(layers, between=between, diff_chain=chain, params={"hidden": 4, "k": 3},
                                      patch=2, frame_size=(8, 8)) if fragment != "a cell between layers 1 and 2" \
        else None
    with pytest.raises(cellgen.CellgenError) as caught:
        if config is None:
            SequenceConfig.for_stack(layers, between=between)
        else:
            SequenceModel(config)
    assert fragment in caught.value.message
    if hint:
        assert hint in (caught.value.hint or "")


def test_unknown_names_and_params_get_suggestions():
    with pytest.raises(cellgen.CellgenError) as caught:
        SequenceConfig.for_model("predrnpp")
    assert "predrnnpp" in caught.value.hint
    with pytest.raises(cellgen.CellgenError) as caught:
        SequenceConfig.for_stack(["predrnnpp", "mimm"])
    assert "mim" in caught.value.render()
    with pytest.raises(cellgen.CellgenError) as caught:
        SequenceModel(SequenceConfig.for_model("mim", layers=2, params={"hiden": 4}, patch=2, frame_size=(8, 8)))
    assert "hidden" in caught.value.hint
    with pytest.raises(cellgen.CellgenError, match="at least 2 layers"):
        SequenceConfig.for_model("predrnnpp", layers=1)


# ---------------------------------------------------------------------------------------------
# load_openstl at model level
# ---------------------------------------------------------------------------------------------

def _plain(spec, layers):
    return SequenceModel(SequenceConfig.for_spec(spec, params={"hidden": HIDDEN, "k": K}, layers=layers, patch=PATCH,
                                                 frame_size=(FRAME, FRAME))).to(DT)


def test_model_checkpoints_meet_the_wrong_model_with_a_hint():
    predrnnpp = reference_of("predrnnpp", 3, 80).state_dict()
    mim = reference_of("mim", 3, 81).state_dict()
    with pytest.raises(cellgen.CellgenError) as caught:
        cellgen.load_openstl(_plain("predrnnpp", 3), predrnnpp)
    assert "gradient_highway" in caught.value.message and "--model predrnnpp" in caught.value.hint
    with pytest.raises(cellgen.CellgenError) as caught:
        cellgen.load_openstl(_plain("predrnn_openstl", 3), mim)
    assert "MIM_Model" in caught.value.message and "--model mim" in caught.value.hint
    with pytest.raises(cellgen.CellgenError, match="missing gradient_highway"):
        cellgen.load_openstl(model_of("predrnnpp", 3, 2), {k: v for k, v in predrnnpp.items()
                                                           if not k.startswith("gradient_highway.")})
    with pytest.raises(cellgen.CellgenError, match="the checkpoint has 3 layers"):
        cellgen.load_openstl(model_of("mim", 4, 2), mim)
    with pytest.raises(cellgen.CellgenError, match="cell_list"):
        cellgen.load_openstl(model_of("mim", 3, 2), predrnnpp)
    ln = reference_of("mim_ln", 3, 82).state_dict()
    with pytest.raises(cellgen.CellgenError) as caught:
        cellgen.load_openstl(model_of("mim", 3, 2), ln)
    assert "stlstm_layer.0" in caught.value.message and "predrnn_openstl_ln" in caught.value.hint


def test_a_failed_model_load_writes_nothing():
    state = dict(reference_of("mim", 3, 90).state_dict())
    state["stlstm_layer_diff.1.conv_h_concat.0.weight"] = torch.zeros(5, HIDDEN, K, K, dtype=DT)
    model = model_of("mim", 3, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(cellgen.CellgenError, match="stlstm_layer_diff.1: conv_h_concat.0.weight has shape"):
        cellgen.load_openstl(model, state)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_reference_models_have_openstls_keys():
    keys = set(reference_of("predrnnpp", 2, 0).state_dict())
    assert {"gradient_highway.x_concat.0.weight", "gradient_highway.z_concat.0.weight",
            "cell_list.1.conv_c2m.0.weight", "conv_last.weight"} <= keys
    keys = set(reference_of("mim", 3, 0).state_dict())
    assert {"stlstm_layer.0.conv_m.0.weight", "stlstm_layer.2.conv_t_cc.0.weight", "stlstm_layer_diff.1.ct_weight",
            "conv_last.weight"} <= keys and not any(k.startswith("stlstm_layer_diff.2") for k in keys)


# ---------------------------------------------------------------------------------------------
# cellgen train
# ---------------------------------------------------------------------------------------------

TINY = ("--frame-size", "16", "--context", "2", "--future", "2", "--test-sequences", "4", "--eval-sequences", "4",
        "--batch-size", "2", "-p", "hidden=4", "-p", "k=3", "--quiet")


@pytest.mark.parametrize("words, cells", [
    (("--model", "predrnnpp", "--layers", "2"), "CausalLSTM, GHU, CausalLSTM"),
    (("--model", "mim_ln", "--layers", "3"), "PredRNNOpenSTLLN, MIMBlockLN ×2; MIMNLN chain ×2"),
    (("--layers", "predrnn_openstl,mim", "--diff-chain", "mimn"), "PredRNNOpenSTL, MIMBlock; MIMN chain ×1"),
    (("predrnnpp", "--layers", "3", "--between", "0:ghu"), "CausalLSTM, GHU, CausalLSTM ×2"),
])
def test_train_one_step_of_a_heterogeneous_model(tmp_path, words, cells):
    result = run_in_process("train", *words, *TINY, "--steps", "1", "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    # metrics.json and the final line name every cell, not only the bottom layer's
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["cell"] == cells
    payload = torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=False)
    config = SequenceConfig.from_dict(payload["model_config"])
    assert config.heterogeneous
    resumed = run_in_process("train", "--steps", "2", "--out", tmp_path / "run", "--resume", "--quiet")
    assert resumed.returncode == 0, resumed.stderr


def test_the_saved_config_of_a_heterogeneous_run_repeats_it(tmp_path):
    first = run_in_process("train", "predrnnpp", "--layers", "3", "--between", "0:ghu", *TINY, "--steps", "1",
                           "--out", tmp_path / "a")
    assert first.returncode == 0, first.stderr
    again = run_in_process("train", "--config", tmp_path / "a" / "config.toml", "--out", tmp_path / "b")
    assert again.returncode == 0, again.stderr
    configs = [torch.load(tmp_path / run / "checkpoint.pt", map_location="cpu", weights_only=False)["model_config"]
               for run in ("a", "b")]
    assert configs[0] == configs[1] and configs[0]["between"] == {"0": "ghu"}


@pytest.mark.parametrize("words,fragment", [
    (("--model", "predrnpp"), "did you mean `predrnnpp`?"),
    (("--layers", "predrnn_openstl,mimm", "--diff-chain", "mimn"), "did you mean `mim`?"),
    (("--layers", "predrnnpp,,predrnnpp"), "--layers expects a number of layers or a comma-separated list"),
    (("predrnnpp", "--between", "ghu"), "--between expects LAYER:SPEC"),
    (("predrnnpp", "--layers", "2", "--between", "1:ghu"), "a cell between layers 1 and 2"),
    (("--model", "mim", "--between", "0:ghu"), "--model mim says what its layers are"),
    (("predrnnpp", "--model", "mim"), "leave out SPEC"),
    (("--layers", "predrnn_openstl,mim"), "--diff-chain mimn"),
    ((), "needs SPEC (or --model NAME"),
])
def test_train_refuses_bad_stacks_without_a_traceback(tmp_path, words, fragment):
    result = run_in_process("train", *words, *TINY, "--steps", "1", "--out", tmp_path / "run")
    assert result.returncode != 0
    assert fragment in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name", ["predrnnpp", "mim"])
def test_execution_modes_compute_the_same(name):
    """channels-last and activation checkpointing reach the between and chain cells' states too."""
    model = SequenceModel(SequenceConfig.for_model(name, layers=3, params={"hidden": HIDDEN, "k": K}, patch=PATCH,
                                                   frame_size=(FRAME, FRAME)))
    frames = video(5).float()
    plain = model(frames, context=3)
    model.set_execution(channels_last=True)
    assert_close(model(frames, context=3), plain, f"{name}: channels-last", atol=1e-5)
    model.set_execution(channels_last=False, checkpoint_activations=True)
    assert_close(model(frames, context=3), plain, f"{name}: checkpointed activations", atol=1e-6)
    assert "GHU" in model.describe() if name == "predrnnpp" else "MIMN chain ×2" in model.describe()


def test_compile_layers_counts_every_distinct_cell_once():
    """Layers 1 … L-1 share one compiled step, the GHU (or each chain cell alike) has its own;
    compiling is lazy, so nothing runs here."""
    stack = cellgen.compile_stack(["predrnnpp"] * 3, between={0: "ghu"}, in_channels=2 * HIDDEN, hidden=HIDDEN, k=K)
    assert stack.compile_layers() == 3                  # layer 0 (wider input), layers 1–2, the GHU
    mim = cellgen.compile_stack(["predrnn_openstl", "mim", "mim"], diff_chain="mimn", in_channels=FC, hidden=HIDDEN,
                                k=K, height=MAP, width=MAP)
    assert mim.compile_layers() == 3                    # the ST-LSTM, the blocks, the MIM-N cells
