"""Faults on the reading side that need root, run through the real CLI: device nodes the test makes in its
own directory (the machine's /dev is never written), full and read-only file systems (small tmpfs mounts).
The cases that need no root are in tests/unit/test_outputs.py."""

import contextlib
import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.helpers import PLUGTRACE, require_root, tmpfs
from tests.unit.test_outputs import WRITERS, _cli, _one_line, _partials, _run


@pytest.fixture
def small_fs():
    """mount(size_mib, readonly=False): a tmpfs of that size, unmounted at the end."""
    with contextlib.ExitStack() as stack:
        yield lambda size_mib, readonly=False: stack.enter_context(tmpfs(size_mib, readonly))


def _node(path: Path, major: int, minor: int) -> Path:
    """A character device node of our own (1, 3 is null; 1, 7 is full)."""
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
    return path


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_writers_write_into_a_device_node_in_place(tmp_path, writer):
    """`-o /dev/null` must leave /dev/null a device: here a null node of the test's own."""
    require_root()
    run = _run(tmp_path)
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    null = _node(nodes / "null", 1, 3)
    p = _cli(*WRITERS[writer](run), null)
    assert p.returncode == 0, p.stderr
    assert stat.S_ISCHR(null.lstat().st_mode) and null.lstat().st_rdev == os.makedev(1, 3)
    assert [p.name for p in nodes.iterdir()] == ["null"], "nothing left beside it"


def _fill(fs: Path) -> None:
    """Fills `fs` to the last byte."""
    fd = os.open(fs / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        for chunk in (64 << 10, 1):  # then the bytes a partly written chunk left
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError:
                pass
    finally:
        os.close(fd)


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_a_full_disk_is_one_line_and_leaves_the_previous_output(tmp_path, small_fs, writer):
    run = _run(tmp_path)
    fs = small_fs(1)
    out = fs / "out"
    out.write_bytes(b"the previous output")
    _fill(fs)
    p = _cli(*WRITERS[writer](run), out)
    _one_line(p, 1, f"cannot write {out}", "the disk is full")
    assert out.read_bytes() == b"the previous output"
    assert not _partials(fs)


def test_a_read_only_file_system_is_one_line(tmp_path, small_fs):
    run = _run(tmp_path)
    ro = small_fs(1, readonly=True)
    p = _cli("report", run, "--static", "-o", ro / "r.html")
    _one_line(p, 1, f"cannot write {ro / 'r.html'}", "Read-only file system")


def test_diff_into_a_full_stdout_is_one_line(tmp_path):
    """`plugtrace diff A B > /dev/full`, with a full device node of the test's own."""
    require_root()
    run = _run(tmp_path)
    with open(_node(tmp_path / "full", 1, 7), "w") as full:
        p = subprocess.run([*PLUGTRACE, "diff", str(run), str(run)], stdout=full, stderr=subprocess.PIPE, text=True)
    _one_line(p, 1, "cannot write to standard output", "No space left on device")
