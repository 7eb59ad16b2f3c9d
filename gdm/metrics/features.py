"""Feature networks for FID, by name (`metrics.fid.features`).

- `inception`: the standard 2048-d pool3 features of the TF-ported InceptionV3 that torch-fidelity
  (and so torchmetrics) uses; images are resized to 299 like the original TF code, so values are
  comparable with published FIDs.
- `digits`: the shipped digits classifier's 128-d penultimate layer. A domain FID, only comparable
  with other `fid_digits` values; the logged name always carries the feature name.
- `digits_colour`: the same for the classifier of the embedded CycleGAN pair, which reads digits in
  both domains (grey, and on colour patches), so one feature space serves both translation directions.

Every feature network takes uint8 images (N, C, H, W), like torchmetrics' Inception.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from gdm.errors import GdmError

INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"


class InceptionFeatures(nn.Module):
    num_features = 2048

    def __init__(self, weights_path: str | None = None):
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        if weights_path is not None and not Path(weights_path).expanduser().is_file():
            raise GdmError(
                f"metrics.fid.inception_weights={weights_path} is not a file: download {INCEPTION_URL} "
                "and point metrics.fid.inception_weights at it."
            )
        try:
            # antialias=False: torch-fidelity's TF1-compatible resize, as in published FIDs.
            self.net = NoTrainInceptionV3(
                name="inception-v3-compat", features_list=["2048"],
                feature_extractor_weights_path=str(Path(weights_path).expanduser()) if weights_path else None,
                antialias=False,
            )
        except OSError as err:  # URLError is an OSError: no network, proxy, firewall
            raise GdmError(
                f"Could not download the Inception weights ({err}): fetch {INCEPTION_URL} on a machine with "
                "network access and set metrics.fid.inception_weights=/path/to/that/file."
            ) from None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        return self.net(images)


class DigitFeatures(nn.Module):
    num_features = 128

    def __init__(self, classifier: str = "digits"):
        super().__init__()
        from gdm.metrics.digits_classifier import load_digit_classifier

        self.net = load_digit_classifier(classifier)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.features(images)

    def train(self, mode: bool = True) -> DigitFeatures:
        return super().train(False)  # never leaves eval mode, like torchmetrics' Inception


FEATURES = {"inception": InceptionFeatures, "digits": DigitFeatures, "digits_colour": DigitFeatures}


def build_features(name: str, inception_weights: str | None = None) -> nn.Module:
    if name not in FEATURES:
        raise GdmError(f"metrics.fid.features='{name}' is not a known feature network; choose one of {', '.join(FEATURES)}.")
    # The random init before the weights load must not draw from the training run's RNG stream.
    with torch.random.fork_rng(devices=[]):
        return InceptionFeatures(inception_weights) if name == "inception" else DigitFeatures(name)
