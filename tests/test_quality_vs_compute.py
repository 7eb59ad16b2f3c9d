"""Quality against compute: every sample metric records how its samples were drawn (sampler, steps, NFE) and
what drawing them cost (seconds per 1,000 samples, the device), the cost stays out of the protocol id, task=eval
evaluates a checkpoint once per sampling budget, a one-pass model refuses a budget, and task=compare draws the
metrics against NFE and time."""

from __future__ import annotations

import json
import logging
from functools import partial
from itertools import count
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from gdm.data.digits import DigitsDataModule
from gdm.errors import GdmError
from gdm.evaluation.context import (
    Evaluation,
    SamplingClock,
    describe,
    measurement_id,
    protocol_id,
    with_id,
)
from gdm.evaluation.real_features import RealFeatureCache
from gdm.metrics.features import build_features
from gdm.metrics.sample_quality import COST, SampleQuality
from gdm.models.base import Samples, latent_noise
from gdm.tasks.evaluate import budget_line, budget_records, evaluate_budgets, sampling_budgets, set_sampling


class Iterative(Samples, L.LightningModule):
    """A fake iterative sampler: `steps` passes of a tiny net over each sample's seeded noise."""

    def __init__(self, steps: int = 4):
        super().__init__()
        self.steps, self.passes = steps, 0
        self.net = nn.Linear(256, 256)
        with torch.no_grad():
            self.net.weight.copy_(torch.eye(256) * 0.9)
            self.net.bias.zero_()

    def generate(self, indices, seed=0, labels=None):
        x = latent_noise(indices, 256, seed)
        for _ in range(self.steps):
            x = torch.tanh(self.net(x))
            self.passes += len(x)
        return x.view(-1, 1, 16, 16)

    def set_sampling(self, sampler=None, steps=None):
        if sampler not in (None, "euler"):
            raise GdmError(f"sampler={sampler} is not a sampler of Iterative: use euler.")
        if steps is not None:
            self.steps = steps

    def sampling_protocol(self):
        return {"sampler": "euler", "steps": self.steps, "nfe": self.steps}


class Splits:
    def __init__(self, dataset):
        self.dataset = dataset

    def split(self, name):
        return self.dataset


@pytest.fixture(scope="module")
def real():
    return DigitsDataModule(image_size=16).split("val")


def evaluation(real, model, **kwargs) -> Evaluation:
    return Evaluation(model=model, data=Splits(real), features=build_features("digits"),
                      cache=RealFeatureCache(None), device=torch.device("cpu"), **kwargs)


LEAN = {"num_samples": 20, "real_split": "val", "precision_recall_k": None, "density_coverage_k": None,
        "copies": False, "nearest_samples": 0}


# ---- the protocol records the sampling and its cost -------------------------------------------------------

def test_protocol_records_sampler_steps_nfe_and_the_cost_of_the_generate_calls_alone(real, monkeypatch):
    ticks = count()
    monkeypatch.setattr("gdm.evaluation.context.time.perf_counter", lambda: float(next(ticks)))
    model = Iterative(steps=3)
    result = SampleQuality(**LEAN)(evaluation(real, model, batch_size=8))
    fid = result.protocols["val/fid_digits"]
    assert fid["sampling"] == {"sampler": "euler", "steps": 3, "nfe": 3} and model.passes == 20 * 3
    # each generate call reads the clock twice (1 s apart here): 3 batches of 8 = 3 s for 20 samples
    assert fid["sampling_cost"]["seconds_per_1000"] == pytest.approx(150.0)
    assert result.values[COST] == pytest.approx(150.0)
    assert fid["sampling_cost"]["device"].startswith("cpu") and "threads" in fid["sampling_cost"]["device"]
    assert result.protocols[COST]["device"] == fid["sampling_cost"]["device"]
    assert "sampler euler, 3 steps, NFE 3" in describe(fid)


