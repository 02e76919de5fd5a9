"""The papers' video-prediction metrics, per predicted frame: MSE, MAE, SSIM, PSNR.

Conventions (PredRNN, E3D-LSTM and their successors on Moving MNIST, frames in [0, 1]):

- MSE and MAE are per FRAME: the squared (absolute) error summed over the frame's pixels and
  channels, then averaged over sequences. PredRNN's 56.8 "MSE per frame" on 64×64 Moving
  MNIST is this number; the per-pixel mean is it divided by C·H·W.
- SSIM (Wang et al. 2004), K1 = 0.01, K2 = 0.03, data range 1, computed on each frame (each
  channel, then averaged), the mean of the SSIM map over the valid region (no padding),
  averaged over sequences, in one of two conventions (`SSIM_CONVENTIONS`):
    gaussian  Wang et al.'s own: Gaussian window 11×11, σ = 1.5, population moments (the
              default; what the first cellgen runs reported)
    skimage   scikit-image's `structural_similarity` default: a 7×7 uniform window and sample
              covariances (× N/(N-1), N = 49). predrnn-pytorch and OpenSTL call that function,
              so this is the convention of the SSIMs they report (docs/training.md says how
              their calls differ in data range)
  Frames smaller than the window use the largest odd window that fits.
- PSNR per frame with data range 1: 10·log10(1 / per-pixel MSE), averaged over sequences;
  a frame predicted exactly (MSE 0) counts as 100 dB instead of infinity.

Predictions are clipped to [0, 1] first, as the papers' test code does.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

METRICS = ("mse", "mae", "ssim", "psnr")
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03
SKIMAGE_WINDOW = 7
SSIM_CONVENTIONS = {
    "gaussian": "ssim gaussian 11x11 sigma 1.5, data range 1 (Wang et al. 2004)",
    "skimage": "ssim uniform 7x7 with sample covariance, data range 1 (scikit-image default, as predrnn-pytorch "
               "and OpenSTL)",
}
PSNR_CAP = 100.0


def describe_conventions(ssim: str = "gaussian") -> str:
    """The metric conventions in one line, as every metrics file names them."""
    return ("mse and mae are per frame (summed over pixels, averaged over sequences); "
            f"{SSIM_CONVENTIONS[ssim]}; psnr with data range 1; predictions clipped to [0, 1]")


def check_ssim_convention(name: str) -> str:
    if name not in SSIM_CONVENTIONS:
        from cellgen.errors import CellgenError

        raise CellgenError(f"unknown SSIM convention `{name}`", hint=f"choose one of {', '.join(SSIM_CONVENTIONS)}")
    return name


def gaussian_kernel(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """(size,) weights summing to 1; the 2D window is its outer product with itself."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords ** 2) / (2 * sigma ** 2))
    return (g / g.sum()).to(torch.float32)


def window_matrix(length: int, taps: torch.Tensor) -> torch.Tensor:
    """(length - size + 1, length) banded matrix whose row i holds `taps` from column i: a valid
    1D correlation with `taps` along an axis of `length` is a product with it."""
    size = taps.numel()
    rows = torch.arange(length - size + 1)
    matrix = torch.zeros(length - size + 1, length)
    matrix[rows[:, None], rows[:, None] + torch.arange(size)] = taps
    return matrix


def ssim_per_frame(prediction: torch.Tensor, truth: torch.Tensor, convention: str = "gaussian") -> torch.Tensor:
    """(…, C, H, W) pairs → (…) SSIM of each frame (mean over channels and the valid map).

    Both windows are separable, so a local mean is a valid correlation down the rows and one
    along the columns, each written as a product with a banded matrix (`window_matrix`), in
    float32. Why not `conv2d`: the maps have one channel, where a convolution runs at a few
    percent of the machine's speed; the five local moments (means, variances, covariance)
    stacked through two batched matrix products cost a fifth of five pairs of 1-channel convs.
    """
    lead = prediction.shape[:-3]
    channels, height, width = prediction.shape[-3:]
    largest = SSIM_WINDOW if convention == "gaussian" else SKIMAGE_WINDOW
    size = min(largest, height if height % 2 else height - 1, width if width % 2 else width - 1)
    g = gaussian_kernel(size) if convention == "gaussian" else torch.full((size,), 1.0 / size)
    # scikit-image scales the local (co)variances by N/(N-1), N the window's pixels
    unbiased = 1.0 if convention == "gaussian" else size * size / (size * size - 1)
    x = prediction.reshape(-1, height, width).to(torch.float32)
    y = truth.reshape(-1, height, width).to(torch.float32)
    moments = torch.stack([x, y, x * x, y * y, x * y])
    mu_x, mu_y, xx, yy, xy = window_matrix(height, g) @ moments @ window_matrix(width, g).T
    var_x = (xx - mu_x ** 2) * unbiased
    var_y = (yy - mu_y ** 2) * unbiased
    cov = (xy - mu_x * mu_y) * unbiased
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    per_channel = ssim_map.mean(dim=(1, 2))
    return per_channel.reshape(*lead, channels).mean(-1)


def frame_metrics(prediction: torch.Tensor, truth: torch.Tensor, ssim: str = "gaussian") -> dict[str, torch.Tensor]:
    """(N, T, C, H, W) pairs → {metric: (N, T)} per sequence and frame."""
    prediction = prediction.detach().float().clamp(0.0, 1.0)
    truth = truth.detach().float()
    error = prediction - truth
    pixels = error[0, 0].numel()
    squared = (error ** 2).flatten(2).sum(-1)
    per_pixel = (squared / pixels).clamp_min(10 ** (-PSNR_CAP / 10))
    return {
        "mse": squared,
        "mae": error.abs().flatten(2).sum(-1),
        "ssim": ssim_per_frame(prediction, truth, ssim),
        "psnr": 10 * torch.log10(1.0 / per_pixel),
    }


@dataclass
class MetricTotals:
    """Sums of per-frame metrics over sequences, so that batches can be added up."""

    ssim: str = "gaussian"          # the SSIM convention (SSIM_CONVENTIONS)
    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    sequences: int = 0

    def add(self, prediction: torch.Tensor, truth: torch.Tensor) -> None:
        for name, values in frame_metrics(prediction, truth, self.ssim).items():
            total = values.double().sum(0)
            self.sums[name] = self.sums[name] + total if name in self.sums else total
        self.sequences += prediction.shape[0]

    def result(self) -> dict:
        """{"mse": mean over frames, …, "per_frame": {"mse": [frame 1, …], …}, "sequences": N}."""
        if not self.sequences:
            raise ValueError("no sequences were measured")
        per_frame = {name: [round(float(v), 6) for v in self.sums[name] / self.sequences] for name in METRICS}
        summary = {name: round(sum(values) / len(values), 6) for name, values in per_frame.items()}
        return {**summary, "per_frame": per_frame, "sequences": self.sequences, "ssim_convention": self.ssim}

