"""Decoder likelihoods p(x | z) for 8-bit images, as per-image log-probabilities in nats.

Images arrive in [-1, 1] on the 8-bit grid (k / 127.5 - 1). Each likelihood works on pixels in
[0, 1] and reports log p(x | z) so that -log p is a negative log-likelihood *of the 8-bit image*:

- `gaussian` (continuous): pixels are uniformly dequantized, y = (k + u) / 256 with u ~ U(0, 1), and
  log P(k) >= E_u[log p(y)] - D log 256 (Theis et al. 2016), so the reported figures are bounds on the
  discrete likelihood, comparable across models and with bits/dim in the literature. The variance is
  fixed (`std`) or learned per pixel (decoder emits mean and log-variance).
- `bernoulli`: the pixel intensity in [0, 1] is the Bernoulli target (binary cross-entropy). For
  grey-level data this is not a normalised likelihood, so its "NLL" is a training criterion only.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from gdm.option_types import checked

LOG_256 = math.log(256.0)
# How the continuous likelihoods (the Gaussian VAE's, the flow's and EDM's) see the 8-bit images, in their protocols.
DEQUANTIZATION = "uniform: y = (k + u) / 256, u ~ U[0, 1)"
Std = Annotated[float | None, Field(gt=0, allow_inf_nan=False, strict=True, description=(
    "a fixed std of the Gaussian on [0, 1] pixels; null: the variance is learned"))]


def pixel_levels(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images on the 8-bit grid -> integer levels 0..255 (as floats)."""
    return ((images + 1) * 127.5).round().clamp(0, 255)


class Bernoulli:
    params_per_channel = 1

    def targets(self, images: torch.Tensor) -> torch.Tensor:
        return pixel_levels(images) / 255.0

    def log_prob(self, targets: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return -F.binary_cross_entropy_with_logits(params, targets, reduction="none").flatten(1).sum(1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params)


class Gaussian:
    """Per-pixel Gaussian on dequantized [0, 1] pixels; `std=None` learns a log-variance per pixel."""

    LOGVAR_RANGE = (-10.0, 2.0)  # keeps the learned variance finite; sd from 0.0067 to 2.7

    def __init__(self, std: float | None = None):
        self.std = std
        self.params_per_channel = 1 if std is not None else 2

    def targets(self, images: torch.Tensor) -> torch.Tensor:
        return (pixel_levels(images) + torch.rand_like(images)) / 256.0

    def split(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.std is not None:
            return params, torch.full_like(params, 2 * math.log(self.std))
        mean, logvar = params.chunk(2, dim=1)
        return mean, logvar.clamp(*self.LOGVAR_RANGE)

    def log_prob(self, targets: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        mean, logvar = self.split(params)
        log_density = -0.5 * ((targets - mean) ** 2 * torch.exp(-logvar) + logvar + math.log(2 * math.pi))
        # density of the dequantized pixel in [0, 1] -> bound on the probability of its 8-bit level
        return log_density.flatten(1).sum(1) - LOG_256 * targets[0].numel()

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return self.split(params)[0].clamp(0, 1)


@checked
def _gaussian(likelihood_std: Std = None) -> Gaussian:
    return Gaussian(likelihood_std)


@checked
def build_likelihood(likelihood: Annotated[Literal["bernoulli", "gaussian"], Field(
        description="the decoder's pixel likelihood")], likelihood_std: object = None) -> Bernoulli | Gaussian:
    """The likelihood named `likelihood`; `likelihood_std` only matters, and is only checked, for gaussian
    (a ValidationError naming the parameter)."""
    return _gaussian(likelihood_std) if likelihood == "gaussian" else Bernoulli()
