"""Tasks on a checkpoint record what ran: the settings the weights were trained for come from the checkpoint, the
eval options reach every metric by one route, values are named by the split they measured, and task=sample draws
what task=eval measures."""

from __future__ import annotations

import csv
import json
import logging
import re

import numpy as np
import pytest
import torch
from helpers import TINY, TINY_PIX2PIX, compose_config, compose_typed
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from gdm.app import run
from gdm.checkpoints import changed_data, config_for_checkpoint, load_model, read_checkpoint
from gdm.errors import GdmError
from gdm.images import load_png, to_uint8
from gdm.metrics.feature_metrics import frechet_distance
from gdm.metrics.features import DigitFeatures

SMALL = ["data.image_size=16", *TINY, "logger=none", "test_after_fit=false"]
FOLDER = ["data=paired", "data.num_workers=0", "metrics.features=digits_colour", "print_config=false"]


def write_pairs(root, counts: dict[str, int]) -> None:
    """Side-by-side A | B RGB PNGs of 40x80 (B = A with its channels reversed), `counts` per split folder."""
    rng = np.random.default_rng(0)
    for folder, count in counts.items():
        (root / folder).mkdir(parents=True)
        for i in range(count):
            a = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
            Image.fromarray(np.concatenate([a, a[..., ::-1]], 1)).save(root / folder / f"{i}.png")


@pytest.fixture(scope="module")
def cgan_ckpt(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cgan")
    run(compose_config(["model=cgan", *SMALL], run_dir))
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def pix2pix_run(tmp_path_factory):
    """A pix2pix trained BtoA at 32 px on a paired folder whose val/ (2 pairs) and test/ (3 pairs) differ."""
    root = tmp_path_factory.mktemp("pairs")
    write_pairs(root, {"train": 4, "val": 2, "test": 3})
    run_dir = tmp_path_factory.mktemp("pix2pix")
    run(compose_config([*TINY_PIX2PIX, *FOLDER, f"data.root={root}", "data.direction=BtoA", "data.load_size=32",
                        "data.batch_size=2", "logger=none"], run_dir))
    return root, run_dir / "checkpoints" / "last.ckpt"


def evaluate(overrides: list[str], out) -> tuple[float | None, dict]:
    value = run(compose_typed(["task=eval", "print_config=false", *overrides], out))
    return value, json.loads((out / "eval.json").read_text())


# ---- 32.1: the checkpoint's trained settings --------------------------------------------------------------

@pytest.mark.slow
def test_naming_the_data_group_keeps_the_checkpoints_direction_and_size(pix2pix_run, tmp_path):
    root, ckpt = pix2pix_run
    value, report = evaluate([f"ckpt_path={ckpt}", *FOLDER, f"data.root={root}"], tmp_path)
    assert report["image_shape"] == [3, 32, 32]  # the data group's default is 256 px
    fid = report["protocols"]["test/fid_digits_colour"]
    assert fid["direction"] == "BtoA" and fid["real_split"] == "A/test"  # the group's default is AtoB
    assert report["changed_from_checkpoint"] == [] and value == report["metrics"]["test/fid_digits_colour"]


@pytest.mark.slow
def test_a_typed_direction_that_contradicts_the_checkpoint_is_refused(pix2pix_run, tmp_path):
    root, ckpt = pix2pix_run
    with pytest.raises(GdmError, match=re.escape(
            f"ckpt_path={ckpt} holds weights trained for other settings than this run's (data.direction gives "
            "direction=AtoB, the checkpoint's is BtoA): drop those overrides")):
        evaluate([f"ckpt_path={ckpt}", *FOLDER, f"data.root={root}", "data.direction=AtoB"], tmp_path)
    assert not (tmp_path / "eval.json").exists()


@pytest.mark.slow
def test_a_translator_evaluated_at_another_size_says_so_and_records_it(pix2pix_run, tmp_path, caplog):
    root, ckpt = pix2pix_run
    with caplog.at_level(logging.WARNING, logger="gdm.tasks.evaluate"):
        _, report = evaluate([f"ckpt_path={ckpt}", *FOLDER, f"data.root={root}", "data.image_size=64"], tmp_path)
    change = "image_shape: [3, 32, 32] -> [3, 64, 64]"
    assert report["image_shape"] == [3, 64, 64] and report["changed_from_checkpoint"] == [change]
    assert all(p["changed_from_checkpoint"] == [change] for p in report["protocols"].values())
    assert change in caplog.text


@pytest.mark.slow
def test_translate_refuses_a_typed_direction_against_the_checkpoint(pix2pix_run, tmp_path):
    root, ckpt = pix2pix_run
    cfg = compose_typed(["task=translate", f"ckpt_path={ckpt}", f"translate.input={root / 'test'}",
                         f"translate.output={tmp_path / 'out'}", "model=pix2pix", "data.direction=AtoB"], tmp_path)
    with pytest.raises(GdmError, match=re.escape(
            f"data.direction=AtoB contradicts ckpt_path={ckpt}, whose model was trained with data.direction=BtoA: "
            "task=translate uses the checkpoint's model as it was trained, so drop the override (translate.direction")):
        run(cfg)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("overrides", "message"), [
    (["model.latent_dim=64"], "holds weights whose shapes do not fit this run's settings (model.latent_dim gives "
                              "latent_dim=64, the checkpoint's is 100)"),
    (["data.image_size=32"], "holds weights trained for other settings than this run's (data.image_size / "
                             "data.channels gives image_shape=[1, 32, 32], the checkpoint's is [1, 16, 16])"),
    (["model.generator.ngf=8"], "whose nets' settings differ from the checkpoint's (model.generator.ngf=8 here, the "
                                "checkpoint's is 32)"),  # a net's setting: named from the configs
    (["model=gan"], "model= replaces the checkpoint's model settings with that config's, so drop model= to use the "
                    "model as it was trained."),  # a group typed: its defaults, not overrides, differ
])
@pytest.mark.slow
def test_eval_refuses_a_gans_trained_settings_named_otherwise(cgan_ckpt, tmp_path, overrides, message):
    with pytest.raises(GdmError, match=re.escape(message)):
        evaluate([f"ckpt_path={cgan_ckpt}", "eval.num_samples=40", *overrides], tmp_path)


