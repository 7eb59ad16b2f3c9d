"""The Evaluator's contracts: one step axis everywhere, a protocol beside every value, real features paid
for once (and never trusted when stale or corrupt)."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from helpers import compose_config

from gdm.app import run
from gdm.data.image_folder import ImageFolderDataModule
from gdm.evaluation.context import differences, protocol_id, with_id
from gdm.evaluation.real_features import RealFeatureCache, dataset_fingerprint

pytestmark = pytest.mark.usefixtures("one_thread")
SHORT = ["data.image_size=16", "trainer.max_steps=20", "metrics.fid.num_samples=40", "trainer.accelerator=cpu",
         "print_config=false", "test_after_fit=false"]


def record_wandb_logs(monkeypatch) -> list[dict]:
    """Every dict gdm (through Lightning) hands to W&B's `Run.log`, with its keys and step field."""
    import wandb

    calls: list[dict] = []
    original = wandb.sdk.wandb_run.Run.log

    def log(self, data, *args, **kwargs):
        calls.append({key: data[key] for key in data if key == "trainer/global_step" or key.startswith(
            ("val/", "images/"))})
        return original(self, data, *args, **kwargs)

    monkeypatch.setattr(wandb.sdk.wandb_run.Run, "log", log)
    return calls


@pytest.mark.slow
def test_one_step_axis_in_every_logger_file_and_grid(tmp_path, monkeypatch):
    """max_steps=20 optimizer steps = 10 batches: the evaluation is at step 10 in CSV, TensorBoard, W&B,
    summary.json, metrics.jsonl, the grid's file name and the best-checkpoint record."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    wandb_calls = record_wandb_logs(monkeypatch)
    cfg = compose_config([*SHORT, "logger=[csv,tensorboard,wandb]", "logger.wandb.mode=offline"], tmp_path)
    run(cfg)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["step_unit"] == "training batches"
    assert summary["final"]["step"] == summary["best"]["step"] == summary["step"] == 10
    assert summary["global_step"] == 20  # Lightning's optimizer steps, kept beside it
    history = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [10] and history[0]["images_seen"] == 10 * 64
    assert (tmp_path / "samples" / "samples_step0000010.png").is_file()
    assert (tmp_path / "samples" / "nearest_digits_step0000010.png").is_file()
    with (tmp_path / "csv" / "version_0" / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/fid_digits")]
    assert [int(r["step"]) for r in rows] == [10]
    assert float(rows[0]["val/fid_digits"]) == pytest.approx(summary["final"]["val/fid_digits"], rel=1e-6)
    events = EventAccumulator(str(next((tmp_path / "tensorboard").glob("version_*")))).Reload()
    assert [e.step for e in events.Scalars("val/fid_digits")] == [10]
    assert [e.step for e in events.Images("images/samples")] == [10]
    rows = wandb_calls
    fid_steps = [r["trainer/global_step"] for r in rows if "val/fid_digits" in r]
    grid_steps = [r["trainer/global_step"] for r in rows if "images/samples" in r]
    assert fid_steps == grid_steps == [10]


@pytest.mark.slow
def test_every_value_comes_with_its_protocol(tmp_path):
    run(compose_config([*SHORT, "logger=none"], tmp_path))
    summary = json.loads((tmp_path / "summary.json").read_text())
    values = [k for k in summary["final"] if k.startswith("val/")]
    assert set(values) == set(summary["protocols"])
    fid = summary["protocols"]["val/fid_digits"]
    assert fid["features"]["name"] == "digits" and len(fid["features"]["weights_sha256"]) == 64
    assert fid["features"]["resize"] == {"size": 32, "method": "bilinear", "antialias": True}
    assert fid["num_generated"] == 40 and fid["num_real"] == 1437 and fid["real_split"] == "train"
    assert fid["sample_seed"] == 0 and "uint8" in fid["quantization"]
    assert set(fid["versions"]) == {"gdm", "torch", "torchmetrics", "torch-fidelity", "timm"}
    assert fid["id"] == protocol_id(fid) and summary["best"]["protocol"] == fid["id"]
    assert summary["protocols"]["val/d_real"]["split"] == "val"


@pytest.mark.slow
def test_a_second_run_reads_the_real_features_from_the_cache(tmp_path):
    cache = tmp_path / "cache"
    run(compose_config([*SHORT, "logger=none", f"metrics.cache_dir={cache}"], tmp_path / "a"))
    files = sorted((cache / "real_features").glob("*.pt"))
    assert len(files) == 1  # the training split's digits features
    stamp = files[0].stat().st_mtime_ns
    run(compose_config([*SHORT, "logger=none", f"metrics.cache_dir={cache}", "seed=1"], tmp_path / "b"))
    assert sorted((cache / "real_features").glob("*.pt")) == files and files[0].stat().st_mtime_ns == stamp
    # Another split is another key.
    run(compose_config([*SHORT, "logger=none", f"metrics.cache_dir={cache}", "metrics.fid.real_split=val"],
                       tmp_path / "c"))
    assert len(list((cache / "real_features").glob("*.pt"))) == 2  # val (metrics) beside train (copy check)


KEY = {"data": {"kind": "test"}, "split": "train", "features": {"name": "x"}}


def test_cache_round_trip_and_atomic_file(tmp_path):
    cache = RealFeatureCache(tmp_path)
    features = torch.randn(5, 3)
    assert RealFeatureCache(tmp_path).get(KEY, lambda: features).equal(features)
    computed = []
    again = RealFeatureCache(tmp_path).get(KEY, lambda: computed.append(1) or torch.zeros(5, 3))
    assert torch.equal(again, features) and computed == []
    assert [p.name for p in (tmp_path / "real_features").iterdir()] == [cache.path(KEY).name]  # no temp file left


@pytest.mark.parametrize("damage", ["truncate", "flip_a_byte", "other_key", "garbage"])
def test_a_corrupt_or_foreign_cache_file_is_recomputed(tmp_path, damage):
    features = torch.randn(50, 8)
    cache = RealFeatureCache(tmp_path)
    cache.save(KEY, features)
    path = cache.path(KEY)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip_a_byte":  # inside the feature payload: the checksum catches it
        saved = torch.load(path, weights_only=True)
        saved["features"][3, 3] += 1
        torch.save(saved, path)
    elif damage == "other_key":
        other = RealFeatureCache(tmp_path)
        other.save({**KEY, "split": "val"}, features)
        other.path({**KEY, "split": "val"}).replace(path)
    else:
        path.write_bytes(b"not a torch file")
    fresh = torch.ones(50, 8)
    assert torch.equal(RealFeatureCache(tmp_path).get(KEY, lambda: fresh), fresh)
    assert torch.equal(RealFeatureCache(tmp_path).load(KEY), fresh)  # rewritten with the recomputed features


def test_a_changed_image_file_changes_the_fingerprint(image_folder):
    def fingerprint():
        data = ImageFolderDataModule(str(image_folder), image_size=16, num_workers=0, val_fraction=0.0,
                                     test_fraction=0.0)
        return dataset_fingerprint(data.split("train"))

    before = fingerprint()
    assert before == fingerprint()
    target = sorted(image_folder.rglob("*.png"))[0]
    target.write_bytes(target.read_bytes() + b"\0")  # another size: another file
    assert fingerprint() != before


def test_protocol_ids_ignore_versions_and_name_differences():
    a = with_id({"metric": "fid", "num_generated": 1000, "features": {"name": "digits", "resize": {"size": 32}}})
    b = with_id({**a, "num_generated": 5000, "features": {"name": "digits", "resize": {"size": 64}}})
    c = {**a, "versions": {"torch": "0.0"}}
    assert protocol_id(c) == a["id"] != b["id"]
    assert differences(a, b) == ["features.resize.size", "num_generated"]
    assert differences(a, c) == ["versions.gdm", "versions.timm", "versions.torch", "versions.torch-fidelity",
                                 "versions.torchmetrics"]


@pytest.mark.slow
def test_a_sweep_says_which_jobs_used_another_protocol(tmp_path):
    from gdm.tasks.sweep_summary import job_rows, protocol_mismatch

    for job, samples in (("0", 1000), ("1", 1000), ("2", 5000)):
        protocol = with_id({"metric": "fid", "num_generated": samples, "real_split": "train"})
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / "summary.json").write_text(json.dumps({
            "status": "finished", "monitor": "val/fid_digits", "protocols": {"val/fid_digits": protocol},
            "best": {"metric": "val/fid_digits", "value": 50.0, "step": 10, "protocol": protocol["id"]}}))
    rows = job_rows(tmp_path)
    assert rows[0]["protocol"] == rows[1]["protocol"] != rows[2]["protocol"]
    message = protocol_mismatch(tmp_path, rows)
    assert message == ("jobs 2 measured val/fid_digits with another protocol than job 0 (differing in "
                       "num_generated): their best values are not comparable.")
    assert protocol_mismatch(tmp_path, rows[:2]) is None


@pytest.mark.slow
def test_a_resumed_run_counts_the_wall_time_of_every_session(tmp_path, monkeypatch):
    import time

    from gdm.evaluation.evaluator import Evaluator

    on_fit_start = Evaluator.on_fit_start

    def started_100_s_ago(self, trainer, pl_module):  # a long first session, without waiting for it
        on_fit_start(self, trainer, pl_module)
        self.session_start -= 100

    tiny = [*SHORT[:1], "metrics.fid.num_samples=40", "trainer.accelerator=cpu", "print_config=false",
            "logger=none", "++trainer.limit_train_batches=2", "++trainer.limit_val_batches=1",
            "trainer.check_val_every_n_epoch=1"]
    monkeypatch.setattr(Evaluator, "on_fit_start", started_100_s_ago)
    run(compose_config([*tiny, "trainer.max_epochs=1"], tmp_path))
    first = json.loads((tmp_path / "summary.json").read_text())
    assert first["final"]["wall_seconds"] >= 100
    monkeypatch.setattr(Evaluator, "on_fit_start", on_fit_start)
    started = time.time()
    run(compose_config([*tiny, "trainer.max_epochs=2", "resume=auto"], tmp_path))
    second_session = time.time() - started
    second = json.loads((tmp_path / "summary.json").read_text())
    assert second["step"] == 4 and second["evaluations"] == 2
    # the total is the first session's (up to its last checkpoint) plus the second's own
    assert first["final"]["wall_seconds"] < second["wall_seconds"] < first["final"]["wall_seconds"] + second_session
    history = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert history == [2, 4]


@pytest.mark.slow
def test_testing_the_best_checkpoint_after_the_fit_keeps_the_runs_own_records(tmp_path):
    # restoring the best checkpoint for the test step must not put its wall time on top of the run's, nor roll back
    # the step or the evaluation count
    import time

    started = time.time()
    run(compose_config(["model=vae", "model.iwae_k=2", "data.image_size=16", "metrics.fid.num_samples=40",
                        "trainer.accelerator=cpu", "print_config=false", "logger=none", "trainer.max_epochs=2",
                        "++trainer.limit_train_batches=2", "++trainer.limit_val_batches=1",
                        "++trainer.limit_test_batches=1", "trainer.check_val_every_n_epoch=1"], tmp_path))
    elapsed = time.time() - started
    summary = json.loads((tmp_path / "summary.json").read_text())
    history = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert summary["test"]  # the test step ran, on the best checkpoint
    iwae = summary["protocols"]["test/nll_iwae"]  # and its values say how they were measured
    assert iwae["estimator"]["method"] == "ELBO and IWAE bound (Burda et al. 2016), k=2" and iwae["split"] == "test"
    assert summary["step"] == 4 and summary["evaluations"] == 2
    assert history[-1]["wall_seconds"] <= summary["wall_seconds"] < elapsed
