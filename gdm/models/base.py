"""What every gdm model shares: declared batch needs, seeded generation, and images to show."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import numpy as np
import torch

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


class GenerativeModule(NonFiniteGuard, L.LightningModule):
    """Base of all gdm models.

    A model says which batch keys it needs (`requires`), what it can do (the `Samples` and `Translates`
    capabilities of `gdm.models.capabilities`), and names the image grids worth looking at (`visuals`).
    Evaluation uses only these, so it works for every model family.
    """

    conditional: bool = False
    requires: frozenset[str] = frozenset({"image"})
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

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        """A float tensor made outside Lightning's precision plugin (latents, example images) on this model's
        device and in its weights' dtype: bfloat16 under the bf16-true precision, else float32."""
        return x.to(self.device, self.dtype)

    def compile_nets(self, **options) -> None:
        """torch.compile each trained net in place (`nn.Module.compile`: the state dict keeps its keys, so
        checkpoints load either way). `options`: torch.compile's (mode, dynamic, ...)."""
        from torch.optim.swa_utils import AveragedModel

        for net in self.children():
            if any(True for _ in net.parameters()) and not isinstance(net, AveragedModel):
                net.compile(**options)

    def visuals(self, examples: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, int]]:
        """Named image sets in [-1, 1] to save and log as grids, each with its number of columns.
        `examples`: the first real images of the evaluation data ("val"; a translator's domains "A", "B")."""
        return {}
