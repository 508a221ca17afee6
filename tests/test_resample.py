"""The paper's normalization resizes with torchvision's antialiased bilinear Resize; ours must agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sharpgen.data.resample import resize
from sharpgen.data.scaling import paper_normalize


@pytest.mark.parametrize("shape", [(532, 842), (100, 61), (128, 128), (77, 300), (40, 50)])
def test_resize_matches_torch_antialiased_bilinear(shape):
    image = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(image)[None, None],
        size=(128, 128),
        mode="bilinear",
        antialias=True,
        align_corners=False,
    )[0, 0].numpy()
    np.testing.assert_allclose(resize(image, (128, 128)), expected, atol=1e-5)


def test_resize_keeps_a_constant_image_constant():
    np.testing.assert_allclose(resize(np.full((300, 700), 0.25), (128, 128)), 0.25, rtol=1e-6)


def test_paper_normalize_clips_scales_and_zeroes_nan():
    field = np.zeros((256, 256))
    field[:128] = 2500.0  # saturated umbra
    field[128:] = -400.0
    field[0, 0] = np.nan
    out = paper_normalize(field, 128)
    assert out.shape == (128, 128) and out.dtype == np.float32
    assert out.max() <= 1.0 and out.min() >= -1.0
    np.testing.assert_allclose(out[10, 10], 1.0, atol=1e-6)
    np.testing.assert_allclose(out[100, 10], -0.4, atol=1e-6)
    assert np.isfinite(out).all()
