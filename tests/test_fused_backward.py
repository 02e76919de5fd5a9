"""What the fused step's backward computes, and nothing more.

`conv_of_concat`, the conv sum fusion emits for `W_x ⋆ x + W_h ⋆ h`, computes input gradients
only for the parts that need them (checked against a plain conv of the concatenation under
autograd, in float64); a fused conv's gates are cut by one split, whose backward is one cat."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

import cellgen
from cellgen.runtime.ops import conv_of_concat


def _parts(widths, needs, spatial, size=5, batch=2):
    shape = (size,) * spatial
    return [torch.randn(batch, w, *shape, dtype=torch.float64, requires_grad=need) for w, need in zip(widths, needs)]


def _plain(parts, weight, bias, padding):
    conv = F.conv2d if weight.dim() == 4 else F.conv3d
    return conv(torch.cat(parts, 1), weight, bias, 1, padding)


def _grads(out, tensors):
    grad_out = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    wanted = [t for t in tensors if t is not None and t.requires_grad]
    got = iter(torch.autograd.grad(out, wanted, grad_out))
    return [next(got) if t is not None and t.requires_grad else None for t in tensors]


@settings(max_examples=40, deadline=None)
@given(widths=st.lists(st.integers(1, 4), min_size=1, max_size=4), data=st.data(),
       spatial=st.sampled_from([2, 3]), kernel=st.sampled_from([1, 3]), bias=st.booleans(),
       weight_grad=st.booleans())
def test_equals_the_plain_conv_in_value_and_every_gradient(widths, data, spatial, kernel, bias, weight_grad):
    needs = data.draw(st.lists(st.booleans(), min_size=len(widths), max_size=len(widths)))
    torch.manual_seed(0)
    parts = _parts(widths, needs, spatial)
    weight = torch.randn(3, sum(widths), *(kernel,) * spatial, dtype=torch.float64, requires_grad=weight_grad)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True) if bias else None
    padding = (kernel // 2,) * spatial
    tensors = [*parts, weight, b]
    expected_out = _plain(parts, weight, b, padding)
    out = conv_of_concat(parts, weight, b, padding)
    torch.testing.assert_close(out, expected_out, rtol=0, atol=1e-12)
    if not out.requires_grad:
        assert not expected_out.requires_grad
        return
    for got, expected in zip(_grads(out, tensors), _grads(expected_out, tensors)):
        assert (got is None) == (expected is None)
        if got is not None:
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


def test_a_part_without_grad_gets_none_and_the_others_do():
    x, h = _parts([3, 2], [False, True], 2)
    weight = torch.randn(4, 5, 3, 3, dtype=torch.float64, requires_grad=True)
    out = conv_of_concat([x, h], weight, None, (1, 1))
    assert type(out.grad_fn).__name__ == "_ConvOfConcatBackward"
    out.sum().backward()
    assert x.grad is None and h.grad is not None and weight.grad is not None


def test_no_grad_and_tracing_take_the_plain_conv():
    x, h = _parts([3, 2], [False, True], 2)
    weight = torch.randn(4, 5, 3, 3, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        assert conv_of_concat([x, h], weight, None, (1, 1)).grad_fn is None
    traced = torch.jit.trace(lambda a, b, w: conv_of_concat([a, b], w, None, (1, 1)), (x, h, weight))
    assert "PythonOp" not in str(traced.graph)  # a Python op could not be saved
    torch.testing.assert_close(traced(x, h, weight), _plain([x, h], weight, None, (1, 1)))


def test_twice_differentiable():
    x, h = _parts([2, 2], [False, True], 2, size=4, batch=1)
    weight = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda h, w, b: conv_of_concat([x, h], w, b, (1, 1)), (h, weight, bias))


@pytest.mark.parametrize("input_grad", [False, True])
def test_a_fused_cell_skips_only_what_needs_no_gradient(input_grad):
    """The O2 ConvLSTM step (one conv over [x, h]) trains like O0 whether or not x needs a gradient."""
    cells = {level: cellgen.compile("convlstm", in_channels=3, hidden=4, opt_level=level).double()
             for level in (0, 2)}
    cells[2].load_state_dict(cells[0].state_dict())
    assert "conv_of_concat" in cells[2].code
    torch.manual_seed(1)
    x0 = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    h0, c0 = (torch.randn(2, 4, 6, 6, dtype=torch.float64) for _ in range(2))
    grads = {}
    for level, cell in cells.items():
        x, h = x0.clone().requires_grad_(input_grad), h0.clone().requires_grad_()
        out, state = cell(x, {"h": h, "c": c0})
        (out.sum() + state["c"].square().sum()).backward()
        grads[level] = [x.grad, h.grad] + [p.grad for p in cell.parameters()]
    for got, expected in zip(grads[2], grads[0]):
        assert (got is None) == (expected is None)
        if got is not None:
            torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_a_fused_convs_gates_are_cut_by_one_split():
    code = cellgen.compile("convlstm", in_channels=3, hidden=4, opt_level=2).code
    assert code.count(".split(") == 1 and "narrow" not in code
    assert "split" not in cellgen.compile("convlstm", in_channels=3, hidden=4, opt_level=0).code
