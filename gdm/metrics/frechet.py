"""Fréchet distance (FID, Heusel et al. 2017) and kernel distance (KID, Bińkowski et al. 2018) between
two feature sets, computed by torchmetrics' own formulas on whole feature matrices.

- `frechet_distance(real, fake)`: the means and covariances exactly as torchmetrics'
  FrechetInceptionDistance accumulates them (float64 sums, unbiased covariance), then its
  `_compute_fid` (||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^1/2), via eigenvalues).
- `kernel_distance(real, fake, subset_size, subsets, seed)`: torchmetrics' KernelInceptionDistance
  protocol (cubic polynomial kernel, unbiased MMD^2 averaged over `subsets` random subsets of
  `subset_size` per side), with the subsets drawn from a seeded generator so the value is reproducible
  and the training run's RNG stream is untouched. Returns (mean, std over subsets).

Features: (N, D) and (M, D) tensors, any float dtype; values in feature units squared.
"""

from __future__ import annotations

import torch
from torchmetrics.image.fid import _compute_fid
from torchmetrics.image.kid import poly_mmd


def gaussian_moments(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and unbiased covariance (D, D) in float64, as torchmetrics' FID computes them."""
    f = features.double()
    n = f.shape[0]
    mean = (f.sum(0) / n).unsqueeze(0)
    cov = (f.t().mm(f) - n * mean.t().mm(mean)) / (n - 1)
    return mean.squeeze(0), cov


def check_sizes(real: torch.Tensor, fake: torch.Tensor, need: int, what: str) -> None:
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"{what}: real features have {real.shape[1]} dimensions, generated {fake.shape[1]}.")
    for side, feats in (("real", real), ("generated", fake)):
        if feats.shape[0] < need:
            raise ValueError(f"{what} needs at least {need} {side} images and got {feats.shape[0]}.")


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID between real (N, D) and generated (M, D) features; N, M >= 2."""
    check_sizes(real, fake, 2, "FID")
    return float(_compute_fid(*gaussian_moments(real), *gaussian_moments(fake)).float())


def kernel_distance(real: torch.Tensor, fake: torch.Tensor, subset_size: int = 1000, subsets: int = 100,
                    seed: int = 0) -> tuple[float, float]:
    """KID (mean, std over subsets); `subset_size` is capped at the smaller set (torchmetrics would refuse)."""
    check_sizes(real, fake, 2, "KID")
    size = min(subset_size, real.shape[0], fake.shape[0])
    generator = torch.Generator().manual_seed(seed)
    scores = []
    for _ in range(subsets):
        f_real = real[torch.randperm(real.shape[0], generator=generator)[:size].to(real.device)]
        f_fake = fake[torch.randperm(fake.shape[0], generator=generator)[:size].to(fake.device)]
        scores.append(poly_mmd(f_real.double(), f_fake.double()))
    scores = torch.stack(scores)
    return float(scores.mean()), float(scores.std(unbiased=False))
