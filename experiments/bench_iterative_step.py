"""Diffusion (EDM) and flow-matching training step: gdm's model through lightning.Trainer, steps/s and peak GPU
memory, and the sampling speed of its EMA net at the config's sampler and NFE.

The model is conf/model/<model>.yaml as `run.py model=<model>` builds it (hydra's instantiate, sized from the data),
pixel space, unconditional, on random in-memory RGB images in [-1, 1) (bench_harness); --channels and --patch-size
override the config's U-Net (gdm.nets.unet.UNet), diffusion is always formulation=edm. A step = one batch = the
module's training_step (the loss on noised images), the backward pass, Adam's step and the EMA update of
on_train_batch_end; images/s = batch x steps/s.

Variants (bench_harness): `gdm` (the Lightning module trained by lightning.Trainer); `plain-loop` (the same
training_step, backward, Adam step and EMA update in a bare loop, without Lightning); `floor` and `opaque`
(Lightning's loop alone, and around that bare step); options `-channels_last` (the module's weights and its input
images in NHWC: the diffusion and flow models have no model.channels_last option, so the bench converts them as the
GANs' option does), `-compile` (torch.compile'd net, as `compile=true`; the EMA net that samples is not compiled)
and `-bf16` (bf16-mixed whatever --precision says).

After the timed steps each variant samples --sample-n images with the EMA net (`generate`, the config's sampler and
steps; under autocast for bf16-mixed), once untimed and once timed: sample images/s and the sampling's peak GPU
memory, in a second table.

    .venv/bin/python experiments/bench_iterative_step.py --model flow --steps 20 --warmup 3
    .venv/bin/python experiments/bench_iterative_step.py --model diffusion --image-size 64 --device cuda \\
        --variants gdm,gdm-channels_last,gdm-channels_last-compile,gdm-channels_last-bf16 --cudnn-benchmark
    .venv/bin/python experiments/bench_iterative_step.py --model flow --batch-size 4 --channels 8 --steps 3 \\
        --warmup 1 --threads 1 --sample-n 2 --variants gdm,plain-loop,gdm-channels_last-bf16
"""

from __future__ import annotations

import functools
import time
import warnings
from pathlib import Path

import bench_harness as bench
import torch

CONF = Path(__file__).resolve().parent.parent / "conf" / "model"