@pytest.mark.slow
def test_eval_on_other_data_names_the_channels_and_classes_it_changes(cgan_ckpt, image_folder, tmp_path):
    with pytest.raises(GdmError, match=re.escape(
            "(data.image_size / data.channels gives image_shape=[3, 16, 16], the checkpoint's is [1, 16, 16]; the "
            "data's classes (data=) gives num_classes=2, the checkpoint's is 10)")):
        evaluate([f"ckpt_path={cgan_ckpt}", "data=image_folder", f"data.root={image_folder}", "data.num_workers=0"],
                 tmp_path)


@pytest.mark.parametrize(("overrides", "message"), [
    (["model.latent_dim=64"], "model.latent_dim=64 contradicts ckpt_path={}, whose model was trained with "
                              "model.latent_dim=100: task=sample uses the checkpoint's model as it was trained"),
    (["data.image_size=32"], "data.image_size=32 contradicts ckpt_path={}, whose model was trained with "
                             "data.image_size=16"),
])
@pytest.mark.slow
def test_sample_refuses_settings_it_would_ignore(cgan_ckpt, tmp_path, overrides, message):
    with pytest.raises(GdmError, match=re.escape(message.format(cgan_ckpt))):
        run(compose_typed(["task=sample", f"ckpt_path={cgan_ckpt}", *overrides], tmp_path))
    assert not (tmp_path / "samples").exists()


# ---- 29.1: one route from eval.* to the metrics -----------------------------------------------------------

