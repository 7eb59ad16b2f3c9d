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

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gdm.augment import build_augment
from gdm.errors import GdmError, integer_option, number_option
from gdm.losses import get_target_loss
from gdm.models.base import GenerativeModule, check_adam
from gdm.models.capabilities import Translates
from gdm.models.cyclegan import DIRECTIONS, linear_decay

NetFactory = Callable[..., nn.Module]
INFERENCE = ("paper", "eval")


def seed_dropout(device: torch.device, seed: int) -> None:
    """Seed the generator that dropout on `device` draws from, and only that one. torch.manual_seed would
    seed every device's, and while CUDA is not initialized (CPU runs) it records a stack trace for the
    deferred CUDA seeding on each call: ~7 ms, more than the forward of a small image (paper inference
    seeds once per image)."""
    if device.type == "cpu":
        torch.default_generator.manual_seed(seed)
    elif device.type == "cuda":
        index = torch.cuda.current_device() if device.index is None else device.index
        torch.cuda.default_generators[index].manual_seed(seed)
    else:
        torch.manual_seed(seed)


class Pix2Pix(GenerativeModule, Translates):
    requires = frozenset({"image_a", "image_b", "aligned"})

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        generator: NetFactory,
        discriminator: NetFactory,
        num_classes: int | None = None,
        direction: str = "AtoB",
        loss: str = "vanilla",
        lambda_l1: float = 100.0,
        lr: float = 2e-4,
        betas: Sequence[float] = (0.5, 0.999),
        n_epochs: int = 100,
        n_epochs_decay: int = 100,
        inference: str = "paper",
        inference_seed: int = 0,
        channels_last: bool | str = False,
        num_visuals: int = 8,
        augment: str | None = None,
        augment_policy: str = "color,translation,cutout",
        ada_target: float = 0.6,
        ada_interval: int = 4,
        ada_kimg: float = 500.0,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["generator", "discriminator"])
        self.automatic_optimization = False
        if direction not in DIRECTIONS:
            raise GdmError(f"direction '{direction}' is not one of {', '.join(DIRECTIONS)}.")
        if inference not in INFERENCE:
            raise GdmError(f"model.inference={inference} is not a mode; choose paper (dropout and batch statistics, "
                           "as the paper) or eval.")
        integer_option("model.n_epochs", n_epochs, minimum=0, hint="(epochs at the initial learning rate)")
        integer_option("model.n_epochs_decay", n_epochs_decay, minimum=0, hint="(epochs of linear decay to 0)")
        integer_option("model.inference_seed", inference_seed, minimum=0)
        check_adam(betas, lr=lr)
        number_option("model.lambda_l1", lambda_l1, minimum=0, hint="(the L1 loss weight; the paper uses 100)")
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

    def configure_optimizers(self):
        hp = self.hparams
        fused = self.device.type in ("cpu", "cuda")
        betas = tuple(float(b) for b in hp.betas)  # [0, 0.9] from the command line: ints
        opt_g = torch.optim.Adam(self.net_g.parameters(), lr=hp.lr, betas=betas, fused=fused)
        opt_d = torch.optim.Adam(self.net_d.parameters(), lr=hp.lr, betas=betas, fused=fused)
        decay = linear_decay(hp.n_epochs, hp.n_epochs_decay)
        scheds = [torch.optim.lr_scheduler.LambdaLR(opt, decay) for opt in (opt_g, opt_d)]
        return [opt_g, opt_d], [{"scheduler": s, "interval": "epoch"} for s in scheds]

    def _layout(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def d_loss(self, real_in: Tensor, real_out: Tensor, fake_out: Tensor) -> dict[str, Tensor]:
        """The discriminator's loss on one batch of pairs (fake_out detached by the caller)."""
        real_logits = self.net_d(self.d_input(torch.cat([real_in, real_out], 1)))
        fake_logits = self.net_d(self.d_input(torch.cat([real_in, fake_out], 1)))
        d_real, d_fake = self.criterion(real_logits, True), self.criterion(fake_logits, False)
        return {"d_loss": 0.5 * (d_real + d_fake), "d_real": d_real, "d_fake": d_fake, "real_logits": real_logits}

    def g_loss(self, real_in: Tensor, real_out: Tensor, fake_out: Tensor) -> dict[str, Tensor]:
        adv = self.criterion(self.net_d(self.d_input(torch.cat([real_in, fake_out], 1))), True)
        l1 = F.l1_loss(fake_out, real_out)
        return {"g_loss": adv + self.hparams.lambda_l1 * l1, "g_adv": adv, "l1": l1}

    def update(self, batch: dict, batch_idx: int, opt_g, opt_d) -> dict[str, Tensor]:
        """One training batch, the reference's optimize_parameters(): G(x), then D's update, then G's against the
        updated D, with the optimizers of `configure_optimizers` (Lightning's wrappers, or the plain ones in a
        loop without a Trainer). Returns the values to log, detached (no host read)."""
        real_in, real_out = self._layout(batch[self.source_key]), self._layout(batch[self.target_key])
        fake_out = self.net_g(real_in)
        d_losses = self.d_loss(real_in, real_out, fake_out.detach())
        augment_logs: dict[str, Tensor] = {}
        self.log_augment(d_losses.pop("real_logits"), real_in.shape[0], augment_logs)
        if self.loss_ok("d_loss", d_losses["d_loss"]):
            self.step_optimizer(opt_d, d_losses["d_loss"])
        with self.frozen(self.net_d):  # D's weights need no gradients for G's update
            g_losses = self.g_loss(real_in, real_out, fake_out)
            if self.loss_ok("g_loss", g_losses["g_loss"]):
                self.step_optimizer(opt_g, g_losses["g_loss"])
        return {**{f"train/{k}": v.detach() for k, v in {**d_losses, **g_losses}.items()}, **augment_logs}

    def training_step(self, batch: dict, batch_idx: int) -> None:
        opt_g, _ = optimizers = self.training_optimizers()
        logs = self.update(batch, batch_idx, *optimizers)
        logs["train/lr"] = opt_g.param_groups[0]["lr"]  # a float: Lightning makes it a tensor on the logged batches
        self.log_train(logs, batch_size=batch[self.source_key].shape[0])

    def on_train_epoch_start(self) -> None:
        # As CycleGAN: bring the schedulers to the current epoch here, which stays right after a resume.
        for scheduler in self.lr_schedulers():
            while scheduler.last_epoch < self.current_epoch:
                scheduler.step()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        # The translation metrics run in the Evaluator over the test pairs; here D's view of held-out real pairs
        # tracks its overfitting.
        real = torch.cat([batch[self.source_key], batch[self.target_key]], 1)
        self.log("val/d_real", self.net_d(self._layout(real)).mean(), on_epoch=True, batch_size=real.shape[0],
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
        images = self._layout(self.to_model(images))
        net = self.net_g
        was_training = net.training
        if self.hparams.inference == "eval":
            net.eval()
            try:
                return net(images).float()
            finally:
                net.train(was_training)
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
