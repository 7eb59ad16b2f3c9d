"""Build the parts of a run from the composed config: everything is `hydra.utils.instantiate`."""

from __future__ import annotations

import logging
import os

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from gdm.callbacks.checkpointing import AtomicCheckpointIO, CheckpointContents
from gdm.callbacks.optuna_pruning import OptunaPruning
from gdm.checkpoints import load_autoencoder, load_teacher
from gdm.data.base import SplitDataModule
from gdm.errors import GdmError
from gdm.evaluation.evaluator import Evaluator
from gdm.metrics.features import build_features
from gdm.models.base import GenerativeModule, NonFinitePolicy
from gdm.models.clusters import cluster_inputs
from gdm.models.latent import LatentSpace
from gdm.optuna_search import TRIAL_ENV
from gdm.tasks.options import check_run_options, options_of, run_options

log = logging.getLogger(__name__)

# `_convert_="all"`: pass plain lists and dicts, never OmegaConf containers, so hyperparameters stored in
# checkpoints load with torch.load(weights_only=True).


def build_datamodule(cfg: DictConfig) -> SplitDataModule:
    with options_of("data", cfg.data):
        datamodule = instantiate(cfg.data, _convert_="all")
    if datamodule.image_shape[0] == 3 and OmegaConf.select(cfg, "metrics.features") == "digits":
        # The digits network was trained on grey digits: it reads colour images as their luminance.
        log.warning("metrics.features=digits measures colour images with a classifier of grey digits, so its FID "
                    "says little about them: use metrics.features=inception (or dinov2; digits_colour for the "
                    "embedded colour digits).")
    return datamodule


def build_model(cfg: DictConfig, datamodule: SplitDataModule, from_checkpoint: bool = False,
                training: bool = False) -> GenerativeModule:
    """The model of `cfg.model`, sized from the data. Before training, fitted to the training split (k-means
    clusters, class frequencies); `from_checkpoint`: not, as a checkpoint's state dict holds those (eval, resume).
    `training` (a new or resumed run): a reflow's teacher is loaded, to draw its pairs."""
    # Sized from the data: the shape is passed in Python, not merged into the config.
    # Checked on the class first, before its nets are sized (the wrong kind of data is the first thing to say),
    # then on the instance (a conditional GAN also needs labels).
    check_provides(cfg, get_class(cfg.model._target_).requires, datamodule)
    with options_of("model", cfg.model, ("data", cfg.data)):
        make_model = instantiate(cfg.model, _partial_=True, _convert_="all")
        image_shape = tuple(int(n) for n in datamodule.image_shape)
        built = {}  # models built from other checkpoints, passed in Python
        if cfg.model.get("autoencoder"):  # a latent diffusion / flow model: the frozen AE or VAE first
            built["latent"] = build_latent_space(cfg.model.autoencoder, image_shape, datamodule, from_checkpoint)
        if training and cfg.model.get("teacher"):  # reflow: the trained flow whose pairs this one learns
            built["teacher_model"] = load_teacher(cfg.model.teacher, image_shape, resuming=from_checkpoint)
        model = make_model(image_shape=image_shape, num_classes=datamodule.num_classes, **built)
        check_provides(cfg, model.requires, datamodule)
        if not from_checkpoint:
            if getattr(model, "clusters", None) is not None:  # self-conditioning: k-means on the training images
                model.fit_clusters(cluster_inputs(datamodule.split("train")))
            elif model.conditional:  # class-balanced samples follow the training split's class frequencies
                model.set_class_frequencies(datamodule.class_counts("train"))
    model.set_nonfinite_policy(build_nonfinite_policy(cfg))
    if cfg.get("compile", False):
        model.compile_nets()
    return model


def build_latent_space(path: str, image_shape: tuple[int, ...], datamodule: SplitDataModule,
                       from_checkpoint: bool) -> LatentSpace:
    """The autoencoder checkpoint's latent space; before training, its scale fitted to the training split's codes
    (a checkpoint's state dict holds it for eval and resume)."""
    latent = load_autoencoder(path, image_shape)
    if not from_checkpoint:
        images = (batch["image"] for batch in DataLoader(datamodule.split("train"), batch_size=256))
        scale = latent.fit_scale(images)
        log.info(f"latent space of {path}: {latent.shape[0]} dimensions, codes scaled by {scale:.4g} to unit "
                 "variance over the training split")
    return latent


def build_nonfinite_policy(cfg: DictConfig) -> NonFinitePolicy:
    """What a NaN / Inf training loss does (`callbacks.nonfinite_loss`, kept among the callbacks where users
    know it, though the model follows it without any callback); GdmError naming the key for a bad value."""
    node = OmegaConf.select(cfg, "callbacks.nonfinite_loss")
    if node is None:
        return NonFinitePolicy()
    with options_of("callbacks.nonfinite_loss", node):
        return instantiate(node, _convert_="all")


