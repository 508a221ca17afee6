"""Augmentations of normalized Br patches for the SSL encoder: pure functions of ``(B, 1, S, S)`` tensors.

Every function draws its random parameters (one set per patch) on the CPU from the ``torch.Generator``
it is given, applies them on the tensor's device and returns a new tensor of the same shape and dtype;
the same generator state gives the same output. Outside the patch the field is zero (no field), so the
geometric transforms pad with zeros.

What each augmentation does to the properties retrieval should match (``physics.paper_properties``: TUF =
mean ``|x|``, PSEP, R) — SimSiam learns to ignore what the augmentations change, so they should change
these as little as possible:

- ``dihedral`` (random 90-degree rotation and mirror): an exact permutation of pixels; TUF, PSEP, R
  unchanged. Orientation (tilt, which polarity leads) is lost, so matches may differ in it.
- ``polarity_flip`` (``-x``, NOT the packager's ``1 - x``, research/paper.md section 10.13): TUF, PSEP, R
  unchanged; the sign of the net flux and of the leading polarity are lost.
- ``affine``: small rotation and translation (bilinear, zero padding) keep TUF up to interpolation
  smoothing of the noise and flux pushed out of the frame (small for translations of a few percent).
  **Zoom by s multiplies TUF by about s**2** and PSEP by s; it is off by default (``zoom = 0``).**
- ``gaussian_blur``: keeps the net flux; lowers TUF where opposite polarities or noise average out, and
  smears R's strong-field masks: keep sigma about 1 px.
- ``add_noise``: adds about ``0.8 sigma`` to TUF (``E|N(0, sigma)|``); the default 5 G is below HMI noise.

The defaults (schema ``ssl.augment``) are translation and noise only: what they change is not what a solar
physicist searches by. The paper's set (``config/paper.yaml``: dihedral, +-180 degree rotation, polarity flip,
zoom, blur) makes the encoder blind to the leading polarity and the tilt sign (default run, SimSiam, 500
generated queries: top-1 agreement 0.75 and 0.66, random 0.51 and 0.65; without dihedral and polarity flip
0.94 and 0.71).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch.nn import functional as F

from ..errors import SharpgenError


@dataclass(frozen=True)
class AugmentSettings:
    """Augmentation magnitudes (schema section ``ssl.augment``); a zero magnitude switches one off.

    - ``dihedral``: random multiple of 90 degrees and random mirror (exact);
    - ``rotation_deg``: small-angle rotation uniform in [-rotation_deg, rotation_deg] degrees;
    - ``zoom``: scale factor uniform in [1 - zoom, 1 + zoom]; changes TUF by up to (1 +- zoom)**2;
    - ``translate``: shift uniform in [-translate, translate] of the patch side, along each axis;
    - ``blur_sigma``, ``blur_probability``: Gaussian blur with sigma uniform in [0, blur_sigma] px, applied to
      this fraction of the patches;
    - ``noise``: additive Gaussian noise with std uniform in [0, noise] kG (0.005 = 5 G);
    - ``polarity_flip``: multiply half of the patches by -1.
    """

    SECTION: ClassVar[str] = "ssl.augment"

    dihedral: bool
    rotation_deg: float
    zoom: float
    translate: float
    blur_sigma: float
    blur_probability: float
    noise: float
    polarity_flip: bool


def _check(x: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 1:
        raise SharpgenError(f"augmentations take (B, 1, S, S) patches, got shape {tuple(x.shape)}")


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def flip_polarity(x: torch.Tensor) -> torch.Tensor:
    """The polarity flip of a signed field: ``-x``."""
    return -x


def polarity_flip(x: torch.Tensor, generator: torch.Generator, probability: float = 0.5) -> torch.Tensor:
    """``-x`` for a random ``probability`` of the patches, ``x`` for the others."""
    _check(x)
    flip = torch.rand(len(x), generator=generator) < probability
    sign = torch.where(flip, -1.0, 1.0).to(device=x.device, dtype=x.dtype)
    return x * sign[:, None, None, None]


def dihedral(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each patch rotated by a random multiple of 90 degrees and mirrored or not (8 outcomes): a pixel permutation."""
    _check(x)
    codes = torch.randint(8, (len(x),), generator=generator).to(x.device)
    out = torch.empty_like(x)
    for code in range(8):
        chosen = codes == code
        if chosen.any():
            part = torch.rot90(x[chosen], code % 4, dims=(-2, -1))
            out[chosen] = torch.flip(part, dims=(-1,)) if code >= 4 else part
    return out


