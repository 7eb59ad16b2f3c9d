"""DCGAN generator / discriminator: shapes, output range, sizing errors, spectral norm, init, size."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from gdm.errors import GdmError
from gdm.nets.dcgan import DCGANDiscriminator, DCGANGenerator, norm_layer, num_doublings, upsampling


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("image_shape", [(1, 16, 16), (1, 32, 32), (3, 64, 64)])
@pytest.mark.slow
def test_generator_and_discriminator_shapes(image_shape):
    torch.manual_seed(0)
    g = DCGANGenerator(image_shape, latent_dim=16, ngf=8)
    d = DCGANDiscriminator(image_shape, ndf=8)
    z = torch.randn(5, 16)
    images = g(z)
    assert images.shape == (5, *image_shape)
    assert images.min() >= -1 and images.max() <= 1
    logits = d(images)
    assert logits.shape == (5,)
    assert torch.isfinite(logits).all()


def test_generator_output_range_saturates_within_bounds():
    g = DCGANGenerator((1, 16, 16), latent_dim=8, ngf=8).eval()
    # Huge latents push tanh into saturation: values reach but never leave [-1, 1].
    images = g(1e4 * torch.randn(16, 8, generator=torch.Generator().manual_seed(0)))
    assert images.min().item() >= -1.0 and images.max().item() <= 1.0
    assert images.abs().max().item() > 0.99


def test_generator_accepts_4d_latents():
    g = DCGANGenerator((1, 16, 16), latent_dim=8, ngf=8).eval()
    z = torch.randn(3, 8)
    torch.testing.assert_close(g(z), g(z.view(3, 8, 1, 1)))


@pytest.mark.parametrize("upsample", ["nearest", "bilinear"])
def test_resize_convolution_generator(upsample):
    # Odena et al. 2016: resize, then a 3x3 convolution, at every stage after the first 4x4 map.
    g = DCGANGenerator((1, 32, 32), latent_dim=16, ngf=8, upsample=upsample)
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in g.main[1:])
    resizes = [m for m in g.main if isinstance(m, nn.Upsample)]
    assert len(resizes) == 3 and all(m.mode == upsample and m.scale_factor == 2 for m in resizes)
    # 100 -> 32 @4x4 (4x4 transposed), 32 -> 16 @8, 16 -> 8 @16, 8 -> 1 @32 (3x3 convolutions), 2 BN + 1 BN.
    assert n_params(g) == 16 * 32 * 16 + (32 * 16 + 16 * 8 + 8 * 1) * 9 + 2 * (32 + 16 + 8)
    images = g(torch.randn(4, 16))
    assert images.shape == (4, 1, 32, 32) and images.abs().max() <= 1


def test_resize_convolution_has_no_checkerboard():
    # A constant map through a stride-2 transposed convolution with a generic kernel comes out as a period-2
    # pattern (each output pixel's parity picks other kernel taps: the checkerboard); resize + 3x3 convolution
    # keeps it constant away from the border.
    torch.manual_seed(0)
    x = torch.ones(1, 1, 8, 8)
    for upsample in ("transposed", "nearest"):
        y = nn.Sequential(*upsampling(upsample, 1, 1))(x)[0, 0, 2:-2, 2:-2].detach()
        assert y.shape == (12, 12)
        torch.testing.assert_close(y[::2, ::2], y[2::2, 2::2][0, 0].expand(6, 6))  # one parity class is flat
        assert (y.std().item() > 1e-3) == (upsample == "transposed")


def test_the_python_api_refuses_an_option_outside_its_type_naming_the_parameter():
    """Called from Python, not a config: the signature's own check, naming the parameter."""
    for make, kwargs in ((DCGANGenerator, {"upsample": "pixelshuffle"}), (DCGANDiscriminator, {"norm": "spectral"}),
                         (DCGANDiscriminator, {"spectral_norm": "yes"}), (DCGANGenerator, {"ngf": 2.0})):
        with pytest.raises(ValidationError) as caught:
            make((1, 16, 16), **kwargs)
        assert [e["loc"] for e in caught.value.errors()] == [tuple(kwargs)]


@pytest.mark.parametrize("size", [24, 4, 12, 2048])
def test_bad_image_size_raises(size):
    with pytest.raises(GdmError, match=str(size)):
        DCGANGenerator((1, size, size))
    with pytest.raises(GdmError, match=str(size)):
        DCGANDiscriminator((1, size, size))


def test_non_square_generator_raises():
    with pytest.raises(GdmError, match="square"):
        DCGANGenerator((1, 16, 32))


@pytest.mark.parametrize(("size", "n"), [(8, 1), (16, 2), (32, 3), (64, 4), (1024, 8)])
def test_num_doublings(size, n):
    assert num_doublings(size) == n


