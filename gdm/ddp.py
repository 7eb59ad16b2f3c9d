"""DDP inside a Hydra multirun (`python run.py -m trainer=ddp_cpu seed=1,2`).

Lightning starts ranks 1..N-1 by re-running the script with the original command line. In a multirun that
command line is the whole sweep (`-m seed=1,2`), so every extra rank would run the sweep again in lockstep
(and an Optuna sweeper there could draw other hyperparameters). Here, for the length of a multirun job, the
extra ranks are started as a single run of that job instead: `run.py` with the job's own overrides, in the
job's output directory. After the job, the process group and the launcher's environment variables are
cleared, so the next job of the sweep starts its own ranks on a fresh port.
"""

from __future__ import annotations

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
    """Within a multirun job, DDP's extra ranks run the job alone (outside a multirun: no change)."""
    if not (HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN):
        yield
        return
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
