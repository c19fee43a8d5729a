"""Running the probes of one recording: `Tracer`, the facade the recordings use.

`plan.py` decides which probes run and by which backend (and what cannot be measured); each runs
behind one protocol (`backend.py`): our libbpf programs where a probe has them
(`backend_libbpf.py`), else its bpftrace script (`backend_bpftrace.py`). When our programs cannot
load (a verifier rejection, a kernel without what it needs), the probe's bpftrace script takes
their place, and the reason is printed and kept in meta.json (``probes.backends``). At stop the
in-kernel maps of aggregate mode become the `histograms` and `counters` tables.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ..errors import CapabilityError, PlugtraceError
from ..logs import logger
from ..processes import signals_held
from ..run.schema import TABLES
from .backend import ProbeRun
from .backend_bpftrace import BpftraceBackend, BpftraceRun, drain
from .backend_libbpf import AggregateRun, start_ring
from .capabilities import Capabilities
from .decode import batch_sizes_from_positions, counter_rows, histogram_rows
from .plan import Planned, plan
from .probes import MARKER_NAMES, ProbeSpec

MODES = ("aggregate", "events")

#: how long a probe may take to attach (bpftrace parsing BTF is slow on a busy machine), in seconds
ATTACH_TIMEOUT_S = 60.0
#: after a probe says attached_probes, how long to wait for its attachments to show, in seconds
READY_TIMEOUT_S = 5.0


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
        #: how each probe ran ("libbpf", "bpftrace"), and why not libbpf when it could have been
        self.backends: dict[str, str] = {}
        self._runs: list[ProbeRun] = []
        self._undo = contextlib.ExitStack()
        self._bpftrace: BpftraceBackend | None = None
        self._writer = None
        self._tmpdir: tempfile.TemporaryDirectory | None = None
        self._result: TraceResult | None = None

    # --- running -------------------------------------------------------------
    def start(self, writer=None) -> None:
        """Start every probe that can run and wait until each has attached.

        Events go straight to `writer`'s tables directory (a RunWriter; None:
        a temporary directory, for aggregate mode or a quick look). A probe
        that fails to attach is listed in `could_not_measure`; if none
        attaches, CapabilityError.
        """
        self._writer = writer
        # each probe started is killed if the start does not finish (Ctrl-C while attaching, say):
        # none may stay attached; once it finishes, stop() ends them
        with contextlib.ExitStack() as self._undo:
            self._undo.callback(self._runs.clear)  # (the last undone)
            self._start_all()
            self._undo.pop_all()

    def _start_all(self) -> None:
        if self.caps is None:
            from .capabilities import detect_capabilities

            self.caps = detect_capabilities()
        chosen = plan(self.mode, self.caps, self.only, self.device, self.marker_lib)
        self.could_not_measure.update(chosen.could_not_measure)
        self.not_asked.update(chosen.not_asked)
        self._bpftrace = BpftraceBackend(
            self.caps.bpftrace_path or "bpftrace",
            self.pid,
            self.device,
            self.marker_lib,
            self.mode == "events",
            self.max_events,
            self.existing_children,
        )
        if self._writer is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="plugtrace-trace-")
        for planned in chosen.probes:
            why_not_ours = self._start_ours(planned) if planned.ours else planned.why_not_ours
            if why_not_ours is None and planned.ours:
                self.backends[planned.spec.table] = "libbpf"
            else:
                self._start_bpftrace(planned.spec, why_not_ours)
        # an events-mode probe of ours that could not load falls back to its script, as above
        for run in self._await_attached():
            if run.backend == "libbpf":
                del self.could_not_measure[run.spec.table]
                self._start_bpftrace(run.spec, "; ".join(run.messages) or run.failure())
                self._await_attached()
        if not self._runs:
            raise CapabilityError(
                "no probe attached: " + "; ".join(f"{k}: {v}" for k, v in self.could_not_measure.items())
            )

    def _start_ours(self, planned: Planned) -> str | None:
        """Run a probe as our own libbpf programs; why they could not load (None: they did, or
        in events mode, their reader started: whether they load is awaited with the others)."""
        from .libbpf import BpfError

        spec = planned.spec
        if self.mode == "events":
            with signals_held():  # from its start it is stopped with the recording
                ring = start_ring(
                    spec, self._table_path(spec), self.pid, self.device, self.max_events, self.existing_children
                )
                self._track(ring)
            return None
        try:
            run = AggregateRun(spec, self.pid, self.device, self.existing_children)
        except BpfError as exc:
            return exc.strerror or str(exc)
        self._track(run)
        return None

    def _start_bpftrace(self, spec: ProbeSpec, why_not_ours: str | None) -> None:
        """Run `spec`'s bpftrace script; `why_not_ours`: why our own programs did not take it
        (None: it has none in this mode)."""
        caps = self.caps
        assert caps is not None and self._bpftrace is not None, "_start_all() plans first"
        if not caps.bpftrace[0]:  # our own programs could not take it, and there is no fallback
            self.could_not_measure[spec.table] = caps.bpftrace[1] + (
                f"; our own programs: {why_not_ours}" if why_not_ours else "; it has no form as our own programs"
            )
            return
        if why_not_ours:
            logger.warning(
                f"plugtrace: could not measure: {spec.table}: {why_not_ours}; running {spec.file} with bpftrace instead"
            )
        self.backends[spec.table] = "bpftrace" + (f" (libbpf: {why_not_ours})" if why_not_ours else "")
        with signals_held():  # from its start it is stopped with the recording
            self._track(self._bpftrace.start(spec, self._table_path(spec)))

    def _track(self, run: ProbeRun) -> None:
        """From here on `run` is stopped with the recording, or killed if the start fails."""
        self._runs.append(run)
        self._undo.callback(run.kill)

    def _await_attached(self) -> list[ProbeRun]:
        """Wait until every probe started has attached; those that did not are stopped, listed
        in `could_not_measure`, and returned."""
        deadline = time.monotonic() + ATTACH_TIMEOUT_S
        for run in self._runs:
            while not run.wait_attached(0.05):
                if run.exit_status() is not None or time.monotonic() > deadline:
                    break
            settle = time.monotonic() + READY_TIMEOUT_S
            while run.wait_attached(0) and not run.ready() and run.exit_status() is None and time.monotonic() < settle:
                time.sleep(0.005)
        failed = []
        for run in list(self._runs):
            if not run.wait_attached(0):
                if run.exit_status() is None:
                    run.messages.append(f"did not attach within {ATTACH_TIMEOUT_S:.0f} s")
                run.kill()
                self.could_not_measure[run.spec.table] = f"failed to attach: {run.failure()}"
                self._runs.remove(run)
                failed.append(run)
        return failed

    def _table_path(self, spec: ProbeSpec) -> str:
        if self._writer is not None:
            return os.fspath(self._writer.table_path(spec.table))
        assert self._tmpdir is not None  # made by _start_all when there is no writer
        return os.path.join(self._tmpdir.name, f"{spec.table}.parquet")

    def running(self) -> list[str]:
        """Probes tracing now."""
        return [run.spec.table for run in self._runs if run.exit_status() is None]

    def died(self) -> list[str]:
        """Probes whose process exited while it should have been running, and why."""
        return [run.failure() for run in self._runs if run.exit_status() is not None and not run.stopping]

    def stop(self, writer=None) -> TraceResult:
        """Stop every probe and put what it captured into the run directory (aggregate mode: the
        in-kernel maps become the `histograms` and `counters` tables); returns what happened."""
        if self._result is not None:  # a second call (an interrupted caller retrying) gets the same answer
            return self._result
        # Stopping is the finalisation: a Ctrl-C now waits until it is done
        # (bounded by the backends' drain and stop timeouts) rather than cutting it short.
        with signals_held():
            self._result = self._stop(writer if writer is not None else self._writer)
        return self._result

    def _stop(self, writer) -> TraceResult:
        errors = []
        drain([run for run in self._runs if isinstance(run, BpftraceRun)])
        for run in self._runs:
            if run.exit_status() is not None:
                errors.append(f"{run.failure()} mid-run; what it sent until then is kept")
            run.stopping = True
            run.interrupt()
        # processes first, all asked at once above; then the maps held here (read once the rest stopped)
        for run in sorted(self._runs, key=lambda r: r.held_here):
            errors.extend(run.finish())
        ran, lost, dropped = [], 0, 0
        hist_rows: dict[str, list] = {"name": [], "low": [], "high": [], "count": []}
        counters: dict[str, list] = {"name": [], "value": []}
        for run in sorted(self._runs, key=lambda r: not r.held_here):
            lost += run.done.get("lost_events", 0)
            dropped += run.done.get("dropped", 0)
            if run.events:
                ran.append(run.spec.table)
                # A file the worker created is the run's even when its first write failed (a
                # full disk leaves it empty) or the worker died before saying so: meta lists it,
                # damaged unless the worker finished it.
                if writer is not None and writer.table_path(run.spec.table).exists():
                    damaged = bool(run.done.get("error")) or not run.done
                    writer.adopt_table(run.spec.table, run.done.get("rows", 0), damaged=damaged)
                continue
            if run.held_here:  # our maps, read whatever they hold (a failed read is among the errors)
                if "maps" in run.done:
                    ran.append(run.spec.table)
                    _add_maps(run.done["maps"], hist_rows, counters)
                continue
            maps = run.done.get("maps") or {}
            if not maps:
                rc = run.exit_status()
                why = run.failure() if rc not in (0, -signal.SIGINT) else "bpftrace printed no maps"
                self.could_not_measure[run.spec.table] = f"no in-kernel data: {why}"
                continue
            ran.append(run.spec.table)
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
            "events_kept": {run.spec.table: run.done.get("kept", 0) for run in self._runs if run.events},
        }
        self._runs = []
        if self._bpftrace is not None:
            self._bpftrace.close()
        return TraceResult(
            ran=ran,
            could_not_measure=dict(self.could_not_measure),
            backends=dict(self.backends),
            not_asked=dict(self.not_asked),
            events_lost=lost + dropped,
            error="; ".join(errors) or None,
            kernel_summary=summary,
        )

    def __enter__(self) -> Tracer:
        return self

    def __exit__(self, *exc) -> None:
        if self._runs:
            self.stop()


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
