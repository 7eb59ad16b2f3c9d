"""Metrics of a paired translation model (pix2pix), over each `split` pair once: the translation of the
input against the pair's own ground-truth target.

- `val/fid_<features>`: FID of the translations against the real targets of `real_split` (the monitor);
- `val/l1`: mean |translation - target| per pixel, images in [-1, 1] (the paper's L1 term, without lambda);
- `val/psnr`: peak signal-to-noise ratio in dB, per image (data range 255), averaged over the images;
- `val/ssim`: structural similarity (Wang et al. 2004; 11x11 Gaussian window, sigma 1.5), per image, averaged;
- `val/label_kept`: on labelled pairs with a classifier that reads the target domain (the embedded digits
  pair), the fraction of translations whose class is the pair's label.

The paired values are computed on the 8-bit images, exactly as the saved PNGs (torchmetrics' PSNR and SSIM).
As the other metrics: real features from the cache, images split across DDP processes by index and the
per-image results gathered in index order, so values do not depend on the number of processes.
"""

from __future__ import annotations

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from gdm.errors import GdmError
from gdm.evaluation.context import Evaluation, MetricResult
from gdm.evaluation.protocol import QUANTIZATION, with_id
from gdm.images import to_uint8
from gdm.metrics.frechet import frechet_distance
from gdm.metrics.translation import LabelClassifier, Split, load_label_classifier
from gdm.models.capabilities import Translates
from gdm.option_types import checked


def paired_scores(fake: torch.Tensor, real: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per image: L1 in [-1, 1] units, PSNR (dB) and SSIM, of 8-bit translations against 8-bit targets."""
    fake8, real8 = to_uint8(fake).float(), to_uint8(real).float()
    l1 = ((fake8 - real8).abs() / 127.5).flatten(1).mean(1)
    psnr = peak_signal_noise_ratio(fake8, real8, data_range=255.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(fake8, real8, data_range=255.0, reduction="none")
    return {"l1": l1, "psnr": psnr, "ssim": ssim}


class PairedTranslationQuality:
    families = ("fid", "l1", "psnr", "ssim", "label_kept")  # val/<family>[_...]

    @checked
    def __init__(self, split: Split = "test", real_split: Split = "test", label_classifier: LabelClassifier = "auto"):
        self.split, self.real_split, self.label_classifier = split, real_split, label_classifier
        self.classifier = None

    def check(self, model, data, features: str) -> None:
        if not isinstance(model, Translates) or not hasattr(data, "direction"):
            raise GdmError(f"metrics=pix2pix measures a translation model on paired data (model=pix2pix), not "
                           f"{type(model).__name__} on {type(data).__name__}: use metrics=fid or metrics=translation.")
        if self.classifier is None:
            self.classifier = load_label_classifier(self.label_classifier, data, features)

    def names(self, model, data, features: str) -> list[str]:
        """The values `__call__` logs (after `check`), known before it runs."""
        kept = ["val/label_kept"] if self.classifier is not None else []
        return [f"val/fid_{features}", "val/l1", "val/psnr", "val/ssim", *kept]

    @torch.no_grad()
    def __call__(self, ev: Evaluation) -> MetricResult:
        name = ev.feature_protocol["name"]
        model = ev.model
        (direction, (source, target)), = model.directions.items()
        real = ev.real_features(f"{target}/{self.real_split}")
        pairs = ev.split(self.split)
        source_key, target_key = f"image_{source.lower()}", f"image_{target.lower()}"
        features, kept, scores = [], [], {"l1": [], "psnr": [], "ssim": []}
        for batch in ev.loader(pairs):
            translated = model.translate(batch[source_key].to(ev.device), direction)
            features.append(ev.featurize(translated))
            for key, value in paired_scores(translated, batch[target_key].to(ev.device)).items():
                scores[key].append(value)
            if self.classifier is not None:
                self.classifier.to(ev.device)
                predicted = self.classifier(to_uint8(translated)).argmax(1)
                kept.append((predicted == batch[f"label_{target.lower()}"].to(ev.device)).float())
        n = len(pairs)
        protocol = {"quantization": QUANTIZATION, "direction": direction, "num_generated": n, "split": self.split}
        result = MetricResult()
        fid = f"val/fid_{name}"
        result.values[fid] = frechet_distance(real, ev.gather(torch.cat(features), n))
        result.protocols[fid] = with_id({"metric": "fid", "features": ev.feature_protocol, **protocol,
                                         "num_real": real.shape[0], "real_split": f"{target}/{self.real_split}"})
        paired = {"l1": "mean |translation - target| in [-1, 1] units",
                  "psnr": "PSNR (dB, data range 255), mean over images",
                  "ssim": "SSIM (torchmetrics, 11x11 Gaussian, sigma 1.5), mean over images"}
        for key, what in paired.items():
            result.values[f"val/{key}"] = ev.gather(torch.cat(scores[key]).float(), n).mean().item()
            result.protocols[f"val/{key}"] = with_id({"metric": key, "definition": what, **protocol,
                                                      "ground_truth": f"{target}/{self.split}"})
        if kept:
            result.values["val/label_kept"] = ev.gather(torch.cat(kept), n).mean().item()
            result.protocols["val/label_kept"] = with_id({"metric": "label_kept", "classifier": "digits_colour",
                                                          **protocol})
        return result
