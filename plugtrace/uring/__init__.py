"""plugtrace's own cffi binding of the system liburing (API mode).

`Ring` is the Pythonic layer; `_binding` the thin one; `_build` the cffi
build script. `has_*` flags tell what this kernel and library offer.
"""

from .ring import Completion, Ring, has_ring, liburing_version

__all__ = ["Ring", "Completion", "has_ring", "liburing_version"]
