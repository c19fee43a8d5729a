"""A probe run by processes of its own: bpftrace piped into its decoding worker (`worker.py`), or
our libbpf programs' ring buffer reader (`ringworker.py`), which decodes itself.

Both speak the same line protocol on stdout: ``{"attached_probes": N}`` once attached, then
``{"done": {...}}`` at the end. Their processes die with us (`plugtrace.processes`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from typing import IO, Any

from ..logs import logger
from ..processes import Child
from .probes import ProbeSpec

#: after this long stopping, the user is told what the recording waits for, in seconds
STOP_SLOW_S = 3.0
#: how long a probe's processes may take to print what they saw and exit after SIGINT, in seconds
#: (PLUGTRACE_STOP_TIMEOUT_S sets it: longer for a very slow machine, shorter to give up on a hung one sooner)
STOP_TIMEOUT_S = max(STOP_SLOW_S + 1, float(os.environ.get("PLUGTRACE_STOP_TIMEOUT_S", "20")))


class ProcessRun:
    """One probe running in `children` (the one whose stdout speaks the protocol last), their
    output read by threads of its own; `backend` and `what` as `ProbeRun` (`backend.py`) has them."""

    held_here = False

    def __init__(self, spec: ProbeSpec, children: list[Child], events: bool, backend: str, what: str):
        self.spec = spec
        self.backend = backend
        self.what = what
        self.children = children
        self.events = events
        self.attached = threading.Event()
        self.attached_probes: int | None = None
        self.done: dict[str, Any] = {}
        self.messages: list[str] = []
        self.stopping = False
        self._killed = False
        pipes: list[tuple[Any, IO[bytes] | None]] = [(self._read_protocol, children[-1].proc.stdout)]
        pipes += [(self._read_stderr, c.proc.stderr) for c in children]
        self.threads = [
            threading.Thread(target=f, args=(pipe,), daemon=True, name=f"probe-{spec.table}") for f, pipe in pipes
        ]
        for t in self.threads:
            t.start()

    def __hash__(self) -> int:
        return id(self)

    def _read_protocol(self, pipe: IO[bytes]) -> None:
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

    def _read_stderr(self, pipe: IO[bytes]) -> None:
        for raw in pipe:
            line = raw.decode(errors="replace").rstrip()
            if line and "RLIMIT_MEMLOCK" not in line and len(self.messages) < 20:
                self.messages.append(line)

    def wait_attached(self, timeout_s: float) -> bool:
        return self.attached.wait(timeout_s)

    def ready(self) -> bool:
        """Our ring readers say they are attached once they are."""
        return self.attached.is_set()

    def exit_status(self) -> int | None:
        return self.children[0].poll()

    def failure(self) -> str:
        rc = self.children[0].returncode
        how = f"was killed by {signal.Signals(-rc).name}" if rc is not None and rc < 0 else f"exited with {rc}"
        detail = "; ".join(m for m in [*self.messages, *self.done.get("messages", [])] if m)[:400]
        return f"{self.what} {how}{': ' + detail if detail else ''}"

    def interrupt(self) -> None:
        if self.exit_status() is None:
            self.children[0].proc.send_signal(signal.SIGINT)  # bpftrace prints its maps and exits

    def finish(self) -> list[str]:
        errors = []
        try:
            for child in self.children:
                try:
                    child.wait(STOP_SLOW_S)
                except subprocess.TimeoutExpired:  # say why the recording does not end yet
                    logger.info(f"plugtrace: waiting for {self.what} to stop (at most {STOP_TIMEOUT_S:.0f} s) ...")
                    child.wait(STOP_TIMEOUT_S - STOP_SLOW_S)
        except subprocess.TimeoutExpired:
            self.kill()
            errors.append(f"{self.what} did not stop within {STOP_TIMEOUT_S:.0f} s: killed")
        self.join(5)
        if self.done.get("error"):
            errors.append(self.done["error"])
        elif not self.done:
            errors.append(
                f"decoding the output of {self.what} failed: "
                + ("; ".join(self.messages[-3:]) or f"exit status {self.children[-1].returncode}")
            )
        return errors

    def kill(self) -> None:
        if self._killed:  # (a group ended twice could be someone else's by then)
            return
        self._killed = True
        for child in self.children:
            child.end(grace_s=0)
        self.join(5)  # what they said before they died, for `failure`

    def join(self, timeout_s: float) -> None:
        """Wait at most `timeout_s` seconds for each reading thread to have read everything."""
        for t in self.threads:
            t.join(timeout_s)
