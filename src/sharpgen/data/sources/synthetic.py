"""Physics-based synthetic SHARP active regions (research/physics.md sections 1, 5, 6 and 7.2).

Each region is drawn as a :class:`RegionSpec` (the ground truth: class, hemisphere, latitude, total
unsigned flux, bipole separation, Joy tilt, Hale orientation, and every spot and plage component), then
rendered as Br in G on a native SHARP CEA grid (0.03 heliographic degrees = 0.3644 Mm per pixel):

* spots: flat umbral core plus a penumbral fall, peak field from ``B_max(A) = 3700 A/(A+66) G`` (A = spot
  area in millionths of a hemisphere, capped at 3500 G); the leading polarity holds 1-2 compact spots, the
  following polarity 2-6 smaller, weaker ones; delta regions get an opposite-polarity umbra inside a
  penumbra, big regions small bipolar pore pairs around their spots;
* plage: elliptical Gaussian envelopes (compact 60-160 G, decayed 30-70 G peak) modulated by a texture of
  fragments along the lanes of a 20-30 Mm cellular (supergranular) pattern; opposite plage cancels where
  it overlaps, leaving a weak corridor along the polarity inversion line;
* background: a sparse mixed-polarity quiet network and white noise of ``noise_gauss`` G per pixel.

A fraction of the regions is observed several times, as a SHARP series is (:class:`SeriesSettings`): the
same HARP number, T_REC ``cadence_hours`` apart, the region evolved a little between observations
(:func:`evolve_region`: emergence or decay, drift, rotation, solar rotation in longitude) and rendered with
fresh noise over a plage texture and network pattern that renew (the fine pattern of a SHARP hours later is
not the same pixel for pixel): the network's cells in about a day, the plage fragments in hours.

Arrays are ``(NAXIS2, NAXIS1)``: row 0 is the southern edge, x grows westward (Carrington longitude), so
the leading polarity sits at larger x. Units: field in G, lengths in Mm, flux in Mx, angles in degrees.
:func:`generate_synthetic` writes one RICE-compressed FITS file per region plus ``manifest.parquet``;
one seed makes the whole set byte-for-byte reproducible, whatever the number of worker processes.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from ... import __version__
from ...atomic import write_parquet_atomic
from ...config import build_settings
from ...errors import SharpgenError
from ...progress import progress_bar
from ...units import CEA_PIXEL_DEG, CEA_PIXEL_MM, CM2_PER_MM2, RSUN_REF_MM
from ..fitsio import BUNIT_GAUSS, cea_cards, earth_observer, write_sharp_fits
from .validate import MANIFEST_NAME

# --- constants -------------------------------------------------------------------------------------------

CLASS_NAMES = ("alpha", "beta", "multipolar", "delta")
"""Magnetic classes, in the order of ``class_fractions``."""

PIXEL_AREA_CM2 = CEA_PIXEL_MM**2 * CM2_PER_MM2
"""Area of one native CEA pixel, in cm^2 (about 1.328e15)."""

MSH_MM2 = 2.0 * math.pi * RSUN_REF_MM**2 * 1.0e-6
"""One millionth of the solar hemisphere, in Mm^2 (about 3.04)."""

JOY_AMPLITUDE_DEG = 32.1
"""Joy's law: mean tilt = 32.1 deg * sin(latitude) (Stenflo & Kosovichev 2012)."""

HALE_REVERSED_FRACTION = 0.04
"""Fraction of regions with reversed east-west polarity orientation (Wang & Sheeley 1989)."""

SEPARATION_RANGE_MM = (5.0, 150.0)
"""Floor and cap of the bipole separation, in Mm."""

FIELD_LIMIT_GAUSS = 4000.0
"""Rendered fields are clipped to +-4000 G."""

TEXTURE_LIMIT = 1.6
"""Network/plage textures are soft-limited to this many times their mean (caps plage near 1-1.5 kG)."""

LANE_SPACING_PER_CELL = 5.0
"""The lane pattern comes from a random field with ``cell_mm / 5`` spacing (zero contours ~ cells apart)."""

PLAGE_LANE_WIDTH = 0.9
"""Half-width of plage lanes, in units of the lane field's standard deviation."""

NETWORK_LANE_WIDTH = 0.3
"""Half-width of quiet-network lanes, in units of the lane field's standard deviation."""

GRAIN_DEX = 0.5
"""Standard deviation of the log of the plage fragmentation field (natural log units)."""

PLAGE_FLOOR = 0.3
"""The plage texture (mean 1 before this) is lowered by this and clipped at 0: voids between fragments."""

CLUSTER_SPACING_MM = 4.0
"""Plage fragments cluster on this scale (a log-normal modulation correlated over ~4 Mm)."""

CLUSTER_DEX = 1.1
"""Standard deviation of the log of the plage cluster modulation (natural log units)."""

POLARITY_SPACING_PER_CELL = 1.5
"""The quiet-network polarity changes sign over ~1.5 cells."""

PLAGE_OUTWARD = (0.5, 0.6)
"""Compact / decayed plage blobs sit this many of their major sigmas further out from the bipole centre
than their polarity (limits overlap, hence cancellation, with the other polarity)."""

SATELLITE_RATE = 2.0
"""Mean number of small bipolar pore pairs near the spots, per dex of total flux above the next."""

SATELLITE_FROM_LOG10 = 21.7
"""Regions below ``10**21.7`` Mx (5e21 Mx) get no satellite pore pairs."""

MAX_PLAGE_BOOST = 3.0
"""Largest factor by which a plage polarity is rescaled to make up for flux cancelled where it overlaps
the other polarity."""

NETWORK_GRAIN_THRESHOLD = 1.0
"""Quiet-network elements are where the unit-variance grain field exceeds this (about 16 % of a lane)."""

NETWORK_GAIN = 4.0
"""Network field = ``network_gauss * NETWORK_GAIN * lane * (grain - threshold)``: 1-5 x network_gauss."""

PLAGE_PEAK_GAUSS = (60.0, 160.0)
"""Range of the envelope peak of compact plage, in G (textured: fragments reach a few hundred G)."""

DIFFUSE_PEAK_GAUSS = (30.0, 70.0)
"""Range of the envelope peak of wide decayed plage, in G."""

DIFFUSE_FRACTION = (0.4, 0.7)
"""Range of the fraction of a polarity's plage flux in wide decayed plage."""

PENUMBRA_FRACTION = 0.4
"""Penumbral plateau of a spot profile as a fraction of its peak field."""

PENUMBRA_RATIO = (2.0, 2.5)
"""Range of the penumbra/umbra radius ratio of spot profiles."""

SPOT_FRACTION = (0.06, 0.12, 0.3)
"""Leading-polarity flux fraction in spots: (value at 1e21 Mx, increase per dex, maximum), each +-30 %."""

PLAGE_EXTENT_SIGMA = 2.0
"""The patch encloses plage envelopes out to this many sigma (spots out to twice their penumbral radius)."""

MARGIN_FRACTION = (0.03, 0.12)
"""Range of the extra margin on each side, as a fraction of the region's extent along that axis."""

MARGIN_MM = (2.0, 6.0)
"""Range of the fixed extra margin on each side, in Mm."""

MIN_SPOT_FLUX_MX = 4.0e19
"""Smallest flux put into a spot or pore; smaller budgets stay in plage."""

HARPNUM_OFFSET = 100_000
"""Synthetic HARPNUMs are ``HARPNUM_OFFSET + index + 1``: far above real HARP numbers, never confused."""

NOAA_OFFSET = 50_000
"""Spotted synthetic regions get ``NOAA_AR = NOAA_OFFSET + index + 1``; spotless ones get 0 (unnumbered)."""

FIRST_T_REC = datetime(2010, 5, 1)
"""T_REC (TAI) of region 0; region i is first observed ``i * RECORD_STEP`` later (all in solar cycle 24)."""

RECORD_STEP = timedelta(hours=2)
"""Time between the first observations of consecutive synthetic regions (a multiple of the 720 s SHARP cadence)."""

EVOLUTION_FLUX_DEX = 0.1
"""In a day, every component's flux changes by a factor ``10**N(0, 0.1)`` (emergence or decay, ~25 %)."""

