"""What a model can do, as the one way evaluation and the tasks ask: `isinstance(model, Samples)`.

- `Samples`: draws images: sample i of a fixed, seeded sequence (`generate`). Conditional models
  (`conditional = True`) draw class-balanced labels unless given labels.
- `Translates`: maps images of one domain to another (`translate`, `directions`).

Everything a metric needs from the data is passed in as an argument (a loader, example images), so
models never read the trainer's datamodule.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence

import torch


class Samples(ABC):
    conditional: bool = False

    @abstractmethod
    def generate(self, indices: Sequence[int] | torch.Tensor, seed: int = 0,
                 labels: torch.Tensor | None = None) -> torch.Tensor:
        """Samples number `indices` of the model's seeded sample sequence: (len(indices), C, H, W) in [-1, 1].
        A conditional model draws class `labels[i]` for sample i when labels are given."""

    def prepare_sampling(self, train_batches: Iterable[dict]) -> None:  # noqa: B027 (optional hook)
        """Called before each evaluation's sampling with this process's share of the training split (a model
        that samples from a fitted latent distribution, like the AE, refits it here)."""


# Translation directions between domains A and B: direction -> (source domain, target domain), and the way back.
DIRECTIONS = {"AtoB": ("A", "B"), "BtoA": ("B", "A")}
REVERSE = {"AtoB": "BtoA", "BtoA": "AtoB"}


class Translates(ABC):
    # direction -> (source domain, target domain)
    directions: dict[str, tuple[str, str]] = {}
    reverse: dict[str, str] = {}
    size_multiple: int = 4  # image sides the generator takes are multiples of this (its stride-2 stages)

    @abstractmethod
    def translate(self, images: torch.Tensor, direction: str) -> torch.Tensor:
        """Images (N, C, H, W) in [-1, 1] of the direction's source domain -> the target domain, in [-1, 1]."""
