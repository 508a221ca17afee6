"""End to end: `snakemake` on config/test.yaml runs every stage that exists (retrieve -> ... -> build_index)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
import zarr

from sharpgen.data.fitsio import read_sharp
from sharpgen.physics import paper_properties

pytestmark = pytest.mark.slow


def snakemake(repo_root: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the venv's `sharpgen`
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", *args],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


# `test_run` (the results directory of one complete run of config/test.yaml) is a session fixture in conftest.py,
# shared with tests/test_caching.py so that the pipeline runs once per test session.


def test_retrieve_writes_every_synthetic_record_and_its_manifest(test_run, repo_root):
    n_patches = yaml.safe_load((repo_root / "config" / "test.yaml").read_text())["synthetic"]["n_patches"]
    raw = test_run / "raw" / "synthetic"
    manifest = pd.read_parquet(raw / "manifest.parquet")
    assert len(manifest) == n_patches
    assert (manifest["status"] == "ok").all()
    for name in manifest["file"]:
        record = read_sharp(raw / name)
        assert record.header["BUNIT"] == "G"
        assert record.pixel_size_mm[0] == pytest.approx(0.3644, rel=1e-3)


def test_normalize_writes_aligned_patches_and_table(test_run, repo_root):
    config = yaml.safe_load((repo_root / "config" / "test.yaml").read_text())
    patches = zarr.open_array(str(test_run / "data" / "patches.zarr"))
    table = pd.read_parquet(test_run / "data" / "patches.parquet")
    size = config.get("image_size", 128)
    assert patches.shape == (len(table), size, size)
    values = patches[:]
    assert np.isfinite(values).all() and np.abs(values).max() <= 1.0
    np.testing.assert_allclose(table["tuf"], paper_properties(values)["tuf"])  # row i describes patch i
    assert table.groupby("harpnum")["split"].nunique().max() == 1
    assert set(table["split"]) <= {"train", "val", "test"}
    assert (table["usflux"] > 0).all()


def test_train_gan_leaves_a_generator_and_a_full_log(test_run, repo_root):
    gan = yaml.safe_load((repo_root / "config" / "test.yaml").read_text())["gan"]
    steps, every = gan["steps"], gan["preview_every"]
    log = pd.read_csv(test_run / "gan" / "train_log.csv")
    assert list(log["step"]) == list(range(1, steps + 1))
    assert (test_run / "gan" / "generator.pt").is_file()
    assert (test_run / "gan" / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(path.name for path in (test_run / "gan" / "previews").iterdir()) == [
        f"step_{step:06d}.png" for step in range(every, steps + 1, every)
    ]


def test_sample_writes_aligned_latents_patches_and_properties(test_run, repo_root):
    config = yaml.safe_load((repo_root / "config" / "test.yaml").read_text())
    n, stored, size = config["sample"]["n_samples"], config["sample"]["stored_patches"], config["image_size"]
    latents = np.load(test_run / "samples" / "latents.npy")
    patches = zarr.open_array(str(test_run / "samples" / "patches.zarr"))[:]
    table = pd.read_parquet(test_run / "samples" / "properties.parquet")
    assert stored < n  # every latent is measured, only the first patches are kept
    assert latents.shape == (n, 100) and patches.shape == (stored, size, size) and len(table) == n
    assert np.abs(patches).max() <= 1.0
    np.testing.assert_allclose(table["r_paper"][:stored], paper_properties(patches)["r_paper"], equal_nan=True)
    expected = {"tuf", "psep", "r_paper", "tpf", "tnf", "tilt_paper", "area", "usflux", "psep_mm", "r_value"}
    assert expected <= set(table.columns)  # fixed_scale run: physical units too


def test_fit_directions_writes_unit_directions_calibration_and_entanglement(test_run, repo_root):
    properties = yaml.safe_load((repo_root / "config" / "test.yaml").read_text())["directions"]["properties"]
    document = json.loads((test_run / "directions" / "directions.json").read_text())
    # The default splits by the leading polarity (lead_pol); a property or the split that the tiny generator's
    # samples cannot support is skipped, saying why. Which happens is what the GAN learned: both must be well formed.
    skipped = document["skipped"]
    assert list(document["directions"]) == [name for name in properties if name not in skipped]
    assert all(reason.startswith(f"{name} skipped") for name, reason in skipped.items() if name != "split")
    if document["split"] is None:
        assert skipped["split"].startswith("split by lead_pol skipped")
        sides = {"all"}
    else:
        assert document["split"]["property"] == "lead_pol" and "split" not in skipped
        sides = {"low", "high"}
    for entry in document["directions"].values():
        assert set(entry["sides"]) == sides
        for fit in entry["sides"].values():
            assert np.linalg.norm(fit["normal"]) == pytest.approx(1.0)
        assert 0.0 <= entry["heldout_accuracy"] <= 1.0
    entanglement = json.loads((test_run / "directions" / "entanglement.json").read_text())
    for kind in ("plain", "conditional", "local"):  # relative to the own slope: 1, or NaN where that is 0/NaN
        diagonal = [entanglement[kind][name][name] for name in entanglement["properties"]]
        assert all(math.isnan(value) or value == pytest.approx(1.0) for value in diagonal)
    curves = pd.read_parquet(test_run / "directions" / "calibration.parquet")
    assert set(curves["direction"]) == set(document["directions"]) and set(curves["kind"]) == {
        "plain",
        "conditional",
        "local",
    }
    assert (curves.loc[curves["step"] == 0, "tuf_median"] == 0).all()  # changes are relative to step 0


def test_generate_and_edit_write_fits_png_and_table_from_the_run(test_run, tmp_path):
    target = float(pd.read_parquet(test_run / "samples" / "properties.parquet")["tuf"].median())
    sharpgen = [sys.executable, "-m", "sharpgen.cli"]
    out = tmp_path / "generated"
    proc = subprocess.run(
        [*sharpgen, "generate", "--run-dir", str(test_run), "--target", f"tuf={target}", "--n", "3",
         "--out-dir", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = pd.read_csv(out / "generated.csv")
    assert len(table) == 3 and {"target_tuf", "achieved_tuf", "converged"} <= set(table.columns)
    assert (out / "generated.png").is_file() and all((out / name).is_file() for name in table["file"])
    edited = tmp_path / "edited"
    proc = subprocess.run(
        [*sharpgen, "edit", "--run-dir", str(test_run), "--latents", str(out / "latents.npy"), "--step", "tuf=1.5",
         "--keep", "tpf", "--out-dir", str(edited)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert np.load(edited / "latents.npy").shape == (3, 100)
    proc = subprocess.run(
        [*sharpgen, "generate", "--run-dir", str(test_run), "--target", "tuf=5", "--out-dir", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2 and "out of reach" in proc.stderr and "Traceback" not in proc.stderr


def test_train_ssl_and_build_index_make_a_searchable_index_of_every_patch(test_run):
    from sharpgen.retrieval.index import search
    from sharpgen.retrieval.search import Retriever

    log = pd.read_csv(test_run / "retrieval" / "ssl" / "train_log.csv")
    assert {"loss", "output_std", "effective_rank"} <= set(log.columns) and np.isfinite(log["loss"]).all()
    table = pd.read_parquet(test_run / "data" / "patches.parquet")
    embeddings = np.load(test_run / "retrieval" / "embeddings.npy")
    assert embeddings.shape[0] == len(table) and np.isfinite(embeddings).all()
    retriever = Retriever.from_run(test_run, "cpu")
    index = retriever.index
    assert len(index) == len(table) and index.physics is not None  # the default hybrid search
    vectors = retriever.embed(retriever.real_patches(np.arange(5)))  # measured as a query is: as indexed
    found = search(index, vectors, k=3)
    assert list(found.rows[:, 0]) == [0, 1, 2, 3, 4]  # each patch is its own nearest neighbour
    np.testing.assert_allclose(found.similarity[:, 0], 1.0, atol=1e-4)
    only_test = search(index, vectors, k=2, filters={"splits": ["test"]})
    assert set(table["split"].to_numpy()[only_test.rows.ravel()]) == {"test"}


def test_evaluate_retrieval_scores_ssl_and_every_baseline(test_run):
    document = json.loads((test_run / "retrieval" / "evaluation.json").read_text())
    assert document["n_queries"] == 16 and document["k"] == 3  # 20 asked, but only 16 patches are stored
    assert set(document["methods"]) == {"ssl", "ssl_embedding", "pixel", "pca", "random"}  # the hybrid, then alone
    assert 1.0 <= document["embedding"]["effective_rank"] <= document["embedding"]["dim"]
    assert 0.0 <= document["embedding"]["cosine_spread"] <= 2.0
    same = document["same_region"]  # test.yaml: 24 records, a quarter of the regions observed 3 times
    assert same["n_queries"] == 0 or set(same["methods"]) == {*document["methods"], "physical", "physical_mahalanobis"}
    for scores in document["methods"].values():
        assert 0.0 <= scores["agreement"]["lead_polarity"] <= 1.0 and 0.0 <= scores["agreement"]["tilt_sign"] <= 1.0
        for kind in ("top1", "topk_mean"):
            assert set(scores[kind]) == {"tuf", "psep", "r_paper", "tpf", "tnf"}
            pearson = scores[kind]["tuf"]["pearson"]  # NaN when every query met the same real patch
            assert (math.isnan(pearson) or -1.0 <= pearson <= 1.0) and scores[kind]["tuf"]["n"] == 16
    for name in ("evaluation_scatter.png", "examples.png"):
        assert (test_run / "retrieval" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_query_from_targets_latents_and_fits_returns_real_matches(test_run, tmp_path, real_sharp_files):
    from sharpgen.data.measure import patch_properties

    sharpgen = [sys.executable, "-m", "sharpgen.cli"]
    table = pd.read_parquet(test_run / "data" / "patches.parquet")
    patches = zarr.open_array(str(test_run / "data" / "patches.zarr"), mode="r")[:]
    norm = json.loads((test_run / "data" / "normalization.json").read_text())
    target = float(pd.read_parquet(test_run / "samples" / "properties.parquet")["tuf"].median())
    runs = {
        "targets": ["--target", f"tuf={target}", "--n", "2", "--split", "train"],
        "latents": ["--latents", str(test_run / "samples" / "latents.npy"), "--rows", "0", "3"],
        "fits": ["--fits", str(real_sharp_files[0])],  # normalized as data/normalization.json says
    }
    for name, options in runs.items():
        out = tmp_path / name
        proc = subprocess.run(
            [*sharpgen, "query", "--run-dir", str(test_run), "--k", "4", "--out-dir", str(out), *options],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        matches = pd.read_csv(out / "matches.csv")
        queries = 1 if name == "fits" else 2
        assert len(matches) == 4 * queries and list(matches["rank"][:4]) == [1, 2, 3, 4]
        assert {"harpnum", "t_rec", "similarity", "tuf", "query_tuf", "query_label"} <= set(matches.columns)
        assert {"usflux", "query_usflux", "native_usflux"} <= set(matches.columns)  # fixed_scale: Mx too
        assert (matches.groupby("query")["similarity"].diff().dropna() <= 1e-6).all()  # best first
        np.testing.assert_array_equal(matches["harpnum"], table["harpnum"].to_numpy()[matches["row"]])
        on_patch = patch_properties(patches[matches["row"].to_numpy()], norm["threshold_gauss"], norm["pixel_mm"])
        np.testing.assert_allclose(matches["usflux"], on_patch["usflux"], rtol=1e-5)  # as the query's: on the patch
        np.testing.assert_allclose(matches["native_usflux"], table["usflux"].to_numpy()[matches["row"]], rtol=1e-6)
        assert (out / "query.png").is_file()
    assert set(pd.read_csv(tmp_path / "targets" / "matches.csv")["split"]) == {"train"}
    assert (tmp_path / "targets" / "generated.csv").is_file()
    proc = subprocess.run(
        [*sharpgen, "query", "--run-dir", str(test_run), "--fits", "missing.fits", "--out-dir", str(tmp_path / "x")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2 and "missing.fits" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "rule",
    [
        "retrieve",
        "normalize",
        "train_gan",
        "sample",
        "fit_directions",
        "train_ssl",
        "build_index",
        "evaluate_retrieval",
    ],
)
def test_every_rule_leaves_a_log_and_a_benchmark(test_run, rule):
    assert (test_run / "logs" / f"{rule}.log").is_file()
    assert (test_run / "benchmarks" / f"{rule}.tsv").is_file()


def test_fits_source_on_real_sharps_reproduces_their_r_value(repo_root, real_sharp_files, tmp_path):
    config = tmp_path / "fits.yaml"
    config.write_text(
        f"results_dir: {tmp_path / 'r'}\nsource: fits\nfits:\n  path: {real_sharp_files[0].parent}\n"
        "  segment: magnetogram\nnormalize:\n  mode: resize\n  chunk_size: 2\n"
    )
    table_path = tmp_path / "r" / "data" / "patches.parquet"
    proc = snakemake(repo_root, str(table_path), "--configfile", str(config))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    table = pd.read_parquet(table_path)
    assert len(table) == 3
    assert (table["r_value"] - table["r_value_header"]).abs().max() <= 0.01


def test_workflow_lints_clean(repo_root):
    proc = snakemake(repo_root, "--configfile", "config/test.yaml", "--lint")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_finished_run_has_nothing_left_to_do(test_run, repo_root):
    proc = snakemake(repo_root, "--configfile", "config/test.yaml", "--config", f"results_dir={test_run}", "-n")
    assert proc.returncode == 0
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_unknown_config_key_stops_the_run_naming_it(repo_root, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"results_dir: {tmp_path / 'r'}\nsynthetic:\n  n_patchez: 3\n")
    proc = snakemake(repo_root, "--configfile", str(bad), "-n")
    assert proc.returncode != 0
    assert "synthetic.n_patchez" in proc.stdout + proc.stderr
    assert not (tmp_path / "r").exists()
