"""The end of a Hydra multirun (`python run.py -m ...`): a summary of its jobs. (Which job a run is:
`gdm.multirun`.)

- `SweepSummary`: a Hydra callback that, when the sweep ends, collects every job's overrides, status and
  best monitored value (and the id of the protocol it was measured with) from its `summary.json` (a task=eval
  job's value of the monitored metric, from its `eval.json`) into
  `sweep_summary.csv` in the sweep directory, prints them as a table, and warns when jobs measured their
  values with different protocols (e.g. `metrics.fid.num_samples` swept): those are not comparable. A sweep
  goes on past a failed job, but exits with status 1 when any job did not finish. A job of another task (a
  multirun of task=eval / sample / translate / compare) has finished when it wrote what its task writes.
  It also groups the jobs by configuration (every override but the seed, `gdm.multirun.configuration`)
  and writes, per metric, n, mean, std and the Student-t 95% interval over the seeds into `sweep_groups.csv`
  and `sweep_groups.md`, prints them, and logs them as a W&B table when the sweep logs to W&B.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from gdm.compare.runs import independent_runs, is_single_evaluation, read_evaluation, read_run
from gdm.compare.stats import CONFIDENCE
from gdm.compare.tables import flat_rows, fmt, labels, metric_tables
from gdm.evaluation.context import differences, how_produced
from gdm.loggers import log_comparison

log = logging.getLogger(__name__)
DONE = ("finished", "pruned")  # job statuses that count as success for the sweep's exit status


def job_task(job_dir: Path) -> str:
    """The task a job ran (its .hydra/config.yaml `task`; train where that file is missing)."""
    config_file = job_dir / ".hydra" / "config.yaml"
    config = OmegaConf.load(config_file) if config_file.is_file() else None
    return str(config.get("task", "train")) if isinstance(config, DictConfig) else "train"


def task_output_written(job_dir: Path, task: str) -> bool:
    """Whether a job of another task than training wrote what that task writes when it finishes: eval.json,
    sample's grid.png, compare's report.md, translate's output folder with a file in it."""
    if task == "translate":
        output = OmegaConf.select(OmegaConf.load(job_dir / ".hydra" / "config.yaml"), "translate.output")
        return output is not None and Path(output).is_dir() and any(Path(output).iterdir())
    return (job_dir / {"eval": "eval.json", "sample": "grid.png", "compare": "report.md"}.get(task, "summary.json")
            ).is_file()


def job_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for job_dir in sorted((p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()),
                          key=lambda p: int(p.name) if p.name.isdigit() else p.name):
        overrides_file = job_dir / ".hydra" / "overrides.yaml"
        overrides = OmegaConf.load(overrides_file) if overrides_file.is_file() else []
        summary_file = job_dir / "summary.json"
        summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
        task = job_task(job_dir)
        best = summary.get("best") or (evaluated(job_dir) if task == "eval" else {})
        # Training without summary.json failed before it started (its run.log says why); another task's job is
        # judged by what it writes.
        status = (summary.get("status", "failed") if task == "train"
                  else "finished" if task_output_written(job_dir, task) else "failed")
        rows.append({"job": job_dir.name, "task": task, "overrides": " ".join(overrides), "status": status,
                     "metric": best.get("metric", summary.get("monitor", "")), "best": best.get("value", ""),
                     "best_step": best.get("step", ""), "protocol": best.get("protocol", ""), "dir": str(job_dir)})
    return rows


def evaluated(job_dir: Path) -> dict[str, Any]:
    """A task=eval job's value of the checkpoint's monitored metric, under the name task=eval gave it
    (`test/fid_digits`; eval.json's "monitor"), as summary.json's "best" holds a training run's: {"metric",
    "value", "step", "protocol"}; {} without eval.json, or one from an older gdm that does not record it (the
    job's own config holds the defaults' monitor, not the checkpoint's)."""
    eval_file = job_dir / "eval.json"
    if not eval_file.is_file():
        return {}
    report = json.loads(eval_file.read_text())
    name = report.get("monitor")
    if name not in report.get("metrics", {}):
        return {}
    return {"metric": name, "value": report["metrics"][name], "step": report.get("step", ""),
            "protocol": (report.get("protocols", {}).get(name) or {}).get("id", "")}


