"""Build the parts of a run from the composed config: everything is `hydra.utils.instantiate`."""

from __future__ import annotations

import lightning as L
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from gdm.atomic_checkpoint_io import AtomicCheckpointIO
from gdm.callbacks.config_in_checkpoint import ConfigInCheckpoint
from gdm.callbacks.optuna_pruning import OptunaPruning
from gdm.callbacks.random_state import RandomState
from gdm.data.base import SplitDataModule
from gdm.errors import GdmError
from gdm.models.base import GenerativeModule

# `_convert_="all"`: pass plain lists and dicts, never OmegaConf containers, so hyperparameters stored in
# checkpoints load with torch.load(weights_only=True).


def build_datamodule(cfg: DictConfig) -> SplitDataModule:
    return instantiate(cfg.data, _convert_="all")


def build_model(cfg: DictConfig, datamodule: SplitDataModule) -> GenerativeModule:
    # Sized from the data: the shape is passed in Python, not merged into the config.
    # Checked on the class first, before its nets are sized (the wrong kind of data is the first thing to say),
    # then on the instance (a conditional GAN also needs labels).
    check_provides(cfg, get_class(cfg.model._target_).requires, datamodule)
    make_model = instantiate(cfg.model, _partial_=True, _convert_="all")
    model = make_model(image_shape=tuple(int(n) for n in datamodule.image_shape), num_classes=datamodule.num_classes)
    check_provides(cfg, model.requires, datamodule)
    return model


def check_provides(cfg: DictConfig, requires: frozenset[str], datamodule: SplitDataModule) -> None:
    missing = requires - datamodule.provides
    if missing:
        raise GdmError(
            f"model={cfg.model._target_.rsplit('.', 1)[-1]} needs batches with {', '.join(sorted(missing))}, which "
            f"data={type(datamodule).__name__} does not provide: pick a dataset that has them."
        )


def _instantiate_group(group: DictConfig | None) -> list:
    if not group:
        return []
    return [instantiate(node, _convert_="all") for node in group.values() if node is not None and "_target_" in node]


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    callbacks = _instantiate_group(cfg.get("callbacks")) + build_metrics(cfg)
    callbacks.append(ConfigInCheckpoint(OmegaConf.to_container(cfg, resolve=True), OmegaConf.to_container(cfg)))
    callbacks.append(RandomState(cfg.seed))
    # an Optuna trial (gdm's sweeper names it in the job's environment) reports each evaluation to its study
    pruning = OptunaPruning.for_this_job(cfg.monitor, cfg.get("monitor_mode", "min"), cfg.paths.output_dir)
    if pruning is not None:
        callbacks.append(pruning)
    return callbacks


def build_metrics(cfg: DictConfig) -> list[L.Callback]:
    return _instantiate_group(cfg.get("metrics"))


def build_loggers(cfg: DictConfig) -> list:
    return _instantiate_group(cfg.get("logger"))


def build_trainer(cfg: DictConfig, callbacks: list, loggers: list) -> L.Trainer:
    if cfg.trainer.get("accelerator") in ("gpu", "cuda") and not torch.cuda.is_available():
        raise GdmError(
            f"trainer.accelerator={cfg.trainer.accelerator} but this machine has no usable GPU: use trainer=cpu, "
            "or trainer=default (it picks a GPU when there is one)."
        )
    plugins = [*instantiate(cfg.trainer.get("plugins") or []), AtomicCheckpointIO()]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=plugins)
