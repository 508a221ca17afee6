"""The config schema is the one place users edit: it must fill defaults and name bad keys."""

from __future__ import annotations

import re

import pytest
import yaml

from sharpgen.config import build_settings, load_config, load_schema, validate_config
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


def test_paper_config_trains_the_papers_simsiam_without_our_additions(repo_root):
    """Every ssl option added since the paper defaults to on; paper.yaml must switch each one off, and search
    the SSL embedding alone (no measured physics beside it)."""
    config = load_config(repo_root / "config" / "paper.yaml")
    ssl = config["ssl"]
    assert (ssl["objective"], ssl["embedding"]) == ("simsiam", "projector")
    assert ssl["mirror_weight"] == ssl["series_positives"] == ssl["property_weight"] == 0.0
    assert ssl["augment"]["dihedral"] and ssl["augment"]["polarity_flip"]
    assert config["index"]["physics_weight"] == 0.0


@pytest.mark.parametrize("name", ["schema.yaml", "config.yaml", "paper.yaml", "test.yaml"])
def test_no_shipped_yaml_gives_a_key_twice(repo_root, name):
    """YAML keeps the last of two equal keys silently: an edit pasted twice would hide the first."""

    class Strict(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
            repeated = sorted({str(key) for key in keys if keys.count(key) > 1})
            assert not repeated, f"{name}: {repeated} given twice near line {node.start_mark.line + 1}"
            return super().construct_mapping(node, deep=deep)

    yaml.load((repo_root / "config" / name).read_text(), Loader=Strict)


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


STAGE_SETTINGS = [
    ("sharpgen.data.sources.synthetic", "SyntheticSettings"),
    ("sharpgen.data.sources.jsoc", "JsocSettings"),
    ("sharpgen.data.sources.local", "LocalFitsSettings"),
    ("sharpgen.data.normalize", "NormalizeSettings"),
    ("sharpgen.gan.train", "GanSettings"),
    ("sharpgen.gan.sample", "SampleSettings"),
    ("sharpgen.gan.invert", "InversionSettings"),
    ("sharpgen.latent.fit", "DirectionSettings"),
    ("sharpgen.latent.score", "LabelScoreSettings"),
    ("sharpgen.retrieval.train", "SslSettings"),
    ("sharpgen.retrieval.index", "IndexSettings"),
    ("sharpgen.retrieval.evaluate", "RetrievalEvalSettings"),
]
CONSUMED_ELSEWHERE = {
    "results_dir": "the Snakefile: where the run writes",
    "seed": "every stage command's --seed",
    "source": "the retrieve rule: which source section applies",
    "dask.scheduler_address": "the normalize rule's --scheduler-address",
    "gan.device": "train_gan's device argument: not part of the run's identity",
    "gan.preview_every": "train_gan's preview_every argument: previews do not change training",
    "sample.device": "sample and fit_directions' device argument",
    "ssl.device": "train_ssl, embed and evaluate_retrieval's device argument",
}


def _settings_classes():
    import importlib

    return [getattr(importlib.import_module(module), name) for module, name in STAGE_SETTINGS]


def _leaf_keys(schema: dict, prefix: str = "") -> set[str]:
    keys = set()
    for name, sub in schema.get("properties", {}).items():
        key = f"{prefix}{name}"
        keys |= _leaf_keys(sub, f"{key}.") if "properties" in sub else {key}
    return keys


def _fields(cls, prefix: str) -> dict[str, object]:
    """Dotted schema key -> field, nested settings dataclasses expanded (``ssl.augment.zoom``)."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    found = {}
    for field in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[field.name]):
            found |= _fields(hints[field.name], f"{prefix}{field.name}.")
        else:
            found[cls.CONFIG_KEYS.get(field.name, f"{prefix}{field.name}") if hasattr(cls, "CONFIG_KEYS") else
                  f"{prefix}{field.name}"] = field  # fmt: skip
    return found


def test_every_schema_key_reaches_a_stage_settings_field_or_is_consumed_elsewhere():
    schema = load_schema()
    reached = set()
    for cls in _settings_classes():
        reached |= set(_fields(cls, cls.SECTION.removeprefix("$defs.") + "."))
    wanted = _leaf_keys(schema) | {f"{name}.{key}" for name, sub in schema["$defs"].items() for key in _leaf_keys(sub)}
    assert wanted - reached == set(CONSUMED_ELSEWHERE)


def test_no_stage_settings_has_a_default_or_a_field_the_schema_lacks():
    import dataclasses

    schema = load_schema()
    known = _leaf_keys(schema) | {f"{name}.{key}" for name, sub in schema["$defs"].items() for key in _leaf_keys(sub)}
    for cls in _settings_classes():
        fields = _fields(cls, cls.SECTION.removeprefix("$defs.") + ".")
        assert set(fields) <= known, cls.__name__
        for key, field in fields.items():
            assert field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING, key


def test_every_stage_settings_builds_from_the_schema_defaults_and_round_trips():
    import dataclasses

    for cls in _settings_classes():
        settings = build_settings(cls)
        assert build_settings(cls, dataclasses.asdict(settings)) == settings, cls.__name__


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"image_size": 100}, "'image_size': 100 is not a power of two"),
        ({"image_size": 64, "gan": {"architecture": "paper"}}, "gan.architecture 'paper' is defined for 128 px only"),
        ({"normalize": {"split": {"train": 0.9}}}, "'normalize.split': fractions sum to 1.1"),
        ({"ssl": {"lr": float("nan")}}, "'ssl.lr': nan is not a finite number"),
    ],
)
def test_a_setting_no_stage_can_honour_is_refused_at_config_time(config, named):
    with pytest.raises(SharpgenError, match=re.escape(named)):
        validate_config(config)


def test_sharpgen_config_refuses_an_image_size_the_default_gan_cannot_make(tmp_path, capsys):
    from sharpgen.cli import main

    path = tmp_path / "config.yaml"
    path.write_text("image_size: 100\n")
    assert main(["config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sharpgen: error: config key 'image_size': 100 is not a power of two") and "\n" not in err


@pytest.mark.parametrize(
    ("settings", "named"),
    [
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
        (
            {"directions": {"properties": ["tuf", "psep"]}, "label_score": {"properties": ["tuf", "area"]}},
            "'label_score.properties': area not in directions.properties",
        ),
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
