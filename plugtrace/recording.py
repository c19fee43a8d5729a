"""The life of one recording, whatever is recorded: its run directory, its tracer, the signals that end it
early, and a true status in `meta.json` on every way out.

    with Recording(out, meta) as rec:        # run directory created, SIGTERM/SIGHUP/SIGQUIT act as Ctrl-C
        missing = rec.start_tracer(...)       # says what could not be measured
        ...                                   # the workload, or the traced program
        trace_info = rec.close_tables()       # the tables can be read from here on
        rec.finish(Status.COMPLETE, trace_info, summary=...)
        return EXIT_OK
    return EXIT_INTERRUPTED                   # reached only when the recording was interrupted

Leaving the block any other way keeps what was recorded: a tracer still running is stopped and its tables
kept, the run is closed `interrupted` (Ctrl-C, or a terminating signal), `incomplete` (the disk filled up)
or `failed` (anything else, its message in meta.json's `error`), and the clean-ups registered with
`on_exit` run last, in reverse order, even when a second signal arrives meanwhile.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from ._version import __version__
from .errors import (
    EXIT_DATA_MISMATCH,
    EXIT_INTERRUPTED,
    EXIT_OK,
    CapabilityError,
    DeviceError,
    PlugtraceError,
    UsageError,
)
from .logs import logger
from .run import Mode, RunMeta, RunWriter, Status, WriteError, read_table

if TYPE_CHECKING:
    from .qemu.recording import QemuConfig

__all__ = [
    "record",
    "record_program",
    "record_qemu",
    "RecordResult",
    "Recording",
    "TERMINATING",
    "Terminate",
    "catch_terminating",
    "ignore_terminating",
    "restore_signals",
]


class Terminate(KeyboardInterrupt):
    """SIGTERM, SIGHUP (the terminal closed) or SIGQUIT, raised in the main thread so it unwinds
    exactly like Ctrl-C: what was recorded is kept, devices we made are removed."""


def _on_terminating(signum: int, frame: FrameType | None) -> None:
    raise Terminate()


#: the signals that end a recording as Ctrl-C does
TERMINATING = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def catch_terminating() -> dict[int, Any]:
    """Turn `TERMINATING` signals into `Terminate`; returns the old handlers for `restore_signals`."""
    return {sig: signal.signal(sig, _on_terminating) for sig in TERMINATING}


def ignore_terminating() -> None:
    """While cleaning up: a second signal must not cut the clean-up short."""
    for sig in TERMINATING:
        signal.signal(sig, signal.SIG_IGN)


def restore_signals(old: dict[int, Any]) -> None:
    for sig, handler in old.items():
        signal.signal(sig, handler)


def os_error_message(exc: OSError) -> str:
    """An OSError as the one line a user reads: the file it concerns, then what went wrong."""
    return f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}"


def check_output(out: Path) -> None:
    """Refuse a run directory that could not be made: a file, a directory with something in it, or
    one under a directory that cannot be written."""
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise PlugtraceError(f"{out}: exists and is not a directory (choose another -o)")
        if any(out.iterdir()):
            raise PlugtraceError(f"run directory {out} exists and is not empty (choose another -o)")
        parent = out
    else:
        parent = out.absolute().parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise PlugtraceError(f"{out}: {parent} is not a directory")
    if os.statvfs(parent).f_flag & os.ST_RDONLY:
        raise PlugtraceError(f"{out}: {parent}: Read-only file system")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PlugtraceError(f"{out}: {parent} is not writable")


class Recording:
    """One recording from its run directory's creation to its last clean-up (see the module's docstring)."""

    def __init__(self, out: Path, meta: dict[str, Any], command: list[str] | None = None) -> None:
        check_output(out)  # before a device is made and filled for a run that could not be kept
        self.out = out
        self._meta = {
            "plugtrace_version": __version__,
            "command": command if command is not None else list(sys.argv),
            "events_lost": None,
            "tracing_overhead": None,
            **meta,
        }
        self.writer: RunWriter | None = None
        self.tracer: Any = None
        self._missing: dict[str, str] = {}
        self._cleanups = contextlib.ExitStack()
        self._old_signals: dict[int, Any] = {}

    # the block ------------------------------------------------------------------------------------------
    def __enter__(self) -> Recording:
        self._old_signals = catch_terminating()
        return self

    def on_exit(self, cleanup: Callable[[], None]) -> None:
        """Run `cleanup` when the recording ends, however it ends (last registered, first run)."""
        self._cleanups.callback(cleanup)

    def open(self, **meta: Any) -> RunWriter:
        """Create the run directory with the common metadata and `meta` (the device, the config, ...)."""
        self.writer = RunWriter(self.out, self._meta | meta)
        return self.writer

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        ignore_terminating()
        try:
            status, replacement = self._status_for(exc)
            if isinstance(exc, KeyboardInterrupt):
                logger.warning(
                    "\nplugtrace: interrupted; keeping what was recorded"
                    if self.writer is not None
                    else "\nplugtrace: interrupted before recording began; nothing was recorded"
                )
            # a failure the CLI explains in its one line needs no second line saying the run failed
            self._close(status, say=not (status == Status.FAILED and isinstance(exc, (PlugtraceError, OSError))))
        finally:
            try:
                self._cleanups.close()  # every one runs, even when one before it fails
            finally:
                restore_signals(self._old_signals)
        if replacement is not None:
            raise replacement from None
        return isinstance(exc, KeyboardInterrupt)  # an interrupted recording ends normally, with what it has

    def _status_for(self, exc: BaseException | None) -> tuple[str, PlugtraceError | None]:
        """The status an unfinished run is closed with, and the error the CLI should show instead of `exc`."""
        if exc is None or isinstance(exc, KeyboardInterrupt):
            return Status.INTERRUPTED, None
        if isinstance(exc, PlugtraceError):
            self._note_error(exc.message)
            return (Status.INCOMPLETE if isinstance(exc, WriteError) else Status.FAILED), None
        if isinstance(exc, OSError):  # the run directory: a file in the way, a read-only file system, ...
            message = os_error_message(exc)
            self._note_error(message)
            return Status.FAILED, PlugtraceError(message)
        return Status.FAILED, None

    def _note_error(self, message: str) -> None:
        if self.writer is not None:
            self.writer.meta["error"] = message

    def _close(self, status: str, say: bool) -> None:
        """Stop a tracer still running and close a run still recording, with `status`."""
        if self.tracer is not None:
            info = self.stop_tracer()
            if self.writer is not None:
                self.writer.meta.update(info)
        writer = self.writer
        if writer is None or writer.meta.status != Status.RECORDING:
            return
        try:
            writer.close(status)
        except PlugtraceError as exc:
            logger.error(f"plugtrace: {exc.message}")
        if writer.meta.status != Status.COMPLETE and say:
            logger.warning(f"plugtrace: run directory {self.out} marked {writer.meta.status}")

    # tracing --------------------------------------------------------------------------------------------
    def start_tracer(
        self,
        mode: str,
        pid: int,
        dev_t: list[str | None],
        max_events: int,
        probes: list[str] | None = None,
        markers: bool = True,
        existing_children: bool = False,
    ) -> dict[str, str]:
        """Start tracing `pid` when this machine can. Returns what could not be measured, probe -> why
        (``"kernel"`` when nothing could be traced at all, in which case no tracer runs).

        `markers`: put uprobes on our extension's plug-section markers; `existing_children`: trace the
        children `pid` forked already too (--pid).
        """
        assert self.writer is not None, "open() the run directory first"
        if mode == "off":
            self._missing = {"kernel": "tracing turned off (--mode off)"}
            return dict(self._missing)
        if os.geteuid() != 0:
            self._missing = {"kernel": "not root: bpftrace needs root (run as root to trace the kernel side)"}
            return dict(self._missing)
        try:
            from .tracing import Tracer, detect_capabilities
        except ImportError as exc:
            self._missing = {"kernel": f"tracing support is not installed ({exc})"}
            return dict(self._missing)
        from .uring._binding import extension_path

        tracer = Tracer(
            mode=mode,
            pid=pid,
            devices=list(dev_t),
            marker_lib=extension_path if markers else None,
            max_events=max_events,
            capabilities=detect_capabilities(),
            probes=probes,
            existing_children=existing_children,
        )
        try:
            tracer.start(self.writer)
        except CapabilityError as exc:
            self._missing = {"kernel": exc.message}
            return dict(self._missing)
        self.tracer = tracer
        self._missing = dict(tracer.could_not_measure)
        return dict(self._missing)

    def stop_tracer(self) -> dict[str, Any]:
        """Stop the tracer (if one runs) and return what the run's metadata says about tracing."""
        probes: dict[str, Any] = {"ran": [], "could_not_measure": dict(self._missing)}
        info: dict[str, Any] = {"probes": probes, "events_lost": None}
        if self.tracer is None:
            return info
        # forgotten only once stopped: a signal landing inside stop() has the recording's end stop it again
        result = self.tracer.stop(self.writer)
        self.tracer = None
        reported = result.probes()
        reported["could_not_measure"] = probes["could_not_measure"] | reported["could_not_measure"]
        info["probes"] = reported
        info["events_lost"] = result.events_lost
        if result.error:
            info["tracer_error"] = result.error
            logger.error(f"plugtrace: tracer: {result.error}")
        if result.kernel_summary:
            info["kernel_summary"] = result.kernel_summary
        return info

    # the end --------------------------------------------------------------------------------------------
    def close_tables(self) -> dict[str, Any]:
        """The workload is over: stop the tracer, close every table (they can be read from here on) and
        return the tracing metadata with the kernel's headline numbers, for `finish`."""
        assert self.writer is not None
        info = self.stop_tracer()
        self.writer.close_tables()
        _add_kernel_summary(info, self.out)
        return info

    def finish(self, status: str, trace_info: dict[str, Any], **fields: Any) -> None:
        """Write `meta.json` of a run that ran to its end (a tracer error makes it `incomplete`)."""
        assert self.writer is not None
        if trace_info.get("tracer_error") and status == Status.COMPLETE:
            status = Status.INCOMPLETE
        self.writer.close(status, **trace_info, **fields)


