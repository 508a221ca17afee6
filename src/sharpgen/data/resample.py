"""Antialiased bilinear resampling as linear operators.

Resizing an image ``(H, W) -> (h, w)`` is ``Ry @ image @ Rx.T`` with two small dense matrices. The weights
follow the antialiased triangle filter of PIL and of PyTorch's ``interpolate(mode="bilinear", antialias=True,
align_corners=False)`` (the paper's ``torchvision Resize``): when shrinking, the filter support grows with the
scale factor so every input pixel contributes; when enlarging it is plain bilinear interpolation.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


def _triangle_weights(center: float, scale: float) -> tuple[int, np.ndarray]:
    """First tap and unnormalized triangle weights of one output sample centred at ``center`` (input px)."""
    support = max(scale, 1.0)
    inv_scale = 1.0 / support
    first = int(np.floor(center - support + 0.5))
    last = int(np.floor(center + support + 0.5))
    taps = np.arange(first, last)
    return first, np.clip(1.0 - np.abs((taps - center + 0.5) * inv_scale), 0.0, None)


@lru_cache(maxsize=256)
def resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` matrix resampling ``n_in`` samples onto ``n_out`` covering the same extent.

    Edge samples renormalize their weights over the taps inside the signal (PIL / torch semantics).
    """
    if n_in < 1 or n_out < 1:
        raise ValueError(f"sizes must be positive, got n_in={n_in}, n_out={n_out}")
    scale = n_in / n_out
    matrix = np.zeros((n_out, n_in), dtype=np.float64)
    for i in range(n_out):
        first, weights = _triangle_weights(scale * (i + 0.5), scale)
        lo, hi = max(first, 0), min(first + weights.size, n_in)
        inside = weights[lo - first : hi - first]
        if inside.sum() > 0:
            matrix[i, lo:hi] = inside / inside.sum()
    matrix.setflags(write=False)
    return matrix


@lru_cache(maxsize=256)
def rescale_matrix(n_in: int, n_out: int, scale: float) -> np.ndarray:
    """``(n_out, n_in)`` matrix sampling ``n_out`` outputs of ``scale`` input pixels each, centred on the input.

    Used for fixed physical pixel sizes: the output window may extend past the input, which then counts as
    zero field (zero padding), and an input wider than the window is cropped symmetrically.
    """
    if n_in < 1 or n_out < 1 or scale <= 0:
        raise ValueError(f"need positive sizes and scale, got n_in={n_in}, n_out={n_out}, scale={scale}")
    matrix = np.zeros((n_out, n_in), dtype=np.float64)
    origin = n_in / 2.0 - scale * n_out / 2.0
    for i in range(n_out):
        first, weights = _triangle_weights(origin + scale * (i + 0.5), scale)
        weights = weights / weights.sum()
        lo, hi = max(first, 0), min(first + weights.size, n_in)
        if hi > lo:
            matrix[i, lo:hi] = weights[lo - first : hi - first]
    matrix.setflags(write=False)
    return matrix


def apply_separable(image: np.ndarray, ry: np.ndarray, rx: np.ndarray) -> np.ndarray:
    """Apply row and column resampling matrices to a 2-d image (or ``(N, H, W)`` stack); returns float32."""
    image = np.asarray(image, dtype=np.float32)
    out = np.matmul(np.matmul(ry.astype(np.float32), image), rx.T.astype(np.float32))
    return out.astype(np.float32, copy=False)


def resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a 2-d ``image`` (or ``(N, H, W)`` stack) to ``shape = (h, w)``; aspect ratio not kept. Float32."""
    image = np.asarray(image)
    return apply_separable(image, resize_matrix(image.shape[-2], shape[0]), resize_matrix(image.shape[-1], shape[1]))
