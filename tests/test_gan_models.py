"""Both GAN architectures keep the latent contract: 100-d z -> (1, S, S) patch in [-1, 1]."""

from __future__ import annotations

import pytest
import torch

from sharpgen.errors import SharpgenError
from sharpgen.gan.models import LATENT_DIM, build_networks, for_inference


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
