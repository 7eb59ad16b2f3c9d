"""Read gdm checkpoints: rebuild a trained model from a checkpoint alone (its composed config travels
inside it), and compose the config of a run that works on a checkpoint (eval, sample, resume).

    from gdm.checkpoints import load_model
    model = load_model("outputs/train/.../checkpoints/best.ckpt")
    threes = model.generate(range(16), labels=torch.full((16,), 3))   # a conditional model: 16 threes
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from gdm.callbacks.checkpointing import CONFIG, CONFIG_SOURCE, STEP
from gdm.config_upgrades import upgrade_config, upgrade_model_settings
from gdm.errors import GdmError, typed
from gdm.models.autoencoder import AutoencoderModule
from gdm.models.base import GenerativeModule
from gdm.models.latent import LatentSpace

log = logging.getLogger(__name__)

# What a checkpoint decides for a run that evaluates or samples it, unless the command line says otherwise.
FROM_CHECKPOINT = ("model", "data", "metrics", "monitor", "monitor_mode")
# Data settings that define what the weights compute (a translator's direction, the image size and channels
# the nets were trained on): taken from the checkpoint even when the command line picks another data group
# (`data=paired data.root=DIR`), whose defaults would otherwise reset them.
TRAINED_DATA = ("direction", "image_size", "channels")
# Model options that define what the weights compute (EDM's preconditioning: the net learned its inputs' scales;
# a diffusion model's formulation and DDPM's noise schedule: what its net predicts, at which noise levels): a run
# on a checkpoint refuses other values, and so does resuming one (the rest of the run would train another function).
MODEL_TRAINED = ("c_noise_scale", "sigma_data", "formulation", "beta_schedule", "train_timesteps")
# What draws a reflow's pairs, which a resumed run draws again: it may not change (the teacher's file may move).
PAIRS_SETTINGS = ("teacher_pairs", "teacher_sampler", "teacher_steps")
# All model settings that define what the weights compute without changing their shapes (the shapes are compared
# separately): a run on a checkpoint refuses other values (the classes only for a conditional model). Others
# (pix2pix's inference mode, the VAE's iwae_k) are evaluation choices: used, logged and recorded.
TRAINED_HPARAMS = ("image_shape", "num_classes", "direction", *MODEL_TRAINED)
# Model keys that say where a file is now, not what the weights compute: a run on a checkpoint may change them.
LOCATIONS = ("model.autoencoder",)
# The config key a user types to set a model setting that the task derives from the data.
SETTING_KEYS = {"image_shape": "data.image_size / data.channels", "num_classes": "the data's classes (data=)",
                "direction": "data.direction"}


def read_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict:
    """A gdm checkpoint's contents, or one sentence saying why `path` (the value of config `key`) is not one."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise GdmError(f"{key}={path} is not a file: point it at a .ckpt in a run's checkpoints/ folder.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, not a torch file, or pickled objects we do not load
        # torch's own text for an unpickling failure advises weights_only=False, which no gdm option sets
        reason = ("not a torch file, or one holding objects other than tensors and plain values"
                  if isinstance(err, pickle.UnpicklingError) else f"{type(err).__name__}: "
                  f"{str(err).splitlines()[0][:200]}")
        raise GdmError(f"{key}={path} cannot be read as a checkpoint ({reason}): pick another one, e.g. the run's "
                       "best.ckpt.") from None
    if CONFIG not in checkpoint:
        raise GdmError(f"{path} has no gdm config inside: it was not written by a gdm run.")
    upgrade_config(checkpoint[CONFIG], path)
    batch = (checkpoint[CONFIG].get("data") or {}).get("batch_size")
    for settings in (checkpoint.get(CONFIG_SOURCE, {}).get("model"), checkpoint.get("hyper_parameters")):
        if settings is not None:  # the settings the run was given, and those the model was built with
            upgrade_model_settings(settings, batch)
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


