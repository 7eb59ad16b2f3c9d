"""CycleGAN (Zhu et al. 2017): unpaired translation between domains A and B with cycle consistency.

Two generators (`g_ab`: A -> B, `g_ba`: B -> A) and two discriminators, named by the domain they judge
(`d_b` tells real B from `g_ab`'s fakes, `d_a` real A from `g_ba`'s). Manual optimization with the
reference code's two optimizers: one Adam over both generators, one over both discriminators, each
with a constant-then-linear-decay learning rate stepped once per epoch. Per batch, as in the reference:
1. generators:  adversarial c(D(fake), real) for both directions
                + lambda_a |g_ba(g_ab(a)) - a| + lambda_b |g_ab(g_ba(b)) - b|           (cycle, L1)
                + lambda_identity * (lambda_b |g_ab(b) - b| + lambda_a |g_ba(a) - a|)   (identity, L1)
2. discriminators: 0.5 (c(D(real), real) + c(D(pool(fake)), fake)) each, the fakes drawn from a
   history pool of past fakes.

With per-sample normalization (instance norm, the default) a generator applied to two inputs runs
them as one batch: the same result as two calls, in fewer, larger convolutions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from gdm.errors import GdmError
from gdm.losses import get_target_loss
from gdm.models.adversarial import AdversarialModule, Losses, build_augment
from gdm.models.base import DIRECTIONS, REVERSE, Translates
from gdm.models.image_pool import ImagePool
from gdm.option_types import (
    AdamBetas,
    ChannelsLast,
    EpochsAtLr,
    EpochsDecay,
    GradClip,
    LearningRate,
    LossWeight,
    NonNegativeInt,
    Visuals,
    checked,
)

NetFactory = Callable[..., nn.Module]


class CycleGAN(AdversarialModule, Translates):
    generators, discriminators = ("g_ab", "g_ba"), ("d_a", "d_b")
    g_first = True  # the reference's optimize_parameters: G's update, then D's on pooled fakes
    requires = frozenset({"image_a", "image_b"})
    directions, reverse = DIRECTIONS, REVERSE
    size_multiple = 4  # the ResNet generator's two stride-2 stages

    # `loss`, `augment*` and `ada_*` are checked by the parts that use them (get_target_loss, build_augment).
    @checked
    def __init__(
        self,
        image_shape: tuple[int, int, int],
        generator: NetFactory,
        discriminator: NetFactory,
        num_classes: int | None = None,
        loss: str = "lsgan",
        lambda_a: Annotated[LossWeight, Field(description="cycle weight A -> B -> A; 10 in the paper")] = 10.0,
        lambda_b: Annotated[LossWeight, Field(description="cycle weight B -> A -> B; 10 in the paper")] = 10.0,
        lambda_identity: Annotated[LossWeight, Field(
            description="identity weight relative to the cycle weights; 0.5 in the reference code, 0: off")] = 0.5,
        pool_size: Annotated[NonNegativeInt, Field(
            description="past fakes the discriminators train on; 50 in the paper, 0: no pool")] = 50,
        lr: Annotated[LearningRate, Field(
            description="a learning rate, of both Adams; CycleGAN's 2e-4")] = 2e-4,
        betas: AdamBetas = (0.5, 0.999),
        n_epochs: EpochsAtLr = 100,
        n_epochs_decay: EpochsDecay = 100,
        channels_last: ChannelsLast = False,
        num_visuals: Visuals = 8,
        augment: object = None,
        augment_policy: object = "color,translation,cutout",
        ada_target: object = 0.6,
        ada_interval: object = 4,
        ada_kimg: object = 500.0,
        grad_clip: GradClip = None,
    ):
        super().__init__(lr, lr, betas, decay_epochs=(n_epochs, n_epochs_decay), grad_clip=grad_clip)
        self.save_hyperparameters(ignore=["generator", "discriminator"])
        self.criterion = get_target_loss(loss)
        self.g_ab, self.g_ba = generator(image_shape=image_shape), generator(image_shape=image_shape)
        self.d_a, self.d_b = discriminator(image_shape=image_shape), discriminator(image_shape=image_shape)
        self.pool_a, self.pool_b = ImagePool(pool_size, image_shape), ImagePool(pool_size, image_shape)
        # What both discriminators see of real and generated images (gdm.augment): one p for the pair.
        self.augment = build_augment(augment, augment_policy, ada_target, ada_interval, ada_kimg)
        # Batch norm mixes the samples of a batch, so only per-sample norms may share a call.
        self.fuse = not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.modules())
        self.set_memory_format(channels_last)

    # ---- training -------------------------------------------------------------------------

    def _fused(self, net: nn.Module, *inputs: Tensor) -> tuple[Tensor, ...]:
        if self.fuse and len(inputs) > 1:
            return net(torch.cat(inputs)).split([x.shape[0] for x in inputs])
        return tuple(net(x) for x in inputs)

    def fakes(self, batch: dict, batch_idx: int) -> dict:
        real_a, real_b = self.to_layout(batch["image_a"]), self.to_layout(batch["image_b"])
        identity = self.hparams.lambda_identity > 0
        # A generator's identity input (the other domain's real image) shares its first call.
        fake_b, *idt_b = self._fused(self.g_ab, real_a, *([real_b] if identity else []))
        fake_a, *idt_a = self._fused(self.g_ba, real_b, *([real_a] if identity else []))
        rec_a, rec_b = self.g_ba(fake_b), self.g_ab(fake_a)
        return {"real_a": real_a, "real_b": real_b, "fake_a": fake_a, "fake_b": fake_b, "rec_a": rec_a,
                "rec_b": rec_b, "idt_a": idt_a[0] if identity else None, "idt_b": idt_b[0] if identity else None}

    def g_loss(self, real_a: Tensor, real_b: Tensor, fake_a: Tensor, fake_b: Tensor, rec_a: Tensor, rec_b: Tensor,
               idt_a: Tensor | None, idt_b: Tensor | None) -> Losses:
        """Adversarial (both directions) + lambda_a / lambda_b cycle L1 + lambda_identity identity L1."""
        hp = self.hparams
        adv_b = self.criterion(self.d_b(self.d_input(fake_b)), True)
        adv_a = self.criterion(self.d_a(self.d_input(fake_a)), True)
        cycle_a = F.l1_loss(rec_a, real_a)
        cycle_b = F.l1_loss(rec_b, real_b)
        g_loss = adv_a + adv_b + hp.lambda_a * cycle_a + hp.lambda_b * cycle_b
        logs = {"g_adv_a": adv_a, "g_adv_b": adv_b, "cycle_a": cycle_a, "cycle_b": cycle_b}
        if idt_a is not None:
            idt_loss_a, idt_loss_b = F.l1_loss(idt_a, real_a), F.l1_loss(idt_b, real_b)
            g_loss = g_loss + hp.lambda_identity * (hp.lambda_a * idt_loss_a + hp.lambda_b * idt_loss_b)
            logs.update(idt_a=idt_loss_a, idt_b=idt_loss_b)
        return Losses(g_loss, {**logs, "g_loss": g_loss})

    def d_loss(self, real_a: Tensor, real_b: Tensor, fake_a: Tensor, fake_b: Tensor, **_) -> Losses:
        """0.5 (c(D(real), real) + c(D(pool(fake)), fake)) for each discriminator, the fakes drawn from its pool."""
        d_a, real_logits_a = self._d_loss(self.d_a, real_a, self.pool_a.query(fake_a.detach()))
        d_b, real_logits_b = self._d_loss(self.d_b, real_b, self.pool_b.query(fake_b.detach()))
        return Losses(d_a + d_b, {"d_a": d_a, "d_b": d_b}, (real_logits_a, real_logits_b))

    def _d_loss(self, d: nn.Module, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
        """The discriminator's loss and its logits on the (augmented) real images."""
        real_logits, fake_logits = self._fused(d, self.d_input(real), self.d_input(self.to_layout(fake)))
        return 0.5 * (self.criterion(real_logits, True) + self.criterion(fake_logits, False)), real_logits

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        # The translation metrics (FID both ways, cycle L1, label preservation) run in the Evaluator at the end
        # of validation, over each test image once; here the discriminators' view of held-out real images
        # tracks their overfitting (a diagnostic: the smaller domain's images repeat in these pairs).
        n = batch["image_a"].shape[0]
        for name, d, real in (("a", self.d_a, batch["image_a"]), ("b", self.d_b, batch["image_b"])):
            self.log(f"val/d_{name}_real", d(self.to_layout(real)).mean(), on_epoch=True, batch_size=n, sync_dist=True)
        if batch_idx == 0:
            self.log_augment_state()

    # ---- translation ----------------------------------------------------------------------

    def generator(self, direction: str) -> nn.Module:
        if direction not in DIRECTIONS:
            raise GdmError(f"direction '{direction}' is not one of {', '.join(DIRECTIONS)}.")
        return self.g_ab if direction == "AtoB" else self.g_ba

    @torch.no_grad()
    def translate(self, images: Tensor, direction: str = "AtoB") -> Tensor:
        """Images in [-1, 1] of domain A (direction AtoB) or B (BtoA) -> the other domain, in [-1, 1]."""
        with self.evaluating(self.generator(direction)) as net:
            return net(self.to_layout(self.to_model(images))).float()

    def visuals(self, examples: dict[str, Tensor]) -> dict[str, tuple[Tensor, int]]:
        """Per direction, rows of (real | translated | translated back) for the first test images of its source
        domain (`examples["A"]`, `examples["B"]`)."""
        grids = {}
        for direction, (source, _) in DIRECTIONS.items():
            real = examples[source][: self.hparams.num_visuals].to(self.device)
            fake = self.translate(real, direction)
            rec = self.translate(fake, REVERSE[direction])
            grids[f"cycle_{direction}"] = (torch.stack([real.to(fake.device), fake, rec], 1).flatten(0, 1), 3)
        return grids