EVOLUTION_ROTATION_DEG = 6.0
"""In a day, the region rotates about its flux centroid by ``N(0, 6)`` degrees."""

EVOLUTION_DRIFT_MM = 2.0
"""In a day, the region drifts in the patch by ``N(0, 2)`` Mm along each axis, and each component by a further
``N(0, EVOLUTION_DRIFT_MM / 2)``."""

ROTATION_DEG_PER_HOUR = 13.2 / 24.0
"""Synodic solar rotation: the longitude from central meridian grows by 13.2 degrees a day."""

SERIES_STREAM = 0x5E12E5
"""Which regions are observed as a series is drawn from ``default_rng([seed, SERIES_STREAM])``."""

MANIFEST_COLUMNS = (
    "record", "file", "status", "reason", "harpnum", "noaa_ar", "t_rec", "naxis1", "naxis2", "cdelt1_deg",
    "lat_fwt", "lon_fwt", "hemisphere", "ar_class", "total_flux_mx", "pos_flux_mx", "neg_flux_mx",
    "separation_mm", "tilt_deg", "hale_reversed", "seed", "region", "observation",
)  # fmt: skip
"""Columns of ``manifest.parquet``, one row per record."""


# --- settings --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassFractions:
    """Mix of magnetic classes (schema ``synthetic.class_fractions``; the config checks that they sum to 1)."""

    SECTION: ClassVar[str] = "synthetic.class_fractions"

    alpha: float
    beta: float
    multipolar: float
    delta: float

    def probabilities(self) -> np.ndarray:
        """Fractions as a float64 array in :data:`CLASS_NAMES` order, renormalized to sum exactly to 1."""
        p = np.array([getattr(self, name) for name in CLASS_NAMES], dtype=np.float64)
        return p / p.sum()


@dataclass(frozen=True)
class SeriesSettings:
    """Regions observed several times (schema ``synthetic.series``): a ``fraction`` of the regions gets
    ``observations`` records ``cadence_hours`` apart; 0 = one record per region.

    A later observation's texture is partly renewed (:func:`renew_texture`): its texture fields are correlated
    ``exp(-t / lifetime)`` with those of the observation ``t`` hours before, with two e-folding times in hours.
    ``network_lifetime_hours`` for the cellular lane pattern and the network's polarity: supergranular cells,
    whose flows arrange the network, live about a day (1-2 d, Rieutord & Rincon 2010, Living Rev. Sol. Phys.
    7, 2). ``fragment_lifetime_hours`` for the plage fragments (the ~4 Mm clusters and the grain): magnetic
    elements random-walk, in plage with a diffusivity D of ~100 km^2/s (~250 in the quiet network), and
    ``L^2 / (4 D)`` for L = 4 Mm is 11 h (4 h); the sub-Mm grain renews faster still, but is below a normalized
    pixel. The large-scale polarity layout evolves only as :func:`evolve_region` says.
    """

    SECTION: ClassVar[str] = "synthetic.series"

    fraction: float
    observations: int
    cadence_hours: float
    network_lifetime_hours: float
    fragment_lifetime_hours: float

    def lifetimes_hours(self) -> tuple[float, float, float, float]:
        """E-folding times (h) of the :func:`texture_fields` in their order: lanes, grain, clusters, polarity."""
        network, fragments = self.network_lifetime_hours, self.fragment_lifetime_hours
        return network, fragments, fragments, network


@dataclass(frozen=True)
class SyntheticSettings:
    """Settings of the synthetic source (schema section ``synthetic``; see :func:`sharpgen.config.build_settings`)."""

    SECTION: ClassVar[str] = "synthetic"

    n_patches: int
    class_fractions: ClassFractions
    flux_log10_median_mx: float
    flux_sigma_dex: float
    flux_range_mx: tuple[float, float]
    noise_gauss: float
    max_naxis: int
    series: SeriesSettings


# --- ground truth ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spot:
    """A sunspot or pore centred at ``(x_mm, y_mm)`` from the patch centre (x west, y north).

    Profile: ``(B0 - Bp) exp(-(r/r_u)^4) + Bp exp(-(r/r_p)^3)`` with ``Bp = PENUMBRA_FRACTION * B0``: a
    flat umbral core of radius ``umbra_mm`` and a penumbra falling to ``Bp / e`` at ``penumbra_mm``;
    scaled to carry ``flux_mx``.
    """

    x_mm: float
    y_mm: float
    sign: int
    flux_mx: float
    peak_gauss: float
    umbra_mm: float
    penumbra_mm: float


@dataclass(frozen=True)
class Plage:
    """An elliptical Gaussian plage envelope, peak ``flux / (2 pi s_major s_minor)``, textured when rendered.

    ``angle_deg`` is the major axis direction, counter-clockwise from west.
    """

    x_mm: float
    y_mm: float
    sign: int
    flux_mx: float
    sigma_major_mm: float
    sigma_minor_mm: float
    angle_deg: float


@dataclass(frozen=True)
class RegionSpec:
    """Ground-truth parameters of one synthetic active region (all that rendering needs besides noise).

    Flux in Mx, lengths in Mm, angles in degrees, fields in G. ``latitude_deg``/``lon_fwt_deg`` are the
    flux-weighted Stonyhurst position of the region (LAT_FWT/LON_FWT); ``centroid_mm`` is the flux-weighted
    centre relative to the patch centre. ``separation_mm``/``tilt_deg`` describe the main bipole (tilt in
    Joy's convention: positive when the leading polarity is closer to the equator, in both hemispheres).
    """

    ar_class: str
    hemisphere: int
    latitude_deg: float
    lon_fwt_deg: float
    total_flux_mx: float
    imbalance: float
    separation_mm: float
    tilt_deg: float
    hale_reversed: bool
    leading_sign: int
    naxis1: int
    naxis2: int
    centroid_mm: tuple[float, float]
    spots: tuple[Spot, ...]
    plages: tuple[Plage, ...]
    network_gauss: float
    network_cell_mm: float
    noise_gauss: float

    @property
    def center_latitude_deg(self) -> float:
        """Latitude of the patch centre (CRVAL2), in degrees."""
        return self.latitude_deg - self.centroid_mm[1] / CEA_PIXEL_MM * CEA_PIXEL_DEG

    @property
    def center_longitude_deg(self) -> float:
        """Stonyhurst longitude of the patch centre (from central meridian), in degrees."""
        return self.lon_fwt_deg - self.centroid_mm[0] / CEA_PIXEL_MM * CEA_PIXEL_DEG


# --- drawing ---------------------------------------------------------------------------------------------


def spot_peak_gauss(area_msh: float) -> float:
    """Peak umbral field ``3700 A / (A + 66)`` G of a spot of area ``A`` MSH, capped at 3500 G."""
    return min(3700.0 * area_msh / (area_msh + 66.0), 3500.0)


def separation_mm(flux_mx: float, scatter_dex: float = 0.0) -> float:
    """Bipole separation ``(flux / 1e20 Mx)^0.8`` Mm times ``10**scatter_dex``, kept within 5-150 Mm."""
    d = (flux_mx / 1.0e20) ** 0.8 * 10.0**scatter_dex
    return float(np.clip(d, *SEPARATION_RANGE_MM))


def tilt_sigma_deg(flux_mx: float) -> float:
    """Scatter of the tilt around Joy's law: 25 deg at 1e21 Mx falling to 12 deg at 1e22 Mx (8-30 deg)."""
    return float(np.clip(25.0 - 13.0 * (math.log10(flux_mx) - 21.0), 8.0, 30.0))


def draw_tilt_deg(rng: np.random.Generator, latitude_deg: float, flux_mx: float) -> float:
    """Joy tilt ``32.1 sin|lat| + N(0, sigma(flux))`` in degrees, clipped to +-85 deg."""
    mean = JOY_AMPLITUDE_DEG * math.sin(math.radians(abs(latitude_deg)))
    return float(np.clip(mean + rng.normal(0.0, tilt_sigma_deg(flux_mx)), -85.0, 85.0))


