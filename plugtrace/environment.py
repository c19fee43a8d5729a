"""What a run was recorded on: kernel, CPU, library and tool versions."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata

__all__ = ["describe_environment"]

_PACKAGES = ("cffi", "numpy", "pandas", "pyarrow", "matplotlib", "jinja2")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _bpftrace_version() -> str | None:
    exe = shutil.which("bpftrace")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.strip().split()[-1] if out.strip() else None


def _fio_version() -> str | None:
    exe = shutil.which("fio")
    if not exe:
        return None
    try:
        return subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None


def describe_environment() -> dict:
    """A JSON-able description of this machine and the software versions in play."""
    from ._version import __version__
    from .tracing.libbpf import libbpf_version
    from .uring import liburing_version

    packages: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "kernel": platform.release(),
        "machine": platform.machine(),
        "hostname": platform.node(),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": sys.version.split()[0],
        "plugtrace": __version__,
        "liburing": liburing_version(),
        "bpftrace": _bpftrace_version(),
        "libbpf": libbpf_version(),
        "fio": _fio_version(),
        "packages": packages,
    }
