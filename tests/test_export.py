"""Exporting a sequence model's step: ONNX run with onnxruntime, and TorchScript, against PyTorch."""
import numpy as np
import pytest
import torch

from cellgen import export
from cellgen.sequence import SequenceConfig, SequenceModel


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors gain nothing from threads, and on a busy 2-core machine two OpenMP threads
    per process make every op wait: run this module on one, then restore torch's setting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
