"""trainer.precision=bf16-true casts a model's weights and buffers (16-true is refused for training:
test_bad_input); what gdm feeds a model outside Lightning's precision plugin (latents, example images, cluster
assignment) must follow them, and what it returns (samples, translations) stays float32 for the metrics and the PNGs."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import TINY, TINY_CYCLEGAN, TINY_ITERATIVE, TINY_PIX2PIX, compose_config

from gdm.app import run
from gdm.checkpoints import load_model
from gdm.tasks.build import build_datamodule, build_model

CONFIGS = {
    "gan (k-means clusters)": ["data.image_size=16"],
    "gan": ["data.image_size=16", "model.clusters=null"],
    "cgan": ["model=cgan", "data.image_size=16"],
    "vae": ["model=vae", "data.image_size=16"],
    "ae": ["model=ae", "data.image_size=16"],
    "cyclegan": TINY_CYCLEGAN,
    "pix2pix": TINY_PIX2PIX,
    "flow (conditional)": ["model=flow", *TINY_ITERATIVE, "model.conditional=true", "model.guidance=2.0"],
    "diffusion": ["model=diffusion", *TINY_ITERATIVE],
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def models(request, tmp_path_factory):
    """(the model in float32, the same weights in bfloat16: what Lightning's bf16-true precision plugin does)"""
    cfg = compose_config(CONFIGS[request.param], tmp_path_factory.mktemp("precision"))
    datamodule = build_datamodule(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, datamodule)
    half = build_model(cfg, datamodule)
    half.load_state_dict(model.state_dict())
    return model.eval(), half.to(torch.bfloat16).eval(), datamodule


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype == torch.float32 and a.shape == b.shape
    assert torch.isfinite(b).all()
    assert (a - b).abs().mean() < 0.05  # bfloat16 keeps 8 bits of mantissa: outputs in [-1, 1] agree to ~1e-2


@pytest.mark.slow
def test_bf16_weights_sample_translate_and_draw_grids_in_float32(models):
    model, half, datamodule = models
    if hasattr(model, "generate"):
        labels = {} if not model.conditional else {"labels": torch.arange(6) % len(model.class_probs)}
        close(model.generate(range(6), seed=3, **labels), half.generate(range(6), seed=3, **labels))
    datamodule.setup("fit")
    val = [datamodule.split("val")[i] for i in range(4)]
    examples = {"val": torch.stack([item["image"] for item in val])} if "image" in val[0] else {
        d: torch.stack([item[f"image_{d.lower()}"] for item in val]) for d in ("A", "B")}
    if getattr(model, "clusters", None) is not None:  # real digits, each near one centre: the same clusters
        assert torch.equal(model.clusters.assign(examples["val"]), half.clusters.assign(examples["val"].bfloat16()))
    for direction, (source, _) in getattr(model, "directions", {}).items():
        close(model.translate(examples[source], direction), half.translate(examples[source], direction))
    for name, (grid, _) in half.visuals(examples).items():
        assert grid.dtype == torch.float32 and torch.isfinite(grid).all(), name


@pytest.mark.slow
@pytest.mark.parametrize(("model", "weight"), [("gan", "generator.main.0.weight"), ("diffusion", "net.stem.weight")])
def test_a_bf16_true_run_trains_scores_and_saves(model, weight, tmp_path):
    small = [f"model={model}", *TINY_ITERATIVE] if model == "diffusion" else []  # EDM: its loss and NLL too
    run(compose_config(["data.image_size=16", *small, *TINY, "logger=none", "trainer.precision=bf16-true"], tmp_path))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert 0 < summary["final"]["val/fid_digits"] < float("inf")
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert state[weight].dtype == torch.bfloat16
    samples = load_model(tmp_path / "checkpoints" / "last.ckpt").generate(range(4))  # task=sample: float32 again
    assert samples.dtype == torch.float32 and samples.shape == (4, 1, 16, 16) and torch.isfinite(samples).all()


@pytest.mark.slow
@pytest.mark.parametrize(("overrides", "sampler"), [
    (["model=flow"], "unipc"), (["model=flow"], "heun"), (["model=diffusion"], "unipc"),
    (["model=diffusion"], "heun"), (["model=diffusion", "model.formulation=ddpm"], "ddim"),
])
def test_bf16_weights_leave_the_samplers_arithmetic_in_float32(tmp_path, overrides, sampler):
    """Under bf16-true only the net runs in bfloat16: every sampler's state (the noise, each step's x) stays
    float32, as `run_net` says, so its rounding is not the solver's error."""
    cfg = compose_config([*overrides, *TINY_ITERATIVE], tmp_path)
    half = build_model(cfg, build_datamodule(cfg)).to(torch.bfloat16).eval()
    half.set_sampling(sampler, 3)
    seen, run_net = [], half.run_net

    def recording(net, x, c_noise, labels):
        seen.append(x.dtype)
        out = run_net(net, x, c_noise, labels)
        seen.append(out.dtype)
        return out

    half.run_net = recording
    samples = half.generate(range(4), seed=1)
    assert len(seen) >= 6 and set(seen) == {torch.float32}
    assert samples.dtype == torch.float32 and torch.isfinite(samples).all()