def model_factory(args):
    """conf/model/<model>.yaml's model, as gdm.tasks.build.build_model instantiates it: a partial to call with
    image_shape and num_classes. Pixel space (autoencoder null), EDM for diffusion, the bench's U-Net overrides."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(CONF / f"{args.model}.yaml").model
    cfg.autoencoder = None
    if args.model == "diffusion":
        cfg.formulation = "edm"
    for key, value in (("channels", args.channels), ("patch_size", args.patch_size)):
        if value is not None:
            cfg.net[key] = value
    return instantiate(cfg, _partial_=True, _convert_="all"), OmegaConf.to_container(cfg.net)


class PlainUpdate:
    """What Lightning's automatic optimization does per batch, for the harness's plain loop: the module's own
    training_step, backward, gradient clipping (grad_clip), the step of configure_optimizers' Adam and
    on_train_batch_end's EMA update (the harness reads the kept losses back, as the module's hook would)."""

    def plain_optimizers(self) -> list[torch.optim.Optimizer]:
        if "_plain_optimizers" not in self.__dict__:
            configured = self.configure_optimizers()
            if isinstance(configured, dict):
                raise SystemExit("plain-loop: the bench drives no learning-rate schedule (lr_warmup_steps=0 only)")
            self._plain_optimizers = [configured]
        return self._plain_optimizers

    def update(self, batch: dict, batch_idx: int, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
        optimizer.zero_grad(set_to_none=True)
        loss = self.training_step(batch, batch_idx)
        if loss is not None:
            loss.backward()
            if self.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.grad_clip)
            optimizer.step()
        self.net_ema.update(self.net, batch["image"].shape[0])
        return {"train/loss": loss.detach() if loss is not None else torch.zeros(())}


def gdm_model(args, runner: str, options: set[str]):
    make_model, _ = model_factory(args)
    if runner in ("plain-loop", "opaque"):  # the same class with the plain loop's update
        cls = type(make_model.func.__name__, (PlainUpdate, make_model.func), {"__module__": __name__})
        make_model = functools.partial(cls, *make_model.args, **make_model.keywords)
    model = make_model(image_shape=(3, args.image_size, args.image_size), num_classes=None)
    if "channels_last" in options:
        model.to(memory_format=torch.channels_last)  # the net and its EMA copy
        to_space = model.to_space
        model.to_space = lambda images: to_space(images.contiguous(memory_format=torch.channels_last))
    if "compile" in options:
        model.compile_nets()
    return model


def time_sampling(args, model, device: torch.device) -> dict:
    """--sample-n images from the EMA net: one untimed call (cuDNN / allocator warm-up), one timed."""
    if model is None or args.sample_n < 1:
        return {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model.to(device)
    context = bench.autocast(device, args.precision)
    with context():
        model.generate(range(args.sample_n), seed=1)
        bench.sync(device)
        start = time.perf_counter()
        model.generate(range(args.sample_n), seed=0)
        bench.sync(device)
    seconds = time.perf_counter() - start
    return {"sample_n": args.sample_n, "sample_s": seconds, "sample_images_per_s": args.sample_n / seconds,
            "nfe": model.nfe(), "sampler": model.sampler_name, "sample_steps": model.steps,
            "sample_peak_gpu_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None}


def run(args, runner: str, options: set[str], device: torch.device) -> tuple[list[float], dict]:
    warnings.filterwarnings("ignore", message=".*self.log.*")  # the plain loop's training_step logs no-where
    loader = bench.make_loader(args, ("image",))
    marks, model = bench.run_model(runner, lambda: gdm_model(args, runner, options), args, loader, device)
    extra = {"peak_gpu_mib": torch.cuda.max_memory_allocated(device) / 2**20} if device.type == "cuda" else {}
    return marks, {**extra, **time_sampling(args, model, device)}


def print_sampling(runs: dict[str, list[dict]], cuda: bool) -> None:
    rows = {v: max(rs, key=lambda r: r.get("sample_images_per_s", 0)) for v, rs in runs.items()
            if any("sample_images_per_s" in r for r in rs)}
    if not rows:
        return
    gpu_col = f" {'peak GPU MiB':>12}" if cuda else ""
    header = (f"{'sampling (EMA net)':<28} {'images/s':>9} {'s / batch':>9} {'sampler':>8} {'steps':>5} {'NFE':>4}"
              f"{gpu_col}")
    print()
    print(header)
    print("-" * len(header))
    for v, r in rows.items():
        gpu = f" {r['sample_peak_gpu_mib']:12.0f}" if cuda else ""
        print(f"{v:<28} {r['sample_images_per_s']:9.1f} {r['sample_s']:9.3f} {r['sampler']:>8} {r['sample_steps']:5d} "
              f"{r['nfe'] if r['nfe'] is not None else '-':>4}{gpu}")
    n = next(iter(rows.values()))["sample_n"]
    print(f"one batch of {n} images, after one untimed batch; the -compile variants sample with the EMA net, not "
          "compiled; training peak GPU memory is the first table's.")


def main() -> None:
    p = bench.parser(__doc__, image_size=32, batch_size=64, steps=50, warmup=5, variants="gdm,gdm-channels_last")
    p.add_argument("--model", choices=("flow", "diffusion"), default="flow",
                   help="conf/model/<model>.yaml (diffusion: formulation=edm)")
    p.add_argument("--channels", type=int, help="the U-Net's first-level channels (default: the config's)")
    p.add_argument("--patch-size", type=int, help="the U-Net's patch size (default: the config's)")
    p.add_argument("--sample-n", type=int, default=64, help="images sampled after training and timed (0: none)")
    args = p.parse_args()
    header = []
    if not args.only:
        make_model, net = model_factory(args)
        model = make_model(image_shape=(3, args.image_size, args.image_size), num_classes=None)
        params = sum(q.numel() for q in model.net.parameters())
        kind = "EDM diffusion" if args.model == "diffusion" else "rectified flow"
        header = [f"{args.model} ({kind}) {args.image_size} px x 3 | batch {args.batch_size} | U-Net channels "
                  f"{net['channels']} mult {net['channel_mult']} res blocks {net['num_res_blocks']} patch "
                  f"{net['patch_size']} dropout {net['dropout']} | {params / 1e6:.2f} M params | a step: training_step "
                  f"+ Adam + EMA | sampling: {model.sampler_name} {model.steps} steps, NFE {model.nfe()}"]
    runs = bench.main(args, functools.partial(run, args), args.batch_size, header)
    if runs:
        print_sampling(runs, args.device.startswith("cuda"))


if __name__ == "__main__":
    main()
