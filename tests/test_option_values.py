"""Config values that are not what their key means (a string for a number, a negative learning rate or loss
weight, a decay of 1.5, fractions that make the splits overlap, a colour out of range) stop the run before
anything is trained, in one sentence naming key=value and the range: never a traceback from Lightning, torch or
NumPy, and never a run that trains on the nonsense."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import TINY, TINY_CYCLEGAN, TINY_PIX2PIX, compose_config
from PIL import Image

from gdm.app import run, user_error
from gdm.errors import GdmError, boolean_option, number_option
from gdm.loggers import log_comparison, resolve_mode

QUICK = [*TINY, "logger=none", "data.image_size=16", "test_after_fit=false"]

CASES = [
    (["trainer.max_epochs=abc"], "trainer.max_epochs='abc' must be an integer >= -1 (-1: no limit) or null."),
    (["trainer.max_steps=2.5"], "trainer.max_steps=2.5 must be an integer >= -1"),
    (["trainer.check_val_every_n_epoch=0"], "trainer.check_val_every_n_epoch=0 must be an integer >= 1"),
    (["trainer.check_val_every_n_epoch=-2"], "trainer.check_val_every_n_epoch=-2 must be an integer >= 1"),
    (["trainer.precision=17"], "trainer.precision=17 is not a precision"),
    (["seed=-1"], "seed=-1 must be an integer >= 0 and <= 4294967295 (null: a random one, recorded) or null."),
    (["seed=abc"], "seed='abc' must be an integer >= 0 and <= 4294967295"),
    (["seed=4294967296"], "seed=4294967296 must be an integer >= 0 and <= 4294967295"),
    (["data.image_size=abc"], "data.image_size='abc' must be an integer >= 1"),
    (["data.val_fraction=-0.1", "model.clusters=null"], "data.val_fraction=-0.1 must be a number >= 0 and < 1"),
    (["data.val_fraction=1.5"], "data.val_fraction=1.5 must be a number >= 0 and < 1"),
    (["data.val_fraction=0.6", "data.test_fraction=0.6"],
     "data.val_fraction=0.6 and data.test_fraction=0.6 leave no training images: their sum must be under 1."),
    (["model.lr_g=-1"], "model.lr_g=-1 must be a number > 0 (a learning rate)."),
    (["model.lr_g=fast"], "model.lr_g='fast' must be a number > 0 (a learning rate)."),
    (["model.lr_d=0"], "model.lr_d=0 must be a number > 0"),
    (["model.betas=[0.5,1.5]"], "model.betas[1]=1.5 must be a number >= 0 and < 1."),
    (["model.betas=0.5"], "model.betas=0.5 must be Adam's two coefficients"),
    (["model.ema_decay=1.5"], "model.ema_decay=1.5 must be a number >= 0 and < 1 (null: no EMA) or null."),
    (["model.ema_decay=-0.1"], "model.ema_decay=-0.1 must be a number >= 0 and < 1"),
    (["model.r1_gamma=-1"], "model.r1_gamma=-1 must be a number >= 0"),
    (["model.ada_target=abc"], "model.ada_target='abc' must be a number > 0 and < 1 (the paper uses 0.6)."),
    (["model.ada_interval=0.5"], "model.ada_interval=0.5 must be an integer >= 1"),
    (["model=vae", "model.iwae_k=0"], "model.iwae_k=0 must be an integer >= 1"),
    (["model=vae", "model.beta=-1"], "model.beta=-1 must be a number >= 0"),
    (["model=vae", "model.kl_warmup_steps=-5"], "model.kl_warmup_steps=-5 must be an integer >= 0"),
    (["model=vae", "model.lr=abc"], "model.lr='abc' must be a number > 0"),
    ([*TINY_CYCLEGAN, "model.pool_size=-1"], "model.pool_size=-1 must be an integer >= 0"),
    ([*TINY_CYCLEGAN, "model.lambda_a=-10"], "model.lambda_a=-10 must be a number >= 0 (a loss weight)."),
    ([*TINY_CYCLEGAN, "model.lambda_identity=nan"], "model.lambda_identity=nan must be a number >= 0"),
    ([*TINY_PIX2PIX, "model.lambda_l1=abc"], "model.lambda_l1='abc' must be a number >= 0"),
    ([*TINY_PIX2PIX, "model.inference_seed=abc"], "model.inference_seed='abc' must be an integer >= 0"),
    ([*TINY_CYCLEGAN, "model.n_epochs=abc"], "model.n_epochs='abc' must be an integer >= 0"),
    (["model=vae", "model.likelihood=gaussian", "model.likelihood_std=abc"],
     "model.likelihood_std='abc' must be a number > 0 (null: the variance is learned) or null."),
    (["model.lr_g=inf"], "model.lr_g=inf must be a number > 0"),
    (["data.split_seed=abc"], "data.split_seed='abc' must be an integer >= 0"),
    (["++trainer.limit_train_batches=abc"], "trainer.limit_train_batches='abc' must be a number >= 0 and <= 1"),
    (["++trainer.limit_val_batches=1.5"], "trainer.limit_val_batches=1.5 must be a number >= 0 and <= 1"),
    (["trainer.num_sanity_val_steps=abc"], "trainer.num_sanity_val_steps='abc' must be an integer >= -1"),
    (["compile=maybe"], "compile='maybe' must be true or false."),
    (["test_after_fit=no"], "test_after_fit='no' must be true or false."),
    (["model.discriminator.spectral_norm=maybe"], "model.discriminator.spectral_norm='maybe' must be true or false."),
]


@pytest.mark.parametrize(("overrides", "message"), CASES, ids=[" ".join(c[0][-2:]) for c in CASES])
def test_a_value_that_is_not_what_its_key_means_is_named(overrides, message, tmp_path):
    with pytest.raises(Exception) as caught:  # noqa: B017 - Hydra may wrap it in an InstantiationException
        translation = any(o in overrides for o in ("model=cyclegan", "model=pix2pix"))  # sized by their TINY_*
        run(compose_config([*(["logger=none"] if translation else QUICK), *overrides], tmp_path))
    mistake = user_error(caught.value)
    assert mistake is not None and message in str(mistake), caught.value
    assert not (tmp_path / "checkpoints").exists()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


@pytest.mark.parametrize(("overrides", "message"), [
    (["data.image_size=16", "data.load_size=8"],
     "data.load_size=8 is smaller than data.image_size=16: the crop would pad the images with black"),
    (["data.flip=maybe"], "data.flip='maybe' must be true or false."),
    (["data.random_crop=no"], "data.random_crop='no' must be true or false."),
    (["data.verify=maybe"], "data.verify='maybe' must be true or false."),
    (["data.background=[300,-5,0]"], "data.background=[300, -5, 0] must be an RGB colour, three integers 0-255"),
    (["data.background=red"], "data.background='red' must be an RGB colour"),
    (["data.channels=2"], "data.channels=2 must be 1 (greyscale) or 3 (RGB)."),
])
def test_an_image_folder_option_that_is_not_what_its_key_means_is_named(folder, overrides, message, tmp_path):
    with pytest.raises(Exception) as caught:  # noqa: B017
        run(compose_config([*QUICK, "data=image_folder", f"data.root={folder}", "data.num_workers=0",
                            "model.clusters=null", *overrides], tmp_path))
    mistake = user_error(caught.value)
    assert mistake is not None and message in str(mistake), caught.value


def test_number_and_boolean_options_return_the_value_and_refuse_the_rest():
    assert number_option("k", 3, minimum=0) == 3.0 and number_option("k", None, optional=True) is None
    assert number_option("k", 0.0, minimum=0, below=1) == 0.0
    for value in (True, "1", float("nan"), None):
        with pytest.raises(GdmError, match="must be a number"):
            number_option("k", value)
    with pytest.raises(GdmError, match=r"^k=1 must be a number >= 0 and < 1\.$"):
        number_option("k", 1, minimum=0, below=1)
    assert boolean_option("k", False) is False
    for value in ("true", 1, None):
        with pytest.raises(GdmError, match="must be true or false"):
            boolean_option("k", value)


def test_valid_values_at_their_edges_run(tmp_path):
    """Integers where floats belong (Adam's betas [0, 0.9]), zero where zero means off, and seed=null (Lightning
    draws a seed; config.yaml records it)."""
    run(compose_config([*QUICK, "model.betas=[0,0.9]", "model.r1_gamma=0", "model.ema_decay=0", "seed=null",
                        "++trainer.limit_train_batches=1.0", "data.test_fraction=0"], tmp_path))
    from omegaconf import OmegaConf

    seed = OmegaConf.load(tmp_path / "config.yaml").seed
    assert isinstance(seed, int) and 0 <= seed < 2**32
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_a_mode_in_the_config_wins_over_wandb_mode_and_each_names_its_source(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_mode("auto") == ("offline", None)
    assert resolve_mode("disabled") == ("disabled", None)  # named in the config: not overridden
    assert log_comparison([{"a": 1}], {}, name="x", save_dir=tmp_path, mode="disabled") is None
    monkeypatch.setenv("WANDB_MODE", "ofline")
    with pytest.raises(GdmError, match=r"^WANDB_MODE \(in the environment\)='ofline' is not a W&B mode"):
        resolve_mode("auto")
    with pytest.raises(GdmError, match=r"^WANDB_MODE \(in the environment\)='ofline' is not a W&B mode"):
        resolve_mode("offline")  # wandb.init would read it anyway, and fail in its own traceback
    monkeypatch.delenv("WANDB_MODE")
    with pytest.raises(GdmError, match=r"^compare.wandb='bogus' is not a W&B mode"):
        log_comparison([{"a": 1}], {}, name="x", save_dir=tmp_path, mode="bogus")
