"""The one table of measured properties: name, unit, description, plot label, log scale, physical twin.

Paper-unit properties are measured on the normalized patch (1 unit of field = 1 kG, lengths in pixels or
fractions of the patch); physical ones on the field in G with the pixel size in Mm
(:mod:`sharpgen.physics`). Two quantities are measured in both systems: ``tuf`` [kG] and ``usflux`` [Mx],
``psep`` [patch diagonals] and ``psep_mm`` [Mm]; on ``fixed_scale`` patches each is an exact unit conversion
of its *twin* (:func:`twin_factor`), so a request may name either and steer along whichever has a direction.
The CLI, the explorer, figures and evaluation read names, units and labels from here; the schema's
``directions.properties`` enum lists exactly the :func:`steerable` names (tests/test_requests.py checks).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import SharpgenError
from .units import GAUSS_PER_NORMALIZED_UNIT, pixel_area_cm2


@dataclass(frozen=True)
class Property:
    """One measured property. ``unit`` is shown beside values; ``label`` is a plot axis label; ``log_scale``:
    the values span decades (histograms and distances use their logarithm); ``twin``: the same quantity in
    the other unit system; ``steerable``: it may get a latent direction (``directions.properties``)."""

    name: str
    unit: str
    description: str
    label: str
    log_scale: bool = False
    twin: str | None = None
    steerable: bool = True
    paper_units: bool = True


_ROWS = (
    Property("tuf", "kG", "total unsigned field: mean |B| over the patch", "TUF: mean |B| over the patch [kG]",
             log_scale=True, twin="usflux"),
    Property("tpf", "kG", "mean field of the positive pixels", "TPF: mean B where B > 0 [kG]", log_scale=True),
    Property("tnf", "kG", "mean |field| of the negative pixels", "TNF: mean |B| where B < 0 [kG]", log_scale=True),
    Property("psep", "× diagonal", "distance of the strong positive and negative centroids / patch diagonal",
             "PSEP: pole separation [patch diagonals]", twin="psep_mm"),
    Property("tilt_paper", "deg", "tilt of the bipole axis (the paper's convention)", "tilt (paper) [deg]"),
    Property("area", "fraction", "fraction of strong-field (|B| > threshold) pixels",
             "area: fraction of pixels with |B| > 150 G", log_scale=True),
    Property("eflux", "kG px²", "net strong-field flux (normalized units)", "net strong flux [kG px²]"),
    Property("lead_pol", "px", "column of the positive centroid minus that of the negative one",
             "positive - negative centroid column [px]"),
    Property("r_paper", "kG px", "unsigned field near the polarity inversion line (the paper's R)",
             "R: sum |B| near the PIL [kG px]", log_scale=True),
    Property("peak", "kG", "strongest |B| of the patch (1 = the 1 kG clip; sunspot umbrae reach it)",
             "peak |B| of the patch [kG]", steerable=False),
    Property("usflux", "Mx", "unsigned flux", "unsigned flux [Mx]", log_scale=True, twin="tuf", paper_units=False),
    Property("pos_flux", "Mx", "positive strong-field flux", "positive flux [Mx]", log_scale=True,
             paper_units=False),
    Property("neg_flux", "Mx", "negative strong-field flux (absolute)", "negative flux [Mx]", log_scale=True,
             paper_units=False),
    Property("imbalance", "", "(positive - negative) / (positive + negative) strong flux", "flux imbalance",
             paper_units=False),
    Property("psep_mm", "Mm", "polarity separation", "pole separation [Mm]", twin="psep", paper_units=False),
    Property("tilt_joy", "deg", "Joy's-law tilt (northern convention)", "Joy's-law tilt [deg]", paper_units=False),
    Property("r_value", "", "Schrijver's R on the patch pixels (log10 of a flux in Mx)", "R_VALUE [log10 Mx]",
             paper_units=False),
    Property("pil_length_mm", "Mm", "length of the strong-field polarity inversion line", "PIL length [Mm]",
             log_scale=True, paper_units=False),
    Property("lead_sign", "", "sign of the leading polarity (+1 positive, -1 negative)", "leading polarity sign",
             steerable=False, paper_units=False),
)  # fmt: skip

PROPERTIES: dict[str, Property] = {row.name: row for row in _ROWS}
"""Every measured property by name, in the order tables and the schema list them."""

HISTOGRAM_PROPERTIES = ("tuf", "psep", "r_paper", "tpf", "tnf", "area")
"""The paper's properties compared real vs. generated in its property-distribution figure (fig. 3)."""
EVALUATED_PROPERTIES = ("tuf", "psep", "r_paper", "tpf", "tnf")
"""The paper's properties scored query vs. match in the retrieval evaluation."""


def steerable() -> list[str]:
    """Names of the properties that may get a latent direction, in table order."""
    return [row.name for row in _ROWS if row.steerable]


def twin_of(name: str) -> str | None:
    """The same quantity in the other unit system (``tuf`` <-> ``usflux``, ``psep`` <-> ``psep_mm``), or None."""
    return PROPERTIES[name].twin if name in PROPERTIES else None


def quantity(name: str) -> str:
    """The paper-unit name of the quantity ``name`` measures (``usflux`` -> ``tuf``); other names unchanged."""
    row = PROPERTIES.get(name)
    return row.twin if row is not None and row.twin and not row.paper_units else name


def check_names(names: Iterable[str], what: str, allowed: Iterable[str] | None = None) -> None:
    """Refuse a name that is not a property (``allowed``: the steerable ones by default), listing the valid ones."""
    allowed = list(steerable() if allowed is None else allowed)
    unknown = [name for name in names if name not in allowed]
    if unknown:
        raise SharpgenError(f"{what} {', '.join(map(repr, unknown))}: unknown property (valid: {', '.join(allowed)})")


def twin_factor(paper_name: str, image_size: int, pixel_mm: float) -> float:
    """Physical value of one paper unit of ``paper_name`` (``tuf``: Mx per kG, ``psep``: Mm per patch diagonal)
    on ``image_size``-px ``fixed_scale`` patches of ``pixel_mm`` Mm pixels."""
    if paper_name == "tuf":
        return GAUSS_PER_NORMALIZED_UNIT * pixel_area_cm2(pixel_mm, pixel_mm) * image_size * image_size
    if paper_name == "psep":
        return math.sqrt(2.0) * image_size * pixel_mm
    raise ValueError(f"{paper_name!r} has no physical twin")
