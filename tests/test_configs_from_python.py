"""Every shipped data, metrics and model config is accepted as a Python user builds it: Hydra's compose API, then
`hydra.utils.instantiate` on the node, with OmegaConf containers as they come (no `_convert_`), as in a notebook."""

from __future__ import annotations

import pytest
from helpers import CONF, compose_config
from hydra.utils import instantiate
from omegaconf import DictConfig

from gdm.data.base import SplitDataModule
from gdm.models.base import GenerativeModule

DATA = sorted(p.stem for p in (CONF / "data").glob("*.yaml"))
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
# Each metrics option with a model config that picks it (fid: the default model's).
METRICS = {"fid": [], "pix2pix": ["model=pix2pix"], "translation": ["model=cyclegan"]}


def data_root(target: str, folders: dict) -> list[str]:
    """What a data config needs from the user on this machine: its root (a tiny folder of its layout), or for a
    torchvision set `data.download=true`, which defers opening the files to `prepare_data`."""
    for kind, root in folders.items():
        if target.endswith(kind):
            return [f"data.root={root}"]
    return ["data.download=true"] if target.endswith("TorchvisionDataModule") else []


@pytest.mark.parametrize("name", DATA)
@pytest.mark.slow
def test_shipped_data_configs_instantiate(name, image_folder, unpaired_folder, paired_folder, tmp_path):
    folders = {"ImageFolderDataModule": image_folder, "UnpairedFolderDataModule": unpaired_folder,
               "PairedFolderDataModule": paired_folder}
    target = compose_config([f"data={name}"], tmp_path).data._target_
    cfg = compose_config([f"data={name}", *data_root(target, folders)], tmp_path)
    datamodule = instantiate(cfg.data)
    assert isinstance(datamodule, SplitDataModule) and len(datamodule.image_shape) == 3


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.slow
def test_shipped_model_configs_instantiate(name, tmp_path):
    cfg = compose_config([f"model={name}"], tmp_path)  # with the data its config picks (pix2pix: the digit pairs)
    datamodule = instantiate(cfg.data)
    make_model = instantiate(cfg.model, _partial_=True)  # the nets are sized from the data, as gdm builds them
    model = make_model(image_shape=tuple(datamodule.image_shape), num_classes=datamodule.num_classes)
    assert isinstance(model, GenerativeModule) and sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("name", METRICS)
def test_shipped_metrics_configs_instantiate(name, tmp_path):
    cfg = compose_config([*METRICS[name], f"metrics={name}"], tmp_path)
    nodes = {key: node for key, node in cfg.metrics.items() if isinstance(node, DictConfig) and "_target_" in node}
    assert nodes
    for key, node in nodes.items():
        metric = instantiate(node)
        assert type(metric).__name__ == node._target_.rsplit(".", 1)[-1], key
