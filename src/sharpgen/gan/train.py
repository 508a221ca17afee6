"""The ``train_gan`` stage: adversarial training on the ``train`` split, resumable after any interruption.

Every ``checkpoint_every`` steps the full state (networks, EMA generator, optimizers, step, random states,
the log so far) is written atomically to ``checkpoints/last.pt`` and ``train_log.csv`` is rewritten from it,
so a killed run (even SIGKILL) restarts from the last checkpoint and its log never has rows the checkpoint
does not. The final ``generator.pt`` holds the EMA generator's weights and the settings that made it.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from ..atomic import atomic_path, write_csv_atomic
from ..errors import SharpgenError
from ..plotting import save_patch_grid
from ..progress import progress_bar
from ..run import stage_file
from .models import LATENT_DIM, build_networks

PREVIEW_COUNT = 16
LOG_COLUMNS = ("step", "d_loss", "g_loss", "real_acc", "fake_acc", "seconds_per_step")


@dataclass(frozen=True)
class GanSettings:
    """Settings of ``train_gan`` (config section ``gan`` plus the top-level ``image_size``)."""

    architecture: str
    image_size: int
    steps: int
    batch_size: int
    lr: float
    betas: tuple[float, float]
    loss: str
    ema_decay: float
    checkpoint_every: int

    @classmethod
    def from_config(cls, config: dict) -> GanSettings:
        """Build from a validated pipeline config."""
        section = config["gan"]
        return cls(
            architecture=section["architecture"],
            image_size=int(config["image_size"]),
            steps=int(section["steps"]),
            batch_size=int(section["batch_size"]),
            lr=float(section["lr"]),
            betas=tuple(float(b) for b in section["betas"]),
            loss=section["loss"],
            ema_decay=float(section["ema_decay"]),
            checkpoint_every=int(section["checkpoint_every"]),
        )


def pick_device(requested: str = "auto") -> torch.device:
    """CUDA when present (or asked for), else CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise SharpgenError("device 'cuda' requested but no CUDA GPU is available")
    return torch.device(requested)


def load_training_patches(data_dir: str | os.PathLike, image_size: int) -> torch.Tensor:
    """The ``train`` split of ``data_dir/patches.zarr`` as a ``(N, 1, S, S)`` float32 tensor."""
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


LOSSES = ("bce", "hinge")