# What a batch key means to a user, and data options that have it.
KEY_WORDS = {"image": "single images", "label": "class labels", "image_a": "two image domains (A and B)",
             "image_b": "two image domains (A and B)", "aligned": "aligned pairs (A[i] and B[i] the same scene)",
             "label_a": "class labels in both domains", "label_b": "class labels in both domains"}
DATA_WITH = {"image": "data=digits, mnist, cifar10 or image_folder",
             "label": "data=digits, mnist, cifar10, or image_folder with one sub-folder per class",
             "image_a": "data=digits_colour, unpaired, monet, horse2zebra, ... (unpaired) "
                        "or digits_paired, facades, ...",
             "image_b": "data=digits_colour, unpaired, monet, horse2zebra, ... (unpaired) "
                        "or digits_paired, facades, ...",
             "aligned": "data=digits_paired, paired, facades, maps, edges2shoes, ...",
             "label_a": "data=digits_colour", "label_b": "data=digits_colour"}


def choice(cfg: DictConfig, group: str) -> str:
    """The option of a config group as the user typed it (`model=cgan`), else the class the config builds."""
    if HydraConfig.initialized() and HydraConfig.get().runtime.choices.get(group):
        return HydraConfig.get().runtime.choices[group]
    return str(cfg[group]["_target_"]).rsplit(".", 1)[-1]


def describe(keys: frozenset[str]) -> str:
    return " and ".join(dict.fromkeys(KEY_WORDS.get(k, k) for k in sorted(keys)))


def check_provides(cfg: DictConfig, requires: frozenset[str], datamodule: SplitDataModule) -> None:
    missing = requires - datamodule.provides
    if missing:
        raise GdmError(
            f"model={choice(cfg, 'model')} needs {describe(missing)}, which data={choice(cfg, 'data')} does not have "
            f"(it has {describe(datamodule.provides)}): pick other data, e.g. {DATA_WITH.get(min(missing), 'another')}."
        )


PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "32", "16", "bf16", "64")


def check_training_precision(precision: object) -> None:
    """trainer.precision for training: one of Lightning's (else GdmError); 16-true is refused (GdmError), bf16-true
    warned about. Both keep the weights and Adam's moments in half precision, without the float32 master copies of
    the -mixed precisions."""
    if precision is None:  # Lightning's default, 32-true
        return
    if str(precision) not in PRECISIONS or isinstance(precision, (bool, float)):
        raise GdmError(f"trainer.precision={precision} is not a precision: choose 32-true (the default), bf16-mixed "
                       "or 16-mixed (float32 weights, half-precision compute), or bf16-true.")
    if str(precision) == "16-true":
        raise GdmError("trainer.precision=16-true trains with weights and Adam's moments in float16: the second "
                       "moments underflow to 0 and the updates blow up (experiments/speed.md); use bf16-mixed or "
                       "16-mixed (float32 weights, half-precision compute), or bf16-true.")
    if str(precision) == "bf16-true":
        log.warning("trainer.precision=bf16-true keeps weights, Adam's moments and the model's validation values in "
                    "bfloat16 (8 significant bits): an update under ~0.4% of its weight rounds away (norm scales "
                    "near 1 stay where they are) and val/ values are coarse; bf16-mixed keeps float32 weights.")


def check_gradient_clipping(cfg: DictConfig, model: GenerativeModule) -> None:
    """trainer.gradient_clip_val is Lightning's clipping for models it optimizes; the adversarial models take their
    optimizer steps themselves (manual optimization), where Lightning would refuse it with advice that is no gdm
    option. A model with its own `grad_clip` refuses a second, different clipping from the trainer."""
    clip, algorithm = cfg.trainer.get("gradient_clip_val"), cfg.trainer.get("gradient_clip_algorithm")
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or clip < 0):
        raise GdmError(f"trainer.gradient_clip_val={clip!r} must be a number >= 0 (the gradient norm or value to clip "
                       "at) or null (no clipping).")
    if algorithm is not None and algorithm not in ("norm", "value"):
        raise GdmError(f"trainer.gradient_clip_algorithm={algorithm!r} is not one of Lightning's: choose norm (clip "
                       "the L2 norm of all gradients) or value (clip each element), or null (norm).")
    if algorithm is not None and not clip:
        raise GdmError(f"trainer.gradient_clip_algorithm={algorithm} says how trainer.gradient_clip_val clips, and "
                       "that is not set: set trainer.gradient_clip_val (model.grad_clip, where a model has it, "
                       "always clips the L2 norm), or drop the algorithm.")
    if clip and not model.automatic_optimization:
        raise GdmError(f"trainer.gradient_clip_val={clip} clips only models Lightning optimizes, and model="
                       f"{choice(cfg, 'model')} takes its optimizer steps itself: set model.grad_clip={clip} "
                       "instead (it clips each optimizer's gradients to that L2 norm).")
    own = getattr(model, "grad_clip", None)
    if clip and own:
        raise GdmError(f"model.grad_clip={own} and trainer.gradient_clip_val={clip} both clip the gradients of "
                       f"model={choice(cfg, 'model')}: set one of them (model.grad_clip=null, or "
                       "trainer.gradient_clip_val=null).")


