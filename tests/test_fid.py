"""The FID pipeline: torchmetrics' formulas on gdm's feature sets, the sample-quality metric over one feature
pass, sharding across processes, and seeded latents."""

from __future__ import annotations

import functools
import math

import lightning as L
import pytest
import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from gdm.data.digits import DigitsDataModule
from gdm.errors import GdmError
from gdm.evaluation.context import Evaluation
from gdm.evaluation.evaluator import Evaluator
from gdm.evaluation.real_features import RealFeatureCache
from gdm.images import load_png, save_png, to_uint8
from gdm.metrics.feature_metrics import frechet_distance, gaussian_moments, kernel_distance
from gdm.metrics.features import DigitFeatures, build_features
from gdm.metrics.sample_quality import SampleQuality
from gdm.models.base import Samples, latent_noise
from gdm.models.gan import GAN
from gdm.nets.dcgan import DCGANDiscriminator, DCGANGenerator

pytestmark = pytest.mark.usefixtures("one_thread")


def whitened(n: int, d: int, seed: int) -> torch.Tensor:
    """n samples whose sample mean is exactly 0 and sample covariance exactly I."""
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = x - x.mean(0)
    chol = torch.linalg.cholesky(x.T @ x / (n - 1))
    return x @ torch.linalg.inv(chol).T


# ---- the distance on known feature sets ------------------------------------------------------


def test_fid_of_identical_sets_is_zero():
    x = torch.randn(500, 4, generator=torch.Generator().manual_seed(0))
    assert abs(frechet_distance(x, x)) < 1e-6


