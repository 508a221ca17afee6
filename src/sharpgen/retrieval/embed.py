"""The ``embed`` stage and what search, evaluation and figures need of a trained SSL encoder (no trainer).

:func:`load_encoder` reads ``encoder.pt``; :func:`embed_patches` streams ``(N, S, S)`` patches through it;
:func:`embed_dataset` writes the embeddings of every patch of a dataset (row i = patch i).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_path
from ..errors import SharpgenError
from ..progress import progress_bar
from ..run import stage_file
from ..training import pick_device
from .models import SimSiam, build_simsiam


def load_encoder(path: str | os.PathLike, device: str | torch.device = "cpu") -> SimSiam:
    """The SimSiam network of ``encoder.pt`` (as ``train_ssl`` wrote it), in eval mode on ``device``."""
    path = Path(path)
    if not path.is_file():
        raise SharpgenError(f"{path}: no SSL encoder (run the train_ssl stage first)")
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(payload, dict) or "state_dict" not in payload or "settings" not in payload:
        raise SharpgenError(f"{path}: not an SSL encoder file (expected keys 'settings' and 'state_dict')")
    settings = payload["settings"]
    model = build_simsiam(
        settings["architecture"], settings["image_size"], settings["embedding_dim"], settings["embedding"]
    )
    state = {"feature_mean": model.feature_mean, **payload["state_dict"]}  # files saved before the buffer: 0
    model.load_state_dict(state)
    dev = device if isinstance(device, torch.device) else pick_device(device)
    return model.to(dev).eval()


def embed_patches(
    encoder: SimSiam,
    patches,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Embeddings ``(N, D)`` float32 of ``(N, S, S)`` patches (numpy, Zarr or any array sliceable by rows).

    Reads ``batch_size`` rows at a time, so memory beyond the output does not grow with N. ``device``:
    where to run (default: the encoder's). The encoder is put in eval mode (BatchNorm running statistics).
    """
    shape = tuple(patches.shape)
    size = encoder.image_size
    if len(shape) != 3 or shape[1:] != (size, size):
        raise SharpgenError(f"patches of shape {shape}: this encoder embeds (N, {size}, {size}) patches")
    if device is not None:
        encoder = encoder.to(device if isinstance(device, torch.device) else pick_device(device))
    dev = next(encoder.parameters()).device
    encoder.eval()
    out = np.empty((shape[0], encoder.embedding_dim), dtype=np.float32)
    with torch.inference_mode():
        for start in progress_bar(
            iterable=range(0, shape[0], batch_size), desc="embed", unit="batch", disable=not progress
        ):
            chunk = np.asarray(patches[start : start + batch_size], dtype=np.float32)
            out[start : start + len(chunk)] = encoder.embed(torch.from_numpy(chunk)[:, None].to(dev)).cpu().numpy()
    return out


def embed_dataset(
    data_dir: str | os.PathLike,
    encoder_path: str | os.PathLike,
    out_path: str | os.PathLike,
    batch_size: int = 256,
    device: str = "auto",
    threads: int = 1,
    progress: bool = True,
) -> np.ndarray:
    """Embed every patch of ``data_dir/patches.zarr`` (all splits) into ``out_path`` (``.npy``, row i = patch i)."""
    import zarr

    torch.set_num_threads(threads)
    store = stage_file(data_dir, "patches")
    if not store.exists():
        raise SharpgenError(f"{store}: no patches (run the normalize stage first)")
    encoder = load_encoder(encoder_path, device)
    embeddings = embed_patches(encoder, zarr.open_array(str(store), mode="r"), batch_size, progress=progress)
    with atomic_path(out_path) as tmp, open(tmp, "wb") as handle:  # np.save(path) would append ".npy"
        np.save(handle, embeddings)
    return embeddings