@pytest.mark.slow
def test_eval_split_reaches_pix2pixs_metrics_and_the_record_says_so(pix2pix_run, tmp_path):
    root, ckpt = pix2pix_run
    _, report = evaluate([f"ckpt_path={ckpt}", *FOLDER, f"data.root={root}", "eval.split=val"], tmp_path)
    assert report["split"] == "val"
    assert report["eval_settings"] == {"metrics.paired.split": "val", "metrics.paired.real_split": "val"}
    fid, l1 = report["protocols"]["val/fid_digits_colour"], report["protocols"]["val/l1"]
    assert fid["real_split"] == "A/val" and fid["num_real"] == 2 and fid["num_generated"] == 2  # val/ has 2 pairs
    assert l1["split"] == "val" and l1["ground_truth"] == "A/val"


@pytest.mark.slow
def test_an_eval_option_that_sets_no_metric_is_refused(pix2pix_run, tmp_path):
    root, ckpt = pix2pix_run
    with pytest.raises(GdmError, match=re.escape("eval.kid_subset_size=50 sets no metric of this checkpoint "
                                                 "(metrics: paired): drop it.")):
        evaluate([f"ckpt_path={ckpt}", *FOLDER, f"data.root={root}", "eval.kid_subset_size=50"], tmp_path)


@pytest.mark.slow
def test_a_typed_metric_setting_wins_over_the_eval_default(cgan_ckpt, tmp_path):
    _, report = evaluate([f"ckpt_path={cgan_ckpt}", "eval.num_samples=40", "eval.kid_subset_size=null",
                          "metrics.fid.real_split=val"], tmp_path)
    assert report["protocols"]["val/fid_digits"]["real_split"] == "val"  # named by the split that ran
    assert "test/fid_digits" not in report["metrics"] and "test/class_acc" in report["metrics"]
    assert "metrics.fid.real_split" not in report["eval_settings"]
    assert report["eval_settings"]["metrics.fid.num_samples"] == 40


# ---- 32.8: the monitor follows the features ---------------------------------------------------------------

@pytest.mark.slow
def test_the_checkpoints_monitor_follows_the_features_unless_typed(cgan_ckpt, tmp_path):
    checkpoint = read_checkpoint(cgan_ckpt)
    checkpoint["gdm_config_source"]["monitor"] = "val/fid_digits"  # as a run that typed monitor= stores it
    cfg = compose_typed(["task=eval", f"ckpt_path={cgan_ckpt}", "metrics.features=dinov2"], tmp_path)
    assert config_for_checkpoint(cfg, checkpoint).monitor == "val/fid_dinov2"
    cfg = compose_typed(["task=eval", f"ckpt_path={cgan_ckpt}", "metrics.features=dinov2",
                         "monitor=val/class_acc"], tmp_path)
    assert config_for_checkpoint(cfg, checkpoint).monitor == "val/class_acc"
    cfg = compose_typed(["task=eval", f"ckpt_path={cgan_ckpt}"], tmp_path)
    assert config_for_checkpoint(cfg, checkpoint).monitor == "val/fid_digits"


# ---- 32.2: names by split, KID with its meaning, the seed drawn ------------------------------------------

@pytest.mark.slow
def test_eval_names_values_by_the_split_and_says_what_kid_is(cgan_ckpt, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="gdm.tasks.evaluate"):
        value, report = evaluate([f"ckpt_path={cgan_ckpt}", "eval.num_samples=60", "eval.kid_subset_size=50",
                                  "seed=null"], tmp_path)
    metrics = report["metrics"]
    assert {"test/fid_digits", "test/kid_digits", "test/kid_digits_std", "test/class_acc", "test/precision_digits",
            "train/copies_digits", "val/d_real"} <= set(metrics)  # copies: of the training images
    assert not any(name.startswith("val/") and name != "val/d_real" for name in metrics)
    assert value == metrics["test/fid_digits"] and report["names_in_training"]["test/fid_digits"] == "val/fid_digits"
    assert report["protocols"]["test/fid_digits"]["real_split"] == "test"
    assert report["protocols"]["val/d_real"]["split"] == "val"  # the model's own losses ran on the val split
    assert isinstance(report["seed"], int)  # seed=null: the one drawn
    kid = next(line for line in caplog.text.splitlines() if "test/kid_digits " in line)
    assert f"{metrics['test/kid_digits']:.6g} ± {metrics['test/kid_digits_std']:.3g} (mean ± std" in kid
    assert "over 100 random subsets of 50 images per side" in kid and "not the error of the mean" in kid
    assert "100 random subsets of 50" in report["definitions"]["test/kid_digits"]
    assert list(report["definitions"]) == ["test/kid_digits"]