def check_model_group(cfg: DictConfig, checkpoint: dict, path: str | Path, task: str) -> None:
    """A checkpoint's task (eval, sample, translate) with a model group typed (`model=diffusion`) needs the
    checkpoint's model class: another class would load weights of the same shapes into another model (a flow's
    U-Net into EDM's preconditioning) and report numbers of neither, or be ignored."""
    if ("model", False) not in command_line_keys():
        return
    saved, wanted = model_name(checkpoint[CONFIG]), model_name(cfg)
    if saved != wanted:
        raise GdmError(f"model= picks a {wanted} model, but ckpt_path={path} holds a {saved}: task={task} runs "
                       f"the checkpoint's model, so drop model= (or point ckpt_path at a {wanted} run's checkpoint).")


def command_line_keys() -> list[tuple[str, bool]]:
    """(key, deleted) for each override the user typed (`data=mnist` gives `data`); none outside Hydra."""
    if not HydraConfig.initialized():
        return []
    parsed = OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task))
    return [(o.key_or_group.replace("/", "."), o.is_delete()) for o in parsed]


def config_for_checkpoint(cfg: DictConfig, checkpoint: dict) -> DictConfig:
    """`cfg` with the checkpoint's model, data and metrics, except for the keys set on the command line; the
    data settings the weights were trained for (`TRAINED_DATA`) stay the checkpoint's unless typed as
    `data.KEY=` (a typed value that contradicts the weights is refused once the model is built:
    `check_trained_settings`), and the checkpoint's monitor follows `metrics.features` unless `monitor=` is
    typed."""
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
        typed = {key for key, deleted in command_line_keys() if not deleted}
        trained = checkpoint["gdm_config"].get("data") or {}
        for name in TRAINED_DATA:
            if name in trained and name in merged.data and f"data.{name}" not in typed:
                merged.data[name] = trained[name]
        follow_features(merged, checkpoint["gdm_config"], typed)
    return merged


def follow_features(merged: DictConfig, trained: dict, typed: set[str]) -> None:
    """A monitor that named the checkpoint's feature network (`val/fid_digits`) names the one this run
    measures with (`metrics.features=dinov2`: `val/fid_dinov2`), unless the user typed `monitor=`."""
    old, new = (trained.get("metrics") or {}).get("features"), OmegaConf.select(merged, "metrics.features")
    monitor = str(OmegaConf.select(merged, "monitor"))
    if "monitor" in typed or not old or old == new or f"_{old}" not in monitor:
        return
    head, _, tail = monitor.rpartition(f"_{old}")
    merged.monitor = f"{head}_{new}{tail}"


def plain(value):
    """A setting as comparable data: tuples (hparams as built) and lists (as stored) alike."""
    return list(value) if isinstance(value, tuple) else value


def check_trained_settings(model: GenerativeModule, checkpoint: dict, path: str | Path,
                           resizable: bool = False, cfg: DictConfig | None = None) -> list[str]:
    """A model built to receive a checkpoint's weights (eval): GdmError in one sentence naming both values
    when a setting the weights were trained for (`TRAINED_HPARAMS`, or any that changes the weights' shapes)
    differs; `resizable` (a fully convolutional translator): another image size is allowed. Returns the
    settings that differ and are used, as `name: old -> new`, for the log and the record. `cfg`: the run's config,
    whose nets' own settings (`model.net.channels`) are named in the refusal when they do not fit the weights, and
    returned among the changes when they do (`model.net.dropout`)."""
    saved = checkpoint.get("hyper_parameters", {})
    unused = {*SPEED_ONLY, *(() if getattr(model, "conditional", False) else ("num_classes",))}
    changed = {k: (saved[k], v) for k, v in model.hparams.items()
               if k in saved and plain(saved[k]) != plain(v) and k not in unused}

    def refuse(names: list[str], why: str) -> GdmError:
        said = "; ".join(f"{SETTING_KEYS.get(k, 'model.' + k)} gives {k}={typed(plain(changed[k][1]))}, the "
                         f"checkpoint's is {typed(plain(changed[k][0]))}" for k in names)
        if ("model", False) in command_line_keys():  # the group's defaults replaced the checkpoint's settings
            return GdmError(f"ckpt_path={path} {why} ({said}): model= replaces the checkpoint's model settings "
                            "with that config's, so drop model= to use the model as it was trained.")
        return GdmError(f"ckpt_path={path} {why} ({said}): drop those overrides, or set them to the "
                        "checkpoint's values.")

    trained = [k for k in TRAINED_HPARAMS if k in changed]
    if "image_shape" in trained and resizable:
        old, new = changed["image_shape"]
        if old[0] == new[0]:  # same channels, another size: a fully convolutional net runs at any size
            trained.remove("image_shape")
    if trained:
        raise refuse(trained, "holds weights trained for other settings than this run's")
    try:
        check_fits(model, checkpoint, path, cfg)
    except GdmError:
        if not changed:  # a net's own setting (model.net.channels): check_fits names it
            raise
        raise refuse(sorted(changed), "holds weights whose shapes do not fit this run's settings") from None
    return ([f"{k}: {typed(plain(old))} -> {typed(plain(new))}" for k, (old, new) in changed.items()]
            + net_changes(cfg, checkpoint))


