"""Every shipped spec trains inside the sequence model: a tiny model takes one optimizer step.

Parametrized over `cellgen.resources.shipped_specs()`, so a spec added to specs/ is covered
the day it lands. Each spec runs with its own defaults except sizes kept tiny (hidden 8,
small kernels where the spec has a `k`), 16×16 frames cut into 4×4 patches, 2 layers.
MAU's input S must be as wide as its state T (OpenSTL's MAUCell reads S with num_hidden-input
convs and its model encodes the frames to num_hidden first): it gets an input projection.
"""
import math

import pytest
import torch
import torch.nn.functional as F

import cellgen
from cellgen.resources import shipped_specs
from cellgen.sequence import SequenceConfig, SequenceModel


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_params(spec: str) -> dict:
    loaded = cellgen.load_spec(spec)
    declared = {p.name for p in (getattr(loaded, "resolved", None) or loaded.ast).params}
    return {name: value for name, value in (("hidden", 8), ("k", 3)) if name in declared}


@pytest.mark.parametrize("spec", sorted(shipped_specs()))
def test_a_tiny_model_of_every_shipped_spec_trains_one_step(spec):
    torch.manual_seed(0)
    embed = {"embed": 8} if spec == "mau" else {}      # S as wide as T (hidden 8)
    model = SequenceModel(SequenceConfig.for_spec(spec, params=tiny_params(spec), layers=2, patch=4,
                                                  frame_size=(16, 16), **embed))
    video = torch.rand(2, 6, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    predictions = model(video, context=3)
    assert predictions.shape == (2, 5, 1, 16, 16)
    loss = F.mse_loss(predictions, video[:, 1:])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert math.isfinite(loss.item())
    moved = [name for name, p in model.named_parameters() if not torch.equal(p, before[name])]
    assert any(name.startswith("stack.layers.0.") for name in moved)   # the cells learn, not just the head
    assert any(name.startswith("head.") for name in moved)
    with torch.no_grad():
        assert torch.isfinite(model(video, context=3)).all()
