"""Convolutional encoder and decoder, sized from the image shape; shared by the AE and the VAE.

The encoder halves the resolution with stride-2 convolutions down to 4x4 (channels doubling up to
8 x width) and maps to `out_features` with a linear layer; the decoder mirrors it. The decoder
emits `params_per_channel` maps per image channel (e.g. mean and log-variance), unconstrained:
the likelihood decides what they mean.
"""

from __future__ import annotations

import torch
from torch import nn

from gdm.nets.dcgan import num_doublings


class ConvEncoder(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], out_features: int, width: int = 32):
        super().__init__()
        channels, size, _ = image_shape
        layers: list[nn.Module] = []
        ch_in, ch = channels, width
        for _ in range(num_doublings(size)):
            layers += [nn.Conv2d(ch_in, ch, 4, 2, 1), nn.SiLU()]
            ch_in, ch = ch, min(ch * 2, width * 8)
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(ch_in * 16, out_features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


class ConvDecoder(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int, width: int = 32,
                 params_per_channel: int = 1):
        super().__init__()
        channels, size, _ = image_shape
        n_up = num_doublings(size)
        self.ch = width * min(2 ** (n_up - 1), 8)
        self.project = nn.Sequential(nn.Linear(latent_dim, self.ch * 16), nn.SiLU())
        layers: list[nn.Module] = []
        ch = self.ch
        for i in range(n_up - 1):
            out = width * min(2 ** (n_up - 2 - i), 8)
            layers += [nn.ConvTranspose2d(ch, out, 4, 2, 1), nn.SiLU()]
            ch = out
        layers.append(nn.ConvTranspose2d(ch, channels * params_per_channel, 4, 2, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.project(z).view(z.shape[0], self.ch, 4, 4))