def _add_kernel_summary(info: dict[str, Any], run_dir: Path) -> None:
    """Merge eBPF headline numbers (from the finished kernel tables) into `info`."""
    from .tracing.summary import kernel_summary

    try:
        numbers = kernel_summary(run_dir)
    except (OSError, ValueError) as exc:  # a damaged table: the run says so elsewhere
        numbers = {"error": f"could not summarise the kernel tables: {exc}"}
    if numbers:
        info.setdefault("kernel_summary", {}).update(numbers)


# --- what is recorded ----------------------------------------------------------------------------------


def default_output(label: str) -> Path:
    """Where a run goes when no -o says: runs/DATE-TIME-LABEL."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{label}"


@dataclass
class RecordResult:
    """What a finished (or interrupted) recording left: its run directory, its final meta.json, and the exit
    code the command line gives it (0, EXIT_INTERRUPTED, EXIT_DATA_MISMATCH, or a traced command's own).
    `meta` is None when a signal ended the recording before the workload did (the run directory, if
    it was made, says so itself)."""

    out: Path
    meta: RunMeta | None
    exit_code: int


class Progress:
    """Elapsed time, requests completed and live IOPS on stderr: a live line (rich) on a terminal, one
    plain line every few seconds otherwise (a log file gets no carriage returns)."""

    #: seconds between lines when stderr is not a terminal
    PLAIN_EVERY_S = 5.0

    def __init__(self, total_s: float | None, quiet: bool):
        self.total_s = total_s
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.last_n = 0
        self.last_t = 0.0
        self.last_print = -10.0
        self._live: Any = None
        self._task: Any = None

    def __call__(self, elapsed: float, completed: int) -> None:
        if self.quiet:
            return
        iops = (completed - self.last_n) / max(elapsed - self.last_t, 1e-9)
        self.last_n, self.last_t = completed, elapsed
        if self.tty:
            self._show_live(elapsed, completed, iops)
        elif elapsed - self.last_print >= self.PLAIN_EVERY_S:
            self.last_print = elapsed
            total = f" / {self.total_s:g}s" if self.total_s else ""
            print(
                f"  {elapsed:5.1f}s{total}  {completed:>10,} requests  {iops:>10,.0f} IOPS", file=sys.stderr, flush=True
            )

    def _show_live(self, elapsed: float, completed: int, iops: float) -> None:
        if self._live is None:  # started at the workload's first second, not while the tracer starts
            from rich.console import Console
            from rich.progress import BarColumn, ProgressColumn, TextColumn
            from rich.progress import Progress as Live

            total = f" / {self.total_s:g}s" if self.total_s else ""
            columns: list[ProgressColumn] = [TextColumn("  {task.completed:5.1f}s" + total)]
            if self.total_s:
                columns.append(BarColumn(bar_width=20))
            columns.append(TextColumn("{task.fields[requests]:>10,} requests  {task.fields[iops]:>10,.0f} IOPS"))
            self._live = Live(*columns, console=Console(file=sys.stderr), auto_refresh=False)
            self._task = self._live.add_task("workload", total=self.total_s, requests=0, iops=0.0)
            self._live.start()
        self._live.update(self._task, completed=elapsed, requests=completed, iops=iops, refresh=True)

    def done(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


def _percentile(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def app_summary(run_dir: Path, elapsed_s: float, nr_requests: int) -> dict[str, Any]:
    """Headline numbers from the app-side submits table."""
    summary: dict[str, Any] = {
        "elapsed_s": round(elapsed_s, 3),
        "nr_requests": nr_requests,
        "iops": round(nr_requests / elapsed_s, 1) if elapsed_s > 0 else None,
    }
    if (run_dir / "tables" / "submits.parquet").exists():
        t = read_table(run_dir, "submits", columns=["nr_sqes", "latency_ns"])
        sqes = t["nr_sqes"].to_numpy()
        lat = t["latency_ns"].to_numpy()
        summary.update(
            nr_submits=int(len(sqes)),
            mean_sqes_per_submit=round(float(sqes.mean()), 3) if len(sqes) else None,
            submit_latency_p50_ns=_percentile(lat, 50),
            submit_latency_p99_ns=_percentile(lat, 99),
        )
    return summary


def record(
    output: str | os.PathLike | None = None,
    *,
    device: str = "loop",
    size: str | int = "1G",
    sparse: bool = False,
    allow_write: bool = False,
    mode: str = Mode.AGGREGATE,
    max_events: int = 5_000_000,
    probes: list[str] | None = None,
    measure_overhead: bool = False,
    quiet: bool = False,
    command_line: list[str] | None = None,
    arrivals: dict[int, Any] | None = None,
    observe: Callable[[str, Any], None] | None = None,
    finish_extra: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    **workload: Any,
) -> RecordResult:
    """Run plugtrace's own workload on a real device and record it (what `plugtrace record` does).

    `device`: loop | zram | file:PATH | /dev/NAME; `size`: of a device we create (bytes, or "1G");
    `mode`: aggregate | events | off; `probes`: only these (see `plugtrace record --help`);
    `workload`: the fields of `plugtrace.engine.WorkloadConfig` (strategy, devices, iodepth, bs, rw,
    duration_s, requests, ...; `duration_s` defaults to 5 s unless `requests` is given).
    Returns the run directory, its meta.json and the command line's exit code.

    A replay (`plugtrace.replay`) gives `arrivals` (device -> `engine.emulation.Arrivals`, driving those
    devices instead of the closed-loop guest), `observe(table, rows)` (sees every log chunk as it is
    written) and `finish_extra(summary)` (meta fields for the finished run; tables to write under
    "_tables", name -> DataFrame).
    """
    from .engine import WorkloadConfig, run_workload
    from .environment import describe_environment

    mode = Mode(mode)
    if mode == Mode.OFF and measure_overhead:
        raise UsageError("--measure-overhead compares a traced run with an untraced one: not with --mode off")
    if max_events <= 0:
        raise UsageError("--max-events: must be positive")
    duration = workload.pop("duration_s", None)
    if duration is not None and not (math.isfinite(duration) and duration > 0):
        raise UsageError(f"--duration: a positive number of seconds, not {duration}")
    if duration is None and workload.get("requests") is None:
        duration = 5.0
    seed = workload.get("seed", 1)
    if not 0 <= seed < 2**63:
        raise UsageError(f"--seed: 0 to 2**63-1, not {seed}")
    cfg = WorkloadConfig(duration_s=duration, **workload)
    cfg.validate()
    size_bytes = _size_bytes(size)
    made = (
        device in ("loop", "zram")
        or device.startswith("loop:")
        or (device.startswith("file:") and not os.path.lexists(device[5:]))
    )
    ndev = cfg.devices + cfg.ide_devices
    if made and (size_bytes // ndev) // cfg.bs < cfg.iodepth:  # the engine's own check, before the device is made
        raise UsageError(
            f"--size/--devices: {size_bytes} bytes are too small for {ndev} emulated devices of at least "
            f"{cfg.iodepth} blocks of {cfg.bs} bytes"
        )
    out = Path(output) if output is not None else default_output(cfg.strategy)
    with Recording(out, {"environment": describe_environment()}, command=command_line) as rec:
        target = _open_target(rec, device, size_bytes, allow_write, sparse, cfg.writes)
        if target.extra.get("fill_s") is not None and not quiet:
            logger.info(
                f"filled the loop device's backing file with {size_bytes / 2**30:.3g} GiB of data in "
                f"{target.extra['fill_s']:.1f} s (--sparse skips this)"
            )
        config = cfg.as_dict() | {"mode": str(mode), "device_spec": device}
        writer = rec.open(config=config, device=target.describe())
        overhead: dict[str, Any] | None = None
        if measure_overhead:
            logger.info("measuring untraced baseline ...")
            # the baseline writes its log too, beside the run, as the traced run will: the ratio is tracing's alone
            with tempfile.TemporaryDirectory(prefix=".untraced-baseline-", dir=out) as scratch:
                scratch_log = RunWriter(Path(scratch) / "run", {"config": config})
                baseline = run_workload(
                    cfg, target.path, target.size_bytes, scratch_log.append, progress=Progress(cfg.duration_s, quiet)
                )
                scratch_log.close_tables()
                untraced_batch = app_summary(Path(scratch) / "run", baseline.elapsed_s, baseline.nr_requests)
            if baseline.interrupted:  # Ctrl-C or SIGTERM during the baseline ends the recording too
                raise KeyboardInterrupt
            overhead = {
                "untraced_iops": round(baseline.iops, 1),
                "untraced_mean_sqes_per_submit": untraced_batch.get("mean_sqes_per_submit"),
            }
        missing = rec.start_tracer(mode, os.getpid(), [target.dev_t], max_events, probes)
        for name, why in missing.items():
            logger.warning(f"plugtrace: could not measure {name}: {why}")
        progress = Progress(cfg.duration_s, quiet)
        sink: Callable[[str, Any], int] = writer.append
        if observe is not None:

            def observed(name: str, rows: Any) -> int:
                observe(name, rows)
                return writer.append(name, rows)

            sink = observed

        try:
            result = run_workload(
                cfg,
                target.path,
                target.size_bytes,
                sink,
                progress=progress,
                arrivals=arrivals,
                log_hold_bytes=log_hold_budget(out),
            )
        finally:
            progress.done()
        trace_info = rec.close_tables()
        summary = app_summary(out, result.elapsed_s, result.nr_requests)
        summary["sync_reads"] = result.sync_reads
        summary["nr_errors"] = result.nr_errors
        summary["log_rows_while_running"] = result.log_rows_while_running
        if result.log_rows_while_running:
            logger.warning(
                f"plugtrace: the engine's log outgrew the {result.log_hold_bytes / 2**20:,.0f} MiB it may hold "
                f"while the workload runs; {result.log_rows_while_running:,} rows were written during the run, "
                "taking CPU from it (a shorter --duration keeps the log in memory until the workload ends)"
            )
        extra: dict[str, Any] = {}
        if result.queues:
            extra["virtqueues"] = result.queues
            summary["plug_overlaps"] = result.plug_overlaps
        if finish_extra is not None and not result.interrupted:
            extra = finish_extra(summary)
            for name, table in extra.pop("_tables", {}).items():
                writer.write_table(name, table)
        if overhead is not None:
            overhead["traced_iops"] = round(result.iops, 1)
            overhead["traced_mean_sqes_per_submit"] = summary.get("mean_sqes_per_submit")
            untraced = overhead["untraced_iops"]
            overhead["ratio"] = round(result.iops / untraced, 4) if untraced else None
        rec.finish(
            Status.INTERRUPTED if result.interrupted else Status.COMPLETE,
            trace_info,
            summary=summary,
            emulated_devices=result.devices,
            engine_threads=result.threads,
            integrity=result.integrity,
            tracing_overhead=overhead,
            **extra,
        )
        if result.nr_errors:
            logger.warning(f"plugtrace: {result.nr_errors} requests failed (first: {os.strerror(-result.first_error)})")
        if result.integrity and result.integrity["mismatches"]:
            code = EXIT_DATA_MISMATCH
        else:
            code = EXIT_INTERRUPTED if result.interrupted else EXIT_OK
        return RecordResult(out, writer.meta, code)
    return RecordResult(out, None, EXIT_INTERRUPTED)  # interrupted: the run kept what it had


def log_hold_budget(out: Path) -> int:
    """The most of the engine's log a recording into `out` may hold until its workload stops: no
    more than the disk has free, so that a disk too small for the run fills while it runs and stops
    it (a full disk found only at the end would have cost the whole run)."""
    try:
        return shutil.disk_usage(out).free
    except OSError:
        return 0


def record_program(
    output: str | os.PathLike | None = None,
    *,
    command: list[str] | None = None,
    pid: int | None = None,
    mode: str = Mode.AGGREGATE,
    duration_s: float | None = None,
    max_events: int = 5_000_000,
    probes: list[str] | None = None,
    watch_device: str | None = None,
    command_line: list[str] | None = None,
) -> RecordResult:
    """Trace another program, kernel side only (what `plugtrace record --pid PID` and `plugtrace record
    -- CMD` do): a running process `pid` (and its children) for `duration_s` or until it exits, or a
    `command` started here, held until the tracer is attached and traced until it exits.

    `watch_device`: a block device (/dev/NAME or MAJ:MIN) whose block requests are recorded, every one;
    `probes`: only these. Returns the run directory, its meta.json (also when interrupted: what was
    traced until then) and the exit code: a traced command's own, else 0 or EXIT_INTERRUPTED.
    """
    from .environment import describe_environment
    from .processes import Child, spawn
    from .procfs import descendants, program_problem

    mode = Mode(mode)
    command = list(command or [])
    if mode == Mode.OFF:
        raise UsageError("--mode off: tracing another program needs a tracing mode")
    if pid is not None and command:
        raise UsageError("give --pid or a command after --, not both")
    if pid is None and not command:
        raise UsageError("a program to trace: --pid PID or -- CMD")
    if duration_s is not None and not (math.isfinite(duration_s) and duration_s > 0):
        raise UsageError(f"--duration: a positive number of seconds, not {duration_s}")
    if command and duration_s is not None:
        raise UsageError(
            "--duration is for --pid and plugtrace's own workload; a command is traced until it "
            "exits (give it its own time limit, e.g. fio's --runtime)"
        )
    if max_events <= 0:
        raise UsageError("--max-events: must be positive")
    if os.geteuid() != 0:
        raise CapabilityError("tracing another program needs root (bpftrace)")
    if pid is not None and not Path(f"/proc/{pid}").exists():
        raise UsageError(f"--pid: no process {pid}")
    if command:
        found = shutil.which(command[0])
        if found is None:
            raise UsageError(f"cannot run {command[0]}: not found, or not executable")
        problem = program_problem(found)
        if problem is not None:
            raise UsageError(f"cannot run {command[0]}: {problem}")
    watched = _watched_device(watch_device)
    children = descendants(pid) if pid is not None else []
    if children:
        shown = ", ".join(map(str, children[:8])) + (", ..." if len(children) > 8 else "")
        logger.warning(
            f"plugtrace: note: process {pid} already has {len(children)} child process(es) ({shown}); "
            "they are traced too"
        )
    label = Path(command[0]).name if command else f"pid{pid}"
    out = Path(output) if output is not None else default_output(label)
    proc: Child | None = None
    with Recording(out, {"environment": describe_environment(), "device": None}, command=command_line) as rec:
        writer = rec.open(
            config={
                "external": command or None,
                "pid": pid,
                "mode": str(mode),
                "duration_s": duration_s,
                "strategy": None,
                "watch_device": watch_device,
                "children_at_start": children or None,
            }
        )
        if command:
            # Started stopped-at-exec is not possible from Python, so the tracer starts first with a pid
            # filter that follows the child, and the child waits until it is attached (without the go,
            # when we could not trace, it exits without running the command). It is the user's program:
            # it does not die with us, but ends with the recording.
            try:
                proc = spawn(command, stdin=None, stdout=None, stderr=None, held="plugtrace-child", die_with_us=False)
            except OSError as exc:
                raise UsageError(f"cannot run {command[0]}: {exc.strerror}") from None
        traced = proc.pid if proc is not None else pid
        assert traced is not None
        try:
            missing = rec.start_tracer(
                mode,
                traced,
                [watched] if watched else [],
                max_events,
                probes,
                markers=_uses_our_extension(traced, probes),
                existing_children=pid is not None,
            )
            if rec.tracer is None:
                raise CapabilityError(f"cannot trace: {missing.get('kernel')}")
            started = time.monotonic()
            if proc is not None:
                proc.go()
                proc.wait()
            else:
                deadline = None if duration_s is None else started + duration_s
                while Path(f"/proc/{traced}").exists() and (deadline is None or time.monotonic() < deadline):
                    time.sleep(0.1)
            elapsed = time.monotonic() - started
        finally:
            if proc is not None:
                proc.end()  # its process group, before the tracer stops, whatever ended the wait
        rec.finish(
            Status.COMPLETE,
            rec.close_tables(),
            summary={"elapsed_s": round(elapsed, 3), "exit_code": proc.returncode if proc else None},
        )
        return RecordResult(out, writer.meta, EXIT_OK if proc is None else (proc.returncode or EXIT_OK))
    # interrupted: the run kept what was traced until then
    return RecordResult(out, rec.writer.meta if rec.writer is not None else None, EXIT_INTERRUPTED)


def _uses_our_extension(pid: int, probes: list[str] | None) -> bool:
    """Whether a traced program gets the marker uprobes: when named in `probes`, or when the process
    has plugtrace's extension loaded already (--pid). A command is not started yet, and most (fio,
    QEMU) never load it: their markers would only cost a bpftrace."""
    if probes is not None:
        return "markers" in probes
    from .uring._binding import extension_path

    try:
        return os.path.realpath(extension_path) in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def _watched_device(text: str | None) -> str | None:
    """--watch-device as "major:minor" (None: not given)."""
    if text is None:
        return None
    if re.fullmatch(r"\d+:\d+", text):
        if not Path(f"/sys/dev/block/{text}").exists():
            raise UsageError(f"--watch-device: no block device {text} on this machine")
        return text
    from .devices import block_dev_t

    try:
        return block_dev_t(text)
    except DeviceError as exc:
        raise UsageError(f"--watch-device: {exc.message} (give /dev/NAME or MAJ:MIN)") from None


def record_qemu(
    cfg: QemuConfig,
    output: str | os.PathLike,
    *,
    device: str = "loop",
    size: str | int = "1G",
    sparse: bool = False,
    allow_write: bool = False,
    quiet: bool = False,
    command_line: list[str] | None = None,
) -> RunMeta | None:
    """Boot a real QEMU guest on a device and record it (what `plugtrace qemu` does for one guest).

    Returns the run's meta.json, or None when the recording was interrupted (it kept what it had)."""
    from .qemu.image import guest_image
    from .qemu.recording import QemuRecording
    from .qemu.versions import find_qemu

    # what the run needs is found before a device is made for it
    qemu, image = find_qemu(cfg.qemu), guest_image()
    if cfg.iothreads == "per-queue" and not qemu.device_property("virtio-blk-pci", "iothread-vq-mapping"):
        raise CapabilityError(
            f"could not measure --iothreads per-queue: QEMU {qemu.version} ({qemu.binary}) has no "
            "iothread-vq-mapping (virtio-blk-pci maps a disk's queues onto several iothreads from QEMU 9.0 "
            "on; before, every queue of a disk runs in its one iothread: --iothreads per-disk or shared)"
        )
    with Recording(Path(output), {}, command=command_line) as rec:
        target = _open_target(rec, device, _size_bytes(size), allow_write, sparse, cfg.workload.writes)
        if cfg.ide_disks and not target.writable and cfg.workload.bs % 2048:
            raise UsageError(
                f"--bs: a multiple of 2048 with --ide-disks on a read-only device (its IDE disks are "
                f"CD-ROM drives, 2048-byte sectors), not {cfg.workload.bs}"
            )
        recording = QemuRecording(cfg, target, rec, qemu, image, quiet=quiet)
        rec.on_exit(recording.close)  # QEMU and its probes stop before the device goes
        return recording.run()
    return None


def _size_bytes(size: str | int) -> int:
    """A device size given as bytes or as text ("1G")."""
    from .devices import parse_size

    return parse_size(size) if isinstance(size, str) else int(size)


def _open_target(rec: Recording, device: str, size_bytes: int, allow_write: bool, sparse: bool, writes: bool) -> Any:
    """The device a recording runs on, opened (or made) and removed with the recording; refused when the
    workload `writes` to a device the user did not hand us for writing."""
    from . import devices

    rec.on_exit(devices.cleanup_all)
    target = devices.open_target(device, size_bytes, allow_write=allow_write, sparse=sparse)
    rec.on_exit(target.close)
    devices.check_writable(target, writes)
    return target
