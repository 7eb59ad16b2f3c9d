"""task=eval and task=sample on checkpoints, through run.py as a user types them."""

from __future__ import annotations

import json
import re

import pytest
import torch
from helpers import CONF, TINY, TINY_CYCLEGAN, compose_config, run_py
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from gdm.app import run
from gdm.checkpoints import checkpoint_step, config_for_checkpoint, load_model, read_checkpoint
from gdm.errors import GdmError
from gdm.images import load_png, to_uint8
from gdm.metrics.features import DigitFeatures
from gdm.models.base import latent_noise
from gdm.tasks.sample import sample_file_name

SMALL = ["data.image_size=16", *TINY, "logger=none", "test_after_fit=false"]


@pytest.fixture(scope="module")
def cgan_ckpt(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cgan")
    run(compose_config(["model=cgan", "model.ema_halflife_kimg=1.0", "model.ema_rampup_ratio=null", *SMALL], run_dir))
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.mark.slow
def test_eval_writes_fid_kid_and_class_accuracy(cgan_ckpt, tmp_path):
    proc = run_py("task=eval", f"ckpt_path={cgan_ckpt}", "eval.num_samples=60", "eval.kid_subset_size=50",
                  "eval.split=val", "print_config=false", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "eval.json").read_text())
    checkpoint = torch.load(cgan_ckpt, weights_only=True)
    assert report["model"] == "GAN" and report["split"] == "val"
    assert report["global_step"] == checkpoint["global_step"] and report["step"] == checkpoint_step(checkpoint)
    protocol = report["protocols"]["val/fid_digits"]
    assert protocol["num_generated"] == 60 and protocol["real_split"] == "val" and protocol["num_real"] == 180
    assert protocol["features"]["weights_sha256"] == DigitFeatures().protocol()["weights_sha256"]
    assert report["protocols"]["val/kid_digits"]["subset_size"] == 50
    metrics = report["metrics"]
    assert {"val/fid_digits", "val/kid_digits", "val/kid_digits_std", "val/class_acc"} <= set(metrics)
    assert metrics["val/fid_digits"] > 0 and 0 <= metrics["val/class_acc"] <= 1
    printed = next(line for line in (proc.stdout + proc.stderr).splitlines() if "val/fid_digits " in line)
    assert f"{metrics['val/fid_digits']:.6g}" in printed and protocol["id"] in printed  # beside its protocol
    assert "num_generated 60" in printed and "resize 32 bilinear" in printed


