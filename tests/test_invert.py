"""GAN inversion: finds the latent of a patch, with plain SGD (no gradient accumulation), and saves it for editing."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
import zarr

from sharpgen.atomic import write_parquet_atomic
from sharpgen.cli import main
from sharpgen.config import build_settings
from sharpgen.data.normalize import Normalization
from sharpgen.errors import SharpgenError
from sharpgen.gan.invert import (
    CSV_COLUMNS,
    InversionSettings,
    initial_latents,
    invert_patches,
    masked_mse,
    run_invert,
    targets_from_dataset,
)
from sharpgen.gan.models import LATENT_DIM, NetworkDesign, UpsampleGenerator, build_networks

RESIZE_16 = Normalization("resize", 16, None, 1000.0, 50.0)
"""A run's normalization (data/normalization.json): the paper's resize to 16 px."""
QUICK = build_settings(InversionSettings, restarts=2, iterations=3)

DESIGN = dataclasses.asdict(build_settings(NetworkDesign))
TANH_DESIGN = NetworkDesign(
    upsample="nearest", output="tanh", mapping_layers=0, minibatch_std=False, stretched_view=False,
    field="linear", physics_view=False,
)  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One thread: tiny convolutions gain nothing from more, and oversubscribed cores slow them 10-100x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def small_generator() -> torch.nn.Module:
    """A narrow default-architecture generator (16 px) whose output spans about +-1 kG, frozen."""
    torch.manual_seed(0)
    generator = UpsampleGenerator(16, TANH_DESIGN, width=16)
    with torch.no_grad():
        generator.up[-1].weight.mul_(5.0)  # untrained outputs are near 0; widen them so the loss has structure
    return generator.eval().requires_grad_(False)


def render(generator: torch.nn.Module, z: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return generator(z).squeeze(1).numpy()


def known_latents(n: int, seed: int = 5) -> torch.Tensor:
    return torch.randn(n, LATENT_DIM, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def generator_file(tmp_path_factory):
    """A ``generator.pt`` in train_gan's format: default architecture, 16 px."""
    torch.manual_seed(0)
    generator, _ = build_networks("default", 16)
    settings = {"architecture": "default", "image_size": 16, "network": DESIGN}  # the keys load_generator reads
    path = tmp_path_factory.mktemp("gan") / "generator.pt"
    torch.save({"settings": settings, "state_dict": generator.state_dict()}, path)
    return path


def make_dataset(folder, size: int = 16, count: int = 5):
    rng = np.random.default_rng(0)
    patches = np.tanh(rng.normal(0, 0.5, (count, size, size))).astype(np.float32)
    zarr.create_array(store=str(folder / "patches.zarr"), data=patches, chunks=(2, size, size), zarr_format=3)
    table = pd.DataFrame({
        "harpnum": 377 + np.arange(count),
        "t_rec": [f"2011.02.15_0{i}:00:00_TAI" for i in range(count)],
        "split": ["train"] * count,
    })  # fmt: skip
    write_parquet_atomic(table, folder / "patches.parquet")
    return patches


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    make_dataset(folder)
    return folder


def test_masked_mse_weights_strong_pixels_one_and_weak_pixels_half():
    target = torch.tensor([[[0.1, 0.0], [-0.2, 0.05]]])  # 0.05 is not above the 50 G threshold: weak
    generated = torch.zeros_like(target)
    expected = (1.0 * 0.1**2 + 0.5 * 0.0**2 + 1.0 * 0.2**2 + 0.5 * 0.05**2) / 4  # mean over all 4 pixels
    assert masked_mse(generated, target).item() == pytest.approx(expected)
    assert masked_mse(generated, target, weak_weight=1.0).item() == pytest.approx((0.01 + 0.04 + 0.0025) / 4)
    assert masked_mse(generated.expand(3, 2, 2), target).shape == (3,)


def test_inversion_recovers_a_generated_patch_far_better_than_a_random_latent(small_generator):
    target = render(small_generator, known_latents(2))
    settings = build_settings(InversionSettings, restarts=3, iterations=100, optimizer="sgd", lr=1.0)
    result = invert_patches(small_generator, target, settings, seed=1)
    random_loss = masked_mse(
        torch.from_numpy(render(small_generator, known_latents(2, seed=7))), torch.from_numpy(target)
    )
    assert (result.loss < 0.4 * random_loss.numpy()).all()
    starts_loss = masked_mse(
        torch.from_numpy(render(small_generator, initial_latents(3, seed=1)))[:, None], torch.from_numpy(target)
    ).min(dim=0).values  # fmt: skip
    assert (result.loss <= starts_loss.numpy()).all() and np.allclose(result.start_loss, starts_loss.numpy())
    # The saved latent reproduces the saved reconstruction, whose loss and error are the reported ones.
    assert np.allclose(render(small_generator, torch.from_numpy(result.latents)), result.reconstructions, atol=1e-5)
    assert np.allclose(result.loss, masked_mse(torch.from_numpy(result.reconstructions), torch.from_numpy(target)))
    rms = np.sqrt(((result.reconstructions - target) ** 2).mean(axis=(1, 2))) * 1000.0
    assert np.allclose(result.rmse_gauss, rms, rtol=1e-5)
    assert result.latents.shape == (2, LATENT_DIM) and result.latents.dtype == np.float32
    assert result.best_restart.shape == (2,) and set(result.best_restart) <= {0, 1, 2}


