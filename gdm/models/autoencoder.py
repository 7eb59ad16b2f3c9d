"""What the AE and the VAE share: conv encoder/decoder, likelihood, optimizer, and image grids of
reconstructions, samples and latent interpolations."""

from __future__ import annotations

import math

import torch

from gdm.likelihoods import build_likelihood
from gdm.models.base import GenerativeModule
from gdm.models.capabilities import Samples
from gdm.nets.conv_autoencoder import ConvDecoder, ConvEncoder
from gdm.option_types import Count, LearningRate, checked


class AutoencoderModule(GenerativeModule, Samples):
    @checked
    def __init__(self, image_shape: tuple[int, int, int], latent_dim: Count, width: Count, likelihood: str,
                 likelihood_std: object, lr: LearningRate, encoder_outputs: int, num_visuals: Count,
                 visual_seed: int):
        super().__init__()
        self.latent_dim, self.lr = latent_dim, lr
        self.num_visuals, self.visual_seed = num_visuals, visual_seed
        self.num_pixels = math.prod(image_shape)
        self.likelihood = build_likelihood(likelihood, likelihood_std)
        self.encoder = ConvEncoder(image_shape, encoder_outputs, width)
        self.decoder = ConvDecoder(image_shape, latent_dim, width, self.likelihood.params_per_channel)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The deterministic code of each image (the posterior mean for the VAE)."""
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Codes -> the decoder's mean image in [-1, 1]."""
        return self.likelihood.mean(self.decoder(self.to_model(z))).float() * 2 - 1

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    @torch.no_grad()
    def visuals(self, examples: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, int]]:
        n = self.num_visuals
        grids = {"samples": (self.generate(range(n), seed=self.visual_seed), int(n**0.5))}
        x = examples.get("val")
        x = self.to_model(x[:32]) if x is not None else None
        if x is not None and len(x) >= 2:
            recon = self.decode(self.encode(x))
            grids["reconstructions"] = (torch.stack([x, recon], 1).flatten(0, 1), 8)  # input | reconstruction
            pairs = min(8, len(x) // 2)
            z_a, z_b = self.encode(x[0:2 * pairs:2]), self.encode(x[1:2 * pairs:2])
            t = torch.linspace(0, 1, 8, device=x.device).view(1, 8, 1)
            z = z_a[:, None] * (1 - t) + z_b[:, None] * t  # row i: from input 2i to input 2i+1
            grids["interpolations"] = (self.decode(z.flatten(0, 1)), 8)
        return grids
