"""The digit classifiers: a small CNN that reads handwritten digits (`DigitClassifier`; uint8 images of any
size and 1 or 3 channels, as FID feature networks take), and its shipped weights: load one, or re-train it with
`python -m gdm.metrics.digits_classifier [--name]`.

- `digits`: grey digits (the digits data module); FID features `digits` and the judge of class accuracy.
- `digits_colour`: both domains of the embedded CycleGAN pair (grey digits and MNIST-M-style colour
  digits); FID features `digits_colour` in both directions and the judge of label preservation.

Each is trained on training images only (seeded, deterministic on one machine), and the weights ship
in the package so every run and machine uses the same features: FID values stay comparable.
"""

from __future__ import annotations

import argparse
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gdm.images import to_uint8

INPUT_SIZE = 32


def conv_block(c_in: int, c_out: int, n: int) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i in range(n):
        layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(True)]
    return layers + [nn.MaxPool2d(2)]


class DigitClassifier(nn.Module):
    """uint8 (N, C, H, W) -> 10 logits; `features` gives the 128-d penultimate layer (pre-activation)."""

    num_features = 128

    def __init__(self, num_classes: int = 10, channels: int = 1):
        super().__init__()
        # channels=1 reads luminance (grey digits); channels=3 keeps colour (digits on colour patches).
        self.channels = channels
        self.body = nn.Sequential(
            *conv_block(channels, 32, 2), *conv_block(32, 64, 2), *conv_block(64, 128, 1), nn.Flatten(),
            nn.Linear(128 * 4 * 4, self.num_features),
        )
        self.head = nn.Sequential(nn.ReLU(True), nn.Dropout(0.3), nn.Linear(self.num_features, num_classes))

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images -> (N, channels, 32, 32) floats in [0, 1]: colour reduced to luminance for a
        1-channel net, grey repeated for a 3-channel one."""
        x = images.float() / 255.0
        if x.shape[1] == 1 and self.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[1] == 3 and self.channels == 1:
            x = (x * torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        if x.shape[-1] != INPUT_SIZE or x.shape[-2] != INPUT_SIZE:
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)
        return x

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(self.prepare(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


WEIGHTS_DIR = Path(__file__).parent / "weights"
CHANNELS = {"digits": 1, "digits_colour": 3}
WEIGHTS = WEIGHTS_DIR / "digits_classifier.pt"


def weights_path(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}_classifier.pt"


@cache
def _load_state(name: str) -> dict:
    path = weights_path(name)
    if not path.is_file():
        from gdm.errors import GdmError

        raise GdmError(f"The {name} classifier weights {path} are missing: run "
                       f"`python -m gdm.metrics.digits_classifier --name {name}`.")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_digit_classifier(name: str = "digits") -> DigitClassifier:
    """A shipped classifier, in eval mode with frozen weights."""
    net = DigitClassifier(channels=CHANNELS[name])
    net.load_state_dict(_load_state(name))
    return net.eval().requires_grad_(False)


def digit_split(split: str, name: str = "digits") -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images at the classifier's input size, and labels, of one split of the classifier's data
    (for `digits_colour`, both domains of that split together)."""
    if name == "digits":
        from gdm.data.digits import DigitsDataModule

        ds = DigitsDataModule(image_size=INPUT_SIZE).split(split)
        return to_uint8(ds.images), ds.labels
    from gdm.data.digits_colour import DigitsColourDataModule

    data = DigitsColourDataModule(image_size=INPUT_SIZE)
    parts = [data.split(f"{domain}/{split}") for domain in ("A", "B")]
    return to_uint8(torch.cat([p.images for p in parts])), torch.cat([p.labels for p in parts])


def accuracy(net: DigitClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return (net(images).argmax(1) == labels).float().mean().item()


def train(name: str = "digits", epochs: int = 30, seed: int = 0) -> DigitClassifier:
    torch.manual_seed(seed)
    images, labels = digit_split("train", name)
    net = DigitClassifier(channels=CHANNELS[name])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(images)).split(64):
            # Small random shifts, so generated digits slightly off-centre are still read correctly.
            x = torch.roll(images[idx], shifts=tuple(torch.randint(-2, 3, (2,)).tolist()), dims=(2, 3))
            loss = F.cross_entropy(net(x), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return net.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", choices=list(CHANNELS), default="digits")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    net = train(args.name, args.epochs)
    splits = ("train", "val", "test") if args.name == "digits" else ("train", "test")
    for split in splits:
        print(f"{split} accuracy: {accuracy(net, *digit_split(split, args.name)):.4f}")
    out = args.out or weights_path(args.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), out)
    print(f"saved {out}")


if __name__ == "__main__":
    main()
