"""FID against training time for several families: one line per family (the mean over its runs, i.e. seeds, with
the min-max band; an error bar for runs of one evaluation), from each run's metrics.jsonl (every evaluation's
value and the wall seconds since the start).

    python experiments/fid_vs_time.py --out experiments/fid_vs_time.png \
        GAN=outputs/gan_s42,outputs/gan_s1,outputs/gan_s2 FLOW=... DIFFUSION=...

Prints, per family, the evaluations' (seconds, FID) averaged over runs and the first time it reaches each
threshold given with --thresholds (default 60 and 30). `--seconds first` takes each evaluation's time from the
family's first run (the one timed on an idle machine) and the FID mean and band from all.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def curve(run: Path, metric: str) -> list[tuple[float, float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [(r["wall_seconds"], r["metrics"][metric]) for r in rows if metric in r.get("metrics", {})]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("families", nargs="+", help="LABEL=RUN_DIR[,RUN_DIR...]")
    parser.add_argument("--metric", default="val/fid_digits")
    parser.add_argument("--thresholds", default="60,30")
    parser.add_argument("--out", default="fid_vs_time.png")
    parser.add_argument("--seconds", choices=("mean", "first"), default="mean",
                        help="the x of each evaluation: the runs' mean wall seconds, or the first run's (when only "
                             "the first ran on an idle machine; the others then give the FID band alone)")
    args = parser.parse_args()
    thresholds = [float(t) for t in args.thresholds.split(",")]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for family in args.families:
        label, _, dirs = family.partition("=")
        curves = [curve(Path(d), args.metric) for d in dirs.split(",")]
        n = min(len(c) for c in curves)
        clock = np.array([[p[0] for p in c[:n]] for c in curves])
        seconds = clock[0] if args.seconds == "first" else clock.mean(0)
        fid = np.array([[p[1] for p in c[:n]] for c in curves])
        mean = fid.mean(0)
        line, = ax.plot(seconds, mean, marker="o", label=f"{label} ({len(curves)} runs)")
        if len(curves) > 1 and n > 1:
            ax.fill_between(seconds, fid.min(0), fid.max(0), alpha=0.2)
        elif len(curves) > 1:  # one evaluation per run: its min-max as an error bar (a band needs two)
            ax.errorbar(seconds, mean, yerr=[mean - fid.min(0), fid.max(0) - mean], color=line.get_color(), capsize=4)
        print(f"{label}: " + ", ".join(f"{s:.0f} s -> {f:.1f}" for s, f in zip(seconds, mean, strict=True)))
        for threshold in thresholds:
            reached = [s for s, f in zip(seconds, mean, strict=True) if f <= threshold]
            print(f"  mean FID <= {threshold:g}: " + (f"at {reached[0]:.0f} s" if reached else "not reached"))
    ax.set_xlabel("wall seconds since the start of the run")
    ax.set_ylabel(args.metric)
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
