"""CycleGAN training throughput: gdm's CycleGAN through lightning.Trainer, the same update in a bare loop, and
the reference code (pytorch-CycleGAN-and-pix2pix's step, re-implemented in reference_cyclegan.py).

The recipe (the paper's and the reference code's defaults): batch 1 (one A and one B image per step), ResNet
generators with ngf = 64 and 6 residual blocks at 128 px or below, 9 above (gdm.nets.cyclegan.default_blocks),
70x70 PatchGAN discriminators with ndf = 64, instance norm, LSGAN, cycle lambda 10, identity 0.5, pools of 50
past fakes, Adam lr 2e-4, betas (0.5, 0.999); random in-memory images (bench_harness).

Variants (bench_harness): `reference`; `gdm` (gdm.models.cyclegan.CycleGAN with gdm's nets, trained by
lightning.Trainer); `plain-loop` (that module's own `update` with the optimizers of its configure_optimizers(),
in a bare loop: the framework-free baseline); `floor` and `opaque` (Lightning's loop alone, and around that bare
step); options `-channels_last` (model.channels_last=true) and
`-compile` (torch.compile'd nets, as `compile=true`). A step = one A and one B image = one G update (both
generators) and one D update (both discriminators); Lightning's global_step counts 2 per step. The generator
and discriminator parameter counts of the reference nets and gdm's are asserted equal (the same nets).

    .venv/bin/python experiments/bench_cyclegan_throughput.py --steps 30 --warmup 3 --repeats 3
    .venv/bin/python experiments/bench_cyclegan_throughput.py --image-size 32 --ngf 4 --ndf 4 --n-blocks 1 \\
        --steps 200 --warmup 20 --repeats 2
    .venv/bin/python experiments/bench_cyclegan_throughput.py --device cuda --image-size 256 \\
        --steps 200 --warmup 20 --precision bf16-mixed
"""

from __future__ import annotations

import functools

import bench_harness as bench
import torch

KEYS = ("image_a", "image_b")


def n_blocks(args) -> int:
    from gdm.nets.cyclegan import default_blocks

    return default_blocks(args.image_size) if args.n_blocks is None else args.n_blocks


def gdm_model(args, options: set[str]):
    from gdm.models.cyclegan import CycleGAN
    from gdm.nets.cyclegan import PatchDiscriminator, ResnetGenerator

    model = CycleGAN(
        image_shape=(3, args.image_size, args.image_size),
        generator=functools.partial(ResnetGenerator, ngf=args.ngf, n_blocks=n_blocks(args), norm="instance"),
        discriminator=functools.partial(PatchDiscriminator, ndf=args.ndf, n_layers=3, norm="instance"),
        loss="lsgan", lambda_a=10.0, lambda_b=10.0, lambda_identity=0.5, pool_size=args.pool_size,
        lr=2e-4, betas=(0.5, 0.999), channels_last="channels_last" in options,
    )
    if "compile" in options:
        model.compile_nets()
    return model


def count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def run(args, runner: str, options: set[str], device: torch.device) -> tuple[list[float], dict]:
    loader = bench.make_loader(args, KEYS)
    if runner == "reference":
        from reference_cyclegan import run_reference

        marks, ref = run_reference(args, loader, device, n_blocks(args))
        return marks, {"g_params": count(ref.netG_A), "d_params": count(ref.netD_A)}
    marks, model = bench.run_model(runner, lambda: gdm_model(args, options), args, loader, device)
    return marks, {"g_params": count(model.g_ab), "d_params": count(model.d_a)} if model is not None else {}


def main() -> None:
    p = bench.parser(__doc__, image_size=128, batch_size=1, steps=30, warmup=3,
                     variants="reference,gdm,gdm-channels_last,plain-loop,plain-loop-channels_last")
    p.add_argument("--n-blocks", type=int, default=None, help="residual blocks (default: 9 above 128 px, else 6)")
    p.add_argument("--pool-size", type=int, default=50)
    args = p.parse_args()

    def check(r: dict) -> None:  # the re-implemented nets must be gdm's: equal parameter counts
        if "g_params" not in r:  # the floor: no nets
            return
        if "first" not in check.__dict__:
            check.first = r
        if (r["g_params"], r["d_params"]) != (check.first["g_params"], check.first["d_params"]):
            raise SystemExit(f"{r['variant']}: nets of {r['g_params']:,} / {r['d_params']:,} parameters, "
                             f"{check.first['variant']}: {check.first['g_params']:,} / {check.first['d_params']:,}")

    header = [f"CycleGAN {args.image_size} px | batch {args.batch_size} (A) + {args.batch_size} (B) | ngf {args.ngf} "
              f"ndf {args.ndf} n_blocks {n_blocks(args)} | pool {args.pool_size} | a step: one G + one D update"]
    bench.main(args, functools.partial(run, args), 2 * args.batch_size, header, check)


if __name__ == "__main__":
    main()
