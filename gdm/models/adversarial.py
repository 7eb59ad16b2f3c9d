"""What the adversarial families (GAN, cGAN, CycleGAN, pix2pix) share: the update, one optimizer per side.

`update(batch, batch_idx, opt_g, opt_d)` is the whole training step as a plain method, callable without a Trainer
(the reference CycleGAN's `optimize_parameters`, StyleGAN2-ADA's phases): the family's `fakes` runs the
generators once, then the discriminator phase and the generator phase (in the family's order) each take one
optimizer step on the family's `d_loss` / `g_loss`. Lightning's `training_step`, the benchmarks' plain loop and
the tests all call it. The base also owns the optimizers (Adam, the papers' betas) and the reference code's
constant-then-linear-decay schedule, the augmentation of the discriminator's inputs, the memory layout and
freezing the discriminators during the generator's step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Literal, NamedTuple

import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from pydantic import Field
from torch import Tensor, nn

from gdm.augment.ada import AdaptiveAugment
from gdm.augment.base import Augment
from gdm.augment.diffaugment import DiffAugment
from gdm.models.base import GenerativeModule
from gdm.option_types import checked

log = logging.getLogger(__name__)


class Losses(NamedTuple):
    """One phase's loss: `total` is what its optimizer steps on; `logs` the values to record (without the
    "train/" prefix); `real_logits` the discriminators' logits on (augmented) real images, for ADA's signal."""

    total: Tensor
    logs: dict[str, Tensor]
    real_logits: tuple[Tensor, ...] = ()



AugmentName = Annotated[Literal["diffaugment", "ada"] | None, Field(
    description="what the discriminator sees of real and fake images; null: the images as they are")]


@checked
def build_augment(augment: AugmentName, augment_policy: object = "color,translation,cutout",
                  ada_target: object = 0.6, ada_interval: object = 4, ada_kimg: object = 500.0,
                  channels_per_image: int | None = None) -> Augment | None:
    """The augmentation of the discriminators' inputs `augment` (gdm.augment; None for null), with the
    settings of that one only: the policy is checked by DiffAugment, the ada_* settings by ADA (a
    ValidationError naming the parameter)."""
    if augment == "diffaugment":
        return DiffAugment(augment_policy, channels_per_image)
    if augment == "ada":
        return AdaptiveAugment(ada_target=ada_target, ada_interval=ada_interval, ada_kimg=ada_kimg,
                               channels_per_image=channels_per_image)
    return None


def linear_decay(n_epochs: int, n_epochs_decay: int) -> Callable[[int], float]:
    """The reference CycleGAN / pix2pix schedule: lr factor 1 for epochs 0..n_epochs-1, then
    1 - k / (n_epochs_decay + 1) in the k-th decay epoch, reaching ~0 at the last of the n_epochs + n_epochs_decay
    epochs; 0 after (where the reference's rule would turn negative)."""
    return lambda epoch: max(0.0, 1.0 - max(0, epoch + 1 - n_epochs) / float(n_epochs_decay + 1))


class AdversarialModule(GenerativeModule):
    """Base of the adversarial families. A family sets, in `__init__` (after `super().__init__(...)`), its nets and
    `self.augment`, names them in `generators` / `discriminators`, calls `set_memory_format` last, and defines:

    - `fakes(batch, batch_idx) -> dict`: the real images and the generators' outputs for one batch (one G forward,
      shared by both phases);
    - `d_loss(**fakes) -> Losses` and `g_loss(**fakes) -> Losses`: the paper's losses;
    - optionally `g_turn(batch_idx)` (a GAN's n_critic) and `after_g_step(batch_images)` (an EMA of G).
    """

    generators: tuple[str, ...] = ()  # attribute names of the nets opt_g trains, in parameter order
    discriminators: tuple[str, ...] = ()  # ... and of those opt_d trains
    g_first = False  # the reference CycleGAN updates G, then D on pooled fakes; GANs and pix2pix D, then G
    channels_last_on_cpu = False  # what channels_last=auto picks on the CPU, per family (experiments/)

    def __init__(self, lr_g: float, lr_d: float, betas: Sequence[float],
                 decay_epochs: tuple[int, int] | None = None, grad_clip: float | None = None):
        """`lr_g`, `lr_d`: Adam's learning rates; `betas`: Adam's two coefficients; `decay_epochs`:
        (n_epochs, n_epochs_decay) of `linear_decay`, stepped once per epoch (None: constant); `grad_clip`: the
        largest L2 norm of each optimizer's gradients (torch.nn.utils.clip_grad_norm_; None: no clipping)."""
        super().__init__()
        self.automatic_optimization = False
        self.lr_g, self.lr_d = lr_g, lr_d
        self.betas = tuple(float(b) for b in betas)  # [0, 0.9] from the command line: ints
        self.decay_epochs = decay_epochs
        self.grad_clip = grad_clip
        # What the discriminators see of training images (gdm.augment); None: the images themselves.
        # (An instance attribute: a class attribute would hide the submodule nn.Module registers.)
        self.augment = None
        self.channels_last, self.channels_last_auto = False, False  # set_memory_format

    # ---- optimizers and schedules -----------------------------------------------------------

    def _params(self, names: tuple[str, ...]) -> list[nn.Parameter]:
        return [p for name in names for p in getattr(self, name).parameters()]

    def configure_optimizers(self):
        opt_g = self.adam(self._params(self.generators), self.lr_g, self.betas, self.grad_clip)
        opt_d = self.adam(self._params(self.discriminators), self.lr_d, self.betas, self.grad_clip)
        if self.decay_epochs is None:
            return opt_g, opt_d
        decay = linear_decay(*self.decay_epochs)
        schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, decay) for opt in (opt_g, opt_d)]
        return [opt_g, opt_d], [{"scheduler": s, "interval": "epoch"} for s in schedulers]

    def plain_optimizers(self) -> list[torch.optim.Optimizer]:
        """[opt_g, opt_d] of `configure_optimizers`, for `update` in a loop without a Trainer (built once)."""
        if "_plain_optimizers" not in self.__dict__:
            configured = self.configure_optimizers()
            self._plain_optimizers = list(configured[0] if self.decay_epochs is not None else configured)
        return self._plain_optimizers

    def on_fit_start(self) -> None:
        if self.decay_epochs is None:
            return
        epochs, planned = sum(self.decay_epochs), self.trainer.max_epochs
        if planned in (None, -1) or planned == epochs:
            return
        if planned > epochs:
            log.warning(f"training runs {planned} epochs, past the end of the learning-rate schedule (n_epochs + "
                        f"n_epochs_decay = {epochs}): the lr is 0 from epoch {epochs} on; raise n_epochs or "
                        "n_epochs_decay to train there.")
        else:
            unit = "epoch" if planned == 1 else "epochs"
            log.warning(f"training stops after {planned} {unit}, before the end of the learning-rate schedule "
                        f"(n_epochs + n_epochs_decay = {epochs}): the lr will not decay to 0.")

    def on_train_epoch_start(self) -> None:
        # Manual optimization leaves the schedulers to us. Bringing them to the current epoch here, not stepping
        # at the end of an epoch, keeps them right when a run resumes from a checkpoint saved at the end of an
        # epoch (before any end-of-epoch step).
        if self.decay_epochs is None:
            return
        for scheduler in self.lr_schedulers():
            while scheduler.last_epoch < self.current_epoch:
                scheduler.step()

    # ---- the update, callable without a Trainer ---------------------------------------------

    def training_step(self, batch: dict, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        logs = self.update(batch, batch_idx, opt_g, opt_d)
        if self.decay_epochs is not None:
            logs["train/lr"] = opt_g.param_groups[0]["lr"]  # a float: Lightning makes it a tensor when it logs
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=next(iter(batch.values())).shape[0])

    def update(self, batch: dict, batch_idx: int, opt_g, opt_d) -> dict[str, Tensor]:
        """One training batch: the generators' forward pass, then the discriminator phase and the generator phase
        (G first where `g_first`), each a step of its optimizer: Lightning's wrappers under a Trainer, or the plain
        ones of `plain_optimizers` in a loop without one. Returns the values to log ("train/..."), detached (no
        host read)."""
        fakes = self.fakes(batch, batch_idx)
        logs: dict[str, Tensor] = {}
        for phase in ("g", "d") if self.g_first else ("d", "g"):
            if phase == "d":
                logs.update(self._d_phase(fakes, opt_d))
            elif self.g_turn(batch_idx):
                logs.update(self._g_phase(fakes, opt_g, next(iter(batch.values())).shape[0]))
        return {f"train/{k}": v.detach() for k, v in logs.items()}

    def _d_phase(self, fakes: dict, opt_d) -> dict[str, Tensor]:
        losses = self.d_loss(**fakes)
        logs = dict(losses.logs)
        if self.augment is not None and losses.real_logits:  # ADA's p follows D's view of augmented reals
            self.augment.observe(torch.cat([x.flatten() for x in losses.real_logits]),
                                 sum(x.shape[0] for x in losses.real_logits))
            logs.update({k.removeprefix("train/"): v for k, v in self.augment.logs().items()})
        if self.loss_ok("d_loss", losses.total):
            self.step_optimizer(opt_d, losses.total)
        return logs

    def _g_phase(self, fakes: dict, opt_g, batch_size: int) -> dict[str, Tensor]:
        with self.frozen(*(getattr(self, name) for name in self.discriminators)):
            losses = self.g_loss(**fakes)
            stepped = self.loss_ok("g_loss", losses.total)
            if stepped:
                self.step_optimizer(opt_g, losses.total)
        if stepped:
            self.after_g_step(batch_size * (self.trainer.world_size if self.attached_trainer() else 1))
        return losses.logs

    def fakes(self, batch: dict, batch_idx: int) -> dict:
        raise NotImplementedError

    def d_loss(self, **fakes) -> Losses:
        raise NotImplementedError

    def g_loss(self, **fakes) -> Losses:
        raise NotImplementedError

    def g_turn(self, batch_idx: int) -> bool:
        """Whether this batch updates the generators too (every batch unless a family says otherwise)."""
        return True

    def after_g_step(self, batch_images: int) -> None:
        """Called after each generator step that was taken (e.g. an EMA update), with the batch's images in all
        processes."""

    def step_optimizer(self, optimizer, loss: Tensor) -> None:
        """zero_grad, backward of `loss`, gradient clipping (`grad_clip`), step. Under a Trainer Lightning's way
        (`manual_backward`, its optimizer wrapper: precision plugin, DDP, hooks; clipping in
        `on_before_optimizer_step`, after Lightning unscaled the gradients); plain PyTorch with a plain optimizer."""
        optimizer.zero_grad(set_to_none=True)
        if isinstance(optimizer, LightningOptimizer):
            self.manual_backward(loss)
            optimizer.step()
            return
        loss.backward()
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], self.grad_clip)
        optimizer.step()

    def on_before_optimizer_step(self, optimizer) -> None:
        if self.grad_clip is not None:
            self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")

    @staticmethod
    @contextmanager
    def frozen(*nets: nn.Module) -> Iterator[None]:
        """The nets' parameters need no gradients inside (the discriminators' during the generators' step): the
        backward pass skips their weight gradients. Lightning's toggled_optimizer, without a Trainer."""
        params = [p for net in nets for p in net.parameters() if p.requires_grad]
        for p in params:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p in params:
                p.requires_grad_(True)

    # ---- what the discriminators see ---------------------------------------------------------

    def d_input(self, images: Tensor) -> Tensor:
        """What a discriminator sees of a training batch (B, C, H, W) in [-1, 1]: the images, augmented when
        `augment` is set. Differentiable, so G's gradient flows through the augmented fakes."""
        return images if self.augment is None else self.augment(images)

    def log_augment_state(self) -> None:
        """At an evaluation: the augmentation's values (val/ada_p, ...), so each evaluation records its p."""
        if self.augment is not None:
            # p is the same on every rank (ADA all-reduces its signal): max keeps it exact and Lightning quiet
            self.log_dict({k.replace("train/", "val/"): v for k, v in self.augment.logs().items()}, on_epoch=True,
                          sync_dist=True, reduce_fx="max")

    # ---- memory layout ----------------------------------------------------------------------

    def set_memory_format(self, channels_last: bool | str) -> None:
        """channels_last: True (NHWC weights and activations), False (NCHW) or "auto" (decided at setup from the
        trainer's device: NHWC on CUDA, `channels_last_on_cpu` on the CPU; NCHW without a Trainer). Changes speed,
        not results; the models' signatures check the value (`gdm.option_types.ChannelsLast`)."""
        self.channels_last_auto = channels_last == "auto"
        self.channels_last = channels_last is True
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    def to_layout(self, x: Tensor) -> Tensor:
        """An image batch in the nets' memory layout (a no-op for NCHW)."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def setup(self, stage: str) -> None:
        # Before the optimizers are built and the model moved: the layout of `auto` for the trainer's device.
        if self.channels_last_auto:
            device = self.trainer.strategy.root_device
            self.channels_last = device.type == "cuda" or (device.type == "cpu" and self.channels_last_on_cpu)
            self.to(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    def on_train_start(self) -> None:
        super().on_train_start()
        # A resumed run restores the optimizer state (Adam's moments) in the layout it was saved in; a run resumed
        # with another channels_last would step mixed layouts (right, but slower) for good.
        self.match_optimizer_state_layout(self.trainer.optimizers)

    @staticmethod
    def match_optimizer_state_layout(optimizers) -> None:
        """Give each optimizer-state tensor shaped like its parameter the parameter's memory layout (strides)."""
        for optimizer in optimizers:
            for param, state in optimizer.state.items():
                for key, value in state.items():
                    if isinstance(value, Tensor) and value.shape == param.shape and value.stride() != param.stride():
                        state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)
