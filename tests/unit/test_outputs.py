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


# --- moderate: a partial run gets no verdict; numbers are checked --------------------------------------------


def _partial_copy(run: Path, to: Path, status: str = "recording") -> Path:
    """`run` as a killed recorder leaves it: same tables, meta.json still saying `status`."""
    import json
    import shutil

    shutil.copytree(run, to)
    meta = json.loads((to / "meta.json").read_text())
    meta["status"] = status
    (to / "meta.json").write_text(json.dumps(meta))
    return to


@pytest.mark.parametrize("status", ["recording", "interrupted"])
def test_diff_with_a_partial_run_gives_no_verdict(tmp_path, status):
    a = _run(tmp_path, "a")
    b = _partial_copy(_run(tmp_path, "b", seed=5, strategy="immediate"), tmp_path / "killed", status)
    p = _cli("diff", a, b, "--csv", tmp_path / "d.csv")
    _one_line(p, 3, "no verdict", "killed", f"'{status}'")
    assert "within noise" not in p.stdout and "CHANGED" not in p.stdout
    assert p.stdout.count("no verdict") == 8 + 1, "every row, and the line saying why"
    import pandas as pd

    assert pd.read_csv(tmp_path / "d.csv")["beyond_noise"].isna().all()


def test_a_directory_diff_names_the_runs_only_one_side_has(tmp_path):
    for side, names in (("main", ["x", "old"]), ("branch", ["x", "new"])):
        for name in names:
            _run(tmp_path / side, name)
    p = _cli("diff", tmp_path / "main", tmp_path / "branch")
    assert p.returncode == 0, p.stderr
    assert f"only in {tmp_path / 'main'}: old (not compared)" in p.stdout
    assert f"only in {tmp_path / 'branch'}: new (not compared)" in p.stdout


@pytest.mark.parametrize("noise", ["nan", "-5", "0", "1e309", "inf", "101"])
def test_diff_refuses_a_noise_that_is_not_a_percentage(tmp_path, noise):
    run = _run(tmp_path)
    p = _cli("diff", run, run, "--noise", noise)
    assert p.returncode == 2 and "--noise" in p.stderr and "percentage" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr and p.stdout == ""


def test_df_diff_refuses_a_noise_that_is_not_a_fraction(tmp_path):
    from plugtrace.analysis import Run, df_diff

    run = Run.open(_run(tmp_path))
    for noise in (float("nan"), -0.05, 0, float("inf"), 2):
        with pytest.raises(ValueError, match=r"noise must be a fraction in \(0, 1\]"):
            df_diff(run, run, noise=noise)


@pytest.mark.parametrize(
    "window, message",
    [
        (("nan", "10"), "must be finite"),
        (("0", "inf"), "must be finite"),
        (("0", "1e20"), "reaches past any run"),
        (("500", "100"), "needs START < END"),
    ],
)
def test_export_refuses_a_window_that_is_not_one(tmp_path, window, message):
    run = _run(tmp_path)
    p = _cli("export", run, "--perfetto", "--window-ms", *window, "-o", tmp_path / "t.pftrace")
    _one_line(p, 2, "--window-ms", message)
    assert not (tmp_path / "t.pftrace").exists()


def test_the_library_refuses_the_windows_the_cli_refuses(tmp_path):
    from plugtrace.analysis import Run, df_requests, df_submits

    run = Run.open(_run(tmp_path))
    for fn in (df_submits, df_requests):
        with pytest.raises(ValueError, match=r"window_ms 500 100: needs START < END"):
            fn(run, window_ms=(500, 100))
        with pytest.raises(ValueError, match="must be finite"):
            fn(run, window_ms=(float("nan"), 10))
    assert len(df_submits(run, window_ms=(0, 1e9))) == len(df_submits(run))


# --- minor ---------------------------------------------------------------------------------------------------


