"""What the throughput benchmarks share: the command line, random in-memory data, the ways to time a model's
training (`gdm`: a real lightning.Trainer; `plain-loop`: the model's own `update` in a bare loop; `reference`: a
benchmark's re-implementation of the reference code's step; `floor`: the same Trainer over the same batches with an
empty training_step, Lightning's own cost per batch; `opaque`: that Trainer around the plain loop's step, a model
Lightning does not know, so gdm / opaque is what gdm adds under Lightning and opaque / plain-loop what Lightning's
loop costs around real work), child processes and the table.

Each variant runs in a fresh child process (so one variant's allocator and thread state cannot colour the next)
and reports one JSON line tagged RESULT_TAG; `--in-process` runs them all in this process instead (on a machine whose
processes differ run to run, the variants then share that luck). A variant is a runner with options:
`gdm-channels_last-compile` is gdm's Trainer with model.channels_last and torch.compile'd nets; its baseline is
`plain-loop-channels_last-compile`, the same model and options in a loop that calls the same `update` (the target
is >= 0.95x). Option `-bf16` runs that variant under bf16-mixed whatever --precision says, so one table can hold
both precisions (`gdm-channels_last,gdm-channels_last-bf16`).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Dataset

RESULT_TAG = "BENCH_RESULT "
RUNNERS = ("reference", "gdm", "plain-loop", "floor", "opaque")
OPTIONS = ("channels_last", "compile", "bf16")


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def run_variant(argv: list[str], threads: int, variant: str) -> dict:
    """Run one child benchmark process with `threads` BLAS/OpenMP threads; its tagged result."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    proc = subprocess.run(argv, env=env, stdout=subprocess.PIPE, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        print(proc.stdout, end="")
        raise SystemExit(f"variant {variant} failed (exit {proc.returncode})")
    return json.loads(lines[-1][len(RESULT_TAG):])


def parse_variant(variant: str) -> tuple[str, set[str]]:
    """'gdm-channels_last-compile' -> ('gdm', {'channels_last', 'compile'})."""
    for runner in RUNNERS:
        if variant == runner or variant.startswith(runner + "-"):
            options = set(variant[len(runner) + 1:].split("-")) - {""}
            if options <= set(OPTIONS):
                return runner, options
    raise SystemExit(f"unknown variant {variant!r}: a runner ({', '.join(RUNNERS)}) with options "
                     f"(-{' -'.join(OPTIONS)})")


def baseline(variant: str) -> str | None:
    runner, _ = parse_variant(variant)
    return "plain-loop" + variant[len(runner):] if runner in ("gdm", "opaque") else None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- data ---------------------------------------------------------------------------------------


class RandomImages(Dataset):
    """`length` samples {key: image for each key}, uniform in [-1, 1), cycled from small fixed pools: memory
    stays flat whatever the number of steps, and loading costs ~nothing. Every variant gets the same data."""

    def __init__(self, keys: tuple[str, ...], length: int, shape: tuple[int, int, int], pool_size: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.pools = {k: torch.rand(pool_size, *shape, generator=g) * 2 - 1 for k in keys}
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: pool[i % len(pool)] for k, pool in self.pools.items()}


def make_loader(args: argparse.Namespace, keys: tuple[str, ...], channels: int = 3) -> DataLoader:
    n_batches = args.warmup + args.steps
    dataset = RandomImages(keys, n_batches * args.batch_size, (channels, args.image_size, args.image_size),
                           pool_size=4 * args.batch_size, seed=args.seed)
    return DataLoader(dataset, batch_size=args.batch_size, shuffle=False, num_workers=0, drop_last=True)


# ---- the three runners ----------------------------------------------------------------------------


def time_loop(batches, step: Callable[[int, dict], None], warmup: int, device: torch.device) -> list[float]:
    """Run `step(i, batch)` over the batches; the start of batch `warmup`, then the end of each later batch.
    On CUDA only the window's ends wait for the device, so the host runs ahead as in training."""
    marks: list[float] = []
    for i, batch in enumerate(batches):
        if i == warmup:
            sync(device)
            marks.append(time.perf_counter())
        step(i, batch)
        if i >= warmup:
            if i == len(batches) - 1:
                sync(device)
            marks.append(time.perf_counter())
    return marks


