"""The time-conditioned MLP of diffusion and flow models over vectors: the latent codes of a gdm autoencoder
(latent diffusion / flow, Rombach et al. 2022) and low-dimensional toy distributions. Residual blocks of
layer norm, SiLU and linear layers, each modulated by the noise level's embedding (scale and shift, as the
U-Net's), the last layer of each branch zero-initialised."""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from gdm.nets.unet import positional_embedding, zero
from gdm.option_types import Count, checked


class MLPBlock(nn.Module):
    def __init__(self, width: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm, self.fc1 = nn.LayerNorm(width), nn.Linear(width, width)
        self.emb, self.dropout = nn.Linear(emb_dim, 2 * width), nn.Dropout(dropout)
        self.fc2 = zero(nn.Linear(width, width))

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.emb(emb).chunk(2, dim=1)
        h = self.norm(x) * (1 + scale) + shift
        return x + self.fc2(self.dropout(F.silu(self.fc1(F.silu(h)))))


class TimeMLP(nn.Module):
    """(N, D) noisy vectors, (N,) noise levels or times, optional (N,) labels (`num_classes`: the null label of
    classifier-free guidance) -> (N, D), the formulation's target."""

    @checked
    def __init__(self, image_shape: tuple[int, ...], num_classes: int | None = None,
                 width: Annotated[Count, Field(description="hidden units")] = 256,
                 depth: Annotated[Count, Field(description="residual blocks")] = 4,
                 dropout: Annotated[float, Field(ge=0, lt=1, strict=True, allow_inf_nan=False)] = 0.0):
        super().__init__()
        (dim,) = image_shape
        self.width, self.num_classes = width, num_classes
        self.time_mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.label_embedding = nn.Embedding(num_classes + 1, width) if num_classes else None
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(MLPBlock(width, width, dropout) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), zero(nn.Linear(width, dim)))

    def forward(self, x: Tensor, c_noise: Tensor, labels: Tensor | None = None) -> Tensor:
        emb = self.time_mlp(positional_embedding(c_noise.reshape(-1).expand(x.shape[0]), self.width).to(x.dtype))
        if self.label_embedding is not None:
            null = torch.full((x.shape[0],), self.num_classes, device=x.device, dtype=torch.long)
            emb = emb + self.label_embedding(null if labels is None else labels)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h)
