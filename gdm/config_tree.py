"""Print the composed config at the start of a run: a few lines by default, the whole tree on request.

The whole tree runs to ~160 lines, which pushed a refusal of a bad option out of sight; the run directory keeps
the full config anyway (`config.yaml`, `.hydra/config.yaml`), so by default only what was picked is printed.
"""

from __future__ import annotations

import rich
import rich.syntax
import rich.tree
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from gdm.errors import GdmError

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
    if HydraConfig.initialized():
        hydra = HydraConfig.get()
        picked = [f"{group}={option}" for group, option in sorted(hydra.runtime.choices.items())
                  if option is not None and not group.startswith("hydra/") and group != "hydra"]
        lines.append("  groups: " + " ".join(picked))
        if hydra.overrides.task:
            lines.append("  overrides: " + " ".join(hydra.overrides.task))
    if cfg.get("task") == "eval":
        lines.append(f"  model, data and metrics from the checkpoint: {cfg.model.get('_target_', '?').rsplit('.', 1)[-1]}")
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