def reference_inversion(generator, target, settings, seed, accumulate_gradients=False):
    """One latent at a time, the textbook loop: the authors' version when ``accumulate_gradients``."""
    best_loss, best_z = float("inf"), None
    for start in initial_latents(settings.restarts, seed):
        z = start[None].clone().requires_grad_(True)
        optimizer = torch.optim.SGD([z], lr=settings.lr, momentum=settings.momentum)
        for iteration in range(settings.iterations + 1):
            loss = masked_mse(generator(z).squeeze(1), target, settings.threshold, settings.weak_weight).sum()
            if loss.item() < best_loss:
                best_loss, best_z = loss.item(), z.detach().clone()
            if iteration == settings.iterations:
                break
            if not accumulate_gradients:
                optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return best_z[0].numpy()


def test_each_latent_follows_plain_sgd_without_gradient_accumulation(small_generator):
    targets = render(small_generator, known_latents(2))
    settings = build_settings(InversionSettings, restarts=2, iterations=15, optimizer="sgd", lr=0.5)
    result = invert_patches(small_generator, targets, settings, seed=3)
    for latent, target in zip(result.latents, targets, strict=True):
        target = torch.from_numpy(target)
        expected = reference_inversion(small_generator, target, settings, seed=3)
        accumulated = reference_inversion(small_generator, target, settings, seed=3, accumulate_gradients=True)
        assert np.abs(latent - expected).max() < 1e-4
        assert np.abs(latent - accumulated).max() > 1e-2  # the test can tell the two loops apart


def test_same_seed_gives_identical_latents_whatever_the_batching(small_generator):
    targets = render(small_generator, known_latents(3))
    settings = build_settings(InversionSettings, restarts=2, iterations=10, lr=0.5)
    first = invert_patches(small_generator, targets, settings, seed=11)
    again = invert_patches(small_generator, targets, settings, seed=11)
    one_by_one = invert_patches(small_generator, targets, settings, seed=11, batch_size=1)
    other_seed = invert_patches(small_generator, targets, settings, seed=12)
    assert np.array_equal(first.latents, again.latents) and np.array_equal(first.loss, again.loss)
    assert np.allclose(first.latents, one_by_one.latents, atol=1e-4)
    assert not np.allclose(first.latents, other_seed.latents)


def test_inversion_leaves_the_generator_as_it_was(small_generator):
    generator = UpsampleGenerator(16, TANH_DESIGN, width=16).train()
    invert_patches(generator, render(small_generator, known_latents(1)), QUICK, seed=0)
    assert generator.training and all(p.requires_grad and p.grad is None for p in generator.parameters())


def test_run_invert_on_dataset_rows_writes_latents_and_table(generator_file, data_dir, tmp_path):
    table = run_invert(
        generator_file, tmp_path / "inv", data_dir=data_dir, rows=[3, 0], settings=QUICK, seed=2, progress=False
    )
    latents = np.load(tmp_path / "inv" / "latents.npy")
    assert latents.shape == (2, LATENT_DIM) and latents.dtype == np.float32
    assert np.load(tmp_path / "inv" / "reconstructions.npy").shape == (2, 16, 16)
    on_disk = pd.read_csv(tmp_path / "inv" / "inversion.csv")
    assert tuple(on_disk.columns) == CSV_COLUMNS and list(on_disk["label"]) == list(table["label"])
    assert on_disk["label"][0] == "row 3 (HARP 380, 2011.02.15_03:00:00_TAI)"
    assert np.allclose(on_disk["latent_norm"], np.linalg.norm(latents, axis=1), rtol=1e-5)
    assert (on_disk["loss"] <= on_disk["start_loss"]).all() and (on_disk["rmse_gauss"] > 0).all()
    meta = json.loads((tmp_path / "inv" / "inversion.json").read_text())
    assert meta["settings"]["iterations"] == 3 and meta["seed"] == 2 and meta["source"] == "dataset"
    assert not [p.name for p in (tmp_path / "inv").iterdir() if p.name.startswith(".tmp-")]


