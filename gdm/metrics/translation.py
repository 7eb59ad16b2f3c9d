"""Metrics of a translation model (CycleGAN), both ways, as a Lightning callback run at each validation.

- `val/fid_<features>_AtoB`: FID of the translated A images of `split` against the real B images of
  `real_split` (and `_BtoA` the other way); `val/fid_<features>` is their mean, the default monitor.
- `val/label_kept_AtoB` / `_BtoA`: on labelled pairs with a classifier that reads both domains, the
  fraction of translations whose class is the source image's class (the translation kept the digit).

- `val/cycle_l1_a` / `_b`: mean |x - translated back(translated(x))| of the `split` images of A / B
  (images in [-1, 1]), each image counted once.

As in FID: real statistics once per run, uint8 like the saved PNGs, images split across DDP processes
by index and the statistics summed by torchmetrics.
"""

from __future__ import annotations

import logging

import lightning as L
import torch
from torch.utils.data import DataLoader, Subset
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from gdm.errors import GdmError
from gdm.images import to_uint8
from gdm.metrics.features import build_features
from gdm.metrics.fid import fid_metric
from gdm.models.cyclegan import DIRECTIONS, REVERSE

log = logging.getLogger(__name__)
LABEL_CLASSIFIERS = ("auto", "digits_colour", "none")


class TranslationMetrics(L.Callback):
    def __init__(self, features: str = "inception", split: str = "test", real_split: str = "test",
                 batch_size: int = 50, label_classifier: str = "auto", inception_weights: str | None = None):
        if label_classifier not in LABEL_CLASSIFIERS:
            raise GdmError(f"metrics.translation.label_classifier='{label_classifier}' is not available; choose "
                           f"one of {', '.join(LABEL_CLASSIFIERS)}.")
        self.features, self.split, self.real_split = features, split, real_split
        self.batch_size, self.label_classifier, self.inception_weights = batch_size, label_classifier, inception_weights
        self.fids: dict | None = None
        self.classifier = None
        self.kept: dict[str, MulticlassAccuracy] = {}
        self.cycle = {d: MeanMetric() for d in DIRECTIONS}
        self.real_ready = False

    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        if not hasattr(pl_module, "translate"):
            raise GdmError(f"metrics=translation measures translation models (model=cyclegan), not "
                           f"{type(pl_module).__name__}: use metrics=fid.")
        if self.fids is None:
            net = build_features(self.features, self.inception_weights)  # one feature net shared by both ways
            self.fids = {d: fid_metric(net) for d in DIRECTIONS}
            choice = self.label_classifier
            labelled = {"label_a", "label_b"} <= trainer.datamodule.provides
            if choice == "auto":
                choice = "digits_colour" if labelled and self.features == "digits_colour" else "none"
            if choice != "none":
                if not labelled:
                    raise GdmError(f"metrics.translation.label_classifier={choice} needs labelled domains, and "
                                   "this data has none: set it to none.")
                self.classifier = net.net if self.features == choice else build_features(choice).net
                self.kept = {d: MulticlassAccuracy(num_classes=10, average="micro") for d in DIRECTIONS}

    def _loader(self, trainer: L.Trainer, split: str) -> DataLoader:
        dataset = trainer.datamodule.split(split)
        mine = Subset(dataset, range(trainer.global_rank, len(dataset), trainer.world_size))
        # Its own generator: a metric must not consume the global RNG and so change the training run.
        return DataLoader(mine, batch_size=self.batch_size, generator=torch.Generator(),
                          num_workers=getattr(trainer.datamodule, "num_workers", 0))

    @torch.no_grad()
    def compute(self, trainer: L.Trainer, pl_module) -> dict[str, torch.Tensor]:
        device = pl_module.device
        values = {}
        for direction, (source, target) in DIRECTIONS.items():
            fid = self.fids[direction].to(device)  # here: callbacks' setup runs before the model moves
            if not self.real_ready:
                for batch in self._loader(trainer, f"{target}/{self.real_split}"):
                    fid.update(to_uint8(batch["image"]).to(device), real=True)
            fid.reset()  # drops the generated side only
            kept = self.kept.get(direction)
            if kept is not None:
                kept.to(device).reset()
                self.classifier.to(device)
            cycle = self.cycle[direction].to(device)
            cycle.reset()
            for batch in self._loader(trainer, f"{source}/{self.split}"):
                real = batch["image"].to(device)
                translated = pl_module.translate(real, direction)
                back = pl_module.translate(translated, REVERSE[direction])
                cycle.update((back - real).abs().flatten(1).mean(1))
                fake = to_uint8(translated)
                fid.update(fake, real=False)
                if kept is not None:
                    kept.update(self.classifier(fake), batch["label"].to(device))
            values[f"val/fid_{self.features}_{direction}"] = fid.compute()
            if kept is not None:
                values[f"val/label_kept_{direction}"] = kept.compute()
            values[f"val/cycle_l1_{source.lower()}"] = cycle.compute()
        self.real_ready = True
        values[f"val/fid_{self.features}"] = (values[f"val/fid_{self.features}_AtoB"]
                                              + values[f"val/fid_{self.features}_BtoA"]) / 2
        return values

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        pl_module.log_dict(self.compute(trainer, pl_module), on_epoch=True, sync_dist=False)
