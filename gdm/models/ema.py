"""An exponential moving average of a net's weights (Karras et al. 2018, "Progressive Growing of GANs"; Yazici et
al. 2019, "The Unusual Effectiveness of Averaging in GAN Training"): the copy samples and metrics use. Its decay
follows a half-life counted in training images with a ramp-up, as in StyleGAN2-ADA (Karras et al. 2020,
training/training_loop.py: `ema_kimg`, `ema_rampup`) and EDM (Karras et al. 2022: `ema_halflife_kimg`,
`ema_rampup_ratio`), so a short run averages over its recent past and never over its random initialisation."""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

HalfLife = Annotated[float, Field(gt=0, strict=True, allow_inf_nan=False, description=(
    "the EMA's half-life in thousands of training images; 500 in EDM, batch x 10 / 32 in StyleGAN2-ADA"))]
RampUp = Annotated[float | None, Field(gt=0, strict=True, allow_inf_nan=False, description=(
    "the half-life is at most this share of the images seen so far; 0.05 in EDM and StyleGAN2-ADA; null: none"))]


def halflife_decay(batch_images: float, images_seen: float, halflife_kimg: float, rampup_ratio: float | None) -> float:
    """The decay of one update over `batch_images` images: 0.5 ** (batch_images / half-life in images), the
    half-life being `halflife_kimg` x 1000 images, at most `rampup_ratio` x `images_seen` (StyleGAN2-ADA's and
    EDM's training_loop.py). In [0, 1); 0 (a copy) while nothing has been seen under a ramp-up."""
    halflife = halflife_kimg * 1000
    if rampup_ratio is not None:
        halflife = min(halflife, images_seen * rampup_ratio)
    return 0.5 ** (batch_images / max(halflife, 1e-8))


class EMA(AveragedModel):
    """The average of `net`'s parameters and buffers (batch norm's running statistics too), updated with
    `halflife_decay` after each optimizer step: average = decay * average + (1 - decay) * net. The first update
    copies the net.

    Its state dict (`module.*`, `n_averaged`, `images_seen`) lives in the model's, so checkpoints keep it and a
    resumed run continues the same average with the same ramp-up. The images seen are mirrored on the host, so an
    update reads nothing from the device (no sync on a GPU) after its first.
    """

    def __init__(self, net: nn.Module, halflife_kimg: float, rampup_ratio: float | None):
        super().__init__(net, use_buffers=True)
        self.requires_grad_(False)
        self.halflife_kimg, self.rampup_ratio = halflife_kimg, rampup_ratio
        self.register_buffer("images_seen", torch.zeros((), dtype=torch.float64))
        self._seen: float | None = None  # the host's copy of images_seen; None: read it (a new or resumed average)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._seen = None  # a loaded state (a resumed run): read its count again

    def decay(self, batch_images: float) -> float:
        """The decay of the next update over `batch_images` images (counted in all processes)."""
        if self._seen is None:
            self._seen = float(self.images_seen)  # one host read per process and load
        return halflife_decay(batch_images, self._seen + batch_images, self.halflife_kimg, self.rampup_ratio)

    @torch.no_grad()
    def update(self, net: nn.Module, batch_images: float) -> None:
        """One step towards `net`'s current weights and buffers after training on `batch_images` more images (all
        processes). The first step of a new average copies the net; the first after a resume averages."""
        decay = self.decay(batch_images)
        if self._seen == 0:
            decay = 0.0  # a new average starts as a copy
        by_dtype: dict[torch.dtype, tuple[list[Tensor], list[Tensor]]] = {}
        for averaged, current in zip([*self.module.parameters(), *self.module.buffers()],
                                     [*net.parameters(), *net.buffers()], strict=True):
            if averaged.is_floating_point():  # one fused lerp per dtype, as AveragedModel's EMA does
                group = by_dtype.setdefault(averaged.dtype, ([], []))
                group[0].append(averaged)
                group[1].append(current.detach())
            else:
                averaged.copy_(current)  # e.g. batch norm's num_batches_tracked
        for averaged, current in by_dtype.values():
            torch._foreach_lerp_(averaged, current, 1 - decay)
        self._seen += batch_images
        self.images_seen += batch_images
        self.n_averaged += 1
