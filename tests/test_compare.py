"""Comparing runs over seeds: the statistics, grouping by configuration, the protocol refusal, the report."""

from __future__ import annotations

import csv
import json
import logging
import math
import re
import shutil
import subprocess

import pytest
from scipy import stats

from gdm.compare.runs import independent_runs, read_runs
from gdm.compare.stats import difference, interval
from gdm.compare.tables import metric_tables
from gdm.errors import GdmError
from gdm.multirun import configuration

FID = "val/fid_digits"


def protocol(**changes) -> dict:
    from gdm.evaluation.context import protocol_id

    p = {"metric": "fid", "features": {"name": "digits"}, "num_generated": 40, "real_split": "train",
         "sample_seed": 0, "conditional_labels": None, **changes}
    return {**p, "id": protocol_id(p)}


def make_run(path, overrides: list[str], seed: int, fid: float | None, status: str = "finished",
             fid_protocol: dict | None = None, config: str = ""):
    """A run directory as training leaves it: overrides, config (`config`: more of config.yaml), summary.json and
    metrics.jsonl."""
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in [*overrides, f"seed={seed}"]))
    (path / "config.yaml").write_text(f"seed: {seed}\n{config}")
    if fid is None:
        return path
    p = fid_protocol or protocol()
    history = [{"step": s, "epoch": s // 10, "global_step": 2 * s, "images_seen": 64 * s, "wall_seconds": s / 10,
                "metrics": {FID: fid + (40 - s)}, "protocols": {FID: p["id"]}} for s in (10, 20, 30, 40)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    summary = {"status": status, "monitor": FID, "final": {FID: fid, "step": 40}, "protocols": {FID: p},
               "best": {"metric": FID, "value": fid - 1, "step": 30, "protocol": p["id"]}}
    (path / "summary.json").write_text(json.dumps(summary))
    return path


def test_t_interval_equals_the_hand_computed_one():
    # 1, 2, 3, 4: mean 2.5, s = sqrt(5/3), t(0.975, 3) = 3.182446 -> 2.5 ± 3.182446 * s / 2
    half = 3.182446 * math.sqrt(5 / 3) / 2
    ci = interval([1, 2, 3, 4])
    assert (ci.n, ci.mean, ci.std) == (4, 2.5, pytest.approx(math.sqrt(5 / 3)))
    assert (ci.low, ci.high) == (pytest.approx(2.5 - half, abs=1e-5), pytest.approx(2.5 + half, abs=1e-5))
    assert math.isnan(interval([7.0]).low) and interval([7.0]).mean == 7.0  # one seed: no spread known
    # paired by seed: differences 2, 3, 2 -> 7/3 ± t(0.975, 2) = 4.302653 times s / sqrt(3), s = sqrt(1/3)
    d = difference({1: 10.0, 2: 12.0, 3: 11.0}, {1: 8.0, 2: 9.0, 3: 9.0})
    assert d.paired and d.resolved and d.estimate == pytest.approx(7 / 3)
    assert d.high - d.estimate == pytest.approx(4.302653 * math.sqrt(1 / 3) / math.sqrt(3), abs=1e-5)
    # other seeds: Welch's interval, as scipy's own t-test reports it
    a, b = [10.0, 12.0, 11.0], [8.0, 9.5, 9.0, 8.2]
    w = difference(dict(enumerate(a)), {10 + i: v for i, v in enumerate(b)})
    ref = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert not w.paired and (w.low, w.high) == (pytest.approx(ref.low), pytest.approx(ref.high))


def test_configuration_is_every_override_but_the_seed_and_the_output_settings():
    assert configuration(["model=gan", "seed=2", "print_config=false", "+trainer.limit_train_batches=2",
                          "logger=none", "hydra.sweep.dir=x"]) == "model=gan +trainer.limit_train_batches=2"
    assert configuration(["seed=1"]) == "(defaults)"


def test_runs_group_by_configuration_and_unfinished_runs_are_listed_not_averaged(tmp_path):
    sweep = tmp_path / "sweep"
    for job, (model, seed, fid) in enumerate([("gan", 1, 30.0), ("gan", 2, 34.0), ("cgan", 1, 20.0),
                                              ("cgan", 2, 22.0)]):
        make_run(sweep / str(job), [f"model={model}", "trainer.max_epochs=3"], seed, fid)
    make_run(sweep / "4", ["model=cgan", "trainer.max_epochs=3"], 3, 1.0, status="running")
    make_run(sweep / "5", ["model=gan", "trainer.max_epochs=3"], 3, None)  # failed before training
    runs, _ = read_runs([sweep])
    assert [r.status.split()[0] for r in runs] == ["finished"] * 4 + ["unfinished", "failed"]
    tables, mismatches = metric_tables(runs)
    assert mismatches == [] and [t.metric for t in tables] == [FID, f"best {FID}"]
    gan, cgan = tables[0].rows
    assert (gan.label, gan.seeds, gan.values) == ("model=gan", [1, 2], [30.0, 34.0])
    assert (cgan.label, cgan.stats.n, cgan.stats.mean) == ("model=cgan", 2, 21.0)  # job 4 (unfinished) left out
    (cmp,) = tables[0].comparisons
    assert cmp.diff.paired and cmp.diff.estimate == pytest.approx(11.0)
    assert "model=cgan is better" in cmp.sentence or "not resolved" in cmp.sentence


def test_values_of_other_protocols_are_never_compared(tmp_path):
    make_run(tmp_path / "a", ["model=gan"], 1, 30.0)
    make_run(tmp_path / "b", ["model=gan"], 2, 31.0)
    make_run(tmp_path / "c", ["model=gan", "metrics.fid.num_samples=500"], 1, 40.0,
             fid_protocol=protocol(num_generated=500))
    # a conditional model's labels are how it samples, not how it is measured: compared
    make_run(tmp_path / "d", ["model=cgan"], 1, 20.0, fid_protocol=protocol(conditional_labels="class frequencies"))
    runs, _ = read_runs([tmp_path / name for name in "abcd"])
    tables, mismatches = metric_tables(runs)
    fid_tables = [t for t in tables if t.metric == FID]
    assert [[row.label for row in t.rows] for t in fid_tables] == [["model=gan", "model=cgan"],
                                                                  ["model=gan metrics.fid.num_samples=500"]]
    assert fid_tables[0].sampling == ["conditional_labels"]
    assert len(mismatches) == 2  # the final and the best value
    assert f"{tmp_path / 'c'} (differing in num_generated)" in mismatches[0] and "not compared" in mismatches[0]


def test_what_is_not_a_run_fails_in_one_sentence(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(GdmError, match="neither a run directory .* nor a sweep directory"):
        read_runs([tmp_path / "empty"])
    with pytest.raises(GdmError, match="is not a directory"):
        read_runs([tmp_path / "nowhere"])
    make_run(tmp_path / "failed", ["model=gan"], 1, None)
    with pytest.raises(GdmError, match="no finished run to compare"):
        read_runs([tmp_path / "failed"])
    from helpers import compose_config

    from gdm.app import run

    with pytest.raises(GdmError, match="task=compare needs compare.runs"):
        run(compose_config(["task=compare"], tmp_path / "out"))
    with pytest.raises(GdmError, match="compare.confidence=95 is not a probability"):
        run(compose_config(["task=compare", f"compare.runs=[{tmp_path}]", "compare.confidence=95"], tmp_path / "o"))


@pytest.mark.slow
def test_report_writes_markdown_html_and_plots_and_logs_to_wandb_offline(tmp_path):
    from gdm.compare.report import Report
    from gdm.compare.tables import flat_rows
    from gdm.loggers import log_comparison

    for job, (model, seed, fid) in enumerate([("gan", 1, 30.0), ("gan", 2, 34.0), ("cgan", 1, 20.0),
                                              ("cgan", 2, 22.0)]):
        make_run(tmp_path / "sweep" / str(job), [f"model={model}"], seed, fid)
    runs, spreads = read_runs([tmp_path / "sweep"])
    tables, mismatches = metric_tables(runs)
    written = Report(runs, tables, mismatches, spreads).write(tmp_path / "report")
    md, page = written["markdown"].read_text(), written["html"].read_text()
    assert "| model=gan | 2 | 32 ± 25.41 | 2.828 | 30 |" in md  # 32 ± 12.706 * 2.828 / sqrt(2)
    assert "| **model=cgan** | 2 | 21 ± 12.71 | 1.414 | 20 |" in md
    assert md.count("![") == 1 and (tmp_path / "report" / "plots").is_dir()
    assert "http" not in page and page.count("src='data:image/png;base64,") == 1  # the plot; no grids saved
    where = log_comparison(flat_rows(tables), {"fid": written["plot0"]}, name="test", save_dir=tmp_path / "wb",
                           mode="offline")
    assert list((tmp_path / "wb" / "wandb").glob("offline-run-*/run-*.wandb")) and "offline-run" in where


# ---- end to end: a 2 x 2 sweep of tiny runs, an eval over sample seeds, the report, a browser ------------

TINY_ARGS = ["data.image_size=16", "trainer.max_epochs=1", "+trainer.limit_train_batches=2",
             "+trainer.limit_val_batches=1", "metrics.fid.num_samples=40", "print_config=false", "logger=none"]


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    from helpers import compose_config, run_py

    from gdm.app import run

    root = tmp_path_factory.mktemp("compare")
    cache = {"GDM_CACHE_DIR": str(root / "cache")}
    sweep = root / "sweep"
    proc = run_py("-m", "model=gan,cgan", "seed=1,2", *TINY_ARGS, f"hydra.sweep.dir={sweep}", env_extra=cache)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = run_py("task=eval", f"ckpt_path={sweep / '0' / 'checkpoints' / 'best.ckpt'}", "eval.sample_seeds=2",
                  "eval.num_samples=40", "eval.kid_subset_size=20", "print_config=false", "logger=none",
                  f"hydra.run.dir={root / 'eval'}", env_extra=cache)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run(compose_config(["task=compare", f"compare.runs=[{sweep},{root / 'eval'}]", "compare.wandb=disabled"],
                       root / "report"))  # in this process: one interpreter start less
    return sweep, root / "eval", root / "report"


@pytest.mark.slow
def test_report_of_a_2x2_sweep_has_the_runs_summaries(compared):
    sweep, eval_dir, report = compared
    fids = {job: json.loads((sweep / job / "summary.json").read_text())["final"][FID] for job in "0123"}
    expected = {"model=gan": interval([fids["0"], fids["1"]]), "model=cgan": interval([fids["2"], fids["3"]])}
    md = (report / "report.md").read_text()
    section = md.split(f"## {FID}\n")[1].split("\n## ")[0]
    for label, ci in expected.items():
        row = next(line for line in section.splitlines() if line.startswith(f"| {label} |")
                   or line.startswith(f"| **{label}** |"))
        assert f" 2 | {ci.mean:.4g} ± {ci.half_width:.4g} | {ci.std:.4g} |" in row
    assert "paired by seed" in section and "sampling spread of one checkpoint of model=gan" in section
    spread = json.loads((eval_dir / "eval.json").read_text())["sample_seeds"][FID.replace("val/", "test/")]
    assert spread["n"] == 2 and spread["sample_seeds"] == [0, 1] and spread["values"][0] != spread["values"][1]
    # the sweep's own summary by configuration holds the same numbers
    with (sweep / "sweep_groups.csv").open() as f:
        rows = {(r["metric"], r["configuration"].split()[0]): r for r in csv.DictReader(f)}
    assert float(rows[(FID, "model=gan")]["mean"]) == pytest.approx(expected["model=gan"].mean)
    assert float(rows[(FID, "model=cgan")]["ci_high"]) == pytest.approx(expected["model=cgan"].high)
    assert len(list((report / "plots").glob("*.png"))) >= 8


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium here (Debian: apt-get install chromium)")
def test_html_report_renders_in_headless_chromium(compared, tmp_path):
    sweep, _, report = compared
    page = (report / "report.html").resolve().as_uri()
    browser = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run([*browser, "--virtual-time-budget=10000", "--dump-dom", page], capture_output=True,
                         text=True, timeout=120).stdout
    loaded = re.search(r'<body data-images="(\d+)" data-loaded="(\d+)"', dom)
    assert loaded and int(loaded[1]) >= 10 and loaded[1] == loaded[2]  # plots and both grids decoded
    fids = [json.loads((sweep / job / "summary.json").read_text())["final"][FID] for job in "01"]
    ci = interval(fids)
    table = dom.split(f"<table class=\"metric\" data-metric=\"{FID}\">")[1].split("</table>")[0]
    assert f"{ci.mean:.4g} ± {ci.half_width:.4g}" in table
    shot = tmp_path / "report.png"
    subprocess.run([*browser, "--window-size=1300,2000", f"--screenshot={shot}", page], capture_output=True,
                   timeout=120)
    assert shot.stat().st_size > 50_000


@pytest.mark.slow
def test_a_run_given_twice_and_a_repeated_seed_are_counted_once(tmp_path, monkeypatch):
    from helpers import compose_config

    from gdm.app import run

    a = make_run(tmp_path / "a", ["model=gan"], 1, 30.0)
    make_run(tmp_path / "b", ["model=gan"], 2, 34.0)
    make_run(tmp_path / "a_again", ["model=gan"], 1, 31.0)  # one configuration, one seed, another directory
    for job, (seed, fid) in enumerate([(1, 20.0), (2, 22.0)]):
        make_run(tmp_path / "sweep" / str(job), ["model=cgan"], seed, fid)
    given = [a, a, tmp_path / "b", tmp_path / "a_again", tmp_path / "sweep", tmp_path / "sweep" / "1"]
    run(compose_config(["task=compare", f"compare.runs=[{','.join(map(str, given))}]", "compare.wandb=disabled"],
                       tmp_path / "out"))
    report = (tmp_path / "out" / "report.md").read_text()
    gan_row = next(line for line in report.splitlines() if line.startswith("| model=gan | 2 | 32 ± "))
    assert float(gan_row.split(" ± ")[1].split(" |")[0]) == pytest.approx(interval([30.0, 34.0]).half_width, rel=1e-3)
    assert "paired by seed, n = 2 and 2" in report
    assert f"- {a} was given more than once: counted once." in report
    assert f"- {tmp_path / 'sweep' / '1'} was given more than once: counted once." in report
    assert (f"- {tmp_path / 'a_again'} repeats {a} (the same configuration and seed 1), so it is not an "
            "independent sample") in report

    run(compose_config(["task=compare", f"compare.runs=[{a},{a}]", "compare.wandb=disabled"], tmp_path / "one"))
    assert "| model=gan | 1 | 30 (one seed) |" in (tmp_path / "one" / "report.md").read_text()
    # compare.wandb=auto follows the logger chosen: none with logger=none / csv, offline W&B with the default
    modes = []
    monkeypatch.setattr("gdm.tasks.compare.log_comparison", lambda *args, mode, **kw: modes.append(mode))
    for logger in ("none", "csv", "wandb"):
        run(compose_config(["task=compare", f"compare.runs=[{a}]", f"logger={logger}"], tmp_path / logger))
    assert modes == ["disabled", "disabled", "auto"]


def test_runs_of_the_same_overrides_that_ran_different_settings_are_different_configurations(tmp_path, caplog):
    """A default changed between two runs of `python run.py seed=1`: their config.yaml differ, so they are two
    configurations named by what they ran, not one seed repeated; paths inside a run's own directory and another
    task's options do not count as settings."""
    def config(ramp, run):
        return (f"model:\n  lr_g: 0.0004\n  ema_rampup_ratio: {ramp}\ntrainer:\n  default_root_dir: {run}\n"
                f"eval:\n  split: {run.name}\n")

    old = make_run(tmp_path / "old", [], 1, 30.0, config=config(0.05, tmp_path / "old"))
    new = make_run(tmp_path / "new", [], 1, 20.0, config=config(0.1, tmp_path / "new"))
    again = make_run(tmp_path / "again", [], 1, 21.0, config=config(0.1, tmp_path / "again"))
    runs, _ = read_runs([old, new, again])
    kept, notes = independent_runs(runs)
    assert [r.configuration for r in runs] == ["model.ema_rampup_ratio=0.05"] + ["model.ema_rampup_ratio=0.1"] * 2
    assert [r.dir for r in kept] == [old, new]  # `again` repeats `new`: the same settings and seed
    assert notes[0] == ("runs given as `(defaults)` ran different settings (model.ema_rampup_ratio; e.g. a default "
                        "changed between them): they are compared as separate configurations, each named with its "
                        "values.")
    assert notes[1].startswith(f"{again} repeats {new} (the same configuration and seed 1)")
    # an option renamed since is read in today's names (gdm.config_upgrades): older gdm's EMA-less GAN against
    # today's EMA; a key one run lacks (an option added since), paths and speed settings tell nothing
    a = make_run(tmp_path / "a", ["model=gan"], 2, 30.0,
                 config="model:\n  ema_decay: null\ndata:\n  num_workers: 0\n  root: /x\n")
    b = make_run(tmp_path / "b", ["model=gan"], 2, 20.0,
                 config="model:\n  ema_halflife_kimg: 20.0\n  nll_tolerance: 1.0e-5\ndata:\n  num_workers: 4\n"
                        "  root: /y\ntrainer:\n  default_root_dir: /elsewhere\n")
    with caplog.at_level(logging.INFO, logger="gdm.config_upgrades"):
        runs, _ = read_runs([a, b])
    assert f"{a} has a config of older gdm: model.ema_decay read as model.ema_halflife_kimg=None" in caplog.text
    independent_runs(runs)
    assert [r.configuration for r in runs] == ["model=gan model.ema_halflife_kimg=null",
                                               "model=gan model.ema_halflife_kimg=20.0"]
    c = make_run(tmp_path / "c", ["model=gan"], 3, 20.0, config="data:\n  num_workers: 2\n  root: /z\n")
    runs, _ = read_runs([b, c])
    assert independent_runs(runs)[1] == [] and {r.configuration for r in runs} == {"model=gan"}
    d = make_run(tmp_path / "d", ["model=gan"], 4, 20.0)
    (d / "config.yaml").write_text("- not a mapping\n")  # read as no settings, not a crash
    assert read_runs([tmp_path / "d"])[0][0].settings == {}


@pytest.mark.slow
def test_a_sweep_summary_counts_jobs_of_one_configuration_and_seed_once(tmp_path):
    from omegaconf import OmegaConf

    from gdm.tasks.sweep_summary import SweepSummary

    sweep = tmp_path / "sweep"
    jobs = [make_run(sweep / str(job), ["model.loss=hinge"], seed, fid)  # `-m model.loss=hinge,hinge seed=1,1,2`
            for job, (seed, fid) in enumerate([(1, 30.0), (1, 31.0), (2, 34.0)])]
    SweepSummary.write_groups(OmegaConf.create({}), sweep, jobs)
    rows = list(csv.DictReader((sweep / "sweep_groups.csv").open()))
    final = next(r for r in rows if r["metric"] == FID)
    assert (final["n"], final["seeds"], float(final["mean"])) == ("2", "1 2", 32.0)
    assert f"{jobs[1]} repeats {jobs[0]} (the same configuration and seed 1)" in (sweep / "sweep_groups.md").read_text()


def test_a_run_refused_before_training_keeps_the_seed_it_was_given(tmp_path):
    """A refused run writes no config.yaml: its seed, listed beside its failure, is the composed config's."""
    from gdm.compare.runs import read_run

    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- data.batch_size=5000\n")
    (tmp_path / ".hydra" / "config.yaml").write_text("seed: 42\ntask: train\n")
    run = read_run(tmp_path)
    assert (run.seed, run.finished, run.configuration) == (42, False, "data.batch_size=5000")
