"""Reflow (Liu et al. 2023, "Flow Straight and Fast: Learning to Generate and Transfer Data with Rectified Flow",
Algorithm 1): a trained flow (the teacher) draws pairs (x_0, x_1) by solving its ODE from noise x_0; a new rectified
flow trained on these pairs instead of independent (noise, image) pairs learns straighter paths, so that a few Euler
steps (NFE 1-2) sample what the teacher needs many for. The student starts from the teacher's (EMA) weights, as in
Liu et al.'s code (`RectifiedFlow/ImageGeneration`: reflow initialised from the 1-rectified flow).

The pairs are drawn once, before training, by each process (they are a deterministic function of the teacher, the
pair seed and the index, so every process holds the same ones), and kept in memory, not in checkpoints: a resumed
run draws them again from the teacher's file and the pair seed its checkpoint holds.
"""

from __future__ import annotations

import torch
from torch import Tensor


class Couplings:
    """`count` pairs (noise (count, *shape), the teacher's sample (count, *shape)) in the teacher's space, with
    the class label each was drawn for (count,) when the teacher is conditional; `batch` draws a training batch."""

    def __init__(self, noise: Tensor, samples: Tensor, labels: Tensor | None):
        self.noise, self.samples, self.labels = noise, samples, labels

    def __len__(self) -> int:
        return self.noise.shape[0]

    @classmethod
    @torch.no_grad()
    def draw(cls, teacher, count: int, seed: int, batch_size: int = 500) -> Couplings:
        """Pairs 0..count-1 of `teacher` (a `gdm.models.flow.Flow`, on its device, with the sampler it is set to):
        pair i's noise is sample i's of the seeded sequence `seed` (`initial_noise`, as `generate` draws it), its
        x_1 the teacher's ODE solution from it (unclamped, in its space), its label the class-balanced label of
        index i."""
        noise, samples, labels = [], [], []
        for start in range(0, count, batch_size):
            indices = list(range(start, min(start + batch_size, count)))
            x0 = teacher.initial_noise(indices, seed)
            y = teacher.sample_labels(indices, seed)
            with teacher.ema_weights() as net:
                x1 = teacher.solve(net, x0, y, indices, seed)
            noise.append(x0.float().cpu())
            samples.append(x1.float().cpu())
            if y is not None:
                labels.append(y.cpu())
        return cls(torch.cat(noise), torch.cat(samples), torch.cat(labels) if labels else None)

    def batch(self, n: int) -> tuple[Tensor, Tensor, Tensor | None]:
        """`n` pairs drawn uniformly with replacement by the global CPU RNG (its own stream in each DDP process,
        restored on an exact resume: gdm.callbacks.checkpointing):
        (x_0, x_1, labels or None), on the CPU."""
        index = torch.randint(len(self), (n,))
        return self.noise[index], self.samples[index], None if self.labels is None else self.labels[index]
