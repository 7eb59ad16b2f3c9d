"""GAN training throughput: gdm's GAN through lightning.Trainer, the same update in a bare loop, and the PyTorch
DCGAN example (re-implemented in reference_dcgan.py).

The classic DCGAN configuration: 64x64 RGB random images in [-1, 1), nz = 100, ngf = ndf = 64, batch 64, one D
and one G update per batch, Adam(2e-4, (0.5, 0.999)). Variants (bench_harness): `reference` (64 px only);
`gdm` (gdm.models.gan.GAN(loss="vanilla") with gdm's DCGAN nets, trained by lightning.Trainer); `plain-loop`
(that module's own `update` with the fused Adams of its configure_optimizers(), in a bare loop: the framework-free
baseline); `floor` and `opaque` (Lightning's loop alone, and around that bare step); options `-channels_last` and
`-compile`. A step = one batch = one D + one G update (Lightning's
global_step counts 2 per batch); images/s = batch x steps/s.

    .venv/bin/python experiments/bench_gan_throughput.py --steps 50 --warmup 5 --repeats 3
    .venv/bin/python experiments/bench_gan_throughput.py --image-size 16 --batch-size 8 --ngf 4 --ndf 4 \\
        --steps 200 --warmup 20 --variants gdm,plain-loop
"""

from __future__ import annotations

import functools

import bench_harness as bench
import torch


def gdm_model(args, options: set[str]):
    from gdm.models.gan import GAN
    from gdm.nets.dcgan import DCGANDiscriminator, DCGANGenerator

    model = GAN(image_shape=(3, args.image_size, args.image_size),
                generator=functools.partial(DCGANGenerator, ngf=args.ngf),
                discriminator=functools.partial(DCGANDiscriminator, ndf=args.ndf),
                latent_dim=args.nz, loss="vanilla", channels_last="channels_last" in options)
    if "compile" in options:
        model.compile_nets()
    return model


def run(args, runner: str, options: set[str], device: torch.device) -> tuple[list[float], dict]:
    loader = bench.make_loader(args, ("image",))
    if runner == "reference":
        from reference_dcgan import run_reference

        return run_reference(args, loader, device), {}
    marks, _ = bench.run_model(runner, lambda: gdm_model(args, options), args, loader, device)
    return marks, {}


def main() -> None:
    p = bench.parser(__doc__, image_size=64, batch_size=64, steps=50, warmup=5,
                     variants="reference,gdm,gdm-channels_last,plain-loop")
    p.add_argument("--nz", type=int, default=100)
    p.add_argument("--verbose", action="store_true", help="print the reference's per-step loss lines to stderr")
    args = p.parse_args()
    header = [f"DCGAN {args.image_size} px | batch {args.batch_size} | nz {args.nz} ngf {args.ngf} ndf {args.ndf} "
              "| a step: one D + one G update"]
    bench.main(args, functools.partial(run, args), args.batch_size, header)


if __name__ == "__main__":
    main()
