"""GAN training: logs what it does, and an interrupted run resumes exactly where it stopped."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import zarr

from sharpgen.atomic import write_parquet_atomic
from sharpgen.config import build_settings
from sharpgen.errors import SharpgenError
from sharpgen.gan import train as gan_train
from sharpgen.gan.train import LOG_COLUMNS, GanSettings, train_gan

SETTINGS = build_settings(GanSettings, image_size=32, steps=6, batch_size=4, lr=2e-4, ema_decay=0.9, checkpoint_every=3)


@pytest.fixture
def data_dir(tmp_path):
    """A tiny normalized dataset: 12 bipoles of 32 x 32 px, 8 in the train split."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    following = np.exp(-((xx - 22) ** 2 + (yy - 14) ** 2) / 8.0)
    leading = [np.exp(-((xx - 10 - i % 4) ** 2 + (yy - 16) ** 2) / 8.0) for i in range(12)]
    patches = np.stack([np.tanh(lead - following) + rng.normal(0, 0.01, (32, 32)) for lead in leading])
    patches = patches.astype(np.float32)
    zarr.create_array(store=str(tmp_path / "patches.zarr"), data=patches, chunks=(4, 32, 32), zarr_format=3)
    write_parquet_atomic(
        pd.DataFrame({"split": ["train"] * 8 + ["val"] * 2 + ["test"] * 2}), tmp_path / "patches.parquet"
    )
    return tmp_path


