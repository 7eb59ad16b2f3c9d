"""Optuna for `python run.py -m hparams_search=...` (gdm's sweeper, `hydra_plugins/gdm_optuna_sweeper`).

- `search_space()`: `hydra.sweeper.params` and command-line sweeps in Hydra's override syntax
  (`interval`, `int(interval)`, `tag(log, ...)`, `choice`, `range`) as Optuna distributions, plus the plain
  `key=value` overrides every trial gets.
- `storage_url()` / `open_storage()`: where the study lives: an SQLAlchemy URL (`sqlite:///gan.db`), or a
  path: an Optuna journal file (no database server; what SLURM jobs on a shared file system should use).
- `trial_overrides()` / `trial_of_this_job()`: how a job finds its trial. The sweeper names it in the job's
  environment (`hydra.job.env_set`), which is part of the job's overrides, so a requeued job (SLURM
  preemption) reaches the same trial again.
- `check_continuation()` / `record_study()`: a stored study is continued only where Optuna can continue it
  (checked before any trial is asked for); the study records its monitor, mode and latest search space.
- `ask()` / `fail()`: a trial that fails in any phase ends FAIL with its reason (user attribute `fail_reason`).
"""

from __future__ import annotations

import contextlib
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


def describe(dist) -> str:
    """A distribution in the override syntax that makes it, e.g. `tag(log, interval(5e-05, 0.001))`."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return f"choice({', '.join(override_value(c) for c in dist.choices)})"
    if dist.step is not None and not (isinstance(dist, IntDistribution) and dist.step == 1):
        return f"range({dist.low}, {dist.high + dist.step}, {dist.step})"
    text = f"interval({dist.low}, {dist.high})"
    text = f"int({text})" if isinstance(dist, IntDistribution) else text
    return f"tag(log, {text})" if dist.log else text


def suggest(trial, name: str, dist) -> Any:
    """`trial`'s value of parameter `name` drawn from `dist` by the study's sampler (Optuna's suggest API)."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def fail(study, trial, reason: str) -> None:
    """Ends a running `trial` FAIL with `reason` in its user attribute `fail_reason` (a reason the job itself
    recorded is kept)."""
    from optuna.trial import TrialState

    recorded = study.get_trials(deepcopy=False)[trial.number]
    if recorded.state != TrialState.RUNNING:
        return
    if "fail_reason" not in recorded.user_attrs:
        trial.set_user_attr("fail_reason", reason)
    tell(study, trial, state=TrialState.FAIL)


def tell(study, trial, value: float | None = None, state=None) -> None:
    """`study.tell`, past the grid sampler's `Study.stop` at the end of its grid (which raises outside
    `optimize`; the trial's outcome is stored before)."""
    try:
        study.tell(trial, value, state=state)
    except RuntimeError as err:
        if "Study.stop" not in str(err):
            raise


def ask(study, distributions: dict[str, Any]):
    """A new trial of `study` with a value drawn for each distribution. When drawing fails (or is interrupted)
    the trial is ended FAIL with the reason, never left RUNNING, and the error raised."""
    trial = study.ask()
    try:
        for name, dist in distributions.items():
            suggest(trial, name, dist)
    except BaseException as err:
        fail(study, trial, f"while asking for its parameters: {type(err).__name__}: {err}")
        raise
    return trial


def note_failure_of_this_job(reason: str) -> None:
    """Records `reason` as the failure reason of the Optuna trial this job runs, if it runs one; never raises
    (the job's own failure is what the user must see)."""
    if os.environ.get(TRIAL_ENV["number"]) is None:
        return
    with contextlib.suppress(Exception):  # the storage unreachable from this job: the sweeper records its own
        trial_of_this_job().set_user_attr("fail_reason", reason)


# The study user attribute that holds the search space of its latest sweep (beside `monitor`, `monitor_mode`).
SPACE_ATTR = "search_space"


def stored_study(storage, name: str | None):
    """The study `name` in `storage`, or None when there is none (or no name: a new study each sweep)."""
    optuna = require_optuna()
    if name is None or name not in optuna.get_all_study_names(storage):
        return None
    return optuna.load_study(study_name=name, storage=storage)


def stored_search_space(study) -> dict[str, Any]:
    """The search space the study's latest sweep recorded, else the latest distribution of each parameter
    its trials drew."""
    from optuna.distributions import json_to_distribution

    recorded = study.user_attrs.get(SPACE_ATTR)
    if recorded is not None:
        return {name: json_to_distribution(text) for name, text in recorded.items()}
    space: dict[str, Any] = {}
    for trial in study.get_trials(deepcopy=False):
        space.update(trial.distributions)
    return space


def incompatibility(old, new) -> str | None:
    """Why Optuna's storages refuse `new` for a parameter stored with `old` (the rule of
    optuna.distributions.check_distribution_compatibility), or None."""
    if type(old) is not type(new):
        return "Optuna cannot change the kind of a stored parameter"
    if getattr(old, "log", None) != getattr(new, "log", None):
        return "Optuna cannot change the log scale of a stored parameter"
    if hasattr(old, "choices") and old != new:
        return "Optuna cannot change the choices of a stored parameter"
    return None


def check_continuation(study, storage, distributions: dict[str, Any], direction: str,
                       objective: dict[str, str]) -> list[str]:
    """Before a sweep continues the stored `study`: raises GdmError naming every difference Optuna cannot
    continue with (a parameter's choices, kind or log scale, the direction, the monitored metric); returns
    the differences it continues with (changed bounds, parameters added or dropped), to be said."""
    refused, continued = [], []
    stored_direction = study.direction.name.lower()
    if stored_direction != direction:
        refused.append(f"the study {stored_direction}s and this sweep has hydra.sweeper.direction={direction}")
    for key, value in objective.items():
        stored = study.user_attrs.get(key)
        if stored is not None and stored != value:
            refused.append(f"the study optimizes {key}={stored} and this sweep has {key}={value}")
    drawn: dict[str, Any] = {}
    for trial in study.get_trials(deepcopy=False):
        drawn.update(trial.distributions)
    stored_space = stored_search_space(study)
    for key, new in distributions.items():
        old = drawn.get(key, stored_space.get(key))
        why = None if old is None else incompatibility(old, new)
        if why is not None:
            refused.append(f"{key} was {describe(old)} and is now {describe(new)} ({why})")
        elif key not in stored_space:
            continued.append(f"{key}={describe(new)} is searched now (its earlier trials used one fixed value)")
        elif stored_space[key] != new:
            continued.append(f"{key} was {describe(stored_space[key])} and is now {describe(new)}")
    continued += [f"{key} is no longer searched (earlier trials drew it from {describe(old)})"
                  for key, old in stored_space.items() if key not in distributions]
    if refused:
        optuna = require_optuna()
        names = set(optuna.get_all_study_names(storage))
        fresh = next(f"{study.study_name}_{n}" for n in range(2, len(names) + 3)
                     if f"{study.study_name}_{n}" not in names)
        raise GdmError(f"hydra.sweeper.study_name={study.study_name} cannot be continued by this sweep: "
                       f"{'; '.join(refused)}; start a new study with hydra.sweeper.study_name={fresh}, or put "
                       "the sweep back as the study ran it.")
    return continued


def record_study(study, distributions: dict[str, Any], objective: dict[str, str]) -> None:
    """Stores in the study's user attributes what it optimizes (`objective`: monitor, monitor_mode) and this
    sweep's search space."""
    from optuna.distributions import distribution_to_json

    for key, value in objective.items():
        study.set_user_attr(key, value)
    study.set_user_attr(SPACE_ATTR, {name: distribution_to_json(d) for name, d in distributions.items()})
