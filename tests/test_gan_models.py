"""Both GAN architectures keep the latent contract: 100-d z -> (1, S, S) patch in [-1, 1]."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from sharpgen.config import build_settings
from sharpgen.errors import SharpgenError
from sharpgen.gan.models import (
    DESIGN_BEFORE_CHOICES,
    LATENT_DIM,
    PHYSICS_FEATURES,
    NetworkDesign,
    build_networks,
    for_inference,
    load_generator,
    minibatch_std,
    physics_features,
    soft_clip,
    stretched,
    unstretched,
)


def n_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_paper_networks_have_the_papers_shapes_and_sizes():
    generator, discriminator = build_networks("paper", 128)
    patches = generator(torch.randn(3, LATENT_DIM))
    assert patches.shape == (3, 1, 128, 128)
    assert patches.abs().max() <= 1.0
    assert discriminator(patches).shape == (3,)
    # research/paper.md: about 1.51 M parameters in the generator and 1.50 M in the discriminator
    assert n_parameters(generator) == pytest.approx(1.51e6, rel=0.01)
    assert n_parameters(discriminator) == pytest.approx(1.50e6, rel=0.01)


@pytest.mark.parametrize("size", [32, 64, 128])
def test_default_networks_serve_any_power_of_two_size(size):
    generator, discriminator = build_networks("default", size)
    patches = generator(torch.randn(2, LATENT_DIM))
    assert patches.shape == (2, 1, size, size)
    assert patches.abs().max() <= 1.0
    assert discriminator(patches).shape == (2,)


def test_the_same_seed_builds_the_same_networks():
    torch.manual_seed(7)
    first, _ = build_networks("default", 64)
    torch.manual_seed(7)
    second, _ = build_networks("default", 64)
    z = torch.randn(1, LATENT_DIM)
    assert torch.equal(first(z), second(z))


@pytest.mark.parametrize(("architecture", "size"), [("paper", 64), ("default", 100), ("default", 8), ("biggan", 128)])
def test_unsupported_choices_are_user_errors(architecture, size):
    with pytest.raises(SharpgenError):
        build_networks(architecture, size)


@pytest.mark.parametrize("architecture, size", [("default", 32), ("default", 64), ("paper", 128)])
def test_the_inference_copy_computes_the_same_patches_and_leaves_the_network_alone(architecture, size):
    torch.manual_seed(0)
    generator, _ = build_networks(architecture, size)
    generator.eval()
    fast = for_inference(generator).to(memory_format=torch.channels_last)
    z = torch.randn(5, LATENT_DIM)
    with torch.no_grad():
        torch.testing.assert_close(fast(z), generator(z), atol=2e-5, rtol=0)
    assert any(isinstance(m, torch.nn.Upsample) for m in generator.modules()) == (architecture == "default")
    assert not any(isinstance(m, torch.nn.Upsample) for m in fast.modules())


def test_the_inference_copy_of_every_design_computes_the_same_patches():
    torch.manual_seed(0)
    generator, _ = build_networks(
        "default", 32,
        design(upsample="bilinear", output="sparse_clip", mapping_layers=2, field="asinh"),
    )  # fmt: skip
    fast = for_inference(generator.eval()).to(memory_format=torch.channels_last)
    z = torch.randn(5, LATENT_DIM)
    with torch.no_grad():
        torch.testing.assert_close(fast(z), generator(z), atol=2e-5, rtol=0)


def design(**changes) -> NetworkDesign:
    return dataclasses.replace(build_settings(NetworkDesign), **changes)


@pytest.mark.parametrize("output", ["tanh", "clip", "sparse_clip", "soft_clip"])
@pytest.mark.parametrize("upsample", ["nearest", "bilinear"])
@pytest.mark.parametrize("field", ["linear", "asinh"])
def test_every_design_keeps_the_latent_contract(output, upsample, field):
    generator, discriminator = build_networks(
        "default",
        32,
        design(output=output, upsample=upsample, mapping_layers=2, minibatch_std=True, stretched_view=True,
               field=field, physics_view=True),
    )  # fmt: skip
    patches = generator(torch.randn(8, LATENT_DIM))
    assert patches.shape == (8, 1, 32, 32) and patches.abs().max() <= 1.0
    assert discriminator(patches).shape == (8,)


@pytest.mark.parametrize("field", ["linear", "asinh"])
def test_clip_outputs_reach_the_datas_exact_values(field):
    """The normalized data are clipped at +-1 kG and zero outside a SHARP's box: clip reaches +-1, sparse_clip 0
    below 2 G, in either field."""
    generator, _ = build_networks("default", 32, design(output="sparse_clip", field=field))
    with torch.no_grad():
        generator.up[-1].weight.mul_(200.0)  # large outputs: many pixels beyond +-1
        generator.up[-1].bias.zero_()
        patches = generator(torch.randn(4, LATENT_DIM))
    assert (patches.abs() == 1.0).any()
    small, _ = build_networks("default", 32, design(output="sparse_clip", field=field))
    with torch.no_grad():
        small.up[-1].weight.mul_(1e-6)
        small.up[-1].bias.zero_()
        assert (small(torch.randn(4, LATENT_DIM)) == 0).all()  # every |value| < 2 G is exactly 0
        small.up[-1].bias.fill_(0.0025 if field == "linear" else float(stretched(torch.tensor(0.0025))))
        weak = small(torch.randn(4, LATENT_DIM))  # 2.5 G: kept, less the 2 G band (soft shrinkage)
    assert (weak > 0).all() and (weak < 0.001).all()


def test_soft_clip_is_the_identity_below_its_knee_and_never_leaves_a_pixel_without_gradient():
    x = torch.tensor([-50.0, -1.2, -0.5, 0.0, 0.3, 0.9, 1.0, 1.5, 50.0], requires_grad=True)
    y = soft_clip(x, knee=0.9)
    assert torch.equal(y[2:6], x[2:6].detach())
    assert (y.abs() <= 1.0).all() and y[-1] > 0.999 and y[0] < -0.999
    assert torch.all(torch.diff(y) > 0)  # order kept
    y.sum().backward()
    assert (x.grad[1:-1] > 0).all()  # past the clip (1.2, 1.5) a pixel still learns, unlike clamp's zero gradient
    knee = torch.tensor([0.9 - 1e-4, 0.9 + 1e-4])
    assert float(torch.diff(soft_clip(knee))) == pytest.approx(2e-4, rel=1e-2)  # slope 1 across the knee


def test_the_asinh_field_generates_b_and_the_discriminator_sees_it_stretched():
    """field: asinh works in asinh(B / 20 G) scaled to +-1: the generator's last step turns it back into B (so
    +-1 stays +-1 kG and 0 stays 0), the discriminator stretches every patch it sees the same way."""
    values = torch.tensor([-1.0, -0.5, 0.0, 0.1, 0.5, 1.0])
    torch.testing.assert_close(stretched(unstretched(values)), values, atol=1e-6, rtol=0)
    torch.testing.assert_close(unstretched(torch.tensor([-1.0, 0.0, 1.0])), torch.tensor([-1.0, 0.0, 1.0]))
    # 50 G sits at ~0.35 of the stretched range, where it is 0.05 of the linear one
    assert 0.3 < float(stretched(torch.tensor(0.05))) < 0.4
    torch.manual_seed(0)
    linear, linear_d = build_networks("default", 32, design(field="linear"))
    torch.manual_seed(0)
    asinh, asinh_d = build_networks("default", 32, design(field="asinh"))
    z = torch.randn(4, LATENT_DIM)
    with torch.no_grad():
        torch.testing.assert_close(asinh(z), unstretched(linear(z)))  # same weights, output read as stretched
        patches = torch.rand(4, 1, 32, 32) * 2 - 1
        torch.testing.assert_close(asinh_d(patches), linear_d(stretched(patches)))


def test_physics_features_measure_imbalance_umbrae_and_level_and_reach_the_logit():
    """physics_view: the discriminator's logit reads per-patch statistics of B, sign-blind, with gradients."""
    balanced = torch.zeros(1, 1, 16, 16)
    balanced[..., 4, 4], balanced[..., 4, 10] = 0.95, -0.95  # two umbral pixels, one of each polarity
    unipolar = torch.zeros(1, 1, 16, 16)
    unipolar[..., 4:6, 4:6] = 0.3  # four 300 G pixels of one polarity, none umbral
    features = physics_features(torch.cat([balanced, unipolar, -unipolar]))
    assert features.shape == (3, PHYSICS_FEATURES)
    assert features[0, 0] < 0.01 and features[1, 0] > 0.99  # strong-field |imbalance|
    assert features[0, 2] > features[1, 2] * 100  # umbral fraction
    torch.testing.assert_close(features[1], features[2])  # a polarity flip looks alike
    torch.testing.assert_close(features[0, 3], torch.log10(torch.tensor(1.9 / 256 + 1e-4)))
    patches = unipolar.repeat(4, 1, 1, 1).requires_grad_(True)
    _, seeing = build_networks("default", 16, design(physics_view=True))
    _, blind = build_networks("default", 16, design(physics_view=False))
    assert seeing.logit.weight_orig.shape[1] == blind.logit.weight_orig.shape[1] + PHYSICS_FEATURES
    seeing(patches).sum().backward()
    assert torch.isfinite(patches.grad).all() and patches.grad.abs().sum() > 0


