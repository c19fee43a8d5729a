"""The libbpf backend: a probe as our own BPF programs (`bpfprobes.py`), the cheap form.

Aggregate mode: the programs and their in-kernel maps are held by this process and read at stop
(`AggregateRun`). Events mode: a ring buffer reader in a process of its own (`ringworker.py`),
which decodes its records into the probe's table and speaks the decoding worker's protocol, so it
runs as bpftrace's pair does (`process_run.py`). When our programs cannot load, the tracer runs
the probe's bpftrace script in their place.
"""

from __future__ import annotations

import sys
from typing import Any

from ..processes import spawn
from .probes import ProbeSpec
from .process_run import ProcessRun


class AggregateRun:
    """A probe's aggregate-mode programs, loaded and attached in this process. A `ProbeRun`."""

    backend = "libbpf"
    held_here = True
    events = False

    def __init__(self, spec: ProbeSpec, pid: int | None, device: str | None, existing_children: bool):
        """Load and attach; BpfError (an OSError) when they cannot."""
        from .bpfprobes import AGGREGATES

        self.spec = spec
        self.done: dict[str, Any] = {}
        self.messages: list[str] = []
        self.stopping = False
        self._probe: Any = AGGREGATES[spec.table](pid, device, existing_children=existing_children)
        self._probe.start()
        self._open = True

    @property
    def what(self) -> str:
        return f"our {self.spec.table} programs"

    def wait_attached(self, timeout_s: float) -> bool:
        return True  # attached when made

    def ready(self) -> bool:
        return True

    def exit_status(self) -> int | None:
        return None  # no process of its own: it runs until stopped

    def failure(self) -> str:
        return f"{self.what} failed"

    def interrupt(self) -> None:
        pass  # the maps are read as they are

    def finish(self) -> list[str]:
        """Read the maps into `done` and close the programs."""
        errors = []
        if self._open:
            try:
                self.done = {"maps": self._probe.result()}
            except OSError as exc:
                errors.append(f"reading the {self.spec.table} aggregates failed: {exc}")
        self.kill()
        return errors

    def kill(self) -> None:
        if self._open:
            self._open = False
            self._probe.stop()


def start_ring(
    spec: ProbeSpec, table_path: str, pid: int | None, device: str | None, max_events: int, existing_children: bool
) -> ProcessRun:
    """An events-mode probe as our own programs, read by `ringworker.py` into `table_path` (at most
    `max_events` rows, 0: no bound); whether they load is known once it says it attached."""
    argv = [sys.executable, "-m", "plugtrace.tracing.ringworker", spec.table, table_path]
    if pid:
        argv += ["--pid", str(pid)] + (["--existing-children"] if existing_children else [])
    if device:
        argv += ["--device", device]
    if max_events:
        argv += ["--max-events", str(max_events)]
    return ProcessRun(spec, [spawn(argv, unlimited_memlock=True)], True, "libbpf", f"our {spec.table} programs")
