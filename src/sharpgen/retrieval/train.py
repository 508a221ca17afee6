"""The ``train_ssl`` and ``embed`` stages: a self-supervised encoder on the ``train`` split, then embeddings of
every patch.

``objective``: ``vicreg`` (default; :func:`~sharpgen.retrieval.models.vicreg_loss`, whose variance and
covariance terms keep the embedding from collapsing onto a few directions) or ``simsiam`` (the paper's;
symmetrised negative cosine with stop-gradient). Both train the same network (backbone + projector; the
predictor serves SimSiam only). With ``mirror_weight`` > 0 the first view's north-south mirror image also goes
through the network and :func:`~sharpgen.retrieval.models.mirror_loss` (times the weight) pushes its embedding
away from the view's: the augmentations keep the tilt sign, this term makes the embedding tell the two apart.

With ``series_positives`` > 0 (default 0.5) the two views of a positive pair may be two observations of one
region: for that fraction of the train patches whose HARP has other records in the train split (a SHARP series;
the synthetic source's ``series``), the second view is drawn from another record of the same HARP
(:func:`series_partners`), so the encoder learns that the region a few hours later, evolved, is the same region.
Only the train split is read; patches of a HARP without other train records pair with themselves as before.

With ``property_weight`` > 0 the backbone features of every view also feed a linear
:class:`~sharpgen.retrieval.models.PropertyHead` that predicts the physical properties of the view's source patch
(:data:`~sharpgen.retrieval.physics_vector.PROPERTY_TARGETS`, from the train rows of the patch table, standardized
with the train split's mean and std; :func:`train_property_targets`); :func:`~sharpgen.retrieval.models.property_loss`
(masked where a property is undefined), averaged over the views and times the weight, joins the objective. The second
view's targets are its own record's (a series partner's are its own); the mirror image's are the view's with
``dipole_y`` negated. The head trains with the network (same optimizer) and is saved beside it in ``encoder.pt`` (key
``property_head``); the embedding does not use it. At 0 (paper.yaml) nothing of it exists and training is the same as
without the option.

Training runs ``epochs`` passes over the train split in batches of ``batch_size`` (the last partial batch
of an epoch is dropped: BatchNorm needs full batches). The order of epoch e is a permutation seeded by
``(seed, e)``, the series partners of epoch e by ``(seed, e, 1)``; both views of a batch come from one
augmentation generator seeded by ``seed``. Every
``checkpoint_every`` steps the full state (network, optimizer, step, random states, the log so far) is
written atomically to ``checkpoints/last.pt`` and ``train_log.csv`` is rewritten from it, so a killed run
restarts from the last checkpoint and ends with the same weights as an uninterrupted one. The final
``encoder.pt`` holds ``{"settings", "seed", "state_dict"}`` of the whole SimSiam network.

At the end, the mean backbone features of the train split (eval mode) go into the network's ``feature_mean``
(the centre of ``embedding = centred_backbone``).

``train_log.csv`` columns: ``step``, ``epoch`` (0-based), ``loss`` (of the objective: SimSiam's -1 is perfect
agreement of the views, VICReg's 0), ``output_std`` (the collapse indicator of ``ssl_models.output_std`` on the
projector output of the first view: about 1 healthy, about 0 collapsed), ``effective_rank`` (RankMe of the
projector outputs ``z`` of the first view, ``ssl_models.effective_rank``: how many directions the embeddings
use, at most the batch size; falling towards 1-2 is dimensional collapse, which ``output_std`` does not see),
``property_loss`` (the head's mean squared error in standard deviations, before the weight; empty at
``property_weight`` 0) and ``seconds_per_step``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import torch

from ..atomic import atomic_path, write_csv_atomic
from ..errors import SharpgenError
from ..progress import progress_bar
from ..run import stage_file
from ..training import load_training_patches, pick_device, restore_checkpoint, run_identity, save_checkpoint
from .augment import AugmentSettings, two_views
from .models import (
    OBJECTIVES,
    PropertyHead,
    SimSiam,
    build_simsiam,
    effective_rank,
    mirror_loss,
    output_std,
    property_loss,
    simsiam_loss,
    vicreg_loss,
)  # fmt: skip
from .physics_vector import DIPOLE_Y, PROPERTY_TARGETS, property_targets, standardize

LOG_COLUMNS = ("step", "epoch", "loss", "output_std", "effective_rank", "property_loss", "seconds_per_step")


@dataclass(frozen=True)
class SslSettings:
    """Settings of ``train_ssl`` (schema section ``ssl`` plus the top-level ``image_size``)."""

    SECTION: ClassVar[str] = "ssl"
    CONFIG_KEYS: ClassVar[dict[str, str]] = {"image_size": "image_size"}

    architecture: str
    objective: str
    image_size: int
    embedding_dim: int
    embedding: str
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    checkpoint_every: int
    mirror_weight: float
    series_positives: float
    property_weight: float
    augment: AugmentSettings


def _network(settings: SslSettings) -> SimSiam:
    return build_simsiam(settings.architecture, settings.image_size, settings.embedding_dim, settings.embedding)


def _epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def series_partners(harpnums: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """For each of N records (HARP numbers ``harpnums``), the index of the record its positive pair is made from:
    for a random ``fraction`` of the records whose HARP has other records, one of those others (uniformly);
    the record itself otherwise (HARP numbers below 1 are no region and pair with themselves)."""
    harpnums = np.asarray(harpnums)
    n = len(harpnums)
    partners = np.arange(n)
    if n == 0 or fraction <= 0:
        return partners
    order = np.argsort(harpnums, kind="stable")
    _, start, count = np.unique(harpnums[order], return_index=True, return_counts=True)
    group = np.repeat(np.arange(len(count)), count)  # group of each sorted record
    within = np.arange(n) - start[group]  # its position in the group
    offset = 1 + np.floor(rng.random(n) * np.maximum(count[group] - 1, 1)).astype(np.int64)  # 1 .. count - 1
    other = order[start[group] + (within + offset) % count[group]]
    paired = (count[group] > 1) & (harpnums[order] > 0) & (rng.random(n) < fraction)
    partners[order[paired]] = other[paired]
    return partners


def train_harpnums(data_dir: str | os.PathLike) -> np.ndarray:
    """HARP numbers of the train-split records, in the row order of ``load_training_patches`` (0 = none)."""
    table = pd.read_parquet(stage_file(data_dir, "patch_table"))
    train = table[table["split"] == "train"]
    if "harpnum" not in train:
        return np.zeros(len(train), dtype=np.int64)
    return train["harpnum"].fillna(0).to_numpy(dtype=np.int64)


def _epoch_partners(seed: int, epoch: int, harpnums: np.ndarray, fraction: float) -> np.ndarray:
    return series_partners(harpnums, fraction, np.random.default_rng([seed, epoch, 1]))


def train_property_targets(data_dir: str | os.PathLike, image_size: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Standardized targets of the train-split records (rows as ``load_training_patches``) and of their north-south
    mirror images (``dipole_y`` negated), float32 with NaN where undefined, and the train split's ``mean``/``std``
    (the standardization; val and test records play no part)."""
    table = pd.read_parquet(stage_file(data_dir, "patch_table"))
    try:
        raw = property_targets(table[table["split"] == "train"], image_size)
    except SharpgenError as error:
        raise SharpgenError(f"config key 'ssl.property_weight': {error}") from None
    targets, mean, std = standardize(raw)
    mirrored = raw.copy()
    mirrored[:, DIPOLE_Y] *= -1
    mirror_targets, _, _ = standardize(mirrored, mean, std)
    scale = {"targets": list(PROPERTY_TARGETS), "mean": mean.tolist(), "std": std.tolist()}
    return targets.astype(np.float32), mirror_targets.astype(np.float32), scale


