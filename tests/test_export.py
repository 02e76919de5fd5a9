"""Exporting a sequence model's step: ONNX run with onnxruntime, and TorchScript, against PyTorch."""
import numpy as np
import pytest
import torch

from cellgen import export
from cellgen.errors import CellgenError
from cellgen.sequence import SequenceConfig, SequenceModel


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(spec="predrnn"):
    torch.manual_seed(0)
    return SequenceModel(SequenceConfig.for_spec(spec, params={"hidden": 4, "k": 3}, layers=2, patch=4,
                                                 frame_size=(16, 16))).eval()


def video(batch=3, frames=8):
    return torch.rand(batch, frames, 1, 16, 16, generator=torch.Generator().manual_seed(1))


def test_onnx_step_agrees_with_pytorch_under_onnxruntime(tmp_path):
    import onnxruntime  # in the test extra (and `cellgen[export]`)

    model = tiny_model()
    path = tmp_path / "step.onnx"
    signature = export.export_onnx(model, path)
    assert signature.input_names == ["frame", "layers.0.h", "layers.0.c", "layers.0.m", "layers.1.h", "layers.1.c",
                                     "layers.1.m"]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == signature.input_names     # none dropped, none renamed
    assert [o.name for o in session.get_outputs()] == signature.output_names

    # one step, batch 3 (exported with batch 2: the batch dimension is dynamic)
    inputs = [torch.rand(3, *signature.frame_shape)] + [torch.randn(3, *s) for s in signature.carry_shapes]
    outputs = session.run(None, {n: t.numpy() for n, t in zip(signature.input_names, inputs)})
    expected = export.pytorch_runner(model, signature)(inputs)
    for got, want in zip(outputs, expected):
        assert np.abs(got - want.numpy()).max() <= 1e-5

    # a whole rollout: observed frames, then its own predictions fed back
    result = export.check_export("onnx", path, model, signature, video(), context=4)
    assert result.ok and result.max_abs_diff <= 1e-5 and result.steps == 7 and result.sequences == 3
    assert not list(tmp_path.glob(".*.tmp"))


def test_torchscript_step_agrees_with_pytorch(tmp_path):
    model = tiny_model("convlstm")
    path = tmp_path / "step.pt"
    signature = export.export_torchscript(model, path)
    result = export.check_export("torchscript", path, model, signature, video(), context=4)
    assert result.ok and result.max_abs_diff <= 1e-6
    # the rollout really is the model's prediction: same as SequenceModel.predict
    frames, _ = export.rollout(export.torchscript_runner(path, signature), signature, video(), context=4)
    assert torch.allclose(frames[:, 3:], model.predict(video()[:, :4], 4), atol=1e-6)


def test_check_catches_a_wrong_export(tmp_path):
    model = tiny_model("convlstm")
    path = tmp_path / "step.pt"
    signature = export.export_torchscript(model, path)
    with torch.no_grad():
        model.head.weight.add_(0.5)  # the file now holds another model's step
    assert not export.check_export("torchscript", path, model, signature, video(), context=4).ok


# --- cells whose state grows: the whole rollout ----------------------------------------------

def tiny_3d(spec, layers=1):
    """A tiny model of a cell with a state history (E3D-LSTM: every past memory; ASTM: the last 5)."""
    torch.manual_seed(0)
    return SequenceModel(SequenceConfig.for_spec(spec, params={"hidden": 4, "k": 3}, layers=layers, patch=4,
                                                 frame_size=(16, 16))).eval()


def test_a_growing_history_is_found_and_the_rollout_chosen():
    assert export.step_carry_problem(tiny_model("predrnn")) is None
    for spec in ("e3d_lstm", "astm"):
        model = tiny_3d(spec)
        problem = export.step_carry_problem(model)
        assert "`layers.0.c.history` grows from step to step (2 entries after step 1, 3 after step 2)" in problem
        plan = export.plan_export(model, "auto", 3, 4)
        assert plan.signature == export.RolloutSignature(3, 4, (1, 16, 16)) and problem in plan.reason
        with pytest.raises(CellgenError, match="cannot be exported on its own") as error:
            export.plan_export(model, "step", 3, 4)
        assert "--rollout" in error.value.hint
    assert export.plan_export(tiny_model("convlstm"), "auto", 3, 4).signature.kind == "step"
    assert export.plan_export(tiny_model("convlstm"), "rollout", 3, 4).signature.kind == "rollout"


