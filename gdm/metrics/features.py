"""Feature networks for the sample metrics, by name (`build_features`), each with its protocol.

- `inception`: the standard 2048-d pool3 features of the TF-ported InceptionV3 that torch-fidelity
  (and so torchmetrics) uses; images are resized to 299 with the TF1-compatible bilinear resize
  (antialias off), as in published FIDs.
- `dinov2`: DINOv2 ViT-L/14 CLS features (Stein et al. 2023), from a local weights file
  (`dinov2_weights`): see `gdm.metrics.dinov2`.
- `digits`: the shipped digits classifier's 128-d penultimate layer. A domain feature space, only
  comparable with other `fid_digits` values; the logged name always carries the feature name.
- `digits_colour`: the same for the classifier of the embedded CycleGAN pair, which reads digits in
  both domains (grey, and on colour patches), so one feature space serves both translation directions.

Every feature network has a `name` (the `<features>` of the values it names, e.g. val/fid_digits), takes
uint8 images (N, C, H, W), C = 1 or 3, of any size, returns float32 (N, num_features), never leaves eval
mode, and describes itself with `protocol()`: its name, weights file and that file's SHA-256, and its
input resize.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from gdm.errors import GdmError
from gdm.evaluation.protocol import file_sha256

INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"


class InceptionFeatures(nn.Module):
    name = "inception"  # names the values: val/fid_inception
    num_features = 2048

    def __init__(self, weights_path: str | None = None):
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        if weights_path is not None and not Path(weights_path).expanduser().is_file():
            raise GdmError(
                f"inception_weights={weights_path} is not a file: download {INCEPTION_URL} "
                "and point inception_weights at it."
            )
        self.weights_path = Path(weights_path).expanduser() if weights_path else None
        try:
            # antialias=False: torch-fidelity's TF1-compatible resize, as in published FIDs.
            self.net = NoTrainInceptionV3(
                name="inception-v3-compat", features_list=["2048"],
                feature_extractor_weights_path=str(self.weights_path) if self.weights_path else None,
                antialias=False,
            )
        except OSError as err:  # URLError is an OSError: no network, proxy, firewall
            raise GdmError(
                f"Could not download the Inception weights ({err}): fetch {INCEPTION_URL} on a machine with "
                "network access and set inception_weights=/path/to/that/file."
            ) from None
        except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, ValueError) as err:  # not those weights
            if self.weights_path is None:
                raise
            first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
            raise GdmError(
                f"inception_weights={self.weights_path} is not torch-fidelity's Inception weights file "
                f"({type(err).__name__}: {first[:160]}): download {INCEPTION_URL} and point "
                "inception_weights at it."
            ) from None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        return self.net(images)

    def protocol(self) -> dict:
        # Without a local file torch-fidelity downloads into torch.hub's checkpoint folder.
        path = self.weights_path or Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_URL.rsplit("/", 1)[1]
        return {"name": "inception", "network": "torch-fidelity InceptionV3 pool3 (TF-ported)",
                "weights_file": path.name, "weights_sha256": file_sha256(path) if path.is_file() else "unknown",
                "resize": {"size": 299, "method": "bilinear (TF1-compatible)", "antialias": False},
                "num_features": self.num_features}


class DigitFeatures(nn.Module):
    num_features = 128

    def __init__(self, classifier: str = "digits"):
        super().__init__()
        from gdm.metrics.digits_classifier import load_digit_classifier

        self.classifier = self.name = classifier
        self.net = load_digit_classifier(classifier)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.features(images)

    def train(self, mode: bool = True) -> DigitFeatures:
        return super().train(False)  # never leaves eval mode, like torchmetrics' Inception

    def protocol(self) -> dict:
        from gdm.metrics.digits_classifier import weights_path
        from gdm.nets.digit_classifier import INPUT_SIZE

        path = weights_path(self.classifier)
        return {"name": self.classifier, "network": "gdm digit classifier, 128-d penultimate layer",
                "weights_file": path.name, "weights_sha256": file_sha256(path),
                "resize": {"size": INPUT_SIZE, "method": "bilinear", "antialias": True},
                "num_features": self.num_features}


FEATURES = ("inception", "dinov2", "digits", "digits_colour")


def build_features(name: str, inception_weights: str | None = None, dinov2_weights: str | None = None) -> nn.Module:
    """The feature network `name` (one of FEATURES), in eval mode; GdmError naming the key otherwise."""
    if name not in FEATURES:
        raise GdmError(f"features='{name}' is not a known feature network; choose one of {', '.join(FEATURES)}.")
    # The random init before the weights load must not draw from the training run's RNG stream.
    with torch.random.fork_rng(devices=[]):
        if name == "inception":
            return InceptionFeatures(inception_weights)
        if name == "dinov2":
            from gdm.metrics.dinov2 import DINOv2Features

            return DINOv2Features(dinov2_weights)
        return DigitFeatures(name)