def train_feature_mean(model: SimSiam, patches: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Mean backbone features (eval mode) of the ``(N, 1, S, S)`` train patches: ``centred_backbone``'s centre."""
    model.eval()
    dev = next(model.parameters()).device
    with torch.inference_mode():
        total = sum(
            model.backbone(patches[start : start + batch_size].to(dev)).double().sum(0)
            for start in range(0, len(patches), batch_size)
        )
    return (total / len(patches)).float()


def _new_state(settings: SslSettings, seed: int, device: torch.device) -> dict:
    torch.manual_seed(seed)
    model = _network(settings).to(device)
    parameters = list(model.parameters())
    state = {"step": 0, "model": model}
    if settings.property_weight > 0:  # initialised after the network, whose weights stay those of weight 0
        state["property_head"] = PropertyHead(model.feature_mean.numel()).to(device)
        parameters += list(state["property_head"].parameters())
    optimizer = torch.optim.SGD(
        parameters, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )
    return {**state, "optimizer": optimizer, "augmenter": torch.Generator().manual_seed(seed), "log": []}


MODULES = ("model", "optimizer")
GENERATORS = ("augmenter",)
FREE_SETTINGS = ("epochs", "checkpoint_every", "embedding")
"""Settings a resumed run may change: ``epochs`` extends it, ``embedding`` is read only by ``embed`` (changing it
rewrites ``encoder.pt`` without training)."""


def _modules(settings: SslSettings) -> tuple[str, ...]:
    """The checkpointed modules: :data:`MODULES` and, with ``property_weight`` > 0, the property head."""
    return MODULES + (("property_head",) if settings.property_weight > 0 else ())


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
    if settings.objective not in OBJECTIVES:
        raise SharpgenError(f"config key 'ssl.objective': {settings.objective!r} is not one of {', '.join(OBJECTIVES)}")
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
    harpnums = train_harpnums(data_dir) if settings.series_positives > 0 else np.zeros(len(patches), np.int64)
    if settings.property_weight > 0:
        targets, mirror_targets, scale = train_property_targets(data_dir, settings.image_size)
        targets, mirror_targets = torch.from_numpy(targets), torch.from_numpy(mirror_targets)
    total = settings.epochs * steps_per_epoch
    state = _new_state(settings, seed, dev)
    identity = run_identity(settings, seed, patches, FREE_SETTINGS)
    if checkpoint.is_file():
        restore_checkpoint(
            checkpoint, state, identity, _modules(settings), GENERATORS, stage="train_ssl", total_steps=total,
            limit=f"the {total} steps of ssl.epochs = {settings.epochs}", setting="epochs",
        )  # fmt: skip
    model, optimizer, head = state["model"], state["optimizer"], state.get("property_head")
    model.train()
    bar = progress_bar(total=total, initial=state["step"], desc="train_ssl", unit="step", disable=not progress)
    order, order_epoch = None, -1
    while state["step"] < total:
        started = time.perf_counter()
        epoch, position = divmod(state["step"], steps_per_epoch)
        if epoch != order_epoch:
            order, order_epoch = _epoch_order(seed, epoch, len(patches)), epoch
            partners = _epoch_partners(seed, epoch, harpnums, settings.series_positives)
        rows = order[position * settings.batch_size : (position + 1) * settings.batch_size]
        batch, partner = patches[rows].to(dev), patches[partners[rows]].to(dev)
        view1, view2 = two_views(batch, state["augmenter"], settings.augment, partner)
        f1, z1, p1 = model.forward_features(view1)
        f2, z2, p2 = model.forward_features(view2)
        loss = simsiam_loss(z1, p1, z2, p2) if settings.objective == "simsiam" else vicreg_loss(z1, z2)
        if settings.mirror_weight > 0:
            f_mirrored, z_mirrored, _ = model.forward_features(torch.flip(view1, dims=(-2,)))
            loss = loss + settings.mirror_weight * mirror_loss(z1, z_mirrored)
        head_loss = math.nan
        if head is not None:
            pairs = [(f1, targets[rows]), (f2, targets[partners[rows]])]
            if settings.mirror_weight > 0:
                pairs.append((f_mirrored, mirror_targets[rows]))
            term = sum(property_loss(head(f), t.to(dev)) for f, t in pairs) / len(pairs)
            loss = loss + settings.property_weight * term
            head_loss = term.item()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        state["step"] += 1
        state["log"].append({
            "step": state["step"], "epoch": epoch, "loss": loss.item(), "output_std": output_std(z1),
            "effective_rank": effective_rank(z1), "property_loss": head_loss,
            "seconds_per_step": time.perf_counter() - started,
        })  # fmt: skip
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", std=f"{state['log'][-1]['output_std']:.2f}")
        if state["step"] % settings.checkpoint_every == 0 or state["step"] == total:
            save_checkpoint(checkpoint, state, settings, identity, _modules(settings), GENERATORS)
            write_csv_atomic(pd.DataFrame(state["log"], columns=list(LOG_COLUMNS)), stage_file(out_dir, "ssl_log"))
    bar.close()
    model.feature_mean.copy_(train_feature_mean(model, patches))
    payload = {"settings": dataclasses.asdict(settings), "seed": seed, "state_dict": model.state_dict()}
    if head is not None:
        payload["property_head"] = {**scale, "state_dict": head.state_dict()}
    with atomic_path(stage_file(out_dir, "encoder")) as tmp:
        torch.save(payload, tmp)
    return pd.DataFrame(state["log"], columns=list(LOG_COLUMNS))