def test_cost_is_kept_out_of_the_protocol_id_and_the_sampling_out_of_the_measurement_id():
    base = {"metric": "fid", "num_generated": 20, "sampling": {"sampler": "euler", "steps": 3, "nfe": 3},
            "sampling_cost": {"seconds_per_1000": 1.5, "device": "cpu"}}
    other_machine = {**base, "sampling_cost": {"seconds_per_1000": 9.0, "device": "NVIDIA H100"}}
    assert with_id(base)["id"] == with_id(other_machine)["id"]
    more_steps = {**base, "sampling": {"sampler": "euler", "steps": 8, "nfe": 8}}
    assert protocol_id(base) != protocol_id(more_steps)  # another measurement of the model...
    assert measurement_id(base) == measurement_id(more_steps)  # ...with the same metric
    assert measurement_id(base) != measurement_id({**base, "num_generated": 40})
    # an adaptive solver's NFE is a float it measured: two evaluations keep one id
    adaptive = {**base, "sampling": {"sampler": "dopri5", "nfe": 86.25}}
    assert protocol_id(adaptive) == protocol_id({**base, "sampling": {"sampler": "dopri5", "nfe": 92.5}})
    assert protocol_id(adaptive) != protocol_id({**base, "sampling": {"sampler": "euler", "nfe": 86.25}})


def test_under_ddp_the_cost_is_the_slowest_process():
    model = Iterative()
    gathered = []

    def all_gather(t):
        gathered.append(t)
        return torch.stack([t, t * 3])  # rank 1 took three times as long

    ev = Evaluation(model=model, data=None, features=nn.Identity(), cache=RealFeatureCache(None),
                    device=torch.device("cpu"), rank=0, world_size=2, all_gather=all_gather)
    assert ev.slowest(2.0) == 6.0 and len(gathered) == 1


def test_the_clock_times_the_call_it_wraps(monkeypatch):
    ticks = iter([10.0, 12.5, 20.0, 21.0])
    monkeypatch.setattr("gdm.evaluation.context.time.perf_counter", lambda: next(ticks))
    clock = SamplingClock(torch.device("cpu"))
    out = clock(lambda x: x * 2, torch.ones(2))
    clock(lambda: None)
    assert out.tolist() == [2.0, 2.0] and clock.seconds == 3.5


# ---- task=eval: budgets -----------------------------------------------------------------------------------

class FakeEvaluator:
    """What an Evaluator keeps after one evaluation: final values and their protocols."""

    def __init__(self, model: Iterative, seed_offset: int):
        sampling = model.sampling_protocol()
        fid = 100.0 / model.steps + seed_offset
        self.final = {"val/fid_digits": fid, COST: 10.0 * model.steps, "step": 7}
        self.protocols = {"val/fid_digits": {"metric": "fid", "num_generated": 20, "real_split": "test",
                                             "sampling": sampling, "sample_seed": seed_offset},
                          COST: {"metric": "sample_seconds_per_1000", "sampling": sampling}}


def test_eval_steps_list_evaluates_once_per_budget_and_sample_seed():
    model = Iterative(steps=16)
    opts = OmegaConf.create({"steps": [1, 2, 4], "sampler": None})
    offset = {"seed": 0}
    calls = []

    def evaluate_once(first):
        calls.append((model.steps, offset["seed"], first))
        return FakeEvaluator(model, offset["seed"])

    def shift(by):
        offset["seed"] += by

    per_budget = evaluate_budgets(model, None, sampling_budgets([1, 2, 4]), 2, evaluate_once, shift, opts)
    assert calls == [(1, 0, True), (1, 1, False), (2, 0, False), (2, 1, False), (4, 0, False), (4, 1, False)]
    assert offset["seed"] == 0  # back to the first sample seed
    records = budget_records(per_budget, [1, 2, 4], {"val/fid_digits": "test/fid_digits"})
    assert [(r["steps"], r["sampler"], r["nfe"], r["seconds_per_1000"]) for r in records] == [
        (1, "euler", 1, 10.0), (2, "euler", 2, 20.0), (4, "euler", 4, 40.0)]
    assert records[1]["metrics"] == {"test/fid_digits": 50.0, COST: 20.0}  # the first sample seed's
    spread = records[2]["sample_seeds"]["test/fid_digits"]
    assert spread["values"] == [25.0, 26.0] and spread["mean"] == 25.5 and spread["sample_seeds"] == [0, 1]
    assert sampling_budgets(8) == [8] and sampling_budgets(None) == [None]
    with pytest.raises(GdmError, match=r"^eval\.steps=\[4, 8, 4\] repeats a budget: give each number of steps once\.$"):
        sampling_budgets([4, 8, 4])
    assert budget_line(records[2]) == "  steps 4: euler, NFE 4, 40 s per 1,000 samples; test/fid_digits 25"


def make_gan():
    from gdm.models.gan import GAN
    from gdm.nets.dcgan import DCGANDiscriminator, DCGANGenerator

    return GAN((1, 16, 16), generator=partial(DCGANGenerator, ngf=8),
               discriminator=partial(DCGANDiscriminator, ndf=8), latent_dim=8)


