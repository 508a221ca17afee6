"""The ``train_ssl`` and ``embed`` stages: SimSiam on the ``train`` split, then embeddings of every patch.

Training runs ``epochs`` passes over the train split in batches of ``batch_size`` (the last partial batch
of an epoch is dropped: BatchNorm needs full batches). The order of epoch e is a permutation seeded by
``(seed, e)``; both views of a batch come from one augmentation generator seeded by ``seed``. Every
``checkpoint_every`` steps the full state (network, optimizer, step, random states, the log so far) is
written atomically to ``checkpoints/last.pt`` and ``train_log.csv`` is rewritten from it, so a killed run
restarts from the last checkpoint and ends with the same weights as an uninterrupted one. The final
``encoder.pt`` holds ``{"settings", "seed", "state_dict"}`` of the whole SimSiam network.

``train_log.csv`` columns: ``step``, ``epoch`` (0-based), ``loss`` (symmetrised negative cosine, -1 is
perfect agreement of the views), ``output_std`` (the collapse indicator of ``ssl_models.output_std`` on the
predictor output of the first view: about 1 healthy, about 0 collapsed), ``effective_rank`` (participation
ratio of the projector outputs ``z`` of the first view, ``ssl_models.effective_rank``: how many directions the
embeddings use; falling towards 1-2 is dimensional collapse, which ``output_std`` does not see) and
``seconds_per_step``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..atomic import atomic_path, write_csv_atomic
from ..errors import SharpgenError
from ..gan.train import data_fingerprint, load_training_patches, pick_device
from ..progress import progress_bar
from ..run import stage_file
from .augment import AugmentSettings, two_views
from .models import ARCHITECTURES, EMBEDDINGS, SimSiam, build_simsiam, effective_rank, output_std, simsiam_loss

LOG_COLUMNS = ("step", "epoch", "loss", "output_std", "effective_rank", "seconds_per_step")


@dataclass(frozen=True)
class SslSettings:
    """Settings of ``train_ssl`` (config section ``ssl`` plus the top-level ``image_size``)."""

    architecture: str
    image_size: int
    embedding_dim: int
    embedding: str
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    checkpoint_every: int
    augment: AugmentSettings = AugmentSettings()

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise SharpgenError(f"config key 'ssl.architecture': choose one of {', '.join(ARCHITECTURES)}")
        if self.embedding not in EMBEDDINGS:
            raise SharpgenError(f"config key 'ssl.embedding': choose one of {', '.join(EMBEDDINGS)}")
        if self.batch_size < 2:
            raise SharpgenError("config key 'ssl.batch_size': BatchNorm needs at least 2 patches per batch")

    @classmethod
    def from_config(cls, config: dict) -> SslSettings:
        """Build from a validated pipeline config."""
        section = config["ssl"]
        return cls(
            architecture=section["architecture"],
            image_size=int(config["image_size"]),
            embedding_dim=int(section["embedding_dim"]),
            embedding=section["embedding"],
            epochs=int(section["epochs"]),
            batch_size=int(section["batch_size"]),
            lr=float(section["lr"]),
            momentum=float(section["momentum"]),
            weight_decay=float(section["weight_decay"]),
            checkpoint_every=int(section["checkpoint_every"]),
            augment=AugmentSettings.from_mapping(section.get("augment")),
        )

    @classmethod
    def from_dict(cls, values: dict) -> SslSettings:
        """Inverse of ``dataclasses.asdict`` (as stored in checkpoints and ``encoder.pt``)."""
        return cls(**{**values, "augment": AugmentSettings(**values["augment"])})


def _network(settings: SslSettings) -> SimSiam:
    return build_simsiam(settings.architecture, settings.image_size, settings.embedding_dim, settings.embedding)


def _epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def _new_state(settings: SslSettings, seed: int, device: torch.device) -> dict:
    torch.manual_seed(seed)
    model = _network(settings).to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )
    return {
        "step": 0,
        "model": model,
        "optimizer": optimizer,
        "augmenter": torch.Generator().manual_seed(seed),
        "log": [],
    }


def _trajectory(settings: dict) -> dict:
    """The settings that shape training: all but ``epochs`` and ``checkpoint_every`` (a run can be extended) and
    ``embedding`` (read only by ``embed``: changing it rewrites ``encoder.pt`` without training)."""
    return {key: value for key, value in settings.items() if key not in ("epochs", "checkpoint_every", "embedding")}


def _save_checkpoint(path: Path, state: dict, settings: SslSettings, seed: int) -> None:
    payload = {
        "settings": dataclasses.asdict(settings),
        "seed": seed,
        "data": state["data"],
        "step": state["step"],
        "log": state["log"],
        "augmenter": state["augmenter"].get_state(),
        "torch_rng": torch.get_rng_state(),
        "model": state["model"].state_dict(),
        "optimizer": state["optimizer"].state_dict(),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _restore_checkpoint(path: Path, state: dict, settings: SslSettings, seed: int, total_steps: int) -> None:
    """Load ``path`` into ``state`` when it belongs to this run; a checkpoint of another run (other settings,
    seed or training data) is stale: it is reported and training starts from scratch, overwriting it."""
    payload = torch.load(path, map_location="cpu", weights_only=False)
    same_run = (
        _trajectory(payload["settings"]) == _trajectory(dataclasses.asdict(settings))
        and payload["seed"] == seed
        and payload.get("data") == state["data"]
    )
    if not same_run:
        print(f"train_ssl: {path} is from another run (settings, seed or data differ): training from scratch",
              file=sys.stderr, flush=True)  # fmt: skip
        return
    if payload["step"] > total_steps:
        raise SharpgenError(
            f"{path} is at step {payload['step']}, beyond the {total_steps} steps of ssl.epochs = {settings.epochs}; "
            "raise epochs or delete it"
        )
    state["model"].load_state_dict(payload["model"])
    state["optimizer"].load_state_dict(payload["optimizer"])
    state["step"], state["log"] = payload["step"], payload["log"]
    state["augmenter"].set_state(payload["augmenter"])
    torch.set_rng_state(payload["torch_rng"])


def train_ssl(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    settings: SslSettings,
    seed: int,
    device: str = "auto",
    threads: int = 1,
    progress: bool = True,
) -> pd.DataFrame:
    """Train SimSiam on the train split of ``data_dir``; write ``out_dir/encoder.pt`` and return the log.

    Resumes from ``out_dir/checkpoints/last.pt`` when it exists (same settings, seed and train split required,
    except that ``epochs`` may be raised to train longer: the result equals one run of the larger ``epochs``,
    the learning rate being constant). The whole
    train split is held in memory (as ``train_gan`` does): 44k patches of 128 px are 2.9 GB.
    """
    torch.set_num_threads(threads)
    out_dir = Path(out_dir)
    checkpoint = stage_file(out_dir, "ssl_checkpoint")
    dev = pick_device(device)
    patches = load_training_patches(data_dir, settings.image_size)
    steps_per_epoch = len(patches) // settings.batch_size
    if steps_per_epoch == 0:
        raise SharpgenError(
            f"config key 'ssl.batch_size': {settings.batch_size} exceeds the {len(patches)} train patches"
        )
    total = settings.epochs * steps_per_epoch
    state = _new_state(settings, seed, dev)
    state["data"] = data_fingerprint(patches)
    if checkpoint.is_file():
        _restore_checkpoint(checkpoint, state, settings, seed, total)
    model, optimizer = state["model"], state["optimizer"]
    model.train()
    bar = progress_bar(total=total, initial=state["step"], desc="train_ssl", unit="step", disable=not progress)
    order, order_epoch = None, -1
    while state["step"] < total:
        started = time.perf_counter()
        epoch, position = divmod(state["step"], steps_per_epoch)
        if epoch != order_epoch:
            order, order_epoch = _epoch_order(seed, epoch, len(patches)), epoch
        batch = patches[order[position * settings.batch_size : (position + 1) * settings.batch_size]].to(dev)
        view1, view2 = two_views(batch, state["augmenter"], settings.augment)
        z1, p1 = model(view1)
        z2, p2 = model(view2)
        loss = simsiam_loss(z1, p1, z2, p2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        state["step"] += 1
        state["log"].append({
            "step": state["step"], "epoch": epoch, "loss": loss.item(), "output_std": output_std(p1),
            "effective_rank": effective_rank(z1),
            "seconds_per_step": time.perf_counter() - started,
        })  # fmt: skip
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", std=f"{state['log'][-1]['output_std']:.2f}")
        if state["step"] % settings.checkpoint_every == 0 or state["step"] == total:
            _save_checkpoint(checkpoint, state, settings, seed)
            write_csv_atomic(pd.DataFrame(state["log"], columns=list(LOG_COLUMNS)), stage_file(out_dir, "ssl_log"))
    bar.close()
    with atomic_path(stage_file(out_dir, "encoder")) as tmp:
        torch.save({"settings": dataclasses.asdict(settings), "seed": seed, "state_dict": model.state_dict()}, tmp)
    return pd.DataFrame(state["log"], columns=list(LOG_COLUMNS))


def load_encoder(path: str | os.PathLike, device: str | torch.device = "cpu") -> SimSiam:
    """The SimSiam network of ``encoder.pt``, in eval mode on ``device`` (``settings`` attached as ``.settings``)."""
    path = Path(path)
    if not path.is_file():
        raise SharpgenError(f"{path}: no SSL encoder (run the train_ssl stage first)")
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(payload, dict) or "state_dict" not in payload or "settings" not in payload:
        raise SharpgenError(f"{path}: not an SSL encoder file (expected keys 'settings' and 'state_dict')")
    settings = SslSettings.from_dict(payload["settings"])
    model = _network(settings)
    model.load_state_dict(payload["state_dict"])
    model.settings = settings
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