def discriminator_loss(loss: str, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """``bce``: the paper's mean of the real and fake binary cross-entropies; ``hinge``: the hinge loss."""
    if loss == "bce":
        return 0.5 * (
            F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        )
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def generator_loss(loss: str, fake_logits: torch.Tensor) -> torch.Tensor:
    """``bce``: the paper's non-saturating ``-log D(G(z))``; ``hinge``: ``-D(G(z))``."""
    if loss == "bce":
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    return -fake_logits.mean()


def ema_decay_at(ema_decay: float, step: int) -> float:
    """EMA decay used after update ``step`` (0-based): ``min(ema_decay, (1 + step) / (10 + step))``.

    The warm-up keeps the average from remembering the random initial weights: with a fixed 0.999, 60 % of
    the EMA generator would still be its initialization after 500 steps, which is most of a short CPU run.
    """
    return min(ema_decay, (1.0 + step) / (10.0 + step))


def _new_state(settings: GanSettings, seed: int, device: torch.device) -> dict:
    torch.manual_seed(seed)
    generator, discriminator = build_networks(settings.architecture, settings.image_size)
    generator, discriminator = generator.to(device), discriminator.to(device)
    return {
        "step": 0,
        "generator": generator,
        "discriminator": discriminator,
        "ema": copy.deepcopy(generator).requires_grad_(False),
        "opt_g": torch.optim.Adam(generator.parameters(), lr=settings.lr, betas=settings.betas),
        "opt_d": torch.optim.Adam(discriminator.parameters(), lr=settings.lr, betas=settings.betas),
        "sampler": torch.Generator().manual_seed(seed),
        "log": [],
    }


def run_identity(settings: GanSettings, seed: int, patches: torch.Tensor) -> dict:
    """What a checkpoint must share with this run to be resumed: the settings that shape training (all but
    ``steps`` and ``checkpoint_every``, so a run can be extended), the seed, and a digest of the training data."""
    shaping = {
        key: value for key, value in dataclasses.asdict(settings).items() if key not in ("steps", "checkpoint_every")
    }
    return {"settings": shaping, "seed": seed, **data_fingerprint(patches)}


def data_fingerprint(patches: torch.Tensor) -> dict:
    """Digest and shape of a training set: a checkpoint made on other patches is not resumed."""
    return {"data_sha256": hashlib.sha256(patches.numpy().tobytes()).hexdigest(), "data_shape": list(patches.shape)}


def _save_checkpoint(path: Path, state: dict, settings: GanSettings, identity: dict) -> None:
    payload = {
        "settings": dataclasses.asdict(settings),
        "identity": identity,
        "step": state["step"],
        "log": state["log"],
        "sampler": state["sampler"].get_state(),
        "torch_rng": torch.get_rng_state(),
        **{name: state[name].state_dict() for name in ("generator", "discriminator", "ema", "opt_g", "opt_d")},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _restore_checkpoint(path: Path, state: dict, settings: GanSettings, identity: dict) -> bool:
    """Load ``path`` into ``state`` when it belongs to this run; return whether it did.

    A checkpoint of another run (other settings, seed or training data: e.g. the config or the dataset
    changed since) is stale: it is reported and training starts from scratch, overwriting it.
    """
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if payload.get("identity") != identity:
        print(f"train_gan: {path} is from another run (settings, seed or data differ): training from scratch",
              file=sys.stderr, flush=True)  # fmt: skip
        return False
    if payload["step"] > settings.steps:
        raise SharpgenError(
            f"{path} is at step {payload['step']}, beyond gan.steps = {settings.steps}; raise steps or delete it"
        )
    for name in ("generator", "discriminator", "ema", "opt_g", "opt_d"):
        state[name].load_state_dict(payload[name])
    state["step"], state["log"] = payload["step"], payload["log"]
    state["sampler"].set_state(payload["sampler"])
    torch.set_rng_state(payload["torch_rng"])
    return True


def _write_preview(path: Path, ema: torch.nn.Module, z: torch.Tensor, step: int) -> None:
    with torch.no_grad():
        patches = ema(z).squeeze(1).cpu().numpy()
    save_patch_grid(patches, path, title=f"EMA generator after {step} steps (gray: -1 to +1 kG)")


def train_gan(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    settings: GanSettings,
    seed: int,
    device: str = "auto",
    threads: int = 1,
    progress: bool = True,
    preview_every: int = 0,
) -> pd.DataFrame:
    """Train the GAN on the train split of ``data_dir``; write ``out_dir/generator.pt`` and return the log.

    Resumes from ``out_dir/checkpoints/last.pt`` when it belongs to this run (same settings but ``steps``, which
    may be raised to train longer; same seed; same training data); a stale one is replaced. Every
    ``preview_every`` steps (0 = never) and at the end, the EMA generator's patches for 16 fixed latents go to
    ``out_dir/previews/step_NNNNNN.png``; the last one is also ``out_dir/samples.png``.
    """
    torch.set_num_threads(threads)
    out_dir = Path(out_dir)
    checkpoint = stage_file(out_dir, "gan_checkpoint")
    dev = pick_device(device)
    patches = load_training_patches(data_dir, settings.image_size)
    state = _new_state(settings, seed, dev)
    identity = run_identity(settings, seed, patches)
    if checkpoint.is_file():
        _restore_checkpoint(checkpoint, state, settings, identity)
    generator, discriminator, ema = state["generator"], state["discriminator"], state["ema"]
    preview_z = torch.from_numpy(np.random.default_rng(seed).standard_normal((PREVIEW_COUNT, LATENT_DIM)))
    preview_z = preview_z.float().to(dev)
    bar = progress_bar(total=settings.steps, initial=state["step"], desc="train_gan", unit="step", disable=not progress)
    while state["step"] < settings.steps:
        started = time.perf_counter()
        index = torch.randint(len(patches), (settings.batch_size,), generator=state["sampler"])
        real = patches[index].to(dev)
        z = torch.randn(settings.batch_size, LATENT_DIM, generator=state["sampler"]).to(dev)
        # The paper's order: one generator step, then one discriminator step on the updated generator.
        g_loss = generator_loss(settings.loss, discriminator(generator(z)))
        state["opt_g"].zero_grad(set_to_none=True)
        g_loss.backward()
        state["opt_g"].step()
        real_logits = discriminator(real)
        fake_logits = discriminator(generator(z).detach())
        d_loss = discriminator_loss(settings.loss, real_logits, fake_logits)
        state["opt_d"].zero_grad(set_to_none=True)
        d_loss.backward()
        state["opt_d"].step()
        decay = ema_decay_at(settings.ema_decay, state["step"])
        with torch.no_grad():
            for ema_p, p in zip(ema.parameters(), generator.parameters(), strict=True):
                ema_p.lerp_(p, 1.0 - decay)
        state["step"] += 1
        state["log"].append({
            "step": state["step"], "d_loss": d_loss.item(), "g_loss": g_loss.item(),
            "real_acc": (real_logits > 0).float().mean().item(), "fake_acc": (fake_logits < 0).float().mean().item(),
            "seconds_per_step": time.perf_counter() - started,
        })  # fmt: skip
        bar.update(1)
        if state["step"] % settings.checkpoint_every == 0 or state["step"] == settings.steps:
            _save_checkpoint(checkpoint, state, settings, identity)
            write_csv_atomic(pd.DataFrame(state["log"], columns=list(LOG_COLUMNS)), stage_file(out_dir, "gan_log"))
        if preview_every and state["step"] % preview_every == 0:
            preview = stage_file(out_dir, "gan_previews") / f"step_{state['step']:06d}.png"
            _write_preview(preview, ema, preview_z, state["step"])
    bar.close()
    _write_preview(stage_file(out_dir, "gan_grid"), ema, preview_z, state["step"])
    with atomic_path(stage_file(out_dir, "generator")) as tmp:
        torch.save({"settings": dataclasses.asdict(settings), "state_dict": ema.state_dict()}, tmp)
    return pd.DataFrame(state["log"], columns=list(LOG_COLUMNS))
