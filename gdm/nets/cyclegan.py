"""CycleGAN's nets (Zhu et al. 2017, and the reference code pytorch-CycleGAN-and-pix2pix).

- `ResnetGenerator`: 7x7 conv, two stride-2 downsamplings, residual blocks at 1/4 resolution (9 above
  128 px, 6 at or below, as in the paper), two stride-2 transposed-conv upsamplings, 7x7 conv, tanh.
  Reflection padding; instance norm without affine parameters, so the convs keep their biases.
- `PatchDiscriminator`: the 70x70 PatchGAN: three stride-2 4x4 convs (64, 128, 256 channels), a
  stride-1 conv (512) and a 1-channel stride-1 conv, LeakyReLU 0.2. It scores each overlapping 70x70
  patch: a 256 px image gives a 30x30 map of logits.

With 3-channel images, ngf = ndf = 64 and instance norm these have exactly the reference code's
parameter counts: 11,378,179 (9 blocks) and 2,764,737.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field
from torch import Tensor, nn

from gdm.errors import GdmError
from gdm.nets.init import init_normal
from gdm.option_types import Count, NonNegativeInt, Width, checked

NORMS = ("instance", "batch", "none")
Norm = Annotated[Literal["instance", "batch", "none"], Field(
    description="instance: affine-free instance norm (CycleGAN's); batch: pix2pix's")]
Dropout = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False, description="dropout probability; pix2pix's 0.5")]
InitStd = Annotated[float, Field(gt=0, allow_inf_nan=False, description="std of the N(0, std) init; 0.02")]


def norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        # Instance norm (per sample and channel, biased variance, eps 1e-5, no affine), computed as a group
        # norm with one channel per group: the same function, but ~10% faster per CycleGAN training step
        # on the CPU than nn.InstanceNorm2d, whose CPU path runs batch norm on a reshaped copy.
        return nn.GroupNorm(channels, channels, affine=False)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise GdmError(f"norm='{kind}' is not a CycleGAN normalisation; choose one of {', '.join(NORMS)}.")


def conv_bias(norm: str) -> bool:
    # Batch norm's shift makes a conv bias redundant; affine-free instance norm has no shift, so the
    # reference code keeps the bias there.
    return norm != "batch"


class ResnetBlock(nn.Module):
    def __init__(self, channels: int, norm: str, dropout: float):
        super().__init__()
        bias = conv_bias(norm)
        layers = [nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), norm_layer(norm, channels),
                  nn.ReLU(True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), norm_layer(norm, channels)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


def default_blocks(image_size: int) -> int:
    return 9 if image_size > 128 else 6


class ResnetGenerator(nn.Module):
    """Image (N, C, H, W) in [-1, 1] -> image of the same shape in [-1, 1]; H and W multiples of 4.
    Fully convolutional: it translates images of any such size, not only the training size."""

    @checked
    def __init__(self, image_shape: tuple[int, int, int], ngf: Width = 64,
                 n_blocks: Annotated[NonNegativeInt | None, Field(
                     description="residual blocks; null: 9 above 128 px, else 6 (the paper)")] = None,
                 norm: Norm = "instance", dropout: Dropout = 0.0, init_std: InitStd = 0.02):
        super().__init__()
        in_channels = out_channels = image_shape[0]
        if image_shape[1] % 4 or image_shape[2] % 4:
            raise GdmError(f"The ResNet generator halves the image twice, so its sides must be multiples of 4, got "
                           f"{image_shape[2]}x{image_shape[1]}: set the data's image_size to one (e.g. 128 or 256).")
        n_blocks = default_blocks(image_shape[-1]) if n_blocks is None else n_blocks
        bias = conv_bias(norm)
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7, bias=bias),
                                   norm_layer(norm, ngf), nn.ReLU(True)]
        ch = ngf
        for _ in range(2):
            layers += [nn.Conv2d(ch, ch * 2, 3, stride=2, padding=1, bias=bias), norm_layer(norm, ch * 2),
                       nn.ReLU(True)]
            ch *= 2
        layers += [ResnetBlock(ch, norm, dropout) for _ in range(n_blocks)]
        for _ in range(2):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 3, stride=2, padding=1, output_padding=1, bias=bias),
                       norm_layer(norm, ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ch, out_channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        init_normal(self, init_std)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class PatchDiscriminator(nn.Module):
    """Image (N, C, H, W) -> logits (N, 1, H', W'), one per overlapping patch (70x70 with 3 layers)."""

    @checked
    def __init__(self, image_shape: tuple[int, int, int], ndf: Width = 64,
                 n_layers: Annotated[Count, Field(description="strided convs; 3: the 70x70 PatchGAN")] = 3,
                 norm: Norm = "instance", init_std: InitStd = 0.02):
        super().__init__()
        in_channels, min_size = image_shape[0], 4 * 2**n_layers
        if min(image_shape[1:]) < min_size:
            raise GdmError(f"A PatchGAN discriminator with n_layers={n_layers} needs images of at least {min_size} px, "
                           f"got {min(image_shape[1:])}: use larger images (the data's image_size) or lower n_layers.")
        bias = conv_bias(norm)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        ch = ndf
        for i in range(1, n_layers + 1):
            out = ndf * min(2**i, 8)
            stride = 2 if i < n_layers else 1  # n_layers strided convs in all, counting the first
            layers += [nn.Conv2d(ch, out, 4, stride=stride, padding=1, bias=bias), norm_layer(norm, out),
                       nn.LeakyReLU(0.2, True)]
            ch = out
        layers.append(nn.Conv2d(ch, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*layers)
        init_normal(self, init_std)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