def protocol_mismatch(sweep_dir: Path, rows: list[dict[str, Any]]) -> str | None:
    """A sentence naming the jobs whose best values were measured with another protocol than job
    rows[0]'s (and in what), or None when every job's value is comparable."""
    measured = [r for r in rows if r["protocol"]]
    if len({r["protocol"] for r in measured}) < 2:
        return None
    first = measured[0]
    protocols = {}
    for r in measured:
        record = json.loads((Path(r["dir"]) / ("eval.json" if r.get("task") == "eval" else "summary.json")).read_text())
        protocols[r["job"]] = record.get("protocols", {}).get(r["metric"], {})
    # Differences in how a model is asked to sample (a cGAN's labels) or in versions keep values comparable.
    differ = {r["job"]: [d for d in differences(protocols[first["job"]], protocols[r["job"]])
                         if not how_produced(d) and not d.startswith("versions.")] for r in measured}
    others = [r for r in measured if r["protocol"] != first["protocol"] and differ[r["job"]]]
    if not others:
        return None
    what = sorted({d for r in others for d in differ[r["job"]]})
    return (f"jobs {', '.join(r['job'] for r in others)} measured {first['metric']} with another protocol than job "
            f"{first['job']} (differing in {', '.join(what) or 'unknown fields'}): "
            "their best values are not comparable.")


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = job_rows(sweep_dir)
        if not rows:
            return
        path = sweep_dir / "sweep_summary.csv"
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        # The table shows what the jobs differ in; the file keeps every override.
        common = set.intersection(*(set(r["overrides"].split()) for r in rows))
        swept = [" ".join(o for o in r["overrides"].split() if o not in common) or "-" for r in rows]
        width = max(len("overrides"), *(len(s) for s in swept))
        # The value column: a training job's best monitored value, an eval job's value of it (none for the other
        # tasks, whose jobs measure nothing)
        metric = next((r["metric"] for r in rows if r["metric"]), "")
        column = "" if not metric else f"  best {metric}" if rows[0].get("task", "train") == "train" else f"  {metric}"
        lines = [f"{'job':>4}  {'overrides':<{width}}  {'status':<8}{column}"]
        for r, s in zip(rows, swept):
            best = "" if not column else f"  {r['best']:.4f}" if isinstance(r["best"], float) else "  -"
            lines.append(f"{r['job']:>4}  {s:<{width}}  {r['status']:<8}{best}")
        log.info("sweep summary (%s):\n%s", path, "\n".join(lines))
        mismatch = protocol_mismatch(sweep_dir, rows)
        if mismatch:
            log.warning(mismatch)
        self.write_groups(config, sweep_dir, [Path(r["dir"]) for r in rows])
        unfinished = [r["job"] for r in rows if r["status"] not in DONE]
        if unfinished:  # the sweep went on past them; its exit status still says so
            log.error(f"{len(unfinished)} of {len(rows)} jobs did not finish (jobs {', '.join(unfinished)}; each "
                      f"job's run.log says why): exit status 1.")
            raise SystemExit(1)

    @staticmethod
    def write_groups(config: DictConfig, sweep_dir: Path, job_dirs: list[Path]) -> None:
        # Training jobs, and task=eval jobs of one evaluation each (their values under eval's names); the other
        # tasks' jobs hold no values.
        read = [read_run(job) if job_task(job) == "train" else read_evaluation(job) for job in job_dirs
                if job_task(job) == "train" or is_single_evaluation(job)]
        runs, repeats = independent_runs(read)  # e.g. `-m seed=1,1`: one sample
        tables, mismatches = metric_tables(runs)
        rows = flat_rows(tables)
        if not rows:
            return
        with (sweep_dir / "sweep_groups.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        markdown = group_markdown(tables, mismatches, [r for r in runs if not r.finished], repeats)
        (sweep_dir / "sweep_groups.md").write_text(markdown)
        log.info("sweep summary by configuration (%s):\n%s", sweep_dir / "sweep_groups.md", markdown)
        wandb = OmegaConf.select(config, "logger.wandb")
        if wandb is not None and wandb.get("_target_", "").endswith("wandb_logger"):
            group = "/".join([p for p in sweep_dir.parts if p != sweep_dir.anchor][-3:])
            log_comparison(rows, {}, name=f"sweep {group}", save_dir=sweep_dir, project=wandb.get("project", "gdm"),
                           mode=wandb.get("mode", "auto"), group=group, key="logger.wandb.mode")


def group_markdown(tables: list, mismatches: list[str], unfinished: list, repeats: list[str] = ()) -> str:
    """Per metric, one row per configuration (without the overrides all jobs share): n seeds, mean, std and
    the interval over the seeds; `repeats`: sentences on the jobs counted once (gdm.compare.runs.independent_runs)."""
    c = f"{CONFIDENCE:.0%}"
    common = labels([row_run for t in tables for row in t.rows for row_run in row.runs])[1]
    lines = [f"Mean over training seeds, std (ddof = 1) and {c} Student-t confidence interval (scipy.stats.t)"
             + (f"; every job also had `{common}`." if common else "."), "",
             f"| metric | configuration | n | mean | std | {c} CI |", "|---|---|---|---|---|---|"]
    for t in tables:
        for row in t.rows:
            s = row.stats
            lines.append(f"| {t.metric} | {row.label} | {s.n} | {fmt(s.mean)} | {fmt(s.std)} | "
                         f"[{fmt(s.low)}, {fmt(s.high)}] |")
    lines += [f"\n{m}" for m in mismatches]
    if repeats:
        lines += ["", "Counted once: " + " ".join(repeats)]
    if unfinished:
        lines += ["", "Not finished, left out: " + ", ".join(f"job {r.dir.name} ({r.status})" for r in unfinished)]
    return "\n".join(lines) + "\n"
