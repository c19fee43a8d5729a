"""Running the probes: one bpftrace process per probes/*.bt program.

One process per program keeps each program's output a single, typed stream
(one table) and lets a failure of one probe leave the others running. Each
process gets a reader thread that decodes its JSON output in chunks and
appends events to the run directory as they come, so memory stays flat
however long the recording.

bpftrace is started in its own session (a Ctrl-C in the terminal reaches
plugtrace, which then stops the probes in order and keeps their final maps)
and with a parent-death signal, so no bpftrace outlives plugtrace even if
plugtrace itself is killed.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import resource
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import pyarrow as pa

from ..errors import CapabilityError
from .capabilities import Capabilities
from .decode import Decoded, JsonStreamDecoder, counter_rows, histogram_rows
from .probes import MARKER_NAMES, PROBES, ProbeSpec, probe_arguments

MODES = ("aggregate", "events")

#: per-CPU perf ring buffer pages for printf output in events mode: deep
#: enough to ride out the reader's scheduling delays at a few 100k events/s
PERF_RB_PAGES = 4096

#: how long bpftrace may take to attach (parsing BTF is slow on a busy machine)
ATTACH_TIMEOUT_S = 60.0
#: how long bpftrace may take to print its maps and exit after SIGINT
STOP_TIMEOUT_S = 20.0
#: events are buffered to this many rows before a Parquet row group is written
FLUSH_ROWS = 65536
FLUSH_INTERVAL_S = 1.0
#: at stop, events mode waits until output has been quiet this long (bpftrace
#: polls its perf buffers every 100 ms), but no longer than DRAIN_MAX_S
DRAIN_QUIET_S = 0.3
DRAIN_MAX_S = 5.0

_live: set["_ProbeProcess"] = set()
_PR_SET_PDEATHSIG = 1


_prctl = ctypes.CDLL(None, use_errno=True).prctl


def _child_setup() -> None:  # runs in the child between fork and exec
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    try:  # modern kernels account BPF memory to cgroups; older ones need the rlimit
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except (ValueError, OSError):
        pass


@dataclass
class _ProbeProcess:
    spec: ProbeSpec
    proc: subprocess.Popen
    decoder: JsonStreamDecoder
    events: bool
    sink: Callable[[str, pa.Table], Any] | None = None
    attached: threading.Event = field(default_factory=threading.Event)
    attached_probes: int | None = None
    lost_events: int = 0
    maps: dict[str, Any] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    sink_error: Exception | None = None
    reader: threading.Thread | None = None
    stderr_reader: threading.Thread | None = None
    stopping: bool = False
    bytes_read: int = 0

    def __hash__(self) -> int:
        return id(self)

    # --- reading -----------------------------------------------------------
    def read_stdout(self) -> None:
        fd = self.proc.stdout.fileno()
        pending: list[pa.Table] = []
        pending_rows = 0
        last_flush = time.monotonic()
        while True:
            data = os.read(fd, 1 << 20)
            self.bytes_read += len(data)
            decoded = self.decoder.feed(data, final=not data)
            self._absorb(decoded)
            if decoded.events is not None:
                pending.append(decoded.events)
                pending_rows += decoded.events.num_rows
            now = time.monotonic()
            if pending and (not data or pending_rows >= FLUSH_ROWS or now - last_flush >= FLUSH_INTERVAL_S):
                self._flush(pending)
                pending, pending_rows, last_flush = [], 0, now
            if not data:
                return

    def _absorb(self, d: Decoded) -> None:
        if d.attached_probes is not None:
            self.attached_probes = d.attached_probes
            self.attached.set()
        self.lost_events += d.lost_events
        self.maps.update(d.maps)
        room = 20 - len(self.messages)
        if room > 0:
            self.messages.extend(d.other[:room])

    def _flush(self, tables: list[pa.Table]) -> None:
        if self.sink is None or self.sink_error is not None:
            return
        try:
            self.sink(self.spec.table, pa.concat_tables(tables))
        except Exception as exc:  # disk full, say: stop writing, keep reading so bpftrace never blocks
            self.sink_error = exc

    def read_stderr(self) -> None:
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            if line and "RLIMIT_MEMLOCK" not in line and len(self.messages) < 20:
                self.messages.append(line)

    # --- status ------------------------------------------------------------
    def failure(self) -> str:
        """Why this process is not (or no longer) tracing, in one line."""
        rc = self.proc.returncode
        how = f"was killed by {signal.Signals(-rc).name}" if rc is not None and rc < 0 else f"exited with {rc}"
        detail = "; ".join(m for m in self.messages if m)[:400]
        return f"bpftrace ({self.spec.file}) {how}{': ' + detail if detail else ''}"


class Tracer:
    """The probes of one recording.

    `mode`: ``"aggregate"`` (in-kernel histograms and counters, read at stop)
    or ``"events"`` (one row per event, streamed to the run directory, at most
    `max_events` rows per probe). `pid`: the process to trace (its children are
    followed); `devices`: "major:minor" of the block device to watch (block
    probes), empty to watch the traced process's I/O on any device;
    `marker_lib`: our extension, for the marker uprobes (None: no markers).
    """

    def __init__(self, mode: str = "aggregate", pid: int | None = None, devices: list[str | None] | None = None,
                 marker_lib: str | None = None, max_events: int = 5_000_000,
                 capabilities: Capabilities | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.mode = mode
        self.pid = pid
        self.device = next((d for d in devices or [] if d), None)
        self.marker_lib = marker_lib
        self.max_events = max_events
        self.caps = capabilities
        self.could_not_measure: dict[str, str] = {}
        self._procs: list[_ProbeProcess] = []
        self._sink: Callable[[str, pa.Table], Any] | None = None

    # --- choosing ------------------------------------------------------------
    def _plan(self) -> list[ProbeSpec]:
        caps = self.caps
        if caps is None:
            from .capabilities import detect_capabilities

            caps = self.caps = detect_capabilities()
        ok, why = caps.can_trace()
        if not ok:
            raise CapabilityError(why)
        chosen = []
        for spec in PROBES:
            if not spec.path.exists():
                self.could_not_measure[spec.table] = f"the probe program {spec.path} is missing"
                continue
            missing = [why for tp in spec.tracepoints for ok, why in [caps.tracepoint(tp)] if not ok]
            if spec.needs_uprobes:
                if self.marker_lib is None:
                    continue  # nothing of ours to mark: not a loss
                if not caps.uprobes[0]:
                    missing.append(caps.uprobes[1])
            if missing:
                self.could_not_measure[spec.table] = "; ".join(missing)
                continue
            chosen.append(spec)
        if not chosen:
            raise CapabilityError("no probe can run here: " + "; ".join(
                f"{k}: {v}" for k, v in self.could_not_measure.items()))
        return chosen

    # --- running -------------------------------------------------------------
    def start(self, sink: Callable[[str, pa.Table], Any] | None = None) -> None:
        """Start every probe that can run and wait until each has attached.

        `sink(table_name, arrow_table)` receives events as they are decoded
        (events mode); it may also be given later, to `stop()`, for aggregate
        mode. A probe that fails to attach is listed in `could_not_measure`;
        if none attaches, CapabilityError.
        """
        self._sink = sink
        specs = self._plan()
        events = self.mode == "events"
        exe = self.caps.bpftrace_path or "bpftrace"
        env = dict(os.environ, BPFTRACE_PERF_RB_PAGES=str(PERF_RB_PAGES))
        for spec in specs:
            argv = [exe, "-f", "json", str(spec.path),
                    *probe_arguments(spec, self.pid, self.device, events, self.marker_lib)]
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=env, start_new_session=True,
                                    preexec_fn=_child_setup)
            p = _ProbeProcess(spec, proc, JsonStreamDecoder(spec.schema, self.max_events if events else None, dict(spec.labels)),
                              events, sink=self._deliver)
            _live.add(p)
            p.reader = threading.Thread(target=p.read_stdout, name=f"bpftrace-{spec.table}", daemon=True)
            p.stderr_reader = threading.Thread(target=p.read_stderr, daemon=True)
            p.reader.start()
            p.stderr_reader.start()
            self._procs.append(p)
        deadline = time.monotonic() + ATTACH_TIMEOUT_S
        for p in self._procs:
            while not p.attached.wait(0.05):
                if p.proc.poll() is not None or time.monotonic() > deadline:
                    break
        for p in list(self._procs):
            if not p.attached.is_set():
                if p.proc.poll() is None:
                    self._kill(p)
                    p.messages.append(f"did not attach within {ATTACH_TIMEOUT_S:.0f} s")
                p.reader.join(5)
                p.stderr_reader.join(5)
                self.could_not_measure[p.spec.table] = f"failed to attach: {p.failure()}"
                self._procs.remove(p)
                _live.discard(p)
        if not self._procs:
            raise CapabilityError("no probe attached: " + "; ".join(
                f"{k}: {v}" for k, v in self.could_not_measure.items()))

    def _deliver(self, table: str, data: pa.Table) -> None:
        if self._sink is not None:
            self._sink(table, data)

    def running(self) -> list[str]:
        return [p.spec.table for p in self._procs if p.proc.poll() is None]

    def died(self) -> list[str]:
        """Probes whose bpftrace exited while it should have been running."""
        return [p.failure() for p in self._procs if p.proc.poll() is not None and not p.stopping]

    def stop(self, writer=None) -> dict[str, Any]:
        """Stop every probe, collect its output into `writer` (a RunWriter).

        Returns ``{"probes": {"ran", "could_not_measure"}, "events_lost",
        "error", "kernel_summary"}``; "events_lost" counts bpftrace's lost
        events plus rows dropped over `max_events`.
        """
        if writer is not None and self._sink is None:
            self._sink = writer.append
        errors = []
        self._drain()
        for p in self._procs:
            if p.proc.poll() is not None:
                errors.append(f"{p.failure()} mid-run; what it sent until then is kept")
            p.stopping = True
            if p.proc.poll() is None:
                p.proc.send_signal(signal.SIGINT)  # bpftrace prints its maps and exits
        for p in self._procs:
            try:
                p.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._kill(p)
                errors.append(f"bpftrace ({p.spec.file}) did not stop within {STOP_TIMEOUT_S:.0f} s: killed")
            p.reader.join(STOP_TIMEOUT_S)
            p.stderr_reader.join(5)
            _live.discard(p)
            if p.sink_error is not None:
                errors.append(f"writing {p.spec.table} failed: {p.sink_error}")
        ran, lost, dropped = [], 0, 0
        hist_rows: dict[str, list] = {"name": [], "low": [], "high": [], "count": []}
        counters: dict[str, list] = {"name": [], "value": []}
        for p in self._procs:
            lost += p.lost_events
            dropped += p.decoder.dropped
            healthy = p.proc.returncode == 0 or p.stopping and p.proc.returncode in (0, -signal.SIGINT)
            if p.events:
                ran.append(p.spec.table)
                continue
            if not p.maps:
                self.could_not_measure[p.spec.table] = (
                    "no in-kernel data: " + (p.failure() if not healthy else "bpftrace printed no maps"))
                continue
            ran.append(p.spec.table)
            for name, value in p.maps.items():
                if isinstance(value, list):
                    _extend(hist_rows, histogram_rows(name, value))
                else:
                    _extend(counters, counter_rows(name, value, MARKER_NAMES if name == "nr_markers" else None))
        sink = self._sink
        if self.mode == "aggregate" and sink is not None:
            if hist_rows["name"]:
                sink("histograms", pa.table(hist_rows, schema=_HIST_SCHEMA))
            if counters["name"]:
                sink("counters", pa.table(counters, schema=_COUNTER_SCHEMA))
        if self.mode == "aggregate" and ran:
            ran = ["histograms", "counters", *(f"aggregate:{t}" for t in ran)]
        summary = {"bpftrace_lost_events": lost, "dropped_over_max_events": dropped,
                   "events_kept": {p.spec.table: p.decoder.kept for p in self._procs if p.events}}
        self._procs = []
        return {
            "probes": {"ran": ran, "could_not_measure": dict(self.could_not_measure)},
            "events_lost": lost + dropped,
            "error": "; ".join(errors) or None,
            "kernel_summary": summary,
        }

    def _drain(self) -> None:
        """Let bpftrace print what is still in its perf buffers: on SIGINT it
        exits without reading them, and those events would be lost uncounted."""
        streams = [p for p in self._procs if p.events and p.proc.poll() is None]
        deadline = time.monotonic() + DRAIN_MAX_S
        last = [-1] * len(streams)
        while streams and time.monotonic() < deadline:
            now = [p.bytes_read for p in streams]
            if now == last:
                return
            last = now
            time.sleep(DRAIN_QUIET_S)

    @staticmethod
    def _kill(p: _ProbeProcess) -> None:
        try:
            os.killpg(p.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.proc.wait()

    def __enter__(self) -> "Tracer":
        return self

    def __exit__(self, *exc) -> None:
        if self._procs:
            self.stop()


def _extend(rows: dict[str, list], more: dict[str, list]) -> None:
    for k, v in more.items():
        rows[k].extend(v)


_HIST_SCHEMA = pa.schema([("name", pa.string()), ("low", pa.int64()), ("high", pa.int64()), ("count", pa.int64())])
_COUNTER_SCHEMA = pa.schema([("name", pa.string()), ("value", pa.int64())])


@atexit.register
def _kill_leftovers() -> None:
    """Whatever path the program takes out, no bpftrace of ours stays attached."""
    for p in list(_live):
        if p.proc.poll() is None:
            Tracer._kill(p)
