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

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from .._version import __version__
from ..errors import CapabilityError, PlugtraceError
from ..run import RunWriter, Status, WriteError

__all__ = ["Recording", "TERMINATING", "Terminate", "catch_terminating", "ignore_terminating", "restore_signals"]


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
        self._cleanups: list[Callable[[], None]] = []
        self._old_signals: dict[int, Any] = {}
        #: printed after an interruption, once the run is closed (a traced program's summary goes to stderr)
        self.on_interrupted: Callable[[dict[str, Any]], None] | None = None

    # the block ------------------------------------------------------------------------------------------
    def __enter__(self) -> Recording:
        self._old_signals = catch_terminating()
        return self

    def on_exit(self, cleanup: Callable[[], None]) -> None:
        """Run `cleanup` when the recording ends, however it ends (last registered, first run)."""
        self._cleanups.append(cleanup)

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
                print(
                    "\nplugtrace: interrupted; keeping what was recorded"
                    if self.writer is not None
                    else "\nplugtrace: interrupted before recording began; nothing was recorded",
                    file=sys.stderr,
                )
            # a failure the CLI explains in its one line needs no second line saying the run failed
            self._close(status, say=not (status == Status.FAILED and isinstance(exc, (PlugtraceError, OSError))))
        finally:
            try:
                while self._cleanups:
                    self._cleanups.pop()()
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
        if writer is None or writer.meta.get("status") != Status.RECORDING:
            return
        try:
            writer.close(status)
        except PlugtraceError as exc:
            print(f"plugtrace: {exc.message}", file=sys.stderr)
        if writer.meta["status"] == Status.INTERRUPTED and self.on_interrupted is not None:
            self.on_interrupted(writer.meta)
        elif writer.meta["status"] != Status.COMPLETE and say:
            print(f"plugtrace: run directory {self.out} marked {writer.meta['status']}", file=sys.stderr)

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
            from ..tracing import Tracer, detect_capabilities
        except ImportError as exc:
            self._missing = {"kernel": f"tracing support is not installed ({exc})"}
            return dict(self._missing)
        from ..uring._binding import extension_path

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
            print(f"plugtrace: tracer: {result.error}", file=sys.stderr)
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
    from ..tracing.summary import kernel_summary

    try:
        numbers = kernel_summary(run_dir)
    except (OSError, ValueError) as exc:  # a damaged table: the run says so elsewhere
        numbers = {"error": f"could not summarise the kernel tables: {exc}"}
    if numbers:
        info.setdefault("kernel_summary", {}).update(numbers)
