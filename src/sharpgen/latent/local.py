"""Local directions: the gradient of every property at a latent, through the generator.

An SVM normal is one direction for the whole latent space (one per side of the polarity split), fitted to the
extremes of the samples; at any particular latent it also moves whatever is correlated with its property in
those samples ("more flux"). The *local* direction of a property at a latent ``z`` is its gradient
``dq / dz`` there, computed by back-propagating the measurement through the generator. From the gradients of
several properties, the smallest latent step that changes them by wanted amounts solves a small linear system
(:func:`sharpgen.latent.steering.min_norm_steps`): to first order it moves the named properties and holds the
others, whatever the samples correlate.

The paper's properties are sums over thresholded masks (:func:`sharpgen.physics.paper_properties`): piecewise
constant where a pixel enters or leaves a mask, so their exact gradient is zero or undefined there.
:func:`soft_paper_properties` replaces every strong-field mask ``B > T`` by a sigmoid of width
:data:`MASK_SOFTNESS` and every 7 x 7 dilation by a max-pool of the soft mask; it serves the gradients only.
Steering judges every request by the exact measurement of the generated patch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..physics import PAPER_DILATION_RADIUS

MASK_SOFTNESS = 0.015
"""Width of the sigmoid that stands in for a strong-field mask in the gradients (kG, normalized units). At 0.03
the gradient of ``area`` saw pixels far from the threshold and its local direction moved ``area`` half as much as
the exact count; below 0.01 too few pixels carry a gradient."""

DIFFERENTIABLE = ("tuf", "tpf", "tnf", "psep", "tilt_paper", "area", "eflux", "lead_pol", "r_paper")
"""Properties with a soft stand-in (paper units); a request naming any other property is steered along its
SVM direction (:func:`sharpgen.latent.generate.steer`)."""

JACOBIAN_BATCH = 128
"""Latents per forward and backward pass of :func:`property_jacobian`."""


def soft_paper_properties(patches, threshold: float = 0.15) -> dict:
    """Soft stand-ins, as ``(N,)`` torch tensors, for the :data:`DIFFERENTIABLE` properties of ``(N, H, W)``
    normalized patches (kG; ``threshold`` T in kG): the formulas of :func:`sharpgen.physics.paper_properties`
    with the masks ``B > T``, ``B < -T`` replaced by ``sigmoid((+-B - T) / MASK_SOFTNESS)`` and their 7 x 7
    dilations by max-pools. The pixel counts of ``tpf``/``tnf`` stay exact (they carry no gradient). Close to the
    exact values, not equal; NaN where a polarity has no weight at all."""
    import torch
    import torch.nn.functional as functional

    n, h, w = patches.shape
    magnitude = patches.abs()
    positive, negative = torch.relu(patches), torch.relu(-patches)
    strong_pos = torch.sigmoid((patches - threshold) / MASK_SOFTNESS)
    strong_neg = torch.sigmoid((-patches - threshold) / MASK_SOFTNESS)
    rows = torch.arange(h, dtype=patches.dtype, device=patches.device)[:, None]
    cols = torch.arange(w, dtype=patches.dtype, device=patches.device)[None, :]
    weight_pos, weight_neg = positive * strong_pos, negative * strong_neg
    mass_pos, mass_neg = weight_pos.sum((1, 2)), weight_neg.sum((1, 2))
    row_pos, col_pos = (weight_pos * rows).sum((1, 2)) / mass_pos, (weight_pos * cols).sum((1, 2)) / mass_pos
    row_neg, col_neg = (weight_neg * rows).sum((1, 2)) / mass_neg, (weight_neg * cols).sum((1, 2)) / mass_neg
    distance = torch.sqrt((col_neg - col_pos) ** 2 + (row_neg - row_pos) ** 2 + 1e-12)
    size = 2 * PAPER_DILATION_RADIUS + 1

    def dilated(mask):
        return functional.max_pool2d(mask[:, None], size, stride=1, padding=PAPER_DILATION_RADIUS)[:, 0]

    return {
        "tuf": magnitude.mean((1, 2)),
        "tpf": positive.sum((1, 2)) / (patches > 0).sum((1, 2)).clamp(min=1),
        "tnf": negative.sum((1, 2)) / (patches < 0).sum((1, 2)).clamp(min=1),
        "psep": distance / math.hypot(h, w),
        "tilt_paper": torch.rad2deg(torch.asin(((row_neg - row_pos) / distance).clamp(-1.0, 1.0))),
        "area": (strong_pos + strong_neg).mean((1, 2)),
        "eflux": mass_pos - mass_neg,
        "lead_pol": col_pos - col_neg,
        "r_paper": (magnitude * dilated(strong_pos) * dilated(strong_neg)).sum((1, 2)),
    }


def property_jacobian(
    generator, latents: np.ndarray, names: Sequence[str], device, threshold: float = 0.15
) -> np.ndarray:
    """``(N, P, D)`` float64: the gradient of each soft property ``names[p]`` (paper units) of the patch generated
    from each of the ``(N, D)`` latents, per latent unit; a row is NaN where the property is undefined (no strong
    pixel of a polarity). One forward and ``P`` backward passes per :data:`JACOBIAN_BATCH` latents (each patch
    depends on its own latent only, so the gradient of the batch sum is every latent's own)."""
    import torch

    unknown = [name for name in names if name not in DIFFERENTIABLE]
    if unknown:
        raise ValueError(f"no soft stand-in for {', '.join(unknown)} (differentiable: {', '.join(DIFFERENTIABLE)})")
    latents = np.asarray(latents, dtype=np.float32)
    out = np.empty((len(latents), len(names), latents.shape[1]))
    for start in range(0, len(latents), JACOBIAN_BATCH):
        z = torch.from_numpy(latents[start : start + JACOBIAN_BATCH]).to(device).requires_grad_(True)
        with torch.enable_grad():
            values = soft_paper_properties(generator(z).float()[:, 0], threshold)
            for p, name in enumerate(names):
                (gradient,) = torch.autograd.grad(values[name].sum(), z, retain_graph=p < len(names) - 1)
                rows = gradient.double().cpu().numpy()
                rows[~np.isfinite(values[name].detach().cpu().numpy())] = np.nan
                out[start : start + len(z), p] = rows
    return out


def local_jacobian(generator, device, threshold: float, directions, slopes):
    """The :data:`~sharpgen.latent.steering.Jacobian` of ``generator``: ``(latents, names) -> (N, P, D)``, the
    gradients of :func:`property_jacobian` (``threshold`` in kG), with every undefined row replaced by property
    ``names[p]``'s SVM direction on the latent's side (``directions``: a
    :class:`~sharpgen.latent.directions.DirectionSet`) times its slope along that direction (``slopes(name)``,
    property units per latent unit): a patch without one polarity has no gradient of ``psep`` or ``r_paper``, and
    the SVM direction leads towards patches that have both."""

    def jacobian(latents: np.ndarray, names: Sequence[str]) -> np.ndarray:
        gradients = property_jacobian(generator, latents, names, device, threshold)
        for p, name in enumerate(names):
            undefined = ~np.all(np.isfinite(gradients[:, p]), axis=1)
            if undefined.any():
                gradients[undefined, p] = directions.normals(name, np.asarray(latents)[undefined]) * slopes(name)
        return gradients

    return jacobian
