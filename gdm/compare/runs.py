"""Runs to compare, read from their directories (no W&B needed): run directories, sweep directories (their
job sub-directories), and task=eval directories: with several sample seeds (the sampling spread), at several
sampling budgets (drawn against compute, `gdm.compare.cost`), or of one evaluation (a row of the tables, under
the names task=eval gave its values: `read_evaluation`).

A run's configuration is its command-line overrides (`.hydra/overrides.yaml`) except the seed and the keys
that do not change what is trained or measured (`gdm.multirun.configuration`), so the seeds of one
configuration group together across sweeps; where runs with the same overrides ran different settings (their
`config.yaml` differ, e.g. a default changed between them), the settings that differ join their configuration.
Its values are those of its final evaluation (`summary.json`
"final") plus the best value of its monitored metric ("best <metric>"), each with its protocol; its history
is `metrics.jsonl`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gdm.config_upgrades import upgrade_config
from gdm.errors import GdmError
from gdm.multirun import configuration, override_key

GRID = "samples_last.png"
LAST_CHECKPOINT = "last.ckpt"  # the checkpoint of a run's final state (its summary's "final" values)


@dataclass
class Run:
    dir: Path
    configuration: str
    seed: int | None
    status: str
    values: dict[str, float] = field(default_factory=dict)
    protocols: dict[str, dict] = field(default_factory=dict)  # metric -> protocol (at least its "id")
    history: list[dict] = field(default_factory=list)
    grid: Path | None = None
    family: str | None = None  # the model's class (config.yaml's model._target_), e.g. GAN
    settings: dict[str, object] = field(default_factory=dict)  # what it ran: config.yaml flattened (`settings`)
    evaluation: bool = False  # a task=eval directory's values of one checkpoint (`read_evaluation`), not a training run

    @property
    def finished(self) -> bool:
        return self.status == "finished"


@dataclass
class SamplingSpread:
    """One checkpoint evaluated with several sample seeds (`task=eval eval.sample_seeds=N`)."""

    dir: Path
    checkpoint: str
    configuration: str | None
    stats: dict[str, dict]  # metric -> {"n", "mean", "std", "values", ...}
    protocols: dict[str, dict] = field(default_factory=dict)  # of the first sample seed


def is_run_dir(path: Path) -> bool:
    return (path / ".hydra").is_dir() or (path / "summary.json").is_file()


def read_run(run_dir: Path) -> Run:
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    overrides = list(OmegaConf.load(overrides_file)) if overrides_file.is_file() else []
    config_file = run_dir / "config.yaml"
    config = OmegaConf.load(config_file) if config_file.is_file() else None
    config = config if isinstance(config, DictConfig) else OmegaConf.create()  # none, or not a mapping
    seed = config.get("seed")
    if seed is None:
        seed = next((int(o.split("=", 1)[1]) for o in overrides if override_key(o) == "seed"), None)
    composed = run_dir / ".hydra" / "config.yaml"  # a run refused before training wrote no config.yaml
    if seed is None and composed.is_file() and isinstance(hydra_config := OmegaConf.load(composed), DictConfig):
        seed = hydra_config.get("seed")
    summary_file = run_dir / "summary.json"
    run = Run(run_dir, configuration(overrides), seed, "failed (no summary.json: see its log)",
              family=model_family(config), settings=settings(config, run_dir))
    if not summary_file.is_file():
        return run
    summary = json.loads(summary_file.read_text())
    run.status = summary.get("status", "unknown")
    if run.status == "running":
        run.status = "unfinished (still running, or killed)"
    protocols = summary.get("protocols") or {}
    # the final evaluation's values and the test step's (a likelihood: the VAE's, the flow's, EDM's test/nll_bpd)
    for name, value in {**(summary.get("final") or {}), **(summary.get("test") or {})}.items():
        if name in protocols and isinstance(value, (int, float)):
            run.values[name], run.protocols[name] = float(value), protocols[name]
    best = summary.get("best")
    if best and best.get("metric") is not None:
        name = f"best {best['metric']}"
        run.values[name] = float(best["value"])
        run.protocols[name] = {**protocols.get(best["metric"], {}), "id": best.get("protocol")}
    history_file = run_dir / "metrics.jsonl"
    if history_file.is_file():
        run.history = [json.loads(line) for line in history_file.read_text().splitlines() if line.strip()]
    grid = run_dir / "samples" / GRID
    run.grid = grid if grid.is_file() else None
    return run


# The parts of a run's config.yaml that define what it trained and measured, and within them the keys that do not
# (where files are, how fast batches and features are computed, how much is logged).
SETTINGS = ("model", "data", "metrics", "trainer", "monitor", "monitor_mode")
NOT_SETTINGS = ("data.root", "data.num_workers", "data.pin_memory", "data.download", "data.verify",
                "metrics.cache_dir", "metrics.batch_size", "metrics.inception_weights", "metrics.dinov2_weights",
                "trainer.default_root_dir", "trainer.accelerator", "trainer.deterministic", "trainer.log_every_n_steps",
                "trainer.enable_progress_bar", "trainer.enable_model_summary")


def settings(config, run_dir: Path) -> dict[str, object]:
    """A run's resolved config flattened to {"model.lr_g": 0.0004, ...}: the keys that define what it trained and
    measured (`SETTINGS` but `NOT_SETTINGS`), options renamed since read in today's names (gdm.config_upgrades)."""
    flat: dict[str, object] = {}

    def walk(node: object, key: str) -> None:
        if key in NOT_SETTINGS:
            return
        if isinstance(node, dict) and node:
            for name, value in node.items():
                walk(value, f"{key}.{name}" if key else str(name))
        elif key:
            flat[key] = node

    container = OmegaConf.to_container(config, resolve=False) if isinstance(config, DictConfig) else {}
    walk({k: v for k, v in upgrade_config(container, run_dir).items() if k in SETTINGS}, "")
    return flat


