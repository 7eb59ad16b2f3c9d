"""FID of a model's samples against a real split, as a Lightning callback run at each validation.

- Real statistics are computed once per run (torchmetrics keeps them with
  `reset_real_features=False`); only the generated side is recomputed at each evaluation.
- Generated samples are numbers 0..num_samples-1 of the model's seeded sample sequence, so the
  value does not depend on batch size. Under DDP each process takes every world_size-th sample
  and every world_size-th real image, and torchmetrics sums the statistics across processes.
- Both sides go through `gdm.images.to_uint8`, the rounding of the saved PNGs.
- Logged as `val/fid_<features>`, e.g. `val/fid_digits`: a domain FID is never named like the
  standard Inception one.
- Optionally KID (`kid_subset_size`, on in task=eval): the same samples and features, logged as
  `val/kid_<features>` and `val/kid_<features>_std` (its spread over the random subsets).
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from gdm.data.base import SPLITS
from gdm.errors import GdmError
from gdm.images import to_uint8
from gdm.metrics.features import build_features
from gdm.models.base import GenerativeModule


class OncePerBatch(nn.Module):
    """A feature network shared by FID and KID that runs once per batch: both metrics are updated with the
    same image tensor in turn, and the second call gets the first call's features."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.num_features = net.num_features  # torchmetrics reads it to size its statistics
        self.last: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.last is None or self.last[0] is not images:
            self.last = (images, self.net(images))
        return self.last[1]


def fid_metric(features: nn.Module) -> FrechetInceptionDistance:
    return FrechetInceptionDistance(feature=features, reset_real_features=False, normalize=False)


class FID(L.Callback):
    def __init__(self, features: str = "digits", num_samples: int = 1000, real_split: str = "train",
                 seed: int = 0, batch_size: int = 250, inception_weights: str | None = None,
                 kid_subset_size: int | None = None):
        if real_split not in SPLITS:
            raise GdmError(f"metrics.fid.real_split='{real_split}' is not a split; choose one of {', '.join(SPLITS)}.")
        self.features = features
        self.name = f"val/fid_{features}"
        self.num_samples, self.real_split, self.seed, self.batch_size = num_samples, real_split, seed, batch_size
        self.inception_weights = inception_weights
        self.metric: FrechetInceptionDistance | None = None
        self.kid_subset_size = kid_subset_size
        self.kid: KernelInceptionDistance | None = None
        self.real_ready = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not is_overridden("generate", pl_module, GenerativeModule):
            raise GdmError(f"metrics=fid scores a model's samples, and {type(pl_module).__name__} draws none (it "
                           "translates): use metrics=translation.")
        if self.metric is None:
            features = build_features(self.features, self.inception_weights)
            if self.kid_subset_size:
                features = OncePerBatch(features)
            self.metric = fid_metric(features)
            if self.kid_subset_size:  # KID's subsets cannot be larger than either side
                size = min(self.kid_subset_size, self.num_samples, len(trainer.datamodule.split(self.real_split)))
                self.kid = KernelInceptionDistance(feature=features, subset_size=size, reset_real_features=False,
                                                   normalize=False)

    @torch.no_grad()
    def _update_real(self, trainer: L.Trainer, device: torch.device) -> None:
        datamodule = trainer.datamodule
        dataset = datamodule.split(self.real_split)
        mine = Subset(dataset, range(trainer.global_rank, len(dataset), trainer.world_size))
        # Its own generator: a metric must not consume the global RNG and so change the training run.
        loader = DataLoader(mine, batch_size=self.batch_size, num_workers=getattr(datamodule, "num_workers", 0),
                            generator=torch.Generator())
        for batch in loader:
            images = to_uint8(batch["image"]).to(device)
            for metric in self._metrics():
                metric.update(images, real=True)
        self.real_ready = True

    @torch.no_grad()
    def compute(self, trainer: L.Trainer, pl_module) -> torch.Tensor:
        """FID now: samples of `pl_module.generate` against the real split."""
        # Here, not in setup: Lightning calls callbacks' setup before it moves the model to its device.
        for metric in self._metrics():
            metric.to(pl_module.device)
        if not self.real_ready:
            self._update_real(trainer, pl_module.device)
        for metric in self._metrics():
            metric.reset()  # drops the generated side only
        mine = torch.arange(trainer.global_rank, self.num_samples, trainer.world_size)
        for indices in mine.split(self.batch_size):
            fake = to_uint8(pl_module.generate(indices, seed=self.seed))
            for metric in self._metrics():
                metric.update(fake, real=False)
        if isinstance(self.metric.inception, OncePerBatch):
            self.metric.inception.last = None  # let go of the last batch
        return self.metric.compute()

    def _metrics(self) -> list:
        return [self.metric] + ([self.kid] if self.kid is not None else [])

    def compute_kid(self) -> tuple[torch.Tensor, torch.Tensor]:
        # KID draws random subsets: seeded, the same on every DDP rank, and off the training run's RNG stream.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return self.kid.compute()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        pl_module.log(self.name, self.compute(trainer, pl_module), on_epoch=True, sync_dist=False)
        if self.kid is not None:
            kid_mean, kid_std = self.compute_kid()
            kid = self.name.replace("val/fid_", "val/kid_")
            pl_module.log_dict({kid: kid_mean, f"{kid}_std": kid_std}, on_epoch=True, sync_dist=False)