def test_a_gan_refuses_eval_steps_in_one_sentence():
    opts = OmegaConf.create({"steps": [1, 2], "sampler": None})
    with pytest.raises(GdmError) as err:
        set_sampling(make_gan(), None, sampling_budgets([1, 2])[0], opts)
    assert str(err.value) == ("eval.steps=1: GAN draws each sample in one forward pass, with no sampler or steps to "
                              "choose; drop the option (it applies to model=diffusion and model=flow).")
    set_sampling(make_gan(), None, None, opts)  # nothing asked: nothing refused
    model = Iterative()
    with pytest.raises(GdmError, match=r"^eval\.sampler=heun is not a sampler of Iterative: use euler\.$"):
        set_sampling(model, "heun", 2, OmegaConf.create({"steps": 2, "sampler": "heun"}))


@pytest.mark.slow
def test_task_eval_and_sample_of_a_gan_refuse_steps_before_drawing(tmp_path, caplog):
    from helpers import TINY, compose_config, compose_typed

    from gdm.app import run

    run_dir = tmp_path / "gan"
    run(compose_config(["data.image_size=16", *TINY, "logger=none", "test_after_fit=false"], run_dir))
    out = tmp_path / "eval"
    with pytest.raises(GdmError, match=r"^eval\.steps=2: GAN draws each sample in one forward pass"):
        run(compose_typed(["task=eval", "print_config=false", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
                           "eval.steps=[2,4]"], out))
    assert not (out / "eval.json").exists()
    run(compose_typed(["task=eval", "print_config=false", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
                       "eval.num_samples=40"], out))
    report = json.loads((out / "eval.json").read_text())
    fid = report["protocols"]["test/fid_digits"]
    assert fid["sampling"] == {"sampler": "one forward pass", "nfe": 1}
    seconds = report["metrics"]["test/sample_seconds_per_1000"]  # named by the split, as every eval value
    assert seconds == fid["sampling_cost"]["seconds_per_1000"] > 0
    assert report["names_in_training"]["test/sample_seconds_per_1000"] == COST
    assert report["eval_options"]["steps"] is None and report["eval_options"]["sample_seeds"] == 1
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    with pytest.raises(GdmError, match=r"^sample\.sampler=heun, sample\.steps=4: GAN draws each sample in one"):
        run(compose_typed(["task=sample", f"ckpt_path={ckpt}", "sample.sampler=heun", "sample.steps=4"],
                          tmp_path / "sample"))
    with caplog.at_level(logging.INFO, logger="gdm.tasks.sample"):
        run(compose_typed(["task=sample", f"ckpt_path={ckpt}", "+sample.n=4"], tmp_path / "sample"))
    assert "sampling: one forward pass, NFE 1" in caplog.text


@pytest.mark.slow
def test_an_adaptive_solver_refuses_a_list_of_steps_and_records_its_mean_nfe(tmp_path):
    from helpers import TINY, TINY_ITERATIVE, compose_config, compose_typed

    from gdm.app import run

    run_dir = tmp_path / "flow"
    run(compose_config(["model=flow", *TINY_ITERATIVE, *TINY, "logger=none", "test_after_fit=false"], run_dir))
    ckpt = f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"
    with pytest.raises(GdmError, match=r"^eval\.steps=\[1, 2\] has no effect: sampler dopri5 chooses its own steps "):
        run(compose_typed(["task=eval", "print_config=false", ckpt, "eval.sampler=dopri5", "eval.steps=[1,2]"],
                          tmp_path / "refused"))
    for task in ("eval", "sample"):  # one number of steps would change nothing either
        with pytest.raises(GdmError, match=rf"^{task}\.steps=5 has no effect: sampler dopri5 chooses its own steps .*: "
                                           rf"drop {task}\.steps, or give a fixed-step sampler \({task}\.sampler="):
            run(compose_typed([f"task={task}", "print_config=false", ckpt, f"{task}.sampler=dopri5", f"{task}.steps=5"],
                              tmp_path / f"refused_{task}"))
    run(compose_typed(["task=eval", "print_config=false", ckpt, "eval.sampler=dopri5", "eval.num_samples=40",
                       "metrics.batch_size=16", "eval.nll_tolerance=0.01"], tmp_path / "eval"))
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["protocols"]["test/fid_digits"]["sampling"]["nfe"] > 6  # measured, the mean per sample
    assert report["monitor"] == "test/fid_digits"  # the checkpoint's val/fid_digits, as this evaluation names it
    nll = report["protocols"]["test/nll_bpd"]  # solved to the tolerance asked for, as its protocol says
    assert (nll["estimator"]["atol"], nll["estimator"]["rtol"]) == (0.01, 0.01)
    assert report["metrics"]["test/nll_bpd"] > 0
    # the tolerance changes the likelihood alone: recorded in its protocol and the report, not in the FID's
    assert nll["changed_from_checkpoint"] == report["changed_from_checkpoint"] == ["nll_tolerance: 0.001 -> 0.01"]
    assert "changed_from_checkpoint" not in report["protocols"]["test/fid_digits"]
    # a test loop of no batch: evaluated without the test values, no traceback
    run(compose_typed(["task=eval", "print_config=false", ckpt, "eval.num_samples=40", "metrics.batch_size=16",
                       "++trainer.limit_test_batches=0"], tmp_path / "no_test"))
    report = json.loads((tmp_path / "no_test" / "eval.json").read_text())
    assert "test/fid_digits" in report["metrics"] and "test/nll_bpd" not in report["metrics"]