def autocast(device: torch.device, precision: str):
    """What Lightning's precision plugin wraps training_step in."""
    if precision == "bf16-mixed":  # no weight-cast cache: its copies would go stale at the optimizer step
        return functools.partial(torch.autocast, device_type=device.type, dtype=torch.bfloat16, cache_enabled=False)
    if precision in ("32-true", "32"):
        return contextlib.nullcontext
    raise SystemExit(f"the plain loop knows --precision 32-true and bf16-mixed, not {precision!r}")


def plain_step(model, args: argparse.Namespace, device: torch.device) -> Callable[[int, dict], None]:
    """`step(i, batch)`: the model's own `update` with the optimizers of its configure_optimizers(), what gdm does per
    batch without Lightning. Like the Trainer it reads the logged values every --log-every batches and the kept
    losses every nonfinite_policy.check_every_n_steps."""
    if device.type == "cuda" and args.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    model.to(device)
    model.train()
    optimizers = model.plain_optimizers()
    context = autocast(device, args.precision)

    def step(i: int, batch: dict) -> None:
        batch = {k: v.to(device) for k, v in batch.items()}  # as the Trainer does before training_step
        with context():
            logs = model.update(batch, i, *optimizers)
        if (i + 1) % model.nonfinite_policy.check_every_n_steps == 0:
            model.check_losses()
        if args.log_every and (i + 1) % args.log_every == 0:
            {k: float(v) for k, v in logs.items()}  # noqa: B018 - the logger's read

    return step


def run_plain(model, args: argparse.Namespace, loader: DataLoader, device: torch.device) -> list[float]:
    """`plain_step` in a bare loop: the framework-free baseline."""
    return time_loop(loader, plain_step(model, args, device), args.warmup, device)


def run_floor(args: argparse.Namespace, loader: DataLoader, device: torch.device, model=None) -> list[float]:
    """Lightning's own cost per batch: run_trainer's Trainer over the same batches (manual optimization, like gdm's
    adversarial models), with a training_step that does nothing (`floor`: what no model trained by the Trainer can
    go under) or, given `model`, runs `plain_step` on it (`opaque`: Lightning's loop around work it does not see,
    the model being neither a submodule nor given its optimizers)."""
    import lightning as L

    step = plain_step(model, args, device) if model is not None else None

    class Floor(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, batch_idx):
            if step is not None:
                step(batch_idx, batch)

        def configure_optimizers(self):
            return torch.optim.SGD([self.weight], lr=0.0)

    return run_trainer(Floor(), args, loader, device)


def run_model(runner: str, make_model: Callable[[], torch.nn.Module], args: argparse.Namespace, loader: DataLoader,
              device: torch.device) -> tuple[list[float], torch.nn.Module | None]:
    """The runners that train gdm's model: `gdm` (the Trainer), `plain-loop` (its update, bare), `floor` (the
    Trainer's loop alone, no model) and `opaque` (the Trainer's loop around the bare step); the timing marks and the
    model (None for the floor)."""
    if runner == "floor":
        return run_floor(args, loader, device), None
    model = make_model()
    if runner == "opaque":
        return run_floor(args, loader, device, model), model
    return (run_trainer if runner == "gdm" else run_plain)(model, args, loader, device), model


def run_trainer(model, args: argparse.Namespace, loader: DataLoader, device: torch.device) -> list[float]:
    """gdm's way: the model trained by lightning.Trainer (no logger, checkpoints or progress bar)."""
    import lightning as L
    from lightning.pytorch.callbacks import Callback

    # Lightning sets its own logger's level when imported: quieten the accelerator lines and tips after that.
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    n_batches = args.warmup + args.steps

    class StepTimer(Callback):
        def __init__(self):
            self.marks: list[float] = []  # start of batch `warmup`, then the end of each timed batch

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == args.warmup:
                sync(device)
                self.marks.append(time.perf_counter())

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx >= args.warmup:
                if batch_idx == n_batches - 1:
                    sync(device)
                self.marks.append(time.perf_counter())

    timer = StepTimer()
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu", precision=args.precision,
        devices=[device.index] if device.type == "cuda" else 1,
        max_epochs=1, limit_train_batches=n_batches, limit_val_batches=0, num_sanity_val_steps=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        log_every_n_steps=args.log_every, benchmark=True if args.cudnn_benchmark else None, callbacks=[timer],
    )
    trainer.fit(model, train_dataloaders=loader)
    return timer.marks


