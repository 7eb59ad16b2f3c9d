"""What a training step of the digits U-Net costs on the CPU, by part: `python experiments/unet_step_cpu.py`.

The net of `conf/data_model/digits_diffusion.yaml` (the flow's is the same) on a batch of 64 random 1 x 32 x 32
images: forward, MSE, backward and Adam's step, timed over --steps after --warmup, at dropout 0.1 (DDPM's, the
flow's) and 0 (the EDM digits config's), with Adam unfused (torch's default on a CPU) and fused (gdm's,
`GenerativeModule.adam`). With `--channels 64 48 32` the variants are instead the net at each width (the
config's dropout, fused Adam), and `--bf16` adds each under bf16 autocast (`trainer.precision=bf16-mixed`).
With `--layouts` the variants are the config's net with NCHW and with channels-last (NHWC) weights and inputs,
each timed for a training step and for a sampling call (the EMA net's forward at the evaluation's batch of 250,
in inference mode: seconds per 1,000 samples per function evaluation).
Variants alternate, round after round, so a slower machine moment hits them alike; prints the median ms per step
of each.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from gdm.nets.unet import UNet

CONFIG = Path(__file__).resolve().parent.parent / "conf" / "data_model" / "digits_diffusion.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant and round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--channels", type=int, nargs="*", help="compare these U-Net widths instead")
    parser.add_argument("--bf16", action="store_true", help="also time each variant under bf16 autocast")
    parser.add_argument("--layouts", action="store_true", help="compare NCHW and NHWC, training and sampling")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    net_options = OmegaConf.to_container(OmegaConf.load(CONFIG).model.net)
    x, t = torch.randn(64, 1, 32, 32), torch.rand(64)
    if args.layouts:
        compare_layouts(net_options, x, t, args)
        return
    if args.channels:
        variants = {f"{c} channels": ({**net_options, "channels": c}, True) for c in args.channels}
    else:
        variants = {f"dropout {d}, Adam {'fused' if fused else 'unfused'}": ({**net_options, "dropout": d}, fused)
                    for d in (0.1, 0.0) for fused in (False, True)}
    if args.bf16:
        variants = {f"{name}{suffix}": (*variant, bf16) for name, variant in variants.items()
                    for suffix, bf16 in (("", False), (", bf16 autocast", True))}
    else:
        variants = {name: (*variant, False) for name, variant in variants.items()}
    steps, sizes = {}, {}
    for name, (options, fused, bf16) in variants.items():
        torch.manual_seed(0)
        net = UNet(image_shape=(1, 32, 32), **options)
        sizes[name] = sum(p.numel() for p in net.parameters()) / 1e6
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, fused=fused)

        def step(net=net, optimizer=optimizer, bf16=bf16) -> None:
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = ((net(x, t).float() - x) ** 2).mean()
            loss.backward()
            optimizer.step()

        for _ in range(args.warmup):
            step()
        steps[name] = step
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - start) / args.steps * 1000)
    print(f"digits U-Net, batch 64, {args.threads} threads, torch {torch.__version__}: median ms per step")
    for name, values in times.items():
        print(f"  {name:<36} {statistics.median(values):7.1f}  ({sizes[name]:.2f} M parameters; rounds: "
              f"{', '.join(f'{v:.1f}' for v in values)})")


def compare_layouts(net_options: dict, x: torch.Tensor, t: torch.Tensor, args) -> None:
    """The config's net in NCHW and NHWC: median ms per training step, and seconds per 1,000 samples per NFE."""
    calls = {}
    x_sample, t_sample = torch.randn(250, 1, 32, 32), torch.full((250,), 500.0)
    for layout in (torch.contiguous_format, torch.channels_last):
        name = "NHWC" if layout == torch.channels_last else "NCHW"
        torch.manual_seed(0)
        net = UNet(image_shape=(1, 32, 32), **net_options).to(memory_format=layout)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, fused=True)
        xb, xs = x.contiguous(memory_format=layout), x_sample.contiguous(memory_format=layout)

        def step(net=net, optimizer=optimizer, xb=xb) -> None:
            optimizer.zero_grad(set_to_none=True)
            ((net(xb, t) - xb) ** 2).mean().backward()
            optimizer.step()

        def sample(net=net, xs=xs) -> None:
            with torch.inference_mode():
                net.eval()
                net(xs, t_sample)
                net.train()

        for _ in range(args.warmup):
            step()
            sample()
        calls[f"{name} training step, ms"] = (step, 1000.0)
        calls[f"{name} sampling, s per 1,000 per NFE"] = (sample, 4.0)  # 4 calls of 250 samples
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(args.rounds):
        for name, (call, scale) in calls.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                call()
            times[name].append((time.perf_counter() - start) / args.steps * scale)
    print(f"digits U-Net ({CONFIG.name}), {args.threads} threads, torch {torch.__version__}: medians over rounds")
    for name, values in times.items():
        print(f"  {name:<40} {statistics.median(values):8.3f}  (rounds: {', '.join(f'{v:.3f}' for v in values)})")


if __name__ == "__main__":
    main()
