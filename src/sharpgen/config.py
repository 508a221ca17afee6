"""Pipeline configuration: load YAML, validate against ``config/schema.yaml``, fill defaults, build settings.

The schema is the single validator and the single source of defaults and documentation; :data:`RULES` holds
the few cross-field rules a schema cannot say. Validation errors name the offending key on one line
(``config key 'synthetic.n_patches': -1 is less than the minimum of 1``). :func:`build_settings` and
:func:`settings_from_config` are the one way to turn a section into the frozen settings dataclass of a stage.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import types
import typing
from collections.abc import Callable, Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
import yaml

from .errors import SharpgenError


@lru_cache(maxsize=1)
def load_schema() -> dict:
    """Return the pipeline's JSON schema (shipped with the package; identical to config/schema.yaml)."""
    text = resources.files("sharpgen").joinpath("schema.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _fill_defaults(validator_class):
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_DefaultingValidator = _fill_defaults(jsonschema.Draft202012Validator)


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(part) for part in error.absolute_path)


def _describe(error: jsonschema.ValidationError, prefix: str, noun: str) -> str:
    where = ".".join(part for part in (prefix, _key_path(error)) if part)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unexpected = sorted(set(error.instance) - set(allowed))
        keys = ", ".join(repr(f"{where}.{key}" if where else key) for key in unexpected)
        return f"unknown {noun} {keys} (allowed here: {', '.join(allowed)})"
    return f"{noun} '{where or '<top level>'}': {error.message}"


def _fill_and_validate(values: Any, schema: dict, prefix: str = "", noun: str = "config key") -> Any:
    """A deep copy of ``values`` with the schema's defaults filled; the first error raised as one line."""
    filled = copy.deepcopy(values)
    errors = sorted(
        _DefaultingValidator(schema).iter_errors(filled),
        key=lambda err: (len(err.absolute_path), _key_path(err)),
    )
    if errors:
        raise SharpgenError(_describe(errors[0], prefix, noun))
    _reject_non_finite(filled, prefix, noun)
    return filled


def _reject_non_finite(value: Any, where: str, noun: str) -> None:
    """YAML's ``.nan`` and ``.inf`` pass every JSON-schema bound, so no number of a config may be one."""
    if isinstance(value, float) and not math.isfinite(value):
        raise SharpgenError(f"{noun} '{where}': {value} is not a finite number")
    items = value.items() if isinstance(value, Mapping) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        _reject_non_finite(item, f"{where}.{key}" if where else str(key), noun)


def _fractions_sum_to_one(key: str) -> Callable[[dict], None]:
    def check(config: dict) -> None:
        fractions = _lookup(config, key)
        total = sum(fractions.values())
        if abs(total - 1.0) > 1e-6:
            raise SharpgenError(f"config key '{key}': fractions sum to {total:.6g}, not 1")

    return check


def _flux_range_is_ordered(config: dict) -> None:
    low, high = config["synthetic"]["flux_range_mx"]
    if low >= high:
        raise SharpgenError(f"config key 'synthetic.flux_range_mx': min {low:g} is not below max {high:g}")


def _image_size_fits_the_networks(config: dict) -> None:
    size = config["image_size"]
    if config["gan"]["architecture"] == "paper" and size != 128:
        raise SharpgenError(f"config key 'image_size': {size}, but gan.architecture 'paper' is defined for 128 px only")
    if size & (size - 1):
        raise SharpgenError(
            f"config key 'image_size': {size} is not a power of two (the default GAN and the SSL encoder need one)"
        )


PQ_CENTROIDS = 16
"""Centroids of each 4-bit product quantizer of the ``pqfs`` index: it needs at least this many embeddings."""


def _stages_can_honour(config: dict) -> None:
    """Refuse, naming the key, a schema-valid ``config`` whose settings a stage could not honour.

    Only what is certain before any work: physical-unit directions of ``resize`` patches (no pixel size in Mm),
    a scored property without a direction, fewer than two labelled latents per SVM class, fewer stored samples
    than a retrieval evaluation needs, and
    (synthetic source, whose patch count is known) an index too small for its kind.
    """
    from .properties import PROPERTIES

    physical = [name for name in config["directions"]["properties"] if not PROPERTIES[name].paper_units]
    if physical and config["normalize"]["mode"] == "resize":
        raise SharpgenError(
            f"config key 'directions.properties': {', '.join(physical)} in physical units need normalize.mode "
            "fixed_scale (resize patches have no pixel size in Mm); use their paper-unit twins"
        )
    directed = config["directions"]["properties"]
    scored = [name for name in config["label_score"]["properties"] or () if name not in directed]
    if scored:
        raise SharpgenError(
            f"config key 'label_score.properties': {', '.join(scored)} not in directions.properties (only a property "
            "with a direction can be scored)"
        )
    sample, fraction = config["sample"], config["directions"]["label_fraction"]
    if int(fraction * sample["n_samples"]) < 2:
        raise SharpgenError(
            f"config key 'directions.label_fraction': {fraction} of sample.n_samples {sample['n_samples']} labels "
            "fewer than 2 latents per class; raise either"
        )
    stored = min(sample["n_samples"], sample["stored_patches"] or sample["n_samples"])
    if stored < 3:
        raise SharpgenError(
            f"config key 'sample.stored_patches': {stored} stored samples, but evaluate_retrieval needs at least 3"
        )
    if config["source"] != "synthetic":
        return
    n_patches, index = config["synthetic"]["n_patches"], config["index"]
    if index["kind"] == "pqfs" and n_patches < PQ_CENTROIDS:
        raise SharpgenError(
            f"config key 'index.kind': pqfs needs at least {PQ_CENTROIDS} patches, synthetic.n_patches is "
            f"{n_patches}; use exact"
        )
    if index["kind"] == "ivf" and index["ivf_nlist"] > n_patches:
        raise SharpgenError(
            f"config key 'index.ivf_nlist': {index['ivf_nlist']} cells exceed the {n_patches} synthetic patches"
        )