@pytest.mark.slow
def test_sample_seeds_shift_every_metrics_seed(cgan_ckpt, tmp_path):
    _, report = evaluate([f"ckpt_path={cgan_ckpt}", "eval.num_samples=40", "eval.kid_subset_size=null",
                          "eval.sample_seeds=2"], tmp_path)
    spread = report["sample_seeds"]
    assert spread["test/fid_digits"]["sample_seeds"] == [0, 1] and spread["test/class_acc"]["sample_seeds"] == [0, 1]
    assert spread["test/fid_digits"]["values"][0] != spread["test/fid_digits"]["values"][1]


# ---- 32.8: task=sample draws what task=eval measures ------------------------------------------------------

@pytest.mark.slow
def test_gdm_fid_equals_an_external_fid_of_task_samples_pngs(cgan_ckpt, tmp_path, caplog):
    n = 60
    _, report = evaluate([f"ckpt_path={cgan_ckpt}", f"eval.num_samples={n}", "eval.kid_subset_size=null"],
                         tmp_path / "eval")
    with caplog.at_level(logging.INFO, logger="gdm.tasks.sample"):
        run(compose_typed(["task=sample", f"ckpt_path={cgan_ckpt}", f"+sample.n={n}"], tmp_path / "sample"))
    assert "labels drawn from the training-split class frequencies" in caplog.text
    files = sorted((tmp_path / "sample" / "samples").glob("*.png"))
    features = DigitFeatures()
    with torch.no_grad():
        fake = features(torch.stack([load_png(f, 1) for f in files])).float()
        data = instantiate(read_checkpoint(cgan_ckpt)["gdm_config"]["data"], _convert_="all")
        test = data.split("test")
        real = features(to_uint8(torch.stack([test[i]["image"] for i in range(len(test))]))).float()
    assert frechet_distance(real, fake) == pytest.approx(report["metrics"]["test/fid_digits"], rel=1e-5)
    with (tmp_path / "sample" / "labels.csv").open() as f:
        labels = [int(row["label"]) for row in csv.DictReader(f)]
    expected = load_model(cgan_ckpt).sample_labels(range(n), seed=0).tolist()
    assert labels == expected and len(set(labels)) > 1  # class frequencies, not i mod 10
    assert labels != [i % 10 for i in range(n)]


# ---- 32.1: resume names what changed ----------------------------------------------------------------------

@pytest.mark.slow
def test_resume_names_changed_data_settings(pix2pix_run, tmp_path):
    root, ckpt = pix2pix_run
    cfg = compose_config([*TINY_PIX2PIX, *FOLDER, f"data.root={root}", "data.num_workers=2"], tmp_path)
    changed = changed_data(cfg, read_checkpoint(ckpt))  # `data=paired data.root=DIR` again, without the rest
    assert changed == ["data.batch_size: 2 -> 1", "data.direction: BtoA -> AtoB", "data.load_size: 32 -> 286"]


# ---- 32.2: a drawn seed is what every record of a run says ------------------------------------------------

@pytest.mark.slow
def test_a_drawn_seed_is_recorded_in_config_logger_and_checkpoint(tmp_path):
    run(compose_config(["data.image_size=16", *TINY, "logger=csv", "test_after_fit=false", "seed=null"], tmp_path))
    seed = OmegaConf.load(tmp_path / "config.yaml").seed
    logged = OmegaConf.load(next(tmp_path.rglob("hparams.yaml"))).seed  # what every logger's config receives
    saved = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert isinstance(seed, int) and logged == seed and saved["gdm_config"]["seed"] == seed
    assert saved["gdm_config_source"]["seed"] == seed
