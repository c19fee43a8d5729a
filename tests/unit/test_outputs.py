"""What report, diff and export write, run through the real CLI: the runs they read are never damaged,
an output is whole or absent, and a node that is not a regular file stays what it was. The cases that need
root (device nodes, small file systems) are in tests/integration/test_faults_outputs.py."""

import hashlib
import os
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import PLUGTRACE


def _cli(*args, timeout=120, **kwargs):
    return subprocess.run([*PLUGTRACE, *map(str, args)], capture_output=True, text=True, timeout=timeout, **kwargs)


def _one_line(p, code, *words):
    """`p` ended with exit `code` and said so in one line naming `words`, without a traceback."""
    assert p.returncode == code, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr and "Exception ignored" not in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    for word in words:
        assert word in p.stderr, p.stderr


def _digest(run: Path) -> dict:
    """Every file of a run directory and a hash of its bytes."""
    return {str(f.relative_to(run)): hashlib.sha256(f.read_bytes()).hexdigest() for f in run.rglob("*") if f.is_file()}


def _run(tmp_path, name="run", **fields) -> Path:
    """A small synthetic run with kernel events (`fields`: more of SyntheticSpec's)."""
    from plugtrace.synthetic import write_run

    return write_run(tmp_path / name, **{"strategy": "defer", "requests": 2000, "kernel": "events", **fields})


def _partials(directory: Path) -> list:
    return sorted(p.name for p in directory.iterdir() if ".partial" in p.name)


#: each writer's command line, up to its output file
WRITERS = {
    "report": lambda run: ["report", run, "--static", "-o"],
    "export": lambda run: ["export", run, "--perfetto", "-o"],
    "diff": lambda run: ["diff", run, run, "--csv"],
}


# --- serious: a writer must never destroy what it reads, nor a node that is not a regular file ----------------


@pytest.mark.parametrize("target", ["meta.json", "tables/requests.parquet", "symlink", "hardlink", "tables"])
def test_export_never_writes_over_the_run_it_reads(tmp_path, target):
    run = _run(tmp_path)
    before = _digest(run)
    if target == "symlink":
        out = tmp_path / "trace.pftrace"
        out.symlink_to(run / "meta.json")
    elif target == "hardlink":
        out = tmp_path / "trace.pftrace"
        os.link(run / "tables" / "submits.parquet", out)
    else:
        out = run / target
    p = _cli("export", run, "--perfetto", "-o", out)
    _one_line(p, 2, "part of the run")
    assert _digest(run) == before
    assert not _partials(run) and not _partials(run / "tables")


@pytest.mark.parametrize("target", ["a/meta.json", "b/tables/submits.parquet", "b"])
def test_diff_csv_never_writes_over_a_run_it_compares(tmp_path, target):
    a, b = _run(tmp_path, "a"), _run(tmp_path, "b", seed=2)
    before = _digest(a), _digest(b)
    p = _cli("diff", a, b, "--csv", tmp_path / target)
    _one_line(p, 2, "--csv", "part of the run")
    assert p.stdout == "", "refused before comparing"
    assert (_digest(a), _digest(b)) == before


def _fifo_reader(path: Path) -> tuple[threading.Thread, list]:
    got: list = []

    def read() -> None:
        with open(path, "rb") as fh:
            got.append(fh.read())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return reader, got


@pytest.mark.parametrize("writer", ["report", "export", "diff"])
def test_writers_write_into_a_fifo_in_place(tmp_path, writer):
    """A FIFO named as the output gets the whole output, as a file does, and stays a FIFO."""
    run = _run(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    args = WRITERS[writer](run)
    reader, got = _fifo_reader(fifo)
    p = _cli(*args, fifo)
    reader.join(60)
    assert p.returncode == 0, p.stderr
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    regular = tmp_path / "regular"
    assert _cli(*args, regular).returncode == 0
    assert got == [regular.read_bytes()]
    assert not _partials(tmp_path)


# --- moderate: every output is written whole or not at all --------------------------------------------------


def test_sigterm_during_export_leaves_the_previous_trace_as_it_was(tmp_path):
    """A real SIGTERM while the trace is being written (seen by its temporary file appearing)."""
    run = _run(tmp_path, requests=60_000)
    out = tmp_path / "trace.pftrace"
    out.write_bytes(b"the previous trace")
    proc = subprocess.Popen(
        [*PLUGTRACE, "export", str(run), "--perfetto", "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while not _partials(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, "the export ended before it could be interrupted"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert b"interrupted by SIGTERM" in stderr and b"Traceback" not in stderr
    assert out.read_bytes() == b"the previous trace"
    assert not _partials(tmp_path)
