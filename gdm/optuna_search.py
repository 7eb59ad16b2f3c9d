"""Optuna for `python run.py -m hparams_search=...` (gdm's sweeper, `hydra_plugins/gdm_optuna_sweeper`).

- `search_space()`: `hydra.sweeper.params` and command-line sweeps in Hydra's override syntax
  (`interval`, `int(interval)`, `tag(log, ...)`, `choice`, `range`) as Optuna distributions, plus the plain
  `key=value` overrides every trial gets.
- `storage_url()` / `open_storage()`: where the study lives: an SQLAlchemy URL (`sqlite:///gan.db`), or a
  path: an Optuna journal file (no database server; what SLURM jobs on a shared file system should use).
- `trial_overrides()` / `trial_of_this_job()`: how a job finds its trial. The sweeper names it in the job's
  environment (`hydra.job.env_set`), which is part of the job's overrides, so a requeued job (SLURM
  preemption) reaches the same trial again.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer

from gdm.errors import GdmError

TRIAL_ENV = {"storage": "GDM_OPTUNA_STORAGE", "study": "GDM_OPTUNA_STUDY", "number": "GDM_OPTUNA_TRIAL",
             "pruner": "GDM_OPTUNA_PRUNER"}
JOURNAL_FILE = "optuna_study.journal"  # the study of a sweep given no storage, in its sweep directory


def require_optuna():
    try:
        import optuna
    except ImportError as err:
        raise GdmError("Optuna searches (hparams_search=..., hydra/sweeper=optuna) need Optuna: "
                       "pip install 'gdm[sweeps]'.") from err
    if int(optuna.__version__.split(".")[0]) < 4:
        raise GdmError(f"gdm's Optuna sweeper needs optuna>=4 (found {optuna.__version__}): "
                       "pip install -U 'gdm[sweeps]'.")
    return optuna


def distribution(override: Override):
    """The Optuna distribution of one sweep override, e.g. `model.lr=tag(log, interval(1e-4, 1e-2))`."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    key = override.get_key_element()
    if isinstance(value, IntervalSweep):
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):  # int(interval(...))
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    # shuffle() is dropped: a sampler picks the order, and a resumed study needs the same distributions
    if isinstance(value, ChoiceSweep):
        return CategoricalDistribution([Transformer.encode(v) for v in value.list])
    if isinstance(value, RangeSweep):  # range(start, stop, step): stop excluded, as in Python
        value.shuffle = False
        values = list(override.sweep_iterator(transformer=Transformer.encode))
        if not values:
            raise GdmError(f"hydra.sweeper.params: {override.input_line or key} is an empty range.")
        low, high, step = min(values), max(values), abs(value.step)
        if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
            return IntDistribution(low, high, step=step)
        return FloatDistribution(float(low), float(high), step=float(step))
    raise GdmError(f"hydra.sweeper.params: Optuna cannot search {key} (use interval, choice or range).")


def search_space(overrides: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """({key: distribution} of the sweeps, {key: value} of the plain overrides); a later override of the same
    key wins, so the command line refines `hydra.sweeper.params`."""
    distributions: dict[str, Any] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element()
        distributions.pop(key, None)
        fixed.pop(key, None)
        if override.is_sweep_override():
            distributions[key] = distribution(override)
        else:
            fixed[key] = override.get_value_element_as_str()
    return distributions, fixed


def grid_choices(distributions: dict[str, Any]) -> dict[str, list]:
    """The grid of Optuna's GridSampler: every value of each (discrete) parameter."""
    from optuna.distributions import CategoricalDistribution

    grid = {}
    for key, dist in distributions.items():
        if isinstance(dist, CategoricalDistribution):
            grid[key] = list(dist.choices)
        elif getattr(dist, "step", None) is not None and not dist.log:
            count = round((dist.high - dist.low) / dist.step) + 1
            grid[key] = [dist.low + i * dist.step for i in range(count)]
        else:
            raise GdmError(f"hydra/sweeper/sampler=grid needs discrete parameters, but {key} is an interval: "
                           "use choice(...) or range(...) for it.")
    return grid


_PLAIN = re.compile(r"[A-Za-z0-9_.\-+/:]+")


def override_value(value: Any) -> str:
    """A trial's parameter value as Hydra override text (strings quoted when they would not read back)."""
    if isinstance(value, str):
        if _PLAIN.fullmatch(value) and OverridesParser.create().parse_override(f"k={value}").value() == value:
            return value
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return repr(value) if isinstance(value, float) else str(value)


def storage_url(storage: str | None, sweep_dir: str | Path) -> str:
    """The study's storage as the jobs reach it: absolute, since a job may run in another directory."""
    if not storage:
        return str((Path(sweep_dir) / JOURNAL_FILE).resolve())
    storage = str(storage)
    if storage.startswith("sqlite:///") and not storage.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(storage[len("sqlite:///"):]).resolve())
    if "://" in storage:
        return storage
    return str(Path(storage).expanduser().resolve())


def open_storage(url: str):
    """Optuna's storage for `url`: an SQLAlchemy URL, or else the path of a journal file."""
    optuna = require_optuna()
    if "://" in url:
        return optuna.storages.RDBStorage(url)
    from optuna.storages.journal import JournalFileBackend

    Path(url).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(url))


def trial_overrides(url: str, study_name: str, number: int, pruner: dict) -> list[str]:
    """Hydra overrides that make a job trial `number` of the study (environment variables of the job). The
    pruner goes too (its config, with a `_target_`): Optuna keeps it in the study object, not the storage."""
    identity = {TRIAL_ENV["storage"]: url, TRIAL_ENV["study"]: study_name, TRIAL_ENV["number"]: str(number),
                TRIAL_ENV["pruner"]: json.dumps(pruner, separators=(",", ":"))}
    return [f"++hydra.job.env_set.{name}={override_value(value)}" for name, value in identity.items()]


def trial_of_this_job():
    """The Optuna trial this job runs (named by gdm's sweeper in the environment), or None."""
    number = os.environ.get(TRIAL_ENV["number"])
    if number is None:
        return None
    optuna = require_optuna()
    from hydra.utils import instantiate

    storage = open_storage(os.environ[TRIAL_ENV["storage"]])
    pruner = os.environ.get(TRIAL_ENV["pruner"])
    pruner = instantiate(json.loads(pruner)) if pruner else optuna.pruners.NopPruner()
    study = optuna.load_study(study_name=os.environ[TRIAL_ENV["study"]], storage=storage, pruner=pruner)
    study_id = storage.get_study_id_from_name(study.study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, int(number))
    return optuna.trial.Trial(study, trial_id)
