"""Metrics of a translation model (CycleGAN), both ways, over each `split` image of the source domain once.

- `val/fid_<features>_AtoB`: FID of the translated A images against the real B images of `real_split`
  (and `_BtoA` the other way); `val/fid_<features>` is their mean, the default monitor.
- `val/label_kept_AtoB` / `_BtoA`: on labelled pairs with a classifier that reads both domains, the
  fraction of translations whose class is the source image's class (the translation kept the digit).
- `val/cycle_l1_a` / `_b`: mean |x - translated back(translated(x))| of the `split` images of A / B
  (images in [-1, 1]), each image counted once.

As in the sample metrics: real features from the cache, uint8 like the saved PNGs, images split across
DDP processes by index and the per-image results gathered in index order.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field

from gdm.errors import GdmError
from gdm.evaluation.context import Evaluation, MetricResult
from gdm.evaluation.protocol import QUANTIZATION, with_id
from gdm.images import to_uint8
from gdm.metrics.frechet import frechet_distance
from gdm.models.capabilities import Translates
from gdm.option_types import checked

LABEL_CLASSIFIERS = ("auto", "digits_colour", "none")
LabelClassifier = Annotated[Literal["auto", "digits_colour", "none"], Field(
    description="auto: the digits_colour classifier on labelled two-domain digits, else off")]
Split = Annotated[Literal["train", "val", "test"], Field(description="a split of each domain")]


def load_label_classifier(choice: str, data, features: str):
    """The classifier that reads the labels of translated images (label preservation), or None.
    `choice` (a metric's `label_classifier`): auto = digits_colour on labelled two-domain digit data, else none.
    Raises GdmError when a classifier is asked for and the data has no labels."""
    labelled = {"label_a", "label_b"} <= data.provides
    if choice == "auto":
        choice = "digits_colour" if labelled and features == "digits_colour" else "none"
    if choice == "none":
        return None
    if not labelled:
        raise GdmError(f"label_classifier={choice} needs labelled images in both domains, and this data "
                       "has none: set label_classifier=none.")
    from gdm.metrics.digits_classifier import load_digit_classifier

    with torch.random.fork_rng(devices=[]):  # loading draws nothing from the training RNG
        return load_digit_classifier(choice)


class TranslationQuality:
    families = ("fid", "cycle_l1", "label_kept")  # val/<family>_...

    @checked
    def __init__(self, split: Split = "test", real_split: Split = "test", label_classifier: LabelClassifier = "auto"):
        self.split, self.real_split, self.label_classifier = split, real_split, label_classifier
        self.classifier = None

    def check(self, model, data, features: str) -> None:
        if not isinstance(model, Translates):
            raise GdmError(f"metrics=translation measures translation models (model=cyclegan), not "
                           f"{type(model).__name__}: use metrics=fid.")
        for source, target in model.directions.values():
            for split in (f"{source}/{self.split}", f"{target}/{self.real_split}"):
                if len(data.split(split)) < 2:
                    raise GdmError(f"the translation metrics need at least 2 images in {split} for FID, and it has "
                                   f"{len(data.split(split))}: add images to that folder.")
        if self.classifier is None:
            self.classifier = load_label_classifier(self.label_classifier, data, features)

    def names(self, model, data, features: str) -> list[str]:
        """The values `__call__` logs (after `check`), known before it runs."""
        names = [f"val/fid_{features}"]
        for direction, (source, _) in model.directions.items():
            names += [f"val/fid_{features}_{direction}", f"val/cycle_l1_{source.lower()}"]
            names += [f"val/label_kept_{direction}"] if self.classifier is not None else []
        return names

    @torch.no_grad()
    def __call__(self, ev: Evaluation) -> MetricResult:
        name = ev.feature_protocol["name"]
        result = MetricResult()
        model = ev.model
        for direction, (source, target) in model.directions.items():
            real = ev.real_features(f"{target}/{self.real_split}")
            dataset = ev.split(f"{source}/{self.split}")
            features, cycle, kept = [], [], []
            for batch in ev.loader(dataset):
                images = batch["image"].to(ev.device)
                translated = model.translate(images, direction)
                back = model.translate(translated, model.reverse[direction])
                cycle.append((back - images).abs().flatten(1).mean(1))
                features.append(ev.featurize(translated))
                if self.classifier is not None:
                    self.classifier.to(ev.device)
                    predicted = self.classifier(to_uint8(translated)).argmax(1)
                    kept.append((predicted == batch["label"].to(ev.device)).float())
            n = len(dataset)
            fake = ev.gather(torch.cat(features), n)
            protocol = {"features": ev.feature_protocol, "quantization": QUANTIZATION, "direction": direction,
                        "num_generated": n, "split": f"{source}/{self.split}", "num_real": real.shape[0],
                        "real_split": f"{target}/{self.real_split}"}
            values = {f"val/fid_{name}_{direction}": frechet_distance(real, fake),
                      f"val/cycle_l1_{source.lower()}": ev.gather(torch.cat(cycle), n).mean().item()}
            if kept:
                values[f"val/label_kept_{direction}"] = ev.gather(torch.cat(kept), n).mean().item()
            for key, value in values.items():
                result.values[key] = value
                result.protocols[key] = with_id({"metric": key.split("/")[1].rsplit(f"_{direction}", 1)[0], **protocol})
        mean = f"val/fid_{name}"
        result.values[mean] = (result.values[f"{mean}_AtoB"] + result.values[f"{mean}_BtoA"]) / 2
        result.protocols[mean] = with_id({**result.protocols[f"{mean}_AtoB"], "metric": "fid (mean of AtoB, BtoA)",
                                          "direction": "both"})
        return result
