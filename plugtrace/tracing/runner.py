"""Running the probes: our libbpf programs (`bpfprobes.py`) where a probe has them,
else one bpftrace process per probes/*.bt program.

Aggregate-mode programs of ours are held by this process and read at stop;
an events-mode probe of ours runs in a ring buffer reader of its own
(`ringworker.py`). When one cannot load (a verifier rejection, a kernel
without what it needs), the probe's bpftrace script takes its place and the
reason is printed and kept in meta.json (``probes.backends``).

One process per program keeps each program's output a single, typed stream
(one table) and lets a failure of one probe leave the others running. Each
bpftrace pipes into a decoding worker process (`worker.py`) that writes its
events to the run directory as they come: memory stays flat however long the
recording, and decoding never takes the interpreter lock from the engine
being measured.

bpftrace is started in its own session (a Ctrl-C in the terminal reaches
plugtrace, which then stops the probes in order and keeps their final maps)
and with a parent-death signal, so no bpftrace outlives plugtrace even if
plugtrace itself is killed.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from ..errors import CapabilityError, PlugtraceError
from ..procfs import descendants
from ..run.schema import TABLES
from .capabilities import Capabilities, cpu_ids
from .decode import batch_sizes_from_positions, counter_rows, histogram_rows
from .probes import BLOCK_PROBES_WITHOUT_A_DEVICE, MARKER_NAMES, PROBES, ProbeSpec, probe_arguments

MODES = ("aggregate", "events")

#: per-CPU perf ring buffer pages for printf output in events mode: deep
#: enough to ride out the reader's scheduling delays at a few 100k events/s
PERF_RB_PAGES = 4096

#: how long bpftrace may take to attach (parsing BTF is slow on a busy machine)
ATTACH_TIMEOUT_S = 60.0
#: after bpftrace says attached_probes, how long to wait for its attachments to show
READY_TIMEOUT_S = 5.0
#: how long bpftrace may take to print its maps and exit after SIGINT
STOP_TIMEOUT_S = 20.0
#: after this long stopping, the user is told what the recording waits for
STOP_SLOW_S = 3.0
#: at stop, events mode waits until output has been quiet this long (bpftrace
#: polls its perf buffers every 100 ms), but no longer than DRAIN_MAX_S
DRAIN_QUIET_S = 0.3
DRAIN_MAX_S = 5.0

_live: set[_ProbeProcess] = set()
_PR_SET_PDEATHSIG = 1


_prctl = ctypes.CDLL(None, use_errno=True).prctl


_HELD_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def signals_held():
    """Hold Ctrl-C and SIGTERM while forking: Python runs its at-fork hooks
    then, and an exception raised by a signal handler inside one is printed
    and dropped, so the signal would be lost. Held, it arrives right after."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _child_setup() -> None:  # runs in the child between fork and exec
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _HELD_SIGNALS)  # exec keeps the mask
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    try:  # modern kernels account BPF memory to cgroups; older ones need the rlimit
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except (ValueError, OSError):
        pass


