"""Configs written before an option was renamed, in today's keys: a checkpoint's config (eval, sample, translate,
resume, `load_model`) and a run's config.yaml (`task=compare`) read as what they ran.

- The GAN's `model.ema_decay` d (per batch of B images; null or 0: no EMA) became `model.ema_halflife_kimg` /
  `model.ema_rampup_ratio`: the same average is a half-life of B ln 2 / -ln d images without a ramp-up.
"""

from __future__ import annotations

import logging
import math
from collections.abc import MutableMapping

log = logging.getLogger(__name__)


def upgrade_config(config: MutableMapping, batch_size: object = None) -> MutableMapping:
    """`config` (a run's composed config, as a dict or DictConfig; or a model's settings alone, given the
    `batch_size` it trained with) in today's keys, changed in place and returned; a log line per key renamed."""
    model = config if batch_size is not None else config.get("model")
    if isinstance(model, MutableMapping) and "ema_decay" in model and "ema_halflife_kimg" not in model:
        decay = model.pop("ema_decay")
        batch = batch_size if batch_size is not None else (config.get("data") or {}).get("batch_size")
        batch = batch if isinstance(batch, int) else 64
        halflife = round(batch * math.log(2) / -math.log(decay) / 1000, 6) if decay else None
        model["ema_halflife_kimg"], model["ema_rampup_ratio"] = halflife, None
        if batch_size is None:  # the run's config: said once, not again for the settings beside it
            log.info(f"model.ema_decay={decay} (an option of older gdm) read as model.ema_halflife_kimg={halflife} "
                     "model.ema_rampup_ratio=null, the same average.")
    return config
