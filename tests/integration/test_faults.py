"""Faults and bad input, run through the real CLI as a user would.

Each case checks three things: a clear one-line message (no traceback), nothing
lost (the run directory stays readable and says what happened), and nothing
left behind (no loop or zram device, no bpftrace process).
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from .conftest import require, require_root

PLUGTRACE = [sys.executable, "-m", "plugtrace"]


def loop_devices() -> str:
    return subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout


def zram_devices() -> set:
    return {p.name for p in Path("/sys/block").glob("zram*")}


def bpftrace_pids() -> str:
    return subprocess.run(["pgrep", "-x", "bpftrace"], capture_output=True, text=True).stdout


class LeftBehind:
    """Snapshot of devices and tracers before a case; `check()` after it."""

    def __init__(self):
        self.loops, self.zrams, self.tracers = loop_devices(), zram_devices(), bpftrace_pids()

    def check(self):
        deadline = time.monotonic() + 5
        while bpftrace_pids() != self.tracers and time.monotonic() < deadline:
            time.sleep(0.1)
        assert loop_devices() == self.loops, "a loop device was left behind"
        assert zram_devices() == self.zrams, "a zram device was left behind"
        assert bpftrace_pids() == self.tracers, "a bpftrace process was left behind"


@pytest.fixture
def tiny_fs():
    """A 2 MiB tmpfs: a run directory on it fills the disk within a second."""
    require_root()
    path = tempfile.mkdtemp(prefix="plugtrace-tinyfs-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", path], check=True)
    try:
        yield Path(path)
    finally:
        subprocess.run(["umount", path], check=False)
        os.rmdir(path)


def test_disk_full_marks_the_run_incomplete_and_keeps_it_readable(tiny_fs):
    import pyarrow.parquet as pq

    left = LeftBehind()
    out = tiny_fs / "run"
    p = subprocess.run([*PLUGTRACE, "record", "--device", "loop", "--size", "128M", "--mode", "off",
                        "--duration", "20", "--quiet", "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    assert "disk is full" in p.stderr and "Traceback" not in p.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == "incomplete"
    assert meta["damaged_tables"], "the table that hit the full disk must be named"
    assert "disk is full" in meta["error"]
    readable = [n for n, t in meta["tables"].items() if not t.get("damaged")]
    assert readable, "at least one table should have been finished"
    for name in readable:
        pq.read_table(out / "tables" / f"{name}.parquet")
    left.check()


def test_not_root_cannot_create_devices(world_writable_dir):
    require(shutil.which("setpriv") is not None, "setpriv (util-linux) is needed to drop root")
    require_root()
    out = world_writable_dir / "r"
    p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *PLUGTRACE, "record",
                        "--device", "loop", "--mode", "off", "--requests", "100", "-o", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 4, p.stderr
    assert "needs root" in p.stderr and "Traceback" not in p.stderr


@pytest.fixture
def world_writable_dir():
    path = Path(tempfile.mkdtemp(prefix="plugtrace-nobody-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_not_root_runs_on_a_file_and_lists_what_it_could_not_measure(world_writable_dir):
    require(shutil.which("setpriv") is not None, "setpriv (util-linux) is needed to drop root")
    require_root()
    tmp_path = world_writable_dir
    out = tmp_path / "r"
    p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *PLUGTRACE, "record",
                        "--device", f"file:{tmp_path / 'disk.img'}", "--size", "64M", "--requests", "2000",
                        "--quiet", "-o", str(out)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == "complete"
    assert "not root" in meta["probes"]["could_not_measure"]["kernel"]
    assert "could not measure kernel: not root" in p.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_at_random_moments_leave_nothing_behind(tmp_path, sig):
    """Signals during setup, workload and finalisation; then a second record still works."""
    require_root()
    left = LeftBehind()
    rng = random.Random(int(sig))
    for i, delay in enumerate([0.05, 0.3, rng.uniform(0.5, 1.5), 2.3]):
        out = tmp_path / f"r{i}"
        proc = subprocess.Popen([*PLUGTRACE, "record", "--device", "zram" if i % 2 else "loop", "--size", "128M",
                                 "--mode", "off", "--duration", "2", "--quiet", "-o", str(out)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
        assert "Traceback" not in stderr, stderr
        if (out / "meta.json").exists():
            meta = json.loads((out / "meta.json").read_text())
            assert meta["status"] in ("interrupted", "complete"), meta["status"]
        left.check()
    p = subprocess.run([*PLUGTRACE, "record", "--device", "loop", "--size", "128M", "--mode", "off",
                        "--requests", "500", "--quiet", "-o", str(tmp_path / "after")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    left.check()


def test_existing_output_directory_is_not_overwritten(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    p = subprocess.run([*PLUGTRACE, "record", "--device", f"file:{tmp_path / 'd.img'}", "--size", "16M",
                        "--mode", "off", "--requests", "10", "-o", str(out)], capture_output=True, text=True)
    assert p.returncode != 0 and "not empty" in p.stderr
    assert (out / "keep.txt").read_text() == "mine"
