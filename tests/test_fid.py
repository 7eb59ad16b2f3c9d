"""The FID pipeline: torchmetrics' FID with our feature networks, the FID callback, and seeded latents."""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch import nn

from gdm.data.digits import DigitsDataModule
from gdm.errors import GdmError
from gdm.images import load_png, save_png, to_uint8
from gdm.metrics.features import DigitFeatures, build_features
from gdm.metrics.fid import FID, fid_metric
from gdm.models.base import latent_noise
from gdm.models.gan import GAN
from gdm.nets.dcgan import DCGANDiscriminator, DCGANGenerator

SCALE = 10.0  # pixel = 128 + SCALE * feature


pytestmark = pytest.mark.usefixtures("one_thread")


class PixelFeatures(nn.Module):
    """The first `d` pixels, in feature units: lets a test put any feature vector into an image."""

    def __init__(self, d: int):
        super().__init__()
        self.num_features = d
        self.d = d

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        assert images.dtype == torch.uint8
        return (images.float().flatten(1)[:, : self.d] - 128) / SCALE


def encode(x: torch.Tensor) -> torch.Tensor:
    """(N, d) feature vectors -> (N, 1, 1, d) uint8 images."""
    return (128 + SCALE * x).round().clamp(0, 255).to(torch.uint8).view(x.shape[0], 1, 1, -1)


def whitened(n: int, d: int, seed: int) -> torch.Tensor:
    """n samples whose sample mean is exactly 0 and sample covariance exactly I."""
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = x - x.mean(0)
    chol = torch.linalg.cholesky(x.T @ x / (n - 1))
    return x @ torch.linalg.inv(chol).T


def fid_of(real: torch.Tensor, fake: torch.Tensor, d: int) -> float:
    metric = fid_metric(PixelFeatures(d))
    metric.update(encode(real), real=True)
    metric.update(encode(fake), real=False)
    return metric.compute().item()


# ---- the metric with a known feature network -------------------------------------------------


def test_fid_of_identical_sets_is_zero():
    x = torch.randn(500, 4, generator=torch.Generator().manual_seed(0))
    assert abs(fid_of(x, x, 4)) < 1e-3  # the features have unit scale


