"""The compiled module as users hold it: the contract, copies, pickles, the stack."""
import copy
import io
import pickle

import pytest
import torch

import cellgen
from cellgen.errors import SpecNotFoundError
from cellgen.resources import shipped_specs


@pytest.fixture
def x():
    torch.manual_seed(0)
    return torch.randn(2, 3, 10, 10)


def test_contract_one_step_from_zero_state(x):
    cell = cellgen.compile("convlstm", in_channels=3, hidden=8, k=3)
    assert isinstance(cell, torch.nn.Module)
    h, state = cell(x, None)
    assert h.shape == (2, 8, 10, 10)
    assert set(state) == {"h", "c"} and torch.equal(state["h"], h)
    assert [k for k, _ in cell.named_parameters()] == list(cell.state_dict())
    assert dict(cell.state_dict())["W_xi"].shape == (8, 3, 3, 3)
    assert dict(cell.state_dict())["b_i"].shape == (8,)


def test_zero_state_equals_explicit_zeros(x):
    cell = cellgen.compile("predrnn", in_channels=3, hidden=8, k=3)
    h_none, state_none = cell(x, None)
    h_zero, state_zero = cell(x, cell.zero_state(x))
    assert torch.equal(h_none, h_zero)
    assert all(torch.equal(state_none[k], state_zero[k]) for k in state_none)


def test_spec_by_name_path_and_text_compile_alike(x):
    path = shipped_specs()["convlstm"]
    cells = [cellgen.compile(spec, in_channels=3, hidden=8, k=3, opt_level=0)
             for spec in ("convlstm", path, str(path), path.read_text())]
    state = cells[0].state_dict()
    outputs = []
    for cell in cells:
        cell.load_state_dict(state)
        outputs.append(cell(x)[0])
    assert all(torch.equal(outputs[0], other) for other in outputs[1:])


def test_unknown_spec_name_suggests_the_closest():
    with pytest.raises(SpecNotFoundError) as error:
        cellgen.compile("convlstn", in_channels=3)
    assert "did you mean `convlstm`?" in error.value.render()


@pytest.mark.parametrize("level", [0, 2])
def test_deepcopy_and_pickle_keep_the_cell(x, level):
    cell = cellgen.compile("predrnn", in_channels=3, hidden=8, k=3, opt_level=level)
    h, _ = cell(x)
    clone = copy.deepcopy(cell)
    assert clone.opt_level == level and clone.state_names == ["h", "c", "m"]
    assert clone.W_xi.data_ptr() != cell.W_xi.data_ptr()
    assert torch.equal(clone(x)[0], h)
    buffer = io.BytesIO()
    torch.save(cell, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert torch.equal(loaded(x)[0], h)


def test_copies_keep_each_weights_dtype_and_grad_flag_and_draw_no_random_numbers():
    cell = cellgen.compile("convlstm", in_channels=1, hidden=4, k=3, opt_level=2).double()
    cell.W_hf.requires_grad_(False)
    x = torch.randn(2, 1, 6, 6, dtype=torch.float64)
    h, _ = cell(x)
    for copy_of in (copy.deepcopy, lambda module: pickle.loads(pickle.dumps(module))):
        before = torch.random.get_rng_state()
        clone = copy_of(cell)
        assert torch.equal(torch.random.get_rng_state(), before)
        assert {p.dtype for p in clone.parameters()} == {torch.float64}
        assert not clone.W_hf.requires_grad and clone.W_xi.requires_grad
        assert torch.equal(clone(x)[0], h)


def test_code_is_readable_python_with_spec_names():
    code = cellgen.compile("convlstm", in_channels=3, hidden=8, k=3, opt_level=0).code
    for name in ("def forward(self, x, state = None)", "c_next", "W_xi = self.W_xi", "torch.sigmoid"):
        assert name in code


def test_stack_parameter_names_and_shapes():
    stack = cellgen.compile_stack("convlstm", layers=3, in_channels=3, hidden=8, k=3)
    shapes = {k: tuple(v.shape) for k, v in stack.state_dict().items()}
    assert shapes["layers.0.W_xi"] == (8, 3, 3, 3)
    assert shapes["layers.1.W_xi"] == (8, 8, 3, 3)
    assert shapes["layers.2.W_hc"] == (8, 8, 3, 3)
    ys, states = stack(torch.randn(2, 4, 3, 10, 10))
    assert ys.shape == (2, 4, 8, 10, 10) and len(states) == 3


def test_weights_are_initialised_on_one_thread_with_the_values_of_any_thread_count():
    """reset_parameters runs on one torch thread (cellgen.runtime.threads.one_thread): the thread
    count is as it was afterwards, and the weights for a seed are those init_weight_ draws on
    two threads, tensor by tensor in the same order."""
    from cellgen.runtime.init import init_weight_

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        cell = cellgen.compile("convlstm_openstl_ln", opt_level=2, in_channels=3, hidden=16)
        assert torch.get_num_threads() == 2
        torch.manual_seed(0)
        drawn = {symbol: init_weight_(torch.empty(info.shape), info.kind)
                 for symbol, info in cell.cell_graph.weights.items()}
    finally:
        torch.set_num_threads(threads)
    kinds = {info.kind for info in cell.cell_graph.weights.values()}
    assert {"conv", "norm_gain", "norm_bias"} <= kinds
    for symbol, tensor in drawn.items():
        assert torch.equal(cell.get_parameter(symbol), tensor), symbol
