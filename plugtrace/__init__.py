"""plugtrace: a workbench for seeing whether I/O batching on io_uring works.

It runs QEMU-style request batching (the thread-local plug / defer_call API and
the strategies around it) on real block devices, traces what the kernel did
with bpftrace, stores each run as a self-describing directory, and shows it in
notebooks and HTML reports.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "load_ipython_extension"]


def load_ipython_extension(ipython):  # type: ignore[no-untyped-def]
    """``%load_ext plugtrace`` in Jupyter: the `%plugtrace` magic (see plugtrace.magic)."""
    from .magic import load_ipython_extension as load

    load(ipython)