def test_fid_of_shifted_gaussians_exact_moments():
    d = 4
    base = whitened(2000, d, seed=0)
    mu1 = torch.tensor([0.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    mu2 = torch.tensor([1.0, -1.0, 0.5, 0.0], dtype=torch.float64)
    got = fid_of(mu1 + base, mu2 + base, d)
    assert got == pytest.approx((mu1 - mu2).pow(2).sum().item(), rel=0.01)  # 2.25


def test_fid_of_gaussians_with_different_scales_exact_moments():
    d, s1, s2 = 4, 1.0, 2.0
    base = whitened(2000, d, seed=1)
    dmu = torch.tensor([0.5, 0.0, -1.0, 0.0], dtype=torch.float64)
    got = fid_of(s1 * base, dmu + s2 * base, d)
    expected = dmu.pow(2).sum().item() + d * (s1 - s2) ** 2  # 1.25 + 4
    assert got == pytest.approx(expected, rel=0.01)


@pytest.mark.parametrize(("s1", "s2"), [(1.0, 1.0), (1.0, 1.5)])
def test_fid_of_independent_gaussian_samples(s1, s2):
    d, n = 4, 4000
    gen = torch.Generator().manual_seed(7)
    mu1 = torch.tensor([1.0, 0.0, -1.0, 0.0])
    mu2 = torch.tensor([-1.0, 0.5, 0.0, 1.0])
    real = mu1 + s1 * torch.randn(n, d, generator=gen)
    fake = mu2 + s2 * torch.randn(n, d, generator=gen)
    expected = (mu1 - mu2).pow(2).sum().item() + d * (s1 - s2) ** 2  # 6.25 (+ 1.0)
    assert fid_of(real, fake, d) == pytest.approx(expected, rel=0.05)


def test_fid_keeps_real_statistics_across_reset():
    d = 4
    gen = torch.Generator().manual_seed(3)
    real, fake = torch.randn(300, d, generator=gen), 1 + torch.randn(300, d, generator=gen)
    metric = fid_metric(PixelFeatures(d))
    metric.update(encode(real), real=True)
    metric.update(encode(fake), real=False)
    first = metric.compute().item()
    metric.reset()
    assert metric.real_features_num_samples.item() == 300
    assert metric.fake_features_num_samples.item() == 0
    metric.update(encode(fake), real=False)
    assert metric.compute().item() == first


def test_build_features():
    assert isinstance(build_features("digits"), DigitFeatures)
    with pytest.raises(GdmError, match="digits"):
        build_features("clip")


def test_inception_with_missing_weights_file_names_it(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(GdmError) as err:
        build_features("inception", inception_weights=str(missing))
    assert str(missing) in str(err.value)


# ---- the callback ---------------------------------------------------------------------------

LATENT = 16


class RecordingDataset(torch.utils.data.Dataset):
    def __init__(self, inner):
        self.inner, self.seen = inner, []

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        self.seen.append(int(i))
        return self.inner[i]


class FakeDataModule:
    def __init__(self, dataset):
        self.datasets = {"val": dataset}
        self.asked = []

    def split(self, name):
        self.asked.append(name)
        return self.datasets[name]


class FakeModel:
    """generate(indices, seed): a fixed non-linear map of gdm's seeded latents to 1x16x16 images."""

    device = torch.device("cpu")

    def __init__(self):
        gen = torch.Generator().manual_seed(123)
        self.weight = torch.randn(LATENT, 256, generator=gen) / 2
        self.base = base_digit()
        self.calls: list[list[int]] = []
        self.logged: dict = {}

    def generate(self, indices, seed=0):
        indices = torch.as_tensor(indices)
        self.calls.append(indices.tolist())
        z = latent_noise(indices, LATENT, seed)
        return (self.base + torch.tanh(z @ self.weight)).clamp(-1, 1).view(-1, 1, 16, 16)

    def log(self, name, value, **kwargs):
        self.logged[name] = value


@pytest.fixture(scope="module")
def real_val():
    return DigitsDataModule(image_size=16).split("val")


@functools.cache
def base_digit() -> torch.Tensor:
    return DigitsDataModule(image_size=16).split("train").images[:1].view(1, 256)


def make_trainer(dataset, rank=0, world_size=1, sanity_checking=False):
    return SimpleNamespace(global_rank=rank, world_size=world_size, sanity_checking=sanity_checking,
                           datamodule=FakeDataModule(RecordingDataset(dataset)))


def run_callback(real, rank=0, world_size=1, batch_size=250, num_samples=200, seed=0):
    trainer, model = make_trainer(real, rank, world_size), FakeModel()
    callback = FID(features="digits", num_samples=num_samples, real_split="val", seed=seed, batch_size=batch_size)
    callback.setup(trainer, model, "fit")
    value = callback.compute(trainer, model)
    return value, callback, trainer, model


def test_fid_callback_name_and_value(real_val):
    value, callback, trainer, model = run_callback(real_val)
    assert callback.name == "val/fid_digits"
    assert value.ndim == 0 and torch.isfinite(value)
    assert value.item() > 1.0  # noise-ish samples are far from real digits
    assert trainer.datamodule.asked == ["val"]
    assert sorted(sum(model.calls, [])) == list(range(200))
    assert all(isinstance(i, int) for i in sum(model.calls, []))


def test_fid_callback_does_not_depend_on_batch_size(real_val):
    small, _, _, model_small = run_callback(real_val, batch_size=7)
    big, _, _, model_big = run_callback(real_val, batch_size=250)
    assert max(len(c) for c in model_small.calls) == 7
    assert len(model_big.calls) == 1
    assert small.item() == pytest.approx(big.item(), rel=1e-6)


def test_fid_callback_depends_on_seed(real_val):
    a, *_ = run_callback(real_val, seed=0)
    b, *_ = run_callback(real_val, seed=1)
    assert a.item() != b.item()
    assert a.item() == pytest.approx(b.item(), rel=0.1)  # same distribution, different samples


def test_fid_callback_real_statistics_computed_once(real_val):
    value, callback, trainer, model = run_callback(real_val, batch_size=64)
    dataset = trainer.datamodule.datasets["val"]
    assert sorted(dataset.seen) == list(range(len(real_val)))
    again = callback.compute(trainer, model)
    assert sorted(dataset.seen) == list(range(len(real_val)))  # not read a second time
    assert again.item() == value.item()
    assert callback.metric.real_features_num_samples.item() == len(real_val)
    assert callback.metric.fake_features_num_samples.item() == 200


def test_fid_callback_of_real_images_is_zero(real_val):
    class RealModel(FakeModel):
        def generate(self, indices, seed=0):
            return real_val.images[torch.as_tensor(indices)]

    trainer, model = make_trainer(real_val), RealModel()
    callback = FID(features="digits", num_samples=len(real_val), real_split="val", batch_size=50)
    callback.setup(trainer, model, "fit")
    value = callback.compute(trainer, model).item()
    real_var = callback.metric.real_features_cov_sum.trace().item() / len(real_val)
    assert abs(value) < 1e-3 * real_var


def test_fid_callback_shards_across_ranks(real_val):
    n = 101
    single, *_ = run_callback(real_val, num_samples=n, batch_size=16)
    shards = [run_callback(real_val, rank=r, world_size=2, num_samples=n, batch_size=16) for r in (0, 1)]
    generated = [sum(model.calls, []) for _, _, _, model in shards]
    real_seen = [trainer.datamodule.datasets["val"].seen for _, _, trainer, _ in shards]
    assert generated[0] == list(range(0, n, 2))
    assert generated[1] == list(range(1, n, 2))
    assert sorted(generated[0] + generated[1]) == list(range(n))
    assert sorted(real_seen[0] + real_seen[1]) == list(range(len(real_val)))
    assert not set(real_seen[0]) & set(real_seen[1])
    # Summing the two processes' states (what torchmetrics' DDP sync does) gives the one-process FID.
    merged = fid_metric(DigitFeatures())
    for state in ("real_features_sum", "real_features_cov_sum", "real_features_num_samples",
                  "fake_features_sum", "fake_features_cov_sum", "fake_features_num_samples"):
        setattr(merged, state, sum(getattr(cb.metric, state) for _, cb, _, _ in shards))
    merged.orig_dtype = torch.float32
    assert merged.compute().item() == pytest.approx(single.item(), rel=1e-6)


def test_fid_callback_logs_after_sanity_check(real_val):
    callback = FID(features="digits", num_samples=50, real_split="val", batch_size=50)
    model = FakeModel()
    sanity = make_trainer(real_val, sanity_checking=True)
    callback.setup(sanity, model, "fit")
    callback.on_validation_epoch_end(sanity, model)
    assert model.logged == {}
    assert not callback.real_ready
    trainer = make_trainer(real_val)
    callback.on_validation_epoch_end(trainer, model)
    assert set(model.logged) == {"val/fid_digits"}
    assert model.logged["val/fid_digits"].item() == pytest.approx(callback.compute(trainer, model).item())


def test_logged_fid_equals_fid_of_saved_pngs(real_val, tmp_path):
    n = 150
    value, callback, _, model = run_callback(real_val, num_samples=n, batch_size=40)
    images = model.generate(range(n))
    paths = [save_png(img, tmp_path / f"{i:04d}.png") for i, img in enumerate(to_uint8(images))]
    loaded = torch.stack([load_png(p, channels=1) for p in paths])
    assert torch.equal(loaded, to_uint8(images))
    # The same statistics fed the same way, but from the files on disk.
    metric = fid_metric(DigitFeatures())
    real_u8 = to_uint8(real_val.images)
    for chunk in real_u8.split(40):
        metric.update(chunk, real=True)
    for chunk in loaded.split(40):
        metric.update(chunk, real=False)
    assert metric.compute().item() == value.item()


def test_fid_direct_equals_fid_of_saved_pngs(real_val, tmp_path):
    images = torch.tanh(2 * torch.randn(64, 1, 16, 16, generator=torch.Generator().manual_seed(5)))
    real_u8 = to_uint8(real_val.images)

    def fid(fake_u8):
        metric = fid_metric(DigitFeatures())
        metric.update(real_u8, real=True)
        metric.update(fake_u8, real=False)
        return metric.compute().item()

    direct = fid(to_uint8(images))
    loaded = torch.stack([load_png(save_png(img, tmp_path / f"{i}.png"), 1)
                          for i, img in enumerate(to_uint8(images))])
    assert fid(loaded) == direct


# ---- seeded latents -------------------------------------------------------------------------


def test_latent_noise_rows_do_not_depend_on_batching():
    block = latent_noise(range(10), 8, seed=3)
    assert block.shape == (10, 8)
    for i in range(10):
        assert torch.equal(latent_noise([i], 8, seed=3)[0], block[i])
    assert torch.equal(latent_noise(torch.tensor([7, 2]), 8, seed=3), block[[7, 2]])
    assert torch.equal(latent_noise(range(10), 8, seed=3), block)


def test_latent_noise_seeds_and_indices_differ():
    a = latent_noise(range(5), 8, seed=0)
    b = latent_noise(range(5), 8, seed=1)
    assert not torch.isclose(a, b).any()
    assert len({tuple(r.tolist()) for r in a}) == 5
    # Seeds must not alias neighbouring indices: sample 1 of seed 0 is not sample 0 of seed 1.
    assert not torch.equal(latent_noise([1], 8, seed=0), latent_noise([0], 8, seed=1))


def test_latent_noise_is_standard_normal_and_handles_empty():
    z = latent_noise(range(2000), 16, seed=0)
    assert z.dtype == torch.float32
    assert abs(z.mean().item()) < 0.02
    assert z.std().item() == pytest.approx(1.0, abs=0.02)
    assert latent_noise([], 16, seed=0).shape == (0, 16)


def test_fid_callback_inside_a_trainer():
    torch.manual_seed(0)
    gan = GAN((1, 16, 16), functools.partial(DCGANGenerator, ngf=8), functools.partial(DCGANDiscriminator, ndf=8),
              latent_dim=16)
    callback = FID(features="digits", num_samples=150, real_split="val", batch_size=50)
    trainer = L.Trainer(max_epochs=2, limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=0,
                        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[callback])
    trainer.fit(gan, datamodule=DigitsDataModule(image_size=16, batch_size=32))
    logged = trainer.callback_metrics["val/fid_digits"]
    assert math.isfinite(logged.item()) and logged.item() > 0
    # Real statistics were gathered once over two validations; the last value is reproducible.
    assert callback.metric.real_features_num_samples.item() == 180
    assert callback.metric.fake_features_num_samples.item() == 150
    assert callback.compute(trainer, gan).item() == pytest.approx(logged.item(), rel=1e-6)


def test_fid_callback_leaves_the_global_rng_alone(real_val):
    """Evaluating must not change the training run: the global RNG stream is untouched."""
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run_callback(real_val)
    assert torch.equal(torch.rand(3), expected)
