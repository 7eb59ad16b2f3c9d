"""`task=compare`: a report comparing runs over seeds, from their directories (no W&B needed).

    python run.py task=compare compare.runs=[SWEEP_DIR,RUN_DIR,...]

Writes `report.md`, a self-contained `report.html` and `plots/*.png` into the output directory (with quality
against sampling compute from the runs' final evaluations and from task=eval directories of several
`eval.steps` budgets: at the top when the runs differ in model family), prints the tables, and logs the table
and plots to a W&B run of their own (`compare.wandb`: auto = online when it can be, else offline, and none with
another logger than W&B chosen, e.g. `logger=none`; disabled = none).
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gdm.compare.cost import read_budgets
from gdm.compare.report import Report
from gdm.compare.runs import independent_runs, read_runs
from gdm.compare.tables import flat_rows, metric_tables
from gdm.errors import GdmError
from gdm.loggers import log_comparison

log = logging.getLogger(__name__)


def compare(cfg: DictConfig) -> float | None:
    opts = cfg.compare
    if not opts.runs:
        raise GdmError("task=compare needs compare.runs=[DIR,...]: run directories, sweep directories or both.")
    if not 0 < opts.confidence < 1:
        raise GdmError(f"compare.confidence={opts.confidence} is not a probability: use e.g. 0.95.")
    runs, spreads = read_runs(list(opts.runs))
    runs, repeats = independent_runs(runs)  # before any statistic: intervals and paired differences alike
    tables, mismatches = metric_tables(runs, opts.confidence)
    out_dir = Path(cfg.paths.output_dir)
    budgets = read_budgets(runs, list(opts.runs))  # NFE and sampling time of each run and eval budget
    report = Report(runs, tables, mismatches, spreads, opts.confidence, repeats, budgets)
    written = report.write(out_dir)
    log.info("\n" + report.markdown(out_dir).split("## Last sample grids")[0])
    for warning in (*repeats, *mismatches):
        log.warning(warning)
    plots = {Path(p).stem: p for key, p in written.items() if key.startswith(("plot", "cost"))}
    project = OmegaConf.select(cfg, "logger.wandb.project", default="gdm")
    mode = opts.wandb
    if mode == "auto" and OmegaConf.select(cfg, "logger.wandb") is None:
        mode = "disabled"  # logger=none / csv / tensorboard: the comparison follows the choice
    where = log_comparison(flat_rows(tables), plots, name=f"compare {out_dir.name}", save_dir=out_dir,
                           mode=mode, project=project)
    if where:
        log.info(f"W&B: {where}")
    log.info(f"written: {written['markdown'].resolve()} and {written['html'].resolve()}")
    return None
