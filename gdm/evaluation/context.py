"""What a metric sees of one evaluation: the model, the data's splits, the feature network, and helpers
that do the shared work once: this process's share of a split or of the sample sequence, the whole
feature set gathered from every process, real features from the cache.

Metrics never touch the trainer: a metric is a plain object called with an `Evaluation`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from gdm.evaluation.protocol import QUANTIZATION
from gdm.evaluation.real_features import RealFeatureCache, dataset_fingerprint
from gdm.evaluation.sharding import gather_rows, shard_indices, shard_loader
from gdm.images import to_uint8

log = logging.getLogger(__name__)


@dataclass
class MetricResult:
    """A metric's output: scalar values by logged name, the protocol of each value, and image grids
    ((N, C, H, W) images in [-1, 1], columns) to save and log."""

    values: dict[str, float] = field(default_factory=dict)
    protocols: dict[str, dict] = field(default_factory=dict)
    grids: dict[str, tuple[torch.Tensor, int]] = field(default_factory=dict)

    def update(self, other: MetricResult) -> None:
        self.values.update(other.values)
        self.protocols.update(other.protocols)
        self.grids.update(other.grids)


@dataclass
class Evaluation:
    model: nn.Module
    data: object  # a SplitDataModule: metrics read its named splits
    features: nn.Module
    cache: RealFeatureCache
    device: torch.device
    rank: int = 0
    world_size: int = 1
    all_gather: Callable[[torch.Tensor], torch.Tensor] | None = None
    all_agree: Callable[[bool], bool] = lambda ok: ok
    batch_size: int = 250
    num_workers: int = 0

    @property
    def feature_protocol(self) -> dict:
        return self.features.protocol()

    def split(self, name: str) -> Dataset:
        return self.data.split(name)

    def loader(self, dataset: Dataset) -> DataLoader:
        """This process's share of `dataset`, in index order."""
        return shard_loader(dataset, self.rank, self.world_size, self.batch_size, self.num_workers)

    def shard(self, n: int) -> torch.Tensor:
        """This process's indices among n (samples or images)."""
        return shard_indices(n, self.rank, self.world_size)

    def gather(self, rows: torch.Tensor, n: int) -> torch.Tensor:
        """Every process's rows of an n-item computation, as one tensor in index order."""
        return gather_rows(rows, n, self.rank, self.world_size, self.all_gather)

    @torch.no_grad()
    def featurize(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images -> float32 features, after the quantization of the saved PNGs."""
        return self.features(to_uint8(images).to(self.device)).float()

    def real_features(self, split: str) -> torch.Tensor:
        """Features of every image of `split` (all processes), from the cache when it has them."""
        dataset = self.split(split)
        fingerprint = dataset_fingerprint(dataset)
        key = None if fingerprint is None else {
            "data": fingerprint, "split": split, "features": {k: v for k, v in self.feature_protocol.items()},
            "quantization": QUANTIZATION}

        def compute() -> torch.Tensor:
            rows = [self.featurize(batch["image"]) for batch in self.loader(dataset)]
            mine = torch.cat(rows) if rows else torch.empty(0, self.features.num_features, device=self.device)
            return self.gather(mine, len(dataset))

        features = self.cache.get(key, compute, self.all_agree, writer=self.rank == 0)
        return features.to(self.device)
