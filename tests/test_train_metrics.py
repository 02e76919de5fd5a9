"""The papers' metrics: SSIM against an independent NumPy implementation, PSNR, per-frame MSE/MAE."""
import math

import numpy as np
import pytest
import torch

from cellgen.training.metrics import MetricTotals, frame_metrics, ssim_per_frame


def numpy_ssim(a: np.ndarray, b: np.ndarray, size=11, sigma=1.5) -> float:
    """Wang et al.'s SSIM written out with explicit windows: Gaussian weights, valid region, L = 1."""
    half = (size - 1) / 2
    g = np.exp(-((np.arange(size) - half) ** 2) / (2 * sigma ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    values = []
    for i in range(a.shape[0] - size + 1):
        for j in range(a.shape[1] - size + 1):
            x, y = a[i:i + size, j:j + size], b[i:i + size, j:j + size]
            mx, my = (w * x).sum(), (w * y).sum()
            vx, vy = (w * (x - mx) ** 2).sum(), (w * (y - my) ** 2).sum()
            cov = (w * (x - mx) * (y - my)).sum()
            values.append(((2 * mx * my + c1) * (2 * cov + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def test_ssim_matches_an_independent_implementation():
    rng = np.random.default_rng(0)
    truth = rng.random((24, 24))
    noisy = np.clip(truth + rng.normal(0, 0.2, truth.shape), 0, 1)
    ours = ssim_per_frame(torch.tensor(noisy)[None, None], torch.tensor(truth)[None, None])
    assert ours.shape == (1,)
    assert abs(ours.item() - numpy_ssim(noisy, truth)) < 1e-5
    same = ssim_per_frame(torch.tensor(truth)[None, None], torch.tensor(truth)[None, None])
    assert abs(same.item() - 1.0) < 1e-6


def test_ssim_of_a_multi_channel_frame_is_the_mean_over_channels():
    rng = np.random.default_rng(1)
    a, b = rng.random((2, 16, 16)), rng.random((2, 16, 16))
    ours = ssim_per_frame(torch.tensor(a)[None], torch.tensor(b)[None]).item()
    assert abs(ours - (numpy_ssim(a[0], b[0]) + numpy_ssim(a[1], b[1])) / 2) < 1e-5


def test_per_frame_mse_mae_psnr():
    truth = torch.zeros(2, 3, 1, 8, 8)
    prediction = torch.full_like(truth, 0.1)
    prediction[1, 2] = 0.0  # one frame exactly right
    metrics = frame_metrics(prediction, truth)
    assert metrics["mse"].shape == (2, 3)
    assert torch.allclose(metrics["mse"][0], torch.full((3,), 64 * 0.01))   # summed over the frame's pixels
    assert torch.allclose(metrics["mae"][0], torch.full((3,), 64 * 0.1))
    assert torch.allclose(metrics["psnr"][0], torch.full((3,), 20.0))        # 10·log10(1 / 0.01)
    assert metrics["psnr"][1, 2].item() == pytest.approx(100.0)              # capped, not infinite
    assert metrics["mse"][1, 2].item() == 0.0


def test_predictions_are_clipped_to_the_data_range():
    truth = torch.ones(1, 1, 1, 4, 4)
    metrics = frame_metrics(truth * 3, truth)
    assert metrics["mse"].item() == 0.0


def test_totals_average_over_sequences_across_batches():
    totals = MetricTotals()
    truth = torch.zeros(3, 2, 1, 4, 4)
    totals.add(torch.full_like(truth, 0.5)[:2], truth[:2])
    totals.add(torch.zeros_like(truth)[2:], truth[2:])
    result = totals.result()
    assert result["sequences"] == 3
    assert result["per_frame"]["mse"] == pytest.approx([16 * 0.25 * 2 / 3] * 2)
    assert result["mse"] == pytest.approx(16 * 0.25 * 2 / 3)
    assert math.isfinite(result["psnr"])


def numpy_ssim_uniform(a: np.ndarray, b: np.ndarray, size=7) -> float:
    """scikit-image's default SSIM written out window by window: a uniform 7×7 window, sample
    (ddof = 1) variances and covariance, L = 1, averaged over the windows that fit the frame
    (skimage filters the whole frame, then crops (size - 1) / 2 pixels off each side)."""
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    values = []
    for i in range(a.shape[0] - size + 1):
        for j in range(a.shape[1] - size + 1):
            x, y = a[i:i + size, j:j + size].ravel(), b[i:i + size, j:j + size].ravel()
            mx, my = x.mean(), y.mean()
            vx, vy = np.var(x, ddof=1), np.var(y, ddof=1)
            cov = np.cov(x, y, ddof=1)[0, 1]
            values.append(((2 * mx * my + c1) * (2 * cov + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


@pytest.mark.parametrize("shape", [(24, 24), (16, 20)])
def test_skimage_convention_matches_an_independent_uniform_window_ssim(shape):
    rng = np.random.default_rng(2)
    truth = rng.random(shape)
    noisy = np.clip(truth + rng.normal(0, 0.2, truth.shape), 0, 1)
    ours = ssim_per_frame(torch.tensor(noisy)[None, None], torch.tensor(truth)[None, None], "skimage").item()
    assert abs(ours - numpy_ssim_uniform(noisy, truth)) < 1e-5
    # and it is a different number from the Gaussian convention's: the switch matters
    assert abs(ours - numpy_ssim(noisy, truth)) > 1e-3


def test_the_convention_is_named_in_every_result():
    for convention in ("gaussian", "skimage"):
        totals = MetricTotals(convention)
        totals.add(torch.zeros(1, 1, 1, 8, 8), torch.zeros(1, 1, 1, 8, 8))
        assert totals.result()["ssim_convention"] == convention