def test_unknown_norm_raises():
    with pytest.raises(GdmError, match="batch, instance, layer, none"):
        norm_layer("group", 8)


@pytest.mark.parametrize(("norm", "cls"), [("batch", nn.BatchNorm2d), ("instance", nn.InstanceNorm2d),
                                           ("layer", nn.GroupNorm)])
def test_norm_choice_is_used(norm, cls):
    d = DCGANDiscriminator((1, 32, 32), ndf=8, norm=norm)
    g = DCGANGenerator((1, 32, 32), ngf=8, norm=norm)
    assert sum(isinstance(m, cls) for m in d.modules()) == 2  # none after the first conv
    assert sum(isinstance(m, cls) for m in g.modules()) == 3  # none after the last conv
    plain = DCGANDiscriminator((1, 32, 32), ndf=8, norm="none")
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm)) for m in plain.modules())


def test_spectral_norm_parametrizes_every_conv():
    d = DCGANDiscriminator((1, 32, 32), ndf=8, spectral_norm=True)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4  # 3 stride-2 convs + the 4x4 head
    for conv in convs:
        assert hasattr(conv, "parametrizations") and "weight" in conv.parametrizations
    plain = DCGANDiscriminator((1, 32, 32), ndf=8)
    assert not any(hasattr(m, "parametrizations") for m in plain.modules())


@pytest.mark.slow
def test_spectral_norm_bounds_the_weight_norm():
    torch.manual_seed(0)
    d = DCGANDiscriminator((1, 16, 16), ndf=8, spectral_norm=True, norm="none")
    d.train()
    x = torch.randn(4, 1, 16, 16)
    for _ in range(20):  # power iterations converge
        d(x)
    d.eval()
    for conv in (m for m in d.modules() if isinstance(m, nn.Conv2d)):
        w = conv.weight.flatten(1)
        sigma = torch.linalg.matrix_norm(w, ord=2).item()
        assert sigma == pytest.approx(1.0, abs=0.05)


def test_weight_init():
    torch.manual_seed(0)
    g = DCGANGenerator((3, 64, 64))
    d = DCGANDiscriminator((3, 64, 64))
    big_g = g.main[0].weight  # ConvTranspose2d(100, 512, 4): 819,200 weights
    big_d = d.features[-3].weight  # Conv2d(256, 512, 4): 2,097,152 weights
    for w in (big_g, big_d):
        assert 0.015 < w.std().item() < 0.025
        assert abs(w.mean().item()) < 1e-3
    for net, n_bn in ((g, 4), (d, 3)):
        bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
        assert len(bns) == n_bn
        scales = torch.cat([m.weight.detach() for m in bns])
        assert scales.mean().item() == pytest.approx(1.0, abs=0.01)
        assert 0.01 < scales.std().item() < 0.03
        assert all((m.bias == 0).all() for m in bns)


def test_init_std_is_configurable():
    torch.manual_seed(0)
    g = DCGANGenerator((3, 64, 64), init_std=0.05)
    assert 0.045 < g.main[0].weight.std().item() < 0.055


def test_parameter_counts_match_pytorch_dcgan_example():
    # Reference (pytorch/examples dcgan, nz=100, ngf=ndf=64, nc=3), no conv biases:
    # G: ConvT(100,512,4) BN ConvT(512,256) BN ConvT(256,128) BN ConvT(128,64) BN ConvT(64,3)
    ref_g = (100 * 512 + 512 * 256 + 256 * 128 + 128 * 64 + 64 * 3) * 16 + 2 * (512 + 256 + 128 + 64)
    # D: Conv(3,64) Conv(64,128) BN Conv(128,256) BN Conv(256,512) BN Conv(512,1)
    ref_d = (3 * 64 + 64 * 128 + 128 * 256 + 256 * 512 + 512 * 1) * 16 + 2 * (128 + 256 + 512)
    assert (ref_g, ref_d) == (3_576_704, 2_765_568)
    g = DCGANGenerator((3, 64, 64), latent_dim=100, ngf=64)
    d = DCGANDiscriminator((3, 64, 64), ndf=64)
    assert n_params(g) == ref_g
    assert n_params(d) == ref_d
    assert not any(getattr(m, "bias", None) is not None
                   for m in [*g.modules(), *d.modules()] if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)))


def test_generator_layer_widths_64():
    g = DCGANGenerator((3, 64, 64), latent_dim=100, ngf=64)
    widths = [(m.in_channels, m.out_channels) for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert widths == [(100, 512), (512, 256), (256, 128), (128, 64), (64, 3)]
    d = DCGANDiscriminator((3, 64, 64), ndf=64)
    widths = [(m.in_channels, m.out_channels) for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert widths == [(3, 64), (64, 128), (128, 256), (256, 512), (512, 1)]
    assert d.feature_channels == 512