def test_an_empty_export_says_so(tmp_path):
    run = _run(tmp_path)
    p = _cli("export", run, "--perfetto", "--window-ms", 1e6, 2e6, "-o", tmp_path / "t.pftrace")
    assert p.returncode == 0 and "the trace is empty: the run has no events in --window-ms 1e+06 2e+06" in p.stderr
    killed = _partial_copy(run, tmp_path / "killed")
    p = _cli("export", killed, "--perfetto", "-o", tmp_path / "k.pftrace")
    assert p.returncode == 0 and f"{killed} is partial (status 'recording')" in p.stderr, p.stderr


def test_the_default_export_path_is_outside_the_run(tmp_path):
    run = _run(tmp_path)
    before = _digest(run)
    p = _cli("export", "..", "--perfetto", cwd=run / "tables")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "run.pftrace").is_file() and _digest(run) == before


def test_a_run_named_twice_is_reported_once(tmp_path):
    run = _run(tmp_path)
    p = _cli("report", run, run, f"{run}/", "--static", "-o", tmp_path / "r.html")
    assert p.returncode == 0, p.stderr
    assert ", 1 run)" in p.stdout
    assert p.stderr.count("is named more than once; reported once") == 2


def test_reporting_a_qemu_run_draws_its_timeline_without_a_bokeh_warning(tmp_path):
    """The QEMU run's guest boots before its first section: the default timeline window starts there, not at 0,
    where it held nothing and Bokeh warned of a plot with no renderers."""
    from plugtrace.analysis import Run, timeline_window

    data = Path(__file__).resolve().parents[2] / "data"
    window = timeline_window(Run.open(data / "qemu-7.2"))
    assert sum(len(f) for f in window.frames.values()) > 0
    p = _cli("report", data / "qemu-7.2", "-o", tmp_path / "r.html")
    assert p.returncode == 0 and "MISSING_RENDERERS" not in p.stderr and "WARNING" not in p.stderr, p.stderr


# --- the helper itself -----------------------------------------------------------------------------------------


def test_output_file_replaces_a_file_whole_and_keeps_what_it_was_otherwise(tmp_path):
    from plugtrace.errors import UsageError
    from plugtrace.run.output import Interrupted, output_file

    out = tmp_path / "out.txt"
    out.write_text("old")
    os.chmod(out, 0o640)
    link = tmp_path / "link"
    link.symlink_to(out)
    with output_file(link, text=True) as fh:
        fh.write("new")
    assert link.is_symlink() and out.read_text() == "new", "the symlink stays, its target is replaced"
    assert stat.S_IMODE(out.stat().st_mode) == 0o640, "the file keeps its permissions"
    with pytest.raises(Interrupted, match=f"interrupted by SIGINT: {out} was not written"):
        with output_file(out, text=True) as fh:
            fh.write("half")
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):  # a command that handles signals itself gets its Ctrl-C
        with output_file(out, text=True, interruptible=False) as fh:
            raise KeyboardInterrupt
    with pytest.raises(ValueError):
        with output_file(out, text=True) as fh:
            fh.write("half")
            raise ValueError("a writer's own error goes through as it is")
    assert out.read_text() == "new" and not _partials(tmp_path)
    with pytest.raises(UsageError, match="is a directory"):
        with output_file(tmp_path) as fh:
            pass


def test_a_signal_the_moment_the_temporary_file_exists_leaves_nothing_behind(tmp_path, monkeypatch):
    """The window the real-SIGTERM test above can only hit by chance: the signal handler raises right
    after the temporary file is created, before the writer gets its file object."""
    from plugtrace.run import output
    from plugtrace.run.output import Interrupted, output_file

    out = tmp_path / "out.txt"
    out.write_text("old")
    real_open = os.open

    def open_then_signal(path, *args, **kwargs):
        fd = real_open(path, *args, **kwargs)
        if str(path).endswith(".partial"):
            os.close(fd)
            raise Interrupted(signal.SIGTERM, out)  # what output._signals_raise's handler raises
        return fd

    monkeypatch.setattr(output.os, "open", open_then_signal)
    with pytest.raises(Interrupted, match="SIGTERM"):
        with output_file(out, text=True) as fh:
            fh.write("new")
    assert out.read_text() == "old" and not _partials(tmp_path)
