"""Latent directions: SVM labels and normals, conditional projection, traversal statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sharpgen.errors import SharpgenError
from sharpgen.latent.directions import (
    DirectionSet,
    conditional_normal,
    directions_from_json,
    directions_to_json,
    extreme_labels,
    fit_direction,
    fit_split,
    sides_of,
    split_shortfall,
)
from sharpgen.latent.steering import (
    calibration_curves,
    entanglement_row,
    median_slopes,
    median_spearman,
    solve_targets,
    traversal_steps,
    traverse,
)

RNG = np.random.default_rng(0)
LATENTS = RNG.standard_normal((2000, 100))
TRUE_NORMAL = np.zeros(100)
TRUE_NORMAL[:2] = [0.6, 0.8]


def linear_measure(latents: np.ndarray) -> pd.DataFrame:
    """A stand-in for generator + physics: q = 3 z.n_true + 1, r = z[5] (independent of n_true)."""
    latents = np.asarray(latents, dtype=np.float64)
    return pd.DataFrame({"q": 3.0 * latents @ TRUE_NORMAL + 1.0, "r": latents[:, 5]})


def test_extreme_labels_take_the_top_and_bottom_fraction_of_defined_values():
    values = np.array([5.0, np.nan, 1.0, 3.0, 2.0, 4.0, np.nan, 0.0, 6.0, 7.0, 8.0, 9.0])
    indices, labels = extreme_labels(values, 0.2)
    assert sorted(values[indices[labels == 0]]) == [0.0, 1.0]
    assert sorted(values[indices[labels == 1]]) == [8.0, 9.0]
    with pytest.raises(SharpgenError, match="too few"):
        extreme_labels(np.full(10, np.nan), 0.2)


def test_svm_recovers_a_linear_property_direction_pointing_to_high_values():
    values = linear_measure(LATENTS)["q"].to_numpy() + RNG.normal(0, 0.1, len(LATENTS))
    direction = fit_direction("q", LATENTS, values, fraction=0.1, heldout=0.3, seed=1)
    assert np.linalg.norm(direction.normal) == pytest.approx(1.0)
    assert direction.normal @ TRUE_NORMAL > 0.95  # the right direction, oriented towards high q
    assert direction.accuracy >= 0.98 and direction.n_heldout == 120 and direction.n_train == 280
    high, low = np.argmax(values), np.argmin(values)
    assert direction.score(LATENTS[[high]])[0] > 0 > direction.score(LATENTS[[low]])[0]
    again = directions_from_json(directions_to_json(DirectionSet(None, {"q": {"all": direction}}), {}))
    np.testing.assert_allclose(again.plain["q"]["all"].normal, direction.normal)
    np.testing.assert_allclose(again.normals("q", LATENTS[:3]), np.tile(direction.normal, (3, 1)))


def test_a_property_folded_by_polarity_gets_one_direction_per_side():
    """q grows towards both ends of the polarity axis (like the unsigned flux of a mirrored bipole): one
    hyperplane cannot separate high from low q, one per side of the polarity boundary can."""
    polarity = np.eye(100)[0]
    q = 2.0 * np.abs(LATENTS @ polarity) + 0.3 * LATENTS[:, 1]
    sign = np.sign(LATENTS @ polarity)
    assert fit_direction("q", LATENTS, q, fraction=0.1, seed=1).accuracy < 0.8
    split = fit_split("lead_sign", LATENTS, sign, seed=1)
    assert split.accuracy > 0.97 and split.normal @ polarity > 0.95
    sides = sides_of(split, LATENTS)
    plain = {
        "q": {
            side: fit_direction("q", LATENTS[sides == side], q[sides == side], 0.1, 0.3, 1) for side in ("low", "high")
        }
    }
    directions = DirectionSet(split, plain)
    assert directions.accuracy("q") > 0.9
    assert plain["q"]["high"].normal @ polarity > 0.5 and plain["q"]["low"].normal @ polarity < -0.5
    again = directions_from_json(directions_to_json(directions, {}))
    np.testing.assert_array_equal(again.side_of(LATENTS), sides)
    normals = again.normals("q", LATENTS[:50])
    assert np.all(np.sign(normals @ polarity) == np.sign(LATENTS[:50] @ polarity))  # each side's own direction


def test_moves_stop_at_the_split_boundary_and_keep_the_side():
    split = fit_split("lead_sign", LATENTS, np.sign(LATENTS[:, 0]), seed=1)
    plain = {"q": {side: fit_direction("q", LATENTS, LATENTS[:, 1], 0.1, 0.3, 1) for side in ("low", "high")}}
    directions = DirectionSet(split, plain)
    origins = np.zeros((2, 100))
    origins[:, 0] = [2.0, -2.0]
    moved = directions.keep_sides(origins - np.array([[10.0], [-10.0]]) * split.normal, origins)
    assert list(directions.side_of(moved)) == ["high", "low"]  # still on their sides ...
    np.testing.assert_allclose(split.score(moved), 0.0, atol=1e-5)  # ... stopped at the boundary
    inside = origins + 0.5 * np.eye(100)[1]
    np.testing.assert_array_equal(directions.keep_sides(inside, origins), inside)  # moves that stay are untouched
    stepped = directions.stepped("q", origins, [1.0, -2.0])  # q's direction hardly moves z0: both stay
    np.testing.assert_allclose(stepped[0], origins[0] + plain["q"]["high"].normal)
    np.testing.assert_allclose(stepped[1], origins[1] - 2.0 * plain["q"]["low"].normal)
    crossing = DirectionSet(split, {"q": {"low": split, "high": split}}).stepped("q", origins, [-10.0, 10.0])
    assert list(directions.side_of(crossing)) == ["high", "low"]  # moving along the split's normal stops at it
    np.testing.assert_allclose(split.score(crossing), 0.0, atol=1e-5)


def test_a_split_needs_enough_samples_of_each_sign_to_label_every_side():
    lead_pol = np.r_[np.full(20, -3.0), np.full(20, 2.0), np.nan, 0.0]
    assert split_shortfall("lead_pol", lead_pol, fraction=0.1) is None  # 2 / 0.1 = 20 a side
    one_sided = split_shortfall("lead_pol", np.r_[np.full(40, -3.0), np.full(19, 2.0)], fraction=0.1)
    assert "40 samples negative and 19 positive, fewer than 20 on one side" in one_sided


def test_a_property_unrelated_to_the_latent_gets_chance_accuracy():
    noise = RNG.standard_normal(len(LATENTS))
    assert fit_direction("noise", LATENTS, noise, fraction=0.1, seed=1).accuracy < 0.7


def test_conditional_normal_is_unit_and_orthogonal_to_its_conditions():
    primal, a, b = RNG.standard_normal((3, 100))
    u = conditional_normal(primal, [a, b])
    assert np.linalg.norm(u) == pytest.approx(1.0)
    assert abs(u @ a) < 1e-9 and abs(u @ b) < 1e-9 and u @ primal > 0
    with pytest.raises(SharpgenError, match="span of its conditions"):
        conditional_normal(a + 2 * b, [a, b])


def test_traversal_statistics_of_a_known_linear_property():
    steps = traversal_steps(2.0, 5)
    assert 0.0 in steps and steps[0] == -2.0 and steps[-1] == 2.0
    traversal = traverse(linear_measure, RNG.standard_normal((8, 100)), TRUE_NORMAL, steps)
    assert len(traversal) == 8 * len(steps)
    slopes = median_slopes(traversal, ["q", "r"])
    assert slopes["q"] == pytest.approx(3.0, rel=1e-5) and abs(slopes["r"]) < 1e-9
    assert median_spearman(traversal, "q") == pytest.approx(1.0)
    curves = calibration_curves(traversal, ["q", "r"])
    np.testing.assert_allclose(curves["q_median"], 3.0 * curves["step"], atol=1e-5)
    row = entanglement_row(slopes, "q", {"q": 3.0, "r": 1.0})
    assert row["q"] == pytest.approx(1.0) and abs(row["r"]) < 1e-9


def test_a_traversal_stopped_early_records_where_it_stopped_and_its_repeated_frame_counts_once():
    """A move cut at a boundary (here: no lower than 1 below the start along the direction) repeats one
    latent for every step past the cut; the Spearman statistic is over the distinct frames reached."""

    def no_lower_than_one_below(latents, origins):
        along = (latents - origins) @ TRUE_NORMAL
        return latents + np.maximum(-1.0 - along, 0.0)[:, None] * TRUE_NORMAL

    starts = np.zeros((3, 100))
    steps = traversal_steps(4.0, 9)
    traversal = traverse(linear_measure, starts, TRUE_NORMAL, steps, no_lower_than_one_below)
    np.testing.assert_allclose(traversal["reached"], np.tile(np.maximum(steps, -1.0), 3), atol=1e-6)
    assert median_spearman(traversal, "q") == pytest.approx(1.0)
    assert median_slopes(traversal, ["q"])["q"] == pytest.approx(3.0, rel=1e-5)
    free = traverse(linear_measure, starts, TRUE_NORMAL, steps)
    np.testing.assert_allclose(free["reached"], free["step"], atol=1e-6)
    on_steps = median_spearman(traversal.drop(columns="reached"), "q")  # the repeats, counted as steps
    assert on_steps < 0.95


def test_newton_steps_reach_targets_of_a_nonlinear_property_and_hold_another():
    def measure(latents):
        latents = np.asarray(latents, dtype=np.float64)
        return pd.DataFrame({"q": np.exp(0.3 * latents[:, 0]), "r": latents[:, 1] + 0.5 * latents[:, 0]})

    normals = np.eye(100)[:2]
    jacobian = np.array([[0.3, 0.0], [0.5, 1.0]])  # d(q, r) / d(step0, step1) near z = 0
    starts = RNG.standard_normal((20, 100)) * 0.5
    held_r = measure(starts)["r"].to_numpy()
    targets = np.stack([np.full(20, 2.5), held_r], axis=1)
    latents, table, converged = solve_targets(
        measure, starts, normals, jacobian, ["q", "r"], targets, tolerance=0.01, max_iterations=12
    )
    assert converged.all()
    np.testing.assert_allclose(table["q"], 2.5, rtol=0.01)
    np.testing.assert_allclose(table["r"], held_r, rtol=0.01, atol=1e-9)
    np.testing.assert_allclose(measure(latents)["q"], table["q"])


def test_a_scan_finds_the_far_crossing_when_the_local_slope_leads_into_the_constraint():
    def measure(latents):  # falls to a minimum at z0 = 1, then rises: r_paper near the polarity boundary
        return pd.DataFrame({"q": (np.asarray(latents, dtype=np.float64)[:, 0] - 1.0) ** 2})

    def stop_at_boundary(latents, origins):  # like keep_sides: no move below z0 = -0.5
        latents = np.array(latents, dtype=np.float64)
        latents[:, 0] = np.maximum(latents[:, 0], -0.5)
        return latents

    starts = np.zeros((3, 100))
    normals = np.eye(100)[:1]
    jacobian = np.array([[-2.0]])  # dq/dt at the start: towards the minimum, away from q = 9 at t = 4
    targets = np.full((3, 1), 9.0)
    options = {"tolerance": 0.01, "constrain": stop_at_boundary}
    _, plain_table, plain = solve_targets(measure, starts, normals, jacobian, ["q"], targets, **options)
    assert not plain.any()  # Newton walks to the boundary (q = 2.25) and stays there
    np.testing.assert_allclose(plain_table["q"], 2.25)
    latents, table, converged = solve_targets(
        measure, starts, normals, jacobian, ["q"], targets, scan=(-2.0, -1.0, 1.0, 2.0, 3.0, 5.0), **options
    )
    assert converged.all()
    np.testing.assert_allclose(latents[:, 0], 4.0, rtol=0.01)
    np.testing.assert_allclose(table["q"], 9.0, rtol=0.01)


def test_an_unreachable_target_ends_at_the_closest_approach_not_where_newton_stopped():
    def measure(latents):  # jumps from 1 to 3 at z0 = 0.5 (a threshold mask gaining a piece): 2 is never met
        z0 = np.asarray(latents, dtype=np.float64)[:, 0]
        return pd.DataFrame({"q": np.where(z0 < 0.5, 1.0 + 0.1 * z0, 3.0 + 0.1 * z0)})

    starts = np.zeros((1, 100))
    latents, table, converged = solve_targets(
        measure, starts, np.eye(100)[:1], np.array([[1.0]]), ["q"], np.array([[2.1]]), scan=(-1.0, 1.0, 2.0)
    )
    assert not converged[0]
    closest = float(table["q"].iloc[0])
    assert abs(closest - 2.1) < 1.0  # just below or above the jump, not wherever the last iterate went
    np.testing.assert_allclose(measure(latents)["q"], table["q"])  # the table describes the returned latent


def fit_on_table(tmp_path, columns: dict, properties: tuple[str, ...]) -> dict:
    """``fit_directions`` of an untrained 16 px generator whose 200 samples have the property ``columns``."""
    import dataclasses

    import torch

    from sharpgen.config import build_settings
    from sharpgen.gan.models import NetworkDesign, build_networks
    from sharpgen.gan.sample import SampleSettings
    from sharpgen.latent.fit import DirectionSettings, fit_directions

    torch.manual_seed(0)
    generator, _ = build_networks("default", 16)
    design = dataclasses.asdict(build_settings(NetworkDesign))
    settings = {"architecture": "default", "image_size": 16, "network": design}
    torch.save({"settings": settings, "state_dict": generator.state_dict()},
               tmp_path / "generator.pt")  # fmt: skip
    np.save(tmp_path / "latents.npy", LATENTS[:200].astype(np.float32))
    pd.DataFrame({"sample": np.arange(200), **columns}).to_parquet(tmp_path / "properties.parquet")
    settings = DirectionSettings(
        properties=properties, split_by="lead_pol", label_fraction=0.1, heldout_fraction=0.3, svm_c=1.0,
        traversal_starts=2, max_step=1.0, n_steps=3, local_step=0.2, local_steps=1,
    )  # fmt: skip
    sample_settings = SampleSettings(
        n_samples=200, batch_size=100, stored_patches=None, threshold_gauss=150.0, normalize_mode="resize",
        scale_mm=2.9154, precision="fp32",
    )  # fmt: skip
    return fit_directions(
        tmp_path, tmp_path / "generator.pt", tmp_path / "out", settings, sample_settings, seed=1, device="cpu",
        progress=False,
    )  # fmt: skip


def test_fit_directions_skips_what_the_samples_cannot_support_and_says_why(tmp_path):
    """A generator whose samples all lead with one polarity and never show both strong polarities: the split and
    psep are skipped (each with its reason), tuf still gets its direction, traversals and entanglement."""
    import json

    tuf = 0.1 + 0.01 * LATENTS[:200, 0]
    document = fit_on_table(tmp_path, {"tuf": tuf, "psep": np.nan, "lead_pol": -2.0}, ("tuf", "psep"))
    assert document["split"] is None and set(document["skipped"]) == {"split", "psep"}
    assert "200 samples negative and 0 positive" in document["skipped"]["split"]
    assert list(document["directions"]) == ["tuf"] and set(document["directions"]["tuf"]["sides"]) == {"all"}
    assert json.loads((tmp_path / "out" / "entanglement.json").read_text())["properties"] == ["tuf"]
    assert set(pd.read_parquet(tmp_path / "out" / "traversals.parquet")["direction"]) == {"tuf"}


def test_properties_that_move_together_get_plain_directions_and_no_conditional_ones(tmp_path):
    """Two properties with the same extremes get the same SVM normal: neither has a direction orthogonal to the
    other's. The stage says so and finishes (a barely trained generator does this) instead of failing."""
    import json

    tuf = 0.1 + 0.01 * LATENTS[:200, 0]
    document = fit_on_table(tmp_path, {"tuf": tuf, "area": 2 * tuf, "lead_pol": -2.0}, ("tuf", "area"))
    assert set(document["directions"]) == {"tuf", "area"}
    assert {"tuf conditional", "area conditional"} <= set(document["skipped"])
    assert "span of the other properties' directions" in document["skipped"]["tuf conditional"]
    entanglement = json.loads((tmp_path / "out" / "entanglement.json").read_text())
    assert np.isnan(entanglement["conditional"]["tuf"]["area"]) and entanglement["plain"]["tuf"]["tuf"] == 1.0
    traversals = pd.read_parquet(tmp_path / "out" / "traversals.parquet")
    assert set(traversals["kind"]) == {"plain", "local"}  # the local directions need no SVM, so they still exist


