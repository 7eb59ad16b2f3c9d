"""Build the parts of a run from the composed config: everything is `hydra.utils.instantiate`."""

from __future__ import annotations

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from gdm.callbacks.config_in_checkpoint import ConfigInCheckpoint
from gdm.data.base import SplitDataModule
from gdm.errors import GdmError
from gdm.models.base import GenerativeModule


def build_datamodule(cfg: DictConfig) -> SplitDataModule:
    return instantiate(cfg.data)


def build_model(cfg: DictConfig, datamodule: SplitDataModule) -> GenerativeModule:
    model = instantiate(cfg.model, image_shape=tuple(datamodule.image_shape), num_classes=datamodule.num_classes)
    missing = model.requires - datamodule.provides
    if missing:
        raise GdmError(
            f"model={cfg.model._target_.rsplit('.', 1)[-1]} needs batches with {', '.join(sorted(missing))}, which "
            f"data={type(datamodule).__name__} does not provide: pick a dataset that has them."
        )
    return model


def _instantiate_group(group: DictConfig | None) -> list:
    if not group:
        return []
    return [instantiate(node) for node in group.values() if node is not None and "_target_" in node]


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    callbacks = _instantiate_group(cfg.get("callbacks")) + _instantiate_group(cfg.get("metrics"))
    callbacks.append(ConfigInCheckpoint(OmegaConf.to_container(cfg, resolve=True)))
    return callbacks


def build_loggers(cfg: DictConfig) -> list:
    return _instantiate_group(cfg.get("logger"))


def build_trainer(cfg: DictConfig, callbacks: list, loggers: list) -> L.Trainer:
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
