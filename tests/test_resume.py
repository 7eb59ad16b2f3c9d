"""Resuming a run: stopping after epoch k and resuming from last.ckpt ends bit for bit where the
uninterrupted run ends (weights, EMA, ADA's p, optimizers, schedulers, image pools, RNG streams)."""

from __future__ import annotations

import json
import os

import pytest
import torch
from helpers import ROOT, TINY_CYCLEGAN, TINY_PIX2PIX, TINY_TRAINER, compose_config, run_py

from gdm.app import run

EXACT = ["++trainer.limit_train_batches=3", "trainer.check_val_every_n_epoch=1", "trainer.deterministic=true",
         "logger=none", "test_after_fit=false"]
TESTS = ROOT / "tests"
MODELS = {
    # ADA's p moves every 2 batches (an interval spans the stop after epoch 0's 3 batches).
    "gan": ["model=gan", "data.image_size=16", "model.ema_halflife_kimg=1.0", "metrics.fid.num_samples=40",
            "model.augment=ada", "model.ada_interval=2", "model.ada_kimg=0.5"],
    "cyclegan": [*(o for o in TINY_CYCLEGAN if o not in TINY_TRAINER), "model.pool_size=2", "trainer.accelerator=cpu",
                 "++trainer.limit_val_batches=1", "print_config=false"],
    "pix2pix": [*(o for o in TINY_PIX2PIX if o not in TINY_TRAINER), "trainer.accelerator=cpu",
                "++trainer.limit_val_batches=1", "print_config=false", "model.n_epochs=1", "model.n_epochs_decay=2",
                "data.test_fraction=0.02"],  # each evaluation (paper inference, one image at a time): 36 test pairs
    # the EMA's ramp-up reads the images seen, restored from the checkpoint; dropout draws from the RNG
    **{family: [f"model={family}", "data.image_size=16", "model.net.channels=8", "model.net.channel_mult=[1,2]",
                "model.net.num_res_blocks=1", "model.steps=2", "metrics.fid.num_samples=40"]
       for family in ("flow", "diffusion")},
}


def equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_stop_and_resume_equals_one_uninterrupted_run(model, tmp_path):
    common = [*MODELS[model], *EXACT]
    run(compose_config([*common, "trainer.max_epochs=3"], tmp_path / "full"))
    run(compose_config([*common, "trainer.max_epochs=1"], tmp_path / "part"))
    run(compose_config([*common, "trainer.max_epochs=3", f"ckpt_path={tmp_path / 'part/checkpoints/last.ckpt'}"],
                       tmp_path / "resumed"))
    full, part, resumed = (torch.load(tmp_path / r / "checkpoints" / "last.ckpt", weights_only=True)
                           for r in ("full", "part", "resumed"))
    assert part["global_step"] < full["global_step"] == resumed["global_step"]
    assert not equal(part["state_dict"], full["state_dict"])
    for key in ("state_dict", "optimizer_states", "lr_schedulers", "gdm_rng_state"):
        assert equal(full[key], resumed[key]), key
    if model == "gan":
        assert any(k.startswith("generator_ema.") for k in full["state_dict"])
        assert full["state_dict"]["augment._extra_state"] == {"batches": 9}  # ADA's p and sums restored too
    elif model in ("flow", "diffusion"):  # EMA with EDM's ramp-up: the average continued, the count restored
        assert full["state_dict"]["net_ema.images_seen"] == 9 * 64
    elif model == "pix2pix":  # the lr decayed in epochs 1 and 2: the schedulers were restored, not restarted
        assert full["lr_schedulers"][0]["last_epoch"] == 2
    else:  # the image pools (module extra state) are full and equal
        pools = [k for k in full["state_dict"] if k.endswith("_extra_state")]
        assert pools and all(full["state_dict"][k]["count"] == 2 for k in pools)


@pytest.mark.slow
def test_the_resume_line_gives_gdm_step(tmp_path, caplog):
    from gdm.resume import resume_from

    common = ["model=gan", "data.image_size=16", "metrics.fid.num_samples=40", *TINY_TRAINER, "logger=none",
              "test_after_fit=false"]
    run(compose_config(common, tmp_path / "part"))
    last = tmp_path / "part" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 4  # 2 batches x (D + G)
    with caplog.at_level("INFO", logger="gdm.resume"):
        resume_from(compose_config([*common, f"ckpt_path={last}"], tmp_path / "resumed"))
    assert f"resuming from {last} (step 2, epoch" in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize(("part_every", "every"), [(3, 3), (1, 3)])
