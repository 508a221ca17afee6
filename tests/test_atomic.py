"""Artefacts appear complete or not at all."""

from __future__ import annotations

import os
import stat

import pytest

from sharpgen.atomic import TEMP_PREFIX, atomic_path, write_text_atomic


def test_write_replaces_target_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    write_text_atomic(target, "first")
    write_text_atomic(target, "second")
    assert target.read_text() == "second"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_failed_write_keeps_previous_artefact_and_cleans_up(tmp_path):
    target = tmp_path / "out.txt"
    write_text_atomic(target, "complete")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half writ")
        raise RuntimeError("interrupted")
    assert target.read_text() == "complete"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_artefacts_get_the_usual_permissions_not_mkstemps_private_ones(tmp_path):
    mask = os.umask(0)
    os.umask(mask)
    path = write_text_atomic(tmp_path / "table.csv", "a,b\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask  # readable by the group, as any other file
