"""Where a training batch's time goes under lightning.Trainer, against the benchmarks' plain loop of the same update.

The small GAN of the issue-16 command (`bench_gan_throughput.py --image-size 16 --batch-size 8 --ngf 4 --ndf 4`) is
trained by the Trainer with timestamps at on_train_batch_start, training_step's entry and exit, and
on_train_batch_end; then the same update runs in the plain loop, timing the DataLoader fetch and the step apart.
Prints the median and mean of each segment (ms per batch, after --skip batches):

    .venv/bin/python experiments/loop_segments.py --steps 400
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import bench_gan_throughput
import bench_harness as bench
import torch


def summary(name: str, values: list[float]) -> str:
    return f"{name:32s} median {statistics.median(values):7.4f} ms   mean {statistics.mean(values):7.4f} ms"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--skip", type=int, default=80, help="first batches left out (warm-up)")
    p.add_argument("--threads", type=int, default=bench.default_threads())
    cli = p.parse_args()
    torch.set_num_threads(cli.threads)
    args = argparse.Namespace(image_size=16, batch_size=8, ngf=4, ndf=4, nz=100, steps=cli.steps, warmup=0, seed=0,
                              precision="32-true", log_every=50, cudnn_benchmark=False)
    import lightning as L

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    model = bench_gan_throughput.gdm_model(args, set())
    marks: list[tuple[str, float]] = []
    training_step = model.training_step

    def timed_training_step(batch, batch_idx):
        marks.append(("training_step", time.perf_counter()))
        out = training_step(batch, batch_idx)
        marks.append(("training_step end", time.perf_counter()))
        return out

    model.training_step = timed_training_step

    class Marks(L.Callback):
        def on_train_batch_start(self, *_):
            marks.append(("on_train_batch_start", time.perf_counter()))

        def on_train_batch_end(self, *_):
            marks.append(("on_train_batch_end", time.perf_counter()))

    L.Trainer(accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=cli.steps, limit_val_batches=0,
              num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, log_every_n_steps=args.log_every,
              callbacks=[Marks()]).fit(model, bench.make_loader(args, ("image",)))
    segments: dict[str, list[float]] = {}
    for (a, t_a), (b, t_b) in zip(marks[4 * cli.skip:], marks[4 * cli.skip + 1:]):
        segments.setdefault(f"{a} -> {b}", []).append((t_b - t_a) * 1e3)
    print(f"lightning.Trainer, {cli.steps} batches, {cli.threads} threads (ms per batch):")
    for name in ("on_train_batch_end -> on_train_batch_start", "on_train_batch_start -> training_step",
                 "training_step -> training_step end", "training_step end -> on_train_batch_end"):
        print("  " + summary(name, segments[name]))
    print(f"  {'one batch in all':32s} {sum(statistics.mean(v) for v in segments.values()):7.4f} ms (sum of the means)")

    step = bench.plain_step(bench_gan_throughput.gdm_model(args, set()), args, torch.device("cpu"))
    fetch, update = [], []
    batches = iter(bench.make_loader(args, ("image",)))
    for i in range(cli.steps):
        t0 = time.perf_counter()
        batch = next(batches)
        t1 = time.perf_counter()
        step(i, batch)
        t2 = time.perf_counter()
        if i >= cli.skip:
            fetch.append((t1 - t0) * 1e3)
            update.append((t2 - t1) * 1e3)
    print("plain loop of the same update:")
    print("  " + summary("DataLoader fetch", fetch))
    print("  " + summary("step (update)", update))
    print(f"  {'one batch in all':32s} {statistics.mean(fetch) + statistics.mean(update):7.4f} ms (sum of the means)")


if __name__ == "__main__":
    main()
