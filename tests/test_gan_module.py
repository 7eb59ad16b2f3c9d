"""The GAN LightningModule: seeded generation, EMA sampler, config errors, and real training steps."""

from __future__ import annotations

import math
import re
from functools import partial
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from gdm.checkpoints import changed_net_settings, check_fits, load_state
from gdm.data.digits import DigitsDataModule
from gdm.errors import GdmError
from gdm.models.gan import GAN
from gdm.nets.dcgan import DCGANDiscriminator, DCGANGenerator

SHAPE = (1, 16, 16)


pytestmark = pytest.mark.usefixtures("one_thread")


def make_gan(d_norm: str = "batch", seed: int = 0, **kwargs) -> GAN:
    torch.manual_seed(seed)
    kwargs.setdefault("latent_dim", 16)
    return GAN(SHAPE, generator=partial(DCGANGenerator, ngf=8),
               discriminator=partial(DCGANDiscriminator, ndf=8, norm=d_norm), **kwargs)


@pytest.fixture(scope="module")
def digits16() -> DigitsDataModule:
    dm = DigitsDataModule(image_size=16, batch_size=32)
    dm.setup()
    return dm


def fit(model: GAN, datamodule, batches: int, val_batches: int = 0) -> L.Trainer:
    trainer = L.Trainer(max_epochs=1, limit_train_batches=batches, limit_val_batches=val_batches,
                        num_sanity_val_steps=0, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        log_every_n_steps=1)  # training values are logged on the batches the logger writes
    trainer.fit(model, datamodule=datamodule)
    return trainer


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: nn.Module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in module.state_dict().items()
               if v.is_floating_point() and "running" not in k)


# ---- sampling -------------------------------------------------------------------------------


def test_generate_is_deterministic_and_batch_independent():
    gan = make_gan()
    images = gan.generate(range(8), seed=0)
    assert images.shape == (8, *SHAPE)
    assert images.dtype == torch.float32
    assert images.min() >= -1 and images.max() <= 1
    assert torch.equal(gan.generate(range(8), seed=0), images)
    halves = torch.cat([gan.generate(range(4), seed=0), gan.generate(range(4, 8), seed=0)])
    torch.testing.assert_close(halves, images, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(gan.generate(range(8), seed=1), images)
    torch.testing.assert_close(gan.generate(torch.tensor([5, 2]), seed=0), images[[5, 2]], rtol=1e-5, atol=1e-6)


def test_generate_uses_eval_mode_and_restores_training():
    gan = make_gan()
    gan.train()
    bn = next(m for m in gan.generator.modules() if isinstance(m, nn.BatchNorm2d))
    running = bn.running_mean.clone()
    gan.generate(range(4))
    assert gan.generator.training
    assert torch.equal(bn.running_mean, running)  # eval mode: no batch-statistics update
    gan.eval()
    gan.generate(range(4))
    assert not gan.generator.training


def test_generate_does_not_build_a_graph():
    gan = make_gan()
    assert not gan.generate(range(2)).requires_grad


def test_visuals():
    gan = make_gan(num_visuals=16, visual_seed=7)
    visuals = gan.visuals({})
    assert set(visuals) == {"samples"}
    images, nrow = visuals["samples"]
    assert images.shape == (16, *SHAPE) and nrow == 4
    assert torch.equal(images, gan.generate(range(16), seed=7))


def test_sampler_without_ema_is_the_generator():
    gan = make_gan()
    assert gan.generator_ema is None
    assert gan.sampler is gan.generator


def test_sampler_with_ema_is_the_ema_copy():
    gan = make_gan(ema_halflife_kimg=1.0)
    assert gan.sampler is gan.generator_ema.module
    assert gan.sampler is not gan.generator
    assert any(k.startswith("generator_ema.") for k in gan.state_dict())  # checkpoints keep it
    # generate() draws from the EMA copy: change G alone and the samples stay put.
    before = gan.generate(range(4))
    with torch.no_grad():
        for p in gan.generator.parameters():
            p.add_(0.1)
    assert torch.equal(gan.generate(range(4)), before)


def test_ema_update_rule():
    """StyleGAN2-ADA's G_ema: decay 0.5 ** (images / half-life), the half-life ramped up to 5% of the images seen;
    n_critic batches' images per G update."""
    gan = make_gan(ema_halflife_kimg=0.1, ema_rampup_ratio=0.05, n_critic=2)
    ema = gan.generator_ema.module
    w_g = gan.generator.main[0].weight
    w_e = ema.main[0].weight
    torch.testing.assert_close(w_e, w_g)
    with torch.no_grad():
        w_g.fill_(1.0)
    gan.after_g_step(64)  # the first update copies
    torch.testing.assert_close(w_e, torch.ones_like(w_e))
    assert float(gan.generator_ema.images_seen) == 128
    with torch.no_grad():
        w_g.fill_(3.0)
    gan.after_g_step(64)  # 256 images seen: half-life min(100, 0.05 x 256 = 12.8), so the decay is 0.5 ** (128 / 12.8)
    d = 0.5 ** 10
    torch.testing.assert_close(w_e, torch.full_like(w_e, d * 1.0 + (1 - d) * 3.0))
    for _ in range(60):  # 7,936 images: half-life 100 images (0.05 x 7,936 > 100)
        gan.after_g_step(64)
    assert gan.generator_ema.decay(128) == pytest.approx(0.5 ** (128 / 100))


def test_channels_last_gives_the_same_samples():
    plain = make_gan(seed=3)
    cl = make_gan(seed=3, channels_last=True)
    assert cl.generator.main[0].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(cl.generate(range(4)), plain.generate(range(4)), rtol=1e-4, atol=1e-5)


def _setup_on(model, device: str):
    """What a Trainer does first on `device`: LightningModule.setup, before optimizers and the device move."""
    model.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))
    model.setup("fit")
    return model


