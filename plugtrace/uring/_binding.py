"""Thin layer over the compiled extension: errors become OSError.

liburing returns -errno; `check()` turns a negative return into
``OSError(errno, strerror)`` naming the call, and passes others through.
"""

from __future__ import annotations

import os

try:
    from ._uring import ffi, lib
except ImportError as exc:  # pragma: no cover - depends on the install
    from ..errors import CapabilityError

    raise CapabilityError(
        "plugtrace's io_uring extension is not built or liburing is missing "
        f"({exc}); install liburing-dev and reinstall plugtrace (make install)"
    ) from exc

__all__ = ["ffi", "lib", "check", "extension_path"]

#: the shared object uprobes attach to (marker functions live there)
extension_path: str = str(__import__("plugtrace.uring._uring", fromlist=["_uring"]).__file__)


def check(ret: int, call: str) -> int:
    """Return `ret`, or raise OSError when it is a negative errno."""
    if ret < 0:
        raise OSError(-ret, f"{call}: {os.strerror(-ret)}")
    return ret
