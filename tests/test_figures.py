"""Figures: each plot function writes a PNG from small arrays and refuses bad input in one line; `sharpgen figure`
draws every figure of a results directory with its numbers; the workflow run draws them all and its report
carries every figure with its caption."""

from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr
from matplotlib import image as mpimg
from workflow_helpers import run_snakemake

from sharpgen.cli import main
from sharpgen.data.measure import patch_properties
from sharpgen.errors import SharpgenError
from sharpgen.figures import pipeline as pipeline_figure
from sharpgen.figures.gan import (
    plot_extremes,
    plot_gan_training,
    plot_power_spectra,
    plot_property_distributions,
    plot_real_vs_generated,
)
from sharpgen.figures.pipeline import parse_rulegraph, plot_pipeline
from sharpgen.figures.registry import FIGURES, Options, make_figure
from sharpgen.figures.retrieval import embedding_layout, plot_embedding_map, plot_ssl_training
from sharpgen.gan.fidelity import distribution_distance
from sharpgen.physics import paper_properties
from sharpgen.properties import HISTOGRAM_PROPERTIES
from sharpgen.run import RunLayout

DIRECTION_FIGURES = (
    "latent-space", "traversals", "calibration", "entanglement", "label-score", "conditional-edit",
    "retrieval-comparison",
)  # fmt: skip
"""Figures that need a trained generator and its directions, or an SSL encoder: drawn by the test pipeline run
(tests below) and unit-tested in test_direction_figures.py, test_generate.py and test_retrieval_eval.py."""

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SIZE = 32

RULEGRAPH = """digraph snakemake_dag {
    graph[bgcolor=white, margin=0];
	0[label = "all", color = "0.00 0.6 0.85", style="rounded"];
	1[label = "retrieve", color = "0.33 0.6 0.85", style="rounded"];
	2[label = "normalize", color = "0.25 0.6 0.85", style="rounded"];
	3[label = "train_gan", color = "0.50 0.6 0.85", style="rounded"];
	4[label = "figure_patches", color = "0.42 0.6 0.85", style="rounded"];
	5[label = "figure_properties", color = "0.17 0.6 0.85", style="rounded"];
	1 -> 0
	1 -> 2
	2 -> 3
	2 -> 4
	3 -> 4
	3 -> 5
	4 -> 0
	5 -> 0
}
"""


