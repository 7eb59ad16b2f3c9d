"""A small CNN that reads handwritten digits: the feature network of the digits FID and the judge of
class accuracy. It takes uint8 images of any size and 1 or 3 channels, as FID feature networks do."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INPUT_SIZE = 32


def conv_block(c_in: int, c_out: int, n: int) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i in range(n):
        layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(True)]
    return layers + [nn.MaxPool2d(2)]


class DigitClassifier(nn.Module):
    """uint8 (N, C, H, W) -> 10 logits; `features` gives the 128-d penultimate layer (pre-activation)."""

    num_features = 128

    def __init__(self, num_classes: int = 10, channels: int = 1):
        super().__init__()
        # channels=1 reads luminance (grey digits); channels=3 keeps colour (digits on colour patches).
        self.channels = channels
        self.body = nn.Sequential(
            *conv_block(channels, 32, 2), *conv_block(32, 64, 2), *conv_block(64, 128, 1), nn.Flatten(),
            nn.Linear(128 * 4 * 4, self.num_features),
        )
        self.head = nn.Sequential(nn.ReLU(True), nn.Dropout(0.3), nn.Linear(self.num_features, num_classes))

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images -> (N, channels, 32, 32) floats in [0, 1]: colour reduced to luminance for a
        1-channel net, grey repeated for a 3-channel one."""
        x = images.float() / 255.0
        if x.shape[1] == 1 and self.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[1] == 3 and self.channels == 1:
            x = (x * torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        if x.shape[-1] != INPUT_SIZE or x.shape[-2] != INPUT_SIZE:
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)
        return x

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(self.prepare(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))
