"""`sharpgen.run` owns the results layout: the rules read and write its paths, a missing artefact names the stage
that writes it, and `normalize` records how it normalized so that a user's FITS becomes a patch like the run's."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from workflow_helpers import REPO_ROOT, run_snakemake

from sharpgen.cli import main
from sharpgen.data.normalize import Normalization
from sharpgen.errors import SharpgenError
from sharpgen.figures.registry import FIGURES
from sharpgen.run import ARTEFACTS, STEERING, UNDECLARED, RunLayout


def dry_run_jobs(results: Path) -> dict[str, dict[str, list[str]]]:
    """Per rule of a dry run of config/test.yaml: its input, output, log and benchmark paths, and its shell."""
    proc = run_snakemake(
        "-n", "-p", "--cores", "2", "--configfile", "config/test.yaml", "--config", f"results_dir={results}"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in proc.stdout.splitlines():
        if match := re.match(r"^(?:local)?rule (\w+):$", line):
            current = jobs[match.group(1)] = {"input": [], "output": [], "log": [], "benchmark": [], "shell": []}
        elif current is not None and (match := re.match(r"^\s+(input|output|log|benchmark): (.*)$", line)):
            current[match.group(1)] = match.group(2).split(", ")
        elif current is not None and line.startswith("Shell command: "):
            current["shell"] = [line.removeprefix("Shell command: ")]
    return jobs


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    results = tmp_path_factory.mktemp("planned")
    return RunLayout(results, "synthetic"), dry_run_jobs(results)


def test_every_rule_writes_the_layouts_paths_with_its_log_and_benchmark(planned):
    layout, jobs = planned
    by_path = {str(layout.path(key)): artefact.rule for key, artefact in ARTEFACTS.items()}
    for rule, job in jobs.items():
        if rule == "all":
            continue
        assert job["log"] == [str(layout.log(rule))] and job["benchmark"] == [str(layout.benchmark(rule))]
        for path in job["output"]:
            if Path(path).parent == layout.results_dir / "figures":
                assert rule.startswith("figure_"), path
            else:
                assert by_path.get(path) == rule, f"{rule} writes {path}, which the layout gives to {by_path.get(path)}"
    written = {path for job in jobs.values() for path in job["output"]}
    for key in set(ARTEFACTS) - UNDECLARED:
        path = str(layout.path(key))
        assert path in written or any(Path(p).parent == Path(path) for p in written), f"no rule writes {key}"


def test_figure_rules_declare_every_artefact_their_figure_reads(planned):
    layout, jobs = planned
    drawn = set()
    for rule, job in jobs.items():
        if match := re.search(r"sharpgen figure ([\w-]+)", " ".join(job["shell"])):
            name = match.group(1)
            drawn.add(name)
            assert set(job["input"]) >= {str(layout.path(key)) for key in FIGURES[name].reads}, rule
            if name != "pipeline":
                assert set(job["input"]) == {str(layout.path(key)) for key in FIGURES[name].reads}, rule
    assert drawn == set(FIGURES)


def test_a_missing_artefact_is_one_line_naming_the_stage_that_writes_it(tmp_path, capsys):
    with pytest.raises(SharpgenError, match=r"directions/directions.json is missing: run the fit_directions stage"):
        RunLayout(tmp_path).require("directions")
    assert main(["generate", "--run-dir", str(tmp_path), "--target", "tuf=0.03", "--out-dir", str(tmp_path / "g")]) == 2
    assert main(["figure", "calibration", "--results", str(tmp_path), "--out", str(tmp_path / "c.png")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and "Traceback" not in "\n".join(lines)
    assert f"{tmp_path / ARTEFACTS[STEERING[0]].relative} is missing: run the train_gan stage" in lines[0]
    assert "directions/calibration.parquet is missing: run the fit_directions stage" in lines[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_configfile_that_disagrees_with_the_runs_normalization_names_the_key(tmp_path):
    layout = RunLayout(tmp_path / "run")
    layout.folder("normalization").mkdir(parents=True)
    Normalization("fixed_scale", 64, 2.9154, 1000.0, 150.0).write(layout.path("normalization"))
    agreeing = tmp_path / "agreeing.yaml"
    agreeing.write_text(
        yaml.safe_dump({"image_size": 64, "normalize": {"scale_mm": 2.9154, "threshold_gauss": 150.0, "fill": "zero"}})
    )
    assert Normalization.of_run(layout, agreeing).pixel_mm == 2.9154
    defaults = tmp_path / "defaults.yaml"  # the schema's scale_mm: a 2x zoom of the run's patches
    defaults.write_text(yaml.safe_dump({"image_size": 64, "normalize": {"threshold_gauss": 150.0}}))
    with pytest.raises(SharpgenError, match=r"normalize.scale_mm is 1.4577 but the run in .* used 2.9154"):
        Normalization.of_run(layout, defaults)
    noise = tmp_path / "noise.yaml"  # the record predates the fill key: its patches were padded with zeros
    noise.write_text(yaml.safe_dump({"image_size": 64, "normalize": {"scale_mm": 2.9154, "fill": "noise"}}))
    with pytest.raises(SharpgenError, match=r"normalize.fill is noise but the run in .* used zero"):
        Normalization.of_run(layout, noise)


def test_a_run_made_before_normalization_json_is_told_to_rerun_normalize(tmp_path):
    with pytest.raises(SharpgenError, match=r"data/normalization.json is missing: run the normalize stage"):
        Normalization.of_run(RunLayout(tmp_path))


# -- on the session's finished run of config/test.yaml ----------------------------------------------------------


def run_config(repo_root: Path) -> dict:
    """What the test run was made with: config/config.yaml overlaid with config/test.yaml (as Snakemake does)."""
    config = yaml.safe_load((repo_root / "config" / "config.yaml").read_text())
    for key, value in yaml.safe_load((repo_root / "config" / "test.yaml").read_text()).items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return config


@pytest.mark.slow
def test_normalize_records_the_normalization_the_config_asked_for(test_run, repo_root):
    config = run_config(repo_root)
    record = json.loads(RunLayout(test_run).path("normalization").read_text())
    assert record == {
        "mode": "fixed_scale",
        "image_size": config["image_size"],
        "pixel_mm": config["normalize"]["scale_mm"],
        "clip_gauss": 1000.0,
        "threshold_gauss": config["normalize"]["threshold_gauss"],
        "fill": config["normalize"]["fill"],
    }


def sharpgen(*args) -> subprocess.CompletedProcess:
    """The CLI in a fresh process, run from the checkout (config paths relative to it)."""
    command = [sys.executable, "-m", "sharpgen.cli", *map(str, args)]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def query_fits(run: Path, files, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return sharpgen("query", "--run-dir", run, "--fits", *files, "--k", "3", "--out-dir", out, *extra)


@pytest.mark.slow
def test_query_fits_needs_no_configfile_and_refuses_a_conflicting_one(test_run, repo_root, real_sharp_files, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(run_config(repo_root)))
    plain = query_fits(test_run, real_sharp_files, tmp_path / "plain")
    assert plain.returncode == 0, plain.stderr[-2000:]
    agreeing = query_fits(test_run, real_sharp_files, tmp_path / "agreeing", "--configfile", str(config))
    assert agreeing.returncode == 0, agreeing.stderr[-2000:]
    columns = ["query_label", "rank", "row"]
    found = pd.read_csv(tmp_path / "plain" / "matches.csv")[columns]
    pd.testing.assert_frame_equal(found, pd.read_csv(tmp_path / "agreeing" / "matches.csv")[columns])

    conflicting = query_fits(test_run, real_sharp_files, tmp_path / "conflict", "--configfile", "config/config.yaml")
    assert conflicting.returncode == 2
    assert conflicting.stderr.count("\n") == 1 and "Traceback" not in conflicting.stderr
    assert conflicting.stderr.startswith("sharpgen: error: config/config.yaml: image_size is 64 but the run")
    assert not (tmp_path / "conflict").exists()


@pytest.mark.slow
def test_invert_fits_normalizes_as_the_generators_run_did(test_run, real_sharp_files, tmp_path):
    layout = RunLayout(test_run)
    quick = '{"iterations": 2, "restarts": 1}'
    proc = sharpgen(
        "invert", "--generator", layout.path("generator"), "--fits", real_sharp_files[0], "--out-dir", tmp_path,
        "--settings", quick, "--no-progress",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    recorded = json.loads((tmp_path / "inversion.json").read_text())["normalization"]
    assert recorded == json.loads(layout.path("normalization").read_text())