def test_channels_last_auto_picks_the_layout_by_device():
    from gdm.models.cyclegan import CycleGAN
    from gdm.nets.cyclegan import PatchDiscriminator, ResnetGenerator

    def cyclegan():
        return CycleGAN((3, 16, 16), partial(ResnetGenerator, ngf=8, n_blocks=1),
                        partial(PatchDiscriminator, ndf=8, n_layers=1), channels_last="auto")

    def nhwc(net):
        return next(m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))).weight.is_contiguous(
            memory_format=torch.channels_last)

    # Without a Trainer (a plain loop, task=sample): NCHW until a device says otherwise.
    gan = make_gan(channels_last="auto")
    assert gan.channels_last is False and not nhwc(gan.generator)
    # DCGAN on the CPU: NHWC measured faster; the CycleGAN's ResNet / PatchGAN nets: NCHW measured faster.
    assert _setup_on(gan, "cpu").channels_last is True and nhwc(gan.generator) and nhwc(gan.discriminator)
    model = _setup_on(cyclegan(), "cpu")
    assert model.channels_last is False and not nhwc(model.g_ab)
    # On CUDA both take NHWC (only the layout changes here: no GPU needed).
    model = _setup_on(cyclegan(), "cuda")
    assert model.channels_last is True and nhwc(model.g_ab) and nhwc(model.d_b)
    # true / false are kept whatever the device.
    assert _setup_on(make_gan(channels_last=False), "cuda").channels_last is False


def test_optimizer_state_takes_the_parameters_layout():
    # A checkpoint written with channels_last=true, resumed as NCHW: Adam's moments come back NHWC.
    gan = make_gan(channels_last=True)
    opt_g, _ = gan.configure_optimizers()
    gan.generator(torch.randn(2, 16)).mean().backward()
    opt_g.step()
    moments = opt_g.state[gan.generator.main[0].weight]
    assert moments["exp_avg"].is_contiguous(memory_format=torch.channels_last)
    before = {k: v.clone() for k, v in moments.items()}
    gan.to(memory_format=torch.contiguous_format)
    GAN.match_optimizer_state_layout([opt_g])
    moments = opt_g.state[gan.generator.main[0].weight]
    assert moments["exp_avg"].is_contiguous() and moments["exp_avg_sq"].is_contiguous()
    for k, v in before.items():
        torch.testing.assert_close(moments[k], v, rtol=0, atol=0)  # same values, other strides
    assert moments["step"].shape == ()  # the step count (not shaped like the weight) is left alone


