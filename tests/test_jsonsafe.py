import json
import math

import numpy as np

from sharpgen.jsonsafe import json_safe


def test_json_safe_output_passes_strict_json_and_keeps_finite_values():
    value = {
        1: np.float32(2.5),
        "nan": float("nan"),
        "nested": ({"inf": np.float64(np.inf), "n": np.int64(3)}, [math.inf, -1.0, "text", None, True]),
    }
    safe = json_safe(value)
    assert json.loads(json.dumps(safe, allow_nan=False)) == {
        "1": 2.5,
        "nan": None,
        "nested": [{"inf": None, "n": 3}, [None, -1.0, "text", None, True]],
    }
    assert type(safe["nested"][0]["n"]) is int