def test_minibatch_std_feature_is_the_spread_across_each_group():
    values = torch.tensor([0.0, 5.0, 0.0, 5.0, 2.0, 5.0, 6.0, 5.0])  # patch i: every feature equals values[i]
    features = values.view(8, 1, 1, 1).expand(8, 3, 2, 2).contiguous()
    out = minibatch_std(features)
    assert out.shape == (8, 4, 2, 2) and torch.equal(out[:, :3], features)
    # groups of 4 interleaved, as StyleGAN's: patches {0, 2, 4, 6} and {1, 3, 5, 7}
    spread = {0: values[0::2].std(unbiased=False), 1: torch.tensor(0.0)}
    for i in range(8):
        assert torch.allclose(out[i, 3], spread[i % 2].expand(2, 2), atol=1e-3)


def test_a_generator_saved_before_design_choices_still_loads(tmp_path):
    """generator.pt files of earlier runs have no ``network`` settings: they are the nearest/tanh design."""
    torch.manual_seed(0)
    generator, _ = build_networks("default", 16, DESIGN_BEFORE_CHOICES)
    torch.save({"settings": {"architecture": "default", "image_size": 16}, "state_dict": generator.state_dict()},
               tmp_path / "generator.pt")  # fmt: skip
    loaded, _ = load_generator(tmp_path / "generator.pt")
    z = torch.randn(2, LATENT_DIM)
    with torch.no_grad():
        assert torch.equal(loaded(z), generator.eval()(z))
    # and one saved with the first five design keys only (before field)
    first_keys = {"upsample": "nearest", "output": "clip", "mapping_layers": 0, "minibatch_std": False,
                  "stretched_view": False}  # fmt: skip
    torch.save({"settings": {"architecture": "default", "image_size": 16, "network": first_keys},
                "state_dict": generator.state_dict()}, tmp_path / "generator.pt")  # fmt: skip
    loaded, _ = load_generator(tmp_path / "generator.pt")
    expected, _ = build_networks("default", 16, dataclasses.replace(DESIGN_BEFORE_CHOICES, output="clip"))
    expected.load_state_dict(generator.state_dict())
    with torch.no_grad():
        assert torch.equal(loaded(z), expected.eval()(z))
