"""SSL networks for the ``train_ssl`` stage: a backbone, a projector, a predictor (SimSiam's), the two
objectives (:func:`vicreg_loss`, the default; :func:`simsiam_loss`, the paper's) and the collapse indicators.

Both architectures take ``(B, 1, S, S)`` normalized Br patches (1 unit = 1 kG) of any power-of-two S >= 16
and share one contract: ``forward(x) -> (z, p)``, the projector output ``z`` (``embedding_dim``, the
paper's 100) and the predictor output ``p``.

- ``paper`` (research/paper.md section 6): ResNet-18 with a one-channel ``conv1`` =
  ``Conv2d(1, 64, 7, stride 2, padding 3, bias=False)``, random init, 512-d features after global average
  pooling (written here with ``BasicBlock``; torchvision is not a dependency); lightly's
  ``SimSiamProjectionHead(512, 512, 100)`` and ``SimSiamPredictionHead(100, 128, 100)``.
- ``default``: a CPU-sized strided ConvNet (1.0 M parameters, 256-d features; 24 M multiply-adds per
  128 px patch, 1/25 of ResNet-18's 0.6 G), a 2-layer projector and a bottleneck predictor; 25 epochs on
  800 patches of 128 px (300 steps of 64) take about 2 min on 2 CPU cores. Choices:

  * a 4 x 4 stride-4 stem, strided 3 x 3 convolutions, no max-pooling, and a global *average* pool: every
    feature is a spatial mean of a local response, so patch-wide sums such as the total unsigned flux
    ``mean |x|`` (``|x| = relu(x) + relu(-x)``, one layer) are one linear read-out away, while max-pooling
    would keep only peaks;
  * BatchNorm after each convolution: the raw field spans 1e-3 (noise) to 1 kG (umbrae), BN rescales it
    without a hand-made input transform, and at inference its fixed running statistics keep the amplitude
    (hence the flux) of a patch visible in the features;
  * width doubles at each of the ``log2(S) - 4`` stride-2 stages after the stem, down to 4 x 4 and up to
    256, so the feature dimension (256) does not depend on S;
  * a 2-layer projector (as SimSiam's CIFAR variant) and a bottleneck predictor (hidden 64 < 100), which the
    SimSiam paper reports as the stable choice.

The embedding used for retrieval (in eval mode) is by default the backbone features less their mean over the train
split (``embedding="centred_backbone"``, 512-d paper / 256-d default; the ``feature_mean`` buffer that
``train_ssl`` sets at the end of training): the projector, trained to be invariant, drops detail that tells one
region from another (same-region recall@1 0.82 against 0.90 centred, schema ``ssl.embedding``), and the raw
features (``embedding="backbone"``), all >= 0 after a ReLU, point into one orthant, so their cosines crowd near 1.
The projector output ``z`` (``embedding="projector"``, ``embedding_dim`` wide) is the paper's likely choice
(research/paper.md section 7).

:class:`PropertyHead` and :func:`property_loss` serve the auxiliary objective of ``ssl.property_weight``: a linear
read-out of the backbone features trained to predict the physical properties of the patch
(:data:`PROPERTY_TARGETS`), so the features that the embedding compares encode separation, R and the polarity
fluxes, not only the flux. The head is no part of :class:`SimSiam` (nor of the embedding).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import SharpgenError
from .physics_vector import PROPERTY_TARGETS

ARCHITECTURES = ("default", "paper")
EMBEDDINGS = ("projector", "backbone", "centred_backbone")
EMBEDDING_DIM = 100
"""The paper's projector output (``out_dim``), the default embedding dimension."""


def check_image_size(size: int) -> int:
    """``size`` if it is a power of two >= 16, else a SharpgenError."""
    if size < 16 or 2 ** int(round(math.log2(size))) != size:
        raise SharpgenError(f"image_size {size}: the SSL networks need a power of two >= 16")
    return size


class BasicBlock(nn.Module):
    """ResNet basic block: two 3 x 3 conv-BN layers and a (1 x 1 conv-BN when the shape changes) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """torchvision's ResNet-18 without ``fc``, with a one-channel ``conv1``: ``(B, 1, S, S)`` -> ``(B, 512)``."""

    feature_dim = 512

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        layers, c_in = [], 64
        for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out)))
            c_in = c_out
        self.layers = nn.Sequential(*layers)
        for module in self.modules():  # torchvision's initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1)