@pytest.mark.parametrize("limit", ["0", "0.0"])
def test_task_eval_refuses_a_validation_loop_of_no_batch(tmp_path, limit):
    """The sample metrics are computed in the validation loop: with none, task=eval would evaluate nothing."""
    from helpers import compose_typed

    from gdm.app import run

    with pytest.raises(GdmError, match=r"^trainer\.limit_val_batches=0 skips the validation loop, where "
                                       r"task=eval computes every metric of the samples"):
        run(compose_typed(["task=eval", "print_config=false", "ckpt_path=/nonexistent/last.ckpt",
                           f"++trainer.limit_val_batches={limit}"], tmp_path))


def test_a_changed_setting_is_recorded_in_the_protocols_of_the_metrics_it_changes():
    from gdm.tasks.evaluate import changes_to

    changed = ["nll_tolerance: 1e-05 -> 0.001", "guidance: 1.0 -> 2.0"]
    assert changes_to("test/nll_bpd", changed) == changes_to("test/nll", changed) == changed
    assert changes_to("val/fid_digits", changed) == changes_to("val/loss", changed) == ["guidance: 1.0 -> 2.0"]
    assert changes_to("val/loss", changed[:1]) == []


def test_eval_nll_tolerance_is_refused_for_a_model_without_a_likelihood():
    from gdm.models.diffusion import Diffusion
    from gdm.nets.unet import UNet
    from gdm.tasks.evaluate import set_nll_tolerance

    ddpm = Diffusion((1, 8, 8), partial(UNet, channels=8, channel_mult=[1], patch_size=1), formulation="ddpm",
                     train_timesteps=10)
    saved = {"hyper_parameters": {"nll_tolerance": 1e-5}}
    with pytest.raises(GdmError) as err:
        set_nll_tolerance(ddpm, 0.001, saved, [])
    assert str(err.value) == ("eval.nll_tolerance=0.001 sets the solver of the probability-flow ODE behind "
                              "test/nll_bpd, and this checkpoint's Diffusion with formulation=ddpm has no "
                              "probability-flow ODE to solve: drop it.")
    edm = Diffusion((1, 8, 8), partial(UNet, channels=8, channel_mult=[1], patch_size=1))
    # what ran is recorded: the checkpoint's tolerance -> eval's (a model.nll_tolerance entry replaced)
    changed = set_nll_tolerance(edm, 0.001, saved, ["nll_tolerance: 1e-05 -> 0.01", "guidance: 1.0 -> 2.0"])
    assert changed == ["guidance: 1.0 -> 2.0", "nll_tolerance: 1e-05 -> 0.001"]
    assert edm.nll_tolerance == 0.001 and edm.test_protocol()["estimator"]["atol"] == 0.001
    assert set_nll_tolerance(edm, 1e-5, saved, []) == []  # the checkpoint's own: nothing changed


# ---- task=compare: the metrics against NFE and time ---------------------------------------------------------

FID = "val/fid_digits"
DEVICE = "cpu (x86_64), 2 threads"


def fid_protocol(sampling: dict, seconds: float) -> dict:
    p = {"metric": "fid", "features": {"name": "digits"}, "num_generated": 40, "real_split": "train",
         "sample_seed": 0, "conditional_labels": None, "sampling": sampling}
    return {**p, "id": protocol_id(p), "sampling_cost": {"seconds_per_1000": seconds, "device": DEVICE}}


