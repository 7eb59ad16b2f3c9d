"""Each adversarial model's update is one plain method, `update(batch, batch_idx, opt_g, opt_d)`: Lightning's
training_step and a bare loop (the benchmarks' baseline) run the same code, to the same weights; on a GPU it
makes no host-device synchronisation."""

from __future__ import annotations

import functools
import re

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from gdm.models.base import NonFinitePolicy
from gdm.models.cyclegan import CycleGAN
from gdm.models.gan import GAN
from gdm.models.pix2pix import Pix2Pix
from gdm.nets.cyclegan import PatchDiscriminator, ResnetGenerator
from gdm.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from gdm.nets.pix2pix import UnetGenerator

SHAPE = (3, 16, 16)


def gan(**options) -> GAN:
    return GAN(SHAPE, functools.partial(DCGANGenerator, ngf=4), functools.partial(DCGANDiscriminator, ndf=4),
               ema_halflife_kimg=1.0, channels_last=True, **options)


def cyclegan(**options) -> CycleGAN:
    return CycleGAN(SHAPE, functools.partial(ResnetGenerator, ngf=4, n_blocks=1, norm="instance"),
                    functools.partial(PatchDiscriminator, ndf=4, n_layers=2, norm="instance"), pool_size=2,
                    **options)


def pix2pix(**options) -> Pix2Pix:
    return Pix2Pix((3, 32, 32), functools.partial(UnetGenerator, num_downs=5, ngf=4, norm="batch"),
                   functools.partial(PatchDiscriminator, ndf=4, n_layers=2, norm="batch"), **options)


MODELS = {"gan": (gan, ("image",), SHAPE), "cyclegan": (cyclegan, ("image_a", "image_b"), SHAPE),
          "pix2pix": (pix2pix, ("image_a", "image_b"), (3, 32, 32))}


class Batches(Dataset):
    def __init__(self, keys: tuple[str, ...], shape: tuple[int, int, int], n: int = 8):
        g = torch.Generator().manual_seed(1)
        self.images = {k: torch.rand(n, *shape, generator=g) * 2 - 1 for k in keys}
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {k: v[i] for k, v in self.images.items()}


def loader(keys, shape) -> DataLoader:
    return DataLoader(Batches(keys, shape), batch_size=2)


@pytest.mark.parametrize("grad_clip", [None, 0.01])
@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.slow
def test_lightning_and_a_plain_loop_train_the_same_weights(name, grad_clip):
    make, keys, shape = MODELS[name]
    make = functools.partial(make, grad_clip=grad_clip)
    torch.manual_seed(0)
    by_lightning = make()
    L.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False).fit(by_lightning, loader(keys, shape))
    torch.manual_seed(0)
    by_hand = make()
    optimizers = by_hand.plain_optimizers()
    for i, batch in enumerate(loader(keys, shape)):
        logs = by_hand.update(batch, i, *optimizers)
    by_hand.check_losses()
    assert all(not v.requires_grad for v in logs.values())
    theirs = by_lightning.state_dict()
    for key, value in by_hand.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, theirs[key]), key


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.slow
def test_grad_clip_bounds_each_optimizers_gradient_norm(name):
    make, keys, shape = MODELS[name]
    norms = {}
    for grad_clip in (None, 1e-3):
        torch.manual_seed(0)
        model = make(grad_clip=grad_clip)
        seen = norms[grad_clip] = []
        for optimizer in model.plain_optimizers():
            step = optimizer.step

            def recorded(*args, _optimizer=optimizer, _step=step, _seen=seen, **kwargs):
                grads = [p.grad for g in _optimizer.param_groups for p in g["params"] if p.grad is not None]
                _seen.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
                return _step(*args, **kwargs)

            optimizer.step = recorded
        for i, batch in enumerate(loader(keys, shape)):
            model.update(batch, i, *model.plain_optimizers())
    assert len(norms[1e-3]) == 8 and max(norms[1e-3]) <= 1e-3 * (1 + 1e-4)
    assert min(norms[None]) > 1e-2  # unclipped, the same steps' gradients are far larger


class SyncDebug(L.Callback):
    """torch.cuda.set_sync_debug_mode("error") from the start of each training batch to its end: any host-device
    synchronisation inside the step raises."""

    def __init__(self):
        self.batches = 0

    def on_train_batch_start(self, *args) -> None:
        torch.cuda.set_sync_debug_mode("error")

    def on_train_batch_end(self, *args) -> None:
        torch.cuda.set_sync_debug_mode(0)
        self.batches += 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_no_host_sync_inside_a_training_step_on_a_gpu(name, precision):
    make, keys, shape = MODELS[name]
    model, debug = make(), SyncDebug()
    # the read-back happens between batches, outside the checked window
    model.set_nonfinite_policy(NonFinitePolicy(check_every_n_steps=3))
    trainer = L.Trainer(max_epochs=1, accelerator="gpu", devices=1, precision=precision, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        log_every_n_steps=1000, callbacks=[debug])
    try:
        trainer.fit(model, loader(keys, shape))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert debug.batches == 4
    # The same in a plain loop of the update.
    model.trainer = None  # detached: the plain loop below
    model.__dict__.pop("_plain_optimizers", None)
    optimizers = model.plain_optimizers()
    batches = [{k: v.cuda() for k, v in b.items()} for b in loader(keys, shape)]
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i, batch in enumerate(batches):
            model.update(batch, i, *optimizers)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    model.check_losses()