class SmallConvNet(nn.Module):
    """Default backbone: 4 x 4 stride-4 stem, [conv 3x3 stride 2, BN, ReLU] down to 4 x 4, one more conv 3x3,
    global average pool: ``(B, 1, S, S)`` -> ``(B, 256)``.

    The stem is a "patchify" convolution (as in ConvNeXt): at 128 px, full-resolution activations cost more
    CPU time than all later layers together (measured 3x slower with a 2 x 2 stem); 32 filters on 16-pixel
    patches lose little, and the sub-4-pixel scale carries mostly noise at the 1.46 Mm default pixel.
    """

    feature_dim = 256

    def __init__(self, size: int):
        super().__init__()
        stages = int(round(math.log2(check_image_size(size)))) - 4
        c_in = max(self.feature_dim >> stages, 32)
        layers = [nn.Conv2d(1, c_in, 4, stride=4, bias=False), nn.BatchNorm2d(c_in), nn.ReLU()]
        for _ in range(stages):
            c_out = min(2 * c_in, self.feature_dim)
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
            c_in = c_out
        layers += [nn.Conv2d(c_in, self.feature_dim, 3, padding=1, bias=False)]
        self.net = nn.Sequential(*layers, nn.BatchNorm2d(self.feature_dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(self.net(x), 1), 1)


def _mlp(dims: list[int], last_bn_affine: bool | None) -> nn.Sequential:
    """Linear layers ``dims[0] -> ... -> dims[-1]``; BN + ReLU between, a final BN only if ``last_bn_affine`` is set."""
    layers = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        last = i == len(dims) - 2
        layers.append(nn.Linear(d_in, d_out, bias=last and last_bn_affine is None))
        if not last:
            layers += [nn.BatchNorm1d(d_out), nn.ReLU()]
        elif last_bn_affine is not None:
            layers.append(nn.BatchNorm1d(d_out, affine=last_bn_affine))
    return nn.Sequential(*layers)


class SimSiam(nn.Module):
    """Backbone -> projector (``z``) -> predictor (``p``); ``embed`` gives the retrieval embedding."""

    def __init__(
        self,
        backbone: nn.Module,
        projector_dims: list[int],
        predictor_hidden: int,
        image_size: int,
        embedding: str = "projector",
    ):
        super().__init__()
        if embedding not in EMBEDDINGS:
            raise SharpgenError(f"unknown SSL embedding {embedding!r} (choose one of: {', '.join(EMBEDDINGS)})")
        self.backbone = backbone
        # lightly's heads: hidden layers Linear(bias=False) + BN + ReLU; projector ends in BN(affine=False).
        self.projector = _mlp(projector_dims, last_bn_affine=False)
        self.predictor = _mlp([projector_dims[-1], predictor_hidden, projector_dims[-1]], last_bn_affine=None)
        self.image_size = image_size
        self.embedding = embedding
        self.embedding_dim = projector_dims[-1] if embedding == "projector" else projector_dims[0]
        self.register_buffer("feature_mean", torch.zeros(projector_dims[0]))  # centred_backbone's centre

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 1, S, S)`` -> projector output ``z`` and predictor output ``p``, both ``(B, embedding_dim)``."""
        _, z, p = self.forward_features(x)
        return z, p

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(B, 1, S, S)`` -> backbone features (what :class:`PropertyHead` reads), ``z`` and ``p``."""
        features = self.backbone(x)
        z = self.projector(features)
        return features, z, self.predictor(z)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The retrieval embedding of ``(B, 1, S, S)`` patches (call in eval mode): projector ``z``, features, or
        features less ``feature_mean``."""
        features = self.backbone(x)
        if self.embedding == "projector":
            return self.projector(features)
        return features - self.feature_mean if self.embedding == "centred_backbone" else features


def build_simsiam(
    architecture: str,
    image_size: int,
    embedding_dim: int = EMBEDDING_DIM,
    embedding: str = "projector",
) -> SimSiam:
    """A freshly initialised SimSiam of ``architecture`` (``paper`` or ``default``) for S x S patches."""
    check_image_size(image_size)
    if architecture == "paper":
        backbone = ResNet18()
        projector = [512, 512, 512, embedding_dim]
        predictor_hidden = 128
    elif architecture == "default":
        backbone = SmallConvNet(image_size)
        projector = [backbone.feature_dim, backbone.feature_dim, embedding_dim]
        predictor_hidden = 64
    else:
        raise SharpgenError(f"unknown SSL architecture {architecture!r} (choose one of: {', '.join(ARCHITECTURES)})")
    return SimSiam(backbone, projector, predictor_hidden, image_size, embedding)


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``-mean cos(p, z)`` with ``z`` detached (the stop-gradient of SimSiam)."""
    return -F.cosine_similarity(p, z.detach(), dim=1).mean()


