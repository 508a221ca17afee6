"""GAN inversion: project real patches into the latent space by optimizing z through the frozen generator.

The method follows the paper (research/paper.md section 3, ``latent_projector.py``): for each target patch,
minimise the masked MSE between ``G(z)`` and the target for 1000 iterations from ``restarts`` = 10 random
starts ``z ~ N(0, I)``, and keep the lowest-loss iterate over all iterations and restarts. The authors' loop
(SGD, lr 0.01, momentum 0.9) never calls ``zero_grad``, so their gradients accumulate across iterations (each
step uses the sum of all past gradients); here the gradients are cleared every iteration. Without that
accumulation the paper's SGD barely moves (see :class:`InversionSettings`), so the default optimizer is Adam;
``{"optimizer": "sgd", "lr": 0.01}`` gives the paper's optimizer, bug excluded.

All ``targets x restarts`` latents are optimized in one batch: the summed per-latent losses are
back-propagated, so each latent receives exactly the gradient (and, SGD and Adam being elementwise, the
update) it would get if optimized alone. Every target uses the same ``restarts`` starting latents (drawn from
``seed``), so a target's result does not depend on which other targets are inverted with it.

Units: patches are in normalized units (1 unit = 1 kG, range [-1, 1]); losses are in normalized units
squared; ``rmse_gauss`` is in G.

Outputs (``save_inversion``): ``latents.npy`` ``(N, 100)`` float32 (what ``sharpgen edit`` reads),
``reconstructions.npy`` ``(N, S, S)`` float32, ``inversion.csv`` (one row per target, same order) and
``inversion.json`` (settings and provenance).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..atomic import atomic_path, write_csv_atomic, write_text_atomic
from ..errors import SharpgenError
from ..progress import progress_bar
from ..run import stage_file
from ..units import GAUSS_PER_NORMALIZED_UNIT
from .models import LATENT_DIM

CSV_COLUMNS = ("label", "loss", "rmse_gauss", "best_restart", "latent_norm", "start_loss")
"""Columns of ``inversion.csv``; row i describes target i and row i of ``latents.npy``."""


DEFAULT_BATCH_SIZE = 16
"""Targets optimized together (each with all its restarts): ``16 x 10`` latents per forward pass."""


def masked_mse(
    generated: torch.Tensor, target: torch.Tensor, threshold: float = 0.05, weak_weight: float = 0.5
) -> torch.Tensor:
    """The paper's masked MSE per image, in normalized units squared (1 unit = 1 kG).

    ``mean over the S x S pixels of w * (generated - target)^2`` with ``w = 1`` where ``|target| > threshold``
    (0.05 = 50 G, strong field) and ``w = weak_weight`` elsewhere. It is the paper's plain mean over all pixels
    (divided by S * S, not by the sum of the weights). The two last axes are the image; the leading axes of
    the broadcast inputs are kept, e.g. ``(B, S, S)`` -> ``(B,)``.
    """
    weight = torch.where(target.abs() > threshold, 1.0, weak_weight).to(generated.dtype)
    return (weight * (generated - target) ** 2).mean(dim=(-2, -1))


@dataclass(frozen=True)
class InversionSettings:
    """Settings of ``invert`` (schema ``$defs.invert``, where each is described; built by ``build_settings``).

    ``threshold`` is in normalized units (0.05 = 50 G); ``weak_weight`` is the loss weight of pixels at or below it;
    ``momentum`` is Adam's beta1 when ``optimizer`` is ``adam``.
    """

    SECTION: ClassVar[str] = "$defs.invert"

    restarts: int
    iterations: int
    optimizer: str
    lr: float
    momentum: float
    threshold: float
    weak_weight: float


@dataclass(frozen=True)
class InversionResult:
    """Best latent per target over all iterations and restarts, and how well it reconstructs the target.

    ``latents`` ``(N, 100)`` float32; ``loss`` ``(N,)`` masked MSE (normalized units squared); ``rmse_gauss``
    ``(N,)`` unweighted RMS of ``reconstruction - target`` in G; ``reconstructions`` ``(N, S, S)`` float32
    (normalized units); ``best_restart`` ``(N,)`` index of the restart that found the best latent;
    ``start_loss`` ``(N,)`` lowest masked MSE among the starting latents (``loss <= start_loss`` always).
    """

    latents: np.ndarray
    loss: np.ndarray
    rmse_gauss: np.ndarray
    reconstructions: np.ndarray
    best_restart: np.ndarray
    start_loss: np.ndarray


def initial_latents(restarts: int, seed: int) -> torch.Tensor:
    """The ``(restarts, 100)`` float32 starting latents ``z ~ N(0, I)`` shared by every target, on CPU."""
    return torch.randn(restarts, LATENT_DIM, generator=torch.Generator().manual_seed(seed))


@contextlib.contextmanager
def _frozen(generator: nn.Module) -> Iterator[nn.Module]:
    """The generator in eval mode with no parameter gradients; its previous state is restored afterwards."""
    training = generator.training
    flags = [p.requires_grad for p in generator.parameters()]
    generator.eval().requires_grad_(False)
    try:
        yield generator
    finally:
        generator.train(training)
        for parameter, flag in zip(generator.parameters(), flags, strict=True):
            parameter.requires_grad_(flag)


def _output_size(generator: nn.Module, device: torch.device) -> int:
    with torch.no_grad():
        return int(generator(torch.zeros(1, LATENT_DIM, device=device)).shape[-1])


def _check_targets(targets: np.ndarray, size: int) -> np.ndarray:
    targets = np.asarray(targets, dtype=np.float32)
    if targets.ndim == 2:
        targets = targets[None]
    if targets.ndim != 3 or targets.shape[0] == 0:
        raise SharpgenError(f"targets must be a non-empty (N, S, S) array of patches, got shape {targets.shape}")
    if targets.shape[1:] != (size, size):
        raise SharpgenError(
            f"targets are {targets.shape[1]} x {targets.shape[2]} px but the generator makes {size} x {size} px "
            "patches; normalize them with the generator's image_size"
        )
    if not np.isfinite(targets).all():
        raise SharpgenError("targets contain NaN or infinite values; normalized patches are finite (NaN -> 0)")
    return targets


def _invert_chunk(
    generator: nn.Module, targets: torch.Tensor, starts: torch.Tensor, settings: InversionSettings, bar
) -> tuple[torch.Tensor, ...]:
    """Optimize ``restarts x n`` latents for ``n`` targets; return the best per (restart, target) and start losses."""
    restarts, (n, size, _) = starts.shape[0], targets.shape
    z = starts[:, None, :].expand(restarts, n, LATENT_DIM).reshape(restarts * n, LATENT_DIM).clone()
    z.requires_grad_(True)
    if settings.optimizer == "sgd":
        optimizer = torch.optim.SGD([z], lr=settings.lr, momentum=settings.momentum)
    else:  # Adam is elementwise too: each latent's update depends only on its own gradients
        optimizer = torch.optim.Adam([z], lr=settings.lr, betas=(settings.momentum, 0.999))
    best_loss = torch.full((restarts, n), math.inf, device=targets.device)
    best_z = torch.zeros(restarts, n, LATENT_DIM, device=targets.device)
    best_recon = torch.zeros(restarts, n, size, size, device=targets.device)
    start_loss = None
    # Iterate k evaluates z_k (z_0 = the start), then steps to z_{k+1}; the final z_iterations is evaluated too.
    for iteration in range(settings.iterations + 1):
        last = iteration == settings.iterations
        with torch.set_grad_enabled(not last):
            recon = generator(z).view(restarts, n, size, size)
            loss = masked_mse(recon, targets, settings.threshold, settings.weak_weight)  # (restarts, n)
        with torch.no_grad():
            if start_loss is None:
                start_loss = loss.min(dim=0).values
            improved = loss < best_loss
            best_loss = torch.where(improved, loss, best_loss)
            # torch.where, not boolean indexing: no device-to-host synchronisation on a GPU.
            best_z = torch.where(improved[..., None], z.view(restarts, n, LATENT_DIM), best_z)
            best_recon = torch.where(improved[..., None, None], recon, best_recon)
        if last:
            break
        optimizer.zero_grad(set_to_none=True)  # the authors' loop omits this, so their gradients accumulate
        loss.sum().backward()  # sum, not mean: each latent gets the gradient of its own loss
        optimizer.step()
        bar.update(1)
    return best_z, best_loss, best_recon, start_loss


def invert_patches(
    generator: nn.Module,
    targets: np.ndarray,
    settings: InversionSettings,
    seed: int,
    device: torch.device | str = "cpu",
    progress: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> InversionResult:
    """Project ``(N, S, S)`` float32 patches (normalized units, 1 unit = 1 kG) into the generator's latent space.

    ``generator`` (already on ``device``) is used frozen and left as it was. ``batch_size`` targets are
    optimized at a time, each with all its restarts; the result does not depend on it (up to float rounding).
    Deterministic for a ``seed`` on CPU. Raises :class:`SharpgenError` when the patch size differs from the
    generator's output size.
    """
    if batch_size < 1:
        raise SharpgenError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device)
    starts = initial_latents(settings.restarts, seed).to(device)
    outputs = []
    with _frozen(generator):
        targets = _check_targets(targets, _output_size(generator, device))
        chunks = range(0, len(targets), batch_size)
        bar = progress_bar(total=len(chunks) * settings.iterations, desc="invert", unit="step", disable=not progress)
        for start in chunks:
            chunk = torch.from_numpy(targets[start : start + batch_size]).to(device)
            best_z, best_loss, best_recon, start_loss = _invert_chunk(generator, chunk, starts, settings, bar)
            restart = best_loss.argmin(dim=0)  # (n,)
            pick = torch.arange(len(chunk), device=device)
            recon = best_recon[restart, pick]
            rmse = ((recon - chunk) ** 2).mean(dim=(-2, -1)).sqrt() * GAUSS_PER_NORMALIZED_UNIT
            outputs.append([best_z[restart, pick], best_loss[restart, pick], rmse, recon, restart, start_loss])
        bar.close()
    latents, loss, rmse, recon, restart, start_loss = (
        np.concatenate([part[i].cpu().numpy() for part in outputs]) for i in range(6)
    )
    return InversionResult(
        latents=latents.astype(np.float32),
        loss=loss.astype(np.float64),
        rmse_gauss=rmse.astype(np.float64),
        reconstructions=recon.astype(np.float32),
        best_restart=restart.astype(np.int64),
        start_loss=start_loss.astype(np.float64),
    )


def targets_from_fits(paths: Sequence[str | os.PathLike], normalization) -> tuple[np.ndarray, list[str]]:
    """Read SHARP FITS files (field in G) and normalize them as a run did.

    ``normalization`` is the run's :class:`sharpgen.data.normalize.Normalization` (``data/normalization.json``).
    Returns the ``(N, S, S)`` float32 patches (normalized units) and the file paths as labels.
    """
    from ..data.fitsio import read_sharp

    if not paths:
        raise SharpgenError("no FITS file given to invert")
    patches, labels = [], []
    for path in paths:
        record = read_sharp(path)
        patches.append(normalization.normalize(record.field, record.pixel_size_mm))
        labels.append(str(path))
    return np.stack(patches).astype(np.float32), labels


def _row_label(row: int, entry: dict) -> str:
    details = []
    if "harpnum" in entry and pd.notna(entry["harpnum"]):
        details.append(f"HARP {int(entry['harpnum'])}")
    if "t_rec" in entry and pd.notna(entry["t_rec"]) and str(entry["t_rec"]):
        details.append(str(entry["t_rec"]))
    return f"row {row} ({', '.join(details)})" if details else f"row {row}"


def targets_from_dataset(data_dir: str | os.PathLike, rows: Sequence[int]) -> tuple[np.ndarray, list[str]]:
    """Rows of ``data_dir/patches.zarr`` (normalized units) and labels like ``row 12 (HARP 377, <T_REC>)``.

    Row numbers are those of ``data_dir/patches.parquet`` (row i describes patch i). Raises
    :class:`SharpgenError` for a missing dataset or a row outside ``0..N-1``.
    """
    import pyarrow.parquet as pq
    import zarr

    data_dir = Path(data_dir)
    store, table_path = stage_file(data_dir, "patches"), stage_file(data_dir, "patch_table")
    if not store.exists() or not table_path.is_file():
        raise SharpgenError(f"{data_dir}: no {store.name} + {table_path.name} (run the normalize stage first)")
    if len(rows) == 0:
        raise SharpgenError("no dataset row given to invert")
    patches = zarr.open_array(str(store), mode="r")
    count = patches.shape[0]
    for row in rows:
        if isinstance(row, bool) or not isinstance(row, int | np.integer) or not 0 <= row < count:
            raise SharpgenError(f"row {row!r} is out of range: {data_dir} has {count} patches (rows 0 to {count - 1})")
    columns = [name for name in ("harpnum", "t_rec") if name in pq.read_schema(table_path).names]
    table = pd.read_parquet(table_path, columns=columns) if columns else pd.DataFrame(index=range(count))
    if len(table) != count:
        raise SharpgenError(
            f"{data_dir}: patches.parquet has {len(table)} rows but patches.zarr {count}; rerun normalize"
        )
    rows = [int(row) for row in rows]
    data = np.stack([np.asarray(patches[row]) for row in rows]).astype(np.float32)
    entries = table.iloc[rows].to_dict("records")
    return data, [_row_label(row, entry) for row, entry in zip(rows, entries, strict=True)]


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:  # a file handle: np.save would append ".npy"
        np.save(handle, array)


def inversion_table(result: InversionResult, labels: Sequence[str]) -> pd.DataFrame:
    """The ``inversion.csv`` table: one row per target; ``latent_norm`` = |z| (about 10 for z ~ N(0, I_100))."""
    if len(labels) != len(result.latents):
        raise ValueError(f"{len(labels)} labels for {len(result.latents)} latents")
    return pd.DataFrame({
        "label": list(labels),
        "loss": result.loss,
        "rmse_gauss": result.rmse_gauss,
        "best_restart": result.best_restart,
        "latent_norm": np.linalg.norm(result.latents.astype(np.float64), axis=1),
        "start_loss": result.start_loss,
    })  # fmt: skip


def save_inversion(
    out_dir: str | os.PathLike,
    result: InversionResult,
    labels: Sequence[str],
    settings: InversionSettings,
    provenance: dict | None = None,
) -> pd.DataFrame:
    """Write the inversion to ``out_dir``, each file atomically, and return the ``inversion.csv`` table.

    ``latents.npy`` ``(N, 100)`` float32 (the input of ``sharpgen edit``), ``reconstructions.npy`` ``(N, S, S)``
    float32 (normalized units), ``inversion.csv`` (columns ``CSV_COLUMNS``, row i = target i) and
    ``inversion.json`` (the settings, plus ``provenance`` such as the generator path and seed).
    """
    out_dir = Path(out_dir)
    table = inversion_table(result, labels)
    _save_npy(out_dir / "latents.npy", result.latents.astype(np.float32))
    _save_npy(out_dir / "reconstructions.npy", result.reconstructions.astype(np.float32))
    write_csv_atomic(table, out_dir / "inversion.csv")
    meta = {"settings": dataclasses.asdict(settings), "count": len(table), **(provenance or {})}
    write_text_atomic(out_dir / "inversion.json", json.dumps(meta, indent=2, default=str) + "\n")
    return table


def run_invert(
    generator_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    fits_files: Sequence[str | os.PathLike] | None = None,
    data_dir: str | os.PathLike | None = None,
    rows: Sequence[int] | None = None,
    normalization=None,
    settings: InversionSettings,
    seed: int,
    device: str = "auto",
    threads: int = 1,
    progress: bool = True,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> pd.DataFrame:
    """Invert FITS files (normalized as ``normalization``, the generator's run's
    :class:`~sharpgen.data.normalize.Normalization`) or rows of the dataset ``data_dir``.

    Exactly one of ``fits_files`` (with ``normalization``) / ``rows`` (with ``data_dir``) must be given; the
    normalized patches must have the generator's size. Writes ``out_dir`` as :func:`save_inversion` does and
    returns the ``inversion.csv`` table.
    """
    from ..training import pick_device
    from .models import load_generator

    if bool(fits_files) == bool(rows):
        raise SharpgenError("give either FITS files or dataset rows to invert (exactly one of the two)")
    if rows and data_dir is None:
        raise SharpgenError("dataset rows need the dataset directory (the one holding patches.zarr)")
    if fits_files and data_dir is not None:
        raise SharpgenError("a dataset directory is only used with dataset rows, not with FITS files")
    if fits_files and normalization is None:
        raise SharpgenError("FITS files need the run's normalization (data/normalization.json) to become patches")
    if threads < 1:
        raise SharpgenError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    dev = pick_device(device)
    generator, gan_settings = load_generator(generator_path, dev)
    size = int(gan_settings["image_size"])
    provenance = {"generator": str(generator_path), "seed": seed, "image_size": size}
    if fits_files:
        if normalization.image_size != size:
            raise SharpgenError(
                f"{generator_path} makes {size} px patches but the normalization is to {normalization.image_size} px; "
                "use the run the generator was trained in"
            )
        targets, labels = targets_from_fits(fits_files, normalization)
        provenance.update(source="fits", normalization=dataclasses.asdict(normalization))
    else:
        targets, labels = targets_from_dataset(data_dir, rows)
        if targets.shape[1:] != (size, size):
            raise SharpgenError(
                f"{data_dir} holds {targets.shape[1]} px patches but {generator_path} makes {size} px ones; "
                "use the dataset the generator was trained on"
            )
        provenance.update(source="dataset", data_dir=str(data_dir))
    result = invert_patches(generator, targets, settings, seed, dev, progress=progress, batch_size=batch_size)
    return save_inversion(out_dir, result, labels, settings, provenance)
