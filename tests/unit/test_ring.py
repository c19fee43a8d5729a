"""The liburing binding on a plain O_DIRECT file: real io_uring, no root needed."""

import mmap
import os

import pytest

from plugtrace.uring import Ring, liburing_version
from plugtrace.uring._binding import extension_path, lib


@pytest.fixture
def direct_file(tmp_path):
    path = tmp_path / "data"
    with open(path, "wb") as fh:
        fh.write(bytes(range(256)) * 64)  # 16 KiB
    try:
        fd = os.open(path, os.O_RDWR | os.O_DIRECT)
    except OSError:
        fd = os.open(path, os.O_RDWR)  # tmpfs has no O_DIRECT
    yield fd
    os.close(fd)


def aligned(n):
    return mmap.mmap(-1, n)  # page aligned, as O_DIRECT wants


def test_read_write_roundtrip(direct_file):
    with Ring(8) as ring:
        out = aligned(4096)
        out[:] = b"\xab" * 4096
        ring.prep_write(direct_file, out, 4096, user_data=7)
        assert ring.sq_ready() == 1
        assert ring.submit_and_wait(1) == 1
        [c] = ring.peek_batch()
        assert (c.user_data, c.res) == (7, 4096)

        bufs = [aligned(4096) for _ in range(3)]
        for i, b in enumerate(bufs):
            ring.prep_read(direct_file, b, i * 4096, user_data=100 + i)
        assert ring.submit() == 3
        got = []
        while len(got) < 3:
            if not ring.cq_ready():
                ring.wait()
            got += ring.peek_batch()
        assert sorted((c.user_data, c.res) for c in got) == [(100, 4096), (101, 4096), (102, 4096)]
        assert bufs[0][:4] == bytes(range(4))
        assert bufs[1][:] == b"\xab" * 4096


def test_vectored_and_fsync(direct_file):
    with Ring(8) as ring:
        a, b = aligned(4096), aligned(4096)
        ring.prep_readv(direct_file, [a, b], 0, user_data=1)
        ring.prep_fsync(direct_file, user_data=2)
        ring.submit_and_wait(2)
        got = {c.user_data: c.res for c in ring.peek_batch()}
        assert got == {1: 8192, 2: 0}


def test_errors_are_oserror_with_errno():
    with pytest.raises(OSError) as info:
        Ring(0)
    assert info.value.errno == 22
    with Ring(4) as ring:
        ring.prep_read(-1 & 0x7FFFFFFF, aligned(4096), 0, user_data=1)  # bad fd
        ring.submit_and_wait(1)
        [c] = ring.peek_batch()
        assert c.res == -9  # EBADF comes back in the CQE, as the kernel reports it


def test_full_submission_queue_raises():
    with Ring(2) as ring:
        fd = os.open("/dev/zero", os.O_RDONLY)
        try:
            bufs = [aligned(4096) for _ in range(3)]
            ring.prep_read(fd, bufs[0], 0, 1)
            ring.prep_read(fd, bufs[1], 0, 2)
            with pytest.raises(BlockingIOError):
                ring.prep_read(fd, bufs[2], 0, 3)
            ring.submit_and_wait(2)
        finally:
            os.close(fd)


def test_closed_ring_refuses_work():
    ring = Ring(4)
    ring.close()
    ring.close()
    with pytest.raises(ValueError):
        ring.submit()


def test_markers_are_exported_for_uprobes():
    syms = open(extension_path, "rb").read()
    for name in ("section_begin", "section_end", "deferred_run", "request_queued", "submit"):
        assert f"plugtrace_mark_{name}".encode() in syms
        getattr(lib, f"plugtrace_mark_{name}")(1, 2)  # callable, does nothing
    assert liburing_version()[0].isdigit()
