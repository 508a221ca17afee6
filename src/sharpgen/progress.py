"""Progress bars with an ETA for the long stages, readable in a terminal and in a rule's log file."""

from __future__ import annotations

import sys

LOG_FILE_INTERVAL_S = 30.0
"""Seconds between updates when stderr is not a terminal (a Snakemake ``log:`` file): a line every 30 s
rather than ten a second, so logs stay small and ``tail`` shows the ETA."""


def progress_bar(**kwargs):
    """A ``tqdm`` bar on stderr; ``kwargs`` as for ``tqdm`` (``total``, ``desc``, ``unit``, ``disable``, ...)."""
    from tqdm import tqdm

    if not sys.stderr.isatty():
        kwargs.setdefault("mininterval", LOG_FILE_INTERVAL_S)
    return tqdm(**kwargs)
