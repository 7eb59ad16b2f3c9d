"""How the shipped digit classifiers (`gdm.metrics.features.DigitClassifier`) are made: re-train one with
`python -m gdm.metrics.digits_classifier [--name]`.

- `digits`: grey digits (the digits data module); FID features `digits` and the judge of class accuracy.
- `digits_colour`: both domains of the embedded CycleGAN pair (grey digits and MNIST-M-style colour
  digits); FID features `digits_colour` in both directions and the judge of label preservation.

Each is trained on training images only (seeded, deterministic on one machine), and the weights ship
in the package so every run and machine uses the same features: FID values stay comparable.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from gdm.images import to_uint8
from gdm.metrics.features import CHANNELS, INPUT_SIZE, DigitClassifier, weights_path


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