def cost_protocol(sampling: dict) -> dict:
    p = {"metric": "sample_seconds_per_1000", "num_generated": 40, "sampling": sampling, "device": DEVICE}
    return {**p, "id": protocol_id(p)}


def make_run(path, family: str, seed: int, fid: float, sampling: dict, seconds: float):
    """A finished run directory as training leaves it, of a model class `family` (gdm.models.<lower>.<family>)."""
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text(f"- model={family.lower()}\n- seed={seed}\n")
    (path / "config.yaml").write_text(f"seed: {seed}\nmodel:\n  _target_: gdm.models.{family.lower()}.{family}\n")
    protocols = {FID: fid_protocol(sampling, seconds), COST: cost_protocol(sampling)}
    summary = {"status": "finished", "monitor": FID, "final": {FID: fid, COST: seconds, "step": 40},
               "protocols": protocols}
    (path / "summary.json").write_text(json.dumps(summary))
    return path


def make_budgets(path, run_dir, fids: dict[int, float]):
    """A task=eval directory of `run_dir`'s checkpoint at budgets {steps: FID} (euler: NFE = steps, 10 s per step)."""
    path.mkdir(parents=True)
    first = min(fids)
    sampling = {"sampler": "euler", "steps": first, "nfe": first}
    report = {"checkpoint": str(run_dir / "checkpoints" / "last.ckpt"), "model": "Diffusion",
              "metrics": {"train/fid_digits": fids[first]},
              "protocols": {"train/fid_digits": fid_protocol(sampling, 10.0 * first)},
              "names_in_training": {"train/fid_digits": FID, "train/sample_seconds_per_1000": COST},
              "budgets": [{"steps": s, "sampler": "euler", "nfe": s, "seconds_per_1000": 10.0 * s,
                           "metrics": {"train/fid_digits": f, "train/sample_seconds_per_1000": 10.0 * s}}
                          for s, f in fids.items()]}
    (path / "eval.json").write_text(json.dumps(report))
    return path


@pytest.fixture
def mixed(tmp_path):
    """GAN (2 seeds, NFE 1) and a diffusion model (2 seeds: final at 32 steps, evaluated at 1, 4 and 16)."""
    one_pass = {"sampler": "one forward pass", "nfe": 1}
    paths = [make_run(tmp_path / f"gan{s}", "GAN", s, fid, one_pass, 2.0) for s, fid in ((1, 30.0), (2, 32.0))]
    for s, final, budgets in ((1, 18.0, {1: 120.0, 4: 40.0, 16: 20.0}), (2, 20.0, {1: 124.0, 4: 44.0, 16: 22.0})):
        run_dir = make_run(tmp_path / f"diffusion{s}", "Diffusion", s, final,
                           {"sampler": "euler", "steps": 32, "nfe": 32}, 320.0)
        paths += [run_dir, make_budgets(tmp_path / f"eval{s}", run_dir, budgets)]
    return paths


def test_budgets_are_read_from_runs_and_eval_directories_and_averaged_over_seeds(mixed):
    from gdm.compare import cost
    from gdm.compare.runs import read_runs

    runs, spreads = read_runs(mixed)
    assert spreads == [] and [r.family for r in runs] == ["GAN", "GAN", "Diffusion", "Diffusion"]
    budgets = cost.read_budgets(runs, mixed)
    assert cost.families(budgets, runs) == ["GAN", "Diffusion"]
    ((protocol, (gan, diffusion)),) = cost.lines(budgets, FID)  # one measurement protocol: one plot
    assert protocol["sampling"]["nfe"] == 1 and (gan.configuration, gan.family) == ("model=gan", "GAN")
    (point,) = gan.points  # a one-pass family: a single point
    assert (point.nfe, point.seconds_per_1000, point.stats.n, point.stats.mean) == (1.0, 2.0, 2, 31.0)
    assert [(p.steps, p.nfe, p.seconds_per_1000, p.stats.mean) for p in diffusion.points] == [
        (1, 1.0, 10.0, 122.0), (4, 4.0, 40.0, 42.0), (16, 16.0, 160.0, 21.0), (32, 32.0, 320.0, 19.0)]
    # 2 seeds: t(0.975, 1) = 12.706 times std / sqrt(2) = |a - b| / 2
    assert diffusion.points[0].stats.half_width == pytest.approx(12.7062 * 4 / 2, rel=1e-4)
    # the run's own budget evaluated again (same seed, same steps) is one sample, not two
    again = make_budgets(mixed[3].parent / "again", mixed[2], {32: 99.0})
    ((_, (_, diffusion)),) = cost.lines(cost.read_budgets(runs, [*mixed, again]), FID)
    assert [(p.steps, p.stats.n, p.stats.mean) for p in diffusion.points][-1] == (32, 2, 19.0)


