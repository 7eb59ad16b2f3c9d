"""The same 12-trial Optuna GAN search on the digits, without and with median pruning: best FID and wall time.

    nice -n 10 .venv/bin/python experiments/bench_optuna_pruning.py            # ~16 min on 2 shared CPU cores

Each search is one `python run.py -m hparams_search=gan_optuna ...` (seeded TPE, basic launcher: the trials
run one after another in that process); short trials (`--epochs`, an evaluation every `--val-every` epochs)
so that the pruner sees several evaluations. The batch size is fixed (64) rather than searched: the median
pruner compares trials at equal steps, and the step axis is training batches, which a different batch size
would put at other steps. Prints one table; the sweeps stay in `--out` for a look at their summaries.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def search(out: Path, pruner: str, args: argparse.Namespace) -> dict:
    sweep_dir = out / pruner
    shutil.rmtree(sweep_dir, ignore_errors=True)  # a fresh study: the journal there would be continued
    command = [sys.executable, "run.py", "-m", "hparams_search=gan_optuna", f"hydra.sweeper.n_trials={args.trials}",
               f"hydra.sweeper.pruner={pruner}", f"hydra.sweeper.storage={sweep_dir / 'study.journal'}",
               "data.batch_size=64", f"data.image_size={args.image_size}", f"trainer.max_epochs={args.epochs}",
               f"trainer.check_val_every_n_epoch={args.val_every}", f"metrics.fid.num_samples={args.fid_samples}",
               "logger=none", "print_config=false", "test_after_fit=false", f"hydra.sweep.dir={sweep_dir}"]
    print(" ".join(command[1:]), flush=True)
    start = time.perf_counter()
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    proc = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - start
    (out / f"{pruner}.log").write_text(proc.stdout)
    if proc.returncode != 0:
        raise SystemExit(f"the {pruner} search failed (exit {proc.returncode}): see {out / pruner}.log")
    summaries = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/summary.json"))]
    finished = [s["best"]["value"] for s in summaries if s["status"] == "finished" and s.get("best")]
    every = [s["best"]["value"] for s in summaries if s.get("best") and math.isfinite(s["best"]["value"])]
    return {"pruner": pruner, "seconds": seconds, "trials": len(summaries),
            "pruned": sum(s["status"] == "pruned" for s in summaries),
            "batches": sum(s["batches"] for s in summaries),
            "best_finished": min(finished, default=math.nan), "best_any": min(every, default=math.nan)}


def replay(study_file: Path, warmups: list[int], startup: int = 3) -> None:
    """Replays the recorded curves of a no-pruning search under MedianPruner settings (no training): which
    trials each setting would have pruned, the evaluations it would have run, and its best finished FID.
    Exact as long as pruning does not change the trials TPE proposes (it did not in the runs recorded)."""
    import optuna

    from gdm.optuna_search import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    recorded = optuna.load_study(study_name="gan_optuna", storage=open_storage(str(study_file))).trials
    total = sum(len(t.intermediate_values) for t in recorded)
    for warmup in warmups:
        study = optuna.create_study(pruner=optuna.pruners.MedianPruner(startup, warmup))
        evaluations, pruned, best = 0, [], []
        for source in recorded:
            trial = study.ask()
            for step, value in source.intermediate_values.items():
                trial.report(value, step)
                evaluations += 1
                if trial.should_prune():
                    pruned.append(source.number)
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                    break
            else:
                best.append(min(source.intermediate_values.values()))
                study.tell(trial, best[-1])
        print(f"n_startup_trials={startup} n_warmup_steps={warmup}: {evaluations}/{total} evaluations "
              f"({evaluations / total:.0%}), pruned trials {pruned}, best finished FID {min(best):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--val-every", type=int, default=2)
    parser.add_argument("--fid-samples", type=int, default=500)
    parser.add_argument("--image-size", type=int, default=16, help="the digits are 8x8: 16 px loses nothing")
    # On a CPU shared with other jobs, 2 OpenMP threads each waiting for a core ran a trial ~5x slower than 1.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_optuna_pruning")
    parser.add_argument("--replay", type=int, nargs="*", metavar="WARMUP_STEPS",
                        help="instead of searching: replay --out's no-pruning search with these n_warmup_steps")
    args = parser.parse_args()
    if args.replay is not None:
        replay(args.out / "none" / "study.journal", args.replay or [0])
        return
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [search(args.out, pruner, args) for pruner in ("none", "median")]
    print(f"\n{'pruner':<8} {'wall s':>8} {'trials':>6} {'pruned':>6} {'batches':>8} {'best FID (finished)':>20} "
          f"{'best FID (any)':>15}")
    for r in rows:
        print(f"{r['pruner']:<8} {r['seconds']:>8.1f} {r['trials']:>6} {r['pruned']:>6} {r['batches']:>8} "
              f"{r['best_finished']:>20.2f} {r['best_any']:>15.2f}")
    print(f"median pruning: {rows[1]['seconds'] / rows[0]['seconds']:.0%} of the wall time, "
          f"{rows[1]['batches'] / rows[0]['batches']:.0%} of the training batches")


if __name__ == "__main__":
    main()
