"""What a run shows on the console: the composed config at its start, and its progress while it trains.

- `print_config(cfg)`: a few lines by default, the whole tree on request. The whole tree runs to ~160 lines,
  which pushed a refusal of a bad option out of sight; the run directory keeps the full config anyway
  (`config.yaml`, `.hydra/config.yaml`), so by default only what was picked is printed.
- `progress_bar()`: Rich's bar on a terminal, one log line per training epoch when the output goes to a file
  or a pipe (where the bar draws nothing, so a piped run showed no progress at all).
"""

from __future__ import annotations

import logging
import sys
import time

import lightning as L
import rich
import rich.syntax
import rich.tree
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from gdm.errors import GdmError

log = logging.getLogger("gdm")

FIRST = ("task", "data", "model", "trainer", "metrics", "callbacks", "logger", "paths")
CHOICES = (True, False, "full")


def print_config(cfg: DictConfig) -> None:
    """`print_config`: true prints the groups picked and the overrides, `full` the whole tree, false nothing.
    Only the first process prints (DDP starts one per device). Raises GdmError for another value."""
    choice = cfg.get("print_config", True)
    if choice not in CHOICES:
        raise GdmError(f"print_config={choice} is not a choice: use true (what was picked), full (the whole "
                       "config) or false.")
    if not choice or rank_zero_only.rank != 0:
        return
    if choice == "full":
        print_config_tree(cfg)
    else:
        print(config_summary(cfg))


def config_summary(cfg: DictConfig) -> str:
    """Two or three lines: the config groups picked, the command-line overrides, where the full config is."""
    lines = [f"task={cfg.get('task')} (print_config=full prints the whole config; the run directory keeps it in "
             ".hydra/config.yaml)"]
    task = cfg.get("task")
    # A checkpoint's task takes its model, data and metrics from the checkpoint (groups typed on the command line
    # show under overrides), not from the groups Hydra composed by default (model=gan).
    not_used = ("model", "data_model", "data", "metrics") if task in ("eval", "sample", "translate") else ()
    if HydraConfig.initialized():
        hydra = HydraConfig.get()
        picked = [f"{group}={option}" for group, option in sorted(hydra.runtime.choices.items())
                  if option is not None and not group.startswith("hydra/") and group != "hydra"
                  and group not in not_used]
        lines.append("  groups: " + " ".join(picked))
        if hydra.overrides.task:
            lines.append("  overrides: " + " ".join(hydra.overrides.task))
    if task == "eval":
        lines.append("  model, data and metrics from the checkpoint: "
                     f"{cfg.model.get('_target_', '?').rsplit('.', 1)[-1]}")
    elif task in ("sample", "translate"):
        lines.append(f"  model from the checkpoint: {cfg.get('ckpt_path')}")
    return "\n".join(lines)


def print_config_tree(cfg: DictConfig) -> None:
    tree = rich.tree.Tree("config", style="bold")
    keys = [k for k in FIRST if k in cfg] + [k for k in cfg if k not in FIRST]
    for key in keys:
        branch = tree.add(str(key), style="cyan")
        value = cfg[key]
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        branch.add(rich.syntax.Syntax(text, "yaml", theme="ansi_dark"))
    rich.print(tree)


def progress_bar(refresh_rate: int = 5) -> ProgressBar:
    """Rich's bar (redrawn every `refresh_rate` batches) when stdout is a terminal, else `EpochLines`."""
    if sys.stdout.isatty():
        return RichProgressBar(refresh_rate=refresh_rate)
    return EpochLines()


class EpochLines(ProgressBar):
    """One line per training epoch on the first process: `epoch 3/70: 22 batches in 4.1 s, g_loss 1.23 ...`."""

    def __init__(self) -> None:
        super().__init__()
        self.enabled = True
        self.epoch_start = time.time()
        self.batches = 0

    @property
    def is_enabled(self) -> bool:  # LightningModule.print writes through an enabled bar
        return self.enabled

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_start, self.batches = time.time(), 0

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        self.batches += 1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled or trainer.global_rank != 0:
            return
        values = {k: v for k, v in self.get_metrics(trainer, pl_module).items() if k != "v_num"}
        shown = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        log.info(f"epoch {trainer.current_epoch + 1}{total}: {self.batches} batches in "
                 f"{time.time() - self.epoch_start:.1f} s{', ' + shown if shown else ''}")
