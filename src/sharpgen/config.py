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


def section(name: str, values: dict[str, Any] | None = None) -> dict:
    """Validate one top-level section (e.g. ``synthetic``) on its own and return it with defaults filled."""
    return validate_config({name: values or {}})[name]
