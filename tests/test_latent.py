"""Latent diffusion / flow: a flow or EDM model trained in the code space of a gdm VAE or AE checkpoint (frozen,
codes scaled to unit variance over the training split), its samples decoded; evaluation reports the autoencoder's
reconstruction ceiling and its own samples' FID beside the latent model's; bad autoencoder files are refused
before training in one sentence."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from helpers import TINY, compose_config, run_py

from gdm.app import run, user_error
from gdm.checkpoints import load_model
from gdm.data.digits import DigitsDataModule
from gdm.models.latent import LatentSpace

SMALL = [*TINY, "logger=none", "data.image_size=16", "metrics.fid.num_samples=60", "test_after_fit=false",
         "metrics.fid.real_split=val", "metrics.fid.nearest_samples=0"]
LATENT_FLOW = ["model=flow", "model.steps=2", "model.latent_net.width=32", "model.latent_net.depth=1"]


@pytest.fixture(scope="module")
def vae_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("vae")
    run(compose_config(["model=vae", "model.latent_dim=4", "model.width=8", *SMALL], out))
    return out / "checkpoints" / "last.ckpt"


def test_latent_space_scales_codes_to_unit_variance_and_decodes_them(vae_ckpt):
    vae = load_model(vae_ckpt)
    latent = LatentSpace(vae, str(vae_ckpt))
    images = torch.rand(50, 1, 16, 16) * 2 - 1
    scale = latent.fit_scale(images.split(16))
    codes = vae.encode(images)
    assert scale == pytest.approx(1 / codes.std().item(), rel=1e-5)
    assert latent.encode(images).std().item() == pytest.approx(1.0, rel=1e-5)
    torch.testing.assert_close(latent.decode(latent.encode(images)), vae.decode(codes))
    latent.train()  # what Lightning calls on the whole model: the frozen autoencoder stays in eval mode
    assert not latent.autoencoder.training and not any(p.requires_grad for p in latent.parameters())


@pytest.mark.slow
def test_a_latent_flow_trains_on_the_vaes_codes_and_reports_its_baselines(vae_ckpt, tmp_path):
    run(compose_config([*LATENT_FLOW, f"model.autoencoder={vae_ckpt}", *SMALL], tmp_path / "flow"))
    checkpoint = torch.load(tmp_path / "flow/checkpoints/last.ckpt", weights_only=True)
    vae_state = torch.load(vae_ckpt, weights_only=True)["state_dict"]
    state = checkpoint["state_dict"]
    # frozen: the autoencoder in the latent model's checkpoint is the VAE's, weight for weight
    assert all(torch.equal(state[f"latent.autoencoder.{k}"], v) for k, v in vae_state.items())
    # the scale: 1 / std of the training split's codes
    vae = load_model(vae_ckpt)
    train = DigitsDataModule(image_size=16).split("train")
    codes = vae.encode(torch.stack([train[i]["image"] for i in range(len(train))]))
    assert state["latent.scale"].item() == pytest.approx(1 / codes.std().item(), rel=1e-4)
    # its samples are images, decoded; the two baselines sit beside its FID
    model = load_model(tmp_path / "flow/checkpoints/last.ckpt")
    assert model.generate(range(3)).shape == (3, 1, 16, 16)
    summary = json.loads((tmp_path / "flow/summary.json").read_text())
    final, protocols = summary["final"], summary["protocols"]
    assert {"val/fid_digits", "val/fid_digits_reconstructions", "val/fid_digits_autoencoder"} <= set(final)
    assert protocols["val/fid_digits"]["sampling"]["latent"]["scale"] == pytest.approx(state["latent.scale"].item())
    assert protocols["val/fid_digits_reconstructions"]["num_generated"] == protocols["val/fid_digits"]["num_real"]
    # the autoencoder's own samples are the VAE's: the same FID as the VAE run measured (same seed, indices, split)
    vae_final = json.loads((vae_ckpt.parents[1] / "summary.json").read_text())["final"]
    assert final["val/fid_digits_autoencoder"] == pytest.approx(vae_final["val/fid_digits"], rel=1e-4)


@pytest.mark.slow
def test_a_latent_checkpoint_needs_its_autoencoder_file_or_a_new_path(vae_ckpt, tmp_path):
    ae = tmp_path / "ae.ckpt"
    shutil.copy(vae_ckpt, ae)
    run(compose_config([*LATENT_FLOW, f"model.autoencoder={ae}", *SMALL, "trainer.max_epochs=1"], tmp_path / "flow"))
    ckpt = tmp_path / "flow/checkpoints/last.ckpt"
    ae.unlink()
    with pytest.raises(Exception) as caught:  # noqa: B017 - Hydra may wrap it
        run(compose_config(["task=eval", f"ckpt_path={ckpt}", "eval.num_samples=20", "logger=none"], tmp_path / "e1"))
    assert f"model.autoencoder={ae} is not a file" in str(user_error(caught.value))
    proc = run_py("task=eval", f"ckpt_path={ckpt}", "eval.num_samples=20", "logger=none",
                  f"++model.autoencoder={vae_ckpt}", f"hydra.run.dir={tmp_path / 'e2'}")  # the architecture from there
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "e2/eval.json").read_text())["metrics"]
    assert "test/fid_digits_reconstructions" in metrics
    proc = run_py("task=sample", f"ckpt_path={ckpt}", "+sample.n=3", f"++model.autoencoder={vae_ckpt}",
                  f"hydra.run.dir={tmp_path / 's'}")  # task=sample the same way
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(list((tmp_path / "s").rglob("*.png"))) >= 3
    model = load_model(ckpt, autoencoder=vae_ckpt)  # and in Python
    assert model.generate(range(2)).shape == (2, 1, 16, 16)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["gan", "size", "missing"])
def test_a_wrong_autoencoder_is_refused_before_training(case, vae_ckpt, tmp_path):
    if case == "gan":
        run(compose_config(["model=gan", *SMALL, "++trainer.limit_train_batches=1"], tmp_path / "gan"))
        path, message = tmp_path / "gan/checkpoints/last.ckpt", "is a GAN checkpoint, and a latent model needs an AE"
    else:
        path = vae_ckpt if case == "size" else tmp_path / "nowhere.ckpt"
        message = {"size": "was trained on 1 x 16 x 16 images (channels x height x width), and this data's are "
                           "1 x 32 x 32", "missing": "is not a file"}[case]
    overrides = [*LATENT_FLOW, f"model.autoencoder={path}", *SMALL]
    if case == "size":
        overrides.append("data.image_size=32")
    with pytest.raises(Exception) as caught:  # noqa: B017 - Hydra may wrap it
        run(compose_config(overrides, tmp_path / "latent"))
    mistake = str(user_error(caught.value))
    assert f"model.autoencoder={path} {message}" in mistake and "\n" not in mistake
    assert not (tmp_path / "latent" / "checkpoints").exists()