def test_compare_puts_quality_against_compute_first_when_the_families_differ(mixed, tmp_path):
    from helpers import compose_config

    from gdm.app import run

    out = tmp_path / "report"
    run(compose_config(["task=compare", f"compare.runs=[{','.join(map(str, mixed))}]", "compare.wandb=disabled"],
                       out))
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert md.index("## Quality against compute") < md.index("## Runs") < md.index(f"## {FID}")
    assert f"timed on {DEVICE}" in md and "family: GAN, Diffusion" in md
    assert "| model=gan | GAN | one forward pass |  | 1 | 2 | 2 | 31 ± 12.71 |" in md
    assert "| model=diffusion | Diffusion | euler | 4 | 4 | 40 | 2 | 42 ± 25.41 |" in md
    assert "| model=diffusion | Diffusion | euler | 32 | 32 | 320 | 2 | 19 ± 12.71 |" in md
    assert "![val/fid_digits against compute](plots/cost_00_val_fid_digits.png)" in md
    assert (out / "plots" / "cost_00_val_fid_digits.png").stat().st_size > 10_000
    assert page.index("Quality against compute") < page.index("<h2>Runs</h2>")
    assert page.count("class='plot cost'") == 1


def test_one_family_at_one_budget_keeps_the_report_as_it_was(mixed, tmp_path):
    from gdm.compare.cost import read_budgets
    from gdm.compare.report import Report
    from gdm.compare.runs import read_runs
    from gdm.compare.tables import metric_tables

    gans = mixed[:2]
    runs, spreads = read_runs(gans)
    tables, mismatches = metric_tables(runs)
    md = Report(runs, tables, mismatches, spreads, budgets=read_budgets(runs, gans)).write(tmp_path / "a")
    assert "Quality against compute" not in md["markdown"].read_text() and "cost0" not in md
    # one family at several budgets: drawn after the tables
    diffusion = mixed[2:]
    runs, spreads = read_runs(diffusion)
    tables, mismatches = metric_tables(runs)
    text = Report(runs, tables, mismatches, spreads,
                  budgets=read_budgets(runs, diffusion)).write(tmp_path / "b")["markdown"].read_text()
    assert text.index(f"## {FID}") < text.index("## Quality against compute") < text.index("## Last sample grids")


def test_a_sweep_over_sampling_steps_measures_one_metric(tmp_path):
    from gdm.compare.tables import metric_tables
    from gdm.tasks.sweep_summary import protocol_mismatch

    rows = []
    for job, steps in enumerate((4, 16)):
        sampling = {"sampler": "euler", "steps": steps, "nfe": steps}
        run_dir = make_run(tmp_path / str(job), "Diffusion", 1 + job, 30.0 - job, sampling, 10.0 * steps)
        rows.append({"job": str(job), "dir": str(run_dir), "metric": FID,
                     "protocol": fid_protocol(sampling, 1.0)["id"]})
    assert rows[0]["protocol"] != rows[1]["protocol"] and protocol_mismatch(tmp_path, rows) is None
    from gdm.compare.runs import read_runs

    tables, mismatches = metric_tables(read_runs([tmp_path / "0", tmp_path / "1"])[0])
    assert mismatches == [] and tables[0].sampling == ["sampling"]


# ---- task=compare: likelihoods of different families in one column -----------------------------------------------