def test_run_invert_on_fits_files_normalizes_them_like_the_run(generator_file, real_sharp_files, tmp_path):
    table = run_invert(
        generator_file, tmp_path / "inv", fits_files=real_sharp_files, normalization=RESIZE_16, settings=QUICK,
        seed=2, progress=False,
    )  # fmt: skip
    assert list(table["label"]) == [str(path) for path in real_sharp_files]
    assert np.load(tmp_path / "inv" / "latents.npy").shape == (3, LATENT_DIM)
    assert np.isfinite(table[["loss", "rmse_gauss", "latent_norm"]].to_numpy()).all()


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({}, "exactly one"),
        ({"rows": [0], "fits_files": ["a.fits"]}, "exactly one"),
        ({"rows": [0]}, "dataset directory"),
        ({"rows": [5]}, r"row 5 is out of range: .* has 5 patches \(rows 0 to 4\)"),
        ({"rows": [-1]}, "out of range"),
        ({"fits_files": ["missing.fits"]}, "FITS files need the run's normalization"),
        ({"fits_files": ["missing.fits"], "normalization": RESIZE_16}, "no such FITS file"),
    ],
)
def test_user_mistakes_in_inputs_give_one_line_errors(generator_file, data_dir, tmp_path, inputs, message):
    if "rows" in inputs and "fits_files" not in inputs and inputs != {"rows": [0]}:
        inputs = {**inputs, "data_dir": data_dir}
    with pytest.raises(SharpgenError, match=message):
        run_invert(generator_file, tmp_path / "inv", settings=QUICK, seed=0, progress=False, **inputs)
    assert not (tmp_path / "inv").exists()


def test_size_mismatches_are_reported(generator_file, real_sharp_files, tmp_path, small_generator):
    normalization = Normalization("fixed_scale", 32, 1.4577, 1000.0, 50.0)
    with pytest.raises(SharpgenError, match="makes 16 px patches but the normalization is to 32 px"):
        run_invert(
            generator_file, tmp_path / "inv", fits_files=real_sharp_files[:1], normalization=normalization,
            settings=QUICK, seed=0,
        )  # fmt: skip
    make_dataset(tmp_path, size=32, count=2)
    with pytest.raises(SharpgenError, match="holds 32 px patches but .* makes 16 px ones"):
        run_invert(generator_file, tmp_path / "inv", data_dir=tmp_path, rows=[0], settings=QUICK, seed=0)
    with pytest.raises(SharpgenError, match="targets are 8 x 8 px but the generator makes 16 x 16 px"):
        invert_patches(small_generator, np.zeros((1, 8, 8), np.float32), QUICK, seed=0)


def test_dataset_rows_can_repeat_and_come_in_any_order(data_dir):
    patches, labels = targets_from_dataset(data_dir, [4, 1, 4])
    stored = np.asarray(zarr.open_array(str(data_dir / "patches.zarr"), mode="r"))
    assert np.array_equal(patches, stored[[4, 1, 4]]) and labels[1] == "row 1 (HARP 378, 2011.02.15_01:00:00_TAI)"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"restarts": 0}, "'invert.restarts': 0 is less than the minimum of 1"),
        ({"iterations": 2.5}, "'invert.iterations': 2.5 is not of type 'integer'"),
        ({"lr": -0.01}, "'invert.lr': -0.01 is less than or equal to the minimum of 0"),
        ({"momentum": 1.0}, "'invert.momentum': 1.0 is greater than or equal to the maximum of 1"),
        ({"weak_weight": float("nan")}, "'invert.weak_weight'"),
        ({"step": 3}, "unknown invert setting 'invert.step'"),
        ({"optimizer": "lbfgs"}, "'invert.optimizer': 'lbfgs' is not one of"),
    ],
)
def test_nonsense_settings_are_rejected_in_one_line(values, message):
    with pytest.raises(SharpgenError, match=message):
        build_settings(InversionSettings, values)


def test_cli_invert_writes_latents_and_reports_mistakes_in_one_line(generator_file, data_dir, tmp_path, capsys):
    out = tmp_path / "inv"
    args = ["invert", "--generator", str(generator_file), "--out-dir", str(out), "--data-dir", str(data_dir)]
    assert main([*args, "--rows", "1", "2", "--settings", '{"iterations": 3, "restarts": 2}', "--no-progress"]) == 0
    assert np.load(out / "latents.npy").shape == (2, LATENT_DIM)
    assert "median reconstruction error" in capsys.readouterr().err
    assert main([*args, "--rows", "77", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "out of range" in err and "Traceback" not in err
