"""Config values that are not what their key means (a string for a number, a negative learning rate or loss
weight, a decay of 1.5, fractions that make the splits overlap, a colour out of range) stop the run before
anything is trained, in one sentence naming key=value as typed and the allowed range: never a traceback from
Lightning, torch or NumPy, and never a run that trains on the nonsense.

The ranges are declared once, in the signatures of the classes the config builds (`gdm.option_types`); the
task layer (`gdm.tasks.options`) adds the config path. One table holds every case."""

from __future__ import annotations

import io
import re
import tokenize

import numpy as np
import pytest
from helpers import ROOT, TINY, TINY_CYCLEGAN, TINY_PIX2PIX, compose_config
from hydra.utils import instantiate
from omegaconf import ListConfig, OmegaConf
from PIL import Image

from gdm.app import run, user_error
from gdm.errors import GdmError
from gdm.loggers import log_comparison, resolve_mode

QUICK = [*TINY, "logger=none", "data.image_size=16", "test_after_fit=false"]
FOLDER = "<image folder>"  # replaced by the fixture's folder: data=image_folder data.root=...

CASES = [
    # top level and trainer (gdm.tasks.options.run_options / trainer_options)
    (["seed=-1"],
     "seed=-1 must be an integer >= 0 and <= 4294967295 or null (null: a random one, recorded)."),
    (["seed=abc"], "seed='abc' must be an integer >= 0 and <= 4294967295 or null"),
    (["seed=4294967296"], "seed=4294967296 must be an integer >= 0 and <= 4294967295"),
    (["compile=maybe"], "compile='maybe' must be true or false"),
    (["test_after_fit=no"], "test_after_fit='no' must be true or false"),
    (["monitor_mode=up"], "monitor_mode='up' must be one of min, max"),
    (["trainer.max_epochs=abc"], "trainer.max_epochs='abc' must be an integer >= -1 or null (-1: no limit)."),
    (["trainer.max_steps=2.5"], "trainer.max_steps=2.5 must be an integer >= -1 (-1: no limit)."),
    (["trainer.check_val_every_n_epoch=0"],
     "trainer.check_val_every_n_epoch=0 must be an integer >= 1 or null"),
    (["trainer.num_sanity_val_steps=abc"], "trainer.num_sanity_val_steps='abc' must be an integer >= -1"),
    (["++trainer.limit_train_batches=abc"],
     "trainer.limit_train_batches='abc' must be an integer >= 0 or a number >= 0 and <= 1 or null"),
    (["++trainer.limit_val_batches=1.5"],
     "trainer.limit_val_batches=1.5 must be an integer >= 0 or a number >= 0"),
    (["trainer.precision=17"], "trainer.precision=17 is not a precision"),
    # a key the config lacks (Hydra's own hint for a wrong key is to add it with +)
    (["+model.lr=1e-3"], "model.lr=0.001 is not an option of model: remove it, or set one of latent_dim, loss, "
                         "n_critic, lr_g, lr_d,"),
    (["+model.generator.width=8"], "model.generator.width=8 is not an option of model.generator: remove it, or "
                                   "set one of ngf,"),
    # data
    (["data.image_size=abc"], "data.image_size='abc' must be an integer >= 1 (pixels of each side)."),
    (["data.batch_size=2.5"], "data.batch_size=2.5 must be an integer >= 1 (images per batch"),
    (["data.num_workers=-1"], "data.num_workers=-1 must be an integer >= 0"),
    (["data.val_fraction=-0.1", "model.clusters=null"],
     "data.val_fraction=-0.1 must be a number >= 0 and < 1"),
    (["data.val_fraction=1.5"], "data.val_fraction=1.5 must be a number >= 0 and < 1"),
    (["data.val_fraction=0.6", "data.test_fraction=0.6"],
     "data.val_fraction=0.6 and data.test_fraction=0.6 leave no training images: their sum must be under 1."),
    (["data.split_seed=abc"], "data.split_seed='abc' must be an integer >= 0"),
    ([FOLDER, "data.image_size=16", "data.load_size=8"],
     "data.load_size=8 is smaller than data.image_size=16: the crop would pad the images with black"),
    ([FOLDER, "data.flip=maybe"], "data.flip='maybe' must be true or false."),
    ([FOLDER, "data.random_crop=no"], "data.random_crop='no' must be true or false."),
    ([FOLDER, "data.verify=maybe"], "data.verify='maybe' must be true or false."),
    ([FOLDER, "data.background=[300,-5,0]"], "data.background[0]=300 must be an integer >= 0 and <= 255"),
    ([FOLDER, "data.background=red"],
     "data.background='red' must be a list of 3 values, each an integer >= 0 and <= 255 (the RGB colour"),
    ([FOLDER, "data.channels=2"], "data.channels=2 must be one of 1, 3 (1: greyscale, 3: RGB)."),
    ([FOLDER, "data.channels=true"], "data.channels=true must be one of 1, 3"),
    # the GAN and its nets, losses, augmentations and clusters
    (["model.lr_g=-1"], "model.lr_g=-1 must be a number > 0 (a learning rate"),
    (["model.lr_g=fast"], "model.lr_g='fast' must be a number > 0 (a learning rate"),
    (["model.lr_g=inf"], "model.lr_g=inf must be a number > 0"),
    (["model.lr_d=0"], "model.lr_d=0 must be a number > 0"),
    (["model.betas=[0.5,1.5]"], "model.betas[1]=1.5 must be a number >= 0 and < 1"),
    (["model.betas=0.5"], "model.betas=0.5 must be a list of 2 values, each a number >= 0 and < 1"),
    (["model.betas=[0.5]"], "model.betas=[0.5] must be a list of 2 values, each a number >= 0 and < 1"),
    (["model.ema_halflife_kimg=0"], "model.ema_halflife_kimg=0 must be a number > 0 or null (half-life of G's EMA"),
    (["model.ema_halflife_kimg=-1"], "model.ema_halflife_kimg=-1 must be a number > 0"),
    (["model.ema_rampup_ratio=0"], "model.ema_rampup_ratio=0 must be a number > 0"),
    (["model=flow", "model.nll_tolerance=0"],
     "model.nll_tolerance=0 must be a number > 0 and < 1 (dopri5's atol and rtol"),
    (["model=flow", "model.ema_halflife_kimg=null"],
     "model.ema_halflife_kimg=null must be a number > 0 (the EMA's half-life"),
    (["model.r1_gamma=-1"], "model.r1_gamma=-1 must be a number >= 0"),
    (["model.n_critic=0"],
     "model.n_critic=0 must be an integer >= 1 (discriminator updates per generator update"),
    (["model.channels_last=nhwc"], "model.channels_last='nhwc' must be true or false or auto"),
    (["model.n_critic=1.5"],
     "model.n_critic=1.5 must be an integer >= 1 (discriminator updates per generator update"),
    (["model.latent_dim=2.5"], "model.latent_dim=2.5 must be an integer >= 1"),
    (["model.num_visuals=abc"], "model.num_visuals='abc' must be an integer >= 1"),
    (["model.loss=nope"], "model.loss='nope' must be one of vanilla, lsgan, hinge, wgan-gp"),
    (["model.lecam_weight=-0.1"], "model.lecam_weight=-0.1 must be a number >= 0"),
    (["model.lecam_weight=0.3", "model.lecam_decay=1.5"],
     "model.lecam_decay=1.5 must be a number > 0 and < 1"),
    (["model.clusters=1"],
     "model.clusters=1 must be an integer >= 2 (k-means clusters of the training images"),
    (["model.clusters=2.5"], "model.clusters=2.5 must be an integer >= 2"),
    (["model=cgan", "model.clusters=8"],
     "model.conditional=true (the data's labels) and model.clusters=8 (k-means clusters as labels) exclude "
     "each other: set model.clusters=null"),
    (["model.augment=diffaug"], "model.augment='diffaug' must be one of diffaugment, ada or null"),
    (["model.augment=diffaugment", "model.augment_policy=colour"],
     "model.augment_policy='colour' must be a list of values, each one of color, translation, cutout"),
    (["model.augment=ada", "model.ada_target=abc"], "model.ada_target='abc' must be a number > 0 and < 1"),
    (["model.augment=ada", "model.ada_interval=0.5"], "model.ada_interval=0.5 must be an integer >= 1"),
    (["model.augment=ada", "model.ada_kimg=0"], "model.ada_kimg=0 must be a number > 0"),
    (["model.discriminator.spectral_norm=maybe"],
     "model.discriminator.spectral_norm='maybe' must be true or false"),
    (["model.discriminator.norm=spectral"],
     "model.discriminator.norm='spectral' must be one of batch, instance"),
    (["model.generator.upsample=cubic"],
     "model.generator.upsample='cubic' must be one of transposed, nearest"),
    (["model.generator.ngf=0"], "model.generator.ngf=0 must be an integer >= 1"),
    # VAE and likelihoods
    (["model=vae", "model.iwae_k=0"], "model.iwae_k=0 must be an integer >= 1 (importance samples per image"),
    (["model=vae", "model.beta=-1"], "model.beta=-1 must be a number >= 0"),
    (["model=vae", "model.kl_warmup_steps=-5"], "model.kl_warmup_steps=-5 must be an integer >= 0"),
    (["model=vae", "model.lr=abc"], "model.lr='abc' must be a number > 0"),
    (["model=vae", "model.latent_dim=true"], "model.latent_dim=true must be an integer >= 1"),
    (["model=vae", "model.likelihood=laplace"],
     "model.likelihood='laplace' must be one of bernoulli, gaussian"),
    (["model=vae", "model.likelihood=gaussian", "model.likelihood_std=abc"],
     "model.likelihood_std='abc' must be a number > 0 or null (a fixed std of the Gaussian"),
    # CycleGAN and pix2pix
    ([*TINY_CYCLEGAN, "model.pool_size=-1"], "model.pool_size=-1 must be an integer >= 0"),
    ([*TINY_CYCLEGAN, "model.lambda_a=-10"], "model.lambda_a=-10 must be a number >= 0"),
    ([*TINY_CYCLEGAN, "model.lambda_identity=nan"], "model.lambda_identity=nan must be a number >= 0"),
    ([*TINY_CYCLEGAN, "model.n_epochs=abc"], "model.n_epochs='abc' must be an integer >= 0"),
    ([*TINY_CYCLEGAN, "model.loss=hinge"], "model.loss='hinge' must be one of lsgan, vanilla"),
    ([*TINY_CYCLEGAN, "model.discriminator.n_layers=0"],
     "model.discriminator.n_layers=0 must be an integer >= 1"),
    ([*TINY_PIX2PIX, "model.lambda_l1=abc"], "model.lambda_l1='abc' must be a number >= 0"),
    ([*TINY_PIX2PIX, "model.inference_seed=abc"], "model.inference_seed='abc' must be an integer >= 0"),
    ([*TINY_PIX2PIX, "model.inference=train"], "model.inference='train' must be one of paper, eval"),
    ([*TINY_PIX2PIX, "data.direction=up"], "data.direction='up' must be one of AtoB, BtoA"),
    ([*TINY_PIX2PIX, "model.generator.num_downs=3"], "model.generator.num_downs=3 must be an integer >= 5"),
    # metrics and evaluation
    (["metrics.batch_size=0"],
     "metrics.batch_size=0 must be an integer >= 1 (images per batch of the evaluation)."),
    (["metrics.features=nope"], "metrics.features='nope' is not a known feature network"),
    (["metrics.fid.num_samples=1"],
     "metrics.fid.num_samples=1 must be an integer >= 2 (generated images; FID needs 2"),
    (["metrics.fid.real_split=validation"],
     "metrics.fid.real_split='validation' must be one of train, val, test"),
    (["metrics.fid.seed=-1"], "metrics.fid.seed=-1 must be an integer >= 0"),
    (["metrics.fid.nearest_k=2.5"], "metrics.fid.nearest_k=2.5 must be an integer >= 1"),
    (["metrics.fid.kid_subset_size=true"],
     "metrics.fid.kid_subset_size=true must be an integer >= 2 or null"),
    (["metrics.fid.density_coverage_k=five"],
     "metrics.fid.density_coverage_k='five' must be an integer >= 1 or null"),
    # diffusion and flow (gdm.models.diffusion / flow / iterative, gdm.nets.unet)
    (["model=flow", "model.steps=0"], "model.steps=0 must be an integer >= 1"),
    (["model=flow", "model.sampler=rk45"], "model.sampler='rk45' must be one of euler, midpoint, heun, dopri5"),
    (["model=flow", "model.guidance=2"],
     "model.guidance=2.0 mixes conditional and unconditional predictions, and this model is unconditional: set "
     "model.guidance=1, or model.conditional=true with labelled data."),
    (["model=diffusion", "model.sampler=ddim"], "model.sampler=ddim belongs to the other formulation"),
    (["model=diffusion", "model.formulation=ddpm", "model.steps=2000"],
     "model.steps=2000 is more than the 1000 training steps"),
    (["model=diffusion", "model.label_dropout=1.0"], "model.label_dropout=1.0 must be"),
    (["model=diffusion", "model.net.patch_size=3"],
     "halves the resolution once, so the image sides must be multiples of 6, and the data's are 16 x 16"),
    (["model=flow", "model.conditional=true", FOLDER], "model.conditional=true needs labelled data"),
    (["metrics.fid.real_split=val", "metrics.fid.num_samples=3"],
     "need at least 6 images on both sides (FID: 2, k-NN metrics: k + 1), and have "
     "metrics.fid.num_samples=3"),
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


@pytest.mark.parametrize(("overrides", "message"), CASES, ids=[" ".join(c[0][-2:]) for c in CASES])
@pytest.mark.slow
def test_a_value_that_is_not_what_its_key_means_is_named(overrides, message, folder, tmp_path):
    translation = any(o in overrides for o in ("model=cyclegan", "model=pix2pix"))  # sized by their TINY_*
    if FOLDER in overrides:
        clusters = [] if {"model=flow", "model=diffusion"} & set(overrides) else ["model.clusters=null"]
        overrides = ["data=image_folder", f"data.root={folder}", "data.num_workers=0", *clusters,
                     *(o for o in overrides if o != FOLDER)]
    with pytest.raises(Exception) as caught:  # noqa: B017 - Hydra may wrap it in an InstantiationException
        run(compose_config([*(["logger=none"] if translation else QUICK), *overrides], tmp_path))
    mistake = user_error(caught.value)
    assert mistake is not None and message in str(mistake), caught.value
    assert "\n" not in str(mistake) and str(mistake).endswith(".")
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_valid_values_at_their_edges_run(tmp_path):
    """Integers where floats belong (Adam's betas [0, 0.9]), zero where zero means off, seed=null (Lightning
    draws a seed; config.yaml records it), and settings of an augmentation not in use, which nothing checks
    (ADA's target with DiffAugment)."""
    run(compose_config([*QUICK, "model.betas=[0,0.9]", "model.r1_gamma=0", "model.ema_halflife_kimg=1", "seed=null",
                        "++trainer.limit_train_batches=1.0", "data.test_fraction=0",
                        "model.augment=diffaugment",
                        "model.ada_target=5", "model.ada_interval=0.5"], tmp_path))
    seed = OmegaConf.load(tmp_path / "config.yaml").seed
    assert isinstance(seed, int) and 0 <= seed < 2**32
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_a_data_config_builds_as_composed_with_its_lists_as_listconfig(folder, tmp_path):
    """`instantiate(cfg.data)` without `_convert_`: the default `background: [255, 255, 255]` arrives as an
    OmegaConf ListConfig and is accepted as the colour it is (issue 32, point 9)."""
    cfg = compose_config([*QUICK, "data=image_folder", f"data.root={folder}", "data.num_workers=0"], tmp_path)
    assert isinstance(cfg.data.background, ListConfig)
    data = instantiate(cfg.data)
    assert data.background == (255, 255, 255) and data.image_shape == (3, 16, 16)


LIBRARY = ("models", "nets", "data", "metrics", "augment", "losses.py", "likelihoods.py")
# A config key in a string: `model.lr`, `data.root`, `metrics.fid.seed` (not `gdm.data.x`, `self.model.x`)
CONFIG_KEY = re.compile(r"(?<![\w.({])(model|data|metrics|trainer|callbacks|logger|paths|hydra|eval|sample"
                        r"|translate|compare)\.(?!safetensors\b)[a-z_]")


def test_no_config_key_is_spelled_in_the_library_layers():
    """Library layers name their parameters; the task layer (gdm/tasks, gdm/app.py) alone maps them to config
    keys, so renaming a config group cannot leave a message stale. `gdm/data/download.py` is a command-line
    tool of its own whose output is the `python run.py ...` command to type."""
    assert all((ROOT / "gdm" / part).exists() for part in LIBRARY)  # never a scan of nothing
    found = []
    for part in LIBRARY:
        root = ROOT / "gdm" / part
        for path in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
            if path.name == "download.py":
                continue
            for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
                if token.type == tokenize.STRING:
                    found += [f"{path.relative_to(ROOT)}:{token.start[0]}: {m.group(0)}"
                              for m in CONFIG_KEY.finditer(token.string)]
    assert found == []


def test_the_key_scan_finds_keys_in_strings():
    text = 'f"model.lr={lr} and data.root, not gdm.data.base nor {len(data.split(s))}"'
    assert CONFIG_KEY.findall(text) == ["model", "data"]


@pytest.mark.slow
def test_a_bad_value_on_the_command_line_is_one_sentence(tmp_path):
    from test_e2e import run_py

    proc = run_py("model.n_critic=0", "logger=none", "print_config=false", f"hydra.run.dir={tmp_path}",
                  timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-2000:]
    assert "model.n_critic=0 must be an integer >= 1 (discriminator updates per generator update" in out
    assert "Traceback" not in out and not (tmp_path / "checkpoints").exists()


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


def test_the_formatter_adds_the_config_path_to_the_parameters_a_message_names():
    """A library message names parameters; the task layer writes each as the key the user types: an option of
    the node, of the one net under it that has it (a name two nets share stays as it is), or of the data."""
    from gdm.tasks.options import with_config_paths

    model = OmegaConf.create({"_target_": "GAN", "clusters": 8,
                              "generator": {"_target_": "G", "norm": "batch"},
                              "discriminator": {"_target_": "D", "norm": "batch", "n_layers": 3}})
    data = OmegaConf.create({"root": "/x", "image_size": 24})
    message = ("clusters=8, n_layers=3, norm=layer, image_size=24, root/trainA=/x/trainA, gdm.root=1, "
               "a.clusters=2, /tmp/pytest-of-root/x.png, ~root/y, data_root=3")
    assert with_config_paths(message, "model", model, (("data", data),)) == (
        "model.clusters=8, model.discriminator.n_layers=3, norm=layer, data.image_size=24, "
        "data.root/trainA=/x/trainA, gdm.root=1, a.clusters=2, /tmp/pytest-of-root/x.png, ~root/y, data_root=3")
