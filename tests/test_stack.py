"""CellStack with 3D cells: the bottom layer reads a window of frames, zeros before the first;
zigzag m and the eidetic history are carried as the cells' own state dicts say."""
import warnings

import torch

import cellgen


def _manual_unroll(stack, xs):
    """The same computation spelled out: windows built by hand, states threaded by hand."""
    window = stack.layers[0].input_window
    padded = torch.cat([xs.new_zeros((xs.shape[0], window - 1) + xs.shape[2:]), xs], 1)
    states = [None] * len(stack.layers)
    outputs = []
    for t in range(xs.shape[1]):
        x = torch.stack([padded[:, t + j] for j in range(window)], dim=2)  # frames t-W+1 … t
        for index, cell in enumerate(stack.layers):
            state = states[index]
            if state is None:
                state = cell.zero_state(x)
            if t > 0 or index > 0:  # m: from the layer below, or from the top layer at t-1
                state = {**state, "m": states[index - 1]["m"]}
            x, states[index] = cell(x, state)
        outputs.append(x)
    return torch.stack(outputs, 1), states


def test_e3d_stack_windows_zigzag_and_history_match_a_manual_unroll():
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stack = cellgen.compile_stack("e3d_lstm", 2, in_channels=1, hidden=4, k=3, tau=2).double()
    for parameter in stack.parameters():
        torch.nn.init.normal_(parameter, std=0.3)
    xs = torch.randn(2, 4, 1, 6, 6, dtype=torch.float64)
    ys, states = stack(xs)
    expected, expected_states = _manual_unroll(stack, xs)
    assert ys.shape == (2, 4, 4, 2, 6, 6)
    assert torch.allclose(ys, expected, atol=1e-12)
    for got, want in zip(states, expected_states):
        assert got.keys() == want.keys() == {"h", "c", "m", "c.history"}
        assert all(torch.allclose(got[k], want[k], atol=1e-12) for k in got)
    assert states[0]["c.history"].shape[1] == 2  # tau


def test_the_first_window_starts_with_a_zero_frame():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stack = cellgen.compile_stack("astm", 1, in_channels=1, hidden=4, k=3)
    xs = torch.randn(1, 3, 1, 6, 6)
    first = stack._input(xs, 0)
    assert first.shape == (1, 1, 2, 6, 6)
    assert first[:, :, 0].abs().max() == 0 and torch.equal(first[:, :, 1], xs[:, 0])
    assert torch.equal(stack._input(xs, 2), xs[:, 1:3].transpose(1, 2))
