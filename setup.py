# Only what pyproject.toml cannot say: the cffi extension (its C and declarations, read at build time and by
# plugtrace.schema, ship too), and probes/ shipped inside the package as
# plugtrace.probes, so an installed wheel finds the bpftrace scripts and our compiled eBPF programs
# (probes/build/*.bpf.o, built by `make -C probes` before the package) where a checkout keeps them.
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["plugtrace", "plugtrace.*"]) + ["plugtrace.probes"],
    package_dir={"plugtrace.probes": "probes"},
    package_data={
        "plugtrace": [
            "report/templates/*.j2",
            "qemu/guest/*.c",
            *(f"{d}/*.{ext}" for d in ("engine/native", "uring") for ext in ("c", "h")),
            "uring/*.cdef",
        ],
        "plugtrace.probes": ["*.bt", "*.bpf.c", "*.h", "Makefile", "build/*.bpf.o"],
    },
    cffi_modules=["plugtrace/uring/_build.py:ffibuilder", "plugtrace/tracing/_libbpf_build.py:ffibuilder"],
)
