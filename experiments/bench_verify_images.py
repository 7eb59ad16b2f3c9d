"""Start-up cost of an image folder: scanning and verifying N small files, cold (every file decoded, in
parallel) and warm (the verified-files index: only stat calls), as a run, a sweep job or a DDP process
pays it.

    python experiments/bench_verify_images.py --num-files 20000 200000 [--size 32] [--dir /tmp/verify-bench]

Writes N random PNGs (size x size RGB, 1,000 per sub-folder) once per N, then times, each in a fresh
cache directory: `find_images` (the scan), `verify_images` cold, and `verify_images` warm.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def write_folder(root: Path, n: int, size: int) -> None:
    if len(list(root.rglob("*.png"))) == n:
        return
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"{i // 1000:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:07d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-files", type=int, nargs="+", default=[20000, 200000])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "verify-bench")
    args = parser.parse_args()
    print(f"{'files':>8}  {'scan s':>8}  {'verify cold s':>14}  {'verify warm s':>14}  {'cold files/s':>12}  (cpus: "
          f"{os.cpu_count()})")
    for n in args.num_files:
        root = args.dir / f"n{n}"
        write_folder(root, n, args.size)
        with tempfile.TemporaryDirectory() as cache:
            os.environ["GDM_CACHE_DIR"] = cache  # a cold index
            from gdm.data.image_files import find_images, verify_images

            start = time.perf_counter()
            files = find_images(root)
            scan = time.perf_counter() - start
            start = time.perf_counter()
            verify_images(files, root=root)
            cold = time.perf_counter() - start
            start = time.perf_counter()
            verify_images(find_images(root), root=root)  # what the next run does: scan + index lookup
            warm = time.perf_counter() - start
        print(f"{n:>8}  {scan:>8.2f}  {cold:>14.2f}  {warm:>14.2f}  {n / cold:>12.0f}")


if __name__ == "__main__":
    main()