def distinguish_settings(runs: list[Run]) -> list[str]:
    """Runs of one configuration (the same overrides) that ran different settings (a default or a config file
    changed between them) are different configurations: each run's configuration gains the settings that tell
    them apart, in override form. A key some runs lack (an option added since) tells nothing. One sentence per
    configuration so split."""
    notes = []
    by_configuration: dict[str, list[Run]] = {}
    for run in runs:
        by_configuration.setdefault(run.configuration, []).append(run)
    for label, group in by_configuration.items():
        shared = set.intersection(*(set(run.settings) for run in group))
        keys = sorted(k for k in shared if any(run.settings[k] != group[0].settings[k] for run in group))
        if not keys:
            continue
        for run in group:
            shown = " ".join(f"{k}={format_value(run.settings[k])}" for k in keys)
            run.configuration = shown if label == "(defaults)" else f"{label} {shown}"
        notes.append(f"runs given as `{label}` ran different settings ({', '.join(keys)}; e.g. a default changed "
                     "between them): they are compared as separate configurations, each named with its values.")
    return notes


def format_value(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value)


def model_family(config) -> str | None:
    """The model's class name in a run's config (`model._target_`), None when it has none."""
    target = OmegaConf.select(config, "model._target_", default=None)
    return str(target).rsplit(".", 1)[-1] if target else None


def training_run(eval_report: dict) -> tuple[str | None, int | None]:
    """The configuration and seed of the run whose checkpoint a task=eval report scored (None where that run's
    directory is not on this machine). The configuration names the checkpoint when it is not the run's
    `last.ckpt` (`ckpt=best.ckpt`): another checkpoint of one run is another model, not a repeat of its seed, and
    last.ckpt is the model the run's own final values measured."""
    checkpoint = Path(eval_report.get("checkpoint", ""))
    run_dir = checkpoint.parent.parent
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        return None, None
    run = read_run(run_dir)
    if checkpoint.name == LAST_CHECKPOINT:
        return run.configuration, run.seed
    which = f"ckpt={checkpoint.name}"
    return (which if run.configuration == "(defaults)" else f"{run.configuration} {which}"), run.seed


def read_evaluation(eval_dir: Path) -> Run:
    """A task=eval directory as a row of the tables: the values of its checkpoint under the names task=eval gave
    them (`test/fid_digits`: measured against that split), its configuration the training run's (where that
    directory is on this machine, else the eval directory) followed by `task=eval eval.split=S` and the eval's own
    overrides (`eval.sampler=heun`), its seed the training seed, so the evaluations of one configuration's seeds
    pool as runs do."""
    report = json.loads((eval_dir / "eval.json").read_text())
    configuration, seed = training_run(report)
    overrides_file = eval_dir / ".hydra" / "overrides.yaml"
    typed = [o for o in (OmegaConf.load(overrides_file) if overrides_file.is_file() else [])
             if override_key(o) not in ("task", "eval.split")]  # how it evaluated: eval.sampler=heun, ...
    how = " ".join(["task=eval", f"eval.split={report.get('split')}", *configuration_of(typed)])
    trained = str(eval_dir) if configuration is None else "" if configuration == "(defaults)" else configuration
    run = Run(eval_dir, f"{trained} {how}".strip(), seed, "finished", family=report.get("model"),
              evaluation=True)
    protocols = report.get("protocols", {})
    for name, value in report.get("metrics", {}).items():
        if name in protocols and isinstance(value, (int, float)):
            run.values[name], run.protocols[name] = float(value), protocols[name]
    return run


def is_single_evaluation(path: Path) -> bool:
    """A task=eval directory of one evaluation: one sample seed, one budget (`read_evaluation` reads it)."""
    eval_file = path / "eval.json"
    if not eval_file.is_file():
        return False
    report = json.loads(eval_file.read_text())
    return "sample_seeds" not in report and "budgets" not in report


def configuration_of(overrides: list[str]) -> list[str]:
    """The overrides that define what was measured (`configuration`), as a list (none: empty)."""
    kept = configuration(overrides)
    return [] if kept == "(defaults)" else kept.split(" ")


