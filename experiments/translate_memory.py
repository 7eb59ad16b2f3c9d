"""How gdm.memory's estimate of a translation's memory (the peak of live tensor bytes, counted on two small
probes and scaled to the pixels, as task=translate's check does) compares with what the process really takes:
the growth of peak RSS over one forward pass at each size (its input included, as in the count), in a fresh
child process per measurement (CPU, float32, no grad, the generators at their published sizes: ResNet 9 blocks
ngf 64, U-Net 256 ngf 64).

    .venv/bin/python experiments/translate_memory.py --sizes 1024 2048 4096
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys

import torch

from gdm.memory import scaled_peak_bytes
from gdm.nets.cyclegan import ResnetGenerator
from gdm.nets.pix2pix import UnetGenerator

NETS = {"resnet_9blocks": lambda: ResnetGenerator((3, 256, 256), ngf=64, n_blocks=9),
        "unet_256": lambda: UnetGenerator((3, 256, 256), num_downs=8, ngf=64)}


def rss_growth_mib(name: str, size: int) -> float:
    """In this process: peak RSS growth of one forward pass at `size` px and its input, after a warm-up pass at
    256 px."""
    net = NETS[name]().eval()
    with torch.no_grad():
        net(torch.zeros(1, 3, 256, 256))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        net(torch.zeros(1, 3, size, size))
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024  # KiB on Linux


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(rss_growth_mib(args.child[0], int(args.child[1])))
        return
    print(f"{'generator':<16} {'size px':>8} {'estimate MiB':>13} {'RSS growth MiB':>15} {'ratio':>6}")
    for name, make in NETS.items():
        net = make().eval()
        probe = 256 if name.startswith("unet") else 64  # a multiple of the generator's size_multiple
        with torch.no_grad():
            tensor_bytes = scaled_peak_bytes(lambda s, n=net: n(torch.zeros(1, 3, s, s)), probe)
        for size in args.sizes:
            estimate = tensor_bytes(size, size) / 2**20
            rss = float(subprocess.run([sys.executable, __file__, "--child", name, str(size)], check=True,
                                       capture_output=True, text=True).stdout)
            print(f"{name:<16} {size:>8} {estimate:>13.1f} {rss:>15.0f} {rss / estimate:>6.2f}")


if __name__ == "__main__":
    main()
