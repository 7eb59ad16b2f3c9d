"""Evaluation costs on real images with Inception features: the real-feature cache, and gdm's FID
against torch-fidelity's on the same PNGs.

    python experiments/bench_eval_cache.py [--num-real 500] [--num-fake 200] [--threads N] [--inception-weights PATH]

1. Cache: `--num-real` digits (the embedded set at 64 px, as PNGs) read by ImageFolderDataModule (all in
   train). `Evaluation.real_features("train")` is timed cold (empty cache dir: computes and writes) and warm
   (a new RealFeatureCache on the same dir: what a second run or a sweep job sees), then the generated side
   that every evaluation pays either way: `--num-fake` images through the same features (generation itself
   not timed). First evaluation of a second run, without the cache / with it:
   (real compute + fake) / (cache read + fake).
2. FID: `--num-fake` real digits vs `--num-fake` shifted, noisy other digits, as two PNG folders; gdm (PNG ->
   uint8 -> build_features("inception") -> frechet_distance) vs torch_fidelity.calculate_metrics(fid=True)
   on the same folders and weights file (its cache off, loading in-process like gdm's), each timed from
   folders to value, network construction included.
Without --inception-weights the real file (95 MB) cannot be fetched offline: a random-init file with
torch-fidelity's keys is built, its batch-norm statistics set from 16 noise images so that features are O(1)
(plain random init gives ~1e-8). Same network, same cost; FID values are not comparable with published ones.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from bench_harness import default_threads
from PIL import Image

from gdm.data.digits import load_digit_images
from gdm.data.image_folder import ImageFolderDataModule
from gdm.evaluation.context import Evaluation
from gdm.evaluation.real_features import RealFeatureCache
from gdm.images import save_png, to_uint8
from gdm.metrics.feature_metrics import frechet_distance
from gdm.metrics.features import build_features


class TimedCache(RealFeatureCache):
    write_s = 0.0

    def save(self, key, features):
        start = time.perf_counter()
        super().save(key, features)
        self.write_s = time.perf_counter() - start


def random_inception(path: Path) -> None:
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    cls = tfi.FeatureExtractorInceptionV3
    with mock.patch.object(tfi, "load_state_dict_from_url", lambda *a, **k: {}), \
            mock.patch.object(cls, "load_state_dict", lambda self, *a, **k: None), torch.random.fork_rng():
        torch.manual_seed(0)
        net = cls("inception-v3-compat", ["2048"])
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None  # running statistics = those of the calibration batch
        with torch.no_grad():
            net.train()(torch.randint(0, 256, (16, 3, 64, 64), dtype=torch.uint8))
    torch.save(net.state_dict(), path)


def digits(n: int, start: int = 0) -> torch.Tensor:
    """n digits at 64 px in [-1, 1] from index `start`, cycling the 1,797 with a 1-px shift per pass."""
    images, _ = load_digit_images(64)
    idx = torch.arange(start, start + n)
    return torch.stack([images[i % len(images)].roll(int(i) // len(images), -1) for i in idx])


def write_pngs(images: torch.Tensor, folder: Path) -> Path:
    for i, image in enumerate(to_uint8(images)):
        save_png(image, folder / f"{i:05d}.png")
    return folder


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def gdm_fid(dir1: Path, dir2: Path, weights: str, batch: int = 64) -> float:
    features = build_features("inception", inception_weights=weights)

    def feats(folder: Path) -> torch.Tensor:
        arrays = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.png"))]
        uint8 = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        with torch.no_grad():
            return torch.cat([features(chunk).float() for chunk in uint8.split(batch)])

    return frechet_distance(feats(dir1), feats(dir2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-real", type=int, default=500)
    p.add_argument("--num-fake", type=int, default=200)
    p.add_argument("--threads", type=int, default=default_threads())
    p.add_argument("--inception-weights", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench_eval_cache_"))
    weights, note = args.inception_weights, "the given weights file"
    if weights is None:
        weights, note = str(tmp / "inception-random.pth"), "RANDOM-INIT weights (same cost; FID values not comparable)"
        random_inception(Path(weights))
    features = build_features("inception", inception_weights=weights)
    with torch.no_grad():
        features(torch.zeros(2, 3, 64, 64, dtype=torch.uint8))  # one-off kernel set-up, outside the timings

    data = ImageFolderDataModule(str(write_pngs(digits(args.num_real), tmp / "real")), image_size=64,
                                 val_fraction=0, test_fraction=0, num_workers=0)
    cache_dir, fake = tmp / "cache", digits(args.num_fake, start=args.num_real)

    def evaluation(cache: RealFeatureCache) -> Evaluation:
        return Evaluation(model=None, data=data, features=features, cache=cache, device=torch.device("cpu"))

    cold = TimedCache(cache_dir)
    real_cold, cold_s = timed(lambda: evaluation(cold).real_features("train"))
    warm = TimedCache(cache_dir)
    real_warm, warm_s = timed(lambda: evaluation(warm).real_features("train"))
    assert (cold.misses, warm.hits) == (1, 1) and torch.equal(real_cold, real_warm)
    _, fake_s = timed(lambda: torch.cat([evaluation(cold).featurize(c) for c in fake.split(250)]))
    size = sum(f.stat().st_size for f in (cache_dir / "real_features").glob("*.pt"))
    compute_s = cold_s - cold.write_s

    # FID: real digits vs shifted, noisy digits (not the ones above), same PNGs for both libraries.
    g = torch.Generator().manual_seed(0)
    other = digits(args.num_fake, start=args.num_real + args.num_fake).roll(3, -1)
    other = (other + 0.2 * torch.randn(other.shape, generator=g)).clamp(-1, 1)
    dir1, dir2 = write_pngs(digits(args.num_fake), tmp / "fid_real"), write_pngs(other, tmp / "fid_fake")
    fid_gdm, gdm_s = timed(lambda: gdm_fid(dir1, dir2, weights))

    import torch_fidelity

    fid_tf, tf_s = timed(lambda: torch_fidelity.calculate_metrics(
        input1=str(dir1), input2=str(dir2), fid=True, cuda=False, batch_size=64, cache=False, verbose=False,
        save_cpu_ram=True, samples_shuffle=False, feature_extractor_weights_path=weights,
    )["frechet_inception_distance"])

    rows = [
        (f"real features, computed ({args.num_real} PNGs, Inception)", f"{compute_s:.1f} s",
         f"{args.num_real / compute_s:.2f} images/s"),
        ("cache write (part of the cold call)", f"{cold.write_s * 1e3:.0f} ms", f"file {size / 2**20:.2f} MiB"),
        ("real features, warm (new cache object, same dir)", f"{warm_s * 1e3:.0f} ms", "fingerprint + load + checksum"),
        (f"generated side ({args.num_fake} images, same features)", f"{fake_s:.1f} s", "every evaluation"),
        ("first evaluation of a second run: no cache / cache",
         f"{compute_s + fake_s:.1f} / {warm_s + fake_s:.1f} s", f"{(compute_s + fake_s) / (warm_s + fake_s):.2f}x"),
        (f"FID gdm ({args.num_fake} vs {args.num_fake} PNGs)", f"{fid_gdm:.6g}", f"{gdm_s:.1f} s"),
        ("FID torch-fidelity 0.4 (same PNGs, same weights)", f"{fid_tf:.6g}", f"{tf_s:.1f} s"),
        ("FID relative difference abs(gdm - tf) / tf", f"{abs(fid_gdm - fid_tf) / abs(fid_tf):.2e}", ""),
    ]
    print(f"torch {torch.__version__} | threads {args.threads} | {note}")
    print("| what | value | note |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
