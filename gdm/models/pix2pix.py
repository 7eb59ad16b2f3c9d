"""pix2pix (Isola et al. 2017): paired image-to-image translation with a conditional GAN.

One generator `net_g` maps the input image to the target (A -> B, or B -> A with `direction=BtoA`), and
one discriminator `net_d` judges (input, output) pairs, the two images concatenated channel-wise: it
sees whether the output fits this input, not only whether it looks real. Per batch, as the reference
code's `optimize_parameters()` (D first, then G, which sees the updated D):
1. discriminator: 0.5 (c(D(x, y), real) + c(D(x, G(x)), fake))
2. generator:     c(D(x, G(x)), real) + lambda_l1 |G(x) - y|
with c the vanilla GAN loss (BCE on logits) and no pool of past fakes. One Adam per net; the learning
rate is constant for n_epochs, then decays linearly to 0 over n_epochs_decay, stepped once per epoch.

Inference (`inference`): "paper" runs the generator as in training, as the paper does at test time:
dropout on, batch norm with the statistics of the image itself. Each image is then translated on its own
(a batch of one, so the result does not depend on which images share a batch) with the same seeded
dropout masks (`inference_seed`), so a translation is a fixed function of its input, and the running
statistics are left untouched. "eval": dropout off and batch norm's running statistics, in batches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from gdm.errors import GdmError
from gdm.losses import get_target_loss
from gdm.models.adversarial import AdversarialModule, Losses, build_augment
from gdm.models.base import DIRECTIONS, Translates
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


def seed_dropout(device: torch.device, seed: int) -> None:
    """Seed the generator that dropout on `device` draws from, and only that one. torch.manual_seed would
    seed every device's, and while CUDA is not initialized (CPU runs) it records a stack trace for the
    deferred CUDA seeding on each call, which costs more than the forward of a small image (paper inference
    seeds once per image)."""
    if device.type == "cpu":
        torch.default_generator.manual_seed(seed)
    elif device.type == "cuda":
        index = torch.cuda.current_device() if device.index is None else device.index
        torch.cuda.default_generators[index].manual_seed(seed)
    else:
        torch.manual_seed(seed)


class Pix2Pix(AdversarialModule, Translates):
    generators, discriminators = ("net_g",), ("net_d",)
    requires = frozenset({"image_a", "image_b", "aligned"})

    # `loss`, `augment*` and `ada_*` are checked by the parts that use them (get_target_loss, build_augment).
    @checked
    def __init__(
        self,
        image_shape: tuple[int, int, int],
        generator: NetFactory,
        discriminator: NetFactory,
        num_classes: int | None = None,
        direction: Annotated[Literal["AtoB", "BtoA"], Field(
            description="which image of a pair is the input")] = "AtoB",
        loss: str = "vanilla",
        lambda_l1: Annotated[LossWeight, Field(description="the L1 loss weight; 100 in the paper")] = 100.0,
        lr: Annotated[LearningRate, Field(
            description="a learning rate, of both Adams; pix2pix's 2e-4")] = 2e-4,
        betas: AdamBetas = (0.5, 0.999),
        n_epochs: EpochsAtLr = 100,
        n_epochs_decay: EpochsDecay = 100,
        inference: Annotated[Literal["paper", "eval"], Field(description=(
            "paper: dropout and batch statistics at test time, as the paper; eval: eval mode"))] = "paper",
        inference_seed: Annotated[NonNegativeInt, Field(
            description="the seed of the dropout masks of paper inference")] = 0,
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
        self.direction = direction
        self.directions = {direction: DIRECTIONS[direction]}  # one way only: no reverse
        self.reverse: dict[str, str] = {}
        self.source_key, self.target_key = (f"image_{d.lower()}" for d in DIRECTIONS[direction])
        channels, height, width = image_shape
        self.net_g = generator(image_shape=image_shape)
        self.net_d = discriminator(image_shape=(2 * channels, height, width))
        # What D sees of (input, output) pairs (gdm.augment): both images of a pair get the same transform.
        self.augment = build_augment(augment, augment_policy, ada_target, ada_interval, ada_kimg,
                                     channels_per_image=channels)
        self.set_memory_format(channels_last)

    # ---- training -------------------------------------------------------------------------

    def fakes(self, batch: dict, batch_idx: int) -> dict:
        real_in, real_out = self.to_layout(batch[self.source_key]), self.to_layout(batch[self.target_key])
        return {"real_in": real_in, "real_out": real_out, "fake_out": self.net_g(real_in)}

    def d_loss(self, real_in: Tensor, real_out: Tensor, fake_out: Tensor) -> Losses:
        """0.5 (c(D(x, y), real) + c(D(x, G(x)), fake)) on the pairs, G(x) detached."""
        real_logits = self.net_d(self.d_input(torch.cat([real_in, real_out], 1)))
        fake_logits = self.net_d(self.d_input(torch.cat([real_in, fake_out.detach()], 1)))
        d_real, d_fake = self.criterion(real_logits, True), self.criterion(fake_logits, False)
        d_loss = 0.5 * (d_real + d_fake)
        return Losses(d_loss, {"d_loss": d_loss, "d_real": d_real, "d_fake": d_fake}, (real_logits,))

    def g_loss(self, real_in: Tensor, real_out: Tensor, fake_out: Tensor) -> Losses:
        """c(D(x, G(x)), real) + lambda_l1 |G(x) - y|."""
        adv = self.criterion(self.net_d(self.d_input(torch.cat([real_in, fake_out], 1))), True)
        l1 = F.l1_loss(fake_out, real_out)
        g_loss = adv + self.hparams.lambda_l1 * l1
        return Losses(g_loss, {"g_loss": g_loss, "g_adv": adv, "l1": l1})

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        # The translation metrics run in the Evaluator over the test pairs; here D's view of held-out real pairs
        # tracks its overfitting.
        real = torch.cat([batch[self.source_key], batch[self.target_key]], 1)
        self.log("val/d_real", self.net_d(self.to_layout(real)).mean(), on_epoch=True, batch_size=real.shape[0],
                 sync_dist=True)
        if batch_idx == 0:
            self.log_augment_state()

    # ---- translation ----------------------------------------------------------------------

    @property
    def size_multiple(self) -> int:
        """Image sides the generator takes: multiples of 2**num_downs for a U-Net, of 4 for the ResNet."""
        return 2 ** getattr(self.net_g, "num_downs", 2)

    @torch.no_grad()
    def translate(self, images: Tensor, direction: str | None = None) -> Tensor:
        """Input images in [-1, 1] (the source domain of the model's direction) -> translations in [-1, 1]."""
        if direction not in (None, self.direction):
            raise GdmError(f"this pix2pix model translates {self.direction} only, not {direction}.")
        images = self.to_layout(self.to_model(images))
        net = self.net_g
        if self.hparams.inference == "eval":
            with self.evaluating(net):
                return net(images).float()
        was_training = net.training
        norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in norms]
        net.train()
        try:
            out = []
            device = [images.device] if images.device.type == "cuda" else []
            with torch.random.fork_rng(devices=device):
                for image in images.split(1):
                    seed_dropout(images.device, self.hparams.inference_seed)
                    out.append(net(image).float())
            return torch.cat(out)
        finally:
            for m, state in zip(norms, saved):
                m.load_state_dict(state)  # batch statistics were used, running ones stay as trained
            net.train(was_training)

    def visuals(self, examples: dict[str, Tensor]) -> dict[str, tuple[Tensor, int]]:
        """Rows of (input | translation | ground truth) for the first test pairs."""
        source, target = DIRECTIONS[self.direction]
        n = self.hparams.num_visuals
        real_in, real_out = examples[source][:n].to(self.device), examples[target][:n].to(self.device)
        fake = self.translate(real_in)
        return {f"pairs_{self.direction}": (torch.stack([real_in.float(), fake, real_out.float()], 1).flatten(0, 1), 3)}
