"""GAN training throughput on the CPU: gdm's GAN (through a real Lightning Trainer) vs the PyTorch DCGAN example.

Configuration of the classic DCGAN example: 64x64 RGB images, nz = 100, ngf = ndf = 64, batch 64, one
discriminator and one generator update per batch, Adam(lr 2e-4, betas (0.5, 0.999)), random data in [-1, 1].

Variants (each runs in its own subprocess, so peak RSS and thread state are per variant):

  reference               a re-implementation of pytorch/examples dcgan/main.py's training loop: its own nets
                          (Sigmoid at the end of D) and weights_init, nn.BCELoss with labels 1 / 0, D updated from
                          errD_real.backward() + errD_fake.backward() on netD(fake.detach()), G from netD(fake)
                          with label 1, D's weights still requiring grad during the G step, and .item() on
                          D(x), D(G(z)) x 2, errD and errG every iteration (the example prints them; here the line
                          is formatted and only printed with --verbose). The every-100-iterations image dump and
                          per-epoch checkpoints are left out.
  gdm                     gdm.models.gan.GAN(loss="vanilla") with the gdm DCGAN nets, trained by lightning.Trainer.
  gdm-channels_last       the same with channels_last=True.
  plain-loop              gdm's training_step update (one G forward per batch, reused for the G step; D frozen
                          by requires_grad_(False) during the G step; softplus losses) on gdm's nets in a bare
                          PyTorch loop, fp32, no .item() except every --log-every steps: the framework-free
                          baseline for `gdm`.
  plain-loop-channels_last the same in channels_last (not in the default list): the baseline for
                          `gdm-channels_last`.

Images/s = batch size x timed steps / seconds, over the steps after the --warmup ones (the median over single
steps is shown beside it, as a check on a machine shared with other work). A "step" is one batch,
i.e. one D and one G update (Lightning's global_step counts 2 per batch).

    .venv/bin/python experiments/bench_gan_throughput.py --steps 100 --warmup 10
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import platform
import resource
import statistics
import sys
import time
import warnings

import torch
import torch.nn.functional as F
from bench_harness import RESULT_TAG, default_threads, run_variant
from torch import nn
from torch.utils.data import DataLoader, Dataset

VARIANTS = ["reference", "gdm", "gdm-channels_last", "plain-loop", "plain-loop-channels_last"]
DEFAULT_VARIANTS = ["reference", "gdm", "gdm-channels_last", "plain-loop"]
NC = 3


# ---- data ---------------------------------------------------------------------------------------


class RandomImages(Dataset):
    """`length` samples {"image": x}, x uniform in [-1, 1), cycled from a small fixed pool.

    The pool keeps memory flat whatever the number of steps; every variant gets the same loader.
    """

    def __init__(self, length: int, image_size: int, pool_size: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.pool = torch.rand(pool_size, NC, image_size, image_size, generator=g) * 2 - 1
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.pool[i % len(self.pool)]}


def make_loader(args: argparse.Namespace) -> DataLoader:
    n_batches = args.warmup + args.steps
    dataset = RandomImages(n_batches * args.batch_size, args.image_size, pool_size=4 * args.batch_size,
                           seed=args.seed)
    return DataLoader(dataset, batch_size=args.batch_size, shuffle=False, num_workers=0, drop_last=True)


# ---- (a) the PyTorch DCGAN example ---------------------------------------------------------------


def reference_weights_init(m: nn.Module) -> None:
    classname = m.__class__.__name__
    if classname.find("Conv") != -1:
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif classname.find("BatchNorm") != -1:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class ReferenceGenerator(nn.Module):
    def __init__(self, nz: int, ngf: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),  # 4x4
            nn.BatchNorm2d(ngf * 8),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),  # 8x8
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),  # 16x16
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),  # 32x32
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf, NC, 4, 2, 1, bias=False),  # 64x64
            nn.Tanh(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class ReferenceDiscriminator(nn.Module):
    def __init__(self, ndf: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(NC, ndf, 4, 2, 1, bias=False),  # 32x32
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),  # 16x16
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),  # 8x8
            nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),  # 4x4
            nn.BatchNorm2d(ndf * 8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).view(-1, 1).squeeze(1)


def run_reference(args: argparse.Namespace) -> list[float]:
    if args.image_size != 64:
        raise SystemExit("the reference DCGAN nets are fixed at 64x64: use --image-size 64")
    nz, lr, beta1 = args.nz, 2e-4, 0.5
    netG = ReferenceGenerator(nz, args.ngf)
    netG.apply(reference_weights_init)
    netD = ReferenceDiscriminator(args.ndf)
    netD.apply(reference_weights_init)
    criterion = nn.BCELoss()
    real_label, fake_label = 1, 0
    optimizerD = torch.optim.Adam(netD.parameters(), lr=lr, betas=(beta1, 0.999))
    optimizerG = torch.optim.Adam(netG.parameters(), lr=lr, betas=(beta1, 0.999))
    loader = make_loader(args)

    marks: list[float] = []  # start of the first timed step, then the end of each timed step
    for i, data in enumerate(loader):
        if i == args.warmup:
            marks.append(time.perf_counter())
        # (1) Update D: maximize log(D(x)) + log(1 - D(G(z)))
        netD.zero_grad()
        real_cpu = data["image"]
        batch_size = real_cpu.size(0)
        label = torch.full((batch_size,), real_label, dtype=real_cpu.dtype)
        output = netD(real_cpu)
        errD_real = criterion(output, label)
        errD_real.backward()
        D_x = output.mean().item()

        noise = torch.randn(batch_size, nz, 1, 1)
        fake = netG(noise)
        label.fill_(fake_label)
        output = netD(fake.detach())
        errD_fake = criterion(output, label)
        errD_fake.backward()
        D_G_z1 = output.mean().item()
        errD = errD_real + errD_fake
        optimizerD.step()

        # (2) Update G: maximize log(D(G(z)))
        netG.zero_grad()
        label.fill_(real_label)  # fake labels are real for generator cost
        output = netD(fake)
        errG = criterion(output, label)
        errG.backward()
        D_G_z2 = output.mean().item()
        optimizerG.step()

        line = (f"[0/1][{i}/{len(loader)}] Loss_D: {errD.item():.4f} Loss_G: {errG.item():.4f} "
                f"D(x): {D_x:.4f} D(G(z)): {D_G_z1:.4f} / {D_G_z2:.4f}")
        if args.verbose:
            print(line, file=sys.stderr)
        if i >= args.warmup:
            marks.append(time.perf_counter())
    return marks


# ---- (b, c) gdm's GAN through lightning.Trainer ---------------------------------------------------


def gdm_factories(args: argparse.Namespace):
    from gdm.nets.dcgan import DCGANDiscriminator, DCGANGenerator

    return (functools.partial(DCGANGenerator, ngf=args.ngf), functools.partial(DCGANDiscriminator, ndf=args.ndf))


def run_gdm(args: argparse.Namespace, channels_last: bool) -> list[float]:
    import lightning as L
    from lightning.pytorch.callbacks import Callback

    from gdm.models.gan import GAN

    # Lightning sets its own logger's level when imported: quieten the accelerator lines and tips after that.
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

    class StepTimer(Callback):
        """Times batches warmup .. warmup+steps-1: from the start of the first to the end of the last."""

        def __init__(self, warmup: int):
            self.warmup = warmup
            self.marks: list[float] = []  # start of batch `warmup`, then the end of each timed batch

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == self.warmup:
                self.marks.append(time.perf_counter())

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx >= self.warmup:
                self.marks.append(time.perf_counter())

    gen, disc = gdm_factories(args)
    model = GAN(image_shape=(NC, args.image_size, args.image_size), generator=gen, discriminator=disc,
                latent_dim=args.nz, loss="vanilla", channels_last=channels_last)
    timer = StepTimer(args.warmup)
    n_batches = args.warmup + args.steps
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_steps=2 * n_batches, max_epochs=1,  # global_step: 2 per batch
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, num_sanity_val_steps=0, log_every_n_steps=args.log_every, callbacks=[timer],
    )
    trainer.fit(model, train_dataloaders=make_loader(args))
    if trainer.global_step != 2 * n_batches:
        raise SystemExit(f"the trainer stopped at global_step {trainer.global_step}, expected {2 * n_batches}")
    return timer.marks


# ---- (d) gdm's update in a plain loop ------------------------------------------------------------


def run_plain(args: argparse.Namespace, channels_last: bool) -> list[float]:
    gen, disc = gdm_factories(args)
    image_shape = (NC, args.image_size, args.image_size)
    G = gen(image_shape=image_shape, latent_dim=args.nz)
    D = disc(image_shape=image_shape)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    G.to(memory_format=fmt)
    D.to(memory_format=fmt)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    d_params = list(D.parameters())
    loader = make_loader(args)

    marks: list[float] = []  # start of the first timed step, then the end of each timed step
    logged: list[dict[str, float]] = []
    for i, batch in enumerate(loader):
        if i == args.warmup:
            marks.append(time.perf_counter())
        real = batch["image"].contiguous(memory_format=fmt)
        z = torch.randn(real.shape[0], args.nz)
        fake = G(z)
        real_logits = D(real)
        fake_logits = D(fake.detach())
        d_loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()

        for p in d_params:
            p.requires_grad_(False)
        g_loss = F.softplus(-D(fake)).mean()
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        for p in d_params:
            p.requires_grad_(True)

        if args.log_every and (i + 1) % args.log_every == 0:  # the only host reads
            logged.append({"d_loss": d_loss.item(), "g_loss": g_loss.item()})
            if args.verbose:
                print(f"step {i + 1}: {logged[-1]}", file=sys.stderr)
        if i >= args.warmup:
            marks.append(time.perf_counter())
    return marks


# ---- driver --------------------------------------------------------------------------------------


def run_one(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    # Lightning's warnings (no val loader, few workers, pytree deprecations) are noise here.
    for pattern in (".*does not have many workers.*", ".*num_workers.*", ".*val_dataloader.*", ".*LeafSpec.*"):
        warnings.filterwarnings("ignore", message=pattern)
    v = args.only
    if v == "reference":
        marks = run_reference(args)
    elif v in ("gdm", "gdm-channels_last"):
        marks = run_gdm(args, channels_last=v.endswith("channels_last"))
    elif v in ("plain-loop", "plain-loop-channels_last"):
        marks = run_plain(args, channels_last=v.endswith("channels_last"))
    else:
        raise SystemExit(f"unknown variant {v!r}; choose from {', '.join(VARIANTS)}")
    timed = len(marks) - 1
    if timed != args.steps:
        raise SystemExit(f"{v}: timed {timed} steps, expected {args.steps}")
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    seconds = marks[-1] - marks[0]
    step_seconds = [b - a for a, b in zip(marks, marks[1:])]
    return {
        "variant": v, "seconds": seconds, "steps": timed,
        "images_per_s": args.batch_size * timed / seconds, "steps_per_s": timed / seconds,
        # robust to a neighbour stealing the cores for part of the run
        "median_images_per_s": args.batch_size / statistics.median(step_seconds),
        "peak_rss_mib": peak_kib / 1024, "threads": torch.get_num_threads(),
    }


def child_argv(args: argparse.Namespace, variant: str) -> list[str]:
    argv = [sys.executable, os.path.abspath(__file__), "--only", variant,
            "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
            "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads),
            "--nz", str(args.nz), "--ngf", str(args.ngf), "--ndf", str(args.ndf), "--seed", str(args.seed),
            "--log-every", str(args.log_every)]
    return argv + (["--verbose"] if args.verbose else [])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=50, help="timed batches (each: one D + one G update)")
    p.add_argument("--warmup", type=int, default=5, help="untimed batches before the timed ones")
    p.add_argument("--threads", type=int, default=default_threads(), help="torch.set_num_threads (default: cores)")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                   help=f"comma-separated, from: {', '.join(VARIANTS)}")
    p.add_argument("--nz", type=int, default=100)
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=50,
                   help="Trainer log_every_n_steps; the plain loop reads its losses every N steps")
    p.add_argument("--repeats", type=int, default=1,
                   help="run the variant list this many times, interleaved; the table shows each variant's best "
                        "run (on a shared machine the best is the least disturbed)")
    p.add_argument("--verbose", action="store_true", help="print the per-step loss lines to stderr")
    p.add_argument("--only", help=argparse.SUPPRESS)  # internal: run one variant in this process
    args = p.parse_args()
    if args.steps < 1 or args.warmup < 0 or args.repeats < 1:
        p.error("--steps and --repeats must be >= 1 and --warmup >= 0")

    if args.only:
        print(RESULT_TAG + json.dumps(run_one(args)), flush=True)
        return

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")

    import lightning

    print(f"torch {torch.__version__} | lightning {lightning.__version__} | python {platform.python_version()} "
          f"| {platform.machine()} cpu capability {torch.backends.cpu.get_cpu_capability()} "
          f"| mkldnn {torch.backends.mkldnn.is_available()}")
    print(f"cores {default_threads()} | torch threads {args.threads} | image {args.image_size}px "
          f"| batch {args.batch_size} | nz {args.nz} ngf {args.ngf} ndf {args.ndf} "
          f"| warmup {args.warmup} + timed {args.steps} batches (one D + one G update each)"
          f"{f' | {args.repeats} interleaved repeats' if args.repeats > 1 else ''}", flush=True)

    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for rep in range(args.repeats):
        for v in variants:
            r = run_variant(child_argv(args, v), args.threads, v)
            runs[v].append(r)
            print(f"  [{rep + 1}/{args.repeats}] {v:<26} {r['images_per_s']:8.1f} images/s  "
                  f"(median step {r['median_images_per_s']:.1f}; {r['seconds']:.1f} s, threads {r['threads']}, "
                  f"peak RSS {r['peak_rss_mib']:.0f} MiB)", flush=True)

    best = {v: max(rs, key=lambda r: r["images_per_s"]) for v, rs in runs.items()}
    ref = best["reference"]["images_per_s"] if "reference" in best else None
    header = (f"{'variant':<26} {'images/s':>9} {'steps/s':>8} {'median img/s':>13} {'peak RSS MiB':>13} "
              f"{'vs reference':>13}")
    print()
    print(header)
    print("-" * len(header))
    for v, r in best.items():
        speedup = f"{r['images_per_s'] / ref:.2f}x" if ref else "-"
        print(f"{v:<26} {r['images_per_s']:9.1f} {r['steps_per_s']:8.3f} {r['median_images_per_s']:13.1f} "
              f"{max(x['peak_rss_mib'] for x in runs[v]):13.0f} {speedup:>13}")
    print("images/s = batch x timed steps / wall seconds" + (" (best of the repeats)" if args.repeats > 1 else "")
          + "; median img/s = batch / median single-step time; speed-up vs reference is on images/s.")


if __name__ == "__main__":
    main()
