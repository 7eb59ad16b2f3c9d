"""Configs written before an option was renamed, in today's keys: a checkpoint's config (eval, sample, translate,
resume, `load_model`) and a run's config.yaml (`task=compare`) read as what they ran.

- The GAN's `model.ema_decay` d (per batch of B images; null or 0: no EMA) became `model.ema_halflife_kimg` /
  `model.ema_rampup_ratio`: the same average is a half-life of B ln 2 / -ln d images without a ramp-up.
- A diffusion model's net saw EDM's c_noise = ln(sigma) / 4 as it is before `model.c_noise_scale` (today 250 by
  default): an EDM model without the key (`p_mean` names a diffusion model) is read with c_noise_scale = 1 (DDPM
  has no c_noise).
"""

from __future__ import annotations

import logging
import math
from collections.abc import MutableMapping

log = logging.getLogger(__name__)

# Options renamed since, as a user may still type them: what to type instead (gdm.command_line says so).
RENAMED = {"model.ema_decay": ("model.ema_halflife_kimg=H model.ema_rampup_ratio=null, the same average for "
                               "H = B ln 2 / -ln d / 1000 at batch size B (d = 0.99 at batch 64: H = 4.4); "
                               "null: no EMA")}


def upgrade_config(config: MutableMapping, source: object) -> MutableMapping:
    """A run's composed config (a dict or DictConfig) in today's keys, changed in place and returned; a log line per
    option read in today's terms, naming `source` (the checkpoint or run directory the config came from)."""
    model, data = config.get("model"), config.get("data") or {}
    if isinstance(model, MutableMapping):
        for change in upgrade_model_settings(model, data.get("batch_size")):
            log.info(f"{source} has a config of older gdm: model.{change}.")
    return config


def upgrade_model_settings(model: MutableMapping, batch_size: object) -> list[str]:
    """A model's settings (its config, or a checkpoint's hyper-parameters) in today's keys, changed in place, for a
    run at `batch_size` images per batch; what changed, in words ("ema_decay read as ...")."""
    changes = []
    if "ema_decay" in model and "ema_halflife_kimg" not in model:
        decay = model.pop("ema_decay")
        batch = batch_size if isinstance(batch_size, int) else 64
        model["ema_halflife_kimg"] = round(batch * math.log(2) / -math.log(decay) / 1000, 6) if decay else None
        model["ema_rampup_ratio"] = None
        changes.append(f"ema_decay read as model.ema_halflife_kimg={model['ema_halflife_kimg']} "
                       "model.ema_rampup_ratio=null, the same average")
    if "p_mean" in model and "c_noise_scale" not in model and model.get("formulation", "edm") == "edm":
        model["c_noise_scale"] = 1.0
        changes.append("c_noise_scale, which older gdm did not have, read as 1: EDM's own c_noise, which it ran")
    return changes
