#!/usr/bin/env bash
# The GPU check of issue 16, prepared to run in about 15 minutes on one GPU (a few more with 2+ GPUs):
#  1. CycleGAN 256 px (9 blocks, batch 1) and DCGAN 64 px (batch 64): steps/s and peak GPU memory for fp32,
#     bf16-mixed, channels_last and torch.compile; gdm (Lightning) vs a plain loop of the same update; fp32 vs
#     the reference code.
#  2. Flow matching and EDM diffusion (conf/model/flow.yaml, diffusion.yaml: U-Net 64 channels, patch 2) at 32 px
#     and 64 px, batch 64: training steps/s (training_step + Adam + EMA under Lightning) and peak GPU memory for
#     fp32, channels_last, torch.compile and bf16-mixed, and sampling images/s at the config's NFE (flow: heun 16
#     steps, NFE 32; EDM: heun 18 steps, NFE 35). (~7 min, estimated: 5 processes per table, one compiling)
#  3. The sync-debug check: no host-device synchronisation inside a training step (tests/test_update.py).
#  4. With 2+ GPUs: the same checkpoint evaluated by `trainer=ddp` (2 processes) and by 1 GPU gives the same FID.
#
#   experiments/gpu_check.sh              # on a GPU machine, from the repository root or anywhere
#   experiments/gpu_check.sh --cpu-smoke  # the same commands, tiny, on the CPU: checks that the script runs
#
# Results are printed and saved under ${OUT:-gpu_check_out}/ (one JSON per benchmark table).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[[ -x $PY ]] || PY=python
OUTDIR=${OUT:-gpu_check_out}
mkdir -p "$OUTDIR"

if [[ ${1:-} == --cpu-smoke ]]; then
    DEVICE=cpu
    CYCLEGAN=(--image-size 32 --ngf 4 --ndf 4 --n-blocks 1 --steps 3 --warmup 1 --threads 1)
    DCGAN=(--image-size 64 --batch-size 4 --ngf 8 --ndf 8 --steps 3 --warmup 1 --threads 1)
    ITERATIVE=(--batch-size 4 --channels 8 --steps 2 --warmup 1 --threads 1 --sample-n 2)
    COMPILE=""  # inductor on the CPU takes minutes
    PYTEST_K="not gpu"
else
    DEVICE=cuda
    "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print(torch.cuda.get_device_name())"
    CYCLEGAN=(--image-size 256 --steps 50 --warmup 10 --cudnn-benchmark)
    DCGAN=(--steps 100 --warmup 20 --cudnn-benchmark)
    ITERATIVE=(--steps 60 --warmup 15 --cudnn-benchmark)  # batch 64, 64 sampled images
    COMPILE=",gdm-channels_last-compile"  # each compile costs ~1 min cold
    PYTEST_K="gpu"
fi
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")

section() { printf '\n==== %s (%s s so far)\n' "$1" "$SECONDS"; }
bench() {  # bench NAME SCRIPT ARGS...: one table, saved as JSON
    local name=$1 script=$2
    shift 2
    section "$name"
    timeout 240 "$PY" "experiments/$script" --device "$DEVICE" --json "$OUTDIR/$name.json" "$@" \
        || echo "!! $name failed or timed out (exit $?)"
}

FP32="reference,gdm,plain-loop,gdm-channels_last,plain-loop-channels_last"
BF16="gdm,plain-loop,gdm-channels_last,plain-loop-channels_last"
bench cyclegan256_fp32 bench_cyclegan_throughput.py "${CYCLEGAN[@]}" --variants "$FP32$COMPILE"
bench cyclegan256_bf16 bench_cyclegan_throughput.py "${CYCLEGAN[@]}" --variants "$BF16" --precision bf16-mixed
bench dcgan64_fp32 bench_gan_throughput.py "${DCGAN[@]}" --variants "$FP32$COMPILE"
bench dcgan64_bf16 bench_gan_throughput.py "${DCGAN[@]}" --variants "$BF16" --precision bf16-mixed

# fp32 (-compile on the GPU) and bf16-mixed (-bf16) in one table each
ITER="gdm,gdm-channels_last$COMPILE,gdm-bf16,gdm-channels_last-bf16"
bench flow32 bench_iterative_step.py --model flow --image-size 32 "${ITERATIVE[@]}" --variants "$ITER"
bench diffusion32 bench_iterative_step.py --model diffusion --image-size 32 "${ITERATIVE[@]}" --variants "$ITER"
bench flow64 bench_iterative_step.py --model flow --image-size 64 "${ITERATIVE[@]}" --variants "$ITER"
bench diffusion64 bench_iterative_step.py --model diffusion --image-size 64 "${ITERATIVE[@]}" --variants "$ITER"

section "no host sync inside a training step (torch.cuda.set_sync_debug_mode('error'))"
timeout 180 "$PY" -m pytest tests/test_update.py -q -rs -k "$PYTEST_K" || echo "!! sync-debug check failed (exit $?)"

section "trainer=ddp FID = 1 GPU FID (the same checkpoint)"
if [[ $DEVICE == cuda && $GPUS -ge 2 ]]; then
    RUNS=$(mktemp -d)
    COMMON=(model=gan data.image_size=32 metrics.fid.num_samples=500 trainer.max_epochs=1
            +trainer.limit_train_batches=20 +trainer.limit_val_batches=2 trainer.precision=32-true
            logger=none print_config=false test_after_fit=false)
    timeout 240 "$PY" run.py "${COMMON[@]}" trainer=gpu "hydra.run.dir=$RUNS/one" > "$RUNS/one.log" 2>&1 \
        && timeout 240 "$PY" run.py "${COMMON[@]}" trainer=ddp trainer.devices=2 \
            "ckpt_path=$RUNS/one/checkpoints/last.ckpt" "hydra.run.dir=$RUNS/two" > "$RUNS/two.log" 2>&1 \
        && "$PY" - "$RUNS" <<'EOF' || echo "!! DDP FID check failed (logs in $RUNS)"
import json, math, sys
from pathlib import Path
one, two = (json.loads((Path(sys.argv[1]) / r / "summary.json").read_text())["final"] for r in ("one", "two"))
keys = [k for k in one if k.startswith("val/fid_")]
for k in keys:
    same = math.isclose(one[k], two[k], rel_tol=1e-5)
    print(f"{k}: 1 GPU {one[k]:.6f} | ddp 2 GPUs {two[k]:.6f} | {'EQUAL' if same else 'DIFFERENT'}")
sys.exit(0 if keys and all(math.isclose(one[k], two[k], rel_tol=1e-5) for k in keys) else 1)
EOF
else
    echo "skipped: $GPUS GPU(s) (needs 2+)"
fi
section "done"
