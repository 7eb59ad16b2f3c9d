"""Read gdm checkpoints: rebuild a trained model from a checkpoint alone (its composed config travels
inside it), and compose the config of a run that works on a checkpoint (eval, sample, resume).

    from gdm.checkpoints import load_model
    model = load_model("outputs/train/.../checkpoints/best.ckpt")
    threes = model.generate(range(16), labels=torch.full((16,), 3))   # a conditional model: 16 threes
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from gdm.callbacks.checkpoint_contents import CONFIG, CONFIG_SOURCE, STEP
from gdm.errors import GdmError, typed
from gdm.models.base import GenerativeModule

log = logging.getLogger(__name__)

# What a checkpoint decides for a run that evaluates or samples it, unless the command line says otherwise.
FROM_CHECKPOINT = ("model", "data", "metrics", "monitor", "monitor_mode")


def read_checkpoint(path: str | Path) -> dict:
    """A gdm checkpoint's contents, or one sentence saying why `path` is not one."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise GdmError(f"ckpt_path={path} is not a file: point it at a .ckpt in a run's checkpoints/ folder.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, not a torch file, or pickled objects we do not load
        raise GdmError(f"ckpt_path={path} cannot be read as a checkpoint ({type(err).__name__}: "
                       f"{str(err).splitlines()[0][:200]}): pick another one, e.g. the run's best.ckpt.") from None
    if CONFIG not in checkpoint:
        raise GdmError(f"{path} has no gdm config inside: it was not written by a gdm run.")
    return checkpoint


def checkpoint_step(checkpoint: dict) -> int | None:
    """gdm's step (training batches completed) at which a checkpoint was saved; None for a checkpoint written
    before gdm stored it."""
    return int(checkpoint[STEP]) if STEP in checkpoint else None


def model_name(config: dict | DictConfig) -> str:
    return str(config["model"]["_target_"]).rsplit(".", 1)[-1]


def check_same_model(cfg: DictConfig, checkpoint: dict, path: str | Path) -> None:
    """Resuming needs the checkpoint's model class; its state would not fit another."""
    saved, wanted = model_name(checkpoint[CONFIG]), model_name(cfg)
    if saved != wanted:
        raise GdmError(f"ckpt_path={path} holds a {saved} model, not a {wanted} (model={cfg.model._target_}): pick "
                       f"the checkpoint of a {wanted} run, or the {saved} model config.")


def command_line_keys() -> list[tuple[str, bool]]:
    """(key, deleted) for each override the user typed (`data=mnist` gives `data`); none outside Hydra."""
    if not HydraConfig.initialized():
        return []
    parsed = OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task))
    return [(o.key_or_group.replace("/", "."), o.is_delete()) for o in parsed]


def config_for_checkpoint(cfg: DictConfig, checkpoint: dict) -> DictConfig:
    """`cfg` with the checkpoint's model, data and metrics, except for the keys set on the command line."""
    # Before interpolation when the checkpoint has it: `paths.data_dir=` or `data=` here re-resolve data.root.
    if CONFIG_SOURCE not in checkpoint:
        log.warning("this checkpoint holds its config resolved only (written by an older gdm): its data paths and "
                    "metric features are used as they were; set data.root= (not paths.data_dir=) to move the data.")
    saved = OmegaConf.create(checkpoint.get(CONFIG_SOURCE) or checkpoint[CONFIG])
    merged = cfg.copy()
    with open_dict(merged):
        for key in FROM_CHECKPOINT:
            if key in saved:
                merged[key] = saved[key]
        for key, deleted in command_line_keys():
            if key.split(".")[0] not in FROM_CHECKPOINT:
                continue
            if deleted:
                parent, _, leaf = key.rpartition(".")
                node = OmegaConf.select(merged, parent) if parent else merged
                if node is not None and leaf in node:
                    del node[leaf]
            else:
                # merge=False: `data=mnist` replaces the checkpoint's data group instead of blending into it
                OmegaConf.update(merged, key, OmegaConf.select(cfg, key), merge=False, force_add=True)
    return merged


def check_fits(model: GenerativeModule, checkpoint: dict, path: str | Path) -> None:
    """Resuming: the checkpoint's weights must have this model's names and shapes (same class, other settings
    such as `model=cgan` vs `model=gan` or another image size would fail deep inside Lightning)."""
    optional = model.optional_state  # entries a resumed run may add or drop (match_optional_state)

    def shapes(state: dict) -> dict:
        return {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape") and not k.startswith(optional)}

    mine, theirs = shapes(model.state_dict()), shapes(checkpoint["state_dict"])
    differ = sorted(set(mine) ^ set(theirs)) or [k for k in mine if mine[k] != theirs[k]]
    if differ:
        raise GdmError(f"ckpt_path={path} does not fit this model ({differ[0]}: "
                       f"{theirs.get(differ[0], 'absent')} in the checkpoint, {mine.get(differ[0], 'absent')} here): "
                       f"the model or data settings differ from the run that wrote it{settings_hint(model, checkpoint)}.")


def settings_hint(model: GenerativeModule, checkpoint: dict) -> str:
    """The model settings to give back to fit a checkpoint: changed ones, and new ones its run predates."""
    saved = checkpoint.get("hyper_parameters", {})
    wanted = [f"model.{k}={typed(saved[k])}" for k, v in model.hparams.items()
              if k in saved and saved[k] != v and k not in SPEED_ONLY]
    wanted += [f"model.{k}=null" for k, v in model.hparams.items() if k not in saved and v is not None]
    return f"; it was written with {' '.join(wanted)}" if wanted else ""


# Settings that change how fast a model trains, not what the restored optimizers carry: no warning on resume.
SPEED_ONLY = frozenset({"channels_last"})


def changed_settings(model: GenerativeModule, checkpoint: dict) -> list[str]:
    """Model settings that differ from the checkpoint's, as `name: old -> new` (speed-only ones left out)."""
    saved = checkpoint.get("hyper_parameters", {})
    return [f"{k}: {saved[k]!r} -> {v!r}" for k, v in model.hparams.items()
            if k in saved and saved[k] != v and k not in SPEED_ONLY]


def changed_precision(cfg: DictConfig, checkpoint: dict) -> str | None:
    """`trainer.precision: old -> new` when a resumed run changes it (its steps before and after then differ in
    arithmetic; the restored optimizer state is cast, so it runs), else None."""
    saved = (checkpoint.get(CONFIG) or {}).get("trainer", {}).get("precision")
    wanted = cfg.get("trainer", {}).get("precision")
    aliases = {"32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed", "64": "64-true"}  # Lightning's short names
    if saved is None or wanted is None or aliases.get(str(saved), str(saved)) == aliases.get(str(wanted), str(wanted)):
        return None
    return f"trainer.precision: {saved} -> {wanted}"


def load_state(model: GenerativeModule, checkpoint: dict, path: str | Path) -> GenerativeModule:
    model.match_optional_state(checkpoint["state_dict"])
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise GdmError(f"ckpt_path={path} does not fit this model ({first[:200]}): the model or data settings "
                       "differ from the run that wrote it; drop the model/data overrides.") from None
    return model


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> GenerativeModule:
    checkpoint = read_checkpoint(path)
    hparams = checkpoint["hyper_parameters"]
    make_model = instantiate(checkpoint[CONFIG]["model"], _partial_=True, _convert_="all")
    model = make_model(image_shape=tuple(hparams["image_shape"]), num_classes=hparams.get("num_classes"))
    return load_state(model, checkpoint, path).to(map_location).eval()
