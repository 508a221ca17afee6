"""The ``train_gan`` stage: adversarial training on the ``train`` split, resumable after any interruption.

Every ``checkpoint_every`` steps the full state (networks, EMA generator, optimizers, step, random states,
the log so far) is written atomically to ``checkpoints/last.pt`` and ``train_log.csv`` is rewritten from it,
so a killed run (even SIGKILL) restarts from the last checkpoint and its log never has rows the checkpoint
does not. The final ``generator.pt`` holds the EMA generator's weights and the settings that made it.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from ..atomic import atomic_path, write_csv_atomic
from ..plotting import save_patch_grid
from ..progress import progress_bar
from ..run import stage_file
from ..training import (
    autocast,
    load_training_patches,
    pick_device,
    resolve_precision,
    restore_checkpoint,
    run_identity,
    save_checkpoint,
)
from .models import LATENT_DIM, NetworkDesign, build_networks, physics_features

PREVIEW_COUNT = 16
LOG_COLUMNS = ("step", "d_loss", "g_loss", "real_acc", "fake_acc", "seconds_per_step")


@dataclass(frozen=True)
class GanSettings:
    """Settings of ``train_gan`` (schema section ``gan`` plus the top-level ``image_size``)."""

    SECTION: ClassVar[str] = "gan"
    CONFIG_KEYS: ClassVar[dict[str, str]] = {"image_size": "image_size"}

    architecture: str
    image_size: int
    network: NetworkDesign
    augment: tuple[str, ...]
    r1_gamma: float
    physics_match: float
    steps: int
    batch_size: int
    lr: float
    betas: tuple[float, float]
    loss: str
    ema_decay: float
    checkpoint_every: int
    precision: str  # auto | bf16 | fp32; train_gan stores the one it used (bf16 or fp32)


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


R1_INTERVAL = 4
"""Steps between R1 penalties (lazy regularization, as StyleGAN2: the penalty is scaled by the interval)."""


def augment_patches(patches: torch.Tensor, kinds: tuple[str, ...], generator: torch.Generator) -> torch.Tensor:
    """DiffAugment of ``(B, 1, S, S)`` patches, differentiable, random draws from ``generator``.

    ``translation``: each patch shifted by up to S/8 px along each axis, zero (no field) filling the edge;
    ``cutout``: a square of side S/4 at a random place set to zero.
    """
    batch, size = patches.shape[0], patches.shape[-1]
    rows = torch.arange(batch)[:, None, None]
    if "translation" in kinds:
        shift = size // 8
        dy, dx = torch.randint(-shift, shift + 1, (2, batch, 1), generator=generator)
        padded = F.pad(patches, (shift, shift, shift, shift))
        y = (torch.arange(size) + shift - dy)[:, :, None]
        x = (torch.arange(size) + shift - dx)[:, None, :]
        patches = padded[rows, 0, y, x][:, None]
    if "cutout" in kinds:
        half = size // 8
        cy, cx = torch.randint(0, size, (2, batch, 1, 1), generator=generator)
        grid = torch.arange(size)
        outside = ((grid[None, :, None] - cy).abs() >= half) | ((grid[None, None, :] - cx).abs() >= half)
        patches = patches * outside[:, None].to(patches.dtype)
    return patches


MATCHED_FEATURES = [0, 1, 3]
"""The :func:`physics_features` that ``physics_match`` compares: both imbalances and the mean |B|. Not the umbral
fraction: matched too, it drove the generator to dim whole regions (median mean |B| -43 %) rather than draw
fewer saturated cores (two seeds, 6000 steps)."""


def physics_match_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean over :data:`MATCHED_FEATURES` of the 1-D Wasserstein-1 distance between the generated batch ``fake``
    and the training batch ``real`` (same size: sorted values paired), each statistic in units of its standard
    deviation over ``real``. Differentiable in ``fake``; a batch drawn like ``real`` scores near 0."""
    generated = physics_features(fake)[:, MATCHED_FEATURES]
    training = physics_features(real)[:, MATCHED_FEATURES].detach()
    scale = training.std(0).clamp_min(1e-3)
    return ((generated.sort(0).values - training.sort(0).values).abs() / scale).mean()


