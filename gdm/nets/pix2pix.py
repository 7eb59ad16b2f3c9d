"""pix2pix's generator (Isola et al. 2017, and the reference code pytorch-CycleGAN-and-pix2pix).

`UnetGenerator`: an encoder of `num_downs` stride-2 4x4 convs (ngf, 2 ngf, 4 ngf, then 8 ngf) down to
1x1 at the training size, a mirrored decoder of stride-2 4x4 transposed convs, and a skip connection
from each encoder level to the decoder level of the same size (channel concatenation). `unet_256` is
num_downs = 8 (256 px -> 1x1), `unet_128` num_downs = 7. As in the reference code: LeakyReLU 0.2 down,
ReLU up, no norm on the outermost conv and on the innermost one's input, tanh out, and dropout 0.5 after
the num_downs - 5 decoder blocks above the innermost one (the three 8 ngf blocks of unet_256, the
paper's "dropout in the first layers of the decoder").

With 3 input and 3 output channels, ngf = 64 and batch norm this has the reference code's parameter
counts: 54,413,955 (unet_256) and 41,828,995 (unet_128). The discriminator is CycleGAN's 70x70
PatchGAN (`gdm.nets.cyclegan.PatchDiscriminator`), given input and output concatenated (6 channels).
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field, Strict
from torch import Tensor, nn

from gdm.errors import GdmError
from gdm.nets.cyclegan import Dropout, InitStd, Norm, conv_bias, norm_layer
from gdm.nets.dcgan import init_normal
from gdm.option_types import Width, checked


class UnetBlock(nn.Module):
    """One level: down(x) -> inner level -> up, returned beside x (the skip), except at the outermost."""

    def __init__(self, outer: int, inner: int, norm: str, inner_block: nn.Module | None = None,
                 in_channels: int | None = None, outermost: bool = False, dropout: float = 0.0):
        super().__init__()
        bias = conv_bias(norm)
        down_conv = nn.Conv2d(in_channels or outer, inner, 4, stride=2, padding=1, bias=bias)
        self.outermost = outermost
        if outermost:
            up_conv = nn.ConvTranspose2d(inner * 2, outer, 4, stride=2, padding=1)
            layers = [down_conv, inner_block, nn.ReLU(True), up_conv, nn.Tanh()]
        elif inner_block is None:  # innermost: its 1x1 output has no batch statistics to normalize with
            up_conv = nn.ConvTranspose2d(inner, outer, 4, stride=2, padding=1, bias=bias)
            layers = [nn.LeakyReLU(0.2, True), down_conv, nn.ReLU(True), up_conv, norm_layer(norm, outer)]
        else:
            up_conv = nn.ConvTranspose2d(inner * 2, outer, 4, stride=2, padding=1, bias=bias)
            layers = [nn.LeakyReLU(0.2, True), down_conv, norm_layer(norm, inner), inner_block, nn.ReLU(True),
                      up_conv, norm_layer(norm, outer)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        self.block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x) if self.outermost else torch.cat([x, self.block(x)], 1)


class UnetGenerator(nn.Module):
    """Image (N, C, H, W) in [-1, 1] -> image (N, C, H, W) in [-1, 1]; H and W multiples of 2**num_downs.
    `num_downs`: 8 = unet_256, 7 = unet_128 (the image size that the innermost level sees as 1x1)."""

    @checked
    def __init__(self, image_shape: tuple[int, int, int],
                 num_downs: Annotated[int, Strict(), Field(ge=5, description=(
                     "downsamplings to 1x1, at least 5 as ngf to 8 ngf takes four levels: "
                     "8 = unet_256, 7 = unet_128"))] = 8,
                 ngf: Width = 64, norm: Norm = "batch", dropout: Dropout = 0.5, init_std: InitStd = 0.02):
        super().__init__()
        channels = image_shape[0]
        if image_shape[1] % 2**num_downs or image_shape[2] % 2**num_downs:
            raise GdmError(f"A U-Net with num_downs={num_downs} halves the image {num_downs} times, so its sides must "
                           f"be multiples of {2**num_downs}, got {image_shape[2]}x{image_shape[1]}: set "
                           "the data's image_size to one, or pick a U-Net with fewer levels.")
        block = UnetBlock(ngf * 8, ngf * 8, norm)
        for _ in range(num_downs - 5):
            block = UnetBlock(ngf * 8, ngf * 8, norm, block, dropout=dropout)
        for mult in (4, 2, 1):
            block = UnetBlock(ngf * mult, ngf * mult * 2, norm, block)
        self.net = UnetBlock(channels, ngf, norm, block, in_channels=channels, outermost=True)
        self.num_downs = num_downs
        init_normal(self, init_std)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
