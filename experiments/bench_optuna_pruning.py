"""The same 12-trial Optuna GAN search on the digits, without and with pruning: best FID and wall time.

    .venv/bin/python experiments/bench_optuna_pruning.py                  # none, median, successive_halving
    .venv/bin/python experiments/bench_optuna_pruning.py --pruners none,hyperband
    .venv/bin/python experiments/bench_optuna_pruning.py --replay median median:44 hyperband successive_halving:1:3

Each search is one `python run.py -m hparams_search=gan_optuna ...` (seeded TPE, basic launcher: the trials
run one after another in that process); short trials (`--epochs`, an evaluation every `--val-every` epochs)
so that the pruner sees several evaluations. The batch size is fixed (64) rather than searched: the median
pruner compares trials at equal steps, and the step axis is training batches, which a different batch size
would put at other steps. Prints one table; the sweeps stay in `--out` for a look at their summaries.
`--replay` runs no training: it feeds the no-pruning search's recorded curves to other pruners, which is
exact as long as pruning does not change the trials the sampler proposes.
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
               f"hydra.sweeper.sampler.seed={args.sampler_seed}",
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
            "batches": sum(s["step"] for s in summaries),  # training batches (summary.json step_unit)
            "best_finished": min(finished, default=math.nan), "best_any": min(every, default=math.nan)}


def make_pruner(spec: str):
    """'median', 'median:WARMUP', 'hyperband', 'hyperband:MIN_RESOURCE:REDUCTION_FACTOR', 'successive_halving' or
    'successive_halving:MIN_RESOURCE:REDUCTION_FACTOR' (steps = training batches) -> the Optuna pruner, configured as
    conf/hydra/sweeper/optuna.yaml does apart from those values."""
    import optuna

    usage = (f"--replay {spec!r}: median[:WARMUP >= 0], hyperband[:MIN_RESOURCE >= 1:REDUCTION_FACTOR >= 2] or "
             f"successive_halving[:MIN_RESOURCE >= 1:REDUCTION_FACTOR >= 2]")
    name, *values = spec.split(":")
    try:
        numbers = [int(v) for v in values]
    except ValueError:
        raise SystemExit(usage) from None
    if name == "median" and len(numbers) <= 1 and all(n >= 0 for n in numbers):
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=numbers[0] if numbers else 0)
    if name == "hyperband" and len(numbers) in (0, 2) and (not numbers or (numbers[0] >= 1 and numbers[1] >= 2)):
        min_resource, reduction = numbers or (1, 3)
        return optuna.pruners.HyperbandPruner(min_resource=min_resource, reduction_factor=reduction)
    if name == "successive_halving" and len(numbers) in (0, 2) and (
            not numbers or (numbers[0] >= 1 and numbers[1] >= 2)):
        min_resource, reduction = numbers or ("auto", 3)
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_resource, reduction_factor=reduction)
    raise SystemExit(usage)


def replay(study_file: Path, specs: list[str]) -> None:
    """Replays the recorded curves of a no-pruning search under other pruners (no training): which trials each
    would have pruned, the evaluations it would have run, and its best finished FID. Exact as long as pruning
    does not change the trials TPE proposes (it did not in the runs recorded)."""
    import optuna

    from gdm.optuna_search import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruners = {spec: make_pruner(spec) for spec in specs}  # every spec checked before any replay
    if not study_file.is_file():
        raise SystemExit(f"no recorded search at {study_file}: run `bench_optuna_pruning.py --pruners none --out "
                         f"{study_file.parent.parent}` first")
    recorded = optuna.load_study(study_name="gan_optuna", storage=open_storage(str(study_file))).trials
    total = sum(len(t.intermediate_values) for t in recorded)
    best_all = min(min(t.intermediate_values.values()) for t in recorded if t.intermediate_values)
    for spec in specs:
        # The study's name as in the search: HyperbandPruner puts a trial in a bracket by hashing it.
        study = optuna.create_study(study_name="gan_optuna", pruner=pruners[spec])
        evaluations, pruned, best = 0, [], []
        for source in recorded:
            trial = study.ask()
            for step, value in sorted(source.intermediate_values.items()):
                trial.report(value, step)
                evaluations += 1
                if trial.should_prune():
                    pruned.append(source.number)
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                    break
            else:
                best.append(min(source.intermediate_values.values()))
                study.tell(trial, best[-1])
        print(f"{spec:<24} {evaluations:>4}/{total} evaluations ({evaluations / total:.0%}), pruned trials {pruned}, "
              f"best finished FID {min(best):.2f} (without pruning {best_all:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12, help="trials per search (default 12)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs per trial (default 20)")
    parser.add_argument("--val-every", type=int, default=2, help="epochs between evaluations (default 2)")
    parser.add_argument("--sampler-seed", type=int, default=1234, help="the TPE sampler's seed (default 1234, the "
                        "config's): another seed, another sequence of trials")
    parser.add_argument("--fid-samples", type=int, default=500, help="FID samples per evaluation (default 500)")
    parser.add_argument("--image-size", type=int, default=16, help="the digits are 8x8: 16 px loses nothing")
    # On a CPU shared with other jobs, 2 OpenMP threads each waiting for a core ran a trial ~5x slower than 1.
    parser.add_argument("--threads", type=int, default=1, help="OpenMP threads per trial (default 1)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_optuna_pruning",
                        help="the searches' sweep directories, one per pruner (default outputs/bench_optuna_pruning)")
    parser.add_argument("--pruners", default="none,median,successive_halving",
                        help="the searches to run (the first is the baseline): "
                        "comma-separated hydra.sweeper.pruner values (none, median, hyperband, successive_halving)")
    parser.add_argument("--replay", nargs="*", metavar="PRUNER",
                        help="instead of searching: replay --out's no-pruning search under these pruners: "
                             "median[:WARMUP_STEPS], hyperband[:MIN_RESOURCE:REDUCTION_FACTOR], "
                             "successive_halving[:MIN_RESOURCE:REDUCTION_FACTOR]")
    args = parser.parse_args()
    if args.replay is not None:
        replay(args.out / "none" / "study.journal", args.replay or ["median"])
        return
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [search(args.out, pruner, args) for pruner in args.pruners.split(",")]
    print(f"\n{'pruner':<18} {'wall s':>8} {'trials':>6} {'pruned':>6} {'batches':>8} {'best FID (finished)':>20} "
          f"{'best FID (any)':>15}")
    for r in rows:
        print(f"{r['pruner']:<18} {r['seconds']:>8.1f} {r['trials']:>6} {r['pruned']:>6} {r['batches']:>8} "
              f"{r['best_finished']:>20.2f} {r['best_any']:>15.2f}")
    for r in rows[1:]:
        print(f"{r['pruner']} pruning: {r['seconds'] / rows[0]['seconds']:.0%} of the wall time, "
              f"{r['batches'] / rows[0]['batches']:.0%} of the training batches of {rows[0]['pruner']}")


if __name__ == "__main__":
    main()
