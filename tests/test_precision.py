"""Training at every opt level under torch.autocast and torch.func, and how `cellgen train` runs:
--precision, --channels-last, --checkpoint-activations, --compile, --device, flush-to-zero, data.

The fused conv (`conv_of_concat`) is checked against the plain conv of the concatenation under
the same autocast (values and every gradient); whole cells and sequence models at O0/O1/O2
against their own fp32 computation within bf16's tolerance, and under torch.func against
autograd."""
import hashlib
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

import cellgen
from cellgen.errors import CellgenError
from cellgen.runtime.ops import conv_of_concat
from cellgen.sequence import SequenceConfig, SequenceModel
from cellgen.training.precision import Precision, TrainStep, resolve_precision

pytestmark = pytest.mark.usefixtures("one_thread")

LEVELS = (0, 1, 2)
BF16 = dict(rtol=2e-2, atol=2e-2)


def _plain(parts, weight, bias, padding):
    return (F.conv2d if weight.dim() == 4 else F.conv3d)(torch.cat(parts, 1), weight, bias, 1, padding)


def _grads(out, tensors):
    wanted = [t for t in tensors if t is not None and t.requires_grad]
    got = iter(torch.autograd.grad(out.float().square().sum(), wanted))
    return [next(got) if t is not None and t.requires_grad else None for t in tensors]


@pytest.mark.parametrize("spatial", [2, 3])
@pytest.mark.parametrize("needs", [(False, True), (True, True), (True, False, True)])
@pytest.mark.parametrize("bias", [True, False])
def test_fused_conv_under_bf16_autocast_is_autocasts_conv(spatial, needs, bias):
    torch.manual_seed(0)
    shape = (5,) * spatial
    parts = [torch.randn(2, 3, *shape, requires_grad=need) for need in needs]
    weight = torch.randn(4, 3 * len(parts), *(3,) * spatial, requires_grad=True)
    b = torch.randn(4, requires_grad=True) if bias else None
    padding = (1,) * spatial
    tensors = [*parts, weight, b]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = _plain(parts, weight, b, padding)
        out = conv_of_concat(parts, weight, b, padding)
    assert out.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    for got, want, tensor in zip(_grads(out, tensors), _grads(expected, tensors), tensors):
        assert (got is None) == (want is None)
        if got is not None:
            assert got.dtype == tensor.dtype == torch.float32  # fp32 master weights get fp32 gradients
            torch.testing.assert_close(got, want, **BF16)