OBJECTIVES = ("vicreg", "simsiam")


def simsiam_loss(z1: torch.Tensor, p1: torch.Tensor, z2: torch.Tensor, p2: torch.Tensor) -> torch.Tensor:
    """Symmetrised SimSiam loss ``(D(p1, z2) + D(p2, z1)) / 2`` with stop-gradient on the targets; -1 is perfect."""
    return 0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))


def output_std(outputs: torch.Tensor) -> float:
    """Collapse indicator: mean per-dimension std of the L2-normalized ``(B, D)`` outputs, times ``sqrt(D)``.

    About 1 for outputs spread like isotropic Gaussian vectors (healthy), 0 when every output is the same
    vector (collapse). lightly logs ``collapse_level = 1 - output_std`` of the predictor output.
    """
    with torch.no_grad():
        normalized = F.normalize(outputs.detach().float(), dim=1)
        return float(normalized.std(dim=0).mean() * math.sqrt(outputs.shape[1]))


def vicreg_loss(
    z1: torch.Tensor, z2: torch.Tensor, invariance: float = 25.0, variance: float = 25.0, covariance: float = 1.0
) -> torch.Tensor:
    """VICReg (Bardes et al. 2022) of two views' ``(B, D)`` projector outputs: ``invariance`` x mean squared
    distance of the views + ``variance`` x mean hinge ``relu(1 - std)`` of each dimension (per view) +
    ``covariance`` x sum of squared off-diagonal covariances / D (per view). The variance and covariance terms
    keep every dimension in use and the dimensions decorrelated: the remedy for dimensional collapse."""
    b, d = z1.shape
    loss = invariance * F.mse_loss(z1, z2)
    for z in (z1, z2):
        centred = z - z.mean(0)
        loss = loss + variance * F.relu(1.0 - torch.sqrt(centred.var(0) + 1e-4)).mean()
        cov = centred.T @ centred / (b - 1)
        loss = loss + covariance * (cov.pow(2).sum() - cov.diagonal().pow(2).sum()) / d
    return loss


def mirror_loss(z: torch.Tensor, z_mirrored: torch.Tensor) -> torch.Tensor:
    """Mean ``relu(cos)`` of the ``(B, D)`` embeddings of patches and of their north-south mirror images: 0 once
    every mirror image points at least 90 degrees away, so the embedding tells the two tilt signs apart."""
    return F.relu(F.cosine_similarity(z, z_mirrored, dim=1)).mean()


class PropertyHead(nn.Module):
    """Linear read-out of the backbone features: ``(B, F)`` -> ``(B, len(PROPERTY_TARGETS))`` standardized
    physical properties. Linear, so what it needs must lie along straight directions of the features, the
    space the ``backbone`` and ``centred_backbone`` embeddings compare."""

    def __init__(self, feature_dim: int, n_targets: int = len(PROPERTY_TARGETS)):
        super().__init__()
        self.linear = nn.Linear(feature_dim, n_targets)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)


def property_loss(predicted: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error of ``(B, P)`` predictions over the finite entries of ``(B, P)`` targets only (a property
    undefined for a patch, NaN, neither counts nor sends a gradient); 0 (with a graph) when none is finite."""
    finite = torch.isfinite(targets)
    if not bool(finite.any()):
        return predicted.sum() * 0.0
    return (predicted - torch.where(finite, targets, torch.zeros_like(targets)))[finite].pow(2).mean()


def effective_rank(outputs) -> float:
    """RankMe (Garrido et al. 2023): ``exp`` of the entropy of the normalized singular values of the ``(N, D)``
    outputs (torch or numpy): D when every direction carries the same weight, 1 when all vary along one.

    The indicator of dimensional collapse, which ``output_std`` misses (the projector's last BatchNorm keeps
    every dimension at unit variance even when all of them move together); at most ``min(N, D)``.
    """
    with torch.no_grad():
        values = torch.linalg.svdvals(torch.as_tensor(outputs).detach().double())
        p = values / values.sum().clamp(min=1e-300)
        p = p[p > 0]
        return float(torch.exp(-(p * torch.log(p)).sum()))