def check_run_fits(cfg: DictConfig, datamodule: SplitDataModule, trainer: L.Trainer) -> None:
    """Before training: at least one training step per epoch, and images to evaluate on."""
    data, processes = f"data={choice(cfg, 'data')}", trainer.world_size
    train = len(datamodule.split("train")) // processes
    per = f" per process ({processes} processes)" if processes > 1 else ""
    if train < datamodule.batch_size:  # the last partial batch is dropped
        raise GdmError(f"data.batch_size={datamodule.batch_size} is larger than the {train} training images{per} of "
                       f"{data}, and the last partial batch is dropped, so no training step would run: set "
                       f"data.batch_size to at most {max(train, 1)}, or add images.")
    if trainer.limit_val_batches and len(datamodule.split("val")) == 0:
        raise GdmError(f"the validation split of {data} is empty, so no evaluation, metric or best checkpoint would "
                       "run: raise data.val_fraction, or add images.")


def _instantiate_group(name: str, group: DictConfig | None, skip: tuple[str, ...] = ()) -> list:
    built = []
    for key, node in (group or {}).items():
        if key not in skip and isinstance(node, DictConfig) and "_target_" in node:
            with options_of(f"{name}.{key}", node):
                built.append(instantiate(node, _convert_="all"))
    return built


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """The callbacks group (its `evaluator` gets the metrics group's metrics; its `nonfinite_loss` is the
    model's policy, `build_nonfinite_policy`), and what the checkpoints hold beside Lightning's entries."""
    callbacks = _instantiate_group("callbacks", cfg.get("callbacks"), skip=("evaluator", "nonfinite_loss"))
    evaluator = build_evaluator(cfg)
    # Before the Evaluator: it marks an epoch's end before the Evaluator saves that epoch's checkpoints.
    callbacks.append(CheckpointContents(cfg.seed, OmegaConf.to_container(cfg, resolve=True),
                                        OmegaConf.to_container(cfg), step=lambda: evaluator.batches))
    callbacks.append(evaluator)
    # an Optuna trial (gdm's sweeper names it in the job's environment) reports each evaluation to its study
    if TRIAL_ENV["number"] in os.environ:
        mode = cfg.get("monitor_mode", "min")
        pruning = OptunaPruning.for_this_job(cfg.monitor, mode, cfg.paths.output_dir)
        if pruning is not None:
            callbacks.append(pruning)
    return callbacks


def build_metrics(cfg: DictConfig) -> list:
    """The metric objects of the metrics group: its entries with a `_target_` (plain settings beside them
    configure the evaluator)."""
    return _instantiate_group("metrics", cfg.get("metrics"))


def build_evaluator(cfg: DictConfig, **overrides) -> Evaluator:
    """The Evaluator of `callbacks.evaluator`, with the metrics group's metrics and its feature network (loaded
    here, before training, so a bad weights file is the first thing said)."""
    metrics = cfg.metrics
    with options_of("metrics", metrics):
        features = build_features(metrics.features, inception_weights=metrics.get("inception_weights"),
                                  dinov2_weights=metrics.get("dinov2_weights"))
    built = build_metrics(cfg)
    with options_of("callbacks.evaluator", cfg.callbacks.evaluator):
        return instantiate(cfg.callbacks.evaluator, metrics=built, features=features, _convert_="all", **overrides)


def check_evaluation(cfg: DictConfig, evaluator: Evaluator, model: GenerativeModule,
                     datamodule: SplitDataModule) -> None:
    """Before training: each metric applies to this model and data, and the monitor is among the values they
    will log, else a GdmError naming the metrics keys."""
    nodes = [(key, node) for key, node in (cfg.get("metrics") or {}).items()
             if isinstance(node, DictConfig) and "_target_" in node]
    for (key, node), metric in zip(nodes, evaluator.metrics, strict=True):
        with options_of(f"metrics.{key}", node):
            metric.check(model, datamodule, evaluator.features.name)
    evaluator.check_monitor(model, datamodule)


def build_loggers(cfg: DictConfig) -> list:
    return _instantiate_group("logger", cfg.get("logger"))


def seed_option(cfg: DictConfig) -> int | None:
    """`seed`: an integer NumPy and Lightning can seed with, or null (Lightning draws one), else GdmError."""
    with options_of("", cfg):
        run_options(seed=cfg.get("seed"))
    return cfg.get("seed")


def build_trainer(cfg: DictConfig, callbacks: list, loggers: list) -> L.Trainer:
    check_run_options(cfg)
    if cfg.trainer.get("accelerator") in ("gpu", "cuda") and not torch.cuda.is_available():
        raise GdmError(
            f"trainer.accelerator={cfg.trainer.accelerator} but this machine has no usable GPU: use trainer=cpu, "
            "or trainer=default (it picks a GPU when there is one)."
        )
    plugins = [*instantiate(cfg.trainer.get("plugins") or []), AtomicCheckpointIO()]
    with options_of("trainer", cfg.trainer):
        return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=plugins)
