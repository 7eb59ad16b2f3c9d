"""End-to-end runs: every model config with every data config it supports, every experiment
config, the debug configs, and `run.py` itself as a user types it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import CONF, TINY, TINY_CYCLEGAN, TINY_ITERATIVE, TINY_PIX2PIX, compose_config, run_py

from gdm.app import run, user_error
from gdm.data.digits import DigitsDataModule
from gdm.errors import GdmError
from gdm.images import load_png

MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
DEBUGS = sorted(p.stem for p in (CONF / "debug").glob("*.yaml"))


# Each model with the data it supports: unpaired two-domain data for CycleGAN, paired for pix2pix, images otherwise.
SUPPORTED = {"cyclegan": ("digits_colour", "unpaired"), "pix2pix": ("digits_paired", "paired")}
MODEL_DATA = [(m, d) for m in MODELS for d in SUPPORTED.get(m, ("digits", "image_folder"))]
TINY_FOR = {"cyclegan": TINY_CYCLEGAN, "pix2pix": TINY_PIX2PIX,
            **{m: [f"model={m}", *TINY_ITERATIVE, *TINY] for m in ("diffusion", "flow")}}
# pix2pix's evaluation translates each test pair on its own (paper inference): 90 of the embedded pairs, not 180.
PAIRED_EVAL = {"digits_paired": ["data.test_fraction=0.05"]}


def data_overrides(data: str, folder: Path) -> list[str]:
    if data == "image_folder":
        return ["data=image_folder", f"data.root={folder}", "data.image_size=16", "data.num_workers=0",
                "data.batch_size=8", "data.fid_features=digits"]
    if data in ("unpaired", "paired"):
        return [f"data={data}", f"data.root={folder}", "data.image_size=32", "data.load_size=36",
                "data.num_workers=0", "data.fid_features=digits_colour"]
    return [f"data={data}"] + (["data.image_size=16"] if data == "digits" else []) + PAIRED_EVAL.get(data, [])


def check_run_dir(run_dir: Path, monitor: str, check_grid: bool = True) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert summary["best"]["metric"] == monitor and math.isfinite(summary["best"]["value"])
    assert math.isfinite(summary["final"][monitor])
    assert any(k.startswith("val/fid_") and v > 0 for k, v in summary["final"].items())
    assert summary["global_step"] > 0 and summary["wall_seconds"] > 0
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert (run_dir / "config.yaml").is_file()
    grids = sorted((run_dir / "samples").glob("*_last.png"))
    assert grids
    for path in grids:
        if check_grid:
            assert load_png(path, channels=3).float().std() > 5, f"{path.name} is a flat image"
    return summary


@pytest.mark.parametrize(("model", "data"), MODEL_DATA)
@pytest.mark.slow
def test_every_model_with_every_data(model, data, tmp_path, image_folder, unpaired_folder, paired_folder):
    tiny = TINY_FOR.get(model, [f"model={model}", *TINY])
    folder = {"unpaired": unpaired_folder, "paired": paired_folder}.get(data, image_folder)
    cfg = compose_config([*tiny, *data_overrides(data, folder), "logger=csv"], tmp_path)
    best = run(cfg)
    # Two batches on random-noise images may legitimately give a flat grid; the digits must not.
    summary = check_run_dir(tmp_path, cfg.monitor, check_grid=data.startswith("digits"))
    assert best == pytest.approx(summary["best"]["value"])
    assert (tmp_path / "csv").is_dir()


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.slow
def test_every_experiment(experiment, tmp_path):
    extra = []
    if experiment == "digits_reflow":  # a reflow needs its teacher: a flow of the recipe's net, trained briefly
        teacher = tmp_path / "teacher"
        run(compose_config(["model=flow", *TINY, "logger=none", "test_after_fit=false"], teacher))
        extra = [f"model.teacher={teacher / 'checkpoints' / 'last.ckpt'}", "model.teacher_pairs=20",
                 "test_after_fit=false"]
    cfg = compose_config([f"experiment={experiment}", *TINY, "logger=none", *extra], tmp_path / "run")
    run(cfg)
    check_run_dir(tmp_path / "run", cfg.monitor)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("debug", DEBUGS)
@pytest.mark.slow
def test_every_debug_config_with_every_model(debug, model, tmp_path):
    small = ([o for o in TINY_FOR[model] if not o.startswith(("trainer.", "++trainer.", "print_config"))]
             if model in TINY_FOR else [f"model={model}", "data.image_size=16", "metrics.fid.num_samples=40"])
    small += PAIRED_EVAL["digits_paired"] if model == "pix2pix" else []
    cfg = compose_config([*small, f"debug={debug}", "++trainer.limit_train_batches=2", "++trainer.limit_val_batches=1",
                          "trainer.max_epochs=1", "print_config=false"], tmp_path)
    run(cfg)
    assert (tmp_path / "summary.json").is_file()


@pytest.mark.slow
def test_checkpoint_holds_config_and_ema(tmp_path):
    cfg = compose_config(["data.image_size=16", "model.ema_halflife_kimg=1.0", *TINY, "logger=none"], tmp_path)
    run(cfg)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["gdm_config"]["model"]["ema_halflife_kimg"] == 1.0
    assert any(k.startswith("generator_ema.") for k in ckpt["state_dict"])
    assert len(ckpt["optimizer_states"]) == 2


@pytest.mark.slow
def test_loggers(tmp_path):
    """W&B offline lands in the run dir with the sample grid as an image; TensorBoard writes events."""
    cfg = compose_config(["data.image_size=16", *TINY, "logger=wandb", "logger.wandb.mode=offline"], tmp_path / "w")
    run(cfg)
    offline = list((tmp_path / "w" / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("run-*.wandb"))
    pngs = list(offline[0].glob("files/media/images/**/*.png"))
    assert pngs and load_png(pngs[0], channels=3).float().std() > 5  # uint8 grid, not all black
    cfg = compose_config(["data.image_size=16", *TINY, "logger=tensorboard"], tmp_path / "t")
    run(cfg)
    assert list((tmp_path / "t" / "tensorboard").rglob("events.out.tfevents.*"))


def test_model_and_data_mismatch_is_one_sentence(tmp_path):
    cfg = compose_config(["data.image_size=24", *TINY, "logger=none"], tmp_path)
    with pytest.raises(Exception) as caught:  # noqa: B017 - Hydra wraps it in an InstantiationException
        run(cfg)
    mistake = user_error(caught.value)
    assert isinstance(mistake, GdmError) and "data.image_size=24 is not one: use e.g. 16, 32 or 64" in str(mistake)


@pytest.mark.slow
def test_same_seed_same_fid(tmp_path):
    results = [run(compose_config(["data.image_size=16", *TINY, "logger=none", "seed=7"], tmp_path / str(i)))
               for i in range(2)]
    assert results[0] == pytest.approx(results[1], rel=1e-5)


# ---- run.py as a user types it --------------------------------------------------------------


@pytest.mark.slow
def test_help_lists_groups_and_options():
    out = run_py("--help").stdout
    for line in ("model: ae, cgan, cyclegan, diffusion, flow, gan, pix2pix, vae",
                 "data: apple2orange, cifar10, digits, digits_colour, digits_paired, edges2handbags, edges2shoes",
                 "logger: csv, none, tensorboard, wandb"):
        assert line in out
    assert "debug: fast_dev_run, fdr, limit, overfit, profiler" in out


def test_cfg_job_prints_composed_config():
    out = run_py("--cfg", "job", "model.loss=hinge", "seed=3").stdout
    assert "loss: hinge" in out and "seed: 3" in out and "_target_: gdm.models.gan.GAN" in out


@pytest.mark.slow
def test_run_py_default_offline_wandb(tmp_path):
    """`python run.py` with no W&B credentials: runs offline, says how to sync, fills the run dir."""
    home = tmp_path / "home"
    home.mkdir()
    run_dir = tmp_path / "run"
    proc = run_py("model=gan", "data=digits", "trainer.max_epochs=1", "+trainer.limit_train_batches=3",
                  "model.loss=hinge", "seed=3", "metrics.fid.num_samples=100", f"hydra.run.dir={run_dir}",
                  env_extra={"HOME": str(home), "WANDB_BASE_URL": "http://127.0.0.1:9"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "W&B offline: no W&B credentials" in log and "wandb sync" in log
    assert f"run directory: {run_dir}" in log and "final val/fid_digits" in log
    summary = check_run_dir(run_dir, "val/fid_digits")
    assert summary["step"] == 3 and summary["final"]["step"] == 3  # batches, the run's step axis
    assert list((run_dir / "wandb").glob("offline-run-*"))
    assert (run_dir / ".hydra" / "config.yaml").is_file() and "loss: hinge" in (run_dir / "config.yaml").read_text()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data=image_folder", "data.root=/no/such/folder"], "data.root=/no/such/folder is not a folder"),
        (["model.loss=nope"], "model.loss='nope' must be one of vanilla, lsgan, hinge, wgan-gp"),
        (["metrics.features=nope"], "metrics.features='nope' is not a known feature network"),
    ],
)
def test_user_mistakes_get_one_sentence(args, message, tmp_path):
    proc = run_py(*args, "logger=none", f"hydra.run.dir={tmp_path}", timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


def test_digits_reals_match_saved_pngs():
    """The real digits are on the 8-bit grid, so FID's quantization leaves them unchanged."""
    images = DigitsDataModule(image_size=16).split("val").images
    assert torch.equal(images, (images * 127.5 + 127.5).round() / 127.5 - 1)


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_gpu_trainer_without_gpu_is_one_sentence(tmp_path):
    proc = run_py("trainer=gpu", "logger=none", f"hydra.run.dir={tmp_path}", timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "trainer.accelerator=gpu but this machine has no usable GPU: use trainer=cpu" in proc.stderr + proc.stdout


@pytest.mark.slow
def test_vae_run_reports_iwae_nll_below_its_elbo_bound(tmp_path):
    cfg = compose_config(["model=vae", "model.likelihood=gaussian", "model.iwae_k=20", "data.image_size=16",
                          *TINY, "++trainer.limit_test_batches=2", "logger=none"], tmp_path)
    run(cfg)
    summary = json.loads((tmp_path / "summary.json").read_text())
    test = summary["test"]
    assert summary["monitor"] == "val/elbo" and summary["mode"] == "max"
    # the protocols count the images the loops ran on: 2 test batches of 64, 1 validation batch (of 180 each)
    assert summary["protocols"]["test/nll_iwae"]["num_real"] == 128
    assert summary["protocols"]["val/elbo"]["num_real"] == 64
    assert test["test/nll_iwae"] <= -test["test/elbo"]
    assert test["test/bpd"] == pytest.approx(-test["test/elbo"] / (16 * 16 * math.log(2)), rel=1e-4)


@pytest.mark.slow
def test_vae_on_mnist_files(tmp_path):
    """`model=vae data=mnist` where the data is present (MNIST-format files written by the test)."""
    from helpers import fake_mnist

    root = fake_mnist(tmp_path / "mnist", n_train=200, n_test=40)
    cfg = compose_config(["model=vae", "data=mnist", f"data.root={root}", "data.num_workers=0",
                          "metrics.features=digits", "model.iwae_k=5", *TINY, "logger=none"], tmp_path / "run")
    run(cfg)
    summary = check_run_dir(tmp_path / "run", "val/elbo", check_grid=False)
    assert summary["test"]["test/nll_iwae"] > 0


@pytest.mark.slow
def test_run_stopped_by_max_steps_is_evaluated_at_its_last_step(tmp_path):
    cfg = compose_config(["data.image_size=16", "trainer.max_steps=10", "metrics.fid.num_samples=40",
                          "trainer.accelerator=cpu", "logger=none", "print_config=false"], tmp_path)
    best = run(cfg)
    summary = json.loads((tmp_path / "summary.json").read_text())
    # 10 optimizer steps = 5 batches (D + G): the step axis counts batches
    assert summary["final"]["step"] == 5 and summary["final"]["global_step"] == 10
    assert summary["final"]["val/fid_digits"] > 0
    assert best == summary["best"]["value"] and summary["best"]["step"] == 5
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file() and (tmp_path / "samples" / "samples_last.png").is_file()


@pytest.mark.slow
def test_resume_keeps_the_best_of_its_own_run_directory_only(tmp_path):
    tiny = ["data.image_size=16", *TINY, "logger=none", "test_after_fit=false", "monitor_mode=max"]
    run(compose_config([*tiny, "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1"], tmp_path / "a"))
    first = json.loads((tmp_path / "a" / "summary.json").read_text())["best"]
    # monitor_mode=max: pick the worse FID, so the earlier epoch's best would survive a better later one
    run(compose_config([*tiny, "trainer.max_epochs=3", "trainer.check_val_every_n_epoch=1", "resume=auto"],
                       tmp_path / "a"))  # the same directory: its best so far still counts
    kept = json.loads((tmp_path / "a" / "summary.json").read_text())["best"]
    assert kept["value"] >= first["value"] and kept["step"] in (first["step"], 6)
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    # (the same evaluation schedule: Lightning re-enters the epoch of a checkpoint written in its validation, and
    # with another check_val_every_n_epoch trains one more batch there)
    run(compose_config([*tiny, "trainer.max_epochs=4", "trainer.check_val_every_n_epoch=1", f"ckpt_path={last}"],
                       tmp_path / "b"))  # a new directory
    own = json.loads((tmp_path / "b" / "summary.json").read_text())["best"]
    assert own["step"] == 8 and own["value"] == json.loads((tmp_path / "b" / "summary.json").read_text())["final"][
        own["metric"]]  # only this run's evaluation (its last epoch) counts


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data=image_folder"], "data.root has no value: set it on the command line"),
        (["ckpt_path=/no/such.ckpt"], "ckpt_path=/no/such.ckpt is not a file"),
    ],
)
def test_more_mistakes_are_one_sentence(overrides, message, tmp_path):
    cfg = compose_config([*overrides, *TINY, "logger=none"], tmp_path)
    with pytest.raises(Exception) as caught:  # noqa: B017 - sometimes wrapped by Hydra
        run(cfg)
    assert message in str(user_error(caught.value))


@pytest.mark.slow
def test_evaluation_does_not_change_training(tmp_path):
    """Same seed, different evaluation schedule and metrics: identical weights at the end."""
    common = ["data.image_size=16", "trainer.max_epochs=2", "++trainer.limit_train_batches=3",
              "metrics.fid.num_samples=40", "trainer.accelerator=cpu", "logger=none", "print_config=false"]
    run(compose_config([*common, "trainer.check_val_every_n_epoch=1"], tmp_path / "a"))
    run(compose_config([*common, "trainer.check_val_every_n_epoch=2", "model=cgan"], tmp_path / "b"))
    run(compose_config([*common, "trainer.check_val_every_n_epoch=2", "model=cgan", "~metrics.class_acc"],
                       tmp_path / "c"))
    run(compose_config([*common, "trainer.check_val_every_n_epoch=2"], tmp_path / "d"))
    weights = {k: torch.load(tmp_path / k / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
               for k in "abcd"}
    assert all(torch.equal(weights["b"][n], weights["c"][n]) for n in weights["b"])  # class_acc on / off
    assert all(torch.equal(weights["a"][n], weights["d"][n]) for n in weights["a"])  # evaluated 2x / 1x
