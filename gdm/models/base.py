"""What every gdm model shares: declared batch needs, seeded generation, and images to show."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import lightning as L
import numpy as np
import torch
from torch import nn

from gdm.errors import GdmError, number_option
from gdm.models.nonfinite_guard import NonFiniteGuard


def latent_noise(indices: Sequence[int] | torch.Tensor, dim: int, seed: int) -> torch.Tensor:
    """One standard-normal latent per sample index, each from its own seeded generator.

    Sample i gets the same latent whatever the batch size or the number of processes that share
    the work, so a metric over samples 0..N-1 does not depend on how it was batched.
    """
    if isinstance(indices, torch.Tensor):
        indices = indices.tolist()
    # torch's CPU generator keeps only 32 bits of a seed: hash (seed, index) into them properly.
    seeds = [int(np.random.SeedSequence([seed, i]).generate_state(1)[0]) for i in indices]
    rows = [torch.randn(dim, generator=torch.Generator().manual_seed(s)) for s in seeds]
    return torch.stack(rows) if rows else torch.empty(0, dim)


def latent_labels(indices: Sequence[int] | torch.Tensor, class_probs: torch.Tensor, seed: int) -> torch.Tensor:
    """One class label per sample index, drawn from `class_probs` with the index's own seed, so a
    class-balanced metric does not depend on batching either."""
    if isinstance(indices, torch.Tensor):
        indices = indices.tolist()
    # A different stream from `latent_noise` (third entropy word), so labels and latents are independent.
    u = torch.tensor([float(np.random.SeedSequence([seed, i, 1]).generate_state(1)[0]) / 2**32 for i in indices])
    cdf = class_probs.detach().double().cpu().cumsum(0)
    return torch.searchsorted(cdf / cdf[-1], u.double(), right=True).clamp(max=len(cdf) - 1)


def check_adam(betas: object, **learning_rates: object) -> None:
    """Adam's settings as the config gives them: each `model.<name>` learning rate > 0 and `model.betas` two numbers
    in [0, 1) (torch.optim.Adam would raise its own traceback, or train nothing at lr 0). GdmError naming the key."""
    for name, lr in learning_rates.items():
        number_option(f"model.{name}", lr, above=0, hint="(a learning rate)")
    if not isinstance(betas, Sequence) or isinstance(betas, str) or len(betas) != 2:  # OmegaConf lists too
        raise GdmError(f"model.betas={betas} must be Adam's two coefficients, e.g. [0.5,0.999].")
    for i, beta in enumerate(betas):
        number_option(f"model.betas[{i}]", beta, minimum=0, below=1)


class GenerativeModule(NonFiniteGuard, L.LightningModule):
    """Base of all gdm models.

    A model says which batch keys it needs (`requires`), what it can do (the `Samples` and `Translates`
    capabilities of `gdm.models.capabilities`), and names the image grids worth looking at (`visuals`).
    Evaluation uses only these, so it works for every model family.
    """

    conditional: bool = False
    requires: frozenset[str] = frozenset({"image"})
    # What `model.channels_last=auto` picks on the CPU, measured per model family on the 2-core CPU
    # (experiments/README.md, "channels_last by device"); on CUDA auto picks NHWC, the layout cuDNN's
    # tensor-core convolutions want.
    channels_last_on_cpu: bool = False

    def __init__(self) -> None:
        super().__init__()
        # What adversarial models' discriminators see of training images (gdm.augment); None: the images.
        # (An instance attribute: a class attribute would hide the submodule nn.Module registers.)
        self.augment = None
        self.channels_last, self.channels_last_auto = False, False  # set_memory_format

    # Prefixes of state-dict entries only training uses (the GAN's LeCam averages): a run resumed or fine-tuned
    # with such an option switched on starts them anew, and one with it switched off drops them.
    optional_state: tuple[str, ...] = ()

    def match_optional_state(self, state_dict: dict) -> None:
        """Make a checkpoint's `state_dict` hold this model's `optional_state` entries: the missing ones as they
        are now, and none that this model lacks."""
        if not self.optional_state:
            return
        mine = {k: v for k, v in self.state_dict().items() if k.startswith(self.optional_state)}
        for key in [k for k in state_dict if k.startswith(self.optional_state) and k not in mine]:
            del state_dict[key]
        for key, value in mine.items():
            state_dict.setdefault(key, value)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.match_optional_state(checkpoint["state_dict"])

    def set_memory_format(self, channels_last: bool | str) -> None:
        """model.channels_last: true (NHWC weights and activations), false (NCHW) or auto (decided at setup from
        the trainer's device: NHWC on CUDA, `channels_last_on_cpu` on the CPU; NCHW without a Trainer).
        Changes speed, not results. Raises GdmError for another value."""
        if not (isinstance(channels_last, bool) or channels_last == "auto"):
            raise GdmError(f"model.channels_last={channels_last!r} is not a choice: true (NHWC), false (NCHW) or "
                           "auto (by device: NHWC on CUDA, and on the CPU where it measured faster).")
        self.channels_last_auto = channels_last == "auto"
        self.channels_last = channels_last is True
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    def setup(self, stage: str) -> None:
        # Before the optimizers are built and the model moved: the layout of `auto` for the trainer's device.
        if self.channels_last_auto:
            device = self.trainer.strategy.root_device
            self.channels_last = device.type == "cuda" or (device.type == "cpu" and self.channels_last_on_cpu)
            self.to(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    def on_train_start(self) -> None:
        # A resumed run restores the optimizer state (Adam's moments) in the layout it was saved in; a run resumed
        # with another model.channels_last would step mixed layouts (right, but slower) for good.
        self.match_optimizer_state_layout(self.trainer.optimizers)

    @staticmethod
    def match_optimizer_state_layout(optimizers) -> None:
        """Give each optimizer-state tensor shaped like its parameter the parameter's memory layout (strides)."""
        for optimizer in optimizers:
            for param, state in optimizer.state.items():
                for key, value in state.items():
                    if isinstance(value, torch.Tensor) and value.shape == param.shape and value.stride() != param.stride():
                        state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        """A float tensor made outside Lightning's precision plugin (latents, example images) on this model's
        device and in its weights' dtype: bfloat16 after trainer.precision=bf16-true, else float32."""
        return x.to(self.device, self.dtype)

    def d_input(self, images: torch.Tensor) -> torch.Tensor:
        """What a discriminator sees of a training batch (B, C, H, W) in [-1, 1]: the images, augmented
        when model.augment is set. Differentiable, so G's gradient flows through the augmented fakes."""
        return images if self.augment is None else self.augment(images)

    def log_augment(self, real_logits: torch.Tensor, images: int, logs: dict[str, torch.Tensor]) -> None:
        """Hand D's logits on augmented real images to the augmentation (ADA's p follows them) and add
        its values (train/ada_p, train/ada_rt) to `logs`. `images`: the batch's number of images."""
        if self.augment is not None:
            self.augment.observe(real_logits, images)
            logs.update(self.augment.logs())

    def log_augment_state(self) -> None:
        """At an evaluation: the augmentation's values (val/ada_p, ...), so each evaluation records its p."""
        if self.augment is not None:
            self.log_dict({k.replace("train/", "val/"): v for k, v in self.augment.logs().items()}, on_epoch=True)

    # ---- the update, callable without a Trainer ----------------------------------------------

    def step_optimizer(self, optimizer, loss: torch.Tensor) -> None:
        """zero_grad, backward of `loss`, step. Plain PyTorch without a Trainer. Under a Trainer, Lightning's way
        (`manual_backward`, its optimizer wrapper: precision plugin, DDP, hooks) unless nothing would use it
        (`direct_steps`): then the torch optimizer steps and Lightning only counts the step (global_step)."""
        optimizer.zero_grad(set_to_none=True)
        if self._trainer is None:
            loss.backward()
            optimizer.step()
        elif self.direct_steps():
            loss.backward()
            optimizer._on_before_step()  # Lightning's optimizer-step count: trainer.global_step, max_steps
            optimizer.optimizer.step()
            optimizer._on_after_step()
        else:
            self.manual_backward(loss)
            optimizer.step()

    def direct_steps(self) -> bool:
        """Whether Lightning's backward and optimizer-step machinery would only add its cost (~0.1 ms per update):
        one process, fp32 or bf16 autocast (no gradient scaler), and no hook around backward or the step
        overridden by the model or a callback. Decided once per trainer."""
        trainer = self._trainer
        if self.__dict__.get("_direct_steps_for") is not trainer:
            from lightning.pytorch.plugins.precision import MixedPrecision, Precision
            from lightning.pytorch.strategies import SingleDeviceStrategy

            hooks = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
            plugin = trainer.precision_plugin
            self._direct_steps = (
                type(trainer.strategy) is SingleDeviceStrategy
                and (type(plugin) is Precision or (type(plugin) is MixedPrecision and plugin.scaler is None))
                and type(self).backward is L.LightningModule.backward
                and all(getattr(type(self), h) is getattr(L.LightningModule, h) for h in hooks)
                and all(getattr(type(cb), h) is getattr(L.Callback, h) for cb in trainer.callbacks for h in hooks)
            )
            self._direct_steps_for = trainer
        return self._direct_steps

    @staticmethod
    @contextmanager
    def frozen(*nets: nn.Module) -> Iterator[None]:
        """The nets' parameters need no gradients inside (the discriminators' during the generators' update):
        the backward pass skips their weight gradients. Lightning's toggled_optimizer, without a Trainer."""
        params = [p for net in nets for p in net.parameters() if p.requires_grad]
        for p in params:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p in params:
                p.requires_grad_(True)

    def training_optimizers(self) -> list:
        """The optimizers `update` takes: Lightning's wrappers under a Trainer, else `configure_optimizers`'s own,
        built once (a plain loop's)."""
        if self._trainer is not None:
            return self.optimizers()
        if "_plain_optimizers" not in self.__dict__:
            configured = self.configure_optimizers()
            optimizers = configured[0] if isinstance(configured, tuple) and isinstance(configured[0], list) \
                else configured
            self._plain_optimizers = list(optimizers) if isinstance(optimizers, (list, tuple)) else [optimizers]
        return self._plain_optimizers

    def compile_nets(self, **options) -> None:
        """torch.compile each trained net in place (`nn.Module.compile`: the state dict keeps its keys, so
        checkpoints load either way). `options`: torch.compile's (mode, dynamic, ...)."""
        from torch.optim.swa_utils import AveragedModel

        for net in self.children():
            if any(True for _ in net.parameters()) and not isinstance(net, AveragedModel):
                net.compile(**options)

    def log_train(self, logs: dict[str, torch.Tensor], batch_size: int) -> None:
        """Log the update's values (detached tensors: no host read here) on the batches the logger writes,
        every trainer.log_every_n_steps: on the others Lightning would only keep the latest value, at tens of
        microseconds per key per batch."""
        connector = self.trainer._logger_connector  # private, but the very test Lightning makes before writing
        if connector.should_update_logs or self.trainer.fast_dev_run:
            self.log_dict(logs, on_step=True, on_epoch=False, batch_size=batch_size)

    def visuals(self, examples: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, int]]:
        """Named image sets in [-1, 1] to save and log as grids, each with its number of columns.
        `examples`: the first real images of the evaluation data ("val"; a translator's domains "A", "B")."""
        return {}
