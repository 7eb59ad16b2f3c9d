"""A NaN / Inf training loss: the run stops with one line naming the loss and step and keeps the last good
checkpoint, or (action=skip) skips that update."""

from __future__ import annotations

import dataclasses
import functools
import json

import pytest
import torch
from helpers import TINY, compose_config

from gdm import losses
from gdm.app import run, user_error
from gdm.models import gan
from gdm.models.base import Diverged, NonFinitePolicy
from gdm.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from gdm.tasks.build import build_callbacks, build_datamodule, build_model

RUN = ["data.image_size=16", *TINY, "logger=none", "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1",
       "test_after_fit=false"]


@pytest.fixture
def nan_on_call(monkeypatch):
    """The GAN's D loss (or G loss) turns NaN on its `n`-th call (one call per training batch), or on every
    call from the `n`-th on."""
    def install(n: int, which: str = "d_loss", from_then_on: bool = False):
        calls = []

        def make(name):
            loss = losses.get_loss(name)
            original = getattr(loss, which)

            def poisoned(*args):
                calls.append(1)
                value = original(*args)
                bad = len(calls) >= n if from_then_on else len(calls) == n
                return value * float("nan") if bad else value

            return dataclasses.replace(loss, **{which: poisoned})

        monkeypatch.setattr(gan, "get_loss", make)
        return calls

    return install


@pytest.mark.slow
def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(nan_on_call, tmp_path):
    nan_on_call(3)  # epoch 0 has batches 1-2 (then an evaluation writes last.ckpt at step 2); batch 3 diverges
    with pytest.raises(Exception) as caught:  # noqa: B017 - Lightning may wrap it
        run(compose_config(RUN, tmp_path))
    message = str(user_error(caught.value))
    assert message.startswith("train/d_loss is nan at step 3 (epoch 1, batch 0)")
    assert f"the last good checkpoint is {tmp_path / 'checkpoints' / 'last.ckpt'}" in message
    assert "\n" not in message
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 4
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values() if t.is_floating_point())
    assert not (tmp_path / "checkpoints" / "on_exception.ckpt").exists()  # nothing newer to resume from by mistake
    assert json.loads((tmp_path / "summary.json").read_text())["status"].startswith("failed: Diverged")


@pytest.mark.slow
def test_nan_loss_with_skip_leaves_that_update_out(nan_on_call, tmp_path):
    nan_on_call(3)
    run(compose_config([*RUN, "callbacks.nonfinite_loss.action=skip"], tmp_path))
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 7  # 4 batches x (D + G) updates, one D update skipped
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values() if t.is_floating_point())
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "finished"


@pytest.mark.parametrize(("override", "message"), [
    ("action=ignore", "callbacks.nonfinite_loss.action='ignore' must be one of stop, skip (what a NaN / Inf loss "
                      "does: stop the run, or skip that update)."),
    ("check_every_n_steps=0", "callbacks.nonfinite_loss.check_every_n_steps=0 must be an integer >= 1 (batches "
                              "between read-backs of the losses)."),
])
@pytest.mark.slow
def test_a_bad_policy_is_one_sentence(override, message, tmp_path):
    with pytest.raises(Exception) as caught:  # noqa: B017
        run(compose_config([*RUN, f"callbacks.nonfinite_loss.{override}"], tmp_path))
    assert str(user_error(caught.value)) == message


@pytest.mark.slow
def test_the_policy_is_given_to_the_model_at_build_and_no_callback_holds_it(tmp_path):
    cfg = compose_config([*RUN, "callbacks.nonfinite_loss.action=skip",
                          "callbacks.nonfinite_loss.max_consecutive_skips=3"], tmp_path)
    model = build_model(cfg, build_datamodule(cfg))
    assert model.nonfinite_policy == NonFinitePolicy("skip", max_consecutive_skips=3, check_every_n_steps=10)
    assert not any(isinstance(callback, NonFinitePolicy) for callback in build_callbacks(cfg))


@pytest.mark.slow
def test_skipping_stops_after_too_many_bad_updates_of_one_loss(nan_on_call, tmp_path):
    """D's updates stay finite while G's loss is NaN from batch 2 on: G's count is its own."""
    nan_on_call(2, which="g_loss", from_then_on=True)
    cfg = compose_config([*RUN, "callbacks.nonfinite_loss.action=skip",
                          "callbacks.nonfinite_loss.max_consecutive_skips=2"], tmp_path)
    with pytest.raises(Exception) as caught:  # noqa: B017
        run(cfg)
    assert "train/g_loss is nan at step 4 (epoch 1, batch 1) (3 in a row): training stopped" in str(
        user_error(caught.value))


@pytest.mark.slow
def test_stop_reads_the_losses_back_every_n_batches(nan_on_call, tmp_path):
    """No device sync per update: the NaN of batch 6 is read back at the end of batch 9 (every 5th batch), and
    the message still names the loss, its value and the step it happened at."""
    calls = nan_on_call(7)
    cfg = compose_config([*RUN, "trainer.max_epochs=1", "++trainer.limit_train_batches=20",
                          "callbacks.nonfinite_loss.check_every_n_steps=5"], tmp_path)
    with pytest.raises(Exception) as caught:  # noqa: B017
        run(cfg)
    assert str(user_error(caught.value)).startswith("train/d_loss is nan at step 7 (epoch 0, batch 6): training "
                                                    "stopped; no checkpoint was written yet")
    assert len(calls) == 10  # batches 0-9 trained, none after the check
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())


def tiny_gan() -> gan.GAN:
    return gan.GAN((3, 16, 16), functools.partial(DCGANGenerator, ngf=4), functools.partial(DCGANDiscriminator, ndf=4))


def test_guard_in_a_plain_loop_reads_back_when_asked_or_when_too_many_are_kept():
    model = tiny_gan()
    assert model.loss_ok("d_loss", torch.tensor(0.5)) and model.loss_ok("g_loss", torch.tensor(float("inf")))
    with pytest.raises(Diverged, match=r"^train/g_loss is inf: training stopped; no checkpoint was written yet"):
        model.check_losses()
    model.check_losses()  # read back once: nothing left
    model.max_pending_losses = 3
    assert model.loss_ok("d_loss", torch.tensor(float("nan"))) and model.loss_ok("g_loss", torch.tensor(1.0))
    with pytest.raises(Diverged, match="^train/d_loss is nan"):
        model.loss_ok("d_loss", torch.tensor(1.0))  # the third kept loss: read back without being asked


def test_skip_in_a_plain_loop_decides_per_update():
    model = tiny_gan()
    model.set_nonfinite_policy(NonFinitePolicy("skip", max_consecutive_skips=1))
    assert model.loss_ok("d_loss", torch.tensor(1.0))
    assert not model.loss_ok("d_loss", torch.tensor(float("nan")))
    with pytest.raises(Diverged, match=r"^train/d_loss is nan \(2 in a row\): training stopped"):
        model.loss_ok("d_loss", torch.tensor(float("nan")))
