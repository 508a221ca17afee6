"""sharpgen: a physically interpretable generative model of solar active regions (SDO/HMI SHARP).

In a notebook: ``run = sharpgen.open_run("results/default")``, ``run.generate(usflux=3e22 * u.Mx)``,
``run.query(...)``, ``sharpgen.measure(map_or_path)`` (:mod:`sharpgen.api`, imported on first use: importing
sharpgen itself loads neither PyTorch nor SunPy).
"""

__version__ = "0.1.0"

_API = ("Generated", "Run", "measure", "open_run", "property_unit")


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'sharpgen' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