def bipoles(n: int, seed: int, size: int = SIZE) -> np.ndarray:
    """``(n, size, size)`` normalized patches: a Gaussian bipole of random strength and separation, plus noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size].astype(np.float32)
    patches = np.empty((n, size, size), dtype=np.float32)
    for i in range(n):
        half = rng.uniform(2, size / 4)
        strength, width = rng.uniform(0.3, 1.5), rng.uniform(1.5, 3.0)
        leading, following = (np.exp(-((x - cx) ** 2 + (y - size / 2) ** 2) / (2 * width**2)) for cx in
                              (size / 2 - half, size / 2 + half))  # fmt: skip
        field = strength * (leading - following) + rng.normal(0, 0.01, (size, size))
        patches[i] = np.clip(field, -1, 1)
    return patches


def assert_png(path: Path, min_side: int = 100) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    height, width = mpimg.imread(path).shape[:2]
    assert height >= min_side and width >= min_side
    assert not list(path.parent.glob(".tmp-*"))  # written atomically: no temporary file left


def property_table(patches: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(paper_properties(patches))


def gan_log(steps: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "step": np.arange(1, steps + 1), "d_loss": 1 + rng.normal(0, 0.2, steps), "g_loss": rng.normal(0.5, 0.3, steps),
        "real_acc": rng.uniform(0.4, 1, steps), "fake_acc": rng.uniform(0.4, 1, steps),
        "seconds_per_step": np.full(steps, 0.1),
    })  # fmt: skip


def ssl_log(steps: int = 40) -> pd.DataFrame:
    return pd.DataFrame({
        "step": np.arange(1, steps + 1), "epoch": np.arange(steps) // 10, "loss": -1 + np.exp(-np.arange(steps) / 8),
        "output_std": np.full(steps, 0.9), "effective_rank": np.linspace(8, 3, steps),
        "seconds_per_step": np.full(steps, 0.1),
    })  # fmt: skip


# ----------------------------------------------------------------------------------------- plot functions


def test_real_vs_generated_writes_a_png_of_both_sets(tmp_path):
    real, fake = bipoles(9, 0), bipoles(9, 1)
    numbers = plot_real_vs_generated(real, fake, tmp_path / "patches.png", pixel_mm=2.9)
    assert_png(tmp_path / "patches.png")
    assert numbers["n_real"] == numbers["n_generated"] == 9 and numbers["image_size"] == SIZE
    assert numbers["real_mean_abs_kg"] == pytest.approx(float(np.abs(real).mean()))


@pytest.mark.parametrize(
    ("real", "generated", "message"),
    [
        (np.zeros((4, 32, 32)), np.zeros((4, 16, 16)), "32 px"),
        (np.zeros((4, 32, 16)), np.zeros((4, 32, 16)), "square"),
        (np.zeros((0, 32, 32)), np.zeros((4, 32, 32)), "non-empty"),
        (np.full((2, 32, 32), np.nan), np.zeros((2, 32, 32)), "NaN"),
    ],
)
def test_real_vs_generated_refuses_patches_it_cannot_show(tmp_path, real, generated, message):
    out = tmp_path / "patches.png"
    out.write_bytes(b"previous figure")
    with pytest.raises(SharpgenError, match=message):
        plot_real_vs_generated(real, generated, out)
    assert out.read_bytes() == b"previous figure"  # a failed figure leaves the old file alone


def test_property_distributions_report_the_ks_statistic_of_every_property(tmp_path):
    real, fake = property_table(bipoles(30, 0)), property_table(bipoles(40, 1))
    numbers = plot_property_distributions(real, fake, tmp_path / "properties.png")
    assert_png(tmp_path / "properties.png")
    assert list(numbers["properties"]) == list(HISTOGRAM_PROPERTIES)
    for name in HISTOGRAM_PROPERTIES:
        expected = distribution_distance(real[name].to_numpy(), fake[name].to_numpy())["ks"]
        assert numbers["properties"][name]["ks"] == pytest.approx(expected)
    same = plot_property_distributions(real, real, tmp_path / "same.png")
    assert all(same["properties"][name]["ks"] == 0 for name in HISTOGRAM_PROPERTIES)


def test_property_distributions_name_the_missing_column(tmp_path):
    real = property_table(bipoles(5, 0))
    with pytest.raises(SharpgenError, match="generated property table lacks the column.*r_paper"):
        plot_property_distributions(real, real.drop(columns=["r_paper"]), tmp_path / "p.png")
    with pytest.raises(SharpgenError, match="real property table is empty"):
        plot_property_distributions(real.iloc[:0], real, tmp_path / "p.png")
    assert not (tmp_path / "p.png").exists()


def test_extremes_count_sunspot_peaks_and_compare_the_tails_of_flux_and_separation(tmp_path):
    real = pd.DataFrame(patch_properties(bipoles(40, 0), 150.0, 2.9154))
    weak = pd.DataFrame(patch_properties(bipoles(40, 1) * 0.5, 150.0, 2.9154))  # no patch reaches 900 G
    numbers = plot_extremes(real, weak, tmp_path / "extremes.png")
    assert_png(tmp_path / "extremes.png")
    assert numbers["peak"]["real_sunspot_fraction"] == pytest.approx(np.mean(real["peak"] >= 0.9))
    assert numbers["peak"]["generated_sunspot_fraction"] == 0.0
    assert set(numbers["tails"]) == {"tuf", "psep", "usflux", "psep_mm"} and "imbalance" in numbers
    assert numbers["tails"]["usflux"]["q99_relative"] < -0.3  # half the field, about half the flux
    same = plot_extremes(real, real.drop(columns=["imbalance"]), tmp_path / "same.png")
    assert "imbalance" not in same and same["tails"]["tuf"]["q01_relative"] == 0.0
    with pytest.raises(SharpgenError, match="generated property table.*peak"):
        plot_extremes(real, weak.drop(columns=["peak"]), tmp_path / "none.png")


def test_embedding_layout_spreads_thumbnails_over_a_pca_map(tmp_path):
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(200, 16)) * np.r_[5.0, 2.0, np.full(14, 0.1)]  # two dominant directions
    xy, explained, rows = embedding_layout(embeddings, n_thumbnails=9, seed=0)
    assert xy.shape == (200, 2) and 0.5 < explained.sum() <= 1.0 and explained[0] >= explained[1]
    assert 1 <= len(rows) <= 9 and len(set(rows)) == len(rows) and rows.max() < 200
    thumbnails = bipoles(len(rows), 2)
    numbers = plot_embedding_map(xy, thumbnails, rows, tmp_path / "map.png", color=xy[:, 0], explained=explained)
    assert_png(tmp_path / "map.png")
    assert numbers["n_thumbnails"] == len(rows) and numbers["explained_variance"] == pytest.approx(list(explained))


def test_embedding_figures_refuse_inconsistent_input(tmp_path):
    with pytest.raises(SharpgenError, match="embeddings must be"):
        embedding_layout(np.zeros((2, 8)))
    with pytest.raises(SharpgenError, match="NaN"):
        embedding_layout(np.full((10, 4), np.nan))
    with pytest.raises(SharpgenError, match="2 thumbnails for rows"):
        plot_embedding_map(np.zeros((5, 2)), bipoles(2, 0), np.array([0, 1, 2]), tmp_path / "m.png")
    with pytest.raises(SharpgenError, match="colour values"):
        plot_embedding_map(np.zeros((5, 2)), bipoles(1, 0), np.array([0]), tmp_path / "m.png", color=np.zeros(4))


def test_power_spectra_compare_slopes_and_refuse_tiny_patches(tmp_path):
    real, fake = bipoles(12, 0), bipoles(12, 1)
    numbers = plot_power_spectra(real, fake, tmp_path / "spectra.png", pixel_mm=2.9)
    assert_png(tmp_path / "spectra.png")
    assert numbers["k"] == list(range(1, SIZE // 2)) and len(numbers["median_ratio"]) == SIZE // 2 - 1
    assert math.isfinite(numbers["slope"]["real_mean"]) and 0 <= numbers["slope"]["ks"] <= 1
    with pytest.raises(SharpgenError, match="too small"):
        plot_power_spectra(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)), tmp_path / "tiny.png")


def test_training_curves_give_the_final_values_and_name_missing_columns(tmp_path):
    gan = plot_gan_training(gan_log(), tmp_path / "gan.png")
    assert_png(tmp_path / "gan.png")
    assert gan["steps"] == 60 and gan["train_seconds"] == pytest.approx(6.0) and set(gan["final"]) >= {"d_loss"}
    ssl = plot_ssl_training(ssl_log(), tmp_path / "ssl.png")
    assert_png(tmp_path / "ssl.png")
    assert ssl["epochs"] == 4 and ssl["final"]["effective_rank"] == pytest.approx(3.0, abs=0.3)
    assert "property_loss" not in ssl["final"]  # no property head: three panels
    empty_head = ssl_log().assign(property_loss=np.nan)  # a log of property_weight 0 has the column, empty
    assert "property_loss" not in plot_ssl_training(empty_head, tmp_path / "ssl0.png")["final"]
    head = plot_ssl_training(ssl_log().assign(property_loss=np.linspace(1.2, 0.4, 40)), tmp_path / "ssl1.png")
    assert head["final"]["property_loss"] == pytest.approx(0.4, abs=0.05)
    with pytest.raises(SharpgenError, match="SSL training log lacks the column.*effective_rank"):
        plot_ssl_training(ssl_log().drop(columns=["effective_rank"]), tmp_path / "bad.png")
    with pytest.raises(SharpgenError, match="GAN training log lacks the column.*fake_acc"):
        plot_gan_training(gan_log().drop(columns=["fake_acc"]), tmp_path / "bad.png")


def test_rulegraph_is_parsed_and_drawn_without_graphviz(tmp_path, monkeypatch):
    nodes, edges = parse_rulegraph(RULEGRAPH)
    assert nodes["3"] == "train_gan" and ("2", "3") in edges and len(edges) == 8
    monkeypatch.setattr(pipeline_figure.shutil, "which", lambda name: None)  # no Graphviz here
    numbers = plot_pipeline(RULEGRAPH, tmp_path / "pipeline.png")
    assert_png(tmp_path / "pipeline.png")
    assert (
        numbers["renderer"] == "matplotlib" and "figure_patches" in numbers["rules"] and "all" not in numbers["rules"]
    )
    assert numbers["arrows"] == 3  # retrieve -> normalize -> train_gan -> figures; normalize -> figures is implied
    with pytest.raises(SharpgenError, match="needs Graphviz"):
        plot_pipeline(RULEGRAPH, tmp_path / "dot.png", renderer="dot")
    with pytest.raises(SharpgenError, match="no rules found"):
        plot_pipeline("not a graph", tmp_path / "bad.png")
    with pytest.raises(SharpgenError, match="cycle"):
        plot_pipeline('digraph {\n1[label = "a"];\n2[label = "b"];\n1 -> 2\n2 -> 1\n}', tmp_path / "cycle.png")


def test_rulegraph_is_rendered_by_graphviz_when_dot_is_installed(tmp_path, monkeypatch):
    png = tmp_path / "from_dot.png"
    plot_gan_training(gan_log(), png)  # any PNG stands for what `dot -Tpng` prints
    fake_dot = tmp_path / "bin" / "dot"
    fake_dot.parent.mkdir()
    fake_dot.write_text(f"#!/bin/sh\ncat > /dev/null\ncat {png}\n")
    fake_dot.chmod(fake_dot.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake_dot.parent}{os.pathsep}{os.environ['PATH']}")
    numbers = plot_pipeline(RULEGRAPH, tmp_path / "pipeline.png")
    assert numbers["renderer"] == "dot"
    assert (tmp_path / "pipeline.png").read_bytes() == png.read_bytes()


# ------------------------------------------------------------------------------ from a results directory


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    """A results directory with just what the figures read, made of synthetic bipoles (no pipeline run)."""
    results = tmp_path_factory.mktemp("run")
    real, fake = bipoles(24, 0), bipoles(30, 1)
    (results / "data").mkdir()
    (results / "samples").mkdir()
    (results / "gan").mkdir()
    (results / "retrieval" / "ssl").mkdir(parents=True)
    zarr.create_array(store=str(results / "data" / "patches.zarr"), data=real, chunks=(8, SIZE, SIZE))
    zarr.create_array(store=str(results / "samples" / "patches.zarr"), data=fake, chunks=(8, SIZE, SIZE))
    table = property_table(real).assign(
        split=["train"] * 18 + ["test"] * 6, usflux=np.geomspace(1e21, 1e22, 24), pixel_x_mm=2.9154
    )
    table.to_parquet(results / "data" / "patches.parquet")
    property_table(fake).to_parquet(results / "samples" / "properties.parquet")
    normalization = {"mode": "fixed_scale", "image_size": SIZE, "pixel_mm": 2.9154, "clip_gauss": 1000.0,
                     "threshold_gauss": 150.0}  # fmt: skip
    (results / "data" / "normalization.json").write_text(json.dumps(normalization))
    gan_log().to_csv(results / "gan" / "train_log.csv", index=False)
    ssl_log().to_csv(results / "retrieval" / "ssl" / "train_log.csv", index=False)
    np.save(results / "retrieval" / "embeddings.npy", np.random.default_rng(0).normal(size=(24, 8)).astype(np.float32))
    (results / "rulegraph.dot").write_text(RULEGRAPH)
    return results


@pytest.mark.parametrize("name", [name for name in FIGURES if name not in DIRECTION_FIGURES])
def test_make_figure_draws_each_figure_of_a_run_with_its_numbers(small_run, tmp_path, name):
    options = Options(rulegraph=str(small_run / "rulegraph.dot"), renderer="matplotlib")
    make_figure(name, small_run, tmp_path / f"{name}.png", options)
    assert_png(tmp_path / f"{name}.png")
    numbers = json.loads(
        (tmp_path / f"{name}.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the JSON")
    )
    assert numbers["figure"] == name


def test_make_figure_compares_the_train_split_with_the_samples(small_run, tmp_path):
    numbers = make_figure("properties", small_run, tmp_path / "p.png")
    assert numbers["n_real"] == 18 and numbers["n_generated"] == 30


def test_figure_command_lists_every_figure_and_fails_in_one_line(small_run, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["figure", "--help"])
    help_text = capsys.readouterr().out
    assert all(name in help_text for name in FIGURES)
    assert main(["figure", "gan-training", "--results", str(small_run), "--out", str(tmp_path / "g.png")]) == 0
    assert_png(tmp_path / "g.png")
    capsys.readouterr()
    missing = tmp_path / "nowhere"
    assert main(["figure", "properties", "--results", str(missing), "--out", str(tmp_path / "p.png")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("sharpgen: error: ") and "\n" not in error
    assert "data/patches.parquet is missing: run the normalize stage" in error
    assert main(["figure", "pipeline", "--results", str(small_run), "--out", str(tmp_path / "x.png")]) == 2
    assert "--rulegraph" in capsys.readouterr().err
    assert main(["figure", "patches", "--results", str(small_run), "--out", str(tmp_path / "x.pdf")]) == 2
    assert "PNG" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ the workflow's figures

FIGURE_RULES = {  # rule -> figure file under figures/ (and its caption workflow/report/<file>.rst)
    "figure_pipeline": "pipeline",
    "figure_patches": "real_vs_generated",
    "figure_properties": "property_distributions",
    "figure_extremes": "extremes",
    "figure_spectra": "power_spectra",
    "figure_gan_training": "gan_training",
    "figure_embedding": "ssl_embedding",
    "figure_ssl_training": "ssl_training",
    "figure_latent_space": "latent_space",
    "figure_traversals": "traversals",
    "figure_calibration": "calibration",
    "figure_entanglement": "entanglement",
    "figure_conditional_edit": "conditional_edit",
    "figure_retrieval_comparison": "retrieval_comparison",
}
RETRIEVAL_FIGURES = ("evaluation_scatter", "examples")  # rule evaluate_retrieval, under retrieval/


def caption_title(repo_root: Path, name: str) -> str:
    """The bold lead phrase of a caption, without its figure number: ``**Fig. 2 — real patches ...**``."""
    text = (repo_root / "workflow" / "report" / f"{name}.rst").read_text()
    return re.match(r"\*\*(?:Fig\. [^—]+— )?(.+?)\.\*\*", text).group(1)


@pytest.mark.slow
@pytest.mark.parametrize(("rule", "name"), FIGURE_RULES.items())
def test_pipeline_run_draws_every_figure_with_its_numbers_log_and_benchmark(test_run, rule, name):
    layout = RunLayout(test_run)
    assert_png(layout.figure(name))
    assert json.loads(layout.figure_numbers(name).read_text())["figure"]
    assert layout.log(rule).is_file() and layout.benchmark(rule).is_file()


@pytest.mark.slow
def test_report_holds_every_figure_with_its_rendered_caption(test_run, repo_root, tmp_path):
    report = tmp_path / "report.html"
    args = ("--cores", "1", "--configfile", "config/test.yaml", "--config", f"results_dir={test_run}")
    proc = run_snakemake(*args, "--report", str(report))
    assert proc.returncode == 0, proc.stderr[-4000:]
    html = report.read_text()
    for name in FIGURE_RULES.values():
        assert f"{name}.png" in html
        assert caption_title(repo_root, name) in html
    for name, caption in zip(RETRIEVAL_FIGURES, ("retrieval_scatter", "retrieval_examples"), strict=True):
        assert f"{name}.png" in html
        assert caption_title(repo_root, caption) in html
    assert "snakemake.config" not in html  # the Jinja in the captions was rendered
    assert "sharpgen: generate solar active regions" in html  # workflow.rst, the report's front page


def test_extremes_of_a_generator_with_no_defined_separation_still_draw(tmp_path):
    """A barely trained generator's patches may have no two strong polarities: psep is undefined on all."""
    real = pd.DataFrame(patch_properties(bipoles(20, 0), 150.0, 2.9154))
    undefined = real.assign(psep=np.nan, psep_mm=np.nan)
    numbers = plot_extremes(real, undefined, tmp_path / "extremes.png")
    assert_png(tmp_path / "extremes.png")
    assert np.isnan(numbers["tails"]["psep_mm"]["generated_q99"])
