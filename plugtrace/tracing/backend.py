"""What a running probe is to `Tracer`, whichever backend runs it: `ProbeRun`.

A backend turns one `ProbeSpec` into a running probe: `backend_bpftrace.py` (the probe's script,
piped into its decoding worker) or `backend_libbpf.py` (our own programs: their in-kernel maps held
by this process in aggregate mode, a ring buffer reader of their own in events mode). The tracer
drives each the same way: started, awaited until attached, stopped together (every probe asked,
then each awaited), and what it saw taken from `done`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .probes import ProbeSpec


class ProbeRun(Protocol):
    """One probe, running."""

    spec: ProbeSpec
    #: one row per event, streamed to the run directory (False: in-kernel maps, read at stop)
    events: bool
    #: what it said when it stopped (worker.py's "done": rows, kept, dropped, lost_events, maps,
    #: messages, error); empty until then, and when it never said
    done: dict[str, Any]
    #: what it said on its way, for `failure` (bpftrace's stderr, say)
    messages: list[str]
    #: asked to stop: an exit from then on is not a death
    stopping: bool

    @property
    def backend(self) -> str:
        """``libbpf`` or ``bpftrace``."""
        ...

    @property
    def held_here(self) -> bool:
        """Its programs are held by this process (read at stop) rather than by a process of its own."""
        ...

    @property
    def what(self) -> str:
        """What runs it, for messages: ``bpftrace (enters.bt)``, ``our enters programs``."""
        ...

    def wait_attached(self, timeout_s: float) -> bool:
        """Wait at most `timeout_s` seconds until it says it has attached; whether it has."""
        ...

    def ready(self) -> bool:
        """Whether every probe of it is attached (it may say so before it is)."""
        ...

    def exit_status(self) -> int | None:
        """Its process's exit status once it ended (negative: that signal), None while it runs."""
        ...

    def failure(self) -> str:
        """Why it is not (or no longer) tracing, in one line."""
        ...

    def interrupt(self) -> None:
        """Ask it to stop and say what it saw (bpftrace prints its maps on SIGINT)."""
        ...

    def finish(self) -> list[str]:
        """Wait until it stopped (killed if it does not in time) and `done` is filled; what went wrong."""
        ...

    def kill(self) -> None:
        """Stop it at once, keeping nothing (a start that failed or was interrupted)."""
        ...
