"""The code space of a trained gdm AE or VAE, in which a diffusion or flow model can train and sample (a latent
diffusion / latent flow model, Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models").

The autoencoder is frozen (no gradients, always in eval mode) and travels inside the latent model's checkpoint.
Codes are the encoder's deterministic code (the VAE's posterior mean) times one scale factor, 1 / std of the codes
of the training split, so the diffusion or flow model sees data of unit variance whatever the autoencoder's KL
weight (Rombach et al.'s scale factor, computed over the whole training split rather than their first batch).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from gdm.models.autoencoder import AutoencoderModule


class LatentSpace(nn.Module):
    """Codes (N, latent_dim) <-> images (N, C, H, W) in [-1, 1] through a frozen `autoencoder`; `path` is the
    checkpoint it came from (recorded in the protocol)."""

    def __init__(self, autoencoder: AutoencoderModule, path: str):
        super().__init__()
        self.autoencoder = autoencoder.requires_grad_(False)
        self.path = str(path)
        self.shape = (autoencoder.latent_dim,)
        self.register_buffer("scale", torch.ones((), dtype=torch.float32))  # kept in the checkpoint
        self.train(False)

    def train(self, mode: bool = True) -> LatentSpace:
        """Always eval: Lightning switching the whole module to training must not switch the frozen autoencoder."""
        return super().train(False)

    @torch.no_grad()
    def fit_scale(self, images: Iterable[Tensor]) -> float:
        """Set the scale to 1 / std of the codes of `images` (batches (N, C, H, W) in [-1, 1]) over all their
        entries; returns it."""
        codes = torch.cat([self.autoencoder.encode(x.to(self.scale.device)).float() for x in images])
        self.scale.fill_(1.0 / codes.std().clamp_min(1e-8).item())
        return float(self.scale)

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Images (N, C, H, W) in [-1, 1] -> scaled codes (N, latent_dim)."""
        return self.autoencoder.encode(images).float() * self.scale

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """Scaled codes (N, latent_dim) -> the decoder's mean images (N, C, H, W) in [-1, 1]."""
        return self.autoencoder.decode(codes / self.scale)

    @torch.no_grad()
    def reconstruct(self, images: Tensor) -> Tensor:
        """The autoencoder's reconstructions of `images` (N, C, H, W) in [-1, 1]: what a perfect latent model of
        these images would decode to."""
        return self.decode(self.encode(images))

    def protocol(self) -> dict:
        return {"autoencoder": self.path, "family": type(self.autoencoder).__name__,
                "latent_dim": self.shape[0], "scale": float(self.scale)}