def check_typed_settings(cfg: DictConfig, checkpoint: dict, path: str | Path, task: str,
                         hint: str = "") -> None:
    """task=sample / translate rebuild the model from the checkpoint alone: a model or trained data setting
    typed on the command line (`model.latent_dim=64`, `data.image_size=64`) would be ignored, so one that
    differs from the checkpoint's is refused in one sentence naming both values (`hint`: what to use
    instead)."""
    check_model_group(cfg, checkpoint, path, task)
    trained = OmegaConf.create(checkpoint["gdm_config"])
    for key, deleted in command_line_keys():
        group, _, name = key.partition(".")
        trained_setting = group == "model" or (group == "data" and name in TRAINED_DATA)
        if deleted or not name or not trained_setting or key in LOCATIONS:
            continue
        wanted, saved = OmegaConf.select(cfg, key), OmegaConf.select(trained, key)
        if saved != wanted:
            raise GdmError(f"{key}={typed(wanted)} contradicts ckpt_path={path}, whose model was trained "
                           f"with {key}={typed(saved)}: task={task} uses the checkpoint's model as it was "
                           f"trained, so drop the override{hint}.")


def check_fits(model: GenerativeModule, checkpoint: dict, path: str | Path, cfg: DictConfig | None = None) -> None:
    """Resuming or evaluating: the checkpoint's weights must have this model's names and shapes (same class; other
    settings such as `model=cgan` vs `model=gan` or another image size would fail deep inside Lightning). GdmError
    otherwise, naming the settings of a net inside the model that differ from `cfg`'s (`model.net.channels`) when
    there are any, else the first tensor that differs."""
    optional = model.optional_state  # entries a resumed run may add or drop (match_optional_state)
    model.upgrade_state(checkpoint["state_dict"])

    def shapes(state: dict) -> dict:
        return {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape") and not k.startswith(optional)}

    mine, theirs = shapes(model.state_dict()), shapes(checkpoint["state_dict"])
    differ = sorted(set(mine) ^ set(theirs)) or [k for k in mine if mine[k] != theirs[k]]
    if not differ:
        return
    tensor = f"{differ[0]}: {theirs.get(differ[0], 'absent')} in the checkpoint, {mine.get(differ[0], 'absent')} here"
    nets = changed_net_settings(cfg, checkpoint)
    if nets:
        said = "; ".join(f"{key}={typed(new)} here, the checkpoint's is {typed(old)}" for key, old, new in nets)
        raise GdmError(f"ckpt_path={path} does not fit this model ({tensor}), whose nets' settings differ from the "
                       f"checkpoint's ({said}): drop those overrides, or set them to the checkpoint's values.")
    raise GdmError(f"ckpt_path={path} does not fit this model ({tensor}): the model or data settings differ from "
                   f"the run that wrote it{settings_hint(model, checkpoint)}.")


def changed_net_settings(cfg: DictConfig | None, checkpoint: dict) -> list[tuple[str, object, object]]:
    """(key, checkpoint's value, this run's value) for each setting of a net built inside the model
    (`model.net.channels`, `model.generator.ngf`: config groups, not the model's hyperparameters) whose value
    differs between `cfg` and the run that wrote `checkpoint`. Empty when the two are not the same model and nets
    with other values (another model group, e.g. `model=cgan` on a GAN's checkpoint: a model or net setting that
    one side lacks), where a value is not what to change."""
    saved = ((checkpoint.get(CONFIG) or {}).get("model")) or {}
    if cfg is None or OmegaConf.select(cfg, "model") is None:
        return []
    wanted = OmegaConf.to_container(cfg.model, resolve=True)
    if set(saved) != set(wanted) or saved.get("_target_") != wanted.get("_target_"):
        return []
    found = []
    for name in sorted(saved):
        old, new = saved[name], wanted[name]
        if not (isinstance(old, dict) and isinstance(new, dict)):
            continue  # the model's own settings: its hyperparameters, named by settings_hint
        if set(old) != set(new):
            return []
        found += [(f"model.{name}.{key}", old[key], new[key]) for key in sorted(old)
                  if plain(old[key]) != plain(new[key])]
    return found


def settings_hint(model: GenerativeModule, checkpoint: dict) -> str:
    """The model settings to give back to fit a checkpoint: changed ones, and new ones its run predates."""
    saved = checkpoint.get("hyper_parameters", {})
    wanted = [f"model.{k}={typed(saved[k])}" for k, v in model.hparams.items()
              if k in saved and saved[k] != v and k not in SPEED_ONLY]
    wanted += [f"model.{k}=null" for k, v in model.hparams.items() if k not in saved and v is not None]
    return f"; it was written with {' '.join(wanted)}" if wanted else ""


# Settings that change how fast a model trains, not what the restored optimizers carry: no warning on resume.
SPEED_ONLY = frozenset({"channels_last"})


def changed_settings(model: GenerativeModule, checkpoint: dict, path: str | Path,
                     cfg: DictConfig | None = None) -> list[str]:
    """Model settings of a resumed run that differ from the checkpoint's, as `name: old -> new` (speed-only ones
    left out), its nets' settings in `cfg` among them (`model.net.dropout: 0.1 -> 0.3`); one sentence for a model
    option the weights were trained for (`MODEL_TRAINED`)."""
    saved = checkpoint.get("hyper_parameters", {})
    if (saved.get("teacher") is None) != (model.hparams.get("teacher") is None):
        raise GdmError(f"ckpt_path={path} is a reflow of model.teacher={saved['teacher']}, whose pairs a resumed run "
                       "draws again: set model.teacher to where that file is now." if saved.get("teacher") else
                       f"ckpt_path={path} trained on independent pairs, not a teacher's: drop model.teacher to resume "
                       "it, or start a new run for the reflow.")
    changed = {k: (saved[k], v) for k, v in model.hparams.items()
               if k in saved and plain(saved[k]) != plain(v) and k not in SPEED_ONLY}
    trained = [k for k in (*MODEL_TRAINED, *PAIRS_SETTINGS) if k in changed]
    if trained:
        said = "; ".join(f"model.{k}={typed(plain(changed[k][1]))}, the checkpoint's is "
                         f"{typed(plain(changed[k][0]))}" for k in trained)
        raise GdmError(f"ckpt_path={path} holds weights trained with other settings than this run's ({said}): "
                       "resume with the checkpoint's values, or start a new run.")
    return [f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items()] + net_changes(cfg, checkpoint)


def net_changes(cfg: DictConfig | None, checkpoint: dict) -> list[str]:
    """`changed_net_settings` as `key: old -> new`, for the log and the record."""
    return [f"{key}: {typed(old)} -> {typed(new)}" for key, old, new in changed_net_settings(cfg, checkpoint)]


# Data settings that change how fast batches arrive, not what is trained on.
DATA_SPEED_ONLY = frozenset({"num_workers", "pin_memory", "verify"})


def changed_data(cfg: DictConfig, checkpoint: dict) -> list[str]:
    """Data settings of a resumed run that differ from the checkpoint's, as `data.KEY: old -> new` (the split
    seed, the batch size, the direction, another data group's keys: what the rest of the run trains on)."""
    saved = (checkpoint.get("gdm_config") or {}).get("data") or {}
    wanted = OmegaConf.to_container(cfg.data, resolve=True) if "data" in cfg else {}
    keys = sorted((set(saved) | set(wanted)) - DATA_SPEED_ONLY)
    return [f"data.{k}: {typed(saved.get(k, 'absent'))} -> {typed(wanted.get(k, 'absent'))}" for k in keys
            if plain(saved.get(k, "absent")) != plain(wanted.get(k, "absent"))]


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
    model.upgrade_state(checkpoint["state_dict"])
    model.match_optional_state(checkpoint["state_dict"])
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise GdmError(f"ckpt_path={path} does not fit this model ({first[:200]}): the model or data settings "
                       "differ from the run that wrote it; drop the model/data overrides.") from None
    return model


def load_model(path: str | Path, map_location: str | torch.device = "cpu",
               autoencoder: str | Path | None = None) -> GenerativeModule:
    """The trained model of checkpoint `path`, in eval mode. A latent diffusion / flow model reads its autoencoder's
    architecture from the checkpoint it was trained with, or from `autoencoder` where that file is now (the
    weights come from `path`, where the frozen copy travels)."""
    checkpoint = read_checkpoint(path)
    hparams = checkpoint["hyper_parameters"]
    image_shape = tuple(hparams["image_shape"])
    make_model = instantiate(checkpoint[CONFIG]["model"], _partial_=True, _convert_="all")
    trained_with = hparams.get("autoencoder")
    latent = {"latent": load_autoencoder(autoencoder or trained_with, image_shape)} if trained_with else {}
    model = make_model(image_shape=image_shape, num_classes=hparams.get("num_classes"), **latent)
    return load_state(model, checkpoint, path).to(map_location).eval()


def load_teacher(path: str | Path, image_shape: tuple[int, ...], resuming: bool = False,
                 key: str = "model.teacher") -> GenerativeModule:
    """The trained model of the checkpoint a reflow trains from (the value of config `key`), for data of
    `image_shape` (C, H, W); `resuming`: for a resumed run (the message says why it needs the file). Raises GdmError
    when the file is missing or was trained on images of another shape (the model checks the family:
    `gdm.models.flow.Flow.start_from_teacher`)."""
    if not Path(path).expanduser().is_file():
        raise GdmError(f"{key}={path} is not a file: " + (
            f"a resumed reflow draws its pairs again from its teacher: set {key} to where that file is now."
            if resuming else "point it at a trained flow's checkpoint, e.g. a model=flow run's checkpoints/last.ckpt."))
    trained = tuple(read_checkpoint(path, key)["hyper_parameters"]["image_shape"])
    if trained != tuple(image_shape):
        raise GdmError(f"{key}={path} was trained on {' x '.join(map(str, trained))} images (channels x height x "
                       f"width), and this data's are {' x '.join(map(str, image_shape))}: train the reflow on the "
                       "teacher's data and image size.")
    return load_model(path)


def load_autoencoder(path: str | Path, image_shape: tuple[int, ...], key: str = "model.autoencoder") -> LatentSpace:
    """The latent space of the gdm AE or VAE checkpoint at `path` (the value of config `key`), for data of
    `image_shape` (C, H, W); its scale is 1 until fitted. Raises GdmError when the file is missing, is not an AE
    or VAE checkpoint, or was trained on images of another shape."""
    if not Path(path).expanduser().is_file():
        raise GdmError(f"{key}={path} is not a file: a latent model needs its autoencoder's checkpoint (the "
                       "architecture; the weights travel in the latent model's checkpoint), e.g. a model=vae run's "
                       "checkpoints/best.ckpt; point the key at where that file is now (on a checkpoint: task=eval or "
                       f"task=sample ckpt_path=... {key}=PATH; in Python: load_model(..., autoencoder=PATH)).")
    checkpoint = read_checkpoint(path, key)
    family = get_class(checkpoint[CONFIG]["model"]["_target_"])
    if not issubclass(family, AutoencoderModule):
        raise GdmError(f"{key}={path} is a {family.__name__} checkpoint, and a latent model needs an AE or VAE's: "
                       "train one with python run.py model=vae (or model=ae) on this data.")
    trained = tuple(checkpoint["hyper_parameters"]["image_shape"])
    if trained != tuple(image_shape):
        raise GdmError(f"{key}={path} was trained on {' x '.join(map(str, trained))} images (channels x height x "
                       f"width), and this data's are {' x '.join(map(str, image_shape))}: set the data's image size "
                       "and channels to the autoencoder's, or train an autoencoder on this data.")
    autoencoder = load_state(instantiate(checkpoint[CONFIG]["model"], _partial_=True, _convert_="all")(
        image_shape=trained, num_classes=checkpoint["hyper_parameters"].get("num_classes")), checkpoint, path)
    return LatentSpace(autoencoder, str(path))
