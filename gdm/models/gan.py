"""Generative adversarial network with manual optimization: one optimizer per network.

With `conditional=True` it is a class-conditional GAN: G and D take the labels, fakes
are generated for the labels of the real batch, and samples for metrics draw their labels from the
training split's class frequencies (class-balanced FID), unless labels are given. With `clusters=k` it
conditions on k-means clusters of the training images instead of labels (gdm.models.clusters): the default
run's recipe on the digits (20 clusters; the study: experiments/small_data_gans.md).

Each training batch makes one discriminator update, and every `n_critic`-th batch also one
generator update. Lightning's `global_step` counts optimizer steps, so a batch with both updates
advances it by 2: the Trainer's `max_steps` = 2 x the number of batches when n_critic = 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor, nn

from gdm.errors import GdmError
from gdm.losses import LeCam, get_loss, gradient_penalty, r1_penalty
from gdm.models.adversarial import AdversarialModule, Losses, build_augment
from gdm.models.base import Samples, latent_labels, latent_noise
from gdm.models.clusters import PixelClusters
from gdm.models.ema import EMA, HalfLife, RampUp
from gdm.option_types import (
    AdamBetas,
    ChannelsLast,
    Count,
    Flag,
    GradClip,
    LearningRate,
    LossWeight,
    NonNegativeInt,
    Visuals,
    checked,
)

NetFactory = Callable[..., nn.Module]


class GAN(AdversarialModule, Samples):
    generators, discriminators = ("generator",), ("discriminator",)
    channels_last_on_cpu = True  # DCGAN nets on the CPU: NHWC measured faster (experiments/speed.md)
    optional_state = ("lecam.",)  # LeCam's moving averages: switching it on or off on resume starts / drops them

    # Options with a type here are checked here; `clusters`, `augment_policy`, `ada_*` and `lecam_decay` by the
    # parts that use them (PixelClusters, DiffAugment, ADA, LeCam), and only when those are on.
    @checked
    def __init__(
        self,
        image_shape: tuple[int, int, int],
        generator: NetFactory,
        discriminator: NetFactory,
        num_classes: int | None = None,
        latent_dim: Annotated[Count, Field(description="latent dimensions; DCGAN's 100")] = 100,
        loss: str = "vanilla",
        n_critic: Annotated[Count, Field(
            description="discriminator updates per generator update; 5 in WGAN-GP")] = 1,
        lr_g: Annotated[LearningRate, Field(description="a learning rate, G's Adam; DCGAN's 2e-4")] = 2e-4,
        lr_d: Annotated[LearningRate, Field(description="a learning rate, D's Adam; DCGAN's 2e-4")] = 2e-4,
        betas: AdamBetas = (0.5, 0.999),
        gp_weight: Annotated[LossWeight | None, Field(
            description="gradient-penalty weight; null: the loss's own, 10 for wgan-gp as in Gulrajani et al.")] = None,
        r1_gamma: Annotated[LossWeight, Field(description="R1 penalty gamma, Mescheder et al. 2018; 0: off")] = 0.0,
        lecam_weight: Annotated[LossWeight, Field(
            description="LeCam regularization weight; 0: off, 0.3 in Tseng et al. 2021")] = 0.0,
        lecam_decay: object = 0.99,
        ema_halflife_kimg: Annotated[HalfLife | None, Field(
            description=("half-life of G's EMA in thousands of images (batch x 10 / 32 in StyleGAN2-ADA); "
                         "null: no EMA"))] = None,
        ema_rampup_ratio: RampUp = 0.05,
        channels_last: ChannelsLast = False,
        num_visuals: Visuals = 64,
        visual_seed: NonNegativeInt = 1234,
        conditional: Flag = False,
        clusters: object = None,
        augment: object = None,
        augment_policy: object = "color,translation,cutout",
        ada_target: object = 0.6,
        ada_interval: object = 4,
        ada_kimg: object = 500.0,
        grad_clip: GradClip = None,
    ):
        super().__init__(lr_g, lr_d, betas, grad_clip=grad_clip)
        self.save_hyperparameters(ignore=["generator", "discriminator"])
        self.adversarial = get_loss(loss)
        self.gp_weight = self.adversarial.gradient_penalty_weight if gp_weight is None else gp_weight
        self.latent_dim, self.n_critic, self.r1_gamma = latent_dim, n_critic, r1_gamma
        num_classes = self.set_conditioning(conditional, clusters, num_classes, image_shape)
        classes = {"num_classes": num_classes} if self.conditional else {}
        self.generator = generator(image_shape=image_shape, latent_dim=latent_dim, **classes)
        self.discriminator = discriminator(image_shape=image_shape, **classes)
        # Training-split class frequencies (`set_class_frequencies`): the labels of class-balanced samples.
        self.register_buffer("class_probs", torch.full((num_classes or 1,), 1.0 / (num_classes or 1)))
        self.check_penalty(loss)
        self.lecam_weight = lecam_weight
        self.lecam = LeCam(lecam_decay) if lecam_weight > 0 else None  # its moving averages: in the state dict
        # The EMA copy of G lives in the state dict, so checkpoints keep it.
        self.generator_ema = EMA(self.generator, ema_halflife_kimg, ema_rampup_ratio) if ema_halflife_kimg else None
        # What D sees of real and generated images during training (gdm.augment), None = the images.
        self.augment = build_augment(augment, augment_policy, ada_target, ada_interval, ada_kimg)
        self.set_memory_format(channels_last)

    def upgrade_state(self, state_dict: dict) -> None:
        # G's EMA in checkpoints of older gdm (a fixed decay) kept no count of images: its count of updates stands in,
        # which is all an EMA without a ramp-up (what their ema_decay reads as, gdm.config_upgrades) needs.
        updates = state_dict.get("generator_ema.n_averaged")
        if updates is not None and "generator_ema.images_seen" not in state_dict:
            state_dict["generator_ema.images_seen"] = updates.to(torch.float64)

    def set_conditioning(self, conditional: bool, clusters: object, num_classes: int | None,
                         image_shape: tuple[int, int, int]) -> int | None:
        """Labels from the data (`conditional`), from k-means clusters of the training images (`clusters`), or
        none; returns the number of classes G and D are conditioned on. Raises GdmError for both, or for labels
        the data lacks."""
        if conditional and clusters is not None:
            raise GdmError(f"conditional=true (the data's labels) and clusters={clusters} (k-means "
                           "clusters as labels) exclude each other: set clusters=null, or model=gan.")
        if conditional and not num_classes:
            raise GdmError("model=cgan needs labelled data, and this data has no labels: use data=digits, mnist, "
                           "cifar10, or an image folder with one sub-folder per class.")
        # Self-conditioning (gdm.models.clusters): the labels are the real images' k-means clusters.
        self.clusters = PixelClusters(clusters, image_shape) if clusters is not None else None
        self.conditional = conditional or self.clusters is not None
        self.requires = frozenset({"image", "label"} if conditional else {"image"})
        return clusters if self.clusters is not None else num_classes

    def check_penalty(self, loss: str) -> None:
        """A per-sample gradient penalty (WGAN-GP's, R1) is wrong with batch norm in D: GdmError."""
        penalty = f"loss={loss}" if self.gp_weight > 0 else f"r1_gamma={self.r1_gamma}" if self.r1_gamma > 0 \
            else None
        if penalty and any(isinstance(m, nn.BatchNorm2d) for m in self.discriminator.modules()):
            raise GdmError(f"{penalty} uses a per-sample gradient penalty, which batch norm in the discriminator "
                           "breaks: set norm=layer (or none) in the discriminator.")

    # ---- training -------------------------------------------------------------------------

    def set_class_frequencies(self, counts: torch.Tensor) -> None:
        """Images per class in the training split (num_classes,): the labels of class-balanced samples
        follow them. Kept in the state dict, so a checkpoint samples as trained."""
        self.class_probs.copy_(counts.float() / counts.sum())

    def fit_clusters(self, images: torch.Tensor) -> None:
        """Self-conditioning: k-means on the (N, C, H, W) training images sets the clusters and the
        frequencies fakes draw their cluster with. Called once before training (gdm.tasks.build)."""
        self.set_class_frequencies(self.clusters.fit(images))

    def batch_labels(self, batch: dict, real: Tensor) -> Tensor | None:
        """The labels G and D are conditioned on for a real batch: the data's, the images' clusters, or None."""
        if self.clusters is not None:
            return self.clusters.assign(real)
        return batch["label"] if self.conditional else None

    def g_turn(self, batch_idx: int) -> bool:
        return (batch_idx + 1) % self.n_critic == 0

    def fakes(self, batch: dict, batch_idx: int) -> dict:
        real = batch["image"]
        labels = self.batch_labels(batch, real)
        real = self.to_layout(real)
        z = torch.randn(real.shape[0], self.latent_dim, device=real.device)
        # One G forward per batch: D sees it detached, and on G's turn its graph serves G's update.
        with torch.set_grad_enabled(self.g_turn(batch_idx)):
            fake = self.generator(z, labels)  # fakes for the real batch's labels
        if self.r1_gamma > 0:
            real.requires_grad_(True)  # R1 is the gradient with respect to the images before augmentation
        return {"real": real, "fake": fake, "labels": labels}

    def d_loss(self, real: Tensor, fake: Tensor, labels: Tensor | None) -> Losses:
        """The adversarial loss on real and (detached) fake images, plus the enabled regularizers: the WGAN-GP
        gradient penalty (Gulrajani et al. 2017), R1 (Mescheder et al. 2018), LeCam (Tseng et al. 2021)."""
        # Real and fake batches are augmented independently (each draws its own transforms).
        real_seen, fake_seen = self.d_input(real), self.d_input(fake.detach())
        real_logits = self.discriminator(real_seen, labels)
        fake_logits = self.discriminator(fake_seen, labels)
        adversarial = self.adversarial.d_loss(real_logits, fake_logits)
        total, logs = adversarial, {"d_loss": adversarial}
        if self.gp_weight > 0:
            gp = gradient_penalty(partial(self.discriminator, labels=labels), real_seen, fake_seen)
            total, logs["gp"] = total + self.gp_weight * gp, gp
        if self.r1_gamma > 0:
            r1 = r1_penalty(real_logits, real)
            total, logs["r1"] = total + 0.5 * self.r1_gamma * r1, r1
        if self.lecam is not None:
            lecam = self.lecam(real_logits, fake_logits)
            total, logs["lecam"] = total + self.lecam_weight * lecam, lecam
        logs.update(d_real=real_logits.mean(), d_fake=fake_logits.mean())
        return Losses(total, logs, (real_logits,))

    def g_loss(self, real: Tensor, fake: Tensor, labels: Tensor | None) -> Losses:
        g_loss = self.adversarial.g_loss(self.discriminator(self.d_input(fake), labels))
        return Losses(g_loss, {"g_loss": g_loss})

    def after_g_step(self, batch_images: int) -> None:
        if self.generator_ema is not None:  # G sees n_critic batches' worth of images per update
            self.generator_ema.update(self.generator, batch_images * self.n_critic)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        # The sample-quality metrics (FID) run in the Evaluator at the end of validation; here the
        # discriminator's view of held-out real images tracks its overfitting.
        real = self.to_layout(batch["image"])
        labels = self.batch_labels(batch, real)
        self.log("val/d_real", self.discriminator(real, labels).mean(), on_epoch=True, batch_size=real.shape[0],
                 sync_dist=True)
        if batch_idx == 0:
            self.log_augment_state()

    # ---- sampling -------------------------------------------------------------------------

    @property
    def sampler(self) -> nn.Module:
        """The generator used for samples and metrics: the EMA copy when enabled."""
        return self.generator_ema.module if self.generator_ema is not None else self.generator

    def sample_labels(self, indices: Sequence[int] | torch.Tensor, seed: int = 0) -> torch.Tensor | None:
        """The labels of samples `indices`: class-balanced draws (None when unconditional)."""
        return latent_labels(indices, self.class_probs, seed).to(self.device) if self.conditional else None

    @torch.no_grad()
    def generate(self, indices: Sequence[int] | torch.Tensor, seed: int = 0,
                 labels: torch.Tensor | None = None) -> torch.Tensor:
        """Samples `indices` of the seeded sequence. A conditional model draws class `labels[i]` for
        sample i, e.g. `gan.generate(range(16), labels=torch.full((16,), 3))` gives 16 threes."""
        z = self.to_model(latent_noise(indices, self.latent_dim, seed))
        if self.conditional and labels is None:
            labels = self.sample_labels(indices, seed)
        elif labels is not None:
            labels = torch.as_tensor(labels, device=self.device)
        with self.evaluating(self.sampler) as sampler:
            return sampler(z, labels).float()

    def visuals(self, examples: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, int]]:
        n, seed = self.hparams.num_visuals, self.hparams.visual_seed
        classes, per_row = len(self.class_probs), 8
        if not self.conditional or classes > 20:  # many classes or clusters: a grid of drawn samples
            return {"samples": (self.generate(range(n), seed=seed), int(n**0.5))}
        # one row per class (or cluster), 0 at the top
        labels = torch.arange(classes).repeat_interleave(per_row)
        return {"samples": (self.generate(range(len(labels)), seed=seed, labels=labels), per_row)}
