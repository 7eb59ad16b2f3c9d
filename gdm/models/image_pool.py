"""The history buffer of generated images (Shrivastava et al. 2017) that CycleGAN's discriminators train on.

Until the pool is full every fake is stored and returned as is; after that each query returns, with
probability 1/2, a stored older fake (replacing it with the new one), else the new fake. The
discriminator then sees fakes from many past generators, which damps oscillation.

The stored images and their count are the module's extra state, so checkpoints keep them and a
resumed run continues with the same history; they are not a buffer, which DDP would overwrite with
rank 0's at every step (each process keeps its own history, as each trains on its own images). The
count is a Python int: no device sync per query. Random draws use torch's generator (seeded).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ImagePool(nn.Module):
    def __init__(self, size: int, image_shape: tuple[int, int, int]):
        super().__init__()
        self.size, self.image_shape = size, tuple(image_shape)
        self.images: Tensor | None = None  # (size, C, H, W) float32, allocated on the first query's device
        self.count = 0

    def get_extra_state(self) -> dict:
        return {"count": self.count, "images": self.images[: self.count].cpu() if self.count else torch.empty(0)}

    def set_extra_state(self, state: dict) -> None:
        self.count = int(state["count"])
        self.images = None
        if self.count:
            self.images = torch.zeros(self.size, *self.image_shape)
            self.images[: self.count] = state["images"]

    @torch.no_grad()
    def query(self, fakes: Tensor) -> Tensor:
        if self.size == 0:
            return fakes
        if self.images is None or self.images.device != fakes.device:
            old = self.images
            self.images = torch.zeros(self.size, *fakes.shape[1:], device=fakes.device)
            if old is not None:
                self.images.copy_(old)
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