def training_names(report: dict) -> dict[str, str]:
    """eval.json's `names_in_training` (`test/fid_digits` -> `val/fid_digits`) restricted to the values measured as
    training measured them (against its real split, or against none, as the sampling time), so that they line up
    with the runs' values in the quality-against-compute plots; the others keep the name task=eval gave them (a
    plot of test-split values is not titled val/). (An eval.json without `trained_split`, from an older gdm: all of
    them.)"""
    names, trained = report.get("names_in_training", {}), report.get("trained_split")
    protocols = report.get("protocols", {})
    if trained is None:
        return names
    return {k: v for k, v in names.items() if (protocols.get(k) or {}).get("real_split") in (None, trained)}


def read_spread(eval_dir: Path) -> SamplingSpread:
    report = json.loads((eval_dir / "eval.json").read_text())
    checkpoint = Path(report.get("checkpoint", ""))
    run_dir = checkpoint.parent.parent
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    config = configuration(list(OmegaConf.load(overrides_file))) if overrides_file.is_file() else None
    # task=eval names a value by the split it measured (`test/fid_digits`); the tables by the training name.
    # A spread sits beside the training-seed std of the same metric, its other protocol noted (`spread_lines`).
    names = report.get("names_in_training", {})
    stats = {names.get(k, k): v for k, v in report["sample_seeds"].items()}
    protocols = {names.get(k, k): v for k, v in report.get("protocols", {}).items()}
    return SamplingSpread(eval_dir, str(checkpoint), config, stats, protocols)


def job_dirs(sweep_dir: Path) -> list[Path]:
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir() and is_run_dir(p)]
    return sorted(jobs, key=lambda p: (0, int(p.name), "") if p.name.isdigit() else (1, 0, p.name))


def independent_runs(runs: list[Run]) -> tuple[list[Run], list[str]]:
    """The runs that are independent samples, in their order, and one sentence per run left out: a directory
    met twice (given twice, or given as a run and inside a given sweep) is one run, and the finished runs of one
    configuration with one training seed repeat one computation (up to nondeterministic kernels), so only the
    first counts. Runs of one set of overrides that ran different settings are told apart first
    (`distinguish_settings`)."""
    notes = distinguish_settings(runs)
    kept = []
    by_dir: dict[Path, Run] = {}
    by_seed: dict[tuple[str, int], Run] = {}
    for run in runs:
        identity = run.dir.resolve()
        if identity in by_dir:
            notes.append(f"{run.dir} was given more than once: counted once.")
            continue
        by_dir[identity] = run
        key = (run.configuration, run.seed)
        if run.finished and run.seed is not None and key in by_seed:
            notes.append(f"{run.dir} repeats {by_seed[key].dir} (the same configuration and seed {run.seed}), so it "
                         "is not an independent sample: only the first is counted; vary `seed` for more samples.")
            continue
        if run.finished:
            by_seed.setdefault(key, run)
        kept.append(run)
    return kept, notes


def read_runs(paths: list[str | Path]) -> tuple[list[Run], list[SamplingSpread]]:
    """Every run under `paths` (run or sweep directories; a sweep's jobs may be training runs or task=eval
    directories) and every sampling spread (eval directories); a path that is none of these fails in one
    sentence."""
    runs, spreads, budgets = [], [], 0

    def read(path: Path, given: str | Path) -> bool:
        """Reads one run or task=eval directory; False when `path` is neither."""
        nonlocal budgets
        eval_file = path / "eval.json"
        if eval_file.is_file():
            report = json.loads(eval_file.read_text())
            sampled = "budgets" in report or any(p and "sampling" in p for p in report.get("protocols", {}).values())
            if "sample_seeds" not in report and not sampled:
                raise GdmError(f"compare.runs: {given} is a task=eval directory of one sample seed that records no "
                               "sampling budget: evaluate with eval.sample_seeds=N (N >= 2) to compare its sampling "
                               "spread, or with this gdm to draw it against compute.")
            if "sample_seeds" in report:
                spreads.append(read_spread(path))
            elif is_single_evaluation(path):  # a row of the tables (several budgets: drawn by gdm.compare.cost)
                runs.append(read_evaluation(path))
            budgets += sampled  # read by gdm.compare.cost
        elif is_run_dir(path):
            runs.append(read_run(path))
        else:
            return False
        return True

    for given in paths:
        path = Path(given).expanduser()
        if not path.is_dir():
            raise GdmError(f"compare.runs: {given} is not a directory: pass run or sweep directories.")
        if read(path, given):
            continue
        if job_dirs(path):
            for job in job_dirs(path):
                if not read(job, job):
                    runs.append(read_run(job))  # a job that wrote neither: recorded with its status
        else:
            raise GdmError(f"compare.runs: {given} is neither a run directory (with .hydra/ or summary.json) nor "
                           "a sweep directory (with job sub-directories): pass run or sweep directories.")
    spreads = list({spread.dir.resolve(): spread for spread in reversed(spreads)}.values())[::-1]
    if not any(run.finished for run in runs) and not budgets:
        listed = ", ".join(f"{r.dir} ({r.status})" for r in runs) or "none found"
        raise GdmError(f"compare.runs holds no finished run to compare ({listed}).")
    return runs, spreads