def state_dict_of(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def test_training_writes_generator_log_and_checkpoint(data_dir, tmp_path):
    log = train_gan(data_dir, tmp_path / "gan", SETTINGS, seed=1, progress=False)
    assert list(log["step"]) == list(range(1, 7))
    on_disk = pd.read_csv(tmp_path / "gan" / "train_log.csv")
    assert tuple(on_disk.columns) == LOG_COLUMNS and len(on_disk) == 6
    assert np.isfinite(on_disk[["d_loss", "g_loss"]].to_numpy()).all()
    assert on_disk["real_acc"].between(0, 1).all() and (on_disk["seconds_per_step"] > 0).all()
    assert (tmp_path / "gan" / "generator.pt").is_file() and (tmp_path / "gan" / "checkpoints" / "last.pt").is_file()


def test_interrupted_run_resumes_to_the_same_generator(data_dir, tmp_path, monkeypatch):
    train_gan(data_dir, tmp_path / "whole", SETTINGS, seed=1, progress=False)
    real_save = gan_train.save_checkpoint

    def save_then_die(*args):
        real_save(*args)
        raise KeyboardInterrupt  # killed right after the step-3 checkpoint

    monkeypatch.setattr(gan_train, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_gan(data_dir, tmp_path / "split", SETTINGS, seed=1, progress=False)
    assert not (tmp_path / "split" / "generator.pt").exists()
    monkeypatch.setattr(gan_train, "save_checkpoint", real_save)
    train_gan(data_dir, tmp_path / "split", SETTINGS, seed=1, progress=False)
    whole, split = (
        state_dict_of(tmp_path / "whole" / "generator.pt"),
        state_dict_of(tmp_path / "split" / "generator.pt"),
    )
    assert all(torch.equal(whole[name], split[name]) for name in whole)
    assert list(pd.read_csv(tmp_path / "split" / "train_log.csv")["step"]) == list(range(1, 7))


def test_sigkill_mid_training_resumes_from_the_last_checkpoint(data_dir, tmp_path):
    out = tmp_path / "gan"
    command = [
        sys.executable, "-m", "sharpgen.cli", "train-gan", "--data-dir", str(data_dir), "--out-dir", str(out),
        "--image-size", "32", "--settings", '{"steps": 400, "batch_size": 4, "checkpoint_every": 5}', "--no-progress",
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = out / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    steps_at_kill = torch.load(checkpoint, map_location="cpu", weights_only=False)["step"]
    assert 5 <= steps_at_kill < 400 and not (out / "generator.pt").exists()
    log_at_kill = pd.read_csv(out / "train_log.csv")
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    final = pd.read_csv(out / "train_log.csv")
    assert list(final["step"]) == list(range(1, 401))
    pd.testing.assert_frame_equal(final.iloc[: len(log_at_kill)], log_at_kill)  # resumed, not restarted


@pytest.mark.parametrize("change", ["settings", "seed", "data"])
def test_a_stale_checkpoint_is_replaced_by_training_from_scratch(data_dir, tmp_path, change, capsys):
    settings, seed = SETTINGS, 1
    train_gan(data_dir, tmp_path / "gan", settings, seed=seed, progress=False)
    if change == "settings":
        settings = dataclasses.replace(SETTINGS, lr=1e-3)
    elif change == "seed":
        seed = 2
    else:
        patches = zarr.open_array(str(data_dir / "patches.zarr"), mode="r+")
        patches[0] = -patches[0]  # the dataset was rebuilt: its first patch changed
    train_gan(data_dir, tmp_path / "gan", settings, seed=seed, progress=False)
    assert "from another run" in capsys.readouterr().err
    train_gan(data_dir, tmp_path / "fresh", settings, seed=seed, progress=False)
    stale, fresh = state_dict_of(tmp_path / "gan" / "generator.pt"), state_dict_of(tmp_path / "fresh" / "generator.pt")
    assert all(torch.equal(stale[name], fresh[name]) for name in fresh)


def test_patch_size_mismatch_is_a_user_error(data_dir, tmp_path):
    bigger = dataclasses.replace(SETTINGS, image_size=64)
    with pytest.raises(SharpgenError, match="rerun normalize"):
        train_gan(data_dir, tmp_path / "gan", bigger, seed=1, progress=False)


def test_ema_warms_up_then_holds_its_decay():
    assert gan_train.ema_decay_at(0.999, 0) == pytest.approx(0.1)
    assert gan_train.ema_decay_at(0.999, 90) == pytest.approx(0.91)
    assert gan_train.ema_decay_at(0.999, 100_000) == 0.999
    assert gan_train.ema_decay_at(0.0, 500) == 0.0  # the paper's config: no averaging


def test_raising_steps_continues_a_finished_run_instead_of_restarting(data_dir, tmp_path):
    train_gan(data_dir, tmp_path / "long", SETTINGS, seed=1, progress=False)
    short = dataclasses.replace(SETTINGS, steps=4)
    train_gan(data_dir, tmp_path / "extended", short, seed=1, progress=False)
    log = train_gan(data_dir, tmp_path / "extended", SETTINGS, seed=1, progress=False)
    assert list(log["step"]) == list(range(1, 7))
    long, extended = (
        state_dict_of(tmp_path / "long" / "generator.pt"),
        state_dict_of(tmp_path / "extended" / "generator.pt"),
    )
    assert all(torch.equal(long[name], extended[name]) for name in long)
    with pytest.raises(SharpgenError, match="beyond gan.steps"):
        train_gan(data_dir, tmp_path / "extended", short, seed=1, progress=False)


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "expected"), [(False, False, "fp32"), (True, False, "bf16"), (False, True, "bf16")]
)
def test_auto_precision_takes_bf16_only_where_the_cpu_has_it(monkeypatch, avx512_bf16, amx, expected):
    from sharpgen.training import resolve_precision

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert resolve_precision("auto", torch.device("cpu")) == expected
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"


def test_bf16_training_is_recorded_and_repeatable(data_dir, tmp_path, capfd):
    settings = dataclasses.replace(SETTINGS, precision="bf16")
    train_gan(data_dir, tmp_path / "a", settings, seed=1, progress=False)
    assert "train_gan: bf16 arithmetic on cpu" in capfd.readouterr().err
    train_gan(data_dir, tmp_path / "b", settings, seed=1, progress=False)
    saved = torch.load(tmp_path / "a" / "generator.pt", map_location="cpu", weights_only=False)["settings"]
    assert saved["precision"] == "bf16"
    first, second = state_dict_of(tmp_path / "a" / "generator.pt"), state_dict_of(tmp_path / "b" / "generator.pt")
    assert all(torch.equal(first[name], second[name]) for name in first)
    train_gan(data_dir, tmp_path / "c", dataclasses.replace(SETTINGS, precision="fp32"), seed=1, progress=False)
    fp32 = state_dict_of(tmp_path / "c" / "generator.pt")
    assert not all(torch.equal(first[name], fp32[name]) for name in first)  # the bf16 run really ran in bf16


def test_augmentations_shift_and_cut_without_inventing_field():
    patches = torch.zeros(6, 1, 32, 32)
    patches[:, :, 12:20, 12:20] = 1.0  # a unipolar block of 64 px at the centre
    shifted = gan_train.augment_patches(patches, ("translation",), torch.Generator().manual_seed(0))
    assert torch.equal(shifted.sum(dim=(1, 2, 3)), patches.sum(dim=(1, 2, 3)))  # shifts of at most 4 px lose nothing
    assert not torch.equal(shifted, patches)
    cut = gan_train.augment_patches(patches, ("cutout",), torch.Generator().manual_seed(0))
    assert set(cut.unique().tolist()) <= {0.0, 1.0} and (cut <= patches).all()
    assert torch.equal(gan_train.augment_patches(patches, (), torch.Generator()), patches)


def test_physics_match_scores_a_batch_by_how_far_its_statistics_lie_from_the_training_batchs():
    rng = torch.Generator().manual_seed(0)
    spot = torch.zeros(16, 1, 16, 16)
    spot[:, :, 4:8, 3:7] = 0.95 * torch.rand(16, 1, 1, 1, generator=rng) + 0.2  # leading spots of many strengths
    balanced = spot - spot.flip(-1)  # each with an opposite follower: balanced bipoles
    assert float(gan_train.physics_match_loss(balanced, balanced)) == pytest.approx(0.0, abs=1e-6)
    assert float(gan_train.physics_match_loss(balanced[torch.randperm(16)], balanced)) == pytest.approx(0.0, abs=1e-6)
    unipolar = spot.clone().requires_grad_(True)  # the same flux, all of one polarity
    far = gan_train.physics_match_loss(unipolar, balanced)
    assert far.item() > 1.0
    far.backward()
    assert unipolar.grad.abs().sum() > 0  # the generator learns from it


def test_augmented_r1_training_is_repeatable_and_resumable(data_dir, tmp_path):
    settings = dataclasses.replace(
        SETTINGS, augment=("translation", "cutout"), r1_gamma=1.0, physics_match=1.0, steps=6
    )
    design = dataclasses.replace(settings.network, output="sparse_clip", mapping_layers=2, minibatch_std=True)
    settings = dataclasses.replace(settings, network=design)
    train_gan(data_dir, tmp_path / "a", settings, seed=1, progress=False)
    train_gan(data_dir, tmp_path / "b", dataclasses.replace(settings, steps=3), seed=1, progress=False)
    train_gan(data_dir, tmp_path / "b", settings, seed=1, progress=False)  # extended from its step-3 checkpoint
    first, second = state_dict_of(tmp_path / "a" / "generator.pt"), state_dict_of(tmp_path / "b" / "generator.pt")
    assert all(torch.equal(first[name], second[name]) for name in first)
