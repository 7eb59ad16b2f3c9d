"""Reference FIDs on the digits, for scale: the real-vs-real floor and an untrained generator.

    python experiments/fid_reference.py [--image-size 32] [--features digits] [--num-samples 1000]

Uses exactly the FID of training runs (gdm.metrics.feature_metrics on the run's feature network): real features of
the training split, the other side quantized to uint8 like saved PNGs. FID is biased upwards for small sample
sets, so the floor is given for the held-out splits of 180 and 360 images, and for random
subsets of the training split of the same size as the generated set.
"""

from __future__ import annotations

import argparse
from functools import partial

import lightning as L
import torch

from gdm.data.digits import DigitsDataModule
from gdm.images import to_uint8
from gdm.metrics.feature_metrics import frechet_distance
from gdm.metrics.features import build_features
from gdm.models.gan import GAN
from gdm.nets.dcgan import DCGANDiscriminator, DCGANGenerator


@torch.no_grad()
def featurize(features, images: torch.Tensor, batch: int = 250) -> torch.Tensor:
    return torch.cat([features(to_uint8(chunk)) for chunk in images.split(batch)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--features", default="digits")
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    data = DigitsDataModule(image_size=args.image_size)
    train = data.split("train").images
    features = build_features(args.features)
    real = featurize(features, train)

    def fid_against_train(images: torch.Tensor) -> float:
        return frechet_distance(real, featurize(features, images))

    held_out = torch.cat([data.split("val").images, data.split("test").images])
    rows = [
        ("test split (180 real images)", fid_against_train(data.split("test").images)),
        ("val+test splits (360 real images)", fid_against_train(held_out)),
    ]
    g = torch.Generator().manual_seed(args.seed)
    subset = train[torch.randperm(len(train), generator=g)[: args.num_samples]]
    rows.append((f"{len(subset)} training images (in the reference set)", fid_against_train(subset)))

    L.seed_everything(args.seed, verbose=False)
    untrained = GAN((1, args.image_size, args.image_size), partial(DCGANGenerator, ngf=64),
                    partial(DCGANDiscriminator, ndf=64))
    samples = untrained.generate(range(args.num_samples), seed=0)
    rows.append((f"untrained DCGAN generator ({args.num_samples} samples)", fid_against_train(samples)))

    print(f"FID ({args.features} features) against the {len(train)} training digits at {args.image_size}px:")
    for name, value in rows:
        print(f"  {name:<48} {value:10.2f}")


if __name__ == "__main__":
    main()