@pytest.mark.parametrize("model, refused", [("gan", True), ("cyclegan", True), ("pix2pix", True), ("vae", False)])
@pytest.mark.slow
def test_trainer_gradient_clip_val_points_manual_optimization_to_model_grad_clip(tmp_path, model, refused):
    from helpers import compose_config

    from gdm.errors import GdmError
    from gdm.tasks.build import build_datamodule, build_model, check_gradient_clipping

    data = {"cyclegan": "digits_colour", "pix2pix": "digits_paired"}.get(model, "digits")
    cfg = compose_config([f"model={model}", f"data={data}", "trainer.gradient_clip_val=0.5"], tmp_path)
    built = build_model(cfg, build_datamodule(cfg), from_checkpoint=True)
    if refused:
        with pytest.raises(GdmError,
                           match=r"trainer.gradient_clip_val=0.5 clips only .* set model.grad_clip=0.5 instead"):
            check_gradient_clipping(cfg, built)
    else:  # automatic optimization: Lightning clips
        check_gradient_clipping(cfg, built)


@pytest.mark.slow
def test_a_model_with_its_own_grad_clip_refuses_the_trainers_too(tmp_path):
    from helpers import compose_config

    from gdm.errors import GdmError
    from gdm.tasks.build import build_datamodule, build_model, check_gradient_clipping

    cfg = compose_config(["model=flow", "model.grad_clip=1.0", "trainer.gradient_clip_val=0.5"], tmp_path)
    built = build_model(cfg, build_datamodule(cfg), from_checkpoint=True)
    with pytest.raises(GdmError, match=r"model.grad_clip=1.0 and trainer.gradient_clip_val=0.5 both clip the gradients "
                                       r"of model=(flow|Flow): set one of them"):
        check_gradient_clipping(cfg, built)


@pytest.mark.parametrize(("overrides", "message"), [
    (["trainer.gradient_clip_val=abc"], "trainer.gradient_clip_val='abc' must be a number >= 0"),
    (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1 must be a number >= 0"),
    (["trainer.gradient_clip_algorithm=sign", "trainer.gradient_clip_val=1"],
     "trainer.gradient_clip_algorithm='sign' is not one of Lightning's: choose norm"),
    (["trainer.gradient_clip_algorithm=value"],  # alone, it would silently do nothing
     "trainer.gradient_clip_algorithm=value says how trainer.gradient_clip_val clips, and that is not set"),
    (["model.grad_clip=1.0", "trainer.gradient_clip_algorithm=value"],  # model.grad_clip clips the norm anyway
     "trainer.gradient_clip_algorithm=value says how trainer.gradient_clip_val clips, and that is not set"),
])
def test_trainer_clipping_values_are_refused_in_one_sentence(tmp_path, overrides, message):
    from helpers import compose_config

    from gdm.errors import GdmError
    from gdm.tasks.build import build_datamodule, build_model, check_gradient_clipping

    cfg = compose_config(["model=flow", *overrides], tmp_path)
    built = build_model(cfg, build_datamodule(cfg), from_checkpoint=True)
    with pytest.raises(GdmError, match="^" + re.escape(message)):
        check_gradient_clipping(cfg, built)


@pytest.mark.slow
@pytest.mark.parametrize(("overrides", "message"), [
    (["model=flow", "model.grad_clip=1.0", "trainer.gradient_clip_val=0.5"], "both clip the gradients"),
    (["model=flow", "data.batch_size=5000"], "data.batch_size=5000 is larger than the"),  # a check of the trainer
])
def test_a_run_refused_before_training_writes_no_config_yaml(tmp_path, overrides, message):
    """config.yaml says what a run ran: one refused by a check that needs the built model or trainer records
    nothing, as one refused by the option checks before it."""
    from helpers import compose_config

    from gdm.errors import GdmError
    from gdm.tasks.train import train

    with pytest.raises(GdmError, match=message):
        train(compose_config(overrides, tmp_path))
    assert not (tmp_path / "config.yaml").exists()


@pytest.mark.parametrize(("grad_clip", "trainer_clip", "algorithm", "expected"), [
    (None, 0.5, "value", (0.5, "value")),  # the trainer's algorithm, as it says
    (None, 0.5, None, (0.5, "norm")),      # Lightning's default
    (1.0, None, None, (1.0, "norm")),      # model.grad_clip: an L2 norm (DDPM's)
    (None, None, None, None),
])
def test_diffusion_and_flow_clip_as_the_options_say(grad_clip, trainer_clip, algorithm, expected):
    from gdm.models.flow import Flow
    from gdm.nets.unet import UNet

    model = Flow((1, 8, 8), functools.partial(UNet, channels=8, channel_mult=(1,), num_res_blocks=1),
                 grad_clip=grad_clip)
    seen = []
    model.clip_gradients = lambda optimizer, gradient_clip_val, gradient_clip_algorithm: seen.append(
        (gradient_clip_val, gradient_clip_algorithm))
    model.configure_gradient_clipping(None, trainer_clip, algorithm)
    assert seen == ([expected] if expected else [])
