"""Deterministic autoencoder, trained on the reconstruction negative log-likelihood.

To generate, it samples its latent space from a full-covariance Gaussian fitted to the codes of
the training split (refitted at the start of every validation, so samples and FID always use the
current encoder) and decodes the samples, as in Ghosh et al. 2020 ("From variational to
deterministic autoencoders", ex-post density estimation with one Gaussian).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated

import torch
from pydantic import Field

from gdm.models.autoencoder import AutoencoderModule
from gdm.models.base import latent_noise
from gdm.option_types import Count, LearningRate, NonNegativeInt, checked


class AE(AutoencoderModule):
    @checked
    def __init__(self, image_shape: tuple[int, int, int], num_classes: int | None = None,
                 latent_dim: Annotated[Count, Field(description="latent dimensions")] = 16,
                 width: Annotated[Count, Field(description="channels at full resolution")] = 32,
                 likelihood: str = "gaussian", likelihood_std: object = 0.1, lr: LearningRate = 1e-3,
                 num_visuals: Annotated[Count, Field(description="samples in the logged grid")] = 64,
                 visual_seed: NonNegativeInt = 1234):
        super().__init__(image_shape, latent_dim, width, likelihood, likelihood_std, lr,
                         encoder_outputs=latent_dim, num_visuals=num_visuals, visual_seed=visual_seed)
        self.save_hyperparameters()
        # The fitted latent Gaussian lives in the state dict, so a checkpoint generates as trained.
        self.register_buffer("latent_mean", torch.zeros(latent_dim))
        self.register_buffer("latent_scale_tril", torch.eye(latent_dim))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)

    def recon_nll(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        params = self.decoder(self.encoder(images))
        return -self.likelihood.log_prob(self.likelihood.targets(images), params), params

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        nll, _ = self.recon_nll(batch["image"])
        loss = nll.mean()
        self.log("train/recon", loss.detach())
        return loss if self.loss_ok("recon", loss) else None  # None: Lightning skips the update

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        images = batch["image"]
        nll, params = self.recon_nll(images)
        mse = (self.likelihood.mean(params) - (images + 1) / 2).pow(2).mean()
        self.log_dict({"val/recon": nll.mean(), "val/mse": mse}, batch_size=images.shape[0], sync_dist=True)

    @torch.no_grad()
    def prepare_sampling(self, train_batches: Iterable[dict]) -> None:
        """Refit the latent Gaussian to the codes of the whole training split (every DDP process fits it
        on all of it, so the samples do not depend on the number of processes)."""
        self.fit_latent_gaussian(train_batches)

    @torch.no_grad()
    def fit_latent_gaussian(self, loader: Iterable[dict]) -> None:
        total = torch.zeros((), device=self.device, dtype=torch.float64)
        s1 = torch.zeros(self.latent_dim, device=self.device, dtype=torch.float64)
        s2 = torch.zeros(self.latent_dim, self.latent_dim, device=self.device, dtype=torch.float64)
        for batch in loader:
            z = self.encode(self.to_model(batch["image"])).double()
            total += z.shape[0]
            s1 += z.sum(0)
            s2 += z.T @ z
        mean = s1 / total
        cov = (s2 - total * torch.outer(mean, mean)) / (total - 1)
        cov += 1e-6 * torch.eye(self.latent_dim, device=cov.device, dtype=cov.dtype)
        self.latent_mean.copy_(mean.float())
        self.latent_scale_tril.copy_(torch.linalg.cholesky(cov).float())

    @torch.no_grad()
    def generate(self, indices: Sequence[int] | torch.Tensor, seed: int = 0,
                 labels: torch.Tensor | None = None) -> torch.Tensor:
        eps = self.to_model(latent_noise(indices, self.latent_dim, seed))
        return self.decode(self.latent_mean + eps @ self.latent_scale_tril.T)
