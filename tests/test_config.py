"""The config schema is the one place users edit: it must fill defaults and name bad keys."""

from __future__ import annotations

import pytest
import yaml

from sharpgen.config import load_config, load_schema, validate_config
from sharpgen.errors import SharpgenError


def test_empty_config_gets_every_schema_default():
    config = validate_config({})
    assert config["seed"] == 23
    assert config["source"] == "synthetic"
    assert (
        config["synthetic"]["n_patches"]
        == load_schema()["properties"]["synthetic"]["properties"]["n_patches"]["default"]
    )
    assert set(config["synthetic"]["class_fractions"]) == {"alpha", "beta", "multipolar", "delta"}


def test_given_values_are_kept_and_missing_ones_filled():
    config = validate_config({"synthetic": {"n_patches": 7}})
    assert config["synthetic"]["n_patches"] == 7
    assert config["synthetic"]["noise_gauss"] == 10.0


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ({"seed": "abc"}, "'seed'"),
        ({"sed": 3}, "'sed'"),
        ({"synthetic": {"n_patchez": 3}}, "'synthetic.n_patchez'"),
        ({"synthetic": {"n_patches": 0}}, "'synthetic.n_patches'"),
        ({"synthetic": {"class_fractions": {"beta": "many"}}}, "'synthetic.class_fractions.beta'"),
        ({"source": "ftp"}, "'source'"),
    ],
)
def test_a_bad_key_is_named_in_one_line(bad, named):
    with pytest.raises(SharpgenError) as excinfo:
        validate_config(bad)
    message = str(excinfo.value)
    assert named in message
    assert "\n" not in message


def test_shipped_configs_are_valid(repo_root):
    for name in ("config.yaml", "test.yaml"):
        config = load_config(repo_root / "config" / name)
        assert config["results_dir"].startswith("results/")


def test_package_schema_is_config_schema(repo_root):
    on_disk = yaml.safe_load((repo_root / "config" / "schema.yaml").read_text())
    assert load_schema() == on_disk


def test_missing_or_malformed_config_file_is_a_user_error(tmp_path):
    with pytest.raises(SharpgenError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("seed: [1, 2\n")
    with pytest.raises(SharpgenError, match="not valid YAML"):
        load_config(broken)


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"image_size": 100}, "'image_size': 100 is not a power of two"),
        ({"image_size": 64, "gan": {"architecture": "paper"}}, "'image_size': 64, but gan.architecture 'paper'"),
        (
            {"normalize": {"mode": "resize"}, "directions": {"properties": ["tuf", "usflux", "psep_mm"]}},
            "'directions.properties': usflux, psep_mm in physical units need normalize.mode fixed_scale",
        ),
        (
            {"sample": {"n_samples": 100}, "directions": {"label_fraction": 0.015}},
            "'directions.label_fraction': 0.015 of sample.n_samples 100",
        ),
        ({"sample": {"n_samples": 50, "stored_patches": 2}}, "'sample.stored_patches': 2 stored samples"),
        ({"synthetic": {"n_patches": 12}, "index": {"kind": "pqfs"}}, "'index.kind': pqfs needs at least 16"),
        ({"synthetic": {"n_patches": 12}, "index": {"kind": "ivf", "ivf_nlist": 20}}, "'index.ivf_nlist': 20"),
    ],
)
def test_settings_no_stage_can_honour_are_refused_naming_the_key(settings, named):
    with pytest.raises(SharpgenError) as excinfo:
        validate_config(settings)
    assert named in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_what_a_stage_can_honour_passes_the_consistency_check():
    fixed = {"normalize": {"mode": "fixed_scale"}, "directions": {"properties": ["usflux", "psep_mm"]}}
    assert validate_config(fixed)["directions"]["properties"] == ["usflux", "psep_mm"]
    assert validate_config({"source": "jsoc", "synthetic": {"n_patches": 2}, "index": {"kind": "pqfs"}})  # N unknown
    assert validate_config({"image_size": 128, "gan": {"architecture": "paper"}})
