"""Which Hydra multirun job this is (`python run.py -m ...`), for the code that names a run by it.

- `sweep_identity()`: inside a multirun job, the W&B group (the sweep directory, e.g.
  `multirun/2026-11-24/10-00-00`) and run name (the job's own overrides, e.g. `model.loss=hinge,seed=2`),
  so the dashboard groups a sweep's runs and names each by what it changed.
- `configuration(overrides)`: what a run trains and measures, as its overrides but the seed and the keys
  that only say where files and logs go, so the seeds of one configuration group together across sweeps.
- `configuration_tag()`: the W&B tag shared by the runs of one configuration across seeds and sweeps.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

# Overrides that do not change what a run trains or measures.
NOT_CONFIGURATION = ("seed", "print_config", "logger", "paths", "resume", "hydra", "ckpt_path",
                     "test_after_fit")


def override_key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def configuration(overrides: list[str]) -> str:
    """The overrides that define what was trained and measured, in their given order; '(defaults)' if none."""
    kept = [o for o in overrides if override_key(o).split(".", 1)[0] not in NOT_CONFIGURATION]
    return " ".join(kept) or "(defaults)"


def sweep_identity() -> tuple[str, str] | None:
    """(group, name) for the W&B run of a multirun job; None outside a multirun."""
    if not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    if hydra.mode != RunMode.MULTIRUN:
        return None
    sweep_dir = Path(hydra.sweep.dir)
    # e.g. multirun/2026-11-24/10-00-00 for the default sweep dir: unique and readable
    group = "/".join([p for p in sweep_dir.parts if p != sweep_dir.anchor][-3:])
    name = ",".join(hydra.overrides.task) or f"job{hydra.job.num}"
    return group, name


def configuration_tag() -> str | None:
    """'config:<overrides but the seed>' for a multirun job (W&B tags hold at most 64 characters: a longer
    one ends in a hash of the whole), None outside a multirun."""
    if sweep_identity() is None:
        return None
    tag = f"config:{configuration(list(HydraConfig.get().overrides.task))}"
    if len(tag) <= 64:
        return tag
    return tag[:55] + "~" + hashlib.sha256(tag.encode()).hexdigest()[:8]