def test_resume_warning_names_optimizer_settings_not_the_layout():
    from gdm.checkpoints import changed_settings

    saved = {"hyper_parameters": dict(make_gan(channels_last=True, lr_g=1e-4).hparams)}
    assert changed_settings(make_gan(channels_last="auto", lr_g=1e-4), saved, "last.ckpt") == []
    assert changed_settings(make_gan(channels_last=False, lr_g=3e-4), saved, "last.ckpt") == ["lr_g: 0.0001 -> 0.0003"]


def test_resume_warning_names_a_changed_net_setting_that_fits_the_weights():
    """model.net.dropout or model.generator.upsample keep the weights' shapes: a resumed run takes them, and its
    warning (and task=eval's record) names them as it names the model's own settings."""
    from omegaconf import OmegaConf

    from gdm.checkpoints import changed_settings

    gan = make_gan()
    saved_model = {"generator": {"ngf": 8, "upsample": "transposed"}, "lr_g": 2e-4}
    saved = {"hyper_parameters": dict(gan.hparams), "gdm_config": {"model": saved_model}}
    same = OmegaConf.create({"model": saved_model})
    other = OmegaConf.create({"model": {**saved_model, "generator": {"ngf": 8, "upsample": "nearest"}}})
    assert changed_settings(gan, saved, "last.ckpt", same) == []
    assert changed_settings(gan, saved, "last.ckpt", other) == ["model.generator.upsample: transposed -> nearest"]


def test_resume_warning_names_a_changed_precision():
    from omegaconf import OmegaConf

    from gdm.checkpoints import changed_precision

    saved = {"gdm_config": {"trainer": {"precision": "32-true"}}}
    assert changed_precision(OmegaConf.create({"trainer": {"precision": "32-true"}}), saved) is None
    assert changed_precision(OmegaConf.create({"trainer": {"precision": "bf16-mixed"}}), saved) == \
        "trainer.precision: 32-true -> bf16-mixed"
    assert changed_precision(OmegaConf.create({"trainer": {"precision": 32}}), {"gdm_config": {"trainer": {}}}) is None
    for short, full in (("32", "32-true"), (32, "32-true"), ("16", "16-mixed"), ("bf16", "bf16-mixed")):  # aliases
        assert changed_precision(OmegaConf.create({"trainer": {"precision": short}}),
                                 {"gdm_config": {"trainer": {"precision": full}}}) is None


@pytest.mark.parametrize(("option", "value"), [("channels_last", "nhwc"), ("channels_last", 1.0), ("n_critic", 0),
                                               ("loss", "nope")])
def test_the_python_api_refuses_an_option_outside_its_type_naming_it(option, value):
    with pytest.raises(ValidationError) as caught:
        make_gan(**{option: value})
    assert {e["loc"][0] for e in caught.value.errors()} in ({option}, {0})  # get_loss takes the loss by position


def test_hyperparameters_saved_without_nets():
    gan = make_gan(loss="hinge", n_critic=3, lr_d=1e-4)
    assert gan.hparams.loss == "hinge"
    assert gan.hparams.n_critic == 3
    assert gan.hparams.lr_d == 1e-4
    assert "generator" not in gan.hparams and "discriminator" not in gan.hparams
    opt_g, opt_d = gan.configure_optimizers()
    assert opt_d.param_groups[0]["lr"] == 1e-4 and opt_g.param_groups[0]["lr"] == 2e-4
    assert opt_g.param_groups[0]["betas"] == (0.5, 0.999)
    assert {id(p) for p in opt_g.param_groups[0]["params"]} == {id(p) for p in gan.generator.parameters()}
    assert {id(p) for p in opt_d.param_groups[0]["params"]} == {id(p) for p in gan.discriminator.parameters()}