# ---- driver --------------------------------------------------------------------------------------


def parser(doc: str, **defaults) -> argparse.ArgumentParser:
    """The flags every throughput benchmark takes; `defaults` sets a benchmark's own defaults."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=doc.split("\n\n", 1)[-1])
    p.add_argument("--image-size", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--steps", type=int, help="timed batches")
    p.add_argument("--warmup", type=int, help="untimed batches before the timed ones")
    p.add_argument("--threads", type=int, default=default_threads(), help="torch.set_num_threads (default: cores)")
    p.add_argument("--variants", help=f"comma-separated: a runner ({', '.join(RUNNERS)}) with options "
                                      f"(-{' -'.join(OPTIONS)}), e.g. gdm-channels_last")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--precision", default="32-true",
                   help="gdm / plain-loop: 32-true (default) or bf16-mixed; the reference is always fp32")
    p.add_argument("--cudnn-benchmark", action="store_true", help="CUDA: cudnn.benchmark for gdm / plain-loop too")
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=50,
                   help="Trainer log_every_n_steps; the plain loop reads its logged values every N batches")
    p.add_argument("--repeats", type=int, default=1,
                   help="run the variant list this many times, interleaved; the table shows each variant's best run "
                        "(on a shared machine the best is the least disturbed)")
    p.add_argument("--in-process", action="store_true",
                   help="run the variants in this process, one after another (repeats interleaved), instead of a child "
                        "process each: the variants then share one memory layout and thread state, which on a noisy "
                        "machine separates them better than fresh processes do (peak RSS is then not reported)")
    p.add_argument("--json", help="also write every run's result to this file")
    p.add_argument("--only", help=argparse.SUPPRESS)  # internal: run one variant in this process
    p.set_defaults(**defaults)
    return p


def measure(args: argparse.Namespace, run: Callable[[str, set[str], torch.device], tuple[list[float], dict]],
            images_per_step: int) -> dict:
    """One variant in this process: `run(runner, options, device)` -> (marks, extra fields)."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    # Lightning's warnings (no val loader, few workers, pytree deprecations) are noise here.
    for pattern in (".*does not have many workers.*", ".*num_workers.*", ".*val_dataloader.*", ".*LeafSpec.*",
                    ".*learning-rate schedule.*"):
        warnings.filterwarnings("ignore", message=pattern)
    device = torch.device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index)
        torch.cuda.set_device(device)
        torch.cuda.reset_peak_memory_stats(device)
    runner, options = parse_variant(args.only)
    precision = args.precision  # the runners read args (--in-process: the next variant's too)
    args.precision = ran_precision = "bf16-mixed" if "bf16" in options else precision
    try:
        marks, extra = run(runner, options, device)
    finally:
        args.precision = precision
    timed = len(marks) - 1
    if timed != args.steps:
        raise SystemExit(f"{args.only}: timed {timed} steps, expected {args.steps}")
    seconds = marks[-1] - marks[0]
    return {
        "variant": args.only, "seconds": seconds, "steps": timed, "steps_per_s": timed / seconds,
        "images_per_s": images_per_step * timed / seconds,
        "median_step_s": statistics.median(b - a for a, b in zip(marks, marks[1:])),  # robust to a busy neighbour
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
        "peak_gpu_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "threads": torch.get_num_threads(), "precision": ran_precision, **extra,
    }


