"""The time-conditioned U-Net of diffusion and flow models (Ho et al. 2020's DDPM net with the refinements of
Dhariwal & Nichol 2021 and Karras et al. 2022's DDPM++): residual blocks whose group norm is modulated by the
noise level's embedding (scale and shift), self-attention at the lowest resolutions, dropout, a zero-initialised
last layer of each residual branch and of the output, and an optional class embedding with one extra "null" class
for classifier-free guidance (Ho & Salimans 2022).

For speed on small images the net can first fold `patch_size` x `patch_size` pixel blocks into channels (a
pixel-unshuffle stem, as the patch embedding of DiT / U-ViT) and unfold them at the end: the U-Net then runs at
1 / patch_size of the resolution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from gdm.errors import GdmError
from gdm.option_types import Count, checked

Probability0 = Annotated[float, Field(ge=0, lt=1, strict=True, allow_inf_nan=False)]


def positional_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding (Vaswani et al. 2017, as in DDPM) of scalar noise levels / times `t` (N,) ->
    (N, dim): cos and sin of t times frequencies from 1 down to 1 / max_period."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels)  # 32 groups as in DDPM, fewer for narrow layers


def zero(module: nn.Module) -> nn.Module:
    """Zero-initialised: each residual branch starts as the identity (DDPM++ / ADM)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = group_norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)  # scale and shift of the second norm (ADM's use_scale_shift_norm)
        self.norm2, self.dropout = group_norm(c_out), nn.Dropout(dropout)
        self.conv2 = zero(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(self.dropout(F.silu(h)))


class Attention(nn.Module):
    def __init__(self, channels: int, head_dim: int = 64):
        super().__init__()
        self.heads = max(1, channels // head_dim)
        self.norm, self.qkv = group_norm(channels), nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # (n, heads, hw, c / heads)
        return x + self.proj(out.transpose(-1, -2).reshape(n, c, h, w))


class UNet(nn.Module):
    """(N, C, H, W) noisy images, (N,) noise levels or times (the formulation's `c_noise`), optional (N,) labels
    (`num_classes` = the null label of classifier-free guidance) -> (N, C, H, W), the formulation's target.

    Sized from the data: the U-Net runs at (H / patch_size, W / patch_size) and halves it len(channel_mult) - 1
    times; self-attention at the resolutions whose side is at most `attention_below` (the lowest, by default) and
    in the middle block there.
    Raises GdmError when the image side is not divisible by patch_size * 2^(levels - 1).
    """

    @checked
    def __init__(self, image_shape: tuple[int, int, int], num_classes: int | None = None,
                 channels: Annotated[Count, Field(description="channels at the first level; 128 in DDPM")] = 64,
                 channel_mult: Annotated[Sequence[Count], Field(
                     description="channels per level as multiples of `channels`; DDPM's (1, 2, 2, 2) at 32 px")] = (
                     1, 2, 2),
                 num_res_blocks: Annotated[Count, Field(description="residual blocks per level; 2 in DDPM")] = 2,
                 attention_below: Annotated[int | None, Field(ge=0, strict=True, description=(
                     "self-attention at the levels whose side is at most this; 0: none; null: the lowest level only"
                 ))] = None,
                 dropout: Annotated[Probability0, Field(description="dropout in the residual blocks; 0.1 in DDPM")
                                    ] = 0.1,
                 patch_size: Annotated[Count, Field(
                     description="pixel blocks folded into channels before the U-Net (1: none)")] = 2):
        super().__init__()
        c, h, w = image_shape
        levels = len(channel_mult)
        step = patch_size * 2 ** (levels - 1)
        if h % step or w % step:
            halvings = {1: "once", 2: "twice"}.get(levels - 1, f"{levels - 1} times")
            raise GdmError(f"the U-Net folds patch_size={patch_size} pixels and halves the resolution "
                           f"{halvings}, so the image sides must be multiples of {step}, and the data's "
                           f"are {h} x {w}: change patch_size or channel_mult, or the image size of the data.")
        self.patch_size, self.num_classes = patch_size, num_classes
        emb_dim = 4 * channels
        self.embed_channels = channels
        self.time_mlp = nn.Sequential(nn.Linear(channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # one more class than the data has: the null label of classifier-free guidance
        self.label_embedding = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        self.stem = nn.Conv2d(c * patch_size**2, channels, 3, padding=1)
        widths = [channels * m for m in channel_mult]
        side = h // patch_size
        if attention_below is None:
            attention_below = side // 2 ** (levels - 1)
        self.down, skips, ch = nn.ModuleList(), [channels], channels
        for level, width in enumerate(widths):
            for _ in range(num_res_blocks):
                self.down.append(self._block(ch, width, emb_dim, dropout, side <= attention_below))
                ch = width
                skips.append(ch)
            if level < levels - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
                side //= 2
        middle = [Attention(ch)] if side <= attention_below else []
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb_dim, dropout), *middle, ResBlock(ch, ch, emb_dim, dropout)])
        self.up = nn.ModuleList()
        for level, width in reversed(list(enumerate(widths))):
            for _ in range(num_res_blocks + 1):
                self.up.append(self._block(ch + skips.pop(), width, emb_dim, dropout, side <= attention_below))
                ch = width
            if level > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                             nn.Conv2d(ch, ch, 3, padding=1)))
                side *= 2
        self.out = nn.Sequential(group_norm(ch), nn.SiLU(), zero(nn.Conv2d(ch, c * patch_size**2, 3, padding=1)))

    @staticmethod
    def _block(c_in: int, c_out: int, emb_dim: int, dropout: float, attention: bool) -> nn.Module:
        block = ResBlock(c_in, c_out, emb_dim, dropout)
        return nn.ModuleList([block, Attention(c_out)]) if attention else block

    @staticmethod
    def _run(layer: nn.Module, h: Tensor, emb: Tensor) -> Tensor:
        if isinstance(layer, ResBlock):
            return layer(h, emb)
        if isinstance(layer, nn.ModuleList):  # residual block + attention
            return layer[1](layer[0](h, emb))
        return layer(h)  # down- or upsampling

    def forward(self, x: Tensor, c_noise: Tensor, labels: Tensor | None = None) -> Tensor:
        emb = self.time_mlp(positional_embedding(c_noise.reshape(-1).expand(x.shape[0]), self.embed_channels)
                            .to(x.dtype))
        if self.label_embedding is not None:
            null = torch.full((x.shape[0],), self.num_classes, device=x.device, dtype=torch.long)
            emb = emb + self.label_embedding(null if labels is None else labels)
        h = self.stem(F.pixel_unshuffle(x, self.patch_size) if self.patch_size > 1 else x)
        skips = [h]
        for layer in self.down:
            h = self._run(layer, h, emb)
            skips.append(h)
        for layer in self.mid:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        for layer in self.up:
            if isinstance(layer, nn.Sequential):
                h = layer(h)
            else:
                h = self._run(layer, torch.cat([h, skips.pop()], dim=1), emb)
        out = self.out(h)
        return F.pixel_shuffle(out, self.patch_size) if self.patch_size > 1 else out