RULES: tuple[Callable[[dict], None], ...] = (
    _fractions_sum_to_one("synthetic.class_fractions"),
    _flux_range_is_ordered,
    _fractions_sum_to_one("normalize.split"),
    _image_size_fits_the_networks,
)
"""Cross-field rules of a filled config that the schema cannot state; each raises one :class:`SharpgenError` line."""

PIPELINE_RULES: tuple[Callable[[dict], None], ...] = (_stages_can_honour,)
"""Rules between the stages of a whole pipeline config (what one stage needs of another's settings): checked
where the whole config is known (the Snakefile, ``sharpgen config``, a ``--configfile``), not when one stage
command fills the other sections with defaults."""


def validate_config(config: dict | None, schema: dict | None = None, *, whole_pipeline: bool = True) -> dict:
    """Validate ``config`` and return a copy with every default filled in.

    Raises :class:`SharpgenError` naming the first offending key (wrong type, out of range, unknown key), or the
    first broken cross-field rule of :data:`RULES` (pipeline schema only) and, for a ``whole_pipeline`` config,
    of :data:`PIPELINE_RULES`.
    """
    filled = _fill_and_validate(config or {}, load_schema() if schema is None else schema)
    if schema is None:
        for rule in RULES + (PIPELINE_RULES if whole_pipeline else ()):
            rule(filled)
    return filled


def load_config(path: str | os.PathLike) -> dict:
    """Read a YAML config file, validate it and fill defaults."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SharpgenError(f"{path}: no such config file") from exc
    except yaml.YAMLError as exc:
        raise SharpgenError(f"{path}: not valid YAML ({exc})") from exc
    if raw is not None and not isinstance(raw, dict):
        raise SharpgenError(f"{path}: a config file must be a mapping of keys to values")
    return validate_config(raw)


def _lookup(mapping: Mapping, key: str) -> Any:
    """The value at dotted ``key`` (``normalize.split``) of a nested mapping."""
    for part in key.split("."):
        mapping = mapping[part]
    return mapping


T = TypeVar("T")


def _is_defs(section: str) -> bool:
    return section.startswith("$defs.")


def build_settings(cls: type[T], values: Mapping | None = None, /, **overrides) -> T:
    """The settings dataclass ``cls`` from one section's ``values`` (and ``overrides``), validated by the schema.

    ``cls.SECTION`` names its schema section by dotted key (``gan``, ``ssl.augment``; ``$defs.invert`` for
    settings outside the pipeline config); a key of ``cls.CONFIG_KEYS`` (e.g. ``image_size``) may be given with
    the section's keys and is validated at its own place in the config. Missing keys take the schema's
    defaults; a bad or unknown key raises :class:`SharpgenError` naming ``section.key``.
    """
    if values is not None and not isinstance(values, Mapping):
        raise SharpgenError(f"config key '{cls.SECTION.removeprefix('$defs.')}': expected a mapping of settings")
    values = _as_lists({**(values or {}), **overrides})
    if _is_defs(cls.SECTION):
        name = cls.SECTION.removeprefix("$defs.")
        filled = _fill_and_validate(values, load_schema()["$defs"][name], name, f"{name} setting")
        return _instantiate(cls, filled)
    elsewhere = getattr(cls, "CONFIG_KEYS", {})
    config: dict = {}
    for field, key in elsewhere.items():
        if field in values:
            _nest(config, key, values.pop(field))
    _nest(config, cls.SECTION, values)
    return settings_from_config(cls, validate_config(config, whole_pipeline=False))


def _as_lists(value: Any) -> Any:
    """``value`` with tuples as lists and mappings as dicts, as YAML gives them (``asdict`` of settings round-trips)."""
    if isinstance(value, Mapping):
        return {key: _as_lists(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [_as_lists(item) for item in value]
    return value


def _nest(config: dict, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for part in parents:
        config = config.setdefault(part, {})
    config[last] = value


def settings_from_config(cls: type[T], config: dict) -> T:
    """The settings dataclass ``cls`` of a validated pipeline config (see :func:`build_settings`)."""
    values = dict(_lookup(config, cls.SECTION))
    values.update({field: _lookup(config, key) for field, key in getattr(cls, "CONFIG_KEYS", {}).items()})
    return _instantiate(cls, values)


def _instantiate(cls: type[T], values: Mapping) -> T:
    """``cls`` from filled, validated values: nested sections become nested dataclasses, lists tuples, a
    number where a float is expected a float. Keys that are not fields are consumed elsewhere (``gan.device``)."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for field in dataclasses.fields(cls):
        if field.name in values:
            kwargs[field.name] = _convert(hints[field.name], values[field.name])
    return cls(**kwargs)


def _convert(hint: Any, value: Any) -> Any:
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    nested = [option for option in options if dataclasses.is_dataclass(option)]
    if nested and isinstance(value, Mapping):
        return _instantiate(nested[0], value)
    if isinstance(value, list):
        return tuple(value)
    if float in options and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value