def main(args: argparse.Namespace, run: Callable, images_per_step: int, header: list[str],
         check: Callable[[dict], None] | None = None) -> dict[str, list[dict]]:
    """In a child (--only): measure one variant and print its tagged result. Else run every variant in its own
    child, --repeats times interleaved, print a line per run and the table of each variant's best run."""
    if args.steps < 1 or args.warmup < 0 or args.repeats < 1 or args.batch_size < 1:
        raise SystemExit("--steps, --repeats and --batch-size must be >= 1 and --warmup >= 0")
    if args.only:
        print(RESULT_TAG + json.dumps(measure(args, run, images_per_step)), flush=True)
        return {}
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in variants:
        parse_variant(v)
    import lightning

    cuda = args.device.startswith("cuda")
    hw = (torch.cuda.get_device_name(args.device) if cuda and torch.cuda.is_available()
          else f"{platform.machine()} cpu capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"torch {torch.__version__} | lightning {lightning.__version__} | python {platform.python_version()} "
          f"| {args.device}: {hw} | cores {default_threads()} | torch threads {args.threads}")
    for line in header:
        print(line)
    bf16 = " (-bf16 variants: bf16-mixed)" if any("bf16" in parse_variant(v)[1] for v in variants) else ""
    print(f"warmup {args.warmup} + timed {args.steps} steps | precision: gdm / plain-loop {args.precision}{bf16}, "
          f"reference fp32{f' | {args.repeats} interleaved repeats' if args.repeats > 1 else ''}", flush=True)

    argv = [sys.executable, os.path.abspath(sys.argv[0]), *sys.argv[1:]]
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for rep in range(args.repeats):
        for v in variants:
            if args.in_process:
                args.only = v
                r = dict(measure(args, run, images_per_step), peak_rss_mib=None)
            else:
                r = run_variant([*argv, "--only", v], args.threads, v)
            if check is not None:
                check(r)
            runs[v].append(r)
            gpu = f", peak GPU {r['peak_gpu_mib']:.0f} MiB" if r["peak_gpu_mib"] is not None else ""
            rss = f", peak RSS {r['peak_rss_mib']:.0f} MiB" if r["peak_rss_mib"] is not None else ""
            print(f"  [{rep + 1}/{args.repeats}] {v:<28} {r['steps_per_s']:9.2f} steps/s  (median step "
                  f"{1e3 * r['median_step_s']:.2f} ms; {r['seconds']:.1f} s{rss}{gpu})", flush=True)
    print_table(runs, cuda)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"argv": sys.argv, "runs": runs}, f, indent=1)
    return runs


def print_table(runs: dict[str, list[dict]], cuda: bool) -> None:
    best = {v: max(rs, key=lambda r: r["steps_per_s"]) for v, rs in runs.items()}
    typical = {v: statistics.median(r["steps_per_s"] for r in rs) for v, rs in runs.items()}  # the median run
    ref = best["reference"]["steps_per_s"] if "reference" in best else None
    gpu_col = f" {'peak GPU MiB':>12}" if cuda else ""
    header = (f"{'variant':<28} {'steps/s':>9} {'ms/step':>8} {'images/s':>9} {'median ms':>10} {'peak RSS MiB':>12}"
              f"{gpu_col} {'vs reference':>12} {'vs plain-loop':>13} {'median runs':>11}")
    print()
    print(header)
    print("-" * len(header))
    for v, r in best.items():
        vs_ref = f"{r['steps_per_s'] / ref:.3f}x" if ref else "-"
        base = baseline(v)
        vs_plain = f"{r['steps_per_s'] / best[base]['steps_per_s']:.3f}x" if base in best else "-"
        vs_plain_typical = f"{typical[v] / typical[base]:.3f}x" if base in best else "-"
        gpu = f" {max(x['peak_gpu_mib'] for x in runs[v]):12.0f}" if cuda else ""
        rss = [x["peak_rss_mib"] for x in runs[v] if x["peak_rss_mib"] is not None]
        print(f"{v:<28} {r['steps_per_s']:9.2f} {1e3 / r['steps_per_s']:8.2f} {r['images_per_s']:9.1f} "
              f"{1e3 * r['median_step_s']:10.2f} {f'{max(rss):.0f}' if rss else '-':>12}{gpu} "
              f"{vs_ref:>12} {vs_plain:>13} {vs_plain_typical:>11}")
    repeats = len(next(iter(runs.values())))
    print("steps/s = timed steps / wall seconds" + (f" (best of {repeats} repeats)" if repeats > 1 else "")
          + "; median ms = median single step; ratios on steps/s; vs plain-loop: gdm-X (or opaque-X) vs plain-loop-X "
          "(the same model's update without Lightning; target >= 0.95x), best run against best run; median runs: "
          "the same ratio of each variant's median run; floor: Lightning's loop with an empty "
          "training_step; opaque: that loop around the plain-loop step.")
