"""Which Hydra multirun job (`python run.py -m ...`) and which process of it this is.

- `sweep_identity()`: inside a multirun job, the W&B group (the sweep directory, e.g.
  `multirun/2026-11-24/10-00-00`) and run name (the job's own overrides, e.g. `model.loss=hinge,seed=2`),
  so the dashboard groups a sweep's runs and names each by what it changed.
- `configuration(overrides)`: what a run trains and measures, as its overrides but the seed and the keys
  that only say where files and logs go, so the seeds of one configuration group together across sweeps.
- `configuration_tag()`: the W&B tag shared by the runs of one configuration across seeds and sweeps.
- `extra_ranks_run_this_job()`: DDP inside a multirun (`python run.py -m trainer=ddp_cpu seed=1,2`).
  Lightning starts ranks 1..N-1 by re-running the script with the original command line. In a multirun
  that command line is the whole sweep (`-m seed=1,2`), so every extra rank would run the sweep again in
  lockstep (and an Optuna sweeper there could draw other hyperparameters). For the length of a multirun
  job the extra ranks are started as a single run of that job instead: `run.py` with the job's own
  overrides, in the job's output directory. After the job, the process group and the launcher's
  environment variables are cleared, so the next job of the sweep starts its own ranks on a fresh port.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_original_cwd
from lightning.fabric.strategies.launchers import subprocess_script as fabric_launcher
from lightning.pytorch.strategies.launchers import subprocess_script as trainer_launcher

# Set in this process by Lightning's launcher when it starts the extra ranks; left set, the next job would
# take its ranks to exist already.
LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
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


def entry_script() -> Path:
    """run.py: it sits next to the primary config directory (`config_path="conf"`), also when the job runs
    under a launcher (submitit) whose own module is the process's main script."""
    hydra = HydraConfig.get()
    conf = next(s.path for s in hydra.runtime.config_sources if s.provider == "main" and s.schema == "file")
    return Path(conf).resolve().parent / "run.py"


def job_rank_command(local_rank: int) -> tuple[list[str], str]:
    """The command and working directory of one extra rank of the current multirun job."""
    hydra = HydraConfig.get()
    command = [sys.executable, str(entry_script()), *hydra.overrides.task]
    command += [f'hydra.run.dir="{hydra.runtime.output_dir}"', f"hydra.job.name=train_ddp_process_{local_rank}",
                "hydra.output_subdir=null"]
    return command, get_original_cwd()


@contextmanager
def extra_ranks_run_this_job() -> Iterator[None]:
    """For the length of the current multirun job (call it only in one), DDP's extra ranks run the job
    alone."""
    # Lightning (2.x) builds the command in a module-level function, imported by the Trainer's and Fabric's
    # launchers; both are swapped for the job's own command and restored after the job.
    environment = {name: os.environ.get(name) for name in LAUNCHER_ENV}
    modules = (fabric_launcher, trainer_launcher)
    originals = [m._hydra_subprocess_cmd for m in modules]
    for module in modules:
        module._hydra_subprocess_cmd = job_rank_command
    try:
        yield
    finally:
        for module, original in zip(modules, originals):
            module._hydra_subprocess_cmd = original
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for name, value in environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