def test_min_norm_steps_meet_the_wanted_change_and_move_nothing_else():
    from sharpgen.latent.steering import min_norm_steps

    jacobian = RNG.standard_normal((4, 2, 100))
    change = RNG.standard_normal((4, 2))
    steps = min_norm_steps(jacobian, change)
    np.testing.assert_allclose(np.einsum("npd,nd->np", jacobian, steps), change, atol=1e-5)
    # the shortest such step lies in the span of the gradients: nothing orthogonal to them is moved
    for gradients, step in zip(jacobian, steps, strict=True):
        coefficients, *_ = np.linalg.lstsq(gradients.T, step, rcond=None)
        np.testing.assert_allclose(gradients.T @ coefficients, step, atol=1e-8)


def test_local_steering_meets_a_target_behind_a_jump_and_holds_a_second_property():
    """q jumps by 0.3 where a 'mask gains a pixel' (z0 + z5 crosses 0.8), r is smooth. The first-order steps see
    only the smooth part (the soft gradients), so a target inside the jump's shadow needs the side moves."""
    from sharpgen.latent.steering import solve_local

    def measure(latents):
        z = np.asarray(latents, dtype=np.float64)
        jump = np.where(z[:, 0] + z[:, 5] > 0.8, 0.3, 0.0)
        return pd.DataFrame({"q": z[:, 0] + jump, "r": z[:, 1] + 0.5 * z[:, 0]})

    def jacobian(latents, names):
        rows = {"q": np.eye(100)[0], "r": np.eye(100)[1] + 0.5 * np.eye(100)[0]}
        return np.stack([np.stack([rows[name] for name in names])] * len(latents))

    starts = RNG.standard_normal((10, 100)) * 0.2
    held_r = measure(starts)["r"].to_numpy()
    targets = np.stack([np.full(10, 1.0), held_r], axis=1)
    latents, table, converged = solve_local(
        measure, jacobian, starts, ["q", "r"], targets, tolerance=0.02, floors=[0.1, 0.1]
    )
    assert converged.all()
    np.testing.assert_allclose(table["q"], 1.0, atol=0.02)
    assert np.all(np.abs(table["r"] - held_r) <= 0.02 * np.maximum(np.abs(held_r), 0.1))
    np.testing.assert_allclose(measure(latents)[["q", "r"]], table[["q", "r"]])  # the table describes the latents


