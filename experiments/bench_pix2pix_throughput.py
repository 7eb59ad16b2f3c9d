"""pix2pix training throughput beside gdm's CycleGAN: both through a real Lightning Trainer, batch 1.

pix2pix: gdm.models.pix2pix.Pix2Pix with the paper's nets (unet_256 with 8 levels, 54.4M parameters at
256 px, or unet_128 below 256 px; 70x70 PatchGAN on 6 channels, batch norm), vanilla GAN + 100 L1, one step =
one pair = one D and one G update. CycleGAN: bench_cyclegan_throughput.py's variant of the same name
(ResNet generators, one step = one A and one B image = both generators' and both Ds' updates). Both NCHW by
default (`gdm`: what model.channels_last=auto picks for both on the CPU; `--variants gdm-channels_last` for
NHWC), random in-memory images, each in its own child process (bench_harness). Other variants (`plain-loop`,
`-compile`) work too.

    .venv/bin/python experiments/bench_pix2pix_throughput.py --image-size 256 --steps 10 --warmup 2
"""

from __future__ import annotations

import functools
import os
import sys

import bench_harness as bench
import torch


def pix2pix_model(args, options: set[str]):
    from gdm.models.pix2pix import Pix2Pix
    from gdm.nets.cyclegan import PatchDiscriminator
    from gdm.nets.pix2pix import UnetGenerator

    num_downs = 8 if args.image_size >= 256 else 7
    model = Pix2Pix(image_shape=(3, args.image_size, args.image_size),
                    generator=functools.partial(UnetGenerator, num_downs=num_downs, ngf=args.ngf, norm="batch"),
                    discriminator=functools.partial(PatchDiscriminator, ndf=args.ndf, n_layers=3, norm="batch"),
                    channels_last="channels_last" in options)
    if "compile" in options:
        model.compile_nets()
    return model


def run(args, runner: str, options: set[str], device: torch.device) -> tuple[list[float], dict]:
    if runner in ("reference", "floor"):  # this benchmark sets pix2pix beside CycleGAN: their nets' figures
        raise SystemExit(f"no {runner} variant here: gdm or plain-loop (with options)")
    marks, model = bench.run_model(runner, lambda: pix2pix_model(args, options), args,
                                   bench.make_loader(args, ("image_a", "image_b")), device)
    return marks, {"g_params": sum(p.numel() for p in model.net_g.parameters()),
                   "d_params": sum(p.numel() for p in model.net_d.parameters())}


def main() -> None:
    p = bench.parser(__doc__, image_size=256, batch_size=1, steps=10, warmup=2, variants="gdm")
    args = p.parse_args()
    if args.only:
        bench.main(args, functools.partial(run, args), 1, [])
        return
    here = os.path.dirname(os.path.abspath(__file__))
    common = ["--image-size", str(args.image_size), "--steps", str(args.steps), "--warmup", str(args.warmup),
              "--threads", str(args.threads), "--device", args.device, "--precision", args.precision,
              "--ngf", str(args.ngf), "--ndf", str(args.ndf),
              "--only", args.variants.split(",")[0]]
    results = {"pix2pix": bench.run_variant([sys.executable, os.path.join(here, "bench_pix2pix_throughput.py"),
                                              *common], args.threads, "pix2pix"),
               "cyclegan": bench.run_variant([sys.executable, os.path.join(here, "bench_cyclegan_throughput.py"),
                                               *common], args.threads, "cyclegan")}
    print(f"{args.image_size} px, batch 1, {args.device}, {args.threads} threads, {args.steps} timed steps "
          f"(after {args.warmup}), {args.variants.split(',')[0]}")
    print(f"{'model':<10} {'G params':>11} {'D params':>10} {'steps/s':>8} {'median s/step':>14} {'peak RSS GiB':>13}")
    for name, r in results.items():
        print(f"{name:<10} {r['g_params']:>11,} {r['d_params']:>10,} {r['steps_per_s']:>8.3f} "
              f"{r['median_step_s']:>14.3f} {r['peak_rss_mib'] / 1024:>13.2f}")


if __name__ == "__main__":
    main()
