"""Rebuild a trained model from a gdm checkpoint alone (its composed config travels inside it).

    from gdm.checkpoints import load_model
    model = load_model("outputs/train/.../checkpoints/best.ckpt")
    threes = model.generate(range(16), labels=torch.full((16,), 3))   # a conditional model: 16 threes
"""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import instantiate

from gdm.errors import GdmError
from gdm.models.base import GenerativeModule


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> GenerativeModule:
    path = Path(path).expanduser()
    if not path.is_file():
        raise GdmError(f"ckpt_path={path} is not a file: point it at a .ckpt in a run's checkpoints/ folder.")
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    if "gdm_config" not in checkpoint:
        raise GdmError(f"{path} has no gdm config inside: it was not written by a gdm run.")
    hparams = checkpoint["hyper_parameters"]
    make_model = instantiate(checkpoint["gdm_config"]["model"], _partial_=True, _convert_="all")
    model = make_model(image_shape=tuple(hparams["image_shape"]), num_classes=hparams.get("num_classes"))
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()
