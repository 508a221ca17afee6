"""GAN networks: the paper's generator/discriminator, and the default architecture.

Both keep one latent contract: ``z ~ N(0, I)`` of ``LATENT_DIM`` = 100 -> a ``(1, S, S)`` patch in [-1, 1]
(tanh), the normalized-field units of ``data/patches.zarr`` (1 unit = 1 kG).

- ``paper`` (research/paper.md section 3): ``SimDec``/``SimEnc`` exactly, 128 x 128 only, ~1.5 M parameters
  each; no normalization layers; the discriminator ends in one logit (the paper's sigmoid + BCE is applied
  by the loss as ``BCEWithLogits``, which is the same function, computed stably).
- ``default``: transposed convolutions are replaced by upsampling + 3 x 3 convolutions (no checkerboard
  noise, which inflates the unsigned flux) and the discriminator uses spectral norm; any power-of-two size
  S >= 16. Its design (schema section ``gan.network``, :class:`NetworkDesign`) adds, by choice, a mapping
  network (z -> w, as StyleGAN's), bilinear upsampling, an output that reaches the data's exact 0 and +-1 kG,
  and a minibatch-standard-deviation feature in the discriminator.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from ..config import build_settings
from ..errors import SharpgenError

LATENT_DIM = 100
"""Dimension of the latent vector z (the paper's)."""

ARCHITECTURES = ("paper", "default")
_SLOPE = 0.2
SPARSE_ZERO = 0.002
"""``sparse_clip`` output: |values| below this (normalized units, 2 G) are exactly 0, as outside a SHARP's box."""


@dataclass(frozen=True)
class NetworkDesign:
    """Design of the ``default`` GAN (schema section ``gan.network``).

    - ``upsample``: ``nearest`` or ``bilinear`` doubling before each 3 x 3 convolution;
    - ``output``: ``tanh``; ``clip`` (clamp to [-1, 1]: the data's own +-1 kG clip, so umbrae can saturate);
      ``sparse_clip`` (also exactly 0 below :data:`SPARSE_ZERO`, as the zero padding around a SHARP);
      ``soft_clip`` (the identity up to :data:`SOFT_CLIP_KNEE`, then a tanh knee towards +-1: a pixel past the
      clip still has a gradient, so the generator is not left with flat saturated plateaus);
    - ``mapping_layers``: fully connected layers z -> w before the synthesis network (0 = none);
    - ``minibatch_std``: the discriminator sees the standard deviation of its features across the batch;
    - ``stretched_view``: the discriminator sees both ``B`` and ``asinh(B / 20 G)``, on which quiet-Sun and
      plage texture weigh as much as umbrae do in ``B`` itself;
    - ``field``: the space the networks work in: ``linear`` (``B`` itself) or ``asinh`` (the generator's output
      is ``asinh(B / 20 G)`` scaled to +-1 at +-1 kG and turned back into ``B`` as its last step; the
      discriminator stretches every patch it sees the same way), so a 20 G plage element and a 1 kG umbra
      weigh alike in the adversarial game while the generator still returns ``B`` in [-1, 1];
    - ``physics_view``: the discriminator's logit also reads :func:`physics_features` of the patch (flux
      imbalance, umbral fraction, mean |B|), statistics of the whole patch a few convolutions see only poorly.
    """

    SECTION: ClassVar[str] = "gan.network"

    upsample: str
    output: str
    mapping_layers: int
    minibatch_std: bool
    stretched_view: bool
    field: str
    physics_view: bool


STRETCH_SCALE = 0.02
"""Field (normalized units, 20 G) where the discriminator's stretched view turns from linear to logarithmic."""


def stretched(patches: torch.Tensor) -> torch.Tensor:
    """``asinh(B / 20 G)`` scaled to +-1 at +-1 kG: weak fields (quiet Sun, plage) spread out, strong compressed."""
    return torch.asinh(patches / STRETCH_SCALE) / math.asinh(1.0 / STRETCH_SCALE)


STRETCHED_SPARSE_ZERO = float(stretched(torch.tensor(SPARSE_ZERO)))
"""``sparse_clip``'s zero band (:data:`SPARSE_ZERO`, 2 G) in stretched units, for the ``asinh`` field."""


def unstretched(values: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`stretched`: +-1 -> exactly +-1 kG (normalized units), as the data's clip."""
    scale = torch.tensor(math.asinh(1.0 / STRETCH_SCALE), dtype=values.dtype, device=values.device)
    return torch.sinh(values * scale) / torch.sinh(scale)  # sinh(scale) = 1 / STRETCH_SCALE


DESIGN_BEFORE_CHOICES = NetworkDesign(
    upsample="nearest", output="tanh", mapping_layers=0, minibatch_std=False, stretched_view=False,
    field="linear", physics_view=False,
)  # fmt: skip
"""The one design of ``default`` generators saved before ``gan.network`` existed (their files have no
``network`` settings, or lack the keys added since): such a ``generator.pt`` of an earlier run still loads."""


SOFT_CLIP_KNEE = 0.9
"""Where ``soft_clip`` leaves the identity (in the generator's output units: 630 G in the ``asinh`` field)."""


def soft_clip(x: torch.Tensor, knee: float = SOFT_CLIP_KNEE) -> torch.Tensor:
    """``x`` for ``|x| <= knee``, beyond it ``knee + (1 - knee) tanh((|x| - knee) / (1 - knee))`` with the sign of
    ``x``: continuous with slope 1 at the knee, strictly inside (-1, 1), a gradient everywhere."""
    room = 1.0 - knee
    beyond = knee + room * torch.tanh((x.abs() - knee) / room)
    return torch.where(x.abs() <= knee, x, torch.copysign(beyond, x))


def _output(kind: str, x: torch.Tensor, zero: float = SPARSE_ZERO) -> torch.Tensor:
    """The output function ``kind`` of :class:`NetworkDesign`; ``sparse_clip`` zeroes ``|x| < zero``."""
    if kind == "tanh":
        return torch.tanh(x)
    if kind == "soft_clip":
        return soft_clip(x)
    if kind == "sparse_clip":
        x = F.softshrink(x, zero)
    return torch.clamp(x, -1.0, 1.0)


class PaperGenerator(nn.Module):
    """The paper's generator: Linear(100, 64*15*15) -> 3 transposed convolutions -> tanh, cropped to 128 x 128."""

    def __init__(self, latent_dim: int = LATENT_DIM):
        super().__init__()
        self.project = nn.Sequential(nn.Linear(latent_dim, 64 * 15 * 15), nn.LeakyReLU(_SLOPE))
        self.up = nn.Sequential(
            nn.ConvTranspose2d(64, 64, 3, stride=2),  # 15 -> 31
            nn.LeakyReLU(_SLOPE),
            nn.ConvTranspose2d(64, 32, 3, stride=2),  # 31 -> 63
            nn.LeakyReLU(_SLOPE),
            nn.ZeroPad2d((0, 1, 0, 1)),  # 63 -> 64 (right and bottom)
            nn.ConvTranspose2d(32, 1, 3, stride=2),  # 64 -> 129
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, 100)`` latents -> ``(B, 1, 128, 128)`` patches in [-1, 1]."""
        return self.up(self.project(z).view(-1, 64, 15, 15))[:, :, :128, :128]


class PaperDiscriminator(nn.Module):
    """The paper's discriminator (SimEnc + Linear(100, 1)); returns one logit per patch."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3, stride=2),  # 128 -> 63
            nn.LeakyReLU(_SLOPE),
            nn.Conv2d(32, 64, 3, stride=2),  # 63 -> 31
            nn.LeakyReLU(_SLOPE),
            nn.Conv2d(64, 64, 3, stride=2),  # 31 -> 15
            nn.LeakyReLU(_SLOPE),
            nn.Flatten(),
            nn.Linear(64 * 15 * 15, LATENT_DIM),
            nn.LeakyReLU(_SLOPE),
            nn.Linear(LATENT_DIM, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, 128, 128)`` patches -> ``(B,)`` logits (real > 0)."""
        return self.net(x).squeeze(1)


def _levels(size: int) -> int:
    levels = int(round(math.log2(size))) - 2
    if size < 16 or 2 ** (levels + 2) != size:
        raise SharpgenError(f"image_size {size}: the default GAN needs a power of two >= 16")
    return levels


class UpsampleGenerator(nn.Module):
    """Default generator: [mapping MLP] -> Linear -> (C, 4, 4) -> [upsample x2, conv 3x3, LeakyReLU] x L
    -> conv 3x3 -> output function (:class:`NetworkDesign`)."""

    def __init__(self, size: int, design: NetworkDesign, latent_dim: int = LATENT_DIM, width: int = 128):
        super().__init__()
        levels = _levels(size)
        channels = [max(width >> i, 16) for i in range(levels + 1)]
        self.width, self.output, self.field = channels[0], design.output, design.field
        mapping = []
        for _ in range(design.mapping_layers):
            mapping += [nn.Linear(latent_dim, latent_dim), nn.LeakyReLU(_SLOPE)]
        self.mapping = nn.Sequential(*mapping)
        self.project = nn.Sequential(nn.Linear(latent_dim, channels[0] * 16), nn.LeakyReLU(_SLOPE))
        blocks = []
        for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
            blocks += [
                nn.Upsample(scale_factor=2, mode=design.upsample),
                nn.Conv2d(c_in, c_out, 3, padding=1),
                nn.LeakyReLU(_SLOPE),
            ]
        self.up = nn.Sequential(*blocks, nn.Conv2d(channels[-1], 1, 3, padding=1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, 100)`` latents -> ``(B, 1, S, S)`` patches in [-1, 1] (normalized ``B``, 1 = 1 kG)."""
        values = self.up(self.project(self.mapping(z)).view(-1, self.width, 4, 4))
        if self.field == "asinh":  # the output in stretched units, its zero band the same 2 G
            return unstretched(_output(self.output, values, STRETCHED_SPARSE_ZERO))
        return _output(self.output, values)


MINIBATCH_GROUP = 4
"""Patches per group of the minibatch-standard-deviation feature."""


def minibatch_std(features: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, C + 1, H, W)``: one more channel, the mean over channels and positions of the
    features' standard deviation across each group of :data:`MINIBATCH_GROUP` patches (a batch not divisible
    by it is one group), so the discriminator sees when a batch lacks the real data's variety."""
    batch = features.shape[0]
    group = MINIBATCH_GROUP if batch % MINIBATCH_GROUP == 0 else batch
    grouped = features.float().view(group, -1, *features.shape[1:])
    spread = grouped.var(dim=0, unbiased=False).add(1e-8).sqrt().mean(dim=(1, 2, 3))
    spread = spread.repeat(group).view(batch, 1, 1, 1).expand(batch, 1, *features.shape[2:])
    return torch.cat([features, spread.to(features.dtype)], dim=1)


STRONG_FIELD = 0.15
"""Strong-field threshold (normalized units, 150 G: the paper's polarity masks) of :func:`physics_features`."""
SUNSPOT_FIELD = 0.9
"""Field (normalized units, 900 G) above which :func:`physics_features` counts a pixel as umbral."""


def physics_features(patches: torch.Tensor) -> torch.Tensor:
    """``(B, 1, S, S)`` normalized ``B`` -> ``(B, PHYSICS_FEATURES)`` differentiable per-patch statistics a solar
    physicist checks first: |strong-field flux imbalance| (soft masks at :data:`STRONG_FIELD`), |imbalance of the
    whole patch|, ten times the fraction of umbral pixels (soft, above :data:`SUNSPOT_FIELD`) and log10 of the
    mean |B| (in kG). Magnitudes, not signs: a patch and its polarity flip look alike to the discriminator."""
    field = patches.float().flatten(1)
    magnitude = field.abs()
    strong = torch.sigmoid((magnitude - STRONG_FIELD) / 0.02) * field
    imbalance = strong.sum(1) / (strong.abs().sum(1) + 1e-4)
    whole = field.sum(1) / (magnitude.sum(1) + 1e-4)
    umbral = torch.sigmoid((magnitude - SUNSPOT_FIELD) / 0.02).mean(1) * 10.0
    level = torch.log10(magnitude.mean(1) + 1e-4)
    return torch.stack([imbalance.abs(), whole.abs(), umbral, level], dim=1)


PHYSICS_FEATURES = 4
"""Width of :func:`physics_features`."""


class SpectralDiscriminator(nn.Module):
    """Default discriminator: [spectral-norm conv 4x4 stride 2, LeakyReLU] x L -> [minibatch std] ->
    spectral-norm linear logit."""

    def __init__(self, size: int, design: NetworkDesign, width: int = 128):
        super().__init__()
        levels = _levels(size)
        channels = [1 + int(design.stretched_view)] + [max(width >> (levels - 1 - i), 16) for i in range(levels)]
        layers = []
        for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
            layers += [nn.utils.spectral_norm(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)), nn.LeakyReLU(_SLOPE)]
        self.features = nn.Sequential(*layers)
        self.minibatch_std, self.stretched_view, self.field = design.minibatch_std, design.stretched_view, design.field
        self.physics_view = design.physics_view
        physics = PHYSICS_FEATURES * int(design.physics_view)
        self.logit = nn.utils.spectral_norm(nn.Linear((channels[-1] + int(design.minibatch_std)) * 16 + physics, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, S, S)`` patches -> ``(B,)`` logits (real > 0)."""
        if self.stretched_view:  # both views, whichever the field
            seen = torch.cat([x, stretched(x)], dim=1)
        else:
            seen = stretched(x) if self.field == "asinh" else x
        features = self.features(seen)
        if self.minibatch_std:
            features = minibatch_std(features)
        features = features.flatten(1)
        if self.physics_view:
            features = torch.cat([features, physics_features(x).to(features.dtype)], dim=1)
        return self.logit(features).squeeze(1)


def build_networks(
    architecture: str, image_size: int, design: NetworkDesign | None = None
) -> tuple[nn.Module, nn.Module]:
    """Return ``(generator, discriminator)`` of ``architecture`` for ``image_size`` x ``image_size`` patches;
    ``design`` shapes the ``default`` architecture (None: the schema's defaults; the paper's ignores it)."""
    if architecture == "paper":
        if image_size != 128:
            raise SharpgenError(f"image_size {image_size}: the paper's GAN is defined for 128 x 128 patches only")
        return PaperGenerator(), PaperDiscriminator()
    if architecture == "default":
        design = design or build_settings(NetworkDesign)
        return UpsampleGenerator(image_size, design), SpectralDiscriminator(image_size, design)
    raise SharpgenError(f"unknown GAN architecture {architecture!r} (choose one of: {', '.join(ARCHITECTURES)})")


def load_generator(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Load ``generator.pt`` written by ``train_gan``: ``(generator in eval mode on device, its settings)``."""
    path = Path(path)
    if not path.is_file():
        raise SharpgenError(f"{path}: no such generator file (run the train_gan stage first)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
        settings = payload["settings"]
        design = dataclasses.replace(DESIGN_BEFORE_CHOICES, **settings.get("network", {}))
        generator, _ = build_networks(settings["architecture"], int(settings["image_size"]), design)
        generator.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, RuntimeError, EOFError, OSError, pickle.UnpicklingError, ValueError) as exc:
        raise SharpgenError(f"{path}: not a sharpgen generator file ({exc.__class__.__name__}: {exc})") from None
    return generator.to(device).eval().requires_grad_(False), settings


# Along one axis, nearest-neighbour upsampling by 2 then a 3-tap correlation (taps d = -1, 0, +1) sends input
# pixel r to output pixels 2r - 1 .. 2r + 2 with the tap sums below: a stride-2 transposed convolution with
# 4 taps and padding 1. Row k: output 2r - 1 + k; column: the original tap.
_UPSAMPLE_TAPS = ((0.0, 0.0, 1.0), (0.0, 1.0, 1.0), (1.0, 1.0, 0.0), (1.0, 0.0, 0.0))


def _is_upsample_conv(upsample: nn.Module, conv: nn.Module | None) -> bool:
    return (
        isinstance(upsample, nn.Upsample)
        and upsample.mode == "nearest"
        and upsample.size is None
        and float(upsample.scale_factor) == 2.0
        and isinstance(conv, nn.Conv2d)
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.padding == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
    )


def for_inference(module: nn.Module) -> nn.Module:
    """A copy of ``module`` for fast inference without gradients, the same function to float rounding (~1e-6 on
    [-1, 1] outputs): every ``[Upsample(x2, nearest), Conv2d(3x3, padding 1)]`` pair of an ``nn.Sequential``
    becomes one equivalent ``ConvTranspose2d(4x4, stride 2, padding 1)`` (16 instead of 36 multiply-adds per
    output pixel and channel pair, no upsampled copy), and LeakyReLUs work in place (no new activation
    tensor). Anything else is copied unchanged; the weights are laid out channels-last for oneDNN's kernels.
    Together 3x the default generator's throughput on one CPU core in bulk sampling.
    """
    import copy

    taps = torch.tensor(_UPSAMPLE_TAPS, dtype=torch.float64)

    def fused(seq: nn.Sequential) -> nn.Sequential:
        children, out, i = list(seq), [], 0
        while i < len(children):
            conv = children[i + 1] if i + 1 < len(children) else None
            if _is_upsample_conv(children[i], conv):
                transposed = nn.ConvTranspose2d(conv.in_channels, conv.out_channels, 4, stride=2, padding=1,
                                                bias=conv.bias is not None)  # fmt: skip
                weight = torch.einsum("ka,lb,oiab->iokl", taps, taps, conv.weight.detach().double())
                transposed.weight.data.copy_(weight.to(conv.weight.dtype))
                if conv.bias is not None:
                    transposed.bias.data.copy_(conv.bias.detach())
                out.append(transposed.to(conv.weight.device))
                i += 2
            else:
                out.append(children[i])
                i += 1
        return nn.Sequential(*out)

    module = copy.deepcopy(module)
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Sequential):
                setattr(parent, name, fused(child))
    for child in module.modules():
        if isinstance(child, nn.LeakyReLU):
            child.inplace = True
    return module.eval().requires_grad_(False).to(memory_format=torch.channels_last)
