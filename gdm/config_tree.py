"""Print the composed config as a rich tree at the start of a run."""

from __future__ import annotations

import rich
import rich.syntax
import rich.tree
from omegaconf import DictConfig, OmegaConf

FIRST = ("task", "data", "model", "trainer", "metrics", "callbacks", "logger", "paths")


def print_config_tree(cfg: DictConfig) -> None:
    tree = rich.tree.Tree("config", style="bold")
    keys = [k for k in FIRST if k in cfg] + [k for k in cfg if k not in FIRST]
    for key in keys:
        branch = tree.add(str(key), style="cyan")
        value = cfg[key]
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        branch.add(rich.syntax.Syntax(text, "yaml", theme="ansi_dark"))
    rich.print(tree)