@pytest.mark.slow
def test_eval_of_a_vae_reports_the_iwae_nll(tmp_path):
    run(compose_config(["model=vae", "model.iwae_k=4", *SMALL], tmp_path / "train"))
    proc = run_py("task=eval", f"ckpt_path={tmp_path / 'train/checkpoints/last.ckpt'}", "eval.num_samples=40",
                  "eval.kid_subset_size=20", "print_config=false", "logger=none", f"hydra.run.dir={tmp_path / 'eval'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "eval" / "eval.json").read_text())["metrics"]
    assert metrics["test/nll_iwae"] > 0 and metrics["test/fid_digits"] > 0 and "val/elbo" in metrics
    protocols = json.loads((tmp_path / "eval" / "eval.json").read_text())["protocols"]
    assert protocols["test/nll_iwae"]["estimator"]["method"] == "ELBO and IWAE bound (Burda et al. 2016), k=4"


@pytest.mark.slow
def test_kid_shares_fid_features_and_eval_is_repeatable(cgan_ckpt, tmp_path):
    def evaluate(name: str, *overrides: str) -> dict:
        run(compose_config(["task=eval", f"ckpt_path={cgan_ckpt}", "eval.num_samples=60", *overrides], tmp_path / name))
        return json.loads((tmp_path / name / "eval.json").read_text())["metrics"]

    with_kid, again, without = evaluate("a"), evaluate("b"), evaluate("c", "eval.kid_subset_size=null")
    timing = "test/sample_seconds_per_1000"  # a clock reading, the one value that may differ
    assert with_kid.pop(timing) > 0 and again.pop(timing) > 0
    assert with_kid == again  # seeded: the same numbers every time
    assert with_kid["test/fid_digits"] == without["test/fid_digits"] and "test/kid_digits" not in without
    assert with_kid["test/kid_digits"] > 0


@pytest.mark.slow
def test_the_checkpoint_decides_model_and_data_unless_the_command_line_does(cgan_ckpt, tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["task=eval", "data.batch_size=7", f"paths.output_dir={tmp_path}"],
                      return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    merged = config_for_checkpoint(cfg, read_checkpoint(cgan_ckpt))
    assert merged.model._target_ == "gdm.models.gan.GAN" and merged.model.conditional is True  # from the ckpt
    assert merged.data.image_size == 16  # from the checkpoint (the default config says 32)
    assert merged.data.batch_size == 7  # typed on the command line
    assert "class_acc" in merged.metrics and merged.task == "eval"

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):  # a whole group: replaced, not blended
        cfg = compose("config", overrides=["task=eval", "data=mnist", f"paths.output_dir={tmp_path}"],
                      return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    merged = config_for_checkpoint(cfg, read_checkpoint(cgan_ckpt))
    assert merged.data._target_ == cfg.data._target_ and merged.model.conditional is True
    assert cfg.data.image_size == 32 and merged.data.image_size == 16  # the size the weights were trained for


@pytest.mark.slow
def test_sample_writes_n_pngs_and_a_grid_from_the_ema_generator(cgan_ckpt, tmp_path):
    proc = run_py("task=sample", f"ckpt_path={cgan_ckpt}", "+sample.n=23", "print_config=false",
                  f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    files = sorted((tmp_path / "samples").glob("*.png"))
    assert [f.name for f in files] == [f"{i:05d}.png" for i in range(23)]
    model = load_model(cgan_ckpt)
    labels = model.sample_labels(range(23), seed=0)  # as the evaluation draws them
    expected = to_uint8(model.generate(range(23), labels=labels))
    assert torch.equal(torch.stack([load_png(f, 1) for f in files]), expected)
    with torch.no_grad():  # the EMA generator's samples, not the trained generator's
        raw = model.generator.eval()(latent_noise(range(23), model.latent_dim, seed=0), labels)
    assert model.generator_ema is not None and not torch.equal(expected, to_uint8(raw))
    grid = load_png(tmp_path / "grid.png", 1)
    assert grid.shape == (1, 2 + 5 * 18, 2 + 5 * 18)  # 5 x 5 (the last row partly), 16 px + 2 px padding


@pytest.mark.slow
def test_sample_streams_many_samples_and_grids_the_first_whole_rows(cgan_ckpt, tmp_path):
    run(compose_config(["task=sample", f"ckpt_path={cgan_ckpt}", "+sample.n=300"], tmp_path))
    files = sorted((tmp_path / "samples").glob("*.png"))
    assert [f.name for f in files] == [f"{i:05d}.png" for i in range(300)]  # the chunks of 256 join up
    model = load_model(cgan_ckpt)
    picked = [0, 255, 256, 299]
    expected = to_uint8(model.generate(picked))  # labels drawn per index, as the evaluation does
    assert torch.equal(torch.stack([load_png(files[i], 1) for i in picked]), expected)
    grid = load_png(tmp_path / "grid.png", 1)
    assert grid.shape == (1, 2 + 16 * 18, 2 + 16 * 18)  # the first 256 samples
    first = to_uint8(model.generate([0]))[0]
    assert torch.equal(grid[:, 2:18, 2:18], first)


def test_sample_names_sort_in_sample_order_past_99999():
    assert [sample_file_name(i, 100000) for i in (0, 99999)] == ["00000.png", "99999.png"]
    assert [sample_file_name(i, 100001) for i in (0, 99999, 100000)] == ["000000.png", "099999.png", "100000.png"]
    assert sample_file_name(3, 1) == "00003.png"


@pytest.mark.slow
def test_sample_refuses_a_translation_model(tmp_path):
    run(compose_config([*TINY_CYCLEGAN, "logger=none"], tmp_path / "cg"))
    cfg = compose_config(["task=sample", f"ckpt_path={tmp_path / 'cg/checkpoints/last.ckpt'}"], tmp_path / "s")
    with pytest.raises(Exception, match="holds a CycleGAN, which translates images rather than drawing them"):
        run(cfg)


@pytest.mark.parametrize(("task", "overrides", "message"), [
    ("sample", ["+sample.label=abc"],
     "sample.label='abc' must be an integer >= 0 or null (the class to draw; unset: every class)."),
    ("sample", ["+sample.label=true"], "sample.label=true must be an integer >= 0"),
    ("sample", ["+sample.label=2.5"], "sample.label=2.5 must be an integer >= 0"),
    ("sample", ["+sample.label=-1"], "sample.label=-1 must be an integer >= 0"),
    ("sample", ["+sample.label=10"], "sample.label=10 needs a class-conditional model with that class (classes 0..9)."),
    ("sample", ["+sample.n=abc"], "sample.n='abc' must be an integer >= 1 (the number of images to draw)."),
    ("sample", ["+sample.n=2.5"], "sample.n=2.5 must be an integer >= 1"),
    ("sample", ["+sample.n=0"], "sample.n=0 must be an integer >= 1"),
    ("sample", ["sample.seed=x"], "sample.seed='x' must be an integer >= 0 (the seed of the sample sequence)."),
    ("sample", ["sample.seed=-1"], "sample.seed=-1 must be an integer >= 0"),
    ("sample", ["+sample.n=null"], "sample.n=null must be an integer >= 1"),
    ("eval", ["eval.sample_seeds=abc"], "eval.sample_seeds='abc' must be an integer >= 1"),
    ("eval", ["eval.sample_seeds=2.5"], "eval.sample_seeds=2.5 must be an integer >= 1"),
    ("eval", ["eval.sample_seeds=0"], "eval.sample_seeds=0 must be an integer >= 1"),
    ("eval", ["eval.sample_seeds=false"], "eval.sample_seeds=false must be an integer >= 1"),
    ("eval", ["eval.num_samples=many"], "eval.num_samples='many' must be an integer >= 2 or null"),
    ("eval", ["eval.num_samples=1"], "eval.num_samples=1 must be an integer >= 2 or null"),
    ("eval", ["eval.kid_subset_size=0.5"], "eval.kid_subset_size=0.5 must be an integer >= 2 or null"),
])
@pytest.mark.slow
def test_sample_and_eval_options_that_are_not_integers_are_named(cgan_ckpt, tmp_path, task, overrides, message):
    with pytest.raises(GdmError) as caught:
        run(compose_config([f"task={task}", f"ckpt_path={cgan_ckpt}", *overrides], tmp_path))
    assert str(caught.value).startswith(message)
    assert not (tmp_path / "samples").exists() and not (tmp_path / "eval.json").exists()


@pytest.mark.slow
def test_sample_label_draws_that_class_only(cgan_ckpt, tmp_path):
    run(compose_config(["task=sample", f"ckpt_path={cgan_ckpt}", "+sample.n=5", "+sample.label=3"], tmp_path))
    files = sorted((tmp_path / "samples").glob("*.png"))
    expected = to_uint8(load_model(cgan_ckpt).generate(range(5), labels=torch.full((5,), 3)))
    assert torch.equal(torch.stack([load_png(f, 1) for f in files]), expected)


@pytest.mark.parametrize(("value", "message"), [
    ("abc", "translate.load_size='abc' must be an integer >= 8 or null (pixels of each image's short side"),
    ("4", "translate.load_size=4 must be an integer >= 8"),
    ("true", "translate.load_size=true must be an integer >= 8"),
])
def test_translate_load_size_that_is_not_a_size_is_named(tmp_path, value, message):
    cfg = compose_config(["task=translate", f"ckpt_path={tmp_path / 'x.ckpt'}", f"translate.input={tmp_path}",
                          f"translate.output={tmp_path / 'out'}", f"translate.load_size={value}"], tmp_path / "run")
    with pytest.raises(GdmError, match=re.escape(message)):
        run(cfg)


@pytest.mark.slow
def test_a_checkpoint_of_older_gdm_with_ema_decay_samples_and_resumes(cgan_ckpt, tmp_path):
    """A checkpoint written before the GAN's `model.ema_decay` became a half-life (gdm.config_upgrades): read as the
    same average (decay d per batch of B: half-life B ln 2 / -ln d images, no ramp-up), it loads with its weights,
    samples, and resumes once the model is given the settings the refusal names."""
    import copy
    import math

    new = torch.load(cgan_ckpt, weights_only=True)
    old = copy.deepcopy(new)
    for settings in (old["gdm_config"]["model"], old["gdm_config_source"]["model"], old["hyper_parameters"]):
        settings.pop("ema_halflife_kimg"), settings.pop("ema_rampup_ratio")
        settings["ema_decay"] = 0.9
    del old["state_dict"]["generator_ema.images_seen"]  # older EMAs kept no count of images
    path = tmp_path / "old.ckpt"
    torch.save(old, path)

    model = load_model(path)
    batch = new["gdm_config"]["data"]["batch_size"]
    assert model.generator_ema.halflife_kimg == pytest.approx(batch * math.log(2) / -math.log(0.9) / 1000, rel=1e-5)
    assert model.generator_ema.rampup_ratio is None
    labels = model.sample_labels(range(4), seed=0)
    assert torch.equal(model.generate(range(4), labels=labels), load_model(cgan_ckpt).generate(range(4), labels=labels))
    run(compose_config(["task=sample", f"ckpt_path={path}", "+sample.n=4"], tmp_path / "sample"))
    assert len(list((tmp_path / "sample" / "samples").glob("*.png"))) == 4

    resume = ["model=cgan", *SMALL, "trainer.max_epochs=2", f"ckpt_path={path}"]
    with pytest.raises(GdmError, match="it was written with model.ema_halflife_kimg="):
        run(compose_config(resume, tmp_path / "resumed"))  # model=cgan's own default has no EMA
    halflife = batch * math.log(2) / -math.log(0.9) / 1000
    run(compose_config([*resume, f"model.ema_halflife_kimg={round(halflife, 6)}", "model.ema_rampup_ratio=null"],
                       tmp_path / "resumed2"))
    resumed = torch.load(tmp_path / "resumed2" / "checkpoints" / "last.ckpt", weights_only=True)
    assert float(resumed["state_dict"]["generator_ema.images_seen"]) > 0
