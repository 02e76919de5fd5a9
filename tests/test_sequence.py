"""The sequence model (cellgen.sequence) against hand-written predictors and its own contracts.

The references (tests/reference_sequence.py) are predrnn-pytorch's forward pass written out
by hand over the cell steps of tests/reference_cells.py; they share no code with cellgen.
Weights are copied by name; outputs and gradients must agree to 1e-5 (fp32).
"""
import os
import sys

import pytest
import torch

_TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
for _p in (_TESTS_DIR, os.path.dirname(_TESTS_DIR)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import reference_sequence as ref  # noqa: E402

from cellgen.errors import CellgenError  # noqa: E402
from cellgen.sequence import (ScheduledSampling, SequenceConfig, SequenceModel, reshape_patch,  # noqa: E402
                              reshape_patch_back)


pytestmark = pytest.mark.usefixtures("one_thread")

TOL = 1e-5
CONTEXT = 10
STEPS = 20  # 21 frames: 10 observed, then 10 steps fed with the model's own predictions


def model_for(spec, layers=2, hidden=8, k=3, patch=4, size=16, embed=None, seed=0):
    torch.manual_seed(seed)
    config = SequenceConfig.for_spec(spec, params={"hidden": hidden, "k": k}, layers=layers, patch=patch,
                                     frame_size=(size, size), embed=embed)
    return SequenceModel(config)


def layer_weights(model, layers):
    sd = model.state_dict()
    return [{name.split(".", 3)[3]: tensor for name, tensor in sd.items() if name.startswith(f"stack.layers.{l}.")}
            for l in range(layers)]


def random_video(batch=2, frames=STEPS + 1, size=16, seed=1):
    return torch.rand(batch, frames, 1, size, size, generator=torch.Generator().manual_seed(seed))


def test_patching_matches_the_papers_reshape_patch_and_round_trips():
    video = random_video(frames=3, size=8)
    ours = reshape_patch(video, 4)                                           # (B, T, 16, 2, 2)
    papers = ref.reshape_patch(video.permute(0, 1, 3, 4, 2), 4).permute(0, 1, 4, 2, 3)
    assert ours.shape == (2, 3, 16, 2, 2)
    assert torch.equal(ours, papers)
    assert torch.equal(reshape_patch_back(ours, 4), video)
    assert torch.equal(reshape_patch(video, 1), video)


@pytest.mark.parametrize("with_mask", [False, True], ids=["autoregressive", "scheduled-sampling"])
def test_predrnn_matches_a_hand_written_two_layer_unroll(with_mask):
    model = model_for("predrnn")
    video = random_video()
    mask = None
    if with_mask:
        mask = (torch.rand(2, STEPS - CONTEXT, generator=torch.Generator().manual_seed(3)) < 0.5).float()
        assert 0 < mask.sum() < mask.numel()  # both kinds of input occur
    ours = model(video, CONTEXT, mask)
    weights = layer_weights(model, 2)
    leaves = [w.detach().clone().requires_grad_(True) for layer in weights for w in layer.values()]
    it = iter(leaves)
    ref_weights = [{name: next(it) for name in layer} for layer in weights]
    w_last = model.head.weight.detach().clone().requires_grad_(True)
    theirs = ref.predrnn_forward(ref_weights, w_last, video, CONTEXT, patch=4, mask=mask)
    assert ours.shape == theirs.shape == (2, STEPS, 1, 16, 16)
    assert (ours - theirs).abs().max().item() <= TOL
    # the future half really is autoregressive: the first predicted frame changes everything after it
    assert (ours[:, CONTEXT:] - video[:, CONTEXT + 1:]).abs().max() > 0.1

    # same gradients, weight by weight
    (ours ** 2).mean().backward()
    (theirs ** 2).mean().backward()
    assert (model.head.weight.grad - w_last.grad).abs().max().item() <= TOL
    for l, layer in enumerate(ref_weights):
        for name, tensor in layer.items():
            mine = getattr(model.stack.layers[l], name).grad
            assert (mine - tensor.grad).abs().max().item() <= TOL, (l, name)


def test_convlstm_matches_a_hand_written_stack():
    model = model_for("convlstm", layers=3)
    video = random_video()
    theirs = ref.convlstm_forward(layer_weights(model, 3), model.head.weight.detach(), video, CONTEXT, patch=4)
    with torch.no_grad():
        ours = model(video, CONTEXT)
    assert (ours - theirs).abs().max().item() <= TOL


def test_input_projection_is_a_1x1_conv_before_the_bottom_cell():
    model = model_for("predrnn", embed=6)
    assert model.stack.layers[0].W_xi.shape[1] == 6
    video = random_video()
    with torch.no_grad():
        ours = model(video, CONTEXT)
        theirs = ref.predrnn_forward(layer_weights(model, 2), model.head.weight, video, CONTEXT, patch=4,
                                     embed=(model.embed.weight, model.embed.bias))
    assert (ours - theirs).abs().max().item() <= TOL


def test_predict_equals_forward_without_ground_truth():
    model = model_for("predrnn")
    video = random_video()
    with torch.no_grad():
        full = model(video, CONTEXT)
    predicted = model.predict(video[:, :CONTEXT], STEPS + 1 - CONTEXT)
    assert torch.allclose(predicted, full[:, CONTEXT - 1:], atol=1e-6, rtol=0)


def test_future_frames_are_read_only_where_the_mask_says():
    model = model_for("convlstm")
    video = random_video()
    scrambled = video.clone()
    scrambled[:, CONTEXT + 1:] = torch.rand_like(scrambled[:, CONTEXT + 1:])
    with torch.no_grad():
        assert torch.equal(model(video, CONTEXT), model(scrambled, CONTEXT))
        ones = torch.ones(2, STEPS - CONTEXT)
        assert not torch.equal(model(video, CONTEXT, ones), model(scrambled, CONTEXT, ones))


def test_zero_carry_is_what_none_means_at_t0():
    model = model_for("predrnn")
    frame = reshape_patch(random_video(frames=1)[:, 0], 4)
    carry = model.zero_carry(frame)
    assert sorted(carry) == ["layers.0.c", "layers.0.h", "layers.0.m", "layers.1.c", "layers.1.h", "layers.1.m"]
    with torch.no_grad():
        a, carry_a = model.step(frame, None)
        b, carry_b = model.step(frame, carry)
    assert torch.equal(a, b) and all(torch.equal(carry_a[k], carry_b[k]) for k in carry_a)


def test_peephole_maps_are_sized_to_the_patched_frame():
    model = model_for("convlstm_peephole", size=32, patch=4)
    assert model.stack.layers[0].W_ci.shape == (8, 8, 8)
    with pytest.raises(CellgenError, match="height=16 does not match"):
        SequenceModel(SequenceConfig.for_spec("convlstm_peephole", params={"hidden": 8, "k": 3, "height": 16},
                                              frame_size=(32, 32), patch=4))


def test_the_channel_param_is_the_models_to_set():
    with pytest.raises(CellgenError, match="in_channels is set by the sequence model"):
        SequenceModel(SequenceConfig.for_spec("convlstm", params={"in_channels": 3}, frame_size=(16, 16)))
    with pytest.raises(CellgenError, match="cannot be cut into 3×3 patches"):
        SequenceModel(SequenceConfig.for_spec("convlstm", params={"hidden": 4}, frame_size=(16, 16), patch=3))


SPEC_3D = """cell Tiny3D
  param in_channels
  param hidden = 4
  input x[in_channels] window 2
  state h[hidden], c[hidden]
  weights
    W_x*, W_h* : conv 2×3×3
    b_* : bias
  i  = σ(W_xi ⋆ x + W_hi ⋆ h + b_i)
  c' = c ⊙ σ(W_xf ⋆ x + W_hf ⋆ h + b_f) + i
  h' = tanh(c')
"""


def test_3d_cells_read_a_window_of_their_last_inputs():
    """A 3D cell with a 2-frame window sees [x_{t-1}, x_t] on a time axis, a zero frame before the
    first, also when x_t is the model's own prediction."""
    torch.manual_seed(0)
    model = SequenceModel(SequenceConfig(spec="tiny3d", spec_text=SPEC_3D, params={}, layers=2, patch=2,
                                         frame_size=(8, 8), embed=3))
    assert model.window == 2 and model.spatial_dims == 3
    assert isinstance(model.head, torch.nn.Conv3d) and model.head.kernel_size == (2, 1, 1)
    seen = []
    model.stack.layers[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    video = random_video(frames=6, size=8)
    with torch.no_grad():
        out = model(video, context=3)
        projected = model.embed(reshape_patch(video, 2).flatten(0, 1)).unflatten(0, (2, 6))
    assert out.shape == (2, 5, 1, 8, 8)
    assert [tuple(x.shape) for x in seen] == [(2, 3, 2, 4, 4)] * 5
    assert torch.equal(seen[0][:, :, 0], torch.zeros_like(projected[:, 0]))   # zero frame before the first
    for t in range(3):                                                          # observed frames
        assert torch.allclose(seen[t][:, :, 1], projected[:, t], atol=1e-6)
    for t in range(1, 5):
        assert torch.equal(seen[t][:, :, 0], seen[t - 1][:, :, 1])            # the window slides by one
    fed_back = model.embed(reshape_patch(out[:, 2], 2))                        # prediction of frame 3
    assert torch.allclose(seen[3][:, :, 1], fed_back, atol=1e-5)


def test_the_stack_runs_a_sequence_as_one_step_per_frame():
    """`CellStack.forward` is `CellStack.step` over the windows it cuts out of the sequence; the
    sequence model calls `step` with the windows it forms itself, so the stack's own window is
    left as the cell says, and the caller's states are not modified."""
    import warnings

    import cellgen

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stack = cellgen.compile_stack("e3d_lstm", 2, in_channels=1, hidden=4, k=3, tau=2)
    xs = torch.randn(2, 3, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ys, states = stack(xs)
        stepped, outputs = None, []
        for t in range(3):
            before = stepped
            y, stepped = stack.step(stack._input(xs, t), stepped)
            assert stepped is not before
            outputs.append(y)
    assert torch.equal(torch.stack(outputs, 1), ys)
    assert all(torch.equal(a[k], b[k]) for a, b in zip(states, stepped) for k in a)
    model = SequenceModel(SequenceConfig(spec="tiny3d", spec_text=SPEC_3D, params={}, layers=2, patch=2,
                                         frame_size=(8, 8)))
    assert model.stack.window == model.window == 2


def test_extra_inputs_reach_every_layer_through_the_stack_step():
    """Multi-kernel ConvLSTM's flow input: each layer is called as `cell(x, flow, state)`."""
    torch.manual_seed(0)
    model = SequenceModel(SequenceConfig.for_spec("mk_convlstm_flow", params={"hidden": 4}, layers=2, patch=4,
                                                  frame_size=(16, 16)))
    calls = []
    for layer in model.stack.layers:
        layer.register_forward_pre_hook(lambda module, args: calls.append(args))
    with torch.no_grad():
        model(random_video(frames=3), context=2)
    assert len(calls) == 2 * 2 and all(len(args) == 3 for args in calls)
    for bottom, top in zip(calls[0::2], calls[1::2]):
        assert torch.equal(bottom[1], top[1])                       # the same flow features
    assert not any(".cell." in name for name in model.state_dict())  # no wrapper module in the names


def test_scheduled_sampling_decays_linearly_and_is_a_function_of_seed_and_step():
    schedule = ScheduledSampling(stop=100)
    assert [schedule.probability(s) for s in (0, 50, 100, 150)] == [1.0, 0.5, 0.0, 0.0]
    assert torch.equal(schedule.mask(40, 64, 9, seed=3), schedule.mask(40, 64, 9, seed=3))
    assert not torch.equal(schedule.mask(40, 64, 9, seed=3), schedule.mask(41, 64, 9, seed=3))
    assert 0.5 < schedule.mask(40, 64, 9, seed=3).mean().item() < 0.7   # η = 0.6
    assert schedule.mask(100, 4, 9, seed=3) is None
    assert ScheduledSampling(stop=0).mask(0, 4, 9, seed=3) is None
