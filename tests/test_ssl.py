"""SimSiam: networks, loss, augmentations, resumable training and embeddings of patches."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
import zarr

from sharpgen.atomic import write_parquet_atomic
from sharpgen.config import build_settings, settings_from_config, validate_config
from sharpgen.errors import SharpgenError
from sharpgen.physics import paper_properties
from sharpgen.retrieval import train as ssl_train
from sharpgen.retrieval.augment import (
    AugmentSettings,
    add_noise,
    affine,
    augment,
    dihedral,
    flip_polarity,
    gaussian_blur,
    polarity_flip,
    two_views,
)
from sharpgen.retrieval.embed import embed_dataset, embed_patches, load_encoder
from sharpgen.retrieval.models import (
    build_simsiam,
    effective_rank,
    mirror_loss,
    output_std,
    property_loss,
    simsiam_loss,
    vicreg_loss,
)  # fmt: skip
from sharpgen.retrieval.physics_vector import DIPOLE_Y, PROPERTY_TARGETS, property_targets
from sharpgen.retrieval.train import (
    LOG_COLUMNS,
    SslSettings,
    series_partners,
    train_harpnums,
    train_property_targets,
    train_ssl,
)  # fmt: skip

SETTINGS = build_settings(SslSettings, image_size=32, epochs=3, batch_size=4, checkpoint_every=3)


def bipoles(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``n`` noisy bipoles of random position, separation and strength, in [-1, 1] (kG)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    out = []
    for _ in range(n):
        cy, cx, half, width, strength = rng.uniform([0.3, 0.3, 0.05, 0.03, 0.2], [0.7, 0.7, 0.2, 0.1, 1.5])
        lead = np.exp(-((xx - cx + half) ** 2 + (yy - cy) ** 2) / (2 * width**2))
        follow = np.exp(-((xx - cx - half) ** 2 + (yy - cy) ** 2) / (2 * width**2))
        out.append(np.tanh(strength * (lead - follow)) + rng.normal(0, 0.01, (size, size)))
    return np.clip(np.stack(out), -1, 1).astype(np.float32)


def measured_table(patches: np.ndarray, **columns) -> pd.DataFrame:
    """A patch table of ``patches`` with their measured properties (what the property head reads) and ``columns``."""
    return pd.DataFrame({**paper_properties(patches), **columns})


@pytest.fixture
def data_dir(tmp_path):
    """A tiny normalized dataset: 20 bipoles of 32 x 32 px, 16 in the train split."""
    patches = bipoles(20, 32)
    zarr.create_array(store=str(tmp_path / "patches.zarr"), data=patches, chunks=(8, 32, 32), zarr_format=3)
    write_parquet_atomic(
        measured_table(patches, split=["train"] * 16 + ["val"] * 2 + ["test"] * 2), tmp_path / "patches.parquet"
    )
    return tmp_path


def batch(n: int = 6, size: int = 32) -> torch.Tensor:
    return torch.from_numpy(bipoles(n, size, seed=3))[:, None]


# Networks and loss


@pytest.mark.parametrize("size", [16, 32, 128])
def test_default_network_maps_patches_to_100d_embeddings_at_any_size(size):
    model = build_simsiam("default", size)
    z, p = model(torch.randn(3, 1, size, size))
    assert z.shape == p.shape == (3, 100)
    assert model.eval().embed(torch.randn(2, 1, size, size)).shape == (2, 100)


def test_paper_network_is_a_one_channel_resnet18_with_the_papers_heads():
    model = build_simsiam("paper", 128)
    assert model.backbone.stem[0].in_channels == 1 and model.backbone.stem[0].kernel_size == (7, 7)
    assert model.backbone.stem[0].bias is None and model.backbone.feature_dim == 512
    assert sum(p.numel() for p in model.backbone.parameters()) == 11_170_240  # torchvision resnet18, 1 channel, no fc
    assert [m.out_features for m in model.projector if isinstance(m, torch.nn.Linear)] == [512, 512, 100]
    assert not model.projector[-1].affine
    assert [m.out_features for m in model.predictor if isinstance(m, torch.nn.Linear)] == [128, 100]
    for size in (32, 128):  # the ResNet is the same network at every size (global average pool)
        z, p = model(torch.randn(2, 1, size, size))
        assert z.shape == p.shape == (2, 100)


def test_backbone_embedding_gives_the_backbone_features():
    assert build_simsiam("default", 32, embedding="backbone").eval().embed(torch.randn(2, 1, 32, 32)).shape == (2, 256)


def test_bad_architecture_or_size_is_a_user_error():
    with pytest.raises(SharpgenError, match="power of two >= 16"):
        build_simsiam("default", 48)
    with pytest.raises(SharpgenError, match="unknown SSL architecture 'vit'"):
        build_simsiam("vit", 32)


def test_loss_is_symmetrised_negative_cosine_with_stop_gradient():
    torch.manual_seed(0)
    z1, p1, z2, p2 = (torch.randn(5, 8, requires_grad=True) for _ in range(4))
    loss = simsiam_loss(z1, p1, z2, p2)
    expected = -0.5 * (
        torch.nn.functional.cosine_similarity(p1, z2).mean() + torch.nn.functional.cosine_similarity(p2, z1).mean()
    )
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert z1.grad is None and z2.grad is None  # the targets get no gradient
    assert p1.grad.abs().sum() > 0 and p2.grad.abs().sum() > 0
    torch.testing.assert_close(simsiam_loss(z2, p2, z1, p1), loss)  # symmetric in the two views


def test_collapse_indicator_is_zero_for_identical_outputs_and_near_one_for_random_ones():
    assert output_std(torch.ones(64, 100) * torch.randn(1, 100)) == pytest.approx(0.0, abs=1e-6)
    assert output_std(torch.randn(512, 100, generator=torch.Generator().manual_seed(0))) == pytest.approx(1.0, abs=0.05)


def test_effective_rank_counts_the_directions_the_outputs_use():
    g = torch.Generator().manual_seed(0)
    one_direction = torch.randn(256, 1, generator=g) * torch.randn(1, 100, generator=g)
    assert effective_rank(one_direction) == pytest.approx(1.0, abs=1e-4)
    assert effective_rank(torch.randn(4096, 100, generator=g)) == pytest.approx(100, rel=0.1)
    assert effective_rank(np.diag([3.0, 1.0, 1.0, 1.0])) == pytest.approx(12**0.5)  # p = 1/2, 1/6 x 3; numpy too


def test_vicreg_loss_rewards_agreeing_views_and_penalises_collapsed_or_correlated_dimensions():
    g = torch.Generator().manual_seed(0)
    spread = torch.randn(512, 16, generator=g)
    assert vicreg_loss(spread, spread) < 1.0  # identical, unit-variance, uncorrelated views: almost no loss
    collapsed = spread[:, :1].expand(-1, 16).contiguous()  # unit variance, every dimension the same
    assert vicreg_loss(collapsed, collapsed) > 10.0
    assert vicreg_loss(spread, torch.randn(512, 16, generator=g)) > 40.0  # views that disagree
    z1, z2 = (torch.randn(64, 8, requires_grad=True) for _ in range(2))
    vicreg_loss(z1, z2).backward()
    assert z1.grad.abs().sum() > 0 and z2.grad.abs().sum() > 0  # no stop-gradient


def test_mirror_loss_is_one_for_equal_embeddings_and_zero_once_they_point_apart():
    z = torch.randn(32, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)
    assert mirror_loss(z, z).item() == pytest.approx(1.0)
    assert mirror_loss(z, -z).item() == 0.0
    orthogonal = torch.zeros(2, 2)
    orthogonal[0, 0] = orthogonal[1, 1] = 1.0
    assert mirror_loss(orthogonal, orthogonal.flip(1)).item() == 0.0
    mirror_loss(z, 0.5 * z + torch.randn(32, 8)).backward()
    assert z.grad.abs().sum() > 0


# Augmentations


def test_augmentations_keep_shape_and_dtype():
    x = batch()
    g = torch.Generator().manual_seed(0)
    for out in (
        dihedral(x, g),
        affine(x, g, 10, 0.1, 0.05),
        gaussian_blur(x, g, 1.0, 1.0),
        add_noise(x, g, 0.01),
        polarity_flip(x, g),
        augment(x, g, build_settings(AugmentSettings, zoom=0.1)),
        *two_views(x, g, build_settings(AugmentSettings)),
    ):
        assert out.shape == x.shape and out.dtype == x.dtype


def test_polarity_flip_is_minus_x():
    x = batch()
    assert torch.equal(flip_polarity(x), -x)
    flipped = polarity_flip(x, torch.Generator().manual_seed(1), probability=1.0)
    assert torch.equal(flipped, -x)  # not 1 - x: the field of [-1, 1] data changes sign
    some = polarity_flip(x, torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) or torch.equal(a, -b) for a, b in zip(some, x, strict=True))


def test_right_angle_rotations_and_mirrors_are_exact_permutations():
    x = batch(40)
    out = dihedral(x, torch.Generator().manual_seed(0))
    eight = [torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]
    eight += [torch.flip(r, dims=(-1,)) for r in eight]
    for i in range(len(x)):
        assert any(torch.equal(out[i], candidate[i]) for candidate in eight)
        assert torch.equal(out[i].flatten().sort().values, x[i].flatten().sort().values)
    assert len({tuple(out[i].flatten()[:5].tolist()) for i in range(len(x))}) > 1


def test_augmentations_are_deterministic_for_a_seed():
    x = batch()
    first = two_views(x, torch.Generator().manual_seed(7), build_settings(AugmentSettings, zoom=0.1))
    again = two_views(x, torch.Generator().manual_seed(7), build_settings(AugmentSettings, zoom=0.1))
    other = two_views(x, torch.Generator().manual_seed(8), build_settings(AugmentSettings, zoom=0.1))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])
    assert not torch.equal(first[0], first[1])  # two different views


def test_default_augmentations_keep_total_unsigned_flux_roughly():
    x = torch.from_numpy(bipoles(32, 64, seed=5))[:, None]
    views = augment(x, torch.Generator().manual_seed(0), build_settings(AugmentSettings))
    before = paper_properties(x[:, 0].numpy())["tuf"]
    after = paper_properties(views[:, 0].numpy())["tuf"]
    assert np.median(np.abs(after / before - 1)) < 0.1


def test_default_augmentations_keep_the_leading_polarity_and_the_papers_lose_it():
    defaults = build_settings(AugmentSettings)
    assert not defaults.dihedral and not defaults.polarity_flip  # no mirror, no polarity-flip invariance
    x = torch.from_numpy(bipoles(32, 64, seed=5))[:, None]
    lead = np.sign(paper_properties(x[:, 0].numpy())["lead_pol"])
    for seed in range(3):
        view = augment(x, torch.Generator().manual_seed(seed), defaults)
        np.testing.assert_array_equal(np.sign(paper_properties(view[:, 0].numpy())["lead_pol"]), lead)
    papers = build_settings(AugmentSettings, dihedral=True, polarity_flip=True)
    view = augment(x, torch.Generator().manual_seed(0), papers)
    assert (np.sign(paper_properties(view[:, 0].numpy())["lead_pol"]) != lead).mean() > 0.25


def test_zero_magnitudes_switch_augmentations_off():
    x = batch()
    off = AugmentSettings(False, 0, 0, 0, 0, 0, 0, False)
    assert torch.equal(augment(x, torch.Generator().manual_seed(0), off), x)


def test_bad_augmentation_settings_are_user_errors():
    with pytest.raises(SharpgenError, match="unknown config key 'ssl.augment.brighten'"):
        build_settings(AugmentSettings, brighten=0.5)
    with pytest.raises(SharpgenError, match="'ssl.augment.zoom'"):
        build_settings(AugmentSettings, zoom=1.5)


# Training


def state_dict_of(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def test_training_writes_encoder_log_and_checkpoint(data_dir, tmp_path):
    log = train_ssl(data_dir, tmp_path / "ssl", SETTINGS, seed=1, progress=False)
    assert list(log["step"]) == list(range(1, 13)) and list(log["epoch"]) == [0] * 4 + [1] * 4 + [2] * 4
    on_disk = pd.read_csv(tmp_path / "ssl" / "train_log.csv")
    assert tuple(on_disk.columns) == LOG_COLUMNS and len(on_disk) == 12
    assert (on_disk["loss"] >= 0).all() and (on_disk["output_std"] > 0).all()  # VICReg: a sum of squares and hinges
    encoder = torch.load(tmp_path / "ssl" / "encoder.pt", map_location="cpu", weights_only=False)
    assert (
        encoder["settings"] == dataclasses.asdict(SETTINGS) and (tmp_path / "ssl" / "checkpoints" / "last.pt").is_file()
    )


def test_the_mirror_term_adds_to_the_loss_only_when_weighted(data_dir, tmp_path):
    short = dataclasses.replace(SETTINGS, epochs=1)
    plain = train_ssl(
        data_dir, tmp_path / "plain", dataclasses.replace(short, mirror_weight=0.0), seed=1, progress=False
    )
    mirrored = train_ssl(data_dir, tmp_path / "mirror", dataclasses.replace(short, mirror_weight=10.0), seed=1,
                         progress=False)  # fmt: skip
    assert mirrored["loss"].iloc[0] > plain["loss"].iloc[0]  # same network, same views: the term is > 0


def test_series_partners_pair_only_records_of_the_same_harp():
    harpnums = np.array([5, 5, 5, 7, 9, 9, 0, 0, 7000])
    partners = series_partners(harpnums, 1.0, np.random.default_rng(0))
    assert partners.tolist()[3] == 3 and partners.tolist()[6:] == [6, 7, 8]  # alone, or no HARP: itself
    paired = np.arange(6) != 3
    assert (partners[:6][paired] != np.arange(6)[paired]).all()
    assert (harpnums[partners] == harpnums).all()
    assert (series_partners(harpnums, 0.0, np.random.default_rng(0)) == np.arange(9)).all()
    many = np.repeat(np.arange(1, 1001), 3)
    share = (series_partners(many, 0.5, np.random.default_rng(1)) != np.arange(3000)).mean()
    assert share == pytest.approx(0.5, abs=0.05)
    drawn = {int(series_partners(harpnums, 1.0, np.random.default_rng(seed))[0]) for seed in range(20)}
    assert drawn == {1, 2}  # each other observation of the HARP, never the record itself


@pytest.fixture
def series_dir(tmp_path):
    """20 patches of 32 px: train HARPs 1-4 observed 3 times, HARPs 5-6 once; val/test HARPs 7-10 twice each
    (none shares a HARP with the train split, as the HARP split guarantees)."""
    patches = bipoles(22, 32)
    zarr.create_array(store=str(tmp_path / "patches.zarr"), data=patches, chunks=(8, 32, 32), zarr_format=3)
    harps = [1, 2, 3, 4] * 3 + [5, 6] + [7, 7, 8, 8, 9, 9, 10, 10]
    splits = ["train"] * 14 + ["val"] * 4 + ["test"] * 4
    write_parquet_atomic(measured_table(patches, harpnum=harps, split=splits), tmp_path / "patches.parquet")
    return tmp_path


def test_series_positives_pair_two_train_observations_of_one_harp(series_dir, tmp_path, monkeypatch):
    table = pd.read_parquet(series_dir / "patches.parquet")
    patches = bipoles(22, 32)
    train_rows = np.flatnonzero(table["split"] == "train")
    assert (train_harpnums(series_dir) == table["harpnum"].to_numpy()[train_rows]).all()
    pairs = []

    def recording_two_views(x, generator, settings, partner=None):
        pairs.append((x.clone(), partner.clone()))
        return two_views(x, generator, settings, partner)

    monkeypatch.setattr(ssl_train, "two_views", recording_two_views)
    settings = dataclasses.replace(SETTINGS, epochs=2, series_positives=1.0)
    train_ssl(series_dir, tmp_path / "ssl", settings, seed=1, progress=False)

    def row_of(patch: torch.Tensor) -> int:
        return int(np.flatnonzero((patches == patch[0].numpy()).all(axis=(1, 2)))[0])

    rows = [(row_of(a), row_of(b)) for x, partner in pairs for a, b in zip(x, partner, strict=True)]
    harps = table["harpnum"].to_numpy()
    assert all(table["split"][b] == "train" and harps[a] == harps[b] for a, b in rows)
    assert all((a != b) == (harps[a] <= 4) for a, b in rows)  # every series record paired, singletons alone


def test_training_with_series_positives_is_deterministic_and_differs_from_plain_pairs(series_dir, tmp_path):
    settings = dataclasses.replace(SETTINGS, epochs=1, series_positives=1.0)
    for name in ("a", "b"):
        train_ssl(series_dir, tmp_path / name, settings, seed=1, progress=False)
    train_ssl(series_dir, tmp_path / "plain", dataclasses.replace(settings, series_positives=0.0), seed=1,
              progress=False)  # fmt: skip
    a, b = state_dict_of(tmp_path / "a" / "encoder.pt"), state_dict_of(tmp_path / "b" / "encoder.pt")
    plain = state_dict_of(tmp_path / "plain" / "encoder.pt")
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert not all(torch.equal(a[name], plain[name]) for name in a)


def test_centred_backbone_embedding_is_the_features_less_their_train_split_mean(data_dir, tmp_path):
    settings = dataclasses.replace(SETTINGS, epochs=1, embedding="centred_backbone")
    train_ssl(data_dir, tmp_path / "ssl", settings, seed=1, progress=False)
    encoder = load_encoder(tmp_path / "ssl" / "encoder.pt")
    patches = bipoles(20, 32)
    embeddings = embed_patches(encoder, patches)
    with torch.no_grad():
        features = encoder.backbone(torch.from_numpy(patches)[:, None]).numpy()
    np.testing.assert_allclose(embeddings, features - encoder.feature_mean.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(embeddings[:16].mean(0), 0.0, atol=1e-4)  # rows 0-15 are the train split
    assert (features >= 0).all() and (embeddings < 0).any()


def test_encoders_saved_before_the_centred_embedding_still_load(data_dir, tmp_path):
    train_ssl(data_dir, tmp_path / "ssl", dataclasses.replace(SETTINGS, epochs=1), seed=1, progress=False)
    assert embed_patches(load_encoder(tmp_path / "ssl" / "encoder.pt"), bipoles(3, 32)).shape == (3, 256)
    payload = torch.load(tmp_path / "ssl" / "encoder.pt", map_location="cpu", weights_only=False)
    plain = build_simsiam("default", 32)
    payload["state_dict"] = {k: v for k, v in plain.state_dict().items() if k != "feature_mean"}  # no buffer
    torch.save(payload, tmp_path / "old.pt")
    assert not load_encoder(tmp_path / "old.pt").feature_mean.any()


def test_the_papers_simsiam_with_projector_embedding_stays_selectable(series_dir, tmp_path):
    paper = build_settings(
        SslSettings, image_size=32, epochs=1, batch_size=4, objective="simsiam", embedding="projector",
        series_positives=0.0, mirror_weight=0.0, property_weight=0.0, augment={"dihedral": True, "polarity_flip": True},
    )  # fmt: skip
    log = train_ssl(series_dir, tmp_path / "ssl", paper, seed=1, progress=False)
    assert (log["loss"] >= -1).all() and (log["loss"] <= 1).all()  # negative cosine
    encoder = load_encoder(tmp_path / "ssl" / "encoder.pt")
    assert encoder.embedding == "projector" and embed_patches(encoder, bipoles(3, 32)).shape == (3, 100)


def test_training_is_deterministic_for_a_seed(data_dir, tmp_path):
    short = dataclasses.replace(SETTINGS, epochs=1)
    first = train_ssl(data_dir, tmp_path / "a", short, seed=1, progress=False)
    again = train_ssl(data_dir, tmp_path / "b", short, seed=1, progress=False)
    pd.testing.assert_series_equal(first["loss"], again["loss"])
    a, b = state_dict_of(tmp_path / "a" / "encoder.pt"), state_dict_of(tmp_path / "b" / "encoder.pt")
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_interrupted_run_resumes_to_the_same_encoder(data_dir, tmp_path, monkeypatch):
    train_ssl(data_dir, tmp_path / "whole", SETTINGS, seed=1, progress=False)
    real_save = ssl_train.save_checkpoint
    saves = []

    def save_then_die(path, state, *rest):
        real_save(path, state, *rest)
        saves.append(state["step"])
        if state["step"] == 6:  # killed mid-run, in the middle of epoch 1
            raise KeyboardInterrupt

    monkeypatch.setattr(ssl_train, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_ssl(data_dir, tmp_path / "split", SETTINGS, seed=1, progress=False)
    assert not (tmp_path / "split" / "encoder.pt").exists() and saves == [3, 6]
    monkeypatch.setattr(ssl_train, "save_checkpoint", real_save)
    log = train_ssl(data_dir, tmp_path / "split", SETTINGS, seed=1, progress=False)
    whole, split = state_dict_of(tmp_path / "whole" / "encoder.pt"), state_dict_of(tmp_path / "split" / "encoder.pt")
    assert all(torch.equal(whole[name], split[name]) for name in whole)
    pd.testing.assert_series_equal(log["loss"], pd.read_csv(tmp_path / "whole" / "train_log.csv")["loss"])


def test_a_stale_checkpoint_is_replaced_by_training_from_scratch(data_dir, tmp_path, capsys):
    short = dataclasses.replace(SETTINGS, epochs=1)
    train_ssl(data_dir, tmp_path / "ssl", short, seed=1, progress=False)
    other = dataclasses.replace(short, lr=0.1)
    train_ssl(data_dir, tmp_path / "ssl", other, seed=1, progress=False)
    assert "from another run" in capsys.readouterr().err
    train_ssl(data_dir, tmp_path / "fresh", other, seed=1, progress=False)
    stale, fresh = state_dict_of(tmp_path / "ssl" / "encoder.pt"), state_dict_of(tmp_path / "fresh" / "encoder.pt")
    assert all(torch.equal(stale[name], fresh[name]) for name in fresh)


def test_raising_epochs_continues_a_finished_run_to_the_same_encoder(data_dir, tmp_path):
    train_ssl(data_dir, tmp_path / "whole", SETTINGS, seed=1, progress=False)
    train_ssl(data_dir, tmp_path / "grown", dataclasses.replace(SETTINGS, epochs=1), seed=1, progress=False)
    log = train_ssl(data_dir, tmp_path / "grown", SETTINGS, seed=1, progress=False)
    assert list(log["step"]) == list(range(1, 13))
    whole, grown = state_dict_of(tmp_path / "whole" / "encoder.pt"), state_dict_of(tmp_path / "grown" / "encoder.pt")
    assert all(torch.equal(whole[name], grown[name]) for name in whole)
    backbone = train_ssl(
        data_dir, tmp_path / "grown", dataclasses.replace(SETTINGS, embedding="backbone"), seed=1, progress=False
    )
    assert len(backbone) == 12 and load_encoder(tmp_path / "grown" / "encoder.pt").embedding_dim == 256  # no training
    with pytest.raises(SharpgenError, match="raise epochs or delete it"):
        train_ssl(data_dir, tmp_path / "grown", dataclasses.replace(SETTINGS, epochs=2), seed=1, progress=False)


def test_training_mistakes_are_user_errors(data_dir, tmp_path):
    with pytest.raises(SharpgenError, match="exceeds the 16 train patches"):
        train_ssl(data_dir, tmp_path / "ssl", dataclasses.replace(SETTINGS, batch_size=32), seed=1, progress=False)
    with pytest.raises(SharpgenError, match="rerun normalize"):
        train_ssl(data_dir, tmp_path / "ssl", dataclasses.replace(SETTINGS, image_size=64), seed=1, progress=False)
    with pytest.raises(SharpgenError, match="ssl.embedding"):
        build_settings(SslSettings, embedding="predictor")
    with pytest.raises(SharpgenError, match="no SSL encoder"):
        load_encoder(tmp_path / "missing.pt")
    for key, value in (("series_positives", 1.5), ("series_positives", -0.1)):
        with pytest.raises(SharpgenError, match=f"ssl.{key}"):
            validate_config({"ssl": {key: value}})


def test_settings_from_config_read_the_ssl_section():
    config = {
        "image_size": 64,
        "ssl": {
            "architecture": "paper", "embedding_dim": 100, "embedding": "projector", "epochs": 10, "batch_size": 64,
            "lr": 0.0125, "momentum": 0.0, "weight_decay": 0.0, "checkpoint_every": 100, "device": "auto",
            "augment": {"zoom": 0.2, "rotation_deg": 180},
        },
    }  # fmt: skip
    settings = settings_from_config(SslSettings, validate_config(config))
    assert settings.image_size == 64 and settings.architecture == "paper" and settings.augment.zoom == 0.2
    assert build_settings(SslSettings, dataclasses.asdict(settings)) == settings


# Embeddings


def test_embed_patches_streams_a_zarr_array_and_matches_a_direct_forward(data_dir, tmp_path):
    projector = dataclasses.replace(SETTINGS, epochs=1, embedding="projector")
    train_ssl(data_dir, tmp_path / "ssl", projector, seed=1, progress=False)
    encoder = load_encoder(tmp_path / "ssl" / "encoder.pt")
    patches = zarr.open_array(str(data_dir / "patches.zarr"), mode="r")
    embeddings = embed_patches(encoder, patches, batch_size=7)
    assert embeddings.shape == (20, 100) and embeddings.dtype == np.float32
    with torch.no_grad():
        direct = encoder.projector(encoder.backbone(torch.from_numpy(patches[:])[:, None])).numpy()
    np.testing.assert_allclose(embeddings, direct, rtol=1e-4, atol=1e-5)
    written = embed_dataset(data_dir, tmp_path / "ssl" / "encoder.pt", tmp_path / "embeddings.npy", progress=False)
    np.testing.assert_array_equal(np.load(tmp_path / "embeddings.npy"), written)
    with pytest.raises(SharpgenError, match=r"embeds \(N, 32, 32\) patches"):
        embed_patches(encoder, np.zeros((2, 16, 16), np.float32))


# Physical-property head (ssl.property_weight)


def tilted_bipoles(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``n`` bipoles like :func:`bipoles` whose axis is tilted by up to 60 degrees either way."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    out = []
    for _ in range(n):
        cy, cx, half, width, strength, tilt = rng.uniform(
            [0.4, 0.4, 0.1, 0.04, 0.5, -1.0], [0.6, 0.6, 0.2, 0.08, 1.5, 1.0]
        )
        dx, dy = half * np.cos(tilt), half * np.sin(tilt)
        lead = np.exp(-((xx - cx + dx) ** 2 + (yy - cy + dy) ** 2) / (2 * width**2))
        follow = np.exp(-((xx - cx - dx) ** 2 + (yy - cy - dy) ** 2) / (2 * width**2))
        out.append(np.tanh(strength * (lead - follow)))
    return np.stack(out).astype(np.float32)


@pytest.fixture
def property_dir(series_dir):
    """:func:`series_dir` (train HARPs 1-4 observed 3 times, the measured properties in the table)."""
    return series_dir


def test_property_loss_counts_and_differentiates_only_the_defined_properties():
    predicted = torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, -1.0]], requires_grad=True)
    targets = torch.tensor([[1.5, float("nan"), 2.0], [float("nan"), float("nan"), 1.0]])
    loss = property_loss(predicted, targets)
    assert loss.item() == pytest.approx((0.5**2 + 1.0**2 + 2.0**2) / 3)  # the 3 defined entries, not 6
    loss.backward()
    assert torch.isfinite(predicted.grad).all()
    assert (predicted.grad[torch.isnan(targets)] == 0).all() and (predicted.grad[~torch.isnan(targets)] != 0).all()
    nothing = property_loss(predicted, torch.full((2, 3), float("nan")))
    assert nothing.item() == 0.0 and nothing.requires_grad


def test_property_targets_are_the_properties_and_the_centroid_vector_over_the_diagonal():
    table = pd.DataFrame({
        "tuf": [0.01, 0.1], "tpf": [0.02, np.nan], "tnf": [0.03, 0.2], "psep": [0.2, np.nan],
        "r_paper": [0.0, np.nan], "lead_pol": [-8.0, np.nan], "tilt_paper": [30.0, np.nan],
    })  # fmt: skip
    targets = property_targets(table, image_size=64)
    assert targets.shape == (2, len(PROPERTY_TARGETS))
    np.testing.assert_allclose(targets[0], [0.01, 0.02, 0.03, 0.2, 0.0, -8.0 / (64 * np.sqrt(2)), 0.1])
    np.testing.assert_array_equal(np.isnan(targets[1]), [False, True, False, True, True, True, True])
    with pytest.raises(SharpgenError, match="lacks r_paper"):
        property_targets(table.drop(columns="r_paper"), image_size=64)


def test_the_centroid_vector_is_what_the_properties_measure_and_a_mirror_negates_its_y():
    patches = tilted_bipoles(12, 64, seed=2)
    measured = property_targets(measured_table(patches), 64)
    mirrored = property_targets(measured_table(patches[:, ::-1].copy()), 64)
    np.testing.assert_allclose(mirrored[:, DIPOLE_Y], -measured[:, DIPOLE_Y], atol=1e-9)
    np.testing.assert_allclose(np.delete(mirrored, DIPOLE_Y, 1), np.delete(measured, DIPOLE_Y, 1), atol=1e-9)
    x, y = measured[:, PROPERTY_TARGETS.index("dipole_x")], measured[:, DIPOLE_Y]
    np.testing.assert_allclose(np.hypot(x, y), measured[:, PROPERTY_TARGETS.index("psep")])
    assert (np.abs(y) > 0.01).sum() >= 8  # tilted both ways, so the y component carries the tilt sign
    assert (y > 0).any() and (y < 0).any()


def test_targets_are_standardized_with_the_train_split_only(property_dir):
    table = pd.read_parquet(property_dir / "patches.parquet")
    table.loc[table["split"] != "train", ["tuf", "psep"]] = [5.0, 0.9]  # held-out extremes must not shift anything
    table.loc[3, "tpf"] = np.nan
    write_parquet_atomic(table, property_dir / "patches.parquet")
    targets, mirror_targets, scale = train_property_targets(property_dir, 32)
    raw = property_targets(table[table["split"] == "train"], 32)
    assert targets.shape == (14, len(PROPERTY_TARGETS)) and targets.dtype == np.float32
    np.testing.assert_allclose(scale["mean"], np.nanmean(raw, axis=0))
    np.testing.assert_allclose(scale["std"], np.nanstd(raw, axis=0))
    np.testing.assert_allclose(np.nanmean(targets, axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.nanstd(targets, axis=0), 1.0, atol=1e-5)
    assert np.isnan(targets[3, PROPERTY_TARGETS.index("tpf")]) and np.isfinite(np.delete(targets, 3, 0)).all()
    mean_y, std_y = scale["mean"][DIPOLE_Y], scale["std"][DIPOLE_Y]
    np.testing.assert_allclose(mirror_targets[:, DIPOLE_Y], (-raw[:, DIPOLE_Y] - mean_y) / std_y, rtol=1e-5)
    np.testing.assert_array_equal(np.delete(mirror_targets, DIPOLE_Y, 1), np.delete(targets, DIPOLE_Y, 1))


def test_property_weight_zero_trains_the_same_network_whatever_the_table_says(property_dir, tmp_path):
    settings = dataclasses.replace(SETTINGS, epochs=1, series_positives=1.0, property_weight=0.0)
    train_ssl(property_dir, tmp_path / "a", settings, seed=1, progress=False)
    table = pd.read_parquet(property_dir / "patches.parquet")
    write_parquet_atomic(table[["harpnum", "split"]], property_dir / "patches.parquet")  # no property at all
    log = train_ssl(property_dir, tmp_path / "b", settings, seed=1, progress=False)
    a, b = state_dict_of(tmp_path / "a" / "encoder.pt"), state_dict_of(tmp_path / "b" / "encoder.pt")
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert log["property_loss"].isna().all()
    assert "property_head" not in torch.load(tmp_path / "b" / "encoder.pt", map_location="cpu", weights_only=False)
    with pytest.raises(SharpgenError, match="ssl.property_weight"):
        train_ssl(property_dir, tmp_path / "c", dataclasses.replace(settings, property_weight=1.0), seed=1,
                  progress=False)  # fmt: skip


def test_forward_features_is_the_forward_pass_with_the_backbone_features():
    model = build_simsiam("default", 32).eval()
    x = batch()
    features, z, p = model.forward_features(x)
    assert torch.equal(features, model.backbone(x))
    assert all(torch.equal(a, b) for a, b in zip((z, p), model(x), strict=True))


def test_each_view_is_scored_against_its_own_records_properties(property_dir, tmp_path, monkeypatch):
    patches = bipoles(22, 32)
    targets, mirror_targets, _ = train_property_targets(property_dir, 32)
    train_rows = np.flatnonzero(pd.read_parquet(property_dir / "patches.parquet")["split"] == "train")
    views, scored = [], []

    def recording_two_views(x, generator, settings, partner=None):
        views.append((x.clone(), partner.clone()))
        return two_views(x, generator, settings, partner)

    def recording_loss(predicted, target):
        scored.append(target.clone())
        return property_loss(predicted, target)

    monkeypatch.setattr(ssl_train, "two_views", recording_two_views)
    monkeypatch.setattr(ssl_train, "property_loss", recording_loss)
    settings = dataclasses.replace(SETTINGS, epochs=1, series_positives=1.0, property_weight=1.0)
    log = train_ssl(property_dir, tmp_path / "ssl", settings, seed=1, progress=False)

    def train_row_of(patch: torch.Tensor) -> int:
        row = int(np.flatnonzero((patches == patch[0].numpy()).all(axis=(1, 2)))[0])
        return int(np.flatnonzero(train_rows == row)[0])

    assert len(scored) == 3 * len(views)  # first view, second view, mirror image of the first
    for step, (x, partner) in enumerate(views):
        first, second, mirror = scored[3 * step : 3 * step + 3]
        rows, partner_rows = [train_row_of(p) for p in x], [train_row_of(p) for p in partner]
        assert rows != partner_rows  # series positives: the second view is another record
        torch.testing.assert_close(first, torch.from_numpy(targets[rows]), equal_nan=True)
        torch.testing.assert_close(second, torch.from_numpy(targets[partner_rows]), equal_nan=True)
        torch.testing.assert_close(mirror, torch.from_numpy(mirror_targets[rows]), equal_nan=True)
    assert np.isfinite(log["property_loss"]).all() and (log["property_loss"] > 0).all()


def test_the_property_head_trains_with_the_network_and_is_saved_and_resumed(property_dir, tmp_path, monkeypatch):
    settings = dataclasses.replace(SETTINGS, property_weight=5.0)
    log = train_ssl(property_dir, tmp_path / "whole", settings, seed=1, progress=False)
    plain = train_ssl(property_dir, tmp_path / "plain", dataclasses.replace(settings, property_weight=0.0), seed=1,
                      progress=False)  # fmt: skip
    assert log["loss"].iloc[0] > plain["loss"].iloc[0]  # same network and views at step 1: the term adds
    whole = torch.load(tmp_path / "whole" / "encoder.pt", map_location="cpu", weights_only=False)
    head = whole["property_head"]
    assert head["targets"] == list(PROPERTY_TARGETS) and len(head["mean"]) == len(head["std"]) == 7
    assert head["state_dict"]["linear.weight"].shape == (7, 256)
    encoder = load_encoder(tmp_path / "whole" / "encoder.pt")  # the retrieval network loads as before
    assert embed_patches(encoder, bipoles(3, 32)).shape == (3, 256)
    real_save = ssl_train.save_checkpoint

    def save_then_die(path, state, *rest):
        real_save(path, state, *rest)
        if state["step"] == 6:
            raise KeyboardInterrupt

    monkeypatch.setattr(ssl_train, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_ssl(property_dir, tmp_path / "split", settings, seed=1, progress=False)
    monkeypatch.setattr(ssl_train, "save_checkpoint", real_save)
    train_ssl(property_dir, tmp_path / "split", settings, seed=1, progress=False)
    split = torch.load(tmp_path / "split" / "encoder.pt", map_location="cpu", weights_only=False)
    for part in (whole["state_dict"], whole["property_head"]["state_dict"]):
        other = split["state_dict"] if part is whole["state_dict"] else split["property_head"]["state_dict"]
        assert all(torch.equal(part[name], other[name]) for name in part)


def test_property_weight_is_a_non_negative_ssl_setting():
    assert build_settings(SslSettings).property_weight == 25.0
    with pytest.raises(SharpgenError, match="ssl.property_weight"):
        validate_config({"ssl": {"property_weight": -1.0}})