def _spawn(argv: list[str], stdin: Any = subprocess.DEVNULL, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A probe's process: output piped to us, in a session of its own (a Ctrl-C at the terminal reaches
    only the recording, which stops its probes in order), set up by `_child_setup`."""
    return subprocess.Popen(
        argv,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
        preexec_fn=_child_setup,
    )


@dataclass
class _ProbeProcess:
    """One probe running in processes of its own, by one of two backends: bpftrace piped into its
    decoding worker (`worker.py`), or our libbpf programs' ring buffer reader (`ringworker.py`),
    which decodes itself. Both speak the same line protocol on stdout (attached, done)."""

    spec: ProbeSpec
    proc: subprocess.Popen
    #: bpftrace's decoding worker; None for a ring reader
    worker: subprocess.Popen | None
    events: bool
    attached: threading.Event = field(default_factory=threading.Event)
    attached_probes: int | None = None
    #: bpftrace only: how many perf events it holds once attached (see `ready`)
    perf_events_wanted: int | None = None
    done: dict[str, Any] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    stopping: bool = False

    def __hash__(self) -> int:
        return id(self)

    @property
    def is_bpftrace(self) -> bool:
        """bpftrace (and its worker), rather than our own ring reader."""
        return self.worker is not None

    @property
    def processes(self) -> list[subprocess.Popen]:
        return [self.proc] + ([self.worker] if self.worker is not None else [])

    @property
    def what(self) -> str:
        return f"bpftrace ({self.spec.file})" if self.is_bpftrace else f"our {self.spec.table} programs"

    def ready(self) -> bool:
        """Whether every probe is attached. Our ring readers say so once they are.
        bpftrace (0.17) prints attached_probes before it loads and attaches
        anything: it is ready once it holds a perf event per probe (BEGIN and
        END aside) besides its per-CPU output buffers."""
        if not self.attached.is_set():
            return False
        if not self.is_bpftrace or self.attached_probes is None:
            return True
        if self.perf_events_wanted is None:
            self.perf_events_wanted = _perf_events_when_attached(self.spec, self.attached_probes)
        try:
            fds = os.listdir(f"/proc/{self.proc.pid}/fd")
        except OSError:
            return False
        perf = 0
        for fd in fds:
            with contextlib.suppress(OSError):
                perf += os.readlink(f"/proc/{self.proc.pid}/fd/{fd}") == "anon_inode:[perf_event]"
        # (a bpftrace that attaches some other way is waited for READY_TIMEOUT_S, then trusted)
        return perf >= self.perf_events_wanted

    def start_readers(self) -> None:
        protocol = (self.worker or self.proc).stdout
        self.threads = [
            threading.Thread(target=f, args=(pipe,), daemon=True, name=f"probe-{self.spec.table}")
            for f, pipe in ((self._read_worker, protocol), *((self._read_stderr, p.stderr) for p in self.processes))
        ]
        for t in self.threads:
            t.start()

    def _read_worker(self, pipe) -> None:
        for raw in pipe:
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if "attached_probes" in record:
                self.attached_probes = record["attached_probes"]
                self.attached.set()
            elif "done" in record:
                self.done = record["done"]

    def _read_stderr(self, pipe) -> None:
        for raw in pipe:
            line = raw.decode(errors="replace").rstrip()
            if line and "RLIMIT_MEMLOCK" not in line and len(self.messages) < 20:
                self.messages.append(line)

    def join(self, timeout: float) -> None:
        for t in self.threads:
            t.join(timeout)

    @property
    def bytes_read(self) -> int:
        """How much bpftrace output the worker has read so far (its rchar)."""
        if self.worker is None:
            return -1
        try:
            with open(f"/proc/{self.worker.pid}/io") as fh:
                return next(int(line.split()[1]) for line in fh if line.startswith("rchar:"))
        except (OSError, StopIteration, ValueError):
            return -1

    # --- status ------------------------------------------------------------
    def failure(self) -> str:
        """Why this process is not (or no longer) tracing, in one line."""
        rc = self.proc.returncode
        how = f"was killed by {signal.Signals(-rc).name}" if rc is not None and rc < 0 else f"exited with {rc}"
        detail = "; ".join(m for m in [*self.messages, *self.done.get("messages", [])] if m)[:400]
        return f"{self.what} {how}{': ' + detail if detail else ''}"


@dataclass(frozen=True)
class _Own:
    """Whether a probe runs as our own libbpf programs; if not, why (None: it has no such form in this
    mode, and its bpftrace script is simply how it runs)."""

    started: bool
    why_not: str | None = None


@dataclass
class TraceResult:
    """What a stopped tracer tells the run's metadata.

    `ran`: tables written (aggregate mode: ``histograms``, ``counters`` and ``aggregate:<probe>``);
    `could_not_measure`: probe -> why; `backends`: probe -> how it ran (``libbpf``, or ``bpftrace``
    with why not libbpf); `not_asked`: probes off by default, and why; `events_lost`: bpftrace's lost
    events plus rows dropped over `max_events`; `error`: what went wrong while tracing (None: nothing);
    `kernel_summary`: the tracer's own counts (lost, dropped, kept per table).
    """

    ran: list[str]
    could_not_measure: dict[str, str]
    backends: dict[str, str]
    not_asked: dict[str, str]
    events_lost: int
    error: str | None
    kernel_summary: dict[str, Any]

    def probes(self) -> dict[str, Any]:
        """The ``probes`` entry of meta.json."""
        return {
            "ran": list(self.ran),
            "could_not_measure": dict(self.could_not_measure),
            "backends": dict(self.backends),
            "not_asked": dict(self.not_asked),
        }


class Tracer:
    """The probes of one recording.

    `mode`: ``"aggregate"`` (in-kernel histograms and counters, read at stop)
    or ``"events"`` (one row per event, streamed to the run directory, at most
    `max_events` rows per probe). `pid`: the process to trace (its children are
    followed); `devices`: "major:minor" of the block device to watch (block
    probes), empty to watch the traced process's I/O on any device;
    `marker_lib`: our extension, for the marker uprobes (None: no markers).
    `existing_children`: also trace the children `pid` forked before tracing
    began (our own programs, and the bpftrace scripts through a copy that
    follows them from its BEGIN).
    """

    def __init__(
        self,
        mode: str = "aggregate",
        pid: int | None = None,
        devices: list[str | None] | None = None,
        marker_lib: str | None = None,
        max_events: int = 5_000_000,
        capabilities: Capabilities | None = None,
        probes: list[str] | None = None,
        existing_children: bool = False,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.mode = mode
        self.pid = pid
        self.existing_children = existing_children
        self.device = next((d for d in devices or [] if d), None)
        self.marker_lib = marker_lib
        self.max_events = max_events
        self.caps = capabilities
        #: probe tables to run (None: all that suit the mode)
        self.only = set(probes) if probes else None
        self.could_not_measure: dict[str, str] = {}
        #: probes that could run but are off by default in this recording, and why
        self.not_asked: dict[str, str] = {}
        self._procs: list[_ProbeProcess] = []
        #: aggregate-mode probes running as our own libbpf programs (bpfprobes.py), by table
        self._own: dict[str, Any] = {}
        #: how each probe ran ("libbpf", "bpftrace"), and why not libbpf when it could have been
        self.backends: dict[str, str] = {}
        self._writer = None
        self._tmpdir: tempfile.TemporaryDirectory | None = None
        #: copies of the scripts that also follow the children `pid` had already (see `_script`)
        self._scripts_dir: tempfile.TemporaryDirectory | None = None
        #: the children `pid` had when the first script was started: every script follows the same ones
        self._existing: list[int] | None = None
        self._result: TraceResult | None = None

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
            if self.mode not in spec.modes or (self.only is not None and spec.table not in self.only):
                continue
            if self.mode in spec.only_when_asked and self.only is None:
                if spec.off_by_default and not (spec.needs_uprobes and self.marker_lib is None):
                    self.not_asked[spec.table] = spec.off_by_default
                continue
            if spec.default_needs_device and self.only is None and self.device is None:
                self.not_asked[spec.table] = BLOCK_PROBES_WITHOUT_A_DEVICE
                continue
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
            raise CapabilityError(
                "no probe can run here: " + "; ".join(f"{k}: {v}" for k, v in self.could_not_measure.items())
            )
        return chosen

    # --- running -------------------------------------------------------------
    def start(self, writer=None) -> None:
        """Start every probe that can run and wait until each has attached.

        Events go straight to `writer`'s tables directory (a RunWriter; None:
        a temporary directory, for aggregate mode or a quick look). A probe
        that fails to attach is listed in `could_not_measure`; if none
        attaches, CapabilityError.
        """
        self._writer = writer
        try:
            self._start_all()
        except BaseException:  # Ctrl-C while attaching, say: none may stay attached
            self._close_own()
            for p in self._procs:
                self._kill(p)
                _live.discard(p)
            self._procs = []
            raise

    def _start_all(self) -> None:
        specs = self._plan()
        if self._writer is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="plugtrace-trace-")
        for spec in specs:
            own = self._start_own(spec)
            if own.started:
                self.backends[spec.table] = "libbpf"
            else:
                self._start_bpftrace(spec, own.why_not)
        # an events-mode probe of ours that could not load falls back to its script, as above
        for p in self._await_attached():
            if not p.is_bpftrace:
                del self.could_not_measure[p.spec.table]
                self._start_bpftrace(p.spec, "; ".join(p.messages) or p.failure())
                self._await_attached()
        if not self._procs and not self._own:
            raise CapabilityError(
                "no probe attached: " + "; ".join(f"{k}: {v}" for k, v in self.could_not_measure.items())
            )

    def _start_bpftrace(self, spec: ProbeSpec, why_not_ours: str | None) -> None:
        """Run `spec`'s bpftrace script; `why_not_ours`: why our own programs did not take it
        (None: it has none in this mode)."""
        if not self._caps.bpftrace[0]:  # our own programs could not take it, and there is no fallback
            self.could_not_measure[spec.table] = self._caps.bpftrace[1] + (
                f"; our own programs: {why_not_ours}" if why_not_ours else "; it has no form as our own programs"
            )
            return
        if why_not_ours:
            print(
                f"plugtrace: could not measure: {spec.table}: {why_not_ours}; running {spec.file} "
                "with bpftrace instead",
                file=sys.stderr,
                flush=True,
            )
        self.backends[spec.table] = "bpftrace" + (f" (libbpf: {why_not_ours})" if why_not_ours else "")
        events = self.mode == "events"
        argv = [
            self._caps.bpftrace_path or "bpftrace",
            "-f",
            "json",
            self._script(spec),
            *probe_arguments(spec, self.pid, self.device, events, self.marker_lib),
        ]
        worker_argv = [sys.executable, "-m", "plugtrace.tracing.worker", spec.table, self._table_path(spec)]
        if events and self.max_events:
            worker_argv += ["--max-events", str(self.max_events)]
        env = dict(os.environ, BPFTRACE_PERF_RB_PAGES=str(PERF_RB_PAGES))
        with signals_held():
            proc = _spawn(argv, env=env)
            try:
                worker = _spawn(worker_argv, stdin=proc.stdout)
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            if proc.stdout is not None:
                proc.stdout.close()  # the worker holds the read end now
            p = self._track(_ProbeProcess(spec, proc, worker, events))
        p.start_readers()

    def _await_attached(self) -> list[_ProbeProcess]:
        """Wait until every probe process started has attached; those that did not are
        stopped, listed in `could_not_measure`, and returned."""
        deadline = time.monotonic() + ATTACH_TIMEOUT_S
        for p in self._procs:
            while not p.attached.wait(0.05):
                if p.proc.poll() is not None or time.monotonic() > deadline:
                    break
            settle = time.monotonic() + READY_TIMEOUT_S
            while p.attached.is_set() and not p.ready() and p.proc.poll() is None and time.monotonic() < settle:
                time.sleep(0.005)
        failed = []
        for p in list(self._procs):
            if not p.attached.is_set():
                if p.proc.poll() is None:
                    p.messages.append(f"did not attach within {ATTACH_TIMEOUT_S:.0f} s")
                self._kill(p)
                p.join(5)
                self.could_not_measure[p.spec.table] = f"failed to attach: {p.failure()}"
                self._procs.remove(p)
                _live.discard(p)
                failed.append(p)
        return failed

    def _start_own(self, spec: ProbeSpec) -> _Own:
        """Run `spec` as our own libbpf programs when it has such a form (an events-mode one: its
        reader is started, and its attaching awaited with the bpftrace probes)."""
        from .bpfprobes import AGGREGATES, EVENTS
        from .libbpf import BpfError

        forms = AGGREGATES if self.mode == "aggregate" else EVENTS
        if spec.table not in forms:
            return _Own(started=False)
        ok, why = self._caps.libbpf
        if ok and self.mode == "events":
            self._start_ring(spec)
            return _Own(started=True)
        if ok:
            try:
                probe = AGGREGATES[spec.table](self.pid, self.device, existing_children=self.existing_children)
                probe.start()
            except BpfError as exc:
                return _Own(started=False, why_not=exc.strerror or str(exc))
            self._own[spec.table] = probe
            return _Own(started=True)
        return _Own(started=False, why_not=why)

    def _start_ring(self, spec: ProbeSpec) -> None:
        """An events-mode probe as our own programs, read by `ringworker.py` in a process of its own."""
        argv = [sys.executable, "-m", "plugtrace.tracing.ringworker", spec.table, self._table_path(spec)]
        if self.pid:
            argv += ["--pid", str(self.pid)] + (["--existing-children"] if self.existing_children else [])
        if self.device:
            argv += ["--device", self.device]
        if self.max_events:
            argv += ["--max-events", str(self.max_events)]
        with signals_held():
            p = self._track(_ProbeProcess(spec, _spawn(argv), None, True))
        p.start_readers()

    def _track(self, p: _ProbeProcess) -> _ProbeProcess:
        """From here on `p` is stopped with the recording, and by the exit handlers if the recording is not."""
        _live.add(p)
        self._procs.append(p)
        return p

    def _close_own(self) -> None:
        own, self._own = self._own, {}
        for probe in own.values():
            probe.stop()

    #: how every script starts following a process (and, where it has a fork follower, its new children)
    _FOLLOW = "BEGIN { @traced[$1] = 1; }"

    def _script(self, spec: ProbeSpec) -> str:
        """The path of `spec`'s script, or with `existing_children`, of a copy whose BEGIN follows the
        children `pid` forked already too (a copy of the same name, so it reads as the script it is)."""
        if not (self.existing_children and self.pid):
            return str(spec.path)
        if self._existing is None:
            self._existing = descendants(self.pid)
        children = self._existing
        text = spec.path.read_text()
        if not children or self._FOLLOW not in text:
            return str(spec.path)
        follow = " ".join(f"@traced[{child}] = 1;" for child in children)
        if self._scripts_dir is None:
            self._scripts_dir = tempfile.TemporaryDirectory(prefix="plugtrace-scripts-")
        path = os.path.join(self._scripts_dir.name, spec.file)
        with open(path, "w") as fh:
            fh.write(text.replace(self._FOLLOW, f"BEGIN {{ @traced[$1] = 1; {follow} }}"))
        return path

    @property
    def _caps(self) -> Capabilities:
        assert self.caps is not None, "start() detects the capabilities first"
        return self.caps

    def _table_path(self, spec: ProbeSpec) -> str:
        if self._writer is not None:
            return os.fspath(self._writer.table_path(spec.table))
        assert self._tmpdir is not None  # made by _start_all when there is no writer
        return os.path.join(self._tmpdir.name, f"{spec.table}.parquet")

    def running(self) -> list[str]:
        return [p.spec.table for p in self._procs if p.proc.poll() is None]

    def died(self) -> list[str]:
        """Probes whose bpftrace exited while it should have been running."""
        return [p.failure() for p in self._procs if p.proc.poll() is not None and not p.stopping]

    def stop(self, writer=None) -> TraceResult:
        """Stop every probe and put what it captured into the run directory (aggregate mode: the
        in-kernel maps become the `histograms` and `counters` tables); returns what happened."""
        if self._result is not None:  # a second call (an interrupted caller retrying) gets the same answer
            return self._result
        # Stopping is the finalisation: a Ctrl-C now waits until it is done
        # (bounded by DRAIN_MAX_S and STOP_TIMEOUT_S) rather than cutting it short.
        with signals_held():
            self._result = self._stop(writer if writer is not None else self._writer)
        return self._result

    def _stop(self, writer) -> TraceResult:
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
                for proc in p.processes:
                    try:
                        proc.wait(STOP_SLOW_S)
                    except subprocess.TimeoutExpired:  # say why the recording does not end yet
                        print(
                            f"plugtrace: waiting for {p.what} to stop (at most {STOP_TIMEOUT_S:.0f} s) ...",
                            file=sys.stderr,
                            flush=True,
                        )
                        proc.wait(STOP_TIMEOUT_S - STOP_SLOW_S)
            except subprocess.TimeoutExpired:
                self._kill(p)
                errors.append(f"{p.what} did not stop within {STOP_TIMEOUT_S:.0f} s: killed")
            p.join(5)
            _live.discard(p)
            if p.done.get("error"):
                errors.append(p.done["error"])
            elif not p.done:
                errors.append(
                    f"decoding the output of {p.what} failed: "
                    + ("; ".join(p.messages[-3:]) or f"exit status {p.processes[-1].returncode}")
                )
        ran, lost, dropped = [], 0, 0
        hist_rows: dict[str, list] = {"name": [], "low": [], "high": [], "count": []}
        counters: dict[str, list] = {"name": [], "value": []}
        for table, agg in self._own.items():
            try:
                maps = agg.result()
            except OSError as exc:
                errors.append(f"reading the {table} aggregates failed: {exc}")
                continue
            ran.append(table)
            _add_maps(maps, hist_rows, counters)
        self._close_own()
        for p in self._procs:
            lost += p.done.get("lost_events", 0)
            dropped += p.done.get("dropped", 0)
            if p.events:
                ran.append(p.spec.table)
                # A file the worker created is the run's even when its first write failed (a
                # full disk leaves it empty) or the worker died before saying so: meta lists it,
                # damaged unless the worker finished it.
                if writer is not None and writer.table_path(p.spec.table).exists():
                    damaged = bool(p.done.get("error")) or not p.done
                    writer.adopt_table(p.spec.table, p.done.get("rows", 0), damaged=damaged)
                continue
            maps = p.done.get("maps") or {}
            if not maps:
                why = p.failure() if p.proc.returncode not in (0, -signal.SIGINT) else "bpftrace printed no maps"
                self.could_not_measure[p.spec.table] = f"no in-kernel data: {why}"
                continue
            ran.append(p.spec.table)
            _add_maps(maps, hist_rows, counters)
        if self.mode == "aggregate" and writer is not None:
            for name, rows in (("histograms", hist_rows), ("counters", counters)):
                if rows["name"]:
                    try:
                        writer.append(name, pa.table(rows, schema=TABLES[name]))
                    except PlugtraceError as exc:  # a full disk: the run says so, the rest still finishes
                        errors.append(exc.message)
        if self.mode == "aggregate" and ran:
            ran = ["histograms", "counters", *(f"aggregate:{t}" for t in ran)]
        summary = {
            "bpftrace_lost_events": lost,
            "dropped_over_max_events": dropped,
            "events_kept": {p.spec.table: p.done.get("kept", 0) for p in self._procs if p.events},
        }
        self._procs = []
        if self._scripts_dir is not None:
            self._scripts_dir.cleanup()
            self._scripts_dir = None
        return TraceResult(
            ran=ran,
            could_not_measure=dict(self.could_not_measure),
            backends=dict(self.backends),
            not_asked=dict(self.not_asked),
            events_lost=lost + dropped,
            error="; ".join(errors) or None,
            kernel_summary=summary,
        )

    def _drain(self) -> None:
        """Let bpftrace print what is still in its perf buffers: on SIGINT it
        exits without reading them, and those events would be lost uncounted."""
        # (our ring readers drain themselves when stopped)
        streams = [p for p in self._procs if p.events and p.is_bpftrace and p.proc.poll() is None]
        deadline = time.monotonic() + DRAIN_MAX_S
        last = None
        while streams and time.monotonic() < deadline:
            now = [p.bytes_read for p in streams]
            if now == last:
                return
            last = now
            time.sleep(DRAIN_QUIET_S)

    @staticmethod
    def _kill(p: _ProbeProcess) -> None:
        for proc in p.processes:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()

    def __enter__(self) -> Tracer:
        return self

    def __exit__(self, *exc) -> None:
        if self._procs or self._own:
            self.stop()


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


def _add_maps(maps: dict, hist_rows: dict, counters: dict) -> None:
    """One probe's maps (as bpftrace prints them) into the histograms and counters tables.
    Submit positions are stored as what they mean: batch sizes (``submit_nr_sqes``)
    and the number of submitting enters (``nr_submits``)."""
    for name, value in maps.items():
        if name == "uring_submit_pos":
            sizes = batch_sizes_from_positions(value)
            _extend(hist_rows, histogram_rows("submit_nr_sqes", sizes))
            _extend(counters, counter_rows("nr_submits", sum(b["count"] for b in sizes)))
        elif isinstance(value, list):
            _extend(hist_rows, histogram_rows(name, value))
        else:
            _extend(counters, counter_rows(name, value, MARKER_NAMES if name == "nr_markers" else None))


def _extend(rows: dict[str, list], more: dict[str, list]) -> None:
    for k, v in more.items():
        rows[k].extend(v)


@atexit.register
def _kill_leftovers() -> None:
    """Whatever path the program takes out, no bpftrace of ours stays attached."""
    for p in list(_live):
        if p.proc.poll() is None:
            Tracer._kill(p)