def test_a_vaes_and_a_flows_bits_per_dimension_share_one_table(tmp_path):
    """The Gaussian VAE's IWAE bound and the flow's ODE likelihood are bits per dimension of the same dequantized
    test images: their protocols differ only in the model's estimator, so task=compare compares them."""
    from helpers import compose_config

    from gdm.app import run
    from gdm.evaluation.context import with_id
    from gdm.likelihoods import Gaussian
    from gdm.models.flow import Flow
    from gdm.models.vae import VAE

    vae_protocol = VAE.test_protocol(type("V", (), {"iwae_k": 100, "likelihood": Gaussian()})())
    flow_protocol = Flow((2,), lambda **_: nn.Linear(2, 2)).test_protocol()
    paths = []
    for family, protocol, values in (("VAE", vae_protocol, (4.6, 4.7)), ("Flow", flow_protocol, (2.8, 2.9))):
        for seed, value in zip((1, 2), values):
            path = make_run(tmp_path / f"{family}{seed}", family, seed, 50.0, {"sampler": "x", "nfe": 1}, 1.0)
            summary = json.loads((path / "summary.json").read_text())
            summary["test"] = {"test/nll_bpd": value}
            summary["protocols"]["test/nll_bpd"] = with_id({"metric": "nll_bpd", "split": "test", "num_real": 180,
                                                           **protocol})
            (path / "summary.json").write_text(json.dumps(summary))
            paths.append(path)
    out = tmp_path / "report"
    run(compose_config(["task=compare", f"compare.runs=[{','.join(map(str, paths))}]", "compare.wandb=disabled"],
                       out))
    md = (out / "report.md").read_text()
    section = md[md.index("## test/nll_bpd"):]
    section = section[:section.index("\n## ", 4)]
    assert "| model=vae | 2 | 4.65 ± 0.6353 |" in section and "| **model=flow** | 2 | 2.85 ± 0.6353 |" in section
    assert "protocols differ in estimator: how each model produces what is measured" in section
    # the header says what the rows share, not the first row's estimator
    from gdm.evaluation.context import measurement_id

    shared = {"metric": "nll_bpd", "split": "test", "num_real": 180, **flow_protocol}
    assert (f"Protocol: num_real 180, split test [protocol measurement {measurement_id(shared)}]; estimator: per "
            "configuration. Lower is better.") in section
    assert "dopri5" not in section.split("\n")[2]
    assert "test/nll_bpd: model=vae − model=flow = 1.8, 95% CI [1.8, 1.8]" in section  # compared: one table
    assert md.count("## test/nll_bpd") == 1


def make_evaluation(path, run_dir, split: str, fid: float, overrides: tuple[str, ...] = (),
                    checkpoint: str = "last.ckpt"):
    """A task=eval directory of one evaluation of `run_dir`'s `checkpoint` against the `split` images (training
    measured against train's)."""
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in ("task=eval", *overrides)))
    sampling = {"sampler": "euler", "steps": 8, "nfe": 8}
    name = f"{split}/fid_digits"
    protocol = {**fid_protocol(sampling, 80.0), "real_split": split}
    report = {"checkpoint": str(run_dir / "checkpoints" / checkpoint), "model": "Diffusion", "split": split,
              "metrics": {name: fid, f"{split}/sample_seconds_per_1000": 80.0},
              "protocols": {name: protocol, f"{split}/sample_seconds_per_1000": cost_protocol(sampling)},
              "names_in_training": {name: FID, f"{split}/sample_seconds_per_1000": COST}, "trained_split": "train"}
    (path / "eval.json").write_text(json.dumps(report))
    return path


def test_evaluations_of_one_budget_are_rows_under_the_names_task_eval_gave_them(tmp_path):
    """task=compare of task=eval directories alone: each is a row (its configuration the training run's, then
    how it evaluated), pooled over the training seeds; a test-split FID is not titled val/ in the plots."""
    from gdm.compare import cost
    from gdm.compare.runs import independent_runs, read_runs
    from gdm.compare.tables import metric_tables

    paths = []
    for seed, fids in ((1, (50.0, 52.0)), (2, (54.0, 57.0))):
        run_dir = make_run(tmp_path / f"run{seed}", "Diffusion", seed, 40.0, {"sampler": "euler", "nfe": 8}, 80.0)
        paths += [make_evaluation(tmp_path / f"dpm{seed}", run_dir, "test", fids[0]),
                  make_evaluation(tmp_path / f"heun{seed}", run_dir, "test", fids[1], ("eval.sampler=heun",))]
    runs, _ = independent_runs(read_runs(paths)[0])
    dpm = "model=diffusion task=eval eval.split=test"
    assert [(r.configuration, r.seed) for r in runs] == [
        (dpm, 1), (f"{dpm} eval.sampler=heun", 1), (dpm, 2), (f"{dpm} eval.sampler=heun", 2)]
    (table,) = [t for t in metric_tables(runs)[0] if t.metric == "test/fid_digits"]
    assert [(row.values, row.stats.mean) for row in table.rows] == [
        ([50.0, 54.0], 52.0), ([52.0, 57.0], 54.5)]
    budgets = cost.read_budgets(runs, paths)
    assert len(budgets) == 4  # one per eval directory, none twice through its row
    assert all(set(b.values) == {"test/fid_digits"} for b in budgets)  # not val/: another split than training's


