"""Bulk sampling: aligned latents, patches and properties; deterministic; batch size does not matter."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
import zarr

from sharpgen.cli import main
from sharpgen.config import build_settings
from sharpgen.gan.models import NetworkDesign, build_networks
from sharpgen.gan.sample import SampleSettings, latent_batches, sample_generator
from sharpgen.physics import paper_properties

SIZE = 32

DESIGN = dataclasses.asdict(build_settings(NetworkDesign))


@pytest.fixture(scope="module")
def generator_path(tmp_path_factory):
    torch.manual_seed(0)
    generator, _ = build_networks("default", SIZE)
    path = tmp_path_factory.mktemp("gan") / "generator.pt"
    torch.save(
        {
            "settings": {"architecture": "default", "image_size": SIZE, "network": DESIGN},
            "state_dict": generator.state_dict(),
        },
        path,
    )
    return path


def read_samples(out_dir):
    return (
        np.load(out_dir / "latents.npy"),
        zarr.open_array(str(out_dir / "patches.zarr"), mode="r")[:],
        pd.read_parquet(out_dir / "properties.parquet"),
    )


def test_latent_stream_does_not_depend_on_the_batch_size():
    whole = np.concatenate([z for _, z in latent_batches(23, 23, seed=4)])
    pieces = np.concatenate([z for _, z in latent_batches(23, 5, seed=4)])
    np.testing.assert_array_equal(whole, pieces)
    assert whole.shape == (23, 100) and whole.dtype == np.float32


def test_samples_are_aligned_and_carry_physical_properties(generator_path, tmp_path):
    settings = build_settings(
        SampleSettings, n_samples=37, batch_size=10, normalize_mode="fixed_scale", precision="fp32"
    )  # the fp32 forward below is the reference on every CPU, with native bf16 or without
    sample_generator(generator_path, tmp_path, settings, seed=3, progress=False)
    latents, patches, table = read_samples(tmp_path)
    assert latents.shape == (37, 100) and patches.shape == (37, SIZE, SIZE) and len(table) == 37
    assert list(table["sample"]) == list(range(37))
    np.testing.assert_allclose(table["tuf"], paper_properties(patches)["tuf"])  # row i describes patch i
    generator, _ = build_networks("default", SIZE)
    generator.load_state_dict(torch.load(generator_path, weights_only=False)["state_dict"])
    with torch.no_grad():
        np.testing.assert_allclose(generator(torch.from_numpy(latents[5:6]))[0, 0].numpy(), patches[5], atol=1e-5)
    # Physical flux is the paper's mean |B| times the patch area: 1 kG over (S * 1.4577 Mm)^2.
    area_cm2 = (SIZE * 1.4577e8) ** 2
    np.testing.assert_allclose(table["usflux"], table["tuf"] * 1000.0 * area_cm2, rtol=1e-4)
    assert {"psep_mm", "r_value", "pos_flux", "neg_flux"} <= set(table.columns)
    assert not any(path.name.startswith(".tmp-") for path in tmp_path.iterdir())


def test_resize_mode_has_paper_units_only_and_same_seed_same_samples(generator_path, tmp_path):
    settings = build_settings(SampleSettings, n_samples=12, batch_size=5, normalize_mode="resize")
    sample_generator(generator_path, tmp_path / "a", settings, seed=9, progress=False)
    sample_generator(generator_path, tmp_path / "b", settings, seed=9, progress=False)
    sample_generator(generator_path, tmp_path / "c", settings, seed=10, progress=False)
    a, b, c = (read_samples(tmp_path / name) for name in "abc")
    assert "usflux" not in a[2].columns
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    pd.testing.assert_frame_equal(a[2], b[2])
    assert not np.array_equal(a[0], c[0])


def test_only_the_first_stored_patches_are_kept_but_every_sample_is_measured(generator_path, tmp_path):
    every = build_settings(SampleSettings, n_samples=23, batch_size=5, normalize_mode="resize")
    first = build_settings(SampleSettings, n_samples=23, batch_size=5, normalize_mode="resize", stored_patches=7)
    sample_generator(generator_path, tmp_path / "every", every, seed=2, progress=False)
    sample_generator(generator_path, tmp_path / "first", first, seed=2, progress=False)
    latents, patches, table = read_samples(tmp_path / "every")
    kept_latents, kept, kept_table = read_samples(tmp_path / "first")
    assert kept.shape == (7, SIZE, SIZE) and patches.shape == (23, SIZE, SIZE)
    np.testing.assert_array_equal(kept, patches[:7])
    np.testing.assert_array_equal(kept_latents, latents)
    pd.testing.assert_frame_equal(kept_table, table)


def test_cli_sample_reports_a_missing_generator_in_one_line(tmp_path, capsys):
    code = main(["sample", "--generator", str(tmp_path / "nope.pt"), "--out-dir", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 2 and "no such generator file" in err and "Traceback" not in err
