"""The history buffer of generated images (Shrivastava et al. 2017) that CycleGAN's discriminators train on.

Until the pool is full every fake is stored and returned as is; after that each query returns, with
probability 1/2, a stored older fake (replacing it with the new one), else the new fake. The
discriminator then sees fakes from many past generators, which damps oscillation.

The stored images (a buffer) and the count (extra state, a Python int: no device sync per query) are
in the state dict, so checkpoints keep them and a resumed run continues with the same history. Random draws use torch's generator (seeded, restored on resume).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ImagePool(nn.Module):
    def __init__(self, size: int, image_shape: tuple[int, int, int]):
        super().__init__()
        self.size = size
        self.register_buffer("images", torch.zeros(size, *image_shape))
        self.count = 0

    def get_extra_state(self) -> dict:
        return {"count": self.count}

    def set_extra_state(self, state: dict) -> None:
        self.count = int(state["count"])

    @torch.no_grad()
    def query(self, fakes: Tensor) -> Tensor:
        if self.size == 0:
            return fakes
        out = []
        for fake in fakes:
            if self.count < self.size:
                self.images[self.count] = fake
                self.count += 1
                out.append(fake)
            elif torch.rand(()) < 0.5:
                i = int(torch.randint(self.size, ()))
                out.append(self.images[i].to(fake.dtype, copy=True))
                self.images[i] = fake
            else:
                out.append(fake)
        return torch.stack(out)