def test_torchscript_rollout_of_e3d_lstm_is_its_predict(tmp_path):
    model = tiny_3d("e3d_lstm", layers=2)
    path = tmp_path / "rollout.pt"
    signature = export.export_torchscript(model, path, export.rollout_signature(model, context=3, future=4))
    assert signature.input_names == ["context_frames"] and signature.output_names == ["predicted_frames"]
    result = export.check_export("torchscript", path, model, signature, video(), context=3)
    assert result.ok and result.max_abs_diff <= 1e-6 and result.steps == 6 and result.sequences == 3
    # batch 3 through a file traced with batch 2; the history grew to 7 entries inside
    (frames,) = export.torchscript_runner(path, signature)([video()[:, :3]])
    assert frames.shape == (3, 4, 1, 16, 16)
    assert torch.allclose(frames, model.predict(video()[:, :3], 4), atol=1e-6)


def test_check_catches_a_wrong_rollout(tmp_path):
    model = tiny_3d("astm")
    path = tmp_path / "rollout.pt"
    signature = export.export_torchscript(model, path, export.rollout_signature(model, context=2, future=2))
    with torch.no_grad():
        model.head.weight.add_(0.5)
    assert not export.check_export("torchscript", path, model, signature, video(), context=2).ok


def test_the_step_of_a_growing_cell_is_refused(tmp_path):
    with pytest.raises(CellgenError, match="state history `layers.0.c.history` grows"):
        export.export_torchscript(tiny_3d("e3d_lstm"), tmp_path / "step.pt")
    assert not list(tmp_path.iterdir())


def onnx_rollout_agrees(tmp_path, model, context, future):
    """Export the rollout to ONNX, run it with onnxruntime on a batch of 3 (exported with 2),
    compare with the model's own prediction."""
    import onnxruntime

    path = tmp_path / "rollout.onnx"
    signature = export.export_onnx(model, path, export.rollout_signature(model, context, future))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["context_frames"]
    assert [o.name for o in session.get_outputs()] == ["predicted_frames"]
    observed = video()[:, :context]
    (got,) = session.run(None, {"context_frames": observed.numpy()})
    want = model.predict(observed, future).numpy()
    assert got.shape == want.shape == (3, future, 1, 16, 16)
    assert np.abs(got - want).max() <= 1e-5
    assert export.check_export("onnx", path, model, signature, video(), context).ok


@pytest.mark.slow
def test_onnx_rollout_of_e3d_lstm_under_onnxruntime(tmp_path):
    """E3D-LSTM keeps every past memory (tau none): the history grows at every one of the 4 steps."""
    onnx_rollout_agrees(tmp_path, tiny_3d("e3d_lstm"), context=2, future=3)


@pytest.mark.slow
def test_onnx_rollout_of_astm_under_onnxruntime(tmp_path):
    """ASTM keeps the last 5 memories: 7 steps of 2 layers (zigzag m) take its history past the cap."""
    onnx_rollout_agrees(tmp_path, tiny_3d("astm", layers=2), context=4, future=4)


@pytest.mark.slow
def test_onnx_rollout_keeps_a_tiny_layernorm_epsilon(tmp_path):
    """The official E3D-LSTM normalises with eps 1e-12 and its m stays zero (a constant map):
    onnxscript's `x + 0 → x` rewrite, which matches constants within 1e-8 of zero, would drop
    the epsilon and turn that map into NaN; `export_onnx` exports without those rewrites."""
    onnx_rollout_agrees(tmp_path, tiny_3d("e3d_lstm_official"), context=2, future=2)
