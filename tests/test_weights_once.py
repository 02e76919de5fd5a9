"""A rollout's weight prelude and casts computed once (cellgen/codegen/prelude.py,
`CellModule.weights_once`, `runtime.ops.casts_once`): the same values and gradients as
calling each step plainly, with the prelude run once per block."""
from __future__ import annotations

import contextlib
import warnings

import pytest
import torch

import cellgen
from cellgen.runtime import ops as runtime_ops
from cellgen.sequence import SequenceConfig, SequenceModel

warnings.filterwarnings("ignore", category=UserWarning)

SMALL = {"hidden": 4, "k": 3}
PARAMS = {"predrnn": SMALL, "convlstm": SMALL, "predrnn_openstl_ln": {**SMALL, "height": 4, "width": 4},
          "mk_convlstm": {"hidden": 8}, "cms_lstm": {**SMALL, "height": 4, "width": 4}, "e3d_lstm_2d": SMALL}
MODELS = ["predrnnpp", "mim"]   # heterogeneous stacks: a cell between layers, a difference chain
SPECS = list(PARAMS) + MODELS


def _model(spec, level=2):
    torch.manual_seed(0)
    if spec in MODELS:
        config = SequenceConfig.for_model(spec, layers=3, params=SMALL, patch=2, frame_size=(8, 8), opt_level=level)
    else:
        config = SequenceConfig.for_spec(spec, params=PARAMS[spec], layers=2, patch=2, frame_size=(8, 8),
                                         opt_level=level)
    return SequenceModel(config)


def _plain(model):
    """The model with its stack's `weights_once` made a no-op: every step runs its prelude."""
    model.stack.weights_once = contextlib.nullcontext
    return model


def _loss_and_grads(model, video, precision):
    context = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    with context:
        predictions = model(video, 3)
    loss = torch.nn.functional.mse_loss(predictions.float(), video[:, 1:])
    loss.backward()
    return loss.detach(), {name: p.grad for name, p in model.named_parameters()}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("spec", SPECS)
def test_a_rollout_with_weights_once_computes_what_plain_steps_compute(spec, precision):
    video = torch.rand(2, 6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    once, plain = _model(spec), _plain(_model(spec))
    loss, grads = _loss_and_grads(once, video, precision)
    loss_plain, grads_plain = _loss_and_grads(plain, video, precision)
    # the forward is the same ops on the same values: bit for bit
    assert torch.equal(loss, loss_plain)
    # gradients: the same terms, summed over the steps before or after the concatenations'
    # backward (fp32 sums in both, the casts' backward returning fp32 gradients)
    for name, grad in grads_plain.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-7, msg=name)
    with torch.no_grad():
        assert torch.equal(once.predict(video[:, :3], 3), plain.predict(video[:, :3], 3))


def test_the_prelude_runs_once_per_block_and_per_grad_mode():
    cell = cellgen.compile("predrnn", in_channels=2, hidden=4, k=3, opt_level=2)
    split = cell._weight_prelude()
    assert split is not None
    calls = []

    def counted(module):
        calls.append(torch.is_grad_enabled())
        return split.prelude(module)

    cell.__dict__["_split_step"] = (cell.graph, type(split)(counted, split.step))
    x = torch.randn(1, 2, 4, 4)
    expected, _ = cell(x, None)
    with cell.weights_once():
        state = None
        for _ in range(4):
            h, state = cell(x, state)
        with torch.no_grad():
            cell(x, state)
        with cell.weights_once():  # nested: the outer block's
            cell(x, state)
    assert calls == [True, False]
    assert "forward" not in cell.__dict__  # the plain step again
    torch.testing.assert_close(cell(x, None)[0], expected, rtol=0, atol=0)


def test_a_cell_whose_prelude_reads_only_parameters_runs_plainly():
    cell = cellgen.compile("predrnn", in_channels=2, hidden=4, k=3, opt_level=0)  # one weight per conv
    assert cell._weight_prelude() is None
    with cell.weights_once():
        assert "forward" not in cell.__dict__


def test_a_fused_conv_casts_each_weight_once_in_a_block():
    weight = torch.randn(8, 6, 3, 3, requires_grad=True)
    parts = [torch.randn(1, 2, 5, 5), torch.randn(1, 4, 5, 5, requires_grad=True)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = [runtime_ops.conv_of_concat(parts, weight, None, (1, 1)) for _ in range(3)]
        with runtime_ops.casts_once():
            once = [runtime_ops.conv_of_concat(parts, weight, None, (1, 1)) for _ in range(3)]
            casts = dict(runtime_ops._ParameterCasts.active)
    assert list(casts) == [(id(weight), torch.bfloat16)] and casts[(id(weight), torch.bfloat16)][0] is weight
    assert runtime_ops._ParameterCasts.active is None
    for a, b in zip(plain, once):
        assert torch.equal(a, b) and b.dtype == torch.bfloat16
    sum(once).float().sum().backward()
    grad_once = weight.grad.clone()
    weight.grad = None
    sum(plain).float().sum().backward()
    assert weight.grad.dtype == torch.float32 and torch.equal(grad_once, weight.grad)