def draw_total_flux(rng: np.random.Generator, settings: SyntheticSettings) -> float:
    """Total unsigned flux in Mx: log-normal around the configured median, clipped to ``flux_range_mx``."""
    log_flux = rng.normal(settings.flux_log10_median_mx, settings.flux_sigma_dex)
    lo, hi = settings.flux_range_mx
    return float(np.clip(10.0**log_flux, lo, hi))


def make_spot(rng: np.random.Generator, x_mm: float, y_mm: float, sign: int, flux_mx: float,
              peak_gauss: float | None = None, ratio: float | None = None) -> Spot:  # fmt: skip
    """A spot carrying ``flux_mx`` whose peak field follows ``B_max(area)`` (or ``peak_gauss`` if given).

    The penumbra/umbra radius ratio is drawn in :data:`PENUMBRA_RATIO` unless ``ratio`` is given; the peak
    gets +-10 % scatter and a floor of 1100 G (pores at HMI resolution).
    """
    ratio = rng.uniform(*PENUMBRA_RATIO) if ratio is None else ratio
    scatter = rng.uniform(0.9, 1.1)
    # flux = 2 pi B0 r_u^2 [(1 - f) G(1/2)/4 + f ratio^2 G(2/3)/3] for the profile of :class:`Spot`
    f = PENUMBRA_FRACTION
    shape = 2.0 * math.pi * ((1.0 - f) * 0.4431 + f * ratio**2 * 0.4514) * CM2_PER_MM2
    b0 = 2500.0 if peak_gauss is None else peak_gauss
    for _ in range(6 if peak_gauss is None else 1):
        umbra = math.sqrt(flux_mx / (shape * b0))
        if peak_gauss is None:
            b0 = max(spot_peak_gauss(math.pi * (ratio * umbra) ** 2 / MSH_MM2), 1100.0) * scatter
    umbra = math.sqrt(flux_mx / (shape * b0))
    return Spot(float(x_mm), float(y_mm), int(sign), float(flux_mx), float(b0), umbra, ratio * umbra)


def make_plage(rng: np.random.Generator, x_mm: float, y_mm: float, sign: int, flux_mx: float,
               peak_range_gauss: tuple[float, float], axis_deg: float, spread_deg: float = 20.0,
               ratio_range: tuple[float, float] = (0.35, 0.9)) -> Plage:  # fmt: skip
    """A plage envelope carrying ``flux_mx``.

    Peak field drawn in ``peak_range_gauss`` (G), minor/major axis ratio in ``ratio_range``, major axis at
    ``axis_deg`` +- ``spread_deg`` (normal scatter, degrees counter-clockwise from west).
    """
    peak = rng.uniform(*peak_range_gauss)
    axis_ratio = rng.uniform(*ratio_range)
    major = math.sqrt(flux_mx / (2.0 * math.pi * peak * axis_ratio * CM2_PER_MM2))
    angle = (axis_deg + rng.normal(0.0, spread_deg)) % 180.0
    return Plage(float(x_mm), float(y_mm), int(sign), float(flux_mx), major, axis_ratio * major, angle)


def _split(rng: np.random.Generator, total: float, n: int, concentration: float = 2.0) -> np.ndarray:
    """Split ``total`` into ``n`` random positive parts (Dirichlet), largest first."""
    if n <= 1:
        return np.array([total])
    return np.sort(rng.dirichlet(np.full(n, concentration)))[::-1] * total


def spot_fraction(rng: np.random.Generator, flux_mx: float) -> float:
    """Fraction of a leading polarity's flux in spots (:data:`SPOT_FRACTION`): ~0.18 at 1e22 Mx, <= 0.3."""
    at_1e21, per_dex, most = SPOT_FRACTION
    base = at_1e21 + per_dex * (math.log10(flux_mx) - 21.0)
    return float(np.clip(base * rng.uniform(0.7, 1.3), 0.0, most))


