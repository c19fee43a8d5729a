"""The bpftrace backend: one bpftrace process per probes/*.bt program, piped into a decoding
worker process (`worker.py`) that writes its events to the run directory as they come.

One process per program keeps each program's output a single, typed stream (one table) and lets
a failure of one probe leave the others running; memory stays flat however long the recording,
and decoding never takes the interpreter lock from the engine being measured. bpftrace is a
child that dies with us (`plugtrace.processes`): in a session of its own, so a Ctrl-C in the
terminal reaches plugtrace, which then stops the probes in order and keeps their final maps.
`spawn_bpftrace` is also how the QEMU-side probes start theirs.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import time
from collections.abc import Sequence

from ..processes import Child, spawn
from ..procfs import descendants
from .capabilities import cpu_ids
from .probes import ProbeSpec, probe_arguments
from .process_run import ProcessRun

#: per-CPU perf ring buffer pages for printf output in events mode: deep
#: enough to ride out the reader's scheduling delays at a few 100k events/s
PERF_RB_PAGES = 4096
#: at stop, events mode waits until output has been quiet this long (bpftrace
#: polls its perf buffers every 100 ms), but no longer than DRAIN_MAX_S; in seconds
DRAIN_QUIET_S = 0.3
DRAIN_MAX_S = 5.0
#: how every script starts following a process (and, where it has a fork follower, its new children)
_FOLLOW = "BEGIN { @traced[$1] = 1; }"


def spawn_bpftrace(bpftrace: str, script: str, args: Sequence[str] = ()) -> Child:
    """bpftrace (the program `bpftrace`) running `script` with `args`, JSON on its stdout, its
    stdout and stderr piped to us, with deep per-CPU output buffers (PERF_RB_PAGES)."""
    return spawn(
        [bpftrace, "-f", "json", script, *args],
        env=dict(os.environ, BPFTRACE_PERF_RB_PAGES=str(PERF_RB_PAGES)),
        unlimited_memlock=True,
    )


class BpftraceRun(ProcessRun):
    """A probe's bpftrace and its decoding worker."""

    def ready(self) -> bool:
        """bpftrace (0.17) prints attached_probes before it loads and attaches anything: it is
        ready once it holds a perf event per probe (BEGIN and END aside) besides its per-CPU
        output buffers."""
        if not self.attached.is_set():
            return False
        if self.attached_probes is None:
            return True
        if self.perf_events_wanted is None:
            self.perf_events_wanted = _perf_events_when_attached(self.spec, self.attached_probes)
        pid = self.children[0].pid
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            return False
        perf = 0
        for fd in fds:
            with contextlib.suppress(OSError):
                perf += os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:[perf_event]"
        # (a bpftrace that attaches some other way is waited for READY_TIMEOUT_S, then trusted)
        return perf >= self.perf_events_wanted

    #: how many perf events bpftrace holds once attached (see `ready`)
    perf_events_wanted: int | None = None

    @property
    def bytes_read(self) -> int:
        """How much bpftrace output the worker has read so far (its rchar), -1 if unknown."""
        try:
            with open(f"/proc/{self.children[-1].pid}/io") as fh:
                return next(int(line.split()[1]) for line in fh if line.startswith("rchar:"))
        except (OSError, StopIteration, ValueError):
            return -1


class BpftraceBackend:
    """Runs probes' scripts for one recording: `pid` traced (0/None: every process), with
    `existing_children` the children it forked before tracing began too; `device`
    "major:minor" (None: any); `marker_lib` for the marker uprobes; in `events` mode at most
    `max_events` rows per probe (0: no bound)."""

    def __init__(
        self,
        bpftrace: str,
        pid: int | None,
        device: str | None,
        marker_lib: str | None,
        events: bool,
        max_events: int,
        existing_children: bool,
    ):
        self.bpftrace, self.pid, self.device, self.marker_lib = bpftrace, pid, device, marker_lib
        self.events, self.max_events, self.existing_children = events, max_events, existing_children
        #: copies of the scripts that also follow the children `pid` had already (see `_script`)
        self._scripts_dir: tempfile.TemporaryDirectory | None = None
        #: the children `pid` had when the first script was started: every script follows the same ones
        self._existing: list[int] | None = None

    def start(self, spec: ProbeSpec, table_path: str) -> BpftraceRun:
        """Start `spec`'s script, its events (or maps) decoded into `table_path`."""
        args = probe_arguments(spec, self.pid, self.device, self.events, self.marker_lib)
        worker_argv = [sys.executable, "-m", "plugtrace.tracing.worker", spec.table, table_path]
        if self.events and self.max_events:
            worker_argv += ["--max-events", str(self.max_events)]
        bpftrace = spawn_bpftrace(self.bpftrace, self._script(spec), args)
        try:
            worker = spawn(worker_argv, stdin=bpftrace.proc.stdout, unlimited_memlock=True)
        except BaseException:
            bpftrace.end(grace_s=0)
            raise
        if bpftrace.proc.stdout is not None:
            bpftrace.proc.stdout.close()  # the worker holds the read end now
        return BpftraceRun(spec, [bpftrace, worker], self.events, "bpftrace", f"bpftrace ({spec.file})")

    def _script(self, spec: ProbeSpec) -> str:
        """The path of `spec`'s script, or with `existing_children`, of a copy whose BEGIN follows the
        children `pid` forked already too (a copy of the same name, so it reads as the script it is)."""
        if not (self.existing_children and self.pid):
            return str(spec.path)
        if self._existing is None:
            self._existing = descendants(self.pid)
        children = self._existing
        text = spec.path.read_text()
        if not children or _FOLLOW not in text:
            return str(spec.path)
        follow = " ".join(f"@traced[{child}] = 1;" for child in children)
        if self._scripts_dir is None:
            self._scripts_dir = tempfile.TemporaryDirectory(prefix="plugtrace-scripts-")
        path = os.path.join(self._scripts_dir.name, spec.file)
        with open(path, "w") as fh:
            fh.write(text.replace(_FOLLOW, f"BEGIN {{ @traced[$1] = 1; {follow} }}"))
        return path

    def close(self) -> None:
        """Remove the copies of the scripts (once they have stopped)."""
        if self._scripts_dir is not None:
            self._scripts_dir.cleanup()
            self._scripts_dir = None


def drain(runs: Sequence[BpftraceRun]) -> None:
    """Let bpftrace print what is still in its perf buffers: on SIGINT it exits without reading
    them, and those events would be lost uncounted. Waits while the events-mode workers of `runs`
    still read (our ring readers drain themselves when stopped)."""
    streams = [r for r in runs if r.events and r.exit_status() is None]
    deadline = time.monotonic() + DRAIN_MAX_S
    last = None
    while streams and time.monotonic() < deadline:
        now = [r.bytes_read for r in streams]
        if now == last:
            return
        last = now
        time.sleep(DRAIN_QUIET_S)


def _perf_events_when_attached(spec: ProbeSpec, probes: int) -> int:
    """The perf events bpftrace holds once every probe of `spec` is attached: one per
    probe but BEGIN and END, which it counts among its probes, and an output
    buffer per online CPU."""
    specials = len(re.findall(r"^\s*(?:BEGIN|END)\b", spec.path.read_text(), re.M))
    try:
        cpus = len(cpu_ids("online"))
    except OSError:
        cpus = os.cpu_count() or 1
    return probes - specials + cpus
