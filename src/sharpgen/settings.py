"""Shared checks for the settings dataclasses of the sources (``synthetic``, ``jsoc``, ``fits``).

Every helper turns a bad setting into one :class:`SharpgenError` line naming the key as ``section.key``;
:class:`SectionSettings` gives the frozen settings dataclasses their common ``from_mapping`` / ``to_mapping``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, fields
from typing import Any, ClassVar, Self, TypeVar

import numpy as np

from .errors import SharpgenError

T = TypeVar("T")


def reject_unknown(mapping: Mapping, allowed: Iterable[str], section: str) -> None:
    """Raise :class:`SharpgenError` naming every key of ``mapping`` that is not in ``allowed``."""
    allowed = tuple(allowed)
    unknown = sorted(str(key) for key in mapping if key not in allowed)
    if unknown:
        names = ", ".join(repr(f"{section}.{key}") for key in unknown)
        raise SharpgenError(f"unknown config key {names} (allowed here: {', '.join(allowed)})")


def check_number(
    section: str, key: str, value, *, lo: float | None = None, lo_open: bool = False, hi: float | None = None
) -> float:
    """``value`` as a finite float within bounds, else :class:`SharpgenError` naming ``section.key``."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise SharpgenError(f"config key '{section}.{key}': {value!r} is not a number")
    value = float(value)
    if not math.isfinite(value):
        raise SharpgenError(f"config key '{section}.{key}': {value!r} is not finite")
    if lo is not None and (value <= lo if lo_open else value < lo):
        bound = "above" if lo_open else "at least"
        raise SharpgenError(f"config key '{section}.{key}': {value:g} must be {bound} {lo:g}")
    if hi is not None and value > hi:
        raise SharpgenError(f"config key '{section}.{key}': {value:g} must be at most {hi:g}")
    return value


def check_int(section: str, key: str, value, *, lo: int) -> int:
    """``value`` as an int >= ``lo``, else :class:`SharpgenError` naming ``section.key``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise SharpgenError(f"config key '{section}.{key}': {value!r} is not an integer")
    if value < lo:
        raise SharpgenError(f"config key '{section}.{key}': {value} must be at least {lo}")
    return int(value)


def check_str(section: str, key: str, value, *, pattern: str | None = None, hint: str = "") -> str:
    """``value`` stripped, non-empty (and matching ``pattern``), else :class:`SharpgenError` naming the key."""
    if not isinstance(value, str) or not value.strip():
        raise SharpgenError(f"config key '{section}.{key}': {value!r} is not a non-empty string")
    value = value.strip()
    if pattern is not None and not re.fullmatch(pattern, value):
        suffix = f": {hint}" if hint else ""
        raise SharpgenError(f"config key '{section}.{key}': {value!r} is not valid{suffix}")
    return value


def settings_from_mapping(
    cls: type[T], mapping: Mapping | None, section: str, convert: Callable[[dict], dict] | None = None
) -> T:
    """Build the settings dataclass ``cls`` from a config section (missing keys take their defaults).

    ``None`` means an empty section; anything but a mapping, or a key that is not a field of ``cls``, raises
    :class:`SharpgenError` naming ``section``. ``convert`` may rewrite the plain dict of values (e.g. build
    nested settings) before ``cls(**values)`` validates them.
    """
    mapping = {} if mapping is None else mapping
    if not isinstance(mapping, Mapping):
        raise SharpgenError(f"config key '{section}': expected a mapping of settings")
    reject_unknown(mapping, (f.name for f in fields(cls)), section)
    values = dict(mapping)
    if convert is not None:
        values = convert(values)
    return cls(**values)


def settings_to_mapping(settings: Any) -> dict:
    """Plain (YAML/JSON-like) mapping of a settings dataclass: :func:`dataclasses.asdict`, tuples as lists."""
    return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(settings).items()}


class SectionSettings:
    """Mixin for a frozen settings dataclass read from the config section named by ``section``.

    Subclasses set ``section`` and may override :meth:`convert_values` to build nested settings.
    """

    section: ClassVar[str]

    @classmethod
    def convert_values(cls, values: dict) -> dict:
        """Hook for :meth:`from_mapping`: rewrite the plain dict of values before validation (default: as is)."""
        return values

    @classmethod
    def from_mapping(cls, mapping: Mapping | None) -> Self:
        """Build settings from the config section (missing keys take their defaults).

        Raises :class:`SharpgenError` naming the key for an unknown key or a bad value.
        """
        return settings_from_mapping(cls, mapping, cls.section, cls.convert_values)

    def to_mapping(self) -> dict:
        """Plain (YAML/JSON-like) mapping of the settings, the inverse of :meth:`from_mapping`."""
        return settings_to_mapping(self)
