"""User mistakes through run.py, as typed: each ends in one clear message (exit status 2; Hydra's own
config errors exit 1), no traceback, within seconds, and no run directory that looks complete."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY, compose_config, run_py
from PIL import Image

from gdm.app import run, user_error
from gdm.errors import GdmError

QUICK = ["print_config=false", "logger=none", "data.image_size=16", "trainer.max_epochs=1",
         "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1"]  # every run here stops before training


def flat_folder(root: Path, n: int = 12) -> Path:
    """Unlabelled images (no class sub-folders)."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def gan_ckpt(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("gan")
    run(compose_config(["data.image_size=16", *TINY, "logger=none", "test_after_fit=false"], run_dir))
    return run_dir / "checkpoints" / "last.ckpt"


def fails_cleanly(tmp_path: Path, *args: str, message: str, status: int = 2, env: dict | None = None) -> str:
    start = time.monotonic()
    proc = run_py(*QUICK, *args, f"hydra.run.dir={tmp_path / 'run'}", env_extra=env, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == status, out[-2000:]
    assert message in out, out[-2000:]
    assert "Traceback" not in out
    assert time.monotonic() - start < 60
    summary = tmp_path / "run" / "summary.json"
    assert not summary.exists() or json.loads(summary.read_text())["status"] != "finished"
    return out


@pytest.mark.parametrize(("args", "message"), [
    (["task=eval", "ckpt_path=R/last.ckpt", "sample.steps=8"],
     "sample.steps is an option of task=sample, and this run is task=eval, which would ignore it: set eval.steps= "
     "instead."),
    (["task=eval", "ckpt_path=R/last.ckpt", "+sample.n=8"],
     "sample.n is an option of task=sample, and this run is task=eval, which would ignore it: drop it."),
    (["eval.split=train"], "eval.split is an option of task=eval, and this run is task=train, which would ignore "
                           "it: drop it."),
])
def test_an_option_of_another_task_is_refused_not_ignored(tmp_path, args, message):
    fails_cleanly(tmp_path, *args, message=message)


@pytest.mark.slow
def test_unknown_group_option_lists_the_valid_ones(tmp_path):
    out = fails_cleanly(tmp_path, "model=gna", message="Could not find 'model/gna'", status=1)
    assert "Available options in 'model'" in out and all(f"\t{m}\n" in out for m in ("gan", "vae", "cyclegan"))


@pytest.mark.parametrize("override", ["model.ema_decay=0.99", "+model.ema_decay=0.99"])
def test_a_renamed_option_says_what_to_type_instead(tmp_path, override):
    out = fails_cleanly(tmp_path, override, message=(
        "model.ema_decay=0.99 is an option of older gdm: set model.ema_halflife_kimg=H model.ema_rampup_ratio=null, "
        "the same average for H = B ln 2 / -ln d / 1000"))
    assert "not in struct" not in out


@pytest.mark.slow
def test_a_model_that_needs_labels_on_unlabelled_images(tmp_path):
    folder = flat_folder(tmp_path / "flat")
    fails_cleanly(tmp_path, "model=cgan", "data=image_folder", f"data.root={folder}", "data.num_workers=0",
                  message="model=cgan needs labelled data, and this data has no labels: use data=digits")


@pytest.mark.slow
def test_a_two_domain_model_on_one_domain_data(tmp_path):
    fails_cleanly(tmp_path, "model=cyclegan", "data=digits",
                  message="model=cyclegan needs two image domains (A and B), which data=digits does not have")


@pytest.mark.slow
def test_a_missing_dataset_dir_says_how_to_get_it(tmp_path):
    fails_cleanly(tmp_path, "model=cyclegan", "data=monet", f"paths.data_dir={tmp_path / 'data'}",
                  message=f"python -m gdm.data.download monet2photo --data-dir {tmp_path / 'data'}")


@pytest.mark.slow
def test_a_corrupt_image_is_named(tmp_path):
    folder = flat_folder(tmp_path / "flat")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    fails_cleanly(tmp_path, "data=image_folder", f"data.root={folder}", "data.num_workers=0",
                  message=f"Cannot read image {folder / 'broken.png'}")


@pytest.mark.slow
def test_a_checkpoint_of_another_model(tmp_path, gan_ckpt):
    fails_cleanly(tmp_path, "model=vae", f"ckpt_path={gan_ckpt}",
                  message=f"ckpt_path={gan_ckpt} holds a GAN model, not a VAE")


@pytest.mark.slow
@pytest.mark.parametrize("task", ["eval", "sample", "translate"])
def test_a_checkpoint_task_with_another_model_group(task, tmp_path, gan_ckpt):
    """A model group of another class on a checkpoint's task would load the weights into another model (same
    shapes: a flow's U-Net into EDM) or be ignored: refused, naming both classes."""
    paths = [f"translate.input={tmp_path}", f"translate.output={tmp_path / 'out'}"] if task == "translate" else []
    fails_cleanly(tmp_path, f"task={task}", f"ckpt_path={gan_ckpt}", "model=vae", *paths,
                  message=f"model= picks a VAE model, but ckpt_path={gan_ckpt} holds a GAN: task={task} runs the "
                          "checkpoint's model, so drop model= (or point ckpt_path at a VAE run's checkpoint).")


def test_a_checkpoint_task_with_its_own_model_group_runs(tmp_path, gan_ckpt):
    run(compose_config(["task=sample", f"ckpt_path={gan_ckpt}", "model=gan", "+sample.n=2", "logger=none",
                        "print_config=false"], tmp_path / "sample"))
    assert (tmp_path / "sample" / "grid.png").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("task", ["train", "eval", "sample"])
def test_a_ckpt_path_that_does_not_exist(task, tmp_path):
    fails_cleanly(tmp_path, f"task={task}", f"ckpt_path={tmp_path / 'nope.ckpt'}",
                  message=f"ckpt_path={tmp_path / 'nope.ckpt'} is not a file")


@pytest.mark.slow
def test_a_sample_label_that_is_not_a_class(tmp_path, gan_ckpt):
    fails_cleanly(tmp_path, "task=sample", f"ckpt_path={gan_ckpt}", "+sample.label=abc",
                  message="sample.label='abc' must be an integer >= 0 or null (the class to draw; unset: every class).")


@pytest.mark.slow
def test_a_truncated_checkpoint(tmp_path, gan_ckpt):
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(gan_ckpt.read_bytes()[:5000])
    fails_cleanly(tmp_path, "task=eval", f"ckpt_path={broken}", message=f"ckpt_path={broken} cannot be read")


def test_a_file_of_random_bytes_is_not_a_checkpoint(tmp_path):
    """torch's unpickling error advises weights_only=False, which no gdm option sets: the sentence says what the
    file is not instead."""
    from gdm.checkpoints import read_checkpoint

    noise = tmp_path / "noise.ckpt"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    with pytest.raises(GdmError) as err:
        read_checkpoint(noise)
    assert str(err.value) == (f"ckpt_path={noise} cannot be read as a checkpoint (not a torch file, or one holding "
                              "objects other than tensors and plain values): pick another one, e.g. the run's "
                              "best.ckpt.")


@pytest.mark.slow
def test_wandb_online_without_network_fails_within_seconds(tmp_path):
    env = {"WANDB_API_KEY": "0" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9"}  # nothing listens on port 9
    fails_cleanly(tmp_path, "logger=wandb", "logger.wandb.mode=online", env=env,
                  message="logger.wandb.mode=online but http://127.0.0.1:9 is not reachable")


def test_a_checkpoint_written_halfway_never_replaces_a_good_one(tmp_path, gan_ckpt, monkeypatch):
    """A crash while a checkpoint is written (here: torch.save dies halfway) leaves the old file intact."""
    from gdm.callbacks import checkpointing
    from gdm.callbacks.checkpointing import AtomicCheckpointIO

    target = tmp_path / "last.ckpt"
    target.write_bytes(gan_ckpt.read_bytes())
    good = torch.load(target, weights_only=True)

    def dies_halfway(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpointing.torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {}}, target)
    assert torch.load(target, weights_only=True)["global_step"] == good["global_step"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temporary file left behind


def test_runs_write_checkpoints_atomically(tmp_path):
    from gdm.callbacks.checkpointing import AtomicCheckpointIO
    from gdm.tasks.build import build_trainer

    trainer = build_trainer(compose_config([*TINY, "logger=none"], tmp_path), callbacks=[], loggers=[])
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


@pytest.mark.slow
def test_resuming_with_another_net_width_names_the_option(tmp_path, gan_ckpt):
    fails_cleanly(tmp_path, "model.generator.ngf=16", f"ckpt_path={gan_ckpt}",
                  message="whose nets' settings differ from the checkpoint's (model.generator.ngf=16 here, the "
                          "checkpoint's is 32): drop those overrides, or set them to the checkpoint's values.")


@pytest.mark.slow
def test_a_checkpoint_of_the_same_class_with_other_settings(tmp_path, gan_ckpt):
    fails_cleanly(tmp_path, "model=cgan", f"ckpt_path={gan_ckpt}",
                  message=f"ckpt_path={gan_ckpt} does not fit this model")


def test_no_crash_checkpoint_before_training_starts_or_after_a_user_mistake(tmp_path):
    """An error while a restarted run is still setting up must not save an untrained model over the
    preempted run's on_exception.ckpt (resume=auto would then start over)."""
    from types import SimpleNamespace

    from gdm.callbacks.checkpointing import CrashCheckpoint
    from gdm.errors import GdmError

    saved = []
    trainer = SimpleNamespace(save_checkpoint=lambda path: saved.append(path), fast_dev_run=False, world_size=1)
    callback = CrashCheckpoint(dirpath=str(tmp_path), filename="on_exception")
    callback.on_exception(trainer, None, RuntimeError("in setup"))
    callback.on_train_start(trainer, None)
    callback.on_exception(trainer, None, GdmError("a user mistake"))
    assert saved == []
    callback.on_exception(trainer, None, RuntimeError("during training"))
    assert saved == [str(tmp_path / "on_exception.ckpt")]
    callback.on_train_end(trainer, None)
    callback.on_exception(trainer, None, KeyboardInterrupt())  # e.g. Ctrl-C in the test after fit
    assert len(saved) == 1


def test_a_run_directory_with_checkpoints_is_not_overwritten_by_accident(tmp_path, gan_ckpt):
    """Without resume=auto a second run in the same directory stops in one sentence (Lightning would silently
    resume from the checkpoint there, or a fresh run would replace it)."""
    run_dir = gan_ckpt.parent.parent
    cfg = compose_config(["data.image_size=16", *TINY, "logger=none"], run_dir)
    with pytest.raises(Exception) as caught:  # noqa: B017
        run(cfg)
    assert f"{run_dir} already holds checkpoints ({gan_ckpt}): continue that run with resume=auto" in str(
        user_error(caught.value))


@pytest.mark.slow
def test_float16_true_training_is_refused_and_bf16_true_is_warned_about(tmp_path, caplog):
    with pytest.raises(GdmError, match=r"^trainer.precision=16-true trains with weights and Adam's moments in "
                                       r"float16: .* use bf16-mixed or 16-mixed"):
        run(compose_config([*QUICK, "trainer.precision=16-true"], tmp_path / "fp16"))
    assert not (tmp_path / "fp16").exists()  # refused before the run directory is made
    with caplog.at_level("WARNING"):
        run(compose_config([*QUICK, "trainer.precision=bf16-true", "metrics.fid.num_samples=40",
                            "test_after_fit=false"], tmp_path / "bf16"))
    assert "trainer.precision=bf16-true keeps weights, Adam's moments" in caplog.text
