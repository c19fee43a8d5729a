"""Kernel-side tracing: capability detection, the bpftrace runner and its decoder.

`Tracer` runs the programs in probes/ for one recording; `detect_capabilities`
says what this machine can trace and why not.
"""

from .capabilities import Capabilities, detect_capabilities
from .probes import MARKER_NAMES, PROBES, URING_EVENTS, ProbeSpec
from .runner import MODES, Tracer

__all__ = [
    "Capabilities",
    "detect_capabilities",
    "Tracer",
    "MODES",
    "PROBES",
    "ProbeSpec",
    "MARKER_NAMES",
    "URING_EVENTS",
]
