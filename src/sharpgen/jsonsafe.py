"""Values made fit for strict JSON (RFC 8259 has no NaN or Infinity; browsers' ``JSON.parse`` rejects them)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np


def json_safe(value):
    """A copy of ``value`` that ``json.dumps(..., allow_nan=False)`` accepts: mappings get string keys, tuples
    become lists, numpy scalars Python ones, and NaN/inf become ``None`` (null)."""
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
