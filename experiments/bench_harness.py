"""What the throughput benchmarks share: each variant runs in a fresh child process (so one variant's
allocator and thread state cannot colour the next) and reports one JSON line tagged RESULT_TAG."""

from __future__ import annotations

import json
import os
import subprocess

RESULT_TAG = "BENCH_RESULT "


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
