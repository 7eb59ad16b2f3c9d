#!/usr/bin/env bash
# Does a refactoring change results? Train the same command at two commits on this machine, one after the other,
# and compare every logged metric and every tensor of last.ckpt.
#   experiments/same_results.sh OLD_COMMIT [NEW_COMMIT (default HEAD)] [-- run.py overrides]
# Default overrides: the default experiment cut to 4 epochs with an evaluation every 2.
set -euo pipefail
old=$1; shift
new=HEAD
if [ $# -gt 0 ] && [ "$1" != "--" ]; then new=$1; shift; fi
[ "${1:-}" = "--" ] && shift
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(trainer.max_epochs=4 trainer.check_val_every_n_epoch=2 logger=none test_after_fit=false)
root=$(git rev-parse --show-toplevel)
python=${PYTHON:-$root/.venv/bin/python}
work=$(mktemp -d)
for side in old new; do
  commit=${!side}
  git -C "$root" worktree add -q --detach "$work/$side" "$commit"
  (cd "$work/$side" && WANDB_MODE=disabled "$python" run.py "${args[@]}" "hydra.run.dir=$work/run_$side" \
      > "$work/$side.log" 2>&1) || { echo "$side ($commit) failed: $work/$side.log"; exit 1; }
done
"$python" - "$work" <<'PY'
import json, sys, torch
work = sys.argv[1]
# the seconds per 1,000 samples are a clock reading, not a result: left out of the comparison
rows = {s: [{k: v for k, v in json.loads(l)["metrics"].items() if not k.endswith("sample_seconds_per_1000")}
            for l in open(f"{work}/run_{s}/metrics.jsonl")] for s in ("old", "new")}
same_metrics = rows["old"] == rows["new"]
a, b = (torch.load(f"{work}/run_{s}/checkpoints/last.ckpt", weights_only=False)["state_dict"] for s in ("old", "new"))
differ = sorted(set(a) ^ set(b)) + [k for k in a if k in b and not torch.equal(a[k], b[k])]
print(f"evaluations: {len(rows['old'])} / {len(rows['new'])}; metrics identical: {same_metrics}")
print(f"state dict: {len(a)} tensors; differing or missing: {differ or 'none'}")
for r in rows["new"]:
    print({k: round(v, 4) for k, v in r.items() if "fid" in k})
PY
git -C "$root" worktree remove --force "$work/old"
git -C "$root" worktree remove --force "$work/new"
