"""Every shipped config finishes: config/paper.yaml and config/config.yaml, each run end to end through every rule
and `--report` with the synthetic source and tiny sizes, keeping what makes the config itself (image size,
networks, normalization mode, index kind, directions). A config that cannot finish fails here, not on a cluster.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from workflow_helpers import REPO_ROOT, run_snakemake, summary

from sharpgen.config import validate_config

pytestmark = pytest.mark.slow

TINY = {  # sizes, steps and the source only
    "source": "synthetic",
    "synthetic": {"n_patches": 24, "max_naxis": 400},
    "normalize": {"chunk_size": 8},
    "gan": {"steps": 20, "batch_size": 8, "checkpoint_every": 10, "preview_every": 10},
    "sample": {"n_samples": 64, "stored_patches": 16, "batch_size": 32},
    "directions": {"label_fraction": 0.3, "traversal_starts": 2, "n_steps": 3, "local_steps": 1},
    "label_score": {"per_target": 1, "properties": ["tuf", "psep"]},
    "ssl": {"epochs": 1, "batch_size": 8, "checkpoint_every": 2},
    "retrieval_eval": {"n_queries": 8, "k": 3, "pca_components": 4},
}
KEPT = (  # what the shipped config decides and the tiny run must keep
    ("image_size",), ("gan", "architecture"), ("gan", "loss"), ("ssl", "architecture"), ("normalize", "mode"),
    ("index", "kind"), ("directions", "properties"), ("directions", "split_by"),
)  # fmt: skip
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def merged(*configs: dict) -> dict:
    """Later configs over earlier ones, key by key, as Snakemake merges its config files."""
    result: dict = {}
    for config in configs:
        for key, value in config.items():
            if isinstance(value, dict) and isinstance(result.get(key), dict):
                result[key] = merged(result[key], value)
            else:
                result[key] = copy.deepcopy(value)
    return result


def value_at(config: dict, path: tuple[str, ...]):
    for key in path:
        config = config[key]
    return config


@pytest.mark.parametrize("name", ["paper.yaml", "config.yaml"])
def test_shipped_config_runs_every_rule_and_the_report_at_tiny_size(name, tmp_path):
    default = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    shipped = yaml.safe_load((REPO_ROOT / "config" / name).read_text())
    tiny = {**TINY, "results_dir": str(tmp_path / "results")}
    as_shipped, as_run = validate_config(merged(default, shipped)), validate_config(merged(default, shipped, tiny))
    for path in KEPT:
        assert value_at(as_run, path) == value_at(as_shipped, path), ".".join(path)
    override = tmp_path / "tiny.yaml"
    override.write_text(yaml.safe_dump(tiny))
    configfiles = ("--configfile", f"config/{name}", str(override))

    run = run_snakemake("--cores", "2", *configfiles)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    report = tmp_path / "report.html"
    made = run_snakemake("--cores", "1", *configfiles, "--report", str(report))
    assert made.returncode == 0, (made.stdout + made.stderr)[-4000:]

    listed = run_snakemake("--cores", "1", *configfiles, "--summary")
    outputs = summary(listed.stdout)
    assert outputs and all(row["status"] == "ok" and row["plan"] == "no update" for row in outputs), listed.stdout
    pngs = {Path(row["output_file"]): row["rule"] for row in outputs if row["output_file"].endswith(".png")}
    figure_rules = {row["rule"] for row in outputs if row["rule"].startswith("figure_")}
    assert figure_rules and figure_rules <= set(pngs.values())  # every figure rule left its PNG
    html = report.read_text()
    for png, rule in pngs.items():
        assert png.read_bytes()[:8] == PNG_SIGNATURE, png
        if rule in figure_rules or rule == "evaluate_retrieval":  # the figures (train_gan's previews are not)
            assert png.name in html, f"{png.name} is not in the report"
