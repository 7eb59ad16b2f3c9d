"""DDP on the CPU (`trainer=ddp_cpu`: 2 processes, gloo) through run.py: metrics do not depend on the
number of processes, and only rank 0 writes the run's files."""

from __future__ import annotations

import json

import pytest
from helpers import run_py

SMALL = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
         "print_config=false", "logger=csv"]
MODELS = {
    "gan": ["model=gan", "data.image_size=16", "metrics.fid.num_samples=40"],
    "cyclegan": ["model=cyclegan", "model.generator.ngf=8", "model.discriminator.ndf=8"],
    # a stochastic sampler: every step's noise seeded per sample index, so the share of each process is irrelevant
    "ddpm": ["model=diffusion", "model.formulation=ddpm", "model.sampler=ancestral", "model.steps=3",
             "data.image_size=16", "model.net.channels=16", "model.net.num_res_blocks=1",
             "metrics.fid.num_samples=40", "test_after_fit=false"],
}
# Metrics of the evaluated model; the D's score on a validation batch is left out (each process sees its
# own share of the batches).
SAMPLE_METRICS = ("val/fid_", "val/label_kept_", "val/cycle_l1_")


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_metrics_with_two_processes_equal_one_process(model, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    proc = run_py(*MODELS[model], *SMALL, f"hydra.run.dir={one}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    # The same checkpoint, evaluated by 2 processes: training is already complete, so the run only evaluates.
    proc = run_py(*MODELS[model], *SMALL, "trainer=ddp_cpu", f"ckpt_path={one / 'checkpoints' / 'last.ckpt'}",
                  f"hydra.run.dir={two}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (two / "train_ddp_process_1.log").is_file()  # a second process ran
    final = [json.loads((run / "summary.json").read_text())["final"] for run in (one, two)]
    keys = [k for k in final[0] if k.startswith(SAMPLE_METRICS)]
    assert any(k.startswith("val/fid_") for k in keys)
    for key in keys:
        assert final[1][key] == pytest.approx(final[0][key], rel=1e-5), key
    assert final[0]["global_step"] == final[1]["global_step"]
    # Only rank 0 logs: one CSV logger version (a second writer would have made version_1).
    assert [p.name for p in (two / "csv").iterdir()] == ["version_0"]


@pytest.mark.slow
def test_ddp_inside_a_multirun_runs_each_job_once_in_its_own_directory(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = run_py("-m", "trainer=ddp_cpu", "seed=1,2", *MODELS["gan"], *SMALL, f"hydra.sweep.dir={sweep_dir}")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-2000:]
    # The extra rank runs its job alone: the sweep is launched (and summarised) once, not once per rank.
    assert out.count("Launching 2 jobs locally") == 1 and out.count("sweep summary (") == 1
    for job, seed in (("0", 1), ("1", 2)):
        rank1_log = (sweep_dir / job / "train_ddp_process_1.log").read_text()
        assert f"[rank: 1] Seed set to {seed}" in rank1_log
        assert json.loads((sweep_dir / job / "summary.json").read_text())["status"] == "finished"
    assert not (sweep_dir / "2").exists()


def test_each_rank_draws_its_own_random_stream():
    """With in-process data loading every rank is seeded alike; at fit start ranks > 0 move to their own stream
    (shuffles, crops, GAN noise, CycleGAN's B draws), reproducible from (seed, rank)."""
    from types import SimpleNamespace

    import torch

    from gdm.callbacks.checkpointing import CheckpointContents

    def draws(rank: int, world_size: int = 2) -> torch.Tensor:
        torch.manual_seed(42)
        trainer = SimpleNamespace(world_size=world_size, global_rank=rank)
        CheckpointContents(seed=42).setup(trainer, None, "fit")
        return torch.rand(4)

    assert torch.equal(draws(0), draws(0, world_size=1))  # rank 0 and single-process runs: unchanged
    assert not torch.equal(draws(0), draws(1)) and torch.equal(draws(1), draws(1))


@pytest.mark.slow
def test_a_reflow_draws_the_same_pairs_in_every_process(tmp_path):
    """Ranks > 0 move to random streams of their own at fit start; the reflow's pairs still come from rank 0's seed,
    so every process trains on one set of pairs (each drawing its own batches from it)."""
    flow = ["model=flow", "data.image_size=16", "model.net.channels=16", "model.net.num_res_blocks=1",
            "model.steps=2", "metrics.fid.num_samples=20", "test_after_fit=false", *SMALL]
    proc = run_py(*flow, f"hydra.run.dir={tmp_path / 'teacher'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    teacher = tmp_path / "teacher" / "checkpoints" / "last.ckpt"
    proc = run_py(*flow, "trainer=ddp_cpu", f"model.teacher={teacher}", "model.teacher_pairs=20",
                  f"hydra.run.dir={tmp_path / 'reflow'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    logs = [(tmp_path / "reflow" / name).read_text() for name in ("run.log", "train_ddp_process_1.log")]
    seeds = [log.split("reflow: 20 pairs drawn by ", 1)[1].split("seed ", 1)[1].split(")", 1)[0] for log in logs]
    assert seeds[0] == seeds[1] and seeds[0].isdigit()
