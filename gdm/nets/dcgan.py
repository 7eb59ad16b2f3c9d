"""DCGAN generator and discriminator (Radford et al. 2016), sized from the image shape, optionally
class-conditional: the generator joins a label embedding to the noise, the discriminator adds a
projection term <embed(y), pooled features> (Miyato & Koyama 2018) to its logit.

The generator maps a latent vector to a 4x4 map and doubles the resolution with strided
transposed convolutions until it reaches the image size; the discriminator mirrors it. With a
64x64 image and ngf = ndf = 64 these are exactly the nets of the PyTorch DCGAN example.
`upsample="nearest"` (or "bilinear") doubles the resolution with a resize and a 3x3 convolution
instead, the cure for the transposed convolution's checkerboard artifacts in Odena et al. 2016,
"Deconvolution and Checkerboard Artifacts" (Distill).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as apply_spectral_norm

from gdm.errors import GdmError
from gdm.option_types import Count, Flag, Width, checked


def init_normal(module: nn.Module, std: float = 0.02) -> nn.Module:
    """The DCGAN init, which the CycleGAN and pix2pix reference code keep: conv and linear weights
    ~ N(0, std), norm scales ~ N(1, std), biases 0. Returns `module`, initialised in place."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
    return module


Norm = Annotated[Literal["batch", "instance", "layer", "none"], Field(
    description="the normalisation after each hidden conv; DCGAN's batch")]
Upsample = Annotated[Literal["transposed", "nearest", "bilinear"], Field(
    description="transposed: strided transposed convolutions, as DCGAN; nearest or bilinear: resize + 3x3 "
                "convolution, Odena et al. 2016")]
InitStd = Annotated[float, Field(gt=0, allow_inf_nan=False, description="std of the N(0, std) init; DCGAN's 0.02")]


def num_doublings(size: int) -> int:
    """How many stride-2 stages take 4x4 to `size` x `size`."""
    n = math.log2(size / 4) if size >= 8 else -1
    if n < 1 or n != int(n) or size > 1024:
        raise GdmError(
            f"These conv nets need a square image whose side is a power of two from 8 to 1024, and image_size={size} "
            "is not one: use e.g. 16, 32 or 64."
        )
    return int(n)


def norm_layer(kind: str, channels: int) -> nn.Module:
    layers = {
        "batch": lambda: nn.BatchNorm2d(channels),
        "instance": lambda: nn.InstanceNorm2d(channels, affine=True),
        "layer": lambda: nn.GroupNorm(1, channels),
        "none": nn.Identity,
    }
    if kind not in layers:
        raise GdmError(f"norm='{kind}' is not a known normalisation; choose one of {', '.join(layers)}.")
    return layers[kind]()


def upsampling(kind: str, in_channels: int, out_channels: int) -> list[nn.Module]:
    """(N, in, H, W) -> (N, out, 2H, 2W): a stride-2 4x4 transposed convolution (DCGAN), or a resize
    (`nearest` / `bilinear`) followed by a 3x3 convolution (Odena et al. 2016); no bias, as in DCGAN."""
    if kind == "transposed":
        return [nn.ConvTranspose2d(in_channels, out_channels, 4, 2, 1, bias=False)]
    return [nn.Upsample(scale_factor=2, mode=kind), nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False)]


class DCGANGenerator(nn.Module):
    """z (N, latent_dim) -> images (N, C, H, W) in [-1, 1]."""

    @checked
    def __init__(self, image_shape: tuple[int, int, int], latent_dim: Count = 100, ngf: Width = 64,
                 norm: Norm = "batch", init_std: InitStd = 0.02, num_classes: Count | None = None,
                 label_dim: Count = 50, upsample: Upsample = "transposed"):
        super().__init__()
        channels, height, width = image_shape
        if height != width:
            raise GdmError(f"DCGAN nets need square images, got {height}x{width}: set the data's image_size.")
        n_up = num_doublings(height)
        self.latent_dim = latent_dim
        self.label_embedding = nn.Embedding(num_classes, label_dim) if num_classes else None
        width_mult = min(2 ** (n_up - 1), 8)
        ch = ngf * width_mult
        in_dim = latent_dim + (label_dim if num_classes else 0)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(in_dim, ch, 4, 1, 0, bias=False), norm_layer(norm, ch), nn.ReLU(True),
        ]
        for i in range(n_up - 1):
            out = ngf * min(2 ** (n_up - 2 - i), 8)
            layers += [*upsampling(upsample, ch, out), norm_layer(norm, out), nn.ReLU(True)]
            ch = out
        layers += [*upsampling(upsample, ch, channels), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        init_normal(self, init_std)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.label_embedding is not None:
            z = torch.cat([z, self.label_embedding(labels)], dim=1)
        return self.main(z.view(z.shape[0], -1, 1, 1))


class DCGANDiscriminator(nn.Module):
    """images (N, C, H, W) -> real/fake logits (N,). No sigmoid: the loss decides."""

    @checked
    def __init__(self, image_shape: tuple[int, int, int], ndf: Width = 64, norm: Norm = "batch",
                 spectral_norm: Annotated[Flag, Field(
                     description="spectral normalisation of every layer, Miyato et al. 2018")] = False,
                 init_std: InitStd = 0.02, num_classes: Count | None = None):
        super().__init__()
        channels, height, width = image_shape
        if height != width:
            raise GdmError(f"DCGAN nets need square images, got {height}x{width}: set the data's image_size.")
        n_down = num_doublings(height)
        layers: list[nn.Module] = [nn.Conv2d(channels, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        ch = ndf
        for _ in range(n_down - 1):
            out = min(ch * 2, ndf * 8)
            layers += [nn.Conv2d(ch, out, 4, 2, 1, bias=False), norm_layer(norm, out), nn.LeakyReLU(0.2, True)]
            ch = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(ch, 1, 4, 1, 0, bias=False)
        self.feature_channels = ch
        self.projection = nn.Embedding(num_classes, ch) if num_classes else None
        init_normal(self, init_std)
        if spectral_norm:
            for m in [m for m in self.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]:
                apply_spectral_norm(m)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(images)
        logits = self.head(h).flatten()
        if self.projection is not None:
            logits = logits + (self.projection(labels) * h.sum(dim=(2, 3))).sum(dim=1)
        return logits