def test_fid_of_shifted_gaussians_exact_moments():
    base = whitened(2000, 4, seed=0)
    mu1 = torch.tensor([0.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    mu2 = torch.tensor([1.0, -1.0, 0.5, 0.0], dtype=torch.float64)
    assert frechet_distance(mu1 + base, mu2 + base) == pytest.approx(2.25, rel=1e-5)


def test_fid_of_gaussians_with_different_scales_exact_moments():
    d, s1, s2 = 4, 1.0, 2.0
    base = whitened(2000, d, seed=1)
    dmu = torch.tensor([0.5, 0.0, -1.0, 0.0], dtype=torch.float64)
    expected = dmu.pow(2).sum().item() + d * (s1 - s2) ** 2  # 1.25 + 4
    assert frechet_distance(s1 * base, dmu + s2 * base) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(("s1", "s2"), [(1.0, 1.0), (1.0, 1.5)])
def test_fid_of_independent_gaussian_samples(s1, s2):
    d, n = 4, 4000
    gen = torch.Generator().manual_seed(7)
    mu1 = torch.tensor([1.0, 0.0, -1.0, 0.0])
    mu2 = torch.tensor([-1.0, 0.5, 0.0, 1.0])
    real = mu1 + s1 * torch.randn(n, d, generator=gen)
    fake = mu2 + s2 * torch.randn(n, d, generator=gen)
    expected = (mu1 - mu2).pow(2).sum().item() + d * (s1 - s2) ** 2  # 6.25 (+ 1.0)
    assert frechet_distance(real, fake) == pytest.approx(expected, rel=0.05)


class Identity(torch.nn.Module):
    num_features = 6

    def forward(self, x):
        return x.float().flatten(1)[:, :6]


def test_fid_equals_torchmetrics_fid_module_on_the_same_features():
    """gdm computes the moments from whole feature sets; torchmetrics' module accumulates them per batch."""
    images = torch.randint(0, 256, (300, 1, 1, 6), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    shifted = (images.int() + torch.arange(6)).clamp(0, 255).to(torch.uint8)
    module = FrechetInceptionDistance(feature=Identity(), normalize=False)
    for chunk in images.split(64):
        module.update(chunk, real=True)
    for chunk in shifted.split(50):
        module.update(chunk, real=False)
    feats = Identity()
    assert frechet_distance(feats(images), feats(shifted)) == pytest.approx(module.compute().item(), rel=1e-6)


def test_gaussian_moments_are_the_sample_mean_and_unbiased_covariance():
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    mean, cov = gaussian_moments(x)
    assert torch.allclose(mean, x.mean(0)) and torch.allclose(cov, torch.cov(x.T))


def test_fid_refuses_fewer_than_two_images_on_either_side():
    x = torch.randn(5, 3)
    with pytest.raises(ValueError, match="at least 2 generated images and got 1"):
        frechet_distance(x, x[:1])
    with pytest.raises(ValueError, match="at least 2 real images and got 1"):
        frechet_distance(x[:1], x)


def test_kid_of_identical_distributions_is_near_zero_and_of_shifted_ones_positive():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(400, 8, generator=gen), torch.randn(400, 8, generator=gen)
    same, _ = kernel_distance(a, b, subset_size=200, subsets=20, seed=0)
    shifted, spread = kernel_distance(a, b + 1, subset_size=200, subsets=20, seed=0)
    assert abs(same) < 0.02 and shifted > 0.2 and spread > 0
    assert kernel_distance(a, b + 1, subset_size=200, subsets=20, seed=0) == (shifted, spread)  # seeded


def test_build_features():
    assert isinstance(build_features("digits"), DigitFeatures)
    with pytest.raises(GdmError, match="features='clip' is not a known feature network"):
        build_features("clip")


def test_inception_with_missing_weights_file_names_it(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(GdmError) as err:
        build_features("inception", inception_weights=str(missing))
    assert str(missing) in str(err.value)


def test_digit_features_protocol_names_the_weights_and_their_hash():
    import hashlib

    from gdm.metrics.features import weights_path

    protocol = DigitFeatures().protocol()
    assert protocol["weights_sha256"] == hashlib.sha256(weights_path("digits").read_bytes()).hexdigest()
    assert protocol["resize"] == {"size": 32, "method": "bilinear", "antialias": True}
    assert protocol["name"] == "digits" and protocol["num_features"] == 128


# ---- the sample-quality metric --------------------------------------------------------------

LATENT = 16


class RecordingDataset(torch.utils.data.Dataset):
    def __init__(self, inner):
        self.inner, self.seen = inner, []

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        self.seen.append(int(i))
        return self.inner[i]

    def fingerprint(self):
        return self.inner.fingerprint()


class FakeDataModule:
    def __init__(self, dataset):
        self.datasets = {"val": dataset, "train": dataset}
        self.asked = []

    def split(self, name):
        self.asked.append(name)
        return self.datasets[name]


class FakeModel(Samples):
    """generate(indices, seed): a fixed non-linear map of gdm's seeded latents to 1x16x16 images."""

    device = torch.device("cpu")

    def __init__(self):
        gen = torch.Generator().manual_seed(123)
        self.weight = torch.randn(LATENT, 256, generator=gen) / 2
        self.base = base_digit()
        self.calls: list[list[int]] = []

    def generate(self, indices, seed=0, labels=None):
        indices = torch.as_tensor(indices)
        self.calls.append(indices.tolist())
        z = latent_noise(indices, LATENT, seed)
        return (self.base + torch.tanh(z @ self.weight)).clamp(-1, 1).view(-1, 1, 16, 16)


@pytest.fixture(scope="module")
def real_val():
    return DigitsDataModule(image_size=16).split("val")


@functools.cache
def base_digit() -> torch.Tensor:
    return DigitsDataModule(image_size=16).split("train").images[:1].view(1, 256)


def evaluation(dataset, model=None, rank=0, world_size=1, batch_size=250, cache=None, all_gather=None):
    return Evaluation(model=model or FakeModel(), data=FakeDataModule(RecordingDataset(dataset)),
                      features=build_features("digits"), cache=cache or RealFeatureCache(None),
                      device=torch.device("cpu"), rank=rank, world_size=world_size, all_gather=all_gather,
                      batch_size=batch_size)


def run_metric(real, num_samples=200, seed=0, batch_size=250, **kwargs):
    ev = evaluation(real, batch_size=batch_size)
    metric = SampleQuality(num_samples=num_samples, real_split="val", seed=seed, **kwargs)
    return metric(ev), ev


@pytest.mark.slow
def test_sample_quality_names_values_and_protocol(real_val):
    result, ev = run_metric(real_val)
    assert set(result.values) == {*(f"val/{m}_digits" for m in
                                    ("fid", "precision", "recall", "density", "coverage", "copies")),
                                  "val/sample_seconds_per_1000"}
    assert result.values["val/fid_digits"] > 1.0  # noise-ish samples are far from real digits
    assert sorted(sum(ev.model.calls[:-1], [])) == list(range(200))  # (the last call draws the grid's samples)
    protocol = result.protocols["val/fid_digits"]
    assert protocol["num_generated"] == 200 and protocol["num_real"] == 180 and protocol["real_split"] == "val"
    assert protocol["sample_seed"] == 0 and protocol["features"]["name"] == "digits"
    assert set(protocol["versions"]) >= {"gdm", "torch", "torchmetrics", "torch-fidelity"}
    assert result.protocols["val/precision_digits"]["k"] == 3 and result.protocols["val/density_digits"]["k"] == 5
    assert result.protocols["val/fid_digits"]["id"] != result.protocols["val/precision_digits"]["id"]
    images, nrow = result.grids["nearest_digits"]
    assert nrow == 5 and images.shape == (8 * 5, 1, 16, 16)


@pytest.mark.slow
def test_sample_quality_does_not_depend_on_batch_size(real_val):
    small, ev_small = run_metric(real_val, batch_size=7)
    big, ev_big = run_metric(real_val, batch_size=250)
    assert max(len(c) for c in ev_small.model.calls) == 8  # 7 per batch; 8 for the grid's samples
    assert small.values["val/fid_digits"] == pytest.approx(big.values["val/fid_digits"], rel=1e-6)


@pytest.mark.slow
def test_sample_quality_depends_on_seed(real_val):
    a, _ = run_metric(real_val, seed=0)
    b, _ = run_metric(real_val, seed=1)
    assert a.values["val/fid_digits"] != b.values["val/fid_digits"]
    assert a.values["val/fid_digits"] == pytest.approx(b.values["val/fid_digits"], rel=0.1)  # same distribution


@pytest.mark.slow
def test_fid_of_real_images_is_zero_and_they_are_all_copies(real_val):
    class RealModel(FakeModel):
        def generate(self, indices, seed=0, labels=None):
            return real_val.images[torch.as_tensor(indices)]

    ev = evaluation(real_val, model=RealModel())
    result = SampleQuality(num_samples=len(real_val), real_split="val", copies=True)(ev)
    real = ev.real_features("val")
    assert abs(result.values["val/fid_digits"]) < 1e-3 * real.var(0).sum().item()
    assert result.values["val/precision_digits"] == 1.0 and result.values["val/recall_digits"] == 1.0
    assert result.values["val/coverage_digits"] == 1.0
    assert result.values["val/copies_digits"] == 1.0  # each is closer to a training image than its neighbours are


@pytest.mark.slow
def test_sample_quality_shards_across_ranks_and_gathers_in_index_order(real_val):
    """Two processes simulated in turn: each computes its share; the gather hands every process all rows."""
    n = 101
    single, _ = run_metric(real_val, num_samples=n, batch_size=16)
    shares: dict[int, torch.Tensor] = {}

    def fake_all_gather(rank):
        def gather(padded):
            shares[rank] = padded
            return torch.stack([shares.get(r, padded) for r in (0, 1)])
        return gather

    def simulated(rank):
        ev = evaluation(real_val, rank=rank, world_size=2, batch_size=16, all_gather=fake_all_gather(rank))
        ev.slowest = lambda seconds: seconds  # the clock's gather is not the features' (tests/test_ddp.py runs both)
        return ev

    metric = SampleQuality(num_samples=n, real_split="val")
    evs = [simulated(r) for r in (0, 1)]
    evs[0].gather = lambda rows, total: rows  # rank 0 first only records its share
    for ev in evs:
        metric.generated_features(ev)
    evs = [simulated(r) for r in (0, 1)]
    gathered, _ = metric.generated_features(evs[0])
    assert evs[0].model.calls == [list(range(0, n, 2))[i:i + 16] for i in range(0, 51, 16)]
    full, _ = metric.generated_features(evaluation(real_val, batch_size=16))
    assert torch.allclose(gathered, full, atol=1e-5)
    assert frechet_distance(evaluation(real_val).real_features("val"), gathered) == pytest.approx(
        single.values["val/fid_digits"], rel=1e-5)


def test_real_features_are_read_once_and_then_come_from_the_cache(real_val, tmp_path):
    cache = RealFeatureCache(tmp_path)
    ev = evaluation(real_val, cache=cache, batch_size=64)
    first = ev.real_features("val")
    dataset = ev.data.datasets["val"]
    assert sorted(dataset.seen) == list(range(len(real_val)))
    again = ev.real_features("val")
    assert len(dataset.seen) == len(real_val) and torch.equal(first, again)  # not read a second time
    # A new run (a new cache object) reads the file, not the images.
    ev2 = evaluation(real_val, cache=RealFeatureCache(tmp_path), batch_size=64)
    assert torch.equal(ev2.real_features("val"), first) and ev2.data.datasets["val"].seen == []
    assert ev2.cache.hits == 1 and ev2.cache.misses == 0


@pytest.mark.slow
def test_logged_fid_equals_fid_of_saved_pngs(real_val, tmp_path):
    n = 150
    result, ev = run_metric(real_val, num_samples=n, batch_size=40)
    images = ev.model.generate(range(n))
    paths = [save_png(img, tmp_path / f"{i:04d}.png") for i, img in enumerate(to_uint8(images))]
    loaded = torch.stack([load_png(p, channels=1) for p in paths])
    assert torch.equal(loaded, to_uint8(images))
    features = DigitFeatures()
    direct = frechet_distance(features(to_uint8(real_val.images)), features(loaded))
    assert direct == pytest.approx(result.values["val/fid_digits"], rel=1e-6)


def test_sample_quality_refuses_too_few_samples_before_training(real_val):
    with pytest.raises(GdmError, match=r"at least 6 images on both sides.*3 generated"):
        SampleQuality(num_samples=3, real_split="val").check(FakeModel(), FakeDataModule(real_val), "digits")


def test_sample_quality_takes_null_for_the_metrics_it_can_leave_off():
    metric = SampleQuality(num_samples=10, kid_subset_size=None, precision_recall_k=None, density_coverage_k=None)
    assert (metric.kid_subset_size, metric.precision_recall_k, metric.density_coverage_k) == (None, None, None)


@pytest.mark.slow
def test_sample_quality_leaves_the_global_rng_alone(real_val):
    """Evaluating must not change the training run: the global RNG stream is untouched."""
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run_metric(real_val)
    assert torch.equal(torch.rand(3), expected)


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




@pytest.mark.slow
def test_evaluator_inside_a_trainer(tmp_path):
    torch.manual_seed(0)
    gan = GAN((1, 16, 16), functools.partial(DCGANGenerator, ngf=8), functools.partial(DCGANDiscriminator, ndf=8),
              latent_dim=16)
    metrics = [SampleQuality(num_samples=150, real_split="val")]
    evaluator = Evaluator(metrics, features=build_features("digits"),
                          run_dir=str(tmp_path), monitor="val/fid_digits", cache_dir=str(tmp_path / "cache"))
    trainer = L.Trainer(max_epochs=2, limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=0,
                        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[evaluator])
    trainer.fit(gan, datamodule=DigitsDataModule(image_size=16, batch_size=32))
    logged = trainer.callback_metrics["val/fid_digits"].item()
    assert math.isfinite(logged) and logged > 0
    # real features computed once per split (val for the metrics, train for the copy check), not per evaluation
    assert evaluator.evaluations == 2 and evaluator.cache.misses == 2
    assert evaluator.final["step"] == 2 and evaluator.best["value"] == pytest.approx(min(
        json_line["metrics"]["val/fid_digits"] for json_line in read_history(tmp_path)))
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file() and (tmp_path / "checkpoints" / "best.ckpt").is_file()
    assert (tmp_path / "samples" / "samples_step0000002.png").is_file()


def read_history(run_dir):
    import json

    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
