"""What every gdm model shares: declared batch needs, seeded generation, and images to show."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch


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


class GenerativeModule(L.LightningModule):
    """Base of all gdm models.

    A model says which batch keys it needs (`requires`), what it can do (the `Samples` and `Translates`
    capabilities of `gdm.models.capabilities`), and names the image grids worth looking at (`visuals`).
    Evaluation uses only these, so it works for every model family.
    """

    conditional: bool = False
    requires: frozenset[str] = frozenset({"image"})
    # Set by the NonFiniteLoss callback (callbacks.nonfinite_loss): what a NaN / Inf loss does.
    nonfinite_action: str = "stop"
    max_consecutive_skips: int = 20

    def __init__(self) -> None:
        super().__init__()
        # What adversarial models' discriminators see of training images (gdm.augment); None: the images.
        # (An instance attribute: a class attribute would hide the submodule nn.Module registers.)
        self.augment = None

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

    def loss_ok(self, name: str, loss: torch.Tensor) -> bool:
        """Whether to take the update for `loss`; False: skip it. Call before its backward pass.
        A non-finite loss stops the run (one line: the loss, its value, the step) or, with
        action=skip, is skipped. One device sync per call."""
        finite = bool(torch.isfinite(loss).all())
        if not hasattr(self, "_skipped_in_a_row"):
            self._skipped_in_a_row: dict[str, int] = {}  # per loss: a GAN's D and G updates alternate
        skipped = self._skipped_in_a_row
        # DDP: every rank takes the same decision, or their gradient all-reduces would wait on each other.
        if self.trainer.strategy.reduce_boolean_decision(finite, all=True):
            skipped[name] = 0
            return True
        from gdm.callbacks.nonfinite_loss import Diverged

        value = "finite here but not on another DDP rank" if finite else loss.detach().float().mean().item()
        where = f"train/{name} is {value} at step {self.global_step} (epoch {self.current_epoch}, batch " \
                f"{self.trainer.fit_loop.epoch_loop.batch_idx})"
        skipped[name] = skipped.get(name, 0) + 1
        if self.nonfinite_action == "skip" and skipped[name] <= self.max_consecutive_skips:
            self.print(f"{where}: update skipped (callbacks.nonfinite_loss.action=skip)")
            return False
        last = Path(self.trainer.default_root_dir) / "checkpoints" / "last.ckpt"  # where the Evaluator saves it
        keep = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
        if self.nonfinite_action == "skip":
            repeat, other = f" ({skipped[name]} in a row)", ""
        else:
            repeat, other = "", ", or set callbacks.nonfinite_loss.action=skip to skip such updates"
        raise Diverged(f"{where}{repeat}: training stopped; {keep}. Lower the learning rates (in a new run: a "
                       f"resumed one keeps the saved optimizer settings){other}.")

    def visuals(self, examples: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, int]]:
        """Named image sets in [-1, 1] to save and log as grids, each with its number of columns.
        `examples`: the first real images of the evaluation data ("val"; a translator's domains "A", "B")."""
        return {}
