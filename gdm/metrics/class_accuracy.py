"""`val/class_acc`: how often a classifier reads the requested class in a conditional model's samples.

Each evaluation generates `samples_per_class` images of every class (seeded, fixed indices) and
classifies them; torchmetrics sums the counts across DDP processes. The classifier is the shipped
digits network (`classifier: digits`), the one FID's digits features come from; `auto` uses it for
digit data (data whose FID features are the digits network) and otherwise skips the metric, saying so.
"""

from __future__ import annotations

import logging

import lightning as L
import torch
from torchmetrics.classification import MulticlassAccuracy

from gdm.errors import GdmError
from gdm.images import to_uint8

CLASSIFIERS = ("auto", "digits", "none")
log = logging.getLogger(__name__)


class ClassAccuracy(L.Callback):
    def __init__(self, classifier: str = "auto", samples_per_class: int = 100, seed: int = 0,
                 batch_size: int = 250):
        if classifier not in CLASSIFIERS:
            raise GdmError(f"metrics.class_acc.classifier='{classifier}' is not available; choose one of "
                           f"{', '.join(CLASSIFIERS)}.")
        self.choice = classifier
        self.samples_per_class, self.seed, self.batch_size = samples_per_class, seed, batch_size
        self.classifier = None
        self.accuracy: MulticlassAccuracy | None = None

    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        if not getattr(pl_module, "conditional", False):
            return
        num_classes = len(pl_module.class_probs)
        choice = self.choice
        if choice == "auto":
            digit_data = getattr(trainer.datamodule, "fid_features", None) == "digits" and num_classes == 10
            choice = "digits" if digit_data else "none"
            if choice == "none":
                log.info("val/class_acc is off: no classifier for this data (metrics.class_acc.classifier=auto).")
        if choice == "none":
            return
        if num_classes != 10:
            raise GdmError(f"metrics.class_acc.classifier=digits reads 10 digit classes, but the data has "
                           f"{num_classes}: set metrics.class_acc.classifier=none.")
        if self.classifier is None:
            from gdm.metrics.digits_classifier import load_digit_classifier

            with torch.random.fork_rng(devices=[]):  # keep the training run's RNG stream untouched
                self.classifier = load_digit_classifier()
            self.accuracy = MulticlassAccuracy(num_classes=num_classes, average="micro")

    @torch.no_grad()
    def compute(self, trainer: L.Trainer, pl_module) -> torch.Tensor:
        # Here, not in setup: Lightning calls callbacks' setup before it moves the model to its device.
        self.classifier.to(pl_module.device)
        self.accuracy.to(pl_module.device)
        classes = len(pl_module.class_probs)
        labels = torch.arange(classes).repeat_interleave(self.samples_per_class)
        mine = torch.arange(trainer.global_rank, len(labels), trainer.world_size)
        self.accuracy.reset()
        for indices in mine.split(self.batch_size):
            target = labels[indices].to(pl_module.device)
            images = pl_module.generate(indices, seed=self.seed, labels=target)
            self.accuracy.update(self.classifier(to_uint8(images)), target)
        return self.accuracy.compute()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.sanity_checking or self.accuracy is None:
            return
        pl_module.log("val/class_acc", self.compute(trainer, pl_module), on_epoch=True)