# ---- configuration errors -------------------------------------------------------------------


def test_wgan_gp_with_batch_norm_discriminator_raises():
    with pytest.raises(GdmError, match="norm=layer"):
        make_gan(loss="wgan-gp", d_norm="batch")


def test_wgan_gp_defaults_and_overrides():
    assert make_gan(loss="wgan-gp", d_norm="layer").gp_weight == 10.0
    assert make_gan(loss="wgan-gp", d_norm="batch", gp_weight=0.0).gp_weight == 0.0
    assert make_gan(loss="hinge").gp_weight == 0.0
    with pytest.raises(GdmError, match="batch norm"):
        make_gan(loss="hinge", d_norm="batch", gp_weight=1.0)




# ---- training -------------------------------------------------------------------------------


@pytest.mark.parametrize(("loss", "d_norm", "extra"), [
    ("vanilla", "batch", {}),
    ("lsgan", "batch", {}),
    ("hinge", "batch", {}),
    ("wgan-gp", "layer", {}),
    ("vanilla", "layer", {"r1_gamma": 1.0}),
    ("hinge", "batch", {"lecam_weight": 0.3}),
])
def test_training_steps(digits16, loss, d_norm, extra):
    gan = make_gan(d_norm=d_norm, loss=loss, **extra)
    g_before, d_before = snapshot(gan.generator), snapshot(gan.discriminator)
    trainer = fit(gan, digits16, batches=2)
    assert trainer.global_step == 4  # n_critic = 1: a D and a G step per batch
    assert changed(g_before, gan.generator)
    assert changed(d_before, gan.discriminator)
    metrics = trainer.callback_metrics
    for key in ("train/d_loss", "train/g_loss", "train/d_real", "train/d_fake"):
        assert math.isfinite(metrics[key].item()), key
    assert ("train/gp" in metrics) == (loss == "wgan-gp")
    assert ("train/r1" in metrics) == ("r1_gamma" in extra)
    assert ("train/lecam" in metrics) == ("lecam_weight" in extra)
    if "lecam_weight" in extra:  # its moving averages saw both batches and are in the state dict (checkpoints)
        assert gan.lecam.weight.item() == pytest.approx(1 - 0.99**2) and torch.isfinite(gan.lecam.anchors).all()
        assert {"lecam.anchors", "lecam.weight"} <= set(gan.state_dict())
    if "train/gp" in metrics:
        assert metrics["train/gp"].item() >= 0
    if "train/r1" in metrics:
        assert metrics["train/r1"].item() > 0
    # Every parameter stays finite.
    assert all(torch.isfinite(p).all() for p in gan.parameters())


def test_n_critic_two_steps_d_every_batch_and_g_every_other(digits16):
    gan = make_gan(n_critic=2, ema_halflife_kimg=1.0)
    g_before, d_before = snapshot(gan.generator), snapshot(gan.discriminator)
    trainer = fit(gan, digits16, batches=4)
    assert trainer.global_step == 6  # 4 D steps + 2 G steps
    opt_g, opt_d = trainer.optimizers
    g_steps = {int(opt_g.state[p]["step"]) for p in gan.generator.parameters()}
    d_steps = {int(opt_d.state[p]["step"]) for p in gan.discriminator.parameters()}
    assert g_steps == {2}
    assert d_steps == {4}
    assert changed(g_before, gan.generator)
    assert changed(d_before, gan.discriminator)
    # The EMA copy was updated (twice, once per G step) and is not the raw generator.
    assert gan.generator_ema.n_averaged.item() == 2
    assert not torch.equal(gan.generator_ema.module.main[0].weight, gan.generator.main[0].weight)


def test_validation_logs_discriminator_view(digits16):
    gan = make_gan()
    trainer = fit(gan, digits16, batches=1, val_batches=2)
    assert "val/d_real" in trainer.callback_metrics
    assert math.isfinite(trainer.callback_metrics["val/d_real"].item())