def test_evaluations_of_a_runs_best_and_last_checkpoints_are_two_models_not_two_repeats(tmp_path):
    """best.ckpt and last.ckpt of one run are different models: two rows and two lines, each with its seed once,
    not one configuration whose seed repeats (the second dropped as a repeat, or pooled beside the first as if
    another seed). last.ckpt lines up with the run's own final values."""
    from gdm.compare import cost
    from gdm.compare.runs import independent_runs, read_runs
    from gdm.compare.tables import metric_tables

    paths = []
    for seed, (last, best) in ((1, (50.0, 45.0)), (2, (54.0, 47.0))):
        run_dir = make_run(tmp_path / f"run{seed}", "Diffusion", seed, 40.0, {"sampler": "euler", "nfe": 8}, 80.0)
        paths += [make_evaluation(tmp_path / f"last{seed}", run_dir, "test", last),
                  make_evaluation(tmp_path / f"best{seed}", run_dir, "test", best, checkpoint="best.ckpt")]
    runs, notes = independent_runs(read_runs(paths)[0])
    assert notes == []
    last = "model=diffusion task=eval eval.split=test"
    assert [(r.configuration, r.seed) for r in runs] == [
        (last, 1), (f"model=diffusion ckpt=best.ckpt {last.split(' ', 1)[1]}", 1), (last, 2),
        (f"model=diffusion ckpt=best.ckpt {last.split(' ', 1)[1]}", 2)]
    (table,) = [t for t in metric_tables(runs)[0] if t.metric == "test/fid_digits"]
    assert [(row.seeds, row.values, row.stats.mean) for row in table.rows] == [
        ([1, 2], [50.0, 54.0], 52.0), ([1, 2], [45.0, 47.0], 46.0)]
    (drawn,) = cost.lines(cost.read_budgets(runs, paths), "test/fid_digits")
    assert sorted(len(line.points) for line in drawn[1]) == [1, 1]
    assert sorted(line.points[0].stats.mean for line in drawn[1]) == [46.0, 52.0]


def test_a_configuration_with_only_the_shared_overrides_is_labelled_in_full_not_as_the_defaults():
    from gdm.compare.runs import Run
    from gdm.compare.tables import labels

    runs = [Run(Path("a"), "model=flow", 1, "finished"), Run(Path("b"), "model=flow model.steps=8", 1, "finished")]
    assert labels(runs) == ({"model=flow": "model=flow", "model=flow model.steps=8": "model.steps=8"}, "model=flow")
    runs = [Run(Path("a"), "(defaults)", 1, "finished"), Run(Path("b"), "model=flow", 1, "finished")]
    assert labels(runs)[0] == {"(defaults)": "(defaults)", "model=flow": "model=flow"}


def test_an_evaluation_against_trainings_split_lines_up_with_the_runs(tmp_path):
    from gdm.compare import cost

    run_dir = make_run(tmp_path / "run", "Diffusion", 1, 40.0, {"sampler": "euler", "nfe": 8}, 80.0)
    (budget,) = cost.eval_budgets(make_evaluation(tmp_path / "eval", run_dir, "train", 41.0))
    assert budget.values == {FID: 41.0} and budget.seconds_per_1000 == 80.0


def test_a_sweep_of_evaluations_is_read_as_its_evaluations(tmp_path):
    """`python run.py -m task=eval ckpt_path=A,B` leaves a sweep directory of task=eval jobs: task=compare reads
    each job as the evaluation it is (a failed job as failed), not as a training run without summary.json."""
    from gdm.compare.runs import independent_runs, read_runs

    sweep = tmp_path / "sweep"
    for job, seed, fid in (("0", 1, 50.0), ("1", 2, 54.0)):
        run_dir = make_run(tmp_path / f"run{seed}", "Diffusion", seed, 40.0, {"sampler": "euler", "nfe": 8}, 80.0)
        make_evaluation(sweep / job, run_dir, "test", fid)
    (sweep / "2" / ".hydra").mkdir(parents=True)  # a job that stopped before its eval.json
    runs, _ = read_runs([sweep])
    assert [(r.seed, r.status) for r in runs] == [
        (1, "finished"), (2, "finished"), (None, "failed (no summary.json: see its log)")]
    kept, _ = independent_runs(runs)
    assert [r.values["test/fid_digits"] for r in kept if r.finished] == [50.0, 54.0]