def affine(
    x: torch.Tensor,
    generator: torch.Generator,
    rotation_deg: float = 10.0,
    zoom: float = 0.0,
    translate: float = 0.05,
) -> torch.Tensor:
    """Random rotation, zoom and translation about the patch centre in one bilinear resampling, zero padded.

    A zoom factor s > 1 magnifies (the patch shows a 1/s wide field of view); ``translate`` is a fraction of
    the patch side. With all three magnitudes zero the input is returned unchanged (no resampling).
    """
    _check(x)
    if rotation_deg == 0 and zoom == 0 and translate == 0:
        return x.clone()
    n = len(x)
    angle = torch.deg2rad(_uniform(n, -rotation_deg, rotation_deg, generator))
    scale = _uniform(n, 1.0 - zoom, 1.0 + zoom, generator)
    shift = _uniform(2 * n, -2 * translate, 2 * translate, generator).view(n, 2)  # grid coordinates span 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(device=x.device, dtype=x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def gaussian_blur(
    x: torch.Tensor, generator: torch.Generator, max_sigma: float = 1.0, probability: float = 0.5
) -> torch.Tensor:
    """Separable Gaussian blur, sigma uniform in [0, max_sigma] px, on a random ``probability`` of the patches.

    Kernels are normalized (the net flux is kept); outside the patch counts as zero field.
    """
    _check(x)
    n, _, h, w = x.shape
    sigma = _uniform(n, 0.0, max_sigma, generator)
    sigma = torch.where(torch.rand(n, generator=generator) < probability, sigma, 0.0)
    radius = math.ceil(3 * max_sigma)
    if radius == 0 or not (sigma > 0).any():
        return x.clone()
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets[None] / sigma.clamp(min=1e-6)[:, None]) ** 2)
    kernel = torch.where(sigma[:, None] > 0, kernel, (offsets == 0).double()[None])
    kernel = (kernel / kernel.sum(1, keepdim=True)).to(device=x.device, dtype=x.dtype)
    out = F.conv2d(x.reshape(1, n, h, w), kernel[:, None, :, None], padding=(radius, 0), groups=n)
    out = F.conv2d(out, kernel[:, None, None, :], padding=(0, radius), groups=n)
    return out.reshape(n, 1, h, w)


def add_noise(x: torch.Tensor, generator: torch.Generator, max_std: float = 0.005) -> torch.Tensor:
    """Add white Gaussian noise whose std (kG) is uniform in [0, max_std] for each patch."""
    _check(x)
    std = _uniform(len(x), 0.0, max_std, generator).to(device=x.device, dtype=x.dtype)
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    return x + std[:, None, None, None] * noise


def augment(x: torch.Tensor, generator: torch.Generator, settings: AugmentSettings) -> torch.Tensor:
    """One random view of each patch: dihedral, rotate/zoom/translate, blur, noise, polarity flip (those enabled)."""
    _check(x)
    if settings.dihedral:
        x = dihedral(x, generator)
    x = affine(x, generator, settings.rotation_deg, settings.zoom, settings.translate)
    if settings.blur_sigma > 0 and settings.blur_probability > 0:
        x = gaussian_blur(x, generator, settings.blur_sigma, settings.blur_probability)
    if settings.noise > 0:
        x = add_noise(x, generator, settings.noise)
    if settings.polarity_flip:
        x = polarity_flip(x, generator)
    return x


def two_views(
    x: torch.Tensor, generator: torch.Generator, settings: AugmentSettings, partner: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent random views of the batch ``x`` (SimSiam's positive pairs); the second made from
    ``partner`` (same shape: e.g. another observation of each region) when given."""
    return augment(x, generator, settings), augment(x if partner is None else partner, generator, settings)
