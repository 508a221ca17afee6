"""Progress bars: a rule's log file gets a line every 30 s, not ten a second."""

from __future__ import annotations

import io

from sharpgen.progress import LOG_FILE_INTERVAL_S, progress_bar


def test_a_bar_writing_to_a_log_file_updates_rarely(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr("sys.stderr", log)
    with progress_bar(total=1000, desc="stage", file=log) as bar:
        assert bar.mininterval == LOG_FILE_INTERVAL_S
        for _ in range(1000):
            bar.update(1)
    assert log.getvalue().count("stage") <= 3  # start, end (and at most one in between)
    assert "1000/1000" in log.getvalue()
