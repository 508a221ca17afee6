"""What the GAN and SimSiam trainers share: device, training patches, run identity and resumable checkpoints.

A trainer keeps its run in a ``state`` dict: ``step``, ``log`` (one dict per step), and named parts that are
torch modules or optimizers (``state_dict``) or random generators (``get_state``). :func:`save_checkpoint`
writes it atomically; :func:`restore_checkpoint` loads it back only when the checkpoint's identity (the
settings that shape training, the seed and a digest of the training patches) is this run's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .atomic import atomic_path
from .errors import SharpgenError
from .run import stage_file


def pick_device(requested: str = "auto") -> torch.device:
    """CUDA when present (or asked for), else CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise SharpgenError("device 'cuda' requested but no CUDA GPU is available")
    return torch.device(requested)


PRECISIONS = ("auto", "bf16", "fp32")


def resolve_precision(requested: str, device: torch.device) -> str:
    """``bf16`` or ``fp32`` for ``requested`` (one of :data:`PRECISIONS`) on ``device``.

    ``auto`` takes bf16 where it is native: on CUDA, and on CPUs with AVX512-BF16 or AMX. Elsewhere oneDNN
    emulates bf16 (several times slower than fp32), so ``auto`` keeps fp32 there; ``bf16`` forces it anyway.
    """
    if requested not in PRECISIONS:
        raise SharpgenError(f"unknown precision {requested!r} (choose one of: {', '.join(PRECISIONS)})")
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16"
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return "bf16" if native else "fp32"


def autocast(precision: str, device: torch.device):
    """Context in which the networks' forward passes run at ``precision`` (``bf16`` or ``fp32``) on ``device``."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def load_training_patches(data_dir: str | os.PathLike, image_size: int) -> torch.Tensor:
    """The ``train`` split of ``data_dir/patches.zarr`` as a ``(N, 1, S, S)`` float32 tensor (normalized units)."""
    import zarr

    data_dir = Path(data_dir)
    table = pd.read_parquet(stage_file(data_dir, "patch_table"), columns=["split"])
    rows = np.flatnonzero(table["split"].to_numpy() == "train")
    if rows.size == 0:
        raise SharpgenError(f"{data_dir}: the train split is empty")
    patches = zarr.open_array(str(stage_file(data_dir, "patches")), mode="r")
    if patches.shape[1:] != (image_size, image_size):
        raise SharpgenError(
            f"{data_dir}: patches are {patches.shape[1]} px but image_size is {image_size}; rerun normalize"
        )
    return torch.from_numpy(np.asarray(patches.get_orthogonal_selection((rows, slice(None), slice(None)))))[:, None]


def data_fingerprint(patches: torch.Tensor) -> dict:
    """Digest and shape of a training set: a checkpoint made on other patches is not resumed."""
    return {"data_sha256": hashlib.sha256(patches.numpy().tobytes()).hexdigest(), "data_shape": list(patches.shape)}


def run_identity(settings, seed: int, patches: torch.Tensor, free: Sequence[str]) -> dict:
    """What a checkpoint must share with this run to be resumed: the settings dataclass but the ``free`` keys
    (e.g. the length of training, so a run can be extended), the seed, and :func:`data_fingerprint`."""
    shaping = {key: value for key, value in dataclasses.asdict(settings).items() if key not in free}
    return {"settings": shaping, "seed": seed, **data_fingerprint(patches)}


def save_checkpoint(
    path: Path, state: dict, settings, identity: dict, modules: Sequence[str], generators: Sequence[str]
) -> None:
    """Write ``state`` (its ``modules`` state dicts and ``generators`` states) and torch's RNG atomically."""
    payload = {
        "settings": dataclasses.asdict(settings),
        "identity": identity,
        "step": state["step"],
        "log": state["log"],
        **{name: state[name].get_state() for name in generators},
        "torch_rng": torch.get_rng_state(),
        **{name: state[name].state_dict() for name in modules},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def restore_checkpoint(
    path: Path,
    state: dict,
    identity: dict,
    modules: Sequence[str],
    generators: Sequence[str],
    *,
    stage: str,
    total_steps: int,
    limit: str,
    setting: str,
) -> bool:
    """Load ``path`` into ``state`` when its identity is ``identity``; return whether it did.

    A checkpoint of another run (other settings, seed or training data: e.g. the config or the dataset changed
    since) is stale: it is reported and training starts from scratch, overwriting it. One beyond ``total_steps``
    raises :class:`SharpgenError` naming ``limit``, what bounds the run (``gan.steps = 2000``), and ``setting``.
    """
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if payload.get("identity") != identity:
        print(f"{stage}: {path} is from another run (settings, seed or data differ): training from scratch",
              file=sys.stderr, flush=True)  # fmt: skip
        return False
    if payload["step"] > total_steps:
        raise SharpgenError(f"{path} is at step {payload['step']}, beyond {limit}; raise {setting} or delete it")
    for name in modules:
        state[name].load_state_dict(payload[name])
    for name in generators:
        state[name].set_state(payload[name])
    state["step"], state["log"] = payload["step"], payload["log"]
    torch.set_rng_state(payload["torch_rng"])
    return True