def test_a_held_property_is_a_constraint_when_the_target_cannot_be_met_with_it_held():
    """q and r both grow with z0, and only z0 moves r: q = 1 from q = 0 is reachable through z1 alone up to
    q = 0.5 (z1 saturates), beyond only by moving r too. Held, r stays within the tolerance of its start and q
    gets as close as that allows (not converged); not held, r is free and q is met."""
    from sharpgen.latent.steering import solve_local

    def measure(latents):
        z = np.asarray(latents, dtype=np.float64)
        return pd.DataFrame({"q": z[:, 0] + 0.5 * np.tanh(z[:, 1]), "r": 1.0 + z[:, 0]})

    def jacobian(latents, names):
        z = np.asarray(latents, dtype=np.float64)
        q = np.zeros((len(z), 100))
        q[:, 0], q[:, 1] = 1.0, 0.5 / np.cosh(z[:, 1]) ** 2
        r = np.zeros((len(z), 100))
        r[:, 0] = 1.0
        rows = {"q": q, "r": r}
        return np.stack([rows[name] for name in names], axis=1)

    starts = np.zeros((4, 100))
    targets = np.stack([np.full(4, 1.0), np.ones(4)], axis=1)  # q = 1, r held at its start's 1
    latents, table, converged = solve_local(
        measure, jacobian, starts, ["q", "r"], targets, tolerance=0.05, floors=[0.1, 0.1], held=[False, True]
    )
    assert not converged.any()
    assert np.all(np.abs(table["r"] - 1.0) <= 0.05)  # held: within the tolerance of its start
    assert np.all(table["q"] > 0.45)  # as far as z1 and the held r's tolerance allow
    np.testing.assert_allclose(measure(latents)[["q", "r"]], table[["q", "r"]])
    free, free_table, free_converged = solve_local(
        measure, jacobian, starts, ["q"], targets[:, :1], tolerance=0.05, floors=[0.1]
    )
    assert free_converged.all() and np.all(np.abs(free_table["q"] - 1.0) <= 0.05)


def test_a_local_traversal_moves_its_property_by_the_wanted_steps_and_holds_the_others():
    from sharpgen.latent.steering import follow_local

    def measure(latents):
        z = np.asarray(latents, dtype=np.float64)
        return pd.DataFrame({"q": z[:, 0] + z[:, 1], "r": z[:, 1] - z[:, 2]})

    def jacobian(latents, names):
        rows = {"q": np.eye(100)[0] + np.eye(100)[1], "r": np.eye(100)[1] - np.eye(100)[2]}
        return np.stack([np.stack([rows[name] for name in names])] * len(latents))

    starts = RNG.standard_normal((3, 100))
    table = follow_local(measure, jacobian, starts, ["q", "r"], "q", spread=[2.0, 1.0], step=0.5, count=2)
    assert list(table["step"].unique()) == [-1.0, -0.5, 0.0, 0.5, 1.0] and len(table) == 15
    base = table[table["step"] == 0].set_index("start")
    for _, row in table.iterrows():
        assert row["q"] - base.loc[row["start"], "q"] == pytest.approx(
            2.0 * row["step"], abs=1e-4
        )  # step x spread of q
        assert row["r"] == pytest.approx(base.loc[row["start"], "r"], abs=1e-4)
