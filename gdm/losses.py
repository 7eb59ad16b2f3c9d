"""Adversarial losses and penalties.

Each loss is a pair of functions on discriminator logits: `d_loss(real_logits, fake_logits)` and
`g_loss(fake_logits)`, by name (`get_loss`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, Strict
from torch import nn

from gdm.option_types import checked

Tensor = torch.Tensor


@dataclass(frozen=True)
class AdversarialLoss:
    d_loss: Callable[[Tensor, Tensor], Tensor]
    g_loss: Callable[[Tensor], Tensor]
    gradient_penalty_weight: float = 0.0  # WGAN-GP's lambda; 0 for the others


def _vanilla_d(real: Tensor, fake: Tensor) -> Tensor:
    return F.softplus(-real).mean() + F.softplus(fake).mean()  # BCE(real, 1) + BCE(fake, 0)


def _vanilla_g(fake: Tensor) -> Tensor:
    return F.softplus(-fake).mean()  # non-saturating: maximise log D(G(z))


def _lsgan_d(real: Tensor, fake: Tensor) -> Tensor:
    return 0.5 * ((real - 1).pow(2).mean() + fake.pow(2).mean())


def _lsgan_g(fake: Tensor) -> Tensor:
    return 0.5 * (fake - 1).pow(2).mean()


def _hinge_d(real: Tensor, fake: Tensor) -> Tensor:
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def _wasserstein_d(real: Tensor, fake: Tensor) -> Tensor:
    return fake.mean() - real.mean()


def _wasserstein_g(fake: Tensor) -> Tensor:
    return -fake.mean()


LOSSES: dict[str, AdversarialLoss] = {
    "vanilla": AdversarialLoss(_vanilla_d, _vanilla_g),
    "lsgan": AdversarialLoss(_lsgan_d, _lsgan_g),
    "hinge": AdversarialLoss(_hinge_d, _wasserstein_g),  # the hinge G loss is -D(G(z))
    "wgan-gp": AdversarialLoss(_wasserstein_d, _wasserstein_g, gradient_penalty_weight=10.0),
}


@checked
def get_loss(loss: Annotated[Literal["vanilla", "lsgan", "hinge", "wgan-gp"], Field(
        description="the adversarial loss; vanilla: the non-saturating loss of Goodfellow et al. 2014")],
             ) -> AdversarialLoss:
    """The loss pair named `loss` (a ValidationError naming it for another name)."""
    return LOSSES[loss]


def gradient_penalty(discriminator: Callable[[Tensor], Tensor] | nn.Module, real: Tensor, fake: Tensor) -> Tensor:
    """WGAN-GP (Gulrajani et al. 2017): E[(||grad D(x_hat)||_2 - 1)^2] on real/fake interpolates."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1).pow(2).mean()


def r1_penalty(real_logits: Tensor, real: Tensor) -> Tensor:
    """R1 (Mescheder et al. 2018): E[||grad D(x)||^2] on real data; the caller scales it by gamma / 2.

    `real` must have had requires_grad set before `real_logits` were computed from it.
    """
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    return grad.flatten(1).pow(2).sum(dim=1).mean()


class LeCam(nn.Module):
    """LeCam regularization of the discriminator (Tseng et al. 2021, "Regularizing Generative Adversarial
    Networks under Limited Data"; google/lecam-gan):

        R_LC = E[relu(D(x) - a_F)^2] + E[relu(a_R - D(G(z)))^2]

    where a_R and a_F are exponential moving averages of D's mean logit on real and on generated images
    (decay 0.99 and zero-debiased, as the reference's TF code). It keeps D's outputs from drifting apart
    on a small training set; the D loss adds lambda * R_LC (the paper: 0.3 for BigGAN on limited CIFAR).
    The averages are buffers, so checkpoints keep them (exact resume); updating them reads nothing back to
    the host. The debiasing divides by the averages' accumulated weight, so a run resumed with another
    decay stays debiased. Under DDP the buffers follow rank 0 (DDP broadcasts buffers before each forward):
    every process regularizes against rank 0's history plus its own batch.

    `lecam_decay` outside (0, 1) raises a ValidationError naming it.
    """

    @checked
    def __init__(self, lecam_decay: Annotated[float, Strict(), Field(gt=0, lt=1, allow_inf_nan=False, description=(
            "the decay per batch of the moving averages of D's outputs; 0.99 in the paper"))] = 0.99):
        super().__init__()
        self.decay = lecam_decay
        self.register_buffer("anchors", torch.zeros(2))  # biased EMAs of mean D(real), mean D(fake)
        self.register_buffer("weight", torch.zeros(()))  # their accumulated weight: 1 - decay^updates

    def forward(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        """R_LC for D's logits on this batch's real (B,) and generated (B,) images (any shape; averaged),
        after adding their means to the moving averages. A scalar >= 0."""
        with torch.no_grad():
            means = torch.stack([real_logits.detach().float().mean(), fake_logits.detach().float().mean()])
            self.anchors.lerp_(means, 1 - self.decay)
            self.weight.lerp_(torch.ones_like(self.weight), 1 - self.decay)
            anchor_real, anchor_fake = self.anchors / self.weight
        return F.relu(real_logits - anchor_fake).pow(2).mean() + F.relu(anchor_real - fake_logits).pow(2).mean()


def _lsgan_target(logits: Tensor, real: bool) -> Tensor:
    return (logits - 1).pow(2).mean() if real else logits.pow(2).mean()  # MSE to 1 or 0


def _vanilla_target(logits: Tensor, real: bool) -> Tensor:
    return F.softplus(-logits).mean() if real else F.softplus(logits).mean()  # BCE to 1 or 0


# CycleGAN / pix2pix's `GANLoss`: a criterion between logits and an all-real or all-fake target. Their D
# loss is 0.5 * (c(real, True) + c(fake, False)) and their G loss c(fake, True), without the 1/2 of
# `LOSSES["lsgan"].g_loss`: the cycle weight lambda = 10 is balanced against this scale.
TARGET_LOSSES: dict[str, Callable[[Tensor, bool], Tensor]] = {"lsgan": _lsgan_target, "vanilla": _vanilla_target}


@checked
def get_target_loss(loss: Annotated[Literal["lsgan", "vanilla"], Field(
        description="the criterion against all-real or all-fake targets; lsgan in CycleGAN, vanilla in pix2pix")],
                    ) -> Callable[[Tensor, bool], Tensor]:
    """The criterion named `loss` (a ValidationError naming it for another name)."""
    return TARGET_LOSSES[loss]
