"""The shipped digits classifier: load it, or re-train it with `python -m gdm.metrics.digits_classifier`.

It is trained on the training split of the digits data module only (seeded, deterministic on
one machine), and its weights ship in the package so every run and machine uses the same
features: FID values stay comparable across runs.
"""

from __future__ import annotations

import argparse
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F

from gdm.data.digits import DigitsDataModule
from gdm.images import to_uint8
from gdm.nets.digit_classifier import INPUT_SIZE, DigitClassifier

WEIGHTS = Path(__file__).parent / "weights" / "digits_classifier.pt"


@cache
def _load_state() -> dict:
    if not WEIGHTS.is_file():
        from gdm.errors import GdmError

        raise GdmError(f"The digits classifier weights {WEIGHTS} are missing: run `python -m gdm.metrics.digits_classifier`.")
    return torch.load(WEIGHTS, map_location="cpu", weights_only=True)


def load_digit_classifier() -> DigitClassifier:
    """The shipped classifier, in eval mode with frozen weights."""
    net = DigitClassifier()
    net.load_state_dict(_load_state())
    return net.eval().requires_grad_(False)


def digit_split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images at the classifier's input size, and labels, of one digits split."""
    data = DigitsDataModule(image_size=INPUT_SIZE)
    ds = data.split(split)
    return to_uint8(ds.images), ds.labels


def accuracy(net: DigitClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return (net(images).argmax(1) == labels).float().mean().item()


def train(epochs: int = 30, seed: int = 0) -> DigitClassifier:
    torch.manual_seed(seed)
    images, labels = digit_split("train")
    net = DigitClassifier()
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
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    args = parser.parse_args()
    net = train(args.epochs)
    for split in ("train", "val", "test"):
        print(f"{split} accuracy: {accuracy(net, *digit_split(split)):.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
