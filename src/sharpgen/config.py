"""Pipeline configuration: load YAML, validate against ``config/schema.yaml``, fill defaults.

The schema is the single source of defaults and documentation. Validation errors name the offending key
on one line (``config key 'synthetic.n_patches': -1 is less than the minimum of 1``).
"""

from __future__ import annotations

import copy
import os
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

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


def _describe(error: jsonschema.ValidationError) -> str:
    where = _key_path(error)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unexpected = sorted(set(error.instance) - set(allowed))
        keys = ", ".join(repr(f"{where}.{key}" if where else key) for key in unexpected)
        return f"unknown config key {keys} (allowed here: {', '.join(allowed)})"
    return f"config key '{where or '<top level>'}': {error.message}"


def validate_config(config: dict | None, schema: dict | None = None) -> dict:
    """Validate ``config`` and return a copy with every default filled in.

    Raises :class:`SharpgenError` naming the first offending key (wrong type, out of range, unknown key).
    """
    schema = load_schema() if schema is None else schema
    filled = copy.deepcopy(config or {})
    errors = sorted(
        _DefaultingValidator(schema).iter_errors(filled),
        key=lambda err: (len(err.absolute_path), _key_path(err)),
    )
    if errors:
        raise SharpgenError(_describe(errors[0]))
    check_consistency(filled)
    return filled


PQ_CENTROIDS = 16
"""Centroids of each 4-bit product quantizer of the ``pqfs`` index: it needs at least this many embeddings."""


def check_consistency(config: dict) -> None:
    """Refuse, naming the key, a schema-valid ``config`` whose settings a stage could not honour.

    Only what is certain before any work: image sizes the networks are not built for, physical-unit
    directions of ``resize`` patches (no pixel size in Mm), fewer than two labelled latents per SVM class,
    fewer stored samples than a retrieval evaluation needs, and (synthetic source, whose patch count is
    known) an index too small for its kind.
    """
    from .physics import PHYSICAL_PROPERTIES

    size = config["image_size"]
    if size & (size - 1):
        raise SharpgenError(
            f"config key 'image_size': {size} is not a power of two (the GAN and SSL networks need one)"
        )
    if config["gan"]["architecture"] == "paper" and size != 128:
        raise SharpgenError(f"config key 'image_size': {size}, but gan.architecture 'paper' is for 128 px patches only")
    physical = [name for name in config["directions"]["properties"] if name in PHYSICAL_PROPERTIES]
    if physical and config["normalize"]["mode"] == "resize":
        raise SharpgenError(
            f"config key 'directions.properties': {', '.join(physical)} in physical units need normalize.mode "
            "fixed_scale (resize patches have no pixel size in Mm); use their paper-unit twins"
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


def section(name: str, values: dict[str, Any] | None = None) -> dict:
    """Validate one top-level section (e.g. ``synthetic``) on its own and return it with defaults filled."""
    return validate_config({name: values or {}})[name]
