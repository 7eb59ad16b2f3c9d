"""Variational autoencoder (Kingma & Welling 2014): diagonal Gaussian posterior, standard normal
prior, reparameterized sampling, analytic KL. Validation and test report, per image, the ELBO, its
reconstruction (negative log-likelihood) and KL terms in nats, and -ELBO in bits per dimension;
the test also reports the importance-weighted NLL estimate (IWAE bound, Burda et al. 2016), which is
never looser than -ELBO. With the Gaussian likelihood that bound is also logged as test/nll_bpd, the column
the flow and EDM models' likelihoods share (`gdm.models.iterative`).

`beta` weighs the KL term in the training loss (beta-VAE, Higgins et al. 2017), ramped linearly
from 0 over `kl_warmup_steps` batches; reported ELBOs always use beta = 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated

import torch
from pydantic import Field

from gdm.likelihoods import DEQUANTIZATION, Gaussian
from gdm.models.autoencoder import AutoencoderModule
from gdm.models.base import latent_noise
from gdm.option_types import Count, LearningRate, LossWeight, NonNegativeInt, checked

LOG_2PI = math.log(2 * math.pi)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per row, in nats."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)


def diag_gaussian_log_prob(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((z - mu).pow(2) * torch.exp(-logvar) + logvar + LOG_2PI).sum(-1)


class VAE(AutoencoderModule):
    @checked
    def __init__(self, image_shape: tuple[int, int, int], num_classes: int | None = None,
                 latent_dim: Annotated[Count, Field(description="latent dimensions")] = 16,
                 width: Annotated[Count, Field(description="channels at full resolution")] = 32,
                 likelihood: str = "gaussian", likelihood_std: object = None,
                 beta: Annotated[LossWeight, Field(description=(
                     "the KL weight in training; 1: the ELBO, other values Higgins et al. 2017's beta-VAE"))] = 1.0,
                 kl_warmup_steps: Annotated[NonNegativeInt, Field(description="batches of KL-weight ramp")] = 0,
                 lr: LearningRate = 1e-3,
                 iwae_k: Annotated[Count, Field(
                     description="importance samples per image, 5000 in Burda et al.")] = 100,
                 iwae_chunk: Annotated[Count, Field(description="decoder batch of the IWAE estimate")] = 2048,
                 num_visuals: Annotated[Count, Field(description="samples in the logged grid")] = 64,
                 visual_seed: NonNegativeInt = 1234):
        super().__init__(image_shape, latent_dim, width, likelihood, likelihood_std, lr,
                         encoder_outputs=2 * latent_dim, num_visuals=num_visuals, visual_seed=visual_seed)
        self.save_hyperparameters()
        self.beta, self.kl_warmup_steps = beta, kl_warmup_steps
        self.iwae_k, self.iwae_chunk = iwae_k, iwae_chunk

    def posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(images).chunk(2, dim=1)
        return mu, logvar.clamp(-30, 20)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.posterior(images)[0]

    def elbo_terms(self, images: torch.Tensor, targets: torch.Tensor | None = None):
        """Per image: log p(x|z) for one reparameterized z ~ q(z|x), and the analytic KL."""
        targets = self.likelihood.targets(images) if targets is None else targets
        mu, logvar = self.posterior(images)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return self.likelihood.log_prob(targets, self.decoder(z)), gaussian_kl(mu, logvar)

    def kl_weight(self) -> float:
        if self.kl_warmup_steps <= 0:
            return self.beta
        return self.beta * min(1.0, self.global_step / self.kl_warmup_steps)

    @torch.no_grad()
    def iwae_log_likelihood(self, images: torch.Tensor, k: int, targets: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x) >= log (1/k) sum_i p(x, z_i) / q(z_i | x), z_i ~ q(z | x); per image, in nats."""
        targets = self.likelihood.targets(images) if targets is None else targets
        mu, logvar = self.posterior(images)
        std = torch.exp(0.5 * logvar)
        batch = images.shape[0]
        per_chunk = max(1, self.iwae_chunk // batch)
        log_w = []
        for start in range(0, k, per_chunk):
            ks = min(per_chunk, k - start)
            z = mu[:, None] + std[:, None] * torch.randn(batch, ks, self.latent_dim, device=mu.device)
            log_q = diag_gaussian_log_prob(z, mu[:, None], logvar[:, None])
            log_prior = -0.5 * (z.pow(2) + LOG_2PI).sum(-1)
            params = self.decoder(z.flatten(0, 1))
            log_px = self.likelihood.log_prob(targets.repeat_interleave(ks, 0), params).view(batch, ks)
            log_w.append(log_px + log_prior - log_q)
        return torch.logsumexp(torch.cat(log_w, 1), dim=1) - math.log(k)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        log_px, kl = self.elbo_terms(batch["image"])
        weight = self.kl_weight()
        loss = (-log_px + weight * kl).mean()
        self.log_dict({"train/loss": loss.detach(), "train/elbo": (log_px - kl).mean().detach(),
                       "train/kl": kl.mean().detach(), "train/kl_weight": weight})
        return loss if self.loss_ok("loss", loss) else None  # None: Lightning skips the update

    def _log_elbo(self, stage: str, log_px: torch.Tensor, kl: torch.Tensor) -> None:
        elbo = log_px - kl
        n = log_px.shape[0]
        self.log_dict({f"{stage}/elbo": elbo.mean(), f"{stage}/recon": -log_px.mean(), f"{stage}/kl": kl.mean(),
                       f"{stage}/bpd": -elbo.mean() / (self.num_pixels * math.log(2))}, batch_size=n, sync_dist=True)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._log_elbo("val", *self.elbo_terms(batch["image"]))

    def test_protocol(self) -> dict:
        """How the test values are computed: the `estimator` (the model's own way to its likelihood, which
        `task=compare` sets beside another's, as a sampler) and, for the Gaussian, the images' dequantization (the
        flow's and EDM's: test/nll_bpd shares their table)."""
        protocol = {"estimator": {"method": f"ELBO and IWAE bound (Burda et al. 2016), k={self.iwae_k}",
                                  "likelihood": type(self.likelihood).__name__.lower()}}
        if isinstance(self.likelihood, Gaussian):
            protocol["dequantization"] = DEQUANTIZATION
        return protocol

    def test_step(self, batch: dict, batch_idx: int) -> None:
        images = batch["image"]
        targets = self.likelihood.targets(images)  # one dequantization for both bounds
        self._log_elbo("test", *self.elbo_terms(images, targets))
        nll = -self.iwae_log_likelihood(images, self.iwae_k, targets)
        bpd = nll.mean() / (self.num_pixels * math.log(2))
        values = {"test/nll_iwae": nll.mean(), "test/nll_iwae_bpd": bpd}
        if isinstance(self.likelihood, Gaussian):
            # a bound on the 8-bit images' NLL (dequantized), under the name the flow and EDM models report theirs,
            # so task=compare puts them in one column; the Bernoulli criterion is no likelihood of the 8-bit images
            values["test/nll_bpd"] = bpd
        self.log_dict(values, batch_size=images.shape[0], sync_dist=True)

    @torch.no_grad()
    def generate(self, indices: Sequence[int] | torch.Tensor, seed: int = 0,
                 labels: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder means at prior samples z_i ~ N(0, I)."""
        return self.decode(self.to_model(latent_noise(indices, self.latent_dim, seed)))
