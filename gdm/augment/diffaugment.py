"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training").

The operations and constants of the reference code (mit-han-lab/data-efficient-gans,
DiffAugment_pytorch.py), on images in [-1, 1]:
- `color`: brightness + U(-0.5, 0.5); saturation x U(0, 2) around the pixel's channel mean;
  contrast x U(0.5, 1.5) around the image mean;
- `translation`: an integer shift of up to 1/8 of the side in x and y, zero-filled;
- `cutout`: a zero square of half the side at a random centre.
Each image of the batch draws its own parameters; every operation is applied to every image
(probability 1), and gradients flow through all of them to the generator.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import BeforeValidator, Field
from torch import Tensor

from gdm.augment.base import Augment
from gdm.option_types import checked


def _operations(policy: object) -> object:
    # "color, translation" (a quoted string on the command line) or a list of the same names
    if isinstance(policy, str):
        return [name.strip() for name in policy.split(",") if name.strip()]
    return [str(name).strip() for name in policy] if isinstance(policy, Sequence) else policy


Policy = Annotated[list[Literal["color", "translation", "cutout"]], BeforeValidator(_operations), Field(
    min_length=1, description="DiffAugment's operations, comma-separated (quoted on the command line) or a "
                              "list; Zhao et al. 2020 use color,translation,cutout")]


def _per_sample(x: Tensor, *shape: int) -> Tensor:
    return torch.rand(x.shape[0], *shape, dtype=x.dtype, device=x.device)


def _grouped(x: Tensor, channels: int | None) -> Tensor:
    """(B, C, H, W) -> (B, G, c, H, W): G images of c channels each (G = 1 unless a pair is stacked)."""
    c = channels or x.shape[1]
    return x.reshape(x.shape[0], x.shape[1] // c, c, *x.shape[2:])


def color(x: Tensor, channels: int | None = None) -> Tensor:
    """The reference's rand_brightness, rand_saturation, rand_contrast, in that order."""
    g = _grouped(x, channels)
    g = g + (_per_sample(g, 1, 1, 1, 1) - 0.5)
    mean = g.mean(dim=2, keepdim=True)
    g = (g - mean) * (_per_sample(g, 1, 1, 1, 1) * 2) + mean
    mean = g.mean(dim=(2, 3, 4), keepdim=True)
    g = (g - mean) * (_per_sample(g, 1, 1, 1, 1) + 0.5) + mean
    return g.reshape(x.shape)


def translation(x: Tensor, ratio: float = 0.125) -> Tensor:
    """The reference's rand_translation: shift by up to round(ratio * side) pixels, zeros shifted in."""
    b, _, h, w = x.shape
    shift_h, shift_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-shift_h, shift_h + 1, (b, 1, 1), device=x.device)
    dx = torch.randint(-shift_w, shift_w + 1, (b, 1, 1), device=x.device)
    grid_b, grid_y, grid_x = torch.meshgrid(torch.arange(b, device=x.device), torch.arange(h, device=x.device),
                                            torch.arange(w, device=x.device), indexing="ij")
    grid_y = torch.clamp(grid_y + dy + 1, 0, h + 1)
    grid_x = torch.clamp(grid_x + dx + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])  # the one-pixel zero border the clamped indices fall on
    return padded.permute(0, 2, 3, 1)[grid_b, grid_y, grid_x].permute(0, 3, 1, 2)


def cutout(x: Tensor, ratio: float = 0.5) -> Tensor:
    """The reference's rand_cutout: zero a (ratio * H) x (ratio * W) square centred anywhere in the image
    (clipped at the border)."""
    b, _, h, w = x.shape
    size_h, size_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - size_h % 2), (b, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - size_w % 2), (b, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((ys >= cy - size_h // 2) & (ys < cy - size_h // 2 + size_h)
              & (xs >= cx - size_w // 2) & (xs < cx - size_w // 2 + size_w))
    return x * (~inside).unsqueeze(1).to(x.dtype)


OPERATIONS = {"color": color, "translation": translation, "cutout": cutout}


class DiffAugment(Augment):
    """`augment_policy`: comma-separated operations applied in order, e.g. "color,translation,cutout" (the
    paper's choice for most of its experiments) or "translation", or a list of them. Input and output
    (B, C, H, W). On the command line Hydra reads an unquoted comma as a sweep: quote the string or give a
    list."""

    @checked
    def __init__(self, augment_policy: Policy = "color,translation,cutout", channels_per_image: int | None = None):
        super().__init__(channels_per_image)
        self.policy = augment_policy

    def forward(self, x: Tensor) -> Tensor:
        layout = torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
            else torch.contiguous_format
        for name in self.policy:
            x = color(x, self.channels_per_image) if name == "color" else OPERATIONS[name](x)
        return x.contiguous(memory_format=layout)  # the layout the discriminator was given

    def extra_repr(self) -> str:
        return f"policy={','.join(self.policy)}"
