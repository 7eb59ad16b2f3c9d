"""The throughput benchmarks (experiments/) run end to end on tiny nets: every runner times the steps it was asked for
and the table compares each gdm-like runner with its plain loop. Both benchmarks run --in-process, in one
interpreter (its start-up is most of the cost)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
TINY = ["--batch-size", "4", "--ngf", "4", "--ndf", "4", "--steps", "3", "--warmup", "1", "--threads", "1",
        "--in-process"]
DRIVER = """
import runpy, sys
for argv in sys.argv[1:]:
    sys.argv = argv.split()
    print("=== " + sys.argv[0], flush=True)
    runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_benchmarks_time_every_runner_and_set_it_beside_its_plain_loop(tmp_path):
    gan = ["bench_gan_throughput.py", *TINY, "--image-size", "16", "--repeats", "2",
           "--variants", "floor,gdm,opaque,plain-loop", "--json", str(tmp_path / "gan.json")]
    cyclegan = ["bench_cyclegan_throughput.py", *TINY, "--image-size", "32", "--n-blocks", "1", "--pool-size", "2",
                "--variants", "reference,opaque", "--json", str(tmp_path / "cyclegan.json")]
    segments = ["loop_segments.py", "--steps", "12", "--skip", "2", "--threads", "1"]
    proc = subprocess.run([sys.executable, "-c", DRIVER, " ".join(gan), " ".join(cyclegan), " ".join(segments)],
                          cwd=EXPERIMENTS, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    medians = [float(line.split("median")[1].split()[0]) for line in proc.stdout.split("=== loop_segments")[1]
               .splitlines() if "median" in line]
    assert len(medians) == 6 and all(m > 0 for m in medians)  # four Trainer segments, the plain loop's fetch and step

    runs = json.loads((tmp_path / "gan.json").read_text())["runs"]
    assert list(runs) == ["floor", "gdm", "opaque", "plain-loop"]
    for variant, results in runs.items():
        assert len(results) == 2
        assert all(r["variant"] == variant and r["steps"] == 3 and r["steps_per_s"] > 0 for r in results)
        assert all(r["peak_rss_mib"] is None for r in results)  # one process: no per-variant peak
    gan_table = proc.stdout.split("=== bench_cyclegan")[0]
    rows = {line.split()[0]: line.split() for line in gan_table.splitlines() if line.split()[:1] and
            line.split()[0] in runs}
    assert rows["floor"][-2:] == ["-", "-"]  # no plain-loop baseline
    for variant in ("gdm", "opaque"):  # best run against best run, then median run against median run
        best = max(r["steps_per_s"] for r in runs[variant]) / max(r["steps_per_s"] for r in runs["plain-loop"])
        assert rows[variant][-2] == f"{best:.3f}x"

    runs = json.loads((tmp_path / "cyclegan.json").read_text())["runs"]
    assert [r["steps"] for r in runs["reference"] + runs["opaque"]] == [3, 3]
    # the re-implemented reference nets are gdm's: the benchmark checks their parameter counts are equal
    assert runs["reference"][0]["g_params"] == runs["opaque"][0]["g_params"] > 0


@pytest.mark.slow
def test_translate_memory_sets_the_estimate_beside_the_rss_growth():
    proc = subprocess.run([sys.executable, "translate_memory.py", "--sizes", "256"], cwd=EXPERIMENTS,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()[1:]]
    assert [row[:2] for row in rows] == [["resnet_9blocks", "256"], ["unet_256", "256"]]
    # the count at 256 px, fitted to probes at 64 and 128 px (U-Net: 256 and 512), with the float32 input (12 bytes
    # per pixel): ResNet 524 + 12 bytes per pixel (its reflection pads add to the 515 of large images), U-Net 256 + 12
    assert float(rows[0][2]) == pytest.approx(536 * 256**2 / 2**20, rel=0.01)
    assert float(rows[1][2]) == pytest.approx(268 * 256**2 / 2**20, rel=0.01)
