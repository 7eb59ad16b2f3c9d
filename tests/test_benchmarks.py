"""The throughput benchmarks (experiments/) run end to end on tiny nets: every runner times the steps it was asked for
and the table compares each gdm-like runner with its plain loop (--in-process: one process, a few seconds)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
TINY = ["--image-size", "16", "--batch-size", "4", "--ngf", "4", "--ndf", "4", "--steps", "3", "--warmup", "1",
        "--threads", "1"]


def bench(script: str, *args: str, tmp_path: Path) -> tuple[str, dict]:
    out = tmp_path / "runs.json"
    proc = subprocess.run([sys.executable, str(EXPERIMENTS / script), *TINY, *args, "--json", str(out)],
                          cwd=EXPERIMENTS, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout, json.loads(out.read_text())["runs"]


@pytest.mark.slow
def test_gan_benchmark_in_process_times_every_runner(tmp_path):
    stdout, runs = bench("bench_gan_throughput.py", "--in-process", "--repeats", "2",
                         "--variants", "floor,gdm,opaque,plain-loop", tmp_path=tmp_path)
    assert list(runs) == ["floor", "gdm", "opaque", "plain-loop"]
    for variant, results in runs.items():
        assert len(results) == 2
        assert all(r["variant"] == variant and r["steps"] == 3 and r["steps_per_s"] > 0 for r in results)
        assert all(r["peak_rss_mib"] is None for r in results)  # one process: no per-variant peak
    rows = {line.split()[0]: line.split() for line in stdout.splitlines() if line.split()[:1] and
            line.split()[0] in runs}
    # floor has no plain-loop baseline; gdm and opaque are set beside plain-loop (best run and median run)
    assert rows["floor"][-2:] == ["-", "-"]
    for variant in ("gdm", "opaque"):
        best = max(r["steps_per_s"] for r in runs[variant]) / max(r["steps_per_s"] for r in runs["plain-loop"])
        assert rows[variant][-2] == f"{best:.3f}x"


@pytest.mark.slow
def test_cyclegan_benchmark_times_the_reference_beside_gdm(tmp_path):
    _, runs = bench("bench_cyclegan_throughput.py", "--image-size", "32", "--n-blocks", "1", "--pool-size", "2",
                    "--in-process", "--variants", "reference,opaque", tmp_path=tmp_path)
    assert [r["steps"] for r in runs["reference"] + runs["opaque"]] == [3, 3]
    # the re-implemented reference nets are gdm's: the benchmark checks their parameter counts are equal
    assert runs["reference"][0]["g_params"] == runs["opaque"][0]["g_params"] > 0
