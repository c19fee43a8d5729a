"""The progress display of a recording: a live line on a terminal, plain lines in a log."""

import io
import os
import sys

from plugtrace.recording import Progress


def _read_all(fd: int) -> str:
    out = b""
    os.set_blocking(fd, False)
    try:
        while chunk := os.read(fd, 65536):
            out += chunk
    except BlockingIOError:
        pass
    return out.decode(errors="replace")


def test_on_a_terminal_the_line_shows_requests_and_iops(monkeypatch):
    master, slave = os.openpty()
    with os.fdopen(slave, "w", buffering=1) as tty:
        monkeypatch.setattr(sys, "stderr", tty)
        progress = Progress(total_s=5.0, quiet=False)
        progress(1.0, 1000)
        progress(2.0, 3500)
        progress.done()
        text = _read_all(master)
    os.close(master)
    assert "3,500 requests" in text and "2,500 IOPS" in text and "2.0s / 5s" in text


def test_in_a_log_a_plain_line_every_few_seconds(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    progress = Progress(total_s=None, quiet=False)
    for second in range(1, 12):
        progress(float(second), second * 100)
    progress.done()
    lines = log.getvalue().splitlines()
    assert len(lines) == 3 and "\r" not in log.getvalue()  # at 1 s, 6 s and 11 s
    assert lines[-1].split() == ["11.0s", "1,100", "requests", "100", "IOPS"]


def test_quiet_shows_nothing(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    progress = Progress(total_s=3.0, quiet=True)
    progress(1.0, 10)
    progress.done()
    assert log.getvalue() == ""
