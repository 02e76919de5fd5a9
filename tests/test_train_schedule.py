"""Learning-rate schedules against torch's own schedulers, step by step; gradient clipping."""
import math

import pytest
import torch

from cellgen.training.schedule import clip_gradients, learning_rate


def _torch_rates(make, steps: int, base: float) -> list[float]:
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=base)
    scheduler = make(optimizer)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize("steps", [10, 37, 200])
def test_cosine_is_torchs_cosine_annealing(steps):
    expected = _torch_rates(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=steps), steps, 0.01)
    ours = [learning_rate("cosine", 0.01, s, steps) for s in range(steps)]
    assert ours == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert ours[0] == 0.01 and ours[-1] < 0.01 * (1 - math.cos(math.pi / steps))


@pytest.mark.parametrize("steps", [10, 37, 200])
def test_onecycle_is_torchs_one_cycle_without_momentum_cycling(steps):
    expected = _torch_rates(lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.01, total_steps=steps,
                                                                           cycle_momentum=False), steps, 0.01)
    ours = [learning_rate("onecycle", 0.01, s, steps) for s in range(steps)]
    assert ours == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert 0.0099 < max(ours) <= 0.01 and ours[0] == pytest.approx(0.01 / 25)


def test_constant_is_constant():
    assert {learning_rate("constant", 0.003, s, 50) for s in range(50)} == {0.003}


def test_clipping_scales_the_gradient_to_the_norm_and_reports_the_norm_before():
    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(4))
    a.grad, b.grad = torch.full((3,), 3.0), torch.full((4,), 4.0)   # norm sqrt(27 + 64)
    norm = clip_gradients([a, b], 1.0)
    assert norm == pytest.approx(math.sqrt(91))
    assert torch.cat([a.grad, b.grad]).norm().item() == pytest.approx(1.0, rel=1e-5)
    a.grad, b.grad = torch.full((3,), 3.0), torch.full((4,), 4.0)
    assert clip_gradients([a, b], 0.0) == pytest.approx(math.sqrt(91))   # 0: measured, not clipped
    assert a.grad[0].item() == 3.0