def bipole(rng: np.random.Generator, flux_mx: float, center: tuple[float, float], sep_mm: float,
           axis_deg: float, leading_sign: int, imbalance: float, lead_spot_frac: float,
           n_lead: int, follow_spots: bool = True) -> tuple[list[Spot], list[Plage]]:  # fmt: skip
    """Components of one bipole of total unsigned flux ``flux_mx``.

    ``axis_deg`` points from the following to the leading polarity (counter-clockwise from west);
    ``imbalance`` = (lead - follow)/(lead + follow). Leading: ``n_lead`` compact spots holding
    ``lead_spot_frac`` of its flux. Following: 2-6 smaller spots holding 0.3-0.7 times that fraction (none
    when ``follow_spots`` is false), spread further. Each polarity's remaining flux is plage: compact
    blobs (:data:`PLAGE_PEAK_GAUSS`) stretched along the axis near the polarity, and a fraction
    :data:`DIFFUSE_FRACTION` in wide, weak decayed plage (:data:`DIFFUSE_PEAK_GAUSS`) trailing it,
    stretched east-west as differential rotation shears it.
    """
    ux, uy = math.cos(math.radians(axis_deg)), math.sin(math.radians(axis_deg))
    lead_flux = 0.5 * flux_mx * (1.0 + imbalance)

    def at(along: float, across: float) -> tuple[float, float]:
        """Position in Mm of a point ``along``/``across`` the axis, in units of the separation."""
        return (center[0] + (along * ux - across * uy) * sep_mm,
                center[1] + (along * uy + across * ux) * sep_mm)  # fmt: skip

    spots: list[Spot] = []
    plages: list[Plage] = []
    polarities = (
        (leading_sign, lead_flux, lead_spot_frac, n_lead, 0.5, 0.06, (1, 4)),
        (-leading_sign, flux_mx - lead_flux, lead_spot_frac * rng.uniform(0.3, 0.7) * follow_spots,
         int(rng.integers(2, 7)), -0.5, 0.14, (2, 5)),
    )  # fmt: skip
    for sign, flux, frac, n_spots, along, spread, n_plage in polarities:
        spot_flux = frac * flux if frac * flux >= MIN_SPOT_FLUX_MX else 0.0
        n_spots = min(n_spots, max(int(spot_flux // MIN_SPOT_FLUX_MX), 1))
        if spot_flux > 0.0:
            for part in _split(rng, spot_flux, n_spots, 3.0):
                x, y = at(along + rng.normal(0.03 * sign * leading_sign, spread), rng.normal(0.0, spread))
                spots.append(make_spot(rng, x, y, sign, part))
        plage_flux = flux - spot_flux
        diffuse = rng.uniform(*DIFFUSE_FRACTION) * plage_flux
        for part in _split(rng, plage_flux - diffuse, int(rng.integers(*n_plage))):
            blob = make_plage(rng, 0.0, 0.0, sign, part, PLAGE_PEAK_GAUSS, axis_deg)
            outward = math.copysign(PLAGE_OUTWARD[0] * blob.sigma_major_mm / sep_mm, along)
            x, y = at(along + outward + rng.normal(-0.05, 0.12 + spread),
                      rng.normal(0.0, 0.05 + 0.5 * spread))  # fmt: skip
            plages.append(replace(blob, x_mm=x, y_mm=y))
        blob = make_plage(rng, 0.0, 0.0, sign, diffuse, DIFFUSE_PEAK_GAUSS, 0.0, 10.0, (0.4, 0.7))
        outward = math.copysign(PLAGE_OUTWARD[1] * blob.sigma_major_mm / sep_mm, along)
        x, y = at(along + outward + rng.normal(0.0, 0.1), rng.normal(0.0, 0.08))
        plages.append(replace(blob, x_mm=x, y_mm=y))
    return spots, plages


def _plage_flux(plages: list[Plage], sign: int) -> float:
    return sum(p.flux_mx for p in plages if p.sign == sign)


def add_delta_umbra(rng: np.random.Generator, spots: list[Spot], plages: list[Plage]
                    ) -> tuple[list[Spot], list[Plage]]:  # fmt: skip
    """Add a compact opposite-polarity umbra 3-10 Mm from the biggest spot, inside its penumbra (delta).

    Its flux, 0.1-0.3 of the host's (at most 80 % of that polarity's plage), is taken from the plage of
    its own polarity, so the totals are unchanged. Peak 1800-2800 G, penumbra/umbra ratio 1.6.
    """
    host = max(spots, key=lambda s: s.flux_mx)
    sign = -host.sign
    flux = min(rng.uniform(0.1, 0.3) * host.flux_mx, 0.8 * _plage_flux(plages, sign))
    distance = min(rng.uniform(3.0, 10.0), 0.8 * host.penumbra_mm)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    x, y = host.x_mm + distance * math.cos(angle), host.y_mm + distance * math.sin(angle)
    umbra = make_spot(rng, x, y, sign, flux, peak_gauss=rng.uniform(1800.0, 2800.0), ratio=1.6)
    return [*spots, umbra], _take_from_plage(plages, sign, flux)


def add_satellites(rng: np.random.Generator, spots: list[Spot], plages: list[Plage], flux_mx: float
                   ) -> tuple[list[Spot], list[Plage]]:  # fmt: skip
    """Add small bipolar pore pairs (moving magnetic features) around the spots of a big region.

    Their number is Poisson with mean :data:`SATELLITE_RATE` per dex of total flux above
    ``10**SATELLITE_FROM_LOG10`` Mx; each pair sits 1-2 penumbral radii from a spot (chosen by flux),
    members 1.5-3 Mm apart with 4e19-1.5e20 Mx each, taken from the plage of both polarities. They put
    strong opposite fields next to each other, so big regions get a nonzero R_VALUE more often.
    """
    excess_dex = max(0.0, math.log10(flux_mx) - SATELLITE_FROM_LOG10)
    n_pairs = int(rng.poisson(SATELLITE_RATE * excess_dex)) if spots else 0
    hosts = list(spots)
    weights = np.array([s.flux_mx for s in hosts])
    for _ in range(n_pairs):
        host = hosts[int(rng.choice(len(hosts), p=weights / weights.sum()))]
        part = rng.uniform(MIN_SPOT_FLUX_MX, 1.5e20)
        if min(_plage_flux(plages, 1), _plage_flux(plages, -1)) < 2.0 * part:
            break
        where, turn = rng.uniform(0.0, 2.0 * math.pi, size=2)
        distance, half = host.penumbra_mm * rng.uniform(1.0, 2.0), 0.5 * rng.uniform(1.5, 3.0)
        cx, cy = host.x_mm + distance * math.cos(where), host.y_mm + distance * math.sin(where)
        for sign in (1, -1):
            x, y = cx + sign * half * math.cos(turn), cy + sign * half * math.sin(turn)
            spots.append(make_spot(rng, x, y, sign, part))
            plages = _take_from_plage(plages, sign, part)
    return spots, plages


def _take_from_plage(plages: list[Plage], sign: int, flux_mx: float) -> list[Plage]:
    """Remove ``flux_mx`` from the plage of polarity ``sign`` (proportionally, keeping the peak field)."""
    own = sum(p.flux_mx for p in plages if p.sign == sign)
    if own <= 0.0:
        return plages
    keep = max(1.0 - flux_mx / own, 0.05)
    out = []
    for p in plages:
        if p.sign == sign:
            root = math.sqrt(keep)
            p = Plage(p.x_mm, p.y_mm, p.sign, p.flux_mx * keep, p.sigma_major_mm * root,
                      p.sigma_minor_mm * root, p.angle_deg)  # fmt: skip
        out.append(p)
    return out


def _components(rng: np.random.Generator, ar_class: str, flux: float, latitude: float, leading_sign: int
                ) -> tuple[list[Spot], list[Plage], float, float, float]:  # fmt: skip
    """Spots and plage of one region (centred near the origin), and its main bipole's separation, tilt and
    imbalance."""
    hemisphere = 1 if latitude >= 0 else -1
    main_flux = flux * rng.uniform(0.5, 0.75) if ar_class == "multipolar" else flux
    sep = separation_mm(main_flux, rng.normal(0.0, 0.15))
    tilt = draw_tilt_deg(rng, latitude, main_flux)
    axis = -hemisphere * tilt  # leading polarity equatorward for a positive tilt
    frac = spot_fraction(rng, main_flux)
    if ar_class == "alpha":
        imbalance = rng.uniform(0.2, 0.5)
        frac = max(frac, rng.uniform(0.2, 0.4))
        spots, plages = bipole(rng, flux, (0.0, 0.0), sep, axis, leading_sign, imbalance, frac, 1, False)
        spots, plages = add_satellites(rng, spots, plages, flux)
        return spots, plages, sep, tilt, imbalance
    imbalance = float(np.clip(rng.normal(0.0, 0.1), -0.3, 0.3))
    n_lead = 1 if ar_class == "delta" or rng.random() < 0.65 else 2
    if ar_class == "delta":
        frac = max(frac, rng.uniform(0.25, 0.4))
    spots, plages = bipole(rng, main_flux, (0.0, 0.0), sep, axis, leading_sign, imbalance, frac, n_lead)
    if ar_class == "delta" and spots:
        spots, plages = add_delta_umbra(rng, spots, plages)
    if ar_class == "multipolar":
        n_extra = int(rng.integers(1, 3))
        for part in _split(rng, flux - main_flux, n_extra):
            radius, where = rng.uniform(0.2, 0.7) * sep, rng.uniform(0.0, 2.0 * math.pi)
            center = (radius * math.cos(where), radius * math.sin(where))
            extra_axis = (-hemisphere * draw_tilt_deg(rng, latitude, part) if rng.random() < 0.6
                          else rng.uniform(0.0, 360.0))  # fmt: skip
            extra_sep = separation_mm(part, rng.normal(0.0, 0.15))
            s, p = bipole(rng, part, center, extra_sep, extra_axis, leading_sign,
                          float(rng.normal(0.0, 0.05)), spot_fraction(rng, part), 1)  # fmt: skip
            spots, plages = spots + s, plages + p
    spots, plages = add_satellites(rng, spots, plages, flux)
    return spots, plages, sep, tilt, imbalance


def _extent_mm(spots: list[Spot], plages: list[Plage]) -> tuple[float, float, float, float]:
    """Bounding box ``(x0, x1, y0, y1)`` in Mm of all components.

    Spots count out to twice their penumbral radius, plage out to :data:`PLAGE_EXTENT_SIGMA` sigma.
    """
    boxes = [(s.x_mm, s.y_mm, 2.0 * s.penumbra_mm, 2.0 * s.penumbra_mm) for s in spots]
    boxes += [(p.x_mm, p.y_mm, *_plage_half_widths_mm(p, PLAGE_EXTENT_SIGMA)) for p in plages]
    arr = np.array(boxes)
    return (float((arr[:, 0] - arr[:, 2]).min()), float((arr[:, 0] + arr[:, 2]).max()),
            float((arr[:, 1] - arr[:, 3]).min()), float((arr[:, 1] + arr[:, 3]).max()))  # fmt: skip


def _shift(spots: list[Spot], plages: list[Plage], dx: float, dy: float) -> tuple[tuple, tuple]:
    """Components moved by ``(dx, dy)`` Mm, as tuples."""
    return (tuple(replace(c, x_mm=c.x_mm + dx, y_mm=c.y_mm + dy) for c in spots),
            tuple(replace(c, x_mm=c.x_mm + dx, y_mm=c.y_mm + dy) for c in plages))  # fmt: skip


def _flux_centroid_mm(spots: tuple[Spot, ...], plages: tuple[Plage, ...]) -> tuple[float, float]:
    items = [(c.x_mm, c.y_mm, c.flux_mx) for c in (*spots, *plages)]
    arr = np.array(items)
    w = arr[:, 2] / arr[:, 2].sum()
    return float((arr[:, 0] * w).sum()), float((arr[:, 1] * w).sum())


def draw_region(rng: np.random.Generator, settings: SyntheticSettings) -> RegionSpec:
    """Draw the ground truth of one active region (research/physics.md section 7.2 a-d); renders nothing.

    Class from ``class_fractions``; hemisphere 50/50; |latitude| uniform in 5-35 deg; total unsigned
    flux log-normal; separation ``(flux/1e20)^0.8`` Mm +-0.15 dex (5-150 Mm); Joy tilt; Hale orientation
    of solar cycle 24 (leading polarity negative in the north) with 4 % reversed; flux-weighted longitude
    uniform within +-60 deg of central meridian. The patch spans the components (:func:`_extent_mm`)
    plus a margin of :data:`MARGIN_FRACTION` of the extent + :data:`MARGIN_MM` on each side, at least
    48 x 40 px and at most ``max_naxis`` px a side (bigger regions are cropped around their box centre).
    Network amplitude 20-50 G and cell size 20-30 Mm are drawn here too.
    """
    ar_class = CLASS_NAMES[int(rng.choice(len(CLASS_NAMES), p=settings.class_fractions.probabilities()))]
    hemisphere = 1 if rng.random() < 0.5 else -1
    latitude = hemisphere * rng.uniform(5.0, 35.0)
    flux = draw_total_flux(rng, settings)
    hale_reversed = bool(rng.random() < HALE_REVERSED_FRACTION)
    leading_sign = -hemisphere * (-1 if hale_reversed else 1)
    spots, plages, sep, tilt, imbalance = _components(rng, ar_class, flux, latitude, leading_sign)

    x0, x1, y0, y1 = _extent_mm(spots, plages)
    width, height = x1 - x0, y1 - y0
    sides = (width, width, height, height)
    margins = [rng.uniform(*MARGIN_FRACTION) * size + rng.uniform(*MARGIN_MM) for size in sides]
    x0, x1, y0, y1 = x0 - margins[0], x1 + margins[1], y0 - margins[2], y1 + margins[3]
    naxis1 = int(np.clip(math.ceil((x1 - x0) / CEA_PIXEL_MM), 48, settings.max_naxis))
    naxis2 = int(np.clip(math.ceil((y1 - y0) / CEA_PIXEL_MM), 40, settings.max_naxis))
    spots_t, plages_t = _shift(spots, plages, -0.5 * (x0 + x1), -0.5 * (y0 + y1))
    return RegionSpec(
        ar_class=ar_class,
        hemisphere=hemisphere,
        latitude_deg=float(latitude),
        lon_fwt_deg=float(rng.uniform(-60.0, 60.0)),
        total_flux_mx=flux,
        imbalance=float(imbalance),
        separation_mm=sep,
        tilt_deg=tilt,
        hale_reversed=hale_reversed,
        leading_sign=leading_sign,
        naxis1=naxis1,
        naxis2=naxis2,
        centroid_mm=_flux_centroid_mm(spots_t, plages_t),
        spots=spots_t,
        plages=plages_t,
        network_gauss=float(rng.uniform(20.0, 50.0)),
        network_cell_mm=float(rng.uniform(20.0, 30.0)),
        noise_gauss=settings.noise_gauss,
    )


def evolve_region(spec: RegionSpec, rng: np.random.Generator, hours: float) -> RegionSpec:
    """``spec`` ``hours`` later, a random walk whose steps grow as ``sqrt(hours / 24)`` (the per-day
    scatters below; 6 h: half of them): every component's flux scaled by one factor ``10**N(0, EVOLUTION_FLUX_DEX)``
    (spot radii and plage widths by its square root: peak fields kept), the layout rotated about the flux
    centroid by ``N(0, EVOLUTION_ROTATION_DEG)`` degrees and spread by the flux factor's square root (emergence
    separates the polarities), the region moved by :data:`EVOLUTION_DRIFT_MM` and each component a little more,
    the longitude advanced by solar rotation. Class, hemisphere, polarities and the patch size stay; the main
    bipole's tilt turns with the layout."""
    n = len(spec.spots) + len(spec.plages)
    scale = math.sqrt(hours / 24.0)
    factor = 10.0 ** rng.normal(0.0, EVOLUTION_FLUX_DEX * scale)
    turn = rng.normal(0.0, EVOLUTION_ROTATION_DEG * scale)
    drift = rng.normal(0.0, EVOLUTION_DRIFT_MM * scale, size=2)
    own = rng.normal(0.0, 0.5 * EVOLUTION_DRIFT_MM * scale, size=(n, 2))
    cx, cy = spec.centroid_mm
    cos, sin = math.cos(math.radians(turn)), math.sin(math.radians(turn))
    root = math.sqrt(factor)

    def place(c, i):
        x, y = (c.x_mm - cx) * root, (c.y_mm - cy) * root
        return cx + cos * x - sin * y + drift[0] + own[i, 0], cy + sin * x + cos * y + drift[1] + own[i, 1]

    spots = []
    for i, c in enumerate(spec.spots):
        x, y = place(c, i)
        spots.append(replace(c, x_mm=x, y_mm=y, flux_mx=c.flux_mx * factor, umbra_mm=c.umbra_mm * root,
                             penumbra_mm=c.penumbra_mm * root))  # fmt: skip
    plages = []
    for i, c in enumerate(spec.plages, start=len(spec.spots)):
        x, y = place(c, i)
        widths = {"sigma_major_mm": c.sigma_major_mm * root, "sigma_minor_mm": c.sigma_minor_mm * root}
        angle = (c.angle_deg + turn) % 180.0
        plages.append(replace(c, x_mm=x, y_mm=y, flux_mx=c.flux_mx * factor, angle_deg=angle, **widths))
    spots, plages = tuple(spots), tuple(plages)
    return replace(
        spec,
        lon_fwt_deg=spec.lon_fwt_deg + ROTATION_DEG_PER_HOUR * hours,
        total_flux_mx=spec.total_flux_mx * factor,
        separation_mm=spec.separation_mm * root,
        tilt_deg=float(np.clip(spec.tilt_deg - spec.hemisphere * turn, -90.0, 90.0)),
        centroid_mm=_flux_centroid_mm(spots, plages),
        spots=spots,
        plages=plages,
    )


def series_plan(n_records: int, series: SeriesSettings, seed: int) -> list[tuple[int, int]]:
    """``(region, observation)`` of each of ``n_records`` records: region by region, a ``series.fraction``
    of them (drawn from ``default_rng([seed, SERIES_STREAM])``) observed ``series.observations`` times, the
    last series cut short when the records run out."""
    rng = np.random.default_rng([seed, SERIES_STREAM])
    plan, region = [], 0
    while len(plan) < n_records:
        length = series.observations if rng.random() < series.fraction else 1
        plan.extend((region, j) for j in range(min(length, n_records - len(plan))))
        region += 1
    return plan


# --- rendering -------------------------------------------------------------------------------------------


def _window(shape: tuple[int, int], x_mm: float, y_mm: float, half_x_mm: float, half_y_mm: float):
    """Pixel window around a component centred at ``(x_mm, y_mm)`` from the patch centre.

    Returns ``(rows, cols, inner, dx, dy)``: ``dx``/``dy`` are the float32 offsets (Mm) of the whole
    window's columns/rows from the centre, even where the window leaves the patch; ``rows``/``cols`` slice
    the in-patch part of the grid and ``inner`` the matching part of the window.
    """
    ny, nx = shape
    cx = (nx - 1) / 2.0 + x_mm / CEA_PIXEL_MM
    cy = (ny - 1) / 2.0 + y_mm / CEA_PIXEL_MM
    hx = int(math.ceil(half_x_mm / CEA_PIXEL_MM)) + 1
    hy = int(math.ceil(half_y_mm / CEA_PIXEL_MM)) + 1
    i0, j0 = int(math.floor(cy)) - hy, int(math.floor(cx)) - hx
    dy = ((np.arange(i0, i0 + 2 * hy + 2) - cy) * CEA_PIXEL_MM).astype(np.float32)
    dx = ((np.arange(j0, j0 + 2 * hx + 2) - cx) * CEA_PIXEL_MM).astype(np.float32)
    rows = slice(min(max(i0, 0), ny), max(min(i0 + dy.size, ny), 0))
    cols = slice(min(max(j0, 0), nx), max(min(j0 + dx.size, nx), 0))
    inner = (slice(rows.start - i0, rows.stop - i0), slice(cols.start - j0, cols.stop - j0))
    return rows, cols, inner, dx, dy


def spot_profile(spot: Spot, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Unsigned spot field (G, float32) on the grid of offsets ``dx`` (columns) and ``dy`` (rows), in Mm."""
    r2 = dy[:, None] ** 2 + dx[None, :] ** 2
    umbra2 = np.float32(spot.umbra_mm**2)
    u = r2 / umbra2
    core = np.exp(-(u * u))
    pen = np.exp(-((r2 / np.float32(spot.penumbra_mm**2)) ** 1.5))
    f = PENUMBRA_FRACTION
    return np.float32((1.0 - f) * spot.peak_gauss) * core + np.float32(f * spot.peak_gauss) * pen


def _add_spots(out: np.ndarray, spots: tuple[Spot, ...]) -> None:
    """Add every spot (signed, scaled to its exact flux over its whole window) into ``out`` in place."""
    for spot in spots:
        half = 2.0 * spot.penumbra_mm
        rows, cols, inner, dx, dy = _window(out.shape, spot.x_mm, spot.y_mm, half, half)
        prof = spot_profile(spot, dx, dy)
        scale = spot.sign * spot.flux_mx / (float(prof.sum(dtype=np.float64)) * PIXEL_AREA_CM2)
        if rows.stop > rows.start and cols.stop > cols.start:
            out[rows, cols] += np.float32(scale) * prof[inner]


def _plage_half_widths_mm(p: Plage, n_sigma: float) -> tuple[float, float]:
    """Half-widths (x, y) in Mm of the bounding box of a plage ellipse drawn out to ``n_sigma``."""
    c, s = math.cos(math.radians(p.angle_deg)), math.sin(math.radians(p.angle_deg))
    return (n_sigma * math.hypot(p.sigma_major_mm * c, p.sigma_minor_mm * s),
            n_sigma * math.hypot(p.sigma_major_mm * s, p.sigma_minor_mm * c))  # fmt: skip


def _add_plage(pos: np.ndarray, neg: np.ndarray, plages: tuple[Plage, ...]) -> None:
    """Add every plage envelope (unsigned, G) into ``pos`` or ``neg`` in place, out to 3 sigma.

    The rotated Gaussian ``exp(-(A x^2 + B x y + C y^2))`` is evaluated on the in-patch part of its
    bounding box only; its peak ``flux / (2 pi s_major s_minor)`` makes the integral equal the flux.
    """
    for p in plages:
        rows, cols, inner, dx, dy = _window(pos.shape, p.x_mm, p.y_mm, *_plage_half_widths_mm(p, 3.0))
        if rows.stop <= rows.start or cols.stop <= cols.start:
            continue
        dx, dy = dx[inner[1]], dy[inner[0]]
        c, s = math.cos(math.radians(p.angle_deg)), math.sin(math.radians(p.angle_deg))
        major, minor = 0.5 / p.sigma_major_mm**2, 0.5 / p.sigma_minor_mm**2
        q = (np.float32(major * c * c + minor * s * s) * dx * dx)[None, :] + (
            np.float32(major * s * s + minor * c * c) * dy * dy)[:, None]  # fmt: skip
        q += (np.float32(2.0 * c * s * (major - minor)) * dy)[:, None] * dx[None, :]
        np.exp(-q, out=q)
        peak = p.flux_mx / (2.0 * math.pi * p.sigma_major_mm * p.sigma_minor_mm * CM2_PER_MM2)
        q *= np.float32(peak)
        (pos if p.sign > 0 else neg)[rows, cols] += q


def _bspline_weights(step: int) -> np.ndarray:
    """``(4, step)`` float32 cubic B-spline weights of the 4 nodes around each of ``step`` sub-node phases."""
    f = np.arange(step) / step
    g = 1.0 - f
    weights = [g**3 / 6.0, 2.0 / 3.0 - f**2 + 0.5 * f**3, 2.0 / 3.0 - g**2 + 0.5 * g**3, f**3 / 6.0]
    return np.stack(weights).astype(np.float32)


def _upsample_rows(coarse: np.ndarray, n: int, step: int) -> np.ndarray:
    """Cubic B-spline of node rows spaced ``step`` px (node ``j`` at row ``(j - 1) * step``), ``n`` rows out.

    ``coarse`` needs ``ceil(n / step) + 3`` rows. Vectorized over the ``step`` sub-node phases (no BLAS,
    so no thread oversubscription when several workers render at once).
    """
    m = -(-n // step)
    w = _bspline_weights(step)
    out = w[0][None, :, None] * coarse[0:m, None, :]
    for k in range(1, 4):
        out += w[k][None, :, None] * coarse[k : m + k, None, :]
    return out.reshape(m * step, coarse.shape[1])[:n]


def smooth_random(rng: np.random.Generator, shape: tuple[int, int], spacing_px: float) -> np.ndarray:
    """Zero-mean, unit-variance float32 random field correlated over ~``spacing_px`` pixels.

    White noise on a coarse grid (spacing ``spacing_px`` rounded to an integer >= 2) spread over the patch
    by cubic B-splines.
    """
    ny, nx = shape
    step = max(2, int(round(spacing_px)))
    coarse = rng.standard_normal((-(-ny // step) + 3, -(-nx // step) + 3), dtype=np.float32)
    rows = _upsample_rows(np.ascontiguousarray(coarse.T), nx, step).T
    fine = _upsample_rows(np.ascontiguousarray(rows), ny, step)
    sample = fine[::4, ::4]
    fine -= np.float32(sample.mean())
    fine *= np.float32(1.0 / max(float(sample.std()), 1e-6))
    return fine


def _soft_unit_mean(texture: np.ndarray, limit: float) -> np.ndarray:
    """Soft-limit ``texture`` (>= 0, mean 1) below ``limit`` with ``t / (1 + t / limit)``, rescale to mean 1.

    In place; returns ``texture``.
    """
    texture /= np.float32(1.0) + texture * np.float32(1.0 / limit)
    texture *= np.float32(1.0 / max(float(texture.mean()), 1e-12))
    return texture


def _binomial_smooth(image: np.ndarray) -> np.ndarray:
    """3 x 3 binomial smoothing ([1, 2, 1] / 4 along each axis, edges left one-sided), float32.

    Applied to uniform white noise it gives a near-Gaussian field correlated over ~1 px (sigma 0.7 px);
    uniform draws are ~4x cheaper than normal ones.
    """
    rows = image * np.float32(0.5)
    rows[1:] += np.float32(0.25) * image[:-1]
    rows[:-1] += np.float32(0.25) * image[1:]
    out = rows * np.float32(0.5)
    out[:, 1:] += np.float32(0.25) * rows[:, :-1]
    out[:, :-1] += np.float32(0.25) * rows[:, 1:]
    return out


def texture_fields(rng: np.random.Generator, shape: tuple[int, int], cell_mm: float) -> np.ndarray:
    """``(4, NAXIS2, NAXIS1)`` float32 zero-mean, unit-variance random fields that carry a region's texture.

    In draw order: the lane field (correlated over ``cell_mm / 5`` Mm, its zero contours ~``cell_mm`` Mm apart:
    the cellular pattern), the grain (~1 px), the plage clusters (:data:`CLUSTER_SPACING_MM`) and the quiet
    network's polarity (sign changing over :data:`POLARITY_SPACING_PER_CELL` cells). All are Gaussian but the
    grain (smoothed uniform draws, near-Gaussian), so a mix ``rho a + sqrt(1 - rho^2) b`` of two independent
    sets is again such a set, correlated ``rho`` with ``a`` (:func:`renew_texture`).
    """
    fields = np.empty((4, *shape), dtype=np.float32)
    fields[0] = smooth_random(rng, shape, cell_mm / LANE_SPACING_PER_CELL / CEA_PIXEL_MM)
    grain = _binomial_smooth(rng.random(shape, dtype=np.float32))
    sample = grain[::4, ::4]
    grain -= np.float32(sample.mean())
    grain *= np.float32(1.0 / max(float(sample.std()), 1e-6))
    fields[1] = grain
    fields[2] = smooth_random(rng, shape, CLUSTER_SPACING_MM / CEA_PIXEL_MM)
    fields[3] = smooth_random(rng, shape, POLARITY_SPACING_PER_CELL * cell_mm / CEA_PIXEL_MM)
    return fields


def renew_texture(fields: np.ndarray, rng: np.random.Generator, hours: float, lifetimes_hours: Sequence[float],
                  cell_mm: float) -> np.ndarray:  # fmt: skip
    """``fields`` (:func:`texture_fields`) ``hours`` later: field k becomes ``rho_k * old + sqrt(1 - rho_k^2) *
    fresh`` with ``rho_k = exp(-hours / lifetimes_hours[k])`` and ``fresh`` drawn from ``rng``.

    One step of an Ornstein-Uhlenbeck process: steps of ``h1`` then ``h2`` hours give the correlation
    ``exp(-(h1 + h2) / lifetime)`` with the start, and every step keeps the fields' statistics, so a renewed
    texture looks like any other. Returns a new array; a field whose ``rho`` is 1 is kept as it is. ``fresh``
    is drawn whatever the lifetimes, so what ``rng`` gives afterwards does not depend on them.
    """
    fresh = texture_fields(rng, fields.shape[1:], cell_mm)
    for k, lifetime in enumerate(lifetimes_hours):
        rho = math.exp(-hours / lifetime)
        if rho == 1.0:
            fresh[k] = fields[k]
        else:
            fresh[k] *= np.float32(math.sqrt(1.0 - rho * rho))
            fresh[k] += np.float32(rho) * fields[k]
    return fresh


def network_textures(fields: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(plage, network)`` non-negative float32 textures on the lanes of the cellular pattern of ``fields``.

    ``fields`` from :func:`texture_fields` (left unchanged). Lanes are the zero contours of the lane field.
    The plage texture (mean 1) puts log-normal fragments (1-2 px grain, ~4 Mm clusters) on wide lanes, lowered
    by :data:`PLAGE_FLOOR` to open voids and soft-limited at :data:`TEXTURE_LIMIT`; the network texture keeps
    the grain peaks above :data:`NETWORK_GRAIN_THRESHOLD` on narrow lanes (a sparse pattern of elements).
    """
    lanes, grain, clusters = fields[0], fields[1], fields[2]
    g = lanes * lanes
    plage = clusters * np.float32(CLUSTER_DEX)
    tmp = np.multiply(grain, np.float32(GRAIN_DEX))
    plage += tmp
    np.multiply(g, np.float32(1.0 / PLAGE_LANE_WIDTH**2), out=tmp)
    plage -= tmp
    np.exp(plage, out=plage)
    plage *= np.float32(1.0 / max(float(plage.mean()), 1e-12))
    plage -= np.float32(PLAGE_FLOOR)
    np.maximum(plage, 0.0, out=plage)
    z = np.subtract(grain, np.float32(NETWORK_GRAIN_THRESHOLD))
    np.maximum(z, 0.0, out=z)
    g *= np.float32(-1.0 / NETWORK_LANE_WIDTH**2)
    network = np.exp(g, out=g)
    z *= np.float32(NETWORK_GAIN)
    network *= z
    return _soft_unit_mean(plage, TEXTURE_LIMIT), network


def signed_plage(plages: tuple[Plage, ...], texture: np.ndarray) -> np.ndarray:
    """Signed textured plage field in G (float32): ``(pos - neg) * texture``, each sign rescaled to its flux.

    Where envelopes of both polarities overlap their flux cancels, leaving a weak-field corridor along the
    polarity inversion line (as between the polarities of real plage); the positive and the negative parts
    are then scaled (by at most :data:`MAX_PLAGE_BOOST`) so each carries its envelopes' flux on the grid.
    """
    pos = np.zeros(texture.shape, dtype=np.float32)
    neg = np.zeros(texture.shape, dtype=np.float32)
    _add_plage(pos, neg, plages)
    pos_flux = float(pos.sum(dtype=np.float64))
    neg_flux = float(neg.sum(dtype=np.float64))
    pos -= neg
    pos *= texture
    positive = np.maximum(pos, np.float32(0.0), out=neg)
    pos_sum = float(positive.sum(dtype=np.float64))
    neg_sum = pos_sum - float(pos.sum(dtype=np.float64))
    pos_scale = min(pos_flux / pos_sum, MAX_PLAGE_BOOST) if pos_sum > 0.0 else 0.0
    neg_scale = min(neg_flux / neg_sum, MAX_PLAGE_BOOST) if neg_sum > 0.0 else 0.0
    # field = neg_scale * pos + (pos_scale - neg_scale) * max(pos, 0)
    positive *= np.float32(pos_scale - neg_scale)
    pos *= np.float32(neg_scale)
    pos += positive
    return pos


def render_parts(spec: RegionSpec, fields: np.ndarray, noise_rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Render ``(active_region, background)`` in G, float32 ``(NAXIS2, NAXIS1)``, unclipped.

    ``active_region`` holds the spots and the plage textured by ``fields`` (:func:`texture_fields`; its flux is
    the ground truth); ``background`` the mixed-polarity quiet network (``network_gauss`` G scale) and white
    noise (``noise_gauss`` G) drawn from ``noise_rng``. ``active_region`` does not depend on ``network_gauss``
    or ``noise_gauss``.
    """
    shape = (spec.naxis2, spec.naxis1)
    texture, network = network_textures(fields)
    region = signed_plage(spec.plages, texture)
    _add_spots(region, spec.spots)
    background = np.zeros(shape, dtype=np.float32)
    if spec.network_gauss > 0.0:
        polarity = np.clip(fields[3] * np.float32(1.5), -1.0, 1.0)
        polarity *= network
        polarity *= np.float32(spec.network_gauss)
        background += polarity
    if spec.noise_gauss > 0.0:
        background += np.float32(spec.noise_gauss) * noise_rng.standard_normal(shape, dtype=np.float32)
    return region, background


def render_region(spec: RegionSpec, rng: np.random.Generator) -> np.ndarray:
    """Br in G (float32, ``(NAXIS2, NAXIS1)``, row 0 south, x west) of ``spec``, clipped to +-4000 G; texture
    and noise drawn from ``rng``."""
    fields = texture_fields(rng, (spec.naxis2, spec.naxis1), spec.network_cell_mm)
    region, background = render_parts(spec, fields, rng)
    region += background
    return np.clip(region, -FIELD_LIMIT_GAUSS, FIELD_LIMIT_GAUSS, out=region)


def signed_flux_mx(field_gauss: np.ndarray) -> tuple[float, float]:
    """``(positive, negative)`` unsigned flux in Mx of a native CEA field in G; no threshold, NaN skipped."""
    b = np.asarray(field_gauss)
    pos = float(np.nansum(np.maximum(b, 0.0), dtype=np.float64)) * PIXEL_AREA_CM2
    neg = -float(np.nansum(np.minimum(b, 0.0), dtype=np.float64)) * PIXEL_AREA_CM2
    return pos, neg


# --- records ---------------------------------------------------------------------------------------------


def record_time(region: int, observation: int = 0, cadence_hours: float = 0.0) -> datetime:
    """T_REC (TAI) of observation ``observation`` of synthetic region ``region``: the region's first record
    ``region * RECORD_STEP`` after 2010-05-01 00:00, each later one ``cadence_hours`` after the previous."""
    return FIRST_T_REC + region * RECORD_STEP + timedelta(hours=observation * cadence_hours)


def record_names(region: int, observation: int = 0, cadence_hours: float = 0.0) -> tuple[int, str, str, str]:
    """``(harpnum, t_rec, record id, file name)`` of a synthetic record (JSOC-like): one HARP per region."""
    harpnum = HARPNUM_OFFSET + region + 1
    t = record_time(region, observation, cadence_hours)
    t_rec = t.strftime("%Y.%m.%d_%H:%M:%S_TAI")
    record = f"hmi.sharp_cea_720s[{harpnum}][{t_rec}]"
    file = f"hmi.sharp_cea_720s.{harpnum}.{t.strftime('%Y%m%d_%H%M%S')}_TAI.Br.fits"
    return harpnum, t_rec, record, file


def header_cards(spec: RegionSpec, region: int, observation: int, cadence_hours: float, seed: int,
                 pos_flux_mx: float, neg_flux_mx: float) -> dict:  # fmt: skip
    """SHARP-like FITS cards of a record (field in G) plus ``SYN_*`` ground-truth cards.

    ``SYN_CLS`` class, ``SYN_FLUX`` drawn total unsigned flux [Mx], ``SYN_SEP`` main-bipole separation
    [Mm], ``SYN_TILT`` its Joy tilt [deg], ``SYN_HALE`` reversed orientation, ``SYN_LEAD`` leading sign,
    ``SYN_EPS`` drawn imbalance, ``SYN_PFLX``/``SYN_NFLX`` rendered positive/negative flux without
    network and noise [Mx], ``SYN_OBS`` the observation's index in its region's series.
    """
    harpnum, t_rec, _, _ = record_names(region, observation, cadence_hours)
    time = record_time(region, observation, cadence_hours)
    crln_obs = earth_observer(time.isoformat())["CRLN_OBS"]
    center = (crln_obs + spec.center_longitude_deg, spec.center_latitude_deg)
    return {
        "BUNIT": BUNIT_GAUSS,
        **cea_cards((spec.naxis2, spec.naxis1), CEA_PIXEL_DEG, center, time),
        "T_REC": t_rec,
        "HARPNUM": harpnum,
        "NOAA_AR": NOAA_OFFSET + region + 1 if spec.spots else 0,
        "LAT_FWT": round(spec.latitude_deg, 6),
        "LON_FWT": round(spec.lon_fwt_deg, 6),
        "QUALITY": 0,
        "ORIGIN": "sharpgen synthetic",
        "SYN_CLS": spec.ar_class,
        "SYN_FLUX": float(f"{spec.total_flux_mx:.6e}"),
        "SYN_SEP": round(spec.separation_mm, 4),
        "SYN_TILT": round(spec.tilt_deg, 4),
        "SYN_HALE": spec.hale_reversed,
        "SYN_LEAD": spec.leading_sign,
        "SYN_EPS": round(spec.imbalance, 5),
        "SYN_PFLX": float(f"{pos_flux_mx:.6e}"),
        "SYN_NFLX": float(f"{neg_flux_mx:.6e}"),
        "SYN_OBS": observation,
        "HISTORY": f"made by sharpgen {__version__} synthetic source, seed {seed}, region {region}, "
        f"observation {observation}",
    }


def _observation_rng(region_seq: np.random.SeedSequence, observation: int) -> np.random.Generator:
    """The generator of step ``observation`` > 0 of a region (its evolution, its texture renewal, then the noise
    of that observation)."""
    return np.random.default_rng(
        np.random.SeedSequence(region_seq.entropy, spawn_key=(*region_seq.spawn_key, observation))
    )


def make_record(region: int, observation: int, region_seq: np.random.SeedSequence, settings: SyntheticSettings,
                out_dir: str, seed: int) -> dict:  # fmt: skip
    """Draw region ``region`` (its own ``region_seq``), evolve it to ``observation``, render and write it;
    return its manifest row.

    Observation 0 is drawn, textured (:func:`texture_fields`) and rendered with noise from
    ``default_rng(region_seq)``, in that order. Observation j > 0 applies the steps 1..j, step i drawing from
    :func:`_observation_rng` of i its evolution (:func:`evolve_region`) and then its texture renewal
    (:func:`renew_texture`, ``series.lifetimes_hours()``); the noise comes from what remains of step j's
    generator. So every observation of a series shares its evolution and texture history with the earlier
    ones. ``pos_flux_mx``/``neg_flux_mx`` are measured on the
    rendered active-region field without network and noise (``a * sum B`` over B > 0, resp. ``|B|`` over
    B < 0, after clipping to +-4000 G).
    """
    rng = np.random.default_rng(region_seq)
    spec = draw_region(rng, settings)
    fields = texture_fields(rng, (spec.naxis2, spec.naxis1), spec.network_cell_mm)
    series = settings.series
    noise_rng = rng
    for step in range(1, observation + 1):
        noise_rng = _observation_rng(region_seq, step)
        spec = evolve_region(spec, noise_rng, series.cadence_hours)
        fields = renew_texture(fields, noise_rng, series.cadence_hours, series.lifetimes_hours(), spec.network_cell_mm)
    region_field, background = render_parts(spec, fields, noise_rng)
    np.clip(region_field, -FIELD_LIMIT_GAUSS, FIELD_LIMIT_GAUSS, out=region_field)
    pos, neg = signed_flux_mx(region_field)
    field_gauss = np.clip(region_field + background, -FIELD_LIMIT_GAUSS, FIELD_LIMIT_GAUSS)
    harpnum, t_rec, record, file = record_names(region, observation, series.cadence_hours)
    cards = header_cards(spec, region, observation, series.cadence_hours, seed, pos, neg)
    write_sharp_fits(Path(out_dir) / file, field_gauss, cards)
    return {
        "record": record, "file": file, "status": "ok", "reason": "", "harpnum": harpnum,
        "noaa_ar": cards["NOAA_AR"], "t_rec": t_rec, "naxis1": spec.naxis1, "naxis2": spec.naxis2,
        "cdelt1_deg": CEA_PIXEL_DEG, "lat_fwt": spec.latitude_deg, "lon_fwt": spec.lon_fwt_deg,
        "hemisphere": spec.hemisphere, "ar_class": spec.ar_class, "total_flux_mx": spec.total_flux_mx,
        "pos_flux_mx": pos, "neg_flux_mx": neg, "separation_mm": spec.separation_mm,
        "tilt_deg": spec.tilt_deg, "hale_reversed": spec.hale_reversed, "seed": seed, "region": region,
        "observation": observation,
    }  # fmt: skip


def _make_record_task(task: tuple) -> dict:
    return make_record(*task)


_MANIFEST_DTYPES = {
    "harpnum": "int64", "noaa_ar": "int64", "naxis1": "int64", "naxis2": "int64", "cdelt1_deg": "float64",
    "lat_fwt": "float64", "lon_fwt": "float64", "hemisphere": "int64", "total_flux_mx": "float64",
    "pos_flux_mx": "float64", "neg_flux_mx": "float64", "separation_mm": "float64", "tilt_deg": "float64",
    "hale_reversed": "bool", "seed": "int64", "region": "int64", "observation": "int64",
}  # fmt: skip


def generate_synthetic(out_dir: str | os.PathLike, settings: SyntheticSettings | Mapping | None, seed: int,
                       workers: int = 1, progress: bool = True) -> pd.DataFrame:  # fmt: skip
    """Write ``settings.n_patches`` synthetic SHARP Br records into ``out_dir`` and return the manifest.

    One FITS file per record (``hmi.sharp_cea_720s.<HARPNUM>.<T_REC>_TAI.Br.fits``; which region and
    observation each record is: :func:`series_plan`), then ``out_dir/manifest.parquet`` written atomically
    and last, so its presence means the set is complete (an existing manifest is removed first). Region ``i``
    draws from ``SeedSequence(seed).spawn(n)[i]``: the same seed gives byte-identical files for any
    ``workers``. ``workers > 1`` uses worker processes.
    """
    if not isinstance(settings, SyntheticSettings):
        settings = build_settings(SyntheticSettings, settings)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed < 2**63:
        raise SharpgenError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    if isinstance(workers, bool) or not isinstance(workers, int | np.integer) or workers < 1:
        raise SharpgenError(f"workers must be a positive integer, got {workers!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / MANIFEST_NAME
    manifest_path.unlink(missing_ok=True)
    n = settings.n_patches
    children = np.random.SeedSequence(int(seed)).spawn(n)
    plan = series_plan(n, settings.series, int(seed))
    tasks = [(region, j, children[region], settings, str(out), int(seed)) for region, j in plan]
    bar = {"total": n, "desc": "synthetic", "unit": "patch", "file": sys.stderr, "disable": not progress}
    if workers == 1 or n == 1:
        rows = [_make_record_task(task) for task in progress_bar(iterable=tasks, **bar)]
    else:
        context = multiprocessing.get_context("spawn")  # safe beside threads (servers, progress bars)
        chunk = int(np.clip(n // (8 * workers), 1, 16))
        with ProcessPoolExecutor(max_workers=min(int(workers), n), mp_context=context) as pool:
            rows = list(progress_bar(iterable=pool.map(_make_record_task, tasks, chunksize=chunk), **bar))
    manifest = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).astype(_MANIFEST_DTYPES)
    write_parquet_atomic(manifest, manifest_path)
    return manifest
