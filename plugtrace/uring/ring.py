"""A Pythonic io_uring ring over the cffi binding.

Thin layer: every liburing error return (a negative errno) becomes an OSError
with that errno. The engine's driver does not prepare SQEs one by one through
this class; it hands whole queues to the C helpers (`pt_flush`, `pt_reap`) with
`Ring.ptr` so a batch costs one Python call.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from . import _binding
from ._binding import ffi, lib

__all__ = ["Ring", "Completion", "has_ring", "liburing_version"]


@dataclass(frozen=True, slots=True)
class Completion:
    """One CQE: the SQE's user data, its result (bytes or -errno) and flags."""

    user_data: int
    res: int
    flags: int


def liburing_version() -> str:
    """The liburing version the extension was compiled against, e.g. "2.3"."""
    v = lib.pt_liburing_version()
    if v >= 0:
        return f"{v // 100}.{v % 100}"
    # liburing before 2.4 has no version macros: the loaded file's name has it
    with open("/proc/self/maps") as fh:
        for line in fh:
            m = re.search(r"liburing\.so\.(\d+(?:\.\d+)*)", line)
            if m:
                return m.group(1)
    return "unknown"


def has_ring() -> tuple[bool, str]:
    """Whether this kernel lets us create an io_uring, and if not why."""
    try:
        with Ring(4):
            return True, ""
    except OSError as exc:
        return False, f"io_uring_queue_init failed: {os.strerror(exc.errno or 0)}"


class Ring:
    """An io_uring instance (``io_uring_queue_init``); close it or use ``with``."""

    def __init__(self, entries: int = 128, flags: int = 0):
        self._ring = ffi.new("struct io_uring *")
        _binding.check(lib.io_uring_queue_init(entries, self._ring, flags), "io_uring_queue_init")
        self.entries = entries
        self._open = True
        self._cqes = ffi.new("struct pt_cqe[]", max(entries * 2, 64))
        self._keep: dict[int, object] = {}

    @property
    def ptr(self):
        """The ``struct io_uring *`` for C helpers."""
        self._check_open()
        return self._ring

    @property
    def fd(self) -> int:
        return self._ring.ring_fd

    def _check_open(self) -> None:
        if not self._open:
            raise ValueError("operation on a closed Ring")

    def __enter__(self) -> Ring:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Tear the ring down; idempotent."""
        if self._open:
            self._open = False
            lib.io_uring_queue_exit(self._ring)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # -- registration -------------------------------------------------------
    def register_files(self, fds: Iterable[int]) -> None:
        fds = list(fds)
        arr = ffi.new("int[]", fds)
        _binding.check(lib.io_uring_register_files(self.ptr, arr, len(fds)), "io_uring_register_files")

    def unregister_files(self) -> None:
        _binding.check(lib.io_uring_unregister_files(self.ptr), "io_uring_unregister_files")

    def register_eventfd(self, fd: int) -> None:
        """Have the kernel signal `fd` (an eventfd) whenever a CQE is posted."""
        _binding.check(lib.io_uring_register_eventfd(self.ptr, fd), "io_uring_register_eventfd")

    def unregister_eventfd(self) -> None:
        _binding.check(lib.io_uring_unregister_eventfd(self.ptr), "io_uring_unregister_eventfd")

    # -- preparing SQEs -----------------------------------------------------
    def _sqe(self, user_data: int):
        sqe = lib.io_uring_get_sqe(self.ptr)
        if sqe == ffi.NULL:
            raise BlockingIOError(11, "submission queue is full")
        lib.io_uring_sqe_set_data64(sqe, user_data)
        return sqe

    def prep_read(self, fd: int, buf, offset: int, user_data: int, nbytes: int | None = None) -> None:
        """Queue a read of `nbytes` (default: all of `buf`) at byte `offset` into `buf`.

        `buf` is a writable buffer (bytearray, mmap, cffi buffer); it must stay
        alive until the completion is reaped.
        """
        cbuf = ffi.from_buffer(buf, require_writable=True)
        n = len(cbuf) if nbytes is None else nbytes
        lib.io_uring_prep_read(self._sqe(user_data), fd, cbuf, n, offset)
        self._keep[user_data] = cbuf

    def prep_write(self, fd: int, buf, offset: int, user_data: int, nbytes: int | None = None) -> None:
        """Queue a write of `buf` (or its first `nbytes`) at byte `offset`."""
        cbuf = ffi.from_buffer(buf)
        n = len(cbuf) if nbytes is None else nbytes
        lib.io_uring_prep_write(self._sqe(user_data), fd, cbuf, n, offset)
        self._keep[user_data] = cbuf

    def _iovecs(self, bufs, writable: bool):
        cbufs = [ffi.from_buffer(b, require_writable=writable) for b in bufs]
        iov = ffi.new("struct iovec[]", len(cbufs))
        for i, cb in enumerate(cbufs):
            iov[i].iov_base = cb
            iov[i].iov_len = len(cb)
        return iov, cbufs

    def prep_readv(self, fd: int, bufs, offset: int, user_data: int) -> None:
        """Queue a vectored read into the buffers `bufs` starting at byte `offset`."""
        iov, cbufs = self._iovecs(bufs, True)
        lib.io_uring_prep_readv(self._sqe(user_data), fd, iov, len(cbufs), offset)
        self._keep[user_data] = (iov, cbufs)

    def prep_writev(self, fd: int, bufs, offset: int, user_data: int) -> None:
        """Queue a vectored write of the buffers `bufs` starting at byte `offset`."""
        iov, cbufs = self._iovecs(bufs, False)
        lib.io_uring_prep_writev(self._sqe(user_data), fd, iov, len(cbufs), offset)
        self._keep[user_data] = (iov, cbufs)

    def prep_fsync(self, fd: int, user_data: int, datasync: bool = False) -> None:
        """Queue an fsync (fdatasync with `datasync`)."""
        lib.io_uring_prep_fsync(self._sqe(user_data), fd, 1 if datasync else 0)

    # -- submitting and reaping ----------------------------------------------
    def sq_ready(self) -> int:
        """SQEs prepared and not yet submitted."""
        return lib.io_uring_sq_ready(self.ptr)

    def cq_ready(self) -> int:
        """CQEs waiting to be reaped."""
        return lib.io_uring_cq_ready(self.ptr)

    def submit(self) -> int:
        """One io_uring_enter() for all prepared SQEs; returns how many the kernel took."""
        return _binding.check(lib.io_uring_submit(self.ptr), "io_uring_submit")

    def submit_and_wait(self, wait_nr: int = 1) -> int:
        """Submit and wait until at least `wait_nr` completions are posted."""
        return _binding.check(lib.io_uring_submit_and_wait(self.ptr, wait_nr), "io_uring_submit_and_wait")

    def wait(self) -> None:
        """Block until at least one completion is posted."""
        _binding.check(lib.pt_wait_cqe(self.ptr), "io_uring_wait_cqe")

    def peek_batch(self, max_cqes: int | None = None) -> list[Completion]:
        """Reap up to `max_cqes` posted completions (without waiting)."""
        limit = len(self._cqes) if max_cqes is None else min(max_cqes, len(self._cqes))
        n = lib.pt_peek_cqes(self.ptr, self._cqes, limit)
        out = []
        for i in range(n):
            c = self._cqes[i]
            self._keep.pop(c.user_data, None)
            out.append(Completion(c.user_data, c.res, c.flags))
        return out