def test_fused_conv_takes_bf16_parts_and_fp32_parts_together():
    """Under autocast a state is bf16 after the first step while x stays fp32."""
    x = torch.randn(2, 3, 6, 6)
    h = torch.randn(2, 2, 6, 6).to(torch.bfloat16).requires_grad_()
    weight = torch.randn(4, 5, 3, 3, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv_of_concat([x, h], weight, None, (1, 1))
        expected = _plain([x.bfloat16(), h], weight, None, (1, 1))
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    got_h, got_w = torch.autograd.grad(out.float().sum(), [h, weight])
    want_h, want_w = torch.autograd.grad(expected.float().sum(), [h, weight])
    assert got_h.dtype == torch.bfloat16 and got_w.dtype == torch.float32
    torch.testing.assert_close(got_h, want_h, **BF16)
    torch.testing.assert_close(got_w, want_w, **BF16)


def test_fused_conv_under_torch_func_grad_vmap_and_vjp():
    torch.manual_seed(0)
    x, h = torch.randn(2, 3, 6, 6), torch.randn(2, 2, 6, 6)
    weight, bias = torch.randn(4, 5, 3, 3), torch.randn(4)

    def fused(w, b, h):
        return conv_of_concat([x, h], w, b, (1, 1)).square().sum()

    def plain(w, b, h):
        return _plain([x, h], w, b, (1, 1)).square().sum()

    every = (0, 1, 2)
    for got, want in zip(grad(fused, argnums=every)(weight, bias, h), grad(plain, argnums=every)(weight, bias, h)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    hs = torch.randn(3, *h.shape)
    torch.testing.assert_close(vmap(grad(fused, argnums=2), in_dims=(None, None, 0))(weight, bias, hs),
                               vmap(grad(plain, argnums=2), in_dims=(None, None, 0))(weight, bias, hs),
                               rtol=1e-5, atol=1e-4)
    out, pullback = torch.func.vjp(lambda w: conv_of_concat([x, h], w, bias, (1, 1)), weight)
    torch.testing.assert_close(pullback(torch.ones_like(out))[0],
                               torch.func.vjp(lambda w: _plain([x, h], w, bias, (1, 1)), weight)[1](
                                   torch.ones_like(out))[0], rtol=1e-5, atol=1e-4)


def _cell(spec, level):
    """Small cells: ST-LSTM (zigzag m), ConvLSTM, CMS-LSTM (LayerNorm, attention), multi-kernel ConvLSTM."""
    torch.manual_seed(0)
    params = {"in_channels": 3, "hidden": 4}
    params.update({"k": 3} if spec != "mk_convlstm" else {})
    params.update({"height": 8, "width": 8} if spec == "cms_lstm" else {})
    return cellgen.compile(spec, opt_level=level, **params)


def _two_steps(cell, params, x):
    h, state = functional_call(cell, params, (x, None))
    h, state = functional_call(cell, params, (h[:, :3] + x, state))
    return h.float().square().sum() + sum(v.float().square().sum() for v in state.values())


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("spec", ["predrnn", "convlstm", "cms_lstm", "mk_convlstm"])
def test_cells_train_under_torch_func_at_every_level(spec, level):
    cell = _cell(spec, level)
    x = torch.randn(2, 3, 8, 8)
    params = {name: p.detach() for name, p in cell.named_parameters()}
    got = grad(_two_steps, argnums=1)(cell, params, x)
    cell.zero_grad()
    _two_steps(cell, dict(cell.named_parameters()), x).backward()
    for name, p in cell.named_parameters():
        torch.testing.assert_close(got[name], p.grad, rtol=1e-5, atol=1e-5, msg=name)
    per_sample = vmap(grad(_two_steps, argnums=1), in_dims=(None, None, 0))(cell, params, x.unsqueeze(1))
    one = grad(_two_steps, argnums=1)(cell, params, x[1:2])
    for name in params:
        torch.testing.assert_close(per_sample[name][1], one[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("spec", ["predrnn", "convlstm", "cms_lstm", "mk_convlstm"])
def test_cells_train_under_bf16_autocast_at_every_level(spec, level):
    cell = _cell(spec, level)
    x = torch.randn(2, 3, 8, 8)
    params = dict(cell.named_parameters())
    reference = _two_steps(cell, params, x)
    want = torch.autograd.grad(reference, list(params.values()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = _two_steps(cell, params, x)
        got = torch.autograd.grad(loss, list(params.values()))
        func = grad(_two_steps, argnums=1)(cell, {k: v.detach() for k, v in params.items()}, x)
    torch.testing.assert_close(loss, reference, rtol=3e-2, atol=0)
    # bf16 rounds each gradient relative to the whole backward's magnitudes: a gradient that is
    # zero in exact arithmetic (CMS-LSTM's key bias, which the softmax cancels) is only ~0
    floor = 0.02 * max(float(w.abs().max()) for w in want)
    for (name, _), g, w in zip(params.items(), got, want):
        assert g.dtype == torch.float32
        scale = w.abs().max().clamp_min(floor)
        assert (g - w).abs().max() / scale < 6e-2, name
        torch.testing.assert_close(func[name], g, rtol=1e-2, atol=1e-2 * float(scale))


def _tiny_model(spec="predrnn", level=2, **kwargs):
    torch.manual_seed(0)
    return SequenceModel(SequenceConfig.for_spec(spec, params={"hidden": 4, "k": 3}, layers=2, patch=2,
                                                 frame_size=(8, 8), opt_level=level, **kwargs))


def _video(seed=1, batch=2, frames=6):
    return torch.rand(batch, frames, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("level", LEVELS)
def test_a_sequence_model_trains_in_bf16_at_every_level(level):
    video = _video()
    losses = {}
    for name in ("fp32", "bf16"):
        model = _tiny_model(level=level)
        step = TrainStep(model, torch.optim.Adam(model.parameters(), lr=1e-2),
                         resolve_precision(name, torch.device("cpu")), 3)
        losses[name] = [float(step(video)) for _ in range(3)]
        assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    torch.testing.assert_close(torch.tensor(losses["bf16"]), torch.tensor(losses["fp32"]), rtol=3e-2, atol=0)
    assert losses["bf16"][-1] < losses["bf16"][0]


def test_fp16_steps_through_the_grad_scaler():
    """fp16 is refused on this CPU (no fp16 kernels), but its step, loss scaling included, runs on CPU
    too when asked for directly: the code path CUDA takes, as far as a CPU can take it."""
    model = _tiny_model()
    step = TrainStep(model, torch.optim.Adam(model.parameters(), lr=1e-2), Precision("fp16", "cpu"), 3)
    assert step.scaler is not None
    before = [p.detach().clone() for p in model.parameters()]
    loss = step(_video())
    assert torch.isfinite(loss) and step.scaler.get_scale() > 0
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))


def test_precisions_that_cannot_work_are_refused_clearly():
    if torch.ops.mkldnn._is_mkldnn_fp16_supported():
        pytest.skip("this CPU has fp16 kernels")
    with pytest.raises(CellgenError, match="fp16 cannot train on this CPU") as error:
        resolve_precision("fp16", torch.device("cpu"))
    assert "bf16" in error.value.hint
    with pytest.raises(CellgenError, match="unknown --precision"):
        resolve_precision("int8", torch.device("cpu"))
    assert resolve_precision("bf16", torch.device("cpu")).grad_scaler() is None


def test_channels_last_computes_the_same_in_nhwc():
    video = _video()
    plain, nhwc = _tiny_model(), _tiny_model()
    nhwc.set_execution(channels_last=True)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in nhwc.parameters() if p.dim() == 4)
    torch.testing.assert_close(nhwc(video, 3), plain(video, 3), rtol=1e-5, atol=1e-6)
    patched = torch.rand(2, 4, 4, 4).contiguous(memory_format=torch.channels_last)
    prediction, carry = nhwc.step(patched, None)
    assert all(t.is_contiguous(memory_format=torch.channels_last) for t in [prediction, *carry.values()])
    with pytest.raises(CellgenError, match="2D cells"):
        SequenceModel(SequenceConfig.for_spec("e3d_lstm", params={"hidden": 2, "k": 3}, layers=1, patch=2,
                                              frame_size=(8, 8))).set_execution(channels_last=True)


def _saved_bytes(model, video):
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.mse_loss(model(video, 3), video[:, 1:])
    return loss, saved[0]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_activation_checkpointing_computes_the_same_and_keeps_less(precision):
    video = _video(frames=10)
    results = []
    for checkpointed in (False, True):
        model = _tiny_model(level=2)
        model.set_execution(checkpoint_activations=checkpointed)
        with resolve_precision(precision, torch.device("cpu")).autocast():
            loss, saved = _saved_bytes(model, video)
        loss.backward()
        results.append((loss.detach(), saved, [p.grad for p in model.parameters()]))
    (loss, saved, grads), (loss_ckpt, saved_ckpt, grads_ckpt) = results
    torch.testing.assert_close(loss_ckpt, loss, rtol=0, atol=0)
    for a, b in zip(grads, grads_ckpt):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)
    assert saved_ckpt < saved / 3  # only the carries and frames are kept between steps


def test_moving_digits_are_the_sequences_they_were():
    """The vectorised generator draws what the frame-by-frame one drew (hashes recorded from it,
    at 1fd1a24). The frames are hashed as 8-bit pixels: the glyphs' float32 distance sums are
    vectorised by CPU (AVX2, AVX-512), so their last bit differs between machines, and a hash
    of the float bytes recorded on one machine failed on another with both generators agreeing."""
    from cellgen.data import MovingDigits

    for split, index, kwargs, digest in (("test", 0, {}, "89787df74f54b5ee"), ("train", 7, {}, "6ca6524d2dfb236e"),
                                         ("test", 3, dict(frame_size=16, frames=5), "f51f23e1c13e706e")):
        video = MovingDigits(None if split == "train" else 10, split=split, seed=0, **kwargs)[index]
        pixels = (video * 255).round().to(torch.uint8)
        assert hashlib.sha256(pixels.numpy().tobytes()).hexdigest()[:16] == digest


def test_generation_runs_on_one_thread_and_gives_the_threads_back():
    from cellgen.runtime.threads import one_thread

    torch.set_num_threads(2)
    try:
        with one_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


def test_the_test_split_is_made_once():
    from cellgen.training.evaluate import MadeOnce, evaluate

    class Counting(torch.utils.data.Dataset):
        made = 0

        def __len__(self):
            return 4

        def __getitem__(self, index):
            Counting.made += 1
            return _video(seed=index, batch=1, frames=6)[0]

    test = MadeOnce(Counting())
    model = _tiny_model()
    first = evaluate(model, test, context=3, future=3, sequences=4, batch_size=2)
    second = evaluate(model, test, context=3, future=3, sequences=4, batch_size=2)
    assert Counting.made == 4 and first.results == second.results


def test_the_baselines_are_measured_once_per_run_and_equal_a_fresh_measure():
    from cellgen.training import evaluate as evaluation
    from cellgen.training.evaluate import MadeOnce, evaluate

    test = MadeOnce([_video(seed=index, batch=1, frames=6)[0] for index in range(4)])
    model, baselines = _tiny_model(), {}
    fresh = evaluate(model, test, context=3, future=3, sequences=4, batch_size=2)
    first = evaluate(model, test, context=3, future=3, sequences=4, batch_size=2, baselines=baselines)
    measured = []
    real_totals = evaluation.MetricTotals

    class Counted(real_totals):
        def add(self, prediction, truth):
            measured.append(prediction.shape[0])
            super().add(prediction, truth)

    evaluation.MetricTotals = Counted
    try:
        with torch.no_grad():  # the model changes: its score must, the baselines' must not
            next(model.parameters()).add_(0.5)
        second = evaluate(model, test, context=3, future=3, sequences=4, batch_size=2, baselines=baselines)
    finally:
        evaluation.MetricTotals = real_totals
    assert measured == [2, 2]                        # the model's two batches only
    assert first.results == fresh.results
    for name in ("copy_last_frame", "blank_frame"):
        assert second.results[name] == fresh.results[name]
        assert second.results[name] is not first.results[name]
    assert second.results["model"] != first.results["model"]
    # another number of sequences is another set of frames: measured anew
    third = evaluate(model, test, context=3, future=3, sequences=2, batch_size=2, baselines=baselines)
    assert third.results["copy_last_frame"]["sequences"] == 2 and len(baselines) == 2


def _python(code):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=True,
                          timeout=300).stdout.split()


def test_flush_to_zero_reaches_the_worker_threads():
    """In a fresh process: set before the thread pool starts, every thread's share of a threaded op
    flushes its denormal results to zero; set after, only the calling thread's does (the check can fail)."""
    early = _python("""
        from cellgen.runtime.denormals import flush_denormals, threads_flush_denormals
        import torch
        torch.set_num_threads(2)
        print(flush_denormals(), threads_flush_denormals(2))
        x = torch.full((1 << 20,), 1e-30)
        print(int((x * 1e-9 != 0).sum()))
    """)
    assert early == ["True", "True", "0"]
    late = _python("""
        import torch
        torch.set_num_threads(2)
        x = torch.full((1 << 20,), 1e-30)
        x * 1e-9   # starts the pool's worker thread without the setting
        from cellgen.runtime.denormals import flush_denormals
        print(flush_denormals(), int((x * 1e-9 != 0).sum()))
    """)
    assert late[0] == "False" and int(late[1]) > 0


def test_cellgen_commands_flush_before_their_first_torch_op():
    out = _python("""
        import torch
        torch.set_num_threads(2)
        from cellgen.runtime.denormals import flushing_denormals, threads_flush_denormals
        print(flushing_denormals(lambda: threads_flush_denormals(2))())
    """)
    assert out == ["True"]
    from cellgen.cli import _SUBCOMMANDS, build_parser

    build_parser()
    for name in ("train", "eval", "export"):
        assert _SUBCOMMANDS[name].run.__wrapped__ is not None


def test_device_parsing_and_clear_errors_without_a_gpu():
    import argparse

    from cellgen.training.distributed import choose_device
    from cellgen.training.execution import parse_device

    assert [parse_device(t) for t in ("auto", "cpu", "cuda", "cuda:1")] == ["auto", "cpu", "cuda", "cuda:1"]
    for bad in ("gpu", "cuda:", "cuda:x", "cpu:0"):
        with pytest.raises(argparse.ArgumentTypeError, match="cuda:N"):
            parse_device(bad)
    assert choose_device("cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert choose_device("auto") == torch.device("cpu")
    for device in ("cuda", "cuda:0", "cuda:3"):
        with pytest.raises(CellgenError, match=f"--device {device}: no CUDA device is available"):
            choose_device(device)


def test_train_refuses_what_this_machine_cannot_do_without_a_traceback(tmp_path, capsys):
    from cellgen.cli import main

    common = ["train", "convlstm", "--steps", "1", "-p", "hidden=2", "-p", "k=3", "--frame-size", "8",
              "--patch", "2", "--test-sequences", "2", "--eval-sequences", "2", "--quiet"]
    if not torch.cuda.is_available():
        assert main(common + ["--out", str(tmp_path / "a"), "--device", "cuda:0"]) == 1
        assert "no CUDA device is available" in capsys.readouterr().err
    if not torch.ops.mkldnn._is_mkldnn_fp16_supported():
        assert main(common + ["--out", str(tmp_path / "b"), "--precision", "fp16"]) == 1
        err = capsys.readouterr().err
        assert "fp16 cannot train on this CPU" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as usage:
        main(common + ["--out", str(tmp_path / "c"), "--device", "gpu"])
    assert usage.value.code == 2 and "cuda:N" in capsys.readouterr().err


def test_train_in_bf16_channels_last_checkpointed(tmp_path, capsys):
    import json

    from cellgen.cli import main

    out = tmp_path / "run"
    assert main(["train", "predrnn", "--steps", "2", "-p", "hidden=4", "-p", "k=3", "--frame-size", "8",
                 "--patch", "2", "--test-sequences", "2", "--eval-sequences", "2", "--quiet", "--out", str(out),
                 "--precision", "bf16", "--channels-last", "--checkpoint-activations"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["execution"] == {"precision": "bf16", "channels_last": True, "checkpoint_activations": True,
                                    "compile": False}
    assert all(v == v for _, v in metrics["loss"])  # finite, not NaN


@pytest.mark.slow
def test_compiled_layers_share_one_compile_and_compute_the_same():
    from cellgen.runtime.stack import CellStack

    torch.manual_seed(0)
    cells = [cellgen.compile("convlstm", in_channels=4, hidden=4, k=3) for _ in range(3)]
    cells.insert(0, cellgen.compile("convlstm", in_channels=2, hidden=4, k=3))
    stack = CellStack(cells)
    xs = torch.randn(2, 3, 2, 6, 6)
    expected, _ = stack(xs)
    expected_grads = torch.autograd.grad(expected.sum(), list(stack.parameters()))
    assert stack.compile_layers() == 2  # the bottom layer reads 2 channels, the three above it 4
    got, _ = stack(xs)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    for a, b in zip(torch.autograd.grad(got.sum(), list(stack.parameters())), expected_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
