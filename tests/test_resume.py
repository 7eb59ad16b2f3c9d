"""Resuming a run: stopping after epoch k and resuming from last.ckpt ends bit for bit where the
uninterrupted run ends (weights, EMA, optimizers, schedulers, image pools, RNG streams)."""

from __future__ import annotations

import pytest
import torch
from helpers import TINY_CYCLEGAN, TINY_TRAINER, compose_config

from gdm.app import run

EXACT = ["++trainer.limit_train_batches=3", "trainer.check_val_every_n_epoch=1", "trainer.deterministic=true",
         "logger=none", "test_after_fit=false"]
MODELS = {
    "gan": ["model=gan", "data.image_size=16", "model.ema_decay=0.9", "metrics.fid.num_samples=40"],
    "cyclegan": [*(o for o in TINY_CYCLEGAN if o not in TINY_TRAINER), "model.pool_size=2", "trainer.accelerator=cpu",
                 "++trainer.limit_val_batches=1", "print_config=false"],
}


def equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_stop_and_resume_equals_one_uninterrupted_run(model, tmp_path):
    common = [*MODELS[model], *EXACT]
    run(compose_config([*common, "trainer.max_epochs=3"], tmp_path / "full"))
    run(compose_config([*common, "trainer.max_epochs=1"], tmp_path / "part"))
    run(compose_config([*common, "trainer.max_epochs=3", f"ckpt_path={tmp_path / 'part/checkpoints/last.ckpt'}"],
                       tmp_path / "resumed"))
    full, part, resumed = (torch.load(tmp_path / r / "checkpoints" / "last.ckpt", weights_only=True)
                           for r in ("full", "part", "resumed"))
    assert part["global_step"] < full["global_step"] == resumed["global_step"]
    assert not equal(part["state_dict"], full["state_dict"])
    for key in ("state_dict", "optimizer_states", "lr_schedulers", "gdm_rng_state"):
        assert equal(full[key], resumed[key]), key
    if model == "gan":
        assert any(k.startswith("generator_ema.") for k in full["state_dict"])
    else:  # the image pools (module extra state) are full and equal
        pools = [k for k in full["state_dict"] if k.endswith("_extra_state")]
        assert pools and all(full["state_dict"][k]["count"] == 2 for k in pools)
