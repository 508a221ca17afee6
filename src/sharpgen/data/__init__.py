"""Stages 1-2, retrieve and normalize: SHARP records (synthetic, JSOC or a FITS folder) to normalized patches.

Rules ``retrieve`` and ``normalize``; conda env ``envs/data.yaml``; results ``raw/`` and ``data/``.
Nothing here imports torch.
"""