def r1_penalty(discriminator, real: torch.Tensor, precision: str, device: torch.device) -> torch.Tensor:
    """Mean squared norm of the discriminator's gradient with respect to ``real`` patches (R1, Mescheder 2018)."""
    real = real.detach().requires_grad_(True)
    with autocast(precision, device):
        logits = discriminator(real).float()
    (gradient,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    return gradient.pow(2).flatten(1).sum(1).mean()


def ema_decay_at(ema_decay: float, step: int) -> float:
    """EMA decay used after update ``step`` (0-based): ``min(ema_decay, (1 + step) / (10 + step))``.

    The warm-up keeps the average from remembering the random initial weights: with a fixed 0.999, 60 % of
    the EMA generator would still be its initialization after 500 steps, which is most of a short CPU run.
    """
    return min(ema_decay, (1.0 + step) / (10.0 + step))


def _new_state(settings: GanSettings, seed: int, device: torch.device) -> dict:
    torch.manual_seed(seed)
    generator, discriminator = build_networks(settings.architecture, settings.image_size, settings.network)
    # Channels-last weights make oneDNN's convolutions (and their gradients) 1.5-1.7x faster on a CPU core, in
    # fp32 and bf16 alike; the networks compute the same functions.
    generator, discriminator = (net.to(device, memory_format=torch.channels_last) for net in (generator, discriminator))
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


MODULES = ("generator", "discriminator", "ema", "opt_g", "opt_d")
GENERATORS = ("sampler",)
FREE_SETTINGS = ("steps", "checkpoint_every")
"""Settings a resumed run may change: it can be extended."""


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
    settings = dataclasses.replace(settings, precision=resolve_precision(settings.precision, dev))
    print(f"train_gan: {settings.precision} arithmetic on {dev}", file=sys.stderr, flush=True)
    patches = load_training_patches(data_dir, settings.image_size)
    state = _new_state(settings, seed, dev)
    identity = run_identity(settings, seed, patches, FREE_SETTINGS)
    if checkpoint.is_file():
        restore_checkpoint(
            checkpoint, state, identity, MODULES, GENERATORS,
            stage="train_gan", total_steps=settings.steps, limit=f"gan.steps = {settings.steps}", setting="steps",
        )  # fmt: skip
    generator, discriminator, ema = state["generator"], state["discriminator"], state["ema"]
    preview_z = torch.from_numpy(np.random.default_rng(seed).standard_normal((PREVIEW_COUNT, LATENT_DIM)))
    preview_z = preview_z.float().to(dev)
    bar = progress_bar(total=settings.steps, initial=state["step"], desc="train_gan", unit="step", disable=not progress)

    def augment(batch: torch.Tensor) -> torch.Tensor:
        return augment_patches(batch, settings.augment, state["sampler"])

    while state["step"] < settings.steps:
        started = time.perf_counter()
        index = torch.randint(len(patches), (settings.batch_size,), generator=state["sampler"])
        real = patches[index].to(dev)
        z = torch.randn(settings.batch_size, LATENT_DIM, generator=state["sampler"]).to(dev)
        # The paper's order: one generator step, then one discriminator step on the updated generator.
        with autocast(settings.precision, dev):
            generated = generator(z)
            g_loss = generator_loss(settings.loss, discriminator(augment(generated)).float())
        if settings.physics_match:
            g_loss = g_loss + settings.physics_match * physics_match_loss(generated, real)
        state["opt_g"].zero_grad(set_to_none=True)
        g_loss.backward()
        state["opt_g"].step()
        with autocast(settings.precision, dev):
            real_logits = discriminator(augment(real)).float()
            with torch.no_grad():  # the updated generator's patches, without a graph the D step never uses
                fake = generator(z)
            fake_logits = discriminator(augment(fake)).float()
        d_loss = discriminator_loss(settings.loss, real_logits, fake_logits)
        if settings.r1_gamma and state["step"] % R1_INTERVAL == 0:
            penalty = r1_penalty(discriminator, augment(real), settings.precision, dev)
            d_loss = d_loss + 0.5 * settings.r1_gamma * R1_INTERVAL * penalty
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
            save_checkpoint(checkpoint, state, settings, identity, MODULES, GENERATORS)
            write_csv_atomic(pd.DataFrame(state["log"], columns=list(LOG_COLUMNS)), stage_file(out_dir, "gan_log"))
        if preview_every and state["step"] % preview_every == 0:
            preview = stage_file(out_dir, "gan_previews") / f"step_{state['step']:06d}.png"
            _write_preview(preview, ema, preview_z, state["step"])
    bar.close()
    _write_preview(stage_file(out_dir, "gan_grid"), ema, preview_z, state["step"])
    with atomic_path(stage_file(out_dir, "generator")) as tmp:
        torch.save({"settings": dataclasses.asdict(settings), "state_dict": ema.state_dict()}, tmp)
    return pd.DataFrame(state["log"], columns=list(LOG_COLUMNS))