def test_lecam_is_off_by_default_and_its_decay_is_read_only_when_it_is_on():
    assert make_gan().lecam is None  # off by default: nothing in the state dict
    assert make_gan(lecam_decay=1.5).lecam is None  # an option not in use is not checked (LeCam checks it)
    with pytest.raises(ValidationError):
        make_gan(lecam_weight=0.3, lecam_decay=1.5)


def test_a_checkpoint_of_another_net_width_is_refused_naming_the_option():
    """A net's own setting (model.generator.ngf) is no model hyperparameter: the refusal names it from the configs,
    with both values, and without configs still names the first tensor that differs."""
    from omegaconf import OmegaConf

    torch.manual_seed(0)
    wider = GAN(SHAPE, generator=partial(DCGANGenerator, ngf=16), discriminator=partial(DCGANDiscriminator, ndf=8),
                latent_dim=16)
    saved = {"generator": {"_target_": "gdm.nets.dcgan.DCGANGenerator", "ngf": 16}, "lr": 2e-4}
    checkpoint = {"state_dict": wider.state_dict(), "hyper_parameters": dict(wider.hparams),
                  "gdm_config": {"model": saved}}
    here = OmegaConf.create({"model": {**saved, "generator": {**saved["generator"], "ngf": 8}}})
    with pytest.raises(GdmError, match=re.escape(
            "whose nets' settings differ from the checkpoint's (model.generator.ngf=8 here, the checkpoint's is 16): "
            "drop those overrides, or set them to the checkpoint's values.")):
        check_fits(make_gan(), checkpoint, "wide.ckpt", here)
    with pytest.raises(GdmError, match=re.escape("does not fit this model (generator.main.0.weight: (16, 32, 4, 4) in "
                                                 "the checkpoint, (16, 16, 4, 4) here): the model or data settings "
                                                 "differ from the run that wrote it.")):
        check_fits(make_gan(), checkpoint, "wide.ckpt")
    assert not changed_net_settings(OmegaConf.create({"model": saved}), checkpoint)
    # another model's nets (model=cgan on a GAN's checkpoint: a setting one side lacks): no value to name
    conditional = {**saved, "generator": {**saved["generator"], "ngf": 8, "label_dim": 50}}
    assert changed_net_settings(OmegaConf.create({"model": conditional}), checkpoint) == []


def test_lecam_can_be_switched_on_or_off_when_resuming():
    with_lecam, without = make_gan(lecam_weight=0.3), make_gan(seed=1)
    with_lecam.lecam(torch.tensor([2.0]), torch.tensor([-2.0]))
    # A checkpoint written with LeCam, resumed without: its averages are dropped, everything else loads.
    checkpoint = {"state_dict": with_lecam.state_dict()}
    check_fits(without, checkpoint, "with.ckpt")
    without.on_load_checkpoint(checkpoint)
    without.load_state_dict(checkpoint["state_dict"])
    assert torch.equal(without.generator.main[0].weight, with_lecam.generator.main[0].weight)
    # Resumed with LeCam from a checkpoint without it: the averages start anew.
    fresh = make_gan(lecam_weight=0.3, seed=2)
    checkpoint = {"state_dict": without.state_dict()}
    check_fits(fresh, checkpoint, "without.ckpt")
    load_state(fresh, checkpoint, "without.ckpt")  # task=eval's way
    assert fresh.lecam.weight.item() == 0
    assert torch.equal(fresh.generator.main[0].weight, without.generator.main[0].weight)
    # Other entries still have to match.
    del checkpoint["state_dict"]["generator.main.0.weight"]
    with pytest.raises(GdmError, match="generator.main.0.weight: absent in the checkpoint"):
        check_fits(fresh, checkpoint, "broken.ckpt")


def test_r1_with_batch_norm_is_refused():
    with pytest.raises(GdmError, match="^r1_gamma=1.0 uses a per-sample gradient penalty"):
        make_gan(d_norm="batch", r1_gamma=1.0)
