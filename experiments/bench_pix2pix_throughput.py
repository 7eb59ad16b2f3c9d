"""pix2pix training throughput beside gdm's CycleGAN: both through a real Lightning Trainer, batch 1.

pix2pix: gdm.models.pix2pix.Pix2Pix with the paper's nets (unet_256 with 8 levels, 54.4M parameters at
256 px, or unet_128 below 256 px; 70x70 PatchGAN on 6 channels, batch norm), vanilla GAN + 100 L1, one step =
one pair = one D and one G update. CycleGAN: bench_cyclegan_throughput.py's `gdm-channels_last` variant
(ResNet generators, one step = one A and one B image = both generators' and both Ds' updates). Both with
channels_last (the configs' default), random in-memory images, each variant in its own child process
(bench_harness). Steps/s and the median step time are printed; on a shared machine trust the median.

    .venv/bin/python experiments/bench_pix2pix_throughput.py --image-size 256 --steps 10 --warmup 2
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys

import bench_cyclegan_throughput as cyclegan
from bench_harness import RESULT_TAG, default_threads, run_variant


def pix2pix_model(args: argparse.Namespace, channels_last: bool):
    from gdm.models.pix2pix import Pix2Pix
    from gdm.nets.cyclegan import PatchDiscriminator
    from gdm.nets.pix2pix import UnetGenerator

    num_downs = 8 if args.image_size >= 256 else 7
    return Pix2Pix(image_shape=(3, args.image_size, args.image_size),
                   generator=functools.partial(UnetGenerator, num_downs=num_downs, ngf=args.ngf, norm="batch"),
                   discriminator=functools.partial(PatchDiscriminator, ndf=args.ndf, n_layers=3, norm="batch"),
                   channels_last=channels_last)


def pix2pix_params(model) -> dict:
    return {"g": cyclegan.count_params(model.net_g), "d": cyclegan.count_params(model.net_d),
            "layout": cyclegan.weights_layout(model.net_g, model.net_d)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=default_threads())
    p.add_argument("--only", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    # The settings bench_cyclegan_throughput's Lightning runner reads.
    args.batch_size, args.device, args.precision, args.cudnn_benchmark = 1, "cpu", "32-true", False
    args.ngf = args.ndf = 64
    args.n_blocks, args.pool_size, args.seed, args.log_every = None, 50, 0, 50
    if args.only == "pix2pix":  # child: the CycleGAN runner with the pix2pix model in its place
        cyclegan.gdm_model, cyclegan.gdm_params = pix2pix_model, pix2pix_params
        args.only = "gdm-channels_last"
        print(RESULT_TAG + json.dumps({**cyclegan.run_one(args), "variant": "pix2pix"}), flush=True)
        return
    mine = [sys.executable, os.path.abspath(__file__), "--only", "pix2pix", "--image-size", str(args.image_size),
            "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads)]
    results = [run_variant(mine, args.threads, "pix2pix"),
               run_variant(cyclegan.child_argv(args, "gdm-channels_last"), args.threads, "cyclegan")]
    results[1]["variant"] = "cyclegan"
    print(f"{args.image_size} px, batch 1, CPU, {args.threads} threads, {args.steps} timed steps "
          f"(after {args.warmup}), Lightning, channels_last")
    print(f"{'model':<10} {'G params':>11} {'D params':>10} {'steps/s':>8} {'median s/step':>14} {'peak RSS GiB':>13}")
    for r in results:
        print(f"{r['variant']:<10} {r['g_params']:>11,} {r['d_params']:>10,} {r['steps_per_s']:>8.3f} "
              f"{r['median_step_s']:>14.3f} {r['peak_rss_gib']:>13.2f}")


if __name__ == "__main__":
    main()
