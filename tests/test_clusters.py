"""Self-conditioning on k-means clusters (model.clusters): the clusters, the GAN built on them, checkpoints."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from helpers import TINY, compose_config

from gdm.errors import GdmError
from gdm.models.clusters import CLUSTER_SIDE, PixelClusters, cluster_inputs
from gdm.models.gan import GAN
from gdm.nets.dcgan import DCGANDiscriminator, DCGANGenerator

pytestmark = pytest.mark.usefixtures("one_thread")


def three_patterns(per: int = 5, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of three layouts (left bar, right bar, blank), each with a little noise; and which is which."""
    g = torch.Generator().manual_seed(0)
    base = torch.full((3, 1, size, size), -1.0)
    base[0, :, :, : size // 4] = 1.0
    base[1, :, :, -size // 4:] = 1.0
    truth = torch.arange(3).repeat_interleave(per)
    return (base[truth] + 0.05 * torch.randn(3 * per, 1, size, size, generator=g)).clamp(-1, 1), truth


class ImageItems(torch.utils.data.Dataset):
    """A dataset of {"image": ...} items without an `images` tensor, as an image folder's."""

    def __init__(self, images: torch.Tensor):
        self.images_ = images

    def __len__(self):
        return len(self.images_)

    def __getitem__(self, i):
        return {"image": self.images_[i]}


def test_kmeans_finds_the_three_layouts_and_counts_them():
    images, truth = three_patterns(per=5)
    clusters = PixelClusters(3, (1, 16, 16))
    counts = clusters.fit(images)
    assert counts.tolist() == [5, 5, 5]
    assigned = clusters.assign(images)
    # the same partition as the truth, whatever the cluster numbering
    assert all(len(set(assigned[truth == t].tolist())) == 1 for t in range(3))
    assert len(set(assigned.tolist())) == 3
    assert clusters.centres.shape == (3, CLUSTER_SIDE * CLUSTER_SIDE)
    # a new image goes to the centre of its layout
    left = torch.full((1, 1, 16, 16), -1.0)
    left[..., :4] = 1.0
    assert clusters.assign(left).item() == assigned[truth == 0][0].item()


def test_kmeans_is_seeded():
    images, _ = three_patterns(per=4)
    a, b = PixelClusters(3, (1, 16, 16)), PixelClusters(3, (1, 16, 16))
    a.fit(images)
    b.fit(images)
    assert torch.equal(a.centres, b.centres)


def test_fewer_images_than_clusters_is_refused():
    images, _ = three_patterns(per=1)
    with pytest.raises(GdmError, match="clusters=4 needs at least 4 distinct training images .*, and the "
                                       "training split has 3 training images: set clusters=3 or fewer"):
        PixelClusters(4, (1, 16, 16)).fit(images)


def test_fewer_distinct_images_than_clusters_is_refused_not_trained_as_empty_clusters():
    """A folder of 12 files holding 3 pictures: k-means with 8 clusters would leave 5 of them empty."""
    images, _ = three_patterns(per=1)
    copies = cluster_inputs(ImageItems(images.repeat(4, 1, 1, 1)))
    with pytest.raises(GdmError) as refused:
        PixelClusters(8, (1, 16, 16)).fit(copies)
    assert str(refused.value) == ("clusters=8 needs at least 8 distinct training images (as k-means compares "
                                  "them, at 8 px), and the training split has 12 training images, 3 of them "
                                  "distinct: set clusters=3 or fewer, or add images.")
    assert PixelClusters(3, (1, 16, 16)).fit(copies).tolist() == [4, 4, 4]  # as many clusters as pictures: none empty


def test_images_smaller_than_the_cluster_side_are_compared_whole():
    clusters = PixelClusters(2, (3, 4, 4))
    assert clusters.centres.shape == (2, 3 * 4 * 4)


def test_cluster_inputs_of_a_dataset_without_an_image_tensor_are_area_averaged():
    images, _ = three_patterns(per=2, size=32)

    small = cluster_inputs(ImageItems(images))
    assert small.shape == (6, 1, CLUSTER_SIDE, CLUSTER_SIDE)
    torch.testing.assert_close(small[0], torch.nn.functional.avg_pool2d(images[0], 4))


def make_clustered_gan(k: int = 3, **kwargs) -> GAN:
    torch.manual_seed(0)
    return GAN((1, 16, 16), generator=partial(DCGANGenerator, ngf=8), discriminator=partial(DCGANDiscriminator, ndf=8),
               latent_dim=16, clusters=k, **kwargs)


def test_a_clustered_gan_is_conditional_on_its_clusters_without_labels():
    model = make_clustered_gan(3)
    assert model.conditional and model.requires == frozenset({"image"})
    assert model.generator.label_embedding.num_embeddings == 3
    images, truth = three_patterns(per=4)
    model.fit_clusters(images)
    torch.testing.assert_close(model.class_probs, torch.full((3,), 1 / 3))
    assert torch.equal(model.batch_labels({"image": images}, images), model.clusters.assign(images))
    # one training batch without labels
    opt_g, opt_d = model.configure_optimizers()
    logs = model.update({"image": images}, 0, opt_g, opt_d)
    assert torch.isfinite(logs["train/d_loss"]) and torch.isfinite(logs["train/g_loss"])
    # samples draw clusters by frequency; one row of 8 per cluster in the grid
    grid, per_row = model.visuals({})["samples"]
    assert grid.shape == (3 * 8, 1, 16, 16) and per_row == 8


def test_labels_and_clusters_exclude_each_other():
    with pytest.raises(GdmError, match="conditional=true .* and clusters=3 .* exclude each other"):
        make_clustered_gan(3, conditional=True, num_classes=10)


@pytest.mark.slow
def test_default_run_clusters_the_digits_and_its_checkpoint_keeps_them(tmp_path, monkeypatch):
    from gdm.app import run
    from gdm.checkpoints import load_model

    cfg = compose_config(["data.image_size=16", *TINY, "logger=none", "test_after_fit=false"], tmp_path)
    assert cfg.model.clusters == 20  # conf/data_model/digits_gan.yaml
    run(cfg)
    model = load_model(tmp_path / "checkpoints" / "last.ckpt")
    assert model.clusters is not None and model.clusters.centres.abs().sum() > 0
    # the training split's cluster frequencies: 1,437 digits, every cluster used
    counts = model.class_probs * 1437
    torch.testing.assert_close(counts, counts.round(), atol=1e-3, rtol=0)
    assert (counts >= 10).all()
    # the checkpoint samples without data, and a cluster on request
    fives = model.generate(range(4), labels=[5] * 4)
    assert fives.shape == (4, 1, 16, 16) and fives.min() >= -1 and fives.max() <= 1

    # task=eval and a resumed run take the clusters from the checkpoint: k-means does not run again
    monkeypatch.setattr(PixelClusters, "fit", lambda *_: pytest.fail("k-means ran again"))
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    run(compose_config(["task=eval", f"ckpt_path={ckpt}", "eval.num_samples=40", "eval.split=val"], tmp_path / "eval"))
    assert (tmp_path / "eval" / "eval.json").is_file()
    run(compose_config(["data.image_size=16", *TINY, "logger=none", "test_after_fit=false", "trainer.max_epochs=2",
                        f"ckpt_path={ckpt}"], tmp_path / "resumed"))
    resumed = load_model(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert torch.equal(resumed.clusters.centres, model.clusters.centres)
    assert torch.equal(resumed.class_probs, model.class_probs)



@pytest.mark.parametrize(("overrides", "clusters", "epochs"), [
    ([], 20, 66),                                          # the default run: conf/data_model/digits_gan.yaml
    (["experiment=digits_dcgan"], 20, 66),                 # the default, pinned
    (["model=cgan"], None, 70),                            # the data's labels, not clusters
    (["experiment=digits_hinge_sn"], None, 25),            # pinned before model.clusters
    (["data=mnist"], None, 70),                            # other data: unconditional unless asked
])
def test_which_configs_cluster(overrides, clusters, epochs, tmp_path):
    cfg = compose_config(overrides, tmp_path)
    assert cfg.model.get("clusters") == clusters
    assert cfg.trainer.max_epochs == epochs


def test_cluster_inputs_of_images_smaller_than_the_cluster_side_fit():
    images = torch.rand(6, 3, 4, 4) * 2 - 1

    small = cluster_inputs(ImageItems(images))
    assert torch.equal(small, images)  # 4 px < CLUSTER_SIDE: compared whole
    assert PixelClusters(2, (3, 4, 4)).fit(small).sum() == 6


def test_resuming_a_run_that_predates_the_clusters_names_the_setting():
    from gdm.checkpoints import check_fits

    clustered = make_clustered_gan(3)
    old = GAN((1, 16, 16), generator=partial(DCGANGenerator, ngf=8), discriminator=partial(DCGANDiscriminator, ndf=8),
              latent_dim=16)
    hparams = {k: v for k, v in old.hparams.items() if k != "clusters"}  # written before model.clusters existed
    checkpoint = {"state_dict": old.state_dict(), "hyper_parameters": hparams}
    with pytest.raises(GdmError, match=r"it was written with model.clusters=null\.$"):
        check_fits(clustered, checkpoint, "old.ckpt")
    checkpoint["hyper_parameters"] = dict(old.hparams)  # written with model.clusters=null
    with pytest.raises(GdmError, match=r"it was written with model.clusters=null\.$"):
        check_fits(clustered, checkpoint, "old.ckpt")
