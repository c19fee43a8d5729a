"""Children that die with us: the one way plugtrace starts a program of its own (bpftrace, our
decoding and ring-reading workers, QEMU, a traced command).

Each child runs in a session of its own: a Ctrl-C at the terminal reaches only plugtrace, which
stops its children in order (bpftrace prints its maps on SIGINT, a guest is shut down), and ending
the child's process group ends whatever the child started too. A child that dies with us gets
PR_SET_PDEATHSIG: the kernel kills it when plugtrace dies, SIGKILL included. A held child waits
before exec until told to go (`Child.go`), so a tracer can attach by its pid before the program's
first instruction; told nothing, it exits without running the program.

Ctrl-C and SIGTERM are held while forking (`signals_held`) and let through again in the child.
Children not reaped when plugtrace exits are ended with their groups then.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import resource
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, Any

#: the signals a recording handles itself: held while forking, let through in the child
HELD_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})
#: the descriptor a held child waits on for "go" (a shell can name none above 9)
GO_FD = 3
#: how a held child waits: a line on GO_FD, then it becomes the program (same pid)
_HOLD_SCRIPT = f'read _ <&{GO_FD} && exec {GO_FD}<&- && exec "$@"'
#: how long `Child.end` lets a group exit after SIGTERM before it is SIGKILLed, in seconds
END_GRACE_S = 5.0

_PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl
_unreaped: set[Child] = set()


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM while forking: Python runs its at-fork hooks then, and an exception
    raised by a signal handler inside one is printed and dropped, so the signal would be lost.
    Held, it arrives right after."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _child_setup(parent: int, die_with_us: bool, go_fd: int | None, unlimited_memlock: bool) -> None:
    """Runs in the child between fork and exec (exec keeps the signal mask and the death signal)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_SIGNALS)
    if die_with_us:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # we died before the death signal was set: nobody would send it
            os.kill(os.getpid(), signal.SIGKILL)
    if unlimited_memlock:  # modern kernels account BPF memory to cgroups; older ones need the rlimit
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    if go_fd is not None:
        if go_fd != GO_FD:
            os.dup2(go_fd, GO_FD)  # replaces whatever GO_FD was
        os.set_inheritable(GO_FD, True)  # pipes are close-on-exec, and dup2 onto itself leaves it so


class Child:
    """One child process of ours (`proc`), in a session of its own; see `spawn`."""

    def __init__(self, proc: subprocess.Popen, go_fd: int | None):
        self.proc = proc
        self._go_fd = go_fd
        self._owner = os.getpid()
        _unreaped.add(self)

    def __hash__(self) -> int:
        return id(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def held(self) -> bool:
        """Whether the child still waits to be told to go."""
        return self._go_fd is not None

    def go(self) -> None:
        """Let a held child exec its program."""
        if self._go_fd is not None:
            try:
                os.write(self._go_fd, b"go\n")
            finally:
                self._close_go()

    def _close_go(self) -> None:
        if self._go_fd is not None:
            os.close(self._go_fd)
            self._go_fd = None

    @property
    def returncode(self) -> int | None:
        """The exit status once reaped (negative: killed by that signal), else None."""
        return self.proc.returncode

    def poll(self) -> int | None:
        """The child's exit status (negative: killed by that signal), None while it runs."""
        rc = self.proc.poll()
        if rc is not None:
            _unreaped.discard(self)
        return rc

    def wait(self, timeout: float | None = None) -> int:
        """Wait at most `timeout` seconds (None: however long) for the child to exit and reap it;
        subprocess.TimeoutExpired if it does not."""
        rc = self.proc.wait(timeout)
        _unreaped.discard(self)
        return rc

    def end(self, grace_s: float = END_GRACE_S) -> None:
        """End the child and everything it started (its process group): SIGTERM, up to `grace_s`
        seconds for the child to exit, then SIGKILL for whatever is left (what ignored SIGTERM, or
        outlived its parent); reaps the child. `grace_s` 0: SIGKILL at once. Idempotent. A held
        child is not let go: it exits without running its program."""
        self._close_go()
        if grace_s > 0:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            else:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=grace_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.wait()


def spawn(
    argv: Sequence[str],
    *,
    stdin: int | IO[Any] | None = subprocess.DEVNULL,
    stdout: int | IO[Any] | None = subprocess.PIPE,
    stderr: int | IO[Any] | None = subprocess.PIPE,
    env: Mapping[str, str] | None = None,
    die_with_us: bool = True,
    held: str | None = None,
    unlimited_memlock: bool = False,
) -> Child:
    """Start `argv` in a session of its own, with Ctrl-C and SIGTERM let through.

    `stdin`, `stdout`, `stderr`, `env`: as subprocess.Popen has them (None: ours). `die_with_us`:
    killed by the kernel when we die. `held`: the child waits before exec until `Child.go` (a shell
    of that name, shown by ps, waiting on fd 3, becomes the program; it gets the descriptors we were
    given, as a shell's command does). `unlimited_memlock`: RLIMIT_MEMLOCK lifted (BPF maps on
    kernels that charge them to it). OSError when the program cannot be started."""
    r = w = None
    if held is not None:
        r, w = os.pipe()
        argv = ["sh", "-c", _HOLD_SCRIPT, held, *argv]
    parent = os.getpid()
    try:
        with signals_held():
            proc = subprocess.Popen(
                list(argv),
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                env=env,
                # a held child keeps fd 3 (closing descriptors would close it); ours are close-on-exec anyway
                close_fds=held is None,
                start_new_session=True,
                preexec_fn=lambda: _child_setup(parent, die_with_us, r, unlimited_memlock),
            )
            child = Child(proc, w)
    except BaseException:
        if w is not None:
            os.close(w)
        raise
    finally:
        if r is not None:
            os.close(r)
    return child


@atexit.register
def _end_unreaped() -> None:
    """Whatever path plugtrace takes out, no child of ours outlives it unreaped (nor its group)."""
    for child in list(_unreaped):
        if child._owner == os.getpid() and child.poll() is None:
            child.end(grace_s=0)
