"""cffi build script (API mode) for plugtrace's binding of the system liburing, and the engine's C.

API mode, not ABI mode: liburing's prep helpers (`io_uring_prep_read`, ...) and
its ring accessors are `static inline` in <liburing.h>, so only a compiled
extension can reach them.

The C lives in .c/.h files beside this script and in plugtrace/engine/native/
(compiled with -Wall -Werror, formatted with clang-format); this script only
reads them. cffi's declarations are liburing.cdef and the headers as they are,
and the one extension module, plugtrace.uring._uring, carries:

* the binding's helpers (binding.c);
* the per-request work of the engine (engine.c), so Python runs once per
  section or batch, never per request, and its app-side log, whose rows are
  declared once in log_records.h (cffi checks their layout against the C
  compiler, and the engine's numpy dtypes come from them);
* marker functions (markers.c, `plugtrace_mark_*`) that do nothing but exist as
  real, non-inlined, exported symbols of this module, so uprobes can put our
  plug sections on the same timeline as the kernel's tracepoints;
* the data pattern writes carry (pattern.c).
"""

import os
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
#: the checkout (setup.py's directory): setuptools takes the extension's paths relative to it
ROOT = HERE.parents[1]
NATIVE = HERE.parent / "engine" / "native"
#: declared to cffi in this order (a header declares what those after it use)
HEADERS = [
    HERE / "binding.h",
    NATIVE / "log_records.h",
    NATIVE / "engine.h",
    NATIVE / "markers.h",
    NATIVE / "pattern.h",
]
SOURCES = [HERE / "binding.c", NATIVE / "engine.c", NATIVE / "markers.c", NATIVE / "pattern.c"]


def declarations(header: Path) -> str:
    """`header` as cffi's cdef takes it: without its preprocessor lines (#pragma once, #include)."""
    return "".join(line for line in header.read_text().splitlines(keepends=True) if not line.startswith("#"))


ffibuilder = FFI()
ffibuilder.cdef((HERE / "liburing.cdef").read_text() + "".join(map(declarations, HEADERS)))
ffibuilder.set_source(
    "plugtrace.uring._uring",
    "#include <liburing.h>\n" + "".join(f'#include "{h.name}"\n' for h in HEADERS),
    sources=[p.relative_to(ROOT).as_posix() for p in SOURCES],
    depends=[p.relative_to(ROOT).as_posix() for p in HEADERS],
    include_dirs=[p.relative_to(ROOT).as_posix() for p in (HERE, NATIVE)],
    libraries=["uring"],
    # hidden: only the module's init and the markers (which say so) are exported
    extra_compile_args=["-O2", "-Wall", "-Werror", "-fvisibility=hidden"],
)

if __name__ == "__main__":  # build the extension in place, in the checkout
    os.chdir(ROOT)
    ffibuilder.compile(verbose=True)