def test_resume_from_an_end_of_run_checkpoint_or_with_another_validation_interval(part_every, every, tmp_path):
    """last.ckpt of a run whose last epoch had no scheduled validation comes from the end-of-run evaluation
    (after fit, in trainer.validate): continuing it must still end where the longer uninterrupted run ends; as
    must a resume that changes trainer.check_val_every_n_epoch (the checkpoint written in an epoch-end
    validation, resumed where none is scheduled)."""
    common = [*MODELS["gan"], *(o for o in EXACT if "check_val" not in o)]
    run(compose_config([*common, "trainer.max_epochs=3", f"trainer.check_val_every_n_epoch={every}"],
                       tmp_path / "full"))
    run(compose_config([*common, "trainer.max_epochs=2", f"trainer.check_val_every_n_epoch={part_every}"],
                       tmp_path / "part"))
    run(compose_config([*common, "trainer.max_epochs=3", f"trainer.check_val_every_n_epoch={every}",
                        f"ckpt_path={tmp_path / 'part/checkpoints/last.ckpt'}"], tmp_path / "resumed"))
    full, resumed = (torch.load(tmp_path / r / "checkpoints" / "last.ckpt", weights_only=True)
                     for r in ("full", "resumed"))
    assert full["global_step"] == resumed["global_step"] == 2 * 3 * 3  # 3 epochs of 3 batches, a D and a G step
    for key in ("state_dict", "optimizer_states", "gdm_rng_state"):
        assert equal(full[key], resumed[key]), key
    for r in ("full", "resumed"):  # the evaluation after epoch index 2 says so, wherever it ran
        history = [json.loads(line) for line in (tmp_path / r / "metrics.jsonl").read_text().splitlines()]
        assert (history[-1]["step"], history[-1]["epoch"]) == (9, 2)


SIGNAL_RUN = ["data.image_size=16", "trainer.max_epochs=3", "+trainer.limit_train_batches=4",
              "+trainer.limit_val_batches=1", "trainer.check_val_every_n_epoch=1", "metrics.fid.num_samples=40",
              "print_config=false", "test_after_fit=false"]


def signal_at(name: str, step: int) -> list[str]:
    return ["+callbacks.kill._target_=signal_at_step.SignalAtStep", f"+callbacks.kill.signal_name={name}",
            f"+callbacks.kill.step={step}"]


@pytest.mark.slow
def test_sigterm_checkpoints_and_resume_auto_continues_the_same_wandb_run(tmp_path):
    run_dir = tmp_path / "run"
    args = [*SIGNAL_RUN, "logger=wandb", "logger.wandb.mode=offline", f"hydra.run.dir={run_dir}", "resume=auto"]
    env = {"WANDB_SILENT": "true", "PYTHONPATH": str(TESTS)}
    first = run_py(*args, *signal_at("SIGTERM", 10), env_extra=env)
    out = first.stdout + first.stderr
    assert first.returncode == 143, out[-2000:]
    assert "resume=auto: no checkpoint" in out and "stopped by SIGTERM" in out and "Traceback" not in out
    saved = torch.load(run_dir / "checkpoints" / "on_exception.ckpt", weights_only=True)
    assert saved["global_step"] == 10  # right after the batch that got the signal
    assert json.loads((run_dir / "summary.json").read_text())["status"].startswith("interrupted")

    second = run_py(*args, env_extra=env)  # the same command again
    out = second.stdout + second.stderr
    assert second.returncode == 0, out[-2000:]
    # gdm's step (training batches), not Lightning's optimizer steps (D + G: 10)
    assert f"resuming from {run_dir / 'checkpoints' / 'on_exception.ckpt'} (step 5, epoch" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["global_step"] == 24  # 3 epochs x 4 batches x (D + G)
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and runs[0].name.rsplit("-", 1)[1] == runs[1].name.rsplit("-", 1)[1]  # one W&B run id
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["wandb_run_id"] == \
        runs[0].name.rsplit("-", 1)[1]


@pytest.mark.slow
def test_sigusr1_under_slurm_saves_an_hpc_checkpoint_requeues_and_the_requeued_job_resumes(tmp_path):
    """Lightning's SLURM auto-requeue, with SLURM's environment and `scontrol` faked."""
    bin_dir, run_dir = tmp_path / "bin", tmp_path / "run"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.txt"}\n')
    (bin_dir / "scontrol").chmod(0o755)
    env = {"PYTHONPATH": str(TESTS), "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_NTASKS": "1",
           "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "gdm", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
           "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost"}
    args = [*SIGNAL_RUN, "logger=csv", "trainer.accelerator=cpu", f"hydra.run.dir={run_dir}"]
    first = run_py(*args, *signal_at("SIGUSR1", 10), "+callbacks.kill2._target_=signal_at_step.SignalAtStep",
                   "+callbacks.kill2.signal_name=SIGTERM", "+callbacks.kill2.step=12", env_extra=env)
    out = first.stdout + first.stderr
    assert first.returncode == 143, out[-2000:]  # SLURM's requeue ends the job with SIGTERM
    assert (tmp_path / "scontrol.txt").read_text().split() == ["requeue", "4242"]
    assert torch.load(run_dir / "hpc_ckpt_1.ckpt", weights_only=True)["global_step"] == 10

    requeued = run_py(*args, env_extra=env)  # SLURM starts the same job again: Lightning finds hpc_ckpt_1
    out = requeued.stdout + requeued.stderr
    assert requeued.returncode == 0, out[-2000:]
    assert "Restoring states from the checkpoint path at" in out and "hpc_ckpt_1.ckpt" in out
    assert json.loads((run_dir / "summary.json").read_text())["global_step"] == 24
