"""`val/class_acc`: how often a classifier reads the requested class in a conditional model's samples.

Each evaluation generates `samples_per_class` images of every class (seeded, fixed indices; sample i has
class i // samples_per_class) and classifies them with the shipped digits network (`classifier: digits`,
the network FID's digits features come from); `auto` uses it on digit data (data whose FID features are
the digits network, 10 classes) and otherwise leaves the metric off. Each DDP process classifies its
share of the samples by index; the hits are gathered, so the value does not depend on the processes. The
protocol records how the samples were drawn (the model's `sampling_protocol()`, read after generating).
"""

from __future__ import annotations

import logging
from typing import Annotated, Literal

import torch
from pydantic import Field

from gdm.errors import GdmError
from gdm.evaluation.context import QUANTIZATION, Evaluation, MetricResult, file_sha256, with_id
from gdm.images import to_uint8
from gdm.models.base import Samples
from gdm.option_types import Count, NonNegativeInt, checked

CLASSIFIERS = ("auto", "digits", "none")
Classifier = Annotated[Literal["auto", "digits", "none"], Field(
    description="auto: the digits classifier on the digits, else off")]
log = logging.getLogger(__name__)


class ClassAccuracy:
    families = ("class_acc",)  # val/<family>

    @checked
    def __init__(self, classifier: Classifier = "auto", samples_per_class: Count = 100, seed: NonNegativeInt = 0):
        self.choice, self.samples_per_class, self.seed = classifier, samples_per_class, seed
        self.classifier = None

    def check(self, model, data, features: str) -> None:
        """Decide whether the metric applies (a conditional sampler, a classifier for its classes)."""
        if not (isinstance(model, Samples) and model.conditional):
            return
        if getattr(model, "clusters", None) is not None:  # k-means clusters are not classes a classifier reads
            log.info("val/class_acc is off: the model is conditioned on k-means clusters, not classes.")
            return
        num_classes = len(model.class_probs)
        choice = self.choice
        if choice == "auto":
            digit_data = getattr(data, "fid_features", None) == "digits" and num_classes == 10
            choice = "digits" if digit_data else "none"
            if choice == "none":
                log.info("val/class_acc is off: no classifier for this data (classifier=auto).")
        if choice == "none":
            return
        if num_classes != 10:
            raise GdmError(f"classifier=digits reads 10 digit classes, but the data has "
                           f"{num_classes}: set classifier=none.")
        if self.classifier is None:
            from gdm.metrics.features import load_digit_classifier

            with torch.random.fork_rng(devices=[]):  # keep the training run's RNG stream untouched
                self.classifier = load_digit_classifier()

    def names(self, model, data, features: str) -> list[str]:
        """The value `__call__` logs once `check` has picked a classifier, else none."""
        return ["val/class_acc"] if self.classifier is not None else []

    @torch.no_grad()
    def __call__(self, ev: Evaluation) -> MetricResult:
        if self.classifier is None:
            return MetricResult()
        from gdm.metrics.features import weights_path

        self.classifier.to(ev.device)
        classes = len(ev.model.class_probs)
        n = classes * self.samples_per_class
        labels = torch.arange(classes).repeat_interleave(self.samples_per_class)
        hits = []
        for indices in ev.shard(n).split(ev.batch_size):
            target = labels[indices].to(ev.device)
            images = ev.model.generate(indices, seed=self.seed, labels=target)
            hits.append((self.classifier(to_uint8(images)).argmax(1) == target).float())
        mine = torch.cat(hits) if hits else torch.empty(0, device=ev.device)
        accuracy = ev.gather(mine, n).mean().item()
        path = weights_path("digits")
        protocol = with_id({"metric": "class_acc", "classifier": {"name": "digits", "weights_file": path.name,
                                                                  "weights_sha256": file_sha256(path)},
                            "quantization": QUANTIZATION, "num_generated": n,
                            "samples_per_class": self.samples_per_class, "sample_seed": self.seed,
                            "sampling": ev.model.sampling_protocol()})
        return MetricResult({"val/class_acc": accuracy}, {"val/class_acc": protocol})
