"""The ``retrieve`` stage: produce ``raw/<source>/*.fits`` + ``raw/<source>/manifest.parquet`` from a source."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ..config import build_settings
from ..errors import SharpgenError

SOURCES = ("synthetic", "jsoc", "fits")


def retrieve(
    source: str,
    out_dir: str | os.PathLike,
    settings: dict | None = None,
    seed: int = 23,
    workers: int = 1,
    progress: bool = True,
) -> pd.DataFrame:
    """Fill ``out_dir`` with the records of ``source`` and return its manifest (also written to ``manifest.parquet``).

    ``settings`` is the config section named like the source (validated here, defaults filled).
    """
    if source not in SOURCES:
        raise SharpgenError(f"unknown source {source!r} (choose one of: {', '.join(SOURCES)})")
    out_dir = Path(out_dir)
    if source == "jsoc":
        from .sources.jsoc import JsocSettings, retrieve_jsoc

        return retrieve_jsoc(out_dir, build_settings(JsocSettings, settings), workers=workers, progress=progress)
    if source == "fits":
        from .sources.local import LocalFitsSettings, retrieve_fits

        return retrieve_fits(out_dir, build_settings(LocalFitsSettings, settings), workers=workers, progress=progress)
    from .sources.synthetic import SyntheticSettings, generate_synthetic

    return generate_synthetic(
        Path(out_dir),
        build_settings(SyntheticSettings, settings),
        seed=seed,
        workers=workers,
        progress=progress,
    )
